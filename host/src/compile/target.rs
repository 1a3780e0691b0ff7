//! Code for other machines: `lattice-host precompile` compiles a component for a named target
//! with that architecture's baseline CPU features, so that every host of the target can load it
//! whatever its CPU (wasmtime checks, when loading, that each CPU feature the code uses is
//! there, and a baseline uses none beyond the architecture's).
//!
//! The code is named by the fingerprint of the engine that made it ([`target_fingerprint`]). A
//! host looks for code under its [`Runtime::baseline_fingerprint`](crate::engine::Runtime), the
//! fingerprint of that same engine built for its own target: the two are equal exactly when the
//! code fits the host (same wasmtime, same settings, same target).
//!
//! ```no_run
//! use lattice_host::compile::target::{precompile, resolve_target};
//! # fn example(component: &[u8]) -> anyhow::Result<()> {
//! // For aarch64 hosts without `--wasi-p3`.
//! let code = precompile(component, &resolve_target("aarch64"), 64 << 20, false)?;
//! println!("{} bytes for {} ({})", code.code.len(), code.target, code.fingerprint);
//! # Ok(())
//! # }
//! ```

use super::{LoadError, check_component};
use crate::engine;

/// The target triple this host was built for, e.g. `x86_64-unknown-linux-gnu`.
pub fn host_triple() -> String {
    target_lexicon::HOST.to_string()
}

/// A full target triple for a short name: `x86_64` and `aarch64` (or `arm64`) are Linux with
/// glibc; anything else is taken as a triple.
pub fn resolve_target(name: &str) -> String {
    match name {
        "x86_64" | "amd64" => "x86_64-unknown-linux-gnu".to_owned(),
        "aarch64" | "arm64" => "aarch64-unknown-linux-gnu".to_owned(),
        "host" => host_triple(),
        triple => triple.to_owned(),
    }
}

/// The fingerprint of code [`precompile`] makes for `triple` (for hosts with WASI 0.3 on when
/// `wasi_p3`).
pub fn target_fingerprint(triple: &str, wasi_p3: bool) -> anyhow::Result<String> {
    Ok(engine::fingerprint(&engine::target_engine(
        triple, wasi_p3,
    )?))
}

/// A component compiled for a target.
#[derive(Debug, Clone)]
pub struct TargetCode {
    /// The target triple.
    pub target: String,
    /// The fingerprint of the engine that made it, under which hosts of the target look for it.
    pub fingerprint: String,
    /// The code.
    pub code: Vec<u8>,
}

/// Compiles `component` for `triple` with that architecture's baseline CPU features, for hosts
/// with WASI 0.3 on (`lattice-host --wasi-p3`) when `wasi_p3`, else for the others.
pub fn precompile(
    component: &[u8],
    triple: &str,
    max_component_bytes: usize,
    wasi_p3: bool,
) -> anyhow::Result<TargetCode> {
    check_component(component, max_component_bytes)?;
    let engine = engine::target_engine(triple, wasi_p3)?;
    let code = engine
        .precompile_component(component)
        .map_err(|err| LoadError::Invalid(err.into()))?;
    Ok(TargetCode {
        target: triple.to_owned(),
        fingerprint: engine::fingerprint(&engine),
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_to_linux_triples() {
        assert_eq!(resolve_target("x86_64"), "x86_64-unknown-linux-gnu");
        assert_eq!(resolve_target("arm64"), "aarch64-unknown-linux-gnu");
        assert_eq!(resolve_target("host"), host_triple());
        assert_eq!(
            resolve_target("riscv64gc-unknown-linux-gnu"),
            "riscv64gc-unknown-linux-gnu"
        );
    }

    #[test]
    fn each_target_has_its_own_fingerprint() {
        let x86 = target_fingerprint("x86_64-unknown-linux-gnu", false).unwrap();
        let arm = target_fingerprint("aarch64-unknown-linux-gnu", false).unwrap();
        assert_ne!(x86, arm);
        assert_eq!(
            x86,
            target_fingerprint("x86_64-unknown-linux-gnu", false).unwrap()
        );
        // WASI 0.3 hosts run other code: their fingerprint differs.
        assert_ne!(
            x86,
            target_fingerprint("x86_64-unknown-linux-gnu", true).unwrap()
        );
        assert_eq!(x86.len(), 16);
        assert!(target_fingerprint("mips-unknown-linux-gnu", false).is_err());
    }
}
