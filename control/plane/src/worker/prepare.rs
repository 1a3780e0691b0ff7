//! Deploys and scales prepared off the state task: the manifest parsed and versioned (for a
//! scale, the stored one rewritten), its images read from the registry and its links resolved.
//! Only the [`Prepared`] result enters the state task, where the decision is taken again on
//! the state as it is then.

use std::collections::BTreeMap;

use lattice_manifest::Manifest;
use lattice_protocol::envelope::Reply;
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::messages::{DeployRequest, ScaleRequest};
use lattice_protocol::names::AppName;
use lattice_protocol::queue::TraceContext;
use sha2::{Digest as _, Sha256};

use lattice_protocol::keys::KeyPair;

use crate::decide::{Prepared, invalid, not_found, version_conflict};
use crate::model::StoredApp;
use crate::registry::Registry;
use crate::secrets;

use super::configs::Configs;

/// What to prepare.
pub(super) enum Job {
    Deploy(DeployRequest),
    Scale(ScaleRequest),
}

/// The manifest's `version` annotation, or one derived from its text (with secrets, from its
/// [fingerprint](secrets::fingerprint), since their ciphertexts differ on every deploy).
fn version_of(manifest: &Manifest, yaml: &str, key: &KeyPair) -> String {
    manifest.version().map(str::to_string).unwrap_or_else(|| {
        let digest = if manifest.has_secrets() {
            Sha256::digest(secrets::fingerprint(manifest, key).as_bytes())
        } else {
            Sha256::digest(yaml.as_bytes())
        };
        format!("sha-{}", &hex::encode(digest)[..12])
    })
}

/// Whether a stored version's manifest is `manifest` with its secrets sealed again (same
/// plain texts, other ciphertexts).
fn same_but_resealed(stored: &str, manifest: &Manifest, key: &KeyPair) -> bool {
    manifest.has_secrets()
        && lattice_manifest::parse(stored).is_ok_and(|stored| {
            secrets::fingerprint(&stored, key) == secrets::fingerprint(manifest, key)
        })
}

/// Prepares `job` against the apps as stored when it was asked (`catalog`).
pub(super) async fn prepare(
    job: Job,
    catalog: &BTreeMap<AppName, StoredApp>,
    registry: &Registry,
    configs: &Configs,
    key: &KeyPair,
) -> Reply<Prepared> {
    let mut text = match job {
        Job::Deploy(r) => r.manifest,
        Job::Scale(r) => scaled(catalog, &r)?,
    };
    let mut manifest = lattice_manifest::parse(&text).map_err(|diags| {
        invalid(format!(
            "the manifest has {} problem(s):\n{diags}",
            diags.len()
        ))
    })?;
    secrets::check(&manifest, key)?;
    // Configs named without values are the store's; what is stored is the manifest with them
    // filled in, so that a version says what it ran with.
    let taken = manifest
        .fill_configs(|name| configs.get(name))
        .map_err(|missing| {
            let names: Vec<&str> = missing.iter().map(String::as_str).collect();
            invalid(format!(
                "config {} named without `properties` but not in the config store: store it with `lattice ctl config put NAME KEY=VALUE...`, or give its `properties` in the manifest",
                names.join(", ")
            ))
        })?;
    if !taken.is_empty() {
        text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
    }
    let name = manifest.metadata.name.clone();
    let version = version_of(&manifest, &text, key);
    let known = catalog.get(&name).and_then(|a| a.version(&version));
    let resolved = match known {
        // Already stored as it is: nothing to read again.
        Some(v) if v.manifest == text => None,
        // The same, its secrets sealed anew by the CLI: the stored text stays.
        Some(v) if same_but_resealed(&v.manifest, &manifest, key) => {
            text = v.manifest.clone();
            None
        }
        Some(_) => return Err(version_conflict(&name, &version)),
        None => Some(crate::resolve::resolve(&manifest, &version, registry).await?),
    };
    Ok(Prepared {
        text,
        name,
        version,
        resolved,
        // Run in the request's span: the assignments it leads to continue its trace.
        trace: TraceContext::from_pairs(&lattice_telemetry::propagation::current_pairs()),
    })
}

/// A scale's manifest: the desired version's, identical but for one component's instance
/// count, under a new version.
fn scaled(catalog: &BTreeMap<AppName, StoredApp>, req: &ScaleRequest) -> Reply<String> {
    if req.instances == 0 {
        return Err(invalid(format!(
            "scale to at least 1 instance; to stop `{}`, use `lattice ctl undeploy {}`",
            req.name, req.name
        )));
    }
    let app = catalog.get(&req.name).ok_or_else(|| not_found(&req.name))?;
    let current = app.desired().ok_or_else(|| {
        WireError::new(
            ErrorCode::NotFound,
            format!("app `{}` is not deployed; deploy it first", req.name),
        )
    })?;
    let mut manifest = lattice_manifest::parse(&current.manifest)
        .map_err(|d| WireError::new(ErrorCode::Internal, format!("stored manifest: {d}")))?;
    let component = manifest
        .spec
        .components
        .iter_mut()
        .find(|c| c.name == req.component)
        .ok_or_else(|| {
            WireError::new(
                ErrorCode::NotFound,
                format!("app `{}` has no component `{}`", req.name, req.component),
            )
        })?;
    let scaler = component
        .traits
        .iter_mut()
        .find_map(|t| match t {
            lattice_manifest::Trait::Spreadscaler(s) | lattice_manifest::Trait::Daemonscaler(s) => {
                Some(s)
            }
            lattice_manifest::Trait::Link(_) => None,
        })
        .ok_or_else(|| {
            invalid(format!(
                "component `{}` has no scaler to change",
                req.component
            ))
        })?;
    scaler.instances = req.instances;
    let version = format!("{}+{}={}", current.version, req.component, req.instances);
    manifest
        .metadata
        .annotations
        .insert("version".to_string(), version);
    // JSON is YAML: the stored manifest of the new version is the same document, rewritten.
    serde_json::to_string_pretty(&manifest)
        .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))
}
