//! Outgoing HTTP checks the address a name resolves to, end to end: a real nats-server, the
//! control plane, a host, the `http-fetch` guest sending through the host's `http-client`
//! capability, and a local HTTP server on loopback that only an explicitly listed address may
//! reach. Each refusal is also checked not to disturb a neighbouring workload on the host.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lattice_protocol::digest::Digest;
use lattice_tests::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};

const ANY_PORT: &str = "127.0.0.1:0";

/// http-fetch as app `app`, linked to the http-client capability allowing `allowed`.
fn fetch_manifest(app: &str, image: &Digest, allowed: &str) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {app}
  annotations:
    version: v1
spec:
  rollout:
    healthy_for: 0s
  components:
    - name: fetch
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [outgoing-handler]
            target:
              name: httpclient
              config:
                - name: allow
                  properties:
                    allowed_hosts: "{allowed}"
    - name: httpclient
      type: capability
      properties:
        image: builtin:http-client
    - name: httpserver
      type: capability
      properties:
        image: builtin:http-server
      traits:
        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            target:
              name: fetch
            source:
              config:
                - name: http
                  properties:
                    address: {ANY_PORT}
"#
    )
}

/// Everything this test process logs, as text: a `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

/// A one-route HTTP server on loopback answering `pong`, and how many connections it accepted.
async fn pong_server() -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\npong",
                    )
                    .await;
            });
        }
    });
    Ok((addr, accepted))
}

/// Deploys `hello` as app `neighbour`: its endpoint.
async fn deploy_neighbour(t: &TestLattice) -> anyhow::Result<String> {
    let hello = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "neighbour",
            "v1",
            &hello.to_string(),
            "Hello",
            ANY_PORT,
        ))
        .await?;
    endpoint(&t.wait_deployed("neighbour").await?)
}

/// Pushes `http-fetch`: its image.
async fn push_fetch(t: &TestLattice) -> anyhow::Result<Digest> {
    t.push_example(env!("LATTICE_HTTP_FETCH_WASM"), "http-fetch")
        .await
}

/// Deploys `http-fetch` (`image`) as app `app` allowing `allowed`: its endpoint.
async fn deploy_fetch(
    t: &TestLattice,
    image: &Digest,
    app: &str,
    allowed: &str,
) -> anyhow::Result<String> {
    t.ctl.deploy(&fetch_manifest(app, image, allowed)).await?;
    endpoint(&t.wait_deployed(app).await?)
}

/// Asks `fetch` for `url`: it must be refused with the WIT error `HttpRequestDenied`, and the
/// neighbour must answer right after.
async fn assert_denied(fetch: &str, neighbour: &str, url: &str) -> anyhow::Result<()> {
    let (code, body) = http_get(fetch, &format!("/?url={url}")).await?;
    assert_eq!(code, 502, "{url}: {body}");
    assert!(body.contains("HttpRequestDenied"), "{url}: {body}");
    assert_eq!(
        http_get(neighbour, "/health").await?,
        (200, "ok".into()),
        "the neighbour after {url}"
    );
    Ok(())
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_and_a_listed_address_reaches_it()
-> anyhow::Result<()> {
    // Each test runs in its own process (nextest), so the global subscriber is this test's.
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("lattice_host::caps=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let (server, accepted) = pong_server().await?;
    let port = server.port();
    let neighbour = deploy_neighbour(&t).await?;
    let image = push_fetch(&t).await?;
    let by_name = deploy_fetch(&t, &image, "by-name", "localhost").await?;
    let by_address = deploy_fetch(&t, &image, "by-address", &format!("127.0.0.1:{port}")).await?;

    // `localhost` is allowed by name, but it resolves to loopback, which the link does not list
    // as an address.
    assert_denied(
        &by_name,
        &neighbour,
        &format!("http://localhost:{port}/ping"),
    )
    .await?;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    // The host says why, and what would allow it.
    let text = captured.text();
    let line = text
        .lines()
        .find(|l| l.contains("outgoing HTTP request denied") && l.contains("localhost resolves to"))
        .unwrap_or_else(|| panic!("no refusal logged in:\n{text}"));
    assert!(line.contains("a loopback address"), "{line}");
    assert!(line.contains(&format!(":{port})")), "{line}");

    // The same server through the address the link lists explicitly.
    assert_eq!(
        http_get(&by_address, &format!("/?url=http://127.0.0.1:{port}/ping")).await?,
        (200, "200 pong".into())
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // A listed address is listed with its port: another port on loopback stays closed.
    assert_denied(
        &by_address,
        &neighbour,
        &format!("http://127.0.0.1:{}/ping", port ^ 1),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_wildcard_reaches_no_loopback_mapped_or_metadata_address() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let (server, accepted) = pong_server().await?;
    let port = server.port();
    let neighbour = deploy_neighbour(&t).await?;
    let image = push_fetch(&t).await?;
    let fetch = deploy_fetch(&t, &image, "fetch", "*").await?;

    for url in [
        format!("http://localhost:{port}/ping"),
        format!("http://127.0.0.1:{port}/ping"),
        // Loopback written as an IPv4-mapped IPv6 literal is still loopback.
        format!("http://[::ffff:127.0.0.1]:{port}/ping"),
        format!("http://[::1]:{port}/ping"),
        // The cloud metadata service.
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        assert_denied(&fetch, &neighbour, &url).await?;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    Ok(())
}
