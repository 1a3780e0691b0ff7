//! Secrets in the control plane: a manifest's secret values arrive sealed to the control
//! plane's key ([`lattice_protocol::secret`]) and are stored that way; each is opened only to
//! check it at deploy and to reseal it to every host whose assignment carries it, when that
//! assignment is written. Plain text never leaves memory, nor lives past the call.

use hmac::{Hmac, Mac};
use lattice_manifest::{Manifest, NamedConfig};
use lattice_protocol::assignment::{Assignment, Workload};
use lattice_protocol::envelope::Reply;
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::keys::{KeyPair, KeyRole, PublicKey};
use lattice_protocol::secret;
use sha2::Sha256;
use tracing::warn;

use crate::decide::invalid;

/// The manifest text to send: `yaml` itself without secrets; otherwise the manifest as JSON
/// with every secret value sealed to `control` (values already sealed stay as they are).
pub(crate) fn seal_manifest(yaml: &str, control: &PublicKey) -> Reply<String> {
    let mut manifest = match lattice_manifest::parse(yaml) {
        Ok(m) if m.has_secrets() => m,
        // Without secrets (or invalid: the control plane says why) the text goes as written.
        _ => return Ok(yaml.to_string()),
    };
    for value in manifest.secret_values_mut() {
        if !secret::is_sealed(value) {
            *value = secret::seal(control, value).map_err(|e| {
                invalid(format!("sealing a secret to the control plane's key: {e}"))
            })?;
        }
    }
    serde_json::to_string_pretty(&manifest)
        .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))
}

/// Refuses a manifest with a secret value that is not sealed to `key`, naming the value.
pub(crate) fn check(manifest: &Manifest, key: &KeyPair) -> Reply<()> {
    let mut problems = Vec::new();
    let mut check_all = |at: &str, secrets: &[NamedConfig]| {
        for named in secrets {
            for (name, value) in &named.properties {
                if let Err(e) = secret::open(key, value) {
                    problems.push(format!("{at}, secret `{}` key `{name}`: {e}", named.name));
                }
            }
        }
    };
    for c in &manifest.spec.components {
        check_all(&format!("component `{}`", c.name), &c.properties.secrets);
        for link in c.links() {
            let at = format!("component `{}`, link to `{}`", c.name, link.target.name);
            check_all(&format!("{at}, source"), &link.source.secrets);
            check_all(&format!("{at}, target"), &link.target.secrets);
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(invalid(format!(
        "the manifest's secrets cannot be used:\n  - {}",
        problems.join("\n  - ")
    )))
}

/// The manifest as JSON with each secret value replaced by a keyed hash of its plain text:
/// equal for two deploys of the same manifest though their ciphertexts differ, and telling
/// nothing about a value to whoever lacks `key`. Values that do not open are left as they are
/// ([`check`] refuses them).
pub(crate) fn fingerprint(manifest: &Manifest, key: &KeyPair) -> String {
    let mut shown = manifest.clone();
    let mac_key = secret_mac_key(key);
    for value in shown.secret_values_mut() {
        if let Ok(plain) = secret::open(key, value) {
            let mut mac = Hmac::<Sha256>::new_from_slice(&mac_key).expect("any key length");
            mac.update(plain.as_bytes());
            *value = hex::encode(mac.finalize().into_bytes());
        }
    }
    serde_json::to_string(&shown).unwrap_or_default()
}

/// A MAC key only this control plane's key gives, for [`fingerprint`].
fn secret_mac_key(key: &KeyPair) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.seed().as_bytes()).expect("any key length");
    mac.update(b"lattice secret fingerprint v1");
    mac.finalize().into_bytes().to_vec()
}

/// A stored manifest's text as it may be shown: unchanged without secrets, else the manifest
/// as JSON with every secret value [redacted](lattice_protocol::secret::REDACTED).
pub(crate) fn shown(text: &str) -> String {
    match lattice_manifest::parse(text) {
        Ok(m) if m.has_secrets() => serde_json::to_string_pretty(&m.redacted()).unwrap_or_default(),
        Ok(_) => text.to_string(),
        // Stored manifests were parsed before; never show one that no longer parses whole.
        Err(_) => String::new(),
    }
}

/// `assignment` as its host receives it: each secret resealed from `key` to the host's key.
/// A value that does not open with `key` stays as it is; the host then refuses the workload
/// and reports which secret, where an operator sees it.
pub(crate) fn for_host(assignment: &Assignment, key: &KeyPair) -> Assignment {
    let mut out = assignment.clone();
    let link_secrets = |w: &Workload| {
        w.links
            .iter()
            .any(|l| !l.source_secrets.is_empty() || !l.target_secrets.is_empty())
    };
    if out
        .workloads
        .iter()
        .all(|w| w.secrets.is_empty() && !link_secrets(w))
    {
        return out;
    }
    let recipient = match PublicKey::parse_role(assignment.host.as_str(), KeyRole::Host) {
        Ok(k) => k,
        Err(e) => {
            warn!(host = %assignment.host, error = %e, "host id is not a host key: secrets not resealed");
            return out;
        }
    };
    for w in &mut out.workloads {
        let workload = w.key();
        let links = w
            .links
            .iter_mut()
            .flat_map(|l| l.source_secrets.iter_mut().chain(&mut l.target_secrets));
        for (name, value) in w.secrets.iter_mut().chain(links) {
            match secret::reseal(key, value, &recipient) {
                Ok(sealed) => *value = sealed,
                Err(e) => warn!(
                    host = %assignment.host,
                    workload = %workload,
                    secret = %name,
                    error = %e,
                    "secret not resealed"
                ),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lattice_protocol::assignment::{LinkTarget, WorkloadLink};
    use lattice_protocol::digest::Digest;
    use lattice_protocol::names::{AppName, ComponentName, HostId, LatticeName};

    use super::*;

    const MANIFEST: &str = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: { name: app }
spec:
  components:
    - name: c
      type: component
      properties:
        image: c:1
        secrets:
          - name: s
            properties: { TOKEN: VALUE }
      traits:
        - type: spreadscaler
          properties: { instances: 1 }
"#;

    fn sealed_manifest(to: &PublicKey, value: &str) -> Manifest {
        let mut m = lattice_manifest::parse(&MANIFEST.replace("VALUE", "x")).expect("valid");
        for v in m.secret_values_mut() {
            *v = secret::seal(to, value).expect("seal");
        }
        m
    }

    #[test]
    fn secret_values_leave_sealed_and_the_rest_as_written() {
        let control = KeyPair::generate(KeyRole::Operator);
        let without = MANIFEST.replace(
            "        secrets:\n          - name: s\n            properties: { TOKEN: VALUE }\n",
            "",
        );
        assert!(!without.contains("secrets"));
        assert_eq!(
            seal_manifest(&without, &control.public_key()).expect("ok"),
            without
        );
        let sent = seal_manifest(&MANIFEST.replace("VALUE", "hunter2"), &control.public_key())
            .expect("ok");
        assert!(!sent.contains("hunter2"), "{sent}");
        let mut parsed = lattice_manifest::parse(&sent).expect("JSON is YAML");
        let value = parsed.secret_values_mut().next().expect("one").clone();
        assert_eq!(
            secret::open(&control, &value).expect("opens").as_str(),
            "hunter2"
        );
        // Sealed once: sending it again keeps the sealed value.
        let again = seal_manifest(&sent, &control.public_key()).expect("ok");
        assert!(again.contains(&value));
    }

    /// [`MANIFEST`] plus a key-value link whose target end has the secret `url`.
    fn with_link_secret(url: &str) -> String {
        MANIFEST.replace("VALUE", "v").replace(
            "          properties: { instances: 1 }\n",
            &format!(
                "          properties: {{ instances: 1 }}\n        - type: link\n          properties:\n            namespace: wasi\n            package: keyvalue\n            interfaces: [store]\n            target:\n              name: kv\n              secrets:\n                - name: redis\n                  properties: {{ url: \"{url}\" }}\n    - name: kv\n      type: capability\n      properties: {{ image: provider:keyvalue-redis }}\n"
            ),
        )
    }

    #[test]
    fn link_secrets_are_sealed_checked_and_redacted_like_components() {
        let control = KeyPair::generate(KeyRole::Operator);
        let clear = with_link_secret("redis://:hunter2@127.0.0.1:6379");
        let parsed = lattice_manifest::parse(&clear).expect("valid");
        let e = check(&parsed, &control).expect_err("clear");
        assert!(
            e.message
                .contains("component `c`, link to `kv`, target, secret `redis` key `url`"),
            "{}",
            e.message
        );
        let sent = seal_manifest(&clear, &control.public_key()).expect("ok");
        assert!(!sent.contains("hunter2"), "{sent}");
        let sealed = lattice_manifest::parse(&sent).expect("JSON is YAML");
        assert!(check(&sealed, &control).is_ok());
        let link = sealed
            .component("c")
            .expect("c")
            .links()
            .next()
            .expect("link");
        let value = &link.target.secrets[0].properties["url"];
        assert_eq!(
            secret::open(&control, value).expect("opens").as_str(),
            "redis://:hunter2@127.0.0.1:6379"
        );
        let shown = shown(&sent);
        assert!(shown.contains(secret::REDACTED), "{shown}");
        assert!(!shown.contains(secret::SEALED_PREFIX), "{shown}");
    }

    #[test]
    fn check_refuses_clear_and_foreign_values() {
        let control = KeyPair::generate(KeyRole::Operator);
        assert!(check(&sealed_manifest(&control.public_key(), "v"), &control).is_ok());
        let clear = lattice_manifest::parse(&MANIFEST.replace("VALUE", "hunter2")).expect("ok");
        let e = check(&clear, &control).expect_err("clear");
        assert!(
            e.message.contains("secret `s` key `TOKEN`"),
            "{}",
            e.message
        );
        assert!(e.message.contains("not sealed"), "{}", e.message);
        let other = KeyPair::generate(KeyRole::Operator);
        let e = check(&sealed_manifest(&other.public_key(), "v"), &control).expect_err("other");
        assert!(e.message.contains("sealed to another key"), "{}", e.message);
    }

    #[test]
    fn fingerprints_compare_plain_texts_without_showing_them() {
        let control = KeyPair::generate(KeyRole::Operator);
        let a = fingerprint(&sealed_manifest(&control.public_key(), "hunter2"), &control);
        let b = fingerprint(&sealed_manifest(&control.public_key(), "hunter2"), &control);
        let c = fingerprint(&sealed_manifest(&control.public_key(), "other"), &control);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(!a.contains("hunter2") && !a.contains(secret::SEALED_PREFIX));
    }

    #[test]
    fn assignments_reach_hosts_resealed_to_them() {
        let control = KeyPair::generate(KeyRole::Operator);
        let host = KeyPair::generate(KeyRole::Host);
        let assignment = Assignment {
            lattice: LatticeName::new("l").expect("valid"),
            host: HostId::new(host.public_key().to_string()).expect("valid"),
            revision: 1,
            epoch: 1,
            issued_at: 0,
            expires_at: 10,
            workloads: vec![Workload {
                app: AppName::new("app").expect("valid"),
                app_version: "1".into(),
                component: ComponentName::new("c").expect("valid"),
                image: Digest::of(b"c"),
                instances: 1,
                config: BTreeMap::new(),
                secrets: BTreeMap::from([(
                    "TOKEN".to_string(),
                    secret::seal(&control.public_key(), "hunter2").expect("seal"),
                )]),
                http: None,
                links: vec![WorkloadLink {
                    namespace: "wasi".into(),
                    package: "keyvalue".into(),
                    interfaces: vec!["store".into()],
                    name: "default".into(),
                    target: LinkTarget::Provider("keyvalue-redis".into()),
                    source_config: BTreeMap::new(),
                    target_config: BTreeMap::new(),
                    source_secrets: BTreeMap::new(),
                    target_secrets: BTreeMap::from([(
                        "url".to_string(),
                        secret::seal(&control.public_key(), "redis://:pw@x").expect("seal"),
                    )]),
                    queued: None,
                }],
                subscriptions: Vec::new(),
                queue: None,
                limits: Default::default(),
            }],
            stop: false,
            trace: None,
        };
        let sent = for_host(&assignment, &control);
        let value = &sent.workloads[0].secrets["TOKEN"];
        assert_eq!(
            secret::open(&host, value).expect("open").as_str(),
            "hunter2"
        );
        let opened = |a: &Assignment| {
            let link = &a.workloads[0].links[0];
            secret::open(&host, &link.target_secrets["url"]).map(|p| p.to_string())
        };
        assert_eq!(
            opened(&sent).expect("the link's secret too"),
            "redis://:pw@x"
        );
        assert!(secret::open(&control, value).is_err());
        // Written again (re-signed), it is the same: the host does not restart the workload.
        assert_eq!(for_host(&assignment, &control), sent);
    }
}
