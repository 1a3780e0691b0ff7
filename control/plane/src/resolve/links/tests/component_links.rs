//! The rules every link obeys (the source imports what it links, its claims allow it, one link
//! per interface and name, no link to itself, every problem reported at once, only linked
//! components are read), and links from one component to another.

use super::*;

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
            source_secrets: Default::default(),
            target_secrets: Default::default(),
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
        "exports neither wasmcloud:messaging/handler",
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
