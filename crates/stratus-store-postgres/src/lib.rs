//! The cluster store: platform state in PostgreSQL, which several nodes
//! share.
//!
//! The client is `tokio-postgres` with a `deadpool` pool: the driver is
//! async and needs no compile-time database; queries are plain SQL, close
//! to the SQLite backend's, and prepared once per connection. sqlx would
//! bring macros, a runtime abstraction and a second SQLite driver beside
//! `rusqlite` for the same work.
//!
//! Migrations run at start, each in a transaction that first takes an
//! advisory lock, so that nodes starting together migrate once; a schema
//! newer than this build knows is refused.

mod changes;
mod documents;
mod schema;
mod users;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use stratus_store::Result as StoreResult;
use stratus_store::{
    AlertChange, AlertRecord, Alerts, AppRecord, Apps, AwsCredentialRecord, Backlog, Backlogs,
    BucketCreated, BucketDeleted, BucketRecord, BuildRecord, BuildStatus, Builds, Changes,
    Completed, Credentials, DeadLetter, Dump, EventCounts, EventRecord, Events, FailureRecord,
    Failures, FollowUp, KeyRecord, Leases, LogBudget, LogQuery, LogRecord, LogStore, MessageRecord,
    MessageSettlement, Messages, Meta, MetaKey, NewEvent, NewMessage, NewVersion, NoSuchBucket,
    NoSuchUpload, NodeRecord, Nodes, ObjectRecord, ObjectUsage, Objects, PackageRecord, Packages,
    PartRecord, QueueCounts, ScheduleSlot, Schedules, SecretRecord, Secrets, Settlement,
    SharedPackages, Source, StoreError, StoredLog, Transfer, Trimmed, UnitOfWork, UploadRecord,
    VersionRecord, Write,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// Connections a node keeps to the database, at most.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Longest wait for a connection of the pool, or for a new one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The advisory lock migrations take (an arbitrary, fixed key).
const MIGRATION_LOCK: i64 = 0x5354_5241_5455_5301;
/// Bytes of a package in one row.
const PACKAGE_CHUNK: usize = 1 << 20;
/// Log records deleted in one statement while trimming.
const TRIM_CHUNK: i64 = 1000;
/// Bytes a log record counts for toward the budget.
const LOG_SIZE: &str = "octet_length(message) + COALESCE(octet_length(fields), 0)";

/// An error inside this backend, before it leaves as a [`StoreError`].
#[derive(Debug)]
enum Error {
    Pg(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
    Store(StoreError),
}

type Result<T, E = Error> = std::result::Result<T, E>;

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Error {
        Error::Pg(err)
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(err: deadpool_postgres::PoolError) -> Error {
        Error::Pool(err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Error {
        Error::Store(StoreError::Corrupt(err))
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Error {
        Error::Store(err)
    }
}

impl From<Error> for StoreError {
    fn from(err: Error) -> StoreError {
        match err {
            Error::Pg(err) if err.code() == Some(&SqlState::DISK_FULL) => {
                StoreError::DiskFull(err.to_string())
            }
            // No answer from the server (a closed or broken connection)
            // rather than an error it reported.
            Error::Pg(err) if err.is_closed() || err.code().is_none() => {
                StoreError::Unavailable(err.to_string())
            }
            Error::Pg(err) => StoreError::Database(Box::new(err)),
            Error::Pool(err) => StoreError::Unavailable(err.to_string()),
            Error::Store(err) => err,
        }
    }
}

async fn run<T>(work: impl Future<Output = Result<T>>) -> StoreResult<T> {
    work.await.map_err(StoreError::from)
}

/// The PostgreSQL store: a pool of connections to one database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    changes: std::sync::Arc<changes::Feed>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER@HOST/DB`) with
    /// at most `pool_size` connections, and migrates it. Fails when the
    /// database cannot be reached, saying why.
    pub async fn connect(url: &str, pool_size: usize) -> StoreResult<PostgresStore> {
        let config: tokio_postgres::Config = url.parse().map_err(|err| {
            StoreError::Database(format!("{url:?} is not a PostgreSQL URL: {err}").into())
        })?;
        let changes = std::sync::Arc::new(changes::Feed::new(config.clone()));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|err| StoreError::Database(Box::new(err)))?;
        let store = PostgresStore { pool, changes };
        run(store.migrate()).await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let known = schema::MIGRATIONS.len() as i64;
        loop {
            let tx = client.transaction().await?;
            // Under the lock, so that nodes starting together take turns,
            // the schema table included.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS stratus_schema (version BIGINT NOT NULL, readable_from BIGINT NOT NULL DEFAULT 1)",
            )
            .await?;
            let (current, readable_from): (i64, i64) = tx
                .query_opt("SELECT version, readable_from FROM stratus_schema", &[])
                .await?
                .map_or((0, 0), |row| (row.get(0), row.get(1)));
            if readable_from > known {
                return Err(StoreError::NewerSchema {
                    found: current,
                    known,
                }
                .into());
            }
            if current > known {
                tracing::warn!(
                    schema = current,
                    known,
                    "the PostgreSQL store was migrated by a newer stratus; this node works alongside it until it is upgraded too"
                );
                return Ok(());
            }
            if current == known {
                return Ok(());
            }
            tx.batch_execute(schema::MIGRATIONS[current as usize])
                .await?;
            let readable_from = schema::READABLE_FROM.min(current + 1);
            if current == 0 {
                tx.execute(
                    "INSERT INTO stratus_schema (version, readable_from) VALUES (1, $1)",
                    &[&readable_from],
                )
                .await?;
            } else {
                tx.execute(
                    "UPDATE stratus_schema SET version = $1, readable_from = $2",
                    &[&(current + 1), &readable_from],
                )
                .await?;
            }
            tx.commit().await?;
            tracing::info!(version = current + 1, "migrated the PostgreSQL store");
        }
    }
}

fn app_from_row(row: &Row) -> AppRecord {
    AppRecord {
        name: row.get(0),
        active_version: row.get::<_, Option<i64>>(1).map(|v| v as u32),
        created_ms: row.get(2),
        updated_ms: row.get(3),
    }
}

const VERSION_COLUMNS: &str =
    "v.app, v.version, v.spec, v.manifest, v.packages, v.created_ms, v.source, v.layers";

fn version_from_row(row: &Row) -> Result<VersionRecord> {
    Ok(VersionRecord {
        app: row.get(0),
        version: row.get::<_, i64>(1) as u32,
        spec: serde_json::from_str(row.get(2))?,
        manifest: row.get(3),
        packages: serde_json::from_str(row.get(4))?,
        created_ms: row.get(5),
        source: row.get(6),
        layers: serde_json::from_str(row.get(7))?,
    })
}

const EVENT_COLUMNS: &str = "id, app, function, payload, request_id, source, attempts, created_ms, not_before_ms, lease_until_ms, last_error, trace";

fn event_from_row(row: &Row) -> EventRecord {
    EventRecord {
        id: row.get(0),
        app: row.get(1),
        function: row.get(2),
        payload: row.get(3),
        request_id: row.get(4),
        source: Source::from(row.get::<_, &str>(5)),
        attempts: row.get::<_, i64>(6) as u32,
        created_ms: row.get(7),
        not_before_ms: row.get(8),
        lease_until_ms: row.get(9),
        last_error: row.get(10),
        trace: row.get(11),
    }
}

const AWS_CREDENTIAL_COLUMNS: &str = "access_key_id, app, name, secret, created_ms";

fn aws_credential_from_row(row: &Row) -> AwsCredentialRecord {
    AwsCredentialRecord {
        access_key_id: row.get(0),
        app: row.get(1),
        name: row.get(2),
        secret: row.get(3),
        created_ms: row.get(4),
    }
}

const DEAD_LETTER_COLUMNS: &str = "id, event_id, app, function, payload, request_id, source, attempts, created_ms, failed_ms, error";

fn dead_letter_from_row(row: &Row) -> DeadLetter {
    DeadLetter {
        id: row.get(0),
        event_id: row.get(1),
        app: row.get(2),
        function: row.get(3),
        payload: row.get(4),
        request_id: row.get(5),
        source: Source::from(row.get::<_, &str>(6)),
        attempts: row.get::<_, i64>(7) as u32,
        created_ms: row.get(8),
        failed_ms: row.get(9),
        error: row.get(10),
    }
}

const MESSAGE_COLUMNS: &str =
    "id, app, queue, body, message_id, source, receives, sent_ms, visible_ms, last_error, trace";

fn message_from_row(row: &Row) -> MessageRecord {
    MessageRecord {
        id: row.get(0),
        app: row.get(1),
        queue: row.get(2),
        body: row.get(3),
        message_id: row.get(4),
        source: Source::from(row.get::<_, &str>(5)),
        receives: row.get::<_, i64>(6) as u32,
        sent_ms: row.get(7),
        visible_ms: row.get(8),
        last_error: row.get(9),
        trace: row.get(10),
    }
}

/// Queues events inside the caller's transaction; see
/// [`Events::enqueue_events`].
async fn insert_events(tx: &impl GenericClient, events: Vec<NewEvent>) -> Result<Vec<i64>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let insert = tx
        .prepare(
            "INSERT INTO events (app, function, payload, request_id, source, created_ms, not_before_ms, trace) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (app, function, request_id) DO NOTHING RETURNING id",
        )
        .await?;
    let existing = tx
        .prepare("SELECT id FROM events WHERE app = $1 AND function = $2 AND request_id = $3")
        .await?;
    let mut ids = Vec::with_capacity(events.len());
    for e in events {
        let inserted = tx
            .query_opt(
                &insert,
                &[
                    &e.app,
                    &e.function,
                    &e.payload,
                    &e.request_id,
                    &e.source.to_string(),
                    &e.created_ms,
                    &e.not_before_ms,
                    &e.trace,
                ],
            )
            .await?;
        let id = match inserted {
            Some(row) => row.get(0),
            None => tx
                .query_one(&existing, &[&e.app, &e.function, &e.request_id])
                .await?
                .get(0),
        };
        ids.push(id);
    }
    Ok(ids)
}

async fn insert_messages(tx: &impl GenericClient, messages: Vec<NewMessage>) -> Result<Vec<i64>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let insert = tx
        .prepare(
            "INSERT INTO messages (app, queue, body, message_id, source, sent_ms, visible_ms, trace) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .await?;
    let mut ids = Vec::with_capacity(messages.len());
    for m in messages {
        let row = tx
            .query_one(
                &insert,
                &[
                    &m.app,
                    &m.queue,
                    &m.body,
                    &m.message_id,
                    &m.source.to_string(),
                    &m.sent_ms,
                    &m.visible_ms,
                    &m.trace,
                ],
            )
            .await?;
        ids.push(row.get(0));
    }
    Ok(ids)
}

async fn insert_follow_ups(tx: &impl GenericClient, then: Vec<FollowUp>) -> Result<()> {
    let (mut events, mut messages) = (Vec::new(), Vec::new());
    for follow_up in then {
        match follow_up {
            FollowUp::Event(e) => events.push(e),
            FollowUp::Message(m) => messages.push(m),
        }
    }
    insert_events(tx, events).await?;
    insert_messages(tx, messages).await?;
    Ok(())
}

/// The dead letters `redrive_dead_letters` and `delete_dead_letters` act
/// on: $1 app, $2 function or NULL, $3 an array of ids or NULL.
const DEAD_LETTER_SELECTION: &str = "app = $1 AND ($2::TEXT IS NULL OR function = $2) \
     AND ($3::BIGINT[] IS NULL OR id = ANY($3))";

/// PostgreSQL text holds no NUL character; a log line may.
fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}").into()
    } else {
        s.into()
    }
}

#[async_trait]
impl Meta for PostgresStore {
    async fn meta_or_insert(&self, key: MetaKey, candidate: &str) -> StoreResult<String> {
        run(async {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    &[&key.as_str(), &candidate],
                )
                .await?;
            let row = client
                .query_one("SELECT value FROM meta WHERE key = $1", &[&key.as_str()])
                .await?;
            Ok(row.get(0))
        })
        .await
    }
}

#[async_trait]
impl Apps for PostgresStore {
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT name, active_version, created_ms, updated_ms FROM apps ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(app_from_row).collect())
        })
        .await
    }

    async fn get_app(&self, app: &str) -> StoreResult<Option<AppRecord>> {
        run(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT name, active_version, created_ms, updated_ms FROM apps WHERE name = $1",
                    &[&app],
                )
                .await?;
            Ok(row.as_ref().map(app_from_row))
        })
        .await
    }

    async fn active_versions(&self) -> StoreResult<Vec<VersionRecord>> {
        run(async {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM versions v JOIN apps a ON a.name = v.app AND a.active_version = v.version ORDER BY v.app"
            );
            let rows = self.client().await?.query(&sql, &[]).await?;
            rows.iter().map(version_from_row).collect()
        })
        .await
    }

    async fn active_version(&self, app: &str) -> StoreResult<Option<VersionRecord>> {
        run(async {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM versions v JOIN apps a ON a.name = v.app AND a.active_version = v.version WHERE v.app = $1"
            );
            let row = self.client().await?.query_opt(&sql, &[&app]).await?;
            row.as_ref().map(version_from_row).transpose()
        })
        .await
    }

    async fn list_versions(&self, app: &str) -> StoreResult<Vec<VersionRecord>> {
        run(async {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.app = $1 ORDER BY v.version DESC"
            );
            let rows = self.client().await?.query(&sql, &[&app]).await?;
            rows.iter().map(version_from_row).collect()
        })
        .await
    }

    async fn reactivate(
        &self,
        app: &str,
        version: u32,
        now_ms: i64,
    ) -> StoreResult<Option<VersionRecord>> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.app = $1 AND v.version = $2"
            );
            let Some(row) = tx.query_opt(&sql, &[&app, &(version as i64)]).await? else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE apps SET active_version = $2, updated_ms = $3 WHERE name = $1",
                &[&app, &(version as i64), &now_ms],
            )
            .await?;
            tx.commit().await?;
            version_from_row(&row).map(Some)
        })
        .await
    }

    async fn activate(&self, new: NewVersion) -> StoreResult<VersionRecord> {
        run(async {
            let spec = serde_json::to_string(&new.spec)?;
            let packages = serde_json::to_string(&new.packages)?;
            let layers = serde_json::to_string(&new.layers)?;
            let app = new.spec.name.clone();
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.execute(
                "INSERT INTO apps (name, active_version, created_ms, updated_ms) VALUES ($1, NULL, $2, $2) \
                 ON CONFLICT (name) DO NOTHING",
                &[&app, &new.created_ms],
            )
            .await?;
            // Deploys of one app on two nodes at once take turns here.
            tx.execute("SELECT 1 FROM apps WHERE name = $1 FOR UPDATE", &[&app])
                .await?;
            let version: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE app = $1",
                    &[&app],
                )
                .await?
                .get(0);
            tx.execute(
                "INSERT INTO versions (app, version, manifest, spec, packages, created_ms, source, layers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&app, &version, &new.manifest, &spec, &packages, &new.created_ms, &new.source, &layers],
            )
            .await?;
            tx.execute(
                "UPDATE apps SET active_version = $2, updated_ms = $3 WHERE name = $1",
                &[&app, &version, &new.created_ms],
            )
            .await?;
            tx.commit().await?;
            Ok(VersionRecord {
                app,
                version: version as u32,
                spec: new.spec,
                manifest: new.manifest,
                packages: new.packages,
                created_ms: new.created_ms,
                source: new.source,
                layers: new.layers,
            })
        })
        .await
    }

    async fn delete_app(&self, app: &str) -> StoreResult<bool> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // The buckets first: that waits for an object being put into
            // one of them (see `put_object`), which is then deleted too.
            let buckets: Vec<String> = tx
                .query("DELETE FROM buckets WHERE app = $1 RETURNING name", &[&app])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            tx.execute("DELETE FROM objects WHERE bucket = ANY($1)", &[&buckets])
                .await?;
            // Uploads before their parts, as everywhere: a part being put
            // holds its upload (see `put_part`).
            let uploads: Vec<String> = tx
                .query(
                    "DELETE FROM uploads WHERE bucket = ANY($1) RETURNING upload_id",
                    &[&buckets],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            tx.execute("DELETE FROM parts WHERE upload_id = ANY($1)", &[&uploads])
                .await?;
            for table in [
                "versions",
                "app_keys",
                "aws_credentials",
                "secrets",
                "builds",
                "failures",
                "alerts",
                "alert_history",
                "events",
                "dead_letters",
                "messages",
                "schedule_slots",
            ] {
                tx.execute(&format!("DELETE FROM {table} WHERE app = $1"), &[&app])
                    .await?;
            }
            let indexes = documents::delete_app_documents(&tx, app).await?;
            users::delete_app_users(&tx, app).await?;
            let deleted = tx
                .execute("DELETE FROM apps WHERE name = $1", &[&app])
                .await?;
            tx.commit().await?;
            // Online, once nothing names them.
            documents::drop_indexes(&client, &indexes).await?;
            Ok(deleted > 0)
        })
        .await
    }
}

#[async_trait]
impl Packages for PostgresStore {
    async fn has_package(&self, sha256: &str) -> StoreResult<bool> {
        run(async {
            let row = self
                .client()
                .await?
                .query_opt("SELECT 1 FROM packages WHERE sha256 = $1", &[&sha256])
                .await?;
            Ok(row.is_some())
        })
        .await
    }

    async fn put_package(&self, p: PackageRecord) -> StoreResult<()> {
        run(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO packages (sha256, size, unpacked_bytes, files, created_ms) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (sha256) DO NOTHING",
                    &[
                        &p.sha256,
                        &(p.size as i64),
                        &(p.unpacked_bytes as i64),
                        &(p.files as i64),
                        &p.created_ms,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Credentials for PostgresStore {
    async fn create_key(&self, key: KeyRecord) -> StoreResult<()> {
        run(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO app_keys (id, app, name, sha256, created_ms) VALUES ($1, $2, $3, $4, $5)",
                    &[&key.id, &key.app, &key.name, &key.sha256, &key.created_ms],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_keys(&self, app: Option<&str>) -> StoreResult<Vec<KeyRecord>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT id, app, name, sha256, created_ms FROM app_keys \
                     WHERE $1::TEXT IS NULL OR app = $1 ORDER BY app, created_ms, id",
                    &[&app],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| KeyRecord {
                    id: row.get(0),
                    app: row.get(1),
                    name: row.get(2),
                    sha256: row.get(3),
                    created_ms: row.get(4),
                })
                .collect())
        })
        .await
    }

    async fn delete_key(&self, app: &str, id: &str) -> StoreResult<bool> {
        run(async {
            let deleted = self
                .client()
                .await?
                .execute(
                    "DELETE FROM app_keys WHERE app = $1 AND id = $2",
                    &[&app, &id],
                )
                .await?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn create_aws_credential(&self, c: AwsCredentialRecord) -> StoreResult<()> {
        run(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO aws_credentials (access_key_id, app, name, secret, created_ms) VALUES ($1, $2, $3, $4, $5)",
                    &[&c.access_key_id, &c.app, &c.name, &c.secret, &c.created_ms],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_aws_credentials(
        &self,
        app: Option<&str>,
    ) -> StoreResult<Vec<AwsCredentialRecord>> {
        run(async {
            let sql = format!(
                "SELECT {AWS_CREDENTIAL_COLUMNS} FROM aws_credentials \
                 WHERE $1::TEXT IS NULL OR app = $1 ORDER BY app, created_ms, access_key_id"
            );
            let rows = self.client().await?.query(&sql, &[&app]).await?;
            Ok(rows.iter().map(aws_credential_from_row).collect())
        })
        .await
    }

    async fn get_aws_credential(
        &self,
        access_key_id: &str,
    ) -> StoreResult<Option<AwsCredentialRecord>> {
        run(async {
            let sql = format!(
                "SELECT {AWS_CREDENTIAL_COLUMNS} FROM aws_credentials WHERE access_key_id = $1"
            );
            let row = self
                .client()
                .await?
                .query_opt(&sql, &[&access_key_id])
                .await?;
            Ok(row.as_ref().map(aws_credential_from_row))
        })
        .await
    }

    async fn set_aws_secret(&self, access_key_id: &str, secret: &str) -> StoreResult<bool> {
        run(async {
            let updated = self
                .client()
                .await?
                .execute(
                    "UPDATE aws_credentials SET secret = $2 WHERE access_key_id = $1",
                    &[&access_key_id, &secret],
                )
                .await?;
            Ok(updated > 0)
        })
        .await
    }

    async fn delete_aws_credential(&self, app: &str, access_key_id: &str) -> StoreResult<bool> {
        run(async {
            let deleted = self
                .client()
                .await?
                .execute(
                    "DELETE FROM aws_credentials WHERE app = $1 AND access_key_id = $2",
                    &[&app, &access_key_id],
                )
                .await?;
            Ok(deleted > 0)
        })
        .await
    }
}

#[async_trait]
impl Secrets for PostgresStore {
    async fn put_secret(&self, s: SecretRecord) -> StoreResult<()> {
        run(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO secrets (app, name, sealed, updated_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (app, name) DO UPDATE SET sealed = EXCLUDED.sealed, updated_ms = EXCLUDED.updated_ms",
                    &[&s.app, &s.name, &s.sealed, &s.updated_ms],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_secrets(&self, app: Option<&str>) -> StoreResult<Vec<SecretRecord>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT app, name, sealed, updated_ms FROM secrets \
                     WHERE $1::TEXT IS NULL OR app = $1 ORDER BY app, name",
                    &[&app],
                )
                .await?;
            Ok(rows.iter().map(secret_from_row).collect())
        })
        .await
    }

    async fn delete_secret(&self, app: &str, name: &str) -> StoreResult<bool> {
        run(async {
            let deleted = self
                .client()
                .await?
                .execute(
                    "DELETE FROM secrets WHERE app = $1 AND name = $2",
                    &[&app, &name],
                )
                .await?;
            Ok(deleted > 0)
        })
        .await
    }
}

fn secret_from_row(row: &Row) -> SecretRecord {
    SecretRecord {
        app: row.get(0),
        name: row.get(1),
        sealed: row.get(2),
        updated_ms: row.get(3),
    }
}

const FAILURE_COLUMNS: &str =
    "id, app, function, version, request_id, at_ms, outcome, error_type, event, scene";

fn failure_from_row(row: &Row) -> FailureRecord {
    FailureRecord {
        id: row.get(0),
        app: row.get(1),
        function: row.get(2),
        version: row.get::<_, i64>(3) as u32,
        request_id: row.get(4),
        at_ms: row.get(5),
        outcome: row.get(6),
        error_type: row.get(7),
        event: row.get(8),
        scene: row.get(9),
    }
}

#[async_trait]
impl Failures for PostgresStore {
    async fn put_failure(&self, f: FailureRecord) -> StoreResult<()> {
        run(async {
            self.client()
                .await?
                .execute(
                    &format!(
                        "INSERT INTO failures ({FAILURE_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (id) DO UPDATE SET app = EXCLUDED.app, function = EXCLUDED.function, \
                         version = EXCLUDED.version, request_id = EXCLUDED.request_id, at_ms = EXCLUDED.at_ms, \
                         outcome = EXCLUDED.outcome, error_type = EXCLUDED.error_type, \
                         event = EXCLUDED.event, scene = EXCLUDED.scene"
                    ),
                    &[
                        &f.id,
                        &f.app,
                        &f.function,
                        &i64::from(f.version),
                        &f.request_id,
                        &f.at_ms,
                        &f.outcome,
                        &f.error_type,
                        &f.event,
                        &f.scene,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_failures(
        &self,
        app: &str,
        function: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<FailureRecord>> {
        run(async {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let sql = format!(
                "SELECT {FAILURE_COLUMNS} FROM failures WHERE app = $1 AND ($2::TEXT IS NULL OR function = $2) \
                 ORDER BY at_ms DESC, id DESC LIMIT $3"
            );
            let rows = self
                .client()
                .await?
                .query(&sql, &[&app, &function, &limit])
                .await?;
            Ok(rows.iter().map(failure_from_row).collect())
        })
        .await
    }

    async fn get_failure(&self, id: &str) -> StoreResult<Option<FailureRecord>> {
        run(async {
            let sql = format!("SELECT {FAILURE_COLUMNS} FROM failures WHERE id = $1");
            let row = self.client().await?.query_opt(&sql, &[&id]).await?;
            Ok(row.as_ref().map(failure_from_row))
        })
        .await
    }

    async fn trim_failures(&self, app: &str, keep: usize, before_ms: i64) -> StoreResult<u64> {
        run(async {
            let keep = i64::try_from(keep).unwrap_or(i64::MAX);
            let deleted = self
                .client()
                .await?
                .execute(
                    "DELETE FROM failures WHERE app = $1 AND (at_ms < $3 OR id IN ( \
                       SELECT id FROM (SELECT id, ROW_NUMBER() OVER ( \
                         PARTITION BY function ORDER BY at_ms DESC, id DESC) AS n \
                       FROM failures WHERE app = $1) ranked WHERE n > $2))",
                    &[&app, &keep, &before_ms],
                )
                .await?;
            Ok(deleted)
        })
        .await
    }
}

const ALERT_COLUMNS: &str = "app, name, state, since_ms, evaluated_ms, detail";

#[async_trait]
impl Alerts for PostgresStore {
    async fn put_alerts(
        &self,
        states: Vec<AlertRecord>,
        changes: Vec<AlertChange>,
    ) -> StoreResult<()> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let put = tx
                .prepare(&format!(
                    "INSERT INTO alerts ({ALERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (app, name) DO UPDATE SET state = EXCLUDED.state, \
                     since_ms = EXCLUDED.since_ms, evaluated_ms = EXCLUDED.evaluated_ms, \
                     detail = EXCLUDED.detail"
                ))
                .await?;
            for a in &states {
                tx.execute(
                    &put,
                    &[
                        &a.app,
                        &a.name,
                        &a.state,
                        &a.since_ms,
                        &a.evaluated_ms,
                        &a.detail,
                    ],
                )
                .await?;
            }
            let add = tx
                .prepare(
                    "INSERT INTO alert_history (app, name, at_ms, from_state, to_state, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .await?;
            for c in &changes {
                tx.execute(
                    &add,
                    &[&c.app, &c.name, &c.at_ms, &c.from, &c.to, &c.detail],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn list_alerts(&self, app: &str) -> StoreResult<Vec<AlertRecord>> {
        run(async {
            let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE app = $1 ORDER BY name");
            let rows = self.client().await?.query(&sql, &[&app]).await?;
            Ok(rows
                .iter()
                .map(|row| AlertRecord {
                    app: row.get(0),
                    name: row.get(1),
                    state: row.get(2),
                    since_ms: row.get(3),
                    evaluated_ms: row.get(4),
                    detail: row.get(5),
                })
                .collect())
        })
        .await
    }

    async fn alert_history(&self, app: &str, limit: usize) -> StoreResult<Vec<AlertChange>> {
        run(async {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT app, name, at_ms, from_state, to_state, detail FROM alert_history \
                     WHERE app = $1 ORDER BY id DESC LIMIT $2",
                    &[&app, &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| AlertChange {
                    app: row.get(0),
                    name: row.get(1),
                    at_ms: row.get(2),
                    from: row.get(3),
                    to: row.get(4),
                    detail: row.get(5),
                })
                .collect())
        })
        .await
    }

    async fn trim_alerts(&self, app: &str, declared: &[String], keep: usize) -> StoreResult<u64> {
        run(async {
            let keep = i64::try_from(keep).unwrap_or(i64::MAX);
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let states = tx
                .execute(
                    "DELETE FROM alerts WHERE app = $1 AND NOT (name = ANY($2))",
                    &[&app, &declared],
                )
                .await?;
            let changes = tx
                .execute(
                    "DELETE FROM alert_history WHERE app = $1 AND id NOT IN ( \
                       SELECT id FROM alert_history WHERE app = $1 ORDER BY id DESC LIMIT $2)",
                    &[&app, &keep],
                )
                .await?;
            tx.commit().await?;
            Ok(states + changes)
        })
        .await
    }
}

const BUCKET_COLUMNS: &str = "name, app, declared_as, spec, created_ms";

fn bucket_from_row(row: &Row) -> BucketRecord {
    BucketRecord {
        name: row.get(0),
        app: row.get(1),
        declared_as: row.get(2),
        spec: row.get(3),
        created_ms: row.get(4),
    }
}

const OBJECT_COLUMNS: &str = "bucket, key, size, etag, blob, modified_ms, headers";

fn object_from_row(row: &Row) -> ObjectRecord {
    ObjectRecord {
        bucket: row.get(0),
        key: row.get(1),
        size: row.get::<_, i64>(2) as u64,
        etag: row.get(3),
        blob: row.get(4),
        modified_ms: row.get(5),
        headers: row.get(6),
    }
}

/// Objects a bucket that is not empty is counted up to.
const NOT_EMPTY_BOUND: i64 = 1000;

/// Locks bucket `name` against its deletion until the transaction ends
/// (not against an update of its settings); whether it exists.
async fn hold_bucket(tx: &impl GenericClient, name: &str) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM buckets WHERE name = $1 FOR KEY SHARE",
            &[&name],
        )
        .await?
        .is_some())
}

const UPLOAD_COLUMNS: &str = "upload_id, bucket, key, headers, created_ms";

fn upload_from_row(row: &Row) -> UploadRecord {
    UploadRecord {
        upload_id: row.get(0),
        bucket: row.get(1),
        key: row.get(2),
        headers: row.get(3),
        created_ms: row.get(4),
    }
}

const PART_COLUMNS: &str = "upload_id, number, size, etag, blob, modified_ms";

fn part_from_row(row: &Row) -> PartRecord {
    PartRecord {
        upload_id: row.get(0),
        number: row.get::<_, i64>(1) as u32,
        size: row.get::<_, i64>(2) as u64,
        etag: row.get(3),
        blob: row.get(4),
        modified_ms: row.get(5),
    }
}

/// Puts an object inside the caller's transaction (which holds its
/// bucket), replacing the one of its key: the object replaced.
async fn upsert_object(tx: &impl GenericClient, o: &ObjectRecord) -> Result<Option<ObjectRecord>> {
    let size = o.size as i64;
    let current = tx
        .prepare(&format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = $1 AND key = $2 FOR UPDATE"
        ))
        .await?;
    let update = tx
        .prepare(
            "UPDATE objects SET size = $3, etag = $4, blob = $5, modified_ms = $6, headers = $7 \
             WHERE bucket = $1 AND key = $2",
        )
        .await?;
    let insert = tx
        .prepare(&format!(
            "INSERT INTO objects ({OBJECT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (bucket, key) DO NOTHING"
        ))
        .await?;
    let values: [&(dyn ToSql + Sync); 7] = [
        &o.bucket,
        &o.key,
        &size,
        &o.etag,
        &o.blob,
        &o.modified_ms,
        &o.headers,
    ];
    // The row is locked before it is replaced, so that the object
    // replaced is the one returned; an object of the same key put
    // meanwhile by another transaction is then replaced in turn.
    loop {
        if let Some(row) = tx.query_opt(&current, &[&o.bucket, &o.key]).await? {
            tx.execute(&update, &values).await?;
            return Ok(Some(object_from_row(&row)));
        }
        if tx.execute(&insert, &values).await? > 0 {
            return Ok(None);
        }
    }
}

/// Deletes the parts of the uploads `upload_ids` inside the caller's
/// transaction, which deleted (or locked) the uploads first: their blobs,
/// by upload and part number.
async fn delete_parts(tx: &impl GenericClient, upload_ids: &[String]) -> Result<Vec<String>> {
    let mut parts: Vec<(String, i64, String)> = tx
        .query(
            "DELETE FROM parts WHERE upload_id = ANY($1) RETURNING upload_id, number, blob",
            &[&upload_ids],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    parts.sort();
    Ok(parts.into_iter().map(|(_, _, blob)| blob).collect())
}

#[async_trait]
impl Objects for PostgresStore {
    async fn create_bucket(&self, b: BucketRecord) -> StoreResult<BucketCreated> {
        run(async {
            let client = self.client().await?;
            let insert = format!(
                "INSERT INTO buckets ({BUCKET_COLUMNS}) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO NOTHING"
            );
            let select = format!("SELECT {BUCKET_COLUMNS} FROM buckets WHERE name = $1");
            // The bucket that took the name may be deleted before it is
            // read: then the name is free again.
            loop {
                let inserted = client
                    .execute(
                        &insert,
                        &[&b.name, &b.app, &b.declared_as, &b.spec, &b.created_ms],
                    )
                    .await?;
                if inserted > 0 {
                    return Ok(BucketCreated::Created);
                }
                if let Some(row) = client.query_opt(&select, &[&b.name]).await? {
                    return Ok(BucketCreated::Taken(bucket_from_row(&row)));
                }
            }
        })
        .await
    }

    async fn update_bucket(&self, b: BucketRecord) -> StoreResult<bool> {
        run(async {
            let updated = self
                .client()
                .await?
                .execute(
                    "UPDATE buckets SET declared_as = $2, spec = $3 WHERE name = $1",
                    &[&b.name, &b.declared_as, &b.spec],
                )
                .await?;
            Ok(updated > 0)
        })
        .await
    }

    async fn get_bucket(&self, name: &str) -> StoreResult<Option<BucketRecord>> {
        run(async {
            let sql = format!("SELECT {BUCKET_COLUMNS} FROM buckets WHERE name = $1");
            let row = self.client().await?.query_opt(&sql, &[&name]).await?;
            Ok(row.as_ref().map(bucket_from_row))
        })
        .await
    }

    async fn list_buckets(&self, app: Option<&str>) -> StoreResult<Vec<BucketRecord>> {
        run(async {
            let sql = format!(
                "SELECT {BUCKET_COLUMNS} FROM buckets WHERE $1::TEXT IS NULL OR app = $1 ORDER BY name"
            );
            let rows = self.client().await?.query(&sql, &[&app]).await?;
            Ok(rows.iter().map(bucket_from_row).collect())
        })
        .await
    }

    async fn delete_bucket(&self, name: &str, force: bool) -> StoreResult<BucketDeleted> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Locked first: an object being put into it is committed (and
            // counted) or refused.
            let exists = tx
                .query_opt("SELECT 1 FROM buckets WHERE name = $1 FOR UPDATE", &[&name])
                .await?
                .is_some();
            if !exists {
                return Ok(BucketDeleted::Missing);
            }
            if !force {
                let held: i64 = tx
                    .query_one(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM objects WHERE bucket = $1 LIMIT $2) held",
                        &[&name, &NOT_EMPTY_BOUND],
                    )
                    .await?
                    .get(0);
                if held > 0 {
                    return Ok(BucketDeleted::NotEmpty(held as u64));
                }
            }
            let mut blobs: Vec<String> = tx
                .query("DELETE FROM objects WHERE bucket = $1 RETURNING blob", &[&name])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            // Uploads in progress go with the bucket, forced or not; each
            // before its parts, which waits for a part being put.
            let uploads: Vec<String> = tx
                .query(
                    "DELETE FROM uploads WHERE bucket = $1 RETURNING upload_id",
                    &[&name],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            blobs.extend(delete_parts(&tx, &uploads).await?);
            tx.execute("DELETE FROM buckets WHERE name = $1", &[&name])
                .await?;
            tx.commit().await?;
            Ok(BucketDeleted::Deleted(blobs))
        })
        .await
    }

    async fn put_object(
        &self,
        o: ObjectRecord,
        events: Vec<NewEvent>,
    ) -> StoreResult<Result<Option<ObjectRecord>, NoSuchBucket>> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            if !hold_bucket(&tx, &o.bucket).await? {
                return Ok(Err(NoSuchBucket));
            }
            let replaced = upsert_object(&tx, &o).await?;
            insert_events(&tx, events).await?;
            tx.commit().await?;
            Ok(Ok(replaced))
        })
        .await
    }

    async fn get_object(&self, bucket: &str, key: &str) -> StoreResult<Option<ObjectRecord>> {
        run(async {
            let sql =
                format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = $1 AND key = $2");
            let row = self
                .client()
                .await?
                .query_opt(&sql, &[&bucket, &key])
                .await?;
            Ok(row.as_ref().map(object_from_row))
        })
        .await
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        events: Vec<NewEvent>,
    ) -> StoreResult<Option<ObjectRecord>> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let deleted = tx
                .query_opt(
                    &format!(
                        "DELETE FROM objects WHERE bucket = $1 AND key = $2 RETURNING {OBJECT_COLUMNS}"
                    ),
                    &[&bucket, &key],
                )
                .await?
                .as_ref()
                .map(object_from_row);
            if deleted.is_some() {
                insert_events(&tx, events).await?;
            }
            tx.commit().await?;
            Ok(deleted)
        })
        .await
    }

    async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ObjectRecord>> {
        run(async {
            let bound = stratus_store::prefix_bound(prefix);
            // A range, not LIKE: `%`, `_` and `\` in a prefix are
            // themselves.
            let sql = format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = $1 \
                 AND key >= $2 COLLATE \"C\" \
                 AND ($3::TEXT IS NULL OR key < $3 COLLATE \"C\") \
                 AND ($4::TEXT IS NULL OR key > $4 COLLATE \"C\") \
                 ORDER BY key COLLATE \"C\" LIMIT $5"
            );
            let rows = self
                .client()
                .await?
                .query(&sql, &[&bucket, &prefix, &bound, &after, &i64::from(limit)])
                .await?;
            Ok(rows.iter().map(object_from_row).collect())
        })
        .await
    }

    async fn object_usage(&self, app: Option<&str>) -> StoreResult<Vec<ObjectUsage>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT b.app, COUNT(DISTINCT b.name), COUNT(o.key), COALESCE(SUM(o.size), 0)::BIGINT \
                     FROM buckets b LEFT JOIN objects o ON o.bucket = b.name \
                     WHERE $1::TEXT IS NULL OR b.app = $1 GROUP BY b.app ORDER BY b.app",
                    &[&app],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| ObjectUsage {
                    app: row.get(0),
                    buckets: row.get::<_, i64>(1) as u64,
                    objects: row.get::<_, i64>(2) as u64,
                    bytes: row.get::<_, i64>(3) as u64,
                })
                .collect())
        })
        .await
    }

    async fn create_upload(&self, u: UploadRecord) -> StoreResult<Result<(), NoSuchBucket>> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Held until the upload is committed: a bucket deleted
            // meanwhile takes the upload with it.
            if !hold_bucket(&tx, &u.bucket).await? {
                return Ok(Err(NoSuchBucket));
            }
            tx.execute(
                &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
                &[&u.upload_id, &u.bucket, &u.key, &u.headers, &u.created_ms],
            )
            .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
        .await
    }

    async fn get_upload(&self, upload_id: &str) -> StoreResult<Option<UploadRecord>> {
        run(async {
            let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = $1");
            let row = self.client().await?.query_opt(&sql, &[&upload_id]).await?;
            Ok(row.as_ref().map(upload_from_row))
        })
        .await
    }

    async fn put_part(
        &self,
        p: PartRecord,
    ) -> StoreResult<Result<Option<PartRecord>, NoSuchUpload>> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Held against its completion, abort or deletion until the
            // part is committed (parts of one upload go in side by side):
            // a part is kept with its upload, or refused.
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM uploads WHERE upload_id = $1 FOR KEY SHARE",
                    &[&p.upload_id],
                )
                .await?
                .is_some();
            if !exists {
                return Ok(Err(NoSuchUpload));
            }
            let (number, size) = (i64::from(p.number), p.size as i64);
            let current = tx
                .prepare(&format!(
                    "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = $1 AND number = $2 FOR UPDATE"
                ))
                .await?;
            let update = tx
                .prepare(
                    "UPDATE parts SET size = $3, etag = $4, blob = $5, modified_ms = $6 \
                     WHERE upload_id = $1 AND number = $2",
                )
                .await?;
            let insert = tx
                .prepare(&format!(
                    "INSERT INTO parts ({PART_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (upload_id, number) DO NOTHING"
                ))
                .await?;
            let values: [&(dyn ToSql + Sync); 6] = [
                &p.upload_id,
                &number,
                &size,
                &p.etag,
                &p.blob,
                &p.modified_ms,
            ];
            // As for objects: the part replaced is the one returned.
            let replaced = loop {
                if let Some(row) = tx.query_opt(&current, &[&p.upload_id, &number]).await? {
                    tx.execute(&update, &values).await?;
                    break Some(part_from_row(&row));
                }
                if tx.execute(&insert, &values).await? > 0 {
                    break None;
                }
            };
            tx.commit().await?;
            Ok(Ok(replaced))
        })
        .await
    }

    async fn list_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: u32,
    ) -> StoreResult<Vec<PartRecord>> {
        run(async {
            let sql = format!(
                "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = $1 AND number > $2 \
                 ORDER BY number LIMIT $3"
            );
            let rows = self
                .client()
                .await?
                .query(&sql, &[&upload_id, &i64::from(after), &i64::from(limit)])
                .await?;
            Ok(rows.iter().map(part_from_row).collect())
        })
        .await
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, Option<&str>)>,
        limit: u32,
    ) -> StoreResult<Vec<UploadRecord>> {
        run(async {
            let bound = stratus_store::prefix_bound(prefix);
            let (after_key, after_id) = match after {
                Some((key, id)) => (Some(key), id),
                None => (None, None),
            };
            // A range, not LIKE, as for objects. After a key alone: past
            // every upload of it; after a key and an id: past that one.
            let sql = format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE bucket = $1 \
                 AND key >= $2 COLLATE \"C\" \
                 AND ($3::TEXT IS NULL OR key < $3 COLLATE \"C\") \
                 AND ($4::TEXT IS NULL OR key > $4 COLLATE \"C\" \
                      OR ($5::TEXT IS NOT NULL AND key = $4 AND upload_id > $5 COLLATE \"C\")) \
                 ORDER BY key COLLATE \"C\", upload_id COLLATE \"C\" LIMIT $6"
            );
            let rows = self
                .client()
                .await?
                .query(
                    &sql,
                    &[
                        &bucket,
                        &prefix,
                        &bound,
                        &after_key,
                        &after_id,
                        &i64::from(limit),
                    ],
                )
                .await?;
            Ok(rows.iter().map(upload_from_row).collect())
        })
        .await
    }

    async fn complete_upload(
        &self,
        upload_id: &str,
        o: ObjectRecord,
        events: Vec<NewEvent>,
    ) -> StoreResult<Result<Completed, NoSuchUpload>> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Its bucket is held first, then the upload locked: the order
            // in which a bucket's deletion takes them, so neither waits
            // for the other in a circle. An upload's bucket never changes.
            let Some(bucket) = tx
                .query_opt(
                    "SELECT bucket FROM uploads WHERE upload_id = $1",
                    &[&upload_id],
                )
                .await?
                .map(|row| row.get::<_, String>(0))
            else {
                return Ok(Err(NoSuchUpload));
            };
            if !hold_bucket(&tx, &bucket).await? {
                return Ok(Err(NoSuchUpload));
            }
            // A concurrent completion or abort that won has deleted it.
            let locked = tx
                .query_opt(
                    "SELECT 1 FROM uploads WHERE upload_id = $1 FOR UPDATE",
                    &[&upload_id],
                )
                .await?
                .is_some();
            if !locked {
                return Ok(Err(NoSuchUpload));
            }
            let part_blobs = delete_parts(&tx, &[upload_id.to_owned()]).await?;
            tx.execute("DELETE FROM uploads WHERE upload_id = $1", &[&upload_id])
                .await?;
            let replaced = upsert_object(&tx, &o).await?;
            insert_events(&tx, events).await?;
            tx.commit().await?;
            Ok(Ok(Completed {
                replaced,
                part_blobs,
            }))
        })
        .await
    }

    async fn abort_upload(&self, upload_id: &str) -> StoreResult<Option<Vec<String>>> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // The upload first, which waits for a part being put.
            let deleted = tx
                .execute("DELETE FROM uploads WHERE upload_id = $1", &[&upload_id])
                .await?;
            if deleted == 0 {
                return Ok(None);
            }
            let blobs = delete_parts(&tx, &[upload_id.to_owned()]).await?;
            tx.commit().await?;
            Ok(Some(blobs))
        })
        .await
    }
}

const BUILD_COLUMNS: &str = "app, id, started_ms, finished_ms, status, version, detail";

fn build_from_row(row: &Row) -> Result<BuildRecord> {
    let status: &str = row.get(4);
    Ok(BuildRecord {
        app: row.get(0),
        id: row.get(1),
        started_ms: row.get(2),
        finished_ms: row.get(3),
        status: BuildStatus::parse(status).ok_or_else(|| {
            StoreError::Database(format!("unknown build status {status:?}").into())
        })?,
        version: row.get::<_, Option<i64>>(5).map(|v| v as u32),
        detail: row.get(6),
    })
}

#[async_trait]
impl Builds for PostgresStore {
    async fn put_build(&self, b: BuildRecord) -> StoreResult<()> {
        run(async {
            self.client()
                .await?
                .execute(
                    &format!(
                        "INSERT INTO builds ({BUILD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (app, id) DO UPDATE SET started_ms = EXCLUDED.started_ms, \
                         finished_ms = EXCLUDED.finished_ms, status = EXCLUDED.status, \
                         version = EXCLUDED.version, detail = EXCLUDED.detail"
                    ),
                    &[
                        &b.app,
                        &b.id,
                        &b.started_ms,
                        &b.finished_ms,
                        &b.status.as_str(),
                        &b.version.map(i64::from),
                        &b.detail,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_builds(&self, app: &str, limit: usize) -> StoreResult<Vec<BuildRecord>> {
        run(async {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE app = $1 ORDER BY started_ms DESC, id DESC LIMIT $2"
            );
            let rows = self.client().await?.query(&sql, &[&app, &limit]).await?;
            rows.iter().map(build_from_row).collect()
        })
        .await
    }

    async fn get_build(&self, app: &str, id: &str) -> StoreResult<Option<BuildRecord>> {
        run(async {
            let sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE app = $1 AND id = $2");
            let row = self.client().await?.query_opt(&sql, &[&app, &id]).await?;
            row.as_ref().map(build_from_row).transpose()
        })
        .await
    }

    async fn trim_builds(&self, app: &str, keep: usize) -> StoreResult<u64> {
        run(async {
            let keep = i64::try_from(keep).unwrap_or(i64::MAX);
            let deleted = self
                .client()
                .await?
                .execute(
                    "DELETE FROM builds WHERE app = $1 AND id NOT IN \
                     (SELECT id FROM builds WHERE app = $1 ORDER BY started_ms DESC, id DESC LIMIT $2)",
                    &[&app, &keep],
                )
                .await?;
            Ok(deleted)
        })
        .await
    }
}

#[async_trait]
impl LogStore for PostgresStore {
    async fn append_logs(&self, logs: Vec<LogRecord>) -> StoreResult<()> {
        if logs.is_empty() {
            return Ok(());
        }
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO logs (ts_ms, app, function, version, instance, request_id, stream, message, fields) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .await?;
            let mut usage: BTreeMap<String, i64> = BTreeMap::new();
            for log in &logs {
                let fields = log.fields.as_ref().map(serde_json::to_string).transpose()?;
                let message = text(&log.message);
                let size = message.len() + fields.as_ref().map_or(0, String::len);
                *usage.entry(log.app.clone()).or_default() += size as i64;
                tx.execute(
                    &insert,
                    &[
                        &log.ts_ms,
                        &log.app,
                        &log.function,
                        &(log.version as i64),
                        &log.instance,
                        &log.request_id,
                        &log.stream.as_str(),
                        &message.as_ref(),
                        &fields.as_deref().map(|f| text(f).into_owned()),
                    ],
                )
                .await?;
            }
            for (app, bytes) in usage {
                tx.execute(
                    "INSERT INTO log_usage (app, bytes) VALUES ($1, $2) \
                     ON CONFLICT (app) DO UPDATE SET bytes = log_usage.bytes + EXCLUDED.bytes",
                    &[&app, &bytes],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn query_logs(&self, q: LogQuery) -> StoreResult<Vec<StoredLog>> {
        run(async {
            let mut sql = String::from(
                "SELECT id, ts_ms, app, function, version, instance, request_id, stream, message, fields FROM logs WHERE TRUE",
            );
            let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
            let mut arg = |sql: &mut String, clause: &str, value: Box<dyn ToSql + Sync + Send>| {
                args.push(value);
                sql.push_str(&format!(" AND {clause} ${}", args.len()));
            };
            if let Some(app) = q.app {
                arg(&mut sql, "app =", Box::new(app));
            }
            if let Some(function) = q.function {
                arg(&mut sql, "function =", Box::new(function));
            }
            if let Some(request_id) = q.request_id {
                arg(&mut sql, "request_id =", Box::new(request_id));
            }
            if let Some(since) = q.since_ms {
                arg(&mut sql, "ts_ms >=", Box::new(since));
            }
            if let Some(until) = q.until_ms {
                arg(&mut sql, "ts_ms <", Box::new(until));
            }
            let ascending = q.after_id.is_some();
            if let Some(after) = q.after_id {
                arg(&mut sql, "id >", Box::new(after));
            }
            if let Some(text) = q.contains {
                args.push(Box::new(text));
                sql.push_str(&format!(" AND strpos(message, ${}) > 0", args.len()));
            }
            sql.push_str(if ascending {
                " ORDER BY id ASC"
            } else {
                " ORDER BY id DESC"
            });
            sql.push_str(&format!(" LIMIT {}", q.limit.max(1)));
            let params: Vec<&(dyn ToSql + Sync)> =
                args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
            let rows = self.client().await?.query(&sql, &params).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let stream: &str = row.get(7);
                let fields: Option<&str> = row.get(9);
                out.push(StoredLog {
                    id: row.get(0),
                    record: LogRecord {
                        ts_ms: row.get(1),
                        app: row.get(2),
                        function: row.get(3),
                        version: row.get::<_, i64>(4) as u32,
                        instance: row.get(5),
                        request_id: row.get(6),
                        stream: stream.parse().map_err(|err: String| {
                            StoreError::Worker(format!("a stored log record: {err}"))
                        })?,
                        message: row.get(8),
                        fields: fields.map(serde_json::from_str).transpose()?,
                    },
                });
            }
            if !ascending {
                out.reverse();
            }
            Ok(out)
        })
        .await
    }

    async fn trim_logs(&self, before_ms: i64, budget: LogBudget) -> StoreResult<Trimmed> {
        run(async {
            let mut client = self.client().await?;
            let mut trimmed = Trimmed::default();
            let by_age = format!(
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE ts_ms < $1 LIMIT {TRIM_CHUNK}) \
                 RETURNING app, {LOG_SIZE}"
            );
            while delete_logs(&mut client, &by_age, &[&before_ms], &mut trimmed).await? > 0 {}
            // Each app over its own share first, its oldest first.
            let per_app = budget.per_app.min(i64::MAX as u64) as i64;
            let over = client
                .query(
                    "SELECT app, bytes FROM log_usage WHERE bytes > $1",
                    &[&per_app],
                )
                .await?;
            for row in over {
                let (app, mut bytes): (String, i64) = (row.get(0), row.get(1));
                while bytes > per_app {
                    let oldest = format!(
                        "DELETE FROM logs WHERE app = $1 AND id <= (SELECT COALESCE(MAX(id), 0) FROM \
                         (SELECT id, size, SUM(size) OVER (ORDER BY id) AS running FROM \
                          (SELECT id, {LOG_SIZE} AS size FROM logs WHERE app = $1 ORDER BY id LIMIT {TRIM_CHUNK}) c) r \
                         WHERE running - size < $2) RETURNING app, {LOG_SIZE}"
                    );
                    let excess = bytes - per_app;
                    let freed = delete_logs(&mut client, &oldest, &[&app, &excess], &mut trimmed).await?;
                    if freed == 0 {
                        break;
                    }
                    bytes -= freed;
                }
            }
            // Then the oldest of all, until all fit.
            let total_budget = budget.total.min(i64::MAX as u64) as i64;
            loop {
                let total: i64 = client
                    .query_one("SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM log_usage", &[])
                    .await?
                    .get(0);
                if total <= total_budget {
                    break;
                }
                let oldest = format!(
                    "DELETE FROM logs WHERE id <= (SELECT COALESCE(MAX(id), 0) FROM \
                     (SELECT id, size, SUM(size) OVER (ORDER BY id) AS running FROM \
                      (SELECT id, {LOG_SIZE} AS size FROM logs ORDER BY id LIMIT {TRIM_CHUNK}) c) r \
                     WHERE running - size < $1) RETURNING app, {LOG_SIZE}"
                );
                let excess = total - total_budget;
                if delete_logs(&mut client, &oldest, &[&excess], &mut trimmed).await? == 0 {
                    break;
                }
            }
            Ok(trimmed)
        })
        .await
    }

    async fn log_bytes(&self) -> StoreResult<u64> {
        run(async {
            let bytes: i64 = self
                .client()
                .await?
                .query_one("SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM log_usage", &[])
                .await?
                .get(0);
            Ok(bytes.max(0) as u64)
        })
        .await
    }
}

/// Runs a `DELETE ... RETURNING app, size` on the logs and takes what it
/// deleted off the apps' usage, in one transaction; the bytes deleted.
async fn delete_logs(
    client: &mut Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    trimmed: &mut Trimmed,
) -> Result<i64> {
    let tx = client.build_transaction().start().await?;
    let rows = tx.query(sql, params).await?;
    let mut by_app: BTreeMap<String, i64> = BTreeMap::new();
    for row in &rows {
        *by_app.entry(row.get(0)).or_default() += row.get::<_, i32>(1) as i64;
    }
    let mut freed = 0;
    for (app, bytes) in by_app {
        tx.execute(
            "UPDATE log_usage SET bytes = GREATEST(bytes - $2, 0) WHERE app = $1",
            &[&app, &bytes],
        )
        .await?;
        freed += bytes;
    }
    tx.execute("DELETE FROM log_usage WHERE bytes = 0", &[])
        .await?;
    tx.commit().await?;
    trimmed.records += rows.len() as u64;
    trimmed.bytes += freed as u64;
    Ok(freed)
}

#[async_trait]
impl Events for PostgresStore {
    async fn enqueue_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<i64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let ids = insert_events(&tx, events).await?;
            tx.commit().await?;
            Ok(ids)
        })
        .await
    }

    async fn claim_events_except(
        &self,
        now_ms: i64,
        limit: u32,
        lease_ms: i64,
        busy: &[String],
    ) -> StoreResult<Vec<EventRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A lease of zero would leave the events claimable at once.
        let until = now_ms.saturating_add(lease_ms.max(1));
        run(async {
            // Rows another node is claiming are skipped, not waited for.
            let sql = format!(
                "UPDATE events SET attempts = attempts + 1, lease_until_ms = $2, not_before_ms = $2 \
                 WHERE id IN (SELECT id FROM events WHERE not_before_ms <= $1 \
                              AND (app || '/' || function) <> ALL($4) \
                              ORDER BY not_before_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 RETURNING {EVENT_COLUMNS}"
            );
            let rows = self
                .client()
                .await?
                .query(&sql, &[&now_ms, &until, &(limit as i64), &busy])
                .await?;
            let mut claimed: Vec<EventRecord> = rows.iter().map(event_from_row).collect();
            claimed.sort_unstable_by_key(|e| e.id);
            Ok(claimed)
        })
        .await
    }

    async fn settle_events(&self, settlements: Vec<Settlement>) -> StoreResult<u64> {
        if settlements.is_empty() {
            return Ok(0);
        }
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let mut applied = 0;
            for settlement in settlements {
                let then = match settlement {
                    Settlement::Done { id, attempt, then } => (tx
                        .execute(
                            "DELETE FROM events WHERE id = $1 AND attempts = $2",
                            &[&id, &(attempt as i64)],
                        )
                        .await?
                        > 0)
                        .then_some(then),
                    Settlement::Retry {
                        id,
                        attempt,
                        not_before_ms,
                        error,
                    } => (tx
                        .execute(
                            "UPDATE events SET lease_until_ms = NULL, not_before_ms = $3, last_error = $4 \
                             WHERE id = $1 AND attempts = $2",
                            &[&id, &(attempt as i64), &not_before_ms, &text(&error).as_ref()],
                        )
                        .await?
                        > 0)
                        .then(Vec::new),
                    Settlement::Dead {
                        id,
                        attempt,
                        failed_ms,
                        error,
                        then,
                    } => {
                        let moved = tx
                            .execute(
                                "WITH gone AS (DELETE FROM events WHERE id = $1 AND attempts = $2 RETURNING *) \
                                 INSERT INTO dead_letters (event_id, app, function, payload, request_id, source, attempts, created_ms, failed_ms, error) \
                                 SELECT id, app, function, payload, request_id, source, attempts, created_ms, $3, $4 FROM gone",
                                &[&id, &(attempt as i64), &failed_ms, &text(&error).as_ref()],
                            )
                            .await?
                            > 0;
                        moved.then_some(then)
                    }
                };
                if let Some(then) = then {
                    applied += 1;
                    insert_follow_ups(&tx, then).await?;
                }
            }
            tx.commit().await?;
            Ok(applied)
        })
        .await
    }

    async fn extend_leases(&self, leases: Vec<(i64, u32)>, until_ms: i64) -> StoreResult<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        run(async {
            let (ids, attempts): (Vec<i64>, Vec<i64>) =
                leases.into_iter().map(|(id, a)| (id, i64::from(a))).unzip();
            let extended = self
                .client()
                .await?
                .execute(
                    "UPDATE events e SET lease_until_ms = $3, not_before_ms = $3 \
                     FROM UNNEST($1::BIGINT[], $2::BIGINT[]) AS l(id, attempts) \
                     WHERE e.id = l.id AND e.attempts = l.attempts AND e.lease_until_ms IS NOT NULL",
                    &[&ids, &attempts, &until_ms],
                )
                .await?;
            Ok(extended)
        })
        .await
    }

    async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        run(async {
            let row = self
                .client()
                .await?
                .query_one("SELECT MIN(not_before_ms) FROM events", &[])
                .await?;
            Ok(row.get(0))
        })
        .await
    }

    async fn release_leases(&self, now_ms: i64) -> StoreResult<u64> {
        run(async {
            let released = self
                .client()
                .await?
                .execute(
                    "UPDATE events SET lease_until_ms = NULL, not_before_ms = LEAST(not_before_ms, $1) \
                     WHERE lease_until_ms IS NOT NULL",
                    &[&now_ms],
                )
                .await?;
            Ok(released)
        })
        .await
    }

    async fn count_events(&self, app: Option<&str>, now_ms: i64) -> StoreResult<Vec<EventCounts>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT app, function, SUM(queued)::BIGINT, SUM(in_flight)::BIGINT, SUM(dead)::BIGINT, MIN(oldest)::BIGINT FROM ( \
                       SELECT app, function, \
                              COUNT(*) FILTER (WHERE lease_until_ms IS NULL OR lease_until_ms <= $2) AS queued, \
                              COUNT(*) FILTER (WHERE lease_until_ms > $2) AS in_flight, \
                              0 AS dead, \
                              MIN(created_ms) FILTER (WHERE lease_until_ms IS NULL OR lease_until_ms <= $2) AS oldest \
                       FROM events WHERE $1::TEXT IS NULL OR app = $1 GROUP BY app, function \
                       UNION ALL \
                       SELECT app, function, 0, 0, COUNT(*), NULL \
                       FROM dead_letters WHERE $1::TEXT IS NULL OR app = $1 GROUP BY app, function \
                     ) c GROUP BY app, function ORDER BY app, function",
                    &[&app, &now_ms],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| EventCounts {
                    app: row.get(0),
                    function: row.get(1),
                    queued: row.get::<_, i64>(2) as u64,
                    in_flight: row.get::<_, i64>(3) as u64,
                    dead: row.get::<_, i64>(4) as u64,
                    oldest_queued_ms: row.get::<_, Option<i64>>(5),
                })
                .collect())
        })
        .await
    }

    async fn list_dead_letters(
        &self,
        app: &str,
        function: Option<&str>,
        after_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<DeadLetter>> {
        run(async {
            let sql = format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters \
                 WHERE app = $1 AND ($2::TEXT IS NULL OR function = $2) AND id > $3 ORDER BY id LIMIT $4"
            );
            let rows = self
                .client()
                .await?
                .query(
                    &sql,
                    &[&app, &function, &after_id.unwrap_or(0), &(limit.max(1) as i64)],
                )
                .await?;
            Ok(rows.iter().map(dead_letter_from_row).collect())
        })
        .await
    }

    async fn get_dead_letter(&self, app: &str, id: i64) -> StoreResult<Option<DeadLetter>> {
        run(async {
            let sql = format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1 AND app = $2"
            );
            let row = self.client().await?.query_opt(&sql, &[&id, &app]).await?;
            Ok(row.as_ref().map(dead_letter_from_row))
        })
        .await
    }

    async fn redrive_dead_letters(
        &self,
        app: &str,
        function: Option<&str>,
        ids: Option<Vec<i64>>,
        now_ms: i64,
    ) -> StoreResult<u64> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // The last error stays with the event. A twin already queued is
            // the same event: the conflict merges them.
            tx.execute(
                &format!(
                    "INSERT INTO events (app, function, payload, request_id, source, created_ms, not_before_ms, last_error) \
                     SELECT app, function, payload, request_id, source, $4, $4, error FROM dead_letters \
                     WHERE {DEAD_LETTER_SELECTION} AND source NOT LIKE 'queue:%' ORDER BY id \
                     ON CONFLICT (app, function, request_id) DO NOTHING"
                ),
                &[&app, &function, &ids, &now_ms],
            )
            .await?;
            // A queue's message goes back to its queue.
            tx.execute(
                &format!(
                    "INSERT INTO messages (app, queue, body, message_id, source, sent_ms, visible_ms, last_error) \
                     SELECT app, substr(source, 7), payload, request_id, 'redrive', $4, $4, error FROM dead_letters \
                     WHERE {DEAD_LETTER_SELECTION} AND source LIKE 'queue:%' ORDER BY id"
                ),
                &[&app, &function, &ids, &now_ms],
            )
            .await?;
            let moved = tx
                .execute(
                    &format!("DELETE FROM dead_letters WHERE {DEAD_LETTER_SELECTION}"),
                    &[&app, &function, &ids],
                )
                .await?;
            tx.commit().await?;
            Ok(moved)
        })
        .await
    }

    async fn delete_dead_letters(
        &self,
        app: &str,
        function: Option<&str>,
        ids: Option<Vec<i64>>,
    ) -> StoreResult<u64> {
        run(async {
            let deleted = self
                .client()
                .await?
                .execute(
                    &format!("DELETE FROM dead_letters WHERE {DEAD_LETTER_SELECTION}"),
                    &[&app, &function, &ids],
                )
                .await?;
            Ok(deleted)
        })
        .await
    }
}

#[async_trait]
impl Messages for PostgresStore {
    async fn send_messages(&self, messages: Vec<NewMessage>) -> StoreResult<Vec<i64>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let ids = insert_messages(&tx, messages).await?;
            tx.commit().await?;
            Ok(ids)
        })
        .await
    }

    async fn receive_messages(
        &self,
        app: &str,
        queue: &str,
        now_ms: i64,
        limit: u32,
        visibility_ms: i64,
    ) -> StoreResult<Vec<MessageRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let until = now_ms.saturating_add(visibility_ms.max(1));
        run(async {
            let sql = format!(
                "UPDATE messages SET receives = receives + 1, visible_ms = $4 \
                 WHERE id IN (SELECT id FROM messages WHERE app = $1 AND queue = $2 AND visible_ms <= $3 \
                              ORDER BY visible_ms, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
                 RETURNING {MESSAGE_COLUMNS}"
            );
            let rows = self
                .client()
                .await?
                .query(&sql, &[&app, &queue, &now_ms, &until, &(limit as i64)])
                .await?;
            let mut received: Vec<MessageRecord> = rows.iter().map(message_from_row).collect();
            received.sort_unstable_by_key(|m| m.id);
            Ok(received)
        })
        .await
    }

    async fn settle_messages(&self, settlements: Vec<MessageSettlement>) -> StoreResult<u64> {
        if settlements.is_empty() {
            return Ok(0);
        }
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let mut applied = 0;
            for settlement in settlements {
                applied += match settlement {
                    MessageSettlement::Done { id, receives } => {
                        tx.execute(
                            "DELETE FROM messages WHERE id = $1 AND receives = $2",
                            &[&id, &(receives as i64)],
                        )
                        .await?
                    }
                    MessageSettlement::Retry {
                        id,
                        receives,
                        visible_ms,
                        error,
                    } => {
                        tx.execute(
                            "UPDATE messages SET visible_ms = $3, last_error = $4 WHERE id = $1 AND receives = $2",
                            &[&id, &(receives as i64), &visible_ms, &text(&error).as_ref()],
                        )
                        .await?
                    }
                    MessageSettlement::Dead {
                        id,
                        receives,
                        function,
                        failed_ms,
                        error,
                    } => {
                        tx.execute(
                            "WITH gone AS (DELETE FROM messages WHERE id = $1 AND receives = $2 RETURNING *) \
                             INSERT INTO dead_letters (event_id, app, function, payload, request_id, source, attempts, created_ms, failed_ms, error) \
                             SELECT id, app, $3, body, message_id, 'queue:' || queue, receives, sent_ms, $4, $5 FROM gone",
                            &[&id, &(receives as i64), &function, &failed_ms, &text(&error).as_ref()],
                        )
                        .await?
                    }
                };
            }
            tx.commit().await?;
            Ok(applied)
        })
        .await
    }

    async fn next_visible_ms(&self, app: &str, queue: &str) -> StoreResult<Option<i64>> {
        run(async {
            let row = self
                .client()
                .await?
                .query_one(
                    "SELECT MIN(visible_ms) FROM messages WHERE app = $1 AND queue = $2",
                    &[&app, &queue],
                )
                .await?;
            Ok(row.get(0))
        })
        .await
    }

    async fn count_messages(
        &self,
        app: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<Vec<QueueCounts>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT app, queue, COUNT(*) FILTER (WHERE receives = 0 OR visible_ms <= $2), \
                            COUNT(*) FILTER (WHERE receives > 0 AND visible_ms > $2), MIN(sent_ms) \
                     FROM messages WHERE $1::TEXT IS NULL OR app = $1 GROUP BY app, queue ORDER BY app, queue",
                    &[&app, &now_ms],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| QueueCounts {
                    app: row.get(0),
                    queue: row.get(1),
                    queued: row.get::<_, i64>(2) as u64,
                    in_flight: row.get::<_, i64>(3) as u64,
                    oldest_sent_ms: row.get(4),
                })
                .collect())
        })
        .await
    }
}

#[async_trait]
impl Schedules for PostgresStore {
    async fn fire_schedule(
        &self,
        app: &str,
        function: &str,
        schedule: &str,
        slot_ms: i64,
        event: Option<NewEvent>,
    ) -> StoreResult<bool> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let won = tx
                .execute(
                    "INSERT INTO schedule_slots (app, function, schedule, slot_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (app, function, schedule) DO UPDATE SET slot_ms = EXCLUDED.slot_ms \
                     WHERE schedule_slots.slot_ms < EXCLUDED.slot_ms",
                    &[&app, &function, &schedule, &slot_ms],
                )
                .await?
                > 0;
            if won {
                insert_events(&tx, event.into_iter().collect()).await?;
            }
            tx.commit().await?;
            Ok(won)
        })
        .await
    }

    async fn last_schedule_slot(
        &self,
        app: &str,
        function: &str,
        schedule: &str,
    ) -> StoreResult<Option<i64>> {
        run(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT slot_ms FROM schedule_slots WHERE app = $1 AND function = $2 AND schedule = $3",
                    &[&app, &function, &schedule],
                )
                .await?;
            Ok(row.map(|row| row.get(0)))
        })
        .await
    }
}

#[async_trait]
impl UnitOfWork for PostgresStore {
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<Vec<i64>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let mut ids = Vec::with_capacity(writes.len());
            for write in writes {
                let id = match write {
                    Write::Event(event) => insert_events(&tx, vec![event]).await?,
                    Write::Message(message) => insert_messages(&tx, vec![message]).await?,
                };
                ids.extend(id);
            }
            tx.commit().await?;
            Ok(ids)
        })
        .await
    }
}

#[async_trait]
impl Changes for PostgresStore {
    async fn changed_since(&self, seen: u64) -> u64 {
        self.changes.changed_since(seen).await
    }
}

#[async_trait]
impl SharedPackages for PostgresStore {
    async fn put_package_bytes(&self, sha256: &str, bytes: &[u8]) -> StoreResult<()> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let insert = tx
                .prepare(
                    "INSERT INTO package_chunks (sha256, seq, data) VALUES ($1, $2, $3) \
                     ON CONFLICT (sha256, seq) DO NOTHING",
                )
                .await?;
            for (seq, chunk) in bytes.chunks(PACKAGE_CHUNK).enumerate() {
                tx.execute(&insert, &[&sha256, &(seq as i32), &chunk])
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn package_bytes(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT data FROM package_chunks WHERE sha256 = $1 ORDER BY seq",
                    &[&sha256],
                )
                .await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut bytes = Vec::new();
            for row in rows {
                bytes.extend_from_slice(row.get::<_, &[u8]>(0));
            }
            Ok(Some(bytes))
        })
        .await
    }
}

#[async_trait]
impl Transfer for PostgresStore {
    async fn export(&self) -> StoreResult<Dump> {
        run(async {
            let mut client = self.client().await?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let all = |sql: String| {
                let tx = &tx;
                async move { tx.query(&sql, &[]).await }
            };
            let identity = tx
                .query_opt("SELECT value FROM meta WHERE key = 'identity'", &[])
                .await?
                .map(|row| row.get(0));
            let apps = all("SELECT name, active_version, created_ms, updated_ms FROM apps ORDER BY name".into())
                .await?;
            let versions = all(format!("SELECT {VERSION_COLUMNS} FROM versions v ORDER BY v.app, v.version")).await?;
            let packages = all("SELECT sha256, size, unpacked_bytes, files, created_ms FROM packages ORDER BY sha256".into())
                .await?;
            let keys = all("SELECT id, app, name, sha256, created_ms FROM app_keys ORDER BY app, id".into()).await?;
            let credentials = all(format!("SELECT {AWS_CREDENTIAL_COLUMNS} FROM aws_credentials ORDER BY access_key_id")).await?;
            let secrets = all("SELECT app, name, sealed, updated_ms FROM secrets ORDER BY app, name".into()).await?;
            let events = all(format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id")).await?;
            let dead = all(format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id")).await?;
            let messages = all(format!("SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY id")).await?;
            let slots = all("SELECT app, function, schedule, slot_ms FROM schedule_slots ORDER BY app, function, schedule".into())
                .await?;
            let buckets = all(format!("SELECT {BUCKET_COLUMNS} FROM buckets ORDER BY name")).await?;
            let objects = all(format!("SELECT {OBJECT_COLUMNS} FROM objects ORDER BY bucket, key")).await?;
            let uploads = all(format!("SELECT {UPLOAD_COLUMNS} FROM uploads ORDER BY upload_id")).await?;
            let parts = all(format!("SELECT {PART_COLUMNS} FROM parts ORDER BY upload_id, number")).await?;
            let (documents, document_indexes) = documents::export(&tx).await?;
            let (users, sessions) = users::export(&tx).await?;
            Ok(Dump {
                identity,
                apps: apps.iter().map(app_from_row).collect(),
                versions: versions.iter().map(version_from_row).collect::<Result<_>>()?,
                packages: packages
                    .iter()
                    .map(|row| PackageRecord {
                        sha256: row.get(0),
                        size: row.get::<_, i64>(1) as u64,
                        unpacked_bytes: row.get::<_, i64>(2) as u64,
                        files: row.get::<_, i64>(3) as u64,
                        created_ms: row.get(4),
                    })
                    .collect(),
                keys: keys
                    .iter()
                    .map(|row| KeyRecord {
                        id: row.get(0),
                        app: row.get(1),
                        name: row.get(2),
                        sha256: row.get(3),
                        created_ms: row.get(4),
                    })
                    .collect(),
                aws_credentials: credentials.iter().map(aws_credential_from_row).collect(),
                secrets: secrets.iter().map(secret_from_row).collect(),
                events: events.iter().map(event_from_row).collect(),
                dead_letters: dead.iter().map(dead_letter_from_row).collect(),
                messages: messages.iter().map(message_from_row).collect(),
                schedule_slots: slots
                    .iter()
                    .map(|row| ScheduleSlot {
                        app: row.get(0),
                        function: row.get(1),
                        schedule: row.get(2),
                        slot_ms: row.get(3),
                    })
                    .collect(),
                buckets: buckets.iter().map(bucket_from_row).collect(),
                objects: objects.iter().map(object_from_row).collect(),
                uploads: uploads.iter().map(upload_from_row).collect(),
                parts: parts.iter().map(part_from_row).collect(),
                documents,
                document_indexes,
                users,
                sessions,
            })
        })
        .await
    }

    async fn import(&self, dump: Dump) -> StoreResult<()> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Nothing else writes while the store is filled.
            tx.batch_execute(
                "LOCK TABLE apps, versions, events, messages, dead_letters, meta, buckets, objects, uploads, parts, \
                 documents, document_indexes, users, sessions IN EXCLUSIVE MODE",
            )
            .await?;
            let held: String = tx
                .query_one(
                    &format!(
                        "SELECT (SELECT COUNT(*) FROM apps) || ' apps, ' || (SELECT COUNT(*) FROM events) || ' events, ' \
                         || (SELECT COUNT(*) FROM messages) || ' messages, ' || (SELECT COUNT(*) FROM dead_letters) || ' dead letters, ' \
                         || (SELECT COUNT(*) FROM buckets) || ' buckets, ' || {} || ', ' || {}",
                        documents::HELD,
                        users::HELD
                    ),
                    &[],
                )
                .await?
                .get(0);
            if held != "0 apps, 0 events, 0 messages, 0 dead letters, 0 buckets, 0 documents, 0 users" {
                return Err(StoreError::NotEmpty(held).into());
            }
            if let Some(identity) = &dump.identity {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('identity', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[identity],
                )
                .await?;
            }
            for a in &dump.apps {
                tx.execute(
                    "INSERT INTO apps (name, active_version, created_ms, updated_ms) VALUES ($1, $2, $3, $4)",
                    &[&a.name, &a.active_version.map(i64::from), &a.created_ms, &a.updated_ms],
                )
                .await?;
            }
            for v in &dump.versions {
                tx.execute(
                    "INSERT INTO versions (app, version, manifest, spec, packages, created_ms, source, layers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &v.app,
                        &i64::from(v.version),
                        &v.manifest,
                        &serde_json::to_string(&v.spec)?,
                        &serde_json::to_string(&v.packages)?,
                        &v.created_ms,
                        &v.source,
                        &serde_json::to_string(&v.layers)?,
                    ],
                )
                .await?;
            }
            for p in &dump.packages {
                tx.execute(
                    "INSERT INTO packages (sha256, size, unpacked_bytes, files, created_ms) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (sha256) DO NOTHING",
                    &[&p.sha256, &(p.size as i64), &(p.unpacked_bytes as i64), &(p.files as i64), &p.created_ms],
                )
                .await?;
            }
            for k in &dump.keys {
                tx.execute(
                    "INSERT INTO app_keys (id, app, name, sha256, created_ms) VALUES ($1, $2, $3, $4, $5)",
                    &[&k.id, &k.app, &k.name, &k.sha256, &k.created_ms],
                )
                .await?;
            }
            for c in &dump.aws_credentials {
                tx.execute(
                    "INSERT INTO aws_credentials (access_key_id, app, name, secret, created_ms) VALUES ($1, $2, $3, $4, $5)",
                    &[&c.access_key_id, &c.app, &c.name, &c.secret, &c.created_ms],
                )
                .await?;
            }
            for s in &dump.secrets {
                tx.execute(
                    "INSERT INTO secrets (app, name, sealed, updated_ms) VALUES ($1, $2, $3, $4)",
                    &[&s.app, &s.name, &s.sealed, &s.updated_ms],
                )
                .await?;
            }
            for e in &dump.events {
                tx.execute(
                    &format!("INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"),
                    &[
                        &e.id,
                        &e.app,
                        &e.function,
                        &e.payload,
                        &e.request_id,
                        &e.source.to_string(),
                        &i64::from(e.attempts),
                        &e.created_ms,
                        &e.not_before_ms,
                        &e.lease_until_ms,
                        &e.last_error,
                        &e.trace,
                    ],
                )
                .await?;
            }
            for d in &dump.dead_letters {
                tx.execute(
                    &format!("INSERT INTO dead_letters ({DEAD_LETTER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
                    &[
                        &d.id,
                        &d.event_id,
                        &d.app,
                        &d.function,
                        &d.payload,
                        &d.request_id,
                        &d.source.to_string(),
                        &i64::from(d.attempts),
                        &d.created_ms,
                        &d.failed_ms,
                        &d.error,
                    ],
                )
                .await?;
            }
            for m in &dump.messages {
                tx.execute(
                    &format!("INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
                    &[
                        &m.id,
                        &m.app,
                        &m.queue,
                        &m.body,
                        &m.message_id,
                        &m.source.to_string(),
                        &i64::from(m.receives),
                        &m.sent_ms,
                        &m.visible_ms,
                        &m.last_error,
                        &m.trace,
                    ],
                )
                .await?;
            }
            for s in &dump.schedule_slots {
                tx.execute(
                    "INSERT INTO schedule_slots (app, function, schedule, slot_ms) VALUES ($1, $2, $3, $4)",
                    &[&s.app, &s.function, &s.schedule, &s.slot_ms],
                )
                .await?;
            }
            for b in &dump.buckets {
                tx.execute(
                    &format!("INSERT INTO buckets ({BUCKET_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
                    &[&b.name, &b.app, &b.declared_as, &b.spec, &b.created_ms],
                )
                .await?;
            }
            for o in &dump.objects {
                tx.execute(
                    &format!("INSERT INTO objects ({OBJECT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                    &[&o.bucket, &o.key, &(o.size as i64), &o.etag, &o.blob, &o.modified_ms, &o.headers],
                )
                .await?;
            }
            for u in &dump.uploads {
                tx.execute(
                    &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
                    &[&u.upload_id, &u.bucket, &u.key, &u.headers, &u.created_ms],
                )
                .await?;
            }
            for p in &dump.parts {
                tx.execute(
                    &format!("INSERT INTO parts ({PART_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
                    &[&p.upload_id, &i64::from(p.number), &(p.size as i64), &p.etag, &p.blob, &p.modified_ms],
                )
                .await?;
            }
            documents::import(&tx, &dump.documents, &dump.document_indexes).await?;
            users::import(&tx, &dump.users, &dump.sessions).await?;
            // Ids go on after the largest imported, as they would have.
            for table in ["events", "dead_letters", "messages", "logs"] {
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
                    ),
                    &[],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Leases for PostgresStore {
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        run(async {
            let taken = self
                .client()
                .await?
                .execute(
                    "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms \
                     WHERE leases.holder = EXCLUDED.holder OR leases.until_ms <= $4",
                    &[&name, &holder, &until_ms, &now_ms],
                )
                .await?;
            Ok(taken > 0)
        })
        .await
    }
}

#[async_trait]
impl Nodes for PostgresStore {
    async fn heartbeat(&self, node: NodeRecord) -> StoreResult<()> {
        run(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO nodes (id, admin_url, public_url, version, started_ms, heartbeat_ms, instances, report) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET \
                     admin_url = EXCLUDED.admin_url, public_url = EXCLUDED.public_url, version = EXCLUDED.version, \
                     started_ms = EXCLUDED.started_ms, heartbeat_ms = EXCLUDED.heartbeat_ms, instances = EXCLUDED.instances, \
                     report = EXCLUDED.report",
                    &[
                        &node.id,
                        &node.admin_url,
                        &node.public_url,
                        &node.version,
                        &node.started_ms,
                        &node.heartbeat_ms,
                        &(node.instances as i64),
                        &node.report,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT id, admin_url, public_url, version, started_ms, heartbeat_ms, instances, report FROM nodes ORDER BY id",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| NodeRecord {
                    id: row.get(0),
                    admin_url: row.get(1),
                    public_url: row.get(2),
                    version: row.get(3),
                    started_ms: row.get(4),
                    heartbeat_ms: row.get(5),
                    instances: row.get::<_, i64>(6) as u64,
                    report: row.get(7),
                })
                .collect())
        })
        .await
    }
}

#[async_trait]
impl Backlogs for PostgresStore {
    async fn backlogs(&self) -> StoreResult<Vec<Backlog>> {
        run(async {
            let client = self.client().await?;
            let mut by_app: BTreeMap<String, Backlog> = BTreeMap::new();
            for (table, column, is_events) in
                [("events", "payload", true), ("messages", "body", false)]
            {
                let sql = format!(
                    "SELECT app, COUNT(*), COALESCE(SUM(octet_length({column})), 0)::BIGINT FROM {table} GROUP BY app"
                );
                for row in client.query(&sql, &[]).await? {
                    let app: String = row.get(0);
                    let (count, bytes) = (row.get::<_, i64>(1) as u64, row.get::<_, i64>(2) as u64);
                    let entry = by_app.entry(app.clone()).or_insert_with(|| Backlog {
                        app,
                        ..Backlog::default()
                    });
                    if is_events {
                        (entry.events, entry.event_bytes) = (count, bytes);
                    } else {
                        (entry.messages, entry.message_bytes) = (count, bytes);
                    }
                }
            }
            Ok(by_app.into_values().collect())
        })
        .await
    }
}
