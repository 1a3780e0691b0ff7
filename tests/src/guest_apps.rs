//! One-component apps around the hand-made guests of `lattice-test-guests`, for the limits and
//! guest-bomb suites: deploy a guest with a `limits` block, deploy `hello` as the neighbour that
//! must keep answering, and read a response's head as well as its body.

use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{TestLattice, endpoint, hello_manifest, hello_wasm, http_get};

/// A manifest serving the component `image` as app `app` on a port of its own, with
/// `limits` (YAML lines such as `memory: 16Mi`, empty for none) as its `properties.limits`.
pub fn guest_manifest(app: &str, image: &str, limits: &[&str]) -> String {
    let limits = if limits.is_empty() {
        String::new()
    } else {
        let lines: Vec<String> = limits.iter().map(|l| format!("          {l}\n")).collect();
        format!("        limits:\n{}", lines.concat())
    };
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
    - name: guest
      type: component
      properties:
        image: {image}
{limits}      traits:
        - type: spreadscaler
          properties:
            instances: 1
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
              name: guest
            source:
              config:
                - name: http
                  properties:
                    address: 127.0.0.1:0
"#
    )
}

/// Signs, pushes and deploys `component` as app `app` with `limits`; its address once deployed.
pub async fn deploy_guest(
    t: &TestLattice,
    app: &str,
    component: &[u8],
    limits: &[&str],
) -> anyhow::Result<String> {
    let image = t.push(&t.sign(component, app, "0.1.0")).await?;
    t.ctl
        .deploy(&guest_manifest(app, &image.to_string(), limits))
        .await?;
    endpoint(&t.wait_deployed(app).await?)
}

/// Deploys `hello` as app `neighbour`; its address once it answers.
pub async fn deploy_neighbour(t: &TestLattice) -> anyhow::Result<String> {
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = hello_manifest(
        "neighbour",
        "v1",
        &image.to_string(),
        "Neighbour",
        "127.0.0.1:0",
    );
    t.ctl.deploy(&manifest).await?;
    let addr = endpoint(&t.wait_deployed("neighbour").await?)?;
    neighbour_answers(&addr).await?;
    Ok(addr)
}

/// Fails unless the neighbour answers its greeting.
pub async fn neighbour_answers(addr: &str) -> anyhow::Result<()> {
    let (code, body) = http_get(addr, "/").await?;
    anyhow::ensure!(
        code == 200 && body.starts_with("Neighbour from Lattice"),
        "the neighbour answered {code}: {body}"
    );
    Ok(())
}

/// A response: status, head (lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The status line and headers, lower-cased.
    pub head: String,
    /// The body (not de-chunked: the host's own answers are not chunked).
    pub body: String,
}

impl Reply {
    /// The value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    }
}

/// GET `http://{addr}/` on a fresh connection, within `within`.
pub async fn get(addr: &str, within: Duration) -> anyhow::Result<Reply> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no status code")?;
        anyhow::Ok(Reply {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        })
    };
    tokio::time::timeout(within, exchange)
        .await
        .with_context(|| format!("GET http://{addr}/ took longer than {within:?}"))?
}
