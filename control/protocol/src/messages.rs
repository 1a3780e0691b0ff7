//! Messages of the control-plane API and of host heartbeats, and [`Verb`]: each control-plane
//! verb paired once with its request and reply types ([`verbs`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::{Access, Grant};
use crate::digest::Digest;
use crate::keys::PublicKey;
use crate::names::{AppName, ComponentName, HostId};

/// `ctl.deploy`: store a manifest as a new version of its app and reconcile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The manifest's YAML text, exactly as the operator wrote it.
    pub manifest: String,
}

/// The answer to a deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployReply {
    /// The app.
    pub name: AppName,
    /// The version now desired.
    pub version: String,
    /// False when this exact manifest was already the desired version (nothing changed).
    pub changed: bool,
}

/// `ctl.undeploy` and `ctl.status`: names one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRequest {
    /// The app.
    pub name: AppName,
}

/// `ctl.manifest`: one stored manifest of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRequest {
    /// The app.
    pub name: AppName,
    /// The version; `None`: the desired one (or, when undeployed, the latest).
    pub version: Option<String>,
}

/// A stored manifest, as it may be shown: every secret value replaced by
/// [`REDACTED`](crate::secret::REDACTED).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestReply {
    /// The app.
    pub name: AppName,
    /// The version.
    pub version: String,
    /// The manifest's text (YAML as written, or JSON where secrets were sealed).
    pub manifest: String,
}

/// `ctl.rollback`: make a stored version desired again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The app.
    pub name: AppName,
    /// The version; `None`: the one before the current (or last) desired version.
    pub version: Option<String>,
}

/// `ctl.inventory`: names a host by id, id prefix or name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryRequest {
    /// Id, unique id prefix, or name.
    pub host: String,
}

/// `ctl.stop_host`: stop a host gracefully (it drains and exits; its movable work moves).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopHostRequest {
    /// Id, unique id prefix, or name.
    pub host: String,
}

/// `ctl.scale`: a new version of an app with another instance count for one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRequest {
    /// The app.
    pub name: AppName,
    /// The component.
    pub component: ComponentName,
    /// The new instance count (at least 1).
    pub instances: u32,
}

/// `ctl.label`: set or remove labels of a host, on top of what the host itself reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelRequest {
    /// Id, unique id prefix, or name.
    pub host: String,
    /// Labels to set.
    pub set: BTreeMap<String, String>,
    /// Label keys to remove.
    pub delete: Vec<String>,
}

/// One line of `ctl.history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version.
    pub version: String,
    /// Unix seconds when it was first deployed.
    pub deployed_at: u64,
    /// Whether it is the desired version now.
    pub current: bool,
}

/// An app's overall state, with wadm's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppState {
    /// Placed and running everywhere it should.
    Deployed,
    /// Work is being placed or started.
    Reconciling,
    /// Some component cannot run; the message says why.
    Failed,
    /// Not deployed.
    Undeployed,
    /// No host matches yet, and the manifest says to wait for one (rather than fail).
    Waiting,
}

impl std::fmt::Display for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AppState::Deployed => "Deployed",
            AppState::Reconciling => "Reconciling",
            AppState::Failed => "Failed",
            AppState::Undeployed => "Undeployed",
            AppState::Waiting => "Waiting",
        })
    }
}

/// One line of `ctl.apps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSummary {
    /// The app.
    pub name: AppName,
    /// The desired version.
    pub version: String,
    /// Its state.
    pub status: AppState,
    /// Why, when not deployed.
    pub message: String,
}

/// `ctl.status`: one app in detail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The app.
    pub name: AppName,
    /// The desired version.
    pub version: String,
    /// Its state.
    pub status: AppState,
    /// A summary of why, when not deployed.
    pub message: String,
    /// Every component on every host it was placed on (or without a host, when unplaced).
    pub components: Vec<ComponentStatus>,
}

/// One component of an app on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// The component.
    pub name: ComponentName,
    /// The host it is placed on (`None` when nothing could be placed).
    pub host: Option<HostId>,
    /// Instances asked of that host.
    pub instances: u32,
    /// What the host reports.
    pub state: WorkloadState,
    /// Why, when not running.
    pub message: String,
    /// What kind of failure, when failed: what a program branches on (the message is for
    /// people). Absent from control planes that predate it.
    #[serde(default)]
    pub reason: Option<FailureReason>,
    /// Where it is served (`ip:port` of the built-in HTTP server), when it is.
    #[serde(default)]
    pub endpoint: Option<String>,
}

/// A host as the control plane sees it (`ctl.hosts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    /// The host's id (its public key).
    pub id: HostId,
    /// Its human name (the machine's hostname unless configured).
    pub name: String,
    /// Its labels, built-in (`arch`, `os`, `hostname`) and configured.
    pub labels: BTreeMap<String, String>,
    /// `ready`, `lost`, `stopped` or `unadmitted`.
    pub state: HostState,
    /// Why it takes no part, when it is not admitted (no join token, an expired one, revoked,
    /// ...) and what to do about it; absent when it is admitted.
    #[serde(default)]
    pub admission: Option<String>,
    /// Seconds since the host started.
    pub uptime_secs: u64,
    /// Seconds since its last heartbeat.
    pub last_seen_secs: u64,
    /// The host's software version.
    pub version: String,
    /// How many workloads it runs.
    pub workloads: usize,
    /// How far its clock is ahead of the hub's, in milliseconds (negative: behind), as its
    /// heartbeat reports it (`Heartbeat::clock_offset_ms`).
    #[serde(default)]
    pub clock_offset_ms: i64,
}

/// Whether a host is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Heartbeats arrive.
    Ready,
    /// Silent for longer than its tolerance.
    Lost,
    /// Stopped gracefully; its pinned work waits for it.
    Stopped,
    /// Heard from, but not admitted: it gets no work (see [`HostSummary::admission`]).
    Unadmitted,
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostState::Ready => "ready",
            HostState::Lost => "lost",
            HostState::Stopped => "stopped",
            HostState::Unadmitted => "unadmitted",
        })
    }
}

/// A host's periodic report, also sent at once whenever what it runs changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The host's id.
    pub host: HostId,
    /// Its human name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Unix seconds when it started.
    pub started_at: u64,
    /// Unix milliseconds when this heartbeat was sent.
    pub sent_at_ms: u64,
    /// The host's software version.
    pub version: String,
    /// The revision of the assignment it applied (0: none yet).
    pub assignment_revision: u64,
    /// Seconds between heartbeats, so the control plane knows when to worry.
    pub interval_secs: u64,
    /// What it runs, or failed to run.
    pub workloads: Vec<WorkloadStatus>,
    /// The last assignment it refused, and why (forged, replayed, expired, ...).
    #[serde(default)]
    pub last_refusal: Option<String>,
    /// Its last heartbeat: it is stopping gracefully, and its movable work should go elsewhere.
    #[serde(default)]
    pub stopping: bool,
    /// Its outbox per queued link it sends on (`ctl get queues`); absent from hosts that
    /// predate it.
    #[serde(default)]
    pub queues: Vec<crate::queue::ops::LinkOutboxStats>,
    /// How far the host's clock is ahead of the hub's, in milliseconds (negative: behind), as
    /// it last measured it (see [`crate::clock`]); 0 when not measured (or from hosts that
    /// predate it).
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// The join token it was given (`lattice-host --join-token`, text form), presented so that
    /// the control plane can admit it ([`crate::signed::JoinToken`]); ignored once admitted.
    #[serde(default)]
    pub join_token: Option<String>,
}

/// Whether a host is admitted, as the control plane records it (KV bucket
/// [`Buckets::hosts`](crate::subject::Buckets::hosts), key: the host id), so that a new leader
/// knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAdmission {
    /// Admitted (`true`), or revoked by an operator (`false`: its join token no longer admits
    /// it until an operator admits it again).
    pub admitted: bool,
    /// How, for people: the join token's signer and note, or the operator's verb.
    pub how: String,
    /// Unix seconds when it was decided.
    pub at: u64,
}

/// `ctl.admission`: admit a host, or revoke its admission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionRequest {
    /// The host: its full id (it may not have been heard from yet), or a unique id prefix or
    /// name of a host heard from.
    pub host: String,
    /// Admit (`true`) or revoke (`false`).
    pub admit: bool,
}

/// One workload as a host reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    /// The app.
    pub app: AppName,
    /// The app version the workload belongs to.
    pub app_version: String,
    /// The component.
    pub component: ComponentName,
    /// The artifact it runs.
    pub image: Digest,
    /// Instances asked.
    pub instances: u32,
    /// Its state.
    pub state: WorkloadState,
    /// Why, when failed (e.g. which verification check refused it), for people.
    pub message: String,
    /// What kind of failure, when failed, for programs. Absent from hosts that predate it.
    #[serde(default)]
    pub reason: Option<FailureReason>,
    /// The address the built-in HTTP server actually listens on for it (a manifest may ask
    /// for port 0: any free port).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Requests it failed since it started (traps, timeouts): a rollout rolls back a version
    /// that keeps failing.
    #[serde(default)]
    pub failures: u64,
}

/// The state of a workload on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadState {
    /// Not yet reported by the host.
    Pending,
    /// Fetching, verifying or compiling.
    Starting,
    /// Serving.
    Running,
    /// Refused or crashed; see the message.
    Failed,
}

impl std::fmt::Display for WorkloadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkloadState::Pending => "pending",
            WorkloadState::Starting => "starting",
            WorkloadState::Running => "running",
            WorkloadState::Failed => "failed",
        })
    }
}

/// Why a workload failed, by kind: the step of starting it that refused or broke (a host's
/// report), or that it could not be placed at all (the control plane's). Each has its human
/// message beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// No host matches its placement, or too few do.
    Unplaced,
    /// Its artifact could not be fetched from the lattice (missing, too large, unreachable).
    FetchFailed,
    /// Refused before compilation: unsigned, tampered, a bad signature, an issuer this host
    /// does not trust, expired or not yet valid claims.
    RefusedSignature,
    /// A secret value of its config cannot be opened with this host's key (sealed to another
    /// key, or altered).
    SecretRefused,
    /// The compiler refused it (not a valid component for this engine) or failed.
    CompileError,
    /// Its imports cannot be linked: an interface the host does not provide, or its links'
    /// targets do not fit.
    LinkError,
    /// A capability provider it is linked to refused its links or did not start.
    ProviderFailed,
    /// Its HTTP address is not `ip:port`.
    InvalidAddress,
    /// Its HTTP address is taken, by another workload on this host or another program.
    AddressInUse,
    /// It traps when instantiated.
    TrapAtStart,
    /// Its call, message or queue servers could not start (NATS refused a subscription).
    ServeFailed,
    /// Compiling it went past one of the host's compile limits (wall-clock time, CPU time or
    /// memory, see `lattice-host --help`), or the kernel killed the compiler under memory
    /// pressure: the component is too costly to compile on this host.
    CompileLimit,
}

impl FailureReason {
    /// Its name on the wire and in tables, e.g. `compile_error`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Unplaced => "unplaced",
            FailureReason::FetchFailed => "fetch_failed",
            FailureReason::RefusedSignature => "refused_signature",
            FailureReason::SecretRefused => "secret_refused",
            FailureReason::CompileError => "compile_error",
            FailureReason::LinkError => "link_error",
            FailureReason::ProviderFailed => "provider_failed",
            FailureReason::InvalidAddress => "invalid_address",
            FailureReason::AddressInUse => "address_in_use",
            FailureReason::TrapAtStart => "trap_at_start",
            FailureReason::ServeFailed => "serve_failed",
            FailureReason::CompileLimit => "compile_limit",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the control plane did or saw, published for `lattice ctl watch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// What kind of event.
    pub kind: EventKind,
    /// The app concerned, if any.
    pub app: Option<AppName>,
    /// The host concerned, if any.
    pub host: Option<HostId>,
    /// What happened, for people.
    pub message: String,
}

/// Kinds of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new desired version of an app.
    Deployed,
    /// An app was undeployed.
    Undeployed,
    /// A host appeared (or changed its labels).
    HostJoined,
    /// A host went silent past its tolerance.
    HostLost,
    /// A host stopped gracefully.
    HostStopped,
    /// A host's assignment was written.
    Assigned,
    /// A workload on a host changed state.
    Workload,
    /// Queued calls were dropped from a sending host's full outbox (`on_full: drop_oldest`).
    QueueDropped,
    /// Queued calls expired (their `ttl` passed) before they were delivered.
    QueueExpired,
    /// A queued call failed `max_attempts` times and went to the dead-letter stream.
    DeadLettered,
    /// The hub's queue stream refused a host's queued calls (full): they wait in its outbox.
    QueueStreamFull,
    /// A host was admitted (by a join token or an operator) or its admission revoked.
    HostAdmitted,
    /// A host is heard from but not admitted (no token, an expired one, ...): it gets no work.
    HostUnadmitted,
    /// A heartbeat was dropped: unsigned, signed by another key than the host its subject
    /// names, or naming another host than its subject.
    HeartbeatRefused,
    /// A host silent past the retention was forgotten, its assignment cleared.
    HostForgotten,
    /// A request was refused: a deploy or scale that does not resolve (its reasons in the
    /// message), or a verb the signer's role does not allow.
    RequestRefused,
    /// Writing a host's assignment failed (the store refused it, or another writer won); it is
    /// tried again.
    AssignmentFailed,
    /// A rollout step or a host's admission could not be stored; it is tried again.
    StoreFailed,
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EventKind::Deployed => "deployed",
            EventKind::Undeployed => "undeployed",
            EventKind::HostJoined => "host-joined",
            EventKind::HostLost => "host-lost",
            EventKind::HostStopped => "host-stopped",
            EventKind::Assigned => "assigned",
            EventKind::Workload => "workload",
            EventKind::QueueDropped => "queue-dropped",
            EventKind::QueueExpired => "queue-expired",
            EventKind::DeadLettered => "dead-lettered",
            EventKind::QueueStreamFull => "queue-stream-full",
            EventKind::HostAdmitted => "host-admitted",
            EventKind::HostUnadmitted => "host-unadmitted",
            EventKind::HeartbeatRefused => "heartbeat-refused",
            EventKind::HostForgotten => "host-forgotten",
            EventKind::RequestRefused => "request-refused",
            EventKind::AssignmentFailed => "assignment-failed",
            EventKind::StoreFailed => "store-failed",
        })
    }
}

/// A control-plane verb with its request and reply types, named once here: the client
/// (`lattice_control::client`) and the control plane's dispatch are both written against it, so
/// the two ends cannot pair a verb with different types. A request travels on
/// [`Subject::ctl`](crate::subject::Subject::ctl) with [`Verb::VERB`], enveloped; the reply is an
/// enveloped [`Reply`](crate::envelope::Reply) of [`Verb::Reply`].
///
/// Each verb also states, beside its types, what its request needs of the signer's role
/// ([`Verb::access`]): the control plane authorizes by it before acting.
pub trait Verb {
    /// The verb, which names the subject.
    const VERB: crate::subject::CtlVerb;
    /// What the caller sends.
    type Request: Serialize + serde::de::DeserializeOwned + Send + 'static;
    /// What the control plane answers when it succeeds.
    type Reply: Serialize + serde::de::DeserializeOwned + Send + 'static;

    /// What `request` needs: reading, changing one app, or changing the lattice.
    fn access(request: &Self::Request) -> Access<'_>;
}

/// `ctl.users_add`: give a user key a role (or change the role it has).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsersAddRequest {
    /// The user's public key (`U...`, made by `lattice keys gen user`).
    pub key: PublicKey,
    /// Its name and role.
    pub grant: Grant,
}

/// `ctl.users_remove`: take a user key out of the role table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsersRemoveRequest {
    /// The user's public key.
    pub key: PublicKey,
}

/// One line of `ctl.users_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEntry {
    /// The user's public key.
    pub key: PublicKey,
    /// Its name and role.
    pub grant: Grant,
}

/// `ctl.config_put`: store a named config (`lattice ctl config put`), replacing what the name
/// held; deployed apps that took it from the store get a new version with its new values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigPutRequest {
    /// The config's name, as manifests refer to it.
    pub name: String,
    /// Its keys and values.
    pub values: BTreeMap<String, String>,
}

/// The answer to `ctl.config_put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigPutReply {
    /// The config's revision in the store (it names the app versions that take it).
    pub revision: u64,
    /// The deployed apps given a new version with the new values: app and version.
    pub redeployed: Vec<(AppName, String)>,
}

/// `ctl.config_get` and `ctl.config_del`: one named config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRequest {
    /// The config's name.
    pub name: String,
}

/// One line of `ctl.config_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// The config's name.
    pub name: String,
    /// Its keys and values.
    pub values: BTreeMap<String, String>,
    /// The deployed apps whose manifests take it from the store.
    pub used_by: Vec<AppName>,
}

/// One zero-sized type per [`CtlVerb`](crate::subject::CtlVerb), pairing it with its request
/// and reply types.
pub mod verbs {
    use std::collections::BTreeMap;

    use super::{
        AdmissionRequest, AppRequest, AppStatus, AppSummary, ConfigEntry, ConfigPutReply,
        ConfigPutRequest, ConfigRequest, DeployReply, DeployRequest, Heartbeat, HostSummary,
        InventoryRequest, LabelRequest, ManifestReply, ManifestRequest, RollbackRequest,
        ScaleRequest, StopHostRequest, UserEntry, UsersAddRequest, UsersRemoveRequest, Verb,
        VersionSummary,
    };
    use crate::auth::Access;
    use crate::queue::ops::{
        DeadLetter, DeadLettersRequest, LinkQueue, RequeueReply, RequeueRequest,
    };
    use crate::subject::CtlVerb;

    macro_rules! verbs {
        ($($(#[$doc:meta])* $name:ident: $request:ty => $reply:ty, needs |$r:pat_param| $access:expr;)*) => {$(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct $name;

            impl Verb for $name {
                const VERB: CtlVerb = CtlVerb::$name;
                type Request = $request;
                type Reply = $reply;

                fn access($r: &Self::Request) -> Access<'_> {
                    $access
                }
            }
        )*};
    }

    verbs! {
        /// `ctl.deploy`: store a manifest as a new version and reconcile it.
        Deploy: DeployRequest => DeployReply, needs |r| Access::Manifest(&r.manifest);
        /// `ctl.undeploy`: remove an app.
        Undeploy: AppRequest => (), needs |r| Access::App(&r.name);
        /// `ctl.apps`: list apps.
        Apps: () => Vec<AppSummary>, needs |_| Access::Read;
        /// `ctl.status`: one app's status.
        Status: AppRequest => AppStatus, needs |_| Access::Read;
        /// `ctl.hosts`: list hosts.
        Hosts: () => Vec<HostSummary>, needs |_| Access::Read;
        /// `ctl.history`: an app's stored versions, oldest first.
        History: AppRequest => Vec<VersionSummary>, needs |_| Access::Read;
        /// `ctl.manifest`: a stored manifest, its secrets redacted.
        Manifest: ManifestRequest => ManifestReply, needs |_| Access::Read;
        /// `ctl.rollback`: make a stored version desired again.
        Rollback: RollbackRequest => DeployReply, needs |r| Access::App(&r.name);
        /// `ctl.inventory`: one host's latest report, with the operator's labels applied.
        Inventory: InventoryRequest => Heartbeat, needs |_| Access::Read;
        /// `ctl.stop_host`: stop a host gracefully.
        StopHost: StopHostRequest => (), needs |_| Access::Lattice;
        /// `ctl.scale`: a new version with another instance count for one component.
        Scale: ScaleRequest => DeployReply, needs |r| Access::App(&r.name);
        /// `ctl.label`: set or remove host labels; answers the host's labels now.
        Label: LabelRequest => BTreeMap<String, String>, needs |_| Access::Lattice;
        /// `ctl.queues`: every queued link, its outboxes, in flight and dead-lettered.
        Queues: () => Vec<LinkQueue>, needs |_| Access::Read;
        /// `ctl.deadletters`: a queued link's dead letters, oldest first.
        DeadLetters: DeadLettersRequest => Vec<DeadLetter>, needs |r| Access::App(&r.link.app);
        /// `ctl.requeue`: put dead letters back in their queue.
        Requeue: RequeueRequest => RequeueReply, needs |r| Access::App(&r.link.app);
        /// `ctl.users_add`: give a user key a role (admins only).
        UsersAdd: UsersAddRequest => (), needs |_| Access::Lattice;
        /// `ctl.users_list`: the role table (admins only: it says who may do what).
        UsersList: () => Vec<UserEntry>, needs |_| Access::Lattice;
        /// `ctl.users_remove`: take a user key out of the role table (admins only).
        UsersRemove: UsersRemoveRequest => (), needs |_| Access::Lattice;
        /// `ctl.admission`: admit a host or revoke its admission; answers the host's full id.
        Admission: AdmissionRequest => String, needs |_| Access::Lattice;
        /// `ctl.config_put`: store a named config (admins only: every app may take it).
        ConfigPut: ConfigPutRequest => ConfigPutReply, needs |_| Access::Lattice;
        /// `ctl.config_get`: one named config's values.
        ConfigGet: ConfigRequest => BTreeMap<String, String>, needs |_| Access::Read;
        /// `ctl.config_del`: remove a named config no deployed app takes (admins only).
        ConfigDel: ConfigRequest => (), needs |_| Access::Lattice;
        /// `ctl.config_list`: every named config, with the apps that take it.
        ConfigList: () => Vec<ConfigEntry>, needs |_| Access::Read;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workload's report as hosts sent it before failures had a reason.
    #[derive(Serialize)]
    struct WorkloadStatusBeforeReasons {
        app: AppName,
        app_version: String,
        component: ComponentName,
        image: Digest,
        instances: u32,
        state: WorkloadState,
        message: String,
    }

    #[test]
    fn a_report_without_a_reason_still_decodes() -> Result<(), Box<dyn std::error::Error>> {
        let old = WorkloadStatusBeforeReasons {
            app: AppName::new("shop")?,
            app_version: "v1".into(),
            component: ComponentName::new("api")?,
            image: Digest::of(b"component"),
            instances: 1,
            state: WorkloadState::Failed,
            message: "refused before compilation: unsigned".into(),
        };
        let decoded: WorkloadStatus = rmp_serde::from_slice(&rmp_serde::to_vec_named(&old)?)?;
        assert_eq!(decoded.reason, None);
        assert_eq!(decoded.message, old.message);
        Ok(())
    }

    #[test]
    fn reasons_travel_by_their_names() -> Result<(), Box<dyn std::error::Error>> {
        for reason in [
            FailureReason::Unplaced,
            FailureReason::FetchFailed,
            FailureReason::RefusedSignature,
            FailureReason::SecretRefused,
            FailureReason::CompileError,
            FailureReason::LinkError,
            FailureReason::ProviderFailed,
            FailureReason::InvalidAddress,
            FailureReason::AddressInUse,
            FailureReason::TrapAtStart,
            FailureReason::ServeFailed,
            FailureReason::CompileLimit,
        ] {
            let name: String = rmp_serde::from_slice(&rmp_serde::to_vec(&reason)?)?;
            assert_eq!(name, reason.as_str());
            assert_eq!(
                rmp_serde::from_slice::<FailureReason>(&rmp_serde::to_vec(&name)?)?,
                reason
            );
        }
        Ok(())
    }
}
