//! A request for a function: its body read, an API Gateway payload
//! format 2.0 event made of it, the function invoked, and its result (or
//! its stream) mapped back to HTTP.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Response, Version, header};
use bytes::{Bytes, BytesMut};
use stratus_gateway::payload::{self, HttpRequest};
use stratus_logs::{LogRecord, LogStream};
use stratus_scheduler::{
    FunctionError, HTTP_INTEGRATION_CONTENT_TYPE, Invocation, InvokeOutcome, ResponseStream,
    StreamChunk, Trace,
};

use super::error::GatewayError;
use super::forwarded::{self, Audience, Forwarding};
use super::gateway::{Gateway, Routed};
use super::routes::Target;

/// A request routed to a function.
pub(crate) struct Call<'a> {
    pub to: Routed<'a>,
    pub route: &'a Target,
    /// The host the client addressed, lower-case, without the port.
    pub host: &'a str,
    pub route_key: &'a str,
    pub params: &'a [(String, String)],
}

/// Invokes the function with the request as its event and maps its
/// result to the response.
pub(crate) async fn call(
    gateway: &Gateway,
    call: Call<'_>,
    mut parts: Parts,
    body: Body,
) -> Result<Response<Body>, GatewayError> {
    let (c, to) = (&call, &call.to);
    let settings = &gateway.settings;
    // The bytes stay counted until the function has answered.
    let (body, _held) = tokio::time::timeout(
        settings.body_timeout,
        gateway
            .bodies
            .read(body, &parts.headers, settings.max_body_bytes),
    )
    .await
    .map_err(|_| GatewayError::BodyTimeout {
        limit: settings.body_timeout,
    })??;

    // What an API gateway in front of a function adds.
    let authority = (!parts.headers.contains_key(header::HOST))
        .then(|| parts.uri.authority().map(|a| a.to_string()))
        .flatten();
    forwarded::apply(
        &mut parts.headers,
        &Forwarding {
            peer: to.peer,
            proto: gateway.proto(),
            port: gateway.port,
            authority: authority.as_deref(),
            prefix: to.prefix,
        },
        Audience::Function,
    );
    // The function sees its own place in the trace, not the caller's.
    let trace = Trace::under(crate::traces::parent_of(&parts.headers));
    if let Ok(value) = trace.handler.traceparent().parse() {
        parts.headers.insert("traceparent", value);
    }
    let peer_ip = forwarded::peer_ip(to.peer);
    let event = payload::event(&HttpRequest {
        method: &parts.method,
        raw_path: to.path,
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
        protocol: protocol(parts.version),
        source_ip: &peer_ip,
        domain_name: c.host,
        api_id: to.app,
        request_id: to.request_id,
        route_key: c.route_key,
        path_parameters: c.params,
        time: SystemTime::now(),
    });
    let mut invocation = Invocation::new(Bytes::from(event.to_string()));
    invocation.request_id = to.request_id.to_owned();
    invocation.trace = trace;

    let outcome = gateway
        .backend
        .invoke(to.app, to.target, invocation)
        .await
        .map_err(GatewayError::Invoke)?;
    respond(gateway, to.app, c.route, outcome).await
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
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
) -> Result<Response<Body>, GatewayError> {
    if let Some(stream) = outcome.stream.take() {
        return match streamed(gateway, target, stream).await {
            Ok(response) => Ok(response),
            Err(Streamed::Failed(error)) => Err(GatewayError::FunctionFailed(error.class)),
            Err(Streamed::Malformed(reason)) => {
                log_malformed(gateway, app, target, &outcome, reason);
                Err(GatewayError::Malformed { streamed: true })
            }
        };
    }
    let result = match &outcome.result {
        Ok(result) => result,
        Err(error) => return Err(GatewayError::FunctionFailed(error.class)),
    };
    match payload::response(result) {
        Ok(mapped) => {
            let mut response = Response::new(Body::from(mapped.body));
            *response.status_mut() = mapped.status;
            *response.headers_mut() = mapped.headers;
            Ok(response)
        }
        Err(malformed) => {
            log_malformed(gateway, app, target, &outcome, malformed.to_string());
            Err(GatewayError::Malformed { streamed: false })
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
    let limit = gateway.backend.max_response_bytes();
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
