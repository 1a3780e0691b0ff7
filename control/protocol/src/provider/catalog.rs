//! What each capability provider is, declared once: its name, how a host runs it, the
//! interfaces it serves, what it delivers to components, and the config keys its links carry
//! with their checks. The control plane reads these to resolve and check links; hosts and the
//! providers themselves take their names from here.
//!
//! Adding a provider is one [`ProviderDescription`] (a `const` beside the others) and one entry
//! in [`ALL`]; nothing else matches on providers by name.
//!
//! The descriptions live in the wire crate rather than in each provider's crate because both
//! ends read them and the control plane must not link provider code (Redis, MQTT, wasmtime).
//! The checks are pure and return the problem as text, for resolution to collect.
//!
//! ```
//! use lattice_protocol::assignment::LinkTarget;
//! use lattice_protocol::provider::catalog;
//! let kv = catalog::from_image("ghcr.io/wasmcloud/keyvalue-nats:0.3.1").unwrap();
//! assert_eq!(kv.link_target(), LinkTarget::Builtin("keyvalue-nats".into()));
//! assert_eq!(kv.image(), "builtin:keyvalue-nats");
//! ```

use crate::assignment::LinkTarget;

/// How a host runs a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// Inside the host (`builtin:<name>`; links target [`LinkTarget::Builtin`]).
    InHost,
    /// As a process the host starts and supervises (`provider:<name>`, program
    /// `lattice-provider-<name>`; links target [`LinkTarget::Provider`]).
    Process,
}

/// What a provider delivers to components whose exports it calls (its own `link` traits, from
/// the capability to a component).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivers {
    /// Nothing: it only serves components that link to it.
    Nothing,
    /// HTTP requests to `wasi:http/incoming-handler`, on the address its link names.
    HttpRequests,
    /// Messages on the lattice's NATS subjects (source config `subscriptions`) to
    /// `wasmcloud:messaging/handler`; the host subscribes for the component.
    NatsMessages,
    /// Messages from elsewhere (source config `subscriptions`, the provider's own filters) to
    /// `wasmcloud:messaging/handler`; the provider delivers them, so the handling component
    /// gets a link to the provider.
    ProviderMessages,
}

/// Which end of a link carries a config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The provider's end (`target.config`).
    Target,
    /// Either end; both are checked.
    Both,
}

/// A config key a provider's links carry, and its check.
#[derive(Debug, Clone, Copy)]
pub struct ConfigKey {
    /// The key.
    pub key: &'static str,
    /// Where it belongs.
    pub end: End,
    /// What it names, for messages (`the bucket`).
    pub what: &'static str,
    /// Why a value is refused, if it is.
    pub check: fn(&str) -> Option<String>,
    /// Whether the app's name is the value when the link gives none.
    pub defaults_to_app: bool,
}

/// One provider, declared.
#[derive(Debug, Clone, Copy)]
pub struct ProviderDescription {
    /// Its name in links, subjects and images (`keyvalue-nats`).
    pub name: &'static str,
    /// How hosts run it.
    pub runs: Runs,
    /// wasmCloud's provider images meaning the same capability (prefixes), so that wadm
    /// manifests deploy unchanged.
    pub wasmcloud_images: &'static [&'static str],
    /// The interfaces (`namespace:package/interface`) it serves to components linking to it.
    pub serves: &'static [&'static str],
    /// What it delivers to components.
    pub delivers: Delivers,
    /// Whether a component's links to it may be `delivery: queued`.
    pub queued: bool,
    /// The config keys its links carry.
    pub config: &'static [ConfigKey],
}

impl ProviderDescription {
    /// Its image in manifests: `builtin:<name>`, or `provider:<name>` for a process.
    pub fn image(&self) -> String {
        match self.runs {
            Runs::InHost => format!("builtin:{}", self.name),
            Runs::Process => format!("provider:{}", self.name),
        }
    }

    /// What a workload's link names as its target.
    pub fn link_target(&self) -> LinkTarget {
        match self.runs {
            Runs::InHost => LinkTarget::Builtin(self.name.to_string()),
            Runs::Process => LinkTarget::Provider(self.name.to_string()),
        }
    }

    /// Whether a manifest's `image` names this provider.
    pub fn named_by(&self, image: &str) -> bool {
        image == self.image() || self.wasmcloud_images.iter().any(|p| image.starts_with(p))
    }
}

/// Every provider this Lattice version knows, in the order messages list them.
pub const ALL: &[&ProviderDescription] = &[
    &HTTP_SERVER,
    &KEYVALUE_NATS,
    &MESSAGING_NATS,
    &HTTP_CLIENT,
    &BLOBSTORE_FS,
    &BLOBSTORE_NATS,
    &KEYVALUE_NATS_PROCESS,
    &KEYVALUE_REDIS,
    &MQTT,
];

/// The provider a manifest's `image` names, if this version knows it.
pub fn from_image(image: &str) -> Option<&'static ProviderDescription> {
    ALL.iter().copied().find(|d| d.named_by(image))
}

/// `builtin:http-server, builtin:keyvalue-nats, ...`, for messages.
pub fn images() -> String {
    ALL.iter().map(|d| d.image()).collect::<Vec<_>>().join(", ")
}

/// The target config key naming a key-value link's bucket.
pub const BUCKET_KEY: &str = "bucket";

/// The config key (source or target) of an `http-client` link's allow-list.
pub const ALLOWED_HOSTS_KEY: &str = "allowed_hosts";

/// The source config key of a delivering link's subjects (or topic filters).
pub const SUBSCRIPTIONS_KEY: &str = "subscriptions";

/// The target config key of a `blobstore-fs` link's root directory: relative to the host's
/// blob root base (`--blob-root-base`); the app's name when not given.
pub const ROOT_KEY: &str = "root";

const KEYVALUE_INTERFACES: &[&str] = &[
    "wasi:keyvalue/store",
    "wasi:keyvalue/atomics",
    "wasi:keyvalue/batch",
];

const BLOBSTORE_INTERFACES: &[&str] = &[
    "wasi:blobstore/blobstore",
    "wasi:blobstore/container",
    "wasi:blobstore/types",
];

const BUCKET: ConfigKey = ConfigKey {
    key: BUCKET_KEY,
    end: End::Target,
    what: "the bucket",
    check: bucket_problem,
    defaults_to_app: true,
};

/// Serves components' `wasi:http/incoming-handler` on an address (its links go from the
/// capability to the component).
pub const HTTP_SERVER: ProviderDescription = ProviderDescription {
    name: "http-server",
    runs: Runs::InHost,
    wasmcloud_images: &[
        "ghcr.io/wasmcloud/http-server",
        "wasmcloud.azurecr.io/httpserver",
    ],
    serves: &[],
    delivers: Delivers::HttpRequests,
    queued: false,
    config: &[],
};

/// `wasi:keyvalue` on a NATS JetStream KV bucket, inside the host.
pub const KEYVALUE_NATS: ProviderDescription = ProviderDescription {
    name: "keyvalue-nats",
    runs: Runs::InHost,
    wasmcloud_images: &["ghcr.io/wasmcloud/keyvalue-nats"],
    serves: KEYVALUE_INTERFACES,
    delivers: Delivers::Nothing,
    queued: false,
    config: &[BUCKET],
};

/// `wasmcloud:messaging` over the lattice's NATS: `consumer` to components that link to it,
/// delivery to a component's `handler` for the subjects its link names. Links to it may be
/// queued (queued messages).
pub const MESSAGING_NATS: ProviderDescription = ProviderDescription {
    name: "messaging-nats",
    runs: Runs::InHost,
    wasmcloud_images: &["ghcr.io/wasmcloud/messaging-nats"],
    // 0.2.0's `consumer`, 0.3.0's `producer` and `request-reply`.
    serves: &[
        "wasmcloud:messaging/consumer",
        "wasmcloud:messaging/producer",
        "wasmcloud:messaging/request-reply",
    ],
    delivers: Delivers::NatsMessages,
    queued: true,
    config: &[],
};

/// `wasi:http/outgoing-handler`, limited to an allow-list of hosts.
pub const HTTP_CLIENT: ProviderDescription = ProviderDescription {
    name: "http-client",
    runs: Runs::InHost,
    wasmcloud_images: &["ghcr.io/wasmcloud/http-client"],
    serves: &["wasi:http/outgoing-handler"],
    delivers: Delivers::Nothing,
    queued: false,
    config: &[ConfigKey {
        key: ALLOWED_HOSTS_KEY,
        end: End::Both,
        what: "the allow-list",
        check: allowed_hosts_problem,
        defaults_to_app: false,
    }],
};

/// `wasi:blobstore` on the host's filesystem: one directory per container under a root.
pub const BLOBSTORE_FS: ProviderDescription = ProviderDescription {
    name: "blobstore-fs",
    runs: Runs::InHost,
    wasmcloud_images: &["ghcr.io/wasmcloud/blobstore-fs"],
    serves: BLOBSTORE_INTERFACES,
    delivers: Delivers::Nothing,
    queued: false,
    config: &[ConfigKey {
        key: ROOT_KEY,
        end: End::Target,
        what: "the directory",
        check: root_problem,
        defaults_to_app: false,
    }],
};

/// `wasi:blobstore` on a NATS JetStream object store, inside the host: one store per link
/// (target config `bucket`, default the app's name), containers inside it.
pub const BLOBSTORE_NATS: ProviderDescription = ProviderDescription {
    name: "blobstore-nats",
    runs: Runs::InHost,
    wasmcloud_images: &["ghcr.io/wasmcloud/blobstore-nats"],
    serves: BLOBSTORE_INTERFACES,
    delivers: Delivers::Nothing,
    queued: false,
    config: &[BUCKET],
};

/// `keyvalue-nats` as a process of its own (isolation; the same code as the built-in).
pub const KEYVALUE_NATS_PROCESS: ProviderDescription = ProviderDescription {
    name: "keyvalue-nats",
    runs: Runs::Process,
    wasmcloud_images: &[],
    serves: KEYVALUE_INTERFACES,
    delivers: Delivers::Nothing,
    queued: false,
    config: &[BUCKET],
};

/// `wasi:keyvalue` on Redis, a provider process.
pub const KEYVALUE_REDIS: ProviderDescription = ProviderDescription {
    name: "keyvalue-redis",
    runs: Runs::Process,
    wasmcloud_images: &["ghcr.io/wasmcloud/keyvalue-redis"],
    serves: KEYVALUE_INTERFACES,
    delivers: Delivers::Nothing,
    queued: false,
    config: &[BUCKET],
};

/// MQTT: delivers topics to a component's `handler`, publishes for `consumer`; a provider
/// process (for sensors on gateways).
pub const MQTT: ProviderDescription = ProviderDescription {
    name: "mqtt",
    runs: Runs::Process,
    wasmcloud_images: &[],
    serves: &["wasmcloud:messaging/consumer"],
    delivers: Delivers::ProviderMessages,
    queued: false,
    config: &[],
};

/// Why `root` cannot be a `blobstore-fs` link's root directory, if it cannot. A root is a
/// relative path of plain names, taken under the blob root base each host's operator sets
/// (`lattice-host --blob-root-base`), so no link names a directory the operator did not give
/// out: not the host's state directory (keys, compiled code), not `/`.
pub fn root_problem(root: &str) -> Option<String> {
    use std::path::{Component, Path};
    let path = Path::new(root);
    if root.trim().is_empty() {
        return Some(format!(
            "`{ROOT_KEY}` is empty: name a directory under the host's blob root base (e.g. \
             `photos`), or leave it out for the app's own"
        ));
    }
    if root.contains('\0') {
        return Some(format!("`{ROOT_KEY}` contains a NUL character"));
    }
    if path.has_root() {
        return Some(format!(
            "`{ROOT_KEY}` `{root}` is an absolute path: roots are relative to the blob root \
             base each host's operator sets (--blob-root-base); give a relative one, e.g. \
             `{}`",
            root.trim_start_matches('/')
        ));
    }
    if let Some(c) = path
        .components()
        .find(|c| !matches!(c, Component::Normal(_)))
    {
        let c = c.as_os_str().to_string_lossy();
        return Some(format!(
            "`{ROOT_KEY}` `{root}` contains `{c}`: a root stays under the host's blob root \
             base; name its directories plainly"
        ));
    }
    None
}

/// The prefix of the lattice's own JetStream buckets (`LATTICE_<lattice>_<purpose>`).
const RESERVED_BUCKET_PREFIX: &str = "LATTICE_";

/// Why `bucket` cannot be a key-value link's bucket, if it cannot.
pub fn bucket_problem(bucket: &str) -> Option<String> {
    if bucket.is_empty()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Some(format!(
            "bucket `{bucket}` is not a valid NATS KV bucket name: use letters, digits, `-` and `_` only"
        ));
    }
    // The lattice keeps its manifests, assignments, tags and lease in KV buckets of the same
    // NATS: a component given one of those could rewrite the lattice's own state.
    if bucket
        .get(..RESERVED_BUCKET_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_BUCKET_PREFIX))
    {
        return Some(format!(
            "bucket `{bucket}` is reserved: names starting with `{RESERVED_BUCKET_PREFIX}` are the lattice's own buckets"
        ));
    }
    None
}

/// Why an `allowed_hosts` value is not a comma-separated list of `host`, `host:port` or `*`,
/// if it is not. Spaces around entries and empty entries are ignored.
pub fn allowed_hosts_problem(value: &str) -> Option<String> {
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*" {
            continue;
        }
        let hint = if entry.contains("://") || entry.contains('/') {
            "give the host name alone, without scheme or path (e.g. `api.example.com` or `api.example.com:8443`)"
        } else {
            "each entry is `host`, `host:port` or `*`"
        };
        let (host, port) = match entry.rsplit_once(':') {
            // An IPv6 literal is written in brackets: `[::1]` or `[::1]:8080`.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
            _ => (entry, None),
        };
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        };
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if !host_ok || !port_ok {
            return Some(format!(
                "`{ALLOWED_HOSTS_KEY}` entry `{entry}` is not valid: {hint}"
            ));
        }
    }
    None
}

/// The subjects of a comma-separated `subscriptions` value, or why one of them cannot be
/// subscribed. Spaces around subjects and empty entries are ignored; duplicates are dropped.
pub fn subscriptions(value: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for subject in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(problem) = subject_problem(subject) {
            return Err(format!("subject `{subject}` {problem}"));
        }
        if !out.iter().any(|s| s == subject) {
            out.push(subject.to_string());
        }
    }
    Ok(out)
}

/// What is wrong with a NATS subject a component would subscribe to, if anything.
fn subject_problem(subject: &str) -> Option<&'static str> {
    if subject.chars().any(char::is_whitespace) {
        return Some("contains a space: NATS subjects have none");
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens.iter().any(|t| t.is_empty()) {
        return Some(
            "has an empty token: tokens are separated by single dots, with none at either end",
        );
    }
    if tokens
        .iter()
        .any(|t| t.len() > 1 && (t.contains('*') || t.contains('>')))
    {
        return Some("uses a wildcard inside a token: `*` and `>` must stand alone between dots");
    }
    if tokens[..tokens.len() - 1].contains(&">") {
        return Some("uses `>` before the last token: `>` matches the rest and must come last");
    }
    // The lattice's own traffic (control-plane API, heartbeats, events, component calls), the
    // server's and JetStream's API (`$JS`, `$KV`, `$SYS`) and reply inboxes share this NATS: a
    // component subscribed to them would see (and could answer) what is not meant for it.
    match tokens[0] {
        "*" | ">" => Some(
            "starts with a wildcard, which would also match the lattice's own subjects: begin with a literal token",
        ),
        "lattice" => Some("is under `lattice.`, the lattice's own subjects"),
        "_INBOX" => Some("is under `_INBOX.`, where NATS delivers replies"),
        t if t.starts_with('$') => Some("is a NATS system subject (`$...`)"),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
