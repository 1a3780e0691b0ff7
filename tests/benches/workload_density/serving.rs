//! An app of `n` hello components, each served on its own address, and waiting until every one
//! of them has answered its first request.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use lattice_protocol::messages::{AppState, WorkloadState};
use lattice_protocol::names::AppName;
use lattice_tests::{TestLattice, http_get};
use tokio::task::JoinSet;

/// The greeting component `i` of `app` answers with, so that each address is shown to serve its
/// own workload.
pub fn greeting(app: &str, i: usize) -> String {
    format!("{app}-{i}")
}

/// One app of `n` hello components (`c0`..), one instance each, each linked to the built-in
/// HTTP server on its own `127.0.0.1:0` (any port: the host reports the one it bound).
pub fn manifest(app: &str, image: &str, n: usize) -> String {
    let mut components = String::new();
    let mut links = String::new();
    for i in 0..n {
        let greeting = greeting(app, i);
        components.push_str(&format!(
            r#"    - name: c{i}
      type: component
      properties:
        image: {image}
        config:
          - name: greeting-{i}
            properties:
              GREETING: "{greeting}"
      traits:
        - type: spreadscaler
          properties:
            instances: 1
"#
        ));
        links.push_str(&format!(
            r#"        - type: link
          properties:
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            target:
              name: c{i}
            source:
              config:
                - name: http-{i}
                  properties:
                    address: 127.0.0.1:0
"#
        ));
    }
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
{components}    - name: httpserver
      type: capability
      properties:
        image: builtin:http-server
      traits:
{links}"#
    )
}

/// One workload's first request.
#[derive(Debug, Clone, Copy)]
pub struct FirstRequest {
    /// From the deploy request to this 200.
    pub since_deploy: Duration,
    /// From sending the request (connect included) to the whole response.
    pub latency: Duration,
}

/// Waits until each of the `n` components of `app` reports an address and answers a `GET /` there
/// with 200 and its own greeting; `deployed` is when the deploy was asked. The status is read
/// every 100 ms; each address is requested once, as soon as it is reported. Fails on any other
/// answer, on a failed workload, or after `within`.
pub async fn first_requests(
    t: &TestLattice,
    app: &str,
    n: usize,
    deployed: Instant,
    within: Duration,
) -> anyhow::Result<BTreeMap<String, FirstRequest>> {
    let name = AppName::new(app)?;
    let mut requested = BTreeMap::new();
    let mut answered = BTreeMap::new();
    let mut requests = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + within;
    while answered.len() < n {
        tokio::select! {
            _ = tick.tick() => {
                // A status that cannot be read now (a busy control plane) is read again.
                let Ok(status) = t.ctl.status(&name).await else { continue };
                if status.status == AppState::Failed {
                    bail!("{app} failed: {}", status.message);
                }
                for c in &status.components {
                    if c.state == WorkloadState::Failed {
                        bail!("{app}/{} failed on its host: {}", c.name, c.message);
                    }
                    let Some(endpoint) = c.endpoint.clone() else { continue };
                    if c.state != WorkloadState::Running
                        || requested.insert(c.name.to_string(), endpoint.clone()).is_some()
                    {
                        continue;
                    }
                    let i: usize = c.name.as_str()[1..].parse().context("component c<i>")?;
                    let expected = format!("{} from Lattice", greeting(app, i));
                    let component = c.name.to_string();
                    requests.spawn(async move {
                        let sent = Instant::now();
                        let answer = http_get(&endpoint, "/").await;
                        let latency = sent.elapsed();
                        let since_deploy = deployed.elapsed();
                        let (code, body) = answer.with_context(|| format!("GET {endpoint}"))?;
                        anyhow::ensure!(
                            code == 200 && body.starts_with(&expected),
                            "{component} on {endpoint}: {code} {body:?}, not 200 {expected:?}"
                        );
                        Ok((component, FirstRequest { since_deploy, latency }))
                    });
                }
            }
            Some(done) = requests.join_next() => {
                let (component, first) = done.context("a request task")??;
                answered.insert(component, first);
            }
            () = tokio::time::sleep_until(deadline) => {
                bail!(
                    "after {within:?}: {} of {n} components of {app} reported an address, {} \
                     answered",
                    requested.len(),
                    answered.len()
                );
            }
        }
    }
    Ok(answered)
}
