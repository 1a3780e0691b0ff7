//! `lattice`: parse the arguments, set up logging, run the command.

use clap::Parser;
use lattice_cli::args::{Cli, Command, Internal, KeysCommand};
use lattice_cli::{ctl, keys, push, serve, sign, telemetry, up};

fn main() -> std::process::ExitCode {
    lattice_cli::quiet_library_backtraces();
    let cli = Cli::parse();
    // A compiler child: no logging setup, no async runtime, nothing but the compile.
    if let Command::Internal(Internal::Compile(args)) = cli.command {
        return serve::compile(args);
    }
    let quiet = matches!(
        cli.command,
        Command::Ctl(_)
            | Command::Keys { .. }
            | Command::Sign(_)
            | Command::Inspect(_)
            | Command::Push(_)
    );
    telemetry::init(if quiet { "warn" } else { "info" });
    lattice_cli::main_with(async move {
        match cli.command {
            Command::Up(args) => up::up(args).await,
            Command::Ctl(args) => ctl::run(args).await,
            Command::Keys {
                command: KeysCommand::Gen { role, output },
            } => keys::generate(&role, output.as_deref()),
            Command::Sign(args) => sign::sign(&args),
            Command::Inspect(args) => sign::inspect(&args),
            Command::Push(args) => push::push(&args).await,
            Command::Host(args) => serve::host(args).await,
            Command::Control(args) => serve::control(args).await,
            Command::Internal(Internal::Compile(_)) => unreachable!("handled above"),
        }
    })
}
