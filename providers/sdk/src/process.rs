//! A provider as a process of its own: the environment a host starts it with, and the loop
//! that answers the host's requests.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt as _;
use lattice_protocol::envelope;
use lattice_protocol::names::{ComponentName, HostId, LatticeName};
use lattice_protocol::provider::{LinkId, ProviderRequest, ProviderResponse, Reply};
use lattice_protocol::subject::Subject;

use crate::Provider;

/// What a host tells a provider process it starts, in environment variables (so a provider in
/// any language reads them the same way). The host writes them with [`ProcessEnv::vars`], the
/// process reads them with [`ProcessEnv::from_env`]: the names live here only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEnv {
    /// `LATTICE_NATS_URL`.
    pub nats_url: String,
    /// `LATTICE_LATTICE`.
    pub lattice: LatticeName,
    /// `LATTICE_HOST_ID`: the host that started it, whose requests it answers.
    pub host: HostId,
    /// `LATTICE_CREDS`, when the host connects with a credentials file.
    pub creds: Option<PathBuf>,
    /// `LATTICE_JS_DOMAIN`, when the host reaches the lattice's JetStream in a domain (an edge
    /// host on a leaf node without JetStream): the process's JetStream goes there too, see
    /// [`ProcessEnv::jetstream`].
    pub js_domain: Option<String>,
}

const NATS_URL: &str = "LATTICE_NATS_URL";
const LATTICE: &str = "LATTICE_LATTICE";
const HOST_ID: &str = "LATTICE_HOST_ID";
const CREDS: &str = "LATTICE_CREDS";
const JS_DOMAIN: &str = "LATTICE_JS_DOMAIN";

impl ProcessEnv {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// Reads the variables `get` returns (`None`: unset).
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> anyhow::Result<Self> {
        let text = |name: &str| -> anyhow::Result<Option<String>> {
            get(name)
                .map(|v| {
                    v.into_string()
                        .map_err(|_| anyhow::anyhow!("{name} is not UTF-8"))
                })
                .transpose()
        };
        let var = |name: &str| {
            text(name)?.with_context(|| {
                format!("{name} is not set: provider processes are started by a Lattice host")
            })
        };
        Ok(Self {
            nats_url: var(NATS_URL)?,
            lattice: LatticeName::new(var(LATTICE)?)?,
            host: HostId::new(var(HOST_ID)?)?,
            creds: get(CREDS).map(PathBuf::from),
            js_domain: text(JS_DOMAIN)?.filter(|d| !d.is_empty()),
        })
    }

    /// The variables a host sets for the process (`None`: removes a variable the host's own
    /// environment may have, so that the process sees only what the host says).
    pub fn vars(&self) -> Vec<(&'static str, Option<OsString>)> {
        vec![
            (NATS_URL, Some(self.nats_url.clone().into())),
            (LATTICE, Some(self.lattice.as_str().into())),
            (HOST_ID, Some(self.host.as_str().into())),
            (CREDS, self.creds.clone().map(Into::into)),
            (JS_DOMAIN, self.js_domain.clone().map(Into::into)),
        ]
    }

    /// Connects to NATS as the host does.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new().retry_on_initial_connect();
        if let Some(creds) = &self.creds {
            options = options.credentials_file(creds).await?;
        }
        options
            .connect(&self.nats_url)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.nats_url))
    }

    /// JetStream on `client` as the host has it: in [`ProcessEnv::js_domain`] when set, else
    /// the default API prefix.
    pub fn jetstream(&self, client: &async_nats::Client) -> jetstream::Context {
        lattice_protocol::jetstream::context(client, self.js_domain.as_deref())
    }
}

/// Answers requests for `provider` on `subject` until the subscription ends.
pub async fn serve(
    provider: Arc<dyn Provider>,
    client: async_nats::Client,
    subject: String,
) -> anyhow::Result<()> {
    let mut requests = client.subscribe(subject).await?;
    client.flush().await?;
    let links = Arc::new(Mutex::new(BTreeSet::new()));
    while let Some(message) = requests.next().await {
        let Some(reply_to) = message.reply else {
            continue;
        };
        let (provider, client, links) = (provider.clone(), client.clone(), links.clone());
        tokio::spawn(async move {
            let response = answer(provider.as_ref(), &links, &message.payload).await;
            if let Err(e) = client
                .publish(reply_to, envelope::encode(&response).into())
                .await
            {
                tracing::debug!(error = %e, "could not answer the host");
            }
        });
    }
    Ok(())
}

/// Answers one request; `links` are the links held, for `Ping`'s answer.
async fn answer(
    provider: &dyn Provider,
    links: &Mutex<BTreeSet<LinkId>>,
    payload: &[u8],
) -> ProviderResponse {
    let request: ProviderRequest = match envelope::decode(payload) {
        Ok(r) => r,
        Err(e) => {
            return ProviderResponse::Err(lattice_protocol::provider::ProviderError::Other(
                e.to_string(),
            ));
        }
    };
    match request {
        ProviderRequest::Ping => ProviderResponse::Ready {
            name: provider.name().to_string(),
            links: links.lock().expect("not poisoned").len(),
        },
        ProviderRequest::LinkPut(link) => {
            let id = link.id.clone();
            match provider.link_put(link).await {
                Ok(()) => {
                    links.lock().expect("not poisoned").insert(id);
                    ProviderResponse::Ok(Reply::Unit)
                }
                Err(e) => ProviderResponse::Err(e),
            }
        }
        ProviderRequest::LinkDel(link) => {
            provider.link_del(&link).await;
            links.lock().expect("not poisoned").remove(&link);
            ProviderResponse::Ok(Reply::Unit)
        }
        ProviderRequest::Call { link, call } => match provider.call(&link, call).await {
            Ok(reply) => ProviderResponse::Ok(reply),
            Err(e) => ProviderResponse::Err(e),
        },
    }
}

/// The rest of a provider process's `main` once `lattice_telemetry::init` (logging to stderr,
/// which the host passes on), [`ProcessEnv::from_env`] and
/// [`ProcessEnv::connect`] ran: serves `provider` on its subject with `client` (the same
/// connection the provider may use itself) until SIGTERM or Ctrl-C.
pub async fn run_process(
    env: &ProcessEnv,
    client: async_nats::Client,
    provider: Arc<dyn Provider>,
) -> anyhow::Result<()> {
    let name = ComponentName::new(provider.name())?;
    let subject = Subject::provider(&env.lattice, &env.host, &name).to_string();
    tracing::info!(provider = %name, %subject, "provider serving");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = serve(provider, client, subject) => served,
        _ = terminate.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: Vec<(&'static str, Option<OsString>)>) -> anyhow::Result<ProcessEnv> {
        let set: HashMap<_, _> = vars
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        ProcessEnv::from_vars(|name| set.get(name).cloned())
    }

    #[test]
    fn what_the_host_writes_the_process_reads() -> anyhow::Result<()> {
        let full = ProcessEnv {
            nats_url: "nats://leaf:4222".into(),
            lattice: LatticeName::new("edge")?,
            host: HostId::new("NHOST")?,
            creds: Some(PathBuf::from("/etc/lattice/host.creds")),
            js_domain: Some("hub".into()),
        };
        assert_eq!(read(full.vars())?, full);
        let bare = ProcessEnv {
            creds: None,
            js_domain: None,
            ..full
        };
        assert_eq!(read(bare.vars())?, bare);
        // Unset optional variables are removed from what the process inherits.
        assert!(
            bare.vars()
                .iter()
                .any(|(k, v)| *k == "LATTICE_JS_DOMAIN" && v.is_none())
        );
        Ok(())
    }

    #[test]
    fn an_empty_domain_is_none_and_a_missing_variable_is_named() -> anyhow::Result<()> {
        let env = ProcessEnv::from_vars(|name| match name {
            "LATTICE_NATS_URL" => Some("nats://x".into()),
            "LATTICE_LATTICE" => Some("default".into()),
            "LATTICE_HOST_ID" => Some("NHOST".into()),
            "LATTICE_JS_DOMAIN" => Some("".into()),
            _ => None,
        })?;
        assert_eq!(env.js_domain, None);
        let missing = ProcessEnv::from_vars(|_| None).unwrap_err().to_string();
        assert!(missing.contains("LATTICE_NATS_URL"), "{missing}");
        Ok(())
    }
}
