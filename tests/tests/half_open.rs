//! Links that stop carrying packets without closing (half-open): a `lattice-host` process whose
//! NATS connection goes through a proxy that goes silent notices it by its own pings, dials
//! again, and once the link carries packets again it reports and serves as before.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use lattice_protocol::messages::HostState;
use lattice_tests::proxy::Proxy;
use lattice_tests::{TestLattice, WAIT, eventually, lattice_bin};

/// A `lattice-host` process, SIGKILLed on drop.
struct HostProcess(Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_host_notices_a_silent_link_by_its_pings_and_reports_again_once_it_carries()
-> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], t.nats.port))).await?;
    let state = tempfile::tempdir()?;
    let _host = HostProcess(
        Command::new(lattice_bin().with_file_name("lattice-host"))
            .args(["--nats-url", &format!("nats://{}", proxy.addr)])
            .args(["--lattice", t.lattice.as_str(), "--name", "behind-proxy"])
            .args(["--trust-issuer", t.issuer.public_key().as_str()])
            .args(["--trust-operator", t.operator.public_key().as_str()])
            // One ping a second: three unanswered ones end the connection.
            .args([
                "--heartbeat-secs",
                "1",
                "--nats-ping-secs",
                "1",
                "--state-dir",
            ])
            .arg(state.path())
            .env("LATTICE_JOIN_TOKEN", t.join_token())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let ready = |max_silence: u64| {
        let ctl = t.ctl.clone();
        async move {
            Ok(ctl.hosts().await?.iter().any(|h| {
                h.name == "behind-proxy"
                    && h.state == HostState::Ready
                    && h.last_seen_secs <= max_silence
            }))
        }
    };
    eventually(WAIT, "the host to report through the proxy", || ready(1)).await?;

    // The link goes silent: nothing is closed, nothing crosses.
    let dialled = proxy.accepted();
    let frozen_at = Instant::now();
    proxy.freeze();
    eventually(
        WAIT,
        "the host to give the silent connection up and dial again",
        || async { Ok(proxy.accepted() > dialled) },
    )
    .await?;
    let noticed = frozen_at.elapsed();
    // The default ping interval (60 s, three missed) would take minutes; one second takes a
    // few. Printed, not asserted: the machine is shared.
    println!("the host noticed the silent link after {noticed:?}");

    // Nothing reached the control plane meanwhile.
    let ctl = t.ctl.clone();
    eventually(
        WAIT,
        "the control plane to miss the host's heartbeats",
        || async {
            Ok(ctl
                .hosts()
                .await?
                .iter()
                .any(|h| h.name == "behind-proxy" && h.last_seen_secs >= 2))
        },
    )
    .await?;

    proxy.heal();
    eventually(
        WAIT,
        "the host to report again once the link carries",
        || ready(1),
    )
    .await?;
    Ok(())
}
