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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub app: String,
    pub version: u32,
    pub spec: AppSpec,
    pub manifest: String,
    pub packages: BTreeMap<String, String>,
    pub created_ms: i64,
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

/// One log line of an instance, or one report record of an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub ts_ms: i64,
    pub app: String,
    pub function: String,
    pub version: u32,
    pub instance: String,
    pub request_id: Option<String>,
    /// `stdout`, `stderr`, `platform` or `report`.
    pub stream: String,
    pub message: String,
    /// Structured fields of a report record.
    pub fields: Option<serde_json::Value>,
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
    /// Only records with a larger id, for following.
    pub after_id: Option<i64>,
    /// At most this many records: the newest ones unless `after_id` is set,
    /// in which case the oldest after it. Always returned oldest first.
    pub limit: u32,
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
    /// Where it came from: `invoke`, `schedule`, `queue:orders`, ...
    pub source: String,
    pub created_ms: i64,
    /// It is not dispatched before this time.
    pub not_before_ms: i64,
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
    pub source: String,
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
    pub source: String,
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
/// `then` holds the events it leads to (destinations), queued in the same
/// transaction so that a crash can neither lose them nor keep them after
/// the event itself is retried; they are queued only if the settlement
/// applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Delivered: the event is removed.
    Done {
        id: i64,
        attempt: u32,
        then: Vec<NewEvent>,
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
        then: Vec<NewEvent>,
    },
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
}
