//! Hosts are identified and admitted: a heartbeat counts only when signed by the host its
//! subject names; a host takes part only once admitted (a join token an admin signed, or an
//! operator's `hosts admit`); hosts silent past the retention are forgotten. Real nats-server,
//! control plane and hosts; spoofs are published by a plain client, as an attacker would.

use std::time::Duration;

use futures::StreamExt;
use lattice_protocol::envelope;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::messages::{
    AdmissionRequest, AppState, Event, EventKind, Heartbeat, HostState, HostSummary, WorkloadState,
    verbs,
};
use lattice_protocol::names::HostId;
use lattice_protocol::signed::{JoinGrant, MacKey, seal_heartbeat};
use lattice_protocol::subject::{Buckets, Subject};
use lattice_protocol::unix_now;
use lattice_tests::{TestLattice, WAIT, hello_manifest, hello_wasm};

const ANY_PORT: &str = "127.0.0.1:0";

/// hello, one instance on any host, waiting (rather than failing) while no host can take it.
fn waiting_hello(image: &str) -> String {
    hello_manifest("hello", "v1", image, "Hello", ANY_PORT).replace(
        "  annotations:\n",
        "  annotations:\n    lattice.wait-for-hosts: \"true\"\n",
    )
}

async fn host_named(t: &TestLattice, name: &str) -> anyhow::Result<Option<HostSummary>> {
    Ok(t.ctl.hosts().await?.into_iter().find(|h| h.name == name))
}

/// A heartbeat as a host would send it, for `host`.
fn heartbeat(host: &HostId, name: &str, stopping: bool) -> Heartbeat {
    Heartbeat {
        host: host.clone(),
        name: name.into(),
        labels: [("role".to_string(), "worker".to_string())].into(),
        started_at: unix_now(),
        sent_at_ms: 0,
        version: "spoof".into(),
        assignment_revision: 0,
        interval_secs: 1,
        workloads: Vec::new(),
        last_refusal: None,
        stopping,
        queues: Vec::new(),
        join_token: None,
        clock_offset_ms: 0,
    }
}

/// The host that runs hello now, by the control plane's status.
async fn hello_runs_on(t: &TestLattice) -> anyhow::Result<Vec<HostId>> {
    let status = t
        .ctl
        .status(&lattice_protocol::names::AppName::new("hello")?)
        .await?;
    Ok(status
        .components
        .iter()
        .filter(|c| c.state == WorkloadState::Running)
        .filter_map(|c| c.host.clone())
        .collect())
}

#[tokio::test]
async fn spoofed_heartbeats_change_nothing_and_are_reported() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _a = t.add_host("a").await?;
    let _b = t.add_host("b").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v1",
            &image.to_string(),
            "Hello",
            ANY_PORT,
        ))
        .await?;
    t.wait_deployed("hello").await?;
    let holder = match hello_runs_on(&t).await?.as_slice() {
        [one] => one.clone(),
        other => anyhow::bail!("hello should run on one host: {other:?}"),
    };
    let mut events = t
        .client
        .subscribe(Subject::events(&t.lattice).to_string())
        .await?;
    lattice_tests::synced(&t.client).await?;

    // 1. A plain client invents a host (an id of a fresh key), even with a valid join token:
    //    unsigned, so never believed.
    let invented_key = KeyPair::generate(KeyRole::Host);
    let invented = HostId::new(invented_key.public_key().to_string())?;
    let mut fake = heartbeat(&invented, "invented", false);
    fake.join_token = Some(t.join_token());
    let invented_subject = Subject::heartbeat(&t.lattice, &invented).to_string();
    t.client
        .publish(invented_subject.clone(), envelope::encode(&fake).into())
        .await?;
    // 2. The real holder's id, signed by another host's key and tagged with the key that host
    //    shares with the control plane, saying it is stopping.
    let other = KeyPair::generate(KeyRole::Host);
    let holder_subject = Subject::heartbeat(&t.lattice, &holder).to_string();
    let stopping = heartbeat(&holder, "a", true);
    let other_mac = MacKey::agree(&other, &t.operator.public_key())?;
    t.client
        .publish(
            holder_subject.clone(),
            seal_heartbeat(&stopping, &other, &[other_mac]).into(),
        )
        .await?;
    // 3. The same, unsigned.
    t.client
        .publish(holder_subject.clone(), envelope::encode(&stopping).into())
        .await?;
    t.client.flush().await?;

    // Each spoofed subject is reported once as a refused heartbeat.
    let mut refused = std::collections::BTreeSet::new();
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while refused.len() < 2 {
            let Some(msg) = events.next().await else {
                anyhow::bail!("the events subscription ended");
            };
            let event: Event = envelope::decode(&msg.payload)?;
            if event.kind == EventKind::HeartbeatRefused {
                refused.insert(event.host.clone());
            }
            seen.push(event);
        }
        Ok(())
    })
    .await??;
    assert_eq!(
        refused,
        [Some(invented.clone()), Some(holder.clone())].into(),
        "{seen:?}"
    );

    // The holder's next real heartbeats are taken after the spoofs: nothing moved.
    let mut beats = t.client.subscribe(holder_subject).await?;
    for _ in 0..2 {
        tokio::time::timeout(WAIT, beats.next()).await?;
    }
    let hosts = t.ctl.hosts().await?;
    assert!(
        hosts.iter().all(|h| h.id != invented),
        "an invented host is listed: {hosts:?}"
    );
    assert!(
        hosts.iter().all(|h| h.state == HostState::Ready),
        "{hosts:?}"
    );
    assert_eq!(hello_runs_on(&t).await?, vec![holder.clone()]);
    let kinds: Vec<EventKind> = seen.iter().map(|e| e.kind).collect();
    assert!(
        !kinds.contains(&EventKind::HostStopped) && !kinds.contains(&EventKind::Assigned),
        "a spoof changed something: {seen:?}"
    );
    let inventory = t.ctl.inventory(holder.as_str()).await?;
    assert_eq!(inventory.workloads.len(), 1);
    assert!(!inventory.stopping);
    Ok(())
}

#[tokio::test]
async fn a_host_without_a_token_gets_no_work_until_admitted_and_none_once_revoked()
-> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let mut config = t.host_config("newcomer");
    config.join_token = None;
    let _host = t.start_host(config).await?;
    let listed = t
        .wait_until("newcomer to be listed unadmitted", || async {
            Ok(host_named(&t, "newcomer")
                .await?
                .filter(|h| h.state == HostState::Unadmitted))
        })
        .await?;
    let why = listed.admission.clone().unwrap_or_default();
    assert!(why.contains("no join token"), "{why}");

    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl.deploy(&waiting_hello(&image.to_string())).await?;
    let waiting = t
        .wait_status("hello", "hello to wait for a host", |s| {
            s.status == AppState::Waiting
        })
        .await?;
    assert!(hello_runs_on(&t).await?.is_empty(), "{waiting:?}");
    let inventory = t.ctl.inventory("newcomer").await?;
    assert!(inventory.workloads.is_empty(), "{inventory:?}");

    // An operator admits it (by its full id): it takes the work.
    let admitted = t
        .ctl
        .call::<verbs::Admission>(&AdmissionRequest {
            host: listed.id.to_string(),
            admit: true,
        })
        .await?;
    assert_eq!(admitted, listed.id.to_string());
    t.wait_deployed("hello").await?;
    assert_eq!(hello_runs_on(&t).await?, vec![listed.id.clone()]);

    // Revoked (by name): it loses its work and is listed unadmitted again, saying why.
    t.ctl
        .call::<verbs::Admission>(&AdmissionRequest {
            host: "newcomer".into(),
            admit: false,
        })
        .await?;
    t.wait_for("the revoked host to run nothing", || async {
        Ok(t.ctl.inventory("newcomer").await?.workloads.is_empty())
    })
    .await?;
    let revoked = host_named(&t, "newcomer").await?;
    assert_eq!(
        revoked.as_ref().map(|h| h.state),
        Some(HostState::Unadmitted)
    );
    let why = revoked.and_then(|h| h.admission).unwrap_or_default();
    assert!(why.contains("revoked"), "{why}");
    Ok(())
}

#[tokio::test]
async fn a_token_is_refused_with_its_reason() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let grant = |expires_at| JoinGrant {
        lattice: t.lattice.clone(),
        expires_at,
        host: None,
        labels: Default::default(),
        note: String::new(),
    };
    let mut expired = t.host_config("expired");
    expired.join_token = Some(t.join_token_with(grant(unix_now() - 60)));
    let _expired = t.start_host(expired).await?;
    // Signed by a user key that is not an admin of this lattice.
    let stranger = KeyPair::generate(KeyRole::User);
    let mut foreign = t.host_config("foreign");
    foreign.join_token = Some(
        lattice_protocol::signed::JoinToken::sign(&grant(unix_now() + 3600), &stranger).to_text(),
    );
    let _foreign = t.start_host(foreign).await?;
    for (name, reason) in [("expired", "expired"), ("foreign", "not an admin")] {
        let h = t
            .wait_until(&format!("{name} to be listed unadmitted"), || async {
                Ok(host_named(&t, name)
                    .await?
                    .filter(|h| h.state == HostState::Unadmitted))
            })
            .await?;
        let why = h.admission.unwrap_or_default();
        assert!(why.contains(reason), "{name}: {why}");
        assert!(why.contains("lattice ctl hosts token"), "{name}: {why}");
    }
    // A valid token admits at once.
    let _good = t.add_host("good").await?;
    let good = host_named(&t, "good").await?;
    assert_eq!(good.map(|h| h.admission), Some(None));
    Ok(())
}

#[tokio::test]
async fn a_host_silent_past_the_retention_is_forgotten() -> anyhow::Result<()> {
    let t = TestLattice::start_with(|c| {
        c.host_tolerance = Duration::from_secs(2);
        c.host_retention = Duration::from_secs(4);
    })
    .await?;
    let host = t.add_host("gateway").await?;
    let id = host_named(&t, "gateway")
        .await?
        .map(|h| h.id)
        .ok_or_else(|| anyhow::anyhow!("gateway not listed"))?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl.deploy(&waiting_hello(&image.to_string())).await?;
    t.wait_deployed("hello").await?;
    let js = async_nats::jetstream::new(t.client.clone());
    let assignments = js
        .get_key_value(Buckets::new(&t.lattice).assignments())
        .await?;
    assert!(assignments.get(id.as_str()).await?.is_some());

    host.kill().await;
    t.wait_for("the silent host to be forgotten", || async {
        Ok(host_named(&t, "gateway").await?.is_none())
    })
    .await?;
    t.wait_for("its assignment key to be cleared", || async {
        Ok(assignments.get(id.as_str()).await?.is_none())
    })
    .await?;
    Ok(())
}

/// A join token admits hosts: once looked at, the control plane keeps no copy, so `ctl get
/// inventory` (any viewer may ask it) never shows one.
#[tokio::test]
async fn a_hosts_join_token_is_not_kept_nor_shown() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    t.wait_for("edge-1 to be admitted", || async {
        Ok(t.ctl
            .hosts()
            .await?
            .iter()
            .any(|h| h.name == "edge-1" && h.state == HostState::Ready))
    })
    .await?;
    let report = t.ctl.inventory("edge-1").await?;
    assert_eq!(report.name, "edge-1");
    assert_eq!(
        report.join_token, None,
        "the token the host presented is not shown"
    );
    Ok(())
}
