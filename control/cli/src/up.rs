//! `lattice up`: a whole local lattice in one foreground process.
//!
//! It starts a nats-server with JetStream (data in the state directory), runs the control plane
//! in-process and one host as a `lattice-host` child process (the CLI does not contain the host),
//! with dev keys that it generates once and trusts. Everything lives in the state directory, so a
//! second `lattice up` on it comes back with the same keys, apps, artifacts and host.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use lattice_connect::{self as nats, NatsArgs, Patience, UpRecord};
use lattice_control::ControlConfig;
use lattice_protocol::keys::{KeyRole, PublicKey};
use lattice_protocol::names::LatticeName;

use crate::args::UpArgs;
use crate::serve::key_path;

/// The port `lattice up` prefers for its nats-server.
pub const DEFAULT_PORT: u16 = 4222;

/// Where a nats-server binary may be: `LATTICE_NATS_SERVER` (a path, to choose one of several
/// versions), then PATH, then the places distributions install it.
pub fn find_nats_server() -> Option<PathBuf> {
    if let Some(chosen) = std::env::var_os("LATTICE_NATS_SERVER") {
        return Some(PathBuf::from(chosen)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

/// The JetStream settings of the local lattice's nats-server. JetStream reserves every stream's
/// limit up front (about 6 GiB for Lattice's defaults), within `max_file_store`, which is 75 % of
/// the disk's free space unless declared: on a laptop or build machine with less free than that,
/// the control plane's buckets were refused and `lattice up` ended. A local lattice writes far
/// less than it reserves, so it declares room instead of depending on the disk's free space.
const LOCAL_JETSTREAM: &str = "jetstream {\n  max_file_store: 64G\n}\n";

/// A nats-server child, stopped on drop.
struct NatsServer {
    child: tokio::process::Child,
    url: String,
}

async fn start_nats(state_dir: &Path, port: u16) -> anyhow::Result<NatsServer> {
    let binary = find_nats_server().context(
        "nats-server is not installed. Install it with `sudo apt-get install nats-server` (Debian/Ubuntu) or `make deps`, or pass --nats-url to use a running NATS with JetStream",
    )?;
    let dir = state_dir.join("nats");
    std::fs::create_dir_all(&dir)?;
    // Stale ports files from an earlier run would be mistaken for this one's.
    for entry in std::fs::read_dir(&dir)?.flatten() {
        if entry.file_name().to_string_lossy().ends_with(".ports") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let log = std::fs::File::create(dir.join("nats-server.log"))?;
    let config = dir.join("nats-server.conf");
    std::fs::write(&config, LOCAL_JETSTREAM)
        .with_context(|| format!("writing {}", config.display()))?;
    let port_arg = if port == 0 {
        "-1".to_string()
    } else {
        port.to_string()
    };
    let mut child = tokio::process::Command::new(&binary)
        .arg("-c")
        .arg(&config)
        .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
        .arg(&dir)
        .arg("--ports_file_dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("nats-server.log")).unwrap_or_default();
            let last = log.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            anyhow::bail!(
                "nats-server exited ({status}): {last}; if the port is taken, another `lattice up` may be running, or pass --nats-port"
            );
        }
        if let Some(url) = read_ports_file(&dir) {
            return Ok(NatsServer { child, url });
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "nats-server did not start within 15 s; see {}",
                dir.join("nats-server.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The client URL from nats-server's ports file.
fn read_ports_file(dir: &Path) -> Option<String> {
    let entry = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".ports"))?;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(entry.path()).ok()?).ok()?;
    json["nats"].get(0)?.as_str().map(str::to_string)
}

/// The NATS server of the lattice: the one `--nats-url` names, or one started here (returned,
/// so that it stops with `lattice up`).
async fn nats_server(
    args: &UpArgs,
    state_dir: &Path,
) -> anyhow::Result<(String, Option<NatsServer>)> {
    if let Some(url) = &args.nats_url {
        return Ok((url.clone(), None));
    }
    // The distribution's nats-server service (without JetStream) often holds 4222 already;
    // then take any free port: the URL is recorded for `lattice ctl` either way.
    let mut port = args.nats_port;
    if port == DEFAULT_PORT && std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        eprintln!("port {port} is taken (a system nats-server?); starting ours on a free port");
        port = 0;
    }
    let server = start_nats(state_dir, port).await?;
    Ok((server.url.clone(), Some(server)))
}

/// The issuers the local host trusts: `lattice up`'s own and those given with `--trust-issuer`.
fn trusted_issuers(
    own: &lattice_protocol::keys::KeyPair,
    extra: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut issuers = vec![own.public_key().to_string()];
    for key in extra {
        let key = PublicKey::parse_role(key, KeyRole::Issuer).with_context(|| {
            format!("--trust-issuer `{key}`: give an issuer or wash account public key (A...)")
        })?;
        issuers.push(key.to_string());
    }
    Ok(issuers)
}

/// Runs the local lattice until Ctrl-C.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(nats::default_state_dir);
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let lattice = LatticeName::new(args.lattice.clone()).context("invalid --lattice")?;
    let operator =
        crate::keys::read_or_create(&key_path(&state_dir, "operator"), KeyRole::Operator)?;
    let issuer = crate::keys::read_or_create(&key_path(&state_dir, "issuer"), KeyRole::Issuer)?;
    let issuers = trusted_issuers(&issuer, &args.trust_issuers)?;
    // The local admin: an admin of the role table from the start, so that `lattice ctl` works
    // with no flag (it signs with this key, found through the record below); its join token
    // admits the local host, and `lattice ctl hosts token` signs with it by default.
    let admin_file = key_path(&state_dir, "admin");
    let admin = crate::keys::read_or_create(&admin_file, KeyRole::User)?;

    let (url, mut server) = nats_server(&args, &state_dir).await?;
    let nats_args = NatsArgs {
        nats_url: Some(url.clone()),
        lattice: Some(lattice.to_string()),
        creds: None,
        nkey: None,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        tls: false,
        nats_ping_secs: nats::DEFAULT_PING_SECS,
    };
    let client = nats::connect(&nats_args, &url, "lattice up", Patience::FailFast).await?;
    let shutdown = nats::shutdown_on_signal();

    // The only host is the one started below, which reports at once: no need to wait for others.
    // (The key read above is the control plane's: a `KeyPair` is not `Clone`, so pass a copy.)
    let mut control_config = ControlConfig::new(
        lattice.clone(),
        lattice_protocol::keys::KeyPair::from_seed(&operator.seed())?,
    );
    control_config.startup_grace = Duration::from_secs(1);
    control_config.admins = vec![admin.public_key()];
    control_config.metrics = args
        .metrics_addr
        .map(lattice_control::metrics::MetricsEndpoint::new);
    let join_token = local_join_token(&lattice, &admin);
    let control = tokio::spawn(lattice_control::run(
        control_config,
        client.clone(),
        shutdown.clone(),
    ));
    let mut host = start_host(&LocalHost {
        state_dir: state_dir.join("up-host"),
        lattice: &lattice,
        url: &url,
        // `lattice-host` splits its `--trust-issuer` at commas.
        issuer: issuers.join(","),
        operator: operator.public_key().to_string(),
        labels: &args.labels,
        join_token,
        metrics_addr: args.host_metrics_addr,
    })?;

    let record = UpRecord {
        nats_url: url.clone(),
        lattice: lattice.to_string(),
        issuer: issuer.public_key().to_string(),
        operator: operator.public_key().to_string(),
        admin_key: Some(admin_file),
    };
    let record_path = nats::up_record_path(&state_dir);
    std::fs::write(&record_path, serde_json::to_string_pretty(&record)?)?;
    eprintln!("{}", banner(&record, &state_dir));

    let result = tokio::select! {
        r = control => r.context("control plane task")?.context("control plane"),
        r = host.wait() => match r.context("waiting for the host")? {
            status if status.success() => Ok(()),
            status => Err(anyhow::anyhow!("the host ({}) exited: {status}", crate::serve::HOST_PROGRAM)),
        },
        () = shutdown.cancelled() => Ok(()),
    };
    shutdown.cancel();
    stop_host(&mut host).await;
    let _ = std::fs::remove_file(&record_path);
    if let Some(mut s) = server.take() {
        let _ = s.child.start_kill();
        let _ = s.child.wait().await;
    }
    eprintln!("Lattice stopped; state kept in {}", state_dir.display());
    result
}

/// A join token for this run's one host only (an hour); it is recorded as admitted when first
/// presented.
fn local_join_token(lattice: &LatticeName, admin: &lattice_protocol::keys::KeyPair) -> String {
    lattice_protocol::signed::JoinToken::sign(
        &lattice_protocol::signed::JoinGrant {
            lattice: lattice.clone(),
            expires_at: lattice_protocol::unix_now() + 3600,
            host: None,
            labels: Default::default(),
            note: "lattice up".into(),
        },
        admin,
    )
    .to_text()
}

/// What `lattice up` prints once the lattice is up: where things are, and what to do next.
fn banner(up: &UpRecord, state_dir: &Path) -> String {
    let issuer_file = key_path(state_dir, "issuer");
    let admin_file = key_path(state_dir, "admin");
    format!(
        "\nLattice `{}` is up.\n  NATS:          {}\n  state:         {}\n  issuer key:    {} ({})\n  control key:   {}\n  admin key:     {} (`lattice ctl` signs with it)\n\nIn another terminal:\n  lattice sign hello.wasm -o hello.signed.wasm --issuer {}\n  lattice push hello.signed.wasm\n  lattice ctl deploy app.yaml --wait\n  lattice ctl get hosts\n\nPress Ctrl-C to stop.\n",
        up.lattice,
        up.nats_url,
        state_dir.display(),
        issuer_file.display(),
        up.issuer,
        up.operator,
        admin_file.display(),
        issuer_file.display(),
    )
}

/// The one host of a local lattice.
struct LocalHost<'a> {
    state_dir: PathBuf,
    lattice: &'a LatticeName,
    url: &'a str,
    issuer: String,
    operator: String,
    labels: &'a [(String, String)],
    join_token: String,
    /// Where the host serves its metrics (`--host-metrics-addr`).
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Starts `lattice-host` on the local lattice's NATS, trusting its dev keys. It logs to this
/// process's stderr, and is killed if this process lets go of it without [`stop_host`].
fn start_host(host: &LocalHost<'_>) -> anyhow::Result<tokio::process::Child> {
    let program = crate::serve::host_program()?;
    let mut command = tokio::process::Command::new(&program);
    command
        .arg("--nats-url")
        .arg(host.url)
        .arg("--lattice")
        .arg(host.lattice.as_str())
        .arg("--trust-issuer")
        .arg(&host.issuer)
        .arg("--trust-operator")
        .arg(&host.operator)
        .arg("--state-dir")
        .arg(&host.state_dir)
        .arg("--heartbeat-secs")
        .arg("5");
    for (key, value) in host.labels {
        command.arg("--label").arg(format!("{key}={value}"));
    }
    if let Some(addr) = host.metrics_addr {
        command.arg("--metrics-addr").arg(addr.to_string());
    }
    // The local lattice's NATS needs no credentials, TLS or domain: settings of the shell meant
    // for another lattice must not reach this host (the flags above win over the rest).
    for var in [
        "LATTICE_NATS_CREDS",
        "LATTICE_NATS_NKEY",
        "LATTICE_NATS_TLS_CA",
        "LATTICE_NATS_TLS_CERT",
        "LATTICE_NATS_TLS_KEY",
        "LATTICE_NATS_TLS",
        "LATTICE_JS_DOMAIN",
        "LATTICE_OUTBOX_MAX_ENTRIES",
        "LATTICE_OUTBOX_MAX_BYTES",
        // The control plane's address (`lattice up --metrics-addr`): the host has its own.
        "LATTICE_METRICS_ADDR",
    ] {
        command.env_remove(var);
    }
    // In the environment rather than the arguments, which every user of the machine can read.
    command.env("LATTICE_JOIN_TOKEN", &host.join_token);
    command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// How long the host may take to stop (it reports "stopping" and drains) before it is killed.
const HOST_STOP_GRACE: Duration = Duration::from_secs(10);

/// Asks the host to stop with SIGTERM, as a service manager would, and kills it after
/// [`HOST_STOP_GRACE`].
async fn stop_host(host: &mut tokio::process::Child) {
    if let Some(pid) = host.id().and_then(|id| libc::pid_t::try_from(id).ok()) {
        #[expect(
            unsafe_code,
            reason = "kill(2) has no safe binding in the standard library"
        )]
        // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped
        // (`id()` is `None` once it is), so it cannot name another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(HOST_STOP_GRACE, host.wait())
        .await
        .is_err()
    {
        let _ = host.kill().await;
    }
}
