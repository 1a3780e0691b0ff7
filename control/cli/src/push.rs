//! `lattice push`.

use anyhow::Context;
use async_nats::jetstream;
use lattice_connect::{self as nats, Patience};
use lattice_control::registry::Registry;
use lattice_protocol::claims;

use crate::args::PushArgs;

/// Pushes a component and prints its reference.
pub async fn push(args: &PushArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    claims::check_component_header(&bytes)
        .with_context(|| format!("{} cannot be pushed", args.file.display()))?;
    let tag = match &args.tag {
        Some(t) => Some(t.clone()),
        None => match claims::read_claims(&bytes) {
            Ok((c, _)) => Some(format!("{}:{}", c.name, c.version)),
            Err(_) => {
                eprintln!(
                    "warning: {} is not signed; hosts will refuse to run it (sign it with `lattice sign`)",
                    args.file.display()
                );
                None
            }
        },
    };
    let target = nats::target(&args.nats, args.state_dir.as_deref())?;
    let client = nats::connect(&args.nats, &target.url, "lattice push", Patience::FailFast).await?;
    let registry = Registry::open(&jetstream::new(client.clone()), &target.lattice)
        .await
        .context(
            "opening the lattice's artifact store (does the NATS server have JetStream enabled?)",
        )?;
    eprintln!(
        "pushing {} ({} KiB) to lattice {}...",
        args.file.display(),
        bytes.len().div_ceil(1024),
        target.lattice
    );
    let pushed = registry.push(&bytes, tag.as_deref()).await?;
    if !pushed.stored {
        eprintln!("already in the lattice: nothing uploaded");
    }
    if let Some(tag) = &pushed.tag {
        eprintln!("tagged {tag}");
    }
    println!("{}", pushed.digest);
    client.flush().await?;
    Ok(())
}
