//! The capabilities built into every host, what each serves, and the checks on the
//! configuration their links carry (bucket names, outgoing-HTTP allow-lists, NATS subjects,
//! blob-store roots).
//! Pure: every check returns the problem as text for [`super::resolve`] to collect.

/// A capability this Lattice version knows: built into every host (`LinkTarget::Builtin(name)`
/// in a workload's links), or shipped as a provider process the host starts and supervises
/// (`LinkTarget::Provider(name)`, image `provider:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// Serves components' `wasi:http/incoming-handler` on an address (its links go from the
    /// capability to the component).
    HttpServer,
    /// `wasi:keyvalue` on a NATS JetStream KV bucket.
    KeyvalueNats,
    /// `wasmcloud:messaging` over the lattice's NATS: `consumer` to components that link to it,
    /// delivery to a component's `handler` for the subjects its link names.
    MessagingNats,
    /// `wasi:http/outgoing-handler`, limited to an allow-list of hosts.
    HttpClient,
    /// `wasi:blobstore` on the host's filesystem: one directory per container under a root.
    BlobstoreFs,
    /// `keyvalue-nats` as a process of its own (isolation; the same code as the built-in).
    KeyvalueNatsProcess,
    /// `wasi:keyvalue` on Redis, a provider process.
    KeyvalueRedis,
    /// MQTT: delivers topics to a component's `handler`, publishes for `consumer`; a provider
    /// process (for sensors on gateways).
    Mqtt,
}

impl Builtin {
    /// Every built-in, in the order messages list them.
    pub(crate) const ALL: [Builtin; 8] = [
        Builtin::HttpServer,
        Builtin::KeyvalueNats,
        Builtin::MessagingNats,
        Builtin::HttpClient,
        Builtin::BlobstoreFs,
        Builtin::KeyvalueNatsProcess,
        Builtin::KeyvalueRedis,
        Builtin::Mqtt,
    ];

    /// The name hosts know it by.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Builtin::HttpServer => "http-server",
            Builtin::KeyvalueNats => "keyvalue-nats",
            Builtin::MessagingNats => "messaging-nats",
            Builtin::HttpClient => "http-client",
            Builtin::BlobstoreFs => "blobstore-fs",
            Builtin::KeyvalueNatsProcess => "keyvalue-nats",
            Builtin::KeyvalueRedis => "keyvalue-redis",
            Builtin::Mqtt => "mqtt",
        }
    }

    /// Whether hosts run it as a separate provider process.
    pub(crate) fn is_process(self) -> bool {
        matches!(
            self,
            Builtin::KeyvalueNatsProcess | Builtin::KeyvalueRedis | Builtin::Mqtt
        )
    }

    /// What a workload's link names as its target.
    pub(crate) fn link_target(self) -> lattice_protocol::assignment::LinkTarget {
        use lattice_protocol::assignment::LinkTarget;
        if self.is_process() {
            LinkTarget::Provider(self.name().to_string())
        } else {
            LinkTarget::Builtin(self.name().to_string())
        }
    }

    /// Whether it stores keys and values (its links carry a `bucket`).
    pub(crate) fn is_keyvalue(self) -> bool {
        matches!(
            self,
            Builtin::KeyvalueNats | Builtin::KeyvalueNatsProcess | Builtin::KeyvalueRedis
        )
    }

    /// Its image in manifests: `builtin:<name>`, or `provider:<name>` for a provider process.
    pub(crate) fn image(self) -> String {
        if self.is_process() {
            format!("provider:{}", self.name())
        } else {
            format!("builtin:{}", self.name())
        }
    }

    /// wasmCloud's provider images that mean the same capability (prefixes), so that wadm
    /// manifests deploy unchanged.
    fn wasmcloud_images(self) -> &'static [&'static str] {
        match self {
            Builtin::HttpServer => &[
                "ghcr.io/wasmcloud/http-server",
                "wasmcloud.azurecr.io/httpserver",
            ],
            Builtin::KeyvalueNats => &["ghcr.io/wasmcloud/keyvalue-nats"],
            Builtin::MessagingNats => &["ghcr.io/wasmcloud/messaging-nats"],
            Builtin::HttpClient => &["ghcr.io/wasmcloud/http-client"],
            Builtin::BlobstoreFs => &["ghcr.io/wasmcloud/blobstore-fs"],
            Builtin::KeyvalueRedis => &["ghcr.io/wasmcloud/keyvalue-redis"],
            Builtin::KeyvalueNatsProcess | Builtin::Mqtt => &[],
        }
    }

    /// The interfaces (`namespace:package/interface`) it serves to a component whose `link`
    /// trait targets it.
    pub(crate) fn serves(self) -> &'static [&'static str] {
        match self {
            Builtin::HttpServer => &[],
            Builtin::KeyvalueNats | Builtin::KeyvalueNatsProcess | Builtin::KeyvalueRedis => &[
                "wasi:keyvalue/store",
                "wasi:keyvalue/atomics",
                "wasi:keyvalue/batch",
            ],
            Builtin::MessagingNats | Builtin::Mqtt => &["wasmcloud:messaging/consumer"],
            Builtin::HttpClient => &["wasi:http/outgoing-handler"],
            Builtin::BlobstoreFs => &[
                "wasi:blobstore/blobstore",
                "wasi:blobstore/container",
                "wasi:blobstore/types",
            ],
        }
    }

    /// The capability a manifest's `image` names, if it is built in.
    pub(crate) fn from_image(image: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| {
            image == b.image() || b.wasmcloud_images().iter().any(|p| image.starts_with(p))
        })
    }

    /// `builtin:http-server, builtin:keyvalue-nats, ...`, for messages.
    pub(crate) fn list() -> String {
        Builtin::ALL
            .iter()
            .map(|b| b.image())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The target config key naming a key-value link's NATS KV bucket.
pub const BUCKET_KEY: &str = "bucket";

/// The config key (source or target) of an `http-client` link's allow-list.
pub const ALLOWED_HOSTS_KEY: &str = "allowed_hosts";

/// The source config key of a `messaging-nats` link's subjects.
pub const SUBSCRIPTIONS_KEY: &str = "subscriptions";

/// The target config key of a `blobstore-fs` link's root directory (absolute; the host's
/// `<state dir>/blobs/<app>` when not given).
pub const ROOT_KEY: &str = "root";

/// Why `root` cannot be a `blobstore-fs` link's root directory, if it cannot.
pub(crate) fn root_problem(root: &str) -> Option<String> {
    let path = std::path::Path::new(root);
    if root.trim().is_empty() {
        return Some(format!(
            "`{ROOT_KEY}` is empty: give an absolute directory, or leave it out for the host's default"
        ));
    }
    if !path.is_absolute() {
        return Some(format!(
            "`{ROOT_KEY}` `{root}` is not an absolute path: a relative one would depend on where each host runs"
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Some(format!(
            "`{ROOT_KEY}` `{root}` contains `..`: name the directory directly"
        ));
    }
    if root.contains('\0') {
        return Some(format!("`{ROOT_KEY}` contains a NUL character"));
    }
    None
}

/// The prefix of the lattice's own JetStream buckets (`LATTICE_<lattice>_<purpose>`).
const RESERVED_BUCKET_PREFIX: &str = "LATTICE_";

/// Why `bucket` cannot be a key-value link's bucket, if it cannot.
pub(crate) fn bucket_problem(bucket: &str) -> Option<String> {
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
pub(crate) fn allowed_hosts_problem(value: &str) -> Option<String> {
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
pub(crate) fn subscriptions(value: &str) -> Result<Vec<String>, String> {
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
mod tests {
    use super::*;

    #[test]
    fn images_name_builtins() {
        for (image, expected) in [
            ("builtin:http-server", Some(Builtin::HttpServer)),
            (
                "ghcr.io/wasmcloud/http-server:0.23.0",
                Some(Builtin::HttpServer),
            ),
            (
                "wasmcloud.azurecr.io/httpserver:0.19.1",
                Some(Builtin::HttpServer),
            ),
            ("builtin:keyvalue-nats", Some(Builtin::KeyvalueNats)),
            (
                "ghcr.io/wasmcloud/keyvalue-nats:0.3.1",
                Some(Builtin::KeyvalueNats),
            ),
            ("builtin:messaging-nats", Some(Builtin::MessagingNats)),
            (
                "ghcr.io/wasmcloud/messaging-nats:canary",
                Some(Builtin::MessagingNats),
            ),
            ("builtin:http-client", Some(Builtin::HttpClient)),
            (
                "ghcr.io/wasmcloud/http-client:0.12.0",
                Some(Builtin::HttpClient),
            ),
            ("builtin:keyvalue-redis", None),
            ("provider:keyvalue-redis", Some(Builtin::KeyvalueRedis)),
            (
                "ghcr.io/wasmcloud/keyvalue-redis:0.28.1",
                Some(Builtin::KeyvalueRedis),
            ),
            ("provider:keyvalue-nats", Some(Builtin::KeyvalueNatsProcess)),
            ("provider:mqtt", Some(Builtin::Mqtt)),
            ("builtin:blobstore-fs", Some(Builtin::BlobstoreFs)),
            (
                "ghcr.io/wasmcloud/blobstore-fs:0.10.0",
                Some(Builtin::BlobstoreFs),
            ),
            ("provider:blobstore-fs", None),
            ("builtin:http-server2", None),
        ] {
            assert_eq!(Builtin::from_image(image), expected, "{image}");
        }
        assert_eq!(
            Builtin::list(),
            "builtin:http-server, builtin:keyvalue-nats, builtin:messaging-nats, builtin:http-client, builtin:blobstore-fs, provider:keyvalue-nats, provider:keyvalue-redis, provider:mqtt"
        );
    }

    #[test]
    fn blob_roots() {
        for ok in ["/var/lib/blobs", "/"] {
            assert_eq!(root_problem(ok), None, "{ok}");
        }
        for (bad, needle) in [
            ("", "empty"),
            ("blobs", "not an absolute path"),
            ("./blobs", "not an absolute path"),
            ("/var/../etc", "`..`"),
        ] {
            let problem = root_problem(bad).expect("refused");
            assert!(problem.contains(needle), "{bad}: {problem}");
        }
    }

    #[test]
    fn bucket_names() {
        for ok in ["orders", "my-app_2", "A"] {
            assert_eq!(bucket_problem(ok), None, "{ok}");
        }
        for bad in ["", "my bucket", "a.b", "a/b", "ключ", "a*"] {
            let problem = bucket_problem(bad).expect("refused");
            assert!(problem.contains(&format!("`{bad}`")), "{problem}");
        }
        for reserved in ["LATTICE_default_manifests", "lattice_x"] {
            assert!(
                bucket_problem(reserved).is_some_and(|p| p.contains("reserved")),
                "{reserved}"
            );
        }
    }

    #[test]
    fn allowed_hosts_lists() {
        for ok in [
            "",
            "*",
            "api.example.com",
            "api.example.com:8443, example.org",
            "127.0.0.1:8080,localhost",
            "[::1]:8080,[2001:db8::1]",
            "a.example.com,",
        ] {
            assert_eq!(allowed_hosts_problem(ok), None, "{ok}");
        }
        for (bad, needle) in [
            ("https://api.example.com", "without scheme"),
            ("api.example.com/v1", "without scheme"),
            ("api.example.com:http", "`api.example.com:http`"),
            ("api.example.com:0", "host:port"),
            ("api.example.com:70000", "host:port"),
            ("a b", "`a b`"),
            ("::1", "`::1`"),
            ("[nonsense]:80", "`[nonsense]:80`"),
        ] {
            let problem = allowed_hosts_problem(bad).expect("refused");
            assert!(problem.contains(needle), "{bad}: {problem}");
        }
    }

    #[test]
    fn subjects() {
        assert_eq!(
            subscriptions("orders.*, orders.>,events,orders.*,").as_deref(),
            Ok(&["orders.*".to_string(), "orders.>".into(), "events".into()][..])
        );
        assert_eq!(subscriptions(""), Ok(vec![]));
        for (bad, needle) in [
            ("orders..new", "empty token"),
            (".orders", "empty token"),
            ("orders.", "empty token"),
            ("orders new", "space"),
            ("orders.>.new", "`>` before the last token"),
            ("orders.new*", "inside a token"),
            ("orders.a>", "inside a token"),
            (">", "starts with a wildcard"),
            ("*.orders", "starts with a wildcard"),
            ("lattice.default.ctl.deploy", "lattice's own subjects"),
            ("$KV.LATTICE_default_tags.>", "system subject"),
            ("_INBOX.>", "replies"),
        ] {
            let problem = subscriptions(&format!("ok.subject,{bad}")).expect_err(bad);
            assert!(
                problem.contains(&format!("`{bad}`")) && problem.contains(needle),
                "{bad}: {problem}"
            );
        }
    }
}
