//! `blobstore-fs` as a provider: containers are directories directly under a link's root,
//! objects files directly in their container (`<root>/<container>/<object>`).
//!
//! It runs in-process ([`super::super::providers`] registers it), so a call is a method call:
//! values pass as bytes, nothing is encoded. Every refusal is [`ProviderError::Other`] with the
//! text the guest gets as its WIT `error`.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use lattice_protocol::provider::{BlobCall, BlobRef, Call, LinkId, LinkInfo, ProviderError, Reply};
use lattice_provider_sdk::{Provider, unsupported};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use super::{MAX_VALUE_BYTES, NAME, ROOT_KEY};

/// The longest container or object name, in bytes (a file name's usual limit).
const MAX_NAME_BYTES: usize = 255;

/// The provider: each link's root directory.
#[derive(Debug, Default)]
pub struct FsBlobs {
    roots: Mutex<HashMap<LinkId, PathBuf>>,
}

type BlobResult<T> = Result<T, String>;

impl FsBlobs {
    /// A provider with no links yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn root(&self, link: &LinkId) -> Result<PathBuf, ProviderError> {
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

    // A link without an absolute root is refused by the host before any call (its grant), so
    // taking the link never fails: the workload starts and its calls say what is wrong.
    async fn link_put(&self, link: LinkInfo) -> Result<(), ProviderError> {
        if let Some(root) = link.target_config.get(ROOT_KEY) {
            self.roots
                .lock()
                .expect("not poisoned")
                .insert(link.id, PathBuf::from(root));
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
        blob(&root, call).await.map_err(ProviderError::Other)
    }
}

/// Performs `call` under `root`.
async fn blob(root: &Path, call: BlobCall) -> BlobResult<Reply> {
    let unit = |r: BlobResult<()>| r.map(|()| Reply::Unit);
    match call {
        BlobCall::CreateContainer(name) => {
            // Like wasmCloud's `blobstore-fs`: creating a container that exists opens it.
            let dir = container_dir(root, &name)?;
            unit(
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|e| io_error(format!("creating container `{name}`"), &e)),
            )
        }
        BlobCall::GetContainer(name) => unit(existing_container(root, &name).await.map(drop)),
        BlobCall::DeleteContainer(name) => {
            let dir = existing_container(root, &name).await?;
            unit(
                tokio::fs::remove_dir_all(&dir)
                    .await
                    .map_err(|e| io_error(format!("deleting container `{name}`"), &e)),
            )
        }
        BlobCall::ContainerExists(name) => {
            Ok(Reply::Bool(is_dir(&container_dir(root, &name)?).await))
        }
        BlobCall::ContainerInfo(name) => container_info(root, &name).await.map(Reply::Number),
        BlobCall::CopyObject { src, dest } => unit(copy_object(root, &src, &dest).await),
        BlobCall::MoveObject { src, dest } => unit(move_object(root, &src, &dest).await),
        BlobCall::GetData { object, start, end } => {
            let dir = container_dir(root, &object.container)?;
            check_name("object", &object.object)?;
            let what = format!("object `{}/{}`", object.container, object.object);
            let data = read_range(&dir.join(&object.object), start, end, &what).await?;
            Ok(Reply::Value(Some(serde_bytes::ByteBuf::from(data))))
        }
        BlobCall::CheckWrite(object) => {
            let dir = container_dir(root, &object.container)?;
            check_name("object", &object.object)?;
            if !is_dir(&dir).await {
                return Err(format!("container `{}` does not exist", object.container));
            }
            Ok(Reply::Unit)
        }
        BlobCall::WriteData { object, data } => {
            let dir = container_dir(root, &object.container)?;
            check_name("object", &object.object)?;
            unit(store(&dir, &object.container, &object.object, &data).await)
        }
        BlobCall::ListObjects(name) => {
            let dir = container_dir(root, &name)?;
            let keys = object_names(&dir, &name).await?;
            Ok(Reply::Keys { keys, cursor: None })
        }
        BlobCall::DeleteObject(object) => {
            let dir = container_dir(root, &object.container)?;
            unit(remove_object(&dir, &object.container, &object.object).await)
        }
        BlobCall::DeleteObjects { container, objects } => {
            let dir = container_dir(root, &container)?;
            // Refuse a bad name before deleting anything.
            if let Some(e) = objects.iter().find_map(|n| check_name("object", n).err()) {
                return Err(e);
            }
            for name in &objects {
                remove_object(&dir, &container, name).await?;
            }
            Ok(Reply::Unit)
        }
        BlobCall::HasObject(object) => {
            let dir = container_dir(root, &object.container)?;
            check_name("object", &object.object)?;
            Ok(Reply::Bool(is_file(&dir.join(&object.object)).await))
        }
        BlobCall::ObjectInfo(object) => object_info(root, &object).await,
        BlobCall::Clear(name) => {
            let dir = container_dir(root, &name)?;
            for object in &object_names(&dir, &name).await? {
                remove_object(&dir, &name, object).await?;
            }
            Ok(Reply::Unit)
        }
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

/// `<root>/<name>`, the directory of container `name`.
fn container_dir(root: &Path, name: &str) -> Result<PathBuf, String> {
    check_name("container", name)?;
    Ok(root.join(name))
}

/// The directory of container `name`, which must exist.
async fn existing_container(root: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = container_dir(root, name)?;
    if is_dir(&dir).await {
        Ok(dir)
    } else {
        Err(format!("container `{name}` does not exist"))
    }
}

async fn is_dir(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

/// When `meta`'s file was created (or last modified, where creation is not recorded), in
/// seconds since the Unix epoch.
fn created_at(meta: &std::fs::Metadata) -> u64 {
    meta.created()
        .or_else(|_| meta.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
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
async fn container_info(root: &Path, name: &str) -> BlobResult<u64> {
    let dir = container_dir(root, name)?;
    match tokio::fs::metadata(&dir).await {
        Ok(meta) if meta.is_dir() => Ok(created_at(&meta)),
        Ok(_) => Err(format!("container `{name}` does not exist")),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(format!("container `{name}` does not exist"))
        }
        Err(e) => Err(io_error(format!("reading container `{name}`"), &e)),
    }
}

/// When `object` was created, and its size.
async fn object_info(root: &Path, object: &BlobRef) -> BlobResult<Reply> {
    let (container, name) = (&object.container, &object.object);
    let dir = container_dir(root, container)?;
    check_name("object", name)?;
    match tokio::fs::metadata(dir.join(name)).await {
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

/// Writes `data` to `<dir>/<object>` whole: to a temporary file first, then renamed into place.
async fn store(dir: &Path, container: &str, object: &str, data: &[u8]) -> Result<(), String> {
    if data.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "object `{container}/{object}` is larger than {MAX_VALUE_BYTES} bytes"
        ));
    }
    if !is_dir(dir).await {
        return Err(format!("container `{container}` does not exist"));
    }
    let temporary = dir.join(temporary_name());
    let what = || format!("storing object `{container}/{object}`");
    if let Err(e) = tokio::fs::write(&temporary, data).await {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(io_error(what(), &e));
    }
    if let Err(e) = tokio::fs::rename(&temporary, dir.join(object)).await {
        let _ = tokio::fs::remove_file(&temporary).await;
        return Err(io_error(what(), &e));
    }
    Ok(())
}

/// The valid object names in `dir`, sorted.
async fn object_names(dir: &Path, container: &str) -> Result<Vec<String>, String> {
    let what = || format!("listing container `{container}`");
    let mut entries = tokio::fs::read_dir(dir).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            format!("container `{container}` does not exist")
        } else {
            io_error(what(), &e)
        }
    })?;
    let mut names = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|e| io_error(what(), &e))?
    {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let is_file = entry.file_type().await.is_ok_and(|t| t.is_file());
        if is_file && check_name("object", &name).is_ok() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `<dir>/<object>`; an absent object is no error.
async fn remove_object(dir: &Path, container: &str, object: &str) -> Result<(), String> {
    check_name("object", object)?;
    match tokio::fs::remove_file(dir.join(object)).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(
            format!("deleting object `{container}/{object}`"),
            &e,
        )),
    }
}

/// The source file and destination directory of a copy or move, checked.
async fn object_pair(root: &Path, src: &BlobRef, dest: &BlobRef) -> BlobResult<(PathBuf, PathBuf)> {
    let src_dir = existing_container(root, &src.container).await?;
    check_name("object", &src.object)?;
    check_name("object", &dest.object)?;
    let dest_dir = existing_container(root, &dest.container).await?;
    let src_file = src_dir.join(&src.object);
    if !is_file(&src_file).await {
        return Err(format!(
            "object `{}/{}` does not exist",
            src.container, src.object
        ));
    }
    Ok((src_file, dest_dir))
}

async fn copy_object(root: &Path, src: &BlobRef, dest: &BlobRef) -> BlobResult<()> {
    let (src_file, dest_dir) = object_pair(root, src, dest).await?;
    let what = format!(
        "copying object `{}/{}` to `{}/{}`",
        src.container, src.object, dest.container, dest.object
    );
    // Through a temporary file, so the destination is replaced whole.
    let temporary = dest_dir.join(temporary_name());
    let copied = match tokio::fs::copy(&src_file, &temporary).await {
        Ok(_) => tokio::fs::rename(&temporary, dest_dir.join(&dest.object)).await,
        Err(e) => Err(e),
    };
    copied.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        io_error(what, &e)
    })
}

async fn move_object(root: &Path, src: &BlobRef, dest: &BlobRef) -> BlobResult<()> {
    let (src_file, dest_dir) = object_pair(root, src, dest).await?;
    let dest_file = dest_dir.join(&dest.object);
    if src_file == dest_file {
        return Ok(());
    }
    let what = format!(
        "moving object `{}/{}` to `{}/{}`",
        src.container, src.object, dest.container, dest.object
    );
    match tokio::fs::rename(&src_file, &dest_file).await {
        Ok(()) => Ok(()),
        // Containers on different filesystems: copy, then remove the source.
        Err(e) if e.kind() == ErrorKind::CrossesDevices => {
            copy_object(root, src, dest).await?;
            remove_object(
                src_file.parent().unwrap_or(Path::new("/")),
                &src.container,
                &src.object,
            )
            .await
            .map_err(|e| format!("{what}: {e}"))
        }
        Err(e) => Err(io_error(what, &e)),
    }
}

/// Bytes `start..=end` of `file` (clamped to its length).
async fn read_range(file: &Path, start: u64, end: u64, what: &str) -> Result<Vec<u8>, String> {
    if start > end {
        return Err(format!(
            "reading {what}: the range starts ({start}) after it ends ({end}); both ends are included"
        ));
    }
    let mut f = tokio::fs::File::open(file).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            format!("{what} does not exist")
        } else {
            io_error(format!("reading {what}"), &e)
        }
    })?;
    let len = f
        .metadata()
        .await
        .map_err(|e| io_error(format!("reading {what}"), &e))?
        .len();
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
        .await
        .map_err(|e| io_error(format!("reading {what}"), &e))?;
    let mut data = Vec::with_capacity(wanted as usize);
    f.take(wanted)
        .read_to_end(&mut data)
        .await
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

    fn object(container: &str, object: &str) -> BlobRef {
        BlobRef {
            container: container.into(),
            object: object.into(),
        }
    }

    #[tokio::test]
    async fn the_provider_serves_a_links_root_and_nothing_else() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let blobs = FsBlobs::new();
        let id = link();
        let call = |c: BlobCall| blobs.call(&id, Call::Blob(c));
        assert!(matches!(
            call(BlobCall::ContainerExists("photos".into())).await,
            Err(ProviderError::UnknownLink(_))
        ));
        let root = dir.path().to_string_lossy().into_owned();
        blobs
            .link_put(LinkInfo {
                id: link(),
                interfaces: vec!["blobstore".into()],
                direction: Default::default(),
                source_config: Default::default(),
                target_config: [(ROOT_KEY.to_string(), root)].into(),
            })
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
        assert!(dir.path().join("photos/cat.txt").is_file());
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
}
