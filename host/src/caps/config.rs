//! `wasi:config`: the component's named config from the manifest (merged), read-only. Served
//! under both interface names guests use: `store` and the older `runtime`.
//!
//! A unit on its own: [`ConfigState`] is worked out once when the workload starts and shared by
//! its stores; [`add_to_linker`] takes a function giving a [`ConfigView`] of a store's data.
//!
//! ```
//! use lattice_host::caps::config::{ConfigState, ConfigView, add_to_linker};
//!
//! struct Data {
//!     config: ConfigState,
//! }
//! fn view(data: &mut Data) -> ConfigView<'_> {
//!     ConfigView(&data.config)
//! }
//! let engine = wasmtime::Engine::default();
//! let mut linker = wasmtime::component::Linker::<Data>::new(&engine);
//! add_to_linker(&mut linker, view)?;
//! # anyhow::Ok(())
//! ```

use std::collections::BTreeMap;

use lattice_protocol::assignment::WorkloadLink;
use lattice_protocol::keys::KeyPair;
use lattice_protocol::secret;
use tracing::instrument;
use wasmtime::component::{HasData, Linker};

use super::bindings::wasi::config::{runtime, store};

/// A workload's config, as its guests read it.
#[derive(Default)]
pub struct ConfigState {
    values: BTreeMap<String, String>,
}

// Values may be secrets opened by the host: `Debug` (and so any log of it) shows keys only.
impl std::fmt::Debug for ConfigState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigState")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ConfigState {
    /// The config `values` (the component's named config, merged).
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self { values }
    }

    /// The values, for the host's own use (the guest's environment is built from them).
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }
}

/// A workload's config with its secrets opened by the host's `key` and added (a secret wins
/// over a config value of the same key); or which secret cannot be opened, and why. The plain
/// values live only in memory: the saved assignment keeps them sealed.
pub fn with_secrets(
    key: &KeyPair,
    config: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut values = config.clone();
    values.extend(open_secrets(key, secrets)?);
    Ok(values)
}

/// The `secrets` (sealed to the host's `key`) opened, or which one cannot be, and why.
pub fn open_secrets(
    key: &KeyPair,
    secrets: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    secrets
        .iter()
        .map(|(name, sealed)| {
            let plain = secret::open(key, sealed).map_err(|e| format!("secret `{name}`: {e}"))?;
            Ok((name.clone(), plain.to_string()))
        })
        .collect()
}

/// A workload's links with each link's secrets opened by the host's `key` and added to that
/// end's config (`source_secrets` to `source_config`, `target_secrets` to `target_config`),
/// as its providers then receive them; or which secret of which link cannot be opened, and
/// why. The sealed maps are emptied, so only the opened copy travels on.
pub fn links_with_secrets(
    key: &KeyPair,
    links: &[WorkloadLink],
) -> Result<Vec<WorkloadLink>, String> {
    links
        .iter()
        .map(|link| {
            let mut opened = link.clone();
            let at = |end: &str| {
                let package = format!("{}:{}", link.namespace, link.package);
                format!("link `{}` ({package}), {end}", link.name)
            };
            opened.source_config = with_secrets(key, &link.source_config, &link.source_secrets)
                .map_err(|e| format!("{}: {e}", at("source")))?;
            opened.target_config = with_secrets(key, &link.target_config, &link.target_secrets)
                .map_err(|e| format!("{}: {e}", at("target")))?;
            opened.source_secrets.clear();
            opened.target_secrets.clear();
            Ok(opened)
        })
        .collect()
}

/// One store's view of its workload's config.
#[derive(Debug, Clone, Copy)]
pub struct ConfigView<'a>(pub &'a ConfigState);

impl ConfigView<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.0.values.get(key).cloned()
    }

    fn all(&self) -> Vec<(String, String)> {
        self.0
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

struct Config;

impl HasData for Config {
    type Data<'a> = ConfigView<'a>;
}

/// Adds `wasi:config/store` and `wasi:config/runtime` to `linker`, reading through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> ConfigView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, Config>(linker, view)?;
    runtime::add_to_linker::<T, Config>(linker, view)
}

// Values may be secrets: spans carry neither keys' values nor the config.
impl store::Host for ConfigView<'_> {
    #[instrument(name = "lattice.config.get", level = "debug", skip_all)]
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
        Ok(Ok(ConfigView::get(self, &key)))
    }

    #[instrument(name = "lattice.config.get_all", level = "debug", skip_all)]
    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
        Ok(Ok(self.all()))
    }
}

impl runtime::Host for ConfigView<'_> {
    #[instrument(name = "lattice.config.get", level = "debug", skip_all)]
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, runtime::ConfigError>> {
        Ok(Ok(ConfigView::get(self, &key)))
    }

    #[instrument(name = "lattice.config.get_all", level = "debug", skip_all)]
    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, runtime::ConfigError>> {
        Ok(Ok(self.all()))
    }
}

#[cfg(test)]
mod tests {
    use lattice_protocol::keys::KeyRole;

    use super::*;

    #[test]
    fn secrets_are_opened_and_win_over_config() {
        let host = KeyPair::generate(KeyRole::Host);
        let config = BTreeMap::from([
            ("MODE".to_string(), "test".to_string()),
            ("TOKEN".to_string(), "config".to_string()),
        ]);
        let sealed = secret::seal(&host.public_key(), "hunter2").expect("seal");
        let secrets = BTreeMap::from([("TOKEN".to_string(), sealed)]);
        let values = with_secrets(&host, &config, &secrets).expect("opens");
        assert_eq!(values["MODE"], "test");
        assert_eq!(values["TOKEN"], "hunter2");
    }

    #[test]
    fn a_secret_sealed_to_another_host_is_refused_by_name() {
        let host = KeyPair::generate(KeyRole::Host);
        let other = KeyPair::generate(KeyRole::Host);
        let sealed = secret::seal(&other.public_key(), "hunter2").expect("seal");
        let secrets = BTreeMap::from([("TOKEN".to_string(), sealed)]);
        let error = with_secrets(&host, &BTreeMap::new(), &secrets).expect_err("not ours");
        assert!(error.starts_with("secret `TOKEN`"), "{error}");
        assert!(error.contains("sealed to another key"), "{error}");
    }

    #[test]
    fn link_secrets_are_opened_into_their_end_s_config() {
        use lattice_protocol::assignment::LinkTarget;

        let host = KeyPair::generate(KeyRole::Host);
        let sealed = |v: &str| secret::seal(&host.public_key(), v).expect("seal");
        let link = WorkloadLink {
            namespace: "wasi".into(),
            package: "keyvalue".into(),
            interfaces: vec!["store".into()],
            name: "default".into(),
            target: LinkTarget::Provider("keyvalue-redis".into()),
            source_config: BTreeMap::from([("prefix".to_string(), "c-".to_string())]),
            target_config: BTreeMap::from([("bucket".to_string(), "b".to_string())]),
            source_secrets: BTreeMap::from([("token".to_string(), sealed("t0k3n"))]),
            target_secrets: BTreeMap::from([("url".to_string(), sealed("redis://:pw@x"))]),
            queued: None,
        };
        let opened = links_with_secrets(&host, std::slice::from_ref(&link)).expect("opens");
        assert_eq!(opened[0].source_config["prefix"], "c-");
        assert_eq!(opened[0].source_config["token"], "t0k3n");
        assert_eq!(opened[0].target_config["bucket"], "b");
        assert_eq!(opened[0].target_config["url"], "redis://:pw@x");
        assert!(opened[0].source_secrets.is_empty() && opened[0].target_secrets.is_empty());

        let other = KeyPair::generate(KeyRole::Host);
        let error = links_with_secrets(&other, &[link]).expect_err("not ours");
        assert!(
            error.starts_with("link `default` (wasi:keyvalue), source: secret `token`")
                && error.contains("sealed to another key"),
            "{error}"
        );
    }
}
