//! `wasi:config`: the component's named config from the manifest (merged), read-only. Served
//! under both interface names guests use: `store` and the older `runtime`.

use super::bindings::wasi::config::{runtime, store};
use crate::wasi::HostState;

impl store::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
        Ok(Ok(self.ctx.config.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
        Ok(Ok(self
            .ctx
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}

impl runtime::Host for HostState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, runtime::ConfigError>> {
        Ok(Ok(self.ctx.config.get(&key).cloned()))
    }

    async fn get_all(
        &mut self,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, runtime::ConfigError>> {
        Ok(Ok(self
            .ctx
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}
