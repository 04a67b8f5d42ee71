//! Requests for services: proxied to one of the service's instances.
//!
//! Bodies stream both ways without buffering, so uploads of any size, SSE
//! and long downloads pass through as they come. gRPC requests go to the
//! instance over HTTP/2 (h2c, prior knowledge), with trailers; everything
//! else over HTTP/1.1 keep-alive connections pooled per instance. A
//! WebSocket upgrade gets a connection of its own, and once both sides
//! have switched protocols the bytes are relayed until either side ends
//! the session or the instance drains.
//!
//! Each request holds a lease on its instance until its response body has
//! been sent (or the WebSocket session ends), which is what the service's
//! concurrency counts and what draining waits for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use stratus_logs::LogStream;
use stratus_scheduler::{Lease, Service, ServiceError};

use super::handle::{REQUEST_ID, reply};
use super::{Gateway, addr_ip};

/// How long both sides of a WebSocket handshake may take to hand over
/// their connections after the `101`.
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The HTTP clients that reach instances.
pub(crate) struct Clients {
    http1: Client<HttpConnector, IdleBody>,
    /// One multiplexed HTTP/2 connection per instance, made on first use.
    /// (hyper's pooled client would take the `:authority` from the
    /// instance's address; the app must see the client's.)
    h2c: std::sync::Mutex<HashMap<SocketAddr, http2::SendRequest<IdleBody>>>,
}

impl Clients {
    pub fn new() -> Clients {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let http1 = Client::builder(TokioExecutor::new())
            // Below the keep-alive of common app servers (Node's is 5 s), so
            // the pool seldom picks a connection the app is closing.
            .pool_idle_timeout(std::time::Duration::from_secs(4))
            .build(connector.clone());
        Clients {
            http1,
            h2c: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn forget_h2c(&self, addr: SocketAddr) {
        self.h2c
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
    }

    /// A sender on the HTTP/2 connection to `addr`, connecting when there
    /// is none or it closed.
    async fn h2c(&self, addr: SocketAddr) -> Result<http2::SendRequest<IdleBody>, String> {
        let cached = self
            .h2c
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .filter(|s| !s.is_closed())
            .cloned();
        if let Some(sender) = cached {
            return Ok(sender);
        }
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| error_chain(&e))?;
        tokio::spawn(connection);
        let mut map = self.h2c.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| !s.is_closed());
        map.insert(addr, sender.clone());
        Ok(sender)
    }
}

/// What the gateway knows of a request for a service.
pub(crate) struct Forward<'a> {
    pub app: &'a str,
    pub service: &'a str,
    /// The path within the app, and the query.
    pub path: &'a str,
    pub prefix: Option<&'a str>,
    /// The host the client addressed.
    pub host: &'a str,
    pub peer: SocketAddr,
    pub request_id: &'a str,
}

/// Headers that belong to one connection, not to the request (RFC 9110
/// 7.6.1): never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub(crate) async fn forward(
    gateway: &Gateway,
    f: Forward<'_>,
    mut parts: Parts,
    body: Incoming,
) -> Response<Body> {
    let started = Instant::now();
    let lease = match lease(gateway, f.app, f.service).await {
        Ok(lease) => lease,
        Err(response) => return response(f.request_id),
    };
    let (service, lease) = lease;
    let websocket = is_websocket(&parts.headers);
    // `application/grpc`, `+proto` and the like; gRPC-Web is HTTP/1.1.
    let grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']));
    let on_upgrade = websocket
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let method = parts.method.clone();
    let path = f.path.to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let path_and_query = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let te_trailers = parts
        .headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("trailers"));
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    if parts.version == hyper::Version::HTTP_2 && !grpc {
        // HTTP/2 clients send each cookie as a field of its own; an
        // HTTP/1.1 request carries one `Cookie` (RFC 9113 8.2.3).
        let cookies: Vec<String> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        if cookies.len() > 1
            && let Ok(joined) = HeaderValue::from_str(&cookies.join("; "))
        {
            headers.insert(header::COOKIE, joined);
        }
    }
    // `Expect` is answered here: hyper sends `100 Continue` when the body
    // is first read, which is when it starts flowing to the instance.
    headers.remove(header::EXPECT);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    add_forwarded(gateway, &mut headers, &f);
    // HTTP/1.1 goes through the pooled client, which connects to the
    // URI's authority; HTTP/2 names the client's authority in the URI.
    let authority = if grpc {
        f.host.to_owned()
    } else {
        lease.addr().to_string()
    };
    let Ok(uri) = format!("http://{authority}{path_and_query}").parse::<Uri>() else {
        return reply(
            StatusCode::BAD_REQUEST,
            f.request_id,
            "the request path is not valid",
        );
    };

    let record = Record {
        service: service.clone(),
        instance: lease.instance_id().to_owned(),
        request_id: f.request_id.to_owned(),
        method: method.to_string(),
        path: path.clone(),
        started,
        status: 0,
    };

    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = path_and_query.parse().unwrap_or_default();
        *request.headers_mut() = headers;
        return upgrade(request, lease, on_upgrade, record).await;
    }

    let mut request = Request::new(IdleBody::new(body, gateway.settings.body_timeout));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let died = lease.died();
    let answer = tokio::select! {
        answer = send(gateway, grpc, lease.addr(), request) => answer,
        () = died => Err("the service instance exited before it answered".to_owned()),
    };
    let mut record = record;
    match answer {
        Ok(response) => {
            let (mut parts, incoming) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            record.status = parts.status.as_u16();
            Response::from_parts(
                parts,
                Body::new(LeaseBody {
                    inner: incoming,
                    lease: Some(lease),
                    record: Some(record),
                }),
            )
        }
        Err(err) => {
            // The instance's exit is noticed a moment after its
            // connections break; waiting for it here also keeps the next
            // request from being sent to it.
            let dead = tokio::time::timeout(std::time::Duration::from_millis(500), lease.died())
                .await
                .is_ok();
            if err.contains(BodyStalled::MESSAGE) {
                drop(lease);
                record.status = StatusCode::REQUEST_TIMEOUT.as_u16();
                record.finish(None);
                return reply(
                    StatusCode::REQUEST_TIMEOUT,
                    f.request_id,
                    format!(
                        "the request body stalled for {} s",
                        gateway.settings.body_timeout.as_secs()
                    ),
                );
            }
            let message = if dead {
                "the service instance exited before it answered".to_owned()
            } else {
                format!("the service instance did not answer: {err}")
            };
            drop(lease);
            failed(record, f.request_id, message)
        }
    }
}

/// Sends `request` to the instance at `addr`.
async fn send(
    gateway: &Gateway,
    grpc: bool,
    addr: SocketAddr,
    mut request: Request<IdleBody>,
) -> Result<Response<Incoming>, String> {
    if grpc {
        *request.version_mut() = hyper::Version::HTTP_2;
        // `:authority` carries the host.
        request.headers_mut().remove(header::HOST);
        let mut sender = gateway.proxy.h2c(addr).await?;
        let answer = sender.send_request(request).await;
        if answer.is_err() {
            // A connection the app closed (GOAWAY) is not used again.
            gateway.proxy.forget_h2c(addr);
        }
        answer.map_err(|e| error_chain(&e))
    } else {
        gateway
            .proxy
            .http1
            .request(request)
            .await
            .map_err(|e| error_chain(&e))
    }
}

type Early = Box<dyn FnOnce(&str) -> Response<Body> + Send>;

/// A lease on an instance of the live version of the service.
async fn lease(gateway: &Gateway, app: &str, name: &str) -> Result<(Arc<Service>, Lease), Early> {
    // A deploy may retire the version a request waits on: it is routed
    // again, to the new one.
    for _ in 0..3 {
        let Some(service) = gateway.scheduler.service(app, name) else {
            break;
        };
        match service.acquire().await {
            Ok(lease) => return Ok((service, lease)),
            Err(ServiceError::Retired) => continue,
            Err(ServiceError::Throttled(name, retry)) => {
                return Err(Box::new(move |request_id| {
                    let mut response = reply(
                        StatusCode::TOO_MANY_REQUESTS,
                        request_id,
                        format!("service {name} is at capacity; retry later"),
                    );
                    if let Ok(value) = HeaderValue::from_str(&retry.as_secs().max(1).to_string()) {
                        response.headers_mut().insert(header::RETRY_AFTER, value);
                    }
                    response
                }));
            }
            Err(err @ ServiceError::Unavailable { .. }) => {
                let message = format!("{err}; `stratus status` and `stratus logs` say more");
                return Err(Box::new(move |request_id| {
                    let mut response = reply(StatusCode::SERVICE_UNAVAILABLE, request_id, message);
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    response
                }));
            }
        }
    }
    let name = name.to_owned();
    Err(Box::new(move |request_id| {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            request_id,
            format!("service {name} is being replaced; retry"),
        )
    }))
}

fn is_websocket(headers: &HeaderMap) -> bool {
    let has = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// `X-Forwarded-*`, `Forwarded` and the request id, as a reverse proxy
/// in front of the app sets them; the client's own are replaced, except
/// `X-Forwarded-For`, which is appended to.
fn add_forwarded(gateway: &Gateway, headers: &mut HeaderMap, f: &Forward<'_>) {
    let peer = addr_ip(f.peer);
    let proto = if gateway.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {peer}"),
        None => peer.clone(),
    };
    let node = if f.peer.is_ipv6() && f.peer.ip().to_string() == peer {
        format!("\"[{peer}]\"")
    } else {
        peer
    };
    let forwarded = format!("for={node};host=\"{}\";proto={proto}", f.host);
    headers.remove("x-forwarded-prefix");
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("host", f.host);
    set("x-forwarded-for", &forwarded_for);
    set("x-forwarded-proto", proto);
    set("x-forwarded-host", f.host);
    set("x-forwarded-port", &gateway.port.to_string());
    set("forwarded", &forwarded);
    set(REQUEST_ID, f.request_id);
    if let Some(prefix) = f.prefix {
        set("x-forwarded-prefix", prefix);
    }
}

/// A WebSocket handshake on a connection of its own; after `101`, the
/// session is relayed in a task that holds the lease.
async fn upgrade(
    request: Request<Incoming>,
    lease: Lease,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    mut record: Record,
) -> Response<Body> {
    let request_id = record.request_id.clone();
    let Some(client_upgrade) = on_upgrade else {
        return failed(
            record,
            &request_id,
            "this connection cannot switch protocols (WebSocket needs HTTP/1.1)".into(),
        );
    };
    let tcp = match tokio::net::TcpStream::connect(lease.addr()).await {
        Ok(tcp) => tcp,
        Err(err) => {
            return failed(
                record,
                &request_id,
                format!("the service instance did not answer: {err}"),
            );
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
            Ok(pair) => pair,
            Err(err) => return failed(record, &request_id, format!("the service instance: {err}")),
        };
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(err) => {
            return failed(
                record,
                &request_id,
                format!("the service instance did not answer: {}", error_chain(&err)),
            );
        }
    };
    record.status = response.status().as_u16();
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The app refused the upgrade: its answer goes back as it is.
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Response::from_parts(
            parts,
            Body::new(LeaseBody {
                inner: incoming,
                lease: Some(lease),
                record: Some(record),
            }),
        );
    }
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let (parts, _) = response.into_parts();
    tokio::spawn(async move {
        let upgraded = tokio::time::timeout(UPGRADE_TIMEOUT, async {
            tokio::join!(client_upgrade, upstream_upgrade)
        })
        .await;
        let (client, upstream) = match upgraded {
            Ok((Ok(client), Ok(upstream))) => (client, upstream),
            _ => {
                drop(lease);
                record.finish(Some(serde_json::json!({
                    "end": "the connection did not switch protocols",
                })));
                return;
            }
        };
        let end = super::websocket::relay(
            TokioIo::new(client),
            TokioIo::new(upstream),
            lease.ending(),
            std::time::Duration::ZERO,
            stratus_scheduler::CLOSE_WAIT,
        )
        .await;
        drop(lease);
        record.finish(Some(serde_json::json!({
            "end": end.to_string(),
            "bytes_in": end.client_to_upstream,
            "bytes_out": end.upstream_to_client,
        })));
    });
    // The 101 keeps the app's headers (Sec-WebSocket-Accept, protocol,
    // extensions), Connection and Upgrade included.
    Response::from_parts(parts, Body::empty())
}

/// An answer of 502 for a request the instance did not answer.
fn failed(mut record: Record, request_id: &str, message: String) -> Response<Body> {
    record.status = StatusCode::BAD_GATEWAY.as_u16();
    record.service.emit(
        &record.instance,
        LogStream::Platform,
        format!("{request_id}: {message}"),
    );
    record.finish(None);
    reply(StatusCode::BAD_GATEWAY, request_id, message)
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The log record of one proxied request, written when it ends.
struct Record {
    service: Arc<Service>,
    instance: String,
    request_id: String,
    method: String,
    path: String,
    started: Instant,
    status: u16,
}

impl Record {
    fn finish(self, more: Option<serde_json::Value>) {
        if !self.service.config.spec.access_log && self.status < 500 {
            return;
        }
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let mut fields = serde_json::json!({
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": (ms * 1000.0).round() / 1000.0,
        });
        if let (Some(fields), Some(serde_json::Value::Object(more))) =
            (fields.as_object_mut(), more)
        {
            fields.extend(more);
        }
        self.service.log(
            &self.instance,
            LogStream::Request,
            Some(self.request_id),
            format!("{} {} {} {ms:.1} ms", self.method, self.path, self.status),
            Some(fields),
        );
    }
}

/// The instance's response body, holding the request's lease until it has
/// been sent, and writing the request's record then.
struct LeaseBody {
    inner: Incoming,
    lease: Option<Lease>,
    record: Option<Record>,
}

impl LeaseBody {
    fn end(&mut self) {
        self.lease.take();
        if let Some(record) = self.record.take() {
            record.finish(None);
        }
    }
}

impl Drop for LeaseBody {
    fn drop(&mut self) {
        self.end();
    }
}

impl HttpBody for LeaseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.end();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's request body on its way to the instance, cut off when it
/// stalls for longer than `--body-timeout`: a slow upload holds a lease, so
/// a few stalled clients could otherwise pin a service's capacity.
pub(crate) struct IdleBody {
    inner: Incoming,
    idle: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl IdleBody {
    fn new(inner: Incoming, idle: std::time::Duration) -> IdleBody {
        IdleBody {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

#[derive(Debug)]
struct BodyStalled;

impl BodyStalled {
    const MESSAGE: &str = "the request body stalled";
}

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::MESSAGE)
    }
}

impl std::error::Error for BodyStalled {}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
