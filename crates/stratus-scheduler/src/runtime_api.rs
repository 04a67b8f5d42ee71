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

use crate::instance::{DeathCause, RuntimeResult, Shared};
use crate::invocation::FunctionError;

const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";

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
        let deadline_ms = crate::now_ms() + dispatch.timeout.as_millis() as i64;
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
        set("lambda-runtime-trace-id", &dispatch.trace_id);
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
    body: Body,
) -> Response {
    let result = match read_body(&shared, body).await {
        Ok(bytes) => RuntimeResult::Response(bytes),
        Err(limit) => RuntimeResult::Error(FunctionError::unhandled(
            "Function.ResponseSizeTooLarge",
            format!("the response is larger than the limit of {limit} bytes"),
        )),
    };
    let too_large = matches!(result, RuntimeResult::Error(_));
    match shared.finish(&id, result).await {
        Ok(()) if too_large => api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "the response exceeds the size limit",
        ),
        Ok(()) => accepted(),
        Err(status) => invalid_id(status),
    }
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
    match shared.finish(&id, RuntimeResult::Error(error)).await {
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
