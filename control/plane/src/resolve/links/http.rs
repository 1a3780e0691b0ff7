//! The built-in HTTP server's links (`builtin:http-server`, wasmCloud's `http-server`): which
//! address serves each linked component, in wasmCloud's three routing modes, chosen by the
//! capability's own config `routing_mode` (any case, as wasmCloud read it):
//!
//! - `address` (the default): each link's source config `address` is a listener of its own
//!   (default `0.0.0.0:8000`); two components on one address are refused.
//! - `path`: one listener, the capability's `default_address` (default `0.0.0.0:8000`), shared;
//!   each link's source config `path` (`/api`) routes the requests under it to its component.
//! - `host`: the same listener; each link's `host` routes the requests whose `Host` header
//!   names it.
//!
//! A routed link without its `path` or `host`, two links on one route, or one component on
//! two routes is refused, each saying what to write.

use std::collections::BTreeMap;

use lattice_manifest::{Component, Link, Manifest, NamedConfig};
use lattice_protocol::assignment::{HttpBinding, HttpRoute};
use lattice_protocol::names::ComponentName;

use super::{Wiring, targets_component};
use crate::resolve::DEFAULT_HTTP_ADDRESS;

/// The routes taken so far: (address, route) → component.
pub(super) type Taken = BTreeMap<(String, Option<HttpRoute>), ComponentName>;

/// The routing mode of HTTP-server capability `cap`, and the address its routed links share.
fn mode(cap: &Component) -> Result<(Mode, String), String> {
    let config: BTreeMap<String, String> = NamedConfig::merged(&cap.properties.config)
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let address = config
        .get("default_address")
        .cloned()
        .unwrap_or_else(|| DEFAULT_HTTP_ADDRESS.to_string());
    let mode = match config.get("routing_mode").map(|m| m.to_ascii_lowercase()) {
        None => Mode::Address,
        Some(m) if m == "address" => Mode::Address,
        Some(m) if m == "path" => Mode::Path,
        Some(m) if m == "host" => Mode::Host,
        Some(other) => {
            return Err(format!(
                "capability `{}`: `routing_mode` `{other}` is not one of address, path, host",
                cap.name
            ));
        }
    };
    Ok((mode, address))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Address,
    Path,
    Host,
}

/// The built-in HTTP server serving `link`'s target: its binding into `out`, or the problem.
pub(super) fn http_link(
    manifest: &Manifest,
    cap: &Component,
    link: &Link,
    taken: &mut Taken,
    out: &mut BTreeMap<ComponentName, Wiring>,
    problems: &mut Vec<String>,
) {
    let target = &link.target.name;
    if (link.namespace.as_str(), link.package.as_str()) != ("wasi", "http")
        || link
            .interfaces
            .iter()
            .any(|i| i != "incoming-handler" && i != "handler")
    {
        problems.push(format!(
            "capability `{}` links `{}:{}/{}` to `{target}`; the built-in HTTP server serves only wasi:http/incoming-handler (WASI 0.2) and wasi:http/handler (WASI 0.3)",
            cap.name,
            link.namespace,
            link.package,
            link.interfaces.join(",")
        ));
        return;
    }
    if !targets_component(manifest, cap, link, problems) {
        return;
    }
    let binding = match binding(cap, link) {
        Ok(b) => b,
        Err(problem) => return problems.push(problem),
    };
    if binding.address.parse::<std::net::SocketAddr>().is_err() {
        problems.push(format!(
            "capability `{}`: address `{}` for `{target}` is not `ip:port` (e.g. 127.0.0.1:8080)",
            cap.name, binding.address
        ));
        return;
    }
    if let Some(problem) = clash(taken, &binding, target) {
        problems.push(problem);
        return;
    }
    taken.insert(
        (binding.address.clone(), binding.route.clone()),
        target.clone(),
    );
    let wiring = out.entry(target.clone()).or_default();
    match &wiring.http {
        Some(previous) if *previous != binding => problems.push(format!(
            "`{target}` is linked to two HTTP addresses ({} and {}); one per component",
            shown(previous),
            shown(&binding)
        )),
        _ => wiring.http = Some(binding),
    }
}

/// `link`'s binding in its capability's routing mode.
fn binding(cap: &Component, link: &Link) -> Result<HttpBinding, String> {
    let target = &link.target.name;
    let (mode, shared) = mode(cap)?;
    let config = NamedConfig::merged(&link.source.config);
    let route = match mode {
        Mode::Address => {
            let address = config
                .get("address")
                .cloned()
                .unwrap_or_else(|| DEFAULT_HTTP_ADDRESS.to_string());
            return Ok(HttpBinding {
                address,
                route: None,
            });
        }
        Mode::Path => match config.get("path") {
            Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => {
                HttpRoute::Path(p.clone())
            }
            Some(p) => {
                return Err(format!(
                    "capability `{}`: path `{p}` for `{target}` must start with `/` and have no spaces",
                    cap.name
                ));
            }
            None => {
                return Err(format!(
                    "capability `{}` routes by path: give the link to `{target}` a `path` in its `source.config` (e.g. `/api`)",
                    cap.name
                ));
            }
        },
        Mode::Host => match config.get("host") {
            Some(h) if !h.is_empty() && !h.contains(['/', ' ']) => HttpRoute::Host(h.clone()),
            _ => {
                return Err(format!(
                    "capability `{}` routes by host: give the link to `{target}` a `host` in its `source.config` (e.g. `shop.example.com`)",
                    cap.name
                ));
            }
        },
    };
    if config.contains_key("address") {
        return Err(format!(
            "capability `{}` routes by {}: its links share its `default_address` ({shared}); remove `address` from the link to `{target}`",
            cap.name,
            if mode == Mode::Path { "path" } else { "host" }
        ));
    }
    Ok(HttpBinding {
        address: shared,
        route: Some(route),
    })
}

/// Why `binding` for `target` clashes with what is taken, if it does. Port 0 means "any free
/// port", so such addresses never clash.
fn clash(taken: &Taken, binding: &HttpBinding, target: &ComponentName) -> Option<String> {
    if binding.address.ends_with(":0") {
        return None;
    }
    let other = taken.iter().find_map(|((address, route), other)| {
        let same =
            *address == binding.address && HttpRoute::clash(route.as_ref(), binding.route.as_ref());
        (same && other != target).then_some((other, route))
    })?;
    let (other, route) = other;
    Some(match (&binding.route, route) {
        (Some(r), Some(_)) => format!(
            "{r} on {} is routed to both `{other}` and `{target}`; give each its own",
            binding.address
        ),
        _ => format!(
            "address {} is bound to both `{other}` and `{target}`; give each its own address (or route them by path or host: `routing_mode` in the HTTP server's config)",
            binding.address
        ),
    })
}

fn shown(binding: &HttpBinding) -> String {
    match &binding.route {
        None => binding.address.clone(),
        Some(route) => format!("{} {route}", binding.address),
    }
}
