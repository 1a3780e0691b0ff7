//! A component's `properties.limits` (lattice addition): `memory` per instance (`64Mi`),
//! `timeout` per call (`30s`) and `concurrency`, the instances that may run at once on one
//! host; and `instance`, how a WASI 0.3 HTTP component's instances are reused (`concurrency`
//! requests at once, `requests` in all, kept `idle` so long). Each is optional (the host's
//! default then applies) and each host clamps what is asked to its own maximum.

use std::time::Duration;

use crate::diagnostic::Diagnostic;
use crate::model::{InstanceReuse, Limits};
use crate::yaml::{Node, Reader, pos};

/// One WebAssembly page: the smallest memory limit that lets an instance have memory at all.
pub(crate) const MIN_MEMORY: u64 = 64 << 10;
/// A 32-bit linear memory cannot be larger.
pub(crate) const MAX_MEMORY: u64 = 4 << 30;
/// Below one epoch tick a deadline cannot be kept.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// A call longer than this is a job, not a call.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// More instances at once than any host has slots for.
pub(crate) const MAX_CONCURRENCY: u32 = 10_000;
/// More requests at once than one instance's task table is meant for.
const MAX_INSTANCE_CONCURRENCY: u32 = 1_000;
/// Instances kept idle longer than this hold their memory for nothing.
const MAX_IDLE: Duration = Duration::from_secs(3600);

const MEMORY_HELP: &str = "write a size such as `64Mi`, `512Ki` or `1Gi` (or a number of bytes)";

/// `64Mi`, `512Ki`, `1Gi` (also `MiB` spellings) or a plain number of bytes, in bytes.
pub(crate) fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim() {
        "" => 0,
        "Ki" | "KiB" => 10,
        "Mi" | "MiB" => 20,
        "Gi" | "GiB" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// Reads `limits`; `None` after reporting a problem.
pub(crate) fn read(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<Limits> {
    let fields = reader.mapping(
        node,
        path,
        &["memory", "timeout", "concurrency", "instance"],
    )?;
    let mut ok = true;
    let mut limits = Limits::default();
    if let Some(node) = fields.optional("memory") {
        let path = fields.path("memory");
        limits.memory = reader.string(node, &path).and_then(|text| {
            let problem = match parse_memory(&text) {
                None => format!("`{text}` is not a memory size"),
                Some(bytes) if bytes < MIN_MEMORY => {
                    "must be at least 64Ki (one WebAssembly page)".to_string()
                }
                Some(bytes) if bytes > MAX_MEMORY => {
                    "must be at most 4Gi (the largest 32-bit linear memory)".to_string()
                }
                Some(_) => return Some(text.trim().to_string()),
            };
            reader.push(Diagnostic::new(pos(node), path, problem).with_help(MEMORY_HELP));
            None
        });
        ok &= limits.memory.is_some();
    }
    if let Some(node) = fields.optional("timeout") {
        let path = fields.path("timeout");
        limits.timeout = reader.non_empty_string(node, &path).and_then(|text| {
            let problem = match humantime::parse_duration(text.trim()) {
                Err(e) => format!("`{text}` is not a duration: {e}"),
                Ok(d) if d < MIN_TIMEOUT => "must be at least 10ms".to_string(),
                Ok(d) if d > MAX_TIMEOUT => "must be at most 1h".to_string(),
                Ok(_) => return Some(text.trim().to_string()),
            };
            reader.push(
                Diagnostic::new(pos(node), path, problem)
                    .with_help("write a duration such as `500ms`, `30s` or `2m`"),
            );
            None
        });
        ok &= limits.timeout.is_some();
    }
    if let Some(node) = fields.optional("concurrency") {
        let path = fields.path("concurrency");
        limits.concurrency = reader.whole_number(node, &path).filter(|n| {
            let fits = (1..=MAX_CONCURRENCY).contains(n);
            if !fits {
                reader.push(
                    Diagnostic::new(
                        pos(node),
                        path.as_str(),
                        format!("must be from 1 to {MAX_CONCURRENCY}"),
                    )
                    .with_help("the instances that may run at once on one host, e.g. `16`"),
                );
            }
            fits
        });
        ok &= limits.concurrency.is_some();
    }
    if let Some(node) = fields.optional("instance") {
        limits.instance = read_instance(reader, node, &fields.path("instance"));
        ok &= limits.instance.is_some();
    }
    ok.then_some(limits)
}

/// Reads `limits.instance`; `None` after reporting a problem.
fn read_instance(reader: &mut Reader, node: &Node<'_>, path: &str) -> Option<InstanceReuse> {
    let fields = reader.mapping(node, path, &["concurrency", "requests", "idle"])?;
    let mut ok = true;
    let mut reuse = InstanceReuse::default();
    // `Err` after reporting a problem; `Ok(None)` when not written.
    let number = |reader: &mut Reader, name: &str, max: u32, help: &str| {
        let Some(node) = fields.optional(name) else {
            return Ok(None);
        };
        let path = fields.path(name);
        let n = reader.whole_number(node, &path).ok_or(())?;
        if (1..=max).contains(&n) {
            return Ok(Some(n));
        }
        reader.push(
            Diagnostic::new(pos(node), path.as_str(), format!("must be from 1 to {max}"))
                .with_help(help),
        );
        Err(())
    };
    let concurrency = number(
        reader,
        "concurrency",
        MAX_INSTANCE_CONCURRENCY,
        "the requests one instance serves at once, e.g. `16`",
    );
    let requests = number(
        reader,
        "requests",
        u32::MAX,
        "the requests one instance serves before a fresh one takes over, e.g. `128`",
    );
    ok &= concurrency.is_ok() && requests.is_ok();
    reuse.concurrency = concurrency.unwrap_or_default();
    reuse.requests = requests.unwrap_or_default();
    if let Some(node) = fields.optional("idle") {
        let path = fields.path("idle");
        reuse.idle = reader.non_empty_string(node, &path).and_then(|text| {
            let problem = match humantime::parse_duration(text.trim()) {
                Err(e) => format!("`{text}` is not a duration: {e}"),
                Ok(d) if d.is_zero() => "must be more than 0s".to_string(),
                Ok(d) if d > MAX_IDLE => "must be at most 1h".to_string(),
                Ok(_) => return Some(text.trim().to_string()),
            };
            reader.push(
                Diagnostic::new(pos(node), path, problem)
                    .with_help("write a duration such as `500ms`, `10s` or `2m`"),
            );
            None
        });
        ok &= reuse.idle.is_some();
    }
    ok.then_some(reuse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_read_in_binary_units() {
        assert_eq!(parse_memory("64Mi"), Some(64 << 20));
        assert_eq!(parse_memory(" 512KiB "), Some(512 << 10));
        assert_eq!(parse_memory("1Gi"), Some(1 << 30));
        assert_eq!(parse_memory("65536"), Some(65536));
        for bad in [
            "",
            "Mi",
            "64MB",
            "64 megs",
            "-1Mi",
            "1.5Gi",
            "99999999999999999999Gi",
        ] {
            assert_eq!(parse_memory(bad), None, "{bad}");
        }
    }
}
