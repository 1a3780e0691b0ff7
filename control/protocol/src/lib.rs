//! `lattice-protocol` owns the Lattice wire: everything two Lattice processes must agree on.
//!
//! - [`names`]: validated names (lattice, app, component, host, label). Nothing becomes part of
//!   a subject or a JetStream name without passing through one of these types.
//! - [`subject`]: every NATS subject and JetStream bucket name, built and parsed in one place.
//! - [`envelope`]: the versioned MessagePack envelope every message travels in.
//! - [`error`]: typed error codes carried by replies.
//! - [`messages`]: control-plane API requests, replies and host heartbeats.
//! - [`rpc`]: component-to-component calls over NATS. [`provider`]: hosts and capability providers.
//! - [`queue`]: queued (one-way) calls and messages: their streams, headers, envelope, lanes,
//!   bundles and keys; [`queue::ops`] the operator's view of them (outbox stats in heartbeats,
//!   `ctl get queues`, dead letters, requeue). Their subjects are [`subject::Subject`] variants.
//! - [`keys`]: ed25519 keys in nkey form with a role prefix. [`auth`]: signed `lattice ctl`
//!   requests and replies, their freshness, and the role table that authorizes them.
//!   [`signed`]: what hosts say (heartbeats, events), signed by the host, and the join tokens
//!   that admit hosts.
//! - [`permissions`]: the nats-server authorization of a lattice (an account, a user per
//!   control plane, host and operator), derived from [`subject`]; keys as NATS user nkeys.
//! - [`secret`]: config values marked secret, sealed to the key of whoever may read them.
//! - [`claims`]: signed component claims embedded in a custom section, and their verification.
//!   [`code`]: a component's precompiled native code, signed by an issuer for one engine.
//! - [`assignment`]: the signed, revisioned, expiring per-host assignment; [`membership`]: that
//!   a host is one of the lattice, signed, which other hosts may read (unlike its assignment).
//! - `jetstream` (feature `jetstream`): JetStream contexts (with a domain) and creating KV
//!   buckets every supported nats-server accepts; `lease`: leases in KV keys (the control
//!   plane's leader, a queue target's consuming host).
//! - [`clock`]: wall clocks, their tolerated skew and a host's measured offset from the hub.
//! - [`digest`]: `sha256:` content addresses. [`wit`]: a component's imports and exports.
//!
//! The key decision: the two ends of every exchange use the same types from this crate, encoded
//! with [`envelope::encode`] and decoded with [`envelope::decode`], so they cannot drift.
//!
//! ```
//! use lattice_protocol::{envelope, messages::AppRequest, names::{AppName, LatticeName},
//!     subject::{CtlVerb, Subject}};
//! let lattice = LatticeName::new("default")?;
//! let subject = Subject::ctl(&lattice, CtlVerb::Status);
//! assert_eq!(subject.to_string(), "lattice.default.ctl.status");
//! let bytes = envelope::encode(&AppRequest { name: AppName::new("hello")? });
//! let back: AppRequest = envelope::decode(&bytes)?;
//! assert_eq!(back.name.as_str(), "hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod assignment;
pub mod auth;
pub mod claims;
pub mod clock;
pub mod code;
pub mod digest;
pub mod envelope;
pub mod error;
#[cfg(feature = "jetstream")]
pub mod jetstream;
pub mod keys;
#[cfg(feature = "jetstream")]
pub mod lease;
pub mod membership;
pub mod messages;
pub mod names;
pub mod permissions;
pub mod provider;
pub mod queue;
pub mod rpc;
pub mod secret;
pub mod signed;
pub mod subject;
pub mod wit;

/// Seconds since the Unix epoch, from the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
