//! The operator's view of queued delivery: what hosts report about their outboxes (in the
//! heartbeat), and the control-plane API behind `lattice ctl get queues`, `ctl get deadletters`
//! and `ctl requeue`.
//!
//! A link is named `app/source->target` ([`QueueLink`]); commands that act on dead letters also
//! take `app/target`, every sender of that target ([`LinkSelector`]). The streams, headers and
//! envelope these commands read are in [`crate::queue`].
//!
//! ```
//! use lattice_protocol::queue::ops::{LinkSelector, QueueLink};
//! let link: QueueLink = "shop/client -> greeter".parse()?; // the `Lattice-Link` header form
//! assert_eq!(link.to_string(), "shop/client->greeter");
//! let all: LinkSelector = "shop/greeter".parse()?;
//! assert!(all.matches(&link));
//! # Ok::<(), lattice_protocol::queue::ops::LinkParseError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::{AppName, ComponentName, HostId};

/// A queued link: calls from `app`'s `source` to its `target`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueLink {
    /// The app.
    pub app: AppName,
    /// The calling component.
    pub source: ComponentName,
    /// The called component.
    pub target: ComponentName,
}

impl QueueLink {
    /// The form of the `Lattice-Link` header and of the outbox's stream keys:
    /// `app/source -> target`.
    pub fn header_value(&self) -> String {
        format!("{}/{} -> {}", self.app, self.source, self.target)
    }
}

impl fmt::Display for QueueLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}->{}", self.app, self.source, self.target)
    }
}

/// Why a link name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{given}` is not a queued link: write `app/source->target` (one sender) or `app/target` (every sender), as `lattice ctl get queues` shows them{reason}"
)]
pub struct LinkParseError {
    given: String,
    reason: String,
}

impl LinkParseError {
    fn new(given: &str, reason: impl fmt::Display) -> Self {
        let reason = reason.to_string();
        Self {
            given: given.to_string(),
            reason: if reason.is_empty() {
                reason
            } else {
                format!(" ({reason})")
            },
        }
    }
}

impl FromStr for QueueLink {
    type Err = LinkParseError;

    /// Accepts `app/source->target`, with or without spaces around the arrow.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<LinkSelector>()? {
            LinkSelector {
                app,
                source: Some(source),
                target,
            } => Ok(QueueLink {
                app,
                source,
                target,
            }),
            LinkSelector { source: None, .. } => {
                Err(LinkParseError::new(s, "the sending component is missing"))
            }
        }
    }
}

impl TryFrom<String> for QueueLink {
    type Error = LinkParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<QueueLink> for String {
    fn from(value: QueueLink) -> String {
        value.to_string()
    }
}

/// One queued link (`app/source->target`), or every link to a target (`app/target`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LinkSelector {
    /// The app.
    pub app: AppName,
    /// The sender; `None`: every sender.
    pub source: Option<ComponentName>,
    /// The called component.
    pub target: ComponentName,
}

impl LinkSelector {
    /// Whether `link` is selected.
    pub fn matches(&self, link: &QueueLink) -> bool {
        self.app == link.app
            && self.target == link.target
            && self.source.as_ref().is_none_or(|s| *s == link.source)
    }
}

impl From<QueueLink> for LinkSelector {
    fn from(link: QueueLink) -> Self {
        Self {
            app: link.app,
            source: Some(link.source),
            target: link.target,
        }
    }
}

impl fmt::Display for LinkSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}/{source}->{}", self.app, self.target),
            None => write!(f, "{}/{}", self.app, self.target),
        }
    }
}

impl FromStr for LinkSelector {
    type Err = LinkParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &dyn fmt::Display| LinkParseError::new(s, reason);
        let (app, rest) = s.split_once('/').ok_or_else(|| err(&""))?;
        let (source, target) = match rest.split_once("->") {
            Some((source, target)) => (Some(source.trim()), target.trim()),
            None => (None, rest.trim()),
        };
        Ok(LinkSelector {
            app: AppName::new(app.trim()).map_err(|e| err(&e))?,
            source: source
                .map(ComponentName::new)
                .transpose()
                .map_err(|e| err(&e))?,
            target: ComponentName::new(target).map_err(|e| err(&e))?,
        })
    }
}

impl TryFrom<String> for LinkSelector {
    type Error = LinkParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<LinkSelector> for String {
    fn from(value: LinkSelector) -> String {
        value.to_string()
    }
}

/// One queued link's outbox on one host, as the host reports it in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkOutboxStats {
    /// The link.
    pub link: QueueLink,
    /// Calls waiting in this host's outbox.
    pub pending: u64,
    /// How long the oldest waiting call has waited, in milliseconds (`None`: none waits).
    pub oldest_age_ms: Option<u64>,
    /// Calls dropped from the outbox since the host started (full, `on_full: drop_oldest`).
    pub dropped_total: u64,
    /// Calls that expired in the outbox (their `ttl` passed) since the host started.
    pub expired_total: u64,
}

/// `ctl.queues`: one queued link, lattice-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkQueue {
    /// The link.
    pub link: QueueLink,
    /// Messages in the hub's queue stream not yet settled by the target: its durable consumer's
    /// pending plus unacknowledged messages (each one call, or a bundle of a lane's calls; see
    /// "Bundles" in [`crate::queue`]). Counted per target, so every link to the same
    /// target shows the same number. `None`: no consumer yet (the target never ran), or the
    /// hub could not be asked (see `note`).
    pub in_flight: Option<u64>,
    /// Calls of this link in the dead-letter stream.
    pub dead_lettered: u64,
    /// The sending hosts' outboxes (empty when no host reports this link).
    pub hosts: Vec<HostOutbox>,
    /// What could not be read, when something could not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// A link's outbox on one sending host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostOutbox {
    /// The host.
    pub host: HostId,
    /// Its name.
    pub name: String,
    /// What it reported.
    pub stats: LinkOutboxStats,
    /// Seconds since that report.
    pub reported_secs_ago: u64,
}

/// `ctl.deadletters` and `ctl.requeue` without ids: a link's (or a target's) dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLettersRequest {
    /// Which link(s).
    pub link: LinkSelector,
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream.
    pub sequence: u64,
    /// The call's id (kept across requeues).
    pub call_id: String,
    /// The link it was sent on (`None`: the message does not say).
    pub link: Option<QueueLink>,
    /// Unix milliseconds when it was dead-lettered.
    pub at_ms: u64,
    /// Delivery attempts made.
    pub attempts: u32,
    /// The function called, `interface.function` (empty when the call does not decode).
    pub function: String,
    /// The last error.
    pub error: String,
}

/// `ctl.requeue`: put dead letters back in their queue, with fresh attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequeueRequest {
    /// Which link(s).
    pub link: LinkSelector,
    /// Call ids to requeue; empty: all of the link's dead letters.
    pub ids: Vec<String>,
}

/// The answer to a requeue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequeueReply {
    /// Call ids put back in their queue (and removed from the dead-letter stream).
    pub requeued: Vec<String>,
    /// Ids asked for that are not dead letters of the link.
    pub not_found: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_in_both_forms() {
        let link: QueueLink = "app/source->target".parse().expect("valid");
        assert_eq!(link.to_string(), "app/source->target");
        assert_eq!(link.header_value(), "app/source -> target");
        assert_eq!(link.header_value().parse::<QueueLink>(), Ok(link.clone()));
        let bytes = crate::envelope::encode(&link);
        assert_eq!(
            crate::envelope::decode::<QueueLink>(&bytes).ok(),
            Some(link)
        );
    }

    #[test]
    fn a_selector_names_one_sender_or_all() {
        let link: QueueLink = "a/s->t".parse().expect("valid");
        let other: QueueLink = "a/x->t".parse().expect("valid");
        let one: LinkSelector = "a/s->t".parse().expect("valid");
        let all: LinkSelector = "a/t".parse().expect("valid");
        assert!(one.matches(&link) && !one.matches(&other));
        assert!(all.matches(&link) && all.matches(&other));
        assert!(!"b/t".parse::<LinkSelector>().expect("valid").matches(&link));
        assert_eq!(all.to_string(), "a/t");
    }

    #[test]
    fn bad_links_say_how_to_write_one() {
        for bad in ["nolink", "a/s->", "a.b/t", "a/t"] {
            let e = bad.parse::<QueueLink>().expect_err(bad).to_string();
            assert!(e.contains("app/source->target"), "{e}");
        }
    }
}
