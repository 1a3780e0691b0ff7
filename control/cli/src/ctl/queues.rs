//! `lattice ctl get queues`, `get deadletters LINK`, `requeue LINK [--id ID ...]`: queued
//! delivery for the operator. The control plane gathers and acts; this prints.

use lattice_control::client::CtlClient;
use lattice_protocol::queue::ops::{DeadLetter, LinkQueue, LinkSelector};

use crate::args::Output;
use crate::output::{self, ago, table};

/// `get queues`.
pub(super) async fn get_queues(ctl: &CtlClient, out: Output) -> anyhow::Result<()> {
    let links = ctl.queues().await?;
    output::print(out, &links, |l| queues_table(l));
    Ok(())
}

/// `get deadletters LINK`.
pub(super) async fn get_dead_letters(
    ctl: &CtlClient,
    link: &LinkSelector,
    out: Output,
) -> anyhow::Result<()> {
    let dead = ctl.dead_letters(link).await?;
    output::print(out, &dead, |d| dead_letters_table(link, d));
    Ok(())
}

/// `requeue LINK [--id ID ...]`.
pub(super) async fn requeue(
    ctl: &CtlClient,
    link: &LinkSelector,
    ids: Vec<String>,
    out: Output,
) -> anyhow::Result<()> {
    let reply = ctl.requeue(link, ids).await?;
    if output::for_scripts(out) {
        output::print(out, &reply, |_| String::new());
    } else if reply.requeued.is_empty() {
        if reply.not_found.is_empty() {
            eprintln!("{link} has no dead letters; nothing requeued");
        }
    } else {
        eprintln!(
            "requeued {} dead letter(s) of {link}; they are delivered again with fresh attempts (`lattice ctl get queues` shows them in flight)",
            reply.requeued.len()
        );
    }
    if !reply.not_found.is_empty() {
        anyhow::bail!(
            "no dead letter of {link} has the id(s) {}; `lattice ctl get deadletters {link}` lists them",
            reply.not_found.join(", ")
        );
    }
    Ok(())
}

fn queues_table(links: &[LinkQueue]) -> String {
    if links.is_empty() {
        return "no queued links; a link with `delivery: queued` in a deployed manifest shows here\n"
            .into();
    }
    let dash = || "-".to_string();
    let mut rows = Vec::new();
    for l in links {
        let link_cols = |host: String, pending: String, oldest: String, dropped, expired| {
            vec![
                l.link.to_string(),
                host,
                pending,
                oldest,
                l.in_flight.map_or_else(dash, |n| n.to_string()),
                l.dead_lettered.to_string(),
                dropped,
                expired,
            ]
        };
        if l.hosts.is_empty() {
            rows.push(link_cols(dash(), dash(), dash(), dash(), dash()));
        }
        for h in &l.hosts {
            let s = &h.stats;
            rows.push(link_cols(
                h.name.clone(),
                s.pending.to_string(),
                s.oldest_age_ms.map_or_else(dash, |ms| ago(ms / 1000)),
                s.dropped_total.to_string(),
                s.expired_total.to_string(),
            ));
        }
    }
    let mut out = table(
        &[
            "LINK",
            "HOST",
            "PENDING",
            "OLDEST",
            "IN FLIGHT",
            "DEAD-LETTERED",
            "DROPPED",
            "EXPIRED",
        ],
        &rows,
    );
    if let Some(note) = links.iter().map(|l| &l.note).find(|n| !n.is_empty()) {
        out += &format!("note: {note}\n");
    }
    out
}

fn dead_letters_table(link: &LinkSelector, dead: &[DeadLetter]) -> String {
    if dead.is_empty() {
        return format!("{link} has no dead letters\n");
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|d| {
            vec![
                d.sequence.to_string(),
                d.call_id.clone(),
                d.link.as_ref().map_or("-".into(), ToString::to_string),
                format!("{} ago", ago(now_ms.saturating_sub(d.at_ms) / 1000)),
                d.attempts.to_string(),
                d.function.clone(),
                d.error.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "CALL ID", "LINK", "WHEN", "ATTEMPTS", "FUNCTION", "ERROR",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::queue::ops::{HostOutbox, LinkOutboxStats};

    #[test]
    fn a_link_without_senders_still_shows_its_hub_side() {
        let link = "app/client->greeter".parse().expect("valid");
        let stats = LinkOutboxStats {
            link: "app/client->greeter".parse().expect("valid"),
            pending: 3,
            oldest_age_ms: Some(125_000),
            dropped_total: 1,
            expired_total: 0,
        };
        let links = [
            LinkQueue {
                link,
                in_flight: Some(2),
                dead_lettered: 1,
                hosts: vec![HostOutbox {
                    host: lattice_protocol::names::HostId::new("h").expect("valid"),
                    name: "edge-1".into(),
                    stats,
                    reported_secs_ago: 1,
                }],
                note: String::new(),
            },
            LinkQueue {
                link: "app/other->greeter".parse().expect("valid"),
                in_flight: None,
                dead_lettered: 0,
                hosts: Vec::new(),
                note: String::new(),
            },
        ];
        let t = queues_table(&links);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("LINK"), "{t}");
        let cells = |line: &str| {
            line.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(lines[1]),
            [
                "app/client->greeter",
                "edge-1",
                "3",
                "2m",
                "5s",
                "2",
                "1",
                "1",
                "0"
            ]
        );
        assert_eq!(
            cells(lines[2]),
            ["app/other->greeter", "-", "-", "-", "-", "0", "-", "-"]
        );
    }
}
