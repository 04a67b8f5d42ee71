//! The admin API's one error type and its mapping to HTTP.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to an API client: a status, a stable code, a message
/// that says what to do, and optional details. Internal failures are
/// logged and answered without their internals.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
        let id = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(error = %err, error_id = %id, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; the server log has the details under error id {id}"),
        )
    }

    /// Says, in `Retry-After`, when to try again.
    pub fn retrying_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_details(mut self, details: Vec<String>) -> ApiError {
        self.details = details;
        self
    }
}

impl From<stratus_store::StoreError> for ApiError {
    fn from(err: stratus_store::StoreError) -> ApiError {
        match err {
            err @ stratus_store::StoreError::Lost { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_lost",
                err.to_string(),
            ),
            err @ stratus_store::StoreError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("{err}; deployed functions keep serving, and this works again once the database is back"),
            )
            .retrying_after(1),
            err => ApiError::internal("the store failed", err),
        }
    }
}

impl From<stratus_logs::LogsError> for ApiError {
    fn from(err: stratus_logs::LogsError) -> ApiError {
        ApiError::internal("the log store failed", err)
    }
}

impl ApiError {
    /// The JSON body it is answered with.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if !self.details.is_empty() {
            body["error"]["details"] = json!(self.details);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert("retry-after", value);
        }
        response
    }
}
