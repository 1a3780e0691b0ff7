//! The dashboard (`lattice ui`, the real binary) in headless Chromium over WebDriver: an app
//! deployed from the CLI appears, with its link graph and its event; a killed host goes lost; a
//! dead letter is requeued from the page and delivered, and a viewer's page shows the control
//! plane's refusal instead. Waits poll the page's DOM, each bounded.
//!
//! With `LATTICE_SCREENSHOTS=DIR` (`scripts/screenshots.sh`), the tests also write the PNGs the
//! README shows.

use std::time::Duration;

use anyhow::Context as _;
use lattice_protocol::auth::{Grant, Role};
use lattice_protocol::keys::{KeyPair, KeyRole};
use lattice_protocol::messages::WorkloadState;
use lattice_protocol::queue::ops::LinkSelector;
use lattice_tests::browser::{Browser, Dashboard};
use lattice_tests::cli::{Cli, arg};
use lattice_tests::edge::EdgeTopology;
use lattice_tests::queued::{self, QueuedLink, captured, log_text, manifest, setup_with};
use lattice_tests::{TestLattice, WAIT, eventually, hello_manifest, hello_wasm, http_request};
use serde_json::Value;

/// The state the hosts view shows for `host`, or null.
fn host_state(host: &str) -> String {
    format!(
        r#"const row = document.querySelector('#hosts-table tr[data-host="{host}"]');
           return row ? row.dataset.state : null;"#
    )
}

#[tokio::test]
async fn an_app_deployed_from_the_cli_appears_and_a_killed_host_goes_lost() -> anyhow::Result<()> {
    let t = TestLattice::start_with(|c| c.host_tolerance = Duration::from_secs(1)).await?;
    let host = t.add_host("gateway").await?;
    let ui = Dashboard::start(&t, &t.admin).await?;
    let browser = Browser::start().await?;
    browser.open(&format!("{}#hosts", ui.url)).await?;
    browser
        .wait_js("the host to show as ready", &host_state("gateway"), |v| {
            v == "ready"
        })
        .await?;
    let whoami = browser.text("#whoami").await?;
    let admin = t.admin.public_key().to_string();
    assert!(whoami.contains(&admin[..12]), "{whoami}");

    // Deployed with the real `lattice` binary, as an operator would.
    let cli = Cli::new(&t)?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let file = cli.file(
        "hello.yaml",
        hello_manifest("hello", "v1", &image.to_string(), "Hi", "127.0.0.1:0").as_bytes(),
    )?;
    cli.ok(&["ctl", "deploy", &arg(&file)]).await?;
    browser.open(&format!("{}#apps", ui.url)).await?;
    browser
        .wait_js(
            "hello to show as deployed, its component running",
            r#"const row = document.querySelector('#apps-table tr[data-app="hello"]');
               return row ? [row.dataset.status, row.cells[1].textContent, row.cells[3].textContent] : null;"#,
            |v| v[0] == "Deployed" && v[1] == "v1" && v[2] == "1/1 running",
        )
        .await?;
    // Its link graph: the HTTP server linked to hello, drawn and listed.
    let graph = browser
        .wait_js(
            "hello's link graph",
            r#"return [...document.querySelectorAll('#graph g[data-node]')].map(g => g.dataset.node).sort()
                 .concat([...document.querySelectorAll('#graph-edges li[data-edge]')].map(li => li.textContent));"#,
            |v| v.as_array().is_some_and(|a| a.len() == 3),
        )
        .await?;
    assert_eq!(graph[0], "hello");
    assert_eq!(graph[1], "httpserver");
    let edge = graph[2].as_str().unwrap_or_default();
    assert!(
        edge.starts_with("httpserver → hello: wasi:http/incoming-handler"),
        "{edge}"
    );
    browser.screenshot("dashboard-apps.png").await?;
    // The deploy arrived as an event, over the event stream.
    browser.open(&format!("{}#events", ui.url)).await?;
    let event = browser
        .wait_js(
            "the deploy's event",
            r#"const row = document.querySelector('#events-table tr[data-kind="deployed"]');
               return row ? row.cells[3].textContent : null;"#,
            Value::is_string,
        )
        .await?;
    assert!(
        event.as_str().is_some_and(|e| e.contains("hello")),
        "{event}"
    );

    // A host killed (no last heartbeat) goes lost on the page.
    browser.open(&format!("{}#hosts", ui.url)).await?;
    browser
        .wait_js(
            "the host's workload",
            r#"const row = document.querySelector('#hosts-table tr[data-host="gateway"]');
               return row ? row.cells[5].textContent : null;"#,
            |v| v.is_string() && v != "0",
        )
        .await?;
    browser.screenshot("dashboard-hosts.png").await?;
    host.kill().await;
    browser
        .wait_js(
            "the killed host to show as lost",
            &host_state("gateway"),
            |v| v == "lost",
        )
        .await?;
    // The page, open since before the host was lost, got the event over its event stream.
    let lost = browser
        .wait_js(
            "the host's loss as an event",
            r#"const row = document.querySelector('#events-table tr[data-kind="host_lost"]');
               return row ? row.cells[3].textContent : null;"#,
            Value::is_string,
        )
        .await?;
    let id = t
        .ctl
        .hosts()
        .await?
        .into_iter()
        .find(|h| h.name == "gateway")
        .map(|h| h.id.to_string())
        .context("the gateway is listed")?;
    assert!(
        lost.as_str().is_some_and(|e| e.contains(&id[..12])),
        "{lost}"
    );
    browser.close().await?;
    Ok(())
}

/// The greeter app again as `v2`, greeter configured to stop failing on `fail...` messages.
async fn fixed_manifest(e: &EdgeTopology, link: &QueuedLink) -> anyhow::Result<String> {
    let (client, greeter) = queued::push_images(e).await?;
    let v1 = manifest(&client, &greeter, link);
    let image = format!("        image: {greeter}\n");
    anyhow::ensure!(v1.contains(&image) && v1.contains("version: v1\n"));
    Ok(v1.replace("version: v1\n", "version: v2\n").replace(
        &image,
        &format!(
            "{image}        config:\n          - name: notify\n            properties:\n              notify-fails: never\n"
        ),
    ))
}

/// A requeue of every dead letter of the greeter link, as the page's script sends it.
const REQUEUE_ALL: &str = r#"{"link":"greeter/client->greeter","ids":[]}"#;

/// `GET /api/queues` from `addr` with the `Host` header `host`: the whole answer.
async fn raw_get(addr: &str, host: &str) -> anyhow::Result<String> {
    let request = format!("GET /api/queues HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw(addr, &request).await
}

/// Sends `request` (whole, `Connection: close`) to `addr`; the whole answer.
async fn raw(addr: &str, request: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(WAIT, exchange).await?
}

/// The dead letters the queues view lists, by call id.
const DEAD_LETTERS: &str = r#"return [...document.querySelectorAll('#dead-table tr[data-call]')].map(r => r.dataset.call);"#;

#[tokio::test]
async fn a_dead_letter_is_requeued_from_the_page_and_a_viewer_is_refused() -> anyhow::Result<()> {
    captured();
    let e = EdgeTopology::start().await?;
    let link = QueuedLink {
        max_attempts: 2,
        ..QueuedLink::default()
    };
    let (_cloud, _edge, addr) = setup_with(&e, &link).await?;
    // greeter's `notify` fails on `fail...`: after 2 attempts the call is a dead letter.
    let (status, _) = lattice_tests::http_get(&addr, "/notify?msg=fail-0.").await?;
    assert_eq!(status, 200);
    let selector: LinkSelector = "greeter/client->greeter".parse()?;
    let t = &e.hub;
    let call = t
        .wait_until("the call to be dead-lettered", || async {
            let dead = t.ctl.dead_letters(&selector).await?;
            Ok((dead.len() == 1).then(|| dead[0].call_id.clone()))
        })
        .await?;

    // A viewer sees the link's dead letter counted (not listed: dead letters carry the calls'
    // payloads), and its page shows the control plane's refusal of a requeue.
    let viewer = KeyPair::generate(KeyRole::User);
    t.ctl
        .users_add(
            &viewer.public_key(),
            Grant::new("ops", Role::Viewer, [""; 0]).map_err(anyhow::Error::msg)?,
        )
        .await?;
    let viewer_ui = Dashboard::start(t, &viewer).await?;
    let browser = Browser::start().await?;
    browser.open(&format!("{}#queues", viewer_ui.url)).await?;
    let row = r#"#queues-table tr[data-link="greeter/client->greeter"]"#;
    browser
        .wait_js(
            "the link's dead letter to be counted",
            &format!(
                r#"const row = document.querySelector('{row}');
                   return row ? row.querySelector('td.dead').textContent : null;"#
            ),
            |v| v == "1",
        )
        .await?;
    // Listing them was refused for its role, so requeueing is too: the page disables the
    // action and says why, in the control plane's words.
    let shown = browser
        .wait_js(
            "the action disabled, with the reason",
            &format!(
                r#"const button = document.querySelector('{row} button.requeue-all');
                   const why = document.querySelector('#dead-table tr.refused');
                   return button && why ? [button.disabled, button.title, why.textContent] : null;"#
            ),
            |v| !v.is_null(),
        )
        .await?;
    let refusal = "ops is a viewer and may not change app `greeter`";
    assert_eq!(shown[0], true, "{shown}");
    assert!(
        shown[1].as_str().is_some_and(|t| t.contains(refusal)),
        "{shown}"
    );
    assert!(
        shown[2].as_str().is_some_and(|t| t.contains(refusal)),
        "{shown}"
    );
    // The page's own request, made anyway, is refused by the control plane with that reason.
    let answer = raw(
        &viewer_ui.addr,
        &format!(
            "POST /api/requeue HTTP/1.1\r\nHost: {}\r\nx-lattice-ui: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nConnection: close\r\n\r\n{}",
            viewer_ui.addr,
            REQUEUE_ALL.len(),
            REQUEUE_ALL
        ),
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains(refusal), "{answer}");
    assert_eq!(t.ctl.dead_letters(&selector).await?.len(), 1);
    browser.close().await?;

    // An action without the page's header (another site's form) is refused.
    let ui = Dashboard::start(t, &t.admin).await?;
    let (status, body) = http_request(
        &ui.addr,
        "POST",
        "/api/requeue",
        r#"{"link":"greeter/client->greeter"}"#,
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("x-lattice-ui"), "{body}");
    // A request under another name (a site rebinding its name to 127.0.0.1) reads nothing.
    let answer = raw_get(&ui.addr, "attacker.example").await?;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    assert!(!answer.contains("greeter"), "{answer}");

    // Fix the target, then requeue from the admin's page: delivered once, gone from the list.
    t.ctl.deploy(&fixed_manifest(&e, &link).await?).await?;
    t.wait_for("only greeter v2 to run", || async {
        let inv = t.ctl.inventory("cloud-1").await?;
        let greeters: Vec<_> = inv
            .workloads
            .iter()
            .filter(|w| w.component.as_str() == "greeter")
            .collect();
        Ok(!greeters.is_empty()
            && greeters
                .iter()
                .all(|w| w.app_version == "v2" && w.state == WorkloadState::Running))
    })
    .await?;
    let browser = Browser::start().await?;
    browser.open(&format!("{}#queues", ui.url)).await?;
    browser
        .wait_js("the dead letter to be listed", DEAD_LETTERS, |v| {
            *v == serde_json::json!([call])
        })
        .await?;
    browser.screenshot("dashboard-queues.png").await?;
    browser
        .click(&format!(
            r#"#dead-table tr[data-call="{call}"] button.requeue"#
        ))
        .await?;
    let done = browser
        .wait_js(
            "the requeue to be confirmed",
            r#"const n = document.getElementById('notice');
               return n.hidden ? null : [n.className, n.textContent];"#,
            |v| !v.is_null(),
        )
        .await?;
    assert_eq!(done[0], "ok", "{done}");
    browser
        .wait_js("the dead letter to leave the list", DEAD_LETTERS, |v| {
            *v == serde_json::json!([])
        })
        .await?;
    eventually(WAIT, "the requeued call to be delivered", || async {
        Ok(log_text().contains(" guest: fail-0."))
    })
    .await
    .with_context(|| format!("log:\n{}", log_text()))?;
    assert!(t.ctl.dead_letters(&selector).await?.is_empty());
    browser.close().await?;
    Ok(())
}
