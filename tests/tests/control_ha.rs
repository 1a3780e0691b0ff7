//! Several control planes on one lattice: one leads, a standby takes over when it dies, and a
//! deposed leader's assignments are refused by hosts.

use std::time::Duration;

use lattice_protocol::assignment::{Assignment, SignedAssignment};
use lattice_protocol::envelope;
use lattice_protocol::messages::AppState;
use lattice_protocol::subject::Buckets;
use lattice_protocol::unix_now;
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};

const TTL: Duration = Duration::from_secs(1);

/// The assignment currently stored for the only host.
async fn stored_assignment(t: &TestLattice) -> anyhow::Result<Assignment> {
    let js = async_nats::jetstream::new(t.client.clone());
    let kv = js
        .get_key_value(Buckets::new(&t.lattice).assignments())
        .await?;
    let host = t.ctl.hosts().await?.remove(0).id;
    let bytes = kv
        .get(host.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no assignment"))?;
    Ok(envelope::decode::<SignedAssignment>(&bytes)?.decode_unverified()?)
}

#[tokio::test]
async fn a_standby_takes_over_and_fences_the_dead_leader() -> anyhow::Result<()> {
    let mut t = TestLattice::start_with(|c| c.lease_ttl = TTL).await?;
    let standby = t.spawn_control(|c| c.lease_ttl = TTL).await?;
    let _host = t.add_host("h").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v1",
            &image.to_string(),
            "One",
            "127.0.0.1:0",
        ))
        .await?;
    let addr = endpoint(&t.wait_deployed("hello").await?)?;
    let before = stored_assignment(&t).await?;

    // The leader dies without a word; the standby takes over once the lease runs out.
    t.kill_control().await;
    let v2 = hello_manifest("hello", "v2", &image.to_string(), "Two", &addr);
    t.wait_for("the standby to accept a deploy", || async {
        Ok(t.ctl.deploy(&v2).await.is_ok())
    })
    .await?;
    t.wait_status("hello", "v2 deployed by the new leader", |s| {
        s.version == "v2" && s.status == AppState::Deployed
    })
    .await?;
    assert_eq!(http_get(&addr, "/").await?.1, "Two from Lattice (host h)\n");
    let after = stored_assignment(&t).await?;
    assert!(
        after.epoch > before.epoch,
        "{} > {}",
        after.epoch,
        before.epoch
    );
    assert!(after.revision > before.revision);

    // Something signed in the old epoch, even newer by revision and by the genuine key, is
    // refused: that is what a deposed leader waking up would send.
    let stale = Assignment {
        revision: after.revision + 10,
        epoch: before.epoch,
        issued_at: unix_now(),
        workloads: Vec::new(),
        ..after.clone()
    };
    let js = async_nats::jetstream::new(t.client.clone());
    let kv = js
        .get_key_value(Buckets::new(&t.lattice).assignments())
        .await?;
    kv.put(
        stale.host.as_str(),
        envelope::encode(&SignedAssignment::sign(&stale, &t.operator)).into(),
    )
    .await?;
    t.wait_for("the host to refuse the deposed leader", || async {
        Ok(t.ctl
            .inventory("h")
            .await?
            .last_refusal
            .is_some_and(|r| r.contains("deposed control plane")))
    })
    .await?;
    assert_eq!(http_get(&addr, "/").await?.1, "Two from Lattice (host h)\n");
    standby.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_stopping_leader_hands_over_at_once() -> anyhow::Result<()> {
    // An hour-long lease: only the leader giving it up lets the standby lead within the test.
    let long = Duration::from_secs(3600);
    let mut t = TestLattice::start_with(|c| c.lease_ttl = long).await?;
    let standby = t.spawn_control(|c| c.lease_ttl = long).await?;
    t.stop_control().await?;
    t.wait_for("the standby to answer", || async {
        Ok(t.ctl.apps().await.is_ok())
    })
    .await?;
    standby.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_restarted_control_plane_disturbs_nothing() -> anyhow::Result<()> {
    use futures::StreamExt;
    // A startup grace longer than a heartbeat interval, as in production (hosts beat every 1 s here).
    let grace = |c: &mut lattice_control::ControlConfig| c.startup_grace = Duration::from_secs(2);
    let mut t = TestLattice::start_with(grace).await?;
    let _a = t.add_host("a").await?;
    let _b = t.add_host("b").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = hello_manifest("hello", "v1", &image.to_string(), "Hi", "127.0.0.1:0")
        .replace("instances: 1", "instances: 3");
    t.ctl.deploy(&manifest).await?;
    t.wait_deployed("hello").await?;
    let before = [t.ctl.inventory("a").await?, t.ctl.inventory("b").await?];

    t.stop_control().await?;
    t.start_control(grace).await?;
    // Past the grace period, by the hosts' own clock: four heartbeats from each.
    let mut beats = t
        .client
        .subscribe(lattice_protocol::subject::Subject::all_heartbeats(
            &t.lattice,
        ))
        .await?;
    for _ in 0..8 {
        tokio::time::timeout(lattice_tests::WAIT, beats.next()).await?;
    }
    for old in before {
        let now = t.ctl.inventory(&old.name).await?;
        // The new leader re-signs each assignment once with its epoch (fencing); what runs,
        // and where, is untouched.
        assert!(
            now.assignment_revision <= old.assignment_revision + 1,
            "{} was re-assigned more than once",
            old.name
        );
        assert_eq!(now.workloads, old.workloads);
    }
    assert_eq!(
        t.ctl.status(&"hello".parse()?).await?.status,
        AppState::Deployed
    );
    Ok(())
}
