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
