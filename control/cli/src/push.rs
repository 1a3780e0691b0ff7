//! `lattice push` (to the lattice, or with `--oci` to an OCI registry) and `lattice pull` (from
//! an OCI registry into the lattice), and the check every component passes before it is stored
//! or published: a wasm component, signed, its signature intact.

use anyhow::Context;
use async_nats::jetstream;
use lattice_connect::{self as nats, NatsArgs, Patience};
use lattice_control::registry::{Pushed, Registry};
use lattice_protocol::claims;
use lattice_protocol::names::LatticeName;

use crate::args::{PullArgs, PushArgs};
use crate::oci::{Oci, OciRef};
use crate::progress::Progress;

/// Pushes a component and prints its reference.
pub async fn push(args: &PushArgs) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let what = args.file.display().to_string();
    if let Some(reference) = &args.oci {
        return publish(args, reference, &bytes).await;
    }
    claims::check_component_header(&bytes).with_context(|| format!("{what} cannot be pushed"))?;
    let tag = match &args.tag {
        Some(t) => Some(t.clone()),
        None => match claims::read_claims(&bytes) {
            Ok((c, Ok(()))) => Some(format!("{}:{}", c.name, c.version)),
            // Signed, but not these bytes: refused here as hosts would refuse it.
            Ok((_, Err(e))) => {
                return Err(e).with_context(|| {
                    format!(
                        "{what} cannot be pushed: its signature does not verify (changed after \
                         signing, or signed wrongly); sign it again (`lattice sign` or \
                         `wash claims sign`) and push it again"
                    )
                });
            }
            Err(_) => {
                eprintln!(
                    "warning: {what} is not signed; hosts will refuse to run it (sign it with `lattice sign`)"
                );
                None
            }
        },
    };
    let (client, lattice) = connect(&args.nats, args.state_dir.as_deref(), "lattice push").await?;
    let registry = open(&client, &lattice).await?;
    let progress = Progress::spinner(format!(
        "pushing {what} ({} KiB) to lattice {lattice}...",
        bytes.len().div_ceil(1024),
    ));
    let pushed = registry.push(&bytes, tag.as_deref()).await?;
    progress.finish();
    report(&pushed);
    client.flush().await?;
    Ok(())
}

/// `lattice push --oci REF FILE`: publishes a signed component to a registry.
async fn publish(args: &PushArgs, reference: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let image = OciRef::parse(reference)?;
    check(&args.file.display().to_string(), bytes)?;
    let progress = Progress::spinner(format!(
        "publishing {} ({} KiB) as {image}...",
        args.file.display(),
        bytes.len().div_ceil(1024)
    ));
    let pinned = Oci::new(&args.registry).push(&image, bytes).await?;
    progress.finish();
    eprintln!("published {pinned}");
    println!("{}", lattice_protocol::digest::Digest::of(bytes));
    Ok(())
}

/// `lattice pull REF`: fetches a component from a registry, checks it and stores it in the
/// lattice.
pub async fn pull(args: &PullArgs) -> anyhow::Result<()> {
    let image = OciRef::parse(&args.reference)?;
    let progress = Progress::spinner(format!("pulling {image}..."));
    let bytes = Oci::new(&args.registry).pull(&image).await?;
    progress.finish();
    let claimed = check(&image.to_string(), &bytes)?;
    let tag = args.tag.clone().unwrap_or(claimed);
    let (client, lattice) = connect(&args.nats, args.state_dir.as_deref(), "lattice pull").await?;
    let registry = open(&client, &lattice).await?;
    report(&registry.push(&bytes, Some(&tag)).await?);
    client.flush().await?;
    Ok(())
}

/// Refuses what hosts would refuse before it goes anywhere: not a wasm component, unsigned, or
/// a signature that does not verify (changed after signing). Returns the component's
/// `name:version` tag from its claims. Whether a host trusts the issuer is the host's check.
pub fn check(what: &str, bytes: &[u8]) -> anyhow::Result<String> {
    claims::check_component_header(bytes).with_context(|| {
        format!("{what} is not a wasm component; build it for wasm32-wasip2 (a component, not a core module)")
    })?;
    let (claims, integrity) = claims::read_claims(bytes).with_context(|| {
        format!(
            "{what} is not signed: hosts run only signed components; sign it with \
             `lattice sign` and publish it again"
        )
    })?;
    integrity.with_context(|| {
        format!(
            "{what}: its signature does not verify (the component was changed after signing, \
             or signed wrongly); sign it again with `lattice sign` and publish it again"
        )
    })?;
    Ok(format!("{}:{}", claims.name, claims.version))
}

/// Connects to the lattice `nats` (or `lattice up`'s in `state_dir`) names.
pub(crate) async fn connect(
    args: &NatsArgs,
    state_dir: Option<&std::path::Path>,
    who: &str,
) -> anyhow::Result<(async_nats::Client, LatticeName)> {
    let target = nats::target(args, state_dir)?;
    let client = nats::connect(args, &target.url, who, Patience::FailFast).await?;
    Ok((client, target.lattice))
}

/// The lattice's artifact store.
pub(crate) async fn open(
    client: &async_nats::Client,
    lattice: &LatticeName,
) -> anyhow::Result<Registry> {
    Registry::open(&jetstream::new(client.clone()), lattice)
        .await
        .context(
            "opening the lattice's artifact store (does the NATS server have JetStream enabled?)",
        )
}

/// Says what a push did; the digest goes to stdout, for scripts.
fn report(pushed: &Pushed) {
    if !pushed.stored {
        eprintln!("already in the lattice: nothing uploaded");
    }
    if let Some(tag) = &pushed.tag {
        eprintln!("tagged {tag}");
    }
    println!("{}", pushed.digest);
}
