//! Apps' end users and their sessions in PostgreSQL.
//!
//! Emails are kept in lower case (lowered here), and a unique index on the
//! app and the email (where there is one) makes them unique per app. A
//! create is a plain INSERT: of several at once with the same uid or
//! email, the unique indexes let one through and make the others wait for
//! it and fail; the index that refused one says which was taken. A
//! session's refresh token is rotated by a compare-and-set on its hash.
//! Transactions that touch a user and its sessions take the user's row
//! first, then the sessions.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use stratus_store::Result as StoreResult;
use stratus_store::users::{SessionRecord, UserRecord, UserTaken, Users};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use super::{Error, PostgresStore, Result, run};

const USER_COLUMNS: &str = "app, uid, provider, email, password_hash, claims, created_ms, \
     last_sign_in_ms, disabled, tokens_valid_after_ms";

const SESSION_COLUMNS: &str = "app, id, uid, refresh_sha256, created_ms, expires_ms";

/// The constraint that keeps uids unique per app (see the schema).
const UID_CONSTRAINT: &str = "users_pkey";
/// The unique index that keeps emails unique per app (see the schema).
const EMAIL_CONSTRAINT: &str = "users_by_email";

/// An email as it is kept and compared: in lower case.
fn lower(email: Option<&str>) -> Option<String> {
    email.map(str::to_lowercase)
}

fn user_from_row(row: &Row) -> Result<UserRecord> {
    Ok(UserRecord {
        app: row.try_get(0)?,
        uid: row.try_get(1)?,
        provider: row.try_get(2)?,
        email: row.try_get(3)?,
        password_hash: row.try_get(4)?,
        claims: row.try_get(5)?,
        created_ms: row.try_get(6)?,
        last_sign_in_ms: row.try_get(7)?,
        disabled: row.try_get(8)?,
        tokens_valid_after_ms: row.try_get(9)?,
    })
}

fn session_from_row(row: &Row) -> Result<SessionRecord> {
    Ok(SessionRecord {
        app: row.try_get(0)?,
        id: row.try_get(1)?,
        uid: row.try_get(2)?,
        refresh_sha256: row.try_get(3)?,
        created_ms: row.try_get(4)?,
        expires_ms: row.try_get(5)?,
    })
}

/// What was taken, when `err` is a unique violation of the users' uid or
/// email.
fn taken(err: &Error) -> Option<UserTaken> {
    let Error::Pg(err) = err else {
        return None;
    };
    if err.code() != Some(&SqlState::UNIQUE_VIOLATION) {
        return None;
    }
    match err.as_db_error()?.constraint()? {
        UID_CONSTRAINT => Some(UserTaken::Uid),
        EMAIL_CONSTRAINT => Some(UserTaken::Email),
        _ => None,
    }
}

async fn insert_user(client: &impl GenericClient, user: &UserRecord) -> Result<()> {
    client
        .execute(
            &format!(
                "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ),
            &[
                &user.app,
                &user.uid,
                &user.provider,
                &lower(user.email.as_deref()),
                &user.password_hash,
                &user.claims,
                &user.created_ms,
                &user.last_sign_in_ms,
                &user.disabled,
                &user.tokens_valid_after_ms,
            ],
        )
        .await?;
    Ok(())
}

async fn insert_session(client: &impl GenericClient, session: &SessionRecord) -> Result<()> {
    client
        .execute(
            &format!("INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[
                &session.app,
                &session.id,
                &session.uid,
                &session.refresh_sha256,
                &session.created_ms,
                &session.expires_ms,
            ],
        )
        .await?;
    Ok(())
}

/// Removes every user of `app` and their sessions, inside the caller's
/// transaction.
pub(crate) async fn delete_app_users(tx: &impl GenericClient, app: &str) -> Result<()> {
    tx.execute("DELETE FROM users WHERE app = $1", &[&app])
        .await?;
    tx.execute("DELETE FROM sessions WHERE app = $1", &[&app])
        .await?;
    Ok(())
}

/// Every user and session, for a dump, inside the caller's transaction.
pub(crate) async fn export(
    tx: &impl GenericClient,
) -> Result<(Vec<UserRecord>, Vec<SessionRecord>)> {
    let users = tx
        .query(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY app COLLATE \"C\", uid"),
            &[],
        )
        .await?
        .iter()
        .map(user_from_row)
        .collect::<Result<_>>()?;
    let sessions = tx
        .query(
            &format!("SELECT {SESSION_COLUMNS} FROM sessions ORDER BY app COLLATE \"C\", id"),
            &[],
        )
        .await?
        .iter()
        .map(session_from_row)
        .collect::<Result<_>>()?;
    Ok((users, sessions))
}

/// Loads the users and sessions of a dump inside the caller's
/// transaction.
pub(crate) async fn import(
    tx: &impl GenericClient,
    users: &[UserRecord],
    sessions: &[SessionRecord],
) -> Result<()> {
    for user in users {
        insert_user(tx, user).await?;
    }
    for session in sessions {
        insert_session(tx, session).await?;
    }
    Ok(())
}

/// How many users the store holds, for the check that an import goes
/// into an empty store.
pub(crate) const HELD: &str = "(SELECT COUNT(*) FROM users) || ' users'";

#[async_trait]
impl Users for PostgresStore {
    async fn create_user(
        &self,
        user: UserRecord,
    ) -> StoreResult<std::result::Result<(), UserTaken>> {
        run(async {
            let client = self.client().await?;
            match insert_user(&client, &user).await {
                Ok(()) => Ok(Ok(())),
                Err(err) => match taken(&err) {
                    Some(taken) => Ok(Err(taken)),
                    None => Err(err),
                },
            }
        })
        .await
    }

    async fn update_user(
        &self,
        user: UserRecord,
    ) -> StoreResult<std::result::Result<bool, UserTaken>> {
        run(async {
            let updated = self
                .client()
                .await?
                .execute(
                    "UPDATE users SET provider = $3, email = $4, password_hash = $5, claims = $6, \
                     last_sign_in_ms = $7, disabled = $8, tokens_valid_after_ms = GREATEST(users.tokens_valid_after_ms, $9) \
                     WHERE app = $1 AND uid = $2",
                    &[
                        &user.app,
                        &user.uid,
                        &user.provider,
                        &lower(user.email.as_deref()),
                        &user.password_hash,
                        &user.claims,
                        &user.last_sign_in_ms,
                        &user.disabled,
                        &user.tokens_valid_after_ms,
                    ],
                )
                .await
                .map_err(Error::from);
            match updated {
                Ok(updated) => Ok(Ok(updated > 0)),
                Err(err) => match taken(&err) {
                    Some(taken) => Ok(Err(taken)),
                    None => Err(err),
                },
            }
        })
        .await
    }

    async fn get_user(&self, app: &str, uid: &str) -> StoreResult<Option<UserRecord>> {
        run(async {
            self.client()
                .await?
                .query_opt(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE app = $1 AND uid = $2"),
                    &[&app, &uid],
                )
                .await?
                .as_ref()
                .map(user_from_row)
                .transpose()
        })
        .await
    }

    async fn user_by_email(&self, app: &str, email: &str) -> StoreResult<Option<UserRecord>> {
        run(async {
            self.client()
                .await?
                .query_opt(
                    &format!("SELECT {USER_COLUMNS} FROM users WHERE app = $1 AND email = $2"),
                    &[&app, &email.to_lowercase()],
                )
                .await?
                .as_ref()
                .map(user_from_row)
                .transpose()
        })
        .await
    }

    async fn list_users(
        &self,
        app: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<UserRecord>> {
        run(async {
            self.client()
                .await?
                .query(
                    &format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE app = $1 \
                         AND ($2::TEXT IS NULL OR uid > $2) ORDER BY uid LIMIT $3"
                    ),
                    &[&app, &after, &i64::from(limit)],
                )
                .await?
                .iter()
                .map(user_from_row)
                .collect()
        })
        .await
    }

    async fn delete_user(&self, app: &str, uid: &str) -> StoreResult<bool> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let deleted = tx
                .execute(
                    "DELETE FROM users WHERE app = $1 AND uid = $2",
                    &[&app, &uid],
                )
                .await?;
            tx.execute(
                "DELETE FROM sessions WHERE app = $1 AND uid = $2",
                &[&app, &uid],
            )
            .await?;
            tx.commit().await?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn create_session(&self, session: SessionRecord) -> StoreResult<()> {
        run(async { insert_session(&self.client().await?, &session).await }).await
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
        run(async {
            self.client()
                .await?
                .query_opt(
                    &format!(
                        "UPDATE sessions SET refresh_sha256 = $4, expires_ms = $6 \
                         WHERE app = $1 AND id = $2 AND refresh_sha256 = $3 AND expires_ms > $5 \
                         RETURNING {SESSION_COLUMNS}"
                    ),
                    &[&app, &id, &old_sha256, &new_sha256, &now_ms, &expires_ms],
                )
                .await?
                .as_ref()
                .map(session_from_row)
                .transpose()
        })
        .await
    }

    async fn get_session(&self, app: &str, id: &str) -> StoreResult<Option<SessionRecord>> {
        run(async {
            self.client()
                .await?
                .query_opt(
                    &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE app = $1 AND id = $2"),
                    &[&app, &id],
                )
                .await?
                .as_ref()
                .map(session_from_row)
                .transpose()
        })
        .await
    }

    async fn delete_session(&self, app: &str, id: &str) -> StoreResult<bool> {
        run(async {
            let deleted = self
                .client()
                .await?
                .execute(
                    "DELETE FROM sessions WHERE app = $1 AND id = $2",
                    &[&app, &id],
                )
                .await?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn revoke_sessions(&self, app: &str, uid: &str, now_ms: i64) -> StoreResult<Option<u64>> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let found = tx
                .execute(
                    "UPDATE users SET tokens_valid_after_ms = $3 WHERE app = $1 AND uid = $2",
                    &[&app, &uid, &now_ms],
                )
                .await?;
            if found == 0 {
                return Ok(None);
            }
            let ended = tx
                .execute(
                    "DELETE FROM sessions WHERE app = $1 AND uid = $2",
                    &[&app, &uid],
                )
                .await?;
            tx.commit().await?;
            Ok(Some(ended))
        })
        .await
    }

    async fn trim_sessions(&self, before_ms: i64) -> StoreResult<u64> {
        run(async {
            Ok(self
                .client()
                .await?
                .execute("DELETE FROM sessions WHERE expires_ms < $1", &[&before_ms])
                .await?)
        })
        .await
    }
}
