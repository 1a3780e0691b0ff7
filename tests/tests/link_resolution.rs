//! Link resolution at deploy time, end to end: a real nats-server and control plane, the signed
//! `hello` component in the registry. `hello` imports only WASI (and `wasi:http/types`) and
//! exports `wasi:http/incoming-handler`, so every link from it to a capability is refused, with
//! every reason in one `invalid_input` error and nothing stored.

use lattice_protocol::claims::{ClaimsOptions, sign_component};
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::unix_now;
use lattice_tests::{TestLattice, hello_wasm};

/// `hello` as component `name`, with extra YAML lines (link traits) under its traits.
fn hello(name: &str, image: &str, links: &str) -> String {
    format!(
        r#"    - name: {name}
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
{links}"#
    )
}

fn app(components: &[String]) -> String {
    format!(
        "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: linked\n  annotations:\n    version: v1\nspec:\n  components:\n{}",
        components.concat()
    )
}

fn capability(name: &str, image: &str, links: &str) -> String {
    let traits = if links.is_empty() {
        String::new()
    } else {
        format!("      traits:\n{links}")
    };
    format!(
        "    - name: {name}\n      type: capability\n      properties:\n        image: {image}\n{traits}"
    )
}

/// A `link` trait: `wit` is `namespace:package`.
fn link(wit: &str, interface: &str, target: &str, source_config: &str) -> String {
    let (namespace, package) = wit.split_once(':').expect("namespace:package");
    let source = if source_config.is_empty() {
        String::new()
    } else {
        format!(
            "            source:\n              config:\n                - name: s\n                  properties:\n                    {source_config}\n"
        )
    };
    format!(
        "        - type: link\n          properties:\n            namespace: {namespace}\n            package: {package}\n            interfaces: [{interface}]\n            target:\n              name: {target}\n{source}"
    )
}

/// Deploys `manifest`, expecting an `invalid_input` refusal that stores nothing.
async fn refused(t: &TestLattice, manifest: &str) -> anyhow::Result<WireError> {
    let err = t
        .ctl
        .deploy(manifest)
        .await
        .expect_err("the deploy is refused");
    assert_eq!(err.code, ErrorCode::InvalidInput, "{}", err.message);
    assert!(t.ctl.apps().await?.is_empty(), "nothing was stored");
    Ok(err)
}

fn assert_contains(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(message.contains(needle), "`{needle}` not in:\n{message}");
    }
}

#[tokio::test]
async fn a_link_to_an_interface_the_image_does_not_import_is_refused() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = app(&[
        hello(
            "hello",
            &image.to_string(),
            &link("wasi:keyvalue", "store", "kv", ""),
        ),
        capability("kv", "builtin:keyvalue-nats", ""),
    ]);
    let err = refused(&t, &manifest).await?;
    assert_contains(
        &err.message,
        &[
            "app `linked` cannot be deployed",
            &format!(
                "component `hello` links wasi:keyvalue/store to `kv`, but its image {image} does not import it"
            ),
        ],
    );
    Ok(())
}

#[tokio::test]
async fn every_link_problem_is_reported_in_one_refusal() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    // Signed with an allow list that leaves out wasi:http, which hello imports.
    let signed = sign_component(
        &hello_wasm(),
        &t.issuer,
        &ClaimsOptions {
            allow: vec!["wasi:keyvalue".into()],
            ..ClaimsOptions::named("hello", "0.1.0")
        },
        unix_now(),
    )?;
    let image = t.push(&signed).await?.to_string();
    let manifest = app(&[
        // `a` calls `b` on wasi:http/types: `a` imports it, but its claims do not allow it,
        // and `b` does not export it.
        hello("a", &image, &link("wasi:http", "types", "b", "")),
        hello(
            "b",
            &image,
            &link(
                "wasi:http",
                "outgoing-handler",
                "fetch",
                "allowed_hosts: http://x",
            ),
        ),
        capability("fetch", "ghcr.io/wasmcloud/http-client:0.12.0", ""),
        capability(
            "mq",
            "builtin:messaging-nats",
            &link(
                "wasmcloud:messaging",
                "handler",
                "a",
                "subscriptions: lattice.>",
            ),
        ),
        capability("blobs", "ghcr.io/wasmcloud/blobstore-s3:0.10.0", ""),
    ]);
    let err = refused(&t, &manifest).await?;
    assert_contains(
        &err.message,
        &[
            "component `a` links wasi:http/types to `b`, but its signed claims do not allow wasi:http/types@0.2",
            "(allowed: wasi:keyvalue)",
            "component `a` links wasi:http/types to component `b`, but the image",
            "does not export it",
            "component `b` links wasi:http/outgoing-handler to `fetch`, but its image",
            "component `b` links to `fetch`: in the source config, `allowed_hosts` entry `http://x`",
            "capability `mq` links wasmcloud:messaging/handler to `a`: subject `lattice.>`",
            "component `a` is linked to receive messages but its image",
            "capability `blobs`: image `ghcr.io/wasmcloud/blobstore-s3:0.10.0` is not a capability this Lattice version knows",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn built_in_capabilities_without_links_are_accepted() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = app(&[
        hello("hello", &image.to_string(), ""),
        capability("kv", "builtin:keyvalue-nats", ""),
        capability("mq", "ghcr.io/wasmcloud/messaging-nats:0.24.0", ""),
        capability("fetch", "builtin:http-client", ""),
    ]);
    let reply = t.ctl.deploy(&manifest).await?;
    assert_eq!((reply.version.as_str(), reply.changed), ("v1", true));
    Ok(())
}

#[tokio::test]
async fn a_queued_link_to_functions_that_return_data_is_refused() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let client = t
        .push_example(env!("LATTICE_GREETER_CLIENT_WASM"), "greeter-client")
        .await?;
    let greeter = t
        .push_example(env!("LATTICE_GREETER_WASM"), "greeter")
        .await?;
    let queued = |interfaces: &str| {
        app(&[
            hello(
                "client",
                &client.to_string(),
                &format!(
                    "{}            delivery: queued\n",
                    link("example:greeter", interfaces, "greeter", "")
                ),
            ),
            hello("greeter", &greeter.to_string(), ""),
        ])
    };
    // Read from greeter-client's real import types: `greet`'s functions answer with data.
    let err = refused(&t, &queued("greet, notifier")).await?;
    assert_contains(
        &err.message,
        &[
            "component `client` links example:greeter/greet to `greeter` with `delivery: queued`",
            "greet, where, fail, echo of example:greeter/greet return data",
        ],
    );
    assert!(!err.message.contains("notifier"), "{}", err.message);
    // `notifier.notify` returns `result<_, string>`: one-way, so it may be queued.
    t.ctl.deploy(&queued("notifier")).await?;
    Ok(())
}
