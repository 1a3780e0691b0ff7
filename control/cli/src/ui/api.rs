//! The dashboard's JSON API. Each answer is built from the operator's own signed ctl requests
//! (the same verbs `lattice ctl` uses), so the control plane authorizes every one of them by the
//! operator's role; a refusal becomes an error the page shows with the control plane's message.

use std::collections::BTreeMap;

use lattice_control::client::CtlClient;
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::messages::{AppState, AppStatus, HostSummary, VersionSummary};
use lattice_protocol::names::AppName;
use lattice_protocol::queue::ops::{DeadLetter, LinkQueue, LinkSelector};
use serde::{Deserialize, Serialize};

/// A host as the hosts view shows it: its summary and its outbox backlog (summed over the
/// queued links it sends on, as `get queues` reports them).
#[derive(Debug, Serialize)]
pub(super) struct HostRow {
    #[serde(flatten)]
    summary: HostSummary,
    /// Calls waiting in its outbox.
    outbox_pending: u64,
    /// The oldest waiting call's age, in milliseconds.
    outbox_oldest_age_ms: Option<u64>,
}

/// `GET /api/hosts`.
pub(super) async fn hosts(ctl: &CtlClient) -> Result<Vec<HostRow>, WireError> {
    let hosts = ctl.hosts().await?;
    // The backlog is an extra: a lattice whose queues cannot be read still shows its hosts.
    let queues = ctl.queues().await.unwrap_or_default();
    let mut backlog: BTreeMap<String, (u64, Option<u64>)> = BTreeMap::new();
    for outbox in queues.iter().flat_map(|l| &l.hosts) {
        let entry = backlog.entry(outbox.host.to_string()).or_default();
        entry.0 += outbox.stats.pending;
        entry.1 = entry.1.max(outbox.stats.oldest_age_ms);
    }
    Ok(hosts
        .into_iter()
        .map(|summary| {
            let (pending, oldest) = backlog
                .get(summary.id.as_str())
                .copied()
                .unwrap_or_default();
            HostRow {
                summary,
                outbox_pending: pending,
                outbox_oldest_age_ms: oldest,
            }
        })
        .collect())
}

/// An app as the apps view shows it: its status per component (the rollout's progress) and its
/// stored versions.
#[derive(Debug, Serialize)]
pub(super) struct AppRow {
    name: AppName,
    version: String,
    status: AppState,
    message: String,
    /// Components running, of those placed.
    running: usize,
    /// Components placed (or waiting for a place).
    placed: usize,
    /// Per component and host.
    detail: Option<AppStatus>,
    /// Stored versions, oldest first.
    history: Vec<VersionSummary>,
}

/// `GET /api/apps`.
pub(super) async fn apps(ctl: &CtlClient) -> Result<Vec<AppRow>, WireError> {
    let mut rows = Vec::new();
    for app in ctl.apps().await? {
        // An app undeployed between the two requests has no status: shown from its summary.
        let detail = ctl.status(&app.name).await.ok();
        let history = ctl.history(&app.name).await.unwrap_or_default();
        let components = detail.as_ref().map_or(&[][..], |d| &d.components[..]);
        rows.push(AppRow {
            running: components
                .iter()
                .filter(|c| c.state == lattice_protocol::messages::WorkloadState::Running)
                .count(),
            placed: components.len(),
            name: app.name,
            version: app.version,
            status: app.status,
            message: app.message,
            detail,
            history,
        });
    }
    Ok(rows)
}

/// One node of an app's link graph.
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct Node {
    name: String,
    /// `component` or `capability`.
    kind: &'static str,
    image: String,
}

/// One link of an app's graph: source → target over some interfaces.
#[derive(Debug, Serialize, PartialEq)]
pub(super) struct Edge {
    source: String,
    target: String,
    /// `namespace:package/interface`, comma-separated.
    interfaces: String,
    /// `direct` or `queued`.
    delivery: &'static str,
}

/// An app's link graph, from its desired manifest.
#[derive(Debug, Serialize)]
pub(super) struct Graph {
    app: AppName,
    version: String,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

/// `GET /api/graph/APP`.
pub(super) async fn graph(ctl: &CtlClient, app: &str) -> Result<Graph, WireError> {
    let name = AppName::new(app).map_err(|e| {
        WireError::new(
            ErrorCode::InvalidInput,
            format!("`{app}` is not an app name: {e}"),
        )
    })?;
    let stored = ctl.manifest(&name, None).await?;
    let (nodes, edges) = graph_of(&stored.manifest)?;
    Ok(Graph {
        app: stored.name,
        version: stored.version,
        nodes,
        edges,
    })
}

/// The components and links of a manifest's text.
fn graph_of(manifest: &str) -> Result<(Vec<Node>, Vec<Edge>), WireError> {
    let manifest = lattice_manifest::parse(manifest).map_err(|d| {
        WireError::new(
            ErrorCode::BadMessage,
            format!("the stored manifest does not parse here ({d}); is this `lattice` older than the control plane?"),
        )
    })?;
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for c in &manifest.spec.components {
        nodes.push(Node {
            name: c.name.to_string(),
            kind: c.kind.as_str(),
            image: c.properties.image.clone(),
        });
        for t in &c.traits {
            let lattice_manifest::model::Trait::Link(link) = t else {
                continue;
            };
            let interfaces: Vec<String> = link
                .interfaces
                .iter()
                .map(|i| format!("{}:{}/{i}", link.namespace, link.package))
                .collect();
            edges.push(Edge {
                source: c.name.to_string(),
                target: link.target.name.to_string(),
                interfaces: interfaces.join(", "),
                delivery: if link.queued().is_some() {
                    "queued"
                } else {
                    "direct"
                },
            });
        }
    }
    Ok((nodes, edges))
}

/// A queued link with its dead letters, for the queues view.
#[derive(Debug, Serialize)]
pub(super) struct QueueRow {
    #[serde(flatten)]
    queue: LinkQueue,
    /// Its dead letters, oldest first.
    dead_letters: Vec<DeadLetter>,
    /// Why they could not be listed (dead letters carry the calls' payloads: a viewer's role
    /// may not read them), shown instead.
    dead_letters_error: Option<String>,
}

/// `GET /api/queues`.
pub(super) async fn queues(ctl: &CtlClient) -> Result<Vec<QueueRow>, WireError> {
    let mut rows = Vec::new();
    for queue in ctl.queues().await? {
        let (dead_letters, dead_letters_error) = if queue.dead_lettered > 0 {
            let link: LinkSelector = queue
                .link
                .to_string()
                .parse()
                .map_err(|e| WireError::new(ErrorCode::BadMessage, format!("{e}")))?;
            match ctl.dead_letters(&link).await {
                Ok(dead) => (dead, None),
                Err(e) => (Vec::new(), Some(e.message)),
            }
        } else {
            (Vec::new(), None)
        };
        rows.push(QueueRow {
            queue,
            dead_letters,
            dead_letters_error,
        });
    }
    Ok(rows)
}

/// `POST /api/requeue`'s body: the link as `get queues` names it, and the call ids (none: all).
#[derive(Debug, Deserialize)]
pub(super) struct Requeue {
    link: String,
    #[serde(default)]
    ids: Vec<String>,
}

/// `POST /api/requeue`: what was requeued, and the ids that were not found.
pub(super) async fn requeue(
    ctl: &CtlClient,
    body: Requeue,
) -> Result<lattice_protocol::queue::ops::RequeueReply, WireError> {
    let link: LinkSelector = body.link.parse().map_err(|e| {
        WireError::new(
            ErrorCode::InvalidInput,
            format!(
                "`{}` is not a link ({e}); use `app/source->target`",
                body.link
            ),
        )
    })?;
    ctl.requeue(&link, body.ids).await
}

/// `GET /api/whoami`: the user the page signs as, and the lattice.
#[derive(Debug, Serialize)]
pub(super) struct WhoAmI {
    pub(super) user: String,
    pub(super) lattice: String,
}

/// The HTTP status a refusal or failure is answered with.
pub(super) fn status_of(e: &WireError) -> u16 {
    match e.code {
        ErrorCode::NotAllowed => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::InvalidInput | ErrorCode::NotLinked => 400,
        ErrorCode::Conflict => 409,
        ErrorCode::Timeout | ErrorCode::Unavailable => 503,
        _ => 502,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_has_every_component_and_link() -> Result<(), WireError> {
        let yaml = r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: shop
spec:
  components:
    - name: front
      type: component
      properties:
        image: file://front.wasm
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            namespace: example
            package: orders
            interfaces: [intake]
            target:
              name: orders
            delivery: queued
    - name: orders
      type: component
      properties:
        image: file://orders.wasm
      traits:
        - type: spreadscaler
          properties:
            instances: 1
"#;
        let (nodes, edges) = graph_of(yaml)?;
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["front", "orders"]);
        assert_eq!(
            edges,
            [Edge {
                source: "front".into(),
                target: "orders".into(),
                interfaces: "example:orders/intake".into(),
                delivery: "queued",
            }]
        );
        assert!(graph_of("not: a manifest").is_err());
        Ok(())
    }
}
