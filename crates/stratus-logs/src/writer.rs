//! Log records batched into the store, off the invocation path, with the
//! retention limits applied.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use stratus_store::{LogQuery, LogRecord, Store, StoredLog};
use tokio::sync::{mpsc, oneshot};

use crate::{Logs, LogsError};

const BATCH: usize = 2048;
/// When records keep coming (the last write was less than this long ago),
/// the writer waits this long for more before writing, so that a busy
/// server commits a few large batches rather than one per invocation.
const LINGER: Duration = Duration::from_millis(10);
/// How often old records are trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// How long records are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Records older than this are deleted.
    pub max_age: Duration,
    /// The oldest records are deleted beyond this many bytes of messages.
    pub max_bytes: u64,
}

type Flushed = oneshot::Sender<Result<(), LogsError>>;

/// [`Logs`] on a [`Store`]: appended records go through a bounded channel
/// to a task that writes them in batches.
pub struct StoreLogs {
    store: Arc<dyn Store>,
    records: mpsc::Sender<LogRecord>,
    flushes: mpsc::Sender<Flushed>,
    dropped: AtomicU64,
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl StoreLogs {
    /// Starts the writer; `capacity` records may wait for it before
    /// `append` drops them.
    pub fn start(store: Arc<dyn Store>, capacity: usize, retention: Retention) -> Arc<StoreLogs> {
        let (records, rx) = mpsc::channel(capacity.max(1));
        let (flushes, flush_rx) = mpsc::channel(64);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(write_loop(store.clone(), rx, flush_rx, stop_rx, retention));
        Arc::new(StoreLogs {
            store,
            records,
            flushes,
            dropped: AtomicU64::new(0),
            stop: Mutex::new(Some((stop, task))),
        })
    }

    /// Writes what was appended so far and stops the writer; later records
    /// are dropped.
    pub async fn stop(&self) {
        let stop = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((stop, task)) = stop {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

#[async_trait]
impl Logs for StoreLogs {
    fn append(&self, record: LogRecord) {
        if self.records.try_send(record).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "log writer is behind; dropping log records");
            }
        }
    }

    async fn flush(&self) -> Result<(), LogsError> {
        let (ack, done) = oneshot::channel();
        self.flushes
            .send(ack)
            .await
            .map_err(|_| LogsError::Stopped)?;
        done.await.map_err(|_| LogsError::Stopped)?
    }

    async fn query(&self, query: LogQuery) -> Result<Vec<StoredLog>, LogsError> {
        Ok(self.store.query_logs(query).await?)
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn write_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<LogRecord>,
    mut flush_rx: mpsc::Receiver<Flushed>,
    mut stop_rx: oneshot::Receiver<()>,
    retention: Retention,
) {
    let mut trim = tokio::time::interval(TRIM_EVERY);
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_write = tokio::time::Instant::now() - LINGER;
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 { break; }
                if last_write.elapsed() < LINGER && batch.len() < BATCH {
                    tokio::time::sleep(LINGER).await;
                    take_ready(&mut rx, &mut batch, BATCH);
                }
                let _ = write(&*store, &mut batch).await;
                last_write = tokio::time::Instant::now();
            }
            Some(ack) = flush_rx.recv() => {
                // Flushes asked for meanwhile share this write (a group
                // commit): every record appended before any of them is in
                // the channel now. Write those, not the ones that keep
                // coming after.
                let mut acks = vec![ack];
                while let Ok(ack) = flush_rx.try_recv() {
                    acks.push(ack);
                }
                let mut owed = rx.len();
                let mut result = Ok(());
                loop {
                    let before = batch.len();
                    take_ready(&mut rx, &mut batch, owed);
                    owed -= batch.len() - before;
                    if batch.is_empty() {
                        break;
                    }
                    if let Err(err) = write(&*store, &mut batch).await {
                        result = Err(err);
                    }
                }
                for ack in acks {
                    let _ = ack.send(match &result {
                        Ok(()) => Ok(()),
                        Err(_) => Err(LogsError::Unstored),
                    });
                }
            }
            _ = trim.tick() => {
                let before = now_ms() - retention.max_age.as_millis() as i64;
                match store.trim_logs(before, retention.max_bytes).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::debug!(deleted, "trimmed logs"),
                    Err(err) => tracing::warn!(error = %err, "cannot trim logs"),
                }
            }
            _ = &mut stop_rx => {
                // Whatever is already queued is written before stopping.
                loop {
                    take_ready(&mut rx, &mut batch, BATCH);
                    if batch.is_empty() || write(&*store, &mut batch).await.is_err() {
                        break;
                    }
                }
                break;
            }
        }
    }
}

/// Moves up to `at_most` records already waiting into `batch`, up to a
/// batch.
fn take_ready(rx: &mut mpsc::Receiver<LogRecord>, batch: &mut Vec<LogRecord>, at_most: usize) {
    let limit = BATCH.min(batch.len() + at_most);
    while batch.len() < limit {
        match rx.try_recv() {
            Ok(record) => batch.push(record),
            Err(_) => break,
        }
    }
}

async fn write(store: &dyn Store, batch: &mut Vec<LogRecord>) -> Result<(), LogsError> {
    if batch.is_empty() {
        return Ok(());
    }
    store
        .append_logs(std::mem::take(batch))
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "cannot store log records");
            LogsError::Store(err)
        })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
