//! Showing a stored manifest (`ctl get manifest`): the control plane sends it with its secret
//! values already redacted. (Sealing secrets on deploy is the ctl client's:
//! `lattice_control::client::CtlClient::deploy`.)

use lattice_control::client::CtlClient;
use lattice_protocol::names::AppName;
use serde::Serialize;

use crate::args::Output;
use crate::output;

/// `ctl get manifest`'s JSON: the manifest as an object rather than a string of text.
#[derive(Serialize)]
struct Shown {
    name: AppName,
    version: String,
    manifest: serde_json::Value,
}

/// `ctl get manifest NAME [--version V]`.
pub(super) async fn get_manifest(
    ctl: &CtlClient,
    name: &AppName,
    version: Option<&str>,
    out: Output,
) -> anyhow::Result<()> {
    let reply = ctl.manifest(name, version).await?;
    match out {
        Output::Table => {
            eprintln!("{} {}", reply.name, reply.version);
            print!("{}", reply.manifest);
            if !reply.manifest.ends_with('\n') {
                println!();
            }
        }
        Output::Json | Output::Yaml => {
            let manifest = lattice_manifest::parse(&reply.manifest)
                .map_err(|d| anyhow::anyhow!("the stored manifest does not parse: {d}"))?;
            let shown = Shown {
                name: reply.name,
                version: reply.version,
                manifest: serde_json::to_value(&manifest)?,
            };
            output::print(out, &shown, |_| String::new());
        }
    }
    Ok(())
}
