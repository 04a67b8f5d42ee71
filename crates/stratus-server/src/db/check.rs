//! What every write is held to inside its transaction: the size of the
//! documents it leaves, and the change triggers it fires.
//!
//! A change's events are made here, from the document before and after as
//! the transaction sees them, and committed with it: no change without
//! its event, no event for a change that did not commit. The durable
//! event queue then delivers each with retries and dead letters.
//!
//! An event is a CloudEvent, `stratus.database.document.created`,
//! `.updated` or `.deleted`, source `/apps/APP/collections/COLLECTION`,
//! subject the document's id, whose data is `{collection, id, version,
//! before, after}` (the documents' fields, null where there is none).

use std::sync::Arc;

use serde_json::{Value, json};
use stratus_manifest::DocumentChange;
use stratus_store::documents::{Change, Fetched, Verdict, WriteCheck, body_problem};
use stratus_store::{NewEvent, Source};

use super::AppDb;
use crate::triggers::cloudevent;

/// The checks of a write by the app itself (a function, a key of the app,
/// the admin): limits and triggers, no rules.
pub(crate) struct Trusted {
    pub db: Arc<AppDb>,
    pub max_document_bytes: usize,
    /// Whether the changes fire triggers (an import may not).
    pub fire: bool,
}

impl WriteCheck for Trusted {
    fn check(&self, app: &str, changes: &[Change], _: &Fetched) -> Verdict {
        if let Some(why) = limits(changes, self.max_document_bytes) {
            return Verdict::Refuse(why);
        }
        Verdict::Commit(if self.fire {
            events(app, &self.db, changes)
        } else {
            Vec::new()
        })
    }
}

/// Why the documents `changes` leave break a limit, if one does: its
/// size as JSON, or its shape (an update can nest it deeper).
pub(crate) fn limits(changes: &[Change], max_bytes: usize) -> Option<String> {
    for change in changes {
        let Some(after) = &change.after else {
            continue;
        };
        let size = json_size(&after.body);
        if size > max_bytes {
            return Some(too_large(&change.collection, &change.id, size, max_bytes));
        }
        if let Some(why) = body_problem(&after.body) {
            return Some(format!(
                "document {}/{}: {why}",
                change.collection, change.id
            ));
        }
    }
    None
}

/// What a document over the limit is told.
pub(crate) fn too_large(collection: &str, id: &str, size: usize, max: usize) -> String {
    format!(
        "document {collection}/{id} would be {size} bytes of JSON, more than the {max} a document may have (--document-max-size); keep large data in a bucket and its key in the document"
    )
}

/// The length of a value's JSON text.
pub(crate) fn json_size<T: serde::Serialize>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).map_or(usize::MAX, |()| counter.0)
}

fn kind(change: &Change) -> Option<DocumentChange> {
    match (&change.before, &change.after) {
        (None, Some(_)) => Some(DocumentChange::Created),
        (Some(_), Some(_)) => Some(DocumentChange::Updated),
        (Some(_), None) => Some(DocumentChange::Deleted),
        (None, None) => None,
    }
}

/// The events `changes` cause for the functions whose `database`
/// triggers they match.
pub(crate) fn events(app: &str, db: &AppDb, changes: &[Change]) -> Vec<NewEvent> {
    if db.triggers.is_empty() {
        return Vec::new();
    }
    let now = crate::now_ms();
    let mut events = Vec::new();
    for change in changes {
        let Some(kind) = kind(change) else {
            continue;
        };
        for (function, trigger) in &db.triggers {
            if trigger.collection != change.collection || !trigger.on.contains(&kind) {
                continue;
            }
            let version = change
                .after
                .as_ref()
                .or(change.before.as_ref())
                .map_or(0, |d| d.version);
            let data = json!({
                "collection": change.collection,
                "id": change.id,
                "version": version,
                "before": change.before.as_ref().map(|d| Value::Object(d.body.clone())),
                "after": change.after.as_ref().map(|d| Value::Object(d.body.clone())),
            });
            let id = uuid::Uuid::new_v4().to_string();
            let payload = cloudevent::from_json(
                &id,
                &format!("/apps/{app}/collections/{}", change.collection),
                &format!("stratus.database.document.{}", kind.as_str()),
                now,
                Some(&change.id),
                data,
            );
            events.push(NewEvent {
                app: app.to_owned(),
                function: function.clone(),
                payload: Value::Object(payload).to_string().into_bytes(),
                request_id: id,
                source: Source::Database(change.collection.clone()),
                created_ms: now,
                not_before_ms: now,
                trace: None,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_store::documents::Document;

    fn doc(id: &str, version: i64, body: Value) -> Document {
        Document {
            collection: "todos".into(),
            id: id.into(),
            version,
            body: body.as_object().unwrap().clone(),
            created_ms: 1,
            updated_ms: 2,
        }
    }

    fn db(on: Vec<DocumentChange>) -> AppDb {
        AppDb {
            triggers: vec![(
                "count".into(),
                stratus_manifest::DatabaseTrigger {
                    collection: "todos".into(),
                    on,
                },
            )],
            ..AppDb::default()
        }
    }

    #[test]
    fn a_change_fires_the_triggers_of_its_collection_and_kind() {
        let created = Change {
            collection: "todos".into(),
            id: "a".into(),
            before: None,
            after: Some(doc("a", 1, json!({"t": 1}))),
        };
        let deleted = Change {
            collection: "todos".into(),
            id: "a".into(),
            before: Some(doc("a", 1, json!({"t": 1}))),
            after: None,
        };
        let other = Change {
            collection: "notes".into(),
            ..created.clone()
        };
        let events = events(
            "shop",
            &db(vec![DocumentChange::Created]),
            &[created.clone(), deleted.clone(), other],
        );
        assert_eq!(events.len(), 1);
        let event: Value = serde_json::from_slice(&events[0].payload).unwrap();
        assert_eq!(event["type"], "stratus.database.document.created");
        assert_eq!(event["subject"], "a");
        assert_eq!(event["source"], "/apps/shop/collections/todos");
        assert_eq!(event["data"]["after"], json!({"t": 1}));
        assert_eq!(event["data"]["before"], Value::Null);
        assert_eq!(events[0].source, Source::Database("todos".into()));
        let events = super::events(
            "shop",
            &db(vec![DocumentChange::Deleted, DocumentChange::Updated]),
            &[created, deleted],
        );
        assert_eq!(events.len(), 1);
        let event: Value = serde_json::from_slice(&events[0].payload).unwrap();
        assert_eq!(event["data"]["before"], json!({"t": 1}));
        assert_eq!(event["data"]["after"], Value::Null);
    }

    #[test]
    fn documents_over_the_limit_are_refused_with_it() {
        let change = Change {
            collection: "todos".into(),
            id: "big".into(),
            before: None,
            after: Some(doc("big", 1, json!({"t": "x".repeat(100)}))),
        };
        let why = limits(std::slice::from_ref(&change), 50).unwrap();
        assert!(why.contains("--document-max-size"), "{why}");
        assert_eq!(limits(&[change], 1000), None);
        assert_eq!(json_size(&json!({"a": 1})), 7);
    }
}
