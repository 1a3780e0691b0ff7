//! The manifest's shape: which fields exist where, what type each has, which are required.
//!
//! Each `read_*` function takes a node and its path, reports what is wrong with it through the
//! [`Reader`] and returns `None` when it could not build its value, but always reads every field
//! it can first, so all problems come out of one pass. Names go through the protocol newtypes.
//! What the cross-component checks need is noted in the [`Outline`] on the way.

use std::collections::BTreeMap;

use lattice_protocol::names::{AppName, ComponentName, LabelKey};

use crate::delivery;
use crate::diagnostic::{Diagnostic, Pos, suggest};
use crate::model::{
    API_VERSION, Batch, Component, ComponentKind, KIND, Link, LinkSource, LinkTarget, Manifest,
    Metadata, NamedConfig, Properties, Rollout, Scaler, Spec, Spread, Trait,
};
use crate::validate::{self, ComponentOutline, Located, Outline};
use crate::yaml::{self, Fields, Node, Reader, View, index, pos, view};

const TRAIT_TYPES: &[&str] = &["spreadscaler", "daemonscaler", "link"];
const COMPONENT_TYPES: &[&str] = &["component", "capability"];

/// Parses and validates a manifest, returning every problem found.
pub(crate) fn parse(source: &str) -> Result<Manifest, Vec<Diagnostic>> {
    let documents = yaml::load(source).map_err(|d| vec![d])?;
    let mut documents = documents.iter().filter(|doc| !yaml::is_empty_document(doc));
    let Some(root) = documents.next() else {
        return Err(vec![
            Diagnostic::new(Pos::START, "", "the manifest is empty").with_help(format!(
                "a manifest starts with `apiVersion: {API_VERSION}` and `kind: {KIND}`"
            )),
        ]);
    };
    let mut reader = Reader::default();
    if let Some(extra) = documents.next() {
        reader.push(
            Diagnostic::new(
                pos(extra),
                "",
                "a second YAML document; a manifest file holds one application",
            )
            .with_help("put each application in its own file"),
        );
    }
    let mut outline = Outline::default();
    let manifest = read_manifest(&mut reader, root, &mut outline);
    for diagnostic in validate::check(&outline) {
        reader.push(diagnostic);
    }
    match manifest {
        Some(manifest) if !reader.has_errors() => Ok(manifest),
        Some(_) => Err(reader.into_diagnostics()),
        None => {
            let mut diagnostics = reader.into_diagnostics();
            if diagnostics.is_empty() {
                // Every `None` above comes with a diagnostic; this only guards against a bug.
                diagnostics.push(Diagnostic::new(
                    Pos::START,
                    "",
                    "the manifest could not be read (internal error: no diagnostic recorded)",
                ));
            }
            Err(diagnostics)
        }
    }
}

fn read_manifest(reader: &mut Reader, root: &Node<'_>, outline: &mut Outline) -> Option<Manifest> {
    if !matches!(view(root), View::Map(_)) {
        reader.wrong_type(
            root,
            "",
            "a mapping with `apiVersion`, `kind`, `metadata` and `spec`",
        );
        return None;
    }
    let fields = reader.mapping(root, "", &["apiVersion", "kind", "metadata", "spec"])?;
    let api_version = fixed(reader, &fields, "apiVersion", API_VERSION);
    let kind = fixed(reader, &fields, "kind", KIND);
    let metadata = fields
        .required(reader, "metadata")
        .and_then(|node| read_metadata(reader, node, &fields.path("metadata")));
    let spec = fields
        .required(reader, "spec")
        .and_then(|node| read_spec(reader, node, &fields.path("spec"), outline));
    Some(Manifest {
        api_version: api_version?,
        kind: kind?,
        metadata: metadata?,
        spec: spec?,
    })
}

/// A field whose only accepted value is `expected`.
fn fixed(
    reader: &mut Reader,
    fields: &Fields<'_, '_>,
    key: &str,
    expected: &str,
) -> Option<String> {
    let node = fields.required(reader, key)?;
    let path = fields.path(key);
    let value = reader.string(node, &path)?;
    if value == expected {
        return Some(value);
    }
    let help = if value.eq_ignore_ascii_case(expected) {
        format!("did you mean `{expected}`? (it is case-sensitive)")
    } else {
        format!("use `{key}: {expected}` (the wadm application format)")
    };
    reader.push(
        Diagnostic::new(pos(node), path, format!("unsupported {key} `{value}`")).with_help(help),
    );
    None
}

fn read_metadata(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<Metadata> {
    let fields = reader.mapping(node, path, &["name", "annotations", "labels"])?;
    let name = fields.required(reader, "name").and_then(|node| {
        let path = fields.path("name");
        let name = reader.string(node, &path)?;
        checked_name(reader, node, &path, AppName::new(name))
    });
    let annotations = optional_map(reader, &fields, "annotations");
    let labels = optional_map(reader, &fields, "labels");
    Some(Metadata {
        name: name?,
        annotations: annotations?,
        labels: labels?,
    })
}

/// A validated name, or the newtype's error (which suggests a fix) at `node`.
fn checked_name<T>(
    reader: &mut Reader,
    node: &Node<'_>,
    path: &str,
    name: Result<T, lattice_protocol::names::NameError>,
) -> Option<T> {
    name.map_err(|error| reader.error(node, path, error.to_string()))
        .ok()
}

/// An optional flat string map: absent is empty.
fn optional_map(
    reader: &mut Reader,
    fields: &Fields<'_, '_>,
    key: &str,
) -> Option<BTreeMap<String, String>> {
    match fields.optional(key) {
        Some(node) => reader.string_map(node, &fields.path(key)),
        None => Some(BTreeMap::new()),
    }
}

fn read_spec(
    reader: &mut Reader,
    node: &Node<'_>,
    path: &str,
    outline: &mut Outline,
) -> Option<Spec> {
    let fields = reader.mapping(node, path, &["components", "rollout", "policies"])?;
    if let Some(node) = fields.optional("policies") {
        crate::wadm::refuse_policies(reader, node, &fields.path("policies"));
    }
    let rollout = match fields.optional("rollout") {
        None => Some(None),
        Some(node) => read_rollout(reader, node, &fields.path("rollout")).map(Some),
    };
    let node = fields.required(reader, "components")?;
    let path = fields.path("components");
    let items = reader.sequence(node, &path)?;
    if items.is_empty() {
        reader.error(node, &path, "an application needs at least one component");
        return None;
    }
    let components: Vec<Option<Component>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_component(reader, item, &index(&path, i), outline))
        .collect();
    Some(Spec {
        components: components.into_iter().collect::<Option<Vec<_>>>()?,
        rollout: rollout?,
    })
}

fn read_rollout(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<Rollout> {
    let fields = reader.mapping(node, path, &["batch", "healthy_for"])?;
    let batch = match fields.optional("batch") {
        None => Some(None),
        Some(node) => read_batch(reader, node, &fields.path("batch")).map(Some),
    };
    let healthy_for = match fields.optional("healthy_for") {
        None => Some(None),
        Some(node) => read_duration(reader, node, &fields.path("healthy_for")).map(Some),
    };
    Some(Rollout {
        batch: batch?,
        healthy_for: healthy_for?,
    })
}

/// A rollout batch: a whole number of hosts, or a percentage such as `25%`.
fn read_batch(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<Batch> {
    let help = "write a number of hosts (`2`) or a share of them (`25%`)";
    let text = reader.string(node, path)?;
    let parsed = match text.trim().strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .map(Batch::Percent),
        None => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Batch::Hosts),
    };
    if parsed.is_none() {
        reader.push(
            Diagnostic::new(
                pos(node),
                path,
                format!("`{text}` is not a batch size of at least 1 host or 1% to 100%"),
            )
            .with_help(help),
        );
    }
    parsed
}

/// A duration such as `90s` or `5m`, kept as written.
fn read_duration(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<String> {
    let text = reader.non_empty_string(node, path)?;
    match humantime::parse_duration(text.trim()) {
        Ok(_) => Some(text.trim().to_string()),
        Err(e) => {
            reader.push(
                Diagnostic::new(pos(node), path, format!("`{text}` is not a duration: {e}"))
                    .with_help("write a duration such as `90s`, `5m` or `2h`"),
            );
            None
        }
    }
}

fn read_component(
    reader: &mut Reader,
    node: &Node<'_>,
    path: &str,
    outline: &mut Outline,
) -> Option<Component> {
    let fields = reader.mapping(node, path, &["name", "type", "properties", "traits"])?;
    let mut seen = ComponentOutline {
        pos: fields.pos(),
        path: path.to_string(),
        ..ComponentOutline::default()
    };

    let name = fields.required(reader, "name").and_then(|node| {
        let path = fields.path("name");
        let name = reader.string(node, &path)?;
        seen.name = Some(Located {
            value: name.clone(),
            pos: pos(node),
            path: path.clone(),
        });
        checked_name(reader, node, &path, ComponentName::new(name))
    });

    let kind = fields.required(reader, "type").and_then(|node| {
        let path = fields.path("type");
        let value = reader.string(node, &path)?;
        match value.as_str() {
            // `actor` is what wadm called components before wasmCloud 1.0.
            "component" | "actor" => Some(ComponentKind::Component),
            "capability" => Some(ComponentKind::Capability),
            other => {
                reader.push(
                    Diagnostic::new(pos(node), path, format!("unknown component type `{other}`"))
                        .with_help(suggest(other, COMPONENT_TYPES, "expected one of")),
                );
                None
            }
        }
    });
    seen.kind = kind;

    let properties = fields
        .required(reader, "properties")
        .and_then(|node| read_properties(reader, node, &fields.path("properties")));

    let traits = match fields.optional("traits") {
        None => Some(Vec::new()),
        Some(node) => {
            let path = fields.path("traits");
            match reader.sequence(node, &path) {
                Some(items) => {
                    let traits: Vec<Option<Trait>> = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| read_trait(reader, item, &index(&path, i), &mut seen))
                        .collect();
                    traits.into_iter().collect::<Option<Vec<_>>>()
                }
                None => {
                    seen.unreadable_traits = true;
                    None
                }
            }
        }
    };

    outline.components.push(seen);
    Some(Component {
        name: name?,
        kind: kind?,
        properties: properties?,
        traits: traits?,
    })
}

fn read_properties(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<Properties> {
    let fields = reader.mapping(
        node,
        path,
        &["image", "application", "id", "config", "secrets", "limits"],
    )?;
    crate::wadm::refuse_shared_application(reader, &fields);
    // A shared application stands in for `image`: its refusal says what to write instead.
    let image = if fields.has("application") && !fields.has("image") {
        None
    } else {
        fields
            .required(reader, "image")
            .and_then(|node| read_image(reader, node, &fields.path("image")))
    };
    let id = match fields.optional("id") {
        Some(node) => reader.non_empty_string(node, &fields.path("id")).map(Some),
        None => Some(None),
    };
    let config = optional_configs(reader, &fields, "config");
    let secrets = crate::secrets::read_secrets(reader, &fields, config.as_deref());
    let limits = match fields.optional("limits") {
        Some(node) => crate::limits::read(reader, node, &fields.path("limits")).map(Some),
        None => Some(None),
    };
    Some(Properties {
        image: image?,
        id: id?,
        config: config?,
        secrets: secrets?,
        limits: limits?,
    })
}

fn read_image(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<String> {
    const HELP: &str = "use a reference such as `hello:0.1.0`, `sha256:<64 hex digits>`, \
                        `ghcr.io/org/name:1.0.0` or, for a capability, `builtin:http-server`";
    let image = reader.string(node, path)?;
    let problem = if image.trim().is_empty() {
        Some("must not be empty".to_string())
    } else if image.chars().any(char::is_whitespace) {
        Some(format!("image reference `{image}` contains whitespace"))
    } else if let Some(digest) = image.strip_prefix("sha256:") {
        let hex = digest.len() == 64 && digest.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
        (!hex).then(|| {
            format!(
                "`sha256:` must be followed by 64 lowercase hex digits, found {} characters",
                digest.chars().count()
            )
        })
    } else {
        None
    };
    match problem {
        Some(message) => {
            reader.push(Diagnostic::new(pos(node), path, message).with_help(HELP));
            None
        }
        None => Some(image),
    }
}

/// An optional list of named configs: absent is empty.
fn optional_configs(
    reader: &mut Reader,
    fields: &Fields<'_, '_>,
    key: &str,
) -> Option<Vec<NamedConfig>> {
    match fields.optional(key) {
        Some(node) => read_configs(reader, node, &fields.path(key)),
        None => Some(Vec::new()),
    }
}

fn read_configs(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<Vec<NamedConfig>> {
    let items = reader.sequence(node, path)?;
    let configs: Vec<Option<NamedConfig>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| read_config(reader, item, &index(path, i)))
        .collect();
    configs.into_iter().collect()
}

pub(crate) fn read_config(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<NamedConfig> {
    let fields = reader.mapping(node, path, &["name", "properties"])?;
    let name = fields
        .required(reader, "name")
        .and_then(|node| reader.non_empty_string(node, &fields.path("name")));
    let properties = optional_map(reader, &fields, "properties");
    Some(NamedConfig {
        name: name?,
        properties: properties?,
    })
}

fn read_trait(
    reader: &mut Reader,
    node: &Node<'_>,
    path: &str,
    seen: &mut ComponentOutline,
) -> Option<Trait> {
    let Some(fields) = reader.mapping(node, path, &["type", "properties"]) else {
        seen.unreadable_traits = true;
        return None;
    };
    let type_path = fields.path("type");
    let kind = fields.required(reader, "type").and_then(|node| {
        let kind = reader.string(node, &type_path)?;
        Some((kind, pos(node)))
    });
    let properties = fields.required(reader, "properties");
    let props_path = fields.path("properties");
    let Some((kind, kind_pos)) = kind else {
        seen.unreadable_traits = true;
        return None;
    };
    let mut scaler = |name: &'static str| {
        seen.scalers.push(Located {
            value: name,
            pos: kind_pos,
            path: type_path.clone(),
        });
    };
    match kind.as_str() {
        "spreadscaler" => {
            scaler("spreadscaler");
            read_scaler(reader, properties?, &props_path).map(Trait::Spreadscaler)
        }
        "daemonscaler" => {
            scaler("daemonscaler");
            read_scaler(reader, properties?, &props_path).map(Trait::Daemonscaler)
        }
        "link" => read_link(reader, properties?, &props_path, seen).map(Trait::Link),
        other => {
            seen.unreadable_traits = true;
            reader.push(
                Diagnostic::new(kind_pos, type_path, format!("unknown trait type `{other}`"))
                    .with_help(suggest(other, TRAIT_TYPES, "trait types are")),
            );
            None
        }
    }
}

fn read_scaler(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<Scaler> {
    let fields = reader.mapping(
        node,
        path,
        &["instances", "replicas", "spread", "tolerance"],
    )?;
    // wadm reads `replicas` as an alias of `instances`.
    let key = if fields.has("instances") || !fields.has("replicas") {
        if let (true, Some(at)) = (fields.has("instances"), fields.key_pos("replicas")) {
            reader.push(
                Diagnostic::new(
                    at,
                    fields.path("replicas"),
                    "both `instances` and `replicas` are given",
                )
                .with_help(
                    "`replicas` is the older spelling of `instances`; keep only `instances`",
                ),
            );
        }
        "instances"
    } else {
        "replicas"
    };
    let instances = fields.required(reader, key).and_then(|node| {
        let path = fields.path(key);
        let instances = reader.whole_number(node, &path)?;
        if instances == 0 {
            reader.push(
                Diagnostic::new(pos(node), path, "must be at least 1").with_help(
                    "to stop an application, use `lattice ctl undeploy` instead of 0 instances",
                ),
            );
            return None;
        }
        Some(instances)
    });
    let spread = match fields.optional("spread") {
        None => Some(Vec::new()),
        Some(node) => {
            let path = fields.path("spread");
            reader.sequence(node, &path).and_then(|items| {
                let spread: Vec<Option<Spread>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| read_spread(reader, item, &index(&path, i)))
                    .collect();
                spread.into_iter().collect()
            })
        }
    };
    let tolerance = match fields.optional("tolerance") {
        None => Some(None),
        Some(node) => read_duration(reader, node, &fields.path("tolerance")).map(Some),
    };
    Some(Scaler {
        instances: instances?,
        spread: spread?,
        tolerance: tolerance?,
    })
}

fn read_spread(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<Spread> {
    let fields = reader.mapping(node, path, &["name", "weight", "requirements", "pinned"])?;
    let name = fields
        .required(reader, "name")
        .and_then(|node| reader.non_empty_string(node, &fields.path("name")));
    let weight = match fields.optional("weight") {
        None => Some(None),
        Some(node) => {
            let path = fields.path("weight");
            match reader.whole_number(node, &path) {
                Some(0) => {
                    reader.push(
                        Diagnostic::new(pos(node), path, "must be at least 1")
                            .with_help("leave this spread entry out instead of weighting it 0"),
                    );
                    None
                }
                weight => weight.map(Some),
            }
        }
    };
    let requirements = match fields.optional("requirements") {
        None => Some(BTreeMap::new()),
        Some(node) => read_requirements(reader, node, &fields.path("requirements")),
    };
    let pinned = match fields.optional("pinned") {
        None => Some(false),
        Some(node) => reader.boolean(node, &fields.path("pinned")),
    };
    Some(Spread {
        name: name?,
        weight: weight?,
        requirements: requirements?,
        pinned: pinned?,
    })
}

fn read_requirements(
    reader: &mut Reader,
    node: &Node<'_>,
    path: &str,
) -> Option<BTreeMap<LabelKey, String>> {
    let entries = reader.entries(node, path)?;
    let mut requirements = BTreeMap::new();
    let mut ok = true;
    for entry in entries {
        let path = yaml::join(path, entry.key);
        let key = checked_name(reader, entry.key_node, &path, LabelKey::new(entry.key));
        let value = reader.string(entry.value, &path);
        match (key, value) {
            (Some(key), Some(value)) => {
                requirements.insert(key, value);
            }
            _ => ok = false,
        }
    }
    ok.then_some(requirements)
}

fn read_link(
    reader: &mut Reader,
    node: &Node<'_>,
    path: &str,
    seen: &mut ComponentOutline,
) -> Option<Link> {
    let fields = reader.mapping(
        node,
        path,
        &[
            "namespace",
            "package",
            "interfaces",
            "name",
            "target",
            "source",
            // wadm before 0.13 spelled `source.config` and `target.config` these ways.
            "source_config",
            "target_config",
            // Lattice additions: queued delivery.
            "delivery",
            "ttl",
            "capacity",
            "on_full",
            "max_attempts",
        ],
    )?;
    let delivery = delivery::read(reader, &fields);
    let namespace = fields
        .required(reader, "namespace")
        .and_then(|node| reader.non_empty_string(node, &fields.path("namespace")));
    let package = fields
        .required(reader, "package")
        .and_then(|node| reader.non_empty_string(node, &fields.path("package")));
    let interfaces = fields
        .required(reader, "interfaces")
        .and_then(|node| read_interfaces(reader, node, &fields.path("interfaces")));
    let name = match fields.optional("name") {
        Some(node) => reader
            .non_empty_string(node, &fields.path("name"))
            .map(Some),
        None => Some(None),
    };
    let target = fields
        .required(reader, "target")
        .and_then(|node| read_target(reader, node, &fields.path("target"), seen));
    let (source, source_secrets) = match fields.optional("source") {
        Some(node) => {
            let path = fields.path("source");
            match reader.mapping(node, &path, &["name", "config", "secrets"]) {
                Some(source) => {
                    crate::wadm::check_source_name(reader, &source, seen);
                    let config = optional_configs(reader, &source, "config");
                    let secrets = crate::secrets::read_secrets(reader, &source, config.as_deref());
                    (config, secrets)
                }
                None => (None, None),
            }
        }
        None => (Some(Vec::new()), Some(Vec::new())),
    };
    let source = merge_old_config(reader, &fields, "source_config", "source.config", source);
    let target = target.and_then(|(name, config, secrets)| {
        let config = merge_old_config(
            reader,
            &fields,
            "target_config",
            "target.config",
            Some(config),
        );
        Some(LinkTarget {
            name,
            config: config?,
            secrets,
        })
    });
    Some(Link {
        namespace: namespace?,
        package: package?,
        interfaces: interfaces?,
        name: name?,
        target: target?,
        source: LinkSource {
            config: source?,
            secrets: source_secrets?,
        },
        delivery: delivery.as_ref()?.delivery,
        ttl: delivery.as_ref()?.ttl.clone(),
        capacity: delivery.as_ref()?.capacity,
        on_full: delivery.as_ref()?.on_full,
        max_attempts: delivery.as_ref()?.max_attempts,
    })
}

/// Adds the configs of the older `old` key (`source_config` / `target_config`) to `current`,
/// refusing both spellings at once.
fn merge_old_config(
    reader: &mut Reader,
    fields: &Fields<'_, '_>,
    old: &str,
    new: &str,
    current: Option<Vec<NamedConfig>>,
) -> Option<Vec<NamedConfig>> {
    let Some(node) = fields.optional(old) else {
        return current;
    };
    let path = fields.path(old);
    let configs = read_configs(reader, node, &path);
    let current = current?;
    if !current.is_empty() {
        reader.push(
            Diagnostic::new(
                fields.key_pos(old).unwrap_or(fields.pos()),
                path,
                format!("both `{new}` and `{old}` are given"),
            )
            .with_help(format!(
                "`{old}` is the older spelling of `{new}`; keep only `{new}`"
            )),
        );
        return None;
    }
    configs
}

fn read_interfaces(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<Vec<String>> {
    let items = reader.sequence(node, path)?;
    if items.is_empty() {
        reader.push(
            Diagnostic::new(pos(node), path, "must list at least one interface")
                .with_help("for example `interfaces: [incoming-handler]`"),
        );
        return None;
    }
    let interfaces: Vec<Option<String>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| reader.non_empty_string(item, &index(path, i)))
        .collect();
    interfaces.into_iter().collect()
}

/// A link's `target`: a component name, or `{name, config, secrets}`.
fn read_target(
    reader: &mut Reader,
    node: &Node<'_>,
    path: &str,
    seen: &mut ComponentOutline,
) -> Option<(ComponentName, Vec<NamedConfig>, Vec<NamedConfig>)> {
    let (name_node, name_path, config, secrets) = match view(node) {
        View::Scalar(_) => (node, path.to_string(), Some(Vec::new()), Some(Vec::new())),
        View::Map(_) => {
            let fields = reader.mapping(node, path, &["name", "config", "secrets"])?;
            let config = optional_configs(reader, &fields, "config");
            let secrets = crate::secrets::read_secrets(reader, &fields, config.as_deref());
            let name_node = fields.required(reader, "name")?;
            (name_node, fields.path("name"), config, secrets)
        }
        _ => {
            reader.wrong_type(node, path, "a component name or a mapping with `name`");
            return None;
        }
    };
    let name = reader.string(name_node, &name_path)?;
    let name = checked_name(reader, name_node, &name_path, ComponentName::new(name))?;
    seen.targets.push(Located {
        value: name.as_str().to_string(),
        pos: pos(name_node),
        path: name_path,
    });
    Some((name, config?, secrets?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(source: &str) -> Vec<String> {
        match parse(source) {
            Ok(_) => Vec::new(),
            Err(diagnostics) => diagnostics.into_iter().map(|d| d.to_string()).collect(),
        }
    }

    const MINIMAL: &str = "\
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: app
spec:
  components:
    - name: hello
      type: component
      properties:
        image: hello:0.1.0
      traits:
        - type: spreadscaler
          properties:
            instances: 1
";

    #[test]
    fn minimal_manifest_parses() {
        let manifest = parse(MINIMAL).expect("valid");
        assert_eq!(manifest.metadata.name.as_str(), "app");
        assert_eq!(manifest.version(), None);
        let hello = manifest.component("hello").expect("component");
        assert_eq!(
            hello.scaler().map(|(kind, s)| (kind, s.instances)),
            Some(("spreadscaler", 1))
        );
    }

    #[test]
    fn empty_and_comment_only_files_are_refused() {
        for source in ["", "   \n", "# nothing here\n", "---\n", "~\n"] {
            let messages = messages(source);
            assert_eq!(messages.len(), 1, "{source:?}: {messages:?}");
            assert!(
                messages[0].contains("the manifest is empty"),
                "{messages:?}"
            );
        }
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        let messages = messages("- a\n- b\n");
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].starts_with("line 1, column 1: expected a mapping"),
            "{messages:?}"
        );
    }

    #[test]
    fn second_document_is_refused() {
        let source = format!("{MINIMAL}---\n{MINIMAL}");
        let messages = messages(&source);
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(messages[0].contains("second YAML document"), "{messages:?}");
    }

    #[test]
    fn replicas_is_read_as_instances() {
        let source = MINIMAL.replace("instances: 1", "replicas: 3");
        let manifest = parse(&source).expect("valid");
        let hello = manifest.component("hello").expect("component");
        assert_eq!(hello.scaler().map(|(_, s)| s.instances), Some(3));
    }

    #[test]
    fn actor_is_read_as_component() {
        let source = MINIMAL.replace("type: component", "type: actor");
        let manifest = parse(&source).expect("valid");
        assert_eq!(manifest.spec.components[0].kind, ComponentKind::Component);
    }

    #[test]
    fn image_digests_are_checked() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert!(parse(&MINIMAL.replace("hello:0.1.0", &good)).is_ok());
        let messages = messages(&MINIMAL.replace("hello:0.1.0", "sha256:abc"));
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].contains("64 lowercase hex digits"),
            "{messages:?}"
        );
    }

    #[test]
    fn custom_tags_are_refused() {
        let messages = messages(&MINIMAL.replace("image: hello:0.1.0", "image: !Ref hello"));
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].contains("YAML tag `!Ref` is not supported"),
            "{messages:?}"
        );
    }
}
