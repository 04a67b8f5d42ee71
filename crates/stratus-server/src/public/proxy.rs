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
use hyper_util::rt::TokioIo;
use stratus_logs::LogStream;
use stratus_scheduler::{Lease, Service, ServiceError};

use super::clients::{IdleBody, SendError, error_chain};
use super::error::GatewayError;
use super::forwarded::{self, Audience, Forwarding};
use super::gateway::{Gateway, Routed};

/// How long both sides of a WebSocket handshake may take to hand over
/// their connections after the `101`.
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request routed to a service.
pub(crate) struct Forward<'a> {
    pub to: Routed<'a>,
    /// The host (and port) the client addressed, as it wrote it.
    pub host: &'a str,
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

/// Forwards the request to an instance of the service and relays its
/// answer.
pub(crate) async fn forward(
    gateway: &Gateway,
    forward: Forward<'_>,
    mut parts: Parts,
    body: Body,
) -> Result<Response<Body>, GatewayError> {
    let (f, to) = (&forward, &forward.to);
    let started = Instant::now();
    let (service, lease) = lease(gateway, to.app, to.target).await?;
    let websocket = is_websocket(&parts.headers);
    // `application/grpc`, `+proto` and the like; gRPC-Web is HTTP/1.1.
    let grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']));
    // HTTP/2 to the instance: for gRPC, and for every request of a
    // service that speaks h2c (WebSocket upgrades aside).
    let h2 = grpc
        || (!websocket && service.config.spec.protocol == stratus_manifest::ServiceProtocol::H2c);
    let on_upgrade = websocket
        .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
        .flatten();
    let method = parts.method.clone();
    let path = to.path.to_owned();
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
    if parts.version == hyper::Version::HTTP_2 && !h2 {
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
    // The service sees its own place in the trace: the request's span.
    let parent = crate::traces::parent_of(&headers);
    let trace = stratus_trace::Tracer::child_or_root(parent.as_ref());
    if let Ok(value) = HeaderValue::from_str(&trace.traceparent()) {
        headers.insert("traceparent", value);
    }
    forwarded::apply(
        &mut headers,
        &Forwarding {
            peer: to.peer,
            proto: gateway.proto(),
            port: gateway.port,
            authority: Some(f.host),
            prefix: to.prefix,
        },
        Audience::Service {
            request_id: to.request_id,
        },
    );
    // HTTP/1.1 goes through the pooled client, which connects to the
    // URI's authority; HTTP/2 names the client's authority in the URI.
    let authority = if h2 {
        f.host.to_owned()
    } else {
        lease.addr().to_string()
    };
    let Ok(uri) = format!("http://{authority}{path_and_query}").parse::<Uri>() else {
        return Err(GatewayError::BadPath);
    };

    let record = Record {
        service: service.clone(),
        instance: lease.instance_id().to_owned(),
        request_id: to.request_id.to_owned(),
        method: method.to_string(),
        path: path.clone(),
        started,
        status: 0,
        tracer: gateway.tracer.clone(),
        trace: (parent, trace),
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
        answer = gateway.proxy.send(h2, lease.addr(), request) => answer,
        () = died => Err(SendError::Failed("the service instance exited before it answered".to_owned())),
    };
    let mut record = record;
    match answer {
        Ok(response) => Ok(relayed(response, lease, record)),
        Err(SendError::Stalled) => {
            drop(lease);
            let error = GatewayError::BodyStalled {
                limit: gateway.settings.body_timeout,
            };
            record.status = error.status().as_u16();
            record.finish(None);
            Err(error)
        }
        Err(SendError::Failed(err)) => {
            // The instance's exit is noticed a moment after its
            // connections break; waiting for it here also keeps the next
            // request from being sent to it.
            let dead = tokio::time::timeout(std::time::Duration::from_millis(500), lease.died())
                .await
                .is_ok();
            let message = if dead {
                "the service instance exited before it answered".to_owned()
            } else {
                format!("the service instance did not answer: {err}")
            };
            drop(lease);
            Err(failed(record, message))
        }
    }
}

/// The instance's answer on its way to the client, holding the lease
/// until its body has been sent.
fn relayed(response: Response<Incoming>, lease: Lease, mut record: Record) -> Response<Body> {
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

/// A lease on an instance of the live version of the service.
async fn lease(
    gateway: &Gateway,
    app: &str,
    name: &str,
) -> Result<(Arc<Service>, Lease), GatewayError> {
    // A deploy may retire the version a request waits on: it is routed
    // again, to the new one.
    for _ in 0..3 {
        match gateway.backend.lease(app, name).await {
            None => break,
            Some(Ok(lease)) => return Ok(lease),
            Some(Err(ServiceError::Retired)) => continue,
            Some(Err(ServiceError::Throttled(service, retry_after))) => {
                return Err(GatewayError::ServiceBusy {
                    service,
                    retry_after,
                });
            }
            Some(Err(err @ ServiceError::Unavailable { .. })) => {
                return Err(GatewayError::ServiceUnavailable {
                    message: format!("{err}; `stratus status` and `stratus logs` say more"),
                });
            }
        }
    }
    Err(GatewayError::ServiceReplaced {
        service: name.to_owned(),
    })
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

/// A WebSocket handshake on a connection of its own; after `101`, the
/// session is relayed in a task that holds the lease.
async fn upgrade(
    request: Request<Body>,
    lease: Lease,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    record: Record,
) -> Result<Response<Body>, GatewayError> {
    let Some(client_upgrade) = on_upgrade else {
        return Err(failed(
            record,
            "this connection cannot switch protocols (WebSocket needs HTTP/1.1)".into(),
        ));
    };
    let tcp = match tokio::net::TcpStream::connect(lease.addr()).await {
        Ok(tcp) => tcp,
        Err(err) => {
            return Err(failed(
                record,
                format!("the service instance did not answer: {err}"),
            ));
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
            Ok(pair) => pair,
            Err(err) => return Err(failed(record, format!("the service instance: {err}"))),
        };
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let mut response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(err) => {
            return Err(failed(
                record,
                format!("the service instance did not answer: {}", error_chain(&err)),
            ));
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The app refused the upgrade: its answer goes back as it is.
        return Ok(relayed(response, lease, record));
    }
    let mut record = record;
    record.status = response.status().as_u16();
    record
        .service
        .metrics
        .answered(record.status, record.started.elapsed().as_secs_f64());
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
        let session = record.service.metrics.websocket();
        let end = super::websocket::relay(
            TokioIo::new(client),
            TokioIo::new(upstream),
            lease.ending(),
            std::time::Duration::ZERO,
            stratus_scheduler::CLOSE_WAIT,
        )
        .await;
        drop((lease, session));
        record.finish(Some(serde_json::json!({
            "end": end.to_string(),
            "bytes_in": end.client_to_upstream,
            "bytes_out": end.upstream_to_client,
        })));
    });
    // The 101 keeps the app's headers (Sec-WebSocket-Accept, protocol,
    // extensions), Connection and Upgrade included.
    Ok(Response::from_parts(parts, Body::empty()))
}

/// A request the instance did not answer: logged, recorded, and a 502.
fn failed(mut record: Record, message: String) -> GatewayError {
    let error = GatewayError::Upstream(message);
    record.status = error.status().as_u16();
    record.service.emit(
        &record.instance,
        LogStream::Platform,
        format!("{}: {}", record.request_id, error.message()),
    );
    record.finish(None);
    error
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
    tracer: stratus_trace::Tracer,
    /// The caller's context and the request's.
    trace: (Option<stratus_trace::Context>, stratus_trace::Context),
}

impl Record {
    fn finish(self, more: Option<serde_json::Value>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        // A WebSocket session is timed from its upgrade's answer, which
        // counted it.
        if self.status != 101 {
            self.service.metrics.answered(self.status, elapsed);
        }
        if self.tracer.is_on() {
            let end = stratus_trace::now_ns();
            let (parent, context) = self.trace;
            let config = &self.service.config;
            let mut span = stratus_trace::Span::new(
                context,
                parent.map(|p| p.span_id),
                format!("{} {}", self.method, config.spec.name),
                stratus_trace::Kind::Server,
                &config.app,
                stratus_trace::ns_before(end, self.started.elapsed()),
                end,
            );
            use stratus_trace::Value;
            span.attributes = vec![
                ("http.request.method", Value::Str(self.method.clone())),
                ("url.path", Value::Str(self.path.clone())),
                (
                    "http.response.status_code",
                    Value::Int(i64::from(self.status)),
                ),
                ("stratus.service", Value::Str(config.spec.name.clone())),
                ("stratus.instance", Value::Str(self.instance.clone())),
            ];
            if self.status >= 500 {
                span.error = Some(format!("status {}", self.status));
            }
            span.request_id = Some(self.request_id.clone());
            self.tracer.record(vec![span]);
        }
        if !self.service.config.spec.access_log && self.status < 500 {
            return;
        }
        let ms = elapsed * 1000.0;
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
