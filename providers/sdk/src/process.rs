//! A provider as a process of its own: the environment a host starts it with, and the loop
//! that answers the host's requests.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures::StreamExt as _;
use lattice_protocol::envelope;
use lattice_protocol::names::{ComponentName, HostId, LatticeName};
use lattice_protocol::provider::{LinkId, ProviderRequest, ProviderResponse, Reply};
use lattice_protocol::subject::Subject;

use crate::Provider;

/// What a host tells a provider process it starts, in environment variables (so a provider in
/// any language reads them the same way).
#[derive(Debug, Clone)]
pub struct ProcessEnv {
    /// `LATTICE_NATS_URL`.
    pub nats_url: String,
    /// `LATTICE_LATTICE`.
    pub lattice: LatticeName,
    /// `LATTICE_HOST_ID`: the host that started it, whose requests it answers.
    pub host: HostId,
    /// `LATTICE_CREDS`, when the host connects with a credentials file.
    pub creds: Option<String>,
}

impl ProcessEnv {
    /// Reads the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).with_context(|| {
                format!("{name} is not set: provider processes are started by a Lattice host")
            })
        };
        Ok(Self {
            nats_url: var("LATTICE_NATS_URL")?,
            lattice: LatticeName::new(var("LATTICE_LATTICE")?)?,
            host: HostId::new(var("LATTICE_HOST_ID")?)?,
            creds: std::env::var("LATTICE_CREDS").ok(),
        })
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

/// Logging for a provider process: to stderr (the host passes it on), `RUST_LOG` or `info`.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// The rest of a provider process's `main` once [`init_logging`], [`ProcessEnv::from_env`] and
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
