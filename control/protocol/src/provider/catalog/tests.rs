//! The catalogue's images and config checks.

use super::*;

#[test]
fn images_name_builtins() {
    for (image, expected) in [
        ("builtin:http-server", Some(&HTTP_SERVER)),
        ("ghcr.io/wasmcloud/http-server:0.23.0", Some(&HTTP_SERVER)),
        ("wasmcloud.azurecr.io/httpserver:0.19.1", Some(&HTTP_SERVER)),
        ("builtin:keyvalue-nats", Some(&KEYVALUE_NATS)),
        (
            "ghcr.io/wasmcloud/keyvalue-nats:0.3.1",
            Some(&KEYVALUE_NATS),
        ),
        ("builtin:messaging-nats", Some(&MESSAGING_NATS)),
        (
            "ghcr.io/wasmcloud/messaging-nats:canary",
            Some(&MESSAGING_NATS),
        ),
        ("builtin:http-client", Some(&HTTP_CLIENT)),
        ("ghcr.io/wasmcloud/http-client:0.12.0", Some(&HTTP_CLIENT)),
        ("builtin:keyvalue-redis", None),
        ("provider:keyvalue-redis", Some(&KEYVALUE_REDIS)),
        (
            "ghcr.io/wasmcloud/keyvalue-redis:0.28.1",
            Some(&KEYVALUE_REDIS),
        ),
        ("provider:keyvalue-nats", Some(&KEYVALUE_NATS_PROCESS)),
        ("provider:mqtt", Some(&MQTT)),
        ("builtin:blobstore-fs", Some(&BLOBSTORE_FS)),
        ("ghcr.io/wasmcloud/blobstore-fs:0.10.0", Some(&BLOBSTORE_FS)),
        ("provider:blobstore-fs", None),
        ("builtin:http-server2", None),
    ] {
        let key = |d: Option<&ProviderDescription>| d.map(|d| (d.name, d.runs));
        assert_eq!(key(from_image(image)), key(expected), "{image}");
    }
    assert_eq!(
        images(),
        "builtin:http-server, builtin:keyvalue-nats, builtin:messaging-nats, builtin:http-client, builtin:blobstore-fs, builtin:blobstore-nats, provider:keyvalue-nats, provider:keyvalue-redis, provider:mqtt"
    );
}

#[test]
fn blob_roots() {
    for ok in ["blobs", "shop/photos", "a b", "x..y"] {
        assert_eq!(root_problem(ok), None, "{ok}");
    }
    for (bad, needle) in [
        ("", "empty"),
        ("/var/lib/blobs", "is an absolute path"),
        ("/", "is an absolute path"),
        ("./blobs", "contains `.`"),
        ("..", "contains `..`"),
        ("shop/../../etc", "contains `..`"),
        ("a\0b", "NUL"),
    ] {
        let problem = root_problem(bad).expect("refused");
        assert!(problem.contains(needle), "{bad}: {problem}");
    }
}

#[test]
fn bucket_names() {
    for ok in ["orders", "my-app_2", "A"] {
        assert_eq!(bucket_problem(ok), None, "{ok}");
    }
    for bad in ["", "my bucket", "a.b", "a/b", "ключ", "a*"] {
        let problem = bucket_problem(bad).expect("refused");
        assert!(problem.contains(&format!("`{bad}`")), "{problem}");
    }
    for reserved in ["LATTICE_default_manifests", "lattice_x"] {
        assert!(
            bucket_problem(reserved).is_some_and(|p| p.contains("reserved")),
            "{reserved}"
        );
    }
}

#[test]
fn allowed_hosts_lists() {
    for ok in [
        "",
        "*",
        "api.example.com",
        "api.example.com:8443, example.org",
        "127.0.0.1:8080,localhost",
        "[::1]:8080,[2001:db8::1]",
        "a.example.com,",
    ] {
        assert_eq!(allowed_hosts_problem(ok), None, "{ok}");
    }
    for (bad, needle) in [
        ("https://api.example.com", "without scheme"),
        ("api.example.com/v1", "without scheme"),
        ("api.example.com:http", "`api.example.com:http`"),
        ("api.example.com:0", "host:port"),
        ("api.example.com:70000", "host:port"),
        ("a b", "`a b`"),
        ("::1", "`::1`"),
        ("[nonsense]:80", "`[nonsense]:80`"),
    ] {
        let problem = allowed_hosts_problem(bad).expect("refused");
        assert!(problem.contains(needle), "{bad}: {problem}");
    }
}

#[test]
fn subjects() {
    assert_eq!(
        subscriptions("orders.*, orders.>,events,orders.*,").as_deref(),
        Ok(&["orders.*".to_string(), "orders.>".into(), "events".into()][..])
    );
    assert_eq!(subscriptions(""), Ok(vec![]));
    for (bad, needle) in [
        ("orders..new", "empty token"),
        (".orders", "empty token"),
        ("orders.", "empty token"),
        ("orders new", "space"),
        ("orders.>.new", "`>` before the last token"),
        ("orders.new*", "inside a token"),
        ("orders.a>", "inside a token"),
        (">", "starts with a wildcard"),
        ("*.orders", "starts with a wildcard"),
        ("lattice.default.ctl.deploy", "lattice's own subjects"),
        ("$KV.LATTICE_default_tags.>", "system subject"),
        ("_INBOX.>", "replies"),
    ] {
        let problem = subscriptions(&format!("ok.subject,{bad}")).expect_err(bad);
        assert!(
            problem.contains(&format!("`{bad}`")) && problem.contains(needle),
            "{bad}: {problem}"
        );
    }
}

#[test]
fn each_provider_is_found_by_its_own_image_and_declares_consistent_keys() {
    for d in ALL {
        let found = from_image(&d.image()).map(|f| (f.name, f.runs));
        assert_eq!(found, Some((d.name, d.runs)), "{}", d.image());
        for key in d.config {
            // A default is written into the provider's end, so only a target key can have one.
            assert!(
                !key.defaults_to_app || key.end == End::Target,
                "{}: {}",
                d.name,
                key.key
            );
        }
    }
}
