//! `wasi:keyvalue` (store, atomics, batch) on Redis, as a Lattice provider (`keyvalue-redis`),
//! run as a process of its own (`lattice-provider-keyvalue-redis`).
//!
//! It behaves as `keyvalue-nats` does, so a component moves between the two by changing its
//! link: each link names one bucket (target config `bucket`; the control plane writes the app's
//! name when the manifest gives none) and one Redis (target config `url`, default
//! [`DEFAULT_URL`]; wasmCloud's `URL` is read too, and a wildcard host such as
//! `redis://0.0.0.0:6379` means loopback, as it did there: [`loopback_for_wildcard`]).
//! `open(identifier)` hands out that bucket for `""`, `"default"`, the
//! bucket's name or the link's name, and `no-such-store` otherwise; calls on any other bucket are
//! `access-denied`.
//!
//! Redis has no buckets: key `k` of bucket `b` is the Redis key `b:k`, so several buckets (and
//! other users) share one Redis database; bucket names without `:` keep buckets apart. Counters
//! are `INCRBY`, so they are decimal text as in `keyvalue-nats`, but at most `i64::MAX`.
//! `list-keys` `SCAN`s the bucket's prefix; its cursors are offsets into the sorted keys, as in
//! `keyvalue-nats` (not Redis's own `SCAN` cursors), and no cursor means the last page. Batches
//! are one `MGET`, `MSET` or `DEL` each.
//!
//! Links with the same URL share one reconnecting, multiplexed connection, made on the first call
//! that needs it (a link to a Redis that is down is accepted; its calls fail until Redis is up).
//! A Redis that does not answer fails a call within [`CONNECT_TIMEOUT`] or [`RESPONSE_TIMEOUT`],
//! never hangs it.
//!
//! Layout: [`RedisKv`] holds the links and the connections and implements
//! [`lattice_provider_sdk::Provider`]; one free function per Redis operation below it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lattice_provider_sdk::{Call, LinkId, LinkInfo, Provider, ProviderError, Reply, unsupported};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

/// The provider's name in links.
pub const NAME: &str = lattice_provider_sdk::catalog::KEYVALUE_REDIS.name;

/// The Redis a link uses when its target config has no `url`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// How long connecting to a Redis may take before a call fails (the whole attempt, retries
/// included): a component waiting on a dead Redis should learn so quickly.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one command may wait for its answer. Longer than the client's default (0.5 s),
/// which a busy Redis or a large `MGET` can exceed without anything being wrong.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys per `list-keys` page (as `keyvalue-nats`).
const PAGE: usize = 1000;

/// Keys `SCAN` looks at per round trip: a hint to Redis, not a limit on what it returns.
const SCAN_COUNT: usize = 1000;

/// What a link was put with.
#[derive(Debug, Clone)]
struct Linked {
    bucket: String,
    name: String,
    url: String,
}

/// One Redis, connected on first use. The cell stays empty after a failed attempt, so the next
/// call tries again (Redis may have come up since).
type Connection = Arc<OnceCell<ConnectionManager>>;

/// The provider: links to buckets, and one connection per Redis URL those links name.
#[derive(Debug, Default)]
pub struct RedisKv {
    links: Mutex<HashMap<LinkId, Linked>>,
    connections: Mutex<HashMap<String, Connection>>,
}

/// A bucket as the calls on it see it: its connection and its key prefix.
struct Bucket {
    connection: ConnectionManager,
    prefix: String,
    url: String,
}

impl Bucket {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// `what` failed with `e`, said so that a person knows what to do.
    fn error(&self, what: &str, e: &redis::RedisError) -> ProviderError {
        if unreachable(e) {
            ProviderError::Other(format!(
                "{what}: Redis at {} did not answer ({e}): check that it runs there and that \
                 the link's `url` is right",
                shown(&self.url)
            ))
        } else {
            ProviderError::Other(format!("{what}: {e}"))
        }
    }
}

/// Whether `e` is about reaching Redis rather than about the command.
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped()
}

/// `url` with a wildcard host (`0.0.0.0`, `[::]`) replaced by loopback (`127.0.0.1`, `[::1]`).
/// wasmCloud's examples write `redis://0.0.0.0:6379` for "the Redis on this machine", which is
/// what connecting to a wildcard address means on Linux; saying so keeps it working everywhere
/// and in messages. Anything else (and anything that is not a URL) is left as written.
pub fn loopback_for_wildcard(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    // `redis:` is not a scheme the url crate knows, so an IPv4 host comes back as a name.
    let host = parsed.host_str().unwrap_or_default();
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) if ip.is_unspecified() => "127.0.0.1",
        Ok(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => "[::1]",
        _ => return url.to_string(),
    };
    match parsed.set_host(Some(loopback)) {
        Ok(()) => parsed.to_string(),
        Err(_) => url.to_string(),
    }
}

/// `url` without its password, for messages and logs.
fn shown(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// `text` with Redis's glob characters escaped, so that `SCAN MATCH` takes it literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisKv {
    /// A provider with no links yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What `link` was put with.
    fn link(&self, link: &LinkId) -> Result<Linked, ProviderError> {
        self.links
            .lock()
            .expect("not poisoned")
            .get(link)
            .cloned()
            .ok_or_else(|| ProviderError::UnknownLink(link.to_string()))
    }

    async fn bucket(&self, link: &LinkId, bucket: &str) -> Result<Bucket, ProviderError> {
        // A guest names only buckets its own link opened: the host passes back what `open`
        // returned, and this checks it again.
        let linked = self.link(link)?;
        if linked.bucket != bucket {
            return Err(ProviderError::AccessDenied);
        }
        let connection = self.connect(&linked.url).await?;
        Ok(Bucket {
            connection,
            prefix: format!("{bucket}:"),
            url: linked.url,
        })
    }

    /// The connection to `url`, made now if no call has made it yet.
    async fn connect(&self, url: &str) -> Result<ConnectionManager, ProviderError> {
        let cell = self
            .connections
            .lock()
            .expect("not poisoned")
            .entry(url.to_string())
            .or_default()
            .clone();
        // Concurrent first calls wait for the same attempt rather than each making one.
        cell.get_or_try_init(|| async {
            let client = redis::Client::open(url).map_err(|e| {
                ProviderError::Other(format!("`{}` is not a Redis URL: {e}", shown(url)))
            })?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                // Each attempt is bounded by the timeout around them all; one retry rides out
                // a Redis that is just starting.
                .set_number_of_retries(1);
            let unreachable = |why: String| {
                ProviderError::Other(format!(
                    "cannot reach Redis at {} ({why}): start it there, or fix the link's `url` \
                     (target config; default {DEFAULT_URL})",
                    shown(url)
                ))
            };
            match tokio::time::timeout(
                CONNECT_TIMEOUT,
                ConnectionManager::new_with_config(client, config),
            )
            .await
            {
                Ok(Ok(manager)) => Ok(manager),
                Ok(Err(e)) => Err(unreachable(e.to_string())),
                Err(_) => Err(unreachable(format!(
                    "no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))),
            }
        })
        .await
        .cloned()
    }
}

async fn get(bucket: &Bucket, key: &str) -> Result<Option<Vec<u8>>, ProviderError> {
    redis::cmd("GET")
        .arg(bucket.key(key))
        .query_async(&mut bucket.connection.clone())
        .await
        .map_err(|e| bucket.error(&format!("get `{key}`"), &e))
}

async fn exists(bucket: &Bucket, key: &str) -> Result<bool, ProviderError> {
    redis::cmd("EXISTS")
        .arg(bucket.key(key))
        .query_async(&mut bucket.connection.clone())
        .await
        .map_err(|e| bucket.error(&format!("exists `{key}`"), &e))
}

async fn set(bucket: &Bucket, key: &str, value: &[u8]) -> Result<(), ProviderError> {
    redis::cmd("SET")
        .arg(bucket.key(key))
        .arg(value)
        .query_async::<()>(&mut bucket.connection.clone())
        .await
        .map_err(|e| bucket.error(&format!("set `{key}`"), &e))
}

async fn delete(bucket: &Bucket, keys: &[String]) -> Result<(), ProviderError> {
    // `DEL` with no key is a syntax error; deleting nothing is not.
    if keys.is_empty() {
        return Ok(());
    }
    let what = match keys {
        [key] => format!("delete `{key}`"),
        _ => format!("delete {} keys", keys.len()),
    };
    let full: Vec<String> = keys.iter().map(|k| bucket.key(k)).collect();
    redis::cmd("DEL")
        .arg(full)
        .query_async::<()>(&mut bucket.connection.clone())
        .await
        .map_err(|e| bucket.error(&what, &e))
}

async fn increment(bucket: &Bucket, key: &str, delta: u64) -> Result<u64, ProviderError> {
    let what = format!("increment `{key}`");
    // Redis counts in i64: a larger delta cannot be added, and says so rather than wrapping.
    let delta = i64::try_from(delta).map_err(|_| {
        ProviderError::Other(format!(
            "{what}: Redis counters go up to {}, and {delta} is more",
            i64::MAX
        ))
    })?;
    let next: i64 = redis::cmd("INCRBY")
        .arg(bucket.key(key))
        .arg(delta)
        .query_async(&mut bucket.connection.clone())
        .await
        .map_err(|e| match e.kind() {
            // "value is not an integer or out of range", "would overflow": the value's fault.
            redis::ErrorKind::Server(_) if !unreachable(&e) => ProviderError::Other(format!(
                "{what}: its value is not a decimal number, or the sum overflows ({e})"
            )),
            _ => bucket.error(&what, &e),
        })?;
    // Only a value someone else wrote below zero gets here: wasi:keyvalue counters are u64.
    u64::try_from(next).map_err(|_| {
        ProviderError::Other(format!(
            "{what}: it is {next}, below zero, which wasi:keyvalue cannot return"
        ))
    })
}

async fn list_keys(bucket: &Bucket, cursor: Option<u64>) -> Result<Reply, ProviderError> {
    let pattern = format!("{}*", glob_escape(&bucket.prefix));
    let mut connection = bucket.connection.clone();
    let mut keys: Vec<String> = Vec::new();
    let mut scan: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(scan)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut connection)
            .await
            .map_err(|e| bucket.error("listing keys", &e))?;
        keys.extend(
            batch
                .into_iter()
                .filter_map(|k| k.strip_prefix(&bucket.prefix).map(str::to_string)),
        );
        if next == 0 {
            break;
        }
        scan = next;
    }
    // The cursor is an offset into the sorted keys: stable while the bucket is unchanged.
    // `SCAN` may return a key twice (when Redis rehashes meanwhile), hence the dedup.
    keys.sort_unstable();
    keys.dedup();
    let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
    let page: Vec<String> = keys.iter().skip(start).take(PAGE).cloned().collect();
    let next = start.saturating_add(page.len());
    Ok(Reply::Keys {
        cursor: (next < keys.len()).then_some(next as u64),
        keys: page,
    })
}

async fn get_many(bucket: &Bucket, keys: Vec<String>) -> Result<Reply, ProviderError> {
    // `MGET` with no key is a syntax error; getting nothing is not.
    if keys.is_empty() {
        return Ok(Reply::Values(Vec::new()));
    }
    let full: Vec<String> = keys.iter().map(|k| bucket.key(k)).collect();
    let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(full)
        .query_async(&mut bucket.connection.clone())
        .await
        .map_err(|e| bucket.error(&format!("get {} keys", keys.len()), &e))?;
    Ok(Reply::Values(
        keys.into_iter()
            .zip(values)
            .map(|(key, value)| value.map(|v| (key, v.into())))
            .collect(),
    ))
}

async fn set_many(
    bucket: &Bucket,
    entries: &[(String, impl AsRef<[u8]>)],
) -> Result<(), ProviderError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut command = redis::cmd("MSET");
    for (key, value) in entries {
        command.arg(bucket.key(key)).arg(value.as_ref());
    }
    command
        .query_async::<()>(&mut bucket.connection.clone())
        .await
        .map_err(|e| bucket.error(&format!("set {} keys", entries.len()), &e))
}

#[async_trait]
impl Provider for RedisKv {
    fn name(&self) -> &str {
        NAME
    }

    async fn link_put(&self, link: LinkInfo) -> Result<(), ProviderError> {
        let config = |key: &str| link.target_config.get(key).cloned();
        // wasmCloud's provider read `URL`; wadm manifests written for it keep that spelling.
        let url = config("url")
            .or_else(|| config("URL"))
            .map(|url| loopback_for_wildcard(&url))
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        // A URL that cannot be one is the link's mistake: say so now, not on every call.
        redis::Client::open(url.as_str()).map_err(|e| {
            ProviderError::Other(format!(
                "link {}: target config `url` `{}` is not a Redis URL (redis://host:port/db): {e}",
                link.id,
                shown(&url)
            ))
        })?;
        let linked = Linked {
            bucket: config("bucket").unwrap_or_else(|| link.id.app.to_string()),
            name: link.id.name.clone(),
            url,
        };
        self.links
            .lock()
            .expect("not poisoned")
            .insert(link.id, linked);
        Ok(())
    }

    async fn link_del(&self, link: &LinkId) {
        let mut links = self.links.lock().expect("not poisoned");
        let Some(gone) = links.remove(link) else {
            return;
        };
        // The last link to a Redis takes its connection along (it closes once calls still
        // using it finish).
        if !links.values().any(|l| l.url == gone.url) {
            self.connections
                .lock()
                .expect("not poisoned")
                .remove(&gone.url);
        }
    }

    async fn call(&self, link: &LinkId, call: Call) -> Result<Reply, ProviderError> {
        match call {
            Call::KvOpen { identifier } => {
                let Linked { bucket, name, .. } = self.link(link)?;
                if [bucket.as_str(), name.as_str(), "", "default"].contains(&identifier.as_str()) {
                    Ok(Reply::Bucket(bucket))
                } else {
                    Err(ProviderError::NoSuchStore)
                }
            }
            Call::KvGet { bucket, key } => {
                let bucket = self.bucket(link, &bucket).await?;
                Ok(Reply::Value(get(&bucket, &key).await?.map(Into::into)))
            }
            Call::KvSet { bucket, key, value } => {
                let bucket = self.bucket(link, &bucket).await?;
                set(&bucket, &key, &value).await.map(|()| Reply::Unit)
            }
            Call::KvDelete { bucket, key } => {
                let bucket = self.bucket(link, &bucket).await?;
                delete(&bucket, &[key]).await.map(|()| Reply::Unit)
            }
            Call::KvExists { bucket, key } => {
                let bucket = self.bucket(link, &bucket).await?;
                exists(&bucket, &key).await.map(Reply::Bool)
            }
            Call::KvListKeys { bucket, cursor } => {
                list_keys(&self.bucket(link, &bucket).await?, cursor).await
            }
            Call::KvIncrement { bucket, key, delta } => {
                let bucket = self.bucket(link, &bucket).await?;
                increment(&bucket, &key, delta).await.map(Reply::Number)
            }
            Call::KvGetMany { bucket, keys } => {
                get_many(&self.bucket(link, &bucket).await?, keys).await
            }
            Call::KvSetMany { bucket, entries } => {
                let bucket = self.bucket(link, &bucket).await?;
                set_many(&bucket, &entries).await.map(|()| Reply::Unit)
            }
            Call::KvDeleteMany { bucket, keys } => {
                let bucket = self.bucket(link, &bucket).await?;
                delete(&bucket, &keys).await.map(|()| Reply::Unit)
            }
            other => Err(unsupported(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_mean_loopback() {
        assert_eq!(
            loopback_for_wildcard("redis://0.0.0.0:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            loopback_for_wildcard("redis://:secret@0.0.0.0:6380/2"),
            "redis://:secret@127.0.0.1:6380/2"
        );
        assert_eq!(
            loopback_for_wildcard("redis://[::]:6379"),
            "redis://[::1]:6379"
        );
        for kept in ["redis://10.1.2.3:6379", "redis://cache:6379", "not a url"] {
            assert_eq!(loopback_for_wildcard(kept), kept);
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            shown("redis://app:s3cret@db:6379/0"),
            "redis://app:***@db:6379/0"
        );
        assert_eq!(shown("redis://:s3cret@db"), "redis://:***@db");
        assert_eq!(shown("redis://db:6379"), "redis://db:6379");
        assert_eq!(shown("redis://user@db"), "redis://user@db");
        assert_eq!(shown("not a url"), "not a url");
    }

    #[test]
    fn bucket_prefixes_match_literally() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
