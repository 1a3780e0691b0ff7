//! Turning a validated manifest into a [`ResolvedApp`]: tags become digests, capabilities fold
//! into bindings, and everything that cannot work is refused at deploy time with every reason.

use std::collections::BTreeMap;

use lattice_manifest::{Component, ComponentKind, Manifest, NamedConfig};
use lattice_protocol::assignment::HttpBinding;
use lattice_protocol::digest::Digest;
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::names::ComponentName;

use crate::model::{
    ResolvedApp, ResolvedComponent, RolloutPolicy, ScalerKind, Scaling, SpreadEntry,
};
use crate::registry::Registry;

/// The address the built-in HTTP server listens on when a link gives none (wasmCloud's default).
pub const DEFAULT_HTTP_ADDRESS: &str = "0.0.0.0:8000";

/// The interface a component must export to be served over HTTP.
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// Capabilities built into every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    HttpServer,
}

fn builtin(image: &str) -> Option<Builtin> {
    // wasmCloud manifests name their HTTP server provider by its OCI image; the host's built-in
    // server does the same job, so those manifests deploy unchanged.
    let wasmcloud = [
        "ghcr.io/wasmcloud/http-server",
        "wasmcloud.azurecr.io/httpserver",
    ];
    (image == "builtin:http-server" || wasmcloud.iter().any(|p| image.starts_with(p)))
        .then_some(Builtin::HttpServer)
}

/// Where the built-in HTTP server serves which component: from the capabilities' link traits.
fn http_bindings(
    manifest: &Manifest,
    problems: &mut Vec<String>,
) -> BTreeMap<ComponentName, String> {
    let mut out: BTreeMap<ComponentName, String> = BTreeMap::new();
    let mut by_address: BTreeMap<String, ComponentName> = BTreeMap::new();
    for cap in manifest
        .spec
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Capability)
    {
        if builtin(&cap.properties.image).is_none() {
            problems.push(format!(
                "capability `{}`: image `{}` is not a built-in capability of this Lattice version; use `builtin:http-server`",
                cap.name, cap.properties.image
            ));
            continue;
        }
        for link in cap.links() {
            let target = &link.target.name;
            if (link.namespace.as_str(), link.package.as_str()) != ("wasi", "http")
                || link.interfaces.iter().any(|i| i != "incoming-handler")
            {
                problems.push(format!(
                    "capability `{}` links `{}:{}/{}` to `{target}`; the built-in HTTP server serves only wasi:http/incoming-handler",
                    cap.name,
                    link.namespace,
                    link.package,
                    link.interfaces.join(",")
                ));
                continue;
            }
            if manifest
                .component(target.as_str())
                .is_some_and(|t| t.kind != ComponentKind::Component)
            {
                problems.push(format!(
                    "capability `{}` links to `{target}`, which is not a component",
                    cap.name
                ));
                continue;
            }
            let address = NamedConfig::merged(&link.source.config)
                .get("address")
                .cloned()
                .unwrap_or_else(|| DEFAULT_HTTP_ADDRESS.to_string());
            if address.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!(
                    "capability `{}`: address `{address}` for `{target}` is not `ip:port` (e.g. 127.0.0.1:8080)",
                    cap.name
                ));
                continue;
            }
            // Port 0 means "any free port": such bindings never collide.
            if let Some(other) = by_address
                .get(&address)
                .filter(|o| *o != target && !address.ends_with(":0"))
            {
                problems.push(format!(
                    "address {address} is bound to both `{other}` and `{target}`; give each its own address"
                ));
                continue;
            }
            by_address.insert(address.clone(), target.clone());
            if let Some(previous) = out.insert(target.clone(), address.clone())
                && previous != address
            {
                problems.push(format!(
                    "`{target}` is linked to two HTTP addresses ({previous} and {address}); one per component"
                ));
            }
        }
    }
    for c in manifest
        .spec
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Component)
    {
        if let Some(link) = c.links().next() {
            problems.push(format!(
                "component `{}` links `{}:{}` to `{}`: links from components to providers and other components are not supported by this Lattice version",
                c.name, link.namespace, link.package, link.target.name
            ));
        }
    }
    out
}

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

/// Resolves `manifest` as `version`, checking every image against the registry.
pub async fn resolve(
    manifest: &Manifest,
    version: &str,
    registry: &Registry,
) -> Result<ResolvedApp, WireError> {
    let mut problems = Vec::new();
    let http = http_bindings(manifest, &mut problems);
    let mut components = Vec::new();
    // Many components share an image: each distinct reference is looked up (and fetched for
    // its interfaces) once per deploy.
    let mut digests: BTreeMap<&str, Result<Digest, WireError>> = BTreeMap::new();
    let mut exports_http: BTreeMap<Digest, Result<bool, WireError>> = BTreeMap::new();
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
        let image = match digests[reference].clone() {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("component `{}`: {}", c.name, e.message));
                continue;
            }
        };
        let binding = http.get(&c.name).map(|address| HttpBinding {
            address: address.clone(),
        });
        if binding.is_some() {
            if !exports_http.contains_key(&image) {
                let exports = registry
                    .interfaces(&image)
                    .await
                    .map(|i| i.exports_interface(INCOMING_HANDLER));
                exports_http.insert(image.clone(), exports);
            }
            match exports_http[&image].clone() {
                Ok(true) => {}
                Ok(false) => problems.push(format!(
                    "component `{}` is linked to the HTTP server but its image {} does not export {INCOMING_HANDLER}",
                    c.name, c.properties.image
                )),
                Err(e) => problems.push(format!("component `{}`: {}", c.name, e.message)),
            }
        }
        components.push(ResolvedComponent {
            name: c.name.clone(),
            image,
            scaler,
            config: NamedConfig::merged(&c.properties.config),
            http: binding,
        });
    }
    if !problems.is_empty() {
        let code = if problems.len() == 1 && problems[0].contains("push it first") {
            ErrorCode::NotFound
        } else {
            ErrorCode::InvalidInput
        };
        return Err(WireError::new(
            code,
            format!(
                "app `{}` cannot be deployed:\n  - {}",
                manifest.metadata.name,
                problems.join("\n  - ")
            ),
        ));
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
