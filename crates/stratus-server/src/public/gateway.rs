//! What every request on the public listener shares, and the seam
//! through which it reaches the data plane.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use stratus_logs::Logs;
use stratus_scheduler::{
    Invocation, InvokeError, InvokeOutcome, Lease, Scheduler, Service, ServiceError,
};

use super::budget::BodyBudget;
use super::clients::Clients;
use super::routes::Directory;
use super::settings::HttpSettings;

/// What the gateway needs of the data plane: functions to invoke and
/// services to lease instances of. The scheduler in the server; a fake in
/// the gateway's tests.
#[async_trait]
pub(crate) trait Backend: Send + Sync {
    async fn invoke(
        &self,
        app: &str,
        function: &str,
        invocation: Invocation,
    ) -> Result<InvokeOutcome, InvokeError>;

    /// A lease on an instance of the live version of `app`'s service
    /// `name`; `None` when there is no such service.
    async fn lease(
        &self,
        app: &str,
        name: &str,
    ) -> Option<Result<(Arc<Service>, Lease), ServiceError>>;

    /// The largest result a function may return.
    fn max_response_bytes(&self) -> usize;
}

#[async_trait]
impl Backend for Scheduler {
    async fn invoke(
        &self,
        app: &str,
        function: &str,
        invocation: Invocation,
    ) -> Result<InvokeOutcome, InvokeError> {
        Scheduler::invoke(self, app, function, invocation).await
    }

    async fn lease(
        &self,
        app: &str,
        name: &str,
    ) -> Option<Result<(Arc<Service>, Lease), ServiceError>> {
        let service = self.service(app, name)?;
        Some(service.acquire().await.map(|lease| (service, lease)))
    }

    fn max_response_bytes(&self) -> usize {
        Scheduler::max_response_bytes(self)
    }
}

/// A request matched to a route of an app.
pub(crate) struct Routed<'a> {
    pub app: &'a str,
    /// The function or service the route leads to.
    pub target: &'a str,
    /// The path within the app.
    pub path: &'a str,
    /// The prefix the app was reached under (`/APP`), if any.
    pub prefix: Option<&'a str>,
    pub peer: SocketAddr,
    pub request_id: &'a str,
}

/// What every request on the public listener shares.
pub(crate) struct Gateway {
    pub directory: Arc<Directory>,
    pub backend: Arc<dyn Backend>,
    pub logs: Arc<dyn Logs>,
    pub settings: HttpSettings,
    /// The listener's port, for `x-forwarded-port`.
    pub port: u16,
    /// HTTPS, when a certificate is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Clients that reach services' instances.
    pub proxy: Clients,
    /// The bytes of request bodies buffered for functions at once.
    pub bodies: BodyBudget,
    /// Where pushes to apps' git webhooks go.
    pub webhooks: Option<Arc<dyn Webhooks>>,
    /// What answers `/healthz` and `/readyz` for requests that address no
    /// app by host.
    pub probes: Option<Arc<dyn Probes>>,
    /// Where proxied requests' spans go.
    pub tracer: stratus_trace::Tracer,
    /// The S3 API, for requests to `s3.DOMAIN` and `BUCKET.s3.DOMAIN`.
    pub objects: Option<Arc<dyn ObjectApi>>,
    /// What `/_stratus/` of each app's host serves to its clients.
    pub clients: Option<Arc<dyn ClientApi>>,
}

/// The platform's own paths on an app's host, `/_stratus/...` (the client
/// SDK, sign-in, the document database, files and calls).
#[async_trait]
pub(crate) trait ClientApi: Send + Sync {
    /// Answers `request` (its path the one within the app) for `app`.
    async fn serve(
        &self,
        app: &str,
        peer: std::net::SocketAddr,
        request: axum::http::Request<axum::body::Body>,
    ) -> axum::http::Response<axum::body::Body>;
}

/// The S3 API, served for hosts under `s3.DOMAIN`.
#[async_trait]
pub(crate) trait ObjectApi: Send + Sync {
    /// Answers `request`; `bucket` is the bucket its host names, if any.
    async fn serve(
        &self,
        request: axum::http::Request<axum::body::Body>,
        bucket: Option<String>,
    ) -> axum::http::Response<axum::body::Body>;
}

/// Load balancers' probes of this node.
#[async_trait]
pub(crate) trait Probes: Send + Sync {
    /// The status and JSON body of probe `name` (`healthz`, `readyz`),
    /// with the request's query; `None` for another name.
    async fn probe(
        &self,
        name: &str,
        query: Option<&str>,
    ) -> Option<(axum::http::StatusCode, serde_json::Value)>;
}

/// Git hosts' push events, at an app's `/_stratus/webhooks/git`.
#[async_trait]
pub(crate) trait Webhooks: Send + Sync {
    /// Judges a push to `app`'s webhook (its signature, event and ref) and
    /// starts its deploy; the status and JSON body to answer with.
    async fn git_push(
        &self,
        app: &str,
        headers: &axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> (axum::http::StatusCode, serde_json::Value);
}

impl Gateway {
    /// The scheme clients reached the listener with.
    pub fn proto(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}
