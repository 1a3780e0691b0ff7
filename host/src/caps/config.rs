//! `wasi:config`: the component's named config from the manifest (merged), read-only. Served
//! under both interface names guests use: `store` and the older `runtime`.
//!
//! A unit on its own: [`ConfigState`] is worked out once when the workload starts and shared by
//! its stores; [`add_to_linker`] takes a function giving a [`ConfigView`] of a store's data.
//!
//! ```no_run
//! # use lattice_host::wasi::HostState;
//! # fn view(state: &mut HostState) -> lattice_host::caps::config::ConfigView<'_> { todo!() }
//! # let mut linker: wasmtime::component::Linker<HostState> = todo!();
//! lattice_host::caps::config::add_to_linker(&mut linker, view)?;
//! # anyhow::Ok(())
//! ```

use std::collections::BTreeMap;

use tracing::instrument;
use wasmtime::component::{HasData, Linker};

use super::bindings::wasi::config::{runtime, store};

/// A workload's config, as its guests read it.
#[derive(Debug, Default)]
pub struct ConfigState {
    values: BTreeMap<String, String>,
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
    #[instrument(name = "lattice_host.config.get", level = "debug", skip_all)]
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
        Ok(Ok(ConfigView::get(self, &key)))
    }

    #[instrument(name = "lattice_host.config.get_all", level = "debug", skip_all)]
    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
        Ok(Ok(self.all()))
    }
}

impl runtime::Host for ConfigView<'_> {
    #[instrument(name = "lattice_host.config.get", level = "debug", skip_all)]
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, runtime::ConfigError>> {
        Ok(Ok(ConfigView::get(self, &key)))
    }

    #[instrument(name = "lattice_host.config.get_all", level = "debug", skip_all)]
    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, runtime::ConfigError>> {
        Ok(Ok(self.all()))
    }
}
