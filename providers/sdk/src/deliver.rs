//! Delivering a message to a component's `wasmcloud:messaging/handler`, from a provider: an
//! ordinary component call on the component's call subject, wherever its instances run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lattice_protocol::envelope;
use lattice_protocol::names::LatticeName;
use lattice_protocol::rpc::{RpcCall, RpcReply};
use lattice_protocol::subject::Subject;
use rmpv::Value;

use crate::LinkId;

/// Calls the handler of `link`'s component with one message; `Err` says why it was not
/// handled (no instance, a trap, or the handler's own error).
pub async fn deliver_message(
    client: &async_nats::Client,
    lattice: &LatticeName,
    link: &LinkId,
    subject: &str,
    body: &[u8],
    reply_to: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    // One argument: the `broker-message` record, as a map of its fields (see the host's codec).
    let message = Value::Map(vec![
        (Value::from("subject"), Value::from(subject)),
        (Value::from("body"), Value::Binary(body.to_vec())),
        (
            Value::from("reply-to"),
            reply_to.map_or(Value::Nil, Value::from),
        ),
    ]);
    let mut args = Vec::new();
    rmpv::encode::write_value(&mut args, &Value::Array(vec![message]))
        .map_err(|e| e.to_string())?;
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + timeout;
    let call = RpcCall {
        interface: "wasmcloud:messaging/handler"
            .parse()
            .expect("an interface name"),
        function: "handle-message".into(),
        args,
        deadline_ms: deadline.as_millis() as u64,
        caller: format!("provider for {link}"),
    };
    let request = async_nats::Request::new()
        .payload(envelope::encode(&call).into())
        .timeout(Some(timeout));
    let to = Subject::rpc(lattice, &link.app, &link.component).to_string();
    let reply = client
        .send_request(to, request)
        .await
        .map_err(|e| format!("delivering to {}/{}: {e}", link.app, link.component))?;
    match envelope::decode::<RpcReply>(&reply.payload).map_err(|e| e.to_string())? {
        RpcReply::Err(e) => Err(e.to_string()),
        RpcReply::Ok(results) => {
            // `result<_, string>`: `{"ok": nil}` or `{"err": "why"}`.
            let value = rmpv::decode::read_value(&mut &results[..]).map_err(|e| e.to_string())?;
            let refused = value
                .as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_map)
                .and_then(|m| m.first())
                .filter(|(k, _)| k.as_str() == Some("err"))
                .map(|(_, v)| v.as_str().unwrap_or("refused").to_string());
            refused.map_or(Ok(()), Err)
        }
    }
}
