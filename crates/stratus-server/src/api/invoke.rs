//! `POST /v1/apps/{app}/functions/{function}/invoke`: a synchronous invocation.
//!
//! As with Lambda's Invoke API, a function that fails still answers 200; the
//! body is then the error in Lambda's shape and `x-stratus-function-error`
//! says so. Statuses other than 200 mean the invocation did not run.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use stratus_scheduler::{Invocation, InvokeError};

use super::ApiError;
use crate::AppState;

/// Most bytes of log tail returned in `x-stratus-log-result`, as Lambda does.
const LOG_TAIL_BYTES: usize = 4096;
/// `Event` asks for an asynchronous invocation.
const INVOCATION_TYPE: &str = "x-stratus-invocation-type";
/// Largest payload of an asynchronous invocation, as on Lambda.
const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Stores the event and answers 202 once it is committed.
async fn invoke_async(
    state: &AppState,
    app: &str,
    function: &str,
    payload: Bytes,
) -> Result<Response, ApiError> {
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
    let request_id = state
        .events
        .enqueue(app, function, payload, "invoke")
        .await?;
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "request_id": request_id })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-stratus-request-id", value);
    }
    Ok(response)
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
    let limit = state.config.limits.max_payload_bytes;
    let payload = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the payload is larger than the synchronous limit of {limit} bytes"),
        )
    })?;
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
            return Err(ApiError::bad_request(
                "invalid_payload",
                format!(
                    "the payload is not valid JSON ({err}); send a JSON document such as {{\"name\":\"Ada\"}}"
                ),
            ));
        }
        payload
    };
    if header(&headers, INVOCATION_TYPE).is_some_and(|t| t.eq_ignore_ascii_case("event")) {
        return invoke_async(&state, &app, &function, payload).await;
    }
    let mut invocation = Invocation::new(payload);
    invocation.want_logs = matches!(params.log.as_deref(), Some("tail" | "true" | "1"));
    invocation.trace_id = header(&headers, "x-amzn-trace-id");
    invocation.client_context = header(&headers, "x-amz-client-context");

    let mut outcome = state
        .scheduler
        .invoke(&app, &function, invocation)
        .await
        .map_err(invoke_error)?;

    let stream = outcome.stream.take();
    let content_type = match &stream {
        Some(stream) => stream
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        None => "application/json".to_owned(),
    };
    let mut response = match (&outcome.result, stream) {
        // A streamed response is passed on as it comes.
        (_, Some(stream)) => {
            axum::body::Body::new(crate::public::ChannelBody::new(Bytes::new(), stream.body))
                .into_response()
        }
        (Ok(body), None) => (StatusCode::OK, body.clone()).into_response(),
        (Err(error), None) => (StatusCode::OK, error.to_json()).into_response(),
    };
    let h = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            h.insert(name, value);
        }
    };
    set("content-type", content_type);
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
    ] {
        if let Some(ms) = value {
            set(name, format!("{ms:.3}"));
        }
    }
    if let Some(prestarted) = p.prestarted {
        set("x-stratus-prestarted", prestarted.to_string());
    }
    if let Some(mb) = outcome.max_memory_mb {
        set("x-stratus-max-memory-mb", mb.to_string());
    }
    if let Err(error) = &outcome.result {
        set("x-stratus-function-error", error.kind.to_owned());
    }
    if !outcome.logs.is_empty() || matches!(params.log.as_deref(), Some("tail" | "true" | "1")) {
        let mut tail = outcome.logs.join("\n");
        if !tail.is_empty() {
            tail.push('\n');
        }
        let start = tail.len().saturating_sub(LOG_TAIL_BYTES);
        let start = (start..tail.len())
            .find(|i| tail.is_char_boundary(*i))
            .unwrap_or(tail.len());
        set(
            "x-stratus-log-result",
            base64::engine::general_purpose::STANDARD.encode(&tail[start..]),
        );
    }
    Ok(response)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn invoke_error(err: InvokeError) -> ApiError {
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
