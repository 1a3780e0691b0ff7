//! `lattice-provider-keyvalue-nats`: the NATS KV provider as a process of its own, for isolation
//! (hosts run it in-process by default). Started by a Lattice host, which sets its environment.

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    lattice_telemetry::init("info");
    // `run` flushes the traces on the way out.
    lattice_telemetry::run(serve())
}

async fn serve() -> anyhow::Result<()> {
    let env = lattice_provider_sdk::ProcessEnv::from_env()?;
    let client = env.connect().await?;
    // In the host's JetStream domain, when it has one (an edge host on a leaf node), making
    // buckets as the host makes its own.
    let provider =
        lattice_provider_keyvalue_nats::NatsKv::new(env.jetstream(&client), env.storage.clone());
    lattice_provider_sdk::run_process(&env, client, Arc::new(provider)).await
}
