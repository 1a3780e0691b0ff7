//! `wasi:blobstore` (0.2.0-draft: types, container, blobstore) on the host's filesystem: the
//! built-in capability `blobstore-fs`.
//!
//! A workload's link to `blobstore-fs` names a directory, its target config `root` (by default
//! `<host state dir>/blobs/<app>`, see [`with_default_root`]). Each container is a directory
//! directly under the root, each object a file directly in its container:
//! `<root>/<container>/<object>`.
//!
//! Nothing escapes the root: container and object names are single, plain path components. A
//! name is refused when it is empty, longer than 255 bytes, starts with `.` (so `.` and `..`,
//! and the store's own temporary files), or contains `/`, `\`, a NUL or another control
//! character. Objects are flat: a name with `/` is refused rather than mapped to
//! subdirectories.
//!
//! Values pass through memory: an `outgoing-value` is a memory pipe the guest writes through
//! its `wasi:io` output stream, stored (to a temporary file, then renamed into place, so readers
//! never see half an object) when the guest calls `finish` after `write-data` named the object;
//! `get-data` reads the requested bytes into an `incoming-value`. Either is at most
//! [`MAX_VALUE_BYTES`].
//!
//! Every error is the WIT `error` string, saying what failed and why. A workload without a
//! link to `blobstore-fs` gets such an error from every call at once.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use lattice_protocol::assignment::{LinkTarget, WorkloadLink};
use lattice_protocol::names::AppName;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tracing::instrument;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::WorkloadCtx;
use super::bindings::blobstore::wasi::blobstore::{blobstore, container, types};

/// The built-in capability's name in links.
pub const NAME: &str = lattice_protocol::provider::catalog::BLOBSTORE_FS.name;

/// The link's target config key naming the root directory.
pub const ROOT_KEY: &str = "root";

/// The largest value one `outgoing-value` or `get-data` carries (they pass through memory).
pub const MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;

/// The longest container or object name, in bytes (a file name's usual limit).
const MAX_NAME_BYTES: usize = 255;

/// An open container: its directory.
#[derive(Debug)]
pub struct Container {
    name: String,
    dir: PathBuf,
}

/// The names of a container's objects, read from a snapshot taken by `list-objects`.
#[derive(Debug)]
pub struct ObjectNames {
    names: Vec<String>,
    next: usize,
}

/// A value being written: the pipe behind the guest's output stream, and the object
/// `write-data` named.
#[derive(Debug)]
pub struct OutgoingValue {
    pipe: MemoryOutputPipe,
    stream_given: bool,
    target: Option<(PathBuf, String)>,
}

/// A value read by `get-data`.
#[derive(Debug)]
pub struct IncomingValue {
    data: Bytes,
}

type BlobResult<T> = wasmtime::Result<Result<T, String>>;

/// One store's view for `wasi:blobstore`: its resource table (containers, values and their
/// streams live there) and its workload, whose blob root was worked out when it started.
#[derive(Debug)]
pub struct BlobstoreView<'a> {
    /// The store's resources.
    pub table: &'a mut ResourceTable,
    /// The workload.
    pub ctx: &'a WorkloadCtx,
}

struct Blobstore;

impl HasData for Blobstore {
    type Data<'a> = BlobstoreView<'a>;
}

/// Adds `wasi:blobstore` (types, container, blobstore) to `linker`, served through `view`;
/// the linker must already have `wasi:io` (wasmtime-wasi's).
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> BlobstoreView<'_>,
) -> anyhow::Result<()> {
    types::add_to_linker::<T, Blobstore>(linker, view)?;
    container::add_to_linker::<T, Blobstore>(linker, view)?;
    blobstore::add_to_linker::<T, Blobstore>(linker, view)?;
    Ok(())
}

/// `links` with the default root, `<state_dir>/blobs/<app>`, on each `blobstore-fs` link that
/// names none.
pub fn with_default_root(
    mut links: Vec<WorkloadLink>,
    state_dir: &Path,
    app: &AppName,
) -> Vec<WorkloadLink> {
    for link in links.iter_mut().filter(|l| blobstore_link(l)) {
        if !link.target_config.contains_key(ROOT_KEY) {
            let root = state_dir.join("blobs").join(app.as_str());
            link.target_config
                .insert(ROOT_KEY.to_string(), root.to_string_lossy().into_owned());
        }
    }
    links
}

/// Whether `link` gives `wasi:blobstore` from `blobstore-fs`.
fn blobstore_link(link: &WorkloadLink) -> bool {
    link.namespace == "wasi"
        && link.package == "blobstore"
        && matches!(&link.target, LinkTarget::Builtin(b) if b == NAME)
}

/// The root directory of `workload`'s `blobstore-fs` link (the one named `default`, else the
/// first) among `links`, or why there is none: its grant, worked out once when it starts.
pub(crate) fn root(links: &[WorkloadLink], workload: &str) -> Result<PathBuf, String> {
    let links: Vec<&WorkloadLink> = links.iter().filter(|l| blobstore_link(l)).collect();
    let Some(link) = links
        .iter()
        .find(|l| l.name == "default")
        .or_else(|| links.first())
    else {
        return Err(format!(
            "wasi:blobstore is not linked for `{workload}`: add a link trait from it to a blob-store capability (e.g. `builtin:{NAME}`)",
        ));
    };
    let Some(root) = link.target_config.get(ROOT_KEY) else {
        return Err(format!(
            "the `{NAME}` link `{}` names no `{ROOT_KEY}` directory, and this host has no default",
            link.name
        ));
    };
    let root = PathBuf::from(root);
    if !root.is_absolute() {
        return Err(format!(
            "the `{NAME}` link's `{ROOT_KEY}` `{}` is not an absolute path",
            root.display()
        ));
    }
    Ok(root)
}

/// Why `name` cannot name a container or object (`kind`), if it cannot.
fn check_name(kind: &str, name: &str) -> Result<(), String> {
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
fn container_dir(ctx: &WorkloadCtx, name: &str) -> Result<PathBuf, String> {
    let root = ctx.blob_root.clone()?;
    check_name("container", name)?;
    Ok(root.join(name))
}

/// The directory of container `name`, which must exist.
async fn existing_container(ctx: &WorkloadCtx, name: &str) -> Result<PathBuf, String> {
    let dir = container_dir(ctx, name)?;
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

/// Writes `data` to `<dir>/<object>` whole: to a temporary file first, then renamed into place.
async fn store(dir: &Path, container: &str, object: &str, data: &[u8]) -> Result<(), String> {
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
async fn object_pair(
    ctx: &WorkloadCtx,
    src: &types::ObjectId,
    dest: &types::ObjectId,
) -> Result<(PathBuf, PathBuf), String> {
    let src_dir = existing_container(ctx, &src.container).await?;
    check_name("object", &src.object)?;
    check_name("object", &dest.object)?;
    let dest_dir = existing_container(ctx, &dest.container).await?;
    let src_file = src_dir.join(&src.object);
    if !is_file(&src_file).await {
        return Err(format!(
            "object `{}/{}` does not exist",
            src.container, src.object
        ));
    }
    Ok((src_file, dest_dir))
}

/// Bytes `start..=end` of `file` (clamped to its length).
async fn read_range(file: &Path, start: u64, end: u64, what: &str) -> Result<Bytes, String> {
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
        return Ok(Bytes::new());
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
    Ok(data.into())
}

impl BlobstoreView<'_> {
    /// The name and directory of an open container.
    fn container(&self, c: &Resource<Container>) -> wasmtime::Result<(String, PathBuf)> {
        let c = self.table.get(c)?;
        Ok((c.name.clone(), c.dir.clone()))
    }
}

impl blobstore::Host for BlobstoreView<'_> {
    #[instrument(
        name = "lattice_host.blobstore.create_container",
        level = "debug",
        skip_all
    )]
    async fn create_container(&mut self, name: String) -> BlobResult<Resource<Container>> {
        // Like wasmCloud's `blobstore-fs`: creating a container that exists opens it.
        let dir = match container_dir(self.ctx, &name) {
            Ok(dir) => dir,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            return Ok(Err(io_error(format!("creating container `{name}`"), &e)));
        }
        Ok(Ok(self.table.push(Container { name, dir })?))
    }

    #[instrument(
        name = "lattice_host.blobstore.get_container",
        level = "debug",
        skip_all
    )]
    async fn get_container(&mut self, name: String) -> BlobResult<Resource<Container>> {
        match existing_container(self.ctx, &name).await {
            Ok(dir) => Ok(Ok(self.table.push(Container { name, dir })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    #[instrument(
        name = "lattice_host.blobstore.delete_container",
        level = "debug",
        skip_all
    )]
    async fn delete_container(&mut self, name: String) -> BlobResult<()> {
        let dir = match existing_container(self.ctx, &name).await {
            Ok(dir) => dir,
            Err(e) => return Ok(Err(e)),
        };
        Ok(tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(|e| io_error(format!("deleting container `{name}`"), &e)))
    }

    #[instrument(
        name = "lattice_host.blobstore.container_exists",
        level = "debug",
        skip_all
    )]
    async fn container_exists(&mut self, name: String) -> BlobResult<bool> {
        Ok(match container_dir(self.ctx, &name) {
            Ok(dir) => Ok(is_dir(&dir).await),
            Err(e) => Err(e),
        })
    }

    #[instrument(name = "lattice_host.blobstore.copy_object", level = "debug", skip_all)]
    async fn copy_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> BlobResult<()> {
        let (src_file, dest_dir) = match object_pair(self.ctx, &src, &dest).await {
            Ok(pair) => pair,
            Err(e) => return Ok(Err(e)),
        };
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
        Ok(copied.map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            io_error(what, &e)
        }))
    }

    #[instrument(name = "lattice_host.blobstore.move_object", level = "debug", skip_all)]
    async fn move_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> BlobResult<()> {
        let (src_file, dest_dir) = match object_pair(self.ctx, &src, &dest).await {
            Ok(pair) => pair,
            Err(e) => return Ok(Err(e)),
        };
        let dest_file = dest_dir.join(&dest.object);
        if src_file == dest_file {
            return Ok(Ok(()));
        }
        let what = format!(
            "moving object `{}/{}` to `{}/{}`",
            src.container, src.object, dest.container, dest.object
        );
        Ok(match tokio::fs::rename(&src_file, &dest_file).await {
            Ok(()) => Ok(()),
            // Containers on different filesystems: copy, then remove the source.
            Err(e) if e.kind() == ErrorKind::CrossesDevices => {
                match self.copy_object(src.clone(), dest).await? {
                    Ok(()) => remove_object(
                        src_file.parent().unwrap_or(Path::new("/")),
                        &src.container,
                        &src.object,
                    )
                    .await
                    .map_err(|e| format!("{what}: {e}")),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(io_error(what, &e)),
        })
    }
}

impl container::Host for BlobstoreView<'_> {}

impl container::HostContainer for BlobstoreView<'_> {
    #[instrument(name = "lattice_host.blobstore.name", level = "debug", skip_all)]
    async fn name(&mut self, c: Resource<Container>) -> BlobResult<String> {
        Ok(Ok(self.table.get(&c)?.name.clone()))
    }

    #[instrument(name = "lattice_host.blobstore.info", level = "debug", skip_all)]
    async fn info(&mut self, c: Resource<Container>) -> BlobResult<types::ContainerMetadata> {
        let (name, dir) = self.container(&c)?;
        Ok(match tokio::fs::metadata(&dir).await {
            Ok(meta) if meta.is_dir() => Ok(types::ContainerMetadata {
                created_at: created_at(&meta),
                name,
            }),
            Ok(_) => Err(format!("container `{name}` does not exist")),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(format!("container `{name}` does not exist"))
            }
            Err(e) => Err(io_error(format!("reading container `{name}`"), &e)),
        })
    }

    #[instrument(name = "lattice_host.blobstore.get_data", level = "debug", skip_all)]
    async fn get_data(
        &mut self,
        c: Resource<Container>,
        name: String,
        start: u64,
        end: u64,
    ) -> BlobResult<Resource<IncomingValue>> {
        let (container, dir) = self.container(&c)?;
        if let Err(e) = check_name("object", &name) {
            return Ok(Err(e));
        }
        let what = format!("object `{container}/{name}`");
        match read_range(&dir.join(&name), start, end, &what).await {
            Ok(data) => Ok(Ok(self.table.push(IncomingValue { data })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    #[instrument(name = "lattice_host.blobstore.write_data", level = "debug", skip_all)]
    async fn write_data(
        &mut self,
        c: Resource<Container>,
        name: String,
        data: Resource<OutgoingValue>,
    ) -> BlobResult<()> {
        let (container, dir) = self.container(&c)?;
        if let Err(e) = check_name("object", &name) {
            return Ok(Err(e));
        }
        if !is_dir(&dir).await {
            return Ok(Err(format!("container `{container}` does not exist")));
        }
        self.table.get_mut(&data)?.target = Some((dir, name));
        Ok(Ok(()))
    }

    #[instrument(
        name = "lattice_host.blobstore.list_objects",
        level = "debug",
        skip_all
    )]
    async fn list_objects(&mut self, c: Resource<Container>) -> BlobResult<Resource<ObjectNames>> {
        let (container, dir) = self.container(&c)?;
        match object_names(&dir, &container).await {
            Ok(names) => Ok(Ok(self.table.push(ObjectNames { names, next: 0 })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    #[instrument(
        name = "lattice_host.blobstore.delete_object",
        level = "debug",
        skip_all
    )]
    async fn delete_object(&mut self, c: Resource<Container>, name: String) -> BlobResult<()> {
        let (container, dir) = self.container(&c)?;
        Ok(remove_object(&dir, &container, &name).await)
    }

    #[instrument(
        name = "lattice_host.blobstore.delete_objects",
        level = "debug",
        skip_all
    )]
    async fn delete_objects(
        &mut self,
        c: Resource<Container>,
        names: Vec<String>,
    ) -> BlobResult<()> {
        let (container, dir) = self.container(&c)?;
        // Refuse a bad name before deleting anything.
        if let Some(e) = names.iter().find_map(|n| check_name("object", n).err()) {
            return Ok(Err(e));
        }
        for name in &names {
            if let Err(e) = remove_object(&dir, &container, name).await {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    #[instrument(name = "lattice_host.blobstore.has_object", level = "debug", skip_all)]
    async fn has_object(&mut self, c: Resource<Container>, name: String) -> BlobResult<bool> {
        let (_, dir) = self.container(&c)?;
        Ok(match check_name("object", &name) {
            Ok(()) => Ok(is_file(&dir.join(&name)).await),
            Err(e) => Err(e),
        })
    }

    #[instrument(name = "lattice_host.blobstore.object_info", level = "debug", skip_all)]
    async fn object_info(
        &mut self,
        c: Resource<Container>,
        name: String,
    ) -> BlobResult<types::ObjectMetadata> {
        let (container, dir) = self.container(&c)?;
        if let Err(e) = check_name("object", &name) {
            return Ok(Err(e));
        }
        Ok(match tokio::fs::metadata(dir.join(&name)).await {
            Ok(meta) if meta.is_file() => Ok(types::ObjectMetadata {
                created_at: created_at(&meta),
                size: meta.len(),
                name,
                container,
            }),
            Ok(_) => Err(format!("object `{container}/{name}` does not exist")),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(format!("object `{container}/{name}` does not exist"))
            }
            Err(e) => Err(io_error(format!("reading object `{container}/{name}`"), &e)),
        })
    }

    #[instrument(name = "lattice_host.blobstore.clear", level = "debug", skip_all)]
    async fn clear(&mut self, c: Resource<Container>) -> BlobResult<()> {
        let (container, dir) = self.container(&c)?;
        let names = match object_names(&dir, &container).await {
            Ok(names) => names,
            Err(e) => return Ok(Err(e)),
        };
        for name in &names {
            if let Err(e) = remove_object(&dir, &container, name).await {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    async fn drop(&mut self, c: Resource<Container>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

impl container::HostStreamObjectNames for BlobstoreView<'_> {
    async fn read_stream_object_names(
        &mut self,
        names: Resource<ObjectNames>,
        len: u64,
    ) -> BlobResult<(Vec<String>, bool)> {
        let s = self.table.get_mut(&names)?;
        let n = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(s.names.len() - s.next);
        let page = s.names[s.next..s.next + n].to_vec();
        s.next += n;
        Ok(Ok((page, s.next >= s.names.len())))
    }

    async fn skip_stream_object_names(
        &mut self,
        names: Resource<ObjectNames>,
        num: u64,
    ) -> BlobResult<(u64, bool)> {
        let s = self.table.get_mut(&names)?;
        let n = usize::try_from(num)
            .unwrap_or(usize::MAX)
            .min(s.names.len() - s.next);
        s.next += n;
        Ok(Ok((n as u64, s.next >= s.names.len())))
    }

    async fn drop(&mut self, names: Resource<ObjectNames>) -> wasmtime::Result<()> {
        self.table.delete(names)?;
        Ok(())
    }
}

impl types::Host for BlobstoreView<'_> {}

impl types::HostOutgoingValue for BlobstoreView<'_> {
    async fn new_outgoing_value(&mut self) -> wasmtime::Result<Resource<OutgoingValue>> {
        Ok(self.table.push(OutgoingValue {
            pipe: MemoryOutputPipe::new(MAX_VALUE_BYTES),
            stream_given: false,
            target: None,
        })?)
    }

    async fn outgoing_value_write_body(
        &mut self,
        value: Resource<OutgoingValue>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        let v = self.table.get_mut(&value)?;
        if v.stream_given {
            return Ok(Err(()));
        }
        v.stream_given = true;
        let stream: DynOutputStream = Box::new(v.pipe.clone());
        Ok(Ok(self.table.push(stream)?))
    }

    async fn finish(&mut self, value: Resource<OutgoingValue>) -> BlobResult<()> {
        let v = self.table.delete(value)?;
        let Some((dir, object)) = v.target else {
            return Ok(Err(
                "the value was finished before `write-data` named its object, so it was not stored"
                    .to_string(),
            ));
        };
        let container = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(store(&dir, &container, &object, &v.pipe.contents()).await)
    }

    async fn drop(&mut self, value: Resource<OutgoingValue>) -> wasmtime::Result<()> {
        // Not finished: not stored (the value may be incomplete).
        self.table.delete(value)?;
        Ok(())
    }
}

impl types::HostIncomingValue for BlobstoreView<'_> {
    async fn incoming_value_consume_sync(
        &mut self,
        value: Resource<IncomingValue>,
    ) -> BlobResult<Vec<u8>> {
        Ok(Ok(self.table.delete(value)?.data.to_vec()))
    }

    async fn incoming_value_consume_async(
        &mut self,
        value: Resource<IncomingValue>,
    ) -> BlobResult<Resource<DynInputStream>> {
        let data = self.table.delete(value)?.data;
        let stream: DynInputStream = Box::new(MemoryInputPipe::new(data));
        Ok(Ok(self.table.push(stream)?))
    }

    async fn size(&mut self, value: Resource<IncomingValue>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&value)?.data.len() as u64)
    }

    async fn drop(&mut self, value: Resource<IncomingValue>) -> wasmtime::Result<()> {
        self.table.delete(value)?;
        Ok(())
    }
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

    #[test]
    fn the_default_root_is_per_app() {
        let link = |target: &str, root: Option<&str>| WorkloadLink {
            namespace: "wasi".into(),
            package: "blobstore".into(),
            interfaces: vec!["blobstore".into()],
            name: "default".into(),
            target: LinkTarget::Builtin(target.into()),
            source_config: Default::default(),
            target_config: root
                .map(|r| [(ROOT_KEY.to_string(), r.to_string())].into())
                .unwrap_or_default(),
            queued: None,
        };
        let app = AppName::new("shop").expect("a valid name");
        let links = with_default_root(
            vec![
                link(NAME, None),
                link(NAME, Some("/srv/blobs")),
                link("keyvalue-nats", None),
            ],
            Path::new("/var/lib/lattice"),
            &app,
        );
        assert_eq!(
            links[0].target_config.get(ROOT_KEY).map(String::as_str),
            Some("/var/lib/lattice/blobs/shop")
        );
        assert_eq!(
            links[1].target_config.get(ROOT_KEY).map(String::as_str),
            Some("/srv/blobs")
        );
        assert!(links[2].target_config.is_empty());
    }
}
