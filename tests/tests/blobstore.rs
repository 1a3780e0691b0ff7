//! `wasi:blobstore` end to end: a real nats-server, the control plane, a host, and the
//! `examples/blob-store` guest linked to the built-in `blobstore-fs`, whose objects must be
//! files under the link's root (relative to the host's blob root base) and nowhere else; and
//! the same guest, unchanged, linked to `blobstore-nats` (named by wasmCloud's image), whose
//! objects must be in the link's NATS object store and on no disk of the host.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use lattice_host::default_blob_root_base;
use lattice_tests::{TestLattice, blob_store_manifest, endpoint, http_get, http_request};
use tokio::io::AsyncReadExt as _;

/// Every path under `dir`, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("readable").flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(base).expect("under base");
            out.insert(relative.to_string_lossy().into_owned());
            if path.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| (*p).to_string()).collect()
}

#[tokio::test]
async fn objects_are_files_under_the_links_root() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_BLOB_STORE_WASM"), "blob-store")
        .await?;
    let root = default_blob_root_base(&host.state_dir).join("shop/files");
    t.ctl
        .deploy(&blob_store_manifest(
            "files",
            &image,
            true,
            Some("shop/files"),
        ))
        .await?;
    let addr = endpoint(&t.wait_deployed("files").await?)?;

    // Put: the container is created, each object is a file of its own.
    assert_eq!(
        http_request(&addr, "PUT", "/photos/cat.txt", "meow").await?,
        (200, "stored 4 bytes\n".into())
    );
    assert_eq!(
        http_request(&addr, "PUT", "/photos/dog.txt", "woof")
            .await?
            .0,
        200
    );
    assert_eq!(
        http_request(&addr, "PUT", "/photos/ant%20colony", "")
            .await?
            .0,
        200
    );
    assert_eq!(std::fs::read(root.join("photos/cat.txt"))?, b"meow");
    assert_eq!(std::fs::read(root.join("photos/dog.txt"))?, b"woof");
    assert_eq!(std::fs::read(root.join("photos/ant colony"))?, b"");

    // Get, and replace.
    assert_eq!(
        http_get(&addr, "/photos/cat.txt").await?,
        (200, "meow".into())
    );
    assert_eq!(
        http_request(&addr, "PUT", "/photos/cat.txt", "purr")
            .await?
            .0,
        200
    );
    assert_eq!(
        http_get(&addr, "/photos/cat.txt").await?,
        (200, "purr".into())
    );
    assert_eq!(std::fs::read(root.join("photos/cat.txt"))?, b"purr");

    // List: three names, read two at a time.
    assert_eq!(
        http_get(&addr, "/photos").await?,
        (200, "ant colony\ncat.txt\ndog.txt\n".into())
    );

    // Absent objects and containers.
    assert_eq!(http_get(&addr, "/photos/bird.txt").await?.0, 404);
    assert_eq!(http_get(&addr, "/videos").await?.0, 404);
    assert_eq!(http_get(&addr, "/videos/a").await?.0, 404);

    // Delete: the file goes; deleting again is no error.
    assert_eq!(
        http_request(&addr, "DELETE", "/photos/cat.txt", "")
            .await?
            .0,
        200
    );
    assert_eq!(http_get(&addr, "/photos/cat.txt").await?.0, 404);
    assert!(!root.join("photos/cat.txt").exists());
    assert_eq!(
        http_request(&addr, "DELETE", "/photos/cat.txt", "")
            .await?
            .0,
        200
    );
    assert_eq!(
        http_get(&addr, "/photos").await?,
        (200, "ant colony\ndog.txt\n".into())
    );

    // A second container, then deleting it whole.
    assert_eq!(http_request(&addr, "PUT", "/tmp/x", "1").await?.0, 200);
    assert_eq!(
        tree(&root),
        set(&[
            "photos",
            "photos/ant colony",
            "photos/dog.txt",
            "tmp",
            "tmp/x"
        ])
    );
    assert_eq!(http_request(&addr, "DELETE", "/tmp", "").await?.0, 200);
    assert_eq!(
        tree(&root),
        set(&["photos", "photos/ant colony", "photos/dog.txt"])
    );
    Ok(())
}

#[tokio::test]
async fn names_that_would_leave_the_root_are_refused() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_BLOB_STORE_WASM"), "blob-store")
        .await?;
    let base = default_blob_root_base(&host.state_dir);
    t.ctl
        .deploy(&blob_store_manifest("escape", &image, true, Some("blobs")))
        .await?;
    let addr = endpoint(&t.wait_deployed("escape").await?)?;
    assert_eq!(
        http_request(&addr, "PUT", "/box/inside", "ok").await?.0,
        200
    );

    for path in [
        "/box/%2e%2e",
        "/box/%2E%2E",
        "/%2e%2e/escaped",
        "/box/..%2fescaped",
        "/box/%2e%2e%2f%2e%2e%2fescaped",
        "/box/%2fetc%2fpasswd",
        "/box/.hidden",
        "/%2e/escaped",
        "/box/a%00b",
        "/../escaped",
        "/box/../../escaped",
    ] {
        let (code, body) = http_request(&addr, "PUT", path, "gotcha").await?;
        assert_ne!(code, 200, "{path}: {body}");
        if code == 500 {
            assert!(body.contains("is refused"), "{path}: {body}");
        }
        let (code, body) = http_get(&addr, path).await?;
        assert_ne!(code, 200, "{path}: {body}");
    }
    // The blob store itself refused them (not only the HTTP layer).
    let (code, body) = http_request(&addr, "PUT", "/box/%2e%2e", "gotcha").await?;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("object name `..` is refused"), "{body}");
    let (code, body) = http_request(&addr, "PUT", "/%2e%2e/escaped", "gotcha").await?;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("container name `..` is refused"), "{body}");

    // Nothing was written anywhere but the one object, inside the root.
    assert_eq!(
        tree(&base),
        set(&["blobs", "blobs/box", "blobs/box/inside"])
    );
    Ok(())
}

#[tokio::test]
async fn without_a_root_blobs_go_to_the_apps_directory_under_the_blob_root_base()
-> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_BLOB_STORE_WASM"), "blob-store")
        .await?;
    t.ctl
        .deploy(&blob_store_manifest("defaults", &image, true, None))
        .await?;
    let addr = endpoint(&t.wait_deployed("defaults").await?)?;
    assert_eq!(
        http_request(&addr, "PUT", "/docs/readme", "hi").await?.0,
        200
    );
    assert_eq!(
        std::fs::read(default_blob_root_base(&host.state_dir).join("defaults/docs/readme"))?,
        b"hi"
    );
    // Not in the state directory, where the host keeps its key and compiled code.
    assert!(!host.state_dir.join("blobs").exists());
    Ok(())
}

#[tokio::test]
async fn an_unlinked_blobstore_fails_at_once_with_a_wit_error() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_BLOB_STORE_WASM"), "blob-store")
        .await?;
    t.ctl
        .deploy(&blob_store_manifest("unlinked", &image, false, None))
        .await?;
    let addr = endpoint(&t.wait_deployed("unlinked").await?)?;
    let started = std::time::Instant::now();
    let (code, body) = http_request(&addr, "PUT", "/box/thing", "x").await?;
    assert_eq!(code, 500);
    assert!(
        body.contains("wasi:blobstore is not linked") && body.contains("builtin:blobstore-fs"),
        "{body}"
    );
    let (code, body) = http_get(&addr, "/box").await?;
    assert_eq!(code, 500, "{body}");
    // "At once": far below any timeout a hang would run into.
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}

/// The names and contents of everything in object store `bucket`.
async fn objects(t: &TestLattice, bucket: &str) -> anyhow::Result<Vec<(String, String)>> {
    let js = async_nats::jetstream::new(t.client.clone());
    let store = js.get_object_store(bucket).await?;
    let mut list = store.list().await?;
    let mut out = Vec::new();
    while let Some(info) = list.next().await {
        let info = info?;
        let mut body = String::new();
        store
            .get(&info.name)
            .await?
            .read_to_string(&mut body)
            .await?;
        out.push((info.name, body));
    }
    out.sort();
    Ok(out)
}

#[tokio::test]
async fn a_blobstore_nats_link_keeps_objects_in_the_lattices_object_store() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_BLOB_STORE_WASM"), "blob-store")
        .await?;
    let fs = blob_store_manifest("archive", &image, true, None);
    let manifest = fs.replace(
        "image: builtin:blobstore-fs",
        "image: ghcr.io/wasmcloud/blobstore-nats:0.2.0",
    );
    assert_ne!(manifest, fs, "the blob store manifest's capability moved");
    t.ctl.deploy(&manifest).await?;
    let addr = endpoint(&t.wait_deployed("archive").await?)?;

    for (path, body) in [("/photos/cat.txt", "meow"), ("/photos/dog.txt", "woof")] {
        assert_eq!(
            http_request(&addr, "PUT", path, body).await?.0,
            200,
            "{path}"
        );
    }
    assert_eq!(
        http_get(&addr, "/photos/cat.txt").await?,
        (200, "meow".into())
    );
    assert_eq!(
        http_get(&addr, "/photos").await?,
        (200, "cat.txt\ndog.txt\n".into())
    );
    assert_eq!(http_get(&addr, "/photos/bird.txt").await?.0, 404);
    assert_eq!(http_get(&addr, "/videos").await?.0, 404);
    let names = |o: Vec<(String, String)>| o.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    // In the link's store (the app's name, as no `bucket` is given), by container.
    assert_eq!(
        objects(&t, "archive").await?,
        [
            ("c/photos".to_string(), String::new()),
            ("o/photos/cat.txt".to_string(), "meow".to_string()),
            ("o/photos/dog.txt".to_string(), "woof".to_string()),
        ]
    );
    // Not on the host's disk.
    let base = default_blob_root_base(&host.state_dir);
    assert!(
        !base.join("archive").exists(),
        "nothing under {}",
        base.display()
    );

    assert_eq!(
        http_request(&addr, "DELETE", "/photos/cat.txt", "")
            .await?
            .0,
        200
    );
    assert_eq!(http_request(&addr, "PUT", "/tmp/x", "1").await?.0, 200);
    assert_eq!(
        names(objects(&t, "archive").await?),
        ["c/photos", "c/tmp", "o/photos/dog.txt", "o/tmp/x"]
    );
    assert_eq!(http_request(&addr, "DELETE", "/tmp", "").await?.0, 200);
    assert_eq!(
        names(objects(&t, "archive").await?),
        ["c/photos", "o/photos/dog.txt"]
    );
    // Names the file store refuses are refused here too.
    let (code, body) = http_request(&addr, "PUT", "/photos/..", "x").await?;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("starts with `.`"), "{body}");
    Ok(())
}
