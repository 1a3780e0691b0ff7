//! App status: a pure function of what was planned and what hosts report.

use std::collections::BTreeMap;

use lattice_protocol::messages::{
    AppState, AppStatus, ComponentStatus, FailureReason, Heartbeat, WorkloadState,
};
use lattice_protocol::names::HostId;

use crate::model::ResolvedApp;
use crate::placement::Plan;

/// The status of `app`, from the current `plan` and the latest heartbeat of each host.
pub fn app_status(
    app: &ResolvedApp,
    plan: &Plan,
    observed: &BTreeMap<HostId, Heartbeat>,
) -> AppStatus {
    let mut status = placed_status(app, plan, observed);
    // Nothing matched, and the manifest says to wait for a host rather than fail.
    let failed_only_unplaced = status
        .components
        .iter()
        .filter(|c| c.state == WorkloadState::Failed)
        .all(|c| c.host.is_none());
    if app.wait_for_hosts && status.status == AppState::Failed && failed_only_unplaced {
        status.status = AppState::Waiting;
        status.message = format!("waiting for a matching host: {}", status.message);
    }
    status
}

fn placed_status(
    app: &ResolvedApp,
    plan: &Plan,
    observed: &BTreeMap<HostId, Heartbeat>,
) -> AppStatus {
    let mut components = Vec::new();
    for unplaced in plan.unplaced.iter().filter(|u| u.app == app.name) {
        components.push(ComponentStatus {
            name: unplaced.component.clone(),
            host: None,
            instances: 0,
            state: WorkloadState::Failed,
            message: unplaced.reason.clone(),
            reason: Some(FailureReason::Unplaced),
            endpoint: None,
        });
    }
    for (host, workloads) in &plan.hosts {
        for w in workloads.iter().filter(|w| w.app == app.name) {
            let reported = observed.get(host).and_then(|hb| {
                hb.workloads.iter().find(|r| {
                    r.app == w.app
                        && r.component == w.component
                        && r.app_version == w.app_version
                        && r.image == w.image
                })
            });
            let (state, message, reason, endpoint) = match reported {
                Some(r) => (r.state, r.message.clone(), r.reason, r.endpoint.clone()),
                None => (
                    WorkloadState::Pending,
                    "waiting for the host".to_string(),
                    None,
                    None,
                ),
            };
            components.push(ComponentStatus {
                name: w.component.clone(),
                host: Some(host.clone()),
                instances: w.instances,
                state,
                message,
                reason,
                endpoint,
            });
        }
    }
    components.sort_by(|a, b| (&a.name, &a.host).cmp(&(&b.name, &b.host)));

    let failed: Vec<String> = components
        .iter()
        .filter(|c| c.state == WorkloadState::Failed)
        .map(|c| match &c.host {
            Some(h) => format!("{} on host {}: {}", c.name, short(h), c.message),
            None => format!("{}: {}", c.name, c.message),
        })
        .collect();
    let (status, message) = if !failed.is_empty() {
        (AppState::Failed, failed.join("; "))
    } else if components.is_empty() {
        (
            AppState::Reconciling,
            "no host has reported yet; start a host with `lattice host`".to_string(),
        )
    } else if components.iter().all(|c| c.state == WorkloadState::Running) {
        (AppState::Deployed, String::new())
    } else {
        let waiting = components
            .iter()
            .filter(|c| c.state != WorkloadState::Running)
            .count();
        (
            AppState::Reconciling,
            format!(
                "{waiting} of {} placements not running yet",
                components.len()
            ),
        )
    };
    AppStatus {
        name: app.name.clone(),
        version: app.version.clone(),
        status,
        message,
        components,
    }
}

/// The first characters of a host id, for messages.
pub fn short(host: &HostId) -> &str {
    let s = host.as_str();
    &s[..s.len().min(12)]
}
