//! Which hosts take part: admission by join token or by an operator, revocation, and forgetting
//! hosts silent past the retention.
//!
//! A host heard from is *admitted* when the hosts bucket says so (a [`HostAdmission`] under its
//! id). A host that is not presents its join token in its heartbeats; a token signed by one of
//! [`State::host_admins`] that admits it (right lattice, not expired, its host and labels) is
//! recorded as its admission, so a new leader knows it without the token. An operator may also
//! admit or revoke a host directly (`lattice ctl hosts admit|revoke`); a revoked host's token
//! no longer admits it. Hosts not admitted get no work and are listed with the reason.

use lattice_protocol::envelope::Reply;
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::keys::{KeyRole, PublicKey};
use lattice_protocol::messages::{AdmissionRequest, EventKind, Heartbeat, HostAdmission, verbs};
use lattice_protocol::names::HostId;
use lattice_protocol::signed::JoinToken;
use tracing::{info, warn};

use super::{Action, Observed, ReplyTo, State, Time};
use crate::status::short;

/// What a host without a token is told to do.
const NO_TOKEN: &str = "no join token: start the host with --join-token (make one with `lattice ctl hosts token`), or admit it with `lattice ctl hosts admit ID`";

/// What a revoked host is told.
const REVOKED: &str = "revoked by an operator: its join token no longer admits it; `lattice ctl hosts admit ID` admits it again";

impl State {
    /// The keys whose join tokens admit hosts: the role table's admins.
    pub(super) fn host_admins(&self) -> impl Iterator<Item = &PublicKey> {
        self.settings.admins.iter()
    }

    /// The role table changed: its admins are now the keys whose join tokens admit hosts.
    /// Hosts already admitted stay admitted.
    pub(crate) fn set_host_admins(&mut self, admins: Vec<PublicKey>) {
        self.settings.admins = admins;
    }

    /// Whether `host` is admitted: it may be given work.
    pub(crate) fn is_admitted(&self, host: &HostId) -> bool {
        self.admissions.get(host).is_some_and(|a| a.admitted)
    }

    /// Why `o`'s host takes no part, for `ctl get hosts`; `None` when it is admitted.
    pub(super) fn not_admitted_because(&self, o: &Observed) -> Option<String> {
        if self.is_admitted(&o.heartbeat.host) {
            return None;
        }
        Some(o.refusal.clone().unwrap_or_else(|| NO_TOKEN.to_string()))
    }

    /// On a heartbeat of a host that is not admitted: admits it by its join token if that
    /// token admits it. Returns why it is still not admitted (`None`: admitted) and the
    /// actions (the admission to store, its event).
    pub(super) fn admit_on_heartbeat(
        &mut self,
        hb: &Heartbeat,
        now: Time,
    ) -> (Option<String>, Vec<Action>) {
        if self.is_admitted(&hb.host) {
            return (None, Vec::new());
        }
        if self.admissions.contains_key(&hb.host) {
            return (Some(REVOKED.to_string()), Vec::new());
        }
        let Some(text) = &hb.join_token else {
            return (Some(NO_TOKEN.to_string()), Vec::new());
        };
        let grant = JoinToken::parse(text).and_then(|token| {
            let grant = token.admits(
                &self.settings.lattice,
                &hb.host,
                &hb.labels,
                now.unix_secs,
                self.host_admins(),
            )?;
            Ok((token.signer, grant))
        });
        match grant {
            Ok((signer, grant)) => {
                let mut how = format!("join token signed by {signer}");
                if !grant.note.is_empty() {
                    how += &format!(" ({})", grant.note);
                }
                let record = HostAdmission {
                    admitted: true,
                    how,
                    at: now.unix_secs,
                };
                info!(host = %hb.host, name = %hb.name, how = %record.how, "host admitted");
                let message = format!(
                    "host {} ({}) admitted: {}",
                    hb.name,
                    short(&hb.host),
                    record.how
                );
                // Taken at once, so that placement can use the host; undone if it cannot be
                // stored (the next heartbeat tries again).
                self.admissions.insert(hb.host.clone(), record.clone());
                self.dirty = true;
                let actions = vec![
                    Action::StoreAdmission {
                        host: hb.host.clone(),
                        record,
                        reply: None,
                    },
                    Action::emit(EventKind::HostAdmitted, None, Some(&hb.host), message),
                ];
                (None, actions)
            }
            Err(refusal) => (Some(format!("join token refused: {refusal}")), Vec::new()),
        }
    }

    /// `ctl.admission`: admit or revoke a host, by full id (it may not have been heard from
    /// yet), unique id prefix or name. Answered once stored.
    pub(super) fn admission_request(
        &mut self,
        to: &ReplyTo,
        req: AdmissionRequest,
        now: Time,
    ) -> Vec<Action> {
        let host = match PublicKey::parse_role(&req.host, KeyRole::Host) {
            Ok(key) => HostId::new(key.to_string())
                .map_err(|e| WireError::new(ErrorCode::InvalidInput, format!("host id: {e}"))),
            Err(_) => self.find_host(&req.host).map(|hb| hb.host.clone()),
        };
        let host = match host {
            Ok(host) => host,
            Err(e) => return vec![Action::refuse(to, e)],
        };
        let record = HostAdmission {
            admitted: req.admit,
            how: if req.admit {
                "admitted by an operator (`lattice ctl hosts admit`)".to_string()
            } else {
                "revoked by an operator (`lattice ctl hosts revoke`)".to_string()
            },
            at: now.unix_secs,
        };
        vec![Action::StoreAdmission {
            host,
            record,
            reply: Some(to.clone()),
        }]
    }

    /// Once an admission is stored (or could not be).
    pub(super) fn admission_stored(
        &mut self,
        host: HostId,
        record: HostAdmission,
        reply: Option<ReplyTo>,
        outcome: Result<(), String>,
    ) -> Vec<Action> {
        let Some(to) = reply else {
            // Admitted by its token at once: undone when not stored, so that it is not
            // admitted only in this leader's memory.
            if let Err(e) = outcome {
                warn!(host = %host, error = %e, "could not store a host's admission; its next heartbeat tries again");
                if self.admissions.get(&host) == Some(&record) {
                    self.admissions.remove(&host);
                    self.dirty = true;
                }
                let message = format!(
                    "host {host}'s admission could not be stored ({e}); its next heartbeat tries again"
                );
                return vec![Action::emit(
                    EventKind::StoreFailed,
                    None,
                    Some(&host),
                    message,
                )];
            }
            return Vec::new();
        };
        if let Err(e) = outcome {
            let error = WireError::new(ErrorCode::Internal, format!("storing the admission: {e}"));
            return vec![Action::refuse(&to, error)];
        }
        let name = self
            .hosts
            .get(&host)
            .map_or_else(String::new, |o| format!("{} ", o.heartbeat.name));
        let message = format!("host {name}({}) {}", short(&host), record.how);
        info!(host = %host, how = %record.how, "host admission changed");
        if let Some(o) = self.hosts.get_mut(&host) {
            o.refusal = (!record.admitted).then(|| REVOKED.to_string());
        }
        self.admissions.insert(host.clone(), record);
        self.dirty = true;
        let answer = Action::reply::<verbs::Admission>(&to, Reply::Ok(host.to_string()));
        vec![
            Action::emit(EventKind::HostAdmitted, None, Some(&host), message),
            answer,
        ]
    }

    /// Forgets hosts silent past the retention (hosts not admitted: past the host tolerance,
    /// since they hold no work), and clears their assignments: invented or retired host ids
    /// then cost neither memory nor planning.
    pub(super) fn forget_silent(&mut self, now: Time) -> Vec<Action> {
        let retention = self.settings.host_retention;
        let unadmitted = retention.min(self.settings.host_tolerance);
        let gone: Vec<HostId> = self
            .hosts
            .iter()
            .filter(|(id, o)| {
                let limit = if self.is_admitted(id) {
                    retention
                } else {
                    unadmitted
                };
                self.silent(o, now) > limit
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut actions = Vec::new();
        for host in gone {
            let Some(o) = self.hosts.remove(&host) else {
                continue;
            };
            self.silence.remove(&host);
            self.stop_requested.remove(&host);
            self.dirty = true;
            if let Some(w) = self.written.remove(&host) {
                actions.push(Action::ClearAssignment {
                    host: host.clone(),
                    revision: w.kv_revision,
                });
            }
            info!(host = %host, name = %o.heartbeat.name, "host forgotten: silent past the retention");
            let message = format!(
                "host {} ({}) forgotten: silent past the retention",
                o.heartbeat.name,
                short(&host)
            );
            actions.push(Action::emit(
                EventKind::HostForgotten,
                None,
                Some(&host),
                message,
            ));
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use lattice_protocol::keys::{KeyPair, KeyRole};
    use lattice_protocol::names::LatticeName;
    use lattice_protocol::signed::JoinGrant;

    use super::*;
    use crate::decide::{Input, Settings, decide};

    fn state(admin: &KeyPair) -> State {
        let settings = Settings {
            lattice: LatticeName::new("default").expect("valid"),
            epoch: 1,
            host_tolerance: Duration::from_secs(16),
            startup_grace: Duration::ZERO,
            assignment_ttl: Duration::from_secs(3600),
            host_retention: Duration::from_secs(60),
            admins: vec![admin.public_key()],
        };
        State::new(
            settings,
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
        )
    }

    fn at(secs: u64) -> Time {
        Time {
            since_start: Duration::from_secs(secs),
            unix_secs: 1_000 + secs,
        }
    }

    fn heartbeat(host: &HostId, token: Option<String>) -> Heartbeat {
        Heartbeat {
            host: host.clone(),
            name: "gw".into(),
            labels: BTreeMap::new(),
            started_at: 0,
            sent_at_ms: 0,
            version: String::new(),
            assignment_revision: 0,
            interval_secs: 5,
            workloads: Vec::new(),
            last_refusal: None,
            stopping: false,
            queues: Vec::new(),
            join_token: token,
            clock_offset_ms: 0,
        }
    }

    fn token(admin: &KeyPair, expires_at: u64) -> String {
        let grant = JoinGrant {
            lattice: LatticeName::new("default").expect("valid"),
            expires_at,
            host: None,
            labels: BTreeMap::new(),
            note: "north".into(),
        };
        JoinToken::sign(&grant, admin).to_text()
    }

    #[test]
    fn tokens_of_an_admin_added_to_the_role_table_admit_hosts() {
        let (first, later) = (
            KeyPair::generate(KeyRole::User),
            KeyPair::generate(KeyRole::User),
        );
        let mut s = state(&first);
        let host =
            HostId::new(KeyPair::generate(KeyRole::Host).public_key().to_string()).expect("valid");
        let hb = heartbeat(&host, Some(token(&later, 2_000)));
        decide(&mut s, Input::Heartbeat(hb.clone()), at(0));
        assert!(
            !s.is_admitted(&host),
            "signed by a key that is not an admin yet"
        );
        s.set_host_admins(vec![first.public_key(), later.public_key()]);
        decide(&mut s, Input::Heartbeat(hb), at(1));
        assert!(s.is_admitted(&host), "signed by an admin of the role table");
    }

    #[test]
    fn a_valid_token_admits_once_and_an_expired_one_says_so() {
        let admin = KeyPair::generate(KeyRole::User);
        let mut s = state(&admin);
        let id = |k: &KeyPair| HostId::new(k.public_key().to_string()).expect("valid");
        let (good, late) = (
            id(&KeyPair::generate(KeyRole::Host)),
            id(&KeyPair::generate(KeyRole::Host)),
        );
        let hb = heartbeat(&good, Some(token(&admin, 2_000)));
        let actions = decide(&mut s, Input::Heartbeat(hb.clone()), at(0));
        let stores = |a: &[Action]| {
            a.iter()
                .filter(|a| matches!(a, Action::StoreAdmission { .. }))
                .count()
        };
        assert_eq!(stores(&actions), 1, "{actions:?}");
        assert!(s.is_admitted(&good));
        // Readiness is worked out once per batch of heartbeats, at the reconcile after it.
        decide(&mut s, Input::Reconcile, at(0));
        assert!(s.ready.contains(&good));
        // Admitted: the token is not looked at again.
        assert_eq!(stores(&decide(&mut s, Input::Heartbeat(hb), at(1))), 0);

        // Expired longer ago than the clock margin join tokens allow (`MAX_SKEW`).
        let expired = heartbeat(&late, Some(token(&admin, 900)));
        let actions = decide(&mut s, Input::Heartbeat(expired), at(2));
        assert_eq!(stores(&actions), 0);
        assert!(!s.ready.contains(&late));
        let why = s.not_admitted_because(&s.hosts[&late]).unwrap_or_default();
        assert!(why.contains("expired"), "{why}");
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Emit(n) if n.kind == EventKind::HostUnadmitted))
        );
    }

    #[test]
    fn hosts_silent_past_the_retention_are_forgotten_with_their_assignment() {
        let admin = KeyPair::generate(KeyRole::User);
        let mut s = state(&admin);
        let host =
            HostId::new(KeyPair::generate(KeyRole::Host).public_key().to_string()).expect("valid");
        let hb = heartbeat(&host, Some(token(&admin, 5_000)));
        decide(&mut s, Input::Heartbeat(hb), at(0));
        s.written.insert(
            host.clone(),
            super::super::Written {
                kv_revision: 7,
                assignment: lattice_protocol::assignment::Assignment {
                    lattice: s.settings.lattice.clone(),
                    host: host.clone(),
                    revision: 1,
                    epoch: 1,
                    issued_at: 0,
                    expires_at: 10_000,
                    workloads: Vec::new(),
                    stop: false,
                    trace: None,
                },
            },
        );
        assert!(
            decide(&mut s, Input::Tick, at(60))
                .iter()
                .all(|a| !matches!(a, Action::ClearAssignment { .. }))
        );
        let actions = decide(&mut s, Input::Tick, at(61));
        assert!(actions.contains(&Action::ClearAssignment {
            host: host.clone(),
            revision: 7
        }));
        assert!(!s.hosts.contains_key(&host) && !s.written.contains_key(&host));
        // Its admission stays: it is the operator's record, not memory of a heartbeat.
        assert!(s.is_admitted(&host));
    }
}
