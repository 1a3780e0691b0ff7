//! Workloads cannot reach the host's secrets or code, and a full state disk fails only what
//! needed the space. End to end: a real nats-server, the control plane, an in-process host,
//! the repository's own `examples/blob-store` (signed by the lattice's issuer) as the attacker,
//! and `hello` as the neighbour on the same host that must keep answering throughout.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use lattice_host::default_blob_root_base;
use lattice_protocol::digest::Digest;
use lattice_protocol::messages::{AppStatus, WorkloadState};
use lattice_protocol::names::AppName;
use lattice_tests::tmpfs::Tmpfs;
use lattice_tests::{
    TestLattice, blob_store_manifest, endpoint, hello_manifest, hello_wasm, http_get, http_request,
};

const ANY_PORT: &str = "127.0.0.1:0";

/// Deploys `hello` as app `neighbour` and returns its address once it answers.
async fn deploy_neighbour(t: &TestLattice) -> anyhow::Result<String> {
    Ok(deploy_neighbour_image(t).await?.0)
}

/// [`deploy_neighbour`], also giving the image's digest.
async fn deploy_neighbour_image(t: &TestLattice) -> anyhow::Result<(String, Digest)> {
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = hello_manifest("neighbour", "v1", &image.to_string(), "Neighbour", ANY_PORT);
    t.ctl.deploy(&manifest).await?;
    let addr = endpoint(&t.wait_deployed("neighbour").await?)?;
    assert_neighbour_answers(&addr).await?;
    Ok((addr, image))
}

async fn assert_neighbour_answers(addr: &str) -> anyhow::Result<()> {
    let (code, body) = http_get(addr, "/").await?;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("Neighbour from Lattice"), "{body}");
    Ok(())
}

async fn push_blob_store(t: &TestLattice) -> anyhow::Result<Digest> {
    t.push_example(env!("LATTICE_BLOB_STORE_WASM"), "blob-store")
        .await
}

/// The secret seed in the host key file `<state_dir>/host.nk` (its first line).
fn host_seed(state_dir: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(state_dir.join("host.nk"))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The attack of issue 14: a `blobstore-fs` root at the host's state directory (absolute, or
/// reached with `..` from the blob root base) is refused at deploy, saying why; the allowed
/// app cannot read the host key either; the neighbour keeps answering.
#[tokio::test]
async fn a_blob_root_at_the_state_directory_is_refused_and_the_keys_stay_unread()
-> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let host = t.add_host("edge-1").await?;
    let neighbour = deploy_neighbour(&t).await?;
    let image = push_blob_store(&t).await?;
    let seed = host_seed(&host.state_dir)?;
    assert!(seed.starts_with('S'), "a seed: {seed:.1}…");

    let state = host.state_dir.display().to_string();
    let keys = host.state_dir.join("host.nk").display().to_string();
    for (root, needle) in [
        (state.as_str(), "is an absolute path"),
        (keys.as_str(), "is an absolute path"),
        ("/", "is an absolute path"),
        ("../edge-1", "contains `..`"),
        ("thief/../../edge-1", "contains `..`"),
    ] {
        let refused = t
            .ctl
            .deploy(&blob_store_manifest("thief", &image, true, Some(root)))
            .await;
        let e = format!(
            "{:#}",
            refused
                .err()
                .ok_or_else(|| { anyhow::anyhow!("a blob root of `{root}` was deployed") })?
        );
        assert!(e.contains("`root`") && e.contains(needle), "{root}: {e}");
        assert!(
            e.contains("--blob-root-base") || needle.contains(".."),
            "{e}"
        );
    }

    // The same component with a root under the base: it serves, and cannot climb out.
    t.ctl
        .deploy(&blob_store_manifest("thief", &image, true, Some("thief")))
        .await?;
    let addr = endpoint(&t.wait_deployed("thief").await?)?;
    assert_eq!(http_request(&addr, "PUT", "/box/x", "1").await?.0, 200);
    for path in [
        "/%2e%2e/host.nk",
        "/box/%2e%2e%2f%2e%2e%2fhost.nk",
        "/%2e%2e",
    ] {
        let (code, body) = http_get(&addr, path).await?;
        assert_ne!(code, 200, "{path}: {body}");
        assert!(!body.contains(&seed), "{path} gave the host's seed");
    }
    let base = default_blob_root_base(&host.state_dir);
    assert!(base.join("thief/box/x").is_file());
    assert!(!base.starts_with(&host.state_dir) && !host.state_dir.starts_with(&base));
    assert_neighbour_answers(&neighbour).await?;

    // An operator's base that contains the state directory: a second host refuses to start.
    let mut config = t.host_config("edge-2");
    config.blob_root_base = t.host_config("edge-2").state_dir.join("..");
    let refused = t.start_host(config).await?.finished().await;
    let e = format!(
        "{:#}",
        refused.err().ok_or_else(|| {
            anyhow::anyhow!("a host started with its state directory under its blob root base")
        })?
    );
    assert!(
        e.contains("contains the state directory") && e.contains("--blob-root-base"),
        "{e}"
    );
    assert_neighbour_answers(&neighbour).await?;
    Ok(())
}

/// The host checks a root again, whatever the control plane let through: an assignment signed
/// by the operator key (as a control plane without the catalogue's check would write it) that
/// points blob-store's root at the state directory fails that workload with `link_error`,
/// saying why; the version already running keeps serving, and so does the neighbour.
#[tokio::test]
async fn the_host_refuses_a_blob_root_at_the_state_directory_itself() -> anyhow::Result<()> {
    use futures::StreamExt as _;
    use lattice_protocol::assignment::SignedAssignment;
    use lattice_protocol::envelope;
    use lattice_protocol::messages::{FailureReason, Heartbeat};
    use lattice_protocol::subject::{Buckets, Subject};

    let t = TestLattice::start().await?;
    let host = t.add_host("edge-1").await?;
    let neighbour = deploy_neighbour(&t).await?;
    let image = push_blob_store(&t).await?;
    t.ctl
        .deploy(&blob_store_manifest("thief", &image, true, None))
        .await?;
    let addr = endpoint(&t.wait_deployed("thief").await?)?;
    assert_eq!(http_request(&addr, "PUT", "/box/x", "1").await?.0, 200);

    let kv = async_nats::jetstream::new(t.client.clone())
        .get_key_value(Buckets::new(&t.lattice).assignments())
        .await?;
    let hosts = t.ctl.hosts().await?;
    let id = hosts
        .first()
        .map(|h| h.id.clone())
        .ok_or_else(|| anyhow::anyhow!("no host"))?;
    let entry = kv
        .get(id.as_str())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no assignment for {id}"))?;
    let mut assignment = envelope::decode::<SignedAssignment>(&entry)?.decode_unverified()?;
    let state = host.state_dir.display().to_string();
    for w in assignment
        .workloads
        .iter_mut()
        .filter(|w| w.app.as_str() == "thief")
    {
        for link in w.links.iter_mut().filter(|l| l.package == "blobstore") {
            link.target_config.insert("root".into(), state.clone());
        }
    }
    assignment.revision += 1;
    let signed = SignedAssignment::sign(&assignment, &t.operator);
    let mut beats = t
        .client
        .subscribe(Subject::all_heartbeats(&t.lattice))
        .await?;
    kv.put(id.as_str(), envelope::encode(&signed).into())
        .await?;

    let failed =
        tokio::time::timeout(lattice_tests::WAIT, async {
            while let Some(msg) = beats.next().await {
                let hb: Heartbeat =
                    lattice_protocol::signed::open_heartbeat_on(&msg.subject, &msg.payload)?;
                if let Some(w) = hb.workloads.into_iter().find(|w| {
                    w.app.as_str() == "thief" && w.reason == Some(FailureReason::LinkError)
                }) {
                    return Ok(w);
                }
            }
            anyhow::bail!("heartbeats ended")
        })
        .await??;
    assert!(
        failed.message.contains("`root`") && failed.message.contains("is an absolute path"),
        "{}",
        failed.message
    );
    // The running version keeps its own root; the seed is out of reach.
    let seed = host_seed(&host.state_dir)?;
    let (code, body) = http_get(&addr, "/box/x").await?;
    assert_eq!((code, body.as_str()), (200, "1"));
    let (code, body) = http_get(&addr, "/%2e%2e/host.nk").await?;
    assert!(code != 200 && !body.contains(&seed), "{code} {body}");
    assert_neighbour_answers(&neighbour).await?;
    Ok(())
}

/// A symbolic link planted inside a blob root (a container's object, or a whole container)
/// that leads to the state directory is refused, not followed: no read, no listing, no write
/// through it.
#[tokio::test]
async fn a_symlink_out_of_a_blob_root_is_refused_not_followed() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let host = t.add_host("edge-1").await?;
    let neighbour = deploy_neighbour(&t).await?;
    let image = push_blob_store(&t).await?;
    t.ctl
        .deploy(&blob_store_manifest("thief", &image, true, None))
        .await?;
    let addr = endpoint(&t.wait_deployed("thief").await?)?;
    assert_eq!(
        http_request(&addr, "PUT", "/box/inside", "ok").await?,
        (200, "stored 2 bytes\n".into())
    );
    let root = default_blob_root_base(&host.state_dir).join("thief");
    assert!(root.join("box/inside").is_file());
    let seed = host_seed(&host.state_dir)?;
    std::os::unix::fs::symlink(host.state_dir.join("host.nk"), root.join("box/key"))?;
    std::os::unix::fs::symlink(&host.state_dir, root.join("state"))?;

    // blob-store asks `has-object` first: the link is no object, so 404.
    let (code, body) = http_get(&addr, "/box/key").await?;
    assert_eq!((code, body.as_str()), (404, "no such object\n"));
    // The link is not an object: the listing shows only the real one.
    assert_eq!(http_get(&addr, "/box").await?, (200, "inside\n".into()));

    let (code, body) = http_get(&addr, "/state/host.nk").await?;
    assert_ne!(code, 200, "{body}");
    assert!(
        !body.contains(&seed),
        "the host's seed was read through a link"
    );
    let (code, body) = http_get(&addr, "/state").await?;
    assert_ne!(code, 200, "{body}");
    assert!(!body.contains("host.nk"), "{body}");
    let (code, body) = http_request(&addr, "PUT", "/state/planted", "code").await?;
    assert_ne!(code, 200, "{body}");
    assert!(!host.state_dir.join("planted").exists());

    // The app's own objects still work, and so does the neighbour.
    assert_eq!(http_get(&addr, "/box/inside").await?, (200, "ok".into()));
    assert_neighbour_answers(&neighbour).await?;
    Ok(())
}

/// The compiled file of `image` in the host's code cache.
fn compiled_file(state_dir: &Path, image: &Digest) -> anyhow::Result<PathBuf> {
    let dir = state_dir.join("compiled");
    std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(image.hex()))
        })
        .ok_or_else(|| anyhow::anyhow!("no compiled file of {image} in {}", dir.display()))
}

/// Waits until app `name` serves again (after a restart, at a new address), answering `check`.
async fn serving_again(
    t: &TestLattice,
    name: &str,
    path: &str,
) -> anyhow::Result<(String, u16, String)> {
    let app = AppName::new(name)?;
    t.wait_until(&format!("{name} to serve again"), || async {
        let status: AppStatus = t.ctl.status(&app).await?;
        let addr = endpoint(&status)?;
        let (code, body) = http_request(&addr, "PUT", path, "again").await?;
        Ok(Some((addr, code, body)))
    })
    .await
}

/// Code the host did not write is never mapped: the blob-store's cache file is replaced by the
/// neighbour's compiled code (valid native code for this engine, as an attacker with write
/// access to the cache would plant it). After a restart the host refuses the file, compiles
/// blob-store again, serves blob-store (not the planted hello) and replaces the file.
#[tokio::test]
async fn a_planted_compiled_file_is_compiled_again_not_loaded() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let host = t.add_host("edge-1").await?;
    let (_, hello_image) = deploy_neighbour_image(&t).await?;
    let image = push_blob_store(&t).await?;
    t.ctl
        .deploy(&blob_store_manifest("store", &image, true, None))
        .await?;
    let addr = endpoint(&t.wait_deployed("store").await?)?;
    assert_eq!(http_request(&addr, "PUT", "/box/a", "x").await?.0, 200);

    let state_dir = host.state_dir.clone();
    let hello_file = std::fs::read(compiled_file(&state_dir, &hello_image)?)?;
    let target = compiled_file(&state_dir, &image)?;
    host.stop().await?;
    // The raw wasmtime code of hello, without this host's seal: what blob-store's own link
    // could write into the cache before blob roots were confined.
    let planted = wasmtime_code(&hello_file)?;
    std::fs::write(&target, &planted)?;

    let _host = t.start_host(t.host_config("edge-1")).await?;
    let (_, code, body) = serving_again(&t, "store", "/box/b").await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "stored 5 bytes\n"),
        "blob-store serves"
    );
    let new_addr = endpoint(&t.ctl.status(&AppName::new("store")?).await?)?;
    assert_eq!(http_get(&new_addr, "/box/a").await?, (200, "x".into()));
    let replaced = std::fs::read(&target)?;
    assert_ne!(replaced, planted, "the planted file was kept");
    assert!(
        replaced.starts_with(b"LATCODE1"),
        "the host sealed the new file"
    );

    let neighbour = endpoint(&t.wait_deployed("neighbour").await?)?;
    t.wait_for("the neighbour to answer again", || async {
        Ok(http_get(&neighbour, "/").await.is_ok())
    })
    .await?;
    assert_neighbour_answers(&neighbour).await?;
    Ok(())
}

/// The wasmtime code inside a sealed cache file: the part after the seal's magic and tag, which
/// starts with an ELF header.
fn wasmtime_code(sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    let code = sealed
        .get(8 + 32..)
        .ok_or_else(|| anyhow::anyhow!("a sealed file is longer than its seal"))?;
    anyhow::ensure!(
        code.starts_with(b"\x7fELF"),
        "wasmtime code is an ELF image"
    );
    Ok(code.to_vec())
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let block = vec![0u8; 64 << 10];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => return Err(e.into()),
        }
    }
    file.sync_all()?;
    Ok(())
}

/// The last refusal the only host reported in its heartbeat.
async fn last_refusal(t: &TestLattice) -> anyhow::Result<Option<String>> {
    use futures::StreamExt as _;
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

/// A full state disk fails the operation that needed the space, saying so, and the host keeps
/// serving what it runs. The host's state directory is a 64 MiB tmpfs, filled up once the
/// neighbour runs. A new app then arrives: saving the assignment, or keeping the new artifact,
/// fails for want of space, and the host reports it (the heartbeat's refusal, or the
/// workload's failure, naming the full disk) while the neighbour keeps answering. Once space
/// is freed, the host's retry deploys the new app.
///
/// **Needs root** (it mounts a tmpfs): run as anyone else, it fails saying so.
#[tokio::test]
async fn a_full_state_disk_fails_the_new_assignment_and_the_host_keeps_serving()
-> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let state_dir = t.host_config("edge-1").state_dir;
    // Dropped after the host (declared before it): unmounted once nothing runs from it.
    let disk = Tmpfs::mount(&state_dir, "64m")?;
    let host = t.add_host("edge-1").await?;
    let neighbour = deploy_neighbour(&t).await?;
    let image = push_blob_store(&t).await?;
    let filler = disk.dir().join("filler");
    fill(&filler)?;

    t.ctl
        .deploy(&blob_store_manifest("late", &image, true, None))
        .await?;
    let app = AppName::new("late")?;
    let report = t
        .wait_until("the host to report the full disk", || async {
            if let Some(refusal) = last_refusal(&t).await?
                && refusal.contains("could not be saved")
            {
                return Ok(Some(refusal));
            }
            let status = t.ctl.status(&app).await?;
            Ok(status
                .components
                .iter()
                .find(|c| c.state == WorkloadState::Failed)
                .map(|c| c.message.clone()))
        })
        .await?;
    println!("reported: {report}");
    assert!(
        report.contains("the state disk is full") || report.contains("the disk is full"),
        "{report}"
    );
    assert!(report.contains("free space"), "{report}");
    // Still serving, and still beating.
    assert_neighbour_answers(&neighbour).await?;
    last_refusal(&t).await?;
    let (code, _) = http_get(&neighbour, "/health").await?;
    assert_eq!(code, 200);

    // Room again: the retry deploys the app.
    std::fs::remove_file(&filler)?;
    let addr = endpoint(&t.wait_deployed("late").await?)?;
    assert_eq!(http_request(&addr, "PUT", "/box/a", "x").await?.0, 200);
    assert_neighbour_answers(&neighbour).await?;
    host.stop().await?;
    Ok(())
}
