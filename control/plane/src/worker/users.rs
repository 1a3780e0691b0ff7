//! The role table: who may do what (`lattice ctl users`). It lives in the lattice, one KV key
//! per user key ([`Buckets::users`](lattice_protocol::subject::Buckets::users)), so every
//! control plane that leads reads the same table. A new lattice's table starts with the
//! bootstrap admins of [`ControlConfig::admins`](crate::ControlConfig::admins).
//!
//! What may change is decided by [`Roles::granted`] and [`Roles::revoked`] (pure: a key that is
//! not a user key, or a change that would leave no admin, is refused); the worker stores the
//! change and only then takes it as the table in force.

use async_nats::jetstream::kv;
use lattice_protocol::auth::{Grant, Roles};
use lattice_protocol::envelope::{self, Reply};
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::keys::PublicKey;
use lattice_protocol::messages::{UserEntry, UsersAddRequest, UsersRemoveRequest, verbs};
use tracing::{info, warn};

use super::Worker;
use crate::decide::{Action, ReplyTo};

/// A role-table verb, authorized (admins only).
pub(super) enum UsersJob {
    Add(UsersAddRequest),
    List,
    Remove(UsersRemoveRequest),
}

/// The table as stored; when there is none yet (a new lattice), it starts with `admins`, stored.
pub(super) async fn load(store: &kv::Store, admins: &[PublicKey]) -> anyhow::Result<Roles> {
    let mut roles = Roles::default();
    for (key, grant, _) in super::load::<Grant>(store).await? {
        match PublicKey::parse(&key) {
            Ok(key) => roles.insert(key, grant),
            Err(e) => {
                warn!(key, error = %e, "skipping a role-table entry whose key does not parse")
            }
        }
    }
    if roles.users.is_empty() {
        for (i, admin) in admins.iter().enumerate() {
            let grant = Grant::new(
                &format!("bootstrap-admin-{}", i + 1),
                lattice_protocol::auth::Role::Admin,
                [""; 0],
            )
            .map_err(anyhow::Error::msg)?;
            store
                .put(admin.as_str(), envelope::encode(&grant).into())
                .await?;
            roles.insert(admin.clone(), grant);
        }
        if !admins.is_empty() {
            info!(
                admins = admins.len(),
                "role table started with the bootstrap admins"
            );
        }
    }
    if roles.admins().next().is_none() {
        warn!(
            "the role table has no admin: every `lattice ctl` request will be refused; start the control plane with --admin KEY"
        );
    }
    Ok(roles)
}

impl Worker {
    /// Carries out a role-table verb and answers it.
    pub(super) async fn on_users(&mut self, reply: ReplyTo, job: UsersJob) {
        let action = match job {
            UsersJob::List => {
                let entries = self
                    .roles
                    .users
                    .iter()
                    .map(|(key, grant)| UserEntry {
                        key: key.clone(),
                        grant: grant.clone(),
                    })
                    .collect();
                Action::reply::<verbs::UsersList>(&reply, Ok(entries))
            }
            UsersJob::Add(r) => {
                let answer = self.change_users(&r.key, Some(r.grant)).await;
                Action::reply::<verbs::UsersAdd>(&reply, answer)
            }
            UsersJob::Remove(r) => {
                let answer = self.change_users(&r.key, None).await;
                Action::reply::<verbs::UsersRemove>(&reply, answer)
            }
        };
        let _ = self.act(action).await;
    }

    /// Grants `key` (`Some`) or removes it (`None`): decided on the table, stored, then in force.
    async fn change_users(&mut self, key: &PublicKey, grant: Option<Grant>) -> Reply<()> {
        let store = &self.stores.users;
        let (next, stored) = match grant {
            Some(grant) => {
                let next = self.roles.granted(key, grant.clone())?;
                let stored = store
                    .put(key.as_str(), envelope::encode(&grant).into())
                    .await;
                (next, stored.map(|_| ()).map_err(|e| e.to_string()))
            }
            None => {
                let next = self.roles.revoked(key)?;
                let stored = store.delete(key.as_str()).await;
                (next, stored.map_err(|e| e.to_string()))
            }
        };
        stored.map_err(|e| {
            WireError::new(
                ErrorCode::Unavailable,
                format!("the role table could not be stored ({e}); nothing changed, try again"),
            )
        })?;
        info!(user = %key, "role table changed");
        self.roles = next;
        self.state
            .set_host_admins(self.roles.admins().cloned().collect());
        Ok(())
    }
}
