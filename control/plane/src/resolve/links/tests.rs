//! The link rules, on parsed manifests and hand-made artifact facts.
//!
//! This file holds the fixtures the tests share: interface names, a `link` trait builder ([`L`]),
//! manifests made of `component`/`capability` YAML, image facts, and the `wired`/`refused`/
//! `one_problem` checks. The tests are by topic: `component_links` (the rules every link obeys,
//! and links between components), `capability_links` (each built-in capability's links) and
//! `queued_links` (queued delivery).

use super::*;

mod capability_links;
mod component_links;
mod queued_links;

const KV_STORE: &str = "wasi:keyvalue/store@0.2.0-draft";
const KV_ATOMICS: &str = "wasi:keyvalue/atomics@0.2.0-draft";
const CONSUMER: &str = "wasmcloud:messaging/consumer@0.2.0";
const HANDLER: &str = "wasmcloud:messaging/handler@0.2.0";
const OUTGOING: &str = "wasi:http/outgoing-handler@0.2.0";
const INCOMING: &str = "wasi:http/incoming-handler@0.2.0";
/// What a plain HTTP handler such as `hello` imports.
const WASI_BASE: [&str; 3] = [
    "wasi:cli/environment@0.2.0",
    "wasi:io/streams@0.2.0",
    "wasi:http/types@0.2.0",
];

/// A `link` trait, as YAML.
struct L {
    wit: &'static str,
    interfaces: Vec<&'static str>,
    target: &'static str,
    name: Option<&'static str>,
    source: Vec<(&'static str, &'static str)>,
    target_config: Vec<(&'static str, &'static str)>,
    props: Vec<(&'static str, &'static str)>,
}

fn link(wit: &'static str, interfaces: &[&'static str], target: &'static str) -> L {
    L {
        wit,
        interfaces: interfaces.to_vec(),
        target,
        name: None,
        source: Vec::new(),
        target_config: Vec::new(),
        props: Vec::new(),
    }
}

impl L {
    fn named(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }

    fn source(mut self, key: &'static str, value: &'static str) -> Self {
        self.source.push((key, value));
        self
    }

    fn prop(mut self, key: &'static str, value: &'static str) -> Self {
        self.props.push((key, value));
        self
    }

    fn target(mut self, key: &'static str, value: &'static str) -> Self {
        self.target_config.push((key, value));
        self
    }

    fn yaml(&self) -> String {
        let (namespace, package) = self.wit.split_once(':').expect("namespace:package");
        let config = |pairs: &[(&str, &str)], indent: &str| {
            let mut s = format!("{indent}config:\n{indent}  - name: c\n{indent}    properties:\n");
            for (k, v) in pairs {
                s.push_str(&format!("{indent}      {k}: {v:?}\n"));
            }
            s
        };
        let mut s = format!(
            "        - type: link\n          properties:\n            namespace: {namespace}\n            package: {package}\n            interfaces: [{}]\n",
            self.interfaces.join(", ")
        );
        if let Some(name) = self.name {
            s.push_str(&format!("            name: {name}\n"));
        }
        for (k, v) in &self.props {
            s.push_str(&format!("            {k}: {v}\n"));
        }
        s.push_str(&format!(
            "            target:\n              name: {}\n",
            self.target
        ));
        if !self.target_config.is_empty() {
            s.push_str(&config(&self.target_config, "              "));
        }
        if !self.source.is_empty() {
            s.push_str("            source:\n");
            s.push_str(&config(&self.source, "              "));
        }
        s
    }
}

fn component(name: &str, image: &str, links: &[L]) -> String {
    let mut s = format!(
        "    - name: {name}\n      type: component\n      properties:\n        image: {image}\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: 1\n"
    );
    for l in links {
        s.push_str(&l.yaml());
    }
    s
}

fn capability(name: &str, image: &str, links: &[L]) -> String {
    let mut s = format!(
        "    - name: {name}\n      type: capability\n      properties:\n        image: {image}\n"
    );
    if !links.is_empty() {
        s.push_str("      traits:\n");
        for l in links {
            s.push_str(&l.yaml());
        }
    }
    s
}

fn manifest_named(app: &str, components: &[String]) -> Manifest {
    let yaml = format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: {app}\nspec:\n  components:\n{}",
        components.concat()
    );
    lattice_manifest::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn manifest(components: &[String]) -> Manifest {
    manifest_named("shop", components)
}

fn facts(imports: &[&str], exports: &[&str], allow: &[&str]) -> ImageFacts {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    ImageFacts {
        digest: Digest::of(format!("{imports:?}{exports:?}").as_bytes()),
        interfaces: Interfaces {
            imports: strings(imports),
            exports: strings(exports),
            ..Interfaces::default()
        },
        allow: strings(allow),
    }
}

fn name(n: &str) -> ComponentName {
    ComponentName::new(n).expect("valid name")
}

fn known(pairs: Vec<(&str, ImageFacts)>) -> BTreeMap<ComponentName, ImageFacts> {
    pairs.into_iter().map(|(n, f)| (name(n), f)).collect()
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Wires `m` expecting no problem.
fn wired(m: &Manifest, f: &BTreeMap<ComponentName, ImageFacts>) -> BTreeMap<ComponentName, Wiring> {
    let mut problems = Vec::new();
    let out = wire(m, f, &mut problems);
    assert_eq!(problems, Vec::<String>::new());
    out
}

/// Wires `m` expecting problems; returns them.
fn refused(m: &Manifest, f: &BTreeMap<ComponentName, ImageFacts>) -> Vec<String> {
    let mut problems = Vec::new();
    wire(m, f, &mut problems);
    assert!(!problems.is_empty(), "expected problems");
    problems
}

/// The one problem, which must contain every needle.
fn one_problem(problems: &[String], needles: &[&str]) {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    for needle in needles {
        assert!(
            problems[0].contains(needle),
            "`{needle}` not in: {}",
            problems[0]
        );
    }
}

fn counter_facts() -> ImageFacts {
    facts(&[KV_STORE, KV_ATOMICS, WASI_BASE[0]], &[INCOMING], &[])
}
