//! The rustls client configuration of a TLS broker (`mqtts://`): the CA a link names
//! (`tls_ca`) or the system's roots, and an optional client certificate. Ring is the crypto
//! provider, as everywhere else in Lattice, so no second one is built.

use std::path::Path;
use std::sync::Arc;

use lattice_provider_sdk::ProviderError;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::TlsFiles;

fn refused(what: &str, path: &Path, why: impl std::fmt::Display) -> ProviderError {
    ProviderError::Other(format!(
        "MQTT TLS: reading {what} `{}`: {why}; check the link's config (a PEM file the provider can read)",
        path.display()
    ))
}

fn certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ProviderError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| refused(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(what, path, e))?;
    if certs.is_empty() {
        return Err(refused(what, path, "no CERTIFICATE block in it"));
    }
    Ok(certs)
}

/// The trusted roots: the link's CA file, or else the system's.
fn roots(files: &TlsFiles) -> Result<RootCertStore, ProviderError> {
    let mut roots = RootCertStore::empty();
    match &files.ca {
        Some(path) => {
            for cert in certificates("the CA (`tls_ca`)", path)? {
                roots
                    .add(cert)
                    .map_err(|e| refused("the CA (`tls_ca`)", path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "a system root certificate could not be loaded");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(ProviderError::Other(
                    "MQTT TLS: the system has no root certificates to verify the broker with; \
                     name the broker's CA in the link's `tls_ca` (a PEM file)"
                        .into(),
                ));
            }
        }
    }
    Ok(roots)
}

/// The client configuration for a broker with `files`.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, ProviderError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProviderError::Other(format!("MQTT TLS: {e}")))?
        .with_root_certificates(roots(files)?);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates("the client certificate (`tls_cert`)", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| refused("the client key (`tls_key`)", key, e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                ProviderError::Other(format!(
                    "MQTT TLS: the client certificate (`tls_cert`) and key (`tls_key`) do not make a pair: {e}"
                ))
            })?
        }
    };
    Ok(Arc::new(config))
}
