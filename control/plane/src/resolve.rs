//! Turning a validated manifest into a [`ResolvedApp`]: tags become digests, capabilities fold
//! into bindings and links, and everything that cannot work is refused at deploy time with every
//! reason.
//!
//! - what each provider serves and the checks on its links' configuration are not here: they
//!   are declared once per provider in `lattice_protocol::provider::catalog`, which the link
//!   rules read.
//! - `links` (private): the pure link rules (`links::wire`): what serves each linked
//!   import, HTTP bindings, messaging subscriptions, checked against what each artifact imports,
//!   exports and is allowed by its claims.
//! - [`resolve`]: the one function with I/O: looks images up in the registry, reads each
//!   distinct artifact once, and applies the rules.

use std::collections::BTreeMap;

use lattice_manifest::{Component, ComponentKind, Manifest, NamedConfig};
use lattice_protocol::claims::read_claims;
use lattice_protocol::digest::Digest;
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::names::ComponentName;
use lattice_protocol::wit::{component_interfaces, returning_data};

use crate::model::{
    ResolvedApp, ResolvedComponent, RolloutPolicy, ScalerKind, Scaling, SpreadEntry,
};
use crate::registry::Registry;

mod links;

pub use lattice_protocol::provider::catalog::{ALLOWED_HOSTS_KEY, BUCKET_KEY, SUBSCRIPTIONS_KEY};
pub use links::MESSAGING_HANDLER;

/// The address the built-in HTTP server listens on when a link gives none (wasmCloud's default).
pub const DEFAULT_HTTP_ADDRESS: &str = "0.0.0.0:8000";

/// The interface a WASI 0.2 component exports to be served over HTTP.
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";
/// The interface a WASI 0.3 component exports to be served over HTTP.
pub const HTTP_HANDLER: &str = "wasi:http/handler";

fn scaling(c: &Component) -> Option<Scaling> {
    let (kind, scaler) = c.scaler()?;
    Some(Scaling {
        kind: if kind == "daemonscaler" {
            ScalerKind::Daemon
        } else {
            ScalerKind::Spread
        },
        instances: scaler.instances,
        spread: scaler
            .spread
            .iter()
            .map(|s| SpreadEntry {
                name: s.name.clone(),
                weight: s.effective_weight(),
                requirements: s
                    .requirements
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                pinned: s.pinned,
            })
            .collect(),
        tolerance_secs: scaler.tolerance().map(|t| t.as_secs()),
    })
}

/// What resolution needs from an artifact: its interfaces and its claims' allow list; with
/// `function_types` (the app queues calls), which of its imported functions return data.
async fn image_facts(
    registry: &Registry,
    digest: &Digest,
    function_types: bool,
) -> Result<links::ImageFacts, WireError> {
    let bytes = registry.get(digest).await?;
    let mut interfaces = component_interfaces(&bytes)
        .map_err(|e| WireError::new(ErrorCode::InvalidInput, format!("artifact {digest}: {e}")))?;
    if function_types {
        interfaces.returning_data = returning_data(&bytes, &interfaces.imports);
    }
    // An unsigned component declares nothing (hosts refuse it); a bad signature is the host's to
    // report too: its allow list can only make this check stricter.
    let allow = read_claims(&bytes)
        .map(|(claims, _)| claims.allow)
        .unwrap_or_default();
    Ok(links::ImageFacts {
        digest: digest.clone(),
        interfaces,
        allow,
    })
}

/// The manifest's runnable components with their scaling and image digests. Many components
/// share an image: each distinct reference is looked up once per deploy.
async fn runnable<'m>(
    manifest: &'m Manifest,
    registry: &Registry,
    problems: &mut Vec<String>,
) -> Vec<(&'m Component, Scaling, Digest)> {
    let mut runnable = Vec::new();
    let mut digests: BTreeMap<&str, Result<Digest, WireError>> = BTreeMap::new();
    for c in manifest
        .spec
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Component)
    {
        let Some(scaler) = scaling(c) else {
            problems.push(format!(
                "component `{}` has no spreadscaler or daemonscaler",
                c.name
            ));
            continue;
        };
        let reference = c.properties.image.as_str();
        if !digests.contains_key(reference) {
            digests.insert(reference, registry.resolve(reference).await);
        }
        match digests[reference].clone() {
            Ok(image) => runnable.push((c, scaler, image)),
            Err(e) => problems.push(format!("component `{}`: {}", c.name, e.message)),
        }
    }
    runnable
}

/// Why `manifest` cannot be deployed: every problem, one per line. Not found when the one
/// problem is an image to push first.
fn refusal(manifest: &Manifest, problems: &[String]) -> WireError {
    let code = if problems.len() == 1 && problems[0].contains("push it first") {
        ErrorCode::NotFound
    } else {
        ErrorCode::InvalidInput
    };
    WireError::new(
        code,
        format!(
            "app `{}` cannot be deployed:\n  - {}",
            manifest.metadata.name,
            problems.join("\n  - ")
        ),
    )
}

/// Resolves `manifest` as `version`, checking every image against the registry.
pub async fn resolve(
    manifest: &Manifest,
    version: &str,
    registry: &Registry,
) -> Result<ResolvedApp, WireError> {
    let mut problems = Vec::new();
    let runnable = runnable(manifest, registry, &mut problems).await;
    let involved = links::involved(manifest);
    let queued = manifest
        .spec
        .components
        .iter()
        .any(|c| c.links().any(|l| l.queued().is_some()));
    let mut by_digest: BTreeMap<Digest, Result<links::ImageFacts, WireError>> = BTreeMap::new();
    let mut facts: BTreeMap<ComponentName, links::ImageFacts> = BTreeMap::new();
    for (c, _, image) in runnable.iter().filter(|(c, ..)| involved.contains(&c.name)) {
        if !by_digest.contains_key(image) {
            by_digest.insert(image.clone(), image_facts(registry, image, queued).await);
        }
        match &by_digest[image] {
            Ok(f) => {
                facts.insert(c.name.clone(), f.clone());
            }
            Err(e) => problems.push(format!("component `{}`: {}", c.name, e.message)),
        }
    }
    let mut wiring = links::wire(manifest, &facts, &mut problems);
    let components = runnable
        .into_iter()
        .map(|(c, scaler, image)| {
            let w = wiring.remove(&c.name).unwrap_or_default();
            ResolvedComponent {
                name: c.name.clone(),
                image,
                scaler,
                config: NamedConfig::merged(&c.properties.config),
                secrets: NamedConfig::merged(&c.properties.secrets),
                http: w.http,
                links: w.links,
                subscriptions: w.subscriptions,
                limits: c
                    .properties
                    .limits
                    .as_ref()
                    .map(lattice_manifest::Limits::component_limits)
                    .unwrap_or_default(),
            }
        })
        .collect();
    if !problems.is_empty() {
        return Err(refusal(manifest, &problems));
    }
    let rollout = manifest
        .spec
        .rollout
        .as_ref()
        .map(|r| RolloutPolicy {
            batch: r.batch,
            healthy_for_secs: r.healthy_for().map_or(5, |d| d.as_secs()),
        })
        .unwrap_or_default();
    Ok(ResolvedApp {
        name: manifest.metadata.name.clone(),
        version: version.to_string(),
        components,
        rollout,
        wait_for_hosts: manifest
            .metadata
            .annotations
            .get(crate::model::WAIT_ANNOTATION)
            .is_some_and(|v| v == "true"),
    })
}
