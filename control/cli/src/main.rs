//! `lattice`: parse the arguments, set up logging, run the command.

use clap::Parser;
use lattice_cli::args::{Cli, Command, CtlCommand, KeysCommand};
use lattice_cli::nats::NatsCommand;
use lattice_cli::{compile, ctl, keys, nats, push, serve, sign, ui, up};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `lattice host` becomes `lattice-host`: its logging is its own.
    if let Command::Host(args) = &cli.command {
        return serve::host(&args.args);
    }
    let quiet = matches!(
        cli.command,
        Command::Ctl(_)
            | Command::Config(_)
            | Command::Keys { .. }
            | Command::Sign(_)
            | Command::Inspect(_)
            | Command::Push(_)
            | Command::Nats { .. }
            | Command::Pull(_)
            | Command::Compile(_)
    );
    lattice_telemetry::init(if quiet { "warn" } else { "info" });
    lattice_telemetry::run(async move {
        match cli.command {
            Command::Up(args) => up::up(args).await,
            Command::Ctl(args) => ctl::run(args).await,
            Command::Config(args) => {
                ctl::run(args.into_ctl(|what| CtlCommand::Config { what })).await
            }
            Command::Ui(args) => ui::run(args).await,
            Command::Keys {
                command: KeysCommand::Gen { role, output },
            } => keys::generate(&role, output.as_deref()),
            Command::Sign(args) => sign::sign(&args),
            Command::Inspect(args) => sign::inspect(&args),
            Command::Push(args) => push::push(&args).await,
            Command::Pull(args) => push::pull(&args).await,
            Command::Compile(args) => compile::compile(&args).await,
            Command::Control(args) => serve::control(args).await,
            Command::Nats {
                command: NatsCommand::Authz(args),
            } => nats::write(&args),
            Command::Host(_) => unreachable!("handled above"),
        }
    })
}
