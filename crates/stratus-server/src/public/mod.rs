//! The public listener: HTTP functions at `{app}.{domain}` and under
//! `/{app}/`, over HTTP/1.1 (keep-alive, pipelining) and HTTP/2 (h2c).
//!
//! Connections are served by hyper directly, not through a router: the
//! listener's limits (header size and read timeout) are connection
//! settings, and the per-request path is the part of every invocation the
//! gateway adds, so it stays short.

mod cors;
mod handle;
mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use stratus_scheduler::{LogSender, Scheduler};
use tokio::net::TcpListener;

pub(crate) use handle::ChannelBody;
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
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            domain: "localhost".to_owned(),
            max_body_bytes: 6 * 1024 * 1024,
            max_header_bytes: 32 * 1024,
            max_url_bytes: 8 * 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// What every request on the public listener shares.
pub(crate) struct Gateway {
    pub directory: Arc<Directory>,
    pub scheduler: Arc<Scheduler>,
    pub logs: LogSender,
    pub settings: HttpSettings,
    /// The listener's port, for `x-forwarded-port`.
    pub port: u16,
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
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
        let gateway = gateway.clone();
        let service = hyper::service::service_fn(move |request| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(handle::handle(&gateway, request, peer).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
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
