//! Lattice application manifests: parse and validate the YAML a user deploys.
//!
//! The format is wadm's OAM application (`apiVersion: core.oam.dev/v1beta1`,
//! `kind: Application`, components of type `component` or `capability`, traits `spreadscaler`,
//! `daemonscaler` and `link`), so a wasmCloud 1.x manifest works as it is, including wadm's older
//! spellings (`target: name`, `source_config`, `target_config`, `replicas`, `type: actor`).
//!
//! # Layout
//!
//! - [`model`]: the typed [`Manifest`] and its parts, with serde in the YAML's own field names.
//! - `yaml` (private): loads a position-keeping YAML tree and offers typed reads that record a
//!   [`Diagnostic`] instead of stopping.
//! - `parse` (private): the manifest's shape, field by field; names go through the
//!   [`lattice_protocol::names`] newtypes.
//! - `limits` (private): a component's `properties.limits` (memory, timeout, concurrency).
//! - [`configs`]: `config` entries that take their values from the lattice's config store
//!   (`lattice ctl config put`), filled in when an app is deployed.
//! - `secrets` (private): a component's `secrets`, named configs whose values are secret.
//! - `validate` (private): checks across components (unique names, link targets, one scaler).
//! - `wadm` (private): wadm shapes read but refused with what to do instead (`spec.policies`,
//!   shared applications) and a link's `source.name`.
//! - [`Diagnostic`] / [`Diagnostics`]: what a problem looks like and how it prints.
//!
//! # Key decision: a marked tree, not serde
//!
//! `serde` with `deny_unknown_fields` stops at the first error and knows no position for the
//! node it failed on. A user fixing a manifest wants every problem at once, each with a line and
//! column, and a suggestion for a misspelled field. So [`parse`] loads saphyr's `MarkedYaml`
//! (every node keeps its span; scalars keep their spelling) and converts it by hand, recording a
//! diagnostic for each problem and carrying on. Serde is kept only for storing and sending a
//! manifest that already passed.
//!
//! # Example
//!
//! ```
//! let manifest = lattice_manifest::parse(
//!     r#"
//! apiVersion: core.oam.dev/v1beta1
//! kind: Application
//! metadata:
//!   name: hello
//!   annotations:
//!     version: v0.1.0
//! spec:
//!   components:
//!     - name: hello
//!       type: component
//!       properties:
//!         image: hello:0.1.0
//!       traits:
//!         - type: spreadscaler
//!           properties:
//!             instances: 2
//! "#,
//! )
//! .expect("a valid manifest");
//! assert_eq!(manifest.version(), Some("v0.1.0"));
//! let (kind, scaler) = manifest.component("hello").and_then(|c| c.scaler()).expect("a scaler");
//! assert_eq!((kind, scaler.instances), ("spreadscaler", 2));
//!
//! let errors = lattice_manifest::parse("kind: Aplication\n").expect_err("invalid");
//! assert!(errors.to_string().contains("line 1, column 7: kind: unsupported kind `Aplication`"));
//! assert!(errors.len() > 1, "missing apiVersion, metadata and spec are reported too");
//! ```

#![deny(missing_docs)]

pub mod configs;
mod delivery;
mod diagnostic;
mod limits;
pub mod model;
mod parse;
mod secrets;
mod validate;
mod wadm;
mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use model::{
    Batch, Component, ComponentKind, ComponentLimits, Delivery, InstanceReuse, Limits, Link,
    LinkSource, LinkTarget, Manifest, Metadata, NamedConfig, OnFull, Properties, QueuedDelivery,
    Rollout, Scaler, Spec, Spread, Trait,
};

/// Parses and validates a manifest, returning every problem found, in source order.
///
/// A YAML syntax error is reported alone (nothing after it can be trusted); otherwise every
/// unknown field, wrong type, invalid name, broken reference and missing field is reported, each
/// with its line, column and path.
pub fn parse(source: &str) -> Result<Manifest, Diagnostics> {
    parse::parse(source).map_err(Diagnostics::new)
}
