//! `lattice ctl`: deploy, undeploy, get, status, and the rest of the operator's verbs; queued
//! delivery's (`get queues`, `get deadletters`, `requeue`) are in `ctl/queues.rs`; who signs
//! the requests and the role table's commands (`users`) in `ctl/users.rs`; showing stored
//! manifests, secrets redacted, in `ctl/secrets.rs`; the named configs (`config`) in
//! `ctl/configs.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use lattice_connect::{self as nats, Patience};
use lattice_control::client::CtlClient;
use lattice_protocol::messages::{AppState, AppStatus, HostSummary, WorkloadState};
use lattice_protocol::names::AppName;

use crate::args::{CtlArgs, CtlCommand, GetWhat, HostsCommand, Output, StopWhat};
use crate::output::{self, ago, table};
use crate::progress::Progress;

mod configs;
mod hosts;
mod queues;
mod secrets;
pub(crate) mod users;
pub(crate) mod watch;

pub use hosts::up_admin_key;

use crate::output::short_id as short;

/// Runs a `lattice ctl` command.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    // A manifest is checked locally first: errors then point into the user's file.
    let manifest = match &args.command {
        CtlCommand::Deploy {
            file,
            version: None,
            ..
        } => Some(read_manifest(file)?),
        _ => None,
    };
    let target = nats::target(&args.nats, args.state_dir.as_deref())?;
    // A join token is signed here, with no round trip to the lattice.
    if let CtlCommand::Hosts {
        what: HostsCommand::Token { .. },
    } = &args.command
    {
        return token(&args, target.lattice);
    }
    let client = nats::connect(&args.nats, &target.url, "lattice ctl", Patience::FailFast).await?;
    // After connecting: an unreachable NATS is the first thing to fix.
    let (key, trusted) = users::identity(&args)?;
    let ctl = CtlClient::new(client.clone(), target.lattice.clone(), key, trusted);
    match args.command {
        CtlCommand::Deploy {
            file,
            version,
            wait,
            timeout,
            registry,
        } => {
            // OCI and `file://` images become digests in the lattice before the manifest goes.
            let manifest = match manifest {
                Some((yaml, name)) => {
                    let refs =
                        crate::images::Resolve::new(&client, &target.lattice, &file, &registry);
                    Some((refs.run(&yaml).await?, name))
                }
                None => None,
            };
            let deploy = Deploy {
                file,
                version,
                manifest,
                wait: wait.then_some(timeout),
            };
            deploy.run(&ctl, args.output).await?;
        }
        CtlCommand::Get { what } => get(&ctl, what, args.output).await?,
        CtlCommand::Undeploy { name } => {
            let name = AppName::new(name)?;
            ctl.undeploy(&name).await?;
            eprintln!("{name} undeployed");
        }
        CtlCommand::History { name } => {
            let versions = ctl.history(&AppName::new(name)?).await?;
            output::print(args.output, &versions, |versions| history_table(versions));
        }
        CtlCommand::Rollback { name, to } => {
            let reply = ctl.rollback(&AppName::new(name)?, to.as_deref()).await?;
            print_rollback(args.output, &reply);
        }
        CtlCommand::Hosts { what } => hosts::command(&ctl, what).await?,
        CtlCommand::Requeue { link, ids } => {
            queues::requeue(&ctl, &link, ids, args.output).await?;
        }
        CtlCommand::Scale {
            app,
            component,
            instances,
        } => scale(&ctl, app, component, instances).await?,
        CtlCommand::Label {
            host,
            labels,
            delete,
        } => label(&ctl, &host, labels, delete, args.output).await?,
        CtlCommand::Stop {
            what: StopWhat::Host { host },
        } => {
            ctl.stop_host(&host).await?;
            eprintln!("host {host} asked to stop; its movable work moves to other hosts");
        }
        CtlCommand::Watch { heartbeats, since } => {
            let watch = watch::Watch {
                lattice: &target.lattice,
                heartbeats,
                since,
                output: args.output,
            };
            watch.run(&client).await?;
        }
        CtlCommand::Status { name } => {
            let status = ctl.status(&AppName::new(name)?).await?;
            output::print(args.output, &status, status_table);
        }
        CtlCommand::Users { what } => users::users(&ctl, what, args.output).await?,
        CtlCommand::Config { what } => configs::configs(&ctl, what, args.output).await?,
    }
    Ok(())
}

/// `ctl get ...`: a table (or JSON) of what the control plane knows.
async fn get(ctl: &CtlClient, what: GetWhat, format: Output) -> anyhow::Result<()> {
    match what {
        GetWhat::Apps => {
            let apps = ctl.apps().await?;
            output::print(format, &apps, |apps| apps_table(apps));
        }
        GetWhat::Hosts => {
            let hosts = ctl.hosts().await?;
            output::print(format, &hosts, |h| hosts_table(h));
        }
        GetWhat::Components => {
            let all = placed_components(ctl).await?;
            output::print(format, &all, |all| components_table(all));
        }
        GetWhat::Inventory { host } => {
            let hb = ctl.inventory(&host).await?;
            output::print(format, &hb, inventory_table);
        }
        GetWhat::Queues => queues::get_queues(ctl, format).await?,
        GetWhat::Manifest { name, version } => {
            let name = AppName::new(name)?;
            secrets::get_manifest(ctl, &name, version.as_deref(), format).await?;
        }
        GetWhat::Deadletters { link } => queues::get_dead_letters(ctl, &link, format).await?,
    }
    Ok(())
}

/// `ctl hosts token`: a join token signed here with the user's key.
fn token(args: &CtlArgs, lattice: lattice_protocol::names::LatticeName) -> anyhow::Result<()> {
    let CtlCommand::Hosts {
        what:
            HostsCommand::Token {
                host,
                labels,
                valid,
                note,
            },
    } = &args.command
    else {
        anyhow::bail!("not a token command");
    };
    hosts::token(&hosts::TokenRequest {
        key: args.key.as_deref(),
        state_dir: args.state_dir.as_deref(),
        lattice,
        host: host.as_deref(),
        labels,
        valid: *valid,
        note,
    })
}

/// `ctl scale`.
async fn scale(
    ctl: &CtlClient,
    app: String,
    component: String,
    instances: u32,
) -> anyhow::Result<()> {
    let component = lattice_protocol::names::ComponentName::new(component)?;
    let reply = ctl
        .scale(&AppName::new(app)?, &component, instances)
        .await?;
    eprintln!(
        "{} {}: {component} scaled to {instances} (new version)",
        reply.name, reply.version
    );
    Ok(())
}

/// `ctl label`: prints the host's labels after the change.
async fn label(
    ctl: &CtlClient,
    host: &str,
    labels: Vec<(String, String)>,
    delete: Vec<String>,
    out: Output,
) -> anyhow::Result<()> {
    if labels.is_empty() && delete.is_empty() {
        anyhow::bail!("give labels to set (`key=value`) or --delete KEY");
    }
    let now = ctl
        .label(host, labels.into_iter().collect(), delete)
        .await?;
    output::print(out, &now, |labels| {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>()
    });
    Ok(())
}

/// `ctl deploy`: a manifest, or a stored version, deployed; with `wait`, until it runs.
struct Deploy {
    file: PathBuf,
    version: Option<String>,
    /// The manifest read (and checked) before connecting, with its app's name.
    manifest: Option<(String, AppName)>,
    /// How long to wait for it to be deployed, if at all.
    wait: Option<Duration>,
}

impl Deploy {
    async fn run(self, ctl: &CtlClient, output: Output) -> anyhow::Result<()> {
        let (reply, name) = match (self.version, self.manifest) {
            // `deploy NAME --version V`: a stored version, deployed again.
            (Some(version), _) => {
                let name = AppName::new(self.file.display().to_string())?;
                (ctl.rollback(&name, Some(&version)).await?, name)
            }
            (None, Some((yaml, name))) => (ctl.deploy(&yaml).await?, name),
            (None, None) => anyhow::bail!("no manifest was read"),
        };
        if output == Output::Table {
            let what = if reply.changed {
                "deployed"
            } else {
                "is already the deployed version"
            };
            eprintln!("{} {} {what}", reply.name, reply.version);
        }
        if let Some(timeout) = self.wait {
            let status = wait_deployed(ctl, &name, timeout, output).await?;
            output::print(output, &status, status_table);
        } else if output::for_scripts(output) {
            output::print(output, &reply, |_| String::new());
        }
        Ok(())
    }
}

/// `ctl get apps`' table.
fn apps_table(apps: &[lattice_protocol::messages::AppSummary]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            vec![
                a.name.to_string(),
                a.version.clone(),
                a.status.to_string(),
                a.message.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no apps; deploy one with `lattice ctl deploy FILE.yaml`\n".into();
    }
    table(&["NAME", "VERSION", "STATUS", "MESSAGE"], &rows)
}

/// `ctl history`'s table.
fn history_table(versions: &[lattice_protocol::messages::VersionSummary]) -> String {
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let current = if v.current { "yes" } else { "" };
            vec![
                v.version.clone(),
                output::when(v.deployed_at),
                current.to_string(),
            ]
        })
        .collect();
    table(&["VERSION", "DEPLOYED AT", "CURRENT"], &rows)
}

/// What `ctl rollback` says it did.
fn print_rollback(out: Output, reply: &lattice_protocol::messages::DeployReply) {
    if output::for_scripts(out) {
        output::print(out, reply, |_| String::new());
    } else if reply.changed {
        eprintln!("{} rolled back to {}", reply.name, reply.version);
    } else {
        eprintln!(
            "{} {} is already the deployed version",
            reply.name, reply.version
        );
    }
}

/// Every app's components where they run, for `ctl get components`.
async fn placed_components(ctl: &CtlClient) -> anyhow::Result<Vec<PlacedComponent>> {
    let mut all = Vec::new();
    for app in ctl.apps().await? {
        let status = ctl.status(&app.name).await?;
        all.extend(status.components.into_iter().map(|c| PlacedComponent {
            app: status.name.to_string(),
            version: status.version.clone(),
            component: c,
        }));
    }
    Ok(all)
}

/// Reads and checks a manifest, printing every problem with its line.
fn read_manifest(file: &Path) -> anyhow::Result<(String, AppName)> {
    let yaml =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    match lattice_manifest::parse(&yaml) {
        Ok(m) => Ok((yaml, m.metadata.name)),
        Err(diags) => {
            for d in diags.iter() {
                eprintln!(
                    "{}:{}:{}: {}: {}",
                    file.display(),
                    d.line,
                    d.column,
                    d.path,
                    d.message
                );
                if let Some(help) = &d.help {
                    eprintln!("  help: {help}");
                }
            }
            anyhow::bail!(
                "{} has {} problem(s); nothing was deployed",
                file.display(),
                diags.len()
            )
        }
    }
}

/// Polls the app's status until it is deployed, failed for good, or `timeout` passes; on a
/// terminal, with a bar of the components running.
async fn wait_deployed(
    ctl: &CtlClient,
    name: &AppName,
    timeout: Duration,
    output: Output,
) -> anyhow::Result<AppStatus> {
    let start = Instant::now();
    let progress = (output == Output::Table).then(|| Progress::bar(0, format!("{name}")));
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        let status = ctl.status(name).await?;
        if let Some(progress) = &progress {
            show_changes(progress, &status, start, &mut seen);
        }
        match status.status {
            AppState::Deployed => {
                if let Some(progress) = progress {
                    progress.finish();
                }
                return Ok(status);
            }
            // A failure may be brief (no host has joined yet); give it a moment to clear.
            AppState::Failed => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(3) {
                    anyhow::bail!("{name} {} failed: {}", status.version, status.message);
                }
            }
            _ => failing_since = None,
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "{name} is still {} after {:?}: {}; see `lattice ctl status {name}`",
                status.status,
                timeout,
                status.message
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Prints each component's state when it changed, and moves the bar.
fn show_changes(
    progress: &Progress,
    status: &AppStatus,
    start: Instant,
    seen: &mut BTreeMap<String, String>,
) {
    let running = status
        .components
        .iter()
        .filter(|c| c.state == WorkloadState::Running)
        .count();
    progress.set(running as u64, status.components.len() as u64);
    for c in &status.components {
        let key = format!(
            "{} on {}",
            c.name,
            c.host
                .as_ref()
                .map_or("-".to_string(), |h| short(h.as_str()))
        );
        let line = if c.message.is_empty() {
            c.state.to_string()
        } else {
            format!("{} ({})", c.state, c.message)
        };
        if seen.get(&key) != Some(&line) {
            progress.line(&format!(
                "  [{:>5.1}s] {key}: {line}",
                start.elapsed().as_secs_f64()
            ));
            seen.insert(key, line);
        }
    }
}

/// A host's clock offset from the hub, in seconds with its sign, marked `(!)` past the skew worth
/// a warning (`lattice_protocol::clock::SKEW_WARNING`).
fn skew(offset_ms: i64) -> String {
    let text = format!("{:+.1}s", offset_ms as f64 / 1000.0);
    if lattice_protocol::clock::is_worth_warning(offset_ms) {
        format!("{text} (!)")
    } else {
        text
    }
}

/// The table `lattice ctl get hosts` prints.
pub fn hosts_table(hosts: &[HostSummary]) -> String {
    if hosts.is_empty() {
        return "no hosts have reported; start one with `lattice host` or `lattice up`\n".into();
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                short(h.id.as_str()),
                h.name.clone(),
                h.state.to_string(),
                ago(h.uptime_secs),
                format!("{} ago", ago(h.last_seen_secs)),
                h.workloads.to_string(),
                skew(h.clock_offset_ms),
                h.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "NAME",
            "STATE",
            "UPTIME",
            "LAST SEEN",
            "WORKLOADS",
            "SKEW",
            "LABELS",
        ],
        &rows,
    );
    // Never silently: each host that takes no part says why, and what to do.
    for h in hosts {
        if let Some(why) = &h.admission {
            out += &format!("{} ({}) is not admitted: {why}\n", h.name, h.id);
        }
    }
    out
}

fn status_table(s: &AppStatus) -> String {
    let mut out = format!("{} {}: {}\n", s.name, s.version, s.status);
    if !s.message.is_empty() {
        out += &format!("  {}\n", s.message);
    }
    let rows: Vec<Vec<String>> = s
        .components
        .iter()
        .map(|c| {
            vec![
                c.name.to_string(),
                c.host.as_ref().map_or("-".into(), |h| short(h.as_str())),
                c.instances.to_string(),
                c.state.to_string(),
                if c.state == WorkloadState::Running {
                    c.endpoint
                        .as_ref()
                        .map_or(String::new(), |e| format!("http://{e}/"))
                } else {
                    why(&c.message, c.reason)
                },
            ]
        })
        .collect();
    if !rows.is_empty() {
        out += &table(
            &[
                "COMPONENT",
                "HOST",
                "INSTANCES",
                "STATE",
                "ENDPOINT / MESSAGE",
            ],
            &rows,
        );
    }
    out
}

/// A failure's message, led by its kind when there is one (`compile_error: ...`).
fn why(message: &str, reason: Option<lattice_protocol::messages::FailureReason>) -> String {
    match reason {
        Some(reason) => format!("{reason}: {message}"),
        None => message.to_string(),
    }
}

/// A component of an app on a host, for `get components`.
#[derive(Debug, serde::Serialize)]
struct PlacedComponent {
    app: String,
    version: String,
    #[serde(flatten)]
    component: lattice_protocol::messages::ComponentStatus,
}

fn components_table(all: &[PlacedComponent]) -> String {
    if all.is_empty() {
        return "no components placed\n".into();
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|p| {
            let c = &p.component;
            vec![
                p.app.clone(),
                p.version.clone(),
                c.name.to_string(),
                c.host.as_ref().map_or("-".into(), |h| short(h.as_str())),
                c.instances.to_string(),
                match c.reason {
                    Some(reason) => format!("{} ({reason})", c.state),
                    None => c.state.to_string(),
                },
            ]
        })
        .collect();
    table(
        &["APP", "VERSION", "COMPONENT", "HOST", "INSTANCES", "STATE"],
        &rows,
    )
}

fn inventory_table(hb: &lattice_protocol::messages::Heartbeat) -> String {
    let mut out = format!(
        "host {} ({})\n  version {}, assignment revision {}{}\n",
        hb.name,
        hb.host,
        hb.version,
        hb.assignment_revision,
        if hb.stopping { ", stopping" } else { "" }
    );
    if let Some(refusal) = &hb.last_refusal {
        out += &format!("  last refused assignment: {refusal}\n");
    }
    let rows: Vec<Vec<String>> = hb
        .workloads
        .iter()
        .map(|w| {
            vec![
                w.app.to_string(),
                w.app_version.clone(),
                w.component.to_string(),
                w.image.short().to_string(),
                w.state.to_string(),
                w.endpoint
                    .clone()
                    .unwrap_or_else(|| why(&w.message, w.reason)),
            ]
        })
        .collect();
    if rows.is_empty() {
        out += "  runs nothing\n";
    } else {
        out += &table(
            &[
                "APP",
                "VERSION",
                "COMPONENT",
                "IMAGE",
                "STATE",
                "ENDPOINT / MESSAGE",
            ],
            &rows,
        );
    }
    out
}
