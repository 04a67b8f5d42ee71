//! The SQLite backend through the `Store` trait.

use stratus_store::conformance::apps::{log, version};
use stratus_store::{Apps, LogQuery, LogRecord, LogStore, Meta, MetaKey};
use stratus_store_sqlite::SqliteStore;

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
    let identity = |candidate| store.meta_or_insert(MetaKey::Identity, candidate);
    assert_eq!(identity("first").await.unwrap(), "first");
    assert_eq!(identity("second").await.unwrap(), "first");
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
