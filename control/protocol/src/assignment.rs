//! Host assignments: what one host must run, signed by the control plane.
//!
//! The control plane writes one [`SignedAssignment`] per host into a JetStream KV bucket; the
//! host watches its key. The assignment carries a revision (strictly increasing per host) and an
//! expiry, and the host verifies the signature against its configured operator keys, so a forged
//! assignment, a replayed older one, or one meant for another host is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::keys::{KeyPair, PublicKey};
use crate::names::{AppName, ComponentName, HostId, LatticeName};
use crate::queue::TraceContext;

/// Everything a host must run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The lattice it belongs to.
    pub lattice: LatticeName,
    /// The host it is for.
    pub host: HostId,
    /// Strictly increasing per host.
    pub revision: u64,
    /// The signing control plane's leadership epoch: a host refuses an assignment with an epoch
    /// lower than one it has applied (a deposed leader's).
    #[serde(default)]
    pub epoch: u64,
    /// Unix seconds when it was signed.
    pub issued_at: u64,
    /// Unix seconds after which a host refuses to *receive* it. A host that already applied it
    /// keeps running it (offline autonomy); the control plane re-signs before expiry.
    pub expires_at: u64,
    /// The workloads, in a stable order.
    pub workloads: Vec<Workload>,
    /// Stop the host gracefully when this revision arrives (`lattice ctl stop host`). Ignored
    /// when a saved assignment is re-applied at start, so the host can be started again.
    #[serde(default)]
    pub stop: bool,
    /// The trace of the request that changed what this host runs (a deploy, through the
    /// control plane's `lattice.assign`): the host's `lattice.apply` continues it, so one trace
    /// goes from the operator's deploy to the component serving. Inside the signed bytes, so
    /// nobody can graft an assignment onto another trace; absent when traces are off, on a
    /// re-signing that changes nothing, and in assignments from control planes that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// One component of one app on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// The app.
    pub app: AppName,
    /// The app version.
    pub app_version: String,
    /// The component.
    pub component: ComponentName,
    /// The artifact.
    pub image: Digest,
    /// Instances.
    pub instances: u32,
    /// Named config merged into one map; given to the component as its environment.
    pub config: BTreeMap<String, String>,
    /// Config values marked secret, each sealed to this host's key ([`crate::secret`]); the
    /// host opens them in memory and gives them to the component with [`Workload::config`]
    /// (a secret wins over a config value of the same key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Serve the component's `wasi:http/incoming-handler` on this address.
    pub http: Option<HttpBinding>,
    /// What serves each of the component's linked imports. An import not named here is not
    /// linked: a call to it fails at once with a WIT error (or a trap naming the import, when
    /// its function has no error to return).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<WorkloadLink>,
    /// NATS subjects whose messages are delivered to the component's
    /// `wasmcloud:messaging/handler` export (from a messaging capability's link to it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<String>,
    /// The queued deliveries it consumes, each through a durable consumer of the queue stream
    /// (see [`crate::queue`]); a workload consuming nothing creates none. `None` in
    /// assignments from control planes that predate it: the host then consumes queued calls
    /// whenever the component exports interfaces others call, as those hosts did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueInbox>,
    /// What one instance may use and how many may run at once on the host (the manifest's
    /// `limits`); the host clamps each to its own maximum and fills in its defaults. Empty in
    /// assignments from control planes that predate it.
    #[serde(default, skip_serializing_if = "ComponentLimits::is_empty")]
    pub limits: ComponentLimits,
}

/// A component's own limits, each `None` where its manifest gives none (the host's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentLimits {
    /// Largest linear memory of one instance, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Longest one call (one HTTP request, one component call, one message) may run, in
    /// milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Instances that may run at once on one host; more requests are refused as busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Requests one instance of a WASI 0.3 HTTP component serves at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_concurrency: Option<u32>,
    /// Requests one instance of a WASI 0.3 HTTP component serves before a fresh one takes over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_requests: Option<u32>,
    /// How long an idle instance of a WASI 0.3 HTTP component is kept, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_idle_ms: Option<u64>,
}

impl ComponentLimits {
    /// Whether it asks for nothing (every value is the host's).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Which queued deliveries a workload consumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInbox {
    /// Queued calls: a link of its app with `delivery: queued` targets it.
    pub calls: bool,
    /// Queued messages on its [`Workload::subscriptions`]: every component subscribed through
    /// `messaging-nats` consumes them, since any app may publish queued messages on its
    /// subjects.
    pub messages: bool,
}

impl QueueInbox {
    /// What `component` consumes, given the links of every component of its app and its own
    /// subscriptions.
    pub fn of<'a>(
        component: &ComponentName,
        app_links: impl IntoIterator<Item = &'a WorkloadLink>,
        subscriptions: &[String],
    ) -> Self {
        Self {
            calls: app_links.into_iter().any(|l| {
                l.queued.is_some() && l.target == LinkTarget::Component(component.clone())
            }),
            messages: !subscriptions.is_empty(),
        }
    }

    /// Whether it consumes nothing.
    pub fn is_empty(&self) -> bool {
        !self.calls && !self.messages
    }
}

/// One link from a workload's imports to what serves them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadLink {
    /// WIT namespace, e.g. `wasi`.
    pub namespace: String,
    /// WIT package, e.g. `keyvalue`.
    pub package: String,
    /// WIT interfaces of the package, e.g. `store`, `atomics`.
    pub interfaces: Vec<String>,
    /// The link name (`default` when the manifest gives none).
    pub name: String,
    /// What serves the interfaces.
    pub target: LinkTarget,
    /// Configuration of the source (importing) end.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_config: BTreeMap<String, String>,
    /// Configuration of the target end, e.g. `bucket` for key-value storage.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_config: BTreeMap<String, String>,
    /// Secret configuration of the source end, each value sealed to this host's key
    /// ([`crate::secret`]); the host opens them in memory and adds them to
    /// [`WorkloadLink::source_config`] before anything serves the link.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_secrets: BTreeMap<String, String>,
    /// Secret configuration of the target end (a Redis URL with its password), sealed and
    /// opened as [`WorkloadLink::source_secrets`], added to [`WorkloadLink::target_config`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_secrets: BTreeMap<String, String>,
    /// Calls on this link are queued: written to the host's durable outbox and delivered later,
    /// exactly once in effect (only for one-way functions). `None`: direct calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<QueuedDelivery>,
}

/// How a queued link's calls are kept and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedDelivery {
    /// How long a call may wait for delivery before it expires (counted, never silent).
    pub ttl_secs: u64,
    /// Most calls the sending host's outbox keeps for this link.
    pub capacity: u64,
    /// What happens to a new call when the outbox is full.
    pub on_full: OnFull,
    /// Delivery attempts before a call goes to the dead-letter stream with its last error.
    pub max_attempts: u32,
}

/// The explicit policy for a full outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// The guest's call returns an error it can handle.
    Refuse,
    /// The oldest queued call is dropped (with an event and a count) to make room.
    DropOldest,
}

impl WorkloadLink {
    /// Whether this link serves `namespace:package/interface` (any version).
    pub fn serves(&self, namespace: &str, package: &str, interface: &str) -> bool {
        self.namespace == namespace
            && self.package == package
            && self.interfaces.iter().any(|i| i == interface)
    }
}

/// The serving end of a [`WorkloadLink`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkTarget {
    /// A provider every host runs in-process, by name (e.g. `keyvalue-nats`): one described
    /// as `Runs::InHost` in [`crate::provider::catalog`]. (The variant keeps its name so that
    /// stored assignments decode unchanged.)
    Builtin(String),
    /// A component of the same app: called in-process when an instance of it runs on the
    /// caller's host, otherwise over NATS on [`crate::subject::Subject::Rpc`].
    Component(ComponentName),
    /// A capability provider run as a separate process by the host, by its provider name
    /// (e.g. `keyvalue-redis`; `Runs::Process` in [`crate::provider::catalog`]), reached on
    /// [`crate::subject::Subject::Provider`].
    Provider(String),
}

impl Workload {
    /// A stable key naming this workload on its host.
    pub fn key(&self) -> String {
        format!("{}/{}", self.app, self.component)
    }
}

/// The built-in HTTP server's binding for a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpBinding {
    /// `ip:port` to listen on.
    pub address: String,
    /// The requests of that address the component serves, when the address is shared
    /// (wasmCloud's `path` and `host` routing modes); `None`: all of them, the address its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<HttpRoute>,
}

/// Which requests of a shared address a component serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpRoute {
    /// Those whose path is this one or under it (`/api` serves `/api` and `/api/orders`, not
    /// `/apis`); the longest matching path wins.
    Path(String),
    /// Those whose `Host` header names this host (any port, any case).
    Host(String),
}

impl HttpRoute {
    /// Whether two bindings of one address, on routes `a` and `b` (`None`: the whole address),
    /// cannot both be served there: one takes the whole address, or both the same route.
    pub fn clash(a: Option<&HttpRoute>, b: Option<&HttpRoute>) -> bool {
        a.is_none() || b.is_none() || a == b
    }

    /// Whether a request for `path` on `host` (its `Host` header, port included or not) is
    /// this route's.
    pub fn matches(&self, path: &str, host: Option<&str>) -> bool {
        match self {
            HttpRoute::Path(prefix) => {
                let prefix = prefix.trim_end_matches('/');
                prefix.is_empty()
                    || path == prefix
                    || path
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            HttpRoute::Host(name) => host.is_some_and(|h| {
                let h = h.rsplit_once(':').map_or(h, |(name, port)| {
                    if port.chars().all(|c| c.is_ascii_digit()) {
                        name
                    } else {
                        h
                    }
                });
                h.eq_ignore_ascii_case(name)
            }),
        }
    }

    /// How specific it is: the longest path wins among paths.
    pub fn specificity(&self) -> usize {
        match self {
            HttpRoute::Path(p) => p.trim_end_matches('/').len(),
            HttpRoute::Host(h) => h.len(),
        }
    }
}

impl std::fmt::Display for HttpRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpRoute::Path(p) => write!(f, "path {p}"),
            HttpRoute::Host(h) => write!(f, "host {h}"),
        }
    }
}

/// An assignment with the control plane's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAssignment {
    /// The MessagePack-encoded [`Assignment`]: the exact bytes signed.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Who signed.
    pub signer: PublicKey,
    /// ed25519 signature over `payload`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why a host refused an assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    /// Signed by a key the host does not trust.
    #[error(
        "assignment signed by {0}, which is not a trusted operator key of this host (`--trust-operator`)"
    )]
    UntrustedSigner(PublicKey),
    /// The signature does not verify.
    #[error("assignment signature does not verify: it was altered after signing")]
    BadSignature,
    /// Not decodable.
    #[error("malformed assignment: {0}")]
    Malformed(String),
    /// For another host or lattice.
    #[error("assignment is for host {host} in lattice {lattice}, not this host")]
    NotForThisHost {
        /// The host named in it.
        host: HostId,
        /// The lattice named in it.
        lattice: LatticeName,
    },
    /// Expired before it was received.
    #[error("assignment revision {revision} expired at {expires_at} (unix seconds)")]
    Expired {
        /// Its revision.
        revision: u64,
        /// When it expired.
        expires_at: u64,
    },
    /// From a control plane that lost its leadership.
    #[error(
        "assignment revision {revision} comes from leadership epoch {epoch}, older than the applied epoch {applied}; refused as coming from a deposed control plane"
    )]
    Deposed {
        /// Its revision.
        revision: u64,
        /// Its epoch.
        epoch: u64,
        /// The epoch the host applied.
        applied: u64,
    },
    /// Not newer than what the host applied.
    #[error(
        "assignment revision {revision} is not newer than the applied revision {applied}; refused as a replay"
    )]
    Replay {
        /// Its revision.
        revision: u64,
        /// The revision the host applied.
        applied: u64,
    },
}

impl SignedAssignment {
    /// Signs `assignment` with the control plane's operator key.
    pub fn sign(assignment: &Assignment, key: &KeyPair) -> Self {
        let payload = rmp_serde::to_vec_named(assignment).unwrap_or_default();
        Self {
            signature: key.sign(&payload),
            signer: key.public_key(),
            payload,
        }
    }

    /// Decodes without any check: for tooling that only displays.
    pub fn decode_unverified(&self) -> Result<Assignment, AssignmentError> {
        rmp_serde::from_slice(&self.payload).map_err(|e| AssignmentError::Malformed(e.to_string()))
    }

    /// Verifies signature, trust and addressee. Expiry is checked against `now` (unix seconds)
    /// unless `now` is `None` (re-applying a persisted assignment after a restart). The replay
    /// check needs the host's state: see [`check_revision`].
    pub fn verify(
        &self,
        trusted: &[PublicKey],
        lattice: &LatticeName,
        host: &HostId,
        now: Option<u64>,
    ) -> Result<Assignment, AssignmentError> {
        if !trusted.contains(&self.signer) {
            return Err(AssignmentError::UntrustedSigner(self.signer.clone()));
        }
        if !self.signer.verify(&self.payload, &self.signature) {
            return Err(AssignmentError::BadSignature);
        }
        let assignment = self.decode_unverified()?;
        if &assignment.host != host || &assignment.lattice != lattice {
            return Err(AssignmentError::NotForThisHost {
                host: assignment.host,
                lattice: assignment.lattice,
            });
        }
        // Signed by the control plane's clock, read by the host's: expired only once the
        // skew two clocks may have ([`MAX_SKEW`](crate::clock::MAX_SKEW)) has passed too.
        if let Some(now) = now
            && now
                >= assignment
                    .expires_at
                    .saturating_add(crate::clock::MAX_SKEW.as_secs())
        {
            return Err(AssignmentError::Expired {
                revision: assignment.revision,
                expires_at: assignment.expires_at,
            });
        }
        Ok(assignment)
    }
}

/// Refuses a revision that is not newer than the applied one.
pub fn check_revision(revision: u64, applied: u64) -> Result<(), AssignmentError> {
    if revision <= applied {
        return Err(AssignmentError::Replay { revision, applied });
    }
    Ok(())
}

/// Refuses an assignment from an older leadership epoch than the applied one.
pub fn check_epoch(a: &Assignment, applied_epoch: u64) -> Result<(), AssignmentError> {
    if a.epoch < applied_epoch {
        return Err(AssignmentError::Deposed {
            revision: a.revision,
            epoch: a.epoch,
            applied: applied_epoch,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_match_paths_by_segment_and_hosts_without_port() {
        use super::HttpRoute;
        let api = HttpRoute::Path("/api".into());
        assert!(api.matches("/api", None));
        assert!(api.matches("/api/orders", None));
        assert!(!api.matches("/apis", None));
        assert!(!api.matches("/", None));
        assert!(HttpRoute::Path("/".into()).matches("/anything", None));
        let host = HttpRoute::Host("shop.example".into());
        assert!(host.matches("/", Some("Shop.Example:8080")));
        assert!(host.matches("/x", Some("shop.example")));
        assert!(!host.matches("/", Some("blog.example")));
        assert!(!host.matches("/", None));
    }

    use super::*;
    use crate::keys::KeyRole;

    fn sample(lattice: &LatticeName, host: &HostId) -> Assignment {
        Assignment {
            lattice: lattice.clone(),
            host: host.clone(),
            revision: 3,
            epoch: 2,
            issued_at: 10,
            expires_at: 100,
            stop: false,
            trace: None,
            workloads: vec![Workload {
                app: AppName::new("hello").expect("valid"),
                app_version: "v1".into(),
                component: ComponentName::new("hello").expect("valid"),
                image: Digest::of(b"x"),
                instances: 1,
                config: BTreeMap::new(),
                secrets: BTreeMap::new(),
                http: Some(HttpBinding {
                    address: "127.0.0.1:8080".into(),
                    route: None,
                }),
                links: Vec::new(),
                subscriptions: Vec::new(),
                queue: Some(QueueInbox::default()),
                limits: ComponentLimits::default(),
            }],
        }
    }

    #[test]
    fn limits_travel_and_older_assignments_have_none() -> Result<(), Box<dyn std::error::Error>> {
        let lattice = LatticeName::new("default")?;
        let host = HostId::new("NHOST")?;
        let mut assignment = sample(&lattice, &host);
        // Without limits nothing is written: a workload without them reads as before.
        let plain = rmp_serde::to_vec_named(&assignment.workloads[0])?;
        let keys: BTreeMap<String, serde::de::IgnoredAny> = rmp_serde::from_slice(&plain)?;
        assert!(keys.contains_key("image") && !keys.contains_key("limits"));
        let decoded: Workload = rmp_serde::from_slice(&plain)?;
        assert!(decoded.limits.is_empty());

        assignment.workloads[0].limits = ComponentLimits {
            memory_bytes: Some(64 << 20),
            timeout_ms: Some(30_000),
            concurrency: Some(4),
            instance_concurrency: Some(8),
            instance_requests: Some(100),
            instance_idle_ms: Some(5_000),
        };
        let bytes = rmp_serde::to_vec_named(&assignment)?;
        let decoded: Assignment = rmp_serde::from_slice(&bytes)?;
        assert_eq!(decoded, assignment);
        Ok(())
    }

    #[test]
    fn a_trace_is_signed_and_older_assignments_have_none() -> Result<(), Box<dyn std::error::Error>>
    {
        let lattice = LatticeName::new("default")?;
        let host = HostId::new("NHOST")?;
        let op = KeyPair::generate(KeyRole::Operator);
        let mut assignment = sample(&lattice, &host);
        // Without a trace nothing is written: what older hosts and control planes read.
        let plain = rmp_serde::to_vec_named(&assignment)?;
        let keys: BTreeMap<String, serde::de::IgnoredAny> = rmp_serde::from_slice(&plain)?;
        assert!(keys.contains_key("workloads") && !keys.contains_key("trace"));

        assignment.trace = Some(TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: String::new(),
        });
        let signed = SignedAssignment::sign(&assignment, &op);
        assert_eq!(
            signed.verify(&[op.public_key()], &lattice, &host, Some(50)),
            Ok(assignment.clone())
        );
        // In the signed bytes: grafting another trace breaks the signature.
        let mut grafted = signed.clone();
        let at = grafted
            .payload
            .windows(4)
            .position(|w| w == b"4bf9")
            .ok_or("the trace is in the payload")?;
        grafted.payload[at] = b'5';
        assert_eq!(
            grafted.verify(&[op.public_key()], &lattice, &host, Some(50)),
            Err(AssignmentError::BadSignature)
        );
        Ok(())
    }

    #[test]
    fn only_targets_of_queued_links_and_subscribers_consume() {
        let sink = ComponentName::new("sink").expect("valid");
        let link = |target: &str, queued: bool| WorkloadLink {
            namespace: "example".into(),
            package: "sink".into(),
            interfaces: vec!["notify".into()],
            name: "default".into(),
            target: LinkTarget::Component(ComponentName::new(target).expect("valid")),
            source_config: BTreeMap::new(),
            target_config: BTreeMap::new(),
            source_secrets: Default::default(),
            target_secrets: Default::default(),
            queued: queued.then_some(QueuedDelivery {
                ttl_secs: 60,
                capacity: 10,
                on_full: OnFull::Refuse,
                max_attempts: 3,
            }),
        };
        let direct = [link("sink", false), link("other", true)];
        assert!(QueueInbox::of(&sink, &direct, &[]).is_empty());
        let queued = [link("other", false), link("sink", true)];
        assert_eq!(
            QueueInbox::of(&sink, &queued, &["orders.>".into()]),
            QueueInbox {
                calls: true,
                messages: true
            }
        );
    }

    #[test]
    fn verifies_and_refuses() {
        let op = KeyPair::generate(KeyRole::Operator);
        let lattice = LatticeName::new("default").expect("valid");
        let host = HostId::new("NHOST").expect("valid");
        let a = sample(&lattice, &host);
        let signed = SignedAssignment::sign(&a, &op);
        let trusted = [op.public_key()];
        assert_eq!(signed.verify(&trusted, &lattice, &host, Some(50)), Ok(a));

        let stranger = KeyPair::generate(KeyRole::Operator);
        assert!(matches!(
            signed.verify(&[stranger.public_key()], &lattice, &host, Some(50)),
            Err(AssignmentError::UntrustedSigner(_))
        ));
        let mut altered = signed.clone();
        let last = altered.payload.len() - 1;
        altered.payload[last] ^= 1;
        assert_eq!(
            altered.verify(&trusted, &lattice, &host, Some(50)),
            Err(AssignmentError::BadSignature)
        );
        let other = HostId::new("NOTHER").expect("valid");
        assert!(matches!(
            signed.verify(&trusted, &lattice, &other, Some(50)),
            Err(AssignmentError::NotForThisHost { .. })
        ));
        let skew = crate::clock::MAX_SKEW.as_secs();
        assert!(
            signed
                .verify(&trusted, &lattice, &host, Some(100 + skew - 1))
                .is_ok(),
            "a host whose clock is ahead by less than the skew allowed still accepts it"
        );
        assert!(matches!(
            signed.verify(&trusted, &lattice, &host, Some(100 + skew)),
            Err(AssignmentError::Expired { .. })
        ));
        assert!(signed.verify(&trusted, &lattice, &host, None).is_ok());
        assert!(check_revision(3, 2).is_ok());
        assert!(matches!(
            check_revision(3, 3),
            Err(AssignmentError::Replay { .. })
        ));
        let a = signed.decode_unverified().expect("decodes");
        assert!(check_epoch(&a, 2).is_ok());
        assert!(matches!(
            check_epoch(&a, 3),
            Err(AssignmentError::Deposed { .. })
        ));
    }
}
