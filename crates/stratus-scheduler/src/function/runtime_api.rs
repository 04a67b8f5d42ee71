//! The Lambda Runtime API (`/2018-06-01/runtime/...`) that each instance's
//! runtime calls to fetch events and post results.
//!
//! Status codes, headers and error bodies follow AWS's published API so
//! that unmodified runtime clients (`awslambdaric`, `lambda_runtime`,
//! custom `bootstrap` scripts) work as they are.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;

use super::exchange::{DeathCause, RuntimeResult, Shared};
use crate::invocation::{FunctionError, ResponseStream, StreamChunk};

const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";
/// Trailer with the base64 error report of a stream that failed part-way.
const ERROR_BODY_TRAILER: &str = "lambda-runtime-function-error-body";
const RESPONSE_MODE_HEADER: &str = "lambda-runtime-function-response-mode";
/// Chunks of a streamed response held between the runtime and the caller
/// before the runtime's post waits for the caller to read.
const STREAM_BUFFER_CHUNKS: usize = 16;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(|| async {
            api_error(
                StatusCode::NOT_FOUND,
                "InvalidRequest",
                "unknown runtime API path",
            )
        })
        .with_state(shared)
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    (status, axum::Json(body)).into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "status": "OK" })),
    )
        .into_response()
}

async fn next(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    // Built-in runtimes say how long the user's own init took.
    let handler_init = headers
        .get("stratus-handler-init-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok());
    shared.mark_ready(handler_init);
    loop {
        let dispatch = {
            let mut rx = shared.next_rx.lock().await;
            rx.recv().await
        };
        let Some(dispatch) = dispatch else {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Runtime.ExitError",
                "the instance is stopping; exit promptly",
            );
        };
        let now = Instant::now();
        let deadline_ms = crate::clock::now_ms() + dispatch.timeout.as_millis() as i64;
        let request_id = dispatch.invocation.request_id.clone();
        if !shared.begin(&dispatch.invocation, dispatch.result_tx) {
            continue;
        }
        if dispatch.dispatched_tx.send(now).is_err() {
            // The caller gave up before the event was handed out.
            shared.abandon(&request_id);
            continue;
        }
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        };
        set("content-type", "application/json");
        set("lambda-runtime-aws-request-id", &request_id);
        set("lambda-runtime-deadline-ms", &deadline_ms.to_string());
        set(
            "lambda-runtime-invoked-function-arn",
            &dispatch.function_arn,
        );
        let trace = &dispatch.invocation.trace.handler;
        set("lambda-runtime-trace-id", &trace.xray());
        set("lambda-runtime-traceparent", &trace.traceparent());
        if let Some(context) = &dispatch.invocation.client_context {
            set("lambda-runtime-client-context", context);
        }
        return (StatusCode::OK, headers, dispatch.invocation.payload.clone()).into_response();
    }
}

async fn read_body(shared: &Shared, body: Body) -> Result<Bytes, usize> {
    axum::body::to_bytes(body, shared.max_response_bytes)
        .await
        .map_err(|_| shared.max_response_bytes)
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if headers
        .get(RESPONSE_MODE_HEADER)
        .is_some_and(|mode| mode.as_bytes().eq_ignore_ascii_case(b"streaming"))
    {
        return stream_response(&shared, &id, &headers, body).await;
    }
    let result = match read_body(&shared, body).await {
        Ok(bytes) => RuntimeResult::Response(bytes),
        Err(limit) => RuntimeResult::Error(FunctionError::unhandled(
            "Function.ResponseSizeTooLarge",
            format!("the response is larger than the limit of {limit} bytes"),
        )),
    };
    let too_large = matches!(result, RuntimeResult::Error(_));
    match shared.finish(&id, result) {
        Ok(()) if too_large => api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "the response exceeds the size limit",
        ),
        Ok(()) => accepted(),
        Err(status) => invalid_id(status),
    }
}

/// A response in streaming mode: the caller gets the chunks as they come;
/// an error the function hits part-way arrives in the trailers.
async fn stream_response(shared: &Shared, id: &str, headers: &HeaderMap, body: Body) -> Response {
    use http_body_util::BodyExt;

    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER_CHUNKS);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let stream = ResponseStream {
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: rx,
    };
    let result = RuntimeResult::Stream {
        stream,
        done: done_rx,
        abort: tx.clone(),
    };
    if let Err(status) = shared.finish(id, result) {
        return invalid_id(status);
    }
    let mut body = body;
    let mut caller_gone = false;
    let mut failure = None;
    loop {
        let error = match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !caller_gone && !data.is_empty() {
                        // A caller that went away stops reading; the rest
                        // of the body is drained so the runtime can go on.
                        caller_gone = tx.send(StreamChunk::Data(data)).await.is_err();
                    }
                    continue;
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => trailer_error(&trailers),
                    Err(_) => None,
                },
            },
            Some(Err(err)) => Some(FunctionError::unhandled(
                "Runtime.StreamError",
                format!("the runtime's response stream broke off: {err}"),
            )),
        };
        if let Some(error) = error {
            let _ = tx.send(StreamChunk::Failed(error.clone())).await;
            failure = Some(error);
            break;
        }
    }
    if failure.is_none() {
        let _ = tx.send(StreamChunk::End).await;
    }
    drop(tx);
    shared.end_stream(id);
    let _ = done_tx.send(failure);
    accepted()
}

/// The error a runtime reports in the trailers of a streamed response.
fn trailer_error(trailers: &HeaderMap) -> Option<FunctionError> {
    use base64::Engine;
    let error_type = trailers.get(ERROR_TYPE_HEADER)?.to_str().ok();
    let body = trailers
        .get(ERROR_BODY_TRAILER)
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .ok()
        })
        .unwrap_or_default();
    Some(FunctionError::from_runtime(&body, error_type))
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let header_type = headers.get(ERROR_TYPE_HEADER).and_then(|v| v.to_str().ok());
    let error = match read_body(&shared, body).await {
        Ok(bytes) => FunctionError::from_runtime(&bytes, header_type),
        Err(limit) => FunctionError::unhandled(
            "Function.ResponseSizeTooLarge",
            format!("the error report is larger than {limit} bytes"),
        ),
    };
    match shared.finish(&id, RuntimeResult::Error(error)) {
        Ok(()) => accepted(),
        Err(status) => invalid_id(status),
    }
}

async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let header_type = headers.get(ERROR_TYPE_HEADER).and_then(|v| v.to_str().ok());
    let bytes = read_body(&shared, body).await.unwrap_or_default();
    let error = FunctionError::from_runtime(&bytes, header_type.or(Some("Runtime.InitError")));
    shared.die(DeathCause::InitError(error));
    accepted()
}

fn invalid_id(status: StatusCode) -> Response {
    if status == StatusCode::FORBIDDEN {
        api_error(
            status,
            "InvalidStateTransition",
            "the invocation was already answered or is not in progress",
        )
    } else {
        api_error(status, "InvalidRequestID", "unknown request id")
    }
}
