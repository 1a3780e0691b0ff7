//! The nats-server authorization of a lattice, derived from [`crate::subject`]: one NATS account
//! per lattice, and in it one user per identity with the subjects its role needs.
//!
//! ```text
//! account LATTICE_<lattice>          (JetStream on; other lattices are other accounts)
//!   control plane  O... as U...      ctl.* (serve), evt.heartbeat.* (read), evt.control, every
//!                                    lattice stream and bucket
//!   host           N... as U...      its own heartbeat, rpc.>, q.>, dlq.>, prov.<itself>.> (its
//!                                    provider processes connect as it), the queue streams and
//!                                    buckets, the clocks key of its own, reading its own
//!                                    assignment, the members and artifacts; never ctl,
//!                                    manifests, users, configs, admissions, labels
//!   operator       U...              ctl.* (requests), evt.> (watch), reading the events stream
//!                                    (`watch --since`), pushing artifacts and tags
//!   leaf link      user + password   the account as a whole (the leaf enforces its users' rights)
//! ```
//!
//! Each user subscribes only to replies under its own inbox prefix ([`inbox_prefix`]), which
//! Lattice clients authenticating with a key set; answering a request goes through
//! `allow_responses` (a reply only to a message received), never through `_INBOX.>`.
//!
//! JetStream API requests are allowed per stream: a request about stream `S` is one of
//! `$JS.API.<a>.<b>.S[.…]` or `$JS.API.<a>.<b>.<c>.S[.…]` (`STREAM.INFO.S`, `DIRECT.GET.S.<subject>`,
//! `CONSUMER.CREATE.S[.<name>.<filter>]`, `STREAM.MSG.GET.S`, `CONSUMER.MSG.NEXT.S.<consumer>`);
//! with a JetStream domain the prefix is `$JS.<domain>.API` as well.
//!
//! A host reads only its own assignment: a watch whose consumer names the key filter in the
//! request's subject (`CONSUMER.CREATE.<stream>.<name>.<filter>`, which the host's watcher
//! sends; nats-server 2.9 and later refuse a body whose filter differs) and a direct get of
//! its own key; never a consumer whose filter is only in the body, nor `STREAM.MSG.GET`. What
//! one host reads of the others is their signed membership (`crate::membership`, the members
//! bucket), for the queue's sender check. No host may write any assignment or membership.

mod nkey;
mod render;

use std::collections::BTreeSet;

pub use nkey::{inbox_prefix, user_nkey, user_seed};
pub use render::{LeafLink, account_name, render_account, render_leaf};

use crate::keys::{KeyRole, PublicKey};
use crate::names::{HostId, LatticeName};
use crate::queue;
use crate::subject::{Buckets, Subject, kv_key_subject, kv_stream};

/// What `lattice nats authz` is asked for: the identities of one lattice.
#[derive(Debug, Clone)]
pub struct LatticeAuthz {
    /// The lattice.
    pub lattice: LatticeName,
    /// Control planes (`O...`).
    pub control: Vec<PublicKey>,
    /// Hosts (`N...`).
    pub hosts: Vec<PublicKey>,
    /// Operators (`U...`): people and scripts using `lattice ctl` and `lattice push`.
    pub operators: Vec<PublicKey>,
    /// The hub's JetStream domain, when hosts on leaf nodes reach it by domain.
    pub js_domain: Option<String>,
    /// NATS subjects components publish and subscribe to through the messaging capability or a
    /// messaging provider (e.g. `orders.>`); granted to hosts.
    pub app_subjects: Vec<String>,
    /// KV buckets components use through the key-value capability or provider, and object
    /// stores of `blobstore-nats` links (its `bucket`); granted to hosts.
    pub app_buckets: Vec<String>,
}

/// A user's role in the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A control plane.
    Control,
    /// A host, and the provider processes it starts (they connect as it).
    Host(HostId),
    /// An operator.
    Operator,
}

/// One NATS user: its nkey and what it may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUser {
    /// The user nkey (`U...`) it authenticates with.
    pub nkey: String,
    /// Its role.
    pub role: Role,
    /// Subjects it may publish to.
    pub publish: BTreeSet<String>,
    /// Subjects it may not publish to even where `publish` would allow.
    pub publish_deny: BTreeSet<String>,
    /// Subjects it may subscribe to.
    pub subscribe: BTreeSet<String>,
    /// Whether it may reply to requests it received.
    pub allow_responses: bool,
}

/// Why an authorization cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// A key of the wrong role where a role is required.
    #[error(
        "{key} is not a {expected} key (it starts with {found}); give {expected} keys as --{flag}"
    )]
    WrongRole {
        /// The key.
        key: String,
        /// The role needed.
        expected: &'static str,
        /// Its first letter.
        found: char,
        /// The flag it belongs to.
        flag: &'static str,
    },
    /// No control plane key: nothing could serve the lattice.
    #[error("no control-plane key: give the control plane's public key (O...) with --control-key")]
    NoControl,
    /// A subject or bucket name that is not one.
    #[error("`{0}` is not a NATS subject or bucket name (no spaces, no empty tokens)")]
    BadName(String),
}

impl LatticeAuthz {
    /// Checks the keys' roles and the app names.
    pub fn check(&self) -> Result<(), AuthzError> {
        if self.control.is_empty() {
            return Err(AuthzError::NoControl);
        }
        for (keys, role, flag) in [
            (&self.control, KeyRole::Operator, "control-key"),
            (&self.hosts, KeyRole::Host, "host-key"),
            (&self.operators, KeyRole::User, "user-key"),
        ] {
            if let Some(key) = keys.iter().find(|k| k.role() != role) {
                return Err(AuthzError::WrongRole {
                    key: key.to_string(),
                    expected: role.name(),
                    found: key.role().prefix(),
                    flag,
                });
            }
        }
        let names = self.app_subjects.iter().chain(&self.app_buckets);
        if let Some(bad) = names
            .into_iter()
            .find(|s| !crate::subject::nats_subject_ok(s))
        {
            return Err(AuthzError::BadName(bad.clone()));
        }
        Ok(())
    }

    /// Every user of the lattice's account.
    pub fn users(&self) -> Vec<NatsUser> {
        let control = self.control.iter().map(|k| self.control_user(k));
        // Every host key is a valid host id (`PublicKey` parses only valid keys).
        let hosts = self
            .hosts
            .iter()
            .filter_map(|k| Some(self.host_user(k, HostId::new(k.to_string()).ok()?)));
        let operators = self.operators.iter().map(|k| self.operator_user(k));
        control.chain(hosts).chain(operators).collect()
    }

    /// The JetStream API prefixes users send requests with.
    fn api_prefixes(&self) -> Vec<String> {
        let mut prefixes = vec!["$JS.API".to_string()];
        if let Some(domain) = &self.js_domain {
            prefixes.push(format!("$JS.{domain}.API"));
        }
        prefixes
    }

    /// Every API request about `stream`, under every prefix.
    fn stream_api(&self, stream: &str) -> Vec<String> {
        self.api_prefixes()
            .iter()
            .flat_map(|p| {
                [
                    format!("{p}.*.*.{stream}"),
                    format!("{p}.*.*.{stream}.>"),
                    format!("{p}.*.*.*.{stream}"),
                    format!("{p}.*.*.*.{stream}.>"),
                ]
            })
            .collect()
    }

    /// The API requests that change or remove `stream` or its messages.
    fn stream_admin(&self, stream: &str, also_update: bool) -> Vec<String> {
        let mut ops = vec!["STREAM.DELETE", "STREAM.PURGE", "STREAM.MSG.DELETE"];
        if also_update {
            ops.extend(["STREAM.CREATE", "STREAM.UPDATE"]);
        }
        self.api_prefixes()
            .iter()
            .flat_map(|p| ops.iter().map(move |op| format!("{p}.{op}.{stream}")))
            .collect()
    }

    /// Account-wide API requests every Lattice client makes (account info).
    fn api_info(&self) -> Vec<String> {
        self.api_prefixes()
            .iter()
            .map(|p| format!("{p}.INFO"))
            .collect()
    }

    fn control_user(&self, key: &PublicKey) -> NatsUser {
        let l = &self.lattice;
        let nkey = user_nkey(key);
        let mut publish: BTreeSet<String> = [
            Subject::events(l).to_string(),
            Subject::all_queued(l).to_string(),
            Subject::all_dead_letters(l).to_string(),
        ]
        .into();
        // The control plane keeps the lattice's state: every stream and bucket of its account.
        publish.extend(self.api_prefixes().iter().map(|p| format!("{p}.>")));
        publish.insert("$JS.ACK.>".into());
        publish.extend(kv_buckets(l).iter().map(|b| kv_subjects(b)));
        publish.insert(object_subjects(&Buckets::new(l).artifacts()));
        NatsUser {
            subscribe: [
                Subject::all_ctl(l),
                Subject::all_heartbeats(l),
                format!("{}.>", inbox_prefix(&nkey)),
            ]
            .into(),
            nkey,
            role: Role::Control,
            publish,
            publish_deny: BTreeSet::new(),
            allow_responses: true,
        }
    }

    fn host_user(&self, key: &PublicKey, host: HostId) -> NatsUser {
        let l = &self.lattice;
        let b = Buckets::new(l);
        let nkey = user_nkey(key);
        let queue_streams = [queue::queue_stream(l), queue::deadletter_stream(l)];
        let queue_buckets = [
            queue::lanes_bucket(l),
            queue::processed_bucket(l),
            queue::leases_bucket(l),
        ];
        let mut publish: BTreeSet<String> = [
            Subject::heartbeat(l, &host).to_string(),
            Subject::all_rpc(l),
            Subject::all_queued(l).to_string(),
            Subject::all_dead_letters(l).to_string(),
            Subject::all_provider_calls(l, &host),
            format!("$KV.{}.{host}", b.clocks()),
        ]
        .into();
        publish.extend(self.api_info());
        for stream in &queue_streams {
            publish.extend(self.stream_api(stream));
            publish.insert(format!("$JS.ACK.{stream}.>"));
        }
        for bucket in queue_buckets.iter().chain(&self.app_buckets) {
            publish.extend(self.stream_api(&format!("KV_{bucket}")));
            publish.insert(kv_subjects(bucket));
        }
        // An app bucket may be a `blobstore-nats` link's object store as well.
        for bucket in &self.app_buckets {
            publish.extend(self.stream_api(&format!("OBJ_{bucket}")));
            publish.insert(object_subjects(bucket));
        }
        // Read only: its own clock key is its only write to these.
        for kv in [b.clocks(), b.members()] {
            publish.extend(self.stream_api(&kv_stream(&kv)));
        }
        publish.extend(self.own_assignment(&host));
        publish.extend(self.stream_api(&format!("OBJ_{}", b.artifacts())));
        publish.extend(self.app_subjects.iter().cloned());
        let mut publish_deny = BTreeSet::new();
        for stream in queue_streams
            .iter()
            .cloned()
            .chain(queue_buckets.iter().map(|b| format!("KV_{b}")))
        {
            publish_deny.extend(self.stream_admin(&stream, false));
        }
        publish_deny.extend(self.stream_admin(&format!("KV_{}", b.clocks()), false));
        publish_deny.extend(self.stream_admin(&format!("KV_{}", b.assignments()), true));
        publish_deny.extend(self.stream_admin(&kv_stream(&b.members()), true));
        publish_deny.extend(self.stream_admin(&format!("OBJ_{}", b.artifacts()), true));
        let mut subscribe: BTreeSet<String> = [
            format!("{}.>", inbox_prefix(&nkey)),
            Subject::all_rpc(l),
            Subject::all_provider_calls(l, &host),
        ]
        .into();
        subscribe.extend(self.app_subjects.iter().cloned());
        NatsUser {
            nkey,
            role: Role::Host(host),
            publish,
            publish_deny,
            subscribe,
            allow_responses: true,
        }
    }

    /// What a host may ask of the assignments stream: its information, a watch of its own key
    /// (the filter in the subject, see `host/src/agent/watch.rs`), and a direct get of its
    /// own key. Nothing that names another host's key, and no consumer without a filter.
    fn own_assignment(&self, host: &HostId) -> Vec<String> {
        let bucket = Buckets::new(&self.lattice).assignments();
        let stream = kv_stream(&bucket);
        let own = kv_key_subject(&bucket, host.as_str());
        self.api_prefixes()
            .iter()
            .flat_map(|p| {
                [
                    format!("{p}.STREAM.INFO.{stream}"),
                    format!("{p}.CONSUMER.CREATE.{stream}.*.{own}"),
                    format!("{p}.DIRECT.GET.{stream}.{own}"),
                ]
            })
            .collect()
    }

    fn operator_user(&self, key: &PublicKey) -> NatsUser {
        let l = &self.lattice;
        let b = Buckets::new(l);
        let nkey = user_nkey(key);
        let mut publish: BTreeSet<String> = [Subject::all_ctl(l)].into();
        publish.extend(self.api_info());
        // `lattice push`: the artifact store and its tags.
        publish.extend(self.stream_api(&format!("OBJ_{}", b.artifacts())));
        publish.extend(self.stream_api(&format!("KV_{}", b.tags())));
        publish.insert(object_subjects(&b.artifacts()));
        publish.insert(kv_subjects(&b.tags()));
        // `ctl watch --since`: reading the events stream, which only the control plane makes.
        publish.extend(self.stream_api(&b.events()));
        let mut publish_deny = BTreeSet::new();
        publish_deny.extend(self.stream_admin(&format!("OBJ_{}", b.artifacts()), false));
        publish_deny.extend(self.stream_admin(&format!("KV_{}", b.tags()), false));
        publish_deny.extend(self.stream_admin(&b.events(), true));
        NatsUser {
            subscribe: [Subject::all_events(l), format!("{}.>", inbox_prefix(&nkey))].into(),
            nkey,
            role: Role::Operator,
            publish,
            publish_deny,
            allow_responses: false,
        }
    }
}

/// The lattice's own KV buckets.
fn kv_buckets(l: &LatticeName) -> Vec<String> {
    let b = Buckets::new(l);
    vec![
        b.manifests(),
        b.assignments(),
        b.members(),
        b.control(),
        b.hosts(),
        b.labels(),
        b.users(),
        b.configs(),
        b.tags(),
        b.clocks(),
        queue::lanes_bucket(l),
        queue::processed_bucket(l),
        queue::leases_bucket(l),
    ]
}

/// The subjects a KV bucket's values are written on.
fn kv_subjects(bucket: &str) -> String {
    format!("$KV.{bucket}.>")
}

/// The subjects an object store's chunks and metadata are written on.
fn object_subjects(bucket: &str) -> String {
    format!("$O.{bucket}.>")
}

#[cfg(test)]
mod tests;
