//! OCI registries: pulling components from them and publishing components to them, in the
//! media types wasmCloud and wash use (config `application/vnd.wasm.config.v0+json`, one layer
//! `application/wasm`; wasmCloud's older layer type is read too).
//!
//! Only the operator's CLI talks to a registry (`lattice push --oci`, `lattice pull`, and
//! `lattice ctl deploy` for manifests whose images are OCI references): what it pulls is checked
//! and stored in the lattice's object store by digest, and hosts fetch from there alone, so a
//! gateway never needs a registry or its credentials.
//!
//! Credentials, first found wins: `--registry-token` (bearer), `--registry-user` with
//! `--registry-password` (basic), those `docker login` stored (`$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`, credential helpers included), else anonymous. Registries speak HTTPS
//! unless named with `--insecure-registry`.

use anyhow::{Context, anyhow};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::args::RegistryArgs;

/// The config media type of a wasm component artifact (wasm-pkg's, which wash pushes).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of a wasm component (wasm-pkg's, which wash pushes).
pub const WASM_MEDIA_TYPE: &str = "application/wasm";
/// wasmCloud's older layer media type for wasm modules and components, still read.
pub const LEGACY_WASM_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// A client for OCI registries, with the access `RegistryArgs` gives.
pub struct Oci {
    client: Client,
    args: RegistryArgs,
}

impl std::fmt::Debug for Oci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oci")
            .field("insecure", &self.args.insecure)
            .finish_non_exhaustive()
    }
}

/// A parsed OCI reference and the text it was written as.
#[derive(Debug, Clone)]
pub struct OciRef {
    /// The reference as written (with any `oci://`).
    pub written: String,
    reference: Reference,
}

impl OciRef {
    /// Parses `registry/org/name:tag`, `...@sha256:<hex>`, with or without `oci://`.
    pub fn parse(written: &str) -> anyhow::Result<Self> {
        let bare = written.strip_prefix("oci://").unwrap_or(written);
        let reference: Reference = bare.parse().map_err(|e| {
            anyhow!(
                "`{written}` is not an OCI reference ({e}); write `registry/org/name:tag` or \
                 `registry/org/name@sha256:<hex>`"
            )
        })?;
        Ok(Self {
            written: written.to_string(),
            reference,
        })
    }

    /// The registry's host (and port).
    pub fn registry(&self) -> &str {
        self.reference.resolve_registry()
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.written)
    }
}

impl Oci {
    /// A client that reaches the registries in `args.insecure` over plain HTTP, every other over
    /// HTTPS.
    pub fn new(args: &RegistryArgs) -> Self {
        // reqwest is built without a crypto provider of its own: use ring, as the workspace's
        // rustls does (an error only means a provider is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(args.insecure.clone()),
            ..Default::default()
        };
        Self {
            client: Client::new(config),
            args: args.clone(),
        }
    }

    /// The credentials for `image`'s registry.
    fn auth(&self, image: &OciRef) -> anyhow::Result<RegistryAuth> {
        let a = &self.args;
        if let Some(token) = &a.registry_token {
            return Ok(RegistryAuth::Bearer(token.clone()));
        }
        match (&a.registry_user, &a.registry_password) {
            (Some(user), Some(password)) => {
                return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
            }
            (Some(_), None) | (None, Some(_)) => anyhow::bail!(
                "--registry-user and --registry-password go together (for {image}); give both, \
                 or neither to use `docker login`'s credentials"
            ),
            (None, None) => {}
        }
        use docker_credential::{CredentialRetrievalError as E, DockerCredential};
        // `docker login` files Docker Hub's credentials under its v1 URL.
        let server = match image.registry() {
            "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
                "https://index.docker.io/v1/"
            }
            other => other,
        };
        match docker_credential::get_credential(server) {
            Ok(DockerCredential::UsernamePassword(user, password)) => {
                Ok(RegistryAuth::Basic(user, password))
            }
            Ok(DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
            Err(E::ConfigNotFound | E::ConfigReadError | E::NoCredentialConfigured) => {
                Ok(RegistryAuth::Anonymous)
            }
            Err(e) => Err(anyhow!(
                "reading the docker credentials for {} (for {image}): {e}; fix the docker \
                 config, or pass --registry-user/--registry-password or --registry-token",
                image.registry()
            )),
        }
    }

    /// Pulls the component `image` names: the bytes of its one wasm layer.
    pub async fn pull(&self, image: &OciRef) -> anyhow::Result<Vec<u8>> {
        let auth = self.auth(image)?;
        let data = self
            .client
            .pull(
                &image.reference,
                &auth,
                vec![WASM_MEDIA_TYPE, LEGACY_WASM_MEDIA_TYPE],
            )
            .await
            .map_err(|e| self.explain(image, "pulling", e))?;
        let mut layers = data.layers.into_iter();
        match (layers.next(), layers.next()) {
            (Some(layer), None) => Ok(layer.data.to_vec()),
            _ => anyhow::bail!(
                "{image} is not a wasm component artifact: it has several layers; publish the \
                 component alone (`lattice push --oci` or `wash push`)"
            ),
        }
    }

    /// Publishes `component` as `image`; returns the pinned reference,
    /// `registry/repository@sha256:<manifest digest>`.
    pub async fn push(&self, image: &OciRef, component: &[u8]) -> anyhow::Result<String> {
        let auth = self.auth(image)?;
        let layer = ImageLayer::new(component.to_vec(), WASM_MEDIA_TYPE.to_string(), None);
        // The CNCF wasm artifact config (as wash writes it), without the optional WIT summary.
        let config = serde_json::json!({
            "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [lattice_protocol::digest::Digest::of(component).to_string()],
        });
        let config = Config::new(
            serde_json::to_vec(&config).context("encoding the artifact's config")?,
            CONFIG_MEDIA_TYPE.to_string(),
            None,
        );
        self.client
            .push(&image.reference, &[layer], config, &auth, None)
            .await
            .map_err(|e| self.explain(image, "pushing", e))?;
        let digest = self
            .client
            .fetch_manifest_digest(&image.reference, &auth)
            .await
            .map_err(|e| self.explain(image, "reading back", e))?;
        let r = &image.reference;
        Ok(format!("{}/{}@{digest}", r.registry(), r.repository()))
    }

    /// A registry error said as what to do about it.
    fn explain(&self, image: &OciRef, doing: &str, e: OciDistributionError) -> anyhow::Error {
        let host = image.registry();
        let credentials = format!(
            "give credentials with --registry-user and --registry-password \
             (LATTICE_REGISTRY_USER, LATTICE_REGISTRY_PASSWORD), --registry-token \
             (LATTICE_REGISTRY_TOKEN), or `docker login {host}`"
        );
        match &e {
            OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::UnauthorizedError { .. } => {
                anyhow!(
                    "{doing} {image}: registry {host} refused the credentials ({e}); {credentials}"
                )
            }
            OciDistributionError::ServerError {
                code: 401 | 403, ..
            } => {
                anyhow!("{doing} {image}: registry {host} refused access ({e}); {credentials}")
            }
            OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
                let plain = if self.args.insecure.iter().any(|h| h == host) {
                    String::new()
                } else {
                    format!("; if it serves plain HTTP, pass --insecure-registry {host}")
                };
                anyhow!(
                    "{doing} {image}: cannot reach registry {host} ({}){plain}; check the \
                     address and that the registry is running",
                    error_chain(r)
                )
            }
            OciDistributionError::ImageManifestNotFoundError(_) => anyhow!(
                "{doing} {image}: registry {host} has no such image; check the name and tag \
                 (`lattice push --oci {image} FILE.wasm` publishes one)"
            ),
            OciDistributionError::IncompatibleLayerMediaTypeError(t) => anyhow!(
                "{image} is not a wasm component artifact (its layer is `{t}`, not \
                 `{WASM_MEDIA_TYPE}`); publish the component with `lattice push --oci` or \
                 `wash push`"
            ),
            _ => anyhow!("{doing} {image} (registry {host}): {}", error_chain(&e)),
        }
    }
}

/// An error with its causes, for errors (reqwest's) whose text alone says little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
