//! `lattice-host`: a Lattice host, for gateways, servers and `lattice up`. It parses its
//! arguments ([`args`]), sets up logging with the one setup of every Lattice process, and runs
//! [`lattice_host::run`] until Ctrl-C or SIGTERM ([`serve`]). Its hidden `__compile`
//! subcommand is what the host runs in a child process to compile a component.

use clap::Parser;

mod args;
mod serve;

use args::{HostArgs, Internal};

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
    lattice_host::quiet_library_backtraces();
    let cli = Cli::parse();
    // A compiler child: no logging setup, no async runtime, nothing but the compile.
    if let Some(Internal::Compile(args)) = cli.internal {
        return lattice_host::compile::compiler_main(args.args);
    }
    lattice_telemetry::init("info");
    lattice_telemetry::run(serve::host(cli.host))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }
}
