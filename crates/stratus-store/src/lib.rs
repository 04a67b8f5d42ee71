//! Platform state: applications, their versions, code packages, app keys,
//! AWS credentials, logs and the durable event queue.
//!
//! [`Store`] is the one interface the rest of the platform uses; this crate
//! holds the records it speaks in and no database driver: each backend is
//! a crate of its own (`stratus-store-sqlite`, the embedded default). The
//! hot path never calls the store: the server
//! keeps in-memory snapshots and writes logs in batches. The one exception
//! is by design: an asynchronous invocation is acknowledged only once its
//! event is committed, which is why the event methods take batches.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod documents;
mod records;
pub mod users;

use async_trait::async_trait;

pub use documents::Documents;
pub use records::{
    AlertChange, AlertRecord, AppRecord, AwsCredentialRecord, BucketCreated, BucketDeleted,
    BucketRecord, BuildRecord, BuildStatus, Completed, DeadLetter, Dump, EventCounts, EventRecord,
    FailureRecord, FollowUp, KeyRecord, LogQuery, LogRecord, LogStream, MessageRecord,
    MessageSettlement, NewEvent, NewMessage, NewVersion, NoSuchBucket, NoSuchUpload, NodeRecord,
    ObjectRecord, ObjectUsage, PackageRecord, PartRecord, QueueCounts, ScheduleSlot, SecretRecord,
    Settlement, Source, StoredLog, UploadRecord, VersionRecord,
};
pub use users::Users;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    /// The database cannot be reached now (its connection was lost, or no
    /// connection could be made in time); worth trying again.
    #[error("the store cannot be reached: {0}")]
    Unavailable(String),
    /// A store that must be empty (the target of `stratus migrate`) is not.
    #[error("the store is not empty: it holds {0}; migrate into a new, empty database")]
    NotEmpty(String),
    /// The disk (or the database's size limit) is full.
    #[error("the database is full: {0}")]
    DiskFull(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the store's worker thread failed: {0}")]
    Worker(String),
    #[error(
        "the database was written by a newer stratus (schema {found}, this build knows {known}); upgrade stratus"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error(
        "the database file {path} was removed or replaced while the server ran; restore it and restart the server"
    )]
    Lost { path: std::path::PathBuf },
    #[error("cannot make {path} readable by its owner only: {err}")]
    Permissions {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
}

impl StoreError {
    /// Whether the disk (or the database's size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull(_))
    }

    /// The same error for another waiter on one batch: a lost store stays
    /// what it is, anything else keeps its message.
    pub fn duplicate(&self) -> StoreError {
        match self {
            StoreError::Lost { path } => StoreError::Lost { path: path.clone() },
            StoreError::DiskFull(why) => StoreError::DiskFull(why.clone()),
            StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
            other => StoreError::Worker(other.to_string()),
        }
    }
}

/// How many bytes of log records may be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBudget {
    pub total: u64,
    pub per_app: u64,
}

/// What a trim deleted, and the bytes the files gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub records: u64,
    pub bytes: u64,
    pub reclaimed: u64,
}

/// What one app holds waiting in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    pub app: String,
    pub events: u64,
    pub event_bytes: u64,
    pub messages: u64,
    pub message_bytes: u64,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A value the store keeps once for every node that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// The store's identity. A data directory remembers it, to notice a
    /// database that was emptied, replaced or removed.
    Identity,
    /// The SHA-256 (hex) of the admin token: the token itself is kept
    /// only in the data directories of the nodes.
    AdminTokenHash,
    /// The secret that the tokens instances use for the platform API are
    /// derived from.
    PlatformSecret,
}

impl MetaKey {
    pub fn as_str(self) -> &'static str {
        match self {
            MetaKey::Identity => "identity",
            MetaKey::AdminTokenHash => "admin_token_sha256",
            MetaKey::PlatformSecret => "platform_secret",
        }
    }
}

/// Values set once, by whichever node comes first.
#[async_trait]
pub trait Meta: Send + Sync {
    /// The value under `key`: `candidate` on the first call ever (kept),
    /// what was kept then on every later one.
    async fn meta_or_insert(&self, key: MetaKey, candidate: &str) -> Result<String>;
}

/// Applications and their versions.
#[async_trait]
pub trait Apps: Send + Sync {
    async fn list_apps(&self) -> Result<Vec<AppRecord>>;

    async fn get_app(&self, app: &str) -> Result<Option<AppRecord>>;

    /// The active version of every application, for start-up.
    async fn active_versions(&self) -> Result<Vec<VersionRecord>>;

    async fn active_version(&self, app: &str) -> Result<Option<VersionRecord>>;

    /// Records a new version and makes it the active one, in one transaction.
    async fn activate(&self, version: NewVersion) -> Result<VersionRecord>;

    /// Every version of `app`, the newest first.
    async fn list_versions(&self, app: &str) -> Result<Vec<VersionRecord>>;

    /// Makes version `version` of `app` the active one again (at `now_ms`);
    /// its record, or `None` when the app has no such version.
    async fn reactivate(
        &self,
        app: &str,
        version: u32,
        now_ms: i64,
    ) -> Result<Option<VersionRecord>>;

    /// Removes an application with its versions, keys, AWS credentials,
    /// secrets, builds, buckets and their objects and uploads in progress,
    /// queued events and dead letters, documents, end users and their
    /// sessions; false if it did not exist.
    async fn delete_app(&self, app: &str) -> Result<bool>;
}

/// Code packages, by SHA-256.
#[async_trait]
pub trait Packages: Send + Sync {
    /// Whether a package with this SHA-256 is recorded.
    async fn has_package(&self, sha256: &str) -> Result<bool>;

    async fn put_package(&self, package: PackageRecord) -> Result<()>;
}

/// App keys and AWS credentials.
#[async_trait]
pub trait Credentials: Send + Sync {
    /// Records an app key; only its SHA-256 is kept.
    async fn create_key(&self, key: KeyRecord) -> Result<()>;

    /// The keys of `app`, or of every app.
    async fn list_keys(&self, app: Option<&str>) -> Result<Vec<KeyRecord>>;

    /// Revokes a key; false if `app` has no key `id`.
    async fn delete_key(&self, app: &str, id: &str) -> Result<bool>;

    /// Records an AWS credential; its secret is kept (see
    /// [`AwsCredentialRecord`]).
    async fn create_aws_credential(&self, credential: AwsCredentialRecord) -> Result<()>;

    /// The AWS credentials of `app`, or of every app.
    async fn list_aws_credentials(&self, app: Option<&str>) -> Result<Vec<AwsCredentialRecord>>;

    async fn get_aws_credential(&self, access_key_id: &str) -> Result<Option<AwsCredentialRecord>>;

    /// Replaces the stored secret of a credential (to re-seal it); false if
    /// there is no credential `access_key_id`.
    async fn set_aws_secret(&self, access_key_id: &str, secret: &str) -> Result<bool>;

    /// Revokes a credential; false if `app` has no credential `access_key_id`.
    async fn delete_aws_credential(&self, app: &str, access_key_id: &str) -> Result<bool>;
}

/// Apps' secrets, sealed by the server before they are stored.
#[async_trait]
pub trait Secrets: Send + Sync {
    /// Sets secret `name` of `app`, replacing what it was.
    async fn put_secret(&self, secret: SecretRecord) -> Result<()>;

    /// The secrets of `app`, or of every app, by app and name.
    async fn list_secrets(&self, app: Option<&str>) -> Result<Vec<SecretRecord>>;

    /// Deletes secret `name` of `app`; whether it was there.
    async fn delete_secret(&self, app: &str, name: &str) -> Result<bool>;
}

/// The record of each build of apps' code (`stratus builds`).
#[async_trait]
pub trait Builds: Send + Sync {
    /// Records a build, replacing the record of `app` with the same id.
    async fn put_build(&self, build: BuildRecord) -> Result<()>;

    /// The newest `limit` builds of `app`, newest first: by start, then id
    /// (ids are readable, with the start only to the second).
    async fn list_builds(&self, app: &str, limit: usize) -> Result<Vec<BuildRecord>>;

    /// Build `id` of `app`.
    async fn get_build(&self, app: &str, id: &str) -> Result<Option<BuildRecord>>;

    /// Deletes the builds of `app` beyond its newest `keep`; how many went.
    async fn trim_builds(&self, app: &str, keep: usize) -> Result<u64>;
}

/// Failed invocations' scenes (`stratus failures`).
#[async_trait]
pub trait Failures: Send + Sync {
    /// Records a failure, replacing one with the same id.
    async fn put_failure(&self, failure: FailureRecord) -> Result<()>;

    /// The newest `limit` failures of `app`, or of its `function`, newest
    /// first (by time, then id).
    async fn list_failures(
        &self,
        app: &str,
        function: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FailureRecord>>;

    /// Failure `id`, whichever app it is of.
    async fn get_failure(&self, id: &str) -> Result<Option<FailureRecord>>;

    /// Deletes the failures of `app` that are older than `before_ms` or
    /// beyond the newest `keep` of their function; how many went.
    async fn trim_failures(&self, app: &str, keep: usize, before_ms: i64) -> Result<u64>;
}

/// Alerts' states and the history of their changes (`stratus alerts`).
#[async_trait]
pub trait Alerts: Send + Sync {
    /// Sets the states given (replacing those of the same app and name)
    /// and records the changes, in one transaction.
    async fn put_alerts(&self, states: Vec<AlertRecord>, changes: Vec<AlertChange>) -> Result<()>;

    /// The states of `app`'s alerts, by name.
    async fn list_alerts(&self, app: &str) -> Result<Vec<AlertRecord>>;

    /// The newest `limit` changes of `app`'s alerts, newest first.
    async fn alert_history(&self, app: &str, limit: usize) -> Result<Vec<AlertChange>>;

    /// Forgets the states of `app`'s alerts not in `declared`, and its
    /// changes beyond the newest `keep`; how many went.
    async fn trim_alerts(&self, app: &str, declared: &[String], keep: usize) -> Result<u64>;
}

/// The least string after every string that starts with `prefix`, for a
/// range scan of keys (`key >= prefix AND key < bound`, compared as
/// bytes); `None` when there is none (an empty prefix, or one of only
/// U+10FFFF). Strings order as their UTF-8 bytes do, which is the order
/// of their characters.
pub fn prefix_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{d7ff}' => Some('\u{e000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Buckets and the metadata of their objects (the bytes are files the
/// server keeps; a record names its file, its `blob`).
#[async_trait]
pub trait Objects: Send + Sync {
    /// Creates `bucket` if its name is free. Its name is unique across
    /// every app: a name taken already gives the bucket that has it.
    async fn create_bucket(&self, bucket: BucketRecord) -> Result<BucketCreated>;

    /// Replaces the settings of bucket `name` (its `spec`, `declared_as`);
    /// whether it exists.
    async fn update_bucket(&self, bucket: BucketRecord) -> Result<bool>;

    async fn get_bucket(&self, name: &str) -> Result<Option<BucketRecord>>;

    /// The buckets of `app`, or of every app, by name.
    async fn list_buckets(&self, app: Option<&str>) -> Result<Vec<BucketRecord>>;

    /// Deletes bucket `name`: only when it holds no object, unless
    /// `force`, which deletes its objects too. Its uploads in progress go
    /// with it either way (they do not make it hold anything), their
    /// parts' blobs among those returned. [`BucketDeleted::Missing`] when
    /// there is no such bucket.
    async fn delete_bucket(&self, name: &str, force: bool) -> Result<BucketDeleted>;

    /// Commits an object's metadata and the events it causes in one
    /// transaction (no object without its event, no event for an object
    /// that was not committed), replacing an object of the same key.
    /// The object it replaced, if any, whose blob the caller removes.
    /// [`NoSuchBucket`] and nothing done when the bucket does not exist.
    async fn put_object(
        &self,
        object: ObjectRecord,
        events: Vec<NewEvent>,
    ) -> Result<Result<Option<ObjectRecord>, NoSuchBucket>>;

    async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRecord>>;

    /// Deletes an object and queues the events its deletion causes, in one
    /// transaction; the object deleted, if there was one (no events are
    /// queued when there was not).
    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        events: Vec<NewEvent>,
    ) -> Result<Option<ObjectRecord>>;

    /// Up to `limit` objects of `bucket` whose keys start with `prefix`
    /// and come after `after`, in the byte order of their keys (as S3
    /// lists them).
    async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ObjectRecord>>;

    /// Objects and their bytes per app (of `app`, or of every app with
    /// buckets).
    async fn object_usage(&self, app: Option<&str>) -> Result<Vec<ObjectUsage>>;

    /// Starts a multipart upload into its bucket; `Err(NoSuchBucket)` and
    /// nothing done when the bucket does not exist.
    async fn create_upload(&self, upload: UploadRecord) -> Result<Result<(), NoSuchBucket>>;

    async fn get_upload(&self, upload_id: &str) -> Result<Option<UploadRecord>>;

    /// Keeps a part of an upload, replacing one of the same number: the
    /// part it replaced, whose blob the caller removes. `Err(NoSuchUpload)`
    /// and nothing done when the upload is not in progress (never
    /// started, completed or aborted).
    async fn put_part(&self, part: PartRecord) -> Result<Result<Option<PartRecord>, NoSuchUpload>>;

    /// Up to `limit` parts of an upload numbered above `after`, by number.
    async fn list_parts(&self, upload_id: &str, after: u32, limit: u32) -> Result<Vec<PartRecord>>;

    /// Up to `limit` uploads in progress in `bucket` whose keys start with
    /// `prefix`, ordered by key (bytes) then by upload id, after the
    /// (key, upload id) `after` if given (an upload id of `None` there
    /// means after every upload of that key).
    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, Option<&str>)>,
        limit: u32,
    ) -> Result<Vec<UploadRecord>>;

    /// Completes an upload in one transaction: `object` (whose blob holds
    /// the parts put together) replaces the object of its key, the events
    /// are queued, and the upload and all its parts are forgotten. The
    /// object replaced and the blobs of every part, which the caller
    /// removes; `Err(NoSuchUpload)` and nothing done when the upload is
    /// not in progress (a concurrent completion or abort won), or its
    /// bucket is gone.
    async fn complete_upload(
        &self,
        upload_id: &str,
        object: ObjectRecord,
        events: Vec<NewEvent>,
    ) -> Result<Result<Completed, NoSuchUpload>>;

    /// Forgets an upload and its parts: the parts' blobs, for the caller
    /// to remove; `None` when it was not in progress.
    async fn abort_upload(&self, upload_id: &str) -> Result<Option<Vec<String>>>;
}

/// Log records, for a store that keeps them (see `stratus-logs`).
#[async_trait]
pub trait LogStore: Send + Sync {
    async fn append_logs(&self, logs: Vec<LogRecord>) -> Result<()>;

    async fn query_logs(&self, query: LogQuery) -> Result<Vec<StoredLog>>;

    /// Deletes logs older than `before_ms`, then each app's oldest until
    /// its own fit `budget.per_app`, then the oldest of all until all fit
    /// `budget.total` (a record counts its message and fields), and gives
    /// the space back to the file system.
    async fn trim_logs(&self, before_ms: i64, budget: LogBudget) -> Result<Trimmed>;

    /// Bytes of log records stored, as the budget counts them.
    async fn log_bytes(&self) -> Result<u64>;
}

/// The durable event queue and its dead letters.
#[async_trait]
pub trait Events: Send + Sync {
    /// Queues events in one transaction: once this returns they survive a
    /// crash of the server (not a power loss: the WAL is not synced on
    /// every commit), so it is what an acknowledgement waits for. Returns
    /// their ids in order. An event whose app, function and request id
    /// match one still queued or in flight is not added again: its id is
    /// that event's (also within one call). Delivered and dead events do
    /// not count, so a retry by a client after delivery is a new event.
    async fn enqueue_events(&self, events: Vec<NewEvent>) -> Result<Vec<i64>>;

    /// Claims up to `limit` events that are due at `now_ms` (never claimed,
    /// retried with a `not_before_ms` that has passed, or claimed by a
    /// claimer whose lease ran out: delivery is at least once), leasing
    /// them until `now_ms + lease_ms` and counting an attempt. Those due
    /// longest are taken first; they are returned in id order.
    async fn claim_events(
        &self,
        now_ms: i64,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<EventRecord>> {
        self.claim_events_except(now_ms, limit, lease_ms, &[]).await
    }

    /// As [`Events::claim_events`], passing over the events of the
    /// functions in `busy` (each `APP/FUNCTION`): those the claimer already
    /// holds as many of as it can run, so that they do not take the places
    /// of other functions' events. Events another claimer is claiming at
    /// the same moment are passed over too, not waited for.
    async fn claim_events_except(
        &self,
        now_ms: i64,
        limit: u32,
        lease_ms: i64,
        busy: &[String],
    ) -> Result<Vec<EventRecord>>;

    /// Applies the outcomes of deliveries in one transaction. Returns how
    /// many applied; the others were stale (see [`Settlement`]).
    async fn settle_events(&self, settlements: Vec<Settlement>) -> Result<u64>;

    /// Extends the leases of events still being delivered, each named by
    /// its id and the attempt its claimer holds, to `until_ms`; a lease
    /// another claimer took since (a later attempt) is left alone. Returns
    /// how many were extended. A claimer that dies stops extending, so its
    /// events are claimed again once their short leases lapse.
    async fn extend_leases(&self, leases: Vec<(i64, u32)>, until_ms: i64) -> Result<u64>;

    /// When the next event becomes claimable (perhaps already), counting
    /// leases that run out; `None` if there are no events.
    async fn next_due_ms(&self) -> Result<Option<i64>>;

    /// Ends every lease at once, making the events claimable from `now_ms`:
    /// for a node starting up, whose claims of an earlier run died with it.
    /// Returns how many events were leased.
    async fn release_leases(&self, now_ms: i64) -> Result<u64>;

    /// Queued, in-flight and dead events of each function of `app`, or of
    /// every app, leaving out functions with none.
    async fn count_events(&self, app: Option<&str>, now_ms: i64) -> Result<Vec<EventCounts>>;

    /// Dead letters of `app` (and `function`), oldest first, after
    /// `after_id` if given.
    async fn list_dead_letters(
        &self,
        app: &str,
        function: Option<&str>,
        after_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>>;

    async fn get_dead_letter(&self, app: &str, id: i64) -> Result<Option<DeadLetter>>;

    /// Queues the dead letters of `app` (and `function`; only `ids` if
    /// given) again as new events, due at `now_ms` with no attempts and
    /// `created_ms` = `now_ms` (so their age starts over), in one
    /// transaction. A dead letter whose twin (same request id) is already
    /// queued again is merged into it. Returns how many left the dead
    /// letters.
    async fn redrive_dead_letters(
        &self,
        app: &str,
        function: Option<&str>,
        ids: Option<Vec<i64>>,
        now_ms: i64,
    ) -> Result<u64>;

    /// Deletes dead letters, selected as for redriving; returns how many.
    async fn delete_dead_letters(
        &self,
        app: &str,
        function: Option<&str>,
        ids: Option<Vec<i64>>,
    ) -> Result<u64>;
}

/// Queues of messages.
#[async_trait]
pub trait Messages: Send + Sync {
    /// Sends messages to queues in one transaction; returns their ids.
    async fn send_messages(&self, messages: Vec<NewMessage>) -> Result<Vec<i64>>;

    /// Receives up to `limit` visible messages of `app`'s `queue`, oldest
    /// first, hiding them until `now_ms + visibility_ms` and counting a
    /// receipt.
    async fn receive_messages(
        &self,
        app: &str,
        queue: &str,
        now_ms: i64,
        limit: u32,
        visibility_ms: i64,
    ) -> Result<Vec<MessageRecord>>;

    /// Applies the outcomes of deliveries of messages in one transaction;
    /// returns how many applied.
    async fn settle_messages(&self, settlements: Vec<MessageSettlement>) -> Result<u64>;

    /// When the next message of `app`'s `queue` becomes visible (perhaps
    /// already); `None` if the queue is empty.
    async fn next_visible_ms(&self, app: &str, queue: &str) -> Result<Option<i64>>;

    /// Messages of each queue of `app`, or of every app, leaving out empty
    /// queues.
    async fn count_messages(&self, app: Option<&str>, now_ms: i64) -> Result<Vec<QueueCounts>>;
}

/// The slots schedules fired.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Records that a schedule of `app`/`function` fired its slot
    /// `slot_ms` and queues `event`, in one transaction, unless that slot
    /// or a later one was already recorded: of several nodes or restarts
    /// firing the same slot, one wins. Returns whether this call won.
    /// `event` may be `None` to record a slot skipped on purpose.
    async fn fire_schedule(
        &self,
        app: &str,
        function: &str,
        schedule: &str,
        slot_ms: i64,
        event: Option<NewEvent>,
    ) -> Result<bool>;

    /// The last slot recorded for a schedule of `app`/`function`.
    async fn last_schedule_slot(
        &self,
        app: &str,
        function: &str,
        schedule: &str,
    ) -> Result<Option<i64>>;
}

/// What each app holds waiting, across events and messages.
#[async_trait]
pub trait Backlogs: Send + Sync {
    /// What each app holds waiting: asynchronous events not yet settled
    /// and queued messages not yet deleted, counted and in bytes.
    async fn backlogs(&self) -> Result<Vec<Backlog>>;
}

/// One write of a [`UnitOfWork`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Queues an event, as [`Events::enqueue_events`] does (idempotent by
    /// request id).
    Event(NewEvent),
    /// Sends a message, as [`Messages::send_messages`] does.
    Message(NewMessage),
}

/// Writes of several concerns that commit in one transaction: all of them
/// or none. A feature that stores something together with the event it
/// causes (an object and its storage event, a document and its change)
/// commits both here.
#[async_trait]
pub trait UnitOfWork: Send + Sync {
    /// Commits `writes` in one transaction; the id of each, in order.
    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<i64>>;
}

/// Word that apps, versions, keys or credentials changed, for nodes that
/// share a store: each follows the others' deploys as soon as word comes.
#[async_trait]
pub trait Changes: Send + Sync {
    /// Waits for word after mark `seen` (0 at first) and returns the mark
    /// to pass next time. Word also comes when word may have been missed
    /// (a lost connection): read everything again then. Never returns on a
    /// store that cannot give word.
    async fn changed_since(&self, seen: u64) -> u64;
}

/// What a store that several nodes share offers beyond [`Store`].
pub trait Shared: SharedPackages + Changes + 'static {}

impl<T> Shared for T where T: SharedPackages + Changes + 'static {}

/// Package bytes kept in the store itself, for nodes that share it: a node
/// that was not given a package fetches it from here and keeps it in its
/// data directory. A single node's store has no such table: its data
/// directory holds its packages.
#[async_trait]
pub trait SharedPackages: Send + Sync {
    /// Keeps `bytes` under `sha256`, their SHA-256 (once; again changes
    /// nothing).
    async fn put_package_bytes(&self, sha256: &str, bytes: &[u8]) -> Result<()>;

    /// The bytes kept under `sha256`, if any.
    async fn package_bytes(&self, sha256: &str) -> Result<Option<Vec<u8>>>;
}

/// Leases on work that one node at a time must do for all (log
/// retention, for one).
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes (or, for its holder, extends) the lease `name` for `holder`
    /// until `until_ms`, if nobody else holds it at `now_ms`. Whether
    /// `holder` holds it now.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> Result<bool>;
}

/// The nodes that use the store, by their heartbeats.
#[async_trait]
pub trait Nodes: Send + Sync {
    /// Records what `node` reports now (its first heartbeat adds it).
    async fn heartbeat(&self, node: NodeRecord) -> Result<()>;

    /// Every node that ever reported, by id.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>>;
}

/// A whole store moved into another: `stratus migrate`.
#[async_trait]
pub trait Transfer: Send + Sync {
    /// Everything but logs, builds and failures, as of one moment (one
    /// transaction).
    async fn export(&self) -> Result<Dump>;

    /// Loads `dump` in one transaction, keeping its ids and identity.
    /// Refuses a store that already holds any app, event or message
    /// ([`StoreError::NotEmpty`]).
    async fn import(&self, dump: Dump) -> Result<()>;
}

/// Durable platform state: every concern of one backend. Every method is
/// one atomic step.
pub trait Store:
    Meta
    + Apps
    + Packages
    + Credentials
    + Secrets
    + Builds
    + Failures
    + Alerts
    + Objects
    + Documents
    + Users
    + LogStore
    + Events
    + Messages
    + Schedules
    + Backlogs
    + UnitOfWork
    + Transfer
    + Nodes
    + Leases
    + 'static
{
}

impl<T> Store for T where
    T: Meta
        + Apps
        + Packages
        + Credentials
        + Secrets
        + Builds
        + Failures
        + Alerts
        + Objects
        + Documents
        + Users
        + LogStore
        + Events
        + Messages
        + Schedules
        + Backlogs
        + UnitOfWork
        + Transfer
        + Nodes
        + Leases
        + 'static
{
}

#[cfg(test)]
mod tests {
    use super::prefix_bound;

    #[test]
    fn a_prefix_bound_is_past_every_key_under_the_prefix() {
        assert_eq!(prefix_bound("docs/").as_deref(), Some("docs0"));
        assert_eq!(prefix_bound("a\u{d7ff}").as_deref(), Some("a\u{e000}"));
        assert_eq!(prefix_bound("a\u{10ffff}").as_deref(), Some("b"));
        assert_eq!(prefix_bound(""), None);
        assert_eq!(prefix_bound("\u{10ffff}"), None);
        for key in ["docs/", "docs/z", "docs/\u{10ffff}x"] {
            assert!(key < prefix_bound("docs/").unwrap().as_str());
        }
    }
}
