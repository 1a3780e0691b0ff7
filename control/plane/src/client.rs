//! A typed client of the control-plane API, used by `lattice ctl` and by tests. Every method is
//! [`CtlClient::call`] with the verb's [`Verb`] type, which names the request and the reply, so
//! the client cannot pair a verb with types the control plane does not use.
//!
//! Every request is a [`SignedRequest`] signed with the client's user key at the time it is
//! sent (with a fresh nonce); every reply must be a [`SignedReply`] bound to that nonce and
//! signed by a control-plane key the client trusts, or it is refused: whoever else answers on
//! the control subjects is not believed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lattice_protocol::auth::{Grant, SignedReply, SignedRequest};
use lattice_protocol::envelope::{self, Reply};
use lattice_protocol::error::{ErrorCode, WireError};
use lattice_protocol::keys::{KeyPair, PublicKey};
use lattice_protocol::messages::{
    AppRequest, AppStatus, AppSummary, ConfigEntry, ConfigPutReply, ConfigPutRequest,
    ConfigRequest, DeployReply, DeployRequest, Heartbeat, HostSummary, InventoryRequest,
    LabelRequest, ManifestReply, ManifestRequest, RollbackRequest, ScaleRequest, StopHostRequest,
    UserEntry, UsersAddRequest, UsersRemoveRequest, VersionSummary,
};
use lattice_protocol::messages::{Verb, verbs};
use lattice_protocol::names::{AppName, LatticeName};
use lattice_protocol::queue::ops::{
    DeadLetter, DeadLettersRequest, LinkQueue, LinkSelector, RequeueReply, RequeueRequest,
};
use lattice_protocol::subject::{CtlVerb, Subject};
use tracing::Instrument as _;

/// Talks to whichever control plane of the lattice answers, as one user.
#[derive(Debug, Clone)]
pub struct CtlClient {
    client: async_nats::Client,
    lattice: LatticeName,
    timeout: Duration,
    /// Signs every request: the user the control plane authorizes.
    key: Arc<KeyPair>,
    /// The control planes' keys whose replies are believed.
    trusted: Arc<Vec<PublicKey>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl CtlClient {
    /// A client for `lattice` over `client`, signing with the user key `key` and believing
    /// replies signed by one of `trusted` (the control plane's operator keys).
    pub fn new(
        client: async_nats::Client,
        lattice: LatticeName,
        key: KeyPair,
        trusted: Vec<PublicKey>,
    ) -> Self {
        Self {
            client,
            lattice,
            timeout: Duration::from_secs(30),
            key: Arc::new(key),
            trusted: Arc::new(trusted),
        }
    }

    /// The same client (connection, lattice, trusted keys) signing as another user.
    pub fn signing_as(&self, key: KeyPair) -> Self {
        Self {
            key: Arc::new(key),
            ..self.clone()
        }
    }

    /// The user key requests are signed with.
    pub fn user(&self) -> PublicKey {
        self.key.public_key()
    }

    /// Sends `V`'s request and decodes its reply: the verb names both types (see [`Verb`]).
    ///
    /// In a span, `lattice.deploy` for a deploy and `lattice.ctl` (field `verb`) for the
    /// others, whose trace the control plane continues.
    pub async fn call<V: Verb>(&self, body: &V::Request) -> Result<V::Reply, WireError> {
        let span = if V::VERB == CtlVerb::Deploy {
            tracing::debug_span!("lattice.deploy", lattice = %self.lattice)
        } else {
            tracing::debug_span!("lattice.ctl", verb = V::VERB.as_str(), lattice = %self.lattice)
        };
        self.send::<V>(body).instrument(span).await
    }

    async fn send<V: Verb>(&self, body: &V::Request) -> Result<V::Reply, WireError> {
        let subject = Subject::ctl(&self.lattice, V::VERB).to_string();
        let signed = SignedRequest::sign(
            &self.lattice,
            V::VERB.as_str(),
            envelope::encode(body),
            &self.key,
            now_ms(),
        );
        let payload = envelope::encode(&signed);
        let mut request = async_nats::Request::new().payload(payload.into());
        // The control plane continues the trace (`lattice.deploy`, `lattice.ctl.serve`).
        if let Some(headers) = lattice_telemetry::propagation::nats_headers() {
            request = request.headers(headers);
        }
        let request = self.client.send_request(subject, request);
        let msg = match tokio::time::timeout(self.timeout, request).await {
            Err(_) => {
                return Err(WireError::new(
                    ErrorCode::Timeout,
                    format!(
                        "the control plane of lattice `{}` did not answer within {:?}",
                        self.lattice, self.timeout
                    ),
                ));
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(WireError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "no control plane is running for lattice `{}`; start one with `lattice up` or `lattice control`",
                        self.lattice
                    ),
                ));
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
                return Err(WireError::new(
                    ErrorCode::Timeout,
                    format!(
                        "the control plane of lattice `{}` did not answer in time",
                        self.lattice
                    ),
                ));
            }
            Ok(Err(e)) => {
                return Err(WireError::new(
                    ErrorCode::Unavailable,
                    format!("request failed: {e}"),
                ));
            }
            Ok(Ok(msg)) => msg,
        };
        let reply: SignedReply = envelope::decode(&msg.payload).map_err(|e| {
            WireError::new(
                ErrorCode::NotAllowed,
                format!(
                    "the reply is not signed by a control plane ({e}): something on NATS answered in the control plane's place, or the control plane predates signed replies; check who may subscribe to lattice.{}.ctl.*",
                    self.lattice
                ),
            )
        })?;
        reply.verify(&signed.nonce, &self.trusted)?;
        envelope::decode::<Reply<V::Reply>>(&reply.body)?
    }

    /// Deploys a manifest (its YAML text). Its secret values are sealed here, to the first
    /// trusted control-plane key, before the request leaves: the manifest then travels (and is
    /// stored) as JSON, which is YAML, with only ciphertext in it.
    pub async fn deploy(&self, manifest: &str) -> Result<DeployReply, WireError> {
        let manifest = match self.trusted.first() {
            Some(control) => crate::secrets::seal_manifest(manifest, control)?,
            None => manifest.to_string(),
        };
        self.call::<verbs::Deploy>(&DeployRequest { manifest })
            .await
    }

    /// Undeploys an app.
    pub async fn undeploy(&self, name: &AppName) -> Result<(), WireError> {
        self.call::<verbs::Undeploy>(&AppRequest { name: name.clone() })
            .await
    }

    /// Lists apps.
    pub async fn apps(&self) -> Result<Vec<AppSummary>, WireError> {
        self.call::<verbs::Apps>(&()).await
    }

    /// One app's status.
    pub async fn status(&self, name: &AppName) -> Result<AppStatus, WireError> {
        self.call::<verbs::Status>(&AppRequest { name: name.clone() })
            .await
    }

    /// An app's stored versions, oldest first.
    pub async fn history(&self, name: &AppName) -> Result<Vec<VersionSummary>, WireError> {
        self.call::<verbs::History>(&AppRequest { name: name.clone() })
            .await
    }

    /// A stored manifest of an app (`None`: the desired version), its secrets redacted.
    pub async fn manifest(
        &self,
        name: &AppName,
        version: Option<&str>,
    ) -> Result<ManifestReply, WireError> {
        self.call::<verbs::Manifest>(&ManifestRequest {
            name: name.clone(),
            version: version.map(str::to_string),
        })
        .await
    }

    /// Makes a stored version desired again (`None`: the one before the current).
    pub async fn rollback(
        &self,
        name: &AppName,
        version: Option<&str>,
    ) -> Result<DeployReply, WireError> {
        let request = RollbackRequest {
            name: name.clone(),
            version: version.map(str::to_string),
        };
        self.call::<verbs::Rollback>(&request).await
    }

    /// One host's latest report (`host`: id, unique id prefix, or name).
    pub async fn inventory(&self, host: &str) -> Result<Heartbeat, WireError> {
        let request = InventoryRequest {
            host: host.to_string(),
        };
        self.call::<verbs::Inventory>(&request).await
    }

    /// Asks a host to stop gracefully.
    pub async fn stop_host(&self, host: &str) -> Result<(), WireError> {
        let request = StopHostRequest {
            host: host.to_string(),
        };
        self.call::<verbs::StopHost>(&request).await
    }

    /// A new version of `name` with `instances` of `component`.
    pub async fn scale(
        &self,
        name: &AppName,
        component: &lattice_protocol::names::ComponentName,
        instances: u32,
    ) -> Result<DeployReply, WireError> {
        let request = ScaleRequest {
            name: name.clone(),
            component: component.clone(),
            instances,
        };
        self.call::<verbs::Scale>(&request).await
    }

    /// Sets and removes labels of a host; returns its labels now.
    pub async fn label(
        &self,
        host: &str,
        set: std::collections::BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<std::collections::BTreeMap<String, String>, WireError> {
        let request = LabelRequest {
            host: host.to_string(),
            set,
            delete,
        };
        self.call::<verbs::Label>(&request).await
    }

    /// Lists hosts.
    pub async fn hosts(&self) -> Result<Vec<HostSummary>, WireError> {
        self.call::<verbs::Hosts>(&()).await
    }

    /// Every queued link: its senders' outboxes, in flight at the hub, dead-lettered.
    pub async fn queues(&self) -> Result<Vec<LinkQueue>, WireError> {
        self.call::<verbs::Queues>(&()).await
    }

    /// The dead letters of a link (`app/source->target`) or target (`app/target`), oldest first.
    pub async fn dead_letters(&self, link: &LinkSelector) -> Result<Vec<DeadLetter>, WireError> {
        let request = DeadLettersRequest { link: link.clone() };
        self.call::<verbs::DeadLetters>(&request).await
    }

    /// Puts dead letters back in their queue with fresh attempts: those with `ids`, or all of
    /// the link's when `ids` is empty.
    pub async fn requeue(
        &self,
        link: &LinkSelector,
        ids: Vec<String>,
    ) -> Result<RequeueReply, WireError> {
        let request = RequeueRequest {
            link: link.clone(),
            ids,
        };
        self.call::<verbs::Requeue>(&request).await
    }

    /// Gives the user `key` a role (or changes its role); admins only.
    pub async fn users_add(&self, key: &PublicKey, grant: Grant) -> Result<(), WireError> {
        let request = UsersAddRequest {
            key: key.clone(),
            grant,
        };
        self.call::<verbs::UsersAdd>(&request).await
    }

    /// The role table; admins only.
    pub async fn users_list(&self) -> Result<Vec<UserEntry>, WireError> {
        self.call::<verbs::UsersList>(&()).await
    }

    /// Removes the user `key` from the role table (never the last admin); admins only.
    pub async fn users_remove(&self, key: &PublicKey) -> Result<(), WireError> {
        let request = UsersRemoveRequest { key: key.clone() };
        self.call::<verbs::UsersRemove>(&request).await
    }

    /// Stores the named config `name` (admins only); deployed apps that took it get a new
    /// version with its new values.
    pub async fn config_put(
        &self,
        name: &str,
        values: BTreeMap<String, String>,
    ) -> Result<ConfigPutReply, WireError> {
        let request = ConfigPutRequest {
            name: name.to_string(),
            values,
        };
        self.call::<verbs::ConfigPut>(&request).await
    }

    /// The named config `name`'s values.
    pub async fn config_get(&self, name: &str) -> Result<BTreeMap<String, String>, WireError> {
        let request = ConfigRequest {
            name: name.to_string(),
        };
        self.call::<verbs::ConfigGet>(&request).await
    }

    /// Deletes the named config `name` (admins only), unless a deployed app takes it.
    pub async fn config_del(&self, name: &str) -> Result<(), WireError> {
        let request = ConfigRequest {
            name: name.to_string(),
        };
        self.call::<verbs::ConfigDel>(&request).await
    }

    /// Every named config, with the deployed apps that take it.
    pub async fn config_list(&self) -> Result<Vec<ConfigEntry>, WireError> {
        self.call::<verbs::ConfigList>(&()).await
    }
}
