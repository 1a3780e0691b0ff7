//! `lattice-host`: the host alone, for gateways and servers (`lattice host` does the same).

use clap::Parser;
use lattice_cli::args::HostArgs;

/// A Lattice host: runs signed WebAssembly components assigned by the control plane.
#[derive(Debug, Parser)]
#[command(
    name = "lattice-host",
    version,
    about = "A Lattice host: runs signed WebAssembly components assigned by the control plane"
)]
struct Cli {
    #[command(flatten)]
    host: HostArgs,
}

fn main() -> std::process::ExitCode {
    lattice_cli::quiet_library_backtraces();
    let cli = Cli::parse();
    lattice_cli::telemetry::init("info");
    lattice_cli::main_with(lattice_cli::serve::host(cli.host))
}
