//! Links to and from the built-in capabilities: what each serves, key-value buckets, the HTTP
//! client's allow list, blobstore roots, messaging subscriptions and handlers, the HTTP server's
//! addresses, and unknown capability images.

use super::*;

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
                source_secrets: Default::default(),
                target_secrets: Default::default(),
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
        link("wasi:blobstore", &all, "blobs").target("root", "shop/photos"),
        "builtin:blobstore-fs",
    );
    let l = &wired(&m, &f)[&name("store")].links[0];
    assert_eq!(l.target, LinkTarget::Builtin("blobstore-fs".into()));
    assert_eq!(l.target_config, config(&[("root", "shop/photos")]));

    // No root: the host's default, left to the host; wasmCloud's image means the same.
    let m = blobs(
        link("wasi:blobstore", &all, "blobs"),
        "ghcr.io/wasmcloud/blobstore-fs:0.10.0",
    );
    let l = &wired(&m, &f)[&name("store")].links[0];
    assert_eq!(l.target, LinkTarget::Builtin("blobstore-fs".into()));
    assert!(l.target_config.is_empty());

    let m = blobs(
        link("wasi:blobstore", &all, "blobs").target("root", "/var/lib/lattice/host"),
        "builtin:blobstore-fs",
    );
    one_problem(
        &refused(&m, &f),
        &[
            "component `store` links to `blobs`",
            "`/var/lib/lattice/host` is an absolute path",
            "--blob-root-base",
        ],
    );
    let m = blobs(
        link("wasi:blobstore", &all, "blobs").target("root", "../host"),
        "builtin:blobstore-fs",
    );
    one_problem(&refused(&m, &f), &["`../host` contains `..`"]);
    let m = blobs(
        link("wasi:blobstore", &all, "blobs").source("root", "srv/blobs"),
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
            "exports neither wasmcloud:messaging/handler",
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
            "builtin:http-server, builtin:keyvalue-nats, builtin:messaging-nats, builtin:http-client, builtin:blobstore-fs, builtin:blobstore-nats, provider:keyvalue-nats, provider:keyvalue-redis, provider:mqtt",
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
            address: "127.0.0.1:0".into(),
            route: None,
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
            "address 127.0.0.1:8080 is bound to both `a` and `b`; give each its own address (or route them by path or host: `routing_mode` in the HTTP server's config)",
            "capability `web3`: address `localhost:80` for `a` is not `ip:port` (e.g. 127.0.0.1:8080)",
            "capability `web4` links `wasi:http/outgoing-handler` to `a`; the built-in HTTP server serves only wasi:http/incoming-handler (WASI 0.2) and wasi:http/handler (WASI 0.3)",
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
            "component `a` is linked to the HTTP server but its image other:0.1.0 does not export wasi:http/incoming-handler (WASI 0.2) or wasi:http/handler (WASI 0.3)",
        ],
    );
}
