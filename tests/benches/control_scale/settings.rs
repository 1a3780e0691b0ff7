//! The bench's command line: `[hosts] [--heartbeat <duration>] [--components <n>]`, and what
//! follows from it (part 1's host tolerance, part 2's CPU window).

use std::time::Duration;

use anyhow::Context as _;

use super::{LOST_PER_ROUND, LOST_ROUNDS};

/// Simulated hosts unless the command line says how many.
pub const DEFAULT_HOSTS: usize = 1000;
/// Every simulated host's heartbeat interval, unless `--heartbeat` says otherwise.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// The longest `--heartbeat`: the hosts' own default. Part 2's `lattice control` keeps its
/// default `host_tolerance` (16 s), which must span a few intervals.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long each CPU window lasts at least (part 2); four heartbeat intervals when longer.
pub const CPU_WINDOW: Duration = Duration::from_secs(10);

/// What a run measures, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Simulated hosts.
    pub hosts: usize,
    /// Components of the app (one instance each).
    pub components: usize,
    /// Every simulated host's heartbeat interval.
    pub heartbeat: Duration,
}

impl Settings {
    /// `[hosts] [--heartbeat <duration>] [--components <n>]`; `cargo bench` adds `--bench`.
    pub fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        const USAGE: &str =
            "usage: control_scale [hosts] [--heartbeat <duration, e.g. 5s>] [--components <n>]";
        let (mut hosts, mut components, mut heartbeat) = (None, None, DEFAULT_HEARTBEAT);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
                None => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .with_context(|| format!("{flag} takes a value; {USAGE}"))
            };
            match flag.as_str() {
                "--heartbeat" => {
                    let text = value()?;
                    heartbeat = humantime::parse_duration(&text).with_context(|| {
                        format!("--heartbeat {text}: not a duration such as 5s")
                    })?;
                }
                "--components" => {
                    let text = value()?;
                    components = Some(text.parse::<usize>().with_context(|| {
                        format!("--components {text}: not a number of components")
                    })?);
                }
                "--bench" => {}
                other if other.starts_with('-') => anyhow::bail!("unknown option {other}; {USAGE}"),
                other => {
                    hosts = Some(other.parse::<usize>().with_context(|| {
                        format!("{other}: the argument is the number of hosts; {USAGE}")
                    })?);
                }
            }
        }
        anyhow::ensure!(
            heartbeat >= Duration::from_millis(100) && heartbeat <= MAX_HEARTBEAT,
            "--heartbeat {heartbeat:?}: choose from 100ms to {MAX_HEARTBEAT:?} (part 2's `lattice control` keeps its default host tolerance, 16 s, which must span a few heartbeats)"
        );
        let hosts = hosts
            .unwrap_or(DEFAULT_HOSTS)
            .max(LOST_ROUNDS * LOST_PER_ROUND + 1);
        Ok(Self {
            hosts,
            components: components.unwrap_or(hosts).max(1),
            heartbeat,
        })
    }

    /// Part 2's CPU windows: [`CPU_WINDOW`], or four heartbeat intervals when longer.
    pub fn cpu_window(&self) -> Duration {
        CPU_WINDOW.max(self.heartbeat * 4)
    }

    /// Part 1's `host_tolerance`: two heartbeat intervals (2 s at the default 1 s), so that a
    /// host is called lost only after it missed a heartbeat.
    pub fn tolerance(&self) -> Duration {
        self.heartbeat * 2
    }
}
