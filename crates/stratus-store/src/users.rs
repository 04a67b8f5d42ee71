//! Apps' end users and their sessions: who signed in to an app (anonymously,
//! by email and password, or vouched for by one of the app's functions),
//! and the refresh tokens that keep them signed in.

use async_trait::async_trait;

use crate::Result;

/// One end user of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub app: String,
    /// Unique within the app: the platform's for anonymous and password
    /// users, the app's own for custom sign-in.
    pub uid: String,
    /// How the user signs in: `anonymous`, `password` or `custom`.
    pub provider: String,
    /// Unique within the app when given (kept in lower case).
    pub email: Option<String>,
    /// The password's argon2 hash (PHC string), for `password` users.
    pub password_hash: Option<String>,
    /// Claims the app gave the user (a JSON object as text), from its
    /// last custom sign-in.
    pub claims: Option<String>,
    pub created_ms: i64,
    pub last_sign_in_ms: i64,
    /// A disabled user cannot sign in or refresh a session.
    pub disabled: bool,
    /// Access tokens issued before this are refused: set when the user's
    /// sessions are revoked.
    pub tokens_valid_after_ms: i64,
}

/// A session: what a refresh token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub app: String,
    /// Random, unique; named in the session's access tokens.
    pub id: String,
    pub uid: String,
    /// The SHA-256 (hex) of its current refresh token; the token itself
    /// is never stored.
    pub refresh_sha256: String,
    pub created_ms: i64,
    /// When the refresh token stops working, unless refreshed before.
    pub expires_ms: i64,
}

/// A user that could not be created: its uid or email is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserTaken {
    Uid,
    Email,
}

/// Apps' end users and their sessions.
#[async_trait]
pub trait Users: Send + Sync {
    /// Adds a user, unless its uid or email is taken in its app.
    async fn create_user(&self, user: UserRecord) -> Result<std::result::Result<(), UserTaken>>;

    /// Replaces a user's provider, email, hash, claims, last sign-in and
    /// disabled flag, and moves `tokens_valid_after_ms` forward to the one
    /// given (never back: a revocation made meanwhile stands); whether it
    /// exists. [`UserTaken::Email`] (and nothing
    /// changed) when another user of the app has the email.
    async fn update_user(&self, user: UserRecord) -> Result<std::result::Result<bool, UserTaken>>;

    async fn get_user(&self, app: &str, uid: &str) -> Result<Option<UserRecord>>;

    /// The user of `app` with `email` (compared in lower case).
    async fn user_by_email(&self, app: &str, email: &str) -> Result<Option<UserRecord>>;

    /// Up to `limit` users of `app` by uid, after `after`.
    async fn list_users(
        &self,
        app: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<UserRecord>>;

    /// Deletes a user and its sessions; whether it existed.
    async fn delete_user(&self, app: &str, uid: &str) -> Result<bool>;

    async fn create_session(&self, session: SessionRecord) -> Result<()>;

    /// Replaces a session's refresh token, if `old_sha256` is its current
    /// one and it has not expired at `now_ms`: the session as it is now,
    /// its expiry moved to `expires_ms`. A token used twice finds nothing
    /// the second time.
    async fn rotate_session(
        &self,
        app: &str,
        id: &str,
        old_sha256: &str,
        new_sha256: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Option<SessionRecord>>;

    async fn get_session(&self, app: &str, id: &str) -> Result<Option<SessionRecord>>;

    /// Ends one session; whether it existed.
    async fn delete_session(&self, app: &str, id: &str) -> Result<bool>;

    /// Ends every session of a user and refuses the access tokens issued
    /// before `now_ms` (its `tokens_valid_after_ms`), in one transaction;
    /// how many sessions ended, `None` when there is no such user.
    async fn revoke_sessions(&self, app: &str, uid: &str, now_ms: i64) -> Result<Option<u64>>;

    /// Forgets sessions that expired before `before_ms`; how many.
    async fn trim_sessions(&self, before_ms: i64) -> Result<u64>;
}
