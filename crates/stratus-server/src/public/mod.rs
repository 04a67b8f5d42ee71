//! The public listener: HTTP functions at `{app}.{domain}` and under
//! `/{app}/`, over HTTP/1.1 (keep-alive, pipelining) and HTTP/2 (h2c, or
//! over TLS with ALPN when a certificate is configured).
//!
//! Connections are served by hyper directly, not through a router: the
//! listener's limits (header size and read timeout) are connection
//! settings, and the per-request path is the part of every invocation the
//! gateway adds, so it stays short.

mod cors;
mod handle;
mod proxy;
mod routes;
mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use stratus_logs::Logs;
use stratus_scheduler::Scheduler;
use tokio::net::TcpListener;

pub(crate) use handle::ChannelBody;
pub(crate) use proxy::Clients;
pub(crate) use routes::Directory;

/// The public listener's limits and names.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Apps are reached at `{app}.{domain}` as well as under `/{app}/`.
    pub domain: String,
    /// Largest request body buffered for a function (413 beyond).
    pub max_body_bytes: usize,
    /// Largest request line and headers together (431 beyond).
    pub max_header_bytes: usize,
    /// Longest path and query (414 beyond).
    pub max_url_bytes: usize,
    /// How long a client may take to send a request's headers (and to
    /// finish the TLS handshake).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (408 beyond).
    pub body_timeout: Duration,
    /// Most client connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
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

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            domain: "localhost".to_owned(),
            max_body_bytes: 6 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            max_url_bytes: 8 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: 1024,
            tls: None,
        }
    }
}

/// What every request on the public listener shares.
pub(crate) struct Gateway {
    pub directory: Arc<Directory>,
    pub scheduler: Arc<Scheduler>,
    pub logs: Arc<dyn Logs>,
    pub settings: HttpSettings,
    /// The listener's port, for `x-forwarded-port`.
    pub port: u16,
    /// HTTPS, when a certificate is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Clients that reach services' instances.
    pub proxy: Clients,
}

/// Serves `listener` until `stop` resolves, then lets requests in flight
/// finish.
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.settings.header_timeout)
        .max_buf_size(gateway.settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(gateway.settings.max_header_bytes as u32);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Each connection holds a permit: past the cap, new ones wait in the
    // kernel's backlog instead of each buffering a request body.
    let permits = Arc::new(tokio::sync::Semaphore::new(
        gateway.settings.max_connections.max(1),
    ));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(%err, "public listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = {
            let gateway = gateway.clone();
            hyper::service::service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(handle::handle(&gateway, request, peer).await) }
            })
        };
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = gateway.tls.clone();
        let handshake_timeout = gateway.settings.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let result =
                match tls {
                    None => {
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(err)) => {
                                    tracing::debug!(%peer, %err, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                };
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "public connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

pub(crate) fn addr_ip(addr: SocketAddr) -> String {
    match addr.ip() {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        ip => ip.to_string(),
    }
}
