use super::Fixture;
use std::collections::BTreeMap;

use crate::{LogQuery, LogRecord, LogStream, MetaKey, NewVersion};

/// An app with one python3 function of `memory` MiB.
pub fn spec(app: &str, memory: u32) -> stratus_manifest::AppSpec {
    let text = format!(
        "app: {app}\nfunctions:\n  f:\n    runtime: python3\n    handler: m.h\n    memory: {memory}\n"
    );
    stratus_manifest::parse("stratus.yaml", &text).unwrap()
}

/// A version of [`spec`], ready to activate.
pub fn version(app: &str, memory: u32) -> NewVersion {
    NewVersion {
        spec: spec(app, memory),
        manifest: "text".into(),
        packages: BTreeMap::from([(".".to_owned(), "a".repeat(64))]),
        created_ms: 1,
        source: format!("upload {app}"),
        layers: BTreeMap::new(),
    }
}

/// A stdout line of app `a` (with fields for function `g`).
pub fn log(ts_ms: i64, function: &str, message: &str) -> LogRecord {
    LogRecord {
        ts_ms,
        app: "a".into(),
        function: function.into(),
        version: 1,
        instance: "i".into(),
        request_id: Some(format!("r{ts_ms}")),
        stream: LogStream::Stdout,
        message: message.into(),
        fields: (function == "g").then(|| serde_json::json!({ "cold": true })),
    }
}

pub async fn versions_are_numbered_and_activated_atomically(f: &dyn Fixture) {
    let store = f.open().await;
    assert!(store.active_version("a").await.unwrap().is_none());
    assert_eq!(store.activate(version("a", 128)).await.unwrap().version, 1);
    assert_eq!(store.activate(version("a", 256)).await.unwrap().version, 2);
    assert_eq!(store.activate(version("b", 128)).await.unwrap().version, 1);
    let active = store.active_version("a").await.unwrap().unwrap();
    assert_eq!(active.version, 2);
    assert_eq!(active.spec, spec("a", 256));
    assert_eq!(store.active_versions().await.unwrap().len(), 2);
    assert_eq!(store.list_apps().await.unwrap()[0].active_version, Some(2));

    assert!(store.delete_app("a").await.unwrap());
    assert!(!store.delete_app("a").await.unwrap());
    assert!(store.get_app("a").await.unwrap().is_none());
    drop(store);

    // State survives a reopen, and migrations are not re-applied.
    let store = f.open().await;
    assert_eq!(store.active_versions().await.unwrap().len(), 1);
}

pub async fn logs_are_queried_followed_and_trimmed(f: &dyn Fixture) {
    let store = f.open().await;
    let records: Vec<_> = (0..10)
        .map(|i| log(i, if i % 2 == 0 { "f" } else { "g" }, "0123456789"))
        .collect();
    store.append_logs(records).await.unwrap();

    let all = |limit| LogQuery {
        app: Some("a".into()),
        limit,
        ..LogQuery::default()
    };
    let newest = store.query_logs(all(3)).await.unwrap();
    assert_eq!(
        newest.iter().map(|r| r.record.ts_ms).collect::<Vec<_>>(),
        [7, 8, 9]
    );
    assert_eq!(
        newest[0].record.fields,
        Some(serde_json::json!({ "cold": true }))
    );

    let f_only = store
        .query_logs(LogQuery {
            function: Some("f".into()),
            ..all(100)
        })
        .await
        .unwrap();
    assert_eq!(f_only.len(), 5);
    let by_request = store
        .query_logs(LogQuery {
            request_id: Some("r4".into()),
            ..all(100)
        })
        .await
        .unwrap();
    assert_eq!(by_request.len(), 1);
    let after = store
        .query_logs(LogQuery {
            after_id: Some(newest[0].id),
            ..all(2)
        })
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|r| r.record.ts_ms).collect::<Vec<_>>(),
        [8, 9],
        "following is oldest first"
    );
    let since = store
        .query_logs(LogQuery {
            since_ms: Some(8),
            ..all(100)
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 2);

    // By age: records before ts 2 go.
    let budget = |total, per_app| crate::LogBudget { total, per_app };
    assert_eq!(
        store
            .trim_logs(2, budget(u64::MAX, u64::MAX))
            .await
            .unwrap()
            .records,
        2
    );
    // By size: 8 records remain, of 10 bytes and of 10 bytes with 13 of
    // fields in turn; at most 35 bytes keeps the newest two (10 + 23).
    store.trim_logs(0, budget(35, u64::MAX)).await.unwrap();
    let left = store.query_logs(all(100)).await.unwrap();
    assert_eq!(
        left.len(),
        2,
        "132 bytes trimmed to at most 35 keeps the newest two"
    );
    assert_eq!(left.last().unwrap().record.ts_ms, 9);
}

pub async fn backlogs_count_each_app_s_events_and_messages_in_bytes(f: &dyn Fixture) {
    use crate::{Backlog, NewEvent, NewMessage};
    let store = f.open().await;
    let event = |app: &str, id: &str, bytes: usize| NewEvent {
        app: app.into(),
        function: "f".into(),
        payload: vec![b'x'; bytes],
        request_id: id.into(),
        source: "invoke".into(),
        created_ms: 1,
        not_before_ms: 1,
        trace: None,
    };
    store
        .enqueue_events(vec![
            event("a", "1", 10),
            event("a", "2", 5),
            event("b", "1", 7),
        ])
        .await
        .unwrap();
    store
        .send_messages(vec![NewMessage {
            app: "b".into(),
            queue: "q".into(),
            body: vec![b'y'; 20],
            message_id: "m".into(),
            source: "send".into(),
            sent_ms: 1,
            visible_ms: 1,
            trace: None,
        }])
        .await
        .unwrap();
    assert_eq!(
        store.backlogs().await.unwrap(),
        vec![
            Backlog {
                app: "a".into(),
                events: 2,
                event_bytes: 15,
                ..Backlog::default()
            },
            Backlog {
                app: "b".into(),
                events: 1,
                event_bytes: 7,
                messages: 1,
                message_bytes: 20,
            },
        ]
    );
}

/// A node's heartbeats replace what it reported before; every node is
/// listed.
pub async fn nodes_report_by_heartbeat(f: &dyn Fixture) {
    let store = f.open().await;
    let node = |id: &str, heartbeat_ms: i64, instances: u64| crate::NodeRecord {
        id: id.into(),
        admin_url: format!("http://{id}:8081"),
        public_url: format!("http://{id}:8080"),
        version: "1.0.0".into(),
        started_ms: 1,
        heartbeat_ms,
        instances,
        report: format!("{{\"n\":{instances}}}"),
    };
    assert!(store.list_nodes().await.unwrap().is_empty());
    store.heartbeat(node("b", 10, 0)).await.unwrap();
    store.heartbeat(node("a", 10, 3)).await.unwrap();
    store.heartbeat(node("b", 20, 5)).await.unwrap();
    assert_eq!(
        store.list_nodes().await.unwrap(),
        [node("a", 10, 3), node("b", 20, 5)]
    );
}

/// One holder at a time: the holder extends its lease, another takes it
/// only once it has run out.
pub async fn a_lease_has_one_holder_at_a_time(f: &dyn Fixture) {
    let store = f.open().await;
    assert!(store.take_lease("trim", "a", 100, 0).await.unwrap());
    assert!(!store.take_lease("trim", "b", 150, 50).await.unwrap());
    assert!(
        store.take_lease("trim", "a", 200, 90).await.unwrap(),
        "extended"
    );
    assert!(!store.take_lease("trim", "b", 250, 150).await.unwrap());
    assert!(store.take_lease("other", "b", 250, 150).await.unwrap());
    assert!(
        store.take_lease("trim", "b", 300, 200).await.unwrap(),
        "ran out"
    );
    assert!(!store.take_lease("trim", "a", 300, 210).await.unwrap());
}

/// Each value is kept by the first caller, whatever later ones offer, and
/// the keys are independent; reopening keeps them.
pub async fn meta_values_are_set_once_each(f: &dyn Fixture) {
    let store = f.open().await;
    for (key, first) in [
        (MetaKey::Identity, "id-1"),
        (MetaKey::AdminTokenHash, "hash-1"),
        (MetaKey::PlatformSecret, "secret-1"),
    ] {
        assert_eq!(store.meta_or_insert(key, first).await.unwrap(), first);
        assert_eq!(store.meta_or_insert(key, "later").await.unwrap(), first);
    }
    drop(store);
    let again = f.open().await;
    assert_eq!(
        again
            .meta_or_insert(MetaKey::AdminTokenHash, "other")
            .await
            .unwrap(),
        "hash-1"
    );
}

/// Every version is kept and listed newest first; an earlier one is made
/// active again without a new version, and a missing one is not.
pub async fn an_earlier_version_is_made_active_again(f: &dyn Fixture) {
    let store = f.open().await;
    for memory in [128, 256, 512] {
        store.activate(version("a", memory)).await.unwrap();
    }
    store.activate(version("b", 128)).await.unwrap();
    let listed = store.list_versions("a").await.unwrap();
    assert_eq!(
        listed.iter().map(|v| v.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert_eq!(listed[1].spec.functions["f"].memory_mb, 256);
    assert_eq!(listed[1].source, "upload a", "the source is kept");
    let back = store.reactivate("a", 1, 50).await.unwrap().unwrap();
    assert_eq!((back.version, back.spec.functions["f"].memory_mb), (1, 128));
    assert_eq!(store.active_version("a").await.unwrap().unwrap().version, 1);
    assert_eq!(store.get_app("a").await.unwrap().unwrap().updated_ms, 50);
    assert!(store.reactivate("a", 9, 60).await.unwrap().is_none());
    assert!(store.reactivate("nope", 1, 60).await.unwrap().is_none());
    assert_eq!(store.active_version("a").await.unwrap().unwrap().version, 1);
    // The next deploy still numbers after the newest.
    let next = store.activate(version("a", 1024)).await.unwrap();
    assert_eq!(next.version, 4);
    assert_eq!(store.active_version("b").await.unwrap().unwrap().version, 1);
}

/// The layers a version runs with are kept with it: as activated, listed,
/// made active again, and moved into another store.
pub async fn a_version_s_layers_are_kept_and_moved(f: &dyn Fixture) {
    let store = f.open().await;
    let layers = BTreeMap::from([
        ("api".to_owned(), "l".repeat(64)),
        ("worker@python3".to_owned(), "m".repeat(64)),
    ]);
    let activated = store
        .activate(NewVersion {
            layers: layers.clone(),
            ..version("a", 128)
        })
        .await
        .unwrap();
    assert_eq!(activated.layers, layers);
    store.activate(version("a", 256)).await.unwrap();

    let listed = store.list_versions("a").await.unwrap();
    assert!(listed[0].layers.is_empty(), "a version with no builds");
    assert_eq!(listed[1].layers, layers);
    let back = store.reactivate("a", 1, 50).await.unwrap().unwrap();
    assert_eq!(back.layers, layers);
    drop(store);

    let store = f.open().await;
    assert_eq!(store.active_version("a").await.unwrap().unwrap(), activated);
    assert_eq!(
        store.active_versions().await.unwrap(),
        std::slice::from_ref(&activated)
    );

    let dump = store.export().await.unwrap();
    let other = f.other().await;
    other.import(dump).await.unwrap();
    assert_eq!(other.active_version("a").await.unwrap().unwrap(), activated);
    assert_eq!(
        other.list_versions("a").await.unwrap(),
        store.list_versions("a").await.unwrap()
    );
}
