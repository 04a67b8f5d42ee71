//! The schema, in additive migrations: a node of the previous release
//! keeps working against a newer schema (it starts, says so, and uses what
//! it knows), and a node refuses a schema that no longer works for it.

/// The oldest schema version whose nodes still work against the newest:
/// every migration after it only adds. A migration that changes or drops
/// what older nodes use raises it to its own version, and older nodes
/// then refuse to start, saying so.
pub(crate) const READABLE_FROM: i64 = 1;

/// The channel nodes LISTEN on; the tables of apps, versions, keys and
/// credentials NOTIFY it at commit.
pub(crate) const CHANGES: &str = "stratus_changes";

/// Migrations, applied in order; index + 1 is the schema version.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    active_version BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE versions (
    app TEXT NOT NULL,
    version BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    spec TEXT NOT NULL,
    packages TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (app, version)
);
CREATE TABLE packages (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    unpacked_bytes BIGINT NOT NULL,
    files BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE app_keys (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL
);
CREATE INDEX app_keys_by_app ON app_keys (app);
CREATE TABLE aws_credentials (
    access_key_id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX aws_credentials_by_app ON aws_credentials (app);
CREATE TABLE logs (
    id BIGSERIAL PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    version BIGINT NOT NULL,
    instance TEXT NOT NULL,
    request_id TEXT,
    stream TEXT NOT NULL,
    message TEXT NOT NULL,
    fields TEXT
);
CREATE INDEX logs_by_app ON logs (app, id);
CREATE INDEX logs_by_function ON logs (app, function, id);
CREATE INDEX logs_by_request ON logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX logs_by_time ON logs (ts_ms);
CREATE TABLE log_usage (
    app TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL
);
-- The event queue: `not_before_ms` is when an event may next be claimed,
-- and a claim moves it to the end of its lease, so one index finds new
-- events, due retries and lapsed leases alike.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    payload BYTEA NOT NULL,
    request_id TEXT NOT NULL,
    source TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    not_before_ms BIGINT NOT NULL,
    lease_until_ms BIGINT,
    last_error TEXT,
    UNIQUE (app, function, request_id)
);
CREATE INDEX events_due ON events (not_before_ms, id);
CREATE TABLE dead_letters (
    id BIGSERIAL PRIMARY KEY,
    event_id BIGINT NOT NULL,
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    payload BYTEA NOT NULL,
    request_id TEXT NOT NULL,
    source TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    failed_ms BIGINT NOT NULL,
    error TEXT NOT NULL
);
CREATE INDEX dead_letters_by_function ON dead_letters (app, function, id);
CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    app TEXT NOT NULL,
    queue TEXT NOT NULL,
    body BYTEA NOT NULL,
    message_id TEXT NOT NULL,
    source TEXT NOT NULL,
    receives BIGINT NOT NULL DEFAULT 0,
    sent_ms BIGINT NOT NULL,
    visible_ms BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX messages_visible ON messages (app, queue, visible_ms, id);
CREATE TABLE schedule_slots (
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    schedule TEXT NOT NULL,
    slot_ms BIGINT NOT NULL,
    PRIMARY KEY (app, function, schedule)
);
"#,
    // Code packages, for nodes that were not given them: chunks of at most
    // a MiB, written in one transaction.
    r#"
CREATE TABLE package_chunks (
    sha256 TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (sha256, seq)
);
"#,
    // The nodes that share the store, by their heartbeats.
    r#"
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    admin_url TEXT NOT NULL,
    public_url TEXT NOT NULL,
    version TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL,
    instances BIGINT NOT NULL
);
"#,
    // Leases on work one node at a time does for all.
    r#"
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
"#,
    // Word of changes to the nodes at commit: one notification per
    // statement, and PostgreSQL folds equal ones of a transaction.
    r#"
CREATE FUNCTION stratus_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stratus_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER apps_changed AFTER INSERT OR UPDATE OR DELETE ON apps
    FOR EACH STATEMENT EXECUTE FUNCTION stratus_notify_change();
CREATE TRIGGER app_keys_changed AFTER INSERT OR UPDATE OR DELETE ON app_keys
    FOR EACH STATEMENT EXECUTE FUNCTION stratus_notify_change();
CREATE TRIGGER aws_credentials_changed AFTER INSERT OR UPDATE OR DELETE ON aws_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION stratus_notify_change();
"#,
    // What each node runs, for a status of the whole cluster.
    r#"
ALTER TABLE nodes ADD COLUMN report TEXT NOT NULL DEFAULT '{}';
"#,
    // Apps' secrets, sealed; nodes hear of changes to them.
    r#"
CREATE TABLE secrets (
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (app, name)
);
CREATE TRIGGER secrets_changed AFTER INSERT OR UPDATE OR DELETE ON secrets
    FOR EACH STATEMENT EXECUTE FUNCTION stratus_notify_change();
"#,
    // Where each version came from.
    r#"
ALTER TABLE versions ADD COLUMN source TEXT NOT NULL DEFAULT '';
"#,
    // The dependency layer each built code directory of a version runs
    // with (JSON), and the record of each build. Build ids order as bytes
    // do, whatever the database's collation.
    r#"
ALTER TABLE versions ADD COLUMN layers TEXT NOT NULL DEFAULT '{}';
CREATE TABLE builds (
    app TEXT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    status TEXT NOT NULL,
    version BIGINT,
    detail TEXT NOT NULL,
    PRIMARY KEY (app, id)
);
"#,
    // Failed invocations' scenes. Ids order as bytes do.
    r#"
CREATE TABLE failures (
    id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    app TEXT NOT NULL,
    function TEXT NOT NULL,
    version BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    error_type TEXT NOT NULL,
    event BYTEA NOT NULL,
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
    name TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    evaluated_ms BIGINT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (app, name)
);
CREATE TABLE alert_history (
    id BIGSERIAL PRIMARY KEY,
    app TEXT NOT NULL,
    name TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX alert_history_by_app ON alert_history (app, id);
"#,
    // Buckets and their objects' metadata. Names and keys order as bytes
    // do, whatever the database's collation: the order S3 lists them in.
    r#"
CREATE TABLE buckets (
    name TEXT COLLATE "C" PRIMARY KEY,
    app TEXT NOT NULL,
    declared_as TEXT,
    spec TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX buckets_by_app ON buckets (app);
CREATE TABLE objects (
    bucket TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    blob TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    headers TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
);
"#,
    // Multipart uploads in progress and their parts. An upload's parts go
    // with it: completed (into an object), aborted, or deleted with its
    // bucket. Uploads are listed by key, then id, as bytes.
    r#"
CREATE TABLE uploads (
    upload_id TEXT COLLATE "C" PRIMARY KEY,
    bucket TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    headers TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX uploads_by_key ON uploads (bucket, key, upload_id);
CREATE TABLE parts (
    upload_id TEXT COLLATE "C" NOT NULL,
    number BIGINT NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    blob TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    PRIMARY KEY (upload_id, number)
);
"#,
    // Apps' documents, `jsonb`; collections and ids order as bytes do.
    // The indexes each collection declares (partial indexes named
    // `docidx_...`, built online and dropped with the declarations), and a
    // record of every committed change, in commit order, for watches.
    r#"
CREATE TABLE documents (
    app TEXT NOT NULL,
    collection TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    body JSONB NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (app, collection, id)
);
CREATE TABLE document_indexes (
    app TEXT NOT NULL,
    collection TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (app, collection, name)
);
CREATE TABLE document_changes (
    seq BIGSERIAL PRIMARY KEY,
    app TEXT NOT NULL,
    collection TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    body JSONB,
    at_ms BIGINT NOT NULL
);
CREATE INDEX document_changes_by_time ON document_changes (at_ms);
CREATE INDEX document_changes_by_app ON document_changes (app);
"#,
    // Apps' end users, emails in lower case and unique per app, and their
    // sessions (each a refresh token's SHA-256); uids and ids order as
    // bytes do.
    r#"
CREATE TABLE users (
    app TEXT NOT NULL,
    uid TEXT COLLATE "C" NOT NULL,
    provider TEXT NOT NULL,
    email TEXT,
    password_hash TEXT,
    claims TEXT,
    created_ms BIGINT NOT NULL,
    last_sign_in_ms BIGINT NOT NULL,
    disabled BOOLEAN NOT NULL,
    tokens_valid_after_ms BIGINT NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (app, uid)
);
CREATE UNIQUE INDEX users_by_email ON users (app, email) WHERE email IS NOT NULL;
CREATE TABLE sessions (
    app TEXT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    uid TEXT COLLATE "C" NOT NULL,
    refresh_sha256 TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (app, id)
);
CREATE INDEX sessions_by_user ON sessions (app, uid);
CREATE INDEX sessions_by_expiry ON sessions (expires_ms);
"#,
];
