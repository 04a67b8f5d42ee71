//! The SQLite backend through the `Store` trait.

use std::collections::BTreeMap;

use stratus_store::{Apps, Backlogs, Events, LogStore, Messages};
use stratus_store::{LogQuery, LogRecord, LogStream, NewVersion};
use stratus_store_sqlite::SqliteStore;

fn spec(app: &str, memory: u32) -> stratus_manifest::AppSpec {
    let text = format!(
        "app: {app}\nfunctions:\n  f:\n    runtime: python3\n    handler: m.h\n    memory: {memory}\n"
    );
    stratus_manifest::parse("stratus.yaml", &text).unwrap()
}

fn version(app: &str, memory: u32) -> NewVersion {
    NewVersion {
        spec: spec(app, memory),
        manifest: "text".into(),
        packages: BTreeMap::from([(".".to_owned(), "a".repeat(64))]),
        created_ms: 1,
    }
}

fn log(ts_ms: i64, function: &str, message: &str) -> LogRecord {
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

#[tokio::test]
async fn versions_are_numbered_and_activated_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
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
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    assert_eq!(store.active_versions().await.unwrap().len(), 1);
}

#[tokio::test]
async fn logs_are_queried_followed_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
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
    let budget = |total, per_app| stratus_store::LogBudget { total, per_app };
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

#[tokio::test]
async fn the_identity_is_kept_and_a_lost_file_stops_every_call() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(store.identity("first").await.unwrap(), "first");
    assert_eq!(store.identity("second").await.unwrap(), "first");
    store.activate(version("a", 128)).await.unwrap();

    std::fs::remove_file(&path).unwrap();
    let lost = store.activate(version("b", 128)).await.unwrap_err();
    assert!(
        matches!(lost, stratus_store::StoreError::Lost { .. }),
        "{lost}"
    );
    // Even once a file is back at the path: it is not the one opened.
    std::fs::write(&path, b"").unwrap();
    assert!(store.list_apps().await.is_err());
    assert!(matches!(
        lost.duplicate(),
        stratus_store::StoreError::Lost { .. }
    ));
}

#[tokio::test]
async fn backlogs_count_each_app_s_events_and_messages_in_bytes() {
    use stratus_store::{Backlog, NewEvent, NewMessage};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    let event = |app: &str, id: &str, bytes: usize| NewEvent {
        app: app.into(),
        function: "f".into(),
        payload: vec![b'x'; bytes],
        request_id: id.into(),
        source: "invoke".into(),
        created_ms: 1,
        not_before_ms: 1,
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

#[tokio::test]
async fn each_app_is_trimmed_to_its_share_and_the_file_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let store = SqliteStore::open(&path).unwrap();
    let big = "x".repeat(10_000);
    let of = |app: &str, ts_ms: i64| LogRecord {
        app: app.into(),
        ..log(ts_ms, "f", &big)
    };
    for chunk in 0..10 {
        let records: Vec<_> = (0..100).map(|i| of("a", chunk * 100 + i)).collect();
        store.append_logs(records).await.unwrap();
    }
    store
        .append_logs(vec![of("b", 5000), of("b", 5001)])
        .await
        .unwrap();
    let size = || -> u64 {
        ["db", "db-wal"]
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len()))
            .sum()
    };
    let grown = size();
    assert!(grown > 10_000_000, "{grown}");

    let budget = stratus_store::LogBudget {
        total: 1_000_000,
        per_app: 100_000,
    };
    let trimmed = store.trim_logs(0, budget).await.unwrap();
    let left = store
        .query_logs(LogQuery {
            limit: 10_000,
            ..LogQuery::default()
        })
        .await
        .unwrap();
    let bytes = |app: &str| -> usize {
        left.iter()
            .filter(|r| r.record.app == app)
            .map(|r| r.record.message.len())
            .sum()
    };
    assert_eq!(bytes("a"), 100_000, "a keeps its newest share");
    assert_eq!(bytes("b"), 20_000, "b is within its share");
    assert_eq!(
        left.iter()
            .filter(|r| r.record.app == "a")
            .map(|r| r.record.ts_ms)
            .min(),
        Some(990)
    );
    assert!(trimmed.reclaimed > 5_000_000, "{trimmed:?}");
    let shrunk = size();
    assert!(
        shrunk < grown / 4,
        "the file shrank from {grown} to {shrunk}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_trim_lets_other_work_through_between_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let line = "x".repeat(200);
    for chunk in 0..100 {
        let records: Vec<_> = (0..500).map(|i| log(chunk * 500 + i, "f", &line)).collect();
        store.append_logs(records).await.unwrap();
    }
    let full = store.log_bytes().await.unwrap();
    let trim = tokio::spawn({
        let store = store.clone();
        let unlimited = stratus_store::LogBudget {
            total: u64::MAX,
            per_app: u64::MAX,
        };
        async move { store.trim_logs(i64::MAX, unlimited).await }
    });
    // Another user of the store (the event queue shares its connection)
    // is answered while the trim goes on, not once it is over.
    loop {
        let now = store.log_bytes().await.unwrap();
        assert!(
            !trim.is_finished(),
            "the trim held the store until it was done"
        );
        if now < full {
            // Seen part-way: most records are still there.
            assert!(
                now > full / 2,
                "answered only once the trim was over: {now} of {full}"
            );
            break;
        }
        tokio::task::yield_now().await;
    }
    let trimmed = trim.await.unwrap().unwrap();
    assert_eq!(trimmed.records, 50_000);
    assert_eq!(store.log_bytes().await.unwrap(), 0);
}
