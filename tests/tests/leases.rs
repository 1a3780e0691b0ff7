//! A lease holder whose link to the hub drops for a moment keeps its lease: the renewal whose
//! answer was lost with the connection landed, and the holder, finding its own record there,
//! goes on from it. Before, the renewal failed after the request's timeout, the holder stopped
//! acting (a queue consumer stopped delivering, a control plane stopped leading), and a new
//! holder waited a TTL before taking over.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use lattice_protocol::envelope;
use lattice_protocol::jetstream::ensure_kv;
use lattice_protocol::lease::{Claim, LeaseRecord};
use lattice_tests::NatsServer;
use lattice_tests::proxy::Proxy;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Renewed every 3 s; a renewal may be retried for 6 s after the last acknowledged one.
const TTL: Duration = Duration::from_secs(9);
/// How often the test reads the key.
const POLL: Duration = Duration::from_millis(20);

/// The key's revision and record.
async fn read(kv: &kv::Store) -> anyhow::Result<(u64, LeaseRecord)> {
    let entry = kv.entry("k").await?.context("no lease record")?;
    Ok((entry.revision, envelope::decode(&entry.value)?))
}

/// Waits until the key's revision is past `after`; returns it and when it was seen.
async fn next_revision(kv: &kv::Store, after: u64, what: &str) -> anyhow::Result<(u64, Instant)> {
    let deadline = Instant::now() + TTL;
    loop {
        let (revision, _) = read(kv).await?;
        if revision > after {
            return Ok((revision, Instant::now()));
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn a_lease_holder_keeps_its_lease_when_a_renewals_answer_is_lost_with_its_link()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], nats.port))).await?;
    let through_proxy = async_nats::connect(format!("nats://{}", proxy.addr)).await?;
    let kv_holder = ensure_kv(&jetstream::new(through_proxy), "leases", 1, "test leases").await?;
    let kv = jetstream::new(nats.client().await?)
        .get_key_value("leases")
        .await?;

    let mut claim = Claim::new(&kv_holder, "k", "holder", TTL);
    let lease = claim.try_acquire().await?.context("a free lease")?;
    let epoch = lease.epoch;
    let (held, _keeper) = lease.keep(CancellationToken::new());
    let (taken, _) = read(&kv).await?;

    // The first renewal, seen: the next is due a third of a TTL after it.
    let (renewed, at) = next_revision(&kv, taken, "the first renewal").await?;
    tokio::time::sleep_until(at + TTL / 3 - Duration::from_millis(300)).await;
    proxy.hold_replies();
    // The next renewal reaches the hub; its answer waits in the proxy and is lost with the
    // connection.
    let (landed, _) = next_revision(&kv, renewed, "the renewal to reach the hub").await?;
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.heal();

    // A rival that reads the key all along never takes the lease, and the holder renews on
    // from the revision it was not told of.
    let mut rival = Claim::new(&kv, "k", "rival", TTL);
    let deadline = Instant::now() + TTL * 2;
    let mut last = landed;
    let mut renewals = 0;
    while renewals < 2 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the holder stopped renewing after the link came back"
        );
        assert!(
            *held.borrow(),
            "the holder gave up a lease no one else took"
        );
        assert!(
            rival.try_acquire().await?.is_none(),
            "the rival took a lease its holder renews"
        );
        let (revision, record) = read(&kv).await?;
        if revision > last {
            assert_eq!(
                (record.holder.as_str(), record.epoch),
                ("holder", epoch),
                "the lease changed hands"
            );
            last = revision;
            renewals += 1;
        }
        tokio::time::sleep(POLL * 5).await;
    }
    Ok(())
}
