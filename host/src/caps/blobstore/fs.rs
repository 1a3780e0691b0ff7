//! `blobstore-fs` as a provider: containers are directories directly under a link's root,
//! objects files directly in their container (`<root>/<container>/<object>`).
//!
//! A link's root is a relative path under the blob root base the host's operator configured
//! ([`crate::HostConfig::blob_root_base`]), never under the state directory. Every path is
//! opened beneath a directory handle with `cap-primitives` (wasmtime-wasi's own sandboxing),
//! one component at a time: a symbolic link planted inside a root (or on the way to it) that
//! leads out of it is refused, not followed, so no link reaches the host's keys or code.
//!
//! It runs in-process ([`super::super::providers`] registers it), so a call is a method call:
//! values pass as bytes, nothing is encoded. The file operations block, so each call runs on
//! tokio's blocking pool. Every refusal is [`ProviderError::Other`] with the text the guest
//! gets as its WIT `error`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use cap_primitives::fs::{self as cap, DirOptions, FollowSymlinks, OpenOptions};
use lattice_protocol::provider::catalog::root_problem;
use lattice_protocol::provider::{BlobCall, BlobRef, Call, LinkId, LinkInfo, ProviderError, Reply};
use lattice_provider_sdk::{Provider, unsupported};

use super::{MAX_VALUE_BYTES, NAME, ROOT_KEY};

/// The longest container or object name, in bytes (a file name's usual limit).
const MAX_NAME_BYTES: usize = 255;

/// The provider: the base directory roots live under, and each link's root (relative to it).
#[derive(Debug)]
pub struct FsBlobs {
    base: Arc<PathBuf>,
    roots: Mutex<HashMap<LinkId, String>>,
}

type BlobResult<T> = Result<T, String>;

impl FsBlobs {
    /// A provider with no links yet, whose links' roots lie under `base`.
    pub fn new(base: PathBuf) -> Self {
        Self {
            base: Arc::new(base),
            roots: Mutex::default(),
        }
    }

    fn root(&self, link: &LinkId) -> Result<String, ProviderError> {
        self.roots
            .lock()
            .expect("not poisoned")
            .get(link)
            .cloned()
            .ok_or_else(|| ProviderError::UnknownLink(link.to_string()))
    }
}

#[lattice_provider_sdk::async_trait]
impl Provider for FsBlobs {
    fn name(&self) -> &str {
        NAME
    }

    // A link without a valid root is refused by the host before any call (the workload fails
    // to start), so taking the link never fails; the root is checked again on every call.
    async fn link_put(&self, link: LinkInfo) -> Result<(), ProviderError> {
        if let Some(root) = link.target_config.get(ROOT_KEY) {
            self.roots
                .lock()
                .expect("not poisoned")
                .insert(link.id, root.clone());
        }
        Ok(())
    }

    async fn link_del(&self, link: &LinkId) {
        self.roots.lock().expect("not poisoned").remove(link);
    }

    async fn call(&self, link: &LinkId, call: Call) -> Result<Reply, ProviderError> {
        let Call::Blob(call) = call else {
            return Err(unsupported(&call));
        };
        let root = self.root(link)?;
        let base = self.base.clone();
        tokio::task::spawn_blocking(move || blob(&open_root(&base, &root)?, call))
            .await
            .map_err(|e| ProviderError::Other(format!("the blob call failed: {e}")))?
            .map_err(ProviderError::Other)
    }
}

/// The root directory `root` under `base`, created if needed, opened one component at a time
/// beneath `base` so that no symbolic link leads out of it.
fn open_root(base: &Path, root: &str) -> BlobResult<File> {
    if let Some(problem) = root_problem(root) {
        return Err(format!("the `{NAME}` link's {problem}"));
    }
    let what = || format!("opening the blob root `{root}`");
    std::fs::create_dir_all(base).map_err(|e| io_error(what(), &e))?;
    let mut dir = cap::open_ambient_dir(base, cap_primitives::ambient_authority())
        .map_err(|e| io_error(what(), &e))?;
    for component in Path::new(root).components() {
        let name = Path::new(component.as_os_str());
        match cap::create_dir(&dir, name, &DirOptions::new()) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(what(), &e)),
        }
        dir = cap::open_dir(&dir, name).map_err(|e| io_error(what(), &e))?;
    }
    Ok(dir)
}

/// Performs `call` under `root`.
fn blob(root: &File, call: BlobCall) -> BlobResult<Reply> {
    let unit = |r: BlobResult<()>| r.map(|()| Reply::Unit);
    match call {
        BlobCall::CreateContainer(name) => unit(create_container(root, &name)),
        BlobCall::GetContainer(name) => unit(existing_container(root, &name).map(drop)),
        BlobCall::DeleteContainer(name) => {
            let dir = existing_container(root, &name)?;
            unit(
                cap::remove_dir_all(root, &dir)
                    .map_err(|e| io_error(format!("deleting container `{name}`"), &e)),
            )
        }
        BlobCall::ContainerExists(name) => Ok(Reply::Bool(is_dir(root, &container_dir(&name)?))),
        BlobCall::ContainerInfo(name) => container_info(root, &name).map(Reply::Number),
        BlobCall::CopyObject { src, dest } => unit(copy_object(root, &src, &dest)),
        BlobCall::MoveObject { src, dest } => unit(move_object(root, &src, &dest)),
        BlobCall::GetData { object, start, end } => {
            let path = object_path(&object)?;
            let what = format!("object `{}/{}`", object.container, object.object);
            let data = read_range(root, &path, start, end, &what)?;
            Ok(Reply::Value(Some(serde_bytes::ByteBuf::from(data))))
        }
        BlobCall::CheckWrite(object) => {
            object_path(&object)?;
            if !is_dir(root, Path::new(&object.container)) {
                return Err(format!("container `{}` does not exist", object.container));
            }
            Ok(Reply::Unit)
        }
        BlobCall::WriteData { object, data } => unit(store(root, &object, &data)),
        BlobCall::ListObjects(name) => {
            let dir = container_dir(&name)?;
            let keys = object_names(root, &dir, &name)?;
            Ok(Reply::Keys { keys, cursor: None })
        }
        BlobCall::DeleteObject(object) => {
            container_dir(&object.container)?;
            unit(remove_object(root, &object))
        }
        BlobCall::DeleteObjects { container, objects } => {
            container_dir(&container)?;
            // Refuse a bad name before deleting anything.
            if let Some(e) = objects.iter().find_map(|n| check_name("object", n).err()) {
                return Err(e);
            }
            for name in objects {
                remove_object(root, &blob_ref(&container, name))?;
            }
            Ok(Reply::Unit)
        }
        BlobCall::HasObject(object) => Ok(Reply::Bool(is_file(root, &object_path(&object)?))),
        BlobCall::ObjectInfo(object) => object_info(root, &object),
        BlobCall::Clear(name) => {
            let dir = container_dir(&name)?;
            for object in object_names(root, &dir, &name)? {
                remove_object(root, &blob_ref(&name, object))?;
            }
            Ok(Reply::Unit)
        }
    }
}

fn blob_ref(container: &str, object: String) -> BlobRef {
    BlobRef {
        container: container.to_owned(),
        object,
    }
}

/// Why `name` cannot name a container or object (`kind`), if it cannot.
pub(super) fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_BYTES {
        "it is longer than 255 bytes"
    } else if name.starts_with('.') {
        "it starts with `.` (names starting with `.` are refused, so `.` and `..` cannot leave the store)"
    } else if name.contains(['/', '\\']) {
        "it contains `/` or `\\` (names are flat: one directory per container, one file per object)"
    } else if name.contains('\0') {
        "it contains a NUL character"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    Err(format!(
        "{kind} name `{}` is refused: {why}",
        name.escape_debug()
    ))
}

/// `<name>` under the root: the directory of container `name`.
fn container_dir(name: &str) -> Result<PathBuf, String> {
    check_name("container", name)?;
    Ok(PathBuf::from(name))
}

/// `<container>/<object>` under the root.
fn object_path(object: &BlobRef) -> Result<PathBuf, String> {
    let dir = container_dir(&object.container)?;
    check_name("object", &object.object)?;
    Ok(dir.join(&object.object))
}

fn create_container(root: &File, name: &str) -> BlobResult<()> {
    let dir = container_dir(name)?;
    match cap::create_dir(root, &dir, &DirOptions::new()) {
        Ok(()) => Ok(()),
        // Like wasmCloud's `blobstore-fs`: creating a container that exists opens it.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && is_dir(root, &dir) => Ok(()),
        Err(e) => Err(io_error(format!("creating container `{name}`"), &e)),
    }
}

/// The directory of container `name`, which must exist.
fn existing_container(root: &File, name: &str) -> BlobResult<PathBuf> {
    let dir = container_dir(name)?;
    if is_dir(root, &dir) {
        Ok(dir)
    } else {
        Err(format!("container `{name}` does not exist"))
    }
}

fn metadata(root: &File, path: &Path) -> std::io::Result<cap::Metadata> {
    cap::stat(root, path, FollowSymlinks::Yes)
}

fn is_dir(root: &File, path: &Path) -> bool {
    metadata(root, path).is_ok_and(|m| m.is_dir())
}

fn is_file(root: &File, path: &Path) -> bool {
    metadata(root, path).is_ok_and(|m| m.is_file())
}

/// When `meta`'s file was created (or last modified, where creation is not recorded), in
/// seconds since the Unix epoch.
fn created_at(meta: &cap::Metadata) -> u64 {
    meta.created()
        .or_else(|_| meta.modified())
        .ok()
        .and_then(|t| t.into_std().duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// `what failed: the I/O error`.
fn io_error(what: impl std::fmt::Display, e: &std::io::Error) -> String {
    format!("{what}: {e}")
}

/// A fresh temporary file name in a container (starting with `.`, so never an object).
fn temporary_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        ".tmp-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// When container `name` was created.
fn container_info(root: &File, name: &str) -> BlobResult<u64> {
    let dir = container_dir(name)?;
    match metadata(root, &dir) {
        Ok(meta) if meta.is_dir() => Ok(created_at(&meta)),
        Ok(_) => Err(format!("container `{name}` does not exist")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(format!("container `{name}` does not exist"))
        }
        Err(e) => Err(io_error(format!("reading container `{name}`"), &e)),
    }
}

/// When `object` was created, and its size.
fn object_info(root: &File, object: &BlobRef) -> BlobResult<Reply> {
    let (container, name) = (&object.container, &object.object);
    match metadata(root, &object_path(object)?) {
        Ok(meta) if meta.is_file() => Ok(Reply::ObjectInfo {
            created_at: created_at(&meta),
            size: meta.len(),
        }),
        Ok(_) => Err(format!("object `{container}/{name}` does not exist")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(format!("object `{container}/{name}` does not exist"))
        }
        Err(e) => Err(io_error(format!("reading object `{container}/{name}`"), &e)),
    }
}

/// Writes `data` to `object` whole: to a temporary file first, then renamed into place.
fn store(root: &File, object: &BlobRef, data: &[u8]) -> BlobResult<()> {
    let path = object_path(object)?;
    let (container, name) = (&object.container, &object.object);
    if data.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "object `{container}/{name}` is larger than {MAX_VALUE_BYTES} bytes"
        ));
    }
    if !is_dir(root, Path::new(container)) {
        return Err(format!("container `{container}` does not exist"));
    }
    let temporary = Path::new(container).join(temporary_name());
    let written = cap::open(
        root,
        &temporary,
        OpenOptions::new().write(true).create_new(true),
    )
    .and_then(|mut f| f.write_all(data))
    .and_then(|()| cap::rename(root, &temporary, root, &path));
    written.map_err(|e| {
        let _ = cap::remove_file(root, &temporary);
        io_error(format!("storing object `{container}/{name}`"), &e)
    })
}

/// The valid object names in `dir`, sorted.
fn object_names(root: &File, dir: &Path, container: &str) -> BlobResult<Vec<String>> {
    let what = || format!("listing container `{container}`");
    let entries = cap::read_dir(root, dir).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            format!("container `{container}` does not exist")
        } else {
            io_error(what(), &e)
        }
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(what(), &e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // A symbolic link is not an object, wherever it points.
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && check_name("object", &name).is_ok() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `object`; an absent object is no error.
fn remove_object(root: &File, object: &BlobRef) -> BlobResult<()> {
    match cap::remove_file(root, &object_path(object)?) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(
            format!("deleting object `{}/{}`", object.container, object.object),
            &e,
        )),
    }
}

/// The source file and destination path of a copy or move, checked.
fn object_pair(root: &File, src: &BlobRef, dest: &BlobRef) -> BlobResult<(PathBuf, PathBuf)> {
    existing_container(root, &src.container)?;
    let src_file = object_path(src)?;
    let dest_file = object_path(dest)?;
    existing_container(root, &dest.container)?;
    if !is_file(root, &src_file) {
        return Err(format!(
            "object `{}/{}` does not exist",
            src.container, src.object
        ));
    }
    Ok((src_file, dest_file))
}

fn copy_object(root: &File, src: &BlobRef, dest: &BlobRef) -> BlobResult<()> {
    let (src_file, dest_file) = object_pair(root, src, dest)?;
    let what = format!(
        "copying object `{}/{}` to `{}/{}`",
        src.container, src.object, dest.container, dest.object
    );
    // Through a temporary file, so the destination is replaced whole.
    let temporary = Path::new(&dest.container).join(temporary_name());
    let copied = cap::copy(root, &src_file, root, &temporary)
        .and_then(|_| cap::rename(root, &temporary, root, &dest_file));
    copied.map_err(|e| {
        let _ = cap::remove_file(root, &temporary);
        io_error(what, &e)
    })
}

fn move_object(root: &File, src: &BlobRef, dest: &BlobRef) -> BlobResult<()> {
    let (src_file, dest_file) = object_pair(root, src, dest)?;
    if src_file == dest_file {
        return Ok(());
    }
    let what = format!(
        "moving object `{}/{}` to `{}/{}`",
        src.container, src.object, dest.container, dest.object
    );
    match cap::rename(root, &src_file, root, &dest_file) {
        Ok(()) => Ok(()),
        // Containers on different filesystems: copy, then remove the source.
        Err(e) if e.kind() == ErrorKind::CrossesDevices => {
            copy_object(root, src, dest)?;
            remove_object(root, src).map_err(|e| format!("{what}: {e}"))
        }
        Err(e) => Err(io_error(what, &e)),
    }
}

/// Bytes `start..=end` of `path` under `root` (clamped to its length).
fn read_range(root: &File, path: &Path, start: u64, end: u64, what: &str) -> BlobResult<Vec<u8>> {
    if start > end {
        return Err(format!(
            "reading {what}: the range starts ({start}) after it ends ({end}); both ends are included"
        ));
    }
    let mut f = cap::open(root, path, OpenOptions::new().read(true)).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            format!("{what} does not exist")
        } else {
            io_error(format!("reading {what}"), &e)
        }
    })?;
    let meta = f
        .metadata()
        .map_err(|e| io_error(format!("reading {what}"), &e))?;
    if !meta.is_file() {
        return Err(format!("{what} does not exist"));
    }
    let len = meta.len();
    if start >= len {
        return Ok(Vec::new());
    }
    let wanted = end.min(len - 1) - start + 1;
    if wanted > MAX_VALUE_BYTES as u64 {
        return Err(format!(
            "reading {what}: {wanted} bytes asked for, more than the {MAX_VALUE_BYTES} one value may carry; read it in ranges"
        ));
    }
    f.seek(std::io::SeekFrom::Start(start))
        .map_err(|e| io_error(format!("reading {what}"), &e))?;
    let mut data = Vec::with_capacity(wanted as usize);
    f.take(wanted)
        .read_to_end(&mut data)
        .map_err(|e| io_error(format!("reading {what}"), &e))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_root() {
        for ok in ["photos", "cat.jpg", "a b", "ünïcode", "x..y", "-"] {
            assert_eq!(check_name("object", ok), Ok(()), "{ok}");
        }
        for (bad, needle) in [
            ("", "empty"),
            (".", "starts with `.`"),
            ("..", "starts with `.`"),
            (".hidden", "starts with `.`"),
            ("../etc", "starts with `.`"),
            ("a/b", "contains `/`"),
            ("a\\b", "contains `/`"),
            ("/etc", "contains `/`"),
            ("a\0b", "NUL"),
            ("a\nb", "control"),
        ] {
            let e = check_name("object", bad).expect_err(bad);
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert!(check_name("object", &"x".repeat(256)).is_err());
    }

    fn link() -> LinkId {
        LinkId {
            app: lattice_protocol::names::AppName::new("shop").expect("a name"),
            component: lattice_protocol::names::ComponentName::new("api").expect("a name"),
            name: "default".into(),
            package: "wasi:blobstore".into(),
            direction: Default::default(),
        }
    }

    fn link_info(root: &str) -> LinkInfo {
        LinkInfo {
            id: link(),
            interfaces: vec!["blobstore".into()],
            direction: Default::default(),
            source_config: Default::default(),
            target_config: [(ROOT_KEY.to_string(), root.to_string())].into(),
        }
    }

    fn object(container: &str, object: &str) -> BlobRef {
        BlobRef {
            container: container.into(),
            object: object.into(),
        }
    }

    #[tokio::test]
    async fn the_provider_serves_a_links_root_and_nothing_else() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let blobs = FsBlobs::new(dir.path().into());
        let id = link();
        let call = |c: BlobCall| blobs.call(&id, Call::Blob(c));
        assert!(matches!(
            call(BlobCall::ContainerExists("photos".into())).await,
            Err(ProviderError::UnknownLink(_))
        ));
        blobs
            .link_put(link_info("shop/files"))
            .await
            .expect("the link");
        assert_eq!(
            call(BlobCall::CreateContainer("photos".into())).await,
            Ok(Reply::Unit)
        );
        let data = serde_bytes::ByteBuf::from(b"hello blobs".to_vec());
        let write = BlobCall::WriteData {
            object: object("photos", "cat.txt"),
            data,
        };
        assert_eq!(call(write).await, Ok(Reply::Unit));
        assert!(dir.path().join("shop/files/photos/cat.txt").is_file());
        let read = BlobCall::GetData {
            object: object("photos", "cat.txt"),
            start: 6,
            end: 100,
        };
        assert_eq!(
            call(read).await,
            Ok(Reply::Value(Some(b"blobs".to_vec().into())))
        );
        assert_eq!(
            call(BlobCall::ListObjects("photos".into())).await,
            Ok(Reply::Keys {
                keys: vec!["cat.txt".into()],
                cursor: None
            })
        );
        let escape = BlobCall::HasObject(object("photos", "../photos"));
        assert!(
            matches!(call(escape).await, Err(ProviderError::Other(e)) if e.contains("starts with `.`"))
        );
        assert_eq!(
            call(BlobCall::Clear("photos".into())).await,
            Ok(Reply::Unit)
        );
        assert_eq!(
            call(BlobCall::HasObject(object("photos", "cat.txt"))).await,
            Ok(Reply::Bool(false))
        );
        blobs.link_del(&link()).await;
        assert!(matches!(
            call(BlobCall::ContainerExists("photos".into())).await,
            Err(ProviderError::UnknownLink(_))
        ));
    }

    /// A symbolic link planted in a container (or as the root itself) that leads out of the
    /// root is refused, not followed: the secret next to the base stays unread.
    #[tokio::test]
    async fn links_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let secret = dir.path().join("host.nk");
        std::fs::write(&secret, "SECRET").expect("the secret");
        let base = dir.path().join("blobs");
        let blobs = FsBlobs::new(base.clone());
        let id = link();
        let call = |c: BlobCall| blobs.call(&id, Call::Blob(c));
        blobs.link_put(link_info("shop")).await.expect("the link");
        assert_eq!(
            call(BlobCall::CreateContainer("photos".into())).await,
            Ok(Reply::Unit)
        );
        std::os::unix::fs::symlink(&secret, base.join("shop/photos/key")).expect("a symlink");
        std::os::unix::fs::symlink(dir.path(), base.join("shop/state")).expect("a symlink");
        let read = |container: &str, name: &str| BlobCall::GetData {
            object: object(container, name),
            start: 0,
            end: 100,
        };
        for (container, name) in [("photos", "key"), ("state", "host.nk")] {
            let reply = call(read(container, name)).await;
            assert!(
                matches!(&reply, Err(ProviderError::Other(e)) if e.contains(&format!("`{container}/{name}`"))),
                "{reply:?}"
            );
            assert_eq!(
                call(BlobCall::HasObject(object(container, name))).await,
                Ok(Reply::Bool(false))
            );
        }
        assert_eq!(
            call(BlobCall::ListObjects("photos".into())).await,
            Ok(Reply::Keys {
                keys: vec![],
                cursor: None
            })
        );
        let write = BlobCall::WriteData {
            object: object("state", "planted.cwasm"),
            data: b"code".to_vec().into(),
        };
        assert!(call(write).await.is_err());
        assert!(!dir.path().join("planted.cwasm").exists());
        // A root that is itself a link out of the base.
        std::os::unix::fs::symlink(dir.path(), base.join("elsewhere")).expect("a symlink");
        blobs
            .link_put(link_info("elsewhere"))
            .await
            .expect("the link");
        let reply = call(read("x", "host.nk")).await;
        assert!(
            matches!(&reply, Err(ProviderError::Other(e)) if e.contains("opening the blob root `elsewhere`")),
            "{reply:?}"
        );
        // Absolute roots and `..` are refused on every call too.
        for bad in ["/etc", "../host.nk", "a/../../b"] {
            blobs.link_put(link_info(bad)).await.expect("the link");
            let reply = call(BlobCall::ContainerExists("x".into())).await;
            assert!(
                matches!(&reply, Err(ProviderError::Other(e)) if e.contains("`root`")),
                "{bad}: {reply:?}"
            );
        }
        assert_eq!(std::fs::read_to_string(&secret).expect("kept"), "SECRET");
    }
}
