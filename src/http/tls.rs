//! TLS server configuration: rustls with TLS 1.2 and 1.3 only, HTTP/2 and
//! HTTP/1.1 by ALPN, and a certificate that can be replaced while the
//! server runs (SIGHUP) without touching open connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {detail}")]
    Pem {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// rustls refused the certificate/key pair.
    #[error("invalid TLS certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate and key files, and the pair currently served.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the pair from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = read_pair(cert, key, &provider)?;
        Ok(Arc::new(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again. On success new handshakes use the new pair
    /// (open connections keep theirs); on failure the old pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = read_pair(&self.cert, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The rustls server configuration that resolves through this store.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

fn read_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_err = |what, path: &Path, e: rustls_pki_types::pem::Error| TlsError::Pem {
        what,
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err("certificates", cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("certificates", cert, e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: "certificates",
            path: cert.display().to_string(),
            detail: "no CERTIFICATE block found".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err("the private key", key, e))?;
    let pair = CertifiedKey::from_der(certs, key, provider)?;
    pair.keys_match()?;
    Ok(Arc::new(pair))
}

/// Builds a server configuration from PEM files (no reloading).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    CertStore::load(cert, key)?.server_config()
}
