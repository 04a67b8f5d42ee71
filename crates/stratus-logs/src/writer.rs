//! Log records batched into the store, off the invocation path, with the
//! retention limits applied.
//!
//! A flush forces no write of its own: the writer counts the records it
//! has written, in the order they were appended, and a flush waits until
//! that count reaches the number appended before it began. Many flushes
//! at once so cost one batch, written at the writer's own pace.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use stratus_store::{LogQuery, LogRecord, Store, StoredLog};
use tokio::sync::{mpsc, oneshot, watch};

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

/// What may wait for the writer before `append` drops records: so many
/// records, and so many bytes of them.
#[derive(Debug, Clone, Copy)]
pub struct Buffer {
    pub records: usize,
    pub bytes: usize,
}

/// The bytes a record holds while it waits: its strings and a little for
/// the rest.
fn size_of(record: &LogRecord) -> usize {
    const FIXED: usize = 128;
    FIXED
        + record.message.len()
        + record.app.len()
        + record.function.len()
        + record.instance.len()
        + record.request_id.as_ref().map_or(0, String::len)
        + record.fields.as_ref().map_or(0, |f| f.to_string().len())
}

/// How far the writer got: records written (or lost to a failed write),
/// and how many writes failed.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    written: u64,
    failures: u64,
}

/// [`Logs`] on a [`Store`]: appended records go through a bounded channel
/// to a task that writes them in batches.
pub struct StoreLogs {
    store: Arc<dyn Store>,
    records: mpsc::Sender<LogRecord>,
    /// Records taken into the channel, in the order the writer sees them.
    sent: AtomicU64,
    progress: watch::Receiver<Progress>,
    dropped: AtomicU64,
    /// Bytes of the records waiting for the writer, and the most there may be.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    stop: Mutex<Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>>,
}

impl StoreLogs {
    /// Starts the writer; what `buffer` allows may wait for it before
    /// `append` drops records.
    pub fn start(store: Arc<dyn Store>, buffer: Buffer, retention: Retention) -> Arc<StoreLogs> {
        let (records, rx) = mpsc::channel(buffer.records.max(1));
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (stop, stop_rx) = oneshot::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            store: store.clone(),
            progress: progress_tx,
            waiting: waiting.clone(),
        };
        let task = tokio::spawn(writer.run(rx, stop_rx, retention));
        Arc::new(StoreLogs {
            store,
            records,
            sent: AtomicU64::new(0),
            progress,
            dropped: AtomicU64::new(0),
            waiting,
            max_waiting: buffer.bytes,
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
        // Counted only once it is in the channel: a flush that begins
        // after this returns waits for it.
        let size = size_of(&record);
        let before = self.waiting.fetch_add(size, Ordering::AcqRel);
        if before + size <= self.max_waiting && self.records.try_send(record).is_ok() {
            self.sent.fetch_add(1, Ordering::AcqRel);
            return;
        }
        self.waiting.fetch_sub(size, Ordering::AcqRel);
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(dropped, "log writer is behind; dropping log records");
        }
    }

    async fn flush(&self) -> Result<(), LogsError> {
        let target = self.sent.load(Ordering::Acquire);
        let mut progress = self.progress.clone();
        let failures = progress.borrow().failures;
        let reached = progress
            .wait_for(|p| p.written >= target)
            .await
            .map_err(|_| LogsError::Stopped)?;
        if reached.failures == failures {
            Ok(())
        } else {
            Err(LogsError::Unstored)
        }
    }

    async fn query(&self, query: LogQuery) -> Result<Vec<StoredLog>, LogsError> {
        Ok(self.store.query_logs(query).await?)
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Writer {
    store: Arc<dyn Store>,
    progress: watch::Sender<Progress>,
    waiting: Arc<AtomicUsize>,
}

impl Writer {
    async fn run(
        self,
        mut rx: mpsc::Receiver<LogRecord>,
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
                        take_ready(&mut rx, &mut batch);
                    }
                    self.write(&mut batch).await;
                    last_write = tokio::time::Instant::now();
                }
                _ = trim.tick() => {
                    let before = now_ms() - retention.max_age.as_millis() as i64;
                    match self.store.trim_logs(before, retention.max_bytes).await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::debug!(deleted, "trimmed logs"),
                        Err(err) => tracing::warn!(error = %err, "cannot trim logs"),
                    }
                }
                _ = &mut stop_rx => {
                    // Whatever is already queued is written before stopping.
                    loop {
                        take_ready(&mut rx, &mut batch);
                        if batch.is_empty() {
                            break;
                        }
                        self.write(&mut batch).await;
                    }
                    break;
                }
            }
        }
    }

    /// Writes `batch` and counts it as written, or as lost when the store
    /// fails.
    async fn write(&self, batch: &mut Vec<LogRecord>) {
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let bytes: usize = batch.iter().map(size_of).sum();
        let failed = match self.store.append_logs(std::mem::take(batch)).await {
            Ok(()) => 0,
            Err(err) => {
                tracing::warn!(error = %err, "cannot store log records");
                1
            }
        };
        self.waiting.fetch_sub(bytes, Ordering::AcqRel);
        self.progress.send_modify(|p| {
            p.written += count;
            p.failures += failed;
        });
    }
}

/// Moves records already waiting into `batch`, up to a batch.
fn take_ready(rx: &mut mpsc::Receiver<LogRecord>, batch: &mut Vec<LogRecord>) {
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(record) => batch.push(record),
            Err(_) => break,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
