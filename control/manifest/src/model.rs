//! The typed manifest: what [`parse`](crate::parse) returns once every check has passed.
//!
//! Field names serialize as they are spelled in YAML (`apiVersion`, `type`, `properties`), so
//! `serde_json` of a [`Manifest`] has the same shape as the manifest a user wrote. Serde here is
//! for storing and sending a manifest that was already validated; user input goes through
//! [`parse`](crate::parse), which reports every problem with its position.

use std::collections::BTreeMap;

pub use lattice_protocol::assignment::{ComponentLimits, OnFull, QueuedDelivery};
use lattice_protocol::names::{AppName, ComponentName, LabelKey};
use serde::{Deserialize, Serialize};

/// The only `apiVersion` accepted (wadm's).
pub const API_VERSION: &str = "core.oam.dev/v1beta1";
/// The only `kind` accepted.
pub const KIND: &str = "Application";
/// The annotation that carries an application's version.
pub const VERSION_ANNOTATION: &str = "version";
/// The annotation that carries an application's description.
pub const DESCRIPTION_ANNOTATION: &str = "description";
/// The weight of a spread entry that does not give one (wadm's default).
pub const DEFAULT_SPREAD_WEIGHT: u32 = 100;
/// The link name used when a link does not give one (wadm's default).
pub const DEFAULT_LINK_NAME: &str = "default";

/// An application manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`API_VERSION`].
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// The application's name and annotations.
    pub metadata: Metadata,
    /// What to run.
    pub spec: Spec,
}

impl Manifest {
    /// The `version` annotation, if the manifest has one.
    pub fn version(&self) -> Option<&str> {
        self.metadata
            .annotations
            .get(VERSION_ANNOTATION)
            .map(String::as_str)
    }

    /// The `description` annotation, if the manifest has one.
    pub fn description(&self) -> Option<&str> {
        self.metadata
            .annotations
            .get(DESCRIPTION_ANNOTATION)
            .map(String::as_str)
    }

    /// Every secret value of every component and of every link's ends, to seal or check each
    /// in place.
    pub fn secret_values_mut(&mut self) -> impl Iterator<Item = &mut String> {
        self.spec
            .components
            .iter_mut()
            .flat_map(|c| {
                let links = c.traits.iter_mut().filter_map(|t| match t {
                    Trait::Link(link) => Some(link),
                    _ => None,
                });
                let ends =
                    links.flat_map(|l| l.source.secrets.iter_mut().chain(&mut l.target.secrets));
                c.properties.secrets.iter_mut().chain(ends)
            })
            .flat_map(|s| s.properties.values_mut())
    }

    /// Whether some component or link has a secret.
    pub fn has_secrets(&self) -> bool {
        let any = |secrets: &[NamedConfig]| secrets.iter().any(|s| !s.properties.is_empty());
        self.spec.components.iter().any(|c| {
            any(&c.properties.secrets)
                || c.links()
                    .any(|l| any(&l.source.secrets) || any(&l.target.secrets))
        })
    }

    /// The manifest with every secret value replaced by
    /// [`REDACTED`](lattice_protocol::secret::REDACTED), to show it.
    pub fn redacted(&self) -> Manifest {
        let mut shown = self.clone();
        for value in shown.secret_values_mut() {
            *value = lattice_protocol::secret::REDACTED.to_string();
        }
        shown
    }

    /// The component called `name`, if there is one.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.spec
            .components
            .iter()
            .find(|component| component.name.as_str() == name)
    }
}

/// A manifest's `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The application's name, unique within a lattice.
    pub name: AppName,
    /// Free-form string annotations; `version` and `description` are the well-known ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Free-form string labels (accepted for wadm compatibility).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A manifest's `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The application's components, with unique names.
    pub components: Vec<Component>,
    /// Lattice addition: how a new version replaces the running one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// Lattice addition: a rollout policy. A new version goes to `batch` hosts at a time; each batch
/// must run healthy for `healthy_for` before the next; a failure rolls back to the last version
/// that was deployed healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Hosts switched per step (`2`) or a share of them (`"25%"`); absent: all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batch>,
    /// How long a batch must run before the next (`10s`, `1m`); absent: 5 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_for: Option<String>,
}

/// A rollout step: a number of hosts, or a percentage of them (at least one host either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Batch {
    /// This many hosts per step.
    Hosts(u32),
    /// This share of the hosts per step, written `"25%"`.
    Percent(#[serde(with = "percent")] u32),
}

impl Batch {
    /// Hosts per step out of `total` (never 0).
    pub fn hosts(self, total: usize) -> usize {
        match self {
            Batch::Hosts(n) => n as usize,
            Batch::Percent(p) => (total * p as usize).div_ceil(100),
        }
        .max(1)
    }
}

/// `25%` as text in YAML and JSON.
mod percent {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(p: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{p}%"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let text = String::deserialize(d)?;
        text.strip_suffix('%')
            .and_then(|n| n.trim().parse().ok())
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                D::Error::custom(format!("`{text}` is not a percentage from 1% to 100%"))
            })
    }
}

impl Rollout {
    /// The health period (validated at parse time).
    pub fn healthy_for(&self) -> Option<std::time::Duration> {
        self.healthy_for
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }
}

/// One entry of `spec.components`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Unique within the manifest; link targets refer to it.
    pub name: ComponentName,
    /// A WebAssembly component or a capability (provider).
    #[serde(rename = "type")]
    pub kind: ComponentKind,
    /// What to run and how to configure it.
    pub properties: Properties,
    /// Scaling and links.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traits: Vec<Trait>,
}

impl Component {
    /// The component's scaler trait (at most one exists) with its kind, `"spreadscaler"` or
    /// `"daemonscaler"`.
    pub fn scaler(&self) -> Option<(&'static str, &Scaler)> {
        self.traits.iter().find_map(|t| match t {
            Trait::Spreadscaler(scaler) | Trait::Daemonscaler(scaler) => Some((t.kind(), scaler)),
            Trait::Link(_) => None,
        })
    }

    /// The links whose source is this component.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.traits.iter().filter_map(|t| match t {
            Trait::Link(link) => Some(link),
            Trait::Spreadscaler(_) | Trait::Daemonscaler(_) => None,
        })
    }
}

/// A component's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// `component`: a WebAssembly component (wadm's older `actor` is read as this).
    Component,
    /// `capability`: a capability provider, built in (`builtin:...`) or an image.
    Capability,
}

impl ComponentKind {
    /// The spelling used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Component => "component",
            ComponentKind::Capability => "capability",
        }
    }
}

/// A component's `properties`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    /// Image reference: `name:version`, `sha256:<64 hex>`, a registry reference, or for a
    /// capability `builtin:<name>`. Never empty.
    pub image: String,
    /// An explicit component id; when absent the control plane derives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Named configuration handed to the component (merge with [`NamedConfig::merged`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<NamedConfig>,
    /// Named configs whose values are secret (the shape of `config`, beside it). Given to the
    /// component like config; on the wire and at rest each value is sealed
    /// ([`lattice_protocol::secret`]). A key here wins over the same key in `config`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<NamedConfig>,
    /// Lattice addition: what one instance may use and how many may run at once on a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// A component's `properties.limits`, as written (validated at parse time). Each host clamps
/// what is asked to its own maximum (`lattice-host --max-component-memory`, `--max-call-time`)
/// and uses its defaults for what is not asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory of one instance: `64Mi`, `512Ki`, `1Gi` or bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Longest one call (an HTTP request, a component call, a message) may run: `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Instances that may run at once on one host; requests beyond are refused as busy (HTTP
    /// `503` with `Retry-After`, a `busy` call error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// How instances of a WASI 0.3 HTTP component are reused across requests (a WASI 0.2
    /// component gets a fresh instance per request whatever this says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceReuse>,
}

/// A component's `properties.limits.instance`, as written: how one instance of a WASI 0.3
/// HTTP component is reused. Each is optional (the host's default then applies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceReuse {
    /// Requests one instance serves at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Requests one instance serves in all before a fresh one takes over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// How long an instance with nothing to do is kept: `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
}

impl Limits {
    /// The limits as they travel in an assignment.
    pub fn component_limits(&self) -> ComponentLimits {
        ComponentLimits {
            memory_bytes: self.memory.as_deref().and_then(crate::limits::parse_memory),
            timeout_ms: self
                .timeout
                .as_deref()
                .and_then(|t| humantime::parse_duration(t).ok())
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            concurrency: self.concurrency,
            instance_concurrency: self.instance.as_ref().and_then(|i| i.concurrency),
            instance_requests: self.instance.as_ref().and_then(|i| i.requests),
            instance_idle_ms: self
                .instance
                .as_ref()
                .and_then(|i| i.idle.as_deref())
                .and_then(|t| humantime::parse_duration(t).ok())
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// A named, flat string map of configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedConfig {
    /// The config's name.
    pub name: String,
    /// Its key/value pairs; numbers and booleans in the YAML are kept as their text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl NamedConfig {
    /// Merges named configs in order into one map; a key in a later config wins.
    pub fn merged(configs: &[NamedConfig]) -> BTreeMap<String, String> {
        configs
            .iter()
            .flat_map(|config| config.properties.iter())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}

/// One entry of a component's `traits`, serialized wadm-style as `{type, properties}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "properties", rename_all = "lowercase")]
// A manifest holds a handful of traits, read once per deploy: boxing `Link` would cost every
// match and construction for no measurable saving.
#[allow(clippy::large_enum_variant)]
pub enum Trait {
    /// Run `instances` copies spread over matching hosts.
    Spreadscaler(Scaler),
    /// Run `instances` copies on every matching host.
    Daemonscaler(Scaler),
    /// Wire an interface of this component (the source) to another component (the target).
    Link(Link),
}

impl Trait {
    /// The trait's `type` as spelled in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            Trait::Spreadscaler(_) => "spreadscaler",
            Trait::Daemonscaler(_) => "daemonscaler",
            Trait::Link(_) => "link",
        }
    }
}

/// The properties of a `spreadscaler` or `daemonscaler` trait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    /// How many instances (in total for a spreadscaler, per host for a daemonscaler); at least 1.
    pub instances: u32,
    /// Where to place them; empty means anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread: Vec<Spread>,
    /// Lattice addition: how long a host may be silent before its movable instances are placed
    /// elsewhere (`90s`, `5m`, `2h`). Absent: the control plane's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
}

impl Scaler {
    /// The tolerance, when given (validated at parse time).
    pub fn tolerance(&self) -> Option<std::time::Duration> {
        self.tolerance
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }
}

/// One entry of a scaler's `spread`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    /// A name for this share of the instances.
    pub name: String,
    /// Relative share, at least 1; [`DEFAULT_SPREAD_WEIGHT`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Host labels that must all match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requirements: BTreeMap<LabelKey, String>,
    /// Lattice addition: instances placed by this entry stay on their host however long it is
    /// silent (an edge gateway that drops off the network keeps its work).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

impl Spread {
    /// The weight, or [`DEFAULT_SPREAD_WEIGHT`] when none is given.
    pub fn effective_weight(&self) -> u32 {
        self.weight.unwrap_or(DEFAULT_SPREAD_WEIGHT)
    }
}

/// The properties of a `link` trait: the component holding the trait imports
/// `namespace:package/interfaces` from `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// WIT namespace, e.g. `wasi`.
    pub namespace: String,
    /// WIT package, e.g. `http`.
    pub package: String,
    /// WIT interfaces, e.g. `incoming-handler`; never empty.
    pub interfaces: Vec<String>,
    /// Distinguishes several links on the same interfaces; see [`Link::link_name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The component that serves the interfaces.
    pub target: LinkTarget,
    /// Configuration for the source end.
    #[serde(default, skip_serializing_if = "LinkSource::is_empty")]
    pub source: LinkSource,
    /// Lattice addition: how calls on the link travel (or, on a component's link to
    /// `messaging-nats`, the messages it publishes); absent: [`Delivery::Direct`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Delivery>,
    /// Queued delivery: how long a call may wait (`24h`); absent: [`DEFAULT_QUEUE_TTL`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Queued delivery: most calls waiting on the sending host; absent: [`DEFAULT_QUEUE_CAPACITY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// Queued delivery: what a call meets when the queue is full; absent: `refuse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_full: Option<OnFull>,
    /// Queued delivery: delivery attempts before dead-lettering; absent:
    /// [`DEFAULT_QUEUE_MAX_ATTEMPTS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

/// The time to live of a queued call when the link gives none.
pub const DEFAULT_QUEUE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The capacity of a queued link when it gives none.
pub const DEFAULT_QUEUE_CAPACITY: u32 = 10_000;
/// Delivery attempts of a queued call when the link gives none.
pub const DEFAULT_QUEUE_MAX_ATTEMPTS: u32 = 5;

/// How calls (or published messages) on a link travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// The caller waits for the target's answer (the default).
    Direct,
    /// The call is kept durably on the caller's host and delivered later, exactly once in
    /// effect; only for one-way functions, and for messages published on a link to
    /// `messaging-nats` (once to each subscribed component; `request` is refused there).
    Queued,
}

impl Link {
    /// The link's name, or [`DEFAULT_LINK_NAME`] when none is given.
    pub fn link_name(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_LINK_NAME)
    }

    /// The queued-delivery settings, defaults filled in, when the link is `delivery: queued`.
    pub fn queued(&self) -> Option<QueuedDelivery> {
        if self.delivery != Some(Delivery::Queued) {
            return None;
        }
        let ttl = self
            .ttl
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(DEFAULT_QUEUE_TTL);
        Some(QueuedDelivery {
            ttl_secs: ttl.as_secs().max(1),
            capacity: u64::from(self.capacity.unwrap_or(DEFAULT_QUEUE_CAPACITY)),
            on_full: self.on_full.unwrap_or(OnFull::Refuse),
            max_attempts: self.max_attempts.unwrap_or(DEFAULT_QUEUE_MAX_ATTEMPTS),
        })
    }
}

/// The target end of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkTarget {
    /// A component of the same manifest.
    pub name: ComponentName,
    /// Configuration for the target end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<NamedConfig>,
    /// Configuration for the target end whose values are secret (the shape of `config`, beside
    /// it; no key in both): sealed like a component's [`Properties::secrets`] and given to the
    /// target with `config`, opened only in the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<NamedConfig>,
}

/// The source end of a link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSource {
    /// Configuration for the source end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<NamedConfig>,
    /// Configuration for the source end whose values are secret; see [`LinkTarget::secrets`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<NamedConfig>,
}

impl LinkSource {
    /// Whether there is nothing to configure.
    pub fn is_empty(&self) -> bool {
        self.config.is_empty() && self.secrets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, pairs: &[(&str, &str)]) -> NamedConfig {
        NamedConfig {
            name: name.to_string(),
            properties: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn later_configs_win_when_merged() {
        let merged = NamedConfig::merged(&[
            config("a", &[("x", "1"), ("y", "1")]),
            config("b", &[("y", "2")]),
        ]);
        assert_eq!(merged.get("x").map(String::as_str), Some("1"));
        assert_eq!(merged.get("y").map(String::as_str), Some("2"));
        assert!(NamedConfig::merged(&[]).is_empty());
    }

    #[test]
    fn defaults_for_weight_and_link_name() {
        let spread = Spread {
            name: "edge".into(),
            weight: None,
            requirements: BTreeMap::new(),
            pinned: false,
        };
        assert_eq!(spread.effective_weight(), DEFAULT_SPREAD_WEIGHT);
        let link = Link {
            namespace: "wasi".into(),
            package: "http".into(),
            interfaces: vec!["incoming-handler".into()],
            name: None,
            target: LinkTarget {
                name: ComponentName::new("hello").expect("valid name"),
                config: vec![],
                secrets: vec![],
            },
            source: LinkSource::default(),
            delivery: None,
            ttl: None,
            capacity: None,
            on_full: None,
            max_attempts: None,
        };
        assert_eq!(link.link_name(), DEFAULT_LINK_NAME);
        assert_eq!(link.queued(), None);
        let queued = Link {
            delivery: Some(Delivery::Queued),
            ttl: Some("2h".into()),
            ..link
        };
        assert_eq!(
            queued.queued(),
            Some(QueuedDelivery {
                ttl_secs: 7200,
                capacity: u64::from(DEFAULT_QUEUE_CAPACITY),
                on_full: OnFull::Refuse,
                max_attempts: DEFAULT_QUEUE_MAX_ATTEMPTS,
            })
        );
    }
}
