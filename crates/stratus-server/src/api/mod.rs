//! The admin API (`/v1`, bearer token), Lambda's Invoke API beside it
//! (Signature Version 4), and the public listener's router.

mod apps;
mod builds;
mod cloudevents;
mod connections;
mod credentials;
mod dlq;
mod error;
mod invoke;
mod keys;
mod lambda;
mod logs;
mod nodes;
pub(crate) mod progress;
mod queues;
mod secrets;
pub(crate) mod sigv4;
mod status;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};

pub(crate) use connections::{ConnectionCaps, admin_connections, platform_connections};
pub(crate) use credentials::AwsCredentials;
pub(crate) use error::ApiError;
pub(crate) use invoke::{invoke_error, json_payload, read_body};
pub(crate) use keys::require_app;
pub(crate) use tokens::{InstanceApi, function_credential, function_key, keyed as keyed_secret};

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
        .route("/v1/apps/{app}/versions", get(apps::versions))
        .route("/v1/deploy/git", post(apps::deploy_git))
        .route("/v1/apps/{app}/builds", get(builds::list))
        .route("/v1/apps/{app}/builds/{id}", get(builds::show))
        .route("/v1/runtimes", get(builds::runtimes))
        .route(
            "/v1/apps/{app}/git/{*rest}",
            axum::routing::any(crate::git_remote::serve),
        )
        .route(
            "/v1/apps/{app}/webhooks/git",
            axum::routing::put(crate::webhooks::create).delete(crate::webhooks::remove),
        )
        .route("/v1/apps/{app}/rollback", post(apps::rollback))
        .route(
            "/v1/apps/{app}/functions/{function}/invoke",
            post(invoke::invoke),
        )
        .route("/v1/apps/{app}/keys", get(keys::list).post(keys::create))
        .route("/v1/apps/{app}/secrets", get(secrets::list))
        .route(
            "/v1/apps/{app}/secrets/{name}",
            axum::routing::put(secrets::set).delete(secrets::remove),
        )
        .route(
            "/v1/apps/{app}/keys/{id}",
            axum::routing::delete(keys::remove),
        )
        .route("/v1/logs", get(logs::query))
        .route("/v1/status", get(status::status))
        .route("/v1/apps/{app}/failures", get(crate::failures::list))
        .route("/v1/failures/{id}", get(crate::failures::show))
        .route("/v1/failures/{id}/replay", post(crate::failures::replay))
        .route("/v1/traces/{id}", get(crate::traces::show))
        .route("/v1/apps/{app}/alerts", get(crate::alerts::list))
        .route(
            "/v1/apps/{app}/functions/{function}/profile",
            post(crate::profile::profile),
        )
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/apps/{app}/dlq", get(dlq::list))
        .route("/v1/apps/{app}/dlq/redrive", post(dlq::redrive))
        .route("/v1/apps/{app}/dlq/{id}", get(dlq::show))
        .route("/v1/apps/{app}/queues", get(queues::list))
        .route("/v1/apps/{app}/queues/{queue}/messages", post(queues::send))
        .route("/v1/apps/{app}/cloudevents", post(cloudevents::ingest))
        .route(
            "/v1/apps/{app}/buckets",
            get(crate::s3::admin::list_buckets),
        )
        .route(
            "/v1/apps/{app}/buckets/{bucket}",
            axum::routing::delete(crate::s3::admin::remove_bucket),
        )
        .route(
            "/v1/apps/{app}/buckets/{bucket}/objects",
            get(crate::s3::admin::list_objects),
        )
        .route(
            "/v1/apps/{app}/buckets/{bucket}/objects/{*key}",
            axum::routing::any(crate::s3::admin::object),
        )
        .route(
            "/v1/apps/{app}/buckets/{bucket}/presign",
            post(crate::s3::admin::presign),
        )
        .merge(crate::db::routes())
        .merge(crate::auth::admin_routes())
        .fallback(|| async {
            ApiError::not_found("no such admin API endpoint; the README lists them")
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        // Lambda's Invoke API authenticates its callers itself.
        .merge(lambda::router())
        // Probes and scrapes need no admin token.
        .merge(crate::observe::router(state.clone()))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The platform API that functions call, at `STRATUS_API_URL`: only the
/// endpoints that act for one app, and only with that app's credentials.
/// It listens apart from the admin API, which instances cannot reach.
pub(crate) fn platform_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/apps/{app}/functions/{function}/invoke",
            post(invoke::invoke),
        )
        .route(
            "/v1/apps/{app}/queues/{queue}/messages",
            post(queues::send),
        )
        .route("/v1/apps/{app}/cloudevents", post(cloudevents::ingest))
        .merge(crate::db::routes())
        .merge(crate::auth::admin_routes())
        .route(
            "/v1/apps/{app}/buckets/{bucket}/objects",
            get(crate::s3::admin::list_objects),
        )
        .route(
            "/v1/apps/{app}/buckets/{bucket}/objects/{*key}",
            axum::routing::any(crate::s3::admin::object),
        )
        .route(
            "/v1/apps/{app}/buckets/{bucket}/presign",
            post(crate::s3::admin::presign),
        )
        .fallback(|| async {
            ApiError::not_found(
                "the platform API has /v1/apps/APP/functions/FN/invoke, /v1/apps/APP/queues/QUEUE/messages, /v1/apps/APP/cloudevents, /v1/apps/APP/db/... and /v1/apps/APP/buckets/BUCKET/objects/...",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_app_credentials,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The credential a request carries: `Authorization: Bearer TOKEN`, or
/// Basic auth whose password is it (what git sends for a remote's URL
/// `http://stratus:TOKEN@HOST/...`).
fn bearer(request: &Request) -> String {
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        return token.to_owned();
    }
    authorization
        .strip_prefix("Basic ")
        .and_then(|encoded| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
        })
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(_, password)| password.to_owned())
        })
        .unwrap_or_default()
}

/// Whether `given` is a credential of the app the request acts for.
fn acts_for_app(state: &AppState, request: &Request, given: &str) -> bool {
    app_scoped(request.method(), request.uri().path()).is_some_and(|app| {
        let key = stratus_archive::sha256_hex(given.as_bytes());
        state.directory.has_key(app, &key)
            || tokens::is_instance_token(&state.platform_secret, app, given)
    })
}

async fn require_app_credentials(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if acts_for_app(&state, &request, &bearer(&request)) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer $STRATUS_API_TOKEN`, or a key of the app; they act for their own app only",
        )
        .into_response()
    }
}

/// Every admin request carries `Authorization: Bearer TOKEN` with the
/// admin token. A few endpoints that act for one app (invoking its
/// functions, sending to its queues, ingesting its CloudEvents) also take
/// that app's credentials: one of its keys (`stratus keys create`), or the
/// token the platform gives its functions (`STRATUS_API_TOKEN`).
async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let given = bearer(&request);
    let admin = constant_time_eq(given.as_bytes(), state.token.as_bytes());
    if admin || acts_for_app(&state, &request, &given) {
        next.run(request).await
    } else {
        let mut refused = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token: send `Authorization: Bearer TOKEN` with the token from DATA_DIR/admin.token (or, to invoke, send to queues or ingest events, a key of the app)",
        )
        .into_response();
        // Git asks for credentials only when told how.
        refused.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Basic realm=\"stratus\""),
        );
        refused
    }
}

/// The app an endpoint acts for, if an app's own credentials may call it.
fn app_scoped<'a>(method: &axum::http::Method, path: &'a str) -> Option<&'a str> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    // The app's documents and its buckets' objects, by any method.
    if let ["", "v1", "apps", app, "db", ..]
    | ["", "v1", "apps", app, "buckets", _, "objects", ..] = segments.as_slice()
    {
        return Some(app);
    }
    if method != axum::http::Method::POST {
        return None;
    }
    match segments.as_slice() {
        ["", "v1", "apps", app, "functions", _, "invoke"]
        | ["", "v1", "apps", app, "queues", _, "messages"]
        | ["", "v1", "apps", app, "cloudevents"]
        | ["", "v1", "apps", app, "buckets", _, "presign"]
        | ["", "v1", "apps", app, "auth", "tickets"] => Some(app),
        _ => None,
    }
}

/// Whether two secrets are equal, in time that depends on their lengths
/// only (`subtle`, which keeps the optimizer from cutting it short).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_are_equal_only_when_every_byte_and_the_length_agree() {
        assert!(constant_time_eq(b"st_abc", b"st_abc"));
        assert!(!constant_time_eq(b"st_abc", b"st_abd"));
        assert!(!constant_time_eq(b"st_abc", b"st_ab"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
