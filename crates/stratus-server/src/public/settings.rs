//! The public listener's limits and names, and its TLS files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// The public listener's limits and names; each default is written here
/// once, as the flag's.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpSettings {
    /// Apps are reached at APP.DOMAIN on the public listener, as well as under /APP/
    #[arg(long, default_value = "localhost", value_parser = domain)]
    pub domain: String,
    /// Largest HTTP request body buffered for a function, in bytes (413 beyond)
    #[arg(long = "max-body", default_value_t = 6 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest HTTP request line and headers, in bytes (431 beyond)
    #[arg(long, default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Longest HTTP path and query, in bytes (414 beyond)
    #[arg(long, default_value_t = 8 * 1024)]
    pub max_url_bytes: usize,
    /// How long a client may take to send a request's headers (and to
    /// finish the TLS handshake)
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (408 beyond)
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Most client connections the public listener serves at once; more
    /// wait to be accepted
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Serve the public listener over HTTPS with this PEM certificate chain
    /// (HTTP/2 and HTTP/1.1 by ALPN); needs --tls-key
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl HttpSettings {
    /// The certificate and key to serve HTTPS with, when both are set.
    pub fn tls(&self) -> Option<TlsFiles> {
        self.tls_cert
            .clone()
            .zip(self.tls_key.clone())
            .map(|(cert, key)| TlsFiles { cert, key })
    }
}

/// A domain as apps are found under it: lower-case, no dots around it.
fn domain(value: &str) -> Result<String, String> {
    let domain = value.trim_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return Err("the domain is empty; give one such as localhost or apps.example.com".into());
    }
    Ok(domain)
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads the files into a server configuration offering HTTP/2 and
    /// HTTP/1.1 by ALPN.
    pub fn load(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let certs = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| {
                format!(
                    "cannot read the certificate chain {} (PEM)",
                    self.cert.display()
                )
            })?;
        if certs.is_empty() {
            anyhow::bail!("{} holds no PEM certificate", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("cannot read the private key {} (PEM)", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS set-up")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .with_context(|| {
                format!(
                    "the key {} does not go with the certificate {}",
                    self.key.display(),
                    self.cert.display()
                )
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
