//! Sign-in on each app's host (`/_stratus/auth/...`, for pages and
//! mini-programs), and users and tickets on the admin API.
//!
//! Clients:
//! - `POST anonymous`: a new anonymous user's session.
//! - `POST signup` `{email, password}`, `POST signin` `{email, password}`.
//! - `POST ticket` `{ticket}`: the session of the user a ticket vouches for.
//! - `POST refresh` `{refresh_token}`: new tokens (the old refresh token
//!   stops working); `POST signout` `{refresh_token}` ends the session.
//! - `GET me`: the signed-in user.
//!
//! A session answers `{access_token, refresh_token, token_type,
//! expires_in, user}`.
//!
//! Admin API (and the platform API, for the app's own functions):
//! - `POST /v1/apps/{app}/auth/tickets` `{uid, claims, ttl_secs}`: a ticket.
//! - `GET /v1/apps/{app}/users`, `DELETE /v1/apps/{app}/users/{uid}`,
//!   `POST /v1/apps/{app}/users/{uid}/revoke`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use stratus_store::users::{UserRecord, UserTaken};

use super::{MAX_TICKET_TTL, auth_of, jwt, password, random, start_session, ticket_key, tokens};
use crate::AppState;
use crate::api::ApiError;
use crate::client::{Caller, ClientApp, Peer};

/// The routes clients call, under `/_stratus/auth`.
pub(crate) fn client_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/_stratus/auth/anonymous", post(anonymous))
        .route("/_stratus/auth/signup", post(signup))
        .route("/_stratus/auth/signin", post(signin))
        .route("/_stratus/auth/ticket", post(exchange_ticket))
        .route("/_stratus/auth/refresh", post(refresh))
        .route("/_stratus/auth/signout", post(signout))
        .route("/_stratus/auth/me", get(me))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// The largest sign-in request: credentials, a ticket or a token.
const MAX_BODY: usize = 16 << 10;

/// The routes on the admin API (and the platform API).
pub(crate) fn admin_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/apps/{app}/auth/tickets", post(ticket))
        .route("/v1/apps/{app}/users", get(list_users))
        .route("/v1/apps/{app}/users/{uid}", delete(remove_user))
        .route("/v1/apps/{app}/users/{uid}/revoke", post(revoke))
}

fn new_user(app: &str, uid: String, provider: &str) -> UserRecord {
    let now = crate::now_ms();
    UserRecord {
        app: app.to_owned(),
        uid,
        provider: provider.to_owned(),
        email: None,
        password_hash: None,
        claims: None,
        created_ms: now,
        last_sign_in_ms: now,
        disabled: false,
        tokens_valid_after_ms: 0,
    }
}

fn session_response(session: Value) -> Response {
    let mut response = Json(session).into_response();
    response
        .headers_mut()
        .insert("cache-control", "no-store".parse().expect("a header value"));
    response
}

async fn anonymous(
    State(state): State<Arc<AppState>>,
    Extension(ClientApp(app)): Extension<ClientApp>,
    Extension(Peer(peer)): Extension<Peer>,
) -> Result<Response, ApiError> {
    state.sessions.count_signup(&state, peer)?;
    let user = new_user(&app, format!("anon-{}", random(15)), "anonymous");
    if state.store.create_user(user.clone()).await?.is_err() {
        return Err(ApiError::internal(
            "a new user id was taken",
            "uid collision",
        ));
    }
    Ok(session_response(start_session(&state, &user).await?))
}

#[derive(Debug, Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// An email as stored: trimmed, in lower case, checked.
fn email(given: &str) -> Result<String, ApiError> {
    let email = given.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(ApiError::bad_request(
            "invalid_email",
            format!("{given:?} is not an email address"),
        ));
    }
    Ok(email)
}

async fn signup(
    State(state): State<Arc<AppState>>,
    Extension(ClientApp(app)): Extension<ClientApp>,
    Extension(Peer(peer)): Extension<Peer>,
    Json(credentials): Json<Credentials>,
) -> Result<Response, ApiError> {
    let email = email(&credentials.email)?;
    if let Some(why) = password::problem(&credentials.password) {
        return Err(ApiError::bad_request("weak_password", why));
    }
    state.sessions.count_signup(&state, peer)?;
    let hash = password::hash(credentials.password).await?;
    let mut user = new_user(&app, format!("user-{}", random(15)), "password");
    user.email = Some(email.clone());
    user.password_hash = Some(hash);
    match state.store.create_user(user.clone()).await? {
        Ok(()) => Ok(session_response(start_session(&state, &user).await?)),
        Err(UserTaken::Email) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "email_taken",
            format!("{email} already has an account; sign in instead"),
        )),
        Err(UserTaken::Uid) => Err(ApiError::internal(
            "a new user id was taken",
            "uid collision",
        )),
    }
}

async fn signin(
    State(state): State<Arc<AppState>>,
    Extension(ClientApp(app)): Extension<ClientApp>,
    Json(credentials): Json<Credentials>,
) -> Result<Response, ApiError> {
    let email = email(&credentials.email)?;
    state.sessions.attempt(&state, &app, &email)?;
    let user = state.store.user_by_email(&app, &email).await?;
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    if !password::verify(credentials.password, hash).await {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong_credentials",
            "the email or the password is wrong",
        ));
    }
    let mut user = user.expect("a verified password has its user");
    if user.disabled {
        return Err(super::unauthorized("this user is disabled"));
    }
    state.sessions.succeeded(&app, &email);
    user.last_sign_in_ms = crate::now_ms();
    let _ = state.store.update_user(user.clone()).await?;
    Ok(session_response(start_session(&state, &user).await?))
}

#[derive(Debug, Deserialize)]
struct TicketExchange {
    ticket: String,
}

async fn exchange_ticket(
    State(state): State<Arc<AppState>>,
    Extension(ClientApp(app)): Extension<ClientApp>,
    Json(request): Json<TicketExchange>,
) -> Result<Response, ApiError> {
    let claims = jwt::verify(
        &ticket_key(&state, &app),
        &request.ticket,
        &app,
        "ticket",
        super::now_secs(),
    )
    .map_err(|err| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_ticket",
            format!("{err}: a ticket is minted for this app by its functions (or a key of the app) and exchanged within minutes"),
        )
    })?;
    let uid = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let extra = claims.get("claims").cloned().unwrap_or_else(|| json!({}));
    let minted_ms = claims
        .get("iat_ms")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| claims.get("iat").and_then(Value::as_i64).unwrap_or(0) * 1000);
    let now = crate::now_ms();
    let user = match state.store.get_user(&app, &uid).await? {
        Some(mut user) => {
            if user.disabled {
                return Err(super::unauthorized("this user is disabled"));
            }
            if minted_ms < user.tokens_valid_after_ms {
                return Err(super::unauthorized(
                    "this ticket was minted before the user's sessions were revoked",
                ));
            }
            user.claims = Some(extra.to_string());
            user.last_sign_in_ms = now;
            let _ = state.store.update_user(user.clone()).await?;
            user
        }
        None => {
            let mut user = new_user(&app, uid, "custom");
            user.claims = Some(extra.to_string());
            // A user made again under a uid that was deleted: what was
            // issued to the old one does not pass for it.
            user.tokens_valid_after_ms = minted_ms;
            if state.store.create_user(user.clone()).await?.is_err() {
                // Created at the same moment by another exchange.
                state.store.get_user(&app, &user.uid).await?.unwrap_or(user)
            } else {
                user
            }
        }
    };
    state.sessions.forget(&app, &user.uid);
    Ok(session_response(start_session(&state, &user).await?))
}

#[derive(Debug, Deserialize)]
struct RefreshRequest {
    refresh_token: String,
}

fn refresh_refused() -> ApiError {
    super::unauthorized(
        "the refresh token is not valid (used already, expired, signed out or revoked)",
    )
}

async fn refresh(
    State(state): State<Arc<AppState>>,
    Extension(ClientApp(app)): Extension<ClientApp>,
    Json(request): Json<RefreshRequest>,
) -> Result<Response, ApiError> {
    let Some((id, _)) = request.refresh_token.split_once('.') else {
        return Err(refresh_refused());
    };
    let secret = random(32);
    let new = format!("{id}.{secret}");
    let now = crate::now_ms();
    let session = state
        .store
        .rotate_session(
            &app,
            id,
            &stratus_archive::sha256_hex(request.refresh_token.as_bytes()),
            &stratus_archive::sha256_hex(new.as_bytes()),
            now,
            now + state.config.auth.refresh_ttl.as_millis() as i64,
        )
        .await?
        .ok_or_else(refresh_refused)?;
    let user = state
        .store
        .get_user(&app, &session.uid)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(refresh_refused)?;
    Ok(session_response(tokens(&state, &user, id, &new, now)))
}

async fn signout(
    State(state): State<Arc<AppState>>,
    Extension(ClientApp(app)): Extension<ClientApp>,
    Json(request): Json<RefreshRequest>,
) -> Result<Response, ApiError> {
    let ended = match request.refresh_token.split_once('.') {
        Some((id, _)) => match state.store.get_session(&app, id).await? {
            Some(session)
                if crate::api::constant_time_eq(
                    session.refresh_sha256.as_bytes(),
                    stratus_archive::sha256_hex(request.refresh_token.as_bytes()).as_bytes(),
                ) =>
            {
                state.store.delete_session(&app, id).await?
            }
            _ => false,
        },
        None => false,
    };
    Ok(Json(json!({ "signed_out": ended })).into_response())
}

async fn me(caller: Caller) -> Result<Response, ApiError> {
    match caller.auth {
        Some(auth) => Ok(Json(json!({ "user": auth.to_json() })).into_response()),
        None => Err(super::unauthorized("no session was sent")),
    }
}

#[derive(Debug, Deserialize)]
struct TicketRequest {
    uid: String,
    #[serde(default)]
    claims: Option<Value>,
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// The longest uid an app may give a user.
const MAX_UID: usize = 128;

async fn ticket(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    Json(request): Json<TicketRequest>,
) -> Result<Response, ApiError> {
    if state.databases.get(&app).is_none() {
        return Err(ApiError::not_found(format!("there is no app {app}")));
    }
    if request.uid.is_empty()
        || request.uid.len() > MAX_UID
        || request.uid.chars().any(|c| c.is_control() || c == '/')
    {
        return Err(ApiError::bad_request(
            "invalid_uid",
            format!("a uid has 1 to {MAX_UID} bytes, no `/` and no control characters"),
        ));
    }
    let claims = request.claims.unwrap_or_else(|| json!({}));
    if !claims.is_object() || claims.to_string().len() > 4096 {
        return Err(ApiError::bad_request(
            "invalid_claims",
            "claims are a JSON object of at most 4 KiB",
        ));
    }
    let ttl = Duration::from_secs(request.ttl_secs.unwrap_or(300));
    if ttl.is_zero() || ttl > MAX_TICKET_TTL {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!("a ticket lasts 1 to {} seconds", MAX_TICKET_TTL.as_secs()),
        ));
    }
    let ticket = super::mint_ticket(&state, &app, &request.uid, claims, ttl);
    Ok(Json(json!({ "ticket": ticket, "expires_in": ttl.as_secs() })).into_response())
}

#[derive(Debug, Deserialize)]
struct ListParams {
    after: Option<String>,
    limit: Option<u32>,
}

async fn list_users(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let users = state
        .store
        .list_users(&app, params.after.as_deref(), limit)
        .await?;
    let next = (users.len() == limit as usize)
        .then(|| users.last().map(|u| u.uid.clone()))
        .flatten();
    Ok(Json(json!({
        "users": users.iter().map(|u| {
            let mut out = auth_of(u).to_json();
            out["created_ms"] = json!(u.created_ms);
            out["last_sign_in_ms"] = json!(u.last_sign_in_ms);
            out["disabled"] = json!(u.disabled);
            out
        }).collect::<Vec<_>>(),
        "next": next,
    }))
    .into_response())
}

async fn remove_user(
    State(state): State<Arc<AppState>>,
    Path((app, uid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let removed = state.store.delete_user(&app, &uid).await?;
    state.sessions.forget(&app, &uid);
    if !removed {
        return Err(ApiError::not_found(format!("app {app} has no user {uid}")));
    }
    Ok(Json(json!({ "uid": uid, "removed": true })).into_response())
}

async fn revoke(
    State(state): State<Arc<AppState>>,
    Path((app, uid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ended = state
        .store
        .revoke_sessions(&app, &uid, crate::now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("app {app} has no user {uid}")))?;
    state.sessions.forget(&app, &uid);
    Ok(Json(json!({ "uid": uid, "sessions_ended": ended })).into_response())
}
