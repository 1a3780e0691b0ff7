//! Part 2 of `queue_drain`: a backlog forwarded and delivered to the real `greeter` on a host
//! (the app of `tests/src/queued.rs`), on the hub of a [`HubKind`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use lattice_host::caps::LatticeLink;
use lattice_host::queue::Queue;
use lattice_protocol::names::HostId;
use lattice_protocol::queue::{LaneState, lanes_bucket, queue_stream};
use lattice_tests::queued::names::{call_consumer, lane_key};
use lattice_tests::queued::{self, QueuedLink};

use super::backlog;
use super::hub::{DeliveryLattice, HubKind};
use super::machine::loadavg;

/// How long a settled consumer may take to remember its last chunk.
const STALLED: Duration = Duration::from_secs(30);
/// The app of `tests/src/queued.rs`'s manifest.
const APP_DEPLOYED: &str = "greeter";

/// Forwards and delivers `n` queued calls on a hub of `kind`; prints the figures beside
/// `raw_rate` (part 1's median raw publish rate on the same kind of hub) and returns the
/// forwarded-and-delivered rate.
pub async fn deliver(n: usize, raw_rate: f64, kind: HubKind) -> anyhow::Result<f64> {
    println!();
    println!(
        "part 2: {n} queued calls forwarded and delivered to greeter on a host; {}",
        kind.describe()
    );
    let t = greeter_deployed(kind, n).await?;
    let js = jetstream::new(t.client.clone());
    let consumer_name = call_consumer(APP_DEPLOYED, "greeter");
    let work = tempfile::tempdir()?;
    let path = work.path().join("outbox");
    backlog::fill(&path, &t.lattice, APP_DEPLOYED, n).await?;
    let link = LatticeLink {
        client: t.client.clone(),
        jetstream: js.clone(),
        lattice: t.lattice.clone(),
        host: HostId::new("bench-sender")?,
        // The hub's replicas: the forwarder would otherwise change the stream's.
        storage: kind.storage(),
        clock: Default::default(),
    };
    let started = Instant::now();
    // Signed by the host itself: a signer greeter's consumer takes (a host of the lattice).
    let key = queued::host_key(&t.host)?;
    let sender = key.public_key().to_string();
    let (queue, forwarder) = Queue::open(&path, link, Arc::new(key))?;
    let lane = lane_key(
        &consumer_name,
        &sender,
        &queue.outbox().id().simple().to_string(),
        &backlog::lane(&t.lattice, APP_DEPLOYED),
    );
    let watched = Watched {
        js: &js,
        lattice: &t.lattice,
        consumer: &consumer_name,
        lane: &lane,
    };
    let (forwarded, by_then, failed_reads) = watched.until_delivered(&queue, n, started).await?;
    if failed_reads > 0 {
        println!(
            "WARNING: {failed_reads} read(s) of the lane's state failed (timed out) meanwhile: the times below may be late by as much as a request's timeout (5 s each): run again on a quieter machine"
        );
    }
    let took = started.elapsed();
    let delivered = n as f64 / took.as_secs_f64();
    println!(
        "forwarded in {forwarded:.2?} ({:.0} msg/s), {by_then} delivered by then; forwarded and delivered in {took:.2?}: {delivered:.0} msg/s (load {})",
        n as f64 / forwarded.as_secs_f64(),
        loadavg()
    );
    println!(
        "delivery alone after forwarding: {:.0} msg/s",
        (n as u64 - by_then) as f64 / (took - forwarded).as_secs_f64()
    );
    println!(
        "| **forwarded and delivered / raw publish** ({}) | {:.3}x ({delivered:.0} / {raw_rate:.0} msg/s) |",
        kind.label(),
        delivered / raw_rate
    );
    drop(forwarder);
    t.end().await;
    Ok(delivered)
}

/// A lattice on a hub of `kind` with the greeter app deployed (its queued link holding up to
/// `n` calls), once greeter's queue consumer and its lanes bucket answer.
async fn greeter_deployed(kind: HubKind, n: usize) -> anyhow::Result<DeliveryLattice> {
    let t = DeliveryLattice::start(kind)
        .await
        .context("starting the lattice")?;
    let greeter = t
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await
        .context("pushing greeter")?;
    let client = t
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await
        .context("pushing greeter-client")?;
    let link = QueuedLink {
        capacity: Some(u32::try_from(n)?.max(1)),
        ..QueuedLink::default()
    };
    t.ctl
        .deploy(&queued::manifest(&client, &greeter, &link))
        .await
        .context("deploying the greeter app")?;
    let js = jetstream::new(t.client.clone());
    let consumer_name = call_consumer(APP_DEPLOYED, "greeter");
    // The host makes the consumer, then the bucket of its lanes' states. On a cluster the first
    // requests to three fresh replicas may stall for seconds: the timed loop starts only once
    // both answer.
    t.wait_for(
        "greeter's queue consumer and its lanes bucket to answer",
        || async {
            let Ok(stream) = js.get_stream(queue_stream(&t.lattice)).await else {
                return Ok(false);
            };
            let Ok(lanes) = js
                .get_stream(format!("KV_{}", lanes_bucket(&t.lattice)))
                .await
            else {
                return Ok(false);
            };
            let probe = format!("$KV.{}.probe", lanes_bucket(&t.lattice));
            let answers = match lanes.get_last_raw_message_by_subject(&probe).await {
                Ok(_) => true,
                Err(e) => e.kind() == LastRawMessageErrorKind::NoMessageFound,
            };
            Ok(answers && stream.consumer_info(&consumer_name).await.is_ok())
        },
    )
    .await?;
    Ok(t)
}

/// What part 2 watches: greeter's consumer on the queue stream, and its lane's state.
struct Watched<'a> {
    js: &'a jetstream::Context,
    lattice: &'a lattice_protocol::names::LatticeName,
    consumer: &'a str,
    lane: &'a str,
}

impl Watched<'_> {
    /// Calls run, as the consumer's lane remembers them (once per chunk). Read from the
    /// bucket's stream leader (`STREAM.MSG.GET`) rather than with a KV get: on a cluster the
    /// replicas' direct gets of a bucket just made may not answer yet.
    async fn ran(&self, lanes: &jetstream::stream::Stream) -> anyhow::Result<u64> {
        let subject = format!("$KV.{}.{}", lanes_bucket(self.lattice), self.lane);
        let state: LaneState = match lanes.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => lattice_protocol::envelope::decode(&message.payload)?,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => LaneState::default(),
            Err(e) => anyhow::bail!("reading the lane's state: {e}"),
        };
        Ok(state.last)
    }

    /// Polls until the outbox is empty, the consumer has settled everything and its lane
    /// remembers all `n` calls run; returns when the outbox emptied, how many had run by then,
    /// and how many reads of the lane failed. Fails when the consumer settled every message but
    /// its lane stays short.
    async fn until_delivered(
        &self,
        queue: &Queue,
        n: usize,
        started: Instant,
    ) -> anyhow::Result<(Duration, u64, usize)> {
        let stream = self
            .js
            .get_stream(queue_stream(self.lattice))
            .await
            .map_err(|e| anyhow::anyhow!("opening the queue stream: {e}"))?;
        let lanes = self
            .js
            .get_stream(format!("KV_{}", lanes_bucket(self.lattice)))
            .await
            .map_err(|e| anyhow::anyhow!("opening the lanes bucket's stream: {e}"))?;
        // When the outbox emptied, and how many had been delivered by then.
        let mut forwarded: Option<(Duration, u64)> = None;
        let mut last_report = Instant::now();
        let mut settled_since: Option<Instant> = None;
        let (mut last_ran, mut failing_since, mut failed_reads) = (0, None::<Instant>, 0);
        loop {
            let emptied = queue.outbox().stats().pending == 0;
            let info = stream
                .consumer_info(self.consumer)
                .await
                .map_err(|e| anyhow::anyhow!("asking for the consumer's state: {e}"))?;
            let settled = info.num_pending == 0 && info.num_ack_pending == 0;
            // A read that fails (a request timing out on a busy cluster) leaves the last count;
            // only reads failing for [`STALLED`] in a row end the run.
            let done = match self.ran(&lanes).await {
                Ok(done) => {
                    failing_since = None;
                    last_ran = done;
                    done
                }
                Err(e) if failing_since.get_or_insert_with(Instant::now).elapsed() > STALLED => {
                    return Err(e.context(format!("for more than {STALLED:?}")));
                }
                Err(_) => {
                    failed_reads += 1;
                    last_ran
                }
            };
            if forwarded.is_none() && emptied {
                forwarded = Some((started.elapsed(), done));
            }
            if let Some(forwarded) = forwarded
                && settled
                && done >= n as u64
            {
                return Ok((forwarded.0, forwarded.1, failed_reads));
            }
            // Everything forwarded and acknowledged for a while, yet the lane says fewer ran.
            if !(settled && forwarded.is_some()) {
                settled_since = None;
            } else if settled_since.get_or_insert_with(Instant::now).elapsed() > STALLED {
                anyhow::bail!(
                    "the consumer settled every message, but its lane remembers {done} of {n} calls run"
                );
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "  ... {done} of {n} delivered after {:.0?}",
                    started.elapsed()
                );
                last_report = Instant::now();
            }
            // Nothing announces a lane's progress to an outside observer: polled.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
