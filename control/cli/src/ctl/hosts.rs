//! `lattice ctl hosts token|admit|revoke`: which hosts take part in a lattice. A join token is
//! signed here, with an admin's user key, and needs no round trip: it is given to the hosts
//! being provisioned (`lattice-host --join-token`), and the control plane admits each host
//! that presents it. `admit` and `revoke` change one host's admission directly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use lattice_control::client::CtlClient;
use lattice_protocol::keys::KeyRole;
use lattice_protocol::messages::{AdmissionRequest, verbs};
use lattice_protocol::names::{HostId, LatticeName};
use lattice_protocol::signed::{JoinGrant, JoinToken};

use crate::args::HostsCommand;

/// What `hosts token` signs.
pub(super) struct TokenRequest<'a> {
    pub(super) key: Option<&'a Path>,
    pub(super) state_dir: Option<&'a Path>,
    pub(super) lattice: LatticeName,
    pub(super) host: Option<&'a str>,
    pub(super) labels: &'a [(String, String)],
    pub(super) valid: Duration,
    pub(super) note: &'a str,
}

/// The admin key of `lattice up` in `state_dir` (or the default state directory).
pub fn up_admin_key(state_dir: Option<&Path>) -> PathBuf {
    let dir = state_dir.map_or_else(lattice_connect::default_state_dir, Path::to_path_buf);
    crate::serve::key_path(&dir, "admin")
}

/// `hosts token`: prints a join token signed with the admin's key.
pub(super) fn token(req: &TokenRequest<'_>) -> anyhow::Result<()> {
    let path = req
        .key
        .map_or_else(|| up_admin_key(req.state_dir), Path::to_path_buf);
    let admin = crate::keys::read(&path, KeyRole::User).with_context(|| {
        "an admin's user key is needed to sign a join token: give it with --key FILE (or LATTICE_KEY)"
    })?;
    let host = req
        .host
        .map(|h| {
            lattice_protocol::keys::PublicKey::parse_role(h, KeyRole::Host)
                .map_err(anyhow::Error::from)
                .and_then(|k| Ok(HostId::new(k.to_string())?))
                .with_context(|| format!("--host {h}: give the host's full id (N..., `lattice ctl get hosts -o json` shows it)"))
        })
        .transpose()?;
    let grant = JoinGrant {
        lattice: req.lattice.clone(),
        expires_at: lattice_protocol::unix_now() + req.valid.as_secs().max(1),
        host,
        labels: req.labels.iter().cloned().collect(),
        note: req.note.to_string(),
    };
    eprintln!(
        "join token for lattice `{}`, valid {}, signed by {}",
        req.lattice,
        humantime::format_duration(req.valid),
        admin.public_key()
    );
    println!("{}", JoinToken::sign(&grant, &admin).to_text());
    Ok(())
}

/// `hosts admit HOST` (`admit`) or `hosts revoke HOST`.
/// `ctl hosts admit|revoke`; a join token (`hosts token`) is signed before connecting.
pub(super) async fn command(ctl: &CtlClient, what: HostsCommand) -> anyhow::Result<()> {
    match what {
        HostsCommand::Admit { host } => admission(ctl, host, true).await,
        HostsCommand::Revoke { host } => admission(ctl, host, false).await,
        HostsCommand::Token { .. } => anyhow::bail!("a join token is made before connecting"),
    }
}

async fn admission(ctl: &CtlClient, host: String, admit: bool) -> anyhow::Result<()> {
    let id = ctl
        .call::<verbs::Admission>(&AdmissionRequest { host, admit })
        .await?;
    if admit {
        eprintln!("host {id} admitted");
    } else {
        eprintln!("host {id} revoked: it loses its work, and its join token no longer admits it");
    }
    Ok(())
}
