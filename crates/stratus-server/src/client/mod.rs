//! What the platform serves on every app's host under `/_stratus/`, for
//! the app's pages and mini-programs: the client SDK (`sdk.js`), sign-in
//! (`auth/...`), the document database under the collections' rules
//! (`db/...`), realtime watches of queries (`watch`, a WebSocket), files in
//! the app's buckets under their rules (`files/...`), and calls of the
//! functions that declare `callable: true` (`call/NAME`). Every call is
//! plain HTTP and JSON, with the session's access token in
//! `Authorization: Bearer`.
//!
//! Tokens travel in a header, never a cookie, so any origin may call:
//! answers allow every origin (CORS), and preflights are answered here.

mod files;
pub(crate) mod watch;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::AppState;
use crate::api::ApiError;
use crate::auth::Auth;

/// The JavaScript client SDK, an ES module.
const SDK: &str = include_str!("sdk.js");

/// The app a request on the public listener is for.
#[derive(Debug, Clone)]
pub(crate) struct ClientApp(pub String);

/// The address a request came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub IpAddr);

/// Who calls: the app whose host they call, and the end user their
/// access token names (none when they sent none).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub app: String,
    pub auth: Option<Auth>,
}

impl Caller {
    /// What rules read as `auth`: the user, or null.
    pub fn auth_json(&self) -> Option<Value> {
        self.auth.as_ref().map(Auth::to_json)
    }
}

/// The access token a request carries: `Authorization: Bearer`, or (for a
/// WebSocket, which browsers open without headers) `?access_token=`.
pub(crate) fn token_of(headers: &axum::http::HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(token.trim().to_owned()).filter(|t| !t.is_empty());
    }
    query.and_then(|query| {
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == "access_token" && !value.is_empty()).then(|| value.to_owned())
        })
    })
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        let Some(ClientApp(app)) = parts.extensions.get::<ClientApp>().cloned() else {
            return Err(ApiError::internal(
                "a client request without its app",
                "no ClientApp",
            ));
        };
        let auth = match token_of(&parts.headers, parts.uri.query()) {
            Some(token) => Some(state.sessions.verify(state, &app, &token).await?),
            None => None,
        };
        Ok(Caller { app, auth })
    }
}

/// `/_stratus/...` of every app's host.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/_stratus/sdk.js", get(sdk))
        .route("/_stratus/call/{function}", post(call))
        .route("/_stratus/watch", get(watch::upgrade))
        .merge(crate::auth::client_routes())
        .merge(crate::db::client::routes())
        .merge(files::routes())
        .fallback(|| async {
            ApiError::not_found(
                "/_stratus/ has sdk.js, auth/..., db/..., watch, files/... and call/FUNCTION; the README's \"Clients\" section lists them",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn sdk() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SDK,
    )
}

/// `POST /_stratus/call/{function}`: runs a function that declares
/// `callable: true` with the JSON body as its event and the caller's
/// `auth` in its context; answers its result, or its error as a 500.
async fn call(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(function): Path<String>,
    body: Body,
) -> Result<Response<Body>, ApiError> {
    let callable = state
        .scheduler
        .app_pools(&caller.app)
        .into_iter()
        .find(|p| p.config.spec.name == function)
        .is_some_and(|p| p.config.spec.callable);
    if !callable {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_callable",
            format!(
                "app {} has no function {function} that clients may call; a function clients call declares `callable: true`",
                caller.app
            ),
        ));
    }
    let payload = crate::api::json_payload(crate::api::read_body(&state, body).await?)?;
    let mut invocation = stratus_scheduler::Invocation::new(payload);
    invocation.client_context =
        Some(json!({ "custom": { "auth": caller.auth_json() } }).to_string());
    let outcome = state
        .scheduler
        .invoke(&caller.app, &function, invocation)
        .await
        .map_err(crate::api::invoke_error)?;
    let (status, body): (StatusCode, Bytes) = match &outcome.result {
        Ok(body) => (StatusCode::OK, body.clone()),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from(
                json!({ "error": {
                    "code": "function_error",
                    "message": error.message,
                    "type": error.error_type,
                } })
                .to_string(),
            ),
        ),
    };
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The client API as the public listener's gateway reaches it.
pub(crate) struct Api(Router);

impl Api {
    pub fn new(state: Arc<AppState>) -> Api {
        Api(router(state))
    }
}

#[async_trait::async_trait]
impl crate::public::ClientApi for Api {
    async fn serve(
        &self,
        app: &str,
        peer: SocketAddr,
        mut request: Request<Body>,
    ) -> Response<Body> {
        if request.method() == Method::OPTIONS {
            return preflight();
        }
        request.extensions_mut().insert(ClientApp(app.to_owned()));
        request.extensions_mut().insert(Peer(peer.ip()));
        // A router is always ready: no `poll_ready` is needed.
        let mut response = match tower_service::Service::call(&mut self.0.clone(), request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
        response
    }
}

/// What a page may read of an answer besides the simple headers.
const EXPOSED: &str = "retry-after, etag, content-range, content-length, last-modified";

/// Every origin may call, with a token in `Authorization`.
fn preflight() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, range, if-match, if-none-match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}
