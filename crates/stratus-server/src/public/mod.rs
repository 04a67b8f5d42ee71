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

mod budget;
mod clients;
pub(crate) mod cors;
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

use std::sync::Arc;

use axum::body::Body;
use tokio::net::TcpListener;

pub(crate) use budget::BodyBudget;
pub(crate) use clients::Clients;
pub(crate) use function::ChannelBody;
pub(crate) use gateway::{ClientApi, Gateway, ObjectApi, Probes, Webhooks};
pub(crate) use routes::Directory;
pub use settings::{HttpSettings, TlsFiles};

/// Serves `listener` until `stop` resolves, then lets requests in flight
/// finish.
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()>,
) {
    let limits = crate::listener::Limits {
        // The gateway answers oversized heads itself, as its other errors.
        head_slack: true,
        ..gateway.settings.limits(gateway.settings.max_connections)
    };
    let tls = gateway.tls.clone();
    crate::listener::serve("public", listener, limits, tls, stop, move |peer| {
        let gateway = gateway.clone();
        move |request: hyper::Request<hyper::body::Incoming>| {
            let gateway = gateway.clone();
            async move { handle::handle(&gateway, request.map(Body::new), peer).await }
        }
    })
    .await
}
