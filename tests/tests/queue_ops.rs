//! Operating queued delivery: `ctl get queues`, `ctl get deadletters`, `ctl requeue`, and the
//! events for calls dropped, expired or dead-lettered, on the greeter app of
//! [`lattice_tests::queued`] (greeter-client on an edge host, greeter on a cloud host, across a
//! cuttable leaf link). Calls go through the control-plane client, as `lattice ctl` does.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt;
use lattice_protocol::envelope;
use lattice_protocol::messages::{Event, EventKind, WorkloadState};
use lattice_protocol::queue::ops::{LinkQueue, LinkSelector};
use lattice_protocol::queue::{Queued, queue_stream};
use lattice_protocol::subject::Subject;
use lattice_tests::edge::EdgeTopology;
use lattice_tests::queued::names::call_subject;
use lattice_tests::queued::{
    self as queued, QueuedLink, captured, delivered, deploy_only, log_text, manifest, setup,
    setup_with, start_cloud_host, start_edge_host, wait_delivered, warm_up,
};

/// `fail-<n>.` notifications greeter logged (only greeter's own lines: the host's retry logs
/// quote the failing message too, which [`delivered`] would count).
fn notified_fail() -> Vec<u32> {
    log_text()
        .lines()
        .filter(|l| l.contains(" guest: fail-"))
        .filter_map(|l| {
            let rest = &l[l.find(" guest: fail-")? + " guest: fail-".len()..];
            rest[..rest.find('.')?].parse().ok()
        })
        .collect()
}
use lattice_tests::{QUIET, WAIT, endpoint, eventually, http_get};

/// The client's queued link to greeter, as `get queues` names it.
const LINK: &str = "greeter/client->greeter";

/// The link's row of `get queues`, once it satisfies `done`.
async fn wait_link(
    e: &EdgeTopology,
    what: &str,
    done: impl Fn(&LinkQueue) -> bool,
) -> anyhow::Result<LinkQueue> {
    let done = &done;
    e.hub
        .wait_until(what, || async move {
            let links = e.hub.ctl.queues().await?;
            let link = links.into_iter().find(|l| l.link.to_string() == LINK);
            Ok(link.filter(|l| done(l)))
        })
        .await
}

/// The edge host's report in a `get queues` row: (pending, oldest age, dropped, expired).
fn edge(l: &LinkQueue) -> Option<(u64, Option<u64>, u64, u64)> {
    let h = l.hosts.iter().find(|h| h.name == "edge-1")?;
    let s = &h.stats;
    Some((s.pending, s.oldest_age_ms, s.dropped_total, s.expired_total))
}

/// Lattice events, subscribed to before the test acts.
struct Events(async_nats::Subscriber);

impl Events {
    async fn subscribe(e: &EdgeTopology) -> anyhow::Result<Self> {
        let sub = e
            .hub
            .client
            .subscribe(Subject::events(&e.hub.lattice).to_string())
            .await?;
        lattice_tests::synced(&e.hub.client).await?;
        Ok(Self(sub))
    }

    /// The first event of each of `kinds` (in that order), skipping others; fails if one
    /// kind shows twice before all were seen (a total announced in parts).
    async fn expect(&mut self, kinds: &[EventKind]) -> anyhow::Result<Vec<Event>> {
        let mut seen: Vec<Option<Event>> = vec![None; kinds.len()];
        let collect = async {
            while seen.iter().any(Option::is_none) {
                let msg = self
                    .0
                    .next()
                    .await
                    .ok_or_else(|| anyhow::anyhow!("unsubscribed"))?;
                let Ok(event) = envelope::decode::<Event>(&msg.payload) else {
                    continue;
                };
                if let Some(i) = kinds.iter().position(|k| *k == event.kind) {
                    anyhow::ensure!(
                        seen[i].is_none(),
                        "a second `{}` event: {event:?}",
                        event.kind
                    );
                    seen[i] = Some(event);
                }
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(WAIT, collect).await {
            Ok(result) => result?,
            Err(_) => anyhow::bail!("not all of {kinds:?} within {WAIT:?}; got {seen:?}"),
        }
        Ok(seen.into_iter().flatten().collect())
    }
}

/// The app's manifest again as version `v2`, greeter with config `notify-fails: never`: its
/// `notify` stops failing on `fail...` messages.
async fn fixed_manifest(e: &EdgeTopology, link: &QueuedLink) -> anyhow::Result<String> {
    let (client, greeter) = queued::push_images(e).await?;
    let v1 = manifest(&client, &greeter, link);
    let image = format!("        image: {greeter}\n");
    anyhow::ensure!(v1.contains(&image) && v1.contains("version: v1\n"));
    Ok(v1.replace("version: v1\n", "version: v2\n").replace(
        &image,
        &format!(
            "{image}        config:\n          - name: notify\n            properties:\n              notify-fails: never\n"
        ),
    ))
}

#[tokio::test]
async fn a_dead_letter_is_listed_then_requeued_once_the_target_is_fixed() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let link = QueuedLink {
        max_attempts: 2,
        ..QueuedLink::default()
    };
    let (_cloud, _edge, addr) = setup_with(&e, &link).await?;
    let mut events = Events::subscribe(&e).await?;

    // greeter's `notify` fails on `fail...`: after 2 attempts the call is a dead letter.
    assert_eq!(
        http_get(&addr, "/notify?msg=fail-0.").await?,
        (200, "ok".into())
    );
    let row = wait_link(&e, "the call to be dead-lettered", |l| {
        l.dead_lettered == 1 && l.in_flight == Some(0) && edge(l).is_some()
    })
    .await?;
    // Nothing waits on the sender: the call left it, and failed at the target.
    assert_eq!(edge(&row).map(|r| (r.0, r.1)), Some((0, None)), "{row:?}");

    let selector: LinkSelector = LINK.parse()?;
    let dead = e.hub.ctl.dead_letters(&selector).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(d.attempts, 2, "{d:?}");
    assert_eq!(d.function, "example:greeter/notifier.notify", "{d:?}");
    assert!(d.error.contains("asked to fail: fail-0."), "{d:?}");
    assert_eq!(
        d.link.as_ref().map(ToString::to_string).as_deref(),
        Some(LINK)
    );
    assert!(!d.call_id.is_empty());
    // `app/target` selects every sender of the target.
    let all = e.hub.ctl.dead_letters(&"greeter/greeter".parse()?).await?;
    assert_eq!(all, dead);
    let event = events.expect(&[EventKind::DeadLettered]).await?.remove(0);
    assert!(event.message.contains(&d.call_id), "{event:?}");
    assert_eq!(event.app.as_ref().map(|a| a.as_str()), Some("greeter"));

    // An id that is not a dead letter of the link is reported, and nothing is requeued.
    let none = e
        .hub
        .ctl
        .requeue(&selector, vec!["no-such-call".into()])
        .await?;
    assert!(none.requeued.is_empty(), "{none:?}");
    assert_eq!(none.not_found, ["no-such-call"]);

    // Fix the target for real: greeter redeployed with config that stops the failure.
    e.hub.ctl.deploy(&fixed_manifest(&e, &link).await?).await?;
    wait_greeter_v2(&e).await?;
    assert_eq!(notified_fail(), Vec::<u32>::new());

    // Requeued: delivered once, gone from the dead letters.
    let reply = e.hub.ctl.requeue(&selector, Vec::new()).await?;
    assert_eq!(
        reply.requeued,
        std::slice::from_ref(&d.call_id),
        "{reply:?}"
    );
    assert!(reply.not_found.is_empty());
    eventually(WAIT, "the requeued call to arrive", || async {
        Ok(!notified_fail().is_empty())
    })
    .await
    .with_context(|| format!("log:\n{}", log_text()))?;
    wait_link(&e, "the requeued call to be settled", |l| {
        l.dead_lettered == 0 && l.in_flight == Some(0)
    })
    .await?;
    assert!(e.hub.ctl.dead_letters(&selector).await?.is_empty());
    // Settled means acknowledged; give a duplicate every chance to show before counting.
    tokio::time::sleep(QUIET).await;
    assert_eq!(notified_fail(), vec![0], "{}", log_text());
    // Requeueing again finds nothing.
    let again = e.hub.ctl.requeue(&selector, Vec::new()).await?;
    assert!(again.requeued.is_empty(), "{again:?}");
    Ok(())
}

/// Waits until greeter v2 is the only greeter running on the cloud host, and the app is
/// deployed.
async fn wait_greeter_v2(e: &EdgeTopology) -> anyhow::Result<()> {
    e.hub
        .wait_for("only greeter v2 to run on the cloud host", || async {
            let inv = e.hub.ctl.inventory("cloud-1").await?;
            let greeters: Vec<_> = inv
                .workloads
                .iter()
                .filter(|w| w.component.as_str() == "greeter")
                .collect();
            Ok(!greeters.is_empty()
                && greeters
                    .iter()
                    .all(|w| w.app_version == "v2" && w.state == WorkloadState::Running))
        })
        .await?;
    e.hub.wait_deployed("greeter").await?;
    Ok(())
}

/// A call that reaches the hub's stream while its target is not running (greeter's host is not
/// started yet), and expires there (ttl 2 s), is dead-lettered with why when the target comes
/// up, not dropped; requeued (after the link's ttl was raised to 1 h), it gets a fresh expiry
/// from the link and is delivered once. Without the fresh expiry it would be dead-lettered again
/// at once.
#[tokio::test]
async fn a_call_expired_in_the_stream_is_dead_lettered_and_requeued_with_a_fresh_ttl()
-> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let link = QueuedLink {
        ttl: Some("2s"),
        ..QueuedLink::default()
    };
    // Only the client runs: greeter waits for a cloud host, so nothing consumes its calls.
    let _edge = start_edge_host(&e).await?;
    deploy_only(&e, 1, &link).await?;
    let status = e
        .hub
        .wait_status("greeter", "the client's HTTP endpoint", |s| {
            endpoint(s).is_ok()
        })
        .await?;
    let addr = endpoint(&status)?;
    let mut events = Events::subscribe(&e).await?;
    assert_eq!(
        http_get(&addr, "/notify?msg=late-0.").await?,
        (200, "ok".into())
    );
    // The call reaches the hub's stream and waits there, past its expiry (read from the stored
    // envelope).
    let js = jetstream::new(e.hub.client.clone());
    let call_subject = call_subject(&e.hub.lattice, "greeter", "greeter");
    let stored = e
        .hub
        .wait_until("the call to reach the hub's stream", || async {
            let stream = js.get_stream(queue_stream(&e.hub.lattice)).await?;
            Ok(Some(
                stream
                    .get_last_raw_message_by_subject(&call_subject)
                    .await?,
            ))
        })
        .await?;
    let expires_at_ms = envelope::decode::<Queued>(&stored.payload)?.expires_at_ms;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    };
    while now_ms() <= u128::from(expires_at_ms) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The target comes up: the expired call is dead-lettered, counted and announced, not run.
    let _cloud = start_cloud_host(&e).await?;
    e.hub.wait_deployed("greeter").await?;
    wait_link(&e, "the expired call to be dead-lettered", |l| {
        l.dead_lettered == 1 && l.in_flight == Some(0)
    })
    .await?;
    let selector: LinkSelector = LINK.parse()?;
    let dead = e.hub.ctl.dead_letters(&selector).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert!(
        d.error
            .starts_with("expired before delivery: its ttl passed at ")
            && d.error.contains("requeue it to try again with a fresh ttl"),
        "{d:?}"
    );
    assert_eq!(d.function, "example:greeter/notifier.notify", "{d:?}");
    assert_eq!(d.attempts, 0, "{d:?}");
    let event = events.expect(&[EventKind::DeadLettered]).await?.remove(0);
    assert!(
        event.message.contains(&d.call_id) && event.message.contains("expired before delivery"),
        "{event:?}"
    );
    assert_eq!(delivered("late"), Vec::<u32>::new());

    // The link's ttl raised to 1 h (app v2), then requeued: it expires 1 h from the requeue.
    let longer = QueuedLink {
        ttl: Some("1h"),
        ..QueuedLink::default()
    };
    e.hub
        .ctl
        .deploy(&fixed_manifest(&e, &longer).await?)
        .await?;
    wait_greeter_v2(&e).await?;
    let requeued_at_ms = now_ms();
    let reply = e.hub.ctl.requeue(&selector, Vec::new()).await?;
    assert_eq!(
        reply.requeued,
        std::slice::from_ref(&d.call_id),
        "{reply:?}"
    );
    wait_delivered("late", 1).await?;
    wait_link(&e, "the requeued call to be settled", |l| {
        l.dead_lettered == 0 && l.in_flight == Some(0)
    })
    .await?;
    let again = js
        .get_stream(queue_stream(&e.hub.lattice))
        .await?
        .get_last_raw_message_by_subject(&call_subject)
        .await?;
    let fresh = u128::from(envelope::decode::<Queued>(&again.payload)?.expires_at_ms);
    assert!(
        fresh >= requeued_at_ms + 3_600_000 && fresh <= now_ms() + 3_600_000,
        "requeued at {requeued_at_ms} ms, expires at {fresh} ms"
    );
    // Settled means acknowledged; give a duplicate every chance to show before counting.
    tokio::time::sleep(QUIET).await;
    assert_eq!(delivered("late"), vec![0], "{}", log_text());
    assert!(e.hub.ctl.dead_letters(&selector).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn get_queues_shows_what_waits_on_the_edge_host() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, _edge, addr) = setup(&e).await?;
    warm_up(&addr).await?;
    wait_link(&e, "the edge host to report an empty outbox", |l| {
        edge(l).is_some_and(|r| r.0 == 0) && l.in_flight == Some(0)
    })
    .await?;

    // Cut: calls wait in the edge host's outbox. The control plane still answers, with the
    // edge host's last report, which grows old.
    e.cut().await?;
    for i in 0..3 {
        assert_eq!(
            http_get(&addr, &format!("/notify?msg=cut-{i}.")).await?,
            (200, "ok".into())
        );
    }
    let row = wait_link(&e, "the edge host's report to age", |l| {
        l.hosts
            .iter()
            .any(|h| h.name == "edge-1" && h.reported_secs_ago >= 3)
    })
    .await?;
    assert_eq!(delivered("cut"), Vec::<u32>::new(), "{row:?}");
    // Healed: the calls go and arrive, and the outbox is reported empty again.
    e.heal().await?;
    wait_delivered("cut", 3).await?;
    wait_link(&e, "the edge outbox to be reported empty", |l| {
        edge(l).is_some_and(|r| r.0 == 0 && r.1.is_none())
    })
    .await?;

    // The hub refuses queued calls (its queue stream is full): with the link up, the calls
    // wait on the edge host and its heartbeats say so, with the oldest one's age.
    let js = jetstream::new(e.hub.client.clone());
    let mut stream = js
        .get_stream(lattice_protocol::queue::queue_stream(&e.hub.lattice))
        .await?;
    let mut config = stream.info().await?.config.clone();
    let open = config.clone();
    config.max_messages = i64::try_from(stream.info().await?.state.messages)?;
    config.discard = jetstream::stream::DiscardPolicy::New;
    js.update_stream(&config).await?;
    for i in 0..3 {
        assert_eq!(
            http_get(&addr, &format!("/notify?msg=held-{i}.")).await?,
            (200, "ok".into())
        );
    }
    let row = wait_link(&e, "3 calls pending on the edge host", |l| {
        edge(l).is_some_and(|r| r.0 == 3 && r.1.is_some())
    })
    .await?;
    let oldest = edge(&row).and_then(|r| r.1).unwrap_or_default();
    wait_link(&e, "the oldest pending call to age", |l| {
        edge(l).is_some_and(|r| r.0 == 3 && r.1.is_some_and(|age| age > oldest))
    })
    .await?;
    assert_eq!(delivered("held"), Vec::<u32>::new());

    js.update_stream(&open).await?;
    wait_delivered("held", 3).await?;
    wait_link(&e, "the edge outbox to drain", |l| {
        edge(l).is_some_and(|r| r.0 == 0) && l.in_flight == Some(0)
    })
    .await?;
    assert_eq!(delivered("held"), vec![0, 1, 2]);
    Ok(())
}

#[tokio::test]
async fn dropped_and_expired_calls_are_counted_and_announced() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let link = QueuedLink {
        capacity: Some(2),
        on_full: Some("drop_oldest"),
        ttl: Some("3s"),
        ..QueuedLink::default()
    };
    let (_cloud, _edge, addr) = setup_with(&e, &link).await?;
    let mut events = Events::subscribe(&e).await?;

    // Cut, then three calls on a link that keeps two: the oldest is dropped; the other two
    // expire on the edge host while the link stays cut.
    e.cut().await?;
    for i in 0..3 {
        assert_eq!(
            http_get(&addr, &format!("/notify?msg=gone-{i}.")).await?,
            (200, "ok".into())
        );
    }
    eventually(WAIT, "the calls to expire on the edge host", || async {
        Ok(expired_in_log() >= 2)
    })
    .await
    .with_context(|| format!("log:\n{}", log_text()))?;

    // Healed: the edge host's next heartbeat carries its totals; the control plane announces
    // what grew.
    e.heal().await?;
    let mut both = events
        .expect(&[EventKind::QueueDropped, EventKind::QueueExpired])
        .await?;
    let (expired, dropped) = (both.remove(1), both.remove(0));
    assert!(
        dropped
            .message
            .starts_with("1 queued call(s) on greeter/client->greeter dropped"),
        "{dropped:?}"
    );
    assert!(
        expired
            .message
            .starts_with("2 queued call(s) on greeter/client->greeter expired"),
        "{expired:?}"
    );
    assert_eq!(expired.app.as_ref().map(|a| a.as_str()), Some("greeter"));
    let row = wait_link(&e, "the totals in get queues", |l| {
        edge(l).is_some_and(|r| r.2 == 1 && r.3 == 2)
    })
    .await?;
    assert_eq!(edge(&row).map(|r| r.0), Some(0), "{row:?}");
    assert_eq!(delivered("gone"), Vec::<u32>::new());
    Ok(())
}

/// Calls the captured host logs say expired in an outbox (`queued calls expired ...
/// count=N`).
fn expired_in_log() -> u64 {
    log_text()
        .lines()
        .filter(|l| l.contains("queued calls expired before delivery"))
        .filter_map(|l| {
            let rest = &l[l.find("count=")? + "count=".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .sum()
}
