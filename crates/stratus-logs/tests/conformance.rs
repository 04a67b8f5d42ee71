//! One suite, every backend of the log seam: what a record counts as
//! stored, and what queries see.

use std::sync::Arc;
use std::time::Duration;

use stratus_logs::{
    Buffer, LogQuery, LogRecord, LogStream, Logs, MemoryLogs, Retention, StoreLogs,
};
use stratus_store::SqliteStore;

fn record(function: &str, request: &str, stream: LogStream, message: &str) -> LogRecord {
    LogRecord {
        // Now: the writer's retention would trim anything older.
        ts_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
        app: "app".into(),
        function: function.into(),
        version: 1,
        instance: "i1".into(),
        request_id: Some(request.into()),
        stream,
        message: message.into(),
        fields: (stream == LogStream::Report).then(|| serde_json::json!({ "cold": true })),
    }
}

fn query() -> LogQuery {
    LogQuery {
        limit: 100,
        ..LogQuery::default()
    }
}

async fn check(logs: Arc<dyn Logs>) {
    logs.append(record("f", "r1", LogStream::Stdout, "one"));
    logs.append(record("f", "r1", LogStream::Report, "REPORT r1"));
    logs.append(record("g", "r2", LogStream::Stderr, "two"));
    logs.append(record("f", "r3", LogStream::Platform, "three"));
    // Stored once a flush begun after the appends has returned.
    logs.flush().await.expect("flushed");

    let all = logs.query(query()).await.unwrap();
    let messages: Vec<&str> = all.iter().map(|s| s.record.message.as_str()).collect();
    assert_eq!(
        messages,
        ["one", "REPORT r1", "two", "three"],
        "oldest first"
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids grow");
    assert_eq!(all[1].record.stream, LogStream::Report);
    assert_eq!(
        all[1].record.fields,
        Some(serde_json::json!({ "cold": true }))
    );

    let of_f = logs
        .query(LogQuery {
            app: Some("app".into()),
            function: Some("f".into()),
            ..query()
        })
        .await
        .unwrap();
    assert_eq!(of_f.len(), 3);
    let of_r1 = logs
        .query(LogQuery {
            request_id: Some("r1".into()),
            ..query()
        })
        .await
        .unwrap();
    assert_eq!(of_r1.len(), 2);

    // Text anywhere in the message, and a time before which to stop.
    let with_o = logs
        .query(LogQuery {
            contains: Some("o".into()),
            ..query()
        })
        .await
        .unwrap();
    let with_o: Vec<&str> = with_o.iter().map(|s| s.record.message.as_str()).collect();
    assert_eq!(with_o, ["one", "two"], "case counts");
    let before = logs
        .query(LogQuery {
            until_ms: Some(all[0].record.ts_ms),
            ..query()
        })
        .await
        .unwrap();
    assert!(before.is_empty());
    let until_later = logs
        .query(LogQuery {
            until_ms: Some(all[3].record.ts_ms + 1),
            ..query()
        })
        .await
        .unwrap();
    assert_eq!(until_later.len(), 4);

    // A limit keeps the newest; following (`after_id`) the oldest after it.
    let newest = logs
        .query(LogQuery {
            limit: 2,
            ..query()
        })
        .await
        .unwrap();
    let newest: Vec<&str> = newest.iter().map(|s| s.record.message.as_str()).collect();
    assert_eq!(newest, ["two", "three"]);
    let after = logs
        .query(LogQuery {
            after_id: Some(all[0].id),
            limit: 2,
            ..query()
        })
        .await
        .unwrap();
    let after: Vec<&str> = after.iter().map(|s| s.record.message.as_str()).collect();
    assert_eq!(after, ["REPORT r1", "two"]);

    // Flushes at once each see their own record stored.
    let flushes: Vec<_> = (0..8)
        .map(|i| {
            let logs = logs.clone();
            tokio::spawn(async move {
                logs.append(record("h", &format!("c{i}"), LogStream::Stdout, "at once"));
                logs.flush().await
            })
        })
        .collect();
    for flush in flushes {
        flush.await.unwrap().expect("flushed");
    }
    let of_h = logs
        .query(LogQuery {
            function: Some("h".into()),
            app: Some("app".into()),
            ..query()
        })
        .await
        .unwrap();
    assert_eq!(of_h.len(), 8);
    assert_eq!(logs.dropped(), 0);
}

#[tokio::test]
async fn memory() {
    check(Arc::new(MemoryLogs::default())).await;
}

#[tokio::test]
async fn store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let logs = StoreLogs::start(
        store,
        Buffer {
            records: 1024,
            bytes: 1 << 20,
        },
        Retention {
            max_age: Duration::from_secs(3600),
            max_bytes: 1 << 30,
            max_bytes_per_app: 1 << 30,
        },
        None,
    );
    check(logs.clone()).await;
    logs.stop().await;
}

#[tokio::test]
async fn a_full_buffer_drops_and_counts_rather_than_waits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let retention = Retention {
        max_age: Duration::from_secs(3600),
        max_bytes: 1 << 30,
        max_bytes_per_app: 1 << 30,
    };
    // On a current-thread runtime the writer cannot run between appends.
    let buffer = Buffer {
        records: 4,
        bytes: 1 << 20,
    };
    let logs = StoreLogs::start(store.clone(), buffer, retention, None);
    for i in 0..10 {
        logs.append(record("f", "r", LogStream::Stdout, &i.to_string()));
    }
    assert_eq!(logs.dropped(), 6);
    logs.flush().await.unwrap();
    assert_eq!(logs.query(query()).await.unwrap().len(), 4);
    logs.stop().await;
    // After a stop, nothing more is taken in: it is dropped and counted.
    logs.append(record("f", "r", LogStream::Stdout, "late"));
    assert_eq!(logs.dropped(), 7);

    // Bounded in bytes too: a few large records fill it, and once written
    // there is room again.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let buffer = Buffer {
        records: 1000,
        bytes: 3 << 20,
    };
    let logs = StoreLogs::start(store, buffer, retention, None);
    let big = "x".repeat(1 << 20);
    for _ in 0..5 {
        logs.append(record("f", "r", LogStream::Stdout, &big));
    }
    assert_eq!(
        logs.dropped(),
        3,
        "two records of 1 MiB fit in 3 MiB, not three"
    );
    logs.flush().await.unwrap();
    logs.append(record("f", "r", LogStream::Stdout, &big));
    assert_eq!(logs.dropped(), 3, "written records leave room");
    logs.flush().await.unwrap();
    assert_eq!(logs.query(query()).await.unwrap().len(), 3);
    logs.stop().await;
}
