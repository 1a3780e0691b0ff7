//! `lattice-provider-keyvalue-redis`: the Redis key-value provider as a process. Started by a
//! Lattice host, which sets its environment; each link's target config names its Redis.

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    lattice_telemetry::init("info");
    // `run` flushes the traces on the way out.
    lattice_telemetry::run(serve())
}

async fn serve() -> anyhow::Result<()> {
    let env = lattice_provider_sdk::ProcessEnv::from_env()?;
    let client = env.connect().await?;
    let provider = lattice_provider_keyvalue_redis::RedisKv::new();
    lattice_provider_sdk::run_process(&env, client, Arc::new(provider)).await
}
