//! The public listener: HTTP functions at `{app}.{domain}` and under
//! `/{app}/`, over HTTP/1.1 (keep-alive, pipelining) and HTTP/2 (h2c, or
//! over TLS with ALPN when a certificate is configured).
//!
//! Connections are served by hyper directly, not through a router: the
//! listener's limits (header size and read timeout) are connection
//! settings, and the per-request path is the part of every invocation the
//! gateway adds, so it stays short.
//!
//! Within: `handle` takes a request from host or prefix to the route and
//! hands it to `function` (an invocation) or `proxy` (a service); every
//! answer of the gateway's own is a `GatewayError` (`error`); the
//! headers a proxy adds are written in `forwarded`; the data plane is
//! reached through the `Backend` trait of `gateway`.

mod clients;
mod cors;
mod error;
mod forwarded;
mod function;
mod gateway;
mod handle;
mod proxy;
mod routes;
mod settings;
#[cfg(test)]
mod tests;
mod websocket;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub(crate) use clients::Clients;
pub(crate) use function::ChannelBody;
pub(crate) use gateway::Gateway;
pub(crate) use routes::Directory;
pub use settings::{HttpSettings, TlsFiles};

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
                async move {
                    let request = request.map(Body::new);
                    Ok::<_, Infallible>(handle::handle(&gateway, request, peer).await)
                }
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
