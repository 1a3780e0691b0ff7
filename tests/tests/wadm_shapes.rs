//! wadm-shaped manifests written for wasmCloud 1.x, deployed unchanged with the real `lattice`
//! binary: the fixture `control/manifest/tests/ui/wasmcloud_http_hello.yaml` (a named link with
//! `source: {name, config}` and `target: {name}`, a scaler on the capability, a `file://` image)
//! deploys and answers; what Lattice cannot honour is refused by `lattice ctl deploy` with the
//! field, the reason and what to do, before anything is sent. A component built with the
//! `wasmcloud-component` crate (`examples/wasmcloud-counter`) runs unchanged: it chooses
//! between two key-value links by name with `wasmcloud:bus/lattice@2.0.0` and reads a secret
//! through `wasmcloud:secrets`; a component on `wasmcloud:bus/lattice@1.0.0` (`kv-counter`)
//! chooses the same way. wasmCloud's own hello world template (`examples/wasmcloud-hello`) runs
//! unchanged from the template's manifest.

use lattice_tests::cli::{Cli, arg, assert_says};
use lattice_tests::{TestLattice, endpoint, hello_wasm, http_get};

const HELLO: &str = include_str!("../../control/manifest/tests/ui/wasmcloud_http_hello.yaml");
const NOT_HONOURED: &str =
    include_str!("../../control/manifest/tests/ui/wasmcloud_not_honoured.yaml");
const COUNTER: &str = include_str!("../../control/manifest/tests/ui/wasmcloud_counter.yaml");

#[tokio::test]
async fn a_wadm_manifest_deploys_unchanged_and_answers() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let cli = Cli::new(&t)?;
    // Where the manifest's `file://build/http_hello_world_s.wasm` points, beside it.
    cli.file(
        "app/build/http_hello_world_s.wasm",
        &t.sign(&hello_wasm(), "http-hello-world", "0.1.0"),
    )?;
    let manifest = cli.file("app/wadm.yaml", HELLO.as_bytes())?;

    cli.ok(&["ctl", "deploy", &arg(&manifest)]).await?;
    let status = t.wait_deployed("wasmcloud-hello").await?;
    let (code, body) = http_get(&endpoint(&status)?, "/").await?;
    assert_eq!(
        (code, body.as_str()),
        (200, "Wadm from Lattice (host edge-1)\n")
    );
    Ok(())
}

#[tokio::test]
async fn wasmclouds_own_hello_world_runs_unchanged() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let cli = Cli::new(&t)?;
    // The template's component (`examples/wasmcloud-hello`, the `wasmcloud-component` crate),
    // where the template's manifest expects it.
    let wasm = std::fs::read(env!("LATTICE_WASMCLOUD_HELLO_WASM"))?;
    let file = cli.file(
        "app/build/http_hello_world_s.wasm",
        &t.sign(&wasm, "http-hello-world", "0.1.0"),
    )?;
    let inspected = cli.local(&["inspect", &arg(&file)]).await?;
    assert_says(&inspected, &["wasi:cli/environment", "wasi:http/types"]);
    let manifest = cli.file("app/wadm.yaml", HELLO.as_bytes())?;
    cli.ok(&["ctl", "deploy", &arg(&manifest)]).await?;
    let status = t.wait_deployed("wasmcloud-hello").await?;
    let (code, body) = http_get(&endpoint(&status)?, "/").await?;
    assert_eq!((code, body.as_str()), (200, "Hello from Rust!\n"));
    Ok(())
}

#[tokio::test]
async fn what_lattice_cannot_honour_is_refused_with_what_to_do() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let cli = Cli::new(&t)?;
    let manifest = cli.file("shared/wadm.yaml", NOT_HONOURED.as_bytes())?;
    let stderr = cli.refused(&["ctl", "deploy", &arg(&manifest)]).await?;
    assert_says(
        &stderr,
        &[
            "spec.policies[0]",
            "policy `nats-kv` cannot be honoured",
            "secrets",
            "spec.components[0].properties.application",
            "cannot be shared",
            "replace `application` with the `image`",
            "source.name",
        ],
    );
    assert!(t.ctl.apps().await?.is_empty(), "nothing was deployed");
    Ok(())
}

#[tokio::test]
async fn a_wasmcloud_component_chooses_its_links_by_name_and_reads_its_secrets()
-> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let cli = Cli::new(&t)?;
    let wasm = std::fs::read(env!("LATTICE_WASMCLOUD_COUNTER_WASM"))?;
    let file = cli.file(
        "app/build/wasmcloud_counter.wasm",
        &t.sign(&wasm, "wasmcloud-counter", "0.1.0"),
    )?;
    // Built as wasmCloud users build theirs: it imports wasmCloud's own interfaces.
    let inspected = cli.local(&["inspect", &arg(&file)]).await?;
    assert_says(
        &inspected,
        &[
            "wasmcloud:bus/lattice@2.0.0",
            "wasmcloud:secrets/store@0.1.0-draft",
        ],
    );
    let manifest = cli.file("app/wadm.yaml", COUNTER.as_bytes())?;
    cli.ok(&["ctl", "deploy", &arg(&manifest)]).await?;
    let addr = endpoint(&t.wait_deployed("wasmcloud-counter").await?)?;

    // No link chosen: the link named `default`, bucket `counts`.
    let get = |path: &'static str| http_get(&addr, path);
    assert_eq!(
        get("/count/apples").await?,
        (200, "Grüezi apples: 1\n".into())
    );
    // `cache` is another bucket: its own count, and `counts` is untouched.
    assert_eq!(
        get("/count/apples?link=cache").await?,
        (200, "Grüezi apples: 1\n".into())
    );
    assert_eq!(
        get("/count/apples?link=cache").await?,
        (200, "Grüezi apples: 2\n".into())
    );
    assert_eq!(
        get("/count/apples").await?,
        (200, "Grüezi apples: 2\n".into())
    );
    // A name no link has is refused by set-link-name itself, saying which.
    let (code, body) = get("/count/apples?link=nope").await?;
    assert_eq!(code, 400, "{body}");
    assert_says(&body, &["no link named `nope`", "wasi:keyvalue/store"]);

    // The secret reaches the component, and only as a secret.
    assert_eq!(
        get("/secret/api-password?expect=opensesame").await?,
        (200, "matches\n".into())
    );
    assert_eq!(
        get("/secret/api-password?expect=guess").await?,
        (403, "differs\n".into())
    );
    assert_eq!(
        get("/secret/greeting").await?.0,
        404,
        "config is not a secret"
    );
    Ok(())
}

/// kv-counter with two key-value links to one NATS capability: `default` (bucket `counts`)
/// and `cache` (bucket `cache`).
fn two_buckets(image: &str) -> String {
    let link = |name: &str, bucket: &str| {
        format!(
            r#"
        - type: link
          properties:
            name: {name}
            namespace: wasi
            package: keyvalue
            interfaces: [store, atomics]
            target:
              name: kv
              config:
                - name: {bucket}
                  properties:
                    bucket: {bucket}"#
        )
    };
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: counter-v1
  annotations:
    version: v1
spec:
  components:
    - name: counter
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1{}{}
    - name: kv
      type: capability
      properties:
        image: ghcr.io/wasmcloud/keyvalue-nats:0.3.1
    - name: httpserver
      type: capability
      properties:
        image: ghcr.io/wasmcloud/http-server:0.23.0
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            source:
              config:
                - name: http
                  properties:
                    address: 127.0.0.1:0
            target:
              name: counter
"#,
        link("default", "counts"),
        link("cache", "cache"),
    )
}

#[tokio::test]
async fn a_bus_1_0_component_chooses_its_key_value_link_by_name() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_KV_COUNTER_WASM"), "kv-counter")
        .await?;
    t.ctl.deploy(&two_buckets(&image.to_string())).await?;
    let addr = endpoint(&t.wait_deployed("counter-v1").await?)?;
    let get = |path: &'static str| http_get(&addr, path);
    assert_eq!(get("/apples").await?, (200, "Hello apples: 1\n".into()));
    assert_eq!(
        get("/_via/cache/apples").await?,
        (200, "Hello apples: 1\n".into())
    );
    assert_eq!(
        get("/_via/cache/apples").await?,
        (200, "Hello apples: 2\n".into())
    );
    assert_eq!(
        get("/_via/default/apples").await?,
        (200, "Hello apples: 2\n".into())
    );
    // @1.0.0 has no error to give: the next call through an unknown name fails, naming it.
    let (code, body) = get("/_via/nope/apples").await?;
    assert_eq!(code, 500, "{body}");
    assert_says(&body, &["no key-value link named `nope`"]);
    Ok(())
}
