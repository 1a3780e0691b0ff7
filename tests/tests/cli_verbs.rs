//! Every `lattice ctl` verb through the real binary against a test lattice: deploy (with
//! `--wait`), get apps/hosts/components/inventory/manifest/queues/deadletters, status, history,
//! scale, rollback, label, hosts token/revoke/admit, users add/list/remove, requeue, stop host,
//! undeploy (`watch` has its own suite, `events.rs`). Each table is checked against the text
//! expected here, with what changes from run to run (keys, digests, times, durations, ports)
//! filtered out; `-o json` and `-o yaml` are parsed and checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, ensure};
use lattice_tests::{TestLattice, hello_manifest, hello_wasm, lattice_bin};

const ANY_PORT: &str = "127.0.0.1:0";

/// The lattice, the admin's key file, and a directory for files.
struct Cli<'a> {
    t: &'a TestLattice,
    key: PathBuf,
    dir: &'a Path,
}

impl Cli<'_> {
    /// `lattice ctl ARGS` against the test lattice, signing as its admin.
    fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(lattice_bin())
            .arg("ctl")
            .args(args)
            .arg("--nats-url")
            .arg(&self.t.nats.url)
            .arg("--lattice")
            .arg(self.t.lattice.as_str())
            .arg("--key")
            .arg(&self.key)
            .arg("--control-key")
            .arg(self.t.operator.public_key().as_str())
            .env("LATTICE_STATE_DIR", self.dir)
            .env_remove("LATTICE_KEY")
            .env_remove("LATTICE_CONTROL_KEY")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .output()?)
    }

    /// Its stdout, after checking it succeeded.
    fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        ensure!(
            out.status.success(),
            "lattice ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}') && !stderr.contains('\r'),
            "no escape codes, colours or progress bars off a terminal: {stdout:?} {stderr:?}"
        );
        Ok(stdout)
    }

    /// Its stderr (what it says to people), after checking it succeeded.
    fn said(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        ensure!(
            out.status.success(),
            "lattice ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stderr)?)
    }

    /// Its JSON output, parsed.
    fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.ok(&all)?)?)
    }

    /// Its YAML output, parsed.
    fn yaml(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "yaml"]);
        Ok(serde_norway::from_str(&self.ok(&all)?)?)
    }

    /// Its table, filtered ([`filter`]) and compared with `expected`.
    fn table(&self, args: &[&str], expected: &str) -> anyhow::Result<()> {
        self.table_as(args, expected, |t| t)
    }

    /// [`Cli::table`] for a table whose rows come in no set order (ordered by random keys):
    /// its rows are sorted before the comparison.
    fn table_any_order(&self, args: &[&str], expected: &str) -> anyhow::Result<()> {
        self.table_as(args, expected, |t| {
            let mut lines: Vec<&str> = t.lines().collect();
            lines[1..].sort_unstable();
            lines.iter().map(|l| format!("{l}\n")).collect()
        })
    }

    fn table_as(
        &self,
        args: &[&str],
        expected: &str,
        arrange: impl Fn(String) -> String,
    ) -> anyhow::Result<()> {
        let got = arrange(filter(&self.ok(args)?));
        ensure!(
            got == expected,
            "`lattice ctl {}` printed (filtered):\n{got}\nexpected:\n{expected}",
            args.join(" ")
        );
        Ok(())
    }
}

/// A table with its unstable parts named: cells (split on runs of two or more spaces) joined by
/// ` | `, and in each word a key, short id, digest, time, duration, skew or port replaced.
fn filter(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let cells: Vec<String> = line
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|cell| {
                let words: Vec<String> = cell.split(' ').map(word).collect();
                let mut cell = words.join(" ");
                while cell.contains("<dur> <dur>") {
                    cell = cell.replace("<dur> <dur>", "<dur>");
                }
                cell.replace("<dur> ago", "<ago>")
                    .replace("(now)", "(<ago>)")
            })
            .collect();
        out += &cells.join(" | ");
        out.push('\n');
    }
    out
}

/// One word of a table, unstable parts replaced (punctuation around it kept).
fn word(w: &str) -> String {
    let start = w.find(|c: char| c.is_ascii_alphanumeric() || c == '+' || c == '-');
    let end = w.rfind(|c: char| c.is_ascii_alphanumeric() || c == '/');
    let (Some(start), Some(end)) = (start, end) else {
        return w.to_string();
    };
    if start > end {
        return w.to_string();
    }
    let (pre, core, post) = (&w[..start], &w[start..=end], &w[end + 1..]);
    let base32 = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let replaced = if core.starts_with("sha256:") {
        "<digest>".to_string()
    } else if core.len() >= 56 && base32(core) {
        "<key>".to_string()
    } else if core.len() == 12 && core.starts_with('N') && base32(core) {
        "<host>".to_string()
    } else if core.len() == 12 && core.chars().all(|c| c.is_ascii_hexdigit()) {
        "<image>".to_string()
    } else if core.contains('=') {
        machine_labels(core)
    } else if humantime::parse_rfc3339(core).is_ok() {
        "<time>".to_string()
    } else if core.len() > 1
        && core.ends_with(['s', 'm', 'h', 'd'])
        && digits(&core[..core.len() - 1])
    {
        "<dur>".to_string()
    } else if (core.starts_with('+') || core.starts_with('-')) && core.ends_with('s') {
        "<skew>".to_string()
    } else if let Some((host, port)) = core.rsplit_once(':')
        && host.ends_with("127.0.0.1")
        && digits(port.trim_end_matches('/'))
    {
        format!(
            "{host}:<port>{}",
            if port.ends_with('/') { "/" } else { "" }
        )
    } else {
        core.to_string()
    };
    format!("{pre}{replaced}{post}")
}

/// `key=value,...` with the labels a host gives itself from its machine (`arch`, `hostname`,
/// `os`) reduced to their keys.
fn machine_labels(labels: &str) -> String {
    labels
        .split(',')
        .map(|l| match l.split_once('=') {
            Some((k @ ("arch" | "hostname" | "os"), _)) => format!("{k}=*"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn the_filter_names_what_changes() {
    assert_eq!(
        filter(
            "ID            NAME    UPTIME  LAST SEEN  SKEW\nNABCDEFGH234  edge-1  5m 3s   1s ago     +0.0s\n"
        ),
        "ID | NAME | UPTIME | LAST SEEN | SKEW\n<host> | edge-1 | <dur> | <ago> | <skew>\n"
    );
    assert_eq!(
        word("2026-12-06T17:19:09Z"),
        "<time>",
        "an RFC 3339 time is a time"
    );
    assert_eq!(word("(3d"), "(<dur>");
    assert_eq!(word("http://127.0.0.1:4312/"), "http://127.0.0.1:<port>/");
    assert_eq!(word("sha256:00ff"), "<digest>");
    assert_eq!(word("arch=x86_64,zone=x"), "arch=*,zone=x");
}

// Multi-threaded: the CLI runs as a blocking child process while the in-process lattice answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ctl_verb_works_through_the_binary() -> anyhow::Result<()> {
    let t = TestLattice::start().await?;
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("admin.nk");
    std::fs::write(&key, t.admin.to_file_contents())?;
    let cli = Cli {
        t: &t,
        key,
        dir: dir.path(),
    };
    let _edge1 = t.add_host("edge-1").await?;
    let image = t.push(&t.sign(&hello_wasm(), "hello", "0.1.0")).await?;
    let manifest = dir.path().join("hello.yaml");
    std::fs::write(
        &manifest,
        hello_manifest("hello", "v1", &image.to_string(), "Hi", ANY_PORT),
    )?;

    // deploy --wait ends with the app's status (its progress, off a terminal, as plain lines).
    let manifest = manifest.display().to_string();
    let status = filter(&cli.ok(&["deploy", &manifest, "--wait"])?);
    const STATUS: &str = "hello v1: Deployed\n\
         COMPONENT | HOST | INSTANCES | STATE | ENDPOINT / MESSAGE\n\
         hello | <host> | 1 | running | http://127.0.0.1:<port>/\n";
    assert_eq!(status, STATUS);
    cli.table(
        &["get", "apps"],
        "NAME | VERSION | STATUS | MESSAGE\nhello | v1 | Deployed\n",
    )?;
    let apps = cli.json(&["get", "apps"])?;
    assert_eq!(apps[0]["name"], "hello");
    assert_eq!(apps[0]["version"], "v1");
    assert_eq!(
        cli.yaml(&["get", "apps"])?,
        apps,
        "YAML says what JSON says"
    );

    cli.table(
        &["get", "hosts"],
        "ID | NAME | STATE | UPTIME | LAST SEEN | WORKLOADS | SKEW | LABELS\n\
         <host> | edge-1 | ready | <dur> | <ago> | 1 | <skew> | arch=*,hostname=*,os=*\n",
    )?;
    let hosts = cli.yaml(&["get", "hosts"])?;
    assert_eq!(hosts[0]["name"], "edge-1");
    let edge1 = hosts[0]["id"].as_str().context("a host id")?.to_string();
    cli.table(&["status", "hello"], STATUS)?;
    cli.table(
        &["history", "hello"],
        "VERSION | DEPLOYED AT | CURRENT\nv1 | <time> (<ago>) | yes\n",
    )?;
    cli.table(
        &["get", "components"],
        "APP | VERSION | COMPONENT | HOST | INSTANCES | STATE\n\
         hello | v1 | hello | <host> | 1 | running\n",
    )?;
    assert_eq!(cli.json(&["get", "components"])?[0]["app"], "hello");
    let inventory = format!(
        "host edge-1 (<key>)\n\
         version {}, assignment revision 1\n\
         APP | VERSION | COMPONENT | IMAGE | STATE | ENDPOINT / MESSAGE\n\
         hello | v1 | hello | <image> | running | 127.0.0.1:<port>\n",
        env!("CARGO_PKG_VERSION")
    );
    cli.table(&["get", "inventory", "edge-1"], &inventory)?;
    assert_eq!(
        cli.yaml(&["get", "inventory", "edge-1"])?["workloads"][0]["app"],
        "hello"
    );
    let shown = cli.ok(&["get", "manifest", "hello"])?;
    assert!(shown.contains("name: hello"), "{shown}");
    assert_eq!(
        cli.yaml(&["get", "manifest", "hello"])?["version"],
        "v1",
        "{shown}"
    );

    // scale and rollback make and restore versions.
    let said = cli.said(&["scale", "hello", "hello", "2"])?;
    assert!(said.contains("hello scaled to 2"), "{said}");
    let scaled = cli.json(&["get", "apps"])?[0]["version"].clone();
    assert_ne!(scaled, "v1");
    let said = cli.said(&["rollback", "hello", "--to", "v1"])?;
    assert!(said.contains("hello rolled back to v1"), "{said}");
    assert_eq!(
        cli.yaml(&["history", "hello"])?.as_array().map(Vec::len),
        Some(2)
    );

    // Labels.
    cli.table(
        &["label", "edge-1", "zone=x"],
        "arch=*\nhostname=*\nos=*\nzone=x\n",
    )?;
    let labels = cli.json(&["label", "edge-1", "--delete", "zone"])?;
    assert!(
        labels.get("zone").is_none() && labels.get("os").is_some(),
        "{labels}"
    );

    // Queues: none in this app.
    cli.table(
        &["get", "queues"],
        "no queued links; a link with `delivery: queued` in a deployed manifest shows here\n",
    )?;
    assert_eq!(cli.json(&["get", "queues"])?, serde_json::json!([]));
    let link = "hello/hello->httpserver";
    cli.table(
        &["get", "deadletters", link],
        "hello/hello->httpserver has no dead letters\n",
    )?;
    assert_eq!(
        cli.yaml(&["get", "deadletters", link])?,
        serde_json::json!([])
    );
    let said = cli.said(&["requeue", link])?;
    assert!(said.contains("nothing requeued"), "{said}");

    // Hosts: a token made offline; admission revoked and given back.
    let token = cli.ok(&["hosts", "token", "--valid", "1h"])?;
    assert!(!token.trim().is_empty());
    let said = cli.said(&["hosts", "revoke", &edge1])?;
    assert!(said.contains("revoked"), "{said}");
    let said = cli.said(&["hosts", "admit", &edge1])?;
    assert!(said.contains("admitted"), "{said}");

    // Users.
    let viewer = lattice_protocol::keys::KeyPair::generate(lattice_protocol::keys::KeyRole::User);
    let viewer = viewer.public_key().to_string();
    cli.said(&["users", "add", &viewer, "--name", "ci", "--role", "viewer"])?;
    cli.table_any_order(
        &["users", "list"],
        "NAME | ROLE | APPS | KEY\nbootstrap-admin-1 | admin | <key>\nci | viewer | <key>\n",
    )?;
    let users = cli.yaml(&["users", "list"])?;
    assert!(users.as_array().is_some_and(|u| u.len() == 2), "{users}");
    cli.said(&["users", "remove", &viewer])?;

    // Stopping a host, and undeploying.
    let edge2 = t.start_host(t.host_config("edge-2")).await?;
    t.wait_for("edge-2 to report", || async {
        Ok(t.ctl.hosts().await?.iter().any(|h| h.name == "edge-2"))
    })
    .await?;
    let said = cli.said(&["stop", "host", "edge-2"])?;
    assert!(said.contains("asked to stop"), "{said}");
    edge2.finished().await?;
    let said = cli.said(&["undeploy", "hello"])?;
    assert!(said.contains("hello undeployed"), "{said}");
    let apps = cli.json(&["get", "apps"])?;
    assert_eq!(apps[0]["status"], "Undeployed", "{apps}");
    Ok(())
}
