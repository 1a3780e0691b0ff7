//! Least privilege in NATS itself: a real nats-server runs the authorization
//! `lattice nats authz` generates (one account per lattice, one user per identity), and the
//! lattice works under it: the control plane, a host, deploys by API and by the `lattice` CLI,
//! a component served over HTTP. Then one test per attack, each asserting the server's refusal
//! and that the lattice keeps serving afterwards (the host still heartbeats, a new version still
//! deploys and serves).
//!
//! Run against both servers: `nats-server` (2.9) and `LATTICE_NATS_SERVER=<current>`.

use anyhow::Context as _;
use futures::StreamExt as _;
use lattice_protocol::envelope;
use lattice_protocol::membership::SignedMembership;
use lattice_protocol::names::HostId;
use lattice_protocol::subject::{Buckets, CtlVerb, Subject, kv_key_subject, kv_stream};
use lattice_tests::authz::{SecuredLattice, connect};
use lattice_tests::{WAIT, hello_manifest, hello_wasm, http_get, lattice_bin};

const ANY_PORT: &str = "127.0.0.1:0";

/// A lattice `test` with hosts `host-a` (running) and `host-b` (its key is the intruder's), and
/// hello deployed on host-a: the lattice and its endpoint.
async fn serving() -> anyhow::Result<(SecuredLattice, lattice_tests::TestHost, String)> {
    let t = SecuredLattice::start(&[("test", &["host-a", "host-b"])]).await?;
    let host = t.start_host("host-a").await?;
    let image = t.push(&hello_wasm(), "hello").await?;
    let manifest = hello_manifest("hello", "v1", &image.to_string(), "Hello", ANY_PORT);
    let addr = t.deploy_and_serve(&manifest, "hello").await?;
    assert_eq!(
        http_get(&addr, "/").await?,
        (200, "Hello from Lattice (host host-a)\n".to_string())
    );
    Ok((t, host, addr))
}

fn host_id(t: &SecuredLattice, name: &str) -> HostId {
    HostId::new(t.keys().host(name).public_key().to_string()).expect("a host id")
}

/// After an attack: host-a still heartbeats, and a new version of hello deploys and serves.
async fn still_serves(t: &SecuredLattice, version: &str) -> anyhow::Result<()> {
    let lattice = &t.keys().lattice;
    let mut beats = t
        .admin_client
        .subscribe(Subject::heartbeat(lattice, &host_id(t, "host-a")).to_string())
        .await?;
    tokio::time::timeout(WAIT, beats.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the heartbeat subscription ended"))?;
    let image = t.push(&hello_wasm(), "hello").await?;
    let greeting = format!("Still {version}");
    let manifest = hello_manifest("hello", version, &image.to_string(), &greeting, ANY_PORT);
    t.ctl.deploy(&manifest).await?;
    let app = lattice_protocol::names::AppName::new("hello")?;
    lattice_tests::eventually(WAIT, &format!("hello {version} to serve"), || async {
        let status = t.ctl.status(&app).await?;
        let Some(addr) = status.components.iter().find_map(|c| c.endpoint.clone()) else {
            return Ok(false);
        };
        Ok(status.version == version
            && http_get(&addr, "/").await.is_ok_and(|(code, body)| {
                code == 200 && body.starts_with(&format!("{greeting} from Lattice"))
            }))
    })
    .await
}

#[tokio::test]
async fn the_whole_lattice_works_under_the_generated_authorization() -> anyhow::Result<()> {
    let (t, _host, _addr) = serving().await?;
    // The CLI, with the admin's key as its NATS identity and as its request signer.
    let admin = t.key_path("admin", &t.keys().admin)?;
    let image = t.push(&hello_wasm(), "hello").await?;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("hello.yaml");
    std::fs::write(
        &manifest,
        hello_manifest("hello", "v2", &image.to_string(), "Howdy", ANY_PORT),
    )?;
    let out = tokio::process::Command::new(lattice_bin())
        .args(["ctl", "deploy"])
        .arg(&manifest)
        .args(["--nats-url", &t.nats.url, "--lattice", "test", "--nkey"])
        .arg(&admin)
        .arg("--key")
        .arg(&admin)
        .args(["--control-key", t.keys().control.public_key().as_str()])
        .env("LATTICE_STATE_DIR", dir.path())
        .env_remove("LATTICE_KEY")
        .env_remove("LATTICE_CONTROL_KEY")
        .kill_on_drop(true)
        .output();
    // Awaited, not blocked on: the control plane runs on this test's runtime.
    let out = tokio::time::timeout(WAIT, out).await??;
    assert!(
        out.status.success(),
        "lattice ctl deploy: {}\nthe server's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(t.nats.dir().join("nats-server.log")).unwrap_or_default()
    );
    let app = lattice_protocol::names::AppName::new("hello")?;
    lattice_tests::eventually(WAIT, "hello v2 to serve", || async {
        let status = t.ctl.status(&app).await?;
        let Some(addr) = status.components.iter().find_map(|c| c.endpoint.clone()) else {
            return Ok(false);
        };
        Ok(status.version == "v2"
            && http_get(&addr, "/")
                .await
                .is_ok_and(|(_, body)| body.starts_with("Howdy from Lattice")))
    })
    .await?;
    still_serves(&t, "v3").await
}

#[tokio::test]
async fn an_unauthenticated_client_is_refused() -> anyhow::Result<()> {
    let (t, _host, _addr) = serving().await?;
    let err = async_nats::connect(&t.nats.url)
        .await
        .expect_err("no credentials, no connection");
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );
    // A key the authorization does not name is no better.
    let stranger = lattice_protocol::keys::KeyPair::generate(lattice_protocol::keys::KeyRole::Host);
    let err = connect(&t.nats.url, &t.key_path("stranger", &stranger)?)
        .await
        .expect_err("an unknown key, no connection");
    assert!(err.to_string().contains("cannot reach NATS"), "{err}");
    still_serves(&t, "v2").await
}

/// `lattice ctl watch --since` reads the kept events with an operator's permissions; a host may
/// not read them.
#[tokio::test]
async fn operators_read_the_kept_events_and_hosts_cannot() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let (t, _host, _addr) = serving().await?;
    let admin = t.key_path("admin", &t.keys().admin)?;
    let dir = tempfile::tempdir()?;
    let mut watch = tokio::process::Command::new(lattice_bin())
        .args(["ctl", "watch", "--since", "seq:1", "-o", "json"])
        .args(["--nats-url", &t.nats.url, "--lattice", "test", "--nkey"])
        .arg(&admin)
        .arg("--key")
        .arg(&admin)
        .args(["--control-key", t.keys().control.public_key().as_str()])
        .env("LATTICE_STATE_DIR", dir.path())
        .env_remove("LATTICE_KEY")
        .env_remove("LATTICE_CONTROL_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = watch.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .context("no kept event printed")??
        .context("the watcher ended without printing an event")?;
    let first: serde_json::Value = serde_json::from_str(&first)?;
    assert_eq!(first["seq"], 1, "{first}");
    watch.kill().await?;

    let mut b = t.intruder("host-b", t.keys().host("host-b")).await?;
    let info = format!(
        "$JS.API.STREAM.INFO.{}",
        Buckets::new(&t.keys().lattice).events()
    );
    let _ = b.client.publish(info.clone(), "".into()).await;
    b.refused(&info).await?;
    still_serves(&t, "v2").await
}

#[tokio::test]
async fn a_host_cannot_write_another_hosts_assignment() -> anyhow::Result<()> {
    let (t, _host, _addr) = serving().await?;
    let mut b = t.intruder("host-b", t.keys().host("host-b")).await?;
    let bucket = Buckets::new(&t.keys().lattice).assignments();
    let key = format!("$KV.{bucket}.{}", host_id(&t, "host-a"));
    b.client.publish(key.clone(), "forged".into()).await?;
    b.refused(&key).await?;
    // Nor purge or replace the bucket.
    let purge = format!("$JS.API.STREAM.PURGE.KV_{bucket}");
    let _ = b.client.publish(purge.clone(), "{}".into()).await;
    b.refused(&purge).await?;
    still_serves(&t, "v2").await
}

/// A host reads only its own assignment: every way of reading another's key is refused by the
/// server (a direct get, a watch whose filter is only in the body, one naming the other's key,
/// a message get), and a watch naming its own key in the subject but another's in the body is
/// refused by JetStream. The same watch of its own key is allowed: the refusals are about the
/// key, not the form. Memberships, which the queue's sender check reads, are readable.
#[tokio::test]
async fn a_host_cannot_read_another_hosts_assignment() -> anyhow::Result<()> {
    let (t, _host, _addr) = serving().await?;
    let mut b = t.intruder("host-b", t.keys().host("host-b")).await?;
    let lattice = &t.keys().lattice;
    let bucket = Buckets::new(lattice).assignments();
    let stream = kv_stream(&bucket);
    let (a, own) = (host_id(&t, "host-a"), host_id(&t, "host-b"));
    let theirs = kv_key_subject(&bucket, a.as_str());
    for attempt in [
        format!("$JS.API.DIRECT.GET.{stream}.{theirs}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.watch.{theirs}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
    ] {
        let _ = b.client.publish(attempt.clone(), "{}".into()).await;
        b.refused(&attempt).await?;
    }
    // A consumer request whose subject names its own key and whose body names another's.
    let create = |name: &str, filter: &str| {
        let body = serde_json::json!({
            "stream_name": stream,
            "config": {
                "name": name,
                "deliver_subject": format!("{}.watch", b.client.new_inbox()),
                "filter_subject": filter,
                "deliver_policy": "last_per_subject",
                "ack_policy": "none",
            },
        });
        let subject = format!(
            "$JS.API.CONSUMER.CREATE.{stream}.{name}.{}",
            kv_key_subject(&bucket, own.as_str())
        );
        let client = b.client.clone();
        async move {
            let reply = tokio::time::timeout(
                WAIT,
                client.request(subject, serde_json::to_vec(&body)?.into()),
            )
            .await??;
            Ok::<_, anyhow::Error>(serde_json::from_slice::<serde_json::Value>(&reply.payload)?)
        }
    };
    let mismatch = create("mismatch", &theirs).await?;
    let refusal = mismatch["error"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(refusal.contains("filter"), "{mismatch}");
    let allowed = create("own", &kv_key_subject(&bucket, own.as_str())).await?;
    assert!(allowed.get("error").is_none(), "{allowed}");
    // Memberships are every host's to read, and host-a's is there, signed.
    let members = async_nats::jetstream::new(b.client.clone())
        .get_key_value(Buckets::new(lattice).members())
        .await?;
    let membership = members.get(a.as_str()).await?.expect("host-a is a member");
    envelope::decode::<SignedMembership>(&membership)?.verify(
        &[t.keys().control.public_key()],
        lattice,
        &a,
    )?;
    still_serves(&t, "v2").await
}

#[tokio::test]
async fn a_host_cannot_publish_on_ctl_subjects() -> anyhow::Result<()> {
    let (t, _host, _addr) = serving().await?;
    let mut b = t.intruder("host-b", t.keys().host("host-b")).await?;
    let lattice = &t.keys().lattice;
    let deploy = Subject::ctl(lattice, CtlVerb::Undeploy).to_string();
    b.client.publish(deploy.clone(), "x".into()).await?;
    b.refused(&deploy).await?;
    // Nor answer in the control plane's place.
    let _sub = b
        .client
        .queue_subscribe(Subject::all_ctl(lattice), "lattice-control".into())
        .await?;
    b.refused(&Subject::all_ctl(lattice)).await?;
    still_serves(&t, "v2").await
}

#[tokio::test]
async fn a_host_cannot_read_another_apps_config() -> anyhow::Result<()> {
    let (t, _host, _addr) = serving().await?;
    let mut b = t.intruder("host-b", t.keys().host("host-b")).await?;
    let manifests = Buckets::new(&t.keys().lattice).manifests();
    // The two ways a KV value is read: a direct get, and a consumer on the bucket's stream.
    let get = format!("$JS.API.DIRECT.GET.KV_{manifests}.$KV.{manifests}.hello");
    let _ = b.client.publish(get.clone(), "".into()).await;
    b.refused(&get).await?;
    let consume = format!("$JS.API.CONSUMER.CREATE.KV_{manifests}");
    let _ = b.client.publish(consume.clone(), "{}".into()).await;
    b.refused(&consume).await?;
    // Nor listen to other clients' replies (ctl replies carry manifests).
    let _sub = b.client.subscribe("_INBOX.>").await?;
    b.refused("_INBOX.>").await?;
    still_serves(&t, "v2").await
}

#[tokio::test]
async fn a_provider_is_called_only_by_its_host() -> anyhow::Result<()> {
    let (t, _host, _addr) = serving().await?;
    let lattice = &t.keys().lattice;
    let provider = lattice_protocol::names::ComponentName::new("keyvalue-redis")?;
    let subject = Subject::provider(lattice, &host_id(&t, "host-a"), &provider).to_string();
    // Another host, and an operator: neither may call host-a's provider processes...
    for (name, key) in [
        ("host-b", t.keys().host("host-b")),
        ("admin", &t.keys().admin),
    ] {
        let mut outsider = t.intruder(name, key).await?;
        outsider.client.publish(subject.clone(), "x".into()).await?;
        outsider.refused(&subject).await?;
    }
    // ...nor pose as one to hear host-a's calls.
    let mut b = t.intruder("host-b", t.keys().host("host-b")).await?;
    let all = Subject::all_provider_calls(lattice, &host_id(&t, "host-a"));
    let _sub = b.client.subscribe(all.clone()).await?;
    b.refused(&all).await?;
    still_serves(&t, "v2").await
}

#[tokio::test]
async fn lattices_on_one_server_cannot_reach_each_other() -> anyhow::Result<()> {
    let t =
        SecuredLattice::start(&[("test", &["host-a", "host-b"]), ("other", &["host-o"])]).await?;
    let _host = t.start_host("host-a").await?;
    let image = t.push(&hello_wasm(), "hello").await?;
    let manifest = hello_manifest("hello", "v1", &image.to_string(), "Hello", ANY_PORT);
    t.deploy_and_serve(&manifest, "hello").await?;
    let other = &t.lattices[1];
    let test = &t.keys().lattice;
    // A host of the other lattice: the first lattice's subjects are not among its permissions.
    let mut o = t.intruder("host-o", other.host("host-o")).await?;
    let ctl = Subject::ctl(test, CtlVerb::Deploy).to_string();
    o.client.publish(ctl.clone(), "x".into()).await?;
    o.refused(&ctl).await?;
    let assignments = format!(
        "$JS.API.STREAM.INFO.KV_{}",
        Buckets::new(test).assignments()
    );
    let _ = o.client.publish(assignments.clone(), "".into()).await;
    o.refused(&assignments).await?;
    // The other lattice's control plane may use all of its own JetStream, and still finds none
    // of the first lattice's buckets: they are in another account.
    let control = t.intruder("other-control", &other.control).await?;
    let js = async_nats::jetstream::new(control.client.clone());
    for bucket in [
        Buckets::new(test).assignments(),
        Buckets::new(test).manifests(),
    ] {
        assert!(
            js.get_key_value(&bucket).await.is_err(),
            "{bucket} is reachable from the other lattice"
        );
    }
    // Nor may it listen to the first lattice's events.
    let mut control = control;
    let events = Subject::all_events(test);
    let _sub = control.client.subscribe(events.clone()).await?;
    control.refused(&events).await?;
    still_serves(&t, "v2").await
}

/// `lattice nats authz` writes the files `deploy/hub-authz.conf`, `deploy/leaf-authz.conf` and
/// the clustered hub's `deploy/cluster-<n>.conf` include, and the server accepts every one of
/// those configurations as shipped.
#[tokio::test]
async fn the_command_writes_what_the_deploy_configurations_include() -> anyhow::Result<()> {
    use lattice_protocol::keys::{KeyPair, KeyRole};
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys)?;
    let mut args: Vec<String> = vec![
        "nats".into(),
        "authz".into(),
        "--lattice".into(),
        "default".into(),
        "--js-domain".into(),
        "hub".into(),
        "--leaf".into(),
        "edge".into(),
        "--hub-url".into(),
        "nats-leaf://nats-hub:7422".into(),
        "-o".into(),
        dir.path().join("authz").display().to_string(),
    ];
    for (flag, name, role) in [
        ("--control-key", "operator", KeyRole::Operator),
        ("--user-key", "admin", KeyRole::User),
        ("--host-key", "cloud-1", KeyRole::Host),
        ("--host-key", "edge-1", KeyRole::Host),
    ] {
        let path = keys.join(format!("{name}.nk"));
        std::fs::write(&path, KeyPair::generate(role).to_file_contents())?;
        args.extend([flag.to_string(), path.display().to_string()]);
    }
    let out = tokio::process::Command::new(lattice_bin())
        .args(&args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out).await??;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("lattice-default.conf"), "{stdout}");
    // A host key given as a file names that host's user.
    let account = std::fs::read_to_string(dir.path().join("authz/lattice-default.conf"))?;
    let edge = KeyPair::from_seed(&std::fs::read_to_string(keys.join("edge-1.nk"))?)?;
    assert!(account.contains(&lattice_protocol::permissions::user_nkey(
        &edge.public_key()
    )));
    // As shipped (without `sync_interval` where this nats-server has no such setting).
    let files = [
        "hub.conf",
        "hub-authz.conf",
        "leaf.conf",
        "leaf-authz.conf",
        "cluster.conf",
        "cluster-1.conf",
        "cluster-2.conf",
        "cluster-3.conf",
    ];
    for file in files {
        std::fs::write(
            dir.path().join(file),
            lattice_tests::cluster::deploy_config(file),
        )?;
    }
    let server = lattice_cli::up::find_nats_server().expect("nats-server is installed");
    for config in [
        "hub-authz.conf",
        "leaf-authz.conf",
        "cluster-1.conf",
        "cluster-2.conf",
        "cluster-3.conf",
    ] {
        let out = tokio::process::Command::new(&server)
            .arg("-c")
            .arg(dir.path().join(config))
            .arg("-t")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(WAIT, out).await??;
        assert!(
            out.status.success(),
            "{config}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// An edge host on a leaf node under the generated leaf configuration: it reaches the hub's
/// JetStream by domain across the link, serves, and the leaf itself refuses what its
/// permissions do not grant.
#[tokio::test]
async fn an_edge_host_on_a_leaf_node_serves_under_the_generated_authorization() -> anyhow::Result<()>
{
    let t = SecuredLattice::start_with(&[("test", &["host-a", "host-b"])], true).await?;
    let leaf = t.leaf.as_ref().expect("a leaf node");
    let _host = t.start_host("host-a").await?;
    let image = t.push(&hello_wasm(), "hello").await?;
    let manifest = hello_manifest("hello", "v1", &image.to_string(), "Hello", ANY_PORT);
    let addr = t.deploy_and_serve(&manifest, "hello").await?;
    assert_eq!(
        http_get(&addr, "/").await?,
        (200, "Hello from Lattice (host host-a)\n".to_string())
    );
    // Another host's key on the leaf: refused there, as on the hub.
    let mut b = lattice_tests::authz::Intruder::connect(
        &leaf.url,
        &t.key_path("host-b", t.keys().host("host-b"))?,
    )
    .await?;
    let ctl = Subject::ctl(&t.keys().lattice, CtlVerb::Deploy).to_string();
    b.client.publish(ctl.clone(), "x".into()).await?;
    b.refused(&ctl).await?;
    let assignment = format!(
        "$KV.{}.{}",
        Buckets::new(&t.keys().lattice).assignments(),
        host_id(&t, "host-a")
    );
    b.client
        .publish(assignment.clone(), "forged".into())
        .await?;
    b.refused(&assignment).await?;
    still_serves(&t, "v2").await
}
