//! Connecting to NATS with the options every command shares, and finding the lattice that
//! `lattice up` started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use lattice_protocol::names::LatticeName;
use serde::{Deserialize, Serialize};

use crate::args::NatsArgs;

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
    let mut options = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(5));
    if let Some(creds) = &args.creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
    }
    if let Some(nkey) = &args.nkey {
        let seed = std::fs::read_to_string(nkey)
            .with_context(|| format!("reading NATS nkey {}", nkey.display()))?;
        options = options.nkey(seed.trim().to_string());
    }
    if let Some(ca) = &args.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if args.tls {
        options = options.require_tls(true);
    }
    if patience == Patience::KeepTrying {
        options = options.retry_on_initial_connect();
    }
    options.connect(url).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach NATS at {url} ({e}); check that nats-server is running there (`lattice up` starts one) or pass --nats-url"
        )
    })
}
