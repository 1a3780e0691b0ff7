//! The HTTP server's routing modes, as wasmCloud's `http-server` provider had them: with
//! `routing_mode: path` in the capability's config, components share its `default_address`,
//! each serving the requests under its link's `path`; with `host`, each serving the requests
//! whose `Host` header names its link's `host`. Unrouted requests get 404; a routed link
//! without its route is refused at deploy.

use lattice_tests::{TestLattice, hello_wasm, http_get, http_request_for};

/// A free port on loopback, for an address the components share.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Two hello components greeting `Hello` and `Hallo`, behind one HTTP server routing by `mode`;
/// `routes` is each link's route key and value (`path: /en`), `None` for a link without one.
fn manifest(image: &str, mode: &str, address: &str, routes: [Option<&str>; 2]) -> String {
    let component = |name: &str, greeting: &str| {
        format!(
            r#"
    - name: {name}
      type: component
      properties:
        image: {image}
        config:
          - name: greeting
            properties:
              GREETING: {greeting}
      traits:
        - type: spreadscaler
          properties:
            instances: 1"#
        )
    };
    let link = |target: &str, route: Option<&str>| {
        let config = route.map_or(String::new(), |r| {
            format!(
                r#"
            source:
              config:
                - name: route-{target}
                  properties:
                    {r}"#
            )
        });
        format!(
            r#"
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]{config}
            target:
              name: {target}"#
        )
    };
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: routed-{mode}
  annotations:
    version: v1
spec:
  components:{}{}
    - name: httpserver
      type: capability
      properties:
        image: ghcr.io/wasmcloud/http-server:0.23.0
        config:
          - name: routing
            properties:
              routing_mode: {mode}
              default_address: {address}
      traits:{}{}
"#,
        component("en", "Hello"),
        component("de", "Hallo"),
        link("en", routes[0]),
        link("de", routes[1]),
    )
}

#[tokio::test]
async fn components_share_an_address_routed_by_path_or_by_host() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let image = image.to_string();

    let by_path = format!("127.0.0.1:{}", free_port()?);
    t.ctl
        .deploy(&manifest(
            &image,
            "path",
            &by_path,
            [Some("path: /en"), Some("path: /de")],
        ))
        .await?;
    t.wait_deployed("routed-path").await?;
    assert_eq!(
        http_get(&by_path, "/en").await?,
        (200, "Hello from Lattice (host edge-1)\n".into())
    );
    assert_eq!(
        http_get(&by_path, "/de/anything").await?,
        (200, "Hallo from Lattice (host edge-1)\n".into())
    );
    let (code, body) = http_get(&by_path, "/fr").await?;
    assert_eq!(code, 404, "{body}");
    assert_eq!(http_get(&by_path, "/english").await?.0, 404, "by segment");

    let by_host = format!("127.0.0.1:{}", free_port()?);
    t.ctl
        .deploy(&manifest(
            &image,
            "host",
            &by_host,
            [Some("host: en.example"), Some("host: de.example")],
        ))
        .await?;
    t.wait_deployed("routed-host").await?;
    let get = |host: &'static str| http_request_for(&by_host, host, "GET", "/", "");
    assert_eq!(
        get("en.example").await?,
        (200, "Hello from Lattice (host edge-1)\n".into())
    );
    assert_eq!(
        get("DE.example:8080").await?,
        (200, "Hallo from Lattice (host edge-1)\n".into())
    );
    assert_eq!(get("fr.example").await?.0, 404);

    // Undeploying one app closes its port, and leaves the other's.
    t.ctl
        .undeploy(&lattice_protocol::names::AppName::new("routed-host")?)
        .await?;
    t.wait_for("the host-routed port to close", || async {
        Ok(tokio::net::TcpStream::connect(&by_host).await.is_err())
    })
    .await?;
    assert_eq!(http_get(&by_path, "/en").await?.0, 200);

    // A routed link without its route is refused, saying what to write.
    let refused = t
        .ctl
        .deploy(
            &manifest(&image, "path", &by_path, [Some("path: /en"), None])
                .replace("version: v1", "version: v2"),
        )
        .await
        .expect_err("a path-routed link without a path");
    assert!(
        refused
            .to_string()
            .contains("give the link to `de` a `path`"),
        "{refused}"
    );
    Ok(())
}
