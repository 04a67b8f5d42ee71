//! The public listener's limits and names, and its TLS files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// The public listener's limits and names; each default is written here
/// once, as the flag's. The timeouts and the per-address cap hold for the
/// admin listener and the platform API too.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpSettings {
    /// Apps are reached at APP.DOMAIN on the public listener, as well as under /APP/
    #[arg(long, default_value = "localhost", value_parser = domain)]
    pub domain: String,
    /// Largest HTTP request body buffered for a function, in bytes (413 beyond)
    #[arg(long = "max-body", default_value_t = 6 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most bytes of request bodies buffered for functions at once, across
    /// every connection (503 with Retry-After beyond)
    #[arg(long = "max-buffered-bodies", default_value_t = 256 * 1024 * 1024)]
    pub max_buffered_body_bytes: usize,
    /// Largest HTTP request line and headers, in bytes (431 beyond)
    #[arg(long, default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Longest HTTP path and query, in bytes (414 beyond)
    #[arg(long, default_value_t = 8 * 1024)]
    pub max_url_bytes: usize,
    /// How long a client may take to send a request's headers (and to
    /// finish the TLS handshake); a new connection must send its first
    /// request within this, on every listener
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in flight, on
    /// every listener
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Most connections one client address may hold on the public and
    /// admin listeners (0: no cap); more are closed as they arrive. Raise it
    /// behind a proxy that connects from one address
    #[arg(long, default_value_t = 256)]
    pub max_connections_per_address: usize,
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
    /// Serve the admin API over HTTPS with this PEM certificate chain;
    /// needs --admin-tls-key (the CLI trusts it with --ca or STRATUS_CA)
    #[arg(long, requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,
    /// The PEM private key of --admin-tls-cert
    #[arg(long, requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
}

impl HttpSettings {
    /// A listener's limits: these settings with `max_connections`.
    pub(crate) fn limits(&self, max_connections: usize) -> crate::listener::Limits {
        crate::listener::Limits {
            max_connections,
            per_address: self.max_connections_per_address,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_header_bytes: self.max_header_bytes,
            head_slack: false,
        }
    }

    /// The certificate and key to serve the admin API over HTTPS with,
    /// when both are set.
    pub fn admin_tls(&self) -> Option<TlsFiles> {
        self.admin_tls_cert
            .clone()
            .zip(self.admin_tls_key.clone())
            .map(|(cert, key)| TlsFiles { cert, key })
    }

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
