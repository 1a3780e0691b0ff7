//! `lattice-host`: a Lattice host, for gateways, servers and `lattice up`. It parses its
//! arguments ([`args`]), sets up logging with the one setup of every Lattice process, and runs
//! [`lattice_host::run`] until Ctrl-C or SIGTERM ([`serve`]). `precompile` makes code for the
//! hosts of a target (`lattice compile` runs it); the hidden `__compile` subcommand is what the
//! host runs in a child process to compile a component.

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
    match cli.internal {
        // A compiler child: no logging setup, no async runtime, nothing but the compile.
        Some(Internal::Compile(args)) => lattice_host::compile::compiler_main(args.args),
        Some(Internal::Precompile(args)) => precompile(&args),
        None => {
            lattice_telemetry::init("info");
            lattice_telemetry::run(serve::host(cli.host))
        }
    }
}

/// `lattice-host precompile`: the code to OUTPUT, what it is for as JSON on standard output.
fn precompile(args: &args::PrecompileArgs) -> std::process::ExitCode {
    let run = || -> anyhow::Result<String> {
        use anyhow::Context as _;
        let component = if args.input.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
                .context("reading the component from standard input")?;
            bytes
        } else {
            std::fs::read(&args.input)
                .with_context(|| format!("reading {}", args.input.display()))?
        };
        let triple = lattice_host::compile::target::resolve_target(&args.target);
        let code = lattice_host::compile::target::precompile(
            &component,
            &triple,
            args.max_component_bytes,
            args.wasi_p3,
        )?;
        std::fs::write(&args.output, &code.code)
            .with_context(|| format!("writing {}", args.output.display()))?;
        Ok(format!(
            "{{\"target\":\"{}\",\"fingerprint\":\"{}\",\"bytes\":{}}}",
            code.target,
            code.fingerprint,
            code.code.len()
        ))
    };
    match run() {
        Ok(json) => {
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
