//! Who `lattice ctl` is: the user key that signs its requests and the control-plane keys whose
//! replies it believes ([`identity`]); and `lattice ctl users`, the role table's commands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lattice_control::client::CtlClient;
use lattice_protocol::auth::Grant;
use lattice_protocol::keys::{KeyPair, KeyRole, PublicKey};

use crate::args::{CtlArgs, Output, UsersWhat};
use crate::output::{self, table};

/// The user key to sign with and the control-plane keys to trust: flags and environment
/// first, then what `lattice up` recorded (its local admin key and its control plane's key).
pub(super) fn identity(args: &CtlArgs) -> anyhow::Result<(KeyPair, Vec<PublicKey>)> {
    identity_of(
        args.key.as_deref(),
        args.state_dir.as_deref(),
        &args.control_keys,
    )
}

/// [`identity`] from the flags themselves (`--key`, `--state-dir`, `--control-key`), for the
/// commands that sign as `lattice ctl` does (`lattice ui`).
pub(crate) fn identity_of(
    key: Option<&Path>,
    state_dir: Option<&Path>,
    control_keys: &[String],
) -> anyhow::Result<(KeyPair, Vec<PublicKey>)> {
    let record = lattice_connect::read_up_record(state_dir);
    let key_file = key
        .map(Path::to_path_buf)
        .or_else(|| record.as_ref().and_then(|r| r.admin_key.clone()))
        .or_else(|| Some(local_admin_key(state_dir)).filter(|p| p.is_file()))
        .context(
            "no user key to sign the request with: pass --key FILE (or set LATTICE_KEY); make a key with `lattice keys gen user -o FILE` and ask an admin to add its public key with `lattice ctl users add` (after `lattice up`, its local admin key is used)",
        )?;
    let key = crate::keys::read(&key_file, KeyRole::User)?;
    let trusted = if control_keys.is_empty() {
        let operator = record.as_ref().map(|r| r.operator.clone()).context(
            "no control-plane key to check replies with: pass --control-key O... (or set LATTICE_CONTROL_KEY) with the public key `lattice control` logs at start (`lattice up` records its own)",
        )?;
        vec![PublicKey::parse_role(&operator, KeyRole::Operator)?]
    } else {
        control_keys
            .iter()
            .map(|k| control_key(k))
            .collect::<anyhow::Result<_>>()?
    };
    Ok((key, trusted))
}

/// The admin key `lattice up` makes in `state_dir` (default `~/.lattice`).
fn local_admin_key(state_dir: Option<&Path>) -> PathBuf {
    let dir = state_dir.map_or_else(lattice_connect::default_state_dir, Path::to_path_buf);
    crate::serve::key_path(&dir, "admin")
}

/// A control-plane key given as its public key (`O...`) or as its key file (whose public
/// half is taken: `LATTICE_CONTROL_KEY` names the file for `lattice control`).
fn control_key(given: &str) -> anyhow::Result<PublicKey> {
    if let Ok(key) = PublicKey::parse_role(given, KeyRole::Operator) {
        return Ok(key);
    }
    let path = Path::new(given);
    if path.is_file() {
        return Ok(crate::keys::read(path, KeyRole::Operator)?.public_key());
    }
    anyhow::bail!(
        "--control-key `{given}` is neither an operator public key (`O...`) nor an operator key file"
    )
}

/// Runs a `lattice ctl users` command.
pub(super) async fn users(ctl: &CtlClient, what: UsersWhat, out: Output) -> anyhow::Result<()> {
    match what {
        UsersWhat::Add {
            user,
            name,
            role,
            apps,
        } => {
            let key = PublicKey::parse_role(&user, KeyRole::User).context(
                "`users add` takes a user public key (`U...`, from `lattice keys gen user`)",
            )?;
            let grant = Grant::new(&name, role, &apps).map_err(anyhow::Error::msg)?;
            ctl.users_add(&key, grant).await?;
            eprintln!("{name} ({key}) is now a {}", role.name());
        }
        UsersWhat::List => {
            let users = ctl.users_list().await?;
            output::print(out, &users, |users| {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| {
                        let apps: Vec<&str> = u.grant.apps.iter().map(|p| p.as_str()).collect();
                        vec![
                            u.grant.name.clone(),
                            u.grant.role.name().to_string(),
                            apps.join(","),
                            u.key.to_string(),
                        ]
                    })
                    .collect();
                table(&["NAME", "ROLE", "APPS", "KEY"], &rows)
            });
        }
        UsersWhat::Remove { user } => {
            let key = PublicKey::parse_role(&user, KeyRole::User)
                .context("`users remove` takes a user public key (`U...`)")?;
            ctl.users_remove(&key).await?;
            eprintln!("{key} removed from the role table");
        }
    }
    Ok(())
}
