//! The one event shape every trigger delivers: CloudEvents 1.0 in its JSON
//! format (`specversion`, `id`, `source`, `type`, `time`, `subject`,
//! `datacontenttype`, then `data`).

use serde_json::{Map, Value, json};

/// `ms` (Unix milliseconds) as an RFC 3339 time in UTC.
pub(crate) fn rfc3339(ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

/// A CloudEvent whose data is `data`: JSON when it parses as JSON, text
/// otherwise (`data_base64` if it is not UTF-8).
pub(crate) fn from_bytes(
    id: &str,
    source: &str,
    kind: &str,
    time_ms: i64,
    subject: Option<&str>,
    data: &[u8],
) -> Map<String, Value> {
    let mut event = attributes(id, source, kind, time_ms, subject);
    match serde_json::from_slice::<Value>(data) {
        Ok(value) => {
            event.insert("datacontenttype".into(), json!("application/json"));
            event.insert("data".into(), value);
        }
        Err(_) => match std::str::from_utf8(data) {
            Ok(text) => {
                event.insert("datacontenttype".into(), json!("text/plain"));
                event.insert("data".into(), json!(text));
            }
            Err(_) => {
                use base64::Engine;
                event.insert("datacontenttype".into(), json!("application/octet-stream"));
                event.insert(
                    "data_base64".into(),
                    json!(base64::engine::general_purpose::STANDARD.encode(data)),
                );
            }
        },
    }
    event
}

/// A CloudEvent whose data is the JSON value `data`.
pub(crate) fn from_json(
    id: &str,
    source: &str,
    kind: &str,
    time_ms: i64,
    subject: Option<&str>,
    data: Value,
) -> Map<String, Value> {
    let mut event = attributes(id, source, kind, time_ms, subject);
    event.insert("datacontenttype".into(), json!("application/json"));
    event.insert("data".into(), data);
    event
}

fn attributes(
    id: &str,
    source: &str,
    kind: &str,
    time_ms: i64,
    subject: Option<&str>,
) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("specversion".into(), json!("1.0"));
    event.insert("id".into(), json!(id));
    event.insert("source".into(), json!(source));
    event.insert("type".into(), json!(kind));
    event.insert("time".into(), json!(rfc3339(time_ms)));
    if let Some(subject) = subject {
        event.insert("subject".into(), json!(subject));
    }
    event
}
