//! A link's delivery properties (lattice addition): `delivery: direct | queued`, and for queued
//! links `ttl`, `capacity`, `on_full` and `max_attempts`. The same properties queue calls
//! between components and messages a component publishes through `messaging-nats`; which link
//! targets may be queued is checked when the control plane resolves links (it knows what each
//! target is).

use lattice_protocol::clock::MAX_QUEUED_TTL;

use crate::diagnostic::Diagnostic;
use crate::model::{Delivery, OnFull};
use crate::yaml::{Fields, Node, Reader, pos};

/// What a link's delivery properties hold.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    pub(crate) delivery: Option<Delivery>,
    pub(crate) ttl: Option<String>,
    pub(crate) capacity: Option<u32>,
    pub(crate) on_full: Option<OnFull>,
    pub(crate) max_attempts: Option<u32>,
}

/// Reads the delivery properties of a link; `None` after reporting a problem.
pub(crate) fn read(reader: &mut Reader, fields: &Fields<'_, '_>) -> Option<Settings> {
    let (delivery, mut ok) = match read_mode(reader, fields) {
        Ok(delivery) => (delivery, true),
        Err(()) => (None, false),
    };
    let queued = delivery == Some(Delivery::Queued);
    let delivery_ok = ok;
    let only_queued = |reader: &mut Reader, key: &str, node: &Node<'_>| {
        if !queued && delivery_ok {
            reader.push(
                Diagnostic::new(
                    fields.key_pos(key).unwrap_or(pos(node)),
                    fields.path(key),
                    format!("`{key}` applies only to queued links"),
                )
                .with_help("add `delivery: queued`, or remove it"),
            );
            return false;
        }
        true
    };
    let mut settings = Settings {
        delivery,
        ..Settings::default()
    };
    if let Some(node) = fields.optional("ttl") {
        ok &= only_queued(reader, "ttl", node);
        let path = fields.path("ttl");
        settings.ttl = reader
            .non_empty_string(node, &path)
            .and_then(|text| read_ttl(reader, node, &path, &text));
        ok &= settings.ttl.is_some();
    }
    for key in ["capacity", "max_attempts"] {
        let Some(node) = fields.optional(key) else {
            continue;
        };
        ok &= only_queued(reader, key, node);
        let path = fields.path(key);
        let value = reader.whole_number(node, &path).filter(|n| {
            if *n == 0 {
                reader.push(
                    Diagnostic::new(pos(node), path.as_str(), "must be at least 1").with_help(
                        if key == "capacity" {
                            "the number of calls or messages the sending host keeps, e.g. `10000`"
                        } else {
                            "the number of delivery attempts before dead-lettering, e.g. `5`"
                        },
                    ),
                );
            }
            *n > 0
        });
        ok &= value.is_some();
        if key == "capacity" {
            settings.capacity = value;
        } else {
            settings.max_attempts = value;
        }
    }
    if let Some(node) = fields.optional("on_full") {
        ok &= only_queued(reader, "on_full", node);
        let path = fields.path("on_full");
        settings.on_full = match reader.string(node, &path).as_deref().map(str::trim) {
            Some("refuse") => Some(OnFull::Refuse),
            Some("drop_oldest") => Some(OnFull::DropOldest),
            Some(other) => {
                reader.push(
                    Diagnostic::new(pos(node), path, format!("`{other}` is not a policy"))
                        .with_help("write `refuse` (the default) or `drop_oldest`"),
                );
                None
            }
            None => None,
        };
        ok &= settings.on_full.is_some();
    }
    ok.then_some(settings)
}

/// `delivery:` (absent: the default). `Err` after reporting a problem.
fn read_mode(reader: &mut Reader, fields: &Fields<'_, '_>) -> Result<Option<Delivery>, ()> {
    let Some(node) = fields.optional("delivery") else {
        return Ok(None);
    };
    let path = fields.path("delivery");
    match reader.string(node, &path).as_deref().map(str::trim) {
        Some("direct") => Ok(Some(Delivery::Direct)),
        Some("queued") => Ok(Some(Delivery::Queued)),
        Some(other) => {
            reader.push(
                Diagnostic::new(pos(node), path, format!("`{other}` is not a delivery mode"))
                    .with_help("write `direct` (the default) or `queued`"),
            );
            Err(())
        }
        None => Err(()),
    }
}

/// A queued link's `ttl`: a duration from 1 s to the hub's longest; `None` after reporting why.
fn read_ttl(reader: &mut Reader, node: &Node<'_>, path: &str, text: &str) -> Option<String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d > MAX_QUEUED_TTL => {
            reader.push(
                Diagnostic::new(
                    pos(node),
                    path,
                    format!(
                        "must be at most {} days: the hub keeps queued items no longer",
                        MAX_QUEUED_TTL.as_secs() / 86_400
                    ),
                )
                .with_help("write a duration such as `24h` or `7days`"),
            );
            None
        }
        Ok(d) if d.as_secs() >= 1 => Some(text.trim().to_string()),
        Ok(_) => {
            reader.push(
                Diagnostic::new(pos(node), path, "must be at least 1s")
                    .with_help("write a duration such as `1h` or `24h`"),
            );
            None
        }
        Err(e) => {
            reader.push(
                Diagnostic::new(pos(node), path, format!("`{text}` is not a duration: {e}"))
                    .with_help("write a duration such as `1h` or `24h`"),
            );
            None
        }
    }
}
