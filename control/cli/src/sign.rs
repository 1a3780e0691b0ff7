//! `lattice sign` and `lattice inspect`.

use anyhow::Context;
use lattice_protocol::claims::{self, ClaimsOptions};
use lattice_protocol::keys::KeyRole;
use lattice_protocol::unix_now;
use lattice_protocol::wit::component_interfaces;
use serde::Serialize;

use crate::args::{InspectArgs, Output, SignArgs};
use crate::output;

/// Signs a component.
pub fn sign(args: &SignArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let issuer = crate::keys::read(&args.issuer, KeyRole::Issuer)?;
    let now = unix_now();
    let name = match &args.name {
        Some(n) => n.clone(),
        // `hello.signed.wasm` -> `hello`: the name also makes the default tag `name:version`.
        None => args
            .input
            .file_name()
            .map(|s| {
                s.to_string_lossy()
                    .split('.')
                    .next()
                    .unwrap_or("")
                    .replace('_', "-")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "component".into()),
    };
    let options = ClaimsOptions {
        name: name.clone(),
        version: args.version.clone(),
        subject: None,
        allow: args.allow.clone(),
        not_before: args.not_before_in.map(|d| now + d.as_secs()),
        expires: args.expires_in.map(|d| now + d.as_secs()),
    };
    let signed = claims::sign_component(&bytes, &issuer, &options, now)
        .with_context(|| format!("signing {}", args.input.display()))?;
    std::fs::write(&args.output, &signed)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "signed {name} {} by issuer {} -> {}",
        args.version,
        issuer.public_key(),
        args.output.display()
    );
    Ok(())
}

#[derive(Serialize)]
struct Inspection {
    file: String,
    size: usize,
    digest: lattice_protocol::digest::Digest,
    claims: Option<claims::Claims>,
    signature: String,
    imports: Vec<String>,
    exports: Vec<String>,
}

/// Shows what a component carries.
pub fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let interfaces = component_interfaces(&bytes)
        .with_context(|| format!("{} is not a usable component", args.file.display()))?;
    let (claims, signature) = match claims::read_claims(&bytes) {
        Ok((c, Ok(()))) => (
            Some(c),
            "valid (signature and content hash verify)".to_string(),
        ),
        Ok((c, Err(e))) => (Some(c), format!("INVALID: {e}")),
        Err(e) => (None, format!("none: {e}")),
    };
    let report = Inspection {
        file: args.file.display().to_string(),
        size: bytes.len(),
        digest: lattice_protocol::digest::Digest::of(&bytes),
        claims,
        signature,
        imports: interfaces.imports,
        exports: interfaces.exports,
    };
    output::print(args.output, &report, |r| {
        let mut out = format!("{}  ({} bytes, {})\n", r.file, r.size, r.digest);
        out += &format!("signature: {}\n", r.signature);
        if let Some(c) = &r.claims {
            let when = |t: Option<u64>| t.map_or_else(|| "-".to_string(), output::when);
            out += &format!(
                "claims:\n  format:     {}\n  name:       {}\n  version:    {}\n  subject:    {}\n  issuer:     {}\n  module:     {}\n  issued at:  {}\n  not before: {}\n  expires:    {}\n  allow:      {}\n",
                match c.format {
                    claims::ClaimsFormat::Lattice => "lattice (lattice-claims section)",
                    claims::ClaimsFormat::Wash => "wash (wasmCloud JWT, no import allow list)",
                },
                c.name,
                c.version,
                c.subject,
                c.issuer,
                c.module_hash,
                output::when(c.issued_at),
                when(c.not_before),
                when(c.expires),
                if c.allow.is_empty() {
                    "(no restriction)".to_string()
                } else {
                    c.allow.join(", ")
                }
            );
        }
        out += "imports:\n";
        for i in &r.imports {
            out += &format!("  {i}\n");
        }
        out += "exports:\n";
        for e in &r.exports {
            out += &format!("  {e}\n");
        }
        out
    });
    if args.output == Output::Table && report.claims.is_none() {
        eprintln!(
            "hint: sign it with `lattice sign {} -o OUT.wasm --issuer KEYFILE`",
            args.file.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::output::when_at;

    #[test]
    fn dates_are_for_people() {
        assert!(when_at(0, 0).starts_with("1970-01-01T00:00:00Z"));
        assert_eq!(
            when_at(1_796_577_549, 1_796_577_549 + 3 * 86400),
            "2026-12-06T17:19:09Z (3d 0h ago)"
        );
    }
}
