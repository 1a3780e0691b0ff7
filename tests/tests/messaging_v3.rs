//! `wasmcloud:messaging@0.3.0` end to end: `examples/messaging-v3` (an `incoming-handler`
//! export, `producer` and `request-reply` imports) linked to `messaging-nats` with a wadm-shaped
//! manifest. A request from outside is answered with `reply`, content type and metadata carried
//! as NATS headers both ways; a plain message is answered with `producer.send`; a request made
//! by the component gets its reply.

use std::time::Duration;

use futures::StreamExt as _;
use lattice_protocol::digest::Digest;
use lattice_tests::TestLattice;

/// The component receiving `v3.in` and linked to publish and request through NATS.
fn manifest(image: &Digest) -> String {
    format!(
        r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: echo3
  annotations:
    version: v1
spec:
  components:
    - name: echo
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: 1
        - type: link
          properties:
            namespace: wasmcloud
            package: messaging
            interfaces: [producer, request-reply]
            target:
              name: nats
    - name: nats
      type: capability
      properties:
        image: ghcr.io/wasmcloud/messaging-nats:0.27.0
      traits:
        - type: link
          properties:
            namespace: wasmcloud
            package: messaging
            interfaces: [incoming-handler]
            source:
              config:
                - name: subscriptions
                  properties:
                    subscriptions: v3.in
            target:
              name: echo
"#
    )
}

fn header<'a>(message: &'a async_nats::Message, key: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(key).map(|v| v.as_str())
}

#[tokio::test]
async fn a_messaging_0_3_component_answers_with_content_type_and_metadata() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let _host = t.add_host("edge-1").await?;
    let image = t
        .push_example(env!("LATTICE_MESSAGING_V3_WASM"), "messaging-v3")
        .await?;
    t.ctl.deploy(&manifest(&image)).await?;
    t.wait_deployed("echo3").await?;
    let client = &t.client;

    // A request: answered with `reply`, its metadata kept, the content type defaulted.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("x-id", "7");
    let request = async_nats::Request::new()
        .payload("hi".into())
        .headers(headers)
        .timeout(Some(Duration::from_secs(10)));
    let answer = client.send_request("v3.in", request).await?;
    assert_eq!(&answer.payload[..], b"HI");
    assert_eq!(header(&answer, "Content-Type"), Some("text/plain"));
    assert_eq!(header(&answer, "x-id"), Some("7"));
    assert_eq!(header(&answer, "x-handled"), Some("messaging-v3"));

    // A plain message: sent on with `producer` to `v3.in.echo`, its content type kept.
    let mut echoes = client.subscribe("v3.in.echo").await?;
    client.flush().await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    client
        .publish_with_headers("v3.in", headers, r#"{"a":1}"#.into())
        .await?;
    let echo = tokio::time::timeout(Duration::from_secs(10), echoes.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the echo subscription ended"))?;
    assert_eq!(&echo.payload[..], br#"{"A":1}"#);
    assert_eq!(header(&echo, "Content-Type"), Some("application/json"));

    // A request the component makes, answered from outside.
    let mut pings = client.subscribe("v3.pong").await?;
    client.flush().await?;
    let responder = client.clone();
    let answering = tokio::spawn(async move {
        let ping = pings.next().await?;
        let reply = ping.reply?;
        responder.publish(reply, "pong!".into()).await.ok()
    });
    client.publish("v3.in", "request:v3.pong".into()).await?;
    let echo = tokio::time::timeout(Duration::from_secs(10), echoes.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("the echo subscription ended"))?;
    assert_eq!(String::from_utf8_lossy(&echo.payload), "pong!");
    answering.await?;
    Ok(())
}
