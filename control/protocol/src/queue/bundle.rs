//! Bundles: up to [`MAX_BUNDLE`] consecutive items of one lane in one stream message ("Bundles"
//! in [`crate::queue`]).

/// The most items one bundle carries.
pub const MAX_BUNDLE: usize = 64;
/// The most bytes of item envelopes one bundle carries (an item larger than this goes alone),
/// well under NATS's default 1 MiB message limit.
pub const MAX_BUNDLE_BYTES: usize = 128 * 1024;

/// The `Nats-Msg-Id` of a bundle of `count` items whose first item's id is `first`: the same
/// bundle published again is a copy within the stream's duplicate window; one made up otherwise
/// (after a restart) is not, and its receiver's lane skips what already ran.
pub fn bundle_msg_id(first: &str, count: usize) -> String {
    format!("{first}+{count}")
}

/// A bundle's body: each item's id and its envelope ([`Queued`](super::Queued), encoded), in lane order.
pub fn encode_bundle<'a>(items: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let items: Vec<(&str, &serde_bytes::Bytes)> = items
        .into_iter()
        .map(|(id, envelope)| (id, serde_bytes::Bytes::new(envelope)))
        .collect();
    crate::envelope::encode(&items)
}

/// The items of a bundle's body ([`encode_bundle`]): each one's id and envelope, in lane order.
pub fn decode_bundle(
    body: &[u8],
) -> Result<Vec<(String, serde_bytes::ByteBuf)>, crate::envelope::DecodeError> {
    crate::envelope::decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope;
    use crate::queue::{Queued, QueuedItem};
    use crate::rpc::RpcCall;

    #[test]
    fn bundles_round_trip_their_items_in_order() {
        let items = [
            ("a", &b"\x00one"[..]),
            ("b", &b""[..]),
            ("c", &b"three"[..]),
        ];
        let back = decode_bundle(&encode_bundle(items)).expect("decodes");
        let back: Vec<(&str, &[u8])> = back.iter().map(|(id, b)| (id.as_str(), &b[..])).collect();
        assert_eq!(back, items);
        assert_eq!(bundle_msg_id("a", 3), "a+3");
        // A single item's envelope is no bundle.
        let single = envelope::encode(&Queued {
            max_attempts: 1,
            expires_at_ms: 1,
            subject: "lattice.edge.q.app.sink".into(),
            item: QueuedItem::Call(RpcCall {
                interface: "example:greeter/notifier"
                    .parse()
                    .expect("an interface name"),
                function: "notify".into(),
                args: vec![0x91, 0xa1, b'x'],
                deadline_ms: 0,
                caller: "app/client".into(),
            }),
            trace: None,
        });
        assert!(decode_bundle(&single).is_err());
    }
}
