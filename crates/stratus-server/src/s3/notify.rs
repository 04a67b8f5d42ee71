//! Storage triggers: the events an object's change causes, one for each
//! function of the bucket's app whose `storage` trigger it matches. They
//! are made before the change commits and go into the store in the same
//! transaction as the object's metadata, so there is no object without
//! its event and no event for an object never committed; the durable
//! event queue then delivers them with retries and dead letters.
//!
//! An event is a CloudEvent (`stratus.storage.object.created` or
//! `.deleted`, subject the key) whose data is one record shaped as S3's
//! event notifications are (bucket, key URL-encoded, size, ETag,
//! sequencer), or, with `format: s3`, the notification itself
//! (`{"Records": [...]}`), as S3's Lambda handlers take it.

use serde_json::{Value, json};
use stratus_manifest::{EventFormat, StorageChange, Trigger};
use stratus_store::{BucketRecord, NewEvent, Source};

use crate::AppState;
use crate::api::sigv4;
use crate::triggers::cloudevent;

/// How an object came to change, as S3 names its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    Put,
    Post,
    Copy,
    CompleteMultipartUpload,
    Delete,
    /// Deleted by the bucket's lifecycle.
    Expire,
}

impl How {
    fn change(self) -> StorageChange {
        match self {
            How::Delete | How::Expire => StorageChange::Deleted,
            _ => StorageChange::Created,
        }
    }

    fn event_name(self) -> &'static str {
        match self {
            How::Put => "ObjectCreated:Put",
            How::Post => "ObjectCreated:Post",
            How::Copy => "ObjectCreated:Copy",
            How::CompleteMultipartUpload => "ObjectCreated:CompleteMultipartUpload",
            How::Delete => "ObjectRemoved:Delete",
            How::Expire => "LifecycleExpiration:Delete",
        }
    }
}

/// What changed: the object's key, and for a new object its size and
/// ETag.
pub(crate) struct Change<'a> {
    pub how: How,
    pub key: &'a str,
    pub size_etag: Option<(u64, &'a str)>,
}

/// The events `change` of an object of `bucket` causes, for the functions
/// the app runs now.
pub(crate) fn events(
    state: &AppState,
    bucket: &BucketRecord,
    change: &Change<'_>,
) -> Vec<NewEvent> {
    let Some(declared) = &bucket.declared_as else {
        // Buckets made through the API are named by no manifest's trigger.
        return Vec::new();
    };
    let now = crate::now_ms();
    let sequencer = format!("{:016X}", now_ns());
    let mut events = Vec::new();
    for pool in state.scheduler.app_pools(&bucket.app) {
        let function = &pool.config.spec;
        for trigger in &function.events {
            let Trigger::Storage(t) = trigger else {
                continue;
            };
            if t.bucket != *declared || !t.matches(change.how.change(), change.key) {
                continue;
            }
            let record = record(
                &state.config.region,
                bucket,
                change,
                &function.name,
                now,
                &sequencer,
            );
            let id = uuid::Uuid::new_v4().to_string();
            let payload = match t.format {
                EventFormat::S3 => json!({ "Records": [record] }),
                _ => Value::Object(cloudevent::from_json(
                    &id,
                    &format!("/apps/{}/buckets/{declared}", bucket.app),
                    &format!("stratus.storage.object.{}", change.how.change().as_str()),
                    now,
                    Some(change.key),
                    record,
                )),
            };
            events.push(NewEvent {
                app: bucket.app.clone(),
                function: function.name.clone(),
                payload: payload.to_string().into_bytes(),
                request_id: id,
                source: Source::Storage(bucket.name.clone()),
                created_ms: now,
                not_before_ms: now,
                trace: None,
            });
        }
    }
    events
}

/// One S3 event notification record.
fn record(
    region: &str,
    bucket: &BucketRecord,
    change: &Change<'_>,
    function: &str,
    now_ms: i64,
    sequencer: &str,
) -> Value {
    let mut object = json!({ "key": notification_key(change.key), "sequencer": sequencer });
    if let Some((size, etag)) = change.size_etag {
        object["size"] = json!(size);
        object["eTag"] = json!(etag.trim_matches('"'));
    }
    json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": cloudevent::rfc3339(now_ms),
        "eventName": change.how.event_name(),
        "userIdentity": { "principalId": bucket.app },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": function,
            "bucket": {
                "name": bucket.name,
                "ownerIdentity": { "principalId": bucket.app },
                "arn": format!("arn:aws:s3:::{}", bucket.name),
            },
            "object": object,
        },
    })
}

/// A key as S3's notifications give it: URL-encoded, spaces as `+`, `/`
/// kept (handlers decode it with `unquote_plus`).
fn notification_key(key: &str) -> String {
    key.split('/')
        .map(|segment| sigv4::uri_encode(segment.as_bytes()).replace("%20", "+"))
        .collect::<Vec<_>>()
        .join("/")
}

/// Nanoseconds since the epoch: the sequencer orders changes of a key.
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_as_s3_notifications_give_them() {
        assert_eq!(notification_key("images/a b+c.jpg"), "images/a+b%2Bc.jpg");
        assert_eq!(notification_key("é.png"), "%C3%A9.png");
    }
}
