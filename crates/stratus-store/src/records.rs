//! The records the store reads and writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stratus_manifest::AppSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub sha256: String,
    pub size: u64,
    pub unpacked_bytes: u64,
    pub files: u64,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub name: String,
    pub active_version: Option<u32>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A version about to be activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVersion {
    pub spec: AppSpec,
    /// The manifest as the user wrote it.
    pub manifest: String,
    /// Package SHA-256 by code directory (as in [`stratus_manifest::FunctionSpec::code`]).
    pub packages: BTreeMap<String, String>,
    pub created_ms: i64,
    /// Where it came from, for people: `git COMMIT SUBJECT`, or `upload`
    /// and the packages' hashes.
    pub source: String,
    /// The dependency layer each built code directory runs with, by code
    /// directory (key `DIR` or `DIR@RUNTIME`): the layer's cache key.
    pub layers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub app: String,
    pub version: u32,
    pub spec: AppSpec,
    pub manifest: String,
    pub packages: BTreeMap<String, String>,
    pub created_ms: i64,
    pub source: String,
    /// As in [`NewVersion::layers`]; empty for a version with no builds.
    #[serde(default)]
    pub layers: BTreeMap<String, String>,
}

/// An app key: callers of the app's `auth: key` routes present the secret,
/// which is never stored; the SHA-256 of the whole key is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub app: String,
    pub name: String,
    pub sha256: String,
    pub created_ms: i64,
}

/// An AWS-style credential of an app, for the Lambda Invoke API. Unlike an
/// app key's, its secret must be recoverable: Signature Version 4 proves
/// that a caller knows the secret by an HMAC computed with it, so the
/// server must compute the same HMAC. The server stores it sealed with a
/// key of the data directory's own; the store keeps whatever it is given.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsCredentialRecord {
    /// `AKST` and 16 upper-case letters and digits, like an AWS access key id.
    pub access_key_id: String,
    pub app: String,
    pub name: String,
    pub secret: String,
    pub created_ms: i64,
}

impl std::fmt::Debug for AwsCredentialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentialRecord")
            .field("access_key_id", &self.access_key_id)
            .field("app", &self.app)
            .field("name", &self.name)
            .field("created_ms", &self.created_ms)
            .finish_non_exhaustive()
    }
}

/// One log line of an instance, or one report record of an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub ts_ms: i64,
    pub app: String,
    pub function: String,
    pub version: u32,
    pub instance: String,
    pub request_id: Option<String>,
    pub stream: LogStream,
    pub message: String,
    /// Structured fields of a report or request record.
    pub fields: Option<serde_json::Value>,
}

/// Where a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// A line the instance wrote to its standard output.
    Stdout,
    /// A line the instance wrote to its standard error.
    Stderr,
    /// What the platform says about an instance or a request: a crash,
    /// a timeout, a result that is not a response.
    Platform,
    /// The `REPORT` record of one invocation.
    Report,
    /// The record of one request proxied to a service.
    Request,
}

impl LogStream {
    pub const ALL: [LogStream; 5] = [
        LogStream::Stdout,
        LogStream::Stderr,
        LogStream::Platform,
        LogStream::Report,
        LogStream::Request,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Platform => "platform",
            LogStream::Report => "report",
            LogStream::Request => "request",
        }
    }
}

impl std::str::FromStr for LogStream {
    type Err = String;

    fn from_str(s: &str) -> Result<LogStream, String> {
        LogStream::ALL
            .into_iter()
            .find(|stream| stream.as_str() == s)
            .ok_or_else(|| format!("unknown log stream {s:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLog {
    pub id: i64,
    #[serde(flatten)]
    pub record: LogRecord,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    pub app: Option<String>,
    pub function: Option<String>,
    pub request_id: Option<String>,
    pub since_ms: Option<i64>,
    /// Only records before this Unix time in milliseconds.
    #[serde(default)]
    pub until_ms: Option<i64>,
    /// Only records whose message holds this text.
    #[serde(default)]
    pub contains: Option<String>,
    /// Only records with a larger id, for following.
    pub after_id: Option<i64>,
    /// At most this many records: the newest ones unless `after_id` is set,
    /// in which case the oldest after it. Always returned oldest first.
    pub limit: u32,
}

/// Where an event or a message came from. Stored as text: `invoke`,
/// `schedule`, `cloudevents`, `send`, `redrive`, `logs`,
/// `destination:FUNCTION`, `queue:QUEUE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// An asynchronous invocation through the admin or Lambda API.
    Invoke,
    /// A slot of one of the function's schedules.
    Schedule,
    /// A CloudEvent posted to the app.
    CloudEvents,
    /// A message sent to a queue through the API.
    Send,
    /// A dead letter sent back to its queue.
    Redrive,
    /// The outcome of an event of this function, sent on to a destination.
    Destination(String),
    /// A message of this queue: the source of the dead letter a consumer
    /// made of it, which a redrive sends back there.
    Queue(String),
    /// Log lines a `logs` trigger handed on.
    Logs,
    /// A change to an object of this bucket (its S3 name).
    Storage(String),
    /// A change to a document of this collection.
    Database(String),
    /// A source this build does not know (stored by a newer node), kept as
    /// it was.
    Other(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Invoke => f.write_str("invoke"),
            Source::Schedule => f.write_str("schedule"),
            Source::CloudEvents => f.write_str("cloudevents"),
            Source::Send => f.write_str("send"),
            Source::Redrive => f.write_str("redrive"),
            Source::Logs => f.write_str("logs"),
            Source::Destination(function) => write!(f, "destination:{function}"),
            Source::Queue(queue) => write!(f, "queue:{queue}"),
            Source::Storage(bucket) => write!(f, "storage:{bucket}"),
            Source::Database(collection) => write!(f, "database:{collection}"),
            Source::Other(other) => f.write_str(other),
        }
    }
}

impl From<&str> for Source {
    fn from(text: &str) -> Source {
        match text {
            "invoke" => Source::Invoke,
            "schedule" => Source::Schedule,
            "cloudevents" => Source::CloudEvents,
            "send" => Source::Send,
            "redrive" => Source::Redrive,
            "logs" => Source::Logs,
            _ => match text.split_once(':') {
                Some(("destination", function)) => Source::Destination(function.to_owned()),
                Some(("queue", queue)) => Source::Queue(queue.to_owned()),
                Some(("storage", bucket)) => Source::Storage(bucket.to_owned()),
                Some(("database", collection)) => Source::Database(collection.to_owned()),
                _ => Source::Other(text.to_owned()),
            },
        }
    }
}

impl From<String> for Source {
    fn from(text: String) -> Source {
        Source::from(text.as_str())
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An event about to be queued for a function: an asynchronous invocation,
/// a trigger's firing, or a destination of another function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub app: String,
    pub function: String,
    pub payload: Vec<u8>,
    /// The key that makes enqueueing idempotent: while an event with the
    /// same app, function and request id is queued or in flight, enqueueing
    /// again returns that event's id instead of adding a second one.
    pub request_id: String,
    /// Where it came from.
    pub source: Source,
    pub created_ms: i64,
    /// It is not dispatched before this time.
    pub not_before_ms: i64,
    /// The trace context (`traceparent`) of whoever queued it.
    pub trace: Option<String>,
}

/// A queued or claimed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Never reused, so a late settlement cannot reach another event.
    pub id: i64,
    pub app: String,
    pub function: String,
    pub payload: Vec<u8>,
    pub request_id: String,
    pub source: Source,
    /// Claims so far, this one included: a claimed event's attempt number,
    /// which its settlement quotes back.
    pub attempts: u32,
    pub created_ms: i64,
    /// When it may next be claimed; for a claimed event, when its lease
    /// runs out.
    pub not_before_ms: i64,
    /// Set while claimed.
    pub lease_until_ms: Option<i64>,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
    /// The trace context (`traceparent`) of whoever queued it.
    pub trace: Option<String>,
}

/// An event that will not be retried again, kept until it is redriven or
/// deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    /// The id it had in the queue.
    pub event_id: i64,
    pub app: String,
    pub function: String,
    pub payload: Vec<u8>,
    pub request_id: String,
    pub source: Source,
    pub attempts: u32,
    pub created_ms: i64,
    pub failed_ms: i64,
    pub error: String,
}

/// The outcome of one delivery of a claimed event.
///
/// `attempt` is the claimed record's `attempts`: a settlement applies only
/// if the event has not been claimed again since (its lease ran out and
/// another claimer took it), so one claim decides the outcome, never two.
/// `then` holds the events and messages it leads to (destinations), queued in the same
/// transaction so that a crash can neither lose them nor keep them after
/// the event itself is retried; they are queued only if the settlement
/// applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Delivered: the event is removed.
    Done {
        id: i64,
        attempt: u32,
        then: Vec<FollowUp>,
    },
    /// Failed, to be claimed again from `not_before_ms`.
    Retry {
        id: i64,
        attempt: u32,
        not_before_ms: i64,
        error: String,
    },
    /// Failed for good: the event moves to the dead letters.
    Dead {
        id: i64,
        attempt: u32,
        failed_ms: i64,
        error: String,
        then: Vec<FollowUp>,
    },
}

/// What a settled event leads to: an event for a function, or a message
/// for a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    Event(NewEvent),
    Message(NewMessage),
}

/// A message about to be sent to one of an app's queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub app: String,
    pub queue: String,
    pub body: Vec<u8>,
    /// Given to the consumer with the message, the same on every delivery.
    pub message_id: String,
    /// Who sent it.
    pub source: Source,
    pub sent_ms: i64,
    /// It is not received before this time.
    pub visible_ms: i64,
    /// The trace context (`traceparent`) of whoever sent it.
    pub trace: Option<String>,
}

/// A queued or received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// Never reused.
    pub id: i64,
    pub app: String,
    pub queue: String,
    pub body: Vec<u8>,
    pub message_id: String,
    pub source: Source,
    /// Receipts so far, this one included; a settlement quotes it back.
    pub receives: u32,
    pub sent_ms: i64,
    /// When it may next be received; for a received message, when its
    /// visibility timeout runs out.
    pub visible_ms: i64,
    pub last_error: Option<String>,
    /// The trace context (`traceparent`) of whoever sent it.
    pub trace: Option<String>,
}

/// The outcome of one delivery of a received message; as with
/// [`Settlement`], it applies only if the message was not received again
/// since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSettlement {
    /// Handled: the message is deleted.
    Done { id: i64, receives: u32 },
    /// Failed: it may be received again from `visible_ms`.
    Retry {
        id: i64,
        receives: u32,
        visible_ms: i64,
        error: String,
    },
    /// Failed for good: it moves to the dead letters of `function`, its
    /// consumer, with `queue:QUEUE` as its source, and a redrive sends it
    /// back to the queue.
    Dead {
        id: i64,
        receives: u32,
        function: String,
        failed_ms: i64,
        error: String,
    },
}

/// How many messages one queue holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    pub app: String,
    pub queue: String,
    /// Waiting to be received, whether visible yet or not.
    pub queued: u64,
    /// Received, within their visibility timeout.
    pub in_flight: u64,
    /// When the oldest of them (queued or in flight) was sent.
    pub oldest_sent_ms: Option<i64>,
}

impl Settlement {
    pub fn done(event: &EventRecord) -> Settlement {
        Settlement::Done {
            id: event.id,
            attempt: event.attempts,
            then: Vec::new(),
        }
    }

    pub fn retry(event: &EventRecord, not_before_ms: i64, error: impl Into<String>) -> Settlement {
        Settlement::Retry {
            id: event.id,
            attempt: event.attempts,
            not_before_ms,
            error: error.into(),
        }
    }

    pub fn dead(event: &EventRecord, failed_ms: i64, error: impl Into<String>) -> Settlement {
        Settlement::Dead {
            id: event.id,
            attempt: event.attempts,
            failed_ms,
            error: error.into(),
            then: Vec::new(),
        }
    }
}

/// How many events one function has, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub app: String,
    pub function: String,
    /// Waiting to be claimed, whether due yet or not (a retry's backoff, an
    /// expired lease).
    pub queued: u64,
    /// Claimed, with a lease that has not run out.
    pub in_flight: u64,
    pub dead: u64,
    /// When the oldest of the queued ones was accepted.
    pub oldest_queued_ms: Option<i64>,
}

/// The slot a schedule of a function last fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSlot {
    pub app: String,
    pub function: String,
    pub schedule: String,
    pub slot_ms: i64,
}

/// A secret of an app, as the server stores it: sealed (the store never
/// sees its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub app: String,
    pub name: String,
    pub sealed: String,
    pub updated_ms: i64,
}

/// The scene of a failed invocation: what `stratus failures` shows and
/// replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Unique among every app's failures; sorts by time.
    pub id: String,
    pub app: String,
    pub function: String,
    pub version: u32,
    pub request_id: String,
    pub at_ms: i64,
    /// `error`, `timeout`, `crashed`, `out_of_memory`.
    pub outcome: String,
    pub error_type: String,
    /// The event, as the function received it.
    pub event: Vec<u8>,
    /// The rest as the server writes it (JSON: the error and its stack,
    /// the last log lines, the phases, peak memory, the environment's
    /// names); the store keeps whatever it is given.
    pub scene: String,
}

/// An alert's state, as its last evaluation left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub app: String,
    pub name: String,
    /// `ok`, `pending`, `firing`, `insufficient_data`.
    pub state: String,
    /// Since when it has been in this state.
    pub since_ms: i64,
    pub evaluated_ms: i64,
    /// The rest as the server writes it (JSON: the value seen, the
    /// condition); the store keeps whatever it is given.
    pub detail: String,
}

/// A change of an alert's state: its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertChange {
    pub app: String,
    pub name: String,
    pub at_ms: i64,
    pub from: String,
    pub to: String,
    /// As [`AlertRecord::detail`].
    pub detail: String,
}

/// One build of an app's code: what `stratus builds` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub app: String,
    /// Unique among the app's builds; sorts by start.
    pub id: String,
    pub started_ms: i64,
    /// `None` while it runs.
    pub finished_ms: Option<i64>,
    pub status: BuildStatus,
    /// The version it made, once deployed.
    pub version: Option<u32>,
    /// Its steps, cache hits and the tail of its output, as the server
    /// writes them (JSON); the store keeps whatever it is given.
    pub detail: String,
}

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Running,
    Succeeded,
    Failed,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Running => "running",
            BuildStatus::Succeeded => "succeeded",
            BuildStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<BuildStatus> {
        [
            BuildStatus::Running,
            BuildStatus::Succeeded,
            BuildStatus::Failed,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
    }
}

/// Everything a store holds but its logs, to move it into another store
/// (`stratus migrate`). Ids are kept. Builds' records ([`BuildRecord`])
/// are history, as logs are, and stay behind; the layers each version
/// runs with move with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dump {
    /// The store's identity, which data directories remember.
    pub identity: Option<String>,
    pub apps: Vec<AppRecord>,
    /// Every version of every app, not only the active ones.
    pub versions: Vec<VersionRecord>,
    pub packages: Vec<PackageRecord>,
    pub keys: Vec<KeyRecord>,
    pub aws_credentials: Vec<AwsCredentialRecord>,
    pub secrets: Vec<SecretRecord>,
    pub events: Vec<EventRecord>,
    pub dead_letters: Vec<DeadLetter>,
    pub messages: Vec<MessageRecord>,
    pub schedule_slots: Vec<ScheduleSlot>,
    /// Every bucket of every app.
    pub buckets: Vec<BucketRecord>,
    /// The metadata of every object; their bytes, the files the server
    /// keeps (each its `blob`), are not part of a dump.
    pub objects: Vec<ObjectRecord>,
    /// Multipart uploads in progress.
    pub uploads: Vec<UploadRecord>,
    /// The parts of the uploads in progress; as with objects, their bytes
    /// are not part of a dump.
    pub parts: Vec<PartRecord>,
    /// Every document of every app.
    pub documents: Vec<crate::documents::StoredDocument>,
    /// The indexes apps' collections declare.
    pub document_indexes: Vec<crate::documents::CollectionIndexes>,
    /// Every end user of every app.
    pub users: Vec<crate::users::UserRecord>,
    /// Every session of every app's users.
    pub sessions: Vec<crate::users::SessionRecord>,
}

impl Dump {
    /// What it holds, counted, for people.
    pub fn summary(&self) -> String {
        format!(
            "{} apps, {} versions, {} packages, {} app keys, {} AWS credentials, {} secrets, {} queued events, {} dead letters, {} queue messages, {} schedule slots, {} buckets, {} objects, {} uploads, {} parts, {} documents, {} users, {} sessions",
            self.apps.len(),
            self.versions.len(),
            self.packages.len(),
            self.keys.len(),
            self.aws_credentials.len(),
            self.secrets.len(),
            self.events.len(),
            self.dead_letters.len(),
            self.messages.len(),
            self.schedule_slots.len(),
            self.buckets.len(),
            self.objects.len(),
            self.uploads.len(),
            self.parts.len(),
            self.documents.len(),
            self.users.len(),
            self.sessions.len()
        )
    }
}

/// A node of the platform, as its heartbeat last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Stable across the node's restarts (kept in its data directory).
    pub id: String,
    pub admin_url: String,
    pub public_url: String,
    /// The stratus release it runs.
    pub version: String,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
    /// Function instances it runs.
    pub instances: u64,
    /// What it runs, per app, as JSON: each function's busy, idle and
    /// waiting counts and each service's instances, for a status of the
    /// whole cluster.
    pub report: String,
}

/// A bucket of an app: file storage served over the S3 API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    /// Its S3 name, unique across every app.
    pub name: String,
    pub app: String,
    /// The name under `buckets:` of the manifest that declares it; `None`
    /// for a bucket made through the S3 API.
    pub declared_as: Option<String>,
    /// Its settings as the server writes them (JSON); the store keeps
    /// whatever it is given.
    pub spec: String,
    pub created_ms: i64,
}

/// What [`Objects::create_bucket`](crate::Objects::create_bucket) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketCreated {
    Created,
    /// The name is taken, by this bucket (of the same app or another).
    Taken(BucketRecord),
}

/// What [`Objects::delete_bucket`](crate::Objects::delete_bucket) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketDeleted {
    /// Gone, with its objects (with `force`) and its uploads in progress:
    /// the blobs of the objects and of the uploads' parts, which the
    /// caller removes.
    Deleted(Vec<String>),
    /// It holds objects (this many, counted up to a bound) and `force`
    /// was not given: nothing was done.
    NotEmpty(u64),
    Missing,
}

/// The bucket an object was to go in does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSuchBucket;

/// An object's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    /// As S3 gives it, quoted: `"MD5"`, or `"MD5-N"` for an object
    /// uploaded in N parts.
    pub etag: String,
    /// The file that holds its bytes.
    pub blob: String,
    pub modified_ms: i64,
    /// Content-Type, Cache-Control and the rest of the headers it is served
    /// with, and its user metadata (`x-amz-meta-*`), as the server writes
    /// them (JSON); the store keeps whatever it is given.
    pub headers: String,
}

/// What an app keeps in its buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectUsage {
    pub app: String,
    pub buckets: u64,
    pub objects: u64,
    pub bytes: u64,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Unique across every bucket.
    pub upload_id: String,
    pub bucket: String,
    pub key: String,
    /// The headers the object will be served with, as for
    /// [`ObjectRecord::headers`].
    pub headers: String,
    pub created_ms: i64,
}

/// A part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub upload_id: String,
    /// 1 to 10,000.
    pub number: u32,
    pub size: u64,
    /// Quoted hex MD5 of its bytes.
    pub etag: String,
    pub blob: String,
    pub modified_ms: i64,
}

/// The upload was never started, or is completed or aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSuchUpload;

/// What completing an upload left for the caller to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The object of the same key it replaced.
    pub replaced: Option<ObjectRecord>,
    /// The blobs of the upload's parts.
    pub part_blobs: Vec<String>,
}
