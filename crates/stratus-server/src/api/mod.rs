//! The admin API (`/v1`, bearer token) and the public listener's router.

mod apps;
mod dlq;
mod error;
mod invoke;
mod keys;
mod logs;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

pub(crate) use error::ApiError;

use crate::AppState;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/health",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route(
            "/v1/packages/{sha256}",
            put(apps::put_package).head(apps::head_package),
        )
        .route("/v1/apps", get(apps::list))
        .route("/v1/apps/{app}", get(apps::show).delete(apps::remove))
        .route("/v1/apps/{app}/deploy", post(apps::deploy))
        .route(
            "/v1/apps/{app}/functions/{function}/invoke",
            post(invoke::invoke),
        )
        .route("/v1/apps/{app}/keys", get(keys::list).post(keys::create))
        .route(
            "/v1/apps/{app}/keys/{id}",
            axum::routing::delete(keys::remove),
        )
        .route("/v1/logs", get(logs::query))
        .route("/v1/status", get(status::status))
        .route("/v1/apps/{app}/dlq", get(dlq::list))
        .route("/v1/apps/{app}/dlq/redrive", post(dlq::redrive))
        .route("/v1/apps/{app}/dlq/{id}", get(dlq::show))
        .fallback(|| async {
            ApiError::not_found("no such admin API endpoint; the README lists them")
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Every admin request carries `Authorization: Bearer TOKEN`.
async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), state.token.as_bytes()) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token: send `Authorization: Bearer TOKEN` with the token from DATA_DIR/admin.token",
        )
        .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
