//! The link rules, on parsed manifests and hand-made artifact facts.

use super::*;

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

#[test]
fn keyvalue_link_defaults_its_bucket_to_the_app_name() {
    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[link("wasi:keyvalue", &["store", "atomics"], "kv").source("prefix", "c-")],
        ),
        capability("kv", "builtin:keyvalue-nats", &[]),
    ]);
    let out = wired(&m, &known(vec![("counter", counter_facts())]));
    assert_eq!(
        out[&name("counter")],
        Wiring {
            http: None,
            links: vec![WorkloadLink {
                namespace: "wasi".into(),
                package: "keyvalue".into(),
                interfaces: vec!["store".into(), "atomics".into()],
                name: "default".into(),
                target: LinkTarget::Builtin("keyvalue-nats".into()),
                source_config: config(&[("prefix", "c-")]),
                target_config: config(&[("bucket", "shop")]),
                queued: None,
            }],
            subscriptions: vec![],
        }
    );
    assert!(!out.contains_key(&name("kv")), "capabilities are not run");
}

#[test]
fn keyvalue_link_keeps_a_given_bucket_and_wasmcloud_images_work() {
    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[link("wasi:keyvalue", &["store"], "kv")
                .named("orders")
                .target("bucket", "orders_2")],
        ),
        capability("kv", "ghcr.io/wasmcloud/keyvalue-nats:0.3.1", &[]),
    ]);
    let out = wired(&m, &known(vec![("counter", counter_facts())]));
    let l = &out[&name("counter")].links[0];
    assert_eq!(l.name, "orders");
    assert_eq!(l.target_config, config(&[("bucket", "orders_2")]));
    assert!(l.source_config.is_empty());
}

#[test]
fn invalid_and_reserved_buckets_are_refused() {
    let kv = || capability("kv", "builtin:keyvalue-nats", &[]);
    let f = known(vec![("counter", counter_facts())]);
    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[link("wasi:keyvalue", &["store"], "kv").target("bucket", "my orders")],
        ),
        kv(),
    ]);
    one_problem(
        &refused(&m, &f),
        &[
            "component `counter` links to `kv`",
            "`my orders`",
            "letters, digits",
        ],
    );

    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[link("wasi:keyvalue", &["store"], "kv").target("bucket", "LATTICE_default_tags")],
        ),
        kv(),
    ]);
    one_problem(&refused(&m, &f), &["`LATTICE_default_tags`", "reserved"]);

    // The default bucket is the app's name, which may be reserved too.
    let m = manifest_named(
        "LATTICE_shop",
        &[
            component(
                "counter",
                "counter:0.1.0",
                &[link("wasi:keyvalue", &["store"], "kv")],
            ),
            kv(),
        ],
    );
    one_problem(
        &refused(&m, &f),
        &["without a `bucket`", "app's name", "set `bucket`"],
    );

    // `bucket` on the wrong end would be silently ignored: refused.
    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[link("wasi:keyvalue", &["store"], "kv").source("bucket", "orders")],
        ),
        kv(),
    ]);
    one_problem(&refused(&m, &f), &["source config", "target.config"]);
}

#[test]
fn a_capability_serves_only_its_interfaces() {
    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[
                link("wasi:keyvalue", &["store", "watcher"], "kv"),
                link("wasi:http", &["incoming-handler"], "web"),
            ],
        ),
        capability("kv", "builtin:keyvalue-nats", &[]),
        capability("web", "builtin:http-server", &[]),
    ]);
    let problems = refused(&m, &known(vec![("counter", counter_facts())]));
    assert_eq!(problems.len(), 2, "{problems:#?}");
    for needle in [
        "component `counter` links wasi:keyvalue/watcher to `kv`",
        "(builtin:keyvalue-nats)",
        "serves only wasi:keyvalue/store, wasi:keyvalue/atomics, wasi:keyvalue/batch",
    ] {
        assert!(problems[0].contains(needle), "{needle}: {}", problems[0]);
    }
    for needle in [
        "links wasi:http/incoming-handler to `web`",
        "serves nothing to components",
        "on `web`, with target `counter`",
    ] {
        assert!(problems[1].contains(needle), "{needle}: {}", problems[1]);
    }
}

#[test]
fn the_source_image_must_import_what_it_links() {
    let hello = facts(&WASI_BASE, &[INCOMING], &[]);
    let digest = hello.digest.clone();
    let m = manifest(&[
        component(
            "hello",
            "hello:0.1.0",
            &[link("wasi:keyvalue", &["store"], "kv")],
        ),
        capability("kv", "builtin:keyvalue-nats", &[]),
    ]);
    one_problem(
        &refused(&m, &known(vec![("hello", hello)])),
        &[
            "component `hello` links wasi:keyvalue/store to `kv`",
            &format!("its image hello:0.1.0 ({digest}) does not import it"),
            "it imports nothing from wasi:keyvalue",
        ],
    );

    // Importing another interface of the package is named, to spot the typo.
    let m = manifest(&[
        component(
            "counter",
            &digest.to_string(),
            &[link("wasi:keyvalue", &["batch"], "kv")],
        ),
        capability("kv", "builtin:keyvalue-nats", &[]),
    ]);
    let mut f = counter_facts();
    f.digest = digest.clone();
    one_problem(
        &refused(&m, &known(vec![("counter", f)])),
        &[
            &format!("its image {digest} does not import it"),
            &format!("from wasi:keyvalue it imports {KV_STORE}, {KV_ATOMICS}"),
        ],
    );
}

#[test]
fn the_claims_must_allow_what_is_linked() {
    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[link("wasi:keyvalue", &["store", "atomics"], "kv")],
        ),
        capability("kv", "builtin:keyvalue-nats", &[]),
    ]);
    let with_allow = |allow: &[&str]| {
        let mut f = counter_facts();
        f.allow = allow.iter().map(|s| s.to_string()).collect();
        known(vec![("counter", f)])
    };
    let problems = refused(&m, &with_allow(&["wasi:http", "wasi:keyvalue/store"]));
    one_problem(
        &problems,
        &[
            "component `counter` links wasi:keyvalue/atomics to `kv`",
            &format!("signed claims do not allow {KV_ATOMICS}"),
            "(allowed: wasi:http, wasi:keyvalue/store)",
            "--allow wasi:keyvalue/atomics",
        ],
    );
    // The host's matching: a package allows its interfaces, an interface all its versions.
    wired(&m, &with_allow(&["wasi:keyvalue"]));
    wired(
        &m,
        &with_allow(&["wasi:keyvalue/store", "wasi:keyvalue/atomics"]),
    );
    wired(&m, &with_allow(&[]));
}

#[test]
fn two_links_serving_one_interface_under_one_name_are_refused() {
    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[
                link("wasi:keyvalue", &["store"], "kv1"),
                link("wasi:keyvalue", &["atomics", "store"], "kv2"),
            ],
        ),
        capability("kv1", "builtin:keyvalue-nats", &[]),
        capability("kv2", "builtin:keyvalue-nats", &[]),
    ]);
    let f = known(vec![("counter", counter_facts())]);
    one_problem(
        &refused(&m, &f),
        &[
            "component `counter` links wasi:keyvalue/store under link name `default` twice",
            "to `kv1` and to `kv2`",
        ],
    );

    // Named links may serve the same interface from different buckets.
    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[
                link("wasi:keyvalue", &["store"], "kv1"),
                link("wasi:keyvalue", &["atomics", "store"], "kv2").named("cache"),
            ],
        ),
        capability("kv1", "builtin:keyvalue-nats", &[]),
        capability("kv2", "builtin:keyvalue-nats", &[]),
    ]);
    let links = &wired(&m, &f)[&name("counter")].links;
    assert_eq!(
        links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["default", "cache"]
    );
}

#[test]
fn components_serve_components_that_export_the_interface() {
    let client = facts(
        &["example:greeter/greet@0.1.0", WASI_BASE[0]],
        &[INCOMING],
        &[],
    );
    let greeter = facts(&[WASI_BASE[0]], &["example:greeter/greet@0.1.0"], &[]);
    let m = manifest(&[
        component(
            "client",
            "client:0.1.0",
            &[link("example:greeter", &["greet"], "greeter").target("lang", "fr")],
        ),
        component("greeter", "greeter:0.1.0", &[]),
    ]);
    let out = wired(
        &m,
        &known(vec![("client", client.clone()), ("greeter", greeter)]),
    );
    assert_eq!(
        out[&name("client")].links,
        [WorkloadLink {
            namespace: "example".into(),
            package: "greeter".into(),
            interfaces: vec!["greet".into()],
            name: "default".into(),
            target: LinkTarget::Component(name("greeter")),
            source_config: BTreeMap::new(),
            target_config: config(&[("lang", "fr")]),
            queued: None,
        }]
    );
    assert!(!out.contains_key(&name("greeter")));

    // A target that does not export it is refused, naming what it does export.
    let hello = facts(&WASI_BASE, &[INCOMING], &[]);
    let problems = refused(&m, &known(vec![("client", client), ("greeter", hello)]));
    one_problem(
        &problems,
        &[
            "component `client` links example:greeter/greet to component `greeter`",
            "the image greeter:0.1.0 (sha256:",
            "does not export it (it exports: wasi:http/incoming-handler@0.2.0)",
        ],
    );

    // Without facts (the image could not be read: reported already) nothing more is said.
    wired(&m, &BTreeMap::new());
}

#[test]
fn queued_links_carry_their_delivery_and_only_between_components() {
    let client = facts(
        &[
            "example:greeter/greet@0.1.0",
            "wasi:keyvalue/store@0.2.0-draft",
        ],
        &[],
        &[],
    );
    let greeter = facts(&[], &["example:greeter/greet@0.1.0"], &[]);
    let m = manifest(&[
        component(
            "client",
            "client:0.1.0",
            &[link("example:greeter", &["greet"], "greeter")
                .prop("delivery", "queued")
                .prop("ttl", "1h")
                .prop("on_full", "drop_oldest")],
        ),
        component("greeter", "greeter:0.1.0", &[]),
    ]);
    let out = wired(
        &m,
        &known(vec![("client", client.clone()), ("greeter", greeter)]),
    );
    assert_eq!(
        out[&name("client")].links[0].queued,
        Some(lattice_protocol::assignment::QueuedDelivery {
            ttl_secs: 3600,
            capacity: 10_000,
            on_full: lattice_protocol::assignment::OnFull::DropOldest,
            max_attempts: 5,
        })
    );

    let m = manifest(&[
        component(
            "client",
            "client:0.1.0",
            &[link("wasi:keyvalue", &["store"], "kv").prop("delivery", "queued")],
        ),
        capability("kv", "builtin:keyvalue-nats", &[]),
    ]);
    one_problem(
        &refused(&m, &known(vec![("client", client)])),
        &[
            "component `client` links `wasi:keyvalue/store` to capability `kv` with `delivery: queued`",
            "only links between components, and links to `builtin:messaging-nats` (queued messages), can be queued",
        ],
    );
}

#[test]
fn a_publishers_consumer_link_to_messaging_nats_may_be_queued() {
    let mut publisher = facts(&[CONSUMER], &[], &[]);
    // `request` returns data: that alone does not refuse a queued messaging link (the host
    // refuses the request itself).
    publisher.interfaces.returning_data = vec![format!("{CONSUMER}#request")];
    let m = manifest(&[
        component(
            "publisher",
            "publisher:0.1.0",
            &[link("wasmcloud:messaging", &["consumer"], "nats")
                .prop("delivery", "queued")
                .prop("max_attempts", "2")],
        ),
        capability("nats", "builtin:messaging-nats", &[]),
    ]);
    let out = wired(&m, &known(vec![("publisher", publisher)]));
    let l = &out[&name("publisher")].links[0];
    assert_eq!(l.target, LinkTarget::Builtin("messaging-nats".into()));
    assert_eq!(l.queued.as_ref().map(|q| q.max_attempts), Some(2));
}

#[test]
fn a_capabilitys_own_link_cannot_be_queued() {
    let echo = facts(&[], &[HANDLER], &[]);
    let m = manifest(&[
        component("echo", "echo:0.1.0", &[]),
        capability(
            "nats",
            "builtin:messaging-nats",
            &[link("wasmcloud:messaging", &["handler"], "echo")
                .source("subscriptions", "orders.>")
                .prop("delivery", "queued")],
        ),
    ]);
    one_problem(
        &refused(&m, &known(vec![("echo", echo)])),
        &[
            "capability `nats` links `wasmcloud:messaging/handler` to `echo` with `delivery: queued`",
            "put `delivery: queued` on the publishing component's wasmcloud:messaging/consumer link to `nats`",
        ],
    );
}

#[test]
fn queued_links_refuse_functions_that_return_data() {
    let mut client = facts(
        &[
            "example:greeter/greet@0.1.0",
            "example:greeter/notifier@0.1.0",
        ],
        &[],
        &[],
    );
    client.interfaces.returning_data = vec![
        "example:greeter/greet@0.1.0#greet".into(),
        "example:greeter/greet@0.1.0#where".into(),
    ];
    let greeter = facts(
        &[],
        &[
            "example:greeter/greet@0.1.0",
            "example:greeter/notifier@0.1.0",
        ],
        &[],
    );
    let linked = |interfaces: &[&'static str]| {
        manifest(&[
            component(
                "client",
                "client:0.1.0",
                &[link("example:greeter", interfaces, "greeter").prop("delivery", "queued")],
            ),
            component("greeter", "greeter:0.1.0", &[]),
        ])
    };
    let known = known(vec![("client", client), ("greeter", greeter)]);
    one_problem(
        &refused(&linked(&["greet", "notifier"]), &known),
        &[
            "component `client` links example:greeter/greet to `greeter` with `delivery: queued`",
            "greet, where of example:greeter/greet return data",
            "remove `delivery: queued`",
        ],
    );
    // One-way functions only: queued.
    assert!(
        wired(&linked(&["notifier"]), &known)[&name("client")].links[0]
            .queued
            .is_some()
    );
}

#[test]
fn a_component_cannot_link_to_itself() {
    let f = facts(
        &["example:greeter/greet@0.1.0"],
        &["example:greeter/greet@0.1.0"],
        &[],
    );
    let m = manifest(&[component(
        "loop",
        "loop:0.1.0",
        &[link("example:greeter", &["greet"], "loop")],
    )]);
    one_problem(
        &refused(&m, &known(vec![("loop", f)])),
        &["component `loop` links `example:greeter/greet` to itself"],
    );
}

#[test]
fn http_client_links_pass_their_allow_list_through() {
    let fetcher = facts(&[OUTGOING, WASI_BASE[2]], &[INCOMING], &["wasi:http"]);
    let m = manifest(&[
        component(
            "fetcher",
            "fetcher:0.1.0",
            &[link("wasi:http", &["outgoing-handler"], "client")
                .source("timeout_ms", "500")
                .target("allowed_hosts", "api.example.com, example.org:8443")],
        ),
        capability("client", "ghcr.io/wasmcloud/http-client:0.12.0", &[]),
    ]);
    let f = known(vec![("fetcher", fetcher)]);
    let l = &wired(&m, &f)[&name("fetcher")].links[0];
    assert_eq!(l.target, LinkTarget::Builtin("http-client".into()));
    assert_eq!(l.source_config, config(&[("timeout_ms", "500")]));
    assert_eq!(
        l.target_config,
        config(&[("allowed_hosts", "api.example.com, example.org:8443")])
    );

    // No allow-list: no default (every request is refused by the host).
    let m = manifest(&[
        component(
            "fetcher",
            "fetcher:0.1.0",
            &[link("wasi:http", &["outgoing-handler"], "client")],
        ),
        capability("client", "builtin:http-client", &[]),
    ]);
    assert!(
        wired(&m, &f)[&name("fetcher")].links[0]
            .target_config
            .is_empty()
    );

    let m = manifest(&[
        component(
            "fetcher",
            "fetcher:0.1.0",
            &[link("wasi:http", &["outgoing-handler"], "client")
                .source("allowed_hosts", "https://api.example.com")],
        ),
        capability("client", "builtin:http-client", &[]),
    ]);
    one_problem(
        &refused(&m, &f),
        &[
            "component `fetcher` links to `client`: in the source config",
            "`https://api.example.com`",
            "without scheme",
        ],
    );
}

#[test]
fn blobstore_links_serve_wasi_blobstore_and_check_their_root() {
    const BLOBSTORE: &str = "wasi:blobstore/blobstore@0.2.0-draft";
    const CONTAINER: &str = "wasi:blobstore/container@0.2.0-draft";
    const TYPES: &str = "wasi:blobstore/types@0.2.0-draft";
    let store = facts(&[BLOBSTORE, CONTAINER, TYPES], &[INCOMING], &[]);
    let f = known(vec![("store", store)]);
    let blobs = |l: L, image: &str| {
        manifest(&[
            component("store", "store:0.1.0", &[l]),
            capability("blobs", image, &[]),
        ])
    };
    let all = ["blobstore", "container", "types"];

    let m = blobs(
        link("wasi:blobstore", &all, "blobs").target("root", "/srv/blobs"),
        "builtin:blobstore-fs",
    );
    let l = &wired(&m, &f)[&name("store")].links[0];
    assert_eq!(l.target, LinkTarget::Builtin("blobstore-fs".into()));
    assert_eq!(l.target_config, config(&[("root", "/srv/blobs")]));

    // No root: the host's default, left to the host; wasmCloud's image means the same.
    let m = blobs(
        link("wasi:blobstore", &all, "blobs"),
        "ghcr.io/wasmcloud/blobstore-fs:0.10.0",
    );
    let l = &wired(&m, &f)[&name("store")].links[0];
    assert_eq!(l.target, LinkTarget::Builtin("blobstore-fs".into()));
    assert!(l.target_config.is_empty());

    let m = blobs(
        link("wasi:blobstore", &all, "blobs").target("root", "blobs"),
        "builtin:blobstore-fs",
    );
    one_problem(
        &refused(&m, &f),
        &[
            "component `store` links to `blobs`",
            "`blobs` is not an absolute path",
        ],
    );
    let m = blobs(
        link("wasi:blobstore", &all, "blobs").source("root", "/srv/blobs"),
        "builtin:blobstore-fs",
    );
    one_problem(&refused(&m, &f), &["move it to `target.config`"]);

    // It serves nothing else.
    let m = blobs(
        link("wasi:keyvalue", &["store"], "blobs"),
        "builtin:blobstore-fs",
    );
    assert!(
        refused(&m, &f)
            .iter()
            .any(|p| p.contains("serves only wasi:blobstore/blobstore")),
        "{:?}",
        refused(&m, &f)
    );
}

#[test]
fn messaging_delivers_subscriptions_and_serves_the_consumer() {
    let echo = facts(&[CONSUMER, WASI_BASE[0]], &[HANDLER], &[]);
    let m = manifest(&[
        component(
            "echo",
            "echo:0.1.0",
            &[link("wasmcloud:messaging", &["consumer"], "nats")],
        ),
        capability(
            "nats",
            "builtin:messaging-nats",
            &[link("wasmcloud:messaging", &["handler"], "echo")
                .source("subscriptions", "orders.*, orders.>,orders.*")],
        ),
        capability(
            "more",
            "ghcr.io/wasmcloud/messaging-nats:0.24.0",
            &[link("wasmcloud:messaging", &["handler"], "echo")
                .named("second")
                .source("subscriptions", "events.new,orders.>")],
        ),
    ]);
    let out = wired(&m, &known(vec![("echo", echo)]));
    let w = &out[&name("echo")];
    assert_eq!(w.subscriptions, ["orders.*", "orders.>", "events.new"]);
    assert_eq!(w.links.len(), 1);
    assert_eq!(
        w.links[0].target,
        LinkTarget::Builtin("messaging-nats".into())
    );
    assert!(!out.contains_key(&name("nats")));
}

#[test]
fn messaging_handler_links_are_checked() {
    let echo = || facts(&[CONSUMER], &[HANDLER], &[]);
    let with = |l: L, f: ImageFacts| {
        let m = manifest(&[
            component("echo", "echo:0.1.0", &[]),
            capability("nats", "builtin:messaging-nats", &[l]),
        ]);
        refused(&m, &known(vec![("echo", f)]))
    };
    let handler = || link("wasmcloud:messaging", &["handler"], "echo");
    one_problem(
        &with(handler(), echo()),
        &[
            "capability `nats` links wasmcloud:messaging/handler to `echo` without subjects",
            "set `subscriptions` in the link's `source.config`",
        ],
    );
    one_problem(
        &with(handler().target("subscriptions", "orders"), echo()),
        &["`subscriptions` is in the target config; move it to `source.config`"],
    );
    one_problem(
        &with(handler().source("subscriptions", " , "), echo()),
        &["empty `subscriptions`"],
    );
    one_problem(
        &with(handler().source("subscriptions", "orders.>.new"), echo()),
        &[
            "capability `nats` links wasmcloud:messaging/handler to `echo`: subject `orders.>.new`",
            "`>` before the last token",
        ],
    );
    one_problem(
        &with(
            handler().source("subscriptions", "orders"),
            facts(&[], &[INCOMING], &[]),
        ),
        &[
            "component `echo` is linked to receive messages",
            "echo:0.1.0 (sha256:",
            "does not export wasmcloud:messaging/handler",
        ],
    );
    one_problem(
        &with(link("wasmcloud:messaging", &["consumer"], "echo"), echo()),
        &[
            "capability `nats` (builtin:messaging-nats) links `wasmcloud:messaging/consumer` to `echo`",
            "only through wasmcloud:messaging/handler",
        ],
    );
}

#[test]
fn other_capabilities_do_not_link_to_components() {
    let m = manifest(&[
        component("counter", "counter:0.1.0", &[]),
        capability(
            "kv",
            "builtin:keyvalue-nats",
            &[link("wasi:keyvalue", &["store"], "counter")],
        ),
    ]);
    one_problem(
        &refused(&m, &known(vec![("counter", counter_facts())])),
        &[
            "capability `kv` (builtin:keyvalue-nats) links `wasi:keyvalue/store` to `counter`",
            "put the `link` trait on `counter`, with target `kv`",
        ],
    );
}

#[test]
fn unknown_capability_images_are_refused_once() {
    let m = manifest(&[
        component(
            "counter",
            "counter:0.1.0",
            &[link("wasi:keyvalue", &["store"], "blobs")],
        ),
        capability("blobs", "ghcr.io/wasmcloud/blobstore-s3:0.10.0", &[]),
    ]);
    one_problem(
        &refused(&m, &known(vec![("counter", counter_facts())])),
        &[
            "capability `blobs`: image `ghcr.io/wasmcloud/blobstore-s3:0.10.0` is not a capability this Lattice version knows",
            "builtin:http-server, builtin:keyvalue-nats, builtin:messaging-nats, builtin:http-client, builtin:blobstore-fs, provider:keyvalue-nats, provider:keyvalue-redis, provider:mqtt",
        ],
    );
}

#[test]
fn http_server_rules_are_kept() {
    let hello = || facts(&WASI_BASE, &[INCOMING], &[]);
    let server = |name: &str, address: &'static str, target: &'static str| {
        capability(
            name,
            "builtin:http-server",
            &[link("wasi:http", &["incoming-handler"], target).source("address", address)],
        )
    };
    let m = manifest(&[
        component("a", "hello:0.1.0", &[]),
        component("b", "hello:0.1.0", &[]),
        server("web", "127.0.0.1:8080", "a"),
        server("web2", "127.0.0.1:0", "b"),
        server("web3", "127.0.0.1:0", "a"),
    ]);
    let f = known(vec![("a", hello()), ("b", hello())]);
    let mut problems = Vec::new();
    let out = wire(&m, &f, &mut problems);
    assert_eq!(
        problems,
        ["`a` is linked to two HTTP addresses (127.0.0.1:8080 and 127.0.0.1:0); one per component"]
    );
    assert_eq!(
        out[&name("b")].http,
        Some(HttpBinding {
            address: "127.0.0.1:0".into()
        })
    );

    let m = manifest(&[
        component("a", "hello:0.1.0", &[]),
        component("b", "hello:0.1.0", &[]),
        server("web", "127.0.0.1:8080", "a"),
        server("web2", "127.0.0.1:8080", "b"),
        server("web3", "localhost:80", "a"),
        capability(
            "web4",
            "wasmcloud.azurecr.io/httpserver:0.19.1",
            &[link("wasi:http", &["outgoing-handler"], "a")],
        ),
        capability(
            "web5",
            "ghcr.io/wasmcloud/http-server:0.23.0",
            &[link("wasi:http", &["incoming-handler"], "kv")],
        ),
        capability("kv", "builtin:keyvalue-nats", &[]),
    ]);
    let problems = refused(
        &m,
        &known(vec![("a", hello()), ("b", facts(&[], &[], &[]))]),
    );
    assert_eq!(
        problems,
        [
            "address 127.0.0.1:8080 is bound to both `a` and `b`; give each its own address",
            "capability `web3`: address `localhost:80` for `a` is not `ip:port` (e.g. 127.0.0.1:8080)",
            "capability `web4` links `wasi:http/outgoing-handler` to `a`; the built-in HTTP server serves only wasi:http/incoming-handler",
            "capability `web5` links to `kv`, which is not a component",
        ]
    );

    let m = manifest(&[
        component("a", "other:0.1.0", &[]),
        server("web", "127.0.0.1:0", "a"),
    ]);
    one_problem(
        &refused(&m, &known(vec![("a", facts(&[], &[], &[]))])),
        &[
            "component `a` is linked to the HTTP server but its image other:0.1.0 does not export wasi:http/incoming-handler",
        ],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let m =
        manifest(&[
            component(
                "hello",
                "hello:0.1.0",
                &[
                    link("wasi:keyvalue", &["store"], "kv").target("bucket", "a.b"),
                    link("wasi:keyvalue", &["store"], "kv"),
                ],
            ),
            capability("kv", "builtin:keyvalue-nats", &[]),
            capability(
                "mq",
                "builtin:messaging-nats",
                &[link("wasmcloud:messaging", &["handler"], "hello")
                    .source("subscriptions", "$SYS.>")],
            ),
            capability("redis", "builtin:keyvalue-redis", &[]),
        ]);
    let problems = refused(
        &m,
        &known(vec![("hello", facts(&WASI_BASE, &[INCOMING], &[]))]),
    );
    let expected = [
        "image `builtin:keyvalue-redis` is not a capability this Lattice version knows",
        "subject `$SYS.>` is a NATS system subject",
        "does not export wasmcloud:messaging/handler",
        "links wasi:keyvalue/store under link name `default` twice",
        "bucket `a.b` is not a valid NATS KV bucket name",
        "does not import it",
    ];
    for needle in expected {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "`{needle}` not in {problems:#?}"
        );
    }
    assert!(problems.iter().any(|p| p.contains("twice, both to `kv`")));
    assert_eq!(
        problems.len(),
        expected.len(),
        "the same fault in two links is reported once: {problems:#?}"
    );
}

#[test]
fn only_components_in_links_are_read() {
    let m = manifest(&[
        component(
            "client",
            "client:0.1.0",
            &[link("example:greeter", &["greet"], "greeter")],
        ),
        component("greeter", "greeter:0.1.0", &[]),
        component("web", "web:0.1.0", &[]),
        component("alone", "alone:0.1.0", &[]),
        capability(
            "http",
            "builtin:http-server",
            &[link("wasi:http", &["incoming-handler"], "web")],
        ),
    ]);
    assert_eq!(
        involved(&m),
        [name("client"), name("greeter"), name("web")]
            .into_iter()
            .collect()
    );
}
