//! A `lattice ctl` request, decoded by its verb: each verb's request type comes from its
//! [`Verb`], the one pairing the client uses too. Deploys and scales go to preparation (see
//! `prepare`); every other verb goes straight to the decisions.

use lattice_protocol::envelope;
use lattice_protocol::error::WireError;
use lattice_protocol::messages::{Verb, verbs};
use lattice_protocol::subject::{CtlVerb, Subject};
use tracing::debug;

use super::Worker;
use super::prepare::{self, Job};
use crate::decide::{Action, Input, ReplyTo, Request};

/// Where a decoded request goes.
enum Route {
    Decide(Request),
    Prepare(Job),
}

/// Decodes a request of verb `V`.
fn decode<V: Verb>(verb: CtlVerb, payload: &[u8]) -> Result<V::Request, WireError> {
    debug_assert_eq!(verb, V::VERB, "a verb dispatched to another verb's types");
    Ok(envelope::decode(payload)?)
}

/// The route of a request with `verb` and `payload`. Verbs whose request is `()` are not
/// decoded (they never were: any payload asks the same).
fn route(verb: CtlVerb, payload: &[u8]) -> Result<Route, WireError> {
    use Route::{Decide, Prepare};
    Ok(match verb {
        CtlVerb::Deploy => Prepare(Job::Deploy(decode::<verbs::Deploy>(verb, payload)?)),
        CtlVerb::Scale => Prepare(Job::Scale(decode::<verbs::Scale>(verb, payload)?)),
        CtlVerb::Undeploy => Decide(Request::Undeploy(decode::<verbs::Undeploy>(verb, payload)?)),
        CtlVerb::Apps => Decide(Request::Apps),
        CtlVerb::Status => Decide(Request::Status(decode::<verbs::Status>(verb, payload)?)),
        CtlVerb::Hosts => Decide(Request::Hosts),
        CtlVerb::History => Decide(Request::History(decode::<verbs::History>(verb, payload)?)),
        CtlVerb::Rollback => Decide(Request::Rollback(decode::<verbs::Rollback>(verb, payload)?)),
        CtlVerb::Inventory => Decide(Request::Inventory(decode::<verbs::Inventory>(
            verb, payload,
        )?)),
        CtlVerb::StopHost => Decide(Request::StopHost(decode::<verbs::StopHost>(verb, payload)?)),
        CtlVerb::Label => Decide(Request::Label(decode::<verbs::Label>(verb, payload)?)),
        CtlVerb::Queues => Decide(Request::Queues),
        CtlVerb::DeadLetters => Decide(Request::DeadLetters(decode::<verbs::DeadLetters>(
            verb, payload,
        )?)),
        CtlVerb::Requeue => Decide(Request::Requeue(decode::<verbs::Requeue>(verb, payload)?)),
        CtlVerb::Admission => Decide(Request::Admission(decode::<verbs::Admission>(
            verb, payload,
        )?)),
    })
}

impl Worker {
    pub(super) async fn on_request(&mut self, msg: async_nats::Message) {
        let Some(reply_to) = msg.reply.clone() else {
            return;
        };
        let verb = match Subject::parse(&msg.subject) {
            Ok(Subject::Ctl { verb, .. }) => verb,
            _ => return,
        };
        debug!(?verb, "control request");
        let reply = ReplyTo(reply_to.to_string());
        match route(verb, &msg.payload) {
            Ok(Route::Decide(request)) => self.step(Input::Request { reply, request }).await,
            Ok(Route::Prepare(job)) => self.prepare(reply, job),
            Err(e) => {
                let _ = self.act(Action::refuse(&reply, e)).await;
            }
        }
    }

    /// Prepares a deploy or scale in a task of its own; the result comes back as an input.
    fn prepare(&mut self, reply: ReplyTo, job: Job) {
        let catalog = self
            .catalog
            .get_or_insert_with(|| std::sync::Arc::new(self.state.catalog()))
            .clone();
        let registry = self.registry.clone();
        let tx = self.prepared.0.clone();
        tokio::spawn(async move {
            let prepared = prepare::prepare(job, &catalog, &registry).await;
            // The worker is gone (leadership lost): the request goes unanswered, as it would
            // have with the worker.
            let _ = tx.send(Input::Prepared { reply, prepared });
        });
    }
}

#[cfg(test)]
mod tests {
    use lattice_protocol::messages::{
        AppRequest, DeployRequest, InventoryRequest, LabelRequest, RollbackRequest, ScaleRequest,
        StopHostRequest,
    };
    use lattice_protocol::names::{AppName, ComponentName};
    use lattice_protocol::queue::ops::{DeadLettersRequest, LinkSelector, RequeueRequest};

    use super::*;

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
        ];
        for (verb, payload) in cases {
            let routed = route(verb, &payload).unwrap_or_else(|e| panic!("{verb:?}: {e}"));
            let prepared = matches!(routed, Route::Prepare(_));
            assert_eq!(
                prepared,
                matches!(verb, CtlVerb::Deploy | CtlVerb::Scale),
                "{verb:?}"
            );
        }
    }
}
