//! The assignment watcher: this host's key of the assignments bucket, and nothing else.
//!
//! A KV watch from async-nats creates its consumer with the key filter only in the request's
//! body (`$JS.API.CONSUMER.CREATE.<stream>`), which NATS permissions cannot tell apart from a
//! watch of every host's key. This watcher creates the same kind of consumer (ordered, push,
//! the last value and then every update) under a name, so that the request's subject carries
//! the filter: `$JS.API.CONSUMER.CREATE.<stream>.<name>.$KV.<bucket>.<host>` (nats-server 2.9
//! and later check that the body's filter is the subject's). The generated authorization
//! (`lattice_protocol::permissions`) lets a host create consumers on the assignments stream
//! only with its own key there. On a reconnect the ordered consumer is created again under a
//! new name, the same way, from where it stopped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use futures::StreamExt as _;
use lattice_protocol::assignment::{Assignment, SignedAssignment, check_epoch, check_revision};
use lattice_protocol::envelope;
use lattice_protocol::names::HostId;
use lattice_protocol::subject::{Buckets, kv_key_subject, kv_stream};
use lattice_protocol::unix_now;
use tokio::sync::mpsc;
use tracing::warn;

use super::Shared;
use crate::HostConfig;
use crate::backoff::Backoff;

/// The header a KV delete or purge carries (a put carries none).
const KV_OPERATION: &str = "KV-Operation";

/// An assignment the watcher accepted, with its signed form to persist.
pub(crate) struct Accepted {
    pub(crate) signed: SignedAssignment,
    pub(crate) assignment: Assignment,
}

/// Watches this host's assignment key and sends each acceptable revision to the applier.
pub(crate) async fn watch_assignments(
    js: jetstream::Context,
    config: Arc<(HostConfig, HostId)>,
    shared: Shared,
    tx: mpsc::Sender<Accepted>,
) {
    let (config, host) = (&config.0, &config.1);
    let bucket = Buckets::new(&config.lattice).assignments();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match watch_once(&js, &bucket, config, host, &shared, &tx).await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "watching the assignment failed; retrying");
            }
        }
        if tx.is_closed() {
            return;
        }
        // Production retry with backoff (the bucket appears when a control plane starts).
        backoff.sleep().await;
    }
}

async fn watch_once(
    js: &jetstream::Context,
    bucket: &str,
    config: &HostConfig,
    host: &HostId,
    shared: &Shared,
    tx: &mpsc::Sender<Accepted>,
) -> anyhow::Result<()> {
    let mut watch = own_key(js, bucket, host).await?;
    // Revisions handed to the applier but perhaps not applied yet also count for replay checks.
    let (mut accepted, mut accepted_epoch) = (0, 0);
    while let Some(message) = watch.next().await {
        let message = message?;
        let operation = message
            .headers
            .as_ref()
            .and_then(|h| h.get(KV_OPERATION))
            .map(|v| v.as_str().to_string());
        if operation.is_some_and(|op| op != "PUT") {
            continue; // a delete or purge (the host was forgotten): nothing to apply
        }
        let verdict = envelope::decode::<SignedAssignment>(&message.payload)
            .map_err(|e| format!("malformed assignment: {e}"))
            .and_then(|signed| {
                let assignment = signed
                    .verify(
                        &config.trusted_operators,
                        &config.lattice,
                        host,
                        Some(unix_now()),
                    )
                    .map_err(|e| e.to_string())?;
                Ok((signed, assignment))
            });
        let (signed, assignment) = match verdict {
            Ok(v) => v,
            Err(reason) => {
                refuse(shared, reason);
                continue;
            }
        };
        let applied = shared.report().applied_revision.max(accepted);
        if assignment.revision == applied {
            continue; // the one we run, seen again on (re)connect
        }
        let applied_epoch = shared.report().applied_epoch.max(accepted_epoch);
        if let Err(e) = check_revision(assignment.revision, applied)
            .and_then(|()| check_epoch(&assignment, applied_epoch))
        {
            refuse(shared, e.to_string());
            continue;
        }
        accepted = assignment.revision;
        accepted_epoch = assignment.epoch;
        if tx.send(Accepted { signed, assignment }).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// An ordered push consumer of `host`'s key of `bucket` alone, its filter in the request's
/// subject (see the module docs): the key's last value, then every change.
async fn own_key(
    js: &jetstream::Context,
    bucket: &str,
    host: &HostId,
) -> anyhow::Result<push::Ordered> {
    let stream = js
        .get_stream(kv_stream(bucket))
        .await
        .context("no assignment bucket yet (is a control plane running?)")?;
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            // A name puts the filter in the subject; random, as an ephemeral consumer's is.
            name: Some(format!("assignment-{}", uuid::Uuid::now_v7().simple())),
            deliver_subject: js.client().new_inbox(),
            description: Some(format!("assignment watch of {host}")),
            filter_subject: kv_key_subject(bucket, host.as_str()),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .context("watching this host's assignment")?;
    Ok(consumer.messages().await?)
}

pub(super) fn refuse(shared: &Shared, reason: String) {
    warn!(reason = %reason, "assignment refused; keeping what runs");
    shared.report().last_refusal = Some(reason);
    shared.changed.notify_one();
}
