//! `secrets`: named configs (the shape of `config`, beside it) whose values are secret, on a
//! component's properties and on each end (`source`, `target`) of a link.
//!
//! ```yaml
//! properties:
//!   image: hello:0.1.0
//!   config:
//!     - name: greeting
//!       properties: { GREETING: Hello }
//!   secrets:
//!     - name: database
//!       properties: { DB_PASSWORD: hunter2 }
//! ```
//!
//! On a link the same shape sits beside `source.config` or `target.config`, and is given to
//! that end with its config (a Redis password in the key-value link's `target.secrets`).
//!
//! wadm names a secret by a reference to a secrets backend (`properties: {policy, key}`);
//! Lattice carries the value itself, sealed ([`lattice_protocol::secret`]) by `lattice ctl
//! deploy`, so such a reference is refused with how to write the value instead.

use std::collections::BTreeSet;

use crate::model::NamedConfig;
use crate::parse::read_config;
use crate::yaml::{Fields, Reader, index};

/// The keys of a wadm secret reference.
const WADM_REFERENCE: [&str; 2] = ["policy", "key"];

/// The optional `secrets` of a component's properties or of a link's end; `config` (when
/// readable) for the keys that would be given twice.
pub(crate) fn read_secrets(
    reader: &mut Reader,
    fields: &Fields<'_, '_>,
    config: Option<&[NamedConfig]>,
) -> Option<Vec<NamedConfig>> {
    let Some(node) = fields.optional("secrets") else {
        return Some(Vec::new());
    };
    let path = fields.path("secrets");
    let items = reader.sequence(node, &path)?;
    let config_keys: BTreeSet<&str> = config
        .unwrap_or_default()
        .iter()
        .flat_map(|c| c.properties.keys().map(String::as_str))
        .collect();
    let mut secrets = Some(Vec::new());
    for (i, item) in items.iter().enumerate() {
        let at = index(&path, i);
        let Some(secret) = read_config(reader, item, &at) else {
            secrets = None;
            continue;
        };
        if WADM_REFERENCE
            .iter()
            .all(|k| secret.properties.contains_key(*k))
        {
            reader.error(
                item,
                &at,
                format!(
                    "`{}` names a secret in a wadm secrets backend (`policy`, `key`); Lattice carries the value itself: write `properties: {{<KEY>: <value>}}` and deploy with `lattice ctl deploy`, which seals each value",
                    secret.name
                ),
            );
            secrets = None;
            continue;
        }
        let twice: Vec<&str> = secret
            .properties
            .keys()
            .map(String::as_str)
            .filter(|k| config_keys.contains(k))
            .collect();
        if !twice.is_empty() {
            reader.error(
                item,
                &at,
                format!(
                    "`{}` is in both `config` and `secrets`; keep it only in `secrets`",
                    twice.join("`, `")
                ),
            );
            secrets = None;
            continue;
        }
        if let Some(list) = secrets.as_mut() {
            list.push(secret);
        }
    }
    secrets
}
