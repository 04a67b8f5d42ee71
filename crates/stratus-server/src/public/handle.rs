//! One request on the public listener: find the app and route, check the
//! key, read the body, invoke the function with a payload format 2.0
//! event and map its result back to HTTP.
//!
//! Each step returns `Err(response)` to answer early; a response is built
//! once per request, so carrying it unboxed costs nothing worth a box.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use stratus_gateway::payload::{self, HttpRequest};
use stratus_gateway::route::Lookup;
use stratus_logs::{LogRecord, LogStream};
use stratus_manifest::HttpAuth;
use stratus_scheduler::{
    FunctionError, HTTP_INTEGRATION_CONTENT_TYPE, Invocation, InvokeError, InvokeOutcome,
    ResponseStream, StreamChunk,
};

use super::routes::{AppRoutes, Target, TargetKind};
use super::{Gateway, addr_ip, cors};

pub(crate) const REQUEST_ID: &str = "x-stratus-request-id";
const KEY_HEADER: &str = "x-stratus-key";

pub(crate) async fn handle(
    gateway: &Gateway,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = match route(gateway, request, peer, &request_id).await {
        Ok(response) | Err(response) => response,
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// A short JSON answer from the gateway itself.
pub(crate) fn reply(
    status: StatusCode,
    request_id: &str,
    message: impl Into<String>,
) -> Response<Body> {
    let body = serde_json::json!({ "message": message.into(), "requestId": request_id });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Which app a request is for, the path within it and the prefix it was
/// reached under.
struct Located<'a> {
    app: Arc<AppRoutes>,
    name: String,
    path: &'a str,
    prefix: Option<&'a str>,
}

fn locate<'a>(gateway: &Gateway, host: &str, path: &'a str) -> Option<Located<'a>> {
    if let Some(label) = host
        .strip_suffix(gateway.settings.domain.as_str())
        .and_then(|h| h.strip_suffix('.'))
        .filter(|l| !l.contains('.'))
        && let Some(app) = gateway.directory.app(label)
    {
        return Some(Located {
            app,
            name: label.to_owned(),
            path,
            prefix: None,
        });
    }
    let rest = path.strip_prefix('/')?;
    let (name, within) = match rest.find('/') {
        Some(i) => (&rest[..i], &path[i + 1..]),
        None => (rest, "/"),
    };
    let app = gateway.directory.app(name)?;
    Some(Located {
        app,
        name: name.to_owned(),
        path: within,
        prefix: Some(&path[..name.len() + 1]),
    })
}

/// The host a request was addressed to, lower-case, without the port.
fn host_of(request: &Request<Incoming>) -> String {
    let raw = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    };
    let host = if raw.starts_with('[') {
        raw.split_inclusive(']').next().unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(host, _)| host)
    };
    host.to_ascii_lowercase()
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

async fn route(
    gateway: &Gateway,
    request: Request<Incoming>,
    peer: SocketAddr,
    request_id: &str,
) -> Result<Response<Body>, Response<Body>> {
    let settings = &gateway.settings;
    let url_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if url_len > settings.max_url_bytes {
        return Err(reply(
            StatusCode::URI_TOO_LONG,
            request_id,
            format!(
                "the path and query are longer than {} bytes",
                settings.max_url_bytes
            ),
        ));
    }
    let host = host_of(&request);
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let Some(located) = locate(gateway, &host, &path) else {
        return Err(reply(
            StatusCode::NOT_FOUND,
            request_id,
            format!(
                "no application serves this address; an app is reached at http://APP.{}/ or under /APP/",
                settings.domain
            ),
        ));
    };
    let origin = parts.headers.get(header::ORIGIN).cloned();

    if parts.method == Method::OPTIONS
        && let Some(origin) = &origin
        && let Some(requested) = parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
        && let Lookup::Found { route, .. } = located.app.table.lookup(&requested, located.path)
        && let Some(cors) = &route.target.cors
    {
        return match cors::preflight(
            cors,
            origin,
            &requested,
            parts.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS),
            route.methods.as_deref(),
        ) {
            Ok(headers) => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                *response.headers_mut() = headers;
                Ok(response)
            }
            Err(refused) => Err(reply(
                StatusCode::FORBIDDEN,
                request_id,
                match refused {
                    cors::Refused::Origin => "this origin may not call this route".to_owned(),
                    cors::Refused::Method => {
                        format!("cross-origin {requested} requests are not allowed here")
                    }
                    cors::Refused::Headers(name) => {
                        format!("the request header {name} is not allowed cross-origin here")
                    }
                },
            )),
        };
    }

    let (target, route_key, params) = match located.app.table.lookup(&parts.method, located.path) {
        Lookup::Found { route, params } => (route.target.clone(), route.key(&parts.method), params),
        Lookup::MethodNotAllowed { allowed } => {
            let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            let mut response = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                request_id,
                format!(
                    "{} is not allowed here; use {}",
                    parts.method,
                    names.join(", ")
                ),
            );
            if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return Err(response);
        }
        Lookup::NotFound => {
            return Err(reply(
                StatusCode::NOT_FOUND,
                request_id,
                format!(
                    "no route of app {} matches {} {}",
                    located.name, parts.method, located.path
                ),
            ));
        }
    };
    let with_cors = |mut response: Response<Body>| {
        if let Some(cors) = &target.cors {
            cors::decorate(cors, origin.as_ref(), response.headers_mut());
        }
        response
    };

    if target.auth == HttpAuth::Key {
        check_key(gateway, &located.name, &parts.headers, request_id).map_err(with_cors)?;
    }

    if target.kind == TargetKind::Service {
        let path_in_app = located.path.to_owned();
        // The host as the client wrote it, port included.
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| host.clone());
        // It becomes the instance's `Host`, gRPC's `:authority` and part of
        // `Forwarded`: only a well-formed host and port may pass.
        if authority.parse::<axum::http::uri::Authority>().is_err()
            || authority.contains(['@', '"'])
        {
            return Err(with_cors(reply(
                StatusCode::BAD_REQUEST,
                request_id,
                "the Host header is not a valid host",
            )));
        }
        let forward = super::proxy::Forward {
            app: &located.name,
            service: &target.function,
            path: &path_in_app,
            prefix: located.prefix,
            host: &authority,
            peer,
            request_id,
        };
        return Ok(with_cors(
            super::proxy::forward(gateway, forward, parts, body).await,
        ));
    }

    let body = match tokio::time::timeout(
        settings.body_timeout,
        read_body(body, &parts.headers, settings.max_body_bytes, request_id),
    )
    .await
    {
        Ok(body) => body.map_err(with_cors)?,
        Err(_) => {
            return Err(with_cors(reply(
                StatusCode::REQUEST_TIMEOUT,
                request_id,
                format!(
                    "the request body did not arrive within {}",
                    humantime_secs(settings.body_timeout)
                ),
            )));
        }
    };

    // What an API gateway in front of a function adds.
    let peer_ip = addr_ip(peer);
    let forwarded_for = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(earlier) => format!("{earlier}, {peer_ip}"),
        None => peer_ip.clone(),
    };
    // Only the gateway says under which prefix a request came.
    parts.headers.remove("x-forwarded-prefix");
    let authority = (!parts.headers.contains_key(header::HOST))
        .then(|| parts.uri.authority().map(|a| a.to_string()))
        .flatten();
    let mut add = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            parts.headers.insert(name, value);
        }
    };
    add("x-forwarded-for", &forwarded_for);
    add(
        "x-forwarded-proto",
        if gateway.tls.is_some() {
            "https"
        } else {
            "http"
        },
    );
    add("x-forwarded-port", &gateway.port.to_string());
    if let Some(prefix) = located.prefix {
        add("x-forwarded-prefix", prefix);
    }
    if let Some(authority) = &authority {
        add("host", authority);
    }

    let event = payload::event(&HttpRequest {
        method: &parts.method,
        raw_path: located.path,
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
        protocol: protocol(parts.version),
        source_ip: &peer_ip,
        domain_name: &host,
        api_id: &located.name,
        request_id,
        route_key: &route_key,
        path_parameters: &params,
        time: SystemTime::now(),
    });
    let mut invocation = Invocation::new(Bytes::from(event.to_string()));
    invocation.request_id = request_id.to_owned();
    invocation.trace_id = parts
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(xray_from_traceparent);

    let outcome = invoke(gateway, &located.name, &target, invocation, request_id)
        .await
        .map_err(with_cors)?;
    Ok(with_cors(
        respond(gateway, &located.name, &target, outcome, request_id).await,
    ))
}

fn check_key(
    gateway: &Gateway,
    app: &str,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<(), Response<Body>> {
    let given = headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim);
    match given {
        None | Some("") => {
            let mut response = reply(
                StatusCode::UNAUTHORIZED,
                request_id,
                "this route needs an app key: send it in x-stratus-key or as Authorization: Bearer KEY (`stratus keys create APP` makes one)",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"stratus\""),
            );
            Err(response)
        }
        Some(key)
            if gateway
                .directory
                .has_key(app, &stratus_archive::sha256_hex(key.as_bytes())) =>
        {
            Ok(())
        }
        Some(_) => Err(reply(
            StatusCode::FORBIDDEN,
            request_id,
            format!("the key is not one of app {app}'s keys; `stratus keys ls {app}` lists them"),
        )),
    }
}

async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
    request_id: &str,
) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            request_id,
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(reply(
            StatusCode::BAD_REQUEST,
            request_id,
            format!("the request body could not be read: {err}"),
        )),
    }
}

fn humantime_secs(d: std::time::Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// `traceparent` (W3C) as the X-Ray trace header Lambda runtimes read, so
/// the function's `_X_AMZN_TRACE_ID` carries the caller's trace.
fn xray_from_traceparent(traceparent: &str) -> Option<String> {
    let mut fields = traceparent.trim().split('-');
    let (version, trace, parent, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    let sampled = u8::from_str_radix(flags, 16).ok()? & 1;
    Some(format!(
        "Root=1-{}-{};Parent={parent};Sampled={sampled}",
        &trace[..8],
        &trace[8..]
    ))
}

async fn invoke(
    gateway: &Gateway,
    app: &str,
    target: &Target,
    invocation: Invocation,
    request_id: &str,
) -> Result<InvokeOutcome, Response<Body>> {
    match gateway
        .scheduler
        .invoke(app, &target.function, invocation)
        .await
    {
        Ok(outcome) => Ok(outcome),
        Err(err @ InvokeError::NoSuchFunction { .. }) => Err(reply(
            StatusCode::NOT_FOUND,
            request_id,
            // Only a deploy racing this request gets here.
            format!("{err}"),
        )),
        Err(InvokeError::Throttled { retry_after, .. }) => {
            let mut response = reply(
                StatusCode::TOO_MANY_REQUESTS,
                request_id,
                "too many requests: every instance is busy and the queue is full; retry later",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            Err(response)
        }
        Err(InvokeError::ShuttingDown) => Err(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            request_id,
            "the server is shutting down; retry shortly",
        )),
    }
}

/// The answer for a function that failed.
fn failed(error: &FunctionError, request_id: &str) -> Response<Body> {
    if matches!(
        error.error_type.as_str(),
        "Sandbox.Timedout" | "Runtime.InitTimeout"
    ) {
        reply(
            StatusCode::GATEWAY_TIMEOUT,
            request_id,
            "the function did not answer in time",
        )
    } else {
        reply(
            StatusCode::BAD_GATEWAY,
            request_id,
            "the function failed; its logs have the details under this request id",
        )
    }
}

/// Logs why a function's result is not a response, under its request.
fn log_malformed(
    gateway: &Gateway,
    app: &str,
    target: &Target,
    outcome: &InvokeOutcome,
    reason: String,
) {
    gateway.logs.append(LogRecord {
        ts_ms: crate::now_ms(),
        app: app.to_owned(),
        function: target.function.clone(),
        version: outcome.version,
        instance: outcome.instance.clone(),
        request_id: Some(outcome.request_id.clone()),
        stream: LogStream::Platform,
        message: reason,
        fields: None,
    });
}

async fn respond(
    gateway: &Gateway,
    app: &str,
    target: &Target,
    mut outcome: InvokeOutcome,
    request_id: &str,
) -> Response<Body> {
    if let Some(stream) = outcome.stream.take() {
        return match streamed(gateway, target, stream).await {
            Ok(response) => response,
            Err(Streamed::Failed(error)) => failed(&error, request_id),
            Err(Streamed::Malformed(reason)) => {
                log_malformed(gateway, app, target, &outcome, reason);
                reply(
                    StatusCode::BAD_GATEWAY,
                    request_id,
                    "the function's streamed response is not valid; its logs say why under this request id",
                )
            }
        };
    }
    let result = match &outcome.result {
        Ok(result) => result,
        Err(error) => return failed(error, request_id),
    };
    match payload::response(result) {
        Ok(mapped) => {
            let mut response = Response::new(Body::from(mapped.body));
            *response.status_mut() = mapped.status;
            *response.headers_mut() = mapped.headers;
            response
        }
        Err(malformed) => {
            log_malformed(gateway, app, target, &outcome, malformed.to_string());
            reply(
                StatusCode::BAD_GATEWAY,
                request_id,
                "the function's result is not a valid HTTP response; its logs say why under this request id",
            )
        }
    }
}

/// Most bytes of a streamed response's JSON prelude.
const MAX_PRELUDE_BYTES: usize = 64 * 1024;
const PRELUDE_END: [u8; 8] = [0; 8];

enum Streamed {
    Failed(FunctionError),
    Malformed(String),
}

/// A streamed response: the prelude (when the function sent one) gives the
/// status and headers; the body is passed on as it comes, or collected
/// first for a route that does not stream.
async fn streamed(
    gateway: &Gateway,
    target: &Target,
    stream: ResponseStream,
) -> Result<Response<Body>, Streamed> {
    let mut rx = stream.body;
    let mut head = BytesMut::new();
    let integration = stream
        .content_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(HTTP_INTEGRATION_CONTENT_TYPE));
    let (mut response, first) = if integration {
        let split = loop {
            match rx.recv().await {
                Some(StreamChunk::Data(chunk)) => head.extend_from_slice(&chunk),
                Some(StreamChunk::Failed(error)) => return Err(Streamed::Failed(error)),
                Some(StreamChunk::End) => {
                    return Err(Streamed::Malformed(
                        "the stream ended before the prelude's eight NUL bytes".into(),
                    ));
                }
                None => return Err(Streamed::Failed(cut_off())),
            }
            if let Some(at) = head.windows(8).position(|w| w == PRELUDE_END) {
                break at;
            }
            if head.len() > MAX_PRELUDE_BYTES {
                return Err(Streamed::Malformed(format!(
                    "no end of the prelude (eight NUL bytes) in its first {MAX_PRELUDE_BYTES} bytes"
                )));
            }
        };
        let rest = head.split_off(split + PRELUDE_END.len()).freeze();
        (prelude(&head[..split])?, rest)
    } else {
        let mut response = Response::new(Body::empty());
        let content_type = stream
            .content_type
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        (response, Bytes::new())
    };
    if target.streaming {
        *response.body_mut() = Body::new(ChannelBody::new(first, rx));
        return Ok(response);
    }
    // A route that does not stream gets the whole body at once, as Lambda's
    // buffered invoke mode does.
    let limit = gateway.scheduler.max_response_bytes();
    let mut body = BytesMut::from(&first[..]);
    loop {
        match rx.recv().await {
            Some(StreamChunk::Data(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(Streamed::Malformed(format!(
                        "the response is larger than the limit of {limit} bytes; set `streaming: true` on the route to stream it"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Some(StreamChunk::End) => break,
            Some(StreamChunk::Failed(error)) => return Err(Streamed::Failed(error)),
            None => return Err(Streamed::Failed(cut_off())),
        }
    }
    *response.body_mut() = Body::from(body.freeze());
    Ok(response)
}

/// The status, headers and cookies of a streamed response's prelude.
fn prelude(json: &[u8]) -> Result<Response<Body>, Streamed> {
    let mut value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Streamed::Malformed(format!("the prelude is not JSON: {e}")))?;
    let Some(fields) = value.as_object_mut() else {
        return Err(Streamed::Malformed(
            "the prelude is not a JSON object".into(),
        ));
    };
    fields
        .entry("statusCode")
        .or_insert(serde_json::Value::from(200));
    fields.remove("body");
    let mapped =
        payload::response(value.to_string().as_bytes()).map_err(|m| Streamed::Malformed(m.0))?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = mapped.status;
    *response.headers_mut() = mapped.headers;
    Ok(response)
}

/// A stream that ended without its end: the runtime was cut off.
fn cut_off() -> FunctionError {
    FunctionError::unhandled(
        "Runtime.ExitError",
        "the runtime stopped before it finished streaming the response",
    )
}

/// A response body fed by the function's stream as the runtime posts it.
/// An error part-way, or a stream cut off, ends the response abruptly, so
/// the client sees an incomplete body rather than a complete-looking one.
pub(crate) struct ChannelBody {
    first: Option<Bytes>,
    rx: tokio::sync::mpsc::Receiver<StreamChunk>,
    ended: bool,
}

impl ChannelBody {
    pub fn new(first: Bytes, rx: tokio::sync::mpsc::Receiver<StreamChunk>) -> ChannelBody {
        ChannelBody {
            first: (!first.is_empty()).then_some(first),
            rx,
            ended: false,
        }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(first))));
        }
        let failed = |error: &FunctionError| {
            std::io::Error::other(format!("{}: {}", error.error_type, error.message))
        };
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(StreamChunk::Data(data))) => {
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
            Poll::Ready(Some(StreamChunk::End)) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(StreamChunk::Failed(error))) => {
                self.ended = true;
                Poll::Ready(Some(Err(failed(&error))))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(failed(&cut_off()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::xray_from_traceparent;

    #[test]
    fn traceparent_becomes_the_xray_header() {
        assert_eq!(
            xray_from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .as_deref(),
            Some("Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1")
        );
        assert_eq!(xray_from_traceparent("00-zz-b7ad6b7169203331-01"), None);
        assert_eq!(xray_from_traceparent(""), None);
    }
}
