//! What log records cost, side by side: the segment files a single node
//! keeps them in against the store's own log table (where they were kept
//! before, and where a store shared by several nodes keeps them), in one
//! process, with the real SQLite store and the real segment table in a
//! temporary directory.
//!
//! 1. Append: `STRATUS_BENCH_LOG_MB` (default 500) megabytes of records of
//!    about 1 KB (10 apps, 10 functions each, a request id each), written
//!    in batches of 2,048 as the log writer writes them; CPU of the whole
//!    process per record, and megabytes per second.
//! 2. Open: the time the segment table takes to open over that much (what
//!    it adds to a server's start).
//! 3. Queries, median of 20 each: an app's newest 200 records, one request
//!    id, one function's newest 200, and 200 after an id (following).
//! 4. Acknowledgements while a retention trim runs: a task queues events
//!    one at a time (`enqueue_events`, the transaction an asynchronous
//!    invocation's 202 waits for) and times each; p50, p99 and the worst,
//!    first with nothing else running, then while a trim takes the table
//!    from all it holds down to 1 MB. For the store's table the events go
//!    to the same database; for segments to a database of their own, as in
//!    the server, where nothing of the logs touches the store.
//!
//! Run with `cargo bench -p stratus-logs --bench records`. It prints
//! figures only and never asserts on them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_logs::{LogTable, SegmentLimits, SegmentLogs, StoreTable};
use stratus_store::{LogBudget, LogQuery, LogRecord, LogStream, NewEvent, Store};
use stratus_store_sqlite::SqliteStore;

const BATCH: usize = 2048;
const APPS: usize = 10;
const FUNCTIONS: usize = 10;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run());
}

fn env_mb() -> u64 {
    std::env::var("STRATUS_BENCH_LOG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn record(n: usize, ts_ms: i64) -> LogRecord {
    LogRecord {
        ts_ms,
        app: format!("app{}", n % APPS),
        function: format!("fn{}", (n / APPS) % FUNCTIONS),
        version: 1,
        instance: "i-0123456789".into(),
        request_id: Some(format!("req-{n:012}")),
        stream: LogStream::Stdout,
        message: format!("{n:012} {}", "log line ".repeat(110)),
        fields: None,
    }
}

/// CPU seconds this process has used.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, fields 14 and 15 counted from 1 with the name.
    (ticks(11) + ticks(12)) / 100.0
}

struct Table {
    name: &'static str,
    table: Arc<dyn LogTable>,
    /// Where the events go while this table trims.
    queue: Arc<dyn Store>,
    last_id: i64,
}

async fn run() {
    let mb = env_mb();
    let records = (mb as usize * 1_000_000) / 1_100;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let queue: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("queue.db")).unwrap());
    let limits = SegmentLimits {
        segment_bytes: 8 << 20,
        roll_after: Duration::from_secs(3600),
    };
    let segments_dir = dir.path().join("logs");
    let mut tables = vec![
        Table {
            name: "store table (reference)",
            table: Arc::new(StoreTable(store.clone())),
            queue: store.clone(),
            last_id: 0,
        },
        Table {
            name: "segments",
            table: Arc::new(SegmentLogs::open(&segments_dir, limits).unwrap()),
            queue: queue.clone(),
            last_id: 0,
        },
    ];
    println!("{records} records of about 1.1 KB ({mb} MB), batches of {BATCH}");
    println!();
    println!("1. Append");
    println!(
        "{:<26} {:>12} {:>10} {:>12}",
        "table", "cpu µs/rec", "MB/s", "stored MB"
    );
    let now = now_ms();
    for t in &mut tables {
        let (cpu, start) = (cpu_seconds(), Instant::now());
        let mut n = 0;
        while n < records {
            let batch: Vec<LogRecord> = (n..(n + BATCH).min(records))
                .map(|i| record(i, now - (records - i) as i64))
                .collect();
            n += batch.len();
            t.table.append(batch).await.unwrap();
        }
        let (cpu, wall) = (cpu_seconds() - cpu, start.elapsed().as_secs_f64());
        let stored = t.table.bytes().await.unwrap();
        println!(
            "{:<26} {:>12.1} {:>10.1} {:>12.1}",
            t.name,
            cpu * 1e6 / records as f64,
            stored as f64 / 1e6 / wall,
            stored as f64 / 1e6
        );
        t.last_id = t
            .table
            .query(LogQuery {
                limit: 1,
                ..LogQuery::default()
            })
            .await
            .unwrap()
            .last()
            .map_or(0, |r| r.id);
    }

    println!();
    println!("2. Open");
    let start = Instant::now();
    let reopened = SegmentLogs::open(&segments_dir, limits).unwrap();
    println!(
        "segments: opened over {:.0} MB in {:.0} ms",
        reopened.bytes().await.unwrap() as f64 / 1e6,
        start.elapsed().as_secs_f64() * 1e3
    );
    drop(reopened);

    println!();
    println!("3. Queries (median of 20, ms)");
    println!(
        "{:<26} {:>12} {:>12} {:>12} {:>12}",
        "table", "app newest", "request id", "function", "after id"
    );
    for t in &tables {
        let middle = records / 2;
        let queries = [
            LogQuery {
                app: Some("app3".into()),
                limit: 200,
                ..LogQuery::default()
            },
            LogQuery {
                request_id: Some(format!("req-{middle:012}")),
                limit: 200,
                ..LogQuery::default()
            },
            LogQuery {
                app: Some("app3".into()),
                function: Some("fn7".into()),
                limit: 200,
                ..LogQuery::default()
            },
            LogQuery {
                after_id: Some(t.last_id - 1000),
                limit: 200,
                ..LogQuery::default()
            },
        ];
        let mut row = format!("{:<26}", t.name);
        for q in queries {
            let mut times = Vec::new();
            for _ in 0..20 {
                let start = Instant::now();
                let found = t.table.query(q.clone()).await.unwrap();
                times.push(start.elapsed().as_secs_f64() * 1e3);
                assert!(!found.is_empty(), "{q:?} found nothing");
            }
            times.sort_by(f64::total_cmp);
            row.push_str(&format!(" {:>12.2}", times[times.len() / 2]));
        }
        println!("{row}");
    }

    println!();
    println!("4. Acknowledgements (ms) while nothing runs, and while a trim to 1 MB runs");
    println!(
        "{:<26} {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>8} {:>9}",
        "table", "idle p50", "p99", "max", "trim p50", "p99", "max", "acks", "trim ms"
    );
    for t in &tables {
        let idle = acks(&t.queue, Duration::from_secs(2)).await;
        let table = t.table.clone();
        let trim = async move {
            let start = Instant::now();
            let trimmed = table
                .trim(
                    0,
                    LogBudget {
                        total: 1_000_000,
                        per_app: u64::MAX,
                    },
                )
                .await
                .unwrap();
            (start.elapsed(), trimmed)
        };
        let (during, trimmed) = acks_during(&t.queue, trim).await;
        let (took, _) = trimmed;
        let (i50, i99, imax) = summary(&idle);
        let (t50, t99, tmax) = summary(&during);
        println!(
            "{:<26} {:>9.2} {:>9.2} {:>9.2} | {:>9.2} {:>9.2} {:>9.2} {:>8} {:>9.0}",
            t.name,
            i50,
            i99,
            imax,
            t50,
            t99,
            tmax,
            during.len(),
            took.as_secs_f64() * 1e3
        );
    }
}

/// Queues events one at a time for `length`; the latency of each.
async fn acks(queue: &Arc<dyn Store>, length: Duration) -> Vec<f64> {
    let mut times = Vec::new();
    let end = Instant::now() + length;
    let mut n = 0u64;
    while Instant::now() < end {
        times.push(ack(queue, &mut n).await);
    }
    times
}

/// Queues events one at a time until `work` is done (the last one it
/// began included); their latencies and what the work returned.
async fn acks_during<T: Send + 'static>(
    queue: &Arc<dyn Store>,
    work: impl Future<Output = T> + Send + 'static,
) -> (Vec<f64>, T) {
    let work = tokio::spawn(work);
    let mut times = Vec::new();
    let mut n = 1_000_000_000u64;
    while !work.is_finished() {
        times.push(ack(queue, &mut n).await);
    }
    (times, work.await.expect("the work ran"))
}

async fn ack(queue: &Arc<dyn Store>, n: &mut u64) -> f64 {
    *n += 1;
    let event = NewEvent {
        app: "app".into(),
        function: "f".into(),
        payload: b"{}".to_vec(),
        request_id: format!("e{n}"),
        source: "invoke".into(),
        created_ms: now_ms(),
        not_before_ms: now_ms() + 3_600_000,
        trace: None,
    };
    let start = Instant::now();
    queue.enqueue_events(vec![event]).await.unwrap();
    start.elapsed().as_secs_f64() * 1e3
}

fn summary(times: &[f64]) -> (f64, f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |p: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99), at(1.0))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
