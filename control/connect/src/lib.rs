//! How a Lattice program joins a lattice from the command line: the NATS flags every binary
//! takes ([`NatsArgs`]), where `lattice up` records the lattice it started ([`UpRecord`]) so
//! that other commands find it, resolving and connecting ([`target`], [`connect`]), label flags
//! ([`parse_label`]), the hub storage limits of the streams and buckets a program makes
//! ([`StorageArgs`]) and stopping on Ctrl-C or SIGTERM ([`shutdown_on_signal`]); and the key
//! files both read and write ([`keyfile`]).
//!
//! Both `lattice` and `lattice-host` build on it, which is why it is its own small crate: the
//! operator's CLI must not link the host (wasmtime) and the host must not link the CLI, yet a
//! flag must mean the same in both.
#![deny(missing_docs)]

pub mod keyfile;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lattice_protocol::names::LatticeName;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// How to reach NATS; every networked command takes these.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS URL, or several separated by commas (the servers of a clustered hub: the client
    /// starts with any of them and moves to another when its server goes). Default: the
    /// lattice `lattice up` started, else nats://127.0.0.1:4222.
    #[arg(long, env = "LATTICE_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Lattice name.
    #[arg(long, env = "LATTICE_LATTICE", global = true)]
    pub lattice: Option<String>,
    /// NATS credentials file (JWT + nkey seed).
    #[arg(long, env = "LATTICE_NATS_CREDS", global = true)]
    pub creds: Option<PathBuf>,
    /// File with a NATS nkey seed (`SU...`), or a Lattice key file (a host's `host.nk`, the
    /// control plane's or a user's key) whose key authenticates as a NATS user nkey (the one
    /// `lattice nats authz` grants permissions to).
    #[arg(long, env = "LATTICE_NATS_NKEY", global = true)]
    pub nkey: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS server with.
    #[arg(long, env = "LATTICE_NATS_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --tls-key.
    #[arg(
        long,
        env = "LATTICE_NATS_TLS_CERT",
        global = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(
        long,
        env = "LATTICE_NATS_TLS_KEY",
        global = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require TLS even if the server does not ask for it.
    #[arg(long, env = "LATTICE_NATS_TLS", global = true)]
    pub tls: bool,
    /// Seconds between pings to the NATS server. A link that stops carrying packets without
    /// closing (a half-open TCP connection) is given up after three unanswered pings, and the
    /// client reconnects: 8 s notices within 24 s.
    #[arg(
        long,
        env = "LATTICE_NATS_PING_SECS",
        global = true,
        default_value_t = DEFAULT_PING_SECS,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub nats_ping_secs: u64,
}

/// Seconds between pings by default: three missed pings (async-nats gives up after the third)
/// stay under 30 s.
pub const DEFAULT_PING_SECS: u64 = 8;

impl NatsArgs {
    /// The connection options these flags set (all but where to connect).
    pub fn options(&self) -> NatsOptions {
        NatsOptions {
            creds: self.creds.clone(),
            nkey: self.nkey.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            require_tls: self.tls,
            ping_interval: Duration::from_secs(self.nats_ping_secs),
        }
    }
}

/// How to authenticate to NATS and keep the connection checked: what a host passes on to the
/// provider processes it starts, so that they connect exactly as it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// A credentials file (JWT + nkey seed).
    pub creds: Option<PathBuf>,
    /// A file with an nkey seed.
    pub nkey: Option<PathBuf>,
    /// A CA certificate (PEM) to verify the server with.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// Its key (PEM).
    pub tls_key: Option<PathBuf>,
    /// TLS even if the server does not ask for it.
    pub require_tls: bool,
    /// Time between pings; three unanswered ones end the connection (and a reconnect begins).
    pub ping_interval: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            creds: None,
            nkey: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            ping_interval: Duration::from_secs(DEFAULT_PING_SECS),
        }
    }
}

/// How much hub storage the streams and buckets a program makes may take, and their replicas.
/// The control plane and hosts take the same flags; a stream gets the limits of whoever opened
/// it last, so give both the same values.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Copies of every JetStream stream and bucket the lattice makes: 1 for a single
    /// nats-server, 3 for a three-node hub.
    #[arg(long, alias = "js-replicas", env = "LATTICE_JS_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
    /// The most bytes (a plain number) the hub's queue stream holds; at the limit it refuses
    /// new items, which wait in the senders' outboxes until consumers make room. At least
    /// 1 MiB: one stream message (a bundle of queued calls) may take 128 KiB.
    #[arg(long, env = "LATTICE_QUEUE_MAX_BYTES",
          default_value_t = lattice_protocol::jetstream::Storage::default().queue_max_bytes,
          value_parser = clap::value_parser!(i64).range(1024 * 1024..))]
    pub queue_max_bytes: i64,
    /// The most bytes (a plain number) the dead-letter stream holds.
    #[arg(long, env = "LATTICE_DEADLETTER_MAX_BYTES",
          default_value_t = lattice_protocol::jetstream::Storage::default().deadletter_max_bytes,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub deadletter_max_bytes: i64,
    /// Days a dead letter is kept.
    #[arg(long, env = "LATTICE_DEADLETTER_MAX_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub deadletter_max_days: u64,
    /// The most bytes (a plain number) each of the lattice's KV buckets holds.
    #[arg(long, env = "LATTICE_KV_MAX_BYTES",
          default_value_t = lattice_protocol::jetstream::Storage::default().kv_max_bytes,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub kv_max_bytes: i64,
}

impl StorageArgs {
    /// The limits these flags set (the artifact store's is the control plane's own flag).
    pub fn storage(&self) -> lattice_protocol::jetstream::Storage {
        lattice_protocol::jetstream::Storage {
            replicas: usize::from(self.replicas),
            queue_max_bytes: self.queue_max_bytes,
            deadletter_max_bytes: self.deadletter_max_bytes,
            deadletter_max_age: Duration::from_secs(self.deadletter_max_days * 24 * 3600),
            kv_max_bytes: self.kv_max_bytes,
            ..Default::default()
        }
    }
}

/// The URL used when nothing else says where NATS is.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// What `lattice up` records in its state directory for other commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpRecord {
    /// Where its NATS listens.
    pub nats_url: String,
    /// The lattice name.
    pub lattice: String,
    /// The dev issuer's public key.
    pub issuer: String,
    /// The control plane's public key.
    pub operator: String,
    /// The local admin's user key file, which `lattice ctl` signs with by default. Absent from
    /// records of a `lattice up` that predates signed requests.
    #[serde(default)]
    pub admin_key: Option<PathBuf>,
}

/// The file `lattice up` writes.
pub fn up_record_path(state_dir: &Path) -> PathBuf {
    state_dir.join("up.json")
}

/// `~/.lattice`, or `.lattice` in the current directory without a home.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".lattice")
}

/// Reads the record of a running `lattice up`, if any.
pub fn read_up_record(state_dir: Option<&Path>) -> Option<UpRecord> {
    let dir = state_dir.map_or_else(default_state_dir, Path::to_path_buf);
    let text = std::fs::read_to_string(up_record_path(&dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Where to connect and which lattice, after flags, environment and `lattice up`'s record.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL.
    pub url: String,
    /// The lattice.
    pub lattice: LatticeName,
}

/// Resolves the target: flags and environment first, then `lattice up`'s record, then defaults.
pub fn target(args: &NatsArgs, state_dir: Option<&Path>) -> anyhow::Result<Target> {
    let record = if args.nats_url.is_none() || args.lattice.is_none() {
        read_up_record(state_dir)
    } else {
        None
    };
    let url = args
        .nats_url
        .clone()
        .or_else(|| record.as_ref().map(|r| r.nats_url.clone()))
        .unwrap_or_else(|| DEFAULT_NATS_URL.to_string());
    let lattice = args
        .lattice
        .clone()
        .or_else(|| record.as_ref().map(|r| r.lattice.clone()))
        .unwrap_or_else(|| "default".to_string());
    let lattice = LatticeName::new(lattice).context("invalid --lattice")?;
    Ok(Target { url, lattice })
}

/// How hard to try the first connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Fail at once with a clear message (operator commands).
    FailFast,
    /// Keep trying in the background (hosts and control planes, which must start offline).
    KeepTrying,
}

/// Connects with the shared options.
pub async fn connect(
    args: &NatsArgs,
    url: &str,
    client_name: &str,
    patience: Patience,
) -> anyhow::Result<async_nats::Client> {
    connect_with(&args.options(), url, client_name, patience).await
}

/// Connects with `options`: the one place a Lattice program's NATS connection is set up.
pub async fn connect_with(
    args: &NatsOptions,
    url: &str,
    client_name: &str,
    patience: Patience,
) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(args.ping_interval);
    if let Some(creds) = &args.creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
    }
    if let Some(nkey) = &args.nkey {
        let text = std::fs::read_to_string(nkey)
            .with_context(|| format!("reading NATS nkey {}", nkey.display()))?;
        // A NATS seed (`SU...`) or a Lattice key file (host, control plane, user): the same
        // ed25519 key, authenticating as the user nkey `lattice nats authz` names for it.
        let (seed, user) = lattice_protocol::permissions::user_seed(&text).with_context(|| {
            format!(
                "{} holds no nkey seed; give a NATS seed (SU...) or a Lattice key file (`lattice keys gen`)",
                nkey.display()
            )
        })?;
        // Replies come under this user's own prefix: the only inbox its permissions let it read.
        options = options
            .nkey(seed)
            .custom_inbox_prefix(lattice_protocol::permissions::inbox_prefix(&user));
    }
    if let Some(ca) = &args.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if args.require_tls {
        options = options.require_tls(true);
    }
    if patience == Patience::KeepTrying {
        options = options.retry_on_initial_connect();
    }
    let servers = server_urls(url)?;
    options.connect(servers).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach NATS at {url} ({e}); check that nats-server is running there (`lattice up` starts one) or pass --nats-url"
        )
    })
}

/// The servers of `urls`: one URL, or several separated by commas (spaces around each are
/// ignored), as `--nats-url` takes them for a clustered hub. async-nats reads a string as one
/// URL, so the list is split here.
pub fn server_urls(urls: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>().with_context(|| {
                format!("`{u}` in --nats-url is not a NATS URL; give nats://host:port, several separated by commas")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        !servers.is_empty(),
        "--nats-url `{urls}` names no server; give nats://host:port, several separated by commas"
    );
    Ok(servers)
}

/// Parses `key=value`, validating the key as a label name.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label `{s}` must be `key=value`"))?;
    lattice_protocol::names::LabelKey::new(k).map_err(|e| e.to_string())?;
    if v.chars().any(char::is_control) {
        return Err(format!("label `{k}` has a control character in its value"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        t.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_list_names_every_server_in_order() {
        let servers = server_urls("nats://a:4222, nats://b:4223,nats://c:4224").expect("parses");
        let hosts: Vec<(String, u16)> = servers
            .iter()
            .map(|s| (s.host().to_string(), s.port()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("a".to_string(), 4222),
                ("b".to_string(), 4223),
                ("c".to_string(), 4224)
            ]
        );
        assert_eq!(
            server_urls("nats://127.0.0.1:4222").expect("parses").len(),
            1
        );
        let err = server_urls(" , ").unwrap_err().to_string();
        assert!(err.contains("names no server"), "{err}");
        let err = format!(
            "{:#}",
            server_urls("nats://a:4222,http://[::1").unwrap_err()
        );
        assert!(err.contains("is not a NATS URL"), "{err}");
    }

    #[test]
    fn js_replicas_and_replicas_set_the_copies_of_every_stream() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            storage: StorageArgs,
        }
        for flag in ["--js-replicas", "--replicas"] {
            let flags = Flags::try_parse_from(["lattice", flag, "3"]).expect("parses");
            assert_eq!(flags.storage.storage().replicas, 3, "{flag}");
        }
        let flags = Flags::try_parse_from(["lattice"]).expect("parses");
        assert_eq!(flags.storage.storage().replicas, 1);
        assert!(Flags::try_parse_from(["lattice", "--js-replicas", "0"]).is_err());
    }

    #[test]
    fn labels_are_validated() {
        assert_eq!(
            parse_label("zone=edge"),
            Ok(("zone".to_string(), "edge".to_string()))
        );
        assert!(parse_label("zone").is_err());
        let err = parse_label("my.zone=edge").unwrap_err();
        assert!(err.contains("subject separator"), "{err}");
    }
}
