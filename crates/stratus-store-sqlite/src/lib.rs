//! The embedded SQLite backend: one file in the data directory, WAL mode,
//! schema migrations keyed by `PRAGMA user_version`.

mod documents;
mod users;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use stratus_store::Result as StoreResult;
use stratus_store::{
    AlertChange, AlertRecord, AppRecord, AwsCredentialRecord, Backlog, BucketCreated,
    BucketDeleted, BucketRecord, BuildRecord, BuildStatus, Completed, DeadLetter, Dump,
    EventCounts, EventRecord, FailureRecord, FollowUp, KeyRecord, LogBudget, LogQuery, LogRecord,
    MessageRecord, MessageSettlement, NewEvent, NewMessage, NewVersion, NoSuchBucket, NoSuchUpload,
    NodeRecord, ObjectRecord, ObjectUsage, PackageRecord, PartRecord, QueueCounts, ScheduleSlot,
    SecretRecord, Settlement, Source, StoreError, StoredLog, Trimmed, UploadRecord, VersionRecord,
};
use stratus_store::{
    Alerts, Apps, Backlogs, Builds, Credentials, Events, Failures, Leases, LogStore, Messages,
    Meta, MetaKey, Nodes, Objects, Packages, Schedules, Secrets, Transfer, UnitOfWork, Write,
};

/// An error inside this backend, before it leaves as a [`StoreError`].
#[derive(Debug)]
enum Error {
    Sql(rusqlite::Error),
    Store(StoreError),
}

type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Error {
        Error::Sql(err)
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
            Error::Sql(rusqlite::Error::SqliteFailure(e, why))
                if e.code == rusqlite::ErrorCode::DiskFull =>
            {
                StoreError::DiskFull(why.unwrap_or_else(|| e.to_string()))
            }
            Error::Sql(err) => StoreError::Database(Box::new(err)),
            Error::Store(err) => err,
        }
    }
}

/// Schema migrations, applied in order; index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    active_version INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE versions (
    app TEXT NOT NULL,
    version INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    spec TEXT NOT NULL,
    packages TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (app, version)
);
CREATE TABLE packages (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    unpacked_bytes INTEGER NOT NULL,
    files INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE logs (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    instance TEXT NOT NULL,
    request_id TEXT,
    stream TEXT NOT NULL,
    message TEXT NOT NULL,
    fields TEXT
);
CREATE INDEX logs_by_function ON logs (app, function, id);
CREATE INDEX logs_by_request ON logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX logs_by_time ON logs (ts_ms);
"#,
    r#"
CREATE TABLE app_keys (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE INDEX app_keys_by_app ON app_keys (app);
"#,
    // The event queue. Ids are AUTOINCREMENT because the queue is often
    // empty, and a plain rowid would then start again at 1: a settlement
    // that arrives late, or a dead letter's event_id, would name another
    // event. `not_before_ms` is when an event may next be claimed, and a
    // claim moves it to the end of the lease, so one index finds new
    // events, due retries and lapsed leases alike, and its first entry is
    // when the dispatcher must next wake. The unique key makes enqueueing
    // idempotent and, led by app, serves deleting and counting by app.
    r#"
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    payload BLOB NOT NULL,
    request_id TEXT NOT NULL,
    source TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    not_before_ms INTEGER NOT NULL,
    lease_until_ms INTEGER,
    last_error TEXT,
    UNIQUE (app, function, request_id)
);
CREATE INDEX events_due ON events (not_before_ms);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL,
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    payload BLOB NOT NULL,
    request_id TEXT NOT NULL,
    source TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    failed_ms INTEGER NOT NULL,
    error TEXT NOT NULL
);
CREATE INDEX dead_letters_by_function ON dead_letters (app, function, id);
"#,
    // AWS credentials for the Lambda Invoke API. The secret is stored as it
    // is, unlike an app key's: Signature Version 4 is an HMAC keyed by (a
    // key derived from) the secret, so verifying one needs the secret.
    r#"
CREATE TABLE aws_credentials (
    access_key_id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX aws_credentials_by_app ON aws_credentials (app);
"#,
    // Queues: messages wait until visible, are received in batches with a
    // visibility timeout, and are deleted once handled. Schedules: the
    // last slot each fired, which makes firing once per slot across nodes
    // and restarts a compare-and-set.
    r#"
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    message_id TEXT NOT NULL,
    source TEXT NOT NULL,
    receives INTEGER NOT NULL DEFAULT 0,
    sent_ms INTEGER NOT NULL,
    visible_ms INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX messages_visible ON messages (app, queue, visible_ms);
CREATE TABLE schedule_slots (
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    schedule TEXT NOT NULL,
    slot_ms INTEGER NOT NULL,
    PRIMARY KEY (app, function, schedule)
);
"#,
    // Facts about the store itself, such as the identity that ties it to
    // its data directory.
    r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    // Bytes of log records per app, kept with every insert and delete, so
    // the log budget is checked without a scan; and the oldest records of
    // one app found by index.
    r#"
CREATE TABLE log_usage (
    app TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO log_usage (app, bytes)
    SELECT app, SUM(octet_length(message) + COALESCE(octet_length(fields), 0)) FROM logs GROUP BY app;
CREATE INDEX logs_by_app ON logs (app, id);
"#,
    // The nodes that use the store, by their heartbeats.
    r#"
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    admin_url TEXT NOT NULL,
    public_url TEXT NOT NULL,
    version TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    instances INTEGER NOT NULL
);
"#,
    // Leases on work one node at a time does for all.
    r#"
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
"#,
    // What each node runs, for a status of the whole cluster.
    r#"
ALTER TABLE nodes ADD COLUMN report TEXT NOT NULL DEFAULT '{}';
"#,
    // Apps' secrets, sealed.
    r#"
CREATE TABLE secrets (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (app, name)
) WITHOUT ROWID;
"#,
    // Where each version came from.
    r#"
ALTER TABLE versions ADD COLUMN source TEXT NOT NULL DEFAULT '';
"#,
    // The dependency layer each built code directory of a version runs
    // with (JSON), and the record of each build.
    r#"
ALTER TABLE versions ADD COLUMN layers TEXT NOT NULL DEFAULT '{}';
CREATE TABLE builds (
    app TEXT NOT NULL,
    id TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    status TEXT NOT NULL,
    version INTEGER,
    detail TEXT NOT NULL,
    PRIMARY KEY (app, id)
);
"#,
    // Failed invocations' scenes.
    r#"
CREATE TABLE failures (
    id TEXT PRIMARY KEY NOT NULL,
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    version INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error_type TEXT NOT NULL,
    event BLOB NOT NULL,
    scene TEXT NOT NULL
);
CREATE INDEX failures_by_function ON failures (app, function, at_ms);
"#,
    // The trace context events and messages carry.
    r#"
ALTER TABLE events ADD COLUMN trace TEXT;
ALTER TABLE messages ADD COLUMN trace TEXT;
"#,
    // Alerts' states and their history.
    r#"
CREATE TABLE alerts (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    evaluated_ms INTEGER NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (app, name)
);
CREATE TABLE alert_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX alert_history_by_app ON alert_history (app, id);
"#,
    // Buckets and their objects' metadata. Keys compare as bytes (the
    // default BINARY collation), which is the order S3 lists them in.
    r#"
CREATE TABLE buckets (
    name TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    declared_as TEXT,
    spec TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX buckets_by_app ON buckets (app);
CREATE TABLE objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    blob TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    headers TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
);
"#,
    // Multipart uploads in progress and their parts. An upload's parts go
    // with it: completed (into an object), aborted, or deleted with its
    // bucket. Uploads are listed by key, then id, as bytes.
    r#"
CREATE TABLE uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    headers TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX uploads_by_key ON uploads (bucket, key, upload_id);
CREATE TABLE parts (
    upload_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    blob TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    PRIMARY KEY (upload_id, number)
);
"#,
    // Apps' documents: JSON text, queried with the JSON functions. The
    // indexes each collection declares (partial expression indexes named
    // `docidx_...`, made and dropped with the declarations); the elements
    // of the arrays its `multi` indexes name, one row each, kept with
    // every write (SQLite cannot index `json_each`); and a record of every
    // committed change, in commit order, for watches to follow.
    r#"
CREATE TABLE documents (
    app TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (app, collection, id)
);
CREATE TABLE document_indexes (
    app TEXT NOT NULL,
    collection TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (app, collection, name)
);
CREATE TABLE document_terms (
    app TEXT NOT NULL,
    collection TEXT NOT NULL,
    field TEXT NOT NULL,
    kind TEXT NOT NULL,
    value NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (app, collection, field, kind, value, id)
) WITHOUT ROWID;
CREATE INDEX document_terms_by_id ON document_terms (app, collection, id);
CREATE TABLE document_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT,
    at_ms INTEGER NOT NULL
);
CREATE INDEX document_changes_by_time ON document_changes (at_ms);
CREATE INDEX document_changes_by_app ON document_changes (app);
-- Statistics for the planner, which nobody runs ANALYZE over: an app
-- and a collection hold many documents. (ANALYZE of the empty table makes
-- sqlite_stat1.)
ANALYZE documents;
DELETE FROM sqlite_stat1 WHERE tbl = 'documents';
INSERT INTO sqlite_stat1 (tbl, idx, stat)
    VALUES ('documents', 'sqlite_autoindex_documents_1', '1000000 100000 10000 1');
ANALYZE sqlite_schema;
"#,
    // Apps' end users, emails in lower case and unique per app, and their
    // sessions (each a refresh token's SHA-256).
    r#"
CREATE TABLE users (
    app TEXT NOT NULL,
    uid TEXT NOT NULL,
    provider TEXT NOT NULL,
    email TEXT,
    password_hash TEXT,
    claims TEXT,
    created_ms INTEGER NOT NULL,
    last_sign_in_ms INTEGER NOT NULL,
    disabled INTEGER NOT NULL,
    tokens_valid_after_ms INTEGER NOT NULL,
    PRIMARY KEY (app, uid)
);
CREATE UNIQUE INDEX users_by_email ON users (app, email) WHERE email IS NOT NULL;
CREATE TABLE sessions (
    app TEXT NOT NULL,
    id TEXT NOT NULL,
    uid TEXT NOT NULL,
    refresh_sha256 TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (app, id)
);
CREATE INDEX sessions_by_user ON sessions (app, uid);
CREATE INDEX sessions_by_expiry ON sessions (expires_ms);
"#,
];

/// Bytes a log record counts for toward the budget.
const LOG_SIZE: &str = "octet_length(message) + COALESCE(octet_length(fields), 0)";
/// Log records deleted in one transaction while trimming: small, so that
/// on a nearly full disk each fits the journal, which is emptied after it.
const TRIM_CHUNK: i64 = 200;
/// Pages given back to the file system in one step.
const RECLAIM_STEP: i64 = 256;

/// The SQLite store. Calls run on tokio's blocking pool, one at a time.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// The database file as it was opened, to notice it removed or
    /// replaced under the running server.
    file: Arc<FileIdentity>,
}

/// A file by path and by what the path named at open.
#[derive(Debug)]
struct FileIdentity {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
    /// Set once it was found gone or replaced; from then on every call fails.
    lost: std::sync::atomic::AtomicBool,
}

impl FileIdentity {
    fn of(path: &Path) -> Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|err| StoreError::Permissions {
            path: path.to_owned(),
            err,
        })?;
        Ok(FileIdentity {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            lost: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the path still names the file that was opened.
    fn check(&self) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::Ordering;
        let same = !self.lost.load(Ordering::Relaxed)
            && std::fs::metadata(&self.path)
                .is_ok_and(|meta| meta.dev() == self.dev && meta.ino() == self.ino);
        if same {
            return Ok(());
        }
        if !self.lost.swap(true, Ordering::Relaxed) {
            tracing::error!(
                path = %self.path.display(),
                "the database file was removed or replaced while the server ran: every write is refused from now on, so that nothing more is acknowledged and lost; put the file back (or restore a backup) and restart the server"
            );
        }
        Err(StoreError::Lost {
            path: self.path.clone(),
        }
        .into())
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    /// Opens (or creates) the database at `path`, readable by its owner
    /// only, as are the journal files SQLite makes beside it.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        Ok(SqliteStore::open_inner(path)?)
    }

    fn open_inner(path: &Path) -> Result<SqliteStore> {
        owner_only(path)?;
        let file = Arc::new(FileIdentity::of(path)?);
        let mut conn = Connection::open(path)?;
        // Free pages go back to the file system when logs are trimmed. A
        // new database gets this before its first table; an older one is
        // rewritten once.
        let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if mode != 2 {
            let tables: i64 =
                conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0))?;
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            if tables > 0 {
                tracing::info!(path = %path.display(), "rewriting the database once, so that trimmed logs give their space back");
                conn.execute_batch("VACUUM")?;
            }
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            file,
        })
    }

    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (conn, file) = (self.conn.clone(), self.file.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Checked under the lock, just before the work: nothing is
            // acknowledged after the file went away.
            file.check()?;
            f(&mut conn).map_err(StoreError::from)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }

    /// Runs one chunk of a trim, `sql` (a DELETE ... RETURNING app and
    /// size, of `app`'s records when given), in a turn of its own on the
    /// connection; adds what it removed to `trimmed` and returns the bytes.
    async fn delete_chunk(
        &self,
        sql: &str,
        app: Option<String>,
        trimmed: &mut Trimmed,
    ) -> Result<i64> {
        let sql = sql.to_owned();
        let (freed, part) = self
            .call(move |conn| {
                let mut part = Trimmed::default();
                let freed = match &app {
                    Some(app) => delete_logs_of(conn, &sql, app, &mut part)?,
                    None => delete_logs(conn, &sql, &mut part)?,
                };
                Ok((freed, part))
            })
            .await?;
        trimmed.records += part.records;
        trimmed.bytes += part.bytes;
        Ok(freed)
    }
}

/// Writes a consistent copy of the database at `db` to `to` (which must
/// not exist, in a directory only its owner may enter), as of one moment,
/// while a server may be writing to it: `VACUUM INTO` reads in one
/// transaction. The copy is then made mode 0600.
pub fn snapshot(db: &Path, to: &Path) -> StoreResult<()> {
    Ok(snapshot_inner(db, to)?)
}

fn snapshot_inner(db: &Path, to: &Path) -> Result<()> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute("VACUUM INTO ?1", [to.to_string_lossy()])?;
    owner_only(to)
}

/// Creates `path` empty with mode 0600 unless it exists, and takes every
/// other permission from it and the journal files beside it. SQLite gives
/// the journal files the database's mode.
fn owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let permissions = |err: std::io::Error| StoreError::Permissions {
        path: path.to_owned(),
        err,
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(permissions)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(permissions(err).into());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Runs a `DELETE ... RETURNING app, size` on the logs and takes what it
/// deleted off the apps' usage, in one transaction; the bytes deleted.
fn delete_logs(conn: &mut Connection, sql: &str, trimmed: &mut Trimmed) -> Result<i64> {
    delete_logs_with(conn, sql, &[], trimmed)
}

fn delete_logs_of(
    conn: &mut Connection,
    sql: &str,
    app: &str,
    trimmed: &mut Trimmed,
) -> Result<i64> {
    delete_logs_with(conn, sql, &[&app], trimmed)
}

fn delete_logs_with(
    conn: &mut Connection,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    trimmed: &mut Trimmed,
) -> Result<i64> {
    let tx = conn.transaction()?;
    let mut by_app: std::collections::HashMap<String, i64> = Default::default();
    let mut records = 0u64;
    {
        let mut stmt = tx.prepare(sql)?;
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            let (app, size): (String, i64) = (row.get(0)?, row.get(1)?);
            *by_app.entry(app).or_default() += size;
            records += 1;
        }
    }
    let mut freed = 0;
    for (app, bytes) in by_app {
        tx.execute(
            "UPDATE log_usage SET bytes = MAX(bytes - ?2, 0) WHERE app = ?1",
            params![app, bytes],
        )?;
        freed += bytes;
    }
    tx.execute("DELETE FROM log_usage WHERE bytes = 0", [])?;
    tx.commit()?;
    if records > 0 {
        checkpoint(conn)?;
    }
    trimmed.records += records;
    trimmed.bytes += freed as u64;
    Ok(freed)
}

/// Gives free pages of the database back to the file system, one step of
/// `RECLAIM_STEP` pages followed by a checkpoint that truncates the
/// journal: the files shrink, and a full disk needs little room for it.
/// Returns the bytes given back and whether another step would give more.
fn reclaim_step(conn: &mut Connection) -> Result<(u64, bool)> {
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let incremental: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    if incremental != 2 || free == 0 {
        checkpoint(conn)?;
        return Ok((0, false));
    }
    // Each step of the statement frees one page: run it to the end.
    {
        let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({RECLAIM_STEP})"))?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    checkpoint(conn)?;
    let left: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let reclaimed = (free - left).max(0) as u64 * page_size as u64;
    Ok((reclaimed, left > 0 && left < free))
}

/// Copies the journal into the database and truncates it.
fn checkpoint(conn: &Connection) -> Result<()> {
    let _: (i64, i64, i64) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::NewerSchema {
            found: current,
            known,
        }
        .into());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn app_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AppRecord> {
    Ok(AppRecord {
        name: row.get(0)?,
        active_version: row.get(1)?,
        created_ms: row.get(2)?,
        updated_ms: row.get(3)?,
    })
}

const VERSION_COLUMNS: &str =
    "v.app, v.version, v.spec, v.manifest, v.packages, v.created_ms, v.source, v.layers";

/// A version's row, its JSON columns still text.
type RawVersion = (String, u32, String, String, String, i64, String, String);

fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawVersion> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

fn decode_version(raw: RawVersion) -> Result<VersionRecord> {
    let (app, version, spec, manifest, packages, created_ms, source, layers) = raw;
    Ok(VersionRecord {
        app,
        version,
        spec: serde_json::from_str(&spec)?,
        manifest,
        packages: serde_json::from_str(&packages)?,
        created_ms,
        source,
        layers: serde_json::from_str(&layers)?,
    })
}

const EVENT_COLUMNS: &str = "id, app, function, payload, request_id, source, attempts, created_ms, not_before_ms, lease_until_ms, last_error, trace";

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: row.get(0)?,
        app: row.get(1)?,
        function: row.get(2)?,
        payload: row.get(3)?,
        request_id: row.get(4)?,
        source: Source::from(row.get::<_, String>(5)?),
        attempts: row.get(6)?,
        created_ms: row.get(7)?,
        not_before_ms: row.get(8)?,
        lease_until_ms: row.get(9)?,
        last_error: row.get(10)?,
        trace: row.get(11)?,
    })
}

const AWS_CREDENTIAL_COLUMNS: &str = "access_key_id, app, name, secret, created_ms";

fn aws_credential_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AwsCredentialRecord> {
    Ok(AwsCredentialRecord {
        access_key_id: row.get(0)?,
        app: row.get(1)?,
        name: row.get(2)?,
        secret: row.get(3)?,
        created_ms: row.get(4)?,
    })
}

const DEAD_LETTER_COLUMNS: &str = "id, event_id, app, function, payload, request_id, source, attempts, created_ms, failed_ms, error";

fn dead_letter_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.get(0)?,
        event_id: row.get(1)?,
        app: row.get(2)?,
        function: row.get(3)?,
        payload: row.get(4)?,
        request_id: row.get(5)?,
        source: Source::from(row.get::<_, String>(6)?),
        attempts: row.get(7)?,
        created_ms: row.get(8)?,
        failed_ms: row.get(9)?,
        error: row.get(10)?,
    })
}

/// Queues events inside the caller's transaction; see
/// [`Store::enqueue_events`].
fn insert_events(tx: &rusqlite::Transaction<'_>, events: Vec<NewEvent>) -> Result<Vec<i64>> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (app, function, payload, request_id, source, created_ms, not_before_ms, trace) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (app, function, request_id) DO NOTHING RETURNING id",
    )?;
    let mut existing = tx.prepare_cached(
        "SELECT id FROM events WHERE app = ?1 AND function = ?2 AND request_id = ?3",
    )?;
    let mut ids = Vec::with_capacity(events.len());
    for e in events {
        let inserted: Option<i64> = insert
            .query_row(
                params![
                    e.app,
                    e.function,
                    e.payload,
                    e.request_id,
                    e.source.to_string(),
                    e.created_ms,
                    e.not_before_ms,
                    e.trace
                ],
                |row| row.get(0),
            )
            .optional()?;
        let id = match inserted {
            Some(id) => id,
            None => {
                existing.query_row(params![e.app, e.function, e.request_id], |row| row.get(0))?
            }
        };
        ids.push(id);
    }
    Ok(ids)
}

fn insert_messages(tx: &rusqlite::Transaction<'_>, messages: Vec<NewMessage>) -> Result<Vec<i64>> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO messages (app, queue, body, message_id, source, sent_ms, visible_ms, trace) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
    )?;
    let mut ids = Vec::with_capacity(messages.len());
    for m in messages {
        ids.push(insert.query_row(
            params![
                m.app,
                m.queue,
                m.body,
                m.message_id,
                m.source.to_string(),
                m.sent_ms,
                m.visible_ms,
                m.trace
            ],
            |row| row.get(0),
        )?);
    }
    Ok(ids)
}

fn insert_follow_ups(tx: &rusqlite::Transaction<'_>, then: Vec<FollowUp>) -> Result<()> {
    let (mut events, mut messages) = (Vec::new(), Vec::new());
    for follow_up in then {
        match follow_up {
            FollowUp::Event(e) => events.push(e),
            FollowUp::Message(m) => messages.push(m),
        }
    }
    insert_events(tx, events)?;
    insert_messages(tx, messages)?;
    Ok(())
}

const MESSAGE_COLUMNS: &str =
    "id, app, queue, body, message_id, source, receives, sent_ms, visible_ms, last_error, trace";

fn message_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: row.get(0)?,
        app: row.get(1)?,
        queue: row.get(2)?,
        body: row.get(3)?,
        message_id: row.get(4)?,
        source: Source::from(row.get::<_, String>(5)?),
        receives: row.get(6)?,
        sent_ms: row.get(7)?,
        visible_ms: row.get(8)?,
        last_error: row.get(9)?,
        trace: row.get(10)?,
    })
}

/// The dead letters `redrive_dead_letters` and `delete_dead_letters` act on:
/// ?1 app, ?2 function or NULL, ?3 a JSON array of ids or NULL.
const DEAD_LETTER_SELECTION: &str = "app = ?1 AND (?2 IS NULL OR function = ?2) \
     AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))";

fn ids_json(ids: Option<Vec<i64>>) -> Result<Option<String>> {
    Ok(ids.map(|ids| serde_json::to_string(&ids)).transpose()?)
}

#[async_trait]
impl Meta for SqliteStore {
    async fn meta_or_insert(&self, key: MetaKey, candidate: &str) -> StoreResult<String> {
        let candidate = candidate.to_owned();
        self.call(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                (key.as_str(), candidate),
            )?;
            Ok(conn.query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [key.as_str()],
                |row| row.get(0),
            )?)
        })
        .await
    }
}

#[async_trait]
impl Apps for SqliteStore {
    async fn list_apps(&self) -> StoreResult<Vec<AppRecord>> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, active_version, created_ms, updated_ms FROM apps ORDER BY name",
            )?;
            let rows = stmt.query_map([], app_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn get_app(&self, app: &str) -> StoreResult<Option<AppRecord>> {
        let app = app.to_owned();
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT name, active_version, created_ms, updated_ms FROM apps WHERE name = ?1",
                    [app],
                    app_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn active_versions(&self) -> StoreResult<Vec<VersionRecord>> {
        self.call(|conn| {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM versions v JOIN apps a ON a.name = v.app AND a.active_version = v.version ORDER BY v.app"
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map([], version_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(decode_version).collect()
        })
        .await
    }

    async fn active_version(&self, app: &str) -> StoreResult<Option<VersionRecord>> {
        let app = app.to_owned();
        self.call(move |conn| {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM versions v JOIN apps a ON a.name = v.app AND a.active_version = v.version WHERE v.app = ?1"
            );
            let raw = conn.query_row(&sql, [app], version_from_row).optional()?;
            raw.map(decode_version).transpose()
        })
        .await
    }

    async fn list_versions(&self, app: &str) -> StoreResult<Vec<VersionRecord>> {
        let app = app.to_owned();
        self.call(move |conn| {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.app = ?1 ORDER BY v.version DESC"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let raw = stmt
                .query_map([app], version_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            raw.into_iter().map(decode_version).collect()
        })
        .await
    }

    async fn reactivate(
        &self,
        app: &str,
        version: u32,
        now_ms: i64,
    ) -> StoreResult<Option<VersionRecord>> {
        let app = app.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM versions v WHERE v.app = ?1 AND v.version = ?2"
            );
            let Some(raw) = tx
                .query_row(&sql, params![app, version], version_from_row)
                .optional()?
            else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE apps SET active_version = ?2, updated_ms = ?3 WHERE name = ?1",
                params![app, version, now_ms],
            )?;
            tx.commit()?;
            decode_version(raw).map(Some)
        })
        .await
    }

    async fn activate(&self, new: NewVersion) -> StoreResult<VersionRecord> {
        self.call(move |conn| {
            let spec = serde_json::to_string(&new.spec)?;
            let packages = serde_json::to_string(&new.packages)?;
            let layers = serde_json::to_string(&new.layers)?;
            let tx = conn.transaction()?;
            let app = new.spec.name.clone();
            tx.execute(
                "INSERT INTO apps (name, active_version, created_ms, updated_ms) VALUES (?1, NULL, ?2, ?2) ON CONFLICT (name) DO NOTHING",
                params![app, new.created_ms],
            )?;
            let version: u32 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE app = ?1",
                [&app],
                |row| row.get(0),
            )?;
            tx.execute(
                "INSERT INTO versions (app, version, manifest, spec, packages, created_ms, source, layers) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![app, version, new.manifest, spec, packages, new.created_ms, new.source, layers],
            )?;
            tx.execute(
                "UPDATE apps SET active_version = ?2, updated_ms = ?3 WHERE name = ?1",
                params![app, version, new.created_ms],
            )?;
            tx.commit()?;
            Ok(VersionRecord {
                app,
                version,
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
        let app = app.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM versions WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM app_keys WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM aws_credentials WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM secrets WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM builds WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM failures WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM alerts WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM alert_history WHERE app = ?1", [&app])?;
            tx.execute(
                "DELETE FROM objects WHERE bucket IN (SELECT name FROM buckets WHERE app = ?1)",
                [&app],
            )?;
            tx.execute(
                "DELETE FROM parts WHERE upload_id IN (SELECT upload_id FROM uploads \
                 WHERE bucket IN (SELECT name FROM buckets WHERE app = ?1))",
                [&app],
            )?;
            tx.execute(
                "DELETE FROM uploads WHERE bucket IN (SELECT name FROM buckets WHERE app = ?1)",
                [&app],
            )?;
            tx.execute("DELETE FROM buckets WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM events WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM dead_letters WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM messages WHERE app = ?1", [&app])?;
            tx.execute("DELETE FROM schedule_slots WHERE app = ?1", [&app])?;
            documents::delete_app_documents(&tx, &app)?;
            users::delete_app_users(&tx, &app)?;
            let deleted = tx.execute("DELETE FROM apps WHERE name = ?1", [&app])?;
            tx.commit()?;
            Ok(deleted > 0)
        })
        .await
    }
}

#[async_trait]
impl Packages for SqliteStore {
    async fn has_package(&self, sha256: &str) -> StoreResult<bool> {
        let sha256 = sha256.to_owned();
        self.call(move |conn| {
            Ok(conn
                .query_row("SELECT 1 FROM packages WHERE sha256 = ?1", [sha256], |_| {
                    Ok(())
                })
                .optional()?
                .is_some())
        })
        .await
    }

    async fn put_package(&self, p: PackageRecord) -> StoreResult<()> {
        self.call(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO packages (sha256, size, unpacked_bytes, files, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![p.sha256, p.size as i64, p.unpacked_bytes as i64, p.files as i64, p.created_ms],
            )?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Credentials for SqliteStore {
    async fn create_key(&self, key: KeyRecord) -> StoreResult<()> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO app_keys (id, app, name, sha256, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key.id, key.app, key.name, key.sha256, key.created_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_keys(&self, app: Option<&str>) -> StoreResult<Vec<KeyRecord>> {
        let app = app.map(str::to_owned);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, app, name, sha256, created_ms FROM app_keys \
                 WHERE ?1 IS NULL OR app = ?1 ORDER BY app, created_ms, id",
            )?;
            let rows = stmt.query_map([app], |row| {
                Ok(KeyRecord {
                    id: row.get(0)?,
                    app: row.get(1)?,
                    name: row.get(2)?,
                    sha256: row.get(3)?,
                    created_ms: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_key(&self, app: &str, id: &str) -> StoreResult<bool> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.call(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM app_keys WHERE app = ?1 AND id = ?2",
                params![app, id],
            )?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn create_aws_credential(&self, c: AwsCredentialRecord) -> StoreResult<()> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO aws_credentials (access_key_id, app, name, secret, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![c.access_key_id, c.app, c.name, c.secret, c.created_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_aws_credentials(
        &self,
        app: Option<&str>,
    ) -> StoreResult<Vec<AwsCredentialRecord>> {
        let app = app.map(str::to_owned);
        self.call(move |conn| {
            let sql = format!(
                "SELECT {AWS_CREDENTIAL_COLUMNS} FROM aws_credentials \
                 WHERE ?1 IS NULL OR app = ?1 ORDER BY app, created_ms, access_key_id"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([app], aws_credential_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn get_aws_credential(
        &self,
        access_key_id: &str,
    ) -> StoreResult<Option<AwsCredentialRecord>> {
        let id = access_key_id.to_owned();
        self.call(move |conn| {
            let sql = format!(
                "SELECT {AWS_CREDENTIAL_COLUMNS} FROM aws_credentials WHERE access_key_id = ?1"
            );
            Ok(conn
                .query_row(&sql, [id], aws_credential_from_row)
                .optional()?)
        })
        .await
    }

    async fn set_aws_secret(&self, access_key_id: &str, secret: &str) -> StoreResult<bool> {
        let (id, secret) = (access_key_id.to_owned(), secret.to_owned());
        self.call(move |conn| {
            let updated = conn.execute(
                "UPDATE aws_credentials SET secret = ?2 WHERE access_key_id = ?1",
                params![id, secret],
            )?;
            Ok(updated > 0)
        })
        .await
    }

    async fn delete_aws_credential(&self, app: &str, access_key_id: &str) -> StoreResult<bool> {
        let (app, id) = (app.to_owned(), access_key_id.to_owned());
        self.call(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM aws_credentials WHERE app = ?1 AND access_key_id = ?2",
                params![app, id],
            )?;
            Ok(deleted > 0)
        })
        .await
    }
}

#[async_trait]
impl Secrets for SqliteStore {
    async fn put_secret(&self, s: SecretRecord) -> StoreResult<()> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO secrets (app, name, sealed, updated_ms) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (app, name) DO UPDATE SET sealed = excluded.sealed, updated_ms = excluded.updated_ms",
                params![s.app, s.name, s.sealed, s.updated_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_secrets(&self, app: Option<&str>) -> StoreResult<Vec<SecretRecord>> {
        let app = app.map(str::to_owned);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT app, name, sealed, updated_ms FROM secrets \
                 WHERE ?1 IS NULL OR app = ?1 ORDER BY app, name",
            )?;
            let rows = stmt.query_map([app], secret_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_secret(&self, app: &str, name: &str) -> StoreResult<bool> {
        let (app, name) = (app.to_owned(), name.to_owned());
        self.call(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM secrets WHERE app = ?1 AND name = ?2",
                params![app, name],
            )?;
            Ok(deleted > 0)
        })
        .await
    }
}

fn secret_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SecretRecord> {
    Ok(SecretRecord {
        app: row.get(0)?,
        name: row.get(1)?,
        sealed: row.get(2)?,
        updated_ms: row.get(3)?,
    })
}

const BUILD_COLUMNS: &str = "app, id, started_ms, finished_ms, status, version, detail";

fn build_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRecord> {
    let status: String = row.get(4)?;
    Ok(BuildRecord {
        app: row.get(0)?,
        id: row.get(1)?,
        started_ms: row.get(2)?,
        finished_ms: row.get(3)?,
        status: BuildStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown build status {status:?}").into(),
            )
        })?,
        version: row.get(5)?,
        detail: row.get(6)?,
    })
}

#[async_trait]
impl Builds for SqliteStore {
    async fn put_build(&self, b: BuildRecord) -> StoreResult<()> {
        self.call(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO builds ({BUILD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (app, id) DO UPDATE SET started_ms = excluded.started_ms, \
                     finished_ms = excluded.finished_ms, status = excluded.status, \
                     version = excluded.version, detail = excluded.detail"
                ),
                params![
                    b.app,
                    b.id,
                    b.started_ms,
                    b.finished_ms,
                    b.status.as_str(),
                    b.version,
                    b.detail
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_builds(&self, app: &str, limit: usize) -> StoreResult<Vec<BuildRecord>> {
        let app = app.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let sql = format!(
                "SELECT {BUILD_COLUMNS} FROM builds WHERE app = ?1 ORDER BY started_ms DESC, id DESC LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![app, limit], build_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn get_build(&self, app: &str, id: &str) -> StoreResult<Option<BuildRecord>> {
        let (app, id) = (app.to_owned(), id.to_owned());
        self.call(move |conn| {
            let sql = format!("SELECT {BUILD_COLUMNS} FROM builds WHERE app = ?1 AND id = ?2");
            Ok(conn
                .query_row(&sql, params![app, id], build_from_row)
                .optional()?)
        })
        .await
    }

    async fn trim_builds(&self, app: &str, keep: usize) -> StoreResult<u64> {
        let app = app.to_owned();
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM builds WHERE app = ?1 AND id NOT IN \
                 (SELECT id FROM builds WHERE app = ?1 ORDER BY started_ms DESC, id DESC LIMIT ?2)",
                params![app, keep],
            )?;
            Ok(deleted as u64)
        })
        .await
    }
}

const FAILURE_COLUMNS: &str =
    "id, app, function, version, request_id, at_ms, outcome, error_type, event, scene";

fn failure_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<FailureRecord> {
    Ok(FailureRecord {
        id: row.get(0)?,
        app: row.get(1)?,
        function: row.get(2)?,
        version: row.get(3)?,
        request_id: row.get(4)?,
        at_ms: row.get(5)?,
        outcome: row.get(6)?,
        error_type: row.get(7)?,
        event: row.get(8)?,
        scene: row.get(9)?,
    })
}

#[async_trait]
impl Failures for SqliteStore {
    async fn put_failure(&self, f: FailureRecord) -> StoreResult<()> {
        self.call(move |conn| {
            conn.execute(
                &format!(
                    "INSERT OR REPLACE INTO failures ({FAILURE_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                ),
                params![
                    f.id,
                    f.app,
                    f.function,
                    f.version,
                    f.request_id,
                    f.at_ms,
                    f.outcome,
                    f.error_type,
                    f.event,
                    f.scene
                ],
            )?;
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
        let (app, function) = (app.to_owned(), function.map(str::to_owned));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let sql = format!(
                "SELECT {FAILURE_COLUMNS} FROM failures WHERE app = ?1 AND (?2 IS NULL OR function = ?2) \
                 ORDER BY at_ms DESC, id DESC LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![app, function, limit], failure_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn get_failure(&self, id: &str) -> StoreResult<Option<FailureRecord>> {
        let id = id.to_owned();
        self.call(move |conn| {
            let sql = format!("SELECT {FAILURE_COLUMNS} FROM failures WHERE id = ?1");
            Ok(conn.query_row(&sql, [id], failure_from_row).optional()?)
        })
        .await
    }

    async fn trim_failures(&self, app: &str, keep: usize, before_ms: i64) -> StoreResult<u64> {
        let app = app.to_owned();
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM failures WHERE app = ?1 AND (at_ms < ?3 OR id IN ( \
                   SELECT id FROM (SELECT id, ROW_NUMBER() OVER ( \
                     PARTITION BY function ORDER BY at_ms DESC, id DESC) AS n \
                   FROM failures WHERE app = ?1) WHERE n > ?2))",
                params![app, keep, before_ms],
            )?;
            Ok(deleted as u64)
        })
        .await
    }
}

const ALERT_COLUMNS: &str = "app, name, state, since_ms, evaluated_ms, detail";

#[async_trait]
impl Alerts for SqliteStore {
    async fn put_alerts(
        &self,
        states: Vec<AlertRecord>,
        changes: Vec<AlertChange>,
    ) -> StoreResult<()> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut put = tx.prepare_cached(&format!(
                    "INSERT OR REPLACE INTO alerts ({ALERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                ))?;
                for a in &states {
                    put.execute(params![
                        a.app,
                        a.name,
                        a.state,
                        a.since_ms,
                        a.evaluated_ms,
                        a.detail
                    ])?;
                }
                let mut add = tx.prepare_cached(
                    "INSERT INTO alert_history (app, name, at_ms, from_state, to_state, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for c in &changes {
                    add.execute(params![c.app, c.name, c.at_ms, c.from, c.to, c.detail])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn list_alerts(&self, app: &str) -> StoreResult<Vec<AlertRecord>> {
        let app = app.to_owned();
        self.call(move |conn| {
            let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE app = ?1 ORDER BY name");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([app], |row| {
                Ok(AlertRecord {
                    app: row.get(0)?,
                    name: row.get(1)?,
                    state: row.get(2)?,
                    since_ms: row.get(3)?,
                    evaluated_ms: row.get(4)?,
                    detail: row.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn alert_history(&self, app: &str, limit: usize) -> StoreResult<Vec<AlertChange>> {
        let app = app.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT app, name, at_ms, from_state, to_state, detail FROM alert_history \
                 WHERE app = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![app, limit], |row| {
                Ok(AlertChange {
                    app: row.get(0)?,
                    name: row.get(1)?,
                    at_ms: row.get(2)?,
                    from: row.get(3)?,
                    to: row.get(4)?,
                    detail: row.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn trim_alerts(&self, app: &str, declared: &[String], keep: usize) -> StoreResult<u64> {
        let app = app.to_owned();
        let declared = serde_json::to_string(declared)?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let states = tx.execute(
                "DELETE FROM alerts WHERE app = ?1 AND name NOT IN (SELECT value FROM json_each(?2))",
                params![app, declared],
            )?;
            let changes = tx.execute(
                "DELETE FROM alert_history WHERE app = ?1 AND id NOT IN ( \
                   SELECT id FROM alert_history WHERE app = ?1 ORDER BY id DESC LIMIT ?2)",
                params![app, keep],
            )?;
            tx.commit()?;
            Ok((states + changes) as u64)
        })
        .await
    }
}

const BUCKET_COLUMNS: &str = "name, app, declared_as, spec, created_ms";

fn bucket_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<BucketRecord> {
    Ok(BucketRecord {
        name: row.get(0)?,
        app: row.get(1)?,
        declared_as: row.get(2)?,
        spec: row.get(3)?,
        created_ms: row.get(4)?,
    })
}

const OBJECT_COLUMNS: &str = "bucket, key, size, etag, blob, modified_ms, headers";

fn object_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectRecord> {
    Ok(ObjectRecord {
        bucket: row.get(0)?,
        key: row.get(1)?,
        size: row.get::<_, i64>(2)? as u64,
        etag: row.get(3)?,
        blob: row.get(4)?,
        modified_ms: row.get(5)?,
        headers: row.get(6)?,
    })
}

/// Objects a bucket that is not empty is counted up to.
const NOT_EMPTY_BOUND: i64 = 1000;

const UPLOAD_COLUMNS: &str = "upload_id, bucket, key, headers, created_ms";

fn upload_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRecord> {
    Ok(UploadRecord {
        upload_id: row.get(0)?,
        bucket: row.get(1)?,
        key: row.get(2)?,
        headers: row.get(3)?,
        created_ms: row.get(4)?,
    })
}

const PART_COLUMNS: &str = "upload_id, number, size, etag, blob, modified_ms";

fn part_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PartRecord> {
    Ok(PartRecord {
        upload_id: row.get(0)?,
        number: row.get(1)?,
        size: row.get::<_, i64>(2)? as u64,
        etag: row.get(3)?,
        blob: row.get(4)?,
        modified_ms: row.get(5)?,
    })
}

/// Whether bucket `name` exists.
fn bucket_exists(tx: &rusqlite::Transaction<'_>, name: &str) -> Result<bool> {
    Ok(tx
        .query_row("SELECT 1 FROM buckets WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Puts an object inside the caller's transaction, replacing the one of
/// its key: the object replaced.
fn upsert_object(tx: &rusqlite::Transaction<'_>, o: &ObjectRecord) -> Result<Option<ObjectRecord>> {
    let replaced = tx
        .query_row(
            &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2"),
            params![o.bucket, o.key],
            object_from_row,
        )
        .optional()?;
    tx.execute(
        &format!(
            "INSERT INTO objects ({OBJECT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (bucket, key) DO UPDATE SET size = excluded.size, \
             etag = excluded.etag, blob = excluded.blob, \
             modified_ms = excluded.modified_ms, headers = excluded.headers"
        ),
        params![
            o.bucket,
            o.key,
            o.size as i64,
            o.etag,
            o.blob,
            o.modified_ms,
            o.headers
        ],
    )?;
    Ok(replaced)
}

/// Deletes the parts of upload `upload_id` inside the caller's
/// transaction: their blobs, by part number.
fn delete_parts(tx: &rusqlite::Transaction<'_>, upload_id: &str) -> Result<Vec<String>> {
    let mut parts = tx
        .prepare_cached("DELETE FROM parts WHERE upload_id = ?1 RETURNING number, blob")?
        .query_map([upload_id], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    parts.sort();
    Ok(parts.into_iter().map(|(_, blob)| blob).collect())
}

#[async_trait]
impl Objects for SqliteStore {
    async fn create_bucket(&self, b: BucketRecord) -> StoreResult<BucketCreated> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let inserted = tx.execute(
                &format!(
                    "INSERT INTO buckets ({BUCKET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (name) DO NOTHING"
                ),
                params![b.name, b.app, b.declared_as, b.spec, b.created_ms],
            )?;
            let created = if inserted > 0 {
                BucketCreated::Created
            } else {
                BucketCreated::Taken(tx.query_row(
                    &format!("SELECT {BUCKET_COLUMNS} FROM buckets WHERE name = ?1"),
                    [&b.name],
                    bucket_from_row,
                )?)
            };
            tx.commit()?;
            Ok(created)
        })
        .await
    }

    async fn update_bucket(&self, b: BucketRecord) -> StoreResult<bool> {
        self.call(move |conn| {
            let updated = conn.execute(
                "UPDATE buckets SET declared_as = ?2, spec = ?3 WHERE name = ?1",
                params![b.name, b.declared_as, b.spec],
            )?;
            Ok(updated > 0)
        })
        .await
    }

    async fn get_bucket(&self, name: &str) -> StoreResult<Option<BucketRecord>> {
        let name = name.to_owned();
        self.call(move |conn| {
            let sql = format!("SELECT {BUCKET_COLUMNS} FROM buckets WHERE name = ?1");
            Ok(conn.query_row(&sql, [name], bucket_from_row).optional()?)
        })
        .await
    }

    async fn list_buckets(&self, app: Option<&str>) -> StoreResult<Vec<BucketRecord>> {
        let app = app.map(str::to_owned);
        self.call(move |conn| {
            let sql = format!(
                "SELECT {BUCKET_COLUMNS} FROM buckets WHERE ?1 IS NULL OR app = ?1 ORDER BY name"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map([app], bucket_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_bucket(&self, name: &str, force: bool) -> StoreResult<BucketDeleted> {
        let name = name.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let exists = tx
                .query_row("SELECT 1 FROM buckets WHERE name = ?1", [&name], |_| Ok(()))
                .optional()?
                .is_some();
            if !exists {
                return Ok(BucketDeleted::Missing);
            }
            if !force {
                let held: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM objects WHERE bucket = ?1 LIMIT ?2)",
                    params![name, NOT_EMPTY_BOUND],
                    |row| row.get(0),
                )?;
                if held > 0 {
                    return Ok(BucketDeleted::NotEmpty(held as u64));
                }
            }
            let mut blobs = tx
                .prepare("DELETE FROM objects WHERE bucket = ?1 RETURNING blob")?
                .query_map([&name], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            // Uploads in progress go with the bucket, forced or not.
            let uploads = tx
                .prepare("DELETE FROM uploads WHERE bucket = ?1 RETURNING upload_id")?
                .query_map([&name], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            for upload_id in uploads {
                blobs.extend(delete_parts(&tx, &upload_id)?);
            }
            tx.execute("DELETE FROM buckets WHERE name = ?1", [&name])?;
            tx.commit()?;
            Ok(BucketDeleted::Deleted(blobs))
        })
        .await
    }

    async fn put_object(
        &self,
        o: ObjectRecord,
        events: Vec<NewEvent>,
    ) -> StoreResult<Result<Option<ObjectRecord>, NoSuchBucket>> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if !bucket_exists(&tx, &o.bucket)? {
                return Ok(Err(NoSuchBucket));
            }
            let replaced = upsert_object(&tx, &o)?;
            insert_events(&tx, events)?;
            tx.commit()?;
            Ok(Ok(replaced))
        })
        .await
    }

    async fn get_object(&self, bucket: &str, key: &str) -> StoreResult<Option<ObjectRecord>> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.call(move |conn| {
            let sql =
                format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2");
            Ok(conn
                .query_row(&sql, params![bucket, key], object_from_row)
                .optional()?)
        })
        .await
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        events: Vec<NewEvent>,
    ) -> StoreResult<Option<ObjectRecord>> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let deleted = tx
                .query_row(
                    &format!(
                        "DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING {OBJECT_COLUMNS}"
                    ),
                    params![bucket, key],
                    object_from_row,
                )
                .optional()?;
            if deleted.is_some() {
                insert_events(&tx, events)?;
            }
            tx.commit()?;
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
        let (bucket, prefix, after) = (
            bucket.to_owned(),
            prefix.to_owned(),
            after.map(str::to_owned),
        );
        let bound = stratus_store::prefix_bound(&prefix);
        self.call(move |conn| {
            // A range, not LIKE: `%`, `_` and `\` in a prefix are
            // themselves.
            let sql = format!(
                "SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key >= ?2 \
                 AND (?3 IS NULL OR key < ?3) AND (?4 IS NULL OR key > ?4) \
                 ORDER BY key LIMIT ?5"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![bucket, prefix, bound, after, i64::from(limit)],
                object_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn object_usage(&self, app: Option<&str>) -> StoreResult<Vec<ObjectUsage>> {
        let app = app.map(str::to_owned);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT b.app, COUNT(DISTINCT b.name), COUNT(o.key), COALESCE(SUM(o.size), 0) \
                 FROM buckets b LEFT JOIN objects o ON o.bucket = b.name \
                 WHERE ?1 IS NULL OR b.app = ?1 GROUP BY b.app ORDER BY b.app",
            )?;
            let rows = stmt.query_map([app], |row| {
                Ok(ObjectUsage {
                    app: row.get(0)?,
                    buckets: row.get::<_, i64>(1)? as u64,
                    objects: row.get::<_, i64>(2)? as u64,
                    bytes: row.get::<_, i64>(3)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn create_upload(&self, u: UploadRecord) -> StoreResult<Result<(), NoSuchBucket>> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if !bucket_exists(&tx, &u.bucket)? {
                return Ok(Err(NoSuchBucket));
            }
            tx.execute(
                &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                params![u.upload_id, u.bucket, u.key, u.headers, u.created_ms],
            )?;
            tx.commit()?;
            Ok(Ok(()))
        })
        .await
    }

    async fn get_upload(&self, upload_id: &str) -> StoreResult<Option<UploadRecord>> {
        let upload_id = upload_id.to_owned();
        self.call(move |conn| {
            let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?1");
            Ok(conn
                .query_row(&sql, [upload_id], upload_from_row)
                .optional()?)
        })
        .await
    }

    async fn put_part(
        &self,
        p: PartRecord,
    ) -> StoreResult<Result<Option<PartRecord>, NoSuchUpload>> {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM uploads WHERE upload_id = ?1",
                    [&p.upload_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Ok(Err(NoSuchUpload));
            }
            let replaced = tx
                .query_row(
                    &format!(
                        "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = ?1 AND number = ?2"
                    ),
                    params![p.upload_id, p.number],
                    part_from_row,
                )
                .optional()?;
            tx.execute(
                &format!(
                    "INSERT INTO parts ({PART_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (upload_id, number) DO UPDATE SET size = excluded.size, \
                     etag = excluded.etag, blob = excluded.blob, \
                     modified_ms = excluded.modified_ms"
                ),
                params![
                    p.upload_id,
                    p.number,
                    p.size as i64,
                    p.etag,
                    p.blob,
                    p.modified_ms
                ],
            )?;
            tx.commit()?;
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
        let upload_id = upload_id.to_owned();
        self.call(move |conn| {
            let sql = format!(
                "SELECT {PART_COLUMNS} FROM parts WHERE upload_id = ?1 AND number > ?2 \
                 ORDER BY number LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows =
                stmt.query_map(params![upload_id, after, i64::from(limit)], part_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
        let (bucket, prefix) = (bucket.to_owned(), prefix.to_owned());
        let (after_key, after_id) = match after {
            Some((key, id)) => (Some(key.to_owned()), id.map(str::to_owned)),
            None => (None, None),
        };
        let bound = stratus_store::prefix_bound(&prefix);
        self.call(move |conn| {
            // A range, not LIKE, as for objects. After a key alone: past
            // every upload of it; after a key and an id: past that one.
            let sql = format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE bucket = ?1 AND key >= ?2 \
                 AND (?3 IS NULL OR key < ?3) \
                 AND (?4 IS NULL OR key > ?4 OR (?5 IS NOT NULL AND key = ?4 AND upload_id > ?5)) \
                 ORDER BY key, upload_id LIMIT ?6"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![bucket, prefix, bound, after_key, after_id, i64::from(limit)],
                upload_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn complete_upload(
        &self,
        upload_id: &str,
        o: ObjectRecord,
        events: Vec<NewEvent>,
    ) -> StoreResult<Result<Completed, NoSuchUpload>> {
        let upload_id = upload_id.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // In progress, and into a bucket that is still there.
            let exists = tx
                .query_row(
                    "SELECT 1 FROM uploads u JOIN buckets b ON b.name = u.bucket \
                     WHERE u.upload_id = ?1",
                    [&upload_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Ok(Err(NoSuchUpload));
            }
            let part_blobs = delete_parts(&tx, &upload_id)?;
            tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [&upload_id])?;
            let replaced = upsert_object(&tx, &o)?;
            insert_events(&tx, events)?;
            tx.commit()?;
            Ok(Ok(Completed {
                replaced,
                part_blobs,
            }))
        })
        .await
    }

    async fn abort_upload(&self, upload_id: &str) -> StoreResult<Option<Vec<String>>> {
        let upload_id = upload_id.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let deleted = tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [&upload_id])?;
            if deleted == 0 {
                return Ok(None);
            }
            let blobs = delete_parts(&tx, &upload_id)?;
            tx.commit()?;
            Ok(Some(blobs))
        })
        .await
    }
}

#[async_trait]
impl LogStore for SqliteStore {
    async fn append_logs(&self, logs: Vec<LogRecord>) -> StoreResult<()> {
        if logs.is_empty() {
            return Ok(());
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO logs (ts_ms, app, function, version, instance, request_id, stream, message, fields) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                let mut usage: std::collections::HashMap<String, i64> = Default::default();
                for log in logs {
                    let fields = log.fields.as_ref().map(serde_json::to_string).transpose()?;
                    let size = log.message.len() + fields.as_ref().map_or(0, String::len);
                    match usage.get_mut(log.app.as_str()) {
                        Some(bytes) => *bytes += size as i64,
                        None => {
                            usage.insert(log.app.clone(), size as i64);
                        }
                    }
                    stmt.execute(params![
                        log.ts_ms,
                        log.app,
                        log.function,
                        log.version,
                        log.instance,
                        log.request_id,
                        log.stream.as_str(),
                        log.message,
                        fields
                    ])?;
                }
                let mut add = tx.prepare_cached(
                    "INSERT INTO log_usage (app, bytes) VALUES (?1, ?2) \
                     ON CONFLICT (app) DO UPDATE SET bytes = bytes + excluded.bytes",
                )?;
                for (app, bytes) in usage {
                    add.execute(params![app, bytes])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn query_logs(&self, q: LogQuery) -> StoreResult<Vec<StoredLog>> {
        self.call(move |conn| {
            let mut sql = String::from(
                "SELECT id, ts_ms, app, function, version, instance, request_id, stream, message, fields FROM logs WHERE 1 = 1",
            );
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut arg = |sql: &mut String, clause: &str, value: rusqlite::types::Value| {
                args.push(value);
                sql.push_str(&format!(" AND {clause} ?{}", args.len()));
            };
            if let Some(app) = q.app {
                arg(&mut sql, "app =", app.into());
            }
            if let Some(function) = q.function {
                arg(&mut sql, "function =", function.into());
            }
            if let Some(request_id) = q.request_id {
                arg(&mut sql, "request_id =", request_id.into());
            }
            if let Some(since) = q.since_ms {
                arg(&mut sql, "ts_ms >=", since.into());
            }
            if let Some(until) = q.until_ms {
                arg(&mut sql, "ts_ms <", until.into());
            }

            let ascending = q.after_id.is_some();
            if let Some(after) = q.after_id {
                arg(&mut sql, "id >", after.into());
            }
            if let Some(text) = q.contains {
                args.push(text.into());
                sql.push_str(&format!(" AND instr(message, ?{}) > 0", args.len()));
            }
            sql.push_str(if ascending { " ORDER BY id ASC" } else { " ORDER BY id DESC" });
            sql.push_str(&format!(" LIMIT {}", q.limit.max(1)));
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    LogRecord {
                        ts_ms: row.get(1)?,
                        app: row.get(2)?,
                        function: row.get(3)?,
                        version: row.get(4)?,
                        instance: row.get(5)?,
                        request_id: row.get(6)?,
                        stream: row.get::<_, String>(7)?.parse().map_err(|err: String| {
                            rusqlite::Error::FromSqlConversionFailure(
                                7,
                                rusqlite::types::Type::Text,
                                err.into(),
                            )
                        })?,
                        message: row.get(8)?,
                        fields: None,
                    },
                    row.get::<_, Option<String>>(9)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, mut record, fields) = row?;
                record.fields = fields.as_deref().map(serde_json::from_str).transpose()?;
                out.push(StoredLog { id, record });
            }
            if !ascending {
                out.reverse();
            }
            Ok(out)
        })
        .await
    }

    async fn log_bytes(&self) -> StoreResult<u64> {
        self.call(|conn| {
            let bytes: i64 =
                conn.query_row("SELECT COALESCE(SUM(bytes), 0) FROM log_usage", [], |r| {
                    r.get(0)
                })?;
            Ok(bytes.max(0) as u64)
        })
        .await
    }

    async fn trim_logs(&self, before_ms: i64, budget: LogBudget) -> StoreResult<Trimmed> {
        // Chunk by chunk, each a turn of its own on the connection: the
        // event queue, which shares it, waits for one chunk at most, never
        // for the whole trim.
        let mut trimmed = Trimmed::default();
        let by_age = format!(
            "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE ts_ms < {before_ms} LIMIT {TRIM_CHUNK}) \
             RETURNING app, {LOG_SIZE}"
        );
        while self.delete_chunk(&by_age, None, &mut trimmed).await? > 0 {}
        // Each app over its own share first, its oldest first: a noisy
        // app loses its own records before anyone else's.
        let per_app = budget.per_app.min(i64::MAX as u64) as i64;
        let over: Vec<(String, i64)> = self
            .call(move |conn| {
                let mut stmt = conn.prepare("SELECT app, bytes FROM log_usage WHERE bytes > ?1")?;
                let rows = stmt.query_map([per_app], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .await?;
        for (app, mut bytes) in over {
            while bytes > per_app {
                let oldest = format!(
                    "DELETE FROM logs WHERE app = ?1 AND id <= (SELECT COALESCE(MAX(id), 0) FROM \
                     (SELECT id, {LOG_SIZE} AS size, SUM({LOG_SIZE}) OVER (ORDER BY id) AS running FROM \
                      (SELECT id, message, fields FROM logs WHERE app = ?1 ORDER BY id LIMIT {TRIM_CHUNK})) \
                     WHERE running - size < {excess}) RETURNING app, {LOG_SIZE}",
                    excess = bytes - per_app
                );
                let freed = self
                    .delete_chunk(&oldest, Some(app.clone()), &mut trimmed)
                    .await?;
                if freed == 0 {
                    break;
                }
                bytes -= freed;
            }
        }
        // Then the oldest of all, until all fit.
        let total_budget = budget.total.min(i64::MAX as u64) as i64;
        loop {
            let total: i64 = self
                .call(|conn| {
                    Ok(conn.query_row(
                        "SELECT COALESCE(SUM(bytes), 0) FROM log_usage",
                        [],
                        |r| r.get(0),
                    )?)
                })
                .await?;
            if total <= total_budget {
                break;
            }
            let oldest = format!(
                "DELETE FROM logs WHERE id <= (SELECT COALESCE(MAX(id), 0) FROM \
                 (SELECT id, {LOG_SIZE} AS size, SUM({LOG_SIZE}) OVER (ORDER BY id) AS running FROM \
                  (SELECT id, message, fields FROM logs ORDER BY id LIMIT {TRIM_CHUNK})) \
                 WHERE running - size < {excess}) RETURNING app, {LOG_SIZE}",
                excess = total - total_budget
            );
            if self.delete_chunk(&oldest, None, &mut trimmed).await? == 0 {
                break;
            }
        }
        if trimmed.records > 0 {
            loop {
                let (reclaimed, more) = self.call(reclaim_step).await?;
                trimmed.reclaimed += reclaimed;
                if !more {
                    break;
                }
            }
        }
        Ok(trimmed)
    }
}

#[async_trait]
impl Events for SqliteStore {
    async fn enqueue_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<i64>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let ids = insert_events(&tx, events)?;
            tx.commit()?;
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
        let busy = serde_json::to_string(busy)?;
        self.call(move |conn| {
            // One statement, so atomic without a transaction of its own.
            let sql = format!(
                "UPDATE events SET attempts = attempts + 1, lease_until_ms = ?2, not_before_ms = ?2 \
                 WHERE id IN (SELECT id FROM events WHERE not_before_ms <= ?1 \
                              AND (app || '/' || function) NOT IN (SELECT value FROM json_each(?4)) \
                              ORDER BY not_before_ms, id LIMIT ?3) \
                 RETURNING {EVENT_COLUMNS}"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut claimed = stmt
                .query_map(params![now_ms, until, limit, busy], event_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // RETURNING comes in no promised order.
            claimed.sort_unstable_by_key(|e| e.id);
            Ok(claimed)
        })
        .await
    }

    async fn settle_events(&self, settlements: Vec<Settlement>) -> StoreResult<u64> {
        if settlements.is_empty() {
            return Ok(0);
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut applied = 0;
            for settlement in settlements {
                let then = match settlement {
                    Settlement::Done { id, attempt, then } => {
                        let mut stmt =
                            tx.prepare_cached("DELETE FROM events WHERE id = ?1 AND attempts = ?2")?;
                        (stmt.execute(params![id, attempt])? > 0).then_some(then)
                    }
                    Settlement::Retry { id, attempt, not_before_ms, error } => {
                        let mut stmt = tx.prepare_cached(
                            "UPDATE events SET lease_until_ms = NULL, not_before_ms = ?3, last_error = ?4 \
                             WHERE id = ?1 AND attempts = ?2",
                        )?;
                        (stmt.execute(params![id, attempt, not_before_ms, error])? > 0)
                            .then(Vec::new)
                    }
                    Settlement::Dead { id, attempt, failed_ms, error, then } => {
                        let mut stmt = tx.prepare_cached(
                            "INSERT INTO dead_letters (event_id, app, function, payload, request_id, source, attempts, created_ms, failed_ms, error) \
                             SELECT id, app, function, payload, request_id, source, attempts, created_ms, ?3, ?4 \
                             FROM events WHERE id = ?1 AND attempts = ?2",
                        )?;
                        let moved = stmt.execute(params![id, attempt, failed_ms, error])? > 0;
                        if moved {
                            tx.prepare_cached("DELETE FROM events WHERE id = ?1")?
                                .execute([id])?;
                        }
                        moved.then_some(then)
                    }
                };
                if let Some(then) = then {
                    applied += 1;
                    insert_follow_ups(&tx, then)?;
                }
            }
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    async fn extend_leases(&self, leases: Vec<(i64, u32)>, until_ms: i64) -> StoreResult<u64> {
        if leases.is_empty() {
            return Ok(0);
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut extended = 0;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE events SET lease_until_ms = ?3, not_before_ms = ?3 \
                     WHERE id = ?1 AND attempts = ?2 AND lease_until_ms IS NOT NULL",
                )?;
                for (id, attempt) in leases {
                    extended += stmt.execute(params![id, attempt, until_ms])? as u64;
                }
            }
            tx.commit()?;
            Ok(extended)
        })
        .await
    }

    async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        self.call(|conn| {
            Ok(
                conn.query_row("SELECT MIN(not_before_ms) FROM events", [], |row| {
                    row.get(0)
                })?,
            )
        })
        .await
    }

    async fn release_leases(&self, now_ms: i64) -> StoreResult<u64> {
        self.call(move |conn| {
            let n = conn.execute(
                "UPDATE events SET lease_until_ms = NULL, not_before_ms = MIN(not_before_ms, ?1) \
                 WHERE lease_until_ms IS NOT NULL",
                [now_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn count_events(&self, app: Option<&str>, now_ms: i64) -> StoreResult<Vec<EventCounts>> {
        let app = app.map(str::to_owned);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT app, function, SUM(queued), SUM(in_flight), SUM(dead), MIN(oldest) FROM ( \
                   SELECT app, function, \
                          COUNT(*) FILTER (WHERE lease_until_ms IS NULL OR lease_until_ms <= ?2) AS queued, \
                          COUNT(*) FILTER (WHERE lease_until_ms > ?2) AS in_flight, \
                          0 AS dead, \
                          MIN(created_ms) FILTER (WHERE lease_until_ms IS NULL OR lease_until_ms <= ?2) AS oldest \
                   FROM events WHERE ?1 IS NULL OR app = ?1 GROUP BY app, function \
                   UNION ALL \
                   SELECT app, function, 0, 0, COUNT(*), NULL \
                   FROM dead_letters WHERE ?1 IS NULL OR app = ?1 GROUP BY app, function \
                 ) GROUP BY app, function ORDER BY app, function",
            )?;
            let rows = stmt.query_map(params![app, now_ms], |row| {
                Ok(EventCounts {
                    app: row.get(0)?,
                    function: row.get(1)?,
                    queued: row.get(2)?,
                    in_flight: row.get(3)?,
                    dead: row.get(4)?,
                    oldest_queued_ms: row.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
        let (app, function) = (app.to_owned(), function.map(str::to_owned));
        self.call(move |conn| {
            // Two statements rather than `?2 IS NULL OR`, so that a
            // function's letters are read in index order, without a sort.
            let function_clause = if function.is_some() {
                "function = ?2"
            } else {
                "?2 IS NULL"
            };
            let sql = format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters \
                 WHERE app = ?1 AND {function_clause} AND id > ?3 ORDER BY id LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![app, function, after_id.unwrap_or(0), limit.max(1)],
                dead_letter_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn get_dead_letter(&self, app: &str, id: i64) -> StoreResult<Option<DeadLetter>> {
        let app = app.to_owned();
        self.call(move |conn| {
            let sql = format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?1 AND app = ?2"
            );
            Ok(conn
                .query_row(&sql, params![id, app], dead_letter_from_row)
                .optional()?)
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
        let (app, function, ids) = (app.to_owned(), function.map(str::to_owned), ids_json(ids)?);
        self.call(move |conn| {
            let tx = conn.transaction()?;
            // The last error stays with the event, so that it is not lost
            // with the dead letter. A twin already queued is the same
            // event: the conflict merges them.
            tx.execute(
                &format!(
                    "INSERT INTO events (app, function, payload, request_id, source, created_ms, not_before_ms, last_error) \
                     SELECT app, function, payload, request_id, source, ?4, ?4, error FROM dead_letters \
                     WHERE {DEAD_LETTER_SELECTION} AND source NOT LIKE 'queue:%' ORDER BY id \
                     ON CONFLICT (app, function, request_id) DO NOTHING"
                ),
                params![app, function, ids, now_ms],
            )?;
            // A queue's message goes back to its queue.
            tx.execute(
                &format!(
                    "INSERT INTO messages (app, queue, body, message_id, source, sent_ms, visible_ms, last_error) \
                     SELECT app, substr(source, 7), payload, request_id, 'redrive', ?4, ?4, error FROM dead_letters \
                     WHERE {DEAD_LETTER_SELECTION} AND source LIKE 'queue:%' ORDER BY id"
                ),
                params![app, function, ids, now_ms],
            )?;
            let moved = tx.execute(
                &format!("DELETE FROM dead_letters WHERE {DEAD_LETTER_SELECTION}"),
                params![app, function, ids],
            )?;
            tx.commit()?;
            Ok(moved as u64)
        })
        .await
    }

    async fn delete_dead_letters(
        &self,
        app: &str,
        function: Option<&str>,
        ids: Option<Vec<i64>>,
    ) -> StoreResult<u64> {
        let (app, function, ids) = (app.to_owned(), function.map(str::to_owned), ids_json(ids)?);
        self.call(move |conn| {
            let deleted = conn.execute(
                &format!("DELETE FROM dead_letters WHERE {DEAD_LETTER_SELECTION}"),
                params![app, function, ids],
            )?;
            Ok(deleted as u64)
        })
        .await
    }
}

#[async_trait]
impl Messages for SqliteStore {
    async fn send_messages(&self, messages: Vec<NewMessage>) -> StoreResult<Vec<i64>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let ids = insert_messages(&tx, messages)?;
            tx.commit()?;
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
        let (app, queue) = (app.to_owned(), queue.to_owned());
        let until = now_ms.saturating_add(visibility_ms.max(1));
        self.call(move |conn| {
            let sql = format!(
                "UPDATE messages SET receives = receives + 1, visible_ms = ?4 \
                 WHERE id IN (SELECT id FROM messages WHERE app = ?1 AND queue = ?2 AND visible_ms <= ?3 \
                              ORDER BY visible_ms, id LIMIT ?5) \
                 RETURNING {MESSAGE_COLUMNS}"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut received = stmt
                .query_map(params![app, queue, now_ms, until, limit], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            received.sort_unstable_by_key(|m| m.id);
            Ok(received)
        })
        .await
    }

    async fn settle_messages(&self, settlements: Vec<MessageSettlement>) -> StoreResult<u64> {
        if settlements.is_empty() {
            return Ok(0);
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut applied = 0;
            for settlement in settlements {
                let changed = match settlement {
                    MessageSettlement::Done { id, receives } => tx
                        .prepare_cached("DELETE FROM messages WHERE id = ?1 AND receives = ?2")?
                        .execute(params![id, receives])?,
                    MessageSettlement::Retry { id, receives, visible_ms, error } => tx
                        .prepare_cached(
                            "UPDATE messages SET visible_ms = ?3, last_error = ?4 \
                             WHERE id = ?1 AND receives = ?2",
                        )?
                        .execute(params![id, receives, visible_ms, error])?,
                    MessageSettlement::Dead { id, receives, function, failed_ms, error } => {
                        let moved = tx
                            .prepare_cached(
                                "INSERT INTO dead_letters (event_id, app, function, payload, request_id, source, attempts, created_ms, failed_ms, error) \
                                 SELECT id, app, ?3, body, message_id, 'queue:' || queue, receives, sent_ms, ?4, ?5 \
                                 FROM messages WHERE id = ?1 AND receives = ?2",
                            )?
                            .execute(params![id, receives, function, failed_ms, error])?;
                        if moved > 0 {
                            tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?
                                .execute([id])?;
                        }
                        moved
                    }
                };
                applied += changed as u64;
            }
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    async fn next_visible_ms(&self, app: &str, queue: &str) -> StoreResult<Option<i64>> {
        let (app, queue) = (app.to_owned(), queue.to_owned());
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(visible_ms) FROM messages WHERE app = ?1 AND queue = ?2",
                )?
                .query_row(params![app, queue], |row| row.get(0))?)
        })
        .await
    }

    async fn count_messages(
        &self,
        app: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<Vec<QueueCounts>> {
        let app = app.map(str::to_owned);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT app, queue, COUNT(*) FILTER (WHERE receives = 0 OR visible_ms <= ?2), \
                        COUNT(*) FILTER (WHERE receives > 0 AND visible_ms > ?2), MIN(sent_ms) \
                 FROM messages WHERE ?1 IS NULL OR app = ?1 GROUP BY app, queue ORDER BY app, queue",
            )?;
            let rows = stmt.query_map(params![app, now_ms], |row| {
                Ok(QueueCounts {
                    app: row.get(0)?,
                    queue: row.get(1)?,
                    queued: row.get(2)?,
                    in_flight: row.get(3)?,
                    oldest_sent_ms: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

#[async_trait]
impl Schedules for SqliteStore {
    async fn fire_schedule(
        &self,
        app: &str,
        function: &str,
        schedule: &str,
        slot_ms: i64,
        event: Option<NewEvent>,
    ) -> StoreResult<bool> {
        let (app, function, schedule) = (app.to_owned(), function.to_owned(), schedule.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let won = tx
                .prepare_cached(
                    "INSERT INTO schedule_slots (app, function, schedule, slot_ms) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (app, function, schedule) DO UPDATE SET slot_ms = excluded.slot_ms \
                     WHERE slot_ms < excluded.slot_ms",
                )?
                .execute(params![app, function, schedule, slot_ms])?
                > 0;
            if won {
                insert_events(&tx, event.into_iter().collect())?;
            }
            tx.commit()?;
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
        let (app, function, schedule) = (app.to_owned(), function.to_owned(), schedule.to_owned());
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT slot_ms FROM schedule_slots WHERE app = ?1 AND function = ?2 AND schedule = ?3",
                )?
                .query_row(params![app, function, schedule], |row| row.get(0))
                .optional()?)
        })
        .await
    }
}

#[async_trait]
impl UnitOfWork for SqliteStore {
    async fn commit(&self, writes: Vec<Write>) -> StoreResult<Vec<i64>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let mut ids = Vec::with_capacity(writes.len());
            for write in writes {
                let id = match write {
                    Write::Event(event) => insert_events(&tx, vec![event])?,
                    Write::Message(message) => insert_messages(&tx, vec![message])?,
                };
                ids.extend(id);
            }
            tx.commit()?;
            Ok(ids)
        })
        .await
    }
}

#[async_trait]
impl Transfer for SqliteStore {
    async fn export(&self) -> StoreResult<Dump> {
        self.call(|conn| {
            let tx = conn.transaction()?;
            let mut dump = Dump {
                identity: tx
                    .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
                        r.get(0)
                    })
                    .optional()?,
                ..Dump::default()
            };
            dump.apps = tx
                .prepare("SELECT name, active_version, created_ms, updated_ms FROM apps ORDER BY name")?
                .query_map([], app_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let sql = format!("SELECT {VERSION_COLUMNS} FROM versions v ORDER BY v.app, v.version");
            dump.versions = tx
                .prepare(&sql)?
                .query_map([], version_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(decode_version)
                .collect::<Result<_>>()?;
            dump.packages = tx
                .prepare("SELECT sha256, size, unpacked_bytes, files, created_ms FROM packages ORDER BY sha256")?
                .query_map([], |row| {
                    Ok(PackageRecord {
                        sha256: row.get(0)?,
                        size: row.get::<_, i64>(1)? as u64,
                        unpacked_bytes: row.get::<_, i64>(2)? as u64,
                        files: row.get::<_, i64>(3)? as u64,
                        created_ms: row.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            dump.keys = tx
                .prepare("SELECT id, app, name, sha256, created_ms FROM app_keys ORDER BY app, id")?
                .query_map([], |row| {
                    Ok(KeyRecord {
                        id: row.get(0)?,
                        app: row.get(1)?,
                        name: row.get(2)?,
                        sha256: row.get(3)?,
                        created_ms: row.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let sql = format!("SELECT {AWS_CREDENTIAL_COLUMNS} FROM aws_credentials ORDER BY access_key_id");
            dump.aws_credentials = tx
                .prepare(&sql)?
                .query_map([], aws_credential_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            dump.secrets = tx
                .prepare("SELECT app, name, sealed, updated_ms FROM secrets ORDER BY app, name")?
                .query_map([], secret_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY id");
            dump.events = tx
                .prepare(&sql)?
                .query_map([], event_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY id");
            dump.dead_letters = tx
                .prepare(&sql)?
                .query_map([], dead_letter_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY id");
            dump.messages = tx
                .prepare(&sql)?
                .query_map([], message_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            dump.schedule_slots = tx
                .prepare("SELECT app, function, schedule, slot_ms FROM schedule_slots ORDER BY app, function, schedule")?
                .query_map([], |row| {
                    Ok(ScheduleSlot {
                        app: row.get(0)?,
                        function: row.get(1)?,
                        schedule: row.get(2)?,
                        slot_ms: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let sql = format!("SELECT {BUCKET_COLUMNS} FROM buckets ORDER BY name");
            dump.buckets = tx
                .prepare(&sql)?
                .query_map([], bucket_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let sql = format!("SELECT {OBJECT_COLUMNS} FROM objects ORDER BY bucket, key");
            dump.objects = tx
                .prepare(&sql)?
                .query_map([], object_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let sql = format!("SELECT {UPLOAD_COLUMNS} FROM uploads ORDER BY upload_id");
            dump.uploads = tx
                .prepare(&sql)?
                .query_map([], upload_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let sql = format!("SELECT {PART_COLUMNS} FROM parts ORDER BY upload_id, number");
            dump.parts = tx
                .prepare(&sql)?
                .query_map([], part_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            (dump.documents, dump.document_indexes) = documents::export(&tx)?;
            (dump.users, dump.sessions) = users::export(&tx)?;
            Ok(dump)
        })
        .await
    }

    async fn import(&self, dump: Dump) -> StoreResult<()> {
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let held: String = tx.query_row(
                &format!(
                    "SELECT (SELECT COUNT(*) FROM apps) || ' apps, ' || (SELECT COUNT(*) FROM events) || ' events, ' \
                     || (SELECT COUNT(*) FROM messages) || ' messages, ' || (SELECT COUNT(*) FROM dead_letters) || ' dead letters, ' \
                     || (SELECT COUNT(*) FROM buckets) || ' buckets, ' || {} || ', ' || {}",
                    documents::HELD,
                    users::HELD
                ),
                [],
                |r| r.get(0),
            )?;
            if held != "0 apps, 0 events, 0 messages, 0 dead letters, 0 buckets, 0 documents, 0 users" {
                return Err(StoreError::NotEmpty(held).into());
            }
            if let Some(identity) = &dump.identity {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('identity', ?1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [identity],
                )?;
            }
            for a in &dump.apps {
                tx.execute(
                    "INSERT INTO apps (name, active_version, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![a.name, a.active_version, a.created_ms, a.updated_ms],
                )?;
            }
            for v in &dump.versions {
                tx.execute(
                    "INSERT INTO versions (app, version, manifest, spec, packages, created_ms, source, layers) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        v.app,
                        v.version,
                        v.manifest,
                        serde_json::to_string(&v.spec)?,
                        serde_json::to_string(&v.packages)?,
                        v.created_ms,
                        v.source,
                        serde_json::to_string(&v.layers)?
                    ],
                )?;
            }
            for p in &dump.packages {
                tx.execute(
                    "INSERT OR IGNORE INTO packages (sha256, size, unpacked_bytes, files, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![p.sha256, p.size as i64, p.unpacked_bytes as i64, p.files as i64, p.created_ms],
                )?;
            }
            for k in &dump.keys {
                tx.execute(
                    "INSERT INTO app_keys (id, app, name, sha256, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![k.id, k.app, k.name, k.sha256, k.created_ms],
                )?;
            }
            for c in &dump.aws_credentials {
                tx.execute(
                    "INSERT INTO aws_credentials (access_key_id, app, name, secret, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![c.access_key_id, c.app, c.name, c.secret, c.created_ms],
                )?;
            }
            for s in &dump.secrets {
                tx.execute(
                    "INSERT INTO secrets (app, name, sealed, updated_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![s.app, s.name, s.sealed, s.updated_ms],
                )?;
            }
            for e in &dump.events {
                tx.execute(
                    &format!("INSERT INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                    params![
                        e.id,
                        e.app,
                        e.function,
                        e.payload,
                        e.request_id,
                        e.source.to_string(),
                        e.attempts,
                        e.created_ms,
                        e.not_before_ms,
                        e.lease_until_ms,
                        e.last_error,
                        e.trace
                    ],
                )?;
            }
            for d in &dump.dead_letters {
                tx.execute(
                    &format!("INSERT INTO dead_letters ({DEAD_LETTER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                    params![
                        d.id,
                        d.event_id,
                        d.app,
                        d.function,
                        d.payload,
                        d.request_id,
                        d.source.to_string(),
                        d.attempts,
                        d.created_ms,
                        d.failed_ms,
                        d.error
                    ],
                )?;
            }
            for m in &dump.messages {
                tx.execute(
                    &format!("INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                    params![
                        m.id,
                        m.app,
                        m.queue,
                        m.body,
                        m.message_id,
                        m.source.to_string(),
                        m.receives,
                        m.sent_ms,
                        m.visible_ms,
                        m.last_error,
                        m.trace
                    ],
                )?;
            }
            for s in &dump.schedule_slots {
                tx.execute(
                    "INSERT INTO schedule_slots (app, function, schedule, slot_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![s.app, s.function, s.schedule, s.slot_ms],
                )?;
            }
            for b in &dump.buckets {
                tx.execute(
                    &format!("INSERT INTO buckets ({BUCKET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![b.name, b.app, b.declared_as, b.spec, b.created_ms],
                )?;
            }
            for o in &dump.objects {
                tx.execute(
                    &format!("INSERT INTO objects ({OBJECT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                    params![o.bucket, o.key, o.size as i64, o.etag, o.blob, o.modified_ms, o.headers],
                )?;
            }
            for u in &dump.uploads {
                tx.execute(
                    &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    params![u.upload_id, u.bucket, u.key, u.headers, u.created_ms],
                )?;
            }
            for p in &dump.parts {
                tx.execute(
                    &format!("INSERT INTO parts ({PART_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                    params![p.upload_id, p.number, p.size as i64, p.etag, p.blob, p.modified_ms],
                )?;
            }
            documents::import(&tx, &dump.documents, &dump.document_indexes)?;
            users::import(&tx, &dump.users, &dump.sessions)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl Leases for SqliteStore {
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.call(move |conn| {
            let taken = conn.execute(
                "INSERT INTO leases (name, holder, until_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
                 WHERE leases.holder = excluded.holder OR leases.until_ms <= ?4",
                params![name, holder, until_ms, now_ms],
            )?;
            Ok(taken > 0)
        })
        .await
    }
}

#[async_trait]
impl Nodes for SqliteStore {
    async fn heartbeat(&self, node: NodeRecord) -> StoreResult<()> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO nodes (id, admin_url, public_url, version, started_ms, heartbeat_ms, instances, report) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO UPDATE SET \
                 admin_url = excluded.admin_url, public_url = excluded.public_url, version = excluded.version, \
                 started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms, instances = excluded.instances, \
                 report = excluded.report",
                params![
                    node.id,
                    node.admin_url,
                    node.public_url,
                    node.version,
                    node.started_ms,
                    node.heartbeat_ms,
                    node.instances as i64,
                    node.report
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        self.call(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, admin_url, public_url, version, started_ms, heartbeat_ms, instances, report FROM nodes ORDER BY id",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(NodeRecord {
                    id: row.get(0)?,
                    admin_url: row.get(1)?,
                    public_url: row.get(2)?,
                    version: row.get(3)?,
                    started_ms: row.get(4)?,
                    heartbeat_ms: row.get(5)?,
                    instances: row.get::<_, i64>(6)? as u64,
                    report: row.get(7)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}

#[async_trait]
impl Backlogs for SqliteStore {
    async fn backlogs(&self) -> StoreResult<Vec<Backlog>> {
        self.call(|conn| {
            let mut by_app: std::collections::BTreeMap<String, Backlog> = Default::default();
            for (table, column, is_events) in [("events", "payload", true), ("messages", "body", false)] {
                let sql = format!(
                    "SELECT app, COUNT(*), COALESCE(SUM(LENGTH({column})), 0) FROM {table} GROUP BY app"
                );
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
                })?;
                for row in rows {
                    let (app, count, bytes) = row?;
                    let entry = by_app.entry(app.clone()).or_insert_with(|| Backlog {
                        app,
                        ..Backlog::default()
                    });
                    if is_events {
                        entry.events = count as u64;
                        entry.event_bytes = bytes as u64;
                    } else {
                        entry.messages = count as u64;
                        entry.message_bytes = bytes as u64;
                    }
                }
            }
            Ok(by_app.into_values().collect())
        })
        .await
    }
}
