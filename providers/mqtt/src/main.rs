//! `lattice-provider-mqtt`: the MQTT messaging provider as a process of its own. Started by a
//! Lattice host, which sets its environment; it delivers with the same NATS connection the SDK
//! serves the host's requests on.

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    lattice_telemetry::init("info");
    // `run` flushes the traces on the way out.
    lattice_telemetry::run(serve())
}

async fn serve() -> anyhow::Result<()> {
    let env = lattice_provider_sdk::ProcessEnv::from_env()?;
    let client = env.connect().await?;
    // The host id makes the broker sessions stable: a restarted process resumes them.
    let provider = lattice_provider_mqtt::Mqtt::new(client.clone(), env.lattice.clone())
        .with_host(env.host.clone());
    lattice_provider_sdk::run_process(&env, client, Arc::new(provider)).await
}
