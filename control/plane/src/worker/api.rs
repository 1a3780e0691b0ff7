//! A `lattice ctl` request, checked and decoded by its verb. Before anything else the request
//! must be a [`SignedRequest`] whose signature holds for this lattice and verb, fresh (neither
//! stale nor a replay: [`Freshness`]), from a user whose role allows what the verb says it
//! needs ([`Verb::access`]); each refusal is a `not_allowed` error saying which check failed.
//! Each verb's request type comes from its [`Verb`], the one pairing the client uses too.
//! Deploys and scales go to preparation (see `prepare`), the role table's verbs to `users`,
//! every other verb straight to the decisions. Every answer is sealed ([`seal`]): signed by the
//! control plane's key, bound to the request's nonce.

use lattice_protocol::auth::{Access, Refusal, Roles, SignedReply, SignedRequest};
use lattice_protocol::envelope;
use lattice_protocol::error::WireError;
use lattice_protocol::keys::{KeyPair, PublicKey};
use lattice_protocol::messages::{EventKind, Verb, verbs};
use lattice_protocol::subject::{CtlVerb, Subject};
use tracing::{Instrument as _, debug, warn};

use super::Worker;
use super::configs::ConfigJob;
use super::prepare::{self, Job};
use super::users::UsersJob;
use crate::decide::{Action, Input, ReplyTo, Request};

/// Where a decoded request goes.
enum Route {
    Decide(Request),
    Prepare(Job),
    Users(UsersJob),
    Configs(ConfigJob),
}

/// The answer `body` as it travels: signed by the control plane's `key`, bound to the nonce of
/// the request it answers.
pub(super) fn seal(key: &KeyPair, to: &ReplyTo, body: Vec<u8>) -> Vec<u8> {
    envelope::encode(&SignedReply::sign(&to.nonce, body, key))
}

/// Who signed a request (its signature and freshness already checked), and the role table.
struct Gate<'a> {
    roles: &'a Roles,
    signer: &'a PublicKey,
}

impl Gate<'_> {
    /// Decodes a request of verb `V` and authorizes what it needs. An unknown key is refused
    /// before its request is decoded.
    fn admit<V: Verb>(&self, verb: CtlVerb, body: &[u8]) -> Result<V::Request, WireError> {
        debug_assert_eq!(verb, V::VERB, "a verb dispatched to another verb's types");
        self.roles.authorize(self.signer, Access::Read)?;
        let request: V::Request = envelope::decode(body)?;
        match V::access(&request) {
            // A deploy changes the app its manifest names: read the name first. A manifest
            // that does not parse changes nothing; preparing it reports every problem.
            Access::Manifest(text) => {
                if let Ok(manifest) = lattice_manifest::parse(text) {
                    let name = &manifest.metadata.name;
                    self.roles.authorize(self.signer, Access::App(name))?;
                }
            }
            access => self.roles.authorize(self.signer, access)?,
        }
        Ok(request)
    }
}

/// The route of a request with `verb` and `body`, once `gate` admits it.
fn route(verb: CtlVerb, body: &[u8], gate: &Gate<'_>) -> Result<Route, WireError> {
    use Route::{Configs, Decide, Prepare, Users};
    Ok(match verb {
        CtlVerb::Deploy => Prepare(Job::Deploy(gate.admit::<verbs::Deploy>(verb, body)?)),
        CtlVerb::Scale => Prepare(Job::Scale(gate.admit::<verbs::Scale>(verb, body)?)),
        CtlVerb::Undeploy => Decide(Request::Undeploy(
            gate.admit::<verbs::Undeploy>(verb, body)?,
        )),
        CtlVerb::Apps => {
            gate.admit::<verbs::Apps>(verb, body)?;
            Decide(Request::Apps)
        }
        CtlVerb::Status => Decide(Request::Status(gate.admit::<verbs::Status>(verb, body)?)),
        CtlVerb::Hosts => {
            gate.admit::<verbs::Hosts>(verb, body)?;
            Decide(Request::Hosts)
        }
        CtlVerb::History => Decide(Request::History(gate.admit::<verbs::History>(verb, body)?)),
        CtlVerb::Manifest => Decide(Request::Manifest(
            gate.admit::<verbs::Manifest>(verb, body)?,
        )),
        CtlVerb::Rollback => Decide(Request::Rollback(
            gate.admit::<verbs::Rollback>(verb, body)?,
        )),
        CtlVerb::Inventory => Decide(Request::Inventory(
            gate.admit::<verbs::Inventory>(verb, body)?,
        )),
        CtlVerb::StopHost => Decide(Request::StopHost(
            gate.admit::<verbs::StopHost>(verb, body)?,
        )),
        CtlVerb::Label => Decide(Request::Label(gate.admit::<verbs::Label>(verb, body)?)),
        CtlVerb::Queues => {
            gate.admit::<verbs::Queues>(verb, body)?;
            Decide(Request::Queues)
        }
        CtlVerb::DeadLetters => Decide(Request::DeadLetters(
            gate.admit::<verbs::DeadLetters>(verb, body)?,
        )),
        CtlVerb::Requeue => Decide(Request::Requeue(gate.admit::<verbs::Requeue>(verb, body)?)),
        CtlVerb::UsersAdd => Users(UsersJob::Add(gate.admit::<verbs::UsersAdd>(verb, body)?)),
        CtlVerb::UsersList => {
            gate.admit::<verbs::UsersList>(verb, body)?;
            Users(UsersJob::List)
        }
        CtlVerb::UsersRemove => Users(UsersJob::Remove(
            gate.admit::<verbs::UsersRemove>(verb, body)?,
        )),
        CtlVerb::Admission => Decide(Request::Admission(
            gate.admit::<verbs::Admission>(verb, body)?,
        )),
        CtlVerb::ConfigPut => Configs(ConfigJob::Put(gate.admit::<verbs::ConfigPut>(verb, body)?)),
        CtlVerb::ConfigGet => Configs(ConfigJob::Get(gate.admit::<verbs::ConfigGet>(verb, body)?)),
        CtlVerb::ConfigDel => Configs(ConfigJob::Del(gate.admit::<verbs::ConfigDel>(verb, body)?)),
        CtlVerb::ConfigList => {
            gate.admit::<verbs::ConfigList>(verb, body)?;
            Configs(ConfigJob::List)
        }
    })
}

/// The control plane's clock, in the unit requests are signed in.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Worker {
    /// Answers one control request in a span that continues the client's trace:
    /// `lattice.deploy` for a deploy, `lattice.ctl.serve` (field `verb`) for the others.
    pub(super) async fn on_request(&mut self, msg: async_nats::Message) {
        let span = match Subject::parse(&msg.subject) {
            Ok(Subject::Ctl {
                verb: CtlVerb::Deploy,
                ..
            }) => tracing::debug_span!("lattice.deploy"),
            Ok(Subject::Ctl { verb, .. }) => {
                tracing::debug_span!("lattice.ctl.serve", verb = verb.as_str())
            }
            _ => return,
        };
        lattice_telemetry::propagation::continue_nats(&span, msg.headers.as_ref());
        self.answer(msg).instrument(span).await;
    }

    async fn answer(&mut self, msg: async_nats::Message) {
        let Some(reply_to) = msg.reply.clone() else {
            return;
        };
        let verb = match Subject::parse(&msg.subject) {
            Ok(Subject::Ctl { verb, .. }) => verb,
            _ => return,
        };
        debug!(?verb, "control request");
        let Ok(signed) = envelope::decode::<SignedRequest>(&msg.payload) else {
            warn!(?verb, "refused an unsigned control request");
            let reply = ReplyTo::new(reply_to.to_string(), Vec::new());
            let _ = self
                .act(Action::refuse(&reply, Refusal::Unsigned.into()))
                .await;
            return;
        };
        let reply = ReplyTo::new(reply_to.to_string(), signed.nonce.clone());
        let checked = signed
            .verify(&self.cfg.lattice, verb.as_str())
            .and_then(|()| self.freshness.check(&signed, now_ms()));
        let routed = checked.map_err(WireError::from).and_then(|()| {
            let gate = Gate {
                roles: &self.roles,
                signer: &signed.signer,
            };
            route(verb, &signed.body, &gate)
        });
        match routed {
            Ok(Route::Decide(request)) => self.step(Input::Request { reply, request }).await,
            Ok(Route::Prepare(job)) => self.prepare(reply, job),
            Ok(Route::Users(job)) => self.on_users(reply, job).await,
            Ok(Route::Configs(job)) => self.on_configs(reply, job).await,
            Err(e) => {
                if e.code == lattice_protocol::error::ErrorCode::NotAllowed {
                    warn!(?verb, signer = %signed.signer, reason = %e, "refused a control request");
                    // The signature held: a real user asked for more than its role allows.
                    let message = format!(
                        "{} refused to {}: {}",
                        verb.as_str(),
                        signed.signer,
                        e.message
                    );
                    self.events
                        .emit(EventKind::RequestRefused, None, None, message);
                }
                let _ = self.act(Action::refuse(&reply, e)).await;
            }
        }
    }

    /// Prepares a deploy or scale in a task of its own; the result comes back as an input.
    pub(super) fn prepare(&mut self, reply: ReplyTo, job: Job) {
        let catalog = self.catalog();
        let registry = self.registry.clone();
        let configs = self.configs.clone();
        let tx = self.prepared.0.clone();
        let cfg = self.cfg.clone();
        let span = tracing::Span::current();
        tokio::spawn(
            async move {
                let prepared = prepare::prepare(job, &catalog, &registry, &configs, &cfg.key).await;
                // The worker is gone (leadership lost): the request goes unanswered, as it
                // would have with the worker.
                let _ = tx.send((
                    Input::Prepared { reply, prepared },
                    tracing::Span::current(),
                ));
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use lattice_protocol::auth::{Grant, Role};
    use lattice_protocol::error::ErrorCode;
    use lattice_protocol::keys::KeyRole;
    use lattice_protocol::messages::{
        AppRequest, DeployRequest, InventoryRequest, LabelRequest, RollbackRequest, ScaleRequest,
        StopHostRequest,
    };
    use lattice_protocol::messages::{
        ConfigPutRequest, ConfigRequest, UsersAddRequest, UsersRemoveRequest,
    };
    use lattice_protocol::names::{AppName, ComponentName};
    use lattice_protocol::queue::ops::{DeadLettersRequest, LinkSelector, RequeueRequest};

    use super::*;

    /// A role table with one user of `role` (limited to `apps`), and that user's key.
    fn table(role: Role, apps: &[&str]) -> (Roles, PublicKey) {
        let key = KeyPair::generate(KeyRole::User).public_key();
        let mut roles = Roles::default();
        roles.insert(key.clone(), Grant::new("u", role, apps).expect("valid"));
        (roles, key)
    }

    fn manifest(name: &str) -> DeployRequest {
        let request = DeployRequest {
            manifest: format!(
                "apiVersion: core.oam.dev/v1beta1\nkind: Application\nmetadata:\n  name: {name}\nspec:\n  components:\n    - name: web\n      type: component\n      properties:\n        image: web:1\n      traits:\n        - type: spreadscaler\n          properties:\n            instances: 1\n"
            ),
        };
        assert!(
            lattice_manifest::parse(&request.manifest).is_ok(),
            "a valid manifest"
        );
        request
    }

    // A deploy is authorized for the app its manifest names, which the request never states
    // apart (so it cannot say one app and deploy another).
    #[test]
    fn a_deploy_is_authorized_by_the_name_in_its_manifest() {
        let (roles, deployer) = table(Role::Deployer, &["shop-*"]);
        let gate = Gate {
            roles: &roles,
            signer: &deployer,
        };
        let deploy = |name| sent::<verbs::Deploy>(&manifest(name));
        let (verb, inside) = deploy("shop-web");
        assert!(matches!(route(verb, &inside, &gate), Ok(Route::Prepare(_))));
        let (verb, outside) = deploy("blog");
        let refused = route(verb, &outside, &gate).err().expect("refused");
        assert_eq!(refused.code, ErrorCode::NotAllowed);
        assert!(
            refused.message.contains("may not change app `blog`"),
            "{refused}"
        );

        let (roles, viewer) = table(Role::Viewer, &[]);
        let gate = Gate {
            roles: &roles,
            signer: &viewer,
        };
        let refused = route(verb, &inside, &gate).err().expect("refused");
        assert!(refused.message.contains("is a viewer"), "{refused}");
        let (verb, read) = sent::<verbs::Apps>(&());
        assert!(route(verb, &read, &gate).is_ok());
    }

    /// What a client sends for verb `V`: its request, enveloped.
    fn sent<V: Verb>(request: &V::Request) -> (CtlVerb, Vec<u8>) {
        (V::VERB, envelope::encode(request))
    }

    // Every verb's request, as the client encodes it (`CtlClient::call::<V>`), is decoded by the
    // dispatch with the same verb's types and routed where it belongs.
    #[test]
    fn every_verb_is_decoded_with_its_own_types() {
        let app = || AppRequest {
            name: AppName::new("hello").expect("valid"),
        };
        let link: LinkSelector = "hello/a->b".parse().expect("valid");
        let cases = [
            sent::<verbs::Deploy>(&DeployRequest {
                manifest: "kind: Application".into(),
            }),
            sent::<verbs::Scale>(&ScaleRequest {
                name: AppName::new("hello").expect("valid"),
                component: ComponentName::new("c").expect("valid"),
                instances: 2,
            }),
            sent::<verbs::Undeploy>(&app()),
            sent::<verbs::Apps>(&()),
            sent::<verbs::Status>(&app()),
            sent::<verbs::Hosts>(&()),
            sent::<verbs::History>(&app()),
            sent::<verbs::Manifest>(&lattice_protocol::messages::ManifestRequest {
                name: AppName::new("hello").expect("valid"),
                version: None,
            }),
            sent::<verbs::Rollback>(&RollbackRequest {
                name: AppName::new("hello").expect("valid"),
                version: None,
            }),
            sent::<verbs::Inventory>(&InventoryRequest { host: "h".into() }),
            sent::<verbs::StopHost>(&StopHostRequest { host: "h".into() }),
            sent::<verbs::Label>(&LabelRequest {
                host: "h".into(),
                set: Default::default(),
                delete: Vec::new(),
            }),
            sent::<verbs::Queues>(&()),
            sent::<verbs::DeadLetters>(&DeadLettersRequest { link: link.clone() }),
            sent::<verbs::Requeue>(&RequeueRequest {
                link,
                ids: Vec::new(),
            }),
            sent::<verbs::Admission>(&lattice_protocol::messages::AdmissionRequest {
                host: "h".into(),
                admit: true,
            }),
            sent::<verbs::UsersAdd>(&UsersAddRequest {
                key: KeyPair::generate(KeyRole::User).public_key(),
                grant: Grant::new("ops", Role::Viewer, [""; 0]).expect("valid"),
            }),
            sent::<verbs::UsersList>(&()),
            sent::<verbs::UsersRemove>(&UsersRemoveRequest {
                key: KeyPair::generate(KeyRole::User).public_key(),
            }),
            sent::<verbs::ConfigPut>(&ConfigPutRequest {
                name: "db".into(),
                values: [("url".to_string(), "x".to_string())].into(),
            }),
            sent::<verbs::ConfigGet>(&ConfigRequest { name: "db".into() }),
            sent::<verbs::ConfigDel>(&ConfigRequest { name: "db".into() }),
            sent::<verbs::ConfigList>(&()),
        ];
        assert_eq!(cases.len(), 23, "every verb has a case");
        let (roles, admin) = table(Role::Admin, &[]);
        let gate = Gate {
            roles: &roles,
            signer: &admin,
        };
        for (verb, payload) in cases {
            let routed = route(verb, &payload, &gate).unwrap_or_else(|e| panic!("{verb:?}: {e}"));
            let prepared = matches!(routed, Route::Prepare(_));
            assert_eq!(
                prepared,
                matches!(verb, CtlVerb::Deploy | CtlVerb::Scale),
                "{verb:?}"
            );
            let users = matches!(routed, Route::Users(_));
            assert_eq!(
                users,
                matches!(
                    verb,
                    CtlVerb::UsersAdd | CtlVerb::UsersList | CtlVerb::UsersRemove
                ),
                "{verb:?}"
            );
            let configs = matches!(routed, Route::Configs(_));
            assert_eq!(configs, verb.as_str().starts_with("config_"), "{verb:?}");
        }
    }
}
