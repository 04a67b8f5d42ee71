//! Log records batched into a [`LogTable`], off the invocation path, with
//! the retention limits applied.
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
use stratus_store::{LogBudget, LogQuery, LogRecord, StoredLog};
use tokio::sync::{mpsc, oneshot, watch};

use crate::table::{LogTable, TableError};
use crate::{Logs, LogsError, Reserve, TrimTurn, now_ms};

const BATCH: usize = 2048;
/// When records keep coming (the last write was less than this long ago),
/// the writer waits this long for more before writing, so that a busy
/// server commits a few large batches rather than one per invocation.
const LINGER: Duration = Duration::from_millis(10);
/// How often old records are trimmed, at the least.
const TRIM_EVERY: Duration = Duration::from_secs(60);
/// Records are also trimmed once this share of the budget (and at least
/// [`TRIM_AFTER_MIN`]) was written since the last trim, so no writer gets
/// far past the budget between trims.
const TRIM_AFTER_SHARE: u64 = 10;
const TRIM_AFTER_MIN: u64 = 1 << 20;
/// Most bytes of records stored in one transaction.
const APPEND_BYTES: usize = 2 << 20;
/// Records written since the last trim are trimmed this long after the
/// last write, so that a burst leaves nothing past the budget for long.
const TRIM_AFTER_BURST: Duration = Duration::from_secs(1);
/// How often the reserve is looked after while nothing is written.
const ROOM_CHECK: Duration = Duration::from_secs(5);
/// How often, while records are written, the reserve is looked after.
const ROOM_EVERY: Duration = Duration::from_secs(1);

/// How long records are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Records older than this are deleted.
    pub max_age: Duration,
    /// The oldest records are deleted beyond this many bytes in all.
    pub max_bytes: u64,
    /// An app's oldest records are deleted beyond this many bytes of its own.
    pub max_bytes_per_app: u64,
}

impl Retention {
    fn budget(&self) -> LogBudget {
        LogBudget {
            total: self.max_bytes,
            per_app: self.max_bytes_per_app,
        }
    }
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

/// [`Logs`] on a [`LogTable`]: appended records go through a bounded
/// channel to a task that writes them in batches.
pub struct BatchedLogs {
    table: Arc<dyn LogTable>,
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

impl BatchedLogs {
    /// Starts the writer; what `buffer` allows may wait for it before
    /// `append` drops records.
    /// On a full disk, `reserve` (when given) is released so that trimming
    /// can make room.
    /// Retention is applied when `turn` (if any) says it is this writer's.
    pub fn start(
        table: Arc<dyn LogTable>,
        buffer: Buffer,
        retention: Retention,
        reserve: Option<Reserve>,
        turn: Option<Arc<dyn TrimTurn>>,
    ) -> Arc<BatchedLogs> {
        let (records, rx) = mpsc::channel(buffer.records.max(1));
        let (progress_tx, progress) = watch::channel(Progress::default());
        let (stop, stop_rx) = oneshot::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            table: table.clone(),
            progress: progress_tx,
            waiting: waiting.clone(),
            retention,
            reserve,
            turn,
        };
        let task = tokio::spawn(writer.run(rx, stop_rx));
        Arc::new(BatchedLogs {
            table,
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
impl Logs for BatchedLogs {
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
        Ok(self.table.query(query).await?)
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Writer {
    table: Arc<dyn LogTable>,
    progress: watch::Sender<Progress>,
    waiting: Arc<AtomicUsize>,
    retention: Retention,
    reserve: Option<Reserve>,
    turn: Option<Arc<dyn TrimTurn>>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<LogRecord>, mut stop_rx: oneshot::Receiver<()>) {
        let mut trim = tokio::time::interval(TRIM_EVERY);
        let mut batch = Vec::with_capacity(BATCH);
        let mut last_write = tokio::time::Instant::now() - LINGER;
        let trim_after = (self.retention.max_bytes / TRIM_AFTER_SHARE).max(TRIM_AFTER_MIN);
        let mut since_trim = 0u64;
        let mut last_room = tokio::time::Instant::now();
        let mut room = tokio::time::interval(ROOM_CHECK);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 { break; }
                    if last_write.elapsed() < LINGER && batch.len() < BATCH {
                        tokio::time::sleep(LINGER).await;
                        take_ready(&mut rx, &mut batch);
                    }
                    since_trim += self.write(&mut batch).await;
                    last_write = tokio::time::Instant::now();
                    if last_room.elapsed() >= ROOM_EVERY {
                        last_room = last_write;
                        self.make_room(now_ms() - self.retention.max_age.as_millis() as i64).await;
                    }
                    if since_trim >= trim_after {
                        since_trim = 0;
                        self.retain().await;
                    }
                }
                _ = trim.tick() => {
                    since_trim = 0;
                    self.retain().await;
                }
                // A reserve given up comes back as soon as there is room.
                _ = room.tick() => {
                    self.make_room(now_ms() - self.retention.max_age.as_millis() as i64).await;
                }
                // A burst has ended: what it wrote past the budget goes now.
                () = tokio::time::sleep(TRIM_AFTER_BURST), if since_trim > 0 => {
                    since_trim = 0;
                    self.retain().await;
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

    /// Stores `batch` a few megabytes at a time, each in a transaction of
    /// its own: a large transaction needs as much room in the journal.
    /// `stored` is how many of the batch are stored, and where to go on.
    async fn append(&self, batch: &[LogRecord], stored: &mut usize) -> Result<(), TableError> {
        while *stored < batch.len() {
            let start = *stored;
            let mut end = start;
            let mut bytes = 0;
            while end < batch.len() && (end == start || bytes < APPEND_BYTES) {
                bytes += size_of(&batch[end]);
                end += 1;
            }
            self.table.append(batch[start..end].to_vec()).await?;
            *stored = end;
        }
        Ok(())
    }

    /// Applies retention, when it is this writer's turn.
    async fn retain(&self) {
        if let Some(turn) = &self.turn
            && !turn.mine().await
        {
            return;
        }
        self.trim(self.retention.budget()).await;
    }

    /// Trims to `budget`; on a full disk, releases the reserve first so
    /// that the trim can run. Then makes the reserve again where there is
    /// room.
    async fn trim(&self, budget: LogBudget) {
        let before = now_ms() - self.retention.max_age.as_millis() as i64;
        let mut result = self.table.trim(before, budget).await;
        if let Err(err) = &result
            && err.is_disk_full()
            && self.release_reserve()
        {
            result = self.table.trim(before, budget).await;
        }
        match result {
            Ok(trimmed) if trimmed.records > 0 => tracing::debug!(
                records = trimmed.records,
                bytes = trimmed.bytes,
                reclaimed = trimmed.reclaimed,
                "trimmed logs"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot trim logs"),
        }
        self.make_room(before).await;
    }

    /// Puts the reserve back in place, trimming logs to make room for it
    /// where the disk filled up within the log budget.
    async fn make_room(&self, before: i64) {
        let Some(reserve) = &self.reserve else {
            return;
        };
        if reserve.held() {
            return;
        }
        if !reserve.restore() {
            // Room for the reserve, and as much again.
            let wanted = reserve.bytes().saturating_mul(2);
            let (Some(free), Ok(stored)) = (reserve.free(), self.table.bytes().await) else {
                return;
            };
            let cut = wanted.saturating_sub(free);
            if cut == 0 || stored == 0 {
                return;
            }
            let budget = self.retention.budget();
            let trimmed = self
                .table
                .trim(
                    before,
                    LogBudget {
                        total: budget.total.min(stored.saturating_sub(cut)),
                        per_app: budget.per_app,
                    },
                )
                .await;
            if let Err(err) = trimmed {
                tracing::warn!(error = %err, "cannot trim logs to make room on the disk");
            }
            if !reserve.restore() {
                return;
            }
        }
        tracing::info!("the disk has room again: the reserve is back in place");
    }

    fn release_reserve(&self) -> bool {
        let released = self.reserve.as_ref().is_some_and(Reserve::release);
        if released {
            tracing::warn!(
                "the disk is full: released the reserve and trimming logs to half of what is stored, to make room"
            );
        }
        released
    }

    /// Writes `batch` and counts it as written, or as lost when the store
    /// fails; returns the bytes written. On a full disk, makes room (the
    /// reserve, and logs trimmed to half their budget) and tries once more.
    async fn write(&self, batch: &mut Vec<LogRecord>) -> u64 {
        if batch.is_empty() {
            return 0;
        }
        let count = batch.len() as u64;
        let bytes: usize = batch.iter().map(size_of).sum();
        let mut done = 0;
        // Logs never take the last of the disk: with the reserve given up,
        // they make room for it first, and are dropped while they cannot.
        let mut result = match &self.reserve {
            Some(reserve) if !reserve.held() => {
                self.make_room(now_ms() - self.retention.max_age.as_millis() as i64)
                    .await;
                if reserve.held() {
                    self.append(batch, &mut done).await
                } else {
                    Err(TableError::Full(
                        "the disk is full: log records dropped until there is room",
                    ))
                }
            }
            _ => self.append(batch, &mut done).await,
        };
        if let Err(err) = &result
            && err.is_disk_full()
        {
            self.release_reserve();
            // Half of what is stored, whatever the budget: the disk filled
            // before the budget did.
            let stored = self.table.bytes().await.unwrap_or(0);
            let budget = self.retention.budget();
            self.trim(LogBudget {
                total: budget.total.min(stored) / 2,
                per_app: budget.per_app.min(stored) / 2,
            })
            .await;
            // The rest only once the reserve is back: logs must not take
            // the room a trim needs.
            self.make_room(now_ms() - self.retention.max_age.as_millis() as i64)
                .await;
            if self.reserve.as_ref().is_none_or(Reserve::held) {
                result = self.append(batch, &mut done).await;
            }
        }
        batch.clear();
        let failed = match result {
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
        if failed == 0 { bytes as u64 } else { 0 }
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
