//! A real Mosquitto MQTT broker for the MQTT provider's tests: on a free port of 127.0.0.1,
//! configured by a file in its own temporary directory, killed on drop; plain or over TLS with
//! a CA and server certificate made for the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

/// How long a test waits for an MQTT event.
const ARRIVE: Duration = Duration::from_secs(20);

/// A running `mosquitto`, stopped on drop.
#[derive(Debug)]
pub struct Mosquitto {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// Set for a TLS listener.
    tls: Option<Tls>,
}

/// The certificates of a TLS broker, in its directory.
#[derive(Debug, Clone)]
struct Tls {
    /// The test CA's certificate (PEM), what clients trust.
    ca: PathBuf,
    ca_pem: String,
    /// When the broker requires client certificates: one the CA signed, as PEM files (for a
    /// link) and text (for the test's own clients).
    client: Option<ClientCert>,
}

#[derive(Debug, Clone)]
struct ClientCert {
    cert: PathBuf,
    key: PathBuf,
    cert_pem: String,
    key_pem: String,
}

/// Writes a fresh CA and a server certificate for `127.0.0.1` and `localhost` it signed into
/// `dir`, as Mosquitto's `cafile`, `certfile` and `keyfile` name them; and with `client`, a
/// client certificate it signed.
fn make_certificates(dir: &Path, client: bool) -> anyhow::Result<Tls> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Lattice test CA");
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let server_key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?
        .signed_by(&server_key, &ca, &ca_key)?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem())?;
    std::fs::write(dir.join("server.pem"), server.pem())?;
    std::fs::write(dir.join("server.key"), server_key.serialize_pem())?;
    let client = if client {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "lattice-test-gateway");
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        let (cert_path, key_path) = (dir.join("client.pem"), dir.join("client.key"));
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&key_path, key.serialize_pem())?;
        Some(ClientCert {
            cert: cert_path,
            key: key_path,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    } else {
        None
    };
    Ok(Tls {
        ca: ca_path,
        ca_pem: ca.pem(),
        client,
    })
}

/// Where Debian's package puts the broker (`/usr/sbin`, not on a regular user's PATH).
fn find_mosquitto() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("mosquitto"))
                    .find(|p| p.exists())
            })
        })
}

impl Mosquitto {
    /// Starts a broker on a free port, anonymous and without persistence.
    pub async fn start() -> anyhow::Result<Self> {
        // The port is picked here, not by mosquitto, so that a restart can reuse it.
        crate::on_free_port(|port| async move {
            let dir = tempfile::tempdir()?;
            let child = spawn(&dir, port, None)?;
            let mut broker = Self {
                child,
                port,
                dir,
                tls: None,
            };
            broker.wait_ready().await?;
            Ok(broker)
        })
        .await
    }

    /// Starts a broker whose only listener is TLS, with a server certificate for 127.0.0.1
    /// signed by a CA made for it ([`Mosquitto::ca_file`]).
    pub async fn start_tls() -> anyhow::Result<Self> {
        Self::start_tls_with(false).await
    }

    /// Like [`Mosquitto::start_tls`], and the broker refuses clients without a certificate its
    /// CA signed ([`Mosquitto::client_cert_files`] has one).
    pub async fn start_tls_requiring_client_certs() -> anyhow::Result<Self> {
        Self::start_tls_with(true).await
    }

    async fn start_tls_with(client_certs: bool) -> anyhow::Result<Self> {
        crate::on_free_port(|port| async move {
            let dir = tempfile::tempdir()?;
            let tls = make_certificates(dir.path(), client_certs)?;
            let child = spawn(&dir, port, Some(&tls))?;
            let mut broker = Self {
                child,
                port,
                dir,
                tls: Some(tls),
            };
            broker.wait_ready().await?;
            Ok(broker)
        })
        .await
    }

    /// Its URI, as a link's `uri` config names it.
    pub fn uri(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A client certificate and its key (PEM files) the broker accepts, when it requires one.
    pub fn client_cert_files(&self) -> Option<(&Path, &Path)> {
        let client = self.tls.as_ref()?.client.as_ref()?;
        Some((client.cert.as_path(), client.key.as_path()))
    }

    /// The CA certificate (PEM) a TLS broker's clients trust.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca.as_path())
    }

    /// Kills the broker (SIGKILL, as a crash would) and starts it again on the same port,
    /// with nothing remembered.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.child = spawn(&self.dir, self.port, self.tls.as_ref())?;
        self.wait_ready().await
    }

    /// Kills the broker; [`Mosquitto::restart`] brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.path().join("mosquitto.log"))
                    .unwrap_or_default();
                bail!("mosquitto exited at start: {status}\n{log}");
            }
            if Instant::now() > deadline {
                bail!("mosquitto did not accept connections within 20 s");
            }
            // A listening port is the only signal mosquitto gives; poll it briefly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spawn(
    dir: &tempfile::TempDir,
    port: u16,
    tls: Option<&Tls>,
) -> anyhow::Result<std::process::Child> {
    let binary = find_mosquitto()
        .context("mosquitto is not installed: run `make deps` (or apt-get install mosquitto)")?;
    let config = dir.path().join("mosquitto.conf");
    let mut text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
    );
    if let Some(tls) = tls {
        if tls.client.is_some() {
            text.push_str("require_certificate true\n");
        }
        let d = dir.path();
        // `user root`: run as root, mosquitto would otherwise drop to its own user before
        // reading the certificates, which sit in this private directory (ignored as non-root).
        text.push_str(&format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nuser root\n",
            d.join("ca.pem").display(),
            d.join("server.pem").display(),
            d.join("server.key").display()
        ));
    }
    std::fs::write(&config, text)?;
    // Its log goes to a file of ours: run as root, mosquitto drops to its own user, which
    // could not open a file in this directory itself.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("mosquitto.log"))?;
    Ok(std::process::Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// A rustls client configuration trusting only the test CA (ring, as in Lattice), with the
/// client certificate when the broker requires one.
fn client_tls(tls: &Tls) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(tls.ca_pem.as_bytes()).expect("the test CA parses");
    roots.add(ca).expect("the test CA is a CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS 1.2 and 1.3")
    .with_root_certificates(roots);
    let config = match &tls.client {
        None => config.with_no_client_auth(),
        Some(client) => config
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).expect("parses")],
                PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).expect("parses"),
            )
            .expect("a certificate and its key"),
    };
    Arc::new(config)
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An MQTT client of the test's own: a sensor publishing, or an actuator subscribing.
#[allow(missing_debug_implementations)] // holds an MQTT client and its event channel
pub struct TestMqtt {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestMqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestMqtt {
    pub async fn connect(broker: &Mosquitto, id: &str) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.port);
        if let Some(tls) = &broker.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                client_tls(tls),
            )));
        }
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        let _ = tx.send(event);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let mut this = Self {
            client,
            events,
            task,
        };
        this.wait(|e| matches!(e, Event::Incoming(Packet::ConnAck(_))))
            .await;
        this
    }

    pub async fn wait(&mut self, want: impl Fn(&Event) -> bool) -> Event {
        tokio::time::timeout(ARRIVE, async {
            loop {
                let event = self.events.recv().await.expect("the event loop runs");
                if want(&event) {
                    return event;
                }
            }
        })
        .await
        .expect("the MQTT event within the time limit")
    }

    pub async fn publish(&self, topic: &str, body: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body.as_bytes().to_vec())
            .await
            .expect("queued");
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queued");
        self.wait(|e| matches!(e, Event::Incoming(Packet::SubAck(_))))
            .await;
    }

    pub async fn next_publish(&mut self) -> (String, String) {
        match self
            .wait(|e| matches!(e, Event::Incoming(Packet::Publish(_))))
            .await
        {
            Event::Incoming(Packet::Publish(p)) => (
                p.topic,
                String::from_utf8(p.payload.to_vec()).expect("UTF-8"),
            ),
            _ => unreachable!("filtered"),
        }
    }
}
