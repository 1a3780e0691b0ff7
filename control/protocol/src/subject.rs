//! Every NATS subject and JetStream name Lattice uses is built and parsed here, and nowhere else.
//!
//! ```text
//! lattice.<lattice>.ctl.<verb>                  control-plane API (request/reply, queue group)
//! lattice.<lattice>.evt.heartbeat.<host>        host heartbeats with their inventory
//! lattice.<lattice>.evt.control                 what the control plane did and saw (`ctl watch`;
//!                                               kept in the stream `LATTICE_<lattice>_events`)
//! lattice.<lattice>.rpc.<app>.<component>       calls to a component's exports (queue group)
//! lattice.<lattice>.prov.<host>.<provider>      a host's calls to a provider process it runs
//! lattice.<lattice>.q.<app>.<component>         queued calls to a component (queue stream)
//! lattice.<lattice>.q.@msg.<subject>            queued messages for a NATS subject (queue stream)
//! lattice.<lattice>.q.>                         the queue stream's subjects
//! lattice.<lattice>.dlq.<app>.<component>       a component's dead letters (dead-letter stream)
//! lattice.<lattice>.dlq.>                       the dead-letter stream's subjects
//! ```
//!
//! Queued messages sit under [`MESSAGE_TOKEN`], which no app can be named, so a message subject
//! never reads as an app's calls. Their NATS subject keeps its dots; as a consumer's filter it
//! may hold the wildcards `*` and `>`.
//!
//! JetStream buckets are named `LATTICE_<lattice>_<purpose>`; lattice names are restricted to
//! `[A-Za-z0-9_-]` by [`crate::names`], so every bucket name is valid.

use std::fmt;

use crate::names::{AppName, ComponentName, HostId, LatticeName};

const ROOT: &str = "lattice";

/// The token after `q.` under which queued messages travel: not a valid app name (app names
/// hold only letters, digits, `-` and `_`), so it never collides with [`Subject::QueuedCalls`].
pub const MESSAGE_TOKEN: &str = "@msg";

/// A control-plane API verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtlVerb {
    /// Store a manifest as a new version and reconcile it.
    Deploy,
    /// Remove an app.
    Undeploy,
    /// List apps.
    Apps,
    /// One app's status.
    Status,
    /// List hosts.
    Hosts,
    /// An app's stored versions.
    History,
    /// An app's stored manifest, its secrets redacted.
    Manifest,
    /// Make a stored version the desired one again.
    Rollback,
    /// One host's latest report.
    Inventory,
    /// Stop a host gracefully.
    StopHost,
    /// Change a component's instance count (a new app version).
    Scale,
    /// Set or remove host labels.
    Label,
    /// Queued links: outboxes, in flight, dead-lettered.
    Queues,
    /// A queued link's dead letters.
    DeadLetters,
    /// Put dead letters back in their queue.
    Requeue,
    /// Admit a host, or revoke its admission.
    Admission,
    /// Add a user to the role table (or change its grant).
    UsersAdd,
    /// List the role table.
    UsersList,
    /// Remove a user from the role table.
    UsersRemove,
    /// Store a named config.
    ConfigPut,
    /// Read a named config.
    ConfigGet,
    /// Remove a named config.
    ConfigDel,
    /// List the named configs.
    ConfigList,
}

impl CtlVerb {
    const ALL: [CtlVerb; 23] = [
        CtlVerb::Deploy,
        CtlVerb::Undeploy,
        CtlVerb::Apps,
        CtlVerb::Status,
        CtlVerb::Hosts,
        CtlVerb::History,
        CtlVerb::Manifest,
        CtlVerb::Rollback,
        CtlVerb::Inventory,
        CtlVerb::StopHost,
        CtlVerb::Scale,
        CtlVerb::Label,
        CtlVerb::Queues,
        CtlVerb::DeadLetters,
        CtlVerb::Requeue,
        CtlVerb::Admission,
        CtlVerb::UsersAdd,
        CtlVerb::UsersList,
        CtlVerb::UsersRemove,
        CtlVerb::ConfigPut,
        CtlVerb::ConfigGet,
        CtlVerb::ConfigDel,
        CtlVerb::ConfigList,
    ];

    /// The verb as it appears in its subject (and in a signed request).
    pub fn as_str(self) -> &'static str {
        match self {
            CtlVerb::Deploy => "deploy",
            CtlVerb::Undeploy => "undeploy",
            CtlVerb::Apps => "apps",
            CtlVerb::Status => "status",
            CtlVerb::Hosts => "hosts",
            CtlVerb::History => "history",
            CtlVerb::Manifest => "manifest",
            CtlVerb::Rollback => "rollback",
            CtlVerb::Inventory => "inventory",
            CtlVerb::StopHost => "stop_host",
            CtlVerb::Scale => "scale",
            CtlVerb::Label => "label",
            CtlVerb::Queues => "queues",
            CtlVerb::DeadLetters => "deadletters",
            CtlVerb::Requeue => "requeue",
            CtlVerb::Admission => "admission",
            CtlVerb::UsersAdd => "users_add",
            CtlVerb::UsersList => "users_list",
            CtlVerb::UsersRemove => "users_remove",
            CtlVerb::ConfigPut => "config_put",
            CtlVerb::ConfigGet => "config_get",
            CtlVerb::ConfigDel => "config_del",
            CtlVerb::ConfigList => "config_list",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A concrete subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// `lattice.<lattice>.ctl.<verb>`
    Ctl {
        /// The lattice.
        lattice: LatticeName,
        /// The verb.
        verb: CtlVerb,
    },
    /// `lattice.<lattice>.evt.control`: what the control plane did and saw.
    Events {
        /// The lattice.
        lattice: LatticeName,
    },
    /// `lattice.<lattice>.evt.heartbeat.<host>`
    Heartbeat {
        /// The lattice.
        lattice: LatticeName,
        /// The host sending it.
        host: HostId,
    },
    /// `lattice.<lattice>.rpc.<app>.<component>`: calls to one component of one app, served by
    /// a queue group of its instances (the subject is also the group's name).
    Rpc {
        /// The lattice.
        lattice: LatticeName,
        /// The app.
        app: AppName,
        /// The called component.
        component: ComponentName,
    },
    /// `lattice.<lattice>.prov.<host>.<provider>`: a host's requests to a provider process it
    /// started.
    Provider {
        /// The lattice.
        lattice: LatticeName,
        /// The host that runs the provider.
        host: HostId,
        /// The provider (e.g. `keyvalue-redis`).
        provider: ComponentName,
    },
    /// `lattice.<lattice>.q.<app>.<component>`: queued calls to one component of one app, in
    /// the queue stream (the filter of the component's call consumer).
    QueuedCalls {
        /// The lattice.
        lattice: LatticeName,
        /// The app.
        app: AppName,
        /// The called component.
        component: ComponentName,
    },
    /// `lattice.<lattice>.q.@msg.<subject>`: messages queued for NATS subject `subject`; with a
    /// subscription (wildcards allowed), the filter of its consumer.
    QueuedMessages {
        /// The lattice.
        lattice: LatticeName,
        /// The NATS subject (non-empty tokens, no whitespace).
        subject: String,
    },
    /// `lattice.<lattice>.q.>`: every queued call and message (the queue stream's subjects).
    AllQueued {
        /// The lattice.
        lattice: LatticeName,
    },
    /// `lattice.<lattice>.dlq.<app>.<component>`: dead letters of one component of one app.
    DeadLetters {
        /// The lattice.
        lattice: LatticeName,
        /// The app.
        app: AppName,
        /// The component that failed them.
        component: ComponentName,
    },
    /// `lattice.<lattice>.dlq.>`: every dead letter (the dead-letter stream's subjects).
    AllDeadLetters {
        /// The lattice.
        lattice: LatticeName,
    },
}

/// A string that is not a Lattice subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a Lattice subject")]
pub struct SubjectError(pub String);

impl Subject {
    /// The control-plane subject for `verb`.
    pub fn ctl(lattice: &LatticeName, verb: CtlVerb) -> Self {
        Subject::Ctl {
            lattice: lattice.clone(),
            verb,
        }
    }

    /// The heartbeat subject of `host`.
    pub fn heartbeat(lattice: &LatticeName, host: &HostId) -> Self {
        Subject::Heartbeat {
            lattice: lattice.clone(),
            host: host.clone(),
        }
    }

    /// The control plane's event stream of `lattice`.
    pub fn events(lattice: &LatticeName) -> Self {
        Subject::Events {
            lattice: lattice.clone(),
        }
    }

    /// The subject calls to `app`'s `component` go to.
    pub fn rpc(lattice: &LatticeName, app: &AppName, component: &ComponentName) -> Self {
        Subject::Rpc {
            lattice: lattice.clone(),
            app: app.clone(),
            component: component.clone(),
        }
    }

    /// The subject of provider `provider` run by `host`.
    pub fn provider(lattice: &LatticeName, host: &HostId, provider: &ComponentName) -> Self {
        Subject::Provider {
            lattice: lattice.clone(),
            host: host.clone(),
            provider: provider.clone(),
        }
    }

    /// The subject queued calls to `app`'s `component` travel on.
    pub fn queued_calls(lattice: &LatticeName, app: &AppName, component: &ComponentName) -> Self {
        Subject::QueuedCalls {
            lattice: lattice.clone(),
            app: app.clone(),
            component: component.clone(),
        }
    }

    /// The subject a message queued for NATS subject `subject` travels on; with a subscription
    /// (wildcards allowed), the filter of its consumer. The caller checked `subject`
    /// ([`nats_subject_ok`]).
    pub fn queued_messages(lattice: &LatticeName, subject: &str) -> Self {
        Subject::QueuedMessages {
            lattice: lattice.clone(),
            subject: subject.to_string(),
        }
    }

    /// The queue stream's subjects.
    pub fn all_queued(lattice: &LatticeName) -> Self {
        Subject::AllQueued {
            lattice: lattice.clone(),
        }
    }

    /// The subject dead letters of `app`'s `component` are kept on.
    pub fn dead_letters(lattice: &LatticeName, app: &AppName, component: &ComponentName) -> Self {
        Subject::DeadLetters {
            lattice: lattice.clone(),
            app: app.clone(),
            component: component.clone(),
        }
    }

    /// The dead-letter stream's subjects.
    pub fn all_dead_letters(lattice: &LatticeName) -> Self {
        Subject::AllDeadLetters {
            lattice: lattice.clone(),
        }
    }

    /// The lattice the subject belongs to.
    pub fn lattice(&self) -> &LatticeName {
        match self {
            Subject::Ctl { lattice, .. }
            | Subject::Events { lattice }
            | Subject::Heartbeat { lattice, .. }
            | Subject::Rpc { lattice, .. }
            | Subject::Provider { lattice, .. }
            | Subject::QueuedCalls { lattice, .. }
            | Subject::QueuedMessages { lattice, .. }
            | Subject::AllQueued { lattice }
            | Subject::DeadLetters { lattice, .. }
            | Subject::AllDeadLetters { lattice } => lattice,
        }
    }

    /// The wildcard matching every host's heartbeat in `lattice`.
    pub fn all_heartbeats(lattice: &LatticeName) -> String {
        format!("{ROOT}.{lattice}.evt.heartbeat.*")
    }

    /// The wildcard matching every control verb in `lattice`.
    pub fn all_ctl(lattice: &LatticeName) -> String {
        format!("{ROOT}.{lattice}.ctl.*")
    }

    /// The wildcard matching every event in `lattice`: heartbeats and the control plane's.
    pub fn all_events(lattice: &LatticeName) -> String {
        format!("{ROOT}.{lattice}.evt.>")
    }

    /// The wildcard matching every component call in `lattice`.
    pub fn all_rpc(lattice: &LatticeName) -> String {
        format!("{ROOT}.{lattice}.rpc.>")
    }

    /// The wildcard matching the calls to every provider process `host` runs.
    pub fn all_provider_calls(lattice: &LatticeName, host: &HostId) -> String {
        format!("{ROOT}.{lattice}.prov.{host}.>")
    }

    /// Parses a subject received from NATS.
    pub fn parse(s: &str) -> Result<Self, SubjectError> {
        let err = || SubjectError(s.to_string());
        let parts: Vec<&str> = s.split('.').collect();
        let (&root, rest) = parts.split_first().ok_or_else(err)?;
        if root != ROOT || rest.is_empty() {
            return Err(err());
        }
        let lattice = LatticeName::new(rest[0]).map_err(|_| err())?;
        match &rest[1..] {
            ["ctl", verb] => Ok(Subject::Ctl {
                lattice,
                verb: CtlVerb::parse(verb).ok_or_else(err)?,
            }),
            ["evt", "control"] => Ok(Subject::Events { lattice }),
            ["evt", "heartbeat", host] => Ok(Subject::Heartbeat {
                lattice,
                host: HostId::new(*host).map_err(|_| err())?,
            }),
            ["rpc", app, component] => Ok(Subject::Rpc {
                lattice,
                app: AppName::new(*app).map_err(|_| err())?,
                component: ComponentName::new(*component).map_err(|_| err())?,
            }),
            ["prov", host, provider] => Ok(Subject::Provider {
                lattice,
                host: HostId::new(*host).map_err(|_| err())?,
                provider: ComponentName::new(*provider).map_err(|_| err())?,
            }),
            ["q", ">"] => Ok(Subject::AllQueued { lattice }),
            ["q", token, subject @ ..] if *token == MESSAGE_TOKEN => {
                let subject = subject.join(".");
                nats_subject_ok(&subject)
                    .then_some(Subject::QueuedMessages { lattice, subject })
                    .ok_or_else(err)
            }
            ["q", app, component] => Ok(Subject::QueuedCalls {
                lattice,
                app: AppName::new(*app).map_err(|_| err())?,
                component: ComponentName::new(*component).map_err(|_| err())?,
            }),
            ["dlq", ">"] => Ok(Subject::AllDeadLetters { lattice }),
            ["dlq", app, component] => Ok(Subject::DeadLetters {
                lattice,
                app: AppName::new(*app).map_err(|_| err())?,
                component: ComponentName::new(*component).map_err(|_| err())?,
            }),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Ctl { lattice, verb } => write!(f, "{ROOT}.{lattice}.ctl.{}", verb.as_str()),
            Subject::Events { lattice } => write!(f, "{ROOT}.{lattice}.evt.control"),
            Subject::Heartbeat { lattice, host } => {
                write!(f, "{ROOT}.{lattice}.evt.heartbeat.{host}")
            }
            Subject::Rpc {
                lattice,
                app,
                component,
            } => write!(f, "{ROOT}.{lattice}.rpc.{app}.{component}"),
            Subject::Provider {
                lattice,
                host,
                provider,
            } => write!(f, "{ROOT}.{lattice}.prov.{host}.{provider}"),
            Subject::QueuedCalls {
                lattice,
                app,
                component,
            } => write!(f, "{ROOT}.{lattice}.q.{app}.{component}"),
            Subject::QueuedMessages { lattice, subject } => {
                write!(f, "{ROOT}.{lattice}.q.{MESSAGE_TOKEN}.{subject}")
            }
            Subject::AllQueued { lattice } => write!(f, "{ROOT}.{lattice}.q.>"),
            Subject::DeadLetters {
                lattice,
                app,
                component,
            } => write!(f, "{ROOT}.{lattice}.dlq.{app}.{component}"),
            Subject::AllDeadLetters { lattice } => write!(f, "{ROOT}.{lattice}.dlq.>"),
        }
    }
}

/// Whether `subject` can follow [`MESSAGE_TOKEN`]: one or more non-empty tokens, no whitespace
/// or control characters (wildcards are allowed: a subscription is a consumer's filter).
pub fn nats_subject_ok(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|t| !t.is_empty())
        && !subject.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The queue group the control plane's API listeners join, so that one instance answers.
pub const CONTROL_QUEUE_GROUP: &str = "lattice-control";

/// JetStream names of one lattice.
#[derive(Debug, Clone)]
pub struct Buckets {
    lattice: LatticeName,
}

impl Buckets {
    /// The buckets of `lattice`.
    pub fn new(lattice: &LatticeName) -> Self {
        Self {
            lattice: lattice.clone(),
        }
    }

    fn name(&self, purpose: &str) -> String {
        format!("LATTICE_{}_{purpose}", self.lattice)
    }

    /// KV: app name -> the app's stored versions.
    pub fn manifests(&self) -> String {
        self.name("manifests")
    }

    /// KV: host id -> its signed assignment.
    pub fn assignments(&self) -> String {
        self.name("assignments")
    }

    /// KV: the control planes' leader lease.
    pub fn control(&self) -> String {
        self.name("control")
    }

    /// KV: host id -> whether it is admitted, and how
    /// ([`HostAdmission`](crate::messages::HostAdmission)).
    pub fn hosts(&self) -> String {
        self.name("hosts")
    }

    /// KV: host id -> label changes made with `lattice ctl label`.
    pub fn labels(&self) -> String {
        self.name("labels")
    }

    /// KV: user key (`U...`) -> its grant: the role table of `lattice ctl users`.
    pub fn users(&self) -> String {
        self.name("users")
    }

    /// KV: config name -> its values: the named configs of `lattice ctl config`, which
    /// manifests take by name.
    pub fn configs(&self) -> String {
        self.name("configs")
    }

    /// KV: `name:version` tag -> digest of a pushed artifact.
    pub fn tags(&self) -> String {
        self.name("tags")
    }

    /// KV: host id -> the host's last clock probe, whose server timestamp is the hub's time.
    pub fn clocks(&self) -> String {
        self.name("clocks")
    }

    /// KV: host id -> its [`SignedMembership`](crate::membership::SignedMembership): the
    /// hosts of the lattice, which every host may read (unlike their assignments).
    pub fn members(&self) -> String {
        self.name("members")
    }

    /// Object store: artifacts by digest hex.
    pub fn artifacts(&self) -> String {
        self.name("artifacts")
    }

    /// Stream: the control plane's events ([`Subject::events`]), kept for `lattice ctl watch
    /// --since`.
    pub fn events(&self) -> String {
        self.name("events")
    }
}

/// The stream holding KV bucket `bucket`.
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The subject key `key` of KV bucket `bucket` is stored on: what a watch of that one key
/// filters on, and what a direct get of it names.
pub fn kv_key_subject(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// Turns a tag `name:version` into a KV key (KV keys may not contain `:`).
pub fn tag_key(tag: &str) -> Option<String> {
    let (name, version) = tag.split_once(':')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (ok(name) && ok(version) && !name.contains('.')).then(|| format!("{name}.{version}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,20}"
    }

    /// NATS subjects a component may publish or subscribe to: tokens, wildcards included.
    fn nats_subject() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_@*>-]{1,8}(\\.[A-Za-z0-9_@*>-]{1,8}){0,3}"
    }

    proptest! {
        // Invariant: every subject we build parses back to itself.
        #[test]
        fn subjects_round_trip(l in name(), h in name(), v in 0usize..CtlVerb::ALL.len()) {
            let (app, component) = (AppName::new(h.clone()).expect("valid"), ComponentName::new(l.clone()).expect("valid"));
            let lattice = LatticeName::new(l).expect("valid");
            let host = HostId::new(h).expect("valid");
            for s in [Subject::ctl(&lattice, CtlVerb::ALL[v]), Subject::heartbeat(&lattice, &host), Subject::events(&lattice), Subject::rpc(&lattice, &app, &component), Subject::provider(&lattice, &host, &component)] {
                prop_assert_eq!(Subject::parse(&s.to_string()).expect("parses"), s);
            }
        }

        // Invariant: every queue and dead-letter subject we build parses back to itself, and
        // its lattice is the one it was built for.
        #[test]
        fn queue_subjects_round_trip(l in name(), h in name(), nats in nats_subject()) {
            let (app, component) = (AppName::new(h).expect("valid"), ComponentName::new(l.clone()).expect("valid"));
            let lattice = LatticeName::new(l).expect("valid");
            for s in [Subject::queued_calls(&lattice, &app, &component), Subject::queued_messages(&lattice, &nats), Subject::all_queued(&lattice), Subject::dead_letters(&lattice, &app, &component), Subject::all_dead_letters(&lattice)] {
                let back = Subject::parse(&s.to_string()).expect("parses");
                prop_assert_eq!(back.lattice(), &lattice);
                prop_assert_eq!(back, s);
            }
        }

        // Invariant: arbitrary strings never panic the parser, and what parses re-renders identically.
        #[test]
        fn parse_is_total(s in ".{0,60}") {
            if let Ok(subject) = Subject::parse(&s) {
                prop_assert_eq!(subject.to_string(), s);
            }
        }
    }

    #[test]
    fn refuses_foreign_subjects() {
        for bad in [
            "",
            "lattice",
            "wasmbus.ctl.x",
            "lattice.a.ctl.explode",
            "lattice.a.evt.heartbeat.*",
            "lattice.a b.ctl.deploy",
            "lattice.a.q.app",
            "lattice.a.q.@msg",
            "lattice.a.q.@msg.orders..new",
            "lattice.a.q.@msg.orders new",
            "lattice.a.dlq.app",
            "lattice.a.dlq.app.*",
        ] {
            assert!(Subject::parse(bad).is_err(), "{bad}");
        }
    }

    /// The forms operators and other NATS clients see, byte for byte.
    #[test]
    fn queue_subjects_read_as_before() {
        let l = LatticeName::new("edge").expect("valid");
        let (app, sink) = (
            AppName::new("app").expect("valid"),
            ComponentName::new("sink").expect("valid"),
        );
        for (s, text) in [
            (
                Subject::queued_calls(&l, &app, &sink),
                "lattice.edge.q.app.sink",
            ),
            (
                Subject::queued_messages(&l, "orders.>"),
                "lattice.edge.q.@msg.orders.>",
            ),
            (Subject::all_queued(&l), "lattice.edge.q.>"),
            (
                Subject::dead_letters(&l, &app, &sink),
                "lattice.edge.dlq.app.sink",
            ),
            (Subject::all_dead_letters(&l), "lattice.edge.dlq.>"),
        ] {
            assert_eq!(s.to_string(), text);
        }
    }

    /// Invariant: no app name can make its call subject a message subject.
    #[test]
    fn the_message_token_is_no_app_name() {
        assert!(crate::names::validate_name("app", MESSAGE_TOKEN).is_err());
        assert!(matches!(
            Subject::parse("lattice.edge.q.@msg.sink"),
            Ok(Subject::QueuedMessages { .. })
        ));
    }

    #[test]
    fn tags_become_keys() {
        assert_eq!(tag_key("hello:0.1.0").as_deref(), Some("hello.0.1.0"));
        assert_eq!(tag_key("hello"), None);
        assert_eq!(tag_key("he.llo:1"), None);
        assert_eq!(tag_key("a:b c"), None);
    }
}
