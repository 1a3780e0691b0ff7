//! End to end, in-process: a real nats-server, the control plane, hosts and the hello component.
//! Deploy, serve, update, undeploy; and every refusal the foundation promises, each with its
//! own error.

use lattice_protocol::assignment::{Assignment, SignedAssignment};
use lattice_protocol::claims::{ClaimsOptions, sign_component};
use lattice_protocol::envelope;
use lattice_protocol::error::ErrorCode;
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::messages::{AppState, FailureReason, HostSummary};
use lattice_protocol::names::AppName;
use lattice_protocol::subject::Buckets;
use lattice_protocol::unix_now;
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};

const ANY_PORT: &str = "127.0.0.1:0";

/// Compiled-code files in a host's cache: refusals must leave none.
fn compiled_files(host: &lattice_tests::TestHost) -> usize {
    std::fs::read_dir(host.state_dir.join("compiled"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn hello_deploys_serves_updates_and_undeploys() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;

    let v1 = hello_manifest("hello", "v1", &image.to_string(), "Hello", ANY_PORT);
    let reply = t.ctl.deploy(&v1).await?;
    assert_eq!((reply.version.as_str(), reply.changed), ("v1", true));
    let status = t.wait_deployed("hello").await?;
    let addr = endpoint(&status)?;
    let (code, body) = http_get(&addr, "/").await?;
    assert_eq!(code, 200);
    assert_eq!(body, "Hello from Lattice (host edge-1)\n");

    // Deploying the same manifest again changes nothing.
    assert!(!t.ctl.deploy(&v1).await?.changed);
    // The same version with other content is refused: versions are immutable.
    let clash = hello_manifest("hello", "v1", &image.to_string(), "Changed", ANY_PORT);
    assert_eq!(
        t.ctl.deploy(&clash).await.unwrap_err().code,
        ErrorCode::Conflict
    );

    // A new version: the answer changes.
    let v2 = hello_manifest("hello", "v2", &image.to_string(), "Howdy", ANY_PORT);
    t.ctl.deploy(&v2).await?;
    let status = t
        .wait_status("hello", "v2 deployed", |s| {
            s.version == "v2" && s.status == AppState::Deployed
        })
        .await?;
    let addr2 = endpoint(&status)?;
    let (code, body) = http_get(&addr2, "/").await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "Howdy from Lattice (host edge-1)\n")
    );

    // Undeploy: the port closes.
    t.ctl.undeploy(&AppName::new("hello")?).await?;
    t.wait_for("the host to stop serving", || async {
        Ok(tokio::net::TcpStream::connect(&addr2).await.is_err())
    })
    .await?;
    let status = t.ctl.status(&AppName::new("hello")?).await?;
    assert_eq!(status.status, AppState::Undeployed);
    let apps = t.ctl.apps().await?;
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].status, AppState::Undeployed);
    Ok(())
}

#[tokio::test]
async fn versions_are_kept_and_rollback_goes_back() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let name = AppName::new("hello")?;
    for (version, greeting) in [("v1", "One"), ("v2", "Two")] {
        let manifest = hello_manifest("hello", version, &image.to_string(), greeting, ANY_PORT);
        t.ctl.deploy(&manifest).await?;
        t.wait_status("hello", version, |s| {
            s.version == version && s.status == AppState::Deployed
        })
        .await?;
    }
    let history = t.ctl.history(&name).await?;
    let listed: Vec<(&str, bool)> = history
        .iter()
        .map(|v| (v.version.as_str(), v.current))
        .collect();
    assert_eq!(listed, [("v1", false), ("v2", true)]);

    let reply = t.ctl.rollback(&name, None).await?;
    assert_eq!((reply.version.as_str(), reply.changed), ("v1", true));
    let status = t
        .wait_status("hello", "v1 again", |s| {
            s.version == "v1" && s.status == AppState::Deployed
        })
        .await?;
    assert_eq!(
        http_get(&endpoint(&status)?, "/").await?.1,
        "One from Lattice (host edge-1)\n"
    );

    // Nothing is earlier than v1; an unknown version names the ones that exist.
    assert_eq!(
        t.ctl.rollback(&name, None).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    let err = t.ctl.rollback(&name, Some("v9")).await.unwrap_err();
    assert!(err.message.contains("v1, v2"), "{}", err.message);
    assert!(t.ctl.rollback(&name, Some("v2")).await?.changed);
    Ok(())
}

#[tokio::test]
async fn two_apps_cannot_share_an_address_on_one_host() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let first = hello_manifest("first", "v1", &image.to_string(), "First", ANY_PORT);
    t.ctl.deploy(&first).await?;
    let addr = endpoint(&t.wait_deployed("first").await?)?;
    let second = hello_manifest("second", "v1", &image.to_string(), "Second", &addr);
    t.ctl.deploy(&second).await?;
    let status = t
        .wait_status("second", "the second app to fail", |s| {
            s.status == AppState::Failed
        })
        .await?;
    assert!(
        status.message.contains("already served by first/hello"),
        "{}",
        status.message
    );
    let reasons: Vec<_> = status.components.iter().map(|c| c.reason).collect();
    assert_eq!(reasons, [Some(FailureReason::AddressInUse)], "{status:?}");
    assert_eq!(
        http_get(&addr, "/").await?.1,
        "First from Lattice (host edge-1)\n"
    );
    Ok(())
}

#[tokio::test]
async fn a_fixed_address_keeps_its_port_across_versions() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    // Let the OS choose a port once, then ask for it explicitly.
    let v1 = hello_manifest("hello", "v1", &image.to_string(), "One", ANY_PORT);
    t.ctl.deploy(&v1).await?;
    let addr = endpoint(&t.wait_deployed("hello").await?)?;
    let fixed = hello_manifest("hello", "v2", &image.to_string(), "Two", &addr);
    t.ctl.deploy(&fixed).await?;
    t.wait_status("hello", "v2", |s| {
        s.version == "v2" && s.status == AppState::Deployed
    })
    .await?;
    let v3 = hello_manifest("hello", "v3", &image.to_string(), "Three", &addr);
    t.ctl.deploy(&v3).await?;
    let status = t
        .wait_status("hello", "v3", |s| {
            s.version == "v3" && s.status == AppState::Deployed
        })
        .await?;
    assert_eq!(
        endpoint(&status)?,
        addr,
        "the same port serves the new version"
    );
    assert_eq!(
        http_get(&addr, "/").await?.1,
        "Three from Lattice (host edge-1)\n"
    );
    Ok(())
}

/// Deploys `bytes` and waits for the app to fail; returns the failure message, after checking
/// that its one component failed for `reason`.
async fn deploy_expecting_failure(
    t: &TestLattice,
    bytes: &[u8],
    reason: FailureReason,
) -> anyhow::Result<String> {
    let image = t.push(bytes).await?;
    let manifest = hello_manifest("bad", "v1", &image.to_string(), "Hi", ANY_PORT);
    t.ctl.deploy(&manifest).await?;
    let status = t
        .wait_status("bad", "the app to fail", |s| s.status == AppState::Failed)
        .await?;
    let reasons: Vec<_> = status.components.iter().map(|c| c.reason).collect();
    assert_eq!(reasons, [Some(reason)], "{status:?}");
    Ok(status.message)
}

/// On a fresh lattice with one host, the component `make` builds is refused before
/// compilation with a message containing every one of `needles`.
async fn assert_refused(
    make: impl FnOnce(&TestLattice) -> anyhow::Result<Vec<u8>>,
    needles: &[&str],
) -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let host = t.add_host("h").await?;
    let message = deploy_expecting_failure(&t, &make(&t)?, FailureReason::RefusedSignature).await?;
    for needle in needles {
        assert!(message.contains(needle), "`{needle}` not in: {message}");
    }
    assert_eq!(compiled_files(&host), 0, "nothing was compiled");
    Ok(())
}

/// Replaces the first (or last) occurrence of `what` in `bytes` by changing its first byte.
fn flip(mut bytes: Vec<u8>, what: &[u8], last: bool) -> Vec<u8> {
    let mut places = bytes
        .windows(what.len())
        .enumerate()
        .filter(|(_, w)| *w == what);
    let pos = if last {
        places.next_back()
    } else {
        places.next()
    };
    let pos = pos.map(|(i, _)| i).expect("the bytes are present");
    bytes[pos] ^= 0x20;
    bytes
}

#[tokio::test]
async fn unsigned_component_is_refused_before_compilation() -> anyhow::Result<()> {
    assert_refused(|_| Ok(hello_wasm()), &["unsigned component"]).await
}

#[tokio::test]
async fn tampered_component_is_refused() -> anyhow::Result<()> {
    // A byte of the greeting text changes: the component still parses, its hash does not match.
    assert_refused(
        |t| {
            Ok(flip(
                t.sign(&hello_wasm(), "hello", "0.1.0"),
                b"from Lattice",
                false,
            ))
        },
        &["tampered component"],
    )
    .await
}

#[tokio::test]
async fn forged_claims_fail_the_signature() -> anyhow::Result<()> {
    // The version inside the signed claims changes: the issuer's signature no longer matches.
    assert_refused(
        |t| {
            Ok(flip(
                t.sign(&hello_wasm(), "hello", "7.7.7"),
                b"7.7.7",
                true,
            ))
        },
        &["bad signature"],
    )
    .await
}

#[tokio::test]
async fn untrusted_issuer_is_refused() -> anyhow::Result<()> {
    let stranger = KeyPair::generate(KeyRole::Issuer);
    let options = ClaimsOptions::named("hello", "0.1.0");
    let bytes = sign_component(&hello_wasm(), &stranger, &options, unix_now())?;
    assert_refused(
        |_| Ok(bytes),
        &["untrusted issuer", stranger.public_key().as_str()],
    )
    .await
}

#[tokio::test]
async fn expired_component_is_refused() -> anyhow::Result<()> {
    assert_refused(
        |t| {
            let now = unix_now();
            let options = ClaimsOptions {
                expires: Some(now - 60),
                ..ClaimsOptions::named("hello", "0.1.0")
            };
            Ok(sign_component(
                &hello_wasm(),
                &t.issuer,
                &options,
                now - 3600,
            )?)
        },
        &["expired component"],
    )
    .await
}

#[tokio::test]
async fn oversized_component_is_refused_and_the_host_stays_up() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let mut config = t.host_config("small");
    config.engine.max_component_bytes = 16 * 1024;
    let host = t.start_host(config).await?;
    t.wait_for("the host to report", || async {
        Ok(!t.ctl.hosts().await?.is_empty())
    })
    .await?;
    let message = deploy_expecting_failure(
        &t,
        &t.sign(&hello_wasm(), "hello", "1"),
        FailureReason::FetchFailed,
    )
    .await?;
    assert!(message.contains("more than the 16384 bytes"), "{message}");
    assert_eq!(compiled_files(&host), 0);
    // Still alive: it keeps reporting.
    let before = t.ctl.hosts().await?[0].uptime_secs;
    t.wait_for("another heartbeat", || async {
        Ok(t.ctl.hosts().await?[0].uptime_secs > before)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_core_module_is_refused_at_deploy() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let image = t.push(&core_module).await?;
    let err = t
        .ctl
        .deploy(&hello_manifest(
            "core",
            "v1",
            &image.to_string(),
            "x",
            ANY_PORT,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
    assert!(
        err.message.contains("not a WebAssembly component"),
        "{}",
        err.message
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_image_is_refused_with_what_to_do() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let err = t
        .ctl
        .deploy(&hello_manifest("x", "v1", "hello:9.9.9", "x", ANY_PORT))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(err.message.contains("lattice push"), "{}", err.message);
    Ok(())
}

#[tokio::test]
async fn a_malformed_manifest_reports_every_problem() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let manifest = "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: bad.name\nspec:\n  components:\n    - name: hello\n      type: component\n      propertes:\n        image: x:1\n";
    let err = t.ctl.deploy(manifest).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
    assert!(err.message.contains("line 4"), "{}", err.message);
    assert!(err.message.contains("subject separator"), "{}", err.message);
    assert!(err.message.contains("line 9"), "{}", err.message);
    assert!(
        err.message.contains("did you mean `properties`"),
        "{}",
        err.message
    );
    assert!(t.ctl.apps().await?.is_empty(), "nothing was stored");
    Ok(())
}

/// The host's id as the control plane knows it.
async fn only_host(t: &TestLattice) -> anyhow::Result<HostSummary> {
    let hosts = t.ctl.hosts().await?;
    anyhow::ensure!(hosts.len() == 1, "expected one host, got {hosts:?}");
    Ok(hosts.into_iter().next().expect("one host"))
}

/// Writes an assignment straight into the bucket, as an attacker with NATS access could.
async fn write_assignment(t: &TestLattice, signed: &SignedAssignment) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(t.client.clone());
    let kv = js
        .get_key_value(Buckets::new(&t.lattice).assignments())
        .await?;
    let a = signed.decode_unverified()?;
    kv.put(a.host.as_str(), envelope::encode(signed).into())
        .await?;
    Ok(())
}

#[tokio::test]
async fn forged_and_replayed_assignments_are_refused_and_work_keeps_running() -> anyhow::Result<()>
{
    let t = TestLattice::start().await?;
    let _host = t.add_host("h").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v1",
            &image.to_string(),
            "One",
            ANY_PORT,
        ))
        .await?;
    t.wait_deployed("hello").await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v2",
            &image.to_string(),
            "Two",
            ANY_PORT,
        ))
        .await?;
    let status = t
        .wait_status("hello", "v2", |s| {
            s.version == "v2" && s.status == AppState::Deployed
        })
        .await?;
    let addr = endpoint(&status)?;
    let host = only_host(&t).await?;

    // Forged: a well-formed assignment emptying the host, signed by a key it does not trust.
    let forged = Assignment {
        lattice: t.lattice.clone(),
        host: host.id.clone(),
        revision: 1000,
        epoch: 1,
        stop: false,
        trace: None,
        issued_at: unix_now(),
        expires_at: unix_now() + 3600,
        workloads: Vec::new(),
    };
    let stranger = KeyPair::generate(KeyRole::Operator);
    write_assignment(&t, &SignedAssignment::sign(&forged, &stranger)).await?;
    let refusal = |needle: &'static str| {
        let t = &t;
        move || async move { Ok(last_refusal(t).await?.is_some_and(|r| r.contains(needle))) }
    };
    t.wait_for(
        "the forged assignment to be refused",
        refusal("not a trusted operator key"),
    )
    .await?;
    assert_eq!(http_get(&addr, "/").await?.1, "Two from Lattice (host h)\n");

    // Replayed: a genuine signature on an older revision.
    let replay = Assignment {
        revision: 1,
        ..forged
    };
    write_assignment(&t, &SignedAssignment::sign(&replay, &t.operator)).await?;
    t.wait_for("the replay to be refused", refusal("refused as a replay"))
        .await?;
    assert_eq!(http_get(&addr, "/").await?.1, "Two from Lattice (host h)\n");
    Ok(())
}

/// The last refusal the only host reported in its heartbeat.
async fn last_refusal(t: &TestLattice) -> anyhow::Result<Option<String>> {
    use futures::StreamExt;
    let mut beats = t
        .client
        .subscribe(lattice_protocol::subject::Subject::all_heartbeats(
            &t.lattice,
        ))
        .await?;
    let msg = tokio::time::timeout(lattice_tests::WAIT, beats.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("heartbeat subscription closed"))?;
    let hb = lattice_protocol::signed::open_heartbeat_on(&msg.subject, &msg.payload)?;
    Ok(hb.last_refusal)
}

#[tokio::test]
async fn a_restarted_host_serves_from_disk_without_nats() -> anyhow::Result<()> {
    let mut t = TestLattice::start().await?;
    let host = t.add_host("gateway").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v1",
            &image.to_string(),
            "Online",
            ANY_PORT,
        ))
        .await?;
    // Pin the port the OS chose, so that the restarted host binds the same one.
    let addr = endpoint(&t.wait_deployed("hello").await?)?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v2",
            &image.to_string(),
            "Offline",
            &addr,
        ))
        .await?;
    t.wait_status("hello", "v2", |s| {
        s.version == "v2" && s.status == AppState::Deployed
    })
    .await?;
    let config = {
        let mut c = t.host_config("gateway");
        c.state_dir = host.state_dir.clone();
        c.engine = lattice_host::engine::EngineConfig::default();
        c
    };
    host.stop().await?;
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "stopped host closed its port"
    );

    // NATS goes away entirely; the host starts anyway and serves its saved assignment.
    let url = t.nats.url.clone();
    let dir = std::mem::replace(&mut t.nats, lattice_tests::NatsServer::start().await?).kill();
    drop(dir);
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(&url)
        .await?;
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(lattice_host::run(config, client, token.clone()));
    t.wait_for("the offline host to serve", || async {
        Ok(http_get(&addr, "/")
            .await
            .is_ok_and(|(code, _)| code == 200))
    })
    .await?;
    assert_eq!(
        http_get(&addr, "/").await?.1,
        "Offline from Lattice (host gateway)\n"
    );
    token.cancel();
    tokio::time::timeout(lattice_tests::WAIT, task).await???;
    Ok(())
}

#[tokio::test]
async fn events_and_inventory_tell_what_happened() -> anyhow::Result<()> {
    use futures::StreamExt;
    use lattice_protocol::messages::{Event, EventKind};

    let t = TestLattice::start().await?;
    let mut events = t
        .client
        .subscribe(lattice_protocol::subject::Subject::events(&t.lattice).to_string())
        .await?;
    lattice_tests::synced(&t.client).await?;
    let _host = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v1",
            &image.to_string(),
            "Hi",
            ANY_PORT,
        ))
        .await?;
    t.wait_deployed("hello").await?;

    // Every kind this story produces arrives, in order of happening, up to the workload running.
    let mut seen: Vec<Event> = Vec::new();
    let running = |e: &Event| e.kind == EventKind::Workload && e.message.contains("running");
    while !seen.iter().any(running) {
        let msg = tokio::time::timeout(lattice_tests::WAIT, events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("event stream closed"))?;
        seen.push(envelope::decode(&msg.payload)?);
    }
    let position = |k: EventKind| seen.iter().position(|e| e.kind == k).expect("seen");
    assert!(
        position(EventKind::Deployed) < position(EventKind::Assigned),
        "{seen:?}"
    );
    assert!(
        position(EventKind::HostJoined) < position(EventKind::Deployed),
        "{seen:?}"
    );

    let inventory = t.ctl.inventory("edge-1").await?;
    assert_eq!(inventory.workloads.len(), 1);
    assert_eq!(inventory.workloads[0].app.as_str(), "hello");
    assert_eq!(
        t.ctl.inventory("nope").await.unwrap_err().code,
        ErrorCode::NotFound
    );
    Ok(())
}

/// Workloads of one image starting together on one host fetch it once between them (one load
/// per digest, `host/src/agent/components.rs`): none fails for the other's fetch (each used to
/// fetch it, both wrote the same temporary file, and one lost the race).
#[tokio::test]
async fn workloads_of_one_image_start_together_on_one_host() -> anyhow::Result<()> {
    use futures::StreamExt;
    use lattice_protocol::messages::{Event, EventKind};

    let t = TestLattice::start().await?;
    let mut events = t
        .client
        .subscribe(lattice_protocol::subject::Subject::events(&t.lattice).to_string())
        .await?;
    lattice_tests::synced(&t.client).await?;
    let _host = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let apps = ["one", "two", "three", "four"];
    let deploys = apps.map(|app| hello_manifest(app, "v1", &image.to_string(), app, ANY_PORT));
    futures::future::try_join_all(deploys.iter().map(|m| t.ctl.deploy(m))).await?;

    let mut running = std::collections::BTreeSet::new();
    while running.len() < apps.len() {
        let msg = tokio::time::timeout(lattice_tests::WAIT, events.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("event stream closed"))?;
        let event: Event = envelope::decode(&msg.payload)?;
        if event.kind != EventKind::Workload {
            continue;
        }
        assert!(!event.message.contains("failed"), "{}", event.message);
        if event.message.contains("running") {
            running.insert(
                event
                    .message
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    for app in apps {
        let addr = endpoint(&t.wait_deployed(app).await?)?;
        assert_eq!(
            http_get(&addr, "/").await?.1,
            format!("{app} from Lattice (host edge-1)\n")
        );
    }
    Ok(())
}
