//! Apps' end users and their sessions in SQLite.
//!
//! Emails are kept in lower case (lowered here, not by SQLite's ASCII-only
//! `lower`), so that a plain unique index on the app and the email makes
//! them unique per app whatever their case. Calls run one at a time on the
//! one connection, so a create checks the uid and the email it takes in
//! its transaction before it inserts.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use stratus_store::Result as StoreResult;
use stratus_store::users::{SessionRecord, UserRecord, UserTaken, Users};

use super::{Result, SqliteStore};

const USER_COLUMNS: &str = "app, uid, provider, email, password_hash, claims, created_ms, \
     last_sign_in_ms, disabled, tokens_valid_after_ms";

const SESSION_COLUMNS: &str = "app, id, uid, refresh_sha256, created_ms, expires_ms";

/// An email as it is kept and compared: in lower case.
fn lower(email: Option<&str>) -> Option<String> {
    email.map(str::to_lowercase)
}

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        app: row.get(0)?,
        uid: row.get(1)?,
        provider: row.get(2)?,
        email: row.get(3)?,
        password_hash: row.get(4)?,
        claims: row.get(5)?,
        created_ms: row.get(6)?,
        last_sign_in_ms: row.get(7)?,
        disabled: row.get(8)?,
        tokens_valid_after_ms: row.get(9)?,
    })
}

fn session_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        app: row.get(0)?,
        id: row.get(1)?,
        uid: row.get(2)?,
        refresh_sha256: row.get(3)?,
        created_ms: row.get(4)?,
        expires_ms: row.get(5)?,
    })
}

/// Whether `app` has a user `uid`.
fn user_exists(conn: &Connection, app: &str, uid: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE app = ?1 AND uid = ?2")?
        .query_row(params![app, uid], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether a user of `app` other than `uid` has `email`.
fn email_taken(conn: &Connection, app: &str, uid: &str, email: Option<&str>) -> Result<bool> {
    let Some(email) = email else {
        return Ok(false);
    };
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE app = ?1 AND email = ?2 AND uid != ?3")?
        .query_row(params![app, email, uid], |_| Ok(()))
        .optional()?
        .is_some())
}

fn insert_user(conn: &Connection, user: &UserRecord) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        user.app,
        user.uid,
        user.provider,
        lower(user.email.as_deref()),
        user.password_hash,
        user.claims,
        user.created_ms,
        user.last_sign_in_ms,
        user.disabled,
        user.tokens_valid_after_ms
    ])?;
    Ok(())
}

fn insert_session(conn: &Connection, session: &SessionRecord) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    ))?
    .execute(params![
        session.app,
        session.id,
        session.uid,
        session.refresh_sha256,
        session.created_ms,
        session.expires_ms
    ])?;
    Ok(())
}

/// Removes every user of `app` and their sessions, inside the caller's
/// transaction.
pub(crate) fn delete_app_users(conn: &Connection, app: &str) -> Result<()> {
    conn.execute("DELETE FROM sessions WHERE app = ?1", [app])?;
    conn.execute("DELETE FROM users WHERE app = ?1", [app])?;
    Ok(())
}

/// Every user and session, for a dump.
pub(crate) fn export(conn: &Connection) -> Result<(Vec<UserRecord>, Vec<SessionRecord>)> {
    let users = conn
        .prepare(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY app, uid"
        ))?
        .query_map([], user_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    let sessions = conn
        .prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY app, id"
        ))?
        .query_map([], session_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok((users, sessions))
}

/// Loads the users and sessions of a dump inside the caller's transaction.
pub(crate) fn import(
    conn: &Connection,
    users: &[UserRecord],
    sessions: &[SessionRecord],
) -> Result<()> {
    for user in users {
        insert_user(conn, user)?;
    }
    for session in sessions {
        insert_session(conn, session)?;
    }
    Ok(())
}

/// How many users the store holds, for the check that an import goes
/// into an empty store.
pub(crate) const HELD: &str = "(SELECT COUNT(*) FROM users) || ' users'";

#[async_trait]
impl Users for SqliteStore {
    async fn create_user(
        &self,
        user: UserRecord,
    ) -> StoreResult<std::result::Result<(), UserTaken>> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if user_exists(&tx, &user.app, &user.uid)? {
                return Ok(Err(UserTaken::Uid));
            }
            let email = lower(user.email.as_deref());
            if email_taken(&tx, &user.app, &user.uid, email.as_deref())? {
                return Ok(Err(UserTaken::Email));
            }
            insert_user(&tx, &user)?;
            tx.commit()?;
            Ok(Ok(()))
        })
        .await
    }

    async fn update_user(
        &self,
        user: UserRecord,
    ) -> StoreResult<std::result::Result<bool, UserTaken>> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !user_exists(&tx, &user.app, &user.uid)? {
                return Ok(Ok(false));
            }
            let email = lower(user.email.as_deref());
            if email_taken(&tx, &user.app, &user.uid, email.as_deref())? {
                return Ok(Err(UserTaken::Email));
            }
            let updated = tx
                .prepare_cached(
                    "UPDATE users SET provider = ?3, email = ?4, password_hash = ?5, claims = ?6, \
                     last_sign_in_ms = ?7, disabled = ?8, tokens_valid_after_ms = MAX(tokens_valid_after_ms, ?9) \
                     WHERE app = ?1 AND uid = ?2",
                )?
                .execute(params![
                    user.app,
                    user.uid,
                    user.provider,
                    email,
                    user.password_hash,
                    user.claims,
                    user.last_sign_in_ms,
                    user.disabled,
                    user.tokens_valid_after_ms
                ])?;
            tx.commit()?;
            Ok(Ok(updated > 0))
        })
        .await
    }

    async fn get_user(&self, app: &str, uid: &str) -> StoreResult<Option<UserRecord>> {
        let (app, uid) = (app.to_owned(), uid.to_owned());
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE app = ?1 AND uid = ?2"
                ))?
                .query_row(params![app, uid], user_from_row)
                .optional()?)
        })
        .await
    }

    async fn user_by_email(&self, app: &str, email: &str) -> StoreResult<Option<UserRecord>> {
        let (app, email) = (app.to_owned(), email.to_lowercase());
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE app = ?1 AND email = ?2"
                ))?
                .query_row(params![app, email], user_from_row)
                .optional()?)
        })
        .await
    }

    async fn list_users(
        &self,
        app: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<UserRecord>> {
        let (app, after) = (app.to_owned(), after.map(str::to_owned));
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE app = ?1 AND (?2 IS NULL OR uid > ?2) \
                 ORDER BY uid LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![app, after, i64::from(limit)], user_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn delete_user(&self, app: &str, uid: &str) -> StoreResult<bool> {
        let (app, uid) = (app.to_owned(), uid.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let deleted = tx.execute(
                "DELETE FROM users WHERE app = ?1 AND uid = ?2",
                params![app, uid],
            )?;
            tx.execute(
                "DELETE FROM sessions WHERE app = ?1 AND uid = ?2",
                params![app, uid],
            )?;
            tx.commit()?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn create_session(&self, session: SessionRecord) -> StoreResult<()> {
        self.call(move |conn| insert_session(conn, &session)).await
    }

    async fn rotate_session(
        &self,
        app: &str,
        id: &str,
        old_sha256: &str,
        new_sha256: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> StoreResult<Option<SessionRecord>> {
        let (app, id, old, new) = (
            app.to_owned(),
            id.to_owned(),
            old_sha256.to_owned(),
            new_sha256.to_owned(),
        );
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "UPDATE sessions SET refresh_sha256 = ?4, expires_ms = ?6 \
                     WHERE app = ?1 AND id = ?2 AND refresh_sha256 = ?3 AND expires_ms > ?5 \
                     RETURNING {SESSION_COLUMNS}"
                ))?
                .query_row(
                    params![app, id, old, new, now_ms, expires_ms],
                    session_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn get_session(&self, app: &str, id: &str) -> StoreResult<Option<SessionRecord>> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE app = ?1 AND id = ?2"
                ))?
                .query_row(params![app, id], session_from_row)
                .optional()?)
        })
        .await
    }

    async fn delete_session(&self, app: &str, id: &str) -> StoreResult<bool> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.call(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM sessions WHERE app = ?1 AND id = ?2",
                params![app, id],
            )?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn revoke_sessions(&self, app: &str, uid: &str, now_ms: i64) -> StoreResult<Option<u64>> {
        let (app, uid) = (app.to_owned(), uid.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found = tx.execute(
                "UPDATE users SET tokens_valid_after_ms = ?3 WHERE app = ?1 AND uid = ?2",
                params![app, uid, now_ms],
            )?;
            if found == 0 {
                return Ok(None);
            }
            let ended = tx.execute(
                "DELETE FROM sessions WHERE app = ?1 AND uid = ?2",
                params![app, uid],
            )?;
            tx.commit()?;
            Ok(Some(ended as u64))
        })
        .await
    }

    async fn trim_sessions(&self, before_ms: i64) -> StoreResult<u64> {
        self.call(move |conn| {
            let deleted =
                conn.execute("DELETE FROM sessions WHERE expires_ms < ?1", [before_ms])?;
            Ok(deleted as u64)
        })
        .await
    }
}
