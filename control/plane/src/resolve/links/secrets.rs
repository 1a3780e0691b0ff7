//! Secrets on links (`source.secrets`, `target.secrets`): what a [`WorkloadLink`] carries of
//! them, and the keys that cannot be secret because the control plane reads them at deploy.
//!
//! The values stay as stored, sealed to the control plane's key; `crate::secrets::for_host`
//! reseals them to each host when its assignment is written, and the host adds them, opened,
//! to the link end's config.
//!
//! [`WorkloadLink`]: lattice_protocol::assignment::WorkloadLink

use std::collections::BTreeMap;

use lattice_manifest::{Link, NamedConfig};

/// A link's merged secrets, source end then target end, values as stored (sealed).
pub(super) fn merged(link: &Link) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    (
        NamedConfig::merged(&link.source.secrets),
        NamedConfig::merged(&link.target.secrets),
    )
}

/// Every key given as a secret on either end of `link`, with its end.
fn secret_keys(link: &Link) -> Vec<(&'static str, &str)> {
    let ends = [
        ("source", &link.source.secrets),
        ("target", &link.target.secrets),
    ];
    let mut all = Vec::new();
    for (end, secrets) in ends {
        for named in secrets {
            all.extend(named.properties.keys().map(|k| (end, k.as_str())));
        }
    }
    all
}

/// Refuses secrets under `read` keys: the control plane checks those values (or turns them
/// into bindings) at deploy, which it cannot do with a sealed value.
pub(super) fn refuse_read_keys(head: &str, link: &Link, read: &[&str], problems: &mut Vec<String>) {
    for (end, key) in secret_keys(link) {
        if read.contains(&key) {
            problems.push(format!(
                "{head}: `{key}` is in the link's `{end}.secrets`, but Lattice checks it at deploy, so it cannot be secret: move it to `{end}.config`"
            ));
        }
    }
}

/// Refuses every secret of a link whose config Lattice itself reads and serves (the HTTP
/// server's address, `messaging-nats`'s subscriptions): no provider would receive them.
pub(super) fn refuse_any(head: &str, link: &Link, problems: &mut Vec<String>) {
    for (end, key) in secret_keys(link) {
        problems.push(format!(
            "{head}: `{key}` is in the link's `{end}.secrets`, but this capability's links take no secrets (Lattice reads their config itself): move it to `{end}.config`"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first link of `counter` in a manifest whose key-value link has `target_secrets`.
    fn link(target_secrets: &str) -> Link {
        let yaml = format!(
            r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: {{ name: app }}
spec:
  components:
    - name: counter
      type: component
      properties: {{ image: c:1 }}
      traits:
        - type: spreadscaler
          properties: {{ instances: 1 }}
        - type: link
          properties:
            namespace: wasi
            package: keyvalue
            interfaces: [store]
            source:
              secrets:
                - name: s
                  properties: {{ token: sealed-t }}
            target:
              name: kv
              secrets:
                - name: t
                  properties: {{ {target_secrets} }}
    - name: kv
      type: capability
      properties: {{ image: provider:keyvalue-redis }}
"#
        );
        let manifest = lattice_manifest::parse(&yaml).expect("valid");
        let counter = manifest.component("counter").expect("counter");
        counter.links().next().expect("a link").clone()
    }

    #[test]
    fn each_end_carries_its_own_secrets() {
        let (source, target) = merged(&link("url: sealed-u"));
        assert_eq!(source["token"], "sealed-t");
        assert_eq!(target["url"], "sealed-u");
        assert!(!source.contains_key("url") && !target.contains_key("token"));
    }

    #[test]
    fn keys_lattice_reads_cannot_be_secret() {
        let mut problems = Vec::new();
        refuse_read_keys(
            "head",
            &link("bucket: sealed-b"),
            &["bucket"],
            &mut problems,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`bucket` is in the link's `target.secrets`")
                && problems[0].contains("move it to `target.config`"),
            "{problems:?}"
        );
        problems.clear();
        refuse_read_keys("head", &link("url: sealed-u"), &["bucket"], &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        refuse_any("head", &link("url: sealed-u"), &mut problems);
        assert_eq!(problems.len(), 2, "one per secret key: {problems:?}");
        assert!(problems[0].contains("`source.secrets`"), "{problems:?}");
    }
}
