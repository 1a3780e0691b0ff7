//! `wasmcloud:secrets` (store, reveal): the component's `secrets` from its manifest, opened by
//! the host in memory (they travel and rest sealed to its key), handed to the guest as handles
//! whose value only `reveal` gives.
//!
//! `get(key)` finds the secret whose property is `key` (the same key the component's config
//! and environment use): a manifest's `secrets: [{name: api, properties: {api-password: ...}}]`
//! answers `get("api-password")`. Plain config values are not secrets and are `not-found`
//! here.
//!
//! A unit on its own: [`SecretsState`] is made once when the workload starts and shared by its
//! stores; [`add_to_linker`] takes a function giving a [`SecretsView`] of a store's data.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::bindings::secrets::wasmcloud::secrets::{reveal, store};

/// A workload's secrets, opened.
#[derive(Default, Clone)]
pub struct SecretsState {
    values: BTreeMap<String, Arc<str>>,
}

// Values are secrets: `Debug` (and so any log of it) shows keys only.
impl std::fmt::Debug for SecretsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsState")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretsState {
    /// The opened secret `values`, by key.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        Self {
            values: values.into_iter().map(|(k, v)| (k, v.into())).collect(),
        }
    }
}

/// A secret handed to the guest (`wasmcloud:secrets/store.secret`).
pub struct Secret(Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<secret>)")
    }
}

/// One store's view for `wasmcloud:secrets`: its resources and its workload's secrets.
#[derive(Debug)]
pub struct SecretsView<'a> {
    /// The store's resources (the guest's secret handles).
    pub table: &'a mut ResourceTable,
    /// The workload's secrets.
    pub secrets: &'a SecretsState,
}

struct Secrets;

impl HasData for Secrets {
    type Data<'a> = SecretsView<'a>;
}

/// Adds `wasmcloud:secrets/store` and `/reveal` to `linker`, served through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> SecretsView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, Secrets>(linker, view)?;
    reveal::add_to_linker::<T, Secrets>(linker, view)
}

impl store::Host for SecretsView<'_> {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Secret>, store::SecretsError>> {
        let Some(value) = self.secrets.values.get(&key) else {
            return Ok(Err(store::SecretsError::NotFound));
        };
        Ok(Ok(self.table.push(Secret(value.clone()))?))
    }
}

impl store::HostSecret for SecretsView<'_> {
    fn drop(&mut self, secret: Resource<Secret>) -> wasmtime::Result<()> {
        self.table.delete(secret)?;
        Ok(())
    }
}

impl reveal::Host for SecretsView<'_> {
    fn reveal(&mut self, secret: Resource<Secret>) -> wasmtime::Result<store::SecretValue> {
        let Secret(value) = self.table.get(&secret)?;
        Ok(store::SecretValue::String(value.to_string()))
    }
}
