//! The config store (`lattice ctl config`): named configs kept in the lattice, one KV key per
//! name ([`Buckets::configs`](lattice_protocol::subject::Buckets::configs)), which manifests take
//! by name ([`lattice_manifest::configs`]). Deploys read them when they are prepared; the worker
//! keeps the store in memory for that (this leadership writes it, a new one reads it at start).
//!
//! A put that changes a config deployed apps took gives each of them a new version, the same
//! manifest with the new values (named `<version>+<config>@<revision>`), deployed through a
//! rollout like any other: the change reaches running components, health checks and automatic
//! rollback included, and `ctl rollback` brings the old values back. A config a deployed app
//! takes cannot be deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_nats::jetstream::kv;
use lattice_protocol::envelope::{self, Reply};
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::messages::{
    ConfigEntry, ConfigPutReply, ConfigPutRequest, ConfigRequest, DeployRequest, verbs,
};
use lattice_protocol::names::AppName;
use tracing::{info, warn};

use super::Worker;
use super::prepare::Job;
use crate::decide::{Action, ReplyTo, invalid};
use crate::model::StoredApp;

/// Named configs by name, as stored.
pub(super) type Configs = BTreeMap<String, BTreeMap<String, String>>;

/// The longest config name (a KV key, and a part of version names).
const NAME_MAX: usize = 64;

/// A config-store verb, authorized.
pub(super) enum ConfigJob {
    Put(ConfigPutRequest),
    Get(ConfigRequest),
    Del(ConfigRequest),
    List,
}

/// The store as it is.
pub(super) async fn load(store: &kv::Store) -> anyhow::Result<Configs> {
    Ok(super::load::<BTreeMap<String, String>>(store)
        .await?
        .into_iter()
        .map(|(name, values, _)| (name, values))
        .collect())
}

/// Why `name` cannot name a config, if it cannot.
fn name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty()
        || name.len() > NAME_MAX
        || name.starts_with('.')
        || !name.chars().all(allowed)
    {
        return Some(format!(
            "config name `{name}`: use 1 to {NAME_MAX} letters, digits, `-`, `_` or `.`, not starting with `.`"
        ));
    }
    None
}

/// The deployed apps whose desired version took `name` from the store.
fn takers<'a>(
    catalog: &'a BTreeMap<AppName, StoredApp>,
    name: &'a str,
) -> impl Iterator<Item = (&'a StoredApp, lattice_manifest::Manifest)> + 'a {
    catalog.values().filter_map(move |app| {
        let manifest = lattice_manifest::parse(&app.desired()?.manifest).ok()?;
        manifest
            .configs_taken()
            .contains(name)
            .then_some((app, manifest))
    })
}

/// The version of an app taking revision `revision` of config `name`, after `current`: an
/// earlier `+<name>@<revision>` is replaced, so the name does not grow with every change.
fn next_version(current: &str, name: &str, revision: u64) -> String {
    let marker = format!("+{name}@");
    let base = current.find(&marker).map_or(current, |at| &current[..at]);
    format!("{base}{marker}{revision}")
}

impl Worker {
    /// Carries out a config-store verb and answers it.
    pub(super) async fn on_configs(&mut self, reply: ReplyTo, job: ConfigJob) {
        let action = match job {
            ConfigJob::Get(r) => Action::reply::<verbs::ConfigGet>(
                &reply,
                self.configs
                    .get(&r.name)
                    .cloned()
                    .ok_or_else(|| missing(&r.name)),
            ),
            ConfigJob::List => {
                let catalog = self.catalog();
                let entries = self
                    .configs
                    .iter()
                    .map(|(name, values)| ConfigEntry {
                        name: name.clone(),
                        values: values.clone(),
                        used_by: takers(&catalog, name)
                            .map(|(a, _)| a.name.clone())
                            .collect(),
                    })
                    .collect();
                Action::reply::<verbs::ConfigList>(&reply, Ok(entries))
            }
            ConfigJob::Put(r) => {
                let answer = self.put_config(r).await;
                Action::reply::<verbs::ConfigPut>(&reply, answer)
            }
            ConfigJob::Del(r) => {
                let answer = self.del_config(&r.name).await;
                Action::reply::<verbs::ConfigDel>(&reply, answer)
            }
        };
        let _ = self.act(action).await;
    }

    /// Stores a config, then redeploys the apps that took it.
    async fn put_config(&mut self, r: ConfigPutRequest) -> Reply<ConfigPutReply> {
        if let Some(problem) = name_problem(&r.name) {
            return Err(invalid(problem));
        }
        if r.values.is_empty() || r.values.keys().any(String::is_empty) {
            return Err(invalid(format!(
                "config `{}` needs at least one KEY=VALUE, and no empty key",
                r.name
            )));
        }
        let revision = self
            .stores
            .configs
            .put(&r.name, envelope::encode(&r.values).into())
            .await
            .map_err(|e| unavailable(&format!("the config could not be stored ({e})")))?;
        info!(config = %r.name, revision, "config stored");
        let changed = self.configs.get(&r.name) != Some(&r.values);
        Arc::make_mut(&mut self.configs).insert(r.name.clone(), r.values.clone());
        let redeployed = if changed {
            self.redeploy_takers(&r.name, &r.values, revision)
        } else {
            Vec::new()
        };
        Ok(ConfigPutReply {
            revision,
            redeployed,
        })
    }

    /// Deploys a new version of each app that took `name`, with `values` in it.
    fn redeploy_takers(
        &mut self,
        name: &str,
        values: &BTreeMap<String, String>,
        revision: u64,
    ) -> Vec<(AppName, String)> {
        let catalog = self.catalog();
        let mut jobs = Vec::new();
        for (app, mut manifest) in takers(&catalog, name) {
            let Some(current) = app.desired() else {
                continue;
            };
            manifest.refill_config(name, values);
            let version = next_version(&current.version, name, revision);
            manifest.metadata.annotations.insert(
                lattice_manifest::model::VERSION_ANNOTATION.to_string(),
                version.clone(),
            );
            match serde_json::to_string_pretty(&manifest) {
                // JSON is YAML: stored as a scale's rewritten manifest is.
                Ok(text) => jobs.push((app.name.clone(), version, text)),
                Err(e) => warn!(app = %app.name, error = %e, "could not rewrite a manifest"),
            }
        }
        let mut redeployed = Vec::new();
        for (app, version, manifest) in jobs {
            info!(%app, version, config = name, "deploying a config change");
            // Nobody waits for these: what becomes of them shows in events and `ctl status`.
            self.prepare(ReplyTo::nobody(), Job::Deploy(DeployRequest { manifest }));
            redeployed.push((app, version));
        }
        redeployed
    }

    /// Deletes a config no deployed app takes.
    async fn del_config(&mut self, name: &str) -> Reply<()> {
        if !self.configs.contains_key(name) {
            return Err(missing(name));
        }
        let catalog = self.catalog();
        let users: BTreeSet<String> = takers(&catalog, name)
            .map(|(a, _)| a.name.to_string())
            .collect();
        if !users.is_empty() {
            let users: Vec<String> = users.into_iter().collect();
            return Err(WireError::new(
                ErrorCode::Conflict,
                format!(
                    "config `{name}` is taken by the deployed app(s) {}: deploy them without it (or undeploy them) first",
                    users.join(", ")
                ),
            ));
        }
        self.stores
            .configs
            .delete(name)
            .await
            .map_err(|e| unavailable(&format!("the config could not be deleted ({e})")))?;
        Arc::make_mut(&mut self.configs).remove(name);
        info!(config = name, "config deleted");
        Ok(())
    }
}

fn missing(name: &str) -> WireError {
    WireError::new(
        ErrorCode::NotFound,
        format!(
            "no config `{name}` in the store: `lattice ctl config put {name} KEY=VALUE` stores one"
        ),
    )
}

fn unavailable(what: &str) -> WireError {
    WireError::new(
        ErrorCode::Unavailable,
        format!("{what}; nothing changed, try again"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_change_names_a_version_that_does_not_grow() {
        assert_eq!(next_version("v1", "db", 3), "v1+db@3");
        assert_eq!(next_version("v1+db@3", "db", 7), "v1+db@7");
        assert_eq!(next_version("v1+db@3", "cache", 8), "v1+db@3+cache@8");
        assert_eq!(next_version("v1+db@3+api=2", "db", 9), "v1+db@9");
    }

    #[test]
    fn config_names_are_kv_keys() {
        assert_eq!(name_problem("shared-db_1.prod"), None);
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
