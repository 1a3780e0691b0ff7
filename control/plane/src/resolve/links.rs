//! Links: which built-in capability or component serves each linked import of a component,
//! which address serves it over HTTP, which subjects are delivered to it; and every reason a
//! manifest's `link` traits cannot work.
//!
//! Pure: [`wire`] takes the manifest and what was read from each component's artifact
//! ([`ImageFacts`]), so every rule is tested without NATS. [`super::resolve`] fetches the facts
//! (once per digest) for the components [`involved`] in links.

use std::collections::{BTreeMap, BTreeSet};

use lattice_manifest::{Component, ComponentKind, Link, Manifest, NamedConfig};
use lattice_protocol::assignment::{HttpBinding, LinkTarget, WorkloadLink};
use lattice_protocol::claims::allow_list_allows;
use lattice_protocol::digest::Digest;
use lattice_protocol::names::ComponentName;
use lattice_protocol::wit::{Interfaces, unversioned};

use super::{HTTP_HANDLER, INCOMING_HANDLER};
use lattice_protocol::provider::catalog::{
    self, Delivers, End, ProviderDescription, SUBSCRIPTIONS_KEY, subscriptions,
};

/// The interface a component must export to receive messages from `messaging-nats`.
pub const MESSAGING_HANDLER: &str = "wasmcloud:messaging/handler";

/// `wasmcloud:messaging@0.3.0`'s name for the same export.
pub const MESSAGING_INCOMING_HANDLER: &str = "wasmcloud:messaging/incoming-handler";

/// Whether `interface` is a message handler export (0.2.0's or 0.3.0's).
fn is_handler(interface: &str) -> bool {
    interface == MESSAGING_HANDLER || interface == MESSAGING_INCOMING_HANDLER
}

/// What resolution reads from a component's artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    /// The artifact.
    pub digest: Digest,
    /// Its top-level imports and exports.
    pub interfaces: Interfaces,
    /// Its signed claims' allow list; empty when it declares none (or is unsigned: hosts refuse
    /// that anyway).
    pub allow: Vec<String>,
}

/// What links give one component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wiring {
    /// Where the built-in HTTP server serves it.
    pub http: Option<HttpBinding>,
    /// What serves its linked imports, in manifest order.
    pub links: Vec<WorkloadLink>,
    /// Subjects delivered to its `wasmcloud:messaging/handler`.
    pub subscriptions: Vec<String>,
}

/// The components whose artifacts [`wire`] reads: sources and targets of links.
pub fn involved(manifest: &Manifest) -> BTreeSet<ComponentName> {
    let mut out = BTreeSet::new();
    for c in &manifest.spec.components {
        for link in c.links() {
            if c.kind == ComponentKind::Component {
                out.insert(c.name.clone());
            }
            if manifest
                .component(link.target.name.as_str())
                .is_some_and(|t| t.kind == ComponentKind::Component)
            {
                out.insert(link.target.name.clone());
            }
        }
    }
    out
}

/// Resolves every link of `manifest`. `facts` holds what was read from the artifacts of the
/// components [`involved`] in links; a component missing from it (its image could not be
/// resolved or read: a problem already reported) is wired without the checks that need it.
/// Every problem is added to `problems`.
pub fn wire(
    manifest: &Manifest,
    facts: &BTreeMap<ComponentName, ImageFacts>,
    problems: &mut Vec<String>,
) -> BTreeMap<ComponentName, Wiring> {
    let mut out: BTreeMap<ComponentName, Wiring> = BTreeMap::new();
    let mut found = Vec::new();
    capability_links(manifest, facts, &mut out, &mut found);
    for c in manifest
        .spec
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Component)
    {
        let links = component_links(manifest, c, facts, &mut found);
        if !links.is_empty() {
            // After any handler link a provider already gave it.
            out.entry(c.name.clone()).or_default().links.extend(links);
        }
    }
    // Two links with the same fault (e.g. both naming an interface the image lacks) say the
    // same thing: once is enough.
    for p in found {
        if !problems.contains(&p) {
            problems.push(p);
        }
    }
    out
}

/// `namespace:package/interface` for each interface of `link`.
fn qualified(link: &Link) -> Vec<String> {
    link.interfaces
        .iter()
        .map(|i| format!("{}:{}/{i}", link.namespace, link.package))
        .collect()
}

/// The component's image for messages: the reference as written, and the digest when the
/// reference is a tag.
fn image_of(c: &Component, facts: &ImageFacts) -> String {
    let written = &c.properties.image;
    if *written == facts.digest.to_string() {
        written.clone()
    } else {
        format!("{written} ({})", facts.digest)
    }
}

/// Links from capabilities to components: HTTP bindings and messaging subscriptions.
fn capability_links(
    manifest: &Manifest,
    facts: &BTreeMap<ComponentName, ImageFacts>,
    out: &mut BTreeMap<ComponentName, Wiring>,
    problems: &mut Vec<String>,
) {
    let mut by_address = http::Taken::new();
    // Components linked to a message handler, checked for the export once each.
    let mut handlers: BTreeSet<ComponentName> = BTreeSet::new();
    for cap in manifest
        .spec
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Capability)
    {
        let Some(provider) = catalog::from_image(&cap.properties.image) else {
            problems.push(format!(
                "capability `{}`: image `{}` is not a capability this Lattice version knows; use one of {} (wasmCloud's images of these providers mean the same)",
                cap.name,
                cap.properties.image,
                catalog::images()
            ));
            continue;
        };
        for link in cap.links() {
            let target = &link.target.name;
            if link.queued().is_some() {
                problems.push(format!(
                    "capability `{}` links `{}` to `{target}` with `delivery: queued`: a capability's own links cannot be queued (whether a message is queued is the publisher's choice: put `delivery: queued` on the publishing component's wasmcloud:messaging/consumer link to `{}`); remove `delivery: queued`",
                    cap.name,
                    qualified(link).join(", "),
                    cap.name
                ));
                continue;
            }
            if matches!(
                provider.delivers,
                Delivers::HttpRequests | Delivers::NatsMessages
            ) {
                let head = format!("capability `{}` links to `{target}`", cap.name);
                secrets::refuse_any(&head, link, problems);
            }
            match provider.delivers {
                Delivers::HttpRequests => {
                    http::http_link(manifest, cap, link, &mut by_address, out, problems);
                }
                Delivers::NatsMessages => {
                    if messaging_link(manifest, cap, provider, link, out, problems) {
                        handlers.insert(target.clone());
                    }
                }
                Delivers::ProviderMessages => {
                    if mqtt_link(manifest, cap, provider, link, out, problems) {
                        handlers.insert(target.clone());
                    }
                }
                Delivers::Nothing => problems.push(format!(
                    "capability `{}` ({}) links `{}` to `{target}`, but it serves components that link to it: put the `link` trait on `{target}`, with target `{}`",
                    cap.name,
                    provider.image(),
                    qualified(link).join(", "),
                    cap.name
                )),
            }
        }
    }
    for (name, wiring) in out.iter() {
        let (Some(c), Some(f)) = (manifest.component(name.as_str()), facts.get(name)) else {
            continue;
        };
        if wiring.http.is_some()
            && !f.interfaces.exports_interface(INCOMING_HANDLER)
            && !f.interfaces.exports_interface(HTTP_HANDLER)
        {
            problems.push(format!(
                "component `{name}` is linked to the HTTP server but its image {} does not export {INCOMING_HANDLER} (WASI 0.2) or {HTTP_HANDLER} (WASI 0.3)",
                c.properties.image
            ));
        }
    }
    for name in &handlers {
        let (Some(c), Some(f)) = (manifest.component(name.as_str()), facts.get(name)) else {
            continue;
        };
        if !f.interfaces.exports_interface(MESSAGING_HANDLER)
            && !f.interfaces.exports_interface(MESSAGING_INCOMING_HANDLER)
        {
            problems.push(format!(
                "component `{name}` is linked to receive messages but its image {} exports neither {MESSAGING_HANDLER} (0.2.0) nor {MESSAGING_INCOMING_HANDLER} (0.3.0)",
                image_of(c, f)
            ));
        }
    }
}

/// Whether `link`'s target is a component; reports it when not.
fn targets_component(
    manifest: &Manifest,
    cap: &Component,
    link: &Link,
    problems: &mut Vec<String>,
) -> bool {
    let target = &link.target.name;
    if manifest
        .component(target.as_str())
        .is_some_and(|t| t.kind != ComponentKind::Component)
    {
        problems.push(format!(
            "capability `{}` links to `{target}`, which is not a component",
            cap.name
        ));
        return false;
    }
    true
}

/// `messaging-nats` delivering subjects to `link`'s target. Returns whether the link is a
/// handler link to a component (whose export is then checked).
fn messaging_link(
    manifest: &Manifest,
    cap: &Component,
    provider: &ProviderDescription,
    link: &Link,
    out: &mut BTreeMap<ComponentName, Wiring>,
    problems: &mut Vec<String>,
) -> bool {
    let target = &link.target.name;
    let wanted = qualified(link);
    if wanted.iter().any(|w| !is_handler(w)) {
        problems.push(format!(
            "capability `{}` ({}) links `{}` to `{target}`; it delivers messages to components only through {MESSAGING_HANDLER} (or 0.3.0's {MESSAGING_INCOMING_HANDLER}; a component publishes by linking wasmcloud:messaging/consumer, or 0.3.0's producer, to `{}`)",
            cap.name,
            provider.image(),
            wanted.join(", "),
            cap.name
        ));
        return false;
    }
    if !targets_component(manifest, cap, link, problems) {
        return false;
    }
    let config = NamedConfig::merged(&link.source.config);
    let Some(value) = config.get(SUBSCRIPTIONS_KEY) else {
        let hint = if NamedConfig::merged(&link.target.config).contains_key(SUBSCRIPTIONS_KEY) {
            format!("`{SUBSCRIPTIONS_KEY}` is in the target config; move it to `source.config`")
        } else {
            format!(
                "set `{SUBSCRIPTIONS_KEY}` in the link's `source.config` (comma-separated NATS subjects, e.g. `orders.>`)"
            )
        };
        problems.push(format!(
            "capability `{}` links {MESSAGING_HANDLER} to `{target}` without subjects, so nothing would be delivered: {hint}",
            cap.name
        ));
        return true;
    };
    match subscriptions(value) {
        Ok(subjects) if subjects.is_empty() => problems.push(format!(
            "capability `{}` links {MESSAGING_HANDLER} to `{target}` with an empty `{SUBSCRIPTIONS_KEY}`: give at least one NATS subject",
            cap.name
        )),
        Ok(subjects) => {
            let have = &mut out.entry(target.clone()).or_default().subscriptions;
            for s in subjects {
                if !have.contains(&s) {
                    have.push(s);
                }
            }
        }
        Err(problem) => problems.push(format!(
            "capability `{}` links {MESSAGING_HANDLER} to `{target}`: {problem}",
            cap.name
        )),
    }
    true
}

/// The links of component `c`: what serves each linked import.
fn component_links(
    manifest: &Manifest,
    c: &Component,
    facts: &BTreeMap<ComponentName, ImageFacts>,
    problems: &mut Vec<String>,
) -> Vec<WorkloadLink> {
    let mut links = Vec::new();
    // (interface, link name) -> the target of the first link serving it.
    let mut seen: BTreeMap<(String, &str), &ComponentName> = BTreeMap::new();
    for link in c.links() {
        let target_name = &link.target.name;
        let wanted = qualified(link);
        for w in &wanted {
            if let Some(first) = seen.insert((w.clone(), link.link_name()), target_name) {
                problems.push(twice(c, w, link, first));
            }
        }
        if *target_name == c.name {
            problems.push(format!(
                "component `{}` links `{}` to itself: a component cannot serve its own imports; target another component or a capability",
                c.name,
                wanted.join(", ")
            ));
            continue;
        }
        // Link targets exist: the manifest was validated.
        let Some(target) = manifest.component(target_name.as_str()) else {
            continue;
        };
        let queued = link.queued();
        // Queued publish: `messaging-nats` serves only wasmcloud:messaging/consumer, whose
        // `request` the host refuses on a queued link.
        let queued_messages = target.kind == ComponentKind::Capability
            && catalog::from_image(&target.properties.image).is_some_and(|p| p.queued);
        if queued.is_some() && target.kind == ComponentKind::Capability && !queued_messages {
            problems.push(not_queueable(c, &wanted, target_name));
            continue;
        }
        let source_config = NamedConfig::merged(&link.source.config);
        let mut target_config = NamedConfig::merged(&link.target.config);
        let (source_secrets, target_secrets) = secrets::merged(link);
        // The interfaces the target serves; only those are checked against the source's image.
        let mut served: Vec<&String> = Vec::new();
        let serving = match target.kind {
            ComponentKind::Capability => {
                // Not built in: refused with the capability itself.
                let Some(provider) = catalog::from_image(&target.properties.image) else {
                    continue;
                };
                for w in &wanted {
                    if provider.serves.contains(&w.as_str()) {
                        served.push(w);
                    } else {
                        problems.push(not_served(c, w, target, provider));
                    }
                }
                capability_config(
                    manifest,
                    c,
                    target,
                    provider,
                    &source_config,
                    &mut target_config,
                    problems,
                );
                let read: Vec<&str> = provider.config.iter().map(|k| k.key).collect();
                let head = format!("component `{}` links to `{}`", c.name, target.name);
                secrets::refuse_read_keys(&head, link, &read, problems);
                provider.link_target()
            }
            ComponentKind::Component => {
                served.extend(&wanted);
                if let Some(tf) = facts.get(target_name) {
                    export_checks(c, target, tf, &wanted, problems);
                }
                LinkTarget::Component(target_name.clone())
            }
        };
        if let Some(sf) = facts.get(&c.name) {
            if queued.is_some() && !queued_messages {
                queued_checks(c, sf, &served, target_name, problems);
            }
            for w in served {
                source_checks(c, sf, w, target_name, problems);
            }
        }
        links.push(WorkloadLink {
            namespace: link.namespace.clone(),
            package: link.package.clone(),
            interfaces: link.interfaces.clone(),
            name: link.link_name().to_string(),
            target: serving,
            source_config,
            target_config,
            source_secrets,
            target_secrets,
            queued,
        });
    }
    links
}

/// Why `c`'s queued link of `wanted` to capability `target` is refused.
fn not_queueable(c: &Component, wanted: &[String], target: &ComponentName) -> String {
    format!(
        "component `{}` links `{}` to capability `{target}` with `delivery: queued`: only links between components, and links to {} (queued messages), can be queued; remove `delivery: queued`",
        c.name,
        wanted.join(", "),
        queueable_images()
    )
}

/// Why `c` cannot link `interface` under `link`'s name again, having linked it to `first`.
fn twice(c: &Component, interface: &str, link: &Link, first: &ComponentName) -> String {
    let target_name = &link.target.name;
    let targets = if first == target_name {
        format!("both to `{first}`")
    } else {
        format!("to `{first}` and to `{target_name}`")
    };
    format!(
        "component `{}` links {interface} under link name `{}` twice, {targets}: remove one, or give one a `name` of its own",
        c.name,
        link.link_name()
    )
}

/// Target component `target` (its artifact read as `tf`) must export each of `wanted`.
fn export_checks(
    c: &Component,
    target: &Component,
    tf: &ImageFacts,
    wanted: &[String],
    problems: &mut Vec<String>,
) {
    let target_name = &target.name;
    for w in wanted
        .iter()
        .filter(|w| !tf.interfaces.exports_interface(w))
    {
        problems.push(format!(
            "component `{}` links {w} to component `{target_name}`, but the image {} of `{target_name}` does not export it (it exports: {}); link `{}` to a component that exports {w}",
            c.name,
            image_of(target, tf),
            list_or_nothing(&tf.interfaces.exports),
            c.name
        ));
    }
}

fn list_or_nothing(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(", ")
    }
}

/// Why capability `target` cannot serve `interface` to `c`.
fn not_served(
    c: &Component,
    interface: &str,
    target: &Component,
    provider: &ProviderDescription,
) -> String {
    let head = format!(
        "component `{}` links {interface} to `{}`, but `{}` ({})",
        c.name,
        target.name,
        target.name,
        provider.image()
    );
    if provider.serves.is_empty() {
        format!(
            "{head} serves nothing to components: the HTTP server calls the component, so put the `link` trait (wasi:http/incoming-handler) on `{}`, with target `{}`",
            target.name, c.name
        )
    } else {
        format!(
            "{head} serves only {}; link one of those, or target a capability that serves {interface}",
            provider.serves.join(", ")
        )
    }
}

/// The source image of a link must import the interface, and its claims must allow it.
/// A queued call returns before it runs: refuses queued links whose functions return data.
fn queued_checks(
    c: &Component,
    facts: &ImageFacts,
    served: &[&String],
    target: &ComponentName,
    problems: &mut Vec<String>,
) {
    for w in served {
        let functions: Vec<&str> = facts.interfaces.functions_returning_data(w).collect();
        if !functions.is_empty() {
            problems.push(format!(
                "component `{}` links {w} to `{target}` with `delivery: queued`, but {} of {w} return data, which a queued call cannot wait for (only functions returning nothing or `result<_, error>` qualify); remove `delivery: queued`, or link the interfaces with one-way functions separately",
                c.name,
                functions.join(", "),
            ));
        }
    }
}

fn source_checks(
    c: &Component,
    facts: &ImageFacts,
    interface: &str,
    target: &ComponentName,
    problems: &mut Vec<String>,
) {
    let imports: Vec<&String> = facts
        .interfaces
        .imports
        .iter()
        .filter(|i| unversioned(i) == interface)
        .collect();
    if imports.is_empty() {
        let package = interface.split('/').next().unwrap_or(interface);
        let same_package: Vec<String> = facts
            .interfaces
            .imports
            .iter()
            .filter(|i| i.split('/').next() == Some(package))
            .cloned()
            .collect();
        let imported = if same_package.is_empty() {
            format!("it imports nothing from {package}")
        } else {
            format!("from {package} it imports {}", same_package.join(", "))
        };
        problems.push(format!(
            "component `{}` links {interface} to `{target}`, but its image {} does not import it ({imported}); remove {interface} from the link, or deploy an image that imports it",
            c.name,
            image_of(c, facts)
        ));
        return;
    }
    if let Some(refused) = imports.iter().find(|i| !allow_list_allows(&facts.allow, i)) {
        problems.push(format!(
            "component `{}` links {interface} to `{target}`, but its signed claims do not allow {refused} (allowed: {}); sign it again with `lattice sign --allow {interface}`",
            c.name,
            facts.allow.join(", ")
        ));
    }
}

/// The images of the providers whose links may be queued, for messages.
fn queueable_images() -> String {
    catalog::ALL
        .iter()
        .filter(|p| p.queued)
        .map(|p| format!("`{}`", p.image()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The configuration checks and defaults of a link from `c` to capability `target`, as its
/// provider's description declares them.
fn capability_config(
    manifest: &Manifest,
    c: &Component,
    target: &Component,
    provider: &ProviderDescription,
    source_config: &BTreeMap<String, String>,
    target_config: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    let head = format!("component `{}` links to `{}`", c.name, target.name);
    for key in provider.config {
        let name = key.key;
        if key.end == End::Both {
            for (end, config) in [("source", source_config), ("target", &*target_config)] {
                if let Some(problem) = config.get(name).and_then(|v| (key.check)(v)) {
                    problems.push(format!("{head}: in the {end} config, {problem}"));
                }
            }
            continue;
        }
        if let Some(value) = target_config.get(name) {
            if let Some(problem) = (key.check)(value) {
                problems.push(format!("{head}: {problem}"));
            }
            continue;
        }
        if source_config.contains_key(name) {
            problems.push(format!(
                "{head} with `{name}` in the source config; {} is the link's target config: move it to `target.config`",
                key.what
            ));
            continue;
        }
        if key.defaults_to_app {
            let app = manifest.metadata.name.to_string();
            if let Some(problem) = (key.check)(&app) {
                problems.push(format!(
                    "{head} without a `{name}`, so {} would be the app's name, but {problem}; set `{name}` in the link's target config",
                    key.what
                ));
            }
            target_config.insert(name.to_string(), app);
        }
    }
}

/// The `mqtt` provider delivering topics to `link`'s target's handler: one `WorkloadLink` of the
/// target, to the provider process, carrying the link's config (`subscriptions`: MQTT topic
/// filters; `uri` of the broker). Returns whether the target's export is then to be checked.
fn mqtt_link(
    manifest: &Manifest,
    cap: &Component,
    provider: &ProviderDescription,
    link: &Link,
    out: &mut BTreeMap<ComponentName, Wiring>,
    problems: &mut Vec<String>,
) -> bool {
    let target = &link.target.name;
    let wanted = qualified(link);
    if wanted.iter().any(|w| w != MESSAGING_HANDLER) {
        problems.push(format!(
            "capability `{}` ({}) links `{}` to `{target}`; it delivers MQTT messages to components only through {MESSAGING_HANDLER}",
            cap.name,
            provider.image(),
            wanted.join(", "),
        ));
        return false;
    }
    if !targets_component(manifest, cap, link, problems) {
        return false;
    }
    let head = format!(
        "capability `{}` links {MESSAGING_HANDLER} to `{target}`",
        cap.name
    );
    secrets::refuse_read_keys(&head, link, &[SUBSCRIPTIONS_KEY], problems);
    let (source_secrets, target_secrets) = secrets::merged(link);
    let source_config = NamedConfig::merged(&link.source.config);
    let filters: Vec<&str> = source_config
        .get(SUBSCRIPTIONS_KEY)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if filters.is_empty() {
        problems.push(format!(
            "capability `{}` links {MESSAGING_HANDLER} to `{target}` without topics: set `{SUBSCRIPTIONS_KEY}` in the link's `source.config` (comma-separated MQTT topic filters, e.g. `sensors/+/temperature`)",
            cap.name
        ));
        return true;
    }
    if let Some(bad) = filters.iter().find(|f| f.contains(char::is_whitespace)) {
        problems.push(format!(
            "capability `{}` links {MESSAGING_HANDLER} to `{target}`: `{bad}` is not an MQTT topic filter (no spaces)",
            cap.name
        ));
    }
    out.entry(target.clone())
        .or_default()
        .links
        .push(WorkloadLink {
            namespace: "wasmcloud".into(),
            package: "messaging".into(),
            interfaces: vec!["handler".into()],
            name: link.link_name().to_string(),
            target: provider.link_target(),
            source_config,
            target_config: NamedConfig::merged(&link.target.config),
            source_secrets,
            target_secrets,
            queued: None,
        });
    true
}

mod http;
mod secrets;
#[cfg(test)]
mod tests;
