//! What the UI cases parse into, and the serde shape of the result.

use lattice_manifest::model::{DEFAULT_LINK_NAME, DEFAULT_SPREAD_WEIGHT};
use lattice_manifest::{ComponentKind, Manifest, NamedConfig, Trait, parse};

fn case(name: &str) -> Manifest {
    let path = format!("{}/tests/ui/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(&path).expect("case exists");
    parse(&source).unwrap_or_else(|e| panic!("{name} is valid, but:\n{e}"))
}

#[test]
fn full_manifest_reads_every_field() {
    let manifest = case("valid_full");
    assert_eq!(manifest.api_version, "core.oam.dev/v1beta1");
    assert_eq!(manifest.kind, "Application");
    assert_eq!(manifest.metadata.name.as_str(), "hello");
    assert_eq!(manifest.version(), Some("v0.1.0"));
    assert_eq!(manifest.description(), Some("A greeting over HTTP"));

    let hello = manifest.component("hello").expect("hello");
    assert_eq!(hello.kind, ComponentKind::Component);
    assert_eq!(hello.properties.image, "hello:0.1.0");
    assert_eq!(hello.properties.id.as_deref(), Some("optional-string"));
    let config = NamedConfig::merged(&hello.properties.config);
    assert_eq!(config.get("GREETING").map(String::as_str), Some("Hi"));
    let (kind, scaler) = hello.scaler().expect("a scaler");
    assert_eq!((kind, scaler.instances), ("spreadscaler", 1));
    let edge = &scaler.spread[0];
    assert_eq!((edge.name.as_str(), edge.effective_weight()), ("edge", 80));
    let zone: Vec<(&str, &str)> = edge
        .requirements
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(zone, [("zone", "edge")]);
    assert_eq!(hello.links().count(), 0);

    let server = manifest.component("httpserver").expect("httpserver");
    assert_eq!(server.kind, ComponentKind::Capability);
    assert!(server.scaler().is_none());
    let links: Vec<_> = server.links().collect();
    assert_eq!(links.len(), 1);
    let link = links[0];
    assert_eq!(
        (link.namespace.as_str(), link.package.as_str()),
        ("wasi", "http")
    );
    assert_eq!(link.interfaces, ["incoming-handler"]);
    assert_eq!(link.link_name(), "optional-link-name");
    assert_eq!(link.target.name.as_str(), "hello");
    assert!(link.target.config.is_empty());
    let source = NamedConfig::merged(&link.source.config);
    assert_eq!(
        source.get("address").map(String::as_str),
        Some("127.0.0.1:8080")
    );
    assert!(manifest.component("nope").is_none());
}

#[test]
fn wadm_hello_world_older_spellings_are_normalized() {
    let manifest = case("valid_wadm_hello_world");
    assert_eq!(manifest.version(), Some("v0.0.1"));
    assert_eq!(
        manifest
            .metadata
            .annotations
            .get("wasmcloud.dev/categories")
            .map(String::as_str),
        Some("http,http-server,rust,hello-world,example\n")
    );
    let server = manifest.component("httpserver").expect("httpserver");
    let link = server.links().next().expect("a link");
    assert_eq!(link.target.name.as_str(), "http-component");
    assert_eq!(link.link_name(), DEFAULT_LINK_NAME);
    assert_eq!(link.source.config[0].name, "default-http");
}

#[test]
fn scalar_config_values_keep_their_spelling() {
    let manifest = case("valid_daemonscaler_and_values");
    assert_eq!(manifest.version(), Some("0.10"));
    let counter = manifest.component("counter").expect("counter");
    let config = NamedConfig::merged(&counter.properties.config);
    let values: Vec<(&str, &str)> = config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        values,
        [("ENABLED", "true"), ("PORT", "0800"), ("RATIO", "1.50")]
    );
    let (kind, scaler) = counter.scaler().expect("a scaler");
    assert_eq!((kind, scaler.instances), ("daemonscaler", 2));
    assert_eq!(scaler.spread[0].effective_weight(), DEFAULT_SPREAD_WEIGHT);
    let link = counter.links().next().expect("a link");
    assert_eq!(link.interfaces, ["store", "atomics"]);
    assert_eq!(
        NamedConfig::merged(&link.target.config)
            .get("bucket")
            .map(String::as_str),
        Some("counters")
    );
}

#[test]
fn json_has_the_yaml_shape() {
    let manifest = case("valid_full");
    let json = serde_json::to_value(&manifest).expect("serializes");
    assert_eq!(json["apiVersion"], "core.oam.dev/v1beta1");
    let hello = &json["spec"]["components"][0];
    assert_eq!(hello["type"], "component");
    assert_eq!(hello["traits"][0]["type"], "spreadscaler");
    assert_eq!(hello["traits"][0]["properties"]["instances"], 1);
    assert_eq!(
        hello["traits"][0]["properties"]["spread"][0]["requirements"]["zone"],
        "edge"
    );
    let link = &json["spec"]["components"][1]["traits"][0];
    assert_eq!(link["type"], "link");
    assert_eq!(link["properties"]["target"]["name"], "hello");

    // And the JSON reads back; a bad name in it is refused there too.
    let back: Manifest = serde_json::from_value(json.clone()).expect("deserializes");
    assert_eq!(back, manifest);
    let mut bad = json;
    bad["spec"]["components"][0]["name"] = "a.b".into();
    assert!(serde_json::from_value::<Manifest>(bad).is_err());
}

#[test]
fn flow_style_and_trait_helpers() {
    let manifest = parse(
        "{apiVersion: core.oam.dev/v1beta1, kind: Application, metadata: {name: x}, \
         spec: {components: [{name: c, type: component, properties: {image: 'c:1'}, \
         traits: [{type: daemonscaler, properties: {instances: 3}}]}]}}",
    )
    .expect("valid");
    let component = &manifest.spec.components[0];
    assert!(matches!(&component.traits[0], Trait::Daemonscaler(s) if s.instances == 3));
    assert_eq!(component.traits[0].kind(), "daemonscaler");
}

#[test]
fn columns_count_characters_not_bytes() {
    let source = "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  \
                  annotations: {description: \"ünïcödé\", x: [1]}\n  name: x\nspec: {components: []}\n";
    let diagnostics = parse(source).expect_err("invalid");
    let x = diagnostics
        .iter()
        .find(|d| d.path == "metadata.annotations.x")
        .expect("x is not a string");
    assert_eq!((x.line, x.column), (4, 44), "{diagnostics}");
}
