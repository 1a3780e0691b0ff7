//! `lattice ui`: the live web dashboard of a lattice. One static page (HTML, CSS and plain
//! JavaScript embedded in the binary, [`assets`]) and a JSON API under `/api/` ([`api`]) that
//! answers with the operator's own [`CtlClient`]: every request the page makes is a ctl request
//! signed with the operator's key, so the control plane applies that operator's role to it, and
//! a refusal reaches the page with the control plane's message. Events come as Server-Sent
//! Events read from the events stream as `ctl watch` reads it ([`events`]); [`server`] is the
//! HTTP side (routing, the guards against other sites and other hosts).
//!
//! The server acts with the operator's key: whoever reaches it acts as the operator. It binds to
//! loopback unless `--allow-remote` says otherwise ([`check_addr`]).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use lattice_connect::{self as nats, Patience};
use lattice_control::client::CtlClient;

use crate::args::UiArgs;

mod api;
mod assets;
mod events;
mod server;

/// What every request handler needs: the operator's client and the lattice's connection.
#[derive(Debug)]
struct State {
    /// Signs as the operator; the control plane checks its role.
    ctl: CtlClient,
    /// The connection, for the events stream.
    client: async_nats::Client,
    /// The lattice served.
    lattice: lattice_protocol::names::LatticeName,
    /// The `Host` headers accepted (`None`: any, with `--allow-remote`), against DNS rebinding:
    /// a page of another site whose name resolves to 127.0.0.1 must not read the API.
    hosts: Option<Vec<String>>,
}

/// Runs `lattice ui` until Ctrl-C.
pub async fn run(args: UiArgs) -> anyhow::Result<()> {
    check_addr(args.addr, args.allow_remote)?;
    let target = nats::target(&args.nats, args.state_dir.as_deref())?;
    let client = nats::connect(&args.nats, &target.url, "lattice ui", Patience::FailFast).await?;
    let (key, trusted) = crate::ctl::users::identity_of(
        args.key.as_deref(),
        args.state_dir.as_deref(),
        &args.control_keys,
    )?;
    let ctl = CtlClient::new(client.clone(), target.lattice.clone(), key, trusted);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| {
            format!(
                "binding the dashboard to {}; pick another with --addr (port 0: any free one)",
                args.addr
            )
        })?;
    let bound = listener.local_addr()?;
    let state = Arc::new(State {
        hosts: (!args.allow_remote).then(|| allowed_hosts(bound)),
        ctl,
        client,
        lattice: target.lattice,
    });
    // Tests and scripts read the address from this line (with --addr ...:0).
    eprintln!(
        "serving the dashboard of lattice {} on http://{bound}/ as user {} (Ctrl-C to stop)",
        state.lattice,
        state.ctl.user()
    );
    tokio::select! {
        result = server::serve(listener, state) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Refuses a non-loopback address unless `allow_remote`: the dashboard acts with the operator's
/// key, so anyone who reaches it acts as the operator.
pub fn check_addr(addr: SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || allow_remote {
        return Ok(());
    }
    anyhow::bail!(
        "--addr {addr} is not a loopback address: the dashboard signs every request with your key, so anyone who reaches {addr} would act as you. Serve on 127.0.0.1 (the default) and reach it through an SSH tunnel, or pass --allow-remote behind an authenticating proxy"
    )
}

/// The `Host` header values a browser sends for `bound` (loopback names only).
fn allowed_hosts(bound: SocketAddr) -> Vec<String> {
    let port = bound.port();
    vec![
        bound.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_allowed() {
        let local: SocketAddr = "127.0.0.1:8470".parse().expect("an address");
        let v6: SocketAddr = "[::1]:8470".parse().expect("an address");
        let any: SocketAddr = "0.0.0.0:8470".parse().expect("an address");
        assert!(check_addr(local, false).is_ok());
        assert!(check_addr(v6, false).is_ok());
        let refused = check_addr(any, false)
            .expect_err("0.0.0.0 is refused")
            .to_string();
        assert!(refused.contains("--allow-remote"), "{refused}");
        assert!(refused.contains("act as you"), "{refused}");
        assert!(check_addr(any, true).is_ok());
    }

    #[test]
    fn host_headers_name_the_bound_port() {
        let hosts = allowed_hosts("127.0.0.1:9000".parse().expect("an address"));
        assert!(hosts.contains(&"localhost:9000".to_string()));
        assert!(hosts.contains(&"127.0.0.1:9000".to_string()));
        assert!(!hosts.iter().any(|h| h.ends_with(":8470")));
    }
}
