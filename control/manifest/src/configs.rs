//! Named configs from the lattice's config store (`lattice ctl config put`), as `wash config
//! put` configs were in wasmCloud: a `config` entry with a name and no `properties`, on a
//! component or on a link's `source` or `target`, takes the values stored under that name.
//!
//! ```yaml
//! config:
//!   - name: database          # from the store
//!   - name: greeting          # written here
//!     properties: { GREETING: Hello }
//! ```
//!
//! The control plane fills such entries in when an app is deployed
//! ([`Manifest::fill_configs`]) and stores the filled manifest: a version says exactly what it
//! ran with, a rollback brings those values back, and the annotation [`CONFIGS_ANNOTATION`]
//! names the configs it took, so that a change to one reaches the apps that took it
//! ([`Manifest::refill_config`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Manifest, NamedConfig, Trait};

/// The annotation naming the configs a manifest took from the store, comma-separated.
pub const CONFIGS_ANNOTATION: &str = "lattice.configs";

impl Manifest {
    /// Every `config` entry: of each component, and of each end of each link.
    fn configs_mut(&mut self) -> impl Iterator<Item = &mut NamedConfig> {
        self.spec.components.iter_mut().flat_map(|c| {
            let links = c.traits.iter_mut().filter_map(|t| match t {
                Trait::Link(link) => Some(link),
                _ => None,
            });
            let ends = links.flat_map(|l| l.source.config.iter_mut().chain(&mut l.target.config));
            c.properties.config.iter_mut().chain(ends)
        })
    }

    /// Every `config` entry, read only (the same walk as `configs_mut`).
    fn configs(&self) -> impl Iterator<Item = &NamedConfig> {
        self.spec.components.iter().flat_map(|c| {
            let ends = c
                .links()
                .flat_map(|l| l.source.config.iter().chain(&l.target.config));
            c.properties.config.iter().chain(ends)
        })
    }

    /// The names of the `config` entries that take their values from the store (no
    /// `properties`).
    pub fn config_references(&self) -> BTreeSet<String> {
        self.configs()
            .filter(|c| c.properties.is_empty())
            .map(|c| c.name.clone())
            .collect()
    }

    /// The configs this manifest took from the store ([`CONFIGS_ANNOTATION`]).
    pub fn configs_taken(&self) -> BTreeSet<String> {
        self.metadata
            .annotations
            .get(CONFIGS_ANNOTATION)
            .map(|names| {
                names
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fills every entry that takes its values from the store with `stored(name)`, and adds
    /// the names to [`CONFIGS_ANNOTATION`]. Returns the names filled, or those the store does
    /// not have (and changes nothing).
    pub fn fill_configs<'a>(
        &mut self,
        stored: impl Fn(&str) -> Option<&'a BTreeMap<String, String>>,
    ) -> Result<BTreeSet<String>, BTreeSet<String>> {
        let wanted = self.config_references();
        let missing: BTreeSet<String> = wanted
            .iter()
            .filter(|name| stored(name).is_none_or(BTreeMap::is_empty))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        for entry in self.configs_mut().filter(|c| c.properties.is_empty()) {
            if let Some(values) = stored(&entry.name) {
                entry.properties = values.clone();
            }
        }
        if !wanted.is_empty() {
            let mut taken = self.configs_taken();
            taken.extend(wanted.iter().cloned());
            self.record_taken(&taken);
        }
        Ok(wanted)
    }

    /// Gives every entry named `name` the `values` (a config changed in the store), when this
    /// manifest took `name` from the store; returns whether it did.
    pub fn refill_config(&mut self, name: &str, values: &BTreeMap<String, String>) -> bool {
        if !self.configs_taken().contains(name) {
            return false;
        }
        for entry in self.configs_mut().filter(|c| c.name == name) {
            entry.properties = values.clone();
        }
        true
    }

    fn record_taken(&mut self, taken: &BTreeSet<String>) {
        let names: Vec<&str> = taken.iter().map(String::as_str).collect();
        self.metadata
            .annotations
            .insert(CONFIGS_ANNOTATION.to_string(), names.join(","));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: shop
spec:
  components:
    - name: api
      type: component
      properties:
        image: api:0.1.0
        config:
          - name: database
          - name: greeting
            properties: { GREETING: Hello }
      traits:
        - type: spreadscaler
          properties: { instances: 1 }
        - type: link
          properties:
            target:
              name: kv
              config:
                - name: buckets
            namespace: wasi
            package: keyvalue
            interfaces: [store]
    - name: kv
      type: capability
      properties:
        image: builtin:keyvalue-nats
"#;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn entries_without_properties_are_filled_from_the_store_and_recorded() {
        let mut manifest = crate::parse(MANIFEST).expect("valid");
        assert_eq!(
            manifest.config_references(),
            BTreeSet::from(["buckets".to_string(), "database".to_string()])
        );
        let store = BTreeMap::from([
            (
                "database".to_string(),
                values(&[("DB_URL", "postgres://db")]),
            ),
            ("buckets".to_string(), values(&[("bucket", "orders")])),
        ]);
        let filled = manifest.fill_configs(|n| store.get(n)).expect("all stored");
        assert_eq!(filled.len(), 2);
        let api = manifest.component("api").expect("api");
        assert_eq!(
            NamedConfig::merged(&api.properties.config),
            values(&[("DB_URL", "postgres://db"), ("GREETING", "Hello")])
        );
        let link = api.links().next().expect("a link");
        assert_eq!(
            link.target.config[0].properties,
            values(&[("bucket", "orders")])
        );
        assert_eq!(manifest.configs_taken(), filled);
        assert!(
            manifest.config_references().is_empty(),
            "nothing left to fill"
        );

        // What is stored reads back the same, annotation included.
        let stored = serde_json::to_string(&manifest).expect("serializes");
        assert_eq!(crate::parse(&stored).expect("valid"), manifest);

        // A change in the store reaches the entries that took it, not the written ones.
        assert!(manifest.refill_config("database", &values(&[("DB_URL", "postgres://db2")])));
        assert!(!manifest.refill_config("greeting", &values(&[("GREETING", "Hi")])));
        let api = manifest.component("api").expect("api");
        assert_eq!(
            NamedConfig::merged(&api.properties.config)["DB_URL"],
            "postgres://db2"
        );
        assert_eq!(
            NamedConfig::merged(&api.properties.config)["GREETING"],
            "Hello"
        );
    }

    #[test]
    fn a_config_the_store_lacks_is_named_and_nothing_changes() {
        let mut manifest = crate::parse(MANIFEST).expect("valid");
        let before = manifest.clone();
        let store = BTreeMap::from([("database".to_string(), values(&[("DB_URL", "x")]))]);
        let missing = manifest
            .fill_configs(|n| store.get(n))
            .expect_err("buckets is not stored");
        assert_eq!(missing, BTreeSet::from(["buckets".to_string()]));
        assert_eq!(manifest, before);
    }
}
