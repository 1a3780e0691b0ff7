//! Real processes, really killed: `lattice-host` and `lattice control` binaries under SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lattice_protocol::messages::{AppState, AppStatus, WorkloadState};
use lattice_tests::{TestLattice, hello_wasm, lattice_bin};

/// A `lattice-host` process, SIGKILLed on drop.
struct HostProcess {
    child: Child,
    name: String,
    state_dir: PathBuf,
}

impl HostProcess {
    fn start(
        t: &TestLattice,
        name: &str,
        labels: &[&str],
        state_dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(lattice_bin().with_file_name("lattice-host"));
        cmd.args([
            "--nats-url",
            &t.nats.url,
            "--lattice",
            t.lattice.as_str(),
            "--name",
            name,
        ])
        .args(["--trust-issuer", t.issuer.public_key().as_str()])
        .args(["--trust-operator", t.operator.public_key().as_str()])
        .env("LATTICE_JOIN_TOKEN", t.join_token())
        .args(["--heartbeat-secs", "1", "--state-dir"])
        .arg(state_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for label in labels {
            cmd.args(["--label", label]);
        }
        Ok(Self {
            child: cmd.spawn()?,
            name: name.to_string(),
            state_dir: state_dir.to_path_buf(),
        })
    }

    fn sigkill(mut self) -> anyhow::Result<()> {
        self.child.kill()?; // SIGKILL
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host name per host id.
async fn names(t: &TestLattice) -> anyhow::Result<Vec<(String, String)>> {
    Ok(t.ctl
        .hosts()
        .await?
        .into_iter()
        .map(|h| (h.id.to_string(), h.name))
        .collect())
}

/// (component, host name, instances) of every running placement.
fn placements(status: &AppStatus, names: &[(String, String)]) -> Vec<(String, String, u32)> {
    status
        .components
        .iter()
        .filter(|c| c.state == WorkloadState::Running)
        .filter_map(|c| {
            let host = c.host.as_ref()?;
            let name = names.iter().find(|(id, _)| id == host.as_str())?.1.clone();
            Some((c.name.to_string(), name, c.instances))
        })
        .collect()
}

fn count(p: &[(String, String, u32)], component: &str, host_prefix: &str) -> u32 {
    p.iter()
        .filter(|(c, h, _)| c == component && h.starts_with(host_prefix))
        .map(|(_, _, n)| n)
        .sum()
}

const APP: &str = r#"apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: fleet
  annotations:
    version: v1
spec:
  components:
    - name: web
      type: component
      properties:
        image: IMAGE
      traits:
        - type: spreadscaler
          properties:
            instances: 4
            spread:
              - name: edge
                weight: 50
                requirements:
                  zone: edge
              - name: cloud
                weight: 50
                requirements:
                  zone: cloud
    - name: agent
      type: component
      properties:
        image: IMAGE
      traits:
        - type: daemonscaler
          properties:
            instances: 1
            spread:
              - name: gateways
                requirements:
                  role: gateway
    - name: recorder
      type: component
      properties:
        image: IMAGE
      traits:
        - type: spreadscaler
          properties:
            instances: 1
            spread:
              - name: edge
                pinned: true
                requirements:
                  zone: edge
"#;

#[tokio::test]
async fn five_hosts_place_by_labels_and_survive_sigkill() -> anyhow::Result<()> {
    let t = TestLattice::start_with(|c| c.host_tolerance = Duration::from_secs(2)).await?;
    let dir = tempfile::tempdir()?;
    let start =
        |name: &str, labels: &[&str]| HostProcess::start(&t, name, labels, &dir.path().join(name));
    let mut hosts = vec![
        start("edge-1", &["zone=edge", "role=gateway"])?,
        start("edge-2", &["zone=edge", "role=gateway"])?,
        start("cloud-1", &["zone=cloud"])?,
        start("cloud-2", &["zone=cloud"])?,
        start("cloud-3", &["zone=cloud"])?,
    ];
    t.wait_for("five hosts", || async {
        Ok(t.ctl.hosts().await?.len() == 5)
    })
    .await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&APP.replace("IMAGE", &image.to_string()))
        .await?;
    let status = t.wait_deployed("fleet").await?;
    let p = placements(&status, &names(&t).await?);
    // Spread by weight, daemon on every gateway, the pinned recorder on one edge host.
    assert_eq!(
        (count(&p, "web", "edge"), count(&p, "web", "cloud")),
        (2, 2),
        "{p:?}"
    );
    assert_eq!(
        (count(&p, "agent", "edge-1"), count(&p, "agent", "edge-2")),
        (1, 1),
        "{p:?}"
    );
    assert_eq!(count(&p, "agent", "cloud"), 0, "{p:?}");
    assert_eq!(count(&p, "recorder", "edge"), 1, "{p:?}");

    // A gateway joining later gets its daemon instance.
    hosts.push(start("edge-3", &["zone=edge", "role=gateway"])?);
    t.wait_for("the daemon on the new gateway", || async {
        let status = t.ctl.status(&"fleet".parse()?).await?;
        Ok(count(&placements(&status, &names(&t).await?), "agent", "edge-3") == 1)
    })
    .await?;

    // SIGKILL a cloud host holding web and the edge host holding the recorder.
    let holders = |component: &str, prefix: &str| -> Vec<String> {
        p.iter()
            .filter(|(c, h, _)| c == component && h.starts_with(prefix))
            .map(|(_, h, _)| h.clone())
            .collect()
    };
    let cloud_victim = holders("web", "cloud")[0].clone();
    let edge_victim = holders("recorder", "edge")[0].clone();
    let mut restart_dir = None;
    for victim in [&cloud_victim, &edge_victim] {
        let i = hosts
            .iter()
            .position(|h| &h.name == victim)
            .expect("running");
        let host = hosts.remove(i);
        if *victim == cloud_victim {
            restart_dir = Some(host.state_dir.clone());
        }
        host.sigkill()?;
    }
    let names_now = names(&t).await?;
    t.wait_for(
        "web to run 2 instances on the remaining cloud hosts",
        || async {
            let status = t.ctl.status(&"fleet".parse()?).await?;
            let p = placements(&status, &names_now);
            Ok(count(&p, "web", "cloud") == 2 && count(&p, "web", &cloud_victim) == 0)
        },
    )
    .await?;
    // The pinned recorder stays with its silent host: nothing else is given it.
    let status = t.ctl.status(&"fleet".parse()?).await?;
    let recorder_hosts: Vec<String> = status
        .components
        .iter()
        .filter(|c| c.name.as_str() == "recorder")
        .filter_map(|c| c.host.as_ref())
        .filter_map(|h| {
            names_now
                .iter()
                .find(|(id, _)| id == h.as_str())
                .map(|(_, n)| n.clone())
        })
        .collect();
    assert_eq!(recorder_hosts, vec![edge_victim.clone()]);

    // The cloud host returns: its old web instance is surplus and is trimmed.
    let _back = HostProcess::start(
        &t,
        &cloud_victim,
        &["zone=cloud"],
        &restart_dir.expect("kept"),
    )?;
    t.wait_for("the returning host to run nothing", || async {
        let inventory = t.ctl.inventory(&cloud_victim).await?;
        Ok(inventory.workloads.is_empty() && !inventory.stopping)
    })
    .await?;
    Ok(())
}

/// A `lattice control` process, SIGKILLed on drop.
struct ControlProcess(Child);

impl ControlProcess {
    fn start(t: &TestLattice, key: &Path) -> anyhow::Result<Self> {
        Ok(Self(
            Command::new(lattice_bin())
                .args([
                    "control",
                    "--nats-url",
                    &t.nats.url,
                    "--lattice",
                    t.lattice.as_str(),
                    "--admin",
                    t.admin.public_key().as_str(),
                    "--key",
                ])
                .arg(key)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ))
    }
}

impl Drop for ControlProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn sigkill_the_leader_mid_rollout_and_the_standby_finishes_it() -> anyhow::Result<()> {
    // The harness's in-process control plane leads first; two real processes stand by.
    let mut t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("operator.nk");
    std::fs::write(&key, t.operator.to_file_contents())?;
    let _a = t.add_host("a").await?;
    let _b = t.add_host("b").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = |version: &str| {
        lattice_tests::hello_manifest("hello", version, &image.to_string(), version, "127.0.0.1:0")
            .replace("healthy_for: 0s", "batch: 1\n    healthy_for: 3s")
            .replace("instances: 1", "instances: 2")
    };
    t.ctl.deploy(&manifest("v1")).await?;
    t.wait_deployed("hello").await?;

    // Hand leadership to a process: stop the in-process leader once a process stands by.
    let first = ControlProcess::start(&t, &key)?;
    t.stop_control().await?;
    t.wait_for("the process to lead", || async {
        Ok(t.ctl.apps().await.is_ok())
    })
    .await?;
    let _second = ControlProcess::start(&t, &key)?;

    t.ctl.deploy(&manifest("v2")).await?;
    t.wait_for("the rollout to switch its first host", || async {
        let s = t.ctl.status(&"hello".parse()?).await?;
        Ok(s.message.contains("1 host(s) switched"))
    })
    .await?;
    // Mid-rollout: SIGKILL the leader.
    drop(first);
    let done = t
        .wait_status("hello", "the standby to finish the rollout", |s| {
            s.version == "v2" && s.status == AppState::Deployed
        })
        .await?;
    assert_eq!(done.components.len(), 2);
    for host in ["a", "b"] {
        let inventory = t.ctl.inventory(host).await?;
        assert_eq!(inventory.last_refusal, None, "{host} refused nothing");
        assert!(inventory.workloads.iter().all(|w| w.app_version == "v2"));
    }
    Ok(())
}
