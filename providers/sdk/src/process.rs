//! A provider as a process of its own: the environment a host starts it with, and the loop
//! that answers the host's requests.
//!
//! The host connects it exactly as the host itself is connected (every NATS option it has:
//! credentials, nkey, CA, client certificate, required TLS, ping interval, JetStream domain),
//! and keeps the write end of a pipe on its standard input: when the host dies, however it
//! dies, the kernel closes that pipe and the provider exits ([`run_process`]), so a provider
//! never outlives its host beside the next one.
//!
//! The first line the host writes on that pipe is the process's call key
//! (`lattice_protocol::provider::auth`): [`serve`] answers only requests authenticated with
//! it, so a client that can publish on the provider's subject (another host, a stranger in dev
//! mode without the generated NATS authorization) gets `Unauthenticated` and nothing else.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use futures::StreamExt as _;
use lattice_connect::NatsOptions;
use lattice_protocol::envelope;
use lattice_protocol::jetstream::Storage;
use lattice_protocol::names::{ComponentName, HostId, LatticeName};
use lattice_protocol::provider::auth::CallKey;
use lattice_protocol::provider::{LinkId, ProviderError, ProviderRequest, ProviderResponse, Reply};
use lattice_protocol::subject::Subject;
use tracing::Instrument as _;

use crate::Provider;
use crate::guard::Guard;

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
    /// How the host connects, in the variables of the same names as `lattice-host`'s flags
    /// (`LATTICE_NATS_CREDS`, `_NKEY`, `_TLS_CA`, `_TLS_CERT`, `_TLS_KEY`, `_TLS`,
    /// `_PING_SECS`).
    pub nats: NatsOptions,
    /// `LATTICE_JS_DOMAIN`, when the host reaches the lattice's JetStream in a domain (an edge
    /// host on a leaf node without JetStream): the process's JetStream goes there too, see
    /// [`ProcessEnv::jetstream`].
    pub js_domain: Option<String>,
    /// `LATTICE_HOST_PIPE=1`: the host holds a pipe on the process's standard input, and the
    /// process exits when it closes (the host died). Unset when a provider is run by hand.
    pub host_pipe: bool,
    /// `LATTICE_JS_REPLICAS` and `LATTICE_KV_MAX_BYTES`, the host's flags of those names: the
    /// copies and byte limit of the buckets the process makes, as the host makes its own (three
    /// copies on a clustered hub). The other limits are the defaults: a provider makes buckets
    /// only.
    pub storage: Storage,
}

const NATS_URL: &str = "LATTICE_NATS_URL";
const LATTICE: &str = "LATTICE_LATTICE";
const HOST_ID: &str = "LATTICE_HOST_ID";
const CREDS: &str = "LATTICE_NATS_CREDS";
const NKEY: &str = "LATTICE_NATS_NKEY";
const TLS_CA: &str = "LATTICE_NATS_TLS_CA";
const TLS_CERT: &str = "LATTICE_NATS_TLS_CERT";
const TLS_KEY: &str = "LATTICE_NATS_TLS_KEY";
const TLS: &str = "LATTICE_NATS_TLS";
const PING_SECS: &str = "LATTICE_NATS_PING_SECS";
const JS_DOMAIN: &str = "LATTICE_JS_DOMAIN";
const HOST_PIPE: &str = "LATTICE_HOST_PIPE";
const JS_REPLICAS: &str = "LATTICE_JS_REPLICAS";
const KV_MAX_BYTES: &str = "LATTICE_KV_MAX_BYTES";

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
        let flag = |name: &str| -> anyhow::Result<bool> {
            Ok(matches!(text(name)?.as_deref(), Some("1" | "true")))
        };
        let ping_interval = match text(PING_SECS)? {
            Some(secs) => Duration::from_secs(
                secs.parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .with_context(|| format!("{PING_SECS} is `{secs}`, not a number of seconds"))?,
            ),
            None => NatsOptions::default().ping_interval,
        };
        let defaults = Storage::default();
        let number = |name: &str, default: i64| -> anyhow::Result<i64> {
            match text(name)? {
                Some(n) => n
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{name} is `{n}`, not a positive number")),
                None => Ok(default),
            }
        };
        let storage = Storage {
            replicas: usize::try_from(number(JS_REPLICAS, defaults.replicas as i64)?)?,
            kv_max_bytes: number(KV_MAX_BYTES, defaults.kv_max_bytes)?,
            ..defaults
        };
        Ok(Self {
            nats_url: var(NATS_URL)?,
            lattice: LatticeName::new(var(LATTICE)?)?,
            host: HostId::new(var(HOST_ID)?)?,
            nats: NatsOptions {
                creds: get(CREDS).map(PathBuf::from),
                nkey: get(NKEY).map(PathBuf::from),
                tls_ca: get(TLS_CA).map(PathBuf::from),
                tls_cert: get(TLS_CERT).map(PathBuf::from),
                tls_key: get(TLS_KEY).map(PathBuf::from),
                require_tls: flag(TLS)?,
                ping_interval,
            },
            js_domain: text(JS_DOMAIN)?.filter(|d| !d.is_empty()),
            host_pipe: flag(HOST_PIPE)?,
            storage,
        })
    }

    /// The variables a host sets for the process (`None`: removes a variable the host's own
    /// environment may have, so that the process sees only what the host says).
    pub fn vars(&self) -> Vec<(&'static str, Option<OsString>)> {
        let path = |p: &Option<PathBuf>| p.clone().map(Into::into);
        let flag = |on: bool| on.then(|| "1".into());
        let nats = &self.nats;
        vec![
            (NATS_URL, Some(self.nats_url.clone().into())),
            (LATTICE, Some(self.lattice.as_str().into())),
            (HOST_ID, Some(self.host.as_str().into())),
            (CREDS, path(&nats.creds)),
            (NKEY, path(&nats.nkey)),
            (TLS_CA, path(&nats.tls_ca)),
            (TLS_CERT, path(&nats.tls_cert)),
            (TLS_KEY, path(&nats.tls_key)),
            (TLS, flag(nats.require_tls)),
            (
                PING_SECS,
                Some(nats.ping_interval.as_secs().max(1).to_string().into()),
            ),
            (JS_DOMAIN, self.js_domain.clone().map(Into::into)),
            (HOST_PIPE, flag(self.host_pipe)),
            (JS_REPLICAS, Some(self.storage.replicas.to_string().into())),
            (
                KV_MAX_BYTES,
                Some(self.storage.kv_max_bytes.to_string().into()),
            ),
        ]
    }

    /// Connects to NATS as the host does, trying until it can.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let name = format!("lattice-provider ({})", self.host);
        lattice_connect::connect_with(
            &self.nats,
            &self.nats_url,
            &name,
            lattice_connect::Patience::KeepTrying,
        )
        .await
    }

    /// JetStream on `client` as the host has it: in [`ProcessEnv::js_domain`] when set, else
    /// the default API prefix.
    pub fn jetstream(&self, client: &async_nats::Client) -> jetstream::Context {
        lattice_protocol::jetstream::context(client, self.js_domain.as_deref())
    }
}

/// Most requests a provider process answers at once.
const CONCURRENT_REQUESTS: usize = 256;

/// Answers requests for `provider` on `subject` until the subscription ends: those
/// authenticated with `key`, the key its host gave it; every other one with
/// `ProviderError::Unauthenticated`, before it is decoded.
pub async fn serve(
    provider: Arc<dyn Provider>,
    client: async_nats::Client,
    subject: String,
    key: CallKey,
) -> anyhow::Result<()> {
    let mut requests = client.subscribe(subject).await?;
    client.flush().await?;
    let links = Arc::new(Mutex::new(BTreeSet::new()));
    let guard = Arc::new(Guard::new(key));
    // Requests answered at once: beyond it the next waits (in the subscription's buffer)
    // instead of a task per message without bound.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REQUESTS));
    while let Some(message) = requests.next().await {
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (provider, client, links, guard) = (
            provider.clone(),
            client.clone(),
            links.clone(),
            guard.clone(),
        );
        // A child of the host's span that made the request (a capability call).
        let span = tracing::debug_span!("lattice.provider.serve", provider = provider.name());
        lattice_telemetry::propagation::continue_nats(&span, message.headers.as_ref());
        tokio::spawn(
            async move {
                let _slot = slot;
                let response = match guard.check(&message) {
                    Ok(()) => answer(provider.as_ref(), &links, &guard, &message.payload).await,
                    Err(refused) => ProviderResponse::Err(refused),
                };
                if let Err(e) = client
                    .publish(reply_to, envelope::encode(&response).into())
                    .await
                {
                    tracing::debug!(error = %e, "could not answer the host");
                }
            }
            .instrument(span),
        );
    }
    Ok(())
}

/// Answers one authenticated request; `links` are the links held, for `Ping`'s answer;
/// `guard` opens sealed links.
async fn answer(
    provider: &dyn Provider,
    links: &Mutex<BTreeSet<LinkId>>,
    guard: &Guard,
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
            ProviderResponse::Err(ProviderError::Unauthenticated(format!(
                "link `{}` came unsealed: a provider process takes a link only sealed by its host \
                 (its configuration may hold secrets); update the host and this provider together",
                link.id
            )))
        }
        ProviderRequest::SealedLinkPut(sealed) => {
            let link = match guard.open_link(&sealed) {
                Ok(link) => link,
                Err(e) => return ProviderResponse::Err(e),
            };
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

/// How long a process waits for its call key on standard input.
const KEY_TIMEOUT: Duration = Duration::from_secs(30);

/// The rest of a provider process's `main` once `lattice_telemetry::init` (logging to stderr,
/// which the host passes on), [`ProcessEnv::from_env`] and
/// [`ProcessEnv::connect`] ran: reads the call key the host writes on standard input, then
/// serves `provider` on its subject with `client` (the same connection the provider may use
/// itself) until SIGTERM or Ctrl-C, or until the host's pipe closes.
pub async fn run_process(
    env: &ProcessEnv,
    client: async_nats::Client,
    provider: Arc<dyn Provider>,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let name = ComponentName::new(provider.name())?;
    let subject = Subject::provider(&env.lattice, &env.host, &name).to_string();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    let read = tokio::time::timeout(KEY_TIMEOUT, stdin.read_line(&mut line))
        .await
        .ok()
        .and_then(Result::ok);
    anyhow::ensure!(
        read.is_some_and(|n| n > 0),
        "no call key on standard input within {KEY_TIMEOUT:?}: a provider process is started by a \
         Lattice host, which writes it there; to run one by hand, write the key the caller uses \
         (64 hex digits) as the first line"
    );
    let key = CallKey::from_line(&line)?;
    line.clear();
    tracing::info!(provider = %name, %subject, "provider serving");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let host_gone = async {
        if env.host_pipe {
            host_pipe_closed(stdin).await;
            tracing::warn!(provider = %name, "the host that started this provider is gone; exiting");
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serve(provider, client, subject, key) => served,
        () = host_gone => Ok(()),
        _ = terminate.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Returns once standard input, the host's pipe, reaches its end: the host closed it or died.
async fn host_pipe_closed(mut stdin: impl tokio::io::AsyncRead + Unpin) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 64];
    // After the key the host writes nothing; anything read is ignored.
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            return;
        }
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
            nats: NatsOptions {
                creds: Some(PathBuf::from("/etc/lattice/host.creds")),
                nkey: Some(PathBuf::from("/etc/lattice/host.nk")),
                tls_ca: Some(PathBuf::from("/etc/lattice/ca.pem")),
                tls_cert: Some(PathBuf::from("/etc/lattice/host.pem")),
                tls_key: Some(PathBuf::from("/etc/lattice/host.key")),
                require_tls: true,
                ping_interval: Duration::from_secs(3),
            },
            js_domain: Some("hub".into()),
            host_pipe: true,
            storage: Storage {
                replicas: 3,
                kv_max_bytes: 8 << 20,
                ..Storage::default()
            },
        };
        assert_eq!(read(full.vars())?, full);
        let bare = ProcessEnv {
            nats: NatsOptions::default(),
            js_domain: None,
            host_pipe: false,
            storage: Storage::default(),
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
        assert_eq!(env.storage, Storage::default(), "a host that says nothing");
        let missing = ProcessEnv::from_vars(|_| None).unwrap_err().to_string();
        assert!(missing.contains("LATTICE_NATS_URL"), "{missing}");
        Ok(())
    }
}
