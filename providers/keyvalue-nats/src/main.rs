//! `lattice-provider-keyvalue-nats`: the NATS KV provider as a process of its own, for isolation
//! (hosts run it in-process by default). Started by a Lattice host, which sets its environment.

use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lattice_provider_sdk::init_logging();
    let env = lattice_provider_sdk::ProcessEnv::from_env()?;
    let client = env.connect().await?;
    let provider =
        lattice_provider_keyvalue_nats::NatsKv::new(async_nats::jetstream::new(client.clone()));
    lattice_provider_sdk::run_process(&env, client, Arc::new(provider)).await
}
