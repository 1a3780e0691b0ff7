//! Events are kept: the control plane publishes them into the stream `LATTICE_<l>_events`, and
//! `lattice ctl watch --since` (the real binary) reads what happened before it started, resumes
//! after a sequence it printed without a gap or a repeat, and finds the stream still there after
//! the control plane restarts. Without `--since` it prints only new events; `--heartbeats`
//! still adds the live heartbeats; `-o yaml` prints a YAML document per event.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;

use anyhow::{Context, bail, ensure};
use lattice_protocol::names::AppName;
use lattice_protocol::subject::Buckets;
use lattice_tests::{TestLattice, WAIT, hello_manifest, hello_wasm, lattice_bin};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout};

const ANY_PORT: &str = "127.0.0.1:0";

/// A `lattice ctl watch` process, its output read line by line.
struct Watcher {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
}

impl Watcher {
    /// Starts `lattice ctl watch ARGS` against `t`, signing as its admin (key in `key`), and
    /// waits until it reads the stream (it says so on stderr once its consumer exists).
    async fn start(t: &TestLattice, key: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(lattice_bin())
            .args(["ctl", "watch"])
            .args(args)
            .arg("--nats-url")
            .arg(&t.nats.url)
            .arg("--lattice")
            .arg(t.lattice.as_str())
            .arg("--key")
            .arg(key)
            .arg("--control-key")
            .arg(t.operator.public_key().as_str())
            .env_remove("LATTICE_KEY")
            .env_remove("LATTICE_CONTROL_KEY")
            .env("LATTICE_STATE_DIR", key.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let stderr = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let mut w = Self {
            child,
            stdout,
            stderr,
        };
        loop {
            let line = tokio::time::timeout(WAIT, w.stderr.next_line())
                .await
                .context("the watcher never said it was watching")??
                .context("the watcher ended before watching")?;
            if line.starts_with("watching lattice") {
                return Ok(w);
            }
        }
    }

    /// The next line it prints.
    async fn line(&mut self) -> anyhow::Result<String> {
        tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .context("no event printed in time")??
            .context("the watcher ended")
    }

    /// Ends it as SIGKILL would (no chance to print more).
    async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// One printed event: its sequence, kind and message.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    seq: u64,
    kind: String,
    message: String,
}

/// Parses a table line: `seq:N  <time>  <kind>  <message>`.
fn table_line(line: &str) -> anyhow::Result<Seen> {
    let mut words = line.split_whitespace();
    let seq = words
        .next()
        .and_then(|w| w.strip_prefix("seq:"))
        .with_context(|| format!("no sequence in `{line}`"))?
        .parse()?;
    let time = words.next().context("no time")?;
    ensure!(
        humantime::parse_rfc3339(time).is_ok(),
        "`{time}` is not an RFC 3339 time"
    );
    let kind = words.next().context("no kind")?.to_string();
    Ok(Seen {
        seq,
        kind,
        message: words.collect::<Vec<_>>().join(" "),
    })
}

/// Parses a JSON line: `{"seq": N, "kind": ..., "message": ...}`.
fn json_line(line: &str) -> anyhow::Result<Seen> {
    let v: serde_json::Value = serde_json::from_str(line)?;
    Ok(Seen {
        seq: v["seq"].as_u64().context("no seq")?,
        kind: v["kind"].as_str().context("no kind")?.replace('_', "-"),
        message: v["message"].as_str().context("no message")?.to_string(),
    })
}

/// Events read by `w` (parsed by `parse`) until one satisfies `until`.
async fn read_until(
    w: &mut Watcher,
    parse: fn(&str) -> anyhow::Result<Seen>,
    until: impl Fn(&Seen) -> bool,
) -> anyhow::Result<Vec<Seen>> {
    let mut seen = Vec::new();
    loop {
        let line = w.line().await?;
        let event = parse(&line).with_context(|| format!("line `{line}`"))?;
        let done = until(&event);
        seen.push(event);
        if done {
            return Ok(seen);
        }
    }
}

/// The sequences of `seen` run one after another from `first`.
fn consecutive(seen: &[Seen], first: u64) -> anyhow::Result<()> {
    for (i, e) in seen.iter().enumerate() {
        if e.seq != first + i as u64 {
            bail!("expected seq {} at {i}, got {seen:#?}", first + i as u64);
        }
    }
    Ok(())
}

fn position(seen: &[Seen], kind: &str, text: &str) -> anyhow::Result<usize> {
    seen.iter()
        .position(|e| e.kind == kind && e.message.contains(text))
        .with_context(|| format!("no {kind} event about `{text}` in {seen:#?}"))
}

/// The stream's last sequence, read by the test's own client.
async fn last_sequence(t: &TestLattice) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(t.client.clone());
    let mut stream = js.get_stream(Buckets::new(&t.lattice).events()).await?;
    Ok(stream.info().await?.state.last_sequence)
}

fn admin_key(t: &TestLattice, dir: &Path) -> anyhow::Result<PathBuf> {
    let key = dir.join("admin.nk");
    std::fs::write(&key, t.admin.to_file_contents())?;
    Ok(key)
}

// Multi-threaded: the watcher runs as a child process while the in-process lattice acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_watcher_sees_everything_and_resumes_without_gaps_or_repeats() -> anyhow::Result<()>
{
    let before = SystemTime::now();
    let mut t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let key = admin_key(&t, dir.path())?;
    let _edge1 = t.add_host("edge-1").await?;
    let edge2 = t.add_host("edge-2").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let image = image.to_string();
    t.ctl
        .deploy(&hello_manifest("hello", "v1", &image, "Hi", ANY_PORT))
        .await?;
    t.wait_deployed("hello").await?;
    t.ctl.undeploy(&AppName::new("hello")?).await?;
    t.ctl.stop_host("edge-2").await?;
    edge2.finished().await?;

    // Started after all that, from a time before the lattice existed: everything, in order.
    let since = humantime::format_rfc3339_seconds(before).to_string();
    let mut first = Watcher::start(&t, &key, &["--since", &since]).await?;
    let seen = read_until(&mut first, table_line, |e| e.kind == "host-stopped").await?;
    consecutive(&seen, 1)?;
    let deployed = position(&seen, "deployed", "hello v1")?;
    let undeployed = position(&seen, "undeployed", "hello")?;
    let stopped = position(&seen, "host-stopped", "edge-2")?;
    assert!(deployed < undeployed && undeployed < stopped, "{seen:#?}");
    assert!(position(&seen, "host-joined", "edge-1")? < deployed);
    let last = seen.last().map_or(0, |e| e.seq);
    first.kill().await?;

    // More happens while nobody watches; a watcher resuming after `last` gets exactly the rest.
    t.ctl
        .deploy(&hello_manifest("hello", "v2", &image, "Hi", ANY_PORT))
        .await?;
    t.wait_deployed("hello").await?;
    let upto = last_sequence(&t).await?;
    let resume = format!("seq:{}", last + 1);
    let mut second = Watcher::start(&t, &key, &["--since", &resume, "-o", "json"]).await?;
    let rest = read_until(&mut second, json_line, |e| e.seq >= upto).await?;
    consecutive(&rest, last + 1)?;
    position(&rest, "deployed", "hello v2")?;
    assert!(
        !rest.iter().any(|e| seen.contains(e)),
        "nothing is repeated"
    );
    second.kill().await?;

    // A restarted control plane keeps the stream: its first event is still there, and new
    // ones follow on.
    t.stop_control().await?;
    t.start_control(|_| {}).await?;
    let mut third = Watcher::start(&t, &key, &["--since", "seq:1"]).await?;
    let again = read_until(&mut third, table_line, |e| e.seq >= upto).await?;
    assert_eq!(again.first(), seen.first(), "the first event is kept");
    assert_eq!(again.len() as u64, upto);
    third.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_since_only_new_events_and_heartbeats_are_live() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let key = admin_key(&t, dir.path())?;
    let _edge = t.add_host("edge-1").await?;
    let before = last_sequence(&t).await?;
    assert!(before > 0, "the host's joining was kept");

    let mut w = Watcher::start(&t, &key, &["--heartbeats"]).await?;
    t.ctl
        .label(
            "edge-1",
            [("zone".to_string(), "x".to_string())].into(),
            vec![],
        )
        .await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    t.ctl
        .deploy(&hello_manifest(
            "hello",
            "v1",
            &image.to_string(),
            "Hi",
            ANY_PORT,
        ))
        .await?;
    let (mut heartbeats, mut events) = (0, Vec::new());
    while heartbeats == 0 || !events.iter().any(|e: &Seen| e.kind == "deployed") {
        let line = w.line().await?;
        if line.starts_with('-') {
            assert!(
                line.contains("heartbeat") && line.contains("edge-1"),
                "{line}"
            );
            heartbeats += 1;
        } else {
            events.push(table_line(&line)?);
        }
    }
    assert!(
        events.iter().all(|e| e.seq > before),
        "only events after the watcher started: {events:#?}"
    );
    w.kill().await?;

    // `-o yaml`: one YAML document per event.
    let mut y = Watcher::start(&t, &key, &["--since", "seq:1", "-o", "yaml"]).await?;
    assert_eq!(y.line().await?, "---");
    let mut document = String::new();
    loop {
        let line = y.line().await?;
        if line == "---" {
            break;
        }
        document += &line;
        document.push('\n');
    }
    let first: serde_json::Value = serde_norway::from_str(&document)?;
    assert_eq!(first["seq"], 1, "{document}");
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("edge-1")),
        "{document}"
    );
    y.kill().await?;
    Ok(())
}
