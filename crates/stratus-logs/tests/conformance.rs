//! One suite, every backend of the log seam: what a record counts as
//! stored, and what queries see.

use std::sync::Arc;
use std::time::Duration;

use stratus_logs::{
    BatchedLogs, Buffer, LogQuery, LogRecord, LogStream, LogTable, Logs, MemoryLogs, Retention,
    SegmentLimits, SegmentLogs, StoreTable,
};
use stratus_store::{LogBudget, StoredLog};
use stratus_store_sqlite::SqliteStore;

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

const RETENTION: Retention = Retention {
    max_age: Duration::from_secs(3600),
    max_bytes: 1 << 30,
    max_bytes_per_app: 1 << 30,
};

const BUFFER: Buffer = Buffer {
    records: 1024,
    bytes: 1 << 20,
};

/// Both tables, each in a directory of its own.
fn tables(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn LogTable>)> {
    let store = Arc::new(SqliteStore::open(&dir.join("db")).unwrap());
    vec![
        ("store", Arc::new(StoreTable(store))),
        ("segments", Arc::new(segments(&dir.join("logs")))),
    ]
}

fn segments(dir: &std::path::Path) -> SegmentLogs {
    SegmentLogs::open(
        dir,
        SegmentLimits {
            segment_bytes: 64 << 10,
            roll_after: Duration::from_secs(3600),
        },
    )
    .unwrap()
}

#[tokio::test]
async fn both_tables() {
    for (name, table) in tables(tempfile::tempdir().unwrap().path()) {
        eprintln!("{name}");
        let logs = BatchedLogs::start(table, BUFFER, RETENTION, None, None);
        check(logs.clone()).await;
        logs.stop().await;
    }
}

fn sized(app: &str, n: usize, ts_ms: i64) -> LogRecord {
    LogRecord {
        ts_ms,
        app: app.into(),
        function: "f".into(),
        version: 1,
        instance: "i".into(),
        request_id: Some(format!("{app}-{n}")),
        stream: LogStream::Stdout,
        message: format!("{n:08} {}", "x".repeat(1000)),
        fields: None,
    }
}

async fn of_app(table: &dyn LogTable, app: &str) -> Vec<StoredLog> {
    table
        .query(LogQuery {
            app: Some(app.into()),
            limit: 100_000,
            ..LogQuery::default()
        })
        .await
        .unwrap()
}

/// Numbers in the messages of `records`.
fn numbers(records: &[StoredLog]) -> Vec<usize> {
    records
        .iter()
        .map(|r| r.record.message[..8].parse().unwrap())
        .collect()
}

/// Retention takes the oldest first: by age, then each app down to its
/// share, then everything down to the total. What is kept is each app's
/// newest records, within the budget.
#[tokio::test]
async fn trims_keep_the_newest_within_the_budget() {
    for (name, table) in tables(tempfile::tempdir().unwrap().path()) {
        eprintln!("{name}");
        // 300 old records of `old`, then 1000 of `noisy` and 100 of `quiet`.
        let old: Vec<LogRecord> = (0..300).map(|n| sized("old", n, 1_000)).collect();
        table.append(old).await.unwrap();
        for chunk in 0..10 {
            let batch: Vec<LogRecord> = (chunk * 100..chunk * 100 + 100)
                .map(|n| sized("noisy", n, 50_000 + n as i64))
                .collect();
            table.append(batch).await.unwrap();
        }
        let quiet: Vec<LogRecord> = (0..100).map(|n| sized("quiet", n, 60_000)).collect();
        table.append(quiet).await.unwrap();
        let before = table.bytes().await.unwrap();
        assert!(before > 1_300_000, "{before} bytes");

        // By age: every record of `old` is older than 10 s.
        let trimmed = table
            .trim(
                10_000,
                LogBudget {
                    total: u64::MAX,
                    per_app: u64::MAX,
                },
            )
            .await
            .unwrap();
        assert_eq!(trimmed.records, 300);
        assert!(of_app(&*table, "old").await.is_empty());
        assert_eq!(of_app(&*table, "noisy").await.len(), 1000);

        // An app over its share keeps its newest records, within it.
        let per_app = 400_000;
        table
            .trim(
                0,
                LogBudget {
                    total: u64::MAX,
                    per_app,
                },
            )
            .await
            .unwrap();
        let noisy = numbers(&of_app(&*table, "noisy").await);
        assert!(
            (200..=400).contains(&noisy.len()),
            "{} records of 1 KB kept for 400 KB",
            noisy.len()
        );
        assert_eq!(noisy, (1000 - noisy.len()..1000).collect::<Vec<_>>());
        assert_eq!(
            of_app(&*table, "quiet").await.len(),
            100,
            "the quiet app keeps all"
        );

        // The total: the oldest of all go, whoever wrote them.
        table
            .trim(
                0,
                LogBudget {
                    total: 60_000,
                    per_app,
                },
            )
            .await
            .unwrap();
        let bytes = table.bytes().await.unwrap();
        assert!(bytes <= 60_000, "{bytes} bytes kept");
        let quiet = numbers(&of_app(&*table, "quiet").await);
        assert!(!quiet.is_empty(), "the newest records are kept");
        assert!(
            of_app(&*table, "noisy").await.is_empty(),
            "older than every quiet record"
        );
        assert_eq!(quiet, (100 - quiet.len()..100).collect::<Vec<_>>());

        // Ids go on growing after trims.
        table
            .append(vec![sized("quiet", 100, 70_000)])
            .await
            .unwrap();
        let all = of_app(&*table, "quiet").await;
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(numbers(&all).last(), Some(&100));
    }
}

/// Queries that span many segments: the newest first under a limit, the
/// oldest after an id, one request, one function, across apps.
#[tokio::test]
async fn queries_span_segments_and_apps() {
    let dir = tempfile::tempdir().unwrap();
    let mut tables = tables(dir.path());
    // Each app's records in one segment, read a block at a time.
    let large = SegmentLogs::open(
        &dir.path().join("large"),
        SegmentLimits {
            segment_bytes: 8 << 20,
            roll_after: Duration::from_secs(3600),
        },
    )
    .unwrap();
    tables.push(("one large segment", Arc::new(large)));
    for (name, table) in tables {
        eprintln!("{name}");
        for chunk in 0..6 {
            let mut batch = Vec::new();
            for n in chunk * 100..chunk * 100 + 100 {
                let mut record = sized(if n % 2 == 0 { "a" } else { "b" }, n, 1_000 + n as i64);
                if n % 7 == 0 {
                    record.function = "g".into();
                }
                batch.push(record);
            }
            table.append(batch).await.unwrap();
        }
        let all = |q: LogQuery| {
            let table = table.clone();
            async move { numbers(&table.query(q).await.unwrap()) }
        };
        let everything = LogQuery {
            limit: 10_000,
            ..LogQuery::default()
        };
        assert_eq!(all(everything.clone()).await, (0..600).collect::<Vec<_>>());
        assert_eq!(
            all(LogQuery {
                limit: 5,
                ..LogQuery::default()
            })
            .await,
            (595..600).collect::<Vec<_>>()
        );
        let ids = table.query(everything.clone()).await.unwrap();
        assert_eq!(
            all(LogQuery {
                after_id: Some(ids[99].id),
                limit: 3,
                ..LogQuery::default()
            })
            .await,
            [100, 101, 102]
        );
        assert_eq!(
            all(LogQuery {
                request_id: Some("b-301".into()),
                ..everything.clone()
            })
            .await,
            [301]
        );
        assert!(
            all(LogQuery {
                request_id: Some("b-300".into()),
                ..everything.clone()
            })
            .await
            .is_empty()
        );
        let g_of_a = all(LogQuery {
            app: Some("a".into()),
            function: Some("g".into()),
            ..everything.clone()
        })
        .await;
        let expected: Vec<usize> = (0..600).filter(|n| n % 14 == 0).collect();
        assert_eq!(g_of_a, expected);
        assert_eq!(
            all(LogQuery {
                app: Some("b".into()),
                since_ms: Some(1_590),
                until_ms: Some(1_596),
                ..everything.clone()
            })
            .await,
            [591, 593, 595]
        );
    }
}

/// Segments survive a restart: a record cut short by a crash is cut off,
/// everything before it is read back, and ids go on growing.
#[tokio::test]
async fn segments_reopen_after_a_crash_with_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs");
    {
        let table = segments(&path);
        let batch: Vec<LogRecord> = (0..150).map(|n| sized("a", n, 1_000)).collect();
        table.append(batch).await.unwrap();
    }
    // The newest segment ends in half a record.
    let app_dir = path.join("a");
    let mut files: Vec<_> = std::fs::read_dir(&app_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() > 1, "{} segments", files.len());
    let newest = files.last().unwrap();
    let len = std::fs::metadata(newest).unwrap().len();
    let mut torn = std::fs::read(newest).unwrap();
    torn.extend_from_within(..300);
    std::fs::write(newest, &torn).unwrap();

    let table = segments(&path);
    assert_eq!(
        std::fs::metadata(newest).unwrap().len(),
        len,
        "the torn record is cut off"
    );
    let read = of_app(&table, "a").await;
    assert_eq!(numbers(&read), (0..150).collect::<Vec<_>>());
    let last = read.last().unwrap().id;
    table.append(vec![sized("a", 150, 2_000)]).await.unwrap();
    let read = of_app(&table, "a").await;
    assert_eq!(read.len(), 151);
    assert!(read.last().unwrap().id > last);
    assert_eq!(table.bytes().await.unwrap(), {
        let mut total = 0;
        for e in std::fs::read_dir(&app_dir).unwrap() {
            total += e.unwrap().metadata().unwrap().len();
        }
        total
    });
}

/// An import keeps the ids records had, and one cut short goes on where
/// it stopped: what is already stored is not stored again.
#[tokio::test]
async fn an_import_keeps_ids_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let table = segments(dir.path());
    let records: Vec<StoredLog> = (0..10)
        .map(|n| StoredLog {
            id: 100 + n as i64 * 2,
            record: sized("a", n, 1_000),
        })
        .collect();
    table.import(records[..4].to_vec()).await.unwrap();
    table.import(records.clone()).await.unwrap();
    let read = of_app(&table, "a").await;
    assert_eq!(read, records);
    table.append(vec![sized("a", 10, 2_000)]).await.unwrap();
    assert_eq!(of_app(&table, "a").await.last().unwrap().id, 119);
}

#[tokio::test]
async fn a_full_buffer_drops_and_counts_rather_than_waits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let retention = RETENTION;
    // On a current-thread runtime the writer cannot run between appends.
    let buffer = Buffer {
        records: 4,
        bytes: 1 << 20,
    };
    let logs = BatchedLogs::start(Arc::new(StoreTable(store)), buffer, retention, None, None);
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
    let logs = BatchedLogs::start(Arc::new(StoreTable(store)), buffer, retention, None, None);
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

/// Records a data directory kept in the database move into segments under
/// the ids they had, once; the database then lets them go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_the_database_move_into_segments() {
    use stratus_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
    let old: Vec<LogRecord> = (0..25_000).map(|n| sized("a", n, 1_000)).collect();
    store.append_logs(old).await.unwrap();
    let in_store = of_app(&StoreTable(store.clone()), "a").await;

    let table = segments(&dir.path().join("logs"));
    assert_eq!(table.take_over(store.clone()).await.unwrap(), 25_000);
    assert_eq!(of_app(&table, "a").await, in_store);
    for _ in 0..200 {
        if store.log_bytes().await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.log_bytes().await.unwrap(),
        0,
        "the database lets them go"
    );
    // Again, as at the next start: nothing more to move.
    assert_eq!(table.take_over(store).await.unwrap(), 0);
    assert_eq!(of_app(&table, "a").await.len(), 25_000);
}

/// Retention is applied only when it is this writer's turn: where nodes
/// share one log table, one of them trims it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_waits_for_the_writer_s_turn() {
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Turn(AtomicBool);
    #[async_trait::async_trait]
    impl stratus_logs::TrimTurn for Turn {
        async fn mine(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let table: Arc<dyn LogTable> = Arc::new(segments(dir.path()));
    let turn = Arc::new(Turn(AtomicBool::new(false)));
    let retention = Retention {
        max_age: Duration::from_secs(3600),
        max_bytes: 100_000,
        max_bytes_per_app: 100_000,
    };
    let buffer = Buffer {
        records: 4096,
        bytes: 16 << 20,
    };
    let logs = BatchedLogs::start(table.clone(), buffer, retention, None, Some(turn.clone()));
    for n in 0..1000 {
        logs.append(sized("a", n, now_ms()));
    }
    logs.flush().await.unwrap();
    // A burst ends; the trim it would bring is not this writer's to do.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(logs.dropped(), 0);
    let held = table.bytes().await.unwrap();
    assert!(held > 1_000_000, "{held} bytes");
    turn.0.store(true, Ordering::SeqCst);
    logs.append(sized("a", 1000, now_ms()));
    logs.flush().await.unwrap();
    for _ in 0..50 {
        if table.bytes().await.unwrap() <= 100_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        table.bytes().await.unwrap() <= 100_000,
        "trimmed once it is its turn"
    );
    logs.stop().await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
