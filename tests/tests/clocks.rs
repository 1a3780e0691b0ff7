//! Clocks that disagree: a gateway's clock may be a minute off the hub's. Leases are judged on
//! the reader's monotonic clock, so a holder whose clock is off keeps its lease while it renews
//! and loses it a TTL after it stops, never sooner and never shared; and a host measures its
//! offset from the hub, which `lattice ctl get hosts` shows.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use lattice_protocol::clock::Clock;
use lattice_protocol::jetstream::ensure_kv;
use lattice_protocol::lease::Claim;
use lattice_tests::{NatsServer, TestLattice, WAIT};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_secs(1);
/// How far off the holder's clock runs.
const SKEW_MS: i64 = 60_000;

#[tokio::test]
async fn a_lease_holder_whose_clock_is_a_minute_off_keeps_it_alone_and_loses_it_on_time()
-> anyhow::Result<()> {
    for offset in [SKEW_MS, -SKEW_MS] {
        lease_under_skew(offset)
            .await
            .with_context(|| format!("holder's clock off by {offset} ms"))?;
    }
    Ok(())
}

async fn lease_under_skew(offset_ms: i64) -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let js = jetstream::new(nats.client().await?);
    let kv = ensure_kv(&js, "leases", 1, "test leases").await?;
    let mut holder = Claim::new(&kv, "k", "skewed", TTL).with_clock(Clock::offset_by_ms(offset_ms));
    let lease = holder.try_acquire().await?.context("a free lease")?;
    let first_epoch = lease.epoch;
    let stop = CancellationToken::new();
    let (held, keeper) = lease.keep(stop.clone());

    // While the holder renews, a rival with the right clock never takes the lease: not when the
    // holder's stamps look expired (its clock behind), for several TTLs.
    let mut rival = Claim::new(&kv, "k", "rival", TTL);
    let watch_until = Instant::now() + TTL * 4;
    while Instant::now() < watch_until {
        assert!(
            rival.try_acquire().await?.is_none(),
            "the rival took a lease its holder renews"
        );
        assert!(*held.borrow(), "the holder lost a lease it renews");
        tokio::time::sleep(TTL / 10).await;
    }

    // The holder dies without giving the lease back: the rival takes it a TTL after the last
    // renewal it saw, not a minute later (the holder's clock ahead).
    keeper.abort();
    let died = Instant::now();
    let lease = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(lease) = rival.try_acquire().await? {
                return anyhow::Ok(lease);
            }
            tokio::time::sleep(TTL / 10).await;
        }
    })
    .await
    .context("the rival never took the lease")??;
    let waited = died.elapsed();
    assert!(
        waited >= TTL / 2 && waited < TTL * 3,
        "taken {waited:?} after the holder died"
    );
    assert_eq!(lease.epoch, first_epoch + 1);
    Ok(())
}

#[tokio::test]
async fn a_host_reports_its_clock_offset_and_get_hosts_shows_it() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let mut ahead = t.host_config("ahead");
    ahead.clock = Clock::offset_by_ms(SKEW_MS);
    let _ahead = t.start_host(ahead).await?;
    let _right = t.add_host("right").await?;

    let hosts = t
        .wait_until("the hosts to report their clock offsets", || async {
            let hosts = t.ctl.hosts().await?;
            let offset = |name: &str| {
                hosts
                    .iter()
                    .find(|h| h.name == name)
                    .map(|h| h.clock_offset_ms)
            };
            let measured = offset("ahead").is_some_and(|o| (SKEW_MS - o).abs() < 1_000)
                && offset("right").is_some_and(|o| o.abs() < 1_000);
            Ok(measured.then_some(hosts))
        })
        .await?;
    assert_eq!(hosts.len(), 2, "{hosts:?}");

    // What `lattice ctl get hosts` prints for them.
    let stdout = lattice_cli::ctl::hosts_table(&hosts);
    assert!(
        stdout.lines().next().is_some_and(|h| h.contains("SKEW")),
        "{stdout}"
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    let ahead = line("ahead");
    assert!(ahead.contains("+60.") || ahead.contains("+59."), "{stdout}");
    assert!(
        ahead.contains("(!)"),
        "a skew past the warning is marked: {stdout}"
    );
    assert!(!line("right").contains("(!)"), "{stdout}");
    Ok(())
}
