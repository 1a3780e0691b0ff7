//! Forged queue items: anyone who may publish on `lattice.<l>.q.>` publishes, with a plain NATS
//! client, items the target must not run and that must not silence or wedge the lane of the
//! real sender: a jumped lane sequence unsigned, an item signed by a key that is no host of the
//! lattice, a real item's signature over altered headers, a lane id that is no key, a bundle
//! whose body does not decode, and an item too large. Each is dead-lettered with its reason
//! (shown by `ctl get deadletters`, not put back by `ctl requeue`), and the real calls sent
//! afterwards by the edge host still run, in order, once each, from the one consumer that
//! never restarted. On the greeter app of [`lattice_tests::queued`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream;
use lattice_protocol::envelope;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::queue::ops::{DeadLetter, LinkSelector};
use lattice_protocol::queue::{
    LANE_COUNT_HEADER, LANE_FLOOR_HEADER, LANE_HEADER, LANE_MARKER_HEADER, LANE_SEQ_HEADER,
    LINK_HEADER, MAX_QUEUED_MESSAGE_BYTES, MSG_ID_HEADER, Queued, QueuedItem, SIGNATURE_HEADER,
    SIGNER_HEADER, Signed, queue_stream,
};
use lattice_protocol::rpc::RpcCall;
use lattice_tests::edge::EdgeTopology;
use lattice_tests::queued::names::call_subject;
use lattice_tests::queued::{captured, delivered, host_key, log_text, setup, warm_up};
use lattice_tests::{QUIET, WAIT, eventually, http_get};

/// What the last real stream message of the client's lane says.
struct Genuine {
    lane: String,
    /// The next lane sequence the sender will use.
    next: u64,
    link: String,
    headers: HeaderMap,
    payload: bytes::Bytes,
}

/// The last message on greeter's call subject, which the test knows to be the edge host's.
async fn last_genuine(e: &EdgeTopology) -> anyhow::Result<Genuine> {
    let js = jetstream::new(e.hub.client.clone());
    let stream = js
        .get_stream(queue_stream(&e.hub.lattice))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let subject = call_subject(&e.hub.lattice, "greeter", "greeter");
    let m = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let header = |name: &str| {
        m.headers
            .get(name)
            .map(ToString::to_string)
            .with_context(|| format!("the real message has no {name}"))
    };
    anyhow::ensure!(
        m.headers.get(SIGNATURE_HEADER).is_some(),
        "the forwarder signs what it sends"
    );
    // A marker (its floor is the next sequence), a bundle, or one call.
    let next = if m.headers.get(LANE_MARKER_HEADER).is_some() {
        header(LANE_FLOOR_HEADER)?.parse()?
    } else {
        let seq: u64 = header(LANE_SEQ_HEADER)?.parse()?;
        let count: u64 = match m.headers.get(LANE_COUNT_HEADER) {
            Some(c) => c.as_str().parse()?,
            None => 1,
        };
        seq + count
    };
    Ok(Genuine {
        lane: header(LANE_HEADER)?,
        next,
        link: header(LINK_HEADER)?,
        headers: m.headers.clone(),
        payload: m.payload.clone(),
    })
}

/// A queued `notify(msg)` call to greeter on `subject`, as the client's link makes one.
fn forged_call(subject: &str, msg: &str) -> anyhow::Result<Vec<u8>> {
    // MessagePack: an array of one string (short).
    anyhow::ensure!(msg.len() < 32);
    let queued = Queued {
        max_attempts: 3,
        expires_at_ms: u64::try_from(
            (SystemTime::now() + Duration::from_secs(3600))
                .duration_since(UNIX_EPOCH)?
                .as_millis(),
        )?,
        subject: subject.to_string(),
        item: QueuedItem::Call(RpcCall {
            interface: "example:greeter/notifier"
                .parse()
                .expect("an interface name"),
            function: "notify".into(),
            args: [&[0x91, 0xa0 | msg.len() as u8][..], msg.as_bytes()].concat(),
            deadline_ms: 0,
            caller: "greeter/client".into(),
        }),
        trace: None,
    };
    Ok(envelope::encode(&queued))
}

/// One forged stream message: its headers (lane, sequence, count, floor) and body, and how it is
/// signed.
struct Forgery<'a> {
    what: &'static str,
    msg_id: String,
    lane: String,
    seq: u64,
    count: Option<u64>,
    body: Vec<u8>,
    sign: Sign<'a>,
    /// The reason it must be dead-lettered with.
    reason: &'static str,
}

enum Sign<'a> {
    Not,
    With(&'a KeyPair),
    /// The real message's signer and signature, over other headers.
    Copied(&'a HeaderMap),
}

async fn publish(
    e: &EdgeTopology,
    subject: &str,
    link: &str,
    f: &Forgery<'_>,
) -> anyhow::Result<()> {
    let (seq, floor) = (f.seq.to_string(), f.seq.to_string());
    let count = f.count.map(|c| c.to_string()).unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID_HEADER, f.msg_id.as_str());
    headers.insert(LINK_HEADER, link);
    headers.insert(LANE_HEADER, f.lane.as_str());
    headers.insert(LANE_SEQ_HEADER, seq.as_str());
    headers.insert(LANE_FLOOR_HEADER, floor.as_str());
    if f.count.is_some() {
        headers.insert(LANE_COUNT_HEADER, count.as_str());
    }
    let signed = Signed {
        subject,
        msg_id: &f.msg_id,
        link,
        lane: &f.lane,
        seq: &seq,
        count: &count,
        floor: &floor,
        body: &f.body,
        ..Signed::default()
    };
    match &f.sign {
        Sign::Not => {}
        Sign::With(key) => {
            let (signer, signature) = signed.sign(key);
            headers.insert(SIGNER_HEADER, signer.as_str());
            headers.insert(SIGNATURE_HEADER, signature.as_str());
        }
        Sign::Copied(real) => {
            for name in [SIGNER_HEADER, SIGNATURE_HEADER] {
                let value = real.get(name).context("the real message is signed")?;
                headers.insert(name, value.as_str());
            }
        }
    }
    // A plain client: no host, no outbox, straight onto the queue subject.
    let js = jetstream::new(e.hub.client.clone());
    js.publish_with_headers(subject.to_string(), headers, f.body.clone().into())
        .await?
        .await
        .with_context(|| format!("the stream takes the forged message ({})", f.what))?;
    Ok(())
}

/// Greeter's dead letters, as `ctl get deadletters greeter/greeter` lists them.
async fn dead_letters(e: &EdgeTopology) -> anyhow::Result<Vec<DeadLetter>> {
    let selector: LinkSelector = "greeter/greeter".parse()?;
    Ok(e.hub.ctl.dead_letters(&selector).await?)
}

/// Lines of the captured log holding `needle`.
fn log_lines(needle: &str) -> usize {
    log_text().lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn forged_items_are_dead_lettered_with_their_reason_and_the_real_lane_runs_on()
-> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let (_cloud, edge, addr) = setup(&e).await?;
    warm_up(&addr).await?;
    let subject = call_subject(&e.hub.lattice, "greeter", "greeter");
    let edge_key = host_key(&edge)?;
    let outsider = KeyPair::generate(KeyRole::Host);
    let mut sent = 0u32;
    let mut refused: Vec<(String, &'static str)> = Vec::new();

    for attack in 0..6 {
        let real = last_genuine(&e).await?;
        let jumped = real.next + 1000;
        let call = |n: u32| forged_call(&subject, &format!("forged-{n}."));
        let f = match attack {
            // (a) The lane's next thousand calls would be taken for copies.
            0 => Forgery {
                what: "an unsigned item with a jumped lane sequence",
                msg_id: "forged-unsigned".into(),
                lane: real.lane.clone(),
                seq: jumped,
                count: None,
                body: call(0)?,
                sign: Sign::Not,
                reason: "unsigned",
            },
            // (b) Correctly shaped and signed, by a key that is no host of the lattice.
            1 => Forgery {
                what: "an item signed by another key",
                msg_id: "forged-outsider".into(),
                lane: real.lane.clone(),
                seq: real.next,
                count: None,
                body: call(1)?,
                sign: Sign::With(&outsider),
                reason: "unknown signer",
            },
            // (b') The real sender's signature, over a jumped sequence.
            2 => Forgery {
                what: "a real signature over a jumped sequence",
                msg_id: "forged-altered".into(),
                lane: real.lane.clone(),
                seq: jumped,
                count: None,
                body: real.payload.to_vec(),
                sign: Sign::Copied(&real.headers),
                reason: "bad signature",
            },
            // (c) Signed by the sending host itself: only the lane id is wrong.
            3 => Forgery {
                what: "a lane id that is not a valid key",
                msg_id: "forged-lane".into(),
                lane: "not a.lane*>".into(),
                seq: real.next,
                count: None,
                body: call(3)?,
                sign: Sign::With(&edge_key),
                reason: "malformed lane",
            },
            // (d) A bundle of the lane's next three calls that holds none.
            4 => Forgery {
                what: "an undecodable bundle",
                msg_id: "forged-bundle".into(),
                lane: real.lane.clone(),
                seq: real.next,
                count: Some(3),
                body: b"\xc1 not a bundle".to_vec(),
                sign: Sign::With(&edge_key),
                reason: "malformed bundle",
            },
            // (e) Larger than any sender queues.
            _ => Forgery {
                what: "an oversized item",
                msg_id: "forged-large".into(),
                lane: real.lane.clone(),
                seq: jumped,
                count: None,
                body: vec![0x20; MAX_QUEUED_MESSAGE_BYTES + 1],
                sign: Sign::Not,
                reason: "too large",
            },
        };
        publish(&e, &subject, &real.link, &f).await?;

        // Dead-lettered with its reason, and listed so.
        let listed = e
            .hub
            .wait_until(&format!("{} to be dead-lettered", f.what), || async {
                Ok(dead_letters(&e)
                    .await?
                    .into_iter()
                    .find(|d| d.call_id == f.msg_id))
            })
            .await?;
        assert!(
            listed.error.starts_with(&format!("{}:", f.reason)),
            "{}: {listed:?}",
            f.what
        );
        assert_eq!(listed.attempts, 0, "{listed:?}");
        refused.push((f.msg_id.clone(), f.reason));

        // The real sender's next calls, on the lane the forgery named: in order, once each.
        for _ in 0..3 {
            let answer = http_get(&addr, &format!("/notify?msg=real-{sent}.")).await?;
            assert_eq!(answer, (200, "ok".into()), "call {sent}");
            sent += 1;
        }
        eventually(
            WAIT,
            &format!("the real calls after {}", f.what),
            || async { Ok(delivered("real").len() >= sent as usize) },
        )
        .await
        .with_context(|| format!("after {}: log:\n{}", f.what, log_text()))?;
        assert_eq!(
            delivered("real"),
            (0..sent).collect::<Vec<_>>(),
            "after {}",
            f.what
        );
        assert_eq!(delivered("forged"), Vec::<u32>::new(), "after {}", f.what);
    }

    // Nothing ran twice or late, and the consumer never restarted.
    tokio::time::sleep(QUIET).await;
    assert_eq!(delivered("real"), (0..sent).collect::<Vec<_>>());
    assert_eq!(delivered("forged"), Vec::<u32>::new());
    assert_eq!(delivered("warmup"), vec![0]);
    assert_eq!(
        log_lines("delivering queued items"),
        1,
        "the consumer started again: {}",
        log_text()
    );
    assert_eq!(
        log_lines("consuming queued items failed"),
        0,
        "{}",
        log_text()
    );

    // The reasons as listed; none is put back.
    let dead = dead_letters(&e).await?;
    for (id, reason) in &refused {
        let d = dead
            .iter()
            .find(|d| &d.call_id == id)
            .with_context(|| format!("{id} is listed: {dead:?}"))?;
        assert!(d.error.starts_with(reason), "{d:?}");
    }
    let selector: LinkSelector = "greeter/greeter".parse()?;
    for (id, reason) in &refused {
        let err = e
            .hub
            .ctl
            .requeue(&selector, vec![id.clone()])
            .await
            .expect_err("a refused item is not requeued");
        let text = err.to_string();
        assert!(
            text.contains("refused by its target") && text.contains(reason),
            "{id}: {text}"
        );
    }
    assert_eq!(dead_letters(&e).await?.len(), refused.len());
    assert_eq!(delivered("forged"), Vec::<u32>::new());
    Ok(())
}
