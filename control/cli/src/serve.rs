//! `lattice host` and `lattice control`: long-running processes in the foreground.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use lattice_connect::Patience;
use lattice_control::ControlConfig;
use lattice_protocol::keys::KeyRole;

use crate::args::ControlArgs;

/// The name of the host program, which `lattice host` and `lattice up` start.
pub const HOST_PROGRAM: &str = "lattice-host";

/// Where the `lattice-host` program is: beside this executable first (the two are built and
/// installed together, and a build tree's would otherwise lose to an older one on `PATH`),
/// then on `PATH`.
pub fn host_program() -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(HOST_PROGRAM));
    let path = std::env::var_os("PATH").unwrap_or_default();
    beside
        .into_iter()
        .chain(std::env::split_paths(&path).map(|dir| dir.join(HOST_PROGRAM)))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{HOST_PROGRAM} is not installed beside this `lattice` nor on PATH; the `lattice` CLI does not contain the host. Install {HOST_PROGRAM} next to `lattice` (the Docker image has both), or build it with `cargo build -p lattice-host --bin {HOST_PROGRAM}`"
            )
        })
}

/// `lattice host ARGS`: becomes `lattice-host ARGS` (the same process id, signals and exit
/// status); returns only when that cannot be done.
pub fn host(args: &[OsString]) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt as _;
    let error = match host_program() {
        Ok(program) => {
            let error = std::process::Command::new(&program).args(args).exec();
            anyhow::Error::new(error).context(format!("starting {}", program.display()))
        }
        Err(e) => e,
    };
    eprintln!("error: {error:#}");
    std::process::ExitCode::FAILURE
}

/// Runs the control plane in the foreground.
pub async fn control(args: ControlArgs) -> anyhow::Result<()> {
    let target = lattice_connect::target(&args.nats, None)?;
    let key = crate::keys::read(&args.key, KeyRole::Operator)?;
    let client = lattice_connect::connect(
        &args.nats,
        &target.url,
        "lattice control",
        Patience::FailFast,
    )
    .await?;
    let mut config = ControlConfig::new(target.lattice, key);
    config.storage = lattice_protocol::jetstream::Storage {
        artifacts_max_bytes: args.artifacts_max_bytes,
        events_max_bytes: args.events_max_bytes,
        events_max_age: args.events_max_age,
        ..args.storage.storage()
    };
    config.admins = args
        .admins
        .iter()
        .map(|a| lattice_protocol::keys::PublicKey::parse_role(a, KeyRole::User))
        .collect::<Result<_, _>>()
        .context("--admin takes user public keys (`U...`, from `lattice keys gen user`)")?;
    config.metrics = args
        .metrics_addr
        .map(lattice_control::metrics::MetricsEndpoint::new);
    if config.admins.is_empty() {
        eprintln!(
            "warning: no --admin given: nobody can grant roles on a new lattice, and no join token admits hosts (admit them with `lattice ctl hosts admit ID`)"
        );
    }
    lattice_control::run(config, client, lattice_connect::shutdown_on_signal()).await
}

/// `~/.lattice/keys/<name>.nk`-style paths.
pub fn key_path(state_dir: &std::path::Path, name: &str) -> PathBuf {
    state_dir.join("keys").join(format!("{name}.nk"))
}
