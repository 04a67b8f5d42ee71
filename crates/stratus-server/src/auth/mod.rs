//! End users signing in to apps: anonymous sessions, email and password
//! (argon2id, with attempts limited), and custom sign-in, where one of the
//! app's functions (or a server of the app's, with a key of the app)
//! vouches for a user id with a signed ticket that the client exchanges
//! for a session.
//!
//! A session is a short-lived access token (a JWT, HS256, under a key
//! derived from the platform secret for the app: never stored, the same on
//! every node) and a refresh token (random; only its SHA-256 is stored),
//! rotated at each refresh, so a stolen one works once. Revoking a user
//! ends its sessions and refuses the access tokens issued before; each
//! node learns of it within [`USER_FRESH`].

mod api;
pub(crate) mod jwt;
mod password;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use stratus_store::users::{SessionRecord, UserRecord};

pub(crate) use api::{admin_routes, client_routes};

use crate::AppState;
use crate::api::ApiError;
use axum::http::StatusCode;

/// Sessions and sign-in.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// How long an end user's access token lasts
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub session_ttl: Duration,
    /// How long a refresh token lasts unused (each refresh starts it over)
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub refresh_ttl: Duration,
    /// Failed password sign-ins one email may have in 15 minutes before
    /// the next are refused (429)
    #[arg(long, default_value_t = 10)]
    pub signin_attempts: u32,
    /// New users (anonymous or by email) one client address may make in an
    /// hour
    #[arg(long, default_value_t = 1000)]
    pub signups_per_hour: u32,
}

/// The longest a ticket may last: it is for exchanging at once.
pub(crate) const MAX_TICKET_TTL: Duration = Duration::from_secs(600);
/// How long a node trusts what it read of a user (revoked, disabled).
const USER_FRESH: Duration = Duration::from_secs(10);
/// The window failed sign-ins are counted in.
const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A verified end user: what rules see as `auth`, and functions as
/// `context.auth`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Auth {
    pub uid: String,
    pub provider: String,
    pub email: Option<String>,
    pub claims: Value,
}

impl Auth {
    /// The `auth` value rules read: `{uid, provider, email, claims}`.
    pub fn to_json(&self) -> Value {
        json!({
            "uid": self.uid,
            "provider": self.provider,
            "email": self.email,
            "claims": self.claims,
        })
    }
}

/// Why a request's session was refused, for a 401.
pub(crate) fn unauthorized(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_session",
        format!("{why} (a session's access token goes in `Authorization: Bearer TOKEN`)"),
    )
}

fn session_key(state: &AppState, app: &str) -> Vec<u8> {
    crate::api::keyed_secret(&state.platform_secret, &["stratus session key", app]).into_bytes()
}

fn ticket_key(state: &AppState, app: &str) -> Vec<u8> {
    crate::api::keyed_secret(&state.platform_secret, &["stratus ticket key", app]).into_bytes()
}

/// A user as read (`None`: there is none), and when.
type ReadUser = (Instant, Option<UserRecord>);

/// What each node keeps of end users: users read recently, attempts and
/// sign-ups counted.
#[derive(Default)]
pub(crate) struct Sessions {
    users: Mutex<HashMap<(String, String), ReadUser>>,
    attempts: Mutex<HashMap<(String, String), (Instant, u32)>>,
    signups: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

fn now_secs() -> i64 {
    crate::now_ms() / 1000
}

/// Random bytes as base64url.
fn random(bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the system has randomness");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

impl Sessions {
    /// The user behind `token`, an access token of `app`.
    pub async fn verify(&self, state: &AppState, app: &str, token: &str) -> Result<Auth, ApiError> {
        let claims = jwt::verify(&session_key(state, app), token, app, "access", now_secs())
            .map_err(unauthorized)?;
        let uid = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // `iat` is in seconds; `iat_ms` says when within the second.
        let issued_ms = claims
            .get("iat_ms")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| claims.get("iat").and_then(Value::as_i64).unwrap_or(0) * 1000);
        let user = self.user(state, app, uid).await?;
        let Some(user) = user else {
            return Err(unauthorized("the user of this session was deleted"));
        };
        if user.disabled {
            return Err(unauthorized("this user is disabled"));
        }
        if issued_ms < user.tokens_valid_after_ms {
            return Err(unauthorized("this user's sessions were revoked"));
        }
        Ok(auth_of(&user))
    }

    /// `app`'s user `uid`, as read within the last few seconds.
    async fn user(
        &self,
        state: &AppState,
        app: &str,
        uid: &str,
    ) -> Result<Option<UserRecord>, ApiError> {
        let key = (app.to_owned(), uid.to_owned());
        if let Some((at, user)) = self
            .users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < USER_FRESH
        {
            return Ok(user.clone());
        }
        let user = state.store.get_user(app, uid).await?;
        self.remember(key, user.clone());
        Ok(user)
    }

    fn remember(&self, key: (String, String), user: Option<UserRecord>) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() > 100_000 {
            users.retain(|_, (at, _)| at.elapsed() < USER_FRESH);
        }
        users.insert(key, (Instant::now(), user));
    }

    /// Forgets what this node read of a user (it changed here).
    fn forget(&self, app: &str, uid: &str) {
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(app.to_owned(), uid.to_owned()));
    }

    /// Counts a new user made from `peer`; refuses beyond the hourly limit.
    fn count_signup(&self, state: &AppState, peer: IpAddr) -> Result<(), ApiError> {
        let limit = state.config.auth.signups_per_hour;
        let mut signups = self.signups.lock().unwrap_or_else(|p| p.into_inner());
        if signups.len() > 100_000 {
            signups.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(3600));
        }
        let entry = signups.entry(peer).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(3600) {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= limit {
            let wait = 3600_u64.saturating_sub(entry.0.elapsed().as_secs()).max(1);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_signups",
                format!("{limit} new users came from this address in the last hour (--signups-per-hour); try again later"),
            )
            .retrying_after(wait));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Counts a password sign-in for `email` before it is checked (so that
    /// attempts sent at once count, each), or refuses it while too many
    /// failed; a success forgets the count ([`Sessions::succeeded`]).
    fn attempt(&self, state: &AppState, app: &str, email: &str) -> Result<(), ApiError> {
        let limit = state.config.auth.signin_attempts;
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if attempts.len() > 100_000 {
            attempts.retain(|_, (since, _)| since.elapsed() < ATTEMPT_WINDOW);
        }
        let entry = attempts
            .entry((app.to_owned(), email.to_owned()))
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= ATTEMPT_WINDOW {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= limit {
            let wait = ATTEMPT_WINDOW
                .saturating_sub(entry.0.elapsed())
                .as_secs()
                .max(1);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!(
                    "{} sign-ins with a wrong password for this email in 15 minutes (--signin-attempts {limit}); wait {wait} s",
                    entry.1
                ),
            )
            .retrying_after(wait));
        }
        entry.1 += 1;
        Ok(())
    }

    fn succeeded(&self, app: &str, email: &str) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(app.to_owned(), email.to_owned()));
    }
}

fn auth_of(user: &UserRecord) -> Auth {
    Auth {
        uid: user.uid.clone(),
        provider: user.provider.clone(),
        email: user.email.clone(),
        claims: user
            .claims
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_else(|| json!({})),
    }
}

/// A new session of `user`: its tokens, as the client gets them.
async fn start_session(state: &AppState, user: &UserRecord) -> Result<Value, ApiError> {
    let id = random(16);
    let secret = random(32);
    let refresh = format!("{id}.{secret}");
    // Before the session is stored: a revocation from then on refuses it.
    let now = crate::now_ms();
    state
        .store
        .create_session(SessionRecord {
            app: user.app.clone(),
            id: id.clone(),
            uid: user.uid.clone(),
            refresh_sha256: stratus_archive::sha256_hex(refresh.as_bytes()),
            created_ms: now,
            expires_ms: now + state.config.auth.refresh_ttl.as_millis() as i64,
        })
        .await?;
    Ok(tokens(state, user, &id, &refresh, now))
}

/// The access token for session `id` of `user`, with its refresh token.
/// `now_ms` is when the session was stored or refreshed, taken before the
/// store was asked: a revocation from then on refuses these tokens.
fn tokens(state: &AppState, user: &UserRecord, id: &str, refresh: &str, now_ms: i64) -> Value {
    let now = now_ms / 1000;
    let ttl = state.config.auth.session_ttl.as_secs() as i64;
    let auth = auth_of(user);
    let mut claims = Map::new();
    claims.insert("iss".into(), json!("stratus"));
    claims.insert("aud".into(), json!(user.app));
    claims.insert("typ".into(), json!("access"));
    claims.insert("sub".into(), json!(user.uid));
    claims.insert("sid".into(), json!(id));
    claims.insert("provider".into(), json!(user.provider));
    claims.insert("iat".into(), json!(now));
    claims.insert("iat_ms".into(), json!(now_ms));
    claims.insert("exp".into(), json!(now + ttl));
    let access = jwt::sign(&session_key(state, &user.app), &claims);
    json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": ttl,
        "user": auth.to_json(),
    })
}

/// A ticket vouching for `uid` of `app`, with `claims`, for `ttl`.
pub(crate) fn mint_ticket(
    state: &AppState,
    app: &str,
    uid: &str,
    claims: Value,
    ttl: Duration,
) -> String {
    let now_ms = crate::now_ms();
    let now = now_ms / 1000;
    let mut body = Map::new();
    body.insert("iss".into(), json!("stratus"));
    body.insert("aud".into(), json!(app));
    body.insert("typ".into(), json!("ticket"));
    body.insert("sub".into(), json!(uid));
    body.insert("claims".into(), claims);
    body.insert("iat".into(), json!(now));
    body.insert("iat_ms".into(), json!(now_ms));
    body.insert("exp".into(), json!(now + ttl.as_secs() as i64));
    jwt::sign(&ticket_key(state, app), &body)
}

/// How often expired sessions are forgotten.
const TRIM_EVERY: Duration = Duration::from_secs(600);

/// Forgets expired sessions now and then, until the server stops.
pub(crate) async fn keep(state: std::sync::Arc<AppState>) {
    loop {
        tokio::time::sleep(TRIM_EVERY).await;
        match state.store.trim_sessions(crate::now_ms()).await {
            Ok(0) => {}
            Ok(trimmed) => tracing::debug!(trimmed, "expired sessions forgotten"),
            Err(err) => tracing::debug!(%err, "forgetting expired sessions failed"),
        }
    }
}
