//! `POST /v1/apps/{app}/functions/{function}/invoke`: a synchronous invocation.
//!
//! As with Lambda's Invoke API, a function that fails still answers 200; the
//! body is then the error in Lambda's shape and `x-stratus-function-error`
//! says so. Statuses other than 200 mean the invocation did not run.
//! The parts of an invocation that do not depend on the wire format (the
//! payload's limits, queueing an event, the outcome's body, the log tail)
//! are shared with Lambda's own Invoke API in `lambda.rs`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use stratus_scheduler::{Invocation, InvokeError, InvokeOutcome, Trace};

use super::ApiError;
use crate::AppState;
use crate::quotas::Kind;

/// Most bytes of log tail returned in `x-stratus-log-result`, as Lambda does.
const LOG_TAIL_BYTES: usize = 4096;
/// `Event` asks for an asynchronous invocation.
const INVOCATION_TYPE: &str = "x-stratus-invocation-type";
/// Largest payload of an asynchronous invocation, as on Lambda.
const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Stores an event for `app`/`function`, under the caller's trace
/// context in `headers`, and returns its request id once it is committed.
pub(super) async fn enqueue(
    state: &AppState,
    app: &str,
    function: &str,
    payload: Bytes,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    if state.scheduler.pool(app, function).is_none() {
        return Err(invoke_error(InvokeError::NoSuchFunction {
            app: app.to_owned(),
            function: function.to_owned(),
        }));
    }
    if payload.len() > MAX_EVENT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the payload is larger than the asynchronous limit of {MAX_EVENT_BYTES} bytes; invoke synchronously or pass a reference to the data"
            ),
        ));
    }
    state
        .quotas
        .admit(app, Kind::Events, 1, payload.len() as u64)?;
    Ok(state
        .events
        .enqueue(
            app,
            function,
            payload,
            stratus_store::Source::Invoke,
            crate::traces::parent_of(headers),
        )
        .await?)
}

/// Stores the event and answers 202 once it is committed.
async fn invoke_async(
    state: &AppState,
    app: &str,
    function: &str,
    payload: Bytes,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let request_id = enqueue(state, app, function, payload, headers).await?;
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "request_id": request_id })),
    )
        .into_response();
    set_header(response.headers_mut(), "x-stratus-request-id", request_id);
    Ok(response)
}

/// Reads an invocation's body, up to the synchronous limit.
pub(crate) async fn read_body(state: &AppState, body: axum::body::Body) -> Result<Bytes, ApiError> {
    let limit = state.config.limits.max_payload_bytes;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the payload is larger than the synchronous limit of {limit} bytes"),
        )
    })
}

/// A payload must be JSON; an empty one is `{}`.
pub(crate) fn json_payload(payload: Bytes) -> Result<Bytes, ApiError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        Ok(_) => Ok(payload),
        Err(err) => Err(ApiError::bad_request(
            "invalid_payload",
            format!(
                "the payload is not valid JSON ({err}); send a JSON document such as {{\"name\":\"Ada\"}}"
            ),
        )),
    }
}

/// A synchronous invocation of `payload`, with the trace id and client
/// context the caller sent, as Lambda's Invoke API takes them.
pub(super) fn invocation(payload: Bytes, headers: &HeaderMap, want_logs: bool) -> Invocation {
    let mut invocation = Invocation::new(payload);
    invocation.want_logs = want_logs;
    invocation.trace = Trace::under(crate::traces::parent_of(headers));
    invocation.client_context = client_context(headers);
    invocation
}

/// `x-amz-client-context`, which Lambda's Invoke API takes as base64 JSON,
/// as the JSON that the Runtime API hands runtimes. A value that is not
/// base64 JSON passes as it is.
fn client_context(headers: &HeaderMap) -> Option<String> {
    let given = header(headers, "x-amz-client-context")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(given.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|json| serde_json::from_str::<serde::de::IgnoredAny>(json).is_ok());
    Some(decoded.unwrap_or(given))
}

/// A 200 whose body is the outcome's result, its error, or its stream as
/// it comes, with the content type to match.
pub(super) fn outcome_response(outcome: &mut InvokeOutcome) -> Response {
    let stream = outcome.stream.take();
    let content_type = match &stream {
        Some(stream) => stream
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        None => "application/json".to_owned(),
    };
    let mut response = match (&outcome.result, stream) {
        (_, Some(stream)) => {
            axum::body::Body::new(crate::public::ChannelBody::new(Bytes::new(), stream.body))
                .into_response()
        }
        (Ok(body), None) => (StatusCode::OK, body.clone()).into_response(),
        (Err(error), None) => (StatusCode::OK, error.to_json()).into_response(),
    };
    set_header(response.headers_mut(), "content-type", content_type);
    response
}

/// The last 4 KB of an invocation's log, base64, as Lambda's `LogResult`:
/// its `START` line, its own lines, its `END` and `REPORT` lines.
pub(super) fn log_tail(outcome: &stratus_scheduler::InvokeOutcome) -> String {
    let id = &outcome.request_id;
    let mut tail = format!("START RequestId: {id} Version: {}\n", outcome.version);
    for line in &outcome.logs {
        tail.push_str(line);
        tail.push('\n');
    }
    tail.push_str(&format!("END RequestId: {id}\n{}\n", outcome.report_line()));
    let start = tail.len().saturating_sub(LOG_TAIL_BYTES);
    let start = (start..tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    base64::engine::general_purpose::STANDARD.encode(&tail[start..])
}

/// Sets a header, leaving out a value that is not a valid one.
pub(super) fn set_header(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct InvokeParams {
    /// `tail` returns the invocation's last 4 KB of log lines, base64, in a header.
    #[serde(default)]
    log: Option<String>,
}

pub(crate) async fn invoke(
    State(state): State<Arc<AppState>>,
    Path((app, function)): Path<(String, String)>,
    Query(params): Query<InvokeParams>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let payload = json_payload(read_body(&state, body).await?)?;
    if header(&headers, INVOCATION_TYPE).is_some_and(|t| t.eq_ignore_ascii_case("event")) {
        return invoke_async(&state, &app, &function, payload, &headers).await;
    }
    let want_logs = matches!(params.log.as_deref(), Some("tail" | "true" | "1"));
    let invocation = invocation(payload, &headers, want_logs);
    let mut outcome = state
        .scheduler
        .invoke(&app, &function, invocation)
        .await
        .map_err(invoke_error)?;

    let mut response = outcome_response(&mut outcome);
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| set_header(h, name, value);
    set("x-stratus-request-id", outcome.request_id.clone());
    set("x-stratus-version", outcome.version.to_string());
    set("x-stratus-instance", outcome.instance.clone());
    set("x-stratus-cold", outcome.cold.to_string());
    set(
        "x-stratus-duration-ms",
        format!("{:.3}", outcome.phases.duration_ms),
    );
    set(
        "x-stratus-queue-ms",
        format!("{:.3}", outcome.phases.queue_ms),
    );
    let p = &outcome.phases;
    for (name, value) in [
        ("x-stratus-init-ms", p.init_ms),
        ("x-stratus-sandbox-ms", p.sandbox_ms),
        ("x-stratus-runtime-start-ms", p.runtime_start_ms),
        ("x-stratus-handler-init-ms", p.handler_init_ms),
        ("x-stratus-cpu-user-ms", p.cpu_user_ms),
        ("x-stratus-cpu-system-ms", p.cpu_system_ms),
    ] {
        if let Some(ms) = value {
            set(name, format!("{ms:.3}"));
        }
    }
    if let Some(scope) = p.cpu_scope {
        set("x-stratus-cpu-scope", scope.to_owned());
    }
    if let Some(prestarted) = p.prestarted {
        set("x-stratus-prestarted", prestarted.to_string());
    }
    if let Some(from_template) = p.from_template {
        set("x-stratus-from-template", from_template.to_string());
    }
    if let Some(mb) = outcome.max_memory_mb {
        set("x-stratus-max-memory-mb", mb.to_string());
    }
    if let Err(error) = &outcome.result {
        set("x-stratus-function-error", error.kind.to_owned());
    }
    if want_logs || !outcome.logs.is_empty() {
        set("x-stratus-log-result", log_tail(&outcome));
    }
    Ok(response)
}

pub(super) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(crate) fn invoke_error(err: InvokeError) -> ApiError {
    match &err {
        InvokeError::NoSuchFunction { .. } => ApiError::not_found(err.to_string()),
        InvokeError::Throttled { retry_after, .. } => {
            let mut api =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "throttled", err.to_string());
            api.retry_after = Some(retry_after.as_secs().max(1));
            api
        }
        InvokeError::ShuttingDown => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            err.to_string(),
        ),
    }
}
