//! `lattice up`: a whole local lattice in one foreground process.
//!
//! It starts a nats-server with JetStream (data in the state directory), then runs the control
//! plane and one host in-process with dev keys that it generates once and trusts. Everything
//! lives in the state directory, so a second `lattice up` on it comes back with the same keys,
//! apps, artifacts and host.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use lattice_control::ControlConfig;
use lattice_protocol::keys::KeyRole;
use lattice_protocol::names::LatticeName;

use crate::args::{HostArgs, NatsArgs, UpArgs};
use crate::nats::{self, Patience, UpRecord};
use crate::serve::{host_config, key_path, shutdown_on_signal};

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
    let port_arg = if port == 0 {
        "-1".to_string()
    } else {
        port.to_string()
    };
    let mut child = tokio::process::Command::new(&binary)
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

    let mut server = None;
    let url = match &args.nats_url {
        Some(url) => url.clone(),
        None => {
            // The distribution's nats-server service (without JetStream) often holds 4222 already;
            // then take any free port: the URL is recorded for `lattice ctl` either way.
            let mut port = args.nats_port;
            if port == DEFAULT_PORT && std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                eprintln!(
                    "port {port} is taken (a system nats-server?); starting ours on a free port"
                );
                port = 0;
            }
            let s = start_nats(&state_dir, port).await?;
            let url = s.url.clone();
            server = Some(s);
            url
        }
    };
    let nats_args = NatsArgs {
        nats_url: Some(url.clone()),
        lattice: Some(lattice.to_string()),
        creds: None,
        nkey: None,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        tls: false,
    };
    let client = nats::connect(&nats_args, &url, "lattice up", Patience::FailFast).await?;
    let shutdown = shutdown_on_signal();

    // The only host is in this process and reports at once: no need to wait for others.
    // (The key read above is the control plane's: a `KeyPair` is not `Clone`, so pass a copy.)
    let mut control_config = ControlConfig::new(
        lattice.clone(),
        lattice_protocol::keys::KeyPair::from_seed(&operator.seed())?,
    );
    control_config.startup_grace = Duration::from_secs(1);
    let control = tokio::spawn(lattice_control::run(
        control_config,
        client.clone(),
        shutdown.clone(),
    ));
    let host_args = HostArgs {
        nats: nats_args,
        labels: args.labels.clone(),
        trust_issuers: vec![issuer.public_key().to_string()],
        trust_operators: vec![operator.public_key().to_string()],
        state_dir: Some(state_dir.join("up-host")),
        name: None,
        heartbeat_secs: 5,
        js_domain: None,
        outbox_max_entries: lattice_host::DEFAULT_OUTBOX_MAX_ENTRIES,
        outbox_max_bytes: lattice_host::DEFAULT_OUTBOX_MAX_BYTES,
    };
    let host = tokio::spawn(lattice_host::run(
        host_config(&host_args, lattice.clone(), &url)?,
        client.clone(),
        shutdown.clone(),
    ));

    let record = UpRecord {
        nats_url: url.clone(),
        lattice: lattice.to_string(),
        issuer: issuer.public_key().to_string(),
        operator: operator.public_key().to_string(),
    };
    let record_path = nats::up_record_path(&state_dir);
    std::fs::write(&record_path, serde_json::to_string_pretty(&record)?)?;
    let issuer_file = key_path(&state_dir, "issuer");
    eprintln!(
        "\nLattice `{lattice}` is up.\n  NATS:          {url}\n  state:         {}\n  issuer key:    {} ({})\n  control key:   {}\n\nIn another terminal:\n  lattice sign hello.wasm -o hello.signed.wasm --issuer {}\n  lattice push hello.signed.wasm\n  lattice ctl deploy app.yaml --wait\n  lattice ctl get hosts\n\nPress Ctrl-C to stop.\n",
        state_dir.display(),
        issuer_file.display(),
        issuer.public_key(),
        operator.public_key(),
        issuer_file.display(),
    );

    let result = tokio::select! {
        r = control => r.context("control plane task")?.context("control plane"),
        r = host => r.context("host task")?.context("host"),
        () = shutdown.cancelled() => Ok(()),
    };
    shutdown.cancel();
    let _ = std::fs::remove_file(&record_path);
    if let Some(mut s) = server.take() {
        let _ = s.child.start_kill();
        let _ = s.child.wait().await;
    }
    eprintln!("Lattice stopped; state kept in {}", state_dir.display());
    result
}
