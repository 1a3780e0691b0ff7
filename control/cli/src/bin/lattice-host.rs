//! `lattice-host`: the host alone, for gateways and servers (`lattice host` does the same).

use clap::Parser;
use lattice_cli::args::{HostArgs, Internal};

/// A Lattice host: runs signed WebAssembly components assigned by the control plane.
#[derive(Debug, Parser)]
#[command(
    name = "lattice-host",
    version,
    about = "A Lattice host: runs signed WebAssembly components assigned by the control plane",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    host: HostArgs,
    /// Hidden: what the host runs in its own child processes.
    #[command(subcommand)]
    internal: Option<Internal>,
}

fn main() -> std::process::ExitCode {
    lattice_cli::quiet_library_backtraces();
    let cli = Cli::parse();
    // A compiler child: no logging setup, no async runtime, nothing but the compile.
    if let Some(Internal::Compile(args)) = cli.internal {
        return lattice_cli::serve::compile(args);
    }
    lattice_cli::telemetry::init("info");
    lattice_cli::main_with(lattice_cli::serve::host(cli.host))
}
