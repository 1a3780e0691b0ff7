//! `wasi:blobstore` (0.2.0-draft: types, container, blobstore) on the host's filesystem: the
//! built-in capability `blobstore-fs`.
//!
//! A workload's link to `blobstore-fs` names a directory, its target config `root`: a relative
//! path under the blob root base the host's operator configured (`--blob-root-base`, never the
//! state directory), by default the app's name (see [`with_default_root`]). Each container is a
//! directory directly under the root, each object a file directly in its container:
//! `<base>/<root>/<container>/<object>`. A root that is absolute or contains `..` is refused at
//! deploy (the catalogue's check) and again here: the workload fails to start, saying why.
//!
//! Nothing escapes the root: paths are opened beneath it without following symbolic links out
//! of it ([`fs`]), and container and object names are single, plain path components. A
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
//!
//! Laid out as a unit and a provider: this module holds the guest's resources (open containers,
//! values being written or read), its [`BlobGrant`] (the link and root worked out once when the
//! workload starts), a [`BlobstoreView`] and [`add_to_linker`]; [`fs`] is `blobstore-fs` itself,
//! a [`lattice_provider_sdk::Provider`] run in-process, which every call goes to as a
//! [`BlobCall`] (a method call: values pass as bytes, nothing is encoded).

pub mod fs;
pub mod nats;

use std::path::PathBuf;

use bytes::Bytes;
use lattice_protocol::assignment::{LinkTarget, WorkloadLink};
use lattice_protocol::names::{AppName, ComponentName};
use lattice_protocol::provider::catalog::root_problem;
use lattice_protocol::provider::{BlobCall, BlobRef, Call, LinkId, Reply};
use tracing::instrument;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::WorkloadCtx;
use super::bindings::blobstore::wasi::blobstore::{blobstore, container, types};
use super::bus::LinkNames;
use super::providers::link_id;

/// The built-in capability's name in links.
pub const NAME: &str = lattice_protocol::provider::catalog::BLOBSTORE_FS.name;

/// The NATS object-store capability's name in links.
pub const NATS_NAME: &str = lattice_protocol::provider::catalog::BLOBSTORE_NATS.name;

/// The link's target config key naming the root directory.
pub const ROOT_KEY: &str = lattice_protocol::provider::catalog::ROOT_KEY;

/// The largest value one `outgoing-value` or `get-data` carries (they pass through memory).
pub const MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;

/// An open container: its name (the provider knows where it is).
#[derive(Debug)]
pub struct Container {
    name: String,
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
    target: Option<BlobRef>,
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
    /// The links the guest chose by name.
    pub names: &'a LinkNames,
}

impl<'a> BlobstoreView<'a> {
    /// Where this store's calls go: the workload, and the link the guest chose, if any.
    fn blobs(&self) -> Blobs<'a> {
        Blobs {
            ctx: self.ctx,
            chosen: self.names.chosen("wasi", "blobstore", "blobstore"),
        }
    }
}

/// Where a store's blob calls go (what they borrow, rather than the view: its resource table
/// is not `Sync`).
#[derive(Debug, Clone, Copy)]
struct Blobs<'a> {
    ctx: &'a WorkloadCtx,
    /// The link name the guest chose for `wasi:blobstore`, if any.
    chosen: Option<&'a str>,
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

/// `links` with the default root, the app's name, on each `blobstore-fs` link that names none,
/// or why a link's root is refused (absolute, or with `..`): roots are relative to the host's
/// blob root base.
pub fn with_default_root(
    mut links: Vec<WorkloadLink>,
    app: &AppName,
) -> Result<Vec<WorkloadLink>, String> {
    for link in links.iter_mut().filter(|l| blobstore_link(l) == Some(NAME)) {
        let root = link
            .target_config
            .entry(ROOT_KEY.to_string())
            .or_insert_with(|| app.as_str().to_string());
        if let Some(problem) = root_problem(root) {
            return Err(format!("the `{NAME}` link `{}`'s {problem}", link.name));
        }
    }
    Ok(links)
}

/// Which built-in blob store `link` gives `wasi:blobstore` from, if it does: `blobstore-fs` or
/// `blobstore-nats`.
fn blobstore_link(link: &WorkloadLink) -> Option<&'static str> {
    if link.namespace != "wasi" || link.package != "blobstore" {
        return None;
    }
    match &link.target {
        LinkTarget::Builtin(b) => [NAME, NATS_NAME].into_iter().find(|n| b == n),
        _ => None,
    }
}

/// What a workload may use of its blob store: its link (the one named `default`, else the
/// first), and for `blobstore-fs` its checked root, as the provider knows it.
#[derive(Debug, Clone)]
pub struct BlobGrant {
    /// The provider: `blobstore-fs` or `blobstore-nats`.
    pub provider: &'static str,
    /// A `blobstore-fs` link's root directory, relative to the host's blob root base.
    pub root: Option<PathBuf>,
    link: LinkId,
}

impl BlobGrant {
    /// The grant of `app/component` (named `workload` in errors), whose links are `links`, or
    /// why it has none; through the link named `chosen` when the guest chose one.
    pub fn new(
        app: &AppName,
        component: &ComponentName,
        links: &[WorkloadLink],
        workload: &str,
        chosen: Option<&str>,
    ) -> Result<Self, String> {
        let link = blob_link(links, workload, chosen)?;
        let provider = blobstore_link(link).unwrap_or(NAME);
        let root = match provider {
            NAME => Some(fs_root(link)?),
            _ => None,
        };
        Ok(Self {
            provider,
            root,
            link: link_id(app, component, link),
        })
    }
}

/// The blob-store link of `workload` among `links`: the one named `chosen`, else the one named
/// `default`, else the first.
fn blob_link<'a>(
    links: &'a [WorkloadLink],
    workload: &str,
    chosen: Option<&str>,
) -> Result<&'a WorkloadLink, String> {
    let mut links = links.iter().filter(|l| blobstore_link(l).is_some());
    let found = match chosen {
        Some(name) => links.find(|l| l.name == name).ok_or_else(|| {
            format!(
                "no blob-store link named `{name}` (chosen with wasmcloud:bus/lattice.set-link-name) for `{workload}`: name one of its blob-store links"
            )
        })?,
        None => {
            let links: Vec<&WorkloadLink> = links.collect();
            let first = links.iter().find(|l| l.name == "default").or(links.first());
            *first.ok_or_else(|| {
                format!(
                    "wasi:blobstore is not linked for `{workload}`: add a link trait from it to a blob-store capability (e.g. `builtin:{NAME}` or `builtin:{NATS_NAME}`)",
                )
            })?
        }
    };
    Ok(found)
}

/// A `blobstore-fs` link's root directory, checked.
fn fs_root(link: &WorkloadLink) -> Result<PathBuf, String> {
    let Some(root) = link.target_config.get(ROOT_KEY) else {
        return Err(format!(
            "the `{NAME}` link `{}` names no `{ROOT_KEY}` directory, and this host has no default",
            link.name
        ));
    };
    if let Some(problem) = root_problem(root) {
        return Err(format!("the `{NAME}` link `{}`'s {problem}", link.name));
    }
    Ok(PathBuf::from(root))
}

/// The bytes of a value the provider read (`Reply::Value`).
fn value(reply: Reply) -> Result<Bytes, String> {
    match reply {
        Reply::Value(v) => Ok(v.map(|b| Bytes::from(b.into_vec())).unwrap_or_default()),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(reply: &Reply) -> String {
    format!("the blob-store provider answered {reply:?}")
}

/// Sends `call` to the workload's blob-store provider, on its link (the chosen one, when the
/// guest chose one, checked as at start). (A free function: the view's resource table is not
/// `Sync`, so the call borrows only the workload.)
async fn call(at: Blobs<'_>, call: BlobCall) -> Result<Reply, String> {
    let Blobs { ctx, chosen } = at;
    let named;
    let grant = match chosen {
        None => ctx.blob.as_ref().map_err(Clone::clone)?,
        Some(name) => {
            named = BlobGrant::new(
                &ctx.app,
                &ctx.component,
                ctx.links(),
                &ctx.name(),
                Some(name),
            )?;
            &named
        }
    };
    let provider = ctx
        .providers()
        .and_then(|p| p.in_host(grant.provider))
        .ok_or_else(|| {
            format!(
                "this host has not joined a lattice, so it has no `{}` provider",
                grant.provider
            )
        })?;
    provider
        .call(&grant.link, Call::Blob(call))
        .await
        .map_err(|e| e.to_string())
}

/// `call`, answered `Unit`.
async fn unit(at: Blobs<'_>, call: BlobCall) -> Result<(), String> {
    match self::call(at, call).await? {
        Reply::Unit => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// `call`, answered `Bool`.
async fn bool(at: Blobs<'_>, call: BlobCall) -> Result<bool, String> {
    match self::call(at, call).await? {
        Reply::Bool(b) => Ok(b),
        other => Err(unexpected(&other)),
    }
}

impl BlobstoreView<'_> {
    /// The name of an open container.
    fn container(&self, c: &Resource<Container>) -> wasmtime::Result<String> {
        Ok(self.table.get(c)?.name.clone())
    }

    /// Object `name` of open container `c`.
    fn object(&self, c: &Resource<Container>, name: String) -> wasmtime::Result<BlobRef> {
        Ok(BlobRef {
            container: self.container(c)?,
            object: name,
        })
    }

    /// Opens container `name` once `call` says it may.
    async fn open(&mut self, name: String, call: BlobCall) -> BlobResult<Resource<Container>> {
        match unit(self.blobs(), call).await {
            Ok(()) => Ok(Ok(self.table.push(Container { name })?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

fn blob_ref(id: types::ObjectId) -> BlobRef {
    BlobRef {
        container: id.container,
        object: id.object,
    }
}

impl blobstore::Host for BlobstoreView<'_> {
    #[instrument(name = "lattice.blobstore.create_container", level = "debug", skip_all)]
    async fn create_container(&mut self, name: String) -> BlobResult<Resource<Container>> {
        self.open(name.clone(), BlobCall::CreateContainer(name))
            .await
    }

    #[instrument(name = "lattice.blobstore.get_container", level = "debug", skip_all)]
    async fn get_container(&mut self, name: String) -> BlobResult<Resource<Container>> {
        self.open(name.clone(), BlobCall::GetContainer(name)).await
    }

    #[instrument(name = "lattice.blobstore.delete_container", level = "debug", skip_all)]
    async fn delete_container(&mut self, name: String) -> BlobResult<()> {
        Ok(unit(self.blobs(), BlobCall::DeleteContainer(name)).await)
    }

    #[instrument(name = "lattice.blobstore.container_exists", level = "debug", skip_all)]
    async fn container_exists(&mut self, name: String) -> BlobResult<bool> {
        Ok(bool(self.blobs(), BlobCall::ContainerExists(name)).await)
    }

    #[instrument(name = "lattice.blobstore.copy_object", level = "debug", skip_all)]
    async fn copy_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> BlobResult<()> {
        let (src, dest) = (blob_ref(src), blob_ref(dest));
        Ok(unit(self.blobs(), BlobCall::CopyObject { src, dest }).await)
    }

    #[instrument(name = "lattice.blobstore.move_object", level = "debug", skip_all)]
    async fn move_object(&mut self, src: types::ObjectId, dest: types::ObjectId) -> BlobResult<()> {
        let (src, dest) = (blob_ref(src), blob_ref(dest));
        Ok(unit(self.blobs(), BlobCall::MoveObject { src, dest }).await)
    }
}

impl container::Host for BlobstoreView<'_> {}

impl container::HostContainer for BlobstoreView<'_> {
    #[instrument(name = "lattice.blobstore.name", level = "debug", skip_all)]
    async fn name(&mut self, c: Resource<Container>) -> BlobResult<String> {
        Ok(Ok(self.container(&c)?))
    }

    #[instrument(name = "lattice.blobstore.info", level = "debug", skip_all)]
    async fn info(&mut self, c: Resource<Container>) -> BlobResult<types::ContainerMetadata> {
        let name = self.container(&c)?;
        Ok(
            match call(self.blobs(), BlobCall::ContainerInfo(name.clone())).await {
                Ok(Reply::Number(created_at)) => Ok(types::ContainerMetadata { name, created_at }),
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(e),
            },
        )
    }

    #[instrument(name = "lattice.blobstore.get_data", level = "debug", skip_all)]
    async fn get_data(
        &mut self,
        c: Resource<Container>,
        name: String,
        start: u64,
        end: u64,
    ) -> BlobResult<Resource<IncomingValue>> {
        let object = self.object(&c, name)?;
        let read = call(self.blobs(), BlobCall::GetData { object, start, end }).await;
        match read.and_then(value) {
            Ok(data) => Ok(Ok(self.table.push(IncomingValue { data })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    #[instrument(name = "lattice.blobstore.write_data", level = "debug", skip_all)]
    async fn write_data(
        &mut self,
        c: Resource<Container>,
        name: String,
        data: Resource<OutgoingValue>,
    ) -> BlobResult<()> {
        let object = self.object(&c, name)?;
        if let Err(e) = unit(self.blobs(), BlobCall::CheckWrite(object.clone())).await {
            return Ok(Err(e));
        }
        self.table.get_mut(&data)?.target = Some(object);
        Ok(Ok(()))
    }

    #[instrument(name = "lattice.blobstore.list_objects", level = "debug", skip_all)]
    async fn list_objects(&mut self, c: Resource<Container>) -> BlobResult<Resource<ObjectNames>> {
        let container = self.container(&c)?;
        match call(self.blobs(), BlobCall::ListObjects(container)).await {
            Ok(Reply::Keys { keys, .. }) => Ok(Ok(self.table.push(ObjectNames {
                names: keys,
                next: 0,
            })?)),
            Ok(other) => Ok(Err(unexpected(&other))),
            Err(e) => Ok(Err(e)),
        }
    }

    #[instrument(name = "lattice.blobstore.delete_object", level = "debug", skip_all)]
    async fn delete_object(&mut self, c: Resource<Container>, name: String) -> BlobResult<()> {
        let object = self.object(&c, name)?;
        Ok(unit(self.blobs(), BlobCall::DeleteObject(object)).await)
    }

    #[instrument(name = "lattice.blobstore.delete_objects", level = "debug", skip_all)]
    async fn delete_objects(
        &mut self,
        c: Resource<Container>,
        names: Vec<String>,
    ) -> BlobResult<()> {
        let container = self.container(&c)?;
        let call = BlobCall::DeleteObjects {
            container,
            objects: names,
        };
        Ok(unit(self.blobs(), call).await)
    }

    #[instrument(name = "lattice.blobstore.has_object", level = "debug", skip_all)]
    async fn has_object(&mut self, c: Resource<Container>, name: String) -> BlobResult<bool> {
        let object = self.object(&c, name)?;
        Ok(bool(self.blobs(), BlobCall::HasObject(object)).await)
    }

    #[instrument(name = "lattice.blobstore.object_info", level = "debug", skip_all)]
    async fn object_info(
        &mut self,
        c: Resource<Container>,
        name: String,
    ) -> BlobResult<types::ObjectMetadata> {
        let object = self.object(&c, name)?;
        Ok(
            match call(self.blobs(), BlobCall::ObjectInfo(object.clone())).await {
                Ok(Reply::ObjectInfo { created_at, size }) => Ok(types::ObjectMetadata {
                    name: object.object,
                    container: object.container,
                    created_at,
                    size,
                }),
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(e),
            },
        )
    }

    #[instrument(name = "lattice.blobstore.clear", level = "debug", skip_all)]
    async fn clear(&mut self, c: Resource<Container>) -> BlobResult<()> {
        let container = self.container(&c)?;
        Ok(unit(self.blobs(), BlobCall::Clear(container)).await)
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
        let Some(object) = v.target else {
            return Ok(Err(
                "the value was finished before `write-data` named its object, so it was not stored"
                    .to_string(),
            ));
        };
        // One copy, out of the pipe the guest wrote through (the provider takes owned bytes).
        let data = serde_bytes::ByteBuf::from(v.pipe.contents().to_vec());
        Ok(unit(self.blobs(), BlobCall::WriteData { object, data }).await)
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
            source_secrets: Default::default(),
            target_secrets: Default::default(),
            queued: None,
        };
        let app = AppName::new("shop").expect("a valid name");
        let links = with_default_root(
            vec![
                link(NAME, None),
                link(NAME, Some("photos/2026")),
                link("keyvalue-nats", None),
            ],
            &app,
        )
        .expect("valid roots");
        assert_eq!(
            links[0].target_config.get(ROOT_KEY).map(String::as_str),
            Some("shop")
        );
        assert_eq!(
            links[1].target_config.get(ROOT_KEY).map(String::as_str),
            Some("photos/2026")
        );
        assert!(links[2].target_config.is_empty());
        for bad in ["/var/lib/lattice/host", "../host", "shop/../.."] {
            let e = with_default_root(vec![link(NAME, Some(bad))], &app).expect_err(bad);
            assert!(
                e.contains("the `blobstore-fs` link `default`'s `root`"),
                "{bad}: {e}"
            );
        }
    }
}
