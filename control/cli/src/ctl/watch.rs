//! `lattice ctl watch`: the lattice's events, read from its events stream
//! (`LATTICE_<lattice>_events`), new ones only or from `--since` a time, an age or a sequence;
//! with `--heartbeats`, every host heartbeat as it arrives too (live only: heartbeats are not
//! kept).
//!
//! Each event is printed with its stream sequence (`seq:N`), so that a script that stopped after
//! `seq:N` resumes with `--since seq:N+1` and misses nothing and repeats nothing. The stream is
//! read with an ordered pull consumer: it needs no acknowledgements and no replies from the
//! reader (an operator's NATS permissions allow none), only requests about that stream.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use lattice_protocol::messages::Event;
use lattice_protocol::names::LatticeName;
use lattice_protocol::subject::{Buckets, Subject};

use crate::args::Output;
use crate::output::short_id;

/// Where `--since` starts reading the events stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// From this stream sequence on (`seq:N`).
    Sequence(u64),
    /// Events stored at or after this time (an RFC 3339 time, or an age such as `10m`).
    Time(SystemTime),
}

/// Parses `--since`: `seq:N`, an RFC 3339 time (`2026-12-07T08:00:00Z`) or an age (`10m`,
/// `2h`, `3d`: that long before now).
pub fn parse_since(text: &str) -> Result<Since, String> {
    if let Some(seq) = text.strip_prefix("seq:") {
        return match seq.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Since::Sequence(n)),
            _ => Err(format!(
                "`{text}`: a sequence is `seq:` and a number from 1, as `lattice ctl watch` prints it"
            )),
        };
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(Since::Time(time));
    }
    match humantime::parse_duration(text) {
        Ok(age) => Ok(Since::Time(
            SystemTime::now()
                .checked_sub(age)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )),
        Err(_) => Err(format!(
            "`{text}` is neither `seq:N`, an RFC 3339 time (2026-12-07T08:00:00Z) nor an age (10m, 2h, 3d)"
        )),
    }
}

/// What `watch` is asked.
#[derive(Debug)]
pub struct Watch<'a> {
    /// The lattice.
    pub lattice: &'a LatticeName,
    /// Also print heartbeats (live).
    pub heartbeats: bool,
    /// Where to start; `None`: new events only.
    pub since: Option<Since>,
    /// Table, JSON lines or YAML documents.
    pub output: Output,
}

/// An event as `-o json` prints it: its stream sequence, then its fields.
#[derive(Debug, serde::Serialize)]
struct Numbered<'a> {
    seq: u64,
    #[serde(flatten)]
    event: &'a Event,
}

impl Watch<'_> {
    /// Prints events (and heartbeats, if asked) until Ctrl-C or the connection ends.
    pub async fn run(self, client: &async_nats::Client) -> anyhow::Result<()> {
        let js = jetstream::new(client.clone());
        let stream = self.events_stream(&js).await?;
        let policy = match self.since {
            None => consumer::DeliverPolicy::New,
            Some(Since::Sequence(start_sequence)) => {
                consumer::DeliverPolicy::ByStartSequence { start_sequence }
            }
            Some(Since::Time(time)) => consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from(time),
            },
        };
        let mut events = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: Subject::events(self.lattice).to_string(),
                deliver_policy: policy,
                ..Default::default()
            })
            .await
            .context("reading the events stream")?
            .messages()
            .await
            .context("reading the events stream")?;
        let mut beats = match self.heartbeats {
            true => Some(
                client
                    .subscribe(Subject::all_heartbeats(self.lattice))
                    .await?,
            ),
            false => None,
        };
        eprintln!("watching lattice {} (Ctrl-C to stop)", self.lattice);
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                msg = events.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    let msg = msg.context("reading the events stream")?;
                    let seq = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
                    // An event of a newer release than this CLI is skipped, not fatal.
                    let Ok(event) = lattice_protocol::envelope::decode::<Event>(&msg.payload) else { continue };
                    self.print_event(seq, &event)?;
                }
                msg = async { match beats.as_mut() { Some(b) => b.next().await, None => std::future::pending().await } } => {
                    let Some(msg) = msg else { return Ok(()) };
                    // Only heartbeats signed by the host their subject names, as the control plane.
                    let Ok(hb) = lattice_protocol::signed::open_heartbeat_on(&msg.subject, &msg.payload) else { continue };
                    match self.output {
                        Output::Table => println!(
                            "{:<10}{}  {:<17} {} ({}): {} workload(s), revision {}",
                            "-", stamp(hb.sent_at_ms), "heartbeat", hb.name, short_id(hb.host.as_str()), hb.workloads.len(), hb.assignment_revision
                        ),
                        format => print_one(format, &hb)?,
                    }
                }
            }
        }
    }

    /// The events stream; waits for it while no control plane has made it yet.
    async fn events_stream(
        &self,
        js: &jetstream::Context,
    ) -> anyhow::Result<jetstream::stream::Stream> {
        let name = Buckets::new(self.lattice).events();
        let mut told = false;
        loop {
            match js.get_stream(&name).await {
                Ok(stream) => return Ok(stream),
                Err(e) if stream_missing(&e) => {
                    if !told {
                        eprintln!(
                            "lattice {} has no events stream {name} yet: waiting for its control plane (start one with `lattice control` or `lattice up`)",
                            self.lattice
                        );
                        told = true;
                    }
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => anyhow::bail!("stopped before the events stream appeared"),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(e)).with_context(|| {
                        format!("opening the events stream {name}; check that this user may read it (`lattice nats authz`)")
                    });
                }
            }
        }
    }

    fn print_event(&self, seq: u64, event: &Event) -> anyhow::Result<()> {
        match self.output {
            Output::Table => println!(
                "{:<10}{}  {:<17} {}",
                format!("seq:{seq}"),
                stamp(event.at_ms),
                event.kind.to_string(),
                event.message
            ),
            format => print_one(format, &Numbered { seq, event })?,
        }
        Ok(())
    }
}

/// One record for scripts: a JSON object on one line, or a YAML document (`---` first).
fn print_one(format: Output, value: &impl serde::Serialize) -> anyhow::Result<()> {
    match format {
        Output::Yaml => print!("---\n{}", serde_norway::to_string(value)?),
        _ => println!("{}", serde_json::to_string(value)?),
    }
    Ok(())
}

fn stream_missing(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// `2026-12-07T08:00:00.123Z`: unix milliseconds as an RFC 3339 time in UTC.
fn stamp(ms: u64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_sequence_a_time_or_an_age() {
        assert_eq!(parse_since("seq:42"), Ok(Since::Sequence(42)));
        assert!(parse_since("seq:0").is_err(), "sequences start at 1");
        assert!(parse_since("seq:x").is_err());
        assert_eq!(
            parse_since("2026-12-07T08:00:00Z"),
            Ok(Since::Time(
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_630_400)
            ))
        );
        let Ok(Since::Time(t)) = parse_since("10m") else {
            panic!("an age is a time");
        };
        let age = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(age >= Duration::from_secs(600) && age < Duration::from_secs(3600));
        let bad = parse_since("yesterday").unwrap_err();
        assert!(bad.contains("seq:N"), "{bad}");
    }

    #[test]
    fn stamps_are_rfc3339_utc() {
        assert_eq!(stamp(1_796_630_400_123), "2026-12-07T08:00:00.123Z");
    }
}
