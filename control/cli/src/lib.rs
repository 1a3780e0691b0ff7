//! The `lattice` command line: one binary to operate a lattice (`ctl`), sign and push
//! components, and run hosts, control planes, or a whole local lattice (`up`). The small
//! `lattice-host` binary shares the host part.
//!
//! Layout: [`args`] (clap definitions), [`nats`] (connection options and `lattice up`'s record),
//! one module per command ([`ctl`], [`keys`], [`sign`], [`push`], [`serve`], [`up`]),
//! [`output`] (tables and JSON) and [`telemetry`] (the one tracing setup of every binary).
//! The binaries only parse arguments and call into these modules.
#![deny(missing_docs)]

pub mod args;
pub mod ctl;
pub mod keys;
pub mod nats;
pub mod output;
pub mod push;
pub mod serve;
pub mod sign;
pub mod telemetry;
pub mod up;

/// Keeps wasmtime from capturing a backtrace on every dropped Store (measured: +28 µs per
/// request with `RUST_BACKTRACE=1`), while panics still print theirs. Call before any thread starts.
pub fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        #[expect(
            unsafe_code,
            reason = "set_var is sound here: no other thread exists yet"
        )]
        // SAFETY: called first thing in main, before the runtime or any thread is started.
        unsafe {
            std::env::set_var("RUST_LIB_BACKTRACE", "0");
        }
    }
}

/// Builds the tokio runtime and runs `f` on it, printing an error the way every command does.
pub fn main_with<F>(f: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
