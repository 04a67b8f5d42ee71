//! Writes log records to the store in batches, off the invocation path, and
//! applies the retention limits.

use std::sync::Arc;
use std::time::Duration;

use stratus_store::{LogRecord, Store};
use tokio::sync::{mpsc, oneshot};

const BATCH: usize = 2048;
/// When records keep coming (the last write was less than this long ago),
/// the writer waits this long for more before writing, so that a busy
/// server commits a few large batches rather than one per invocation.
const LINGER: Duration = Duration::from_millis(10);

pub(crate) struct LogWriter {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    pub flush: LogFlush,
}

/// Asks the writer to store what it has been sent so far: a log query made
/// after a response sees the records sent before that response.
#[derive(Clone)]
pub(crate) struct LogFlush(mpsc::Sender<oneshot::Sender<()>>);

impl LogFlush {
    /// Waits (at most a second) until records sent before the call are stored.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.0.send(ack).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
        }
    }
}

pub(crate) fn spawn(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<LogRecord>,
    retention: Duration,
    max_bytes: u64,
) -> LogWriter {
    let (stop, mut stop_rx) = oneshot::channel();
    let (flush_tx, mut flush_rx) = mpsc::channel::<oneshot::Sender<()>>(64);
    let task = tokio::spawn(async move {
        let mut trim = tokio::time::interval(Duration::from_secs(60));
        let mut batch = Vec::with_capacity(BATCH);
        let mut last_write = tokio::time::Instant::now() - LINGER;
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 { break; }
                    if last_write.elapsed() < LINGER && batch.len() < BATCH {
                        tokio::time::sleep(LINGER).await;
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(record) => batch.push(record),
                                Err(_) => break,
                            }
                        }
                    }
                    write(&*store, &mut batch).await;
                    last_write = tokio::time::Instant::now();
                }
                Some(ack) = flush_rx.recv() => {
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(record) => batch.push(record),
                            Err(_) => break,
                        }
                    }
                    write(&*store, &mut batch).await;
                    let _ = ack.send(());
                }
                _ = trim.tick() => {
                    let before = crate::now_ms() - retention.as_millis() as i64;
                    match store.trim_logs(before, max_bytes).await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::debug!(deleted, "trimmed logs"),
                        Err(err) => tracing::warn!(error = %err, "cannot trim logs"),
                    }
                }
                _ = &mut stop_rx => {
                    // Whatever is already queued is written before stopping.
                    while let Ok(record) = rx.try_recv() {
                        batch.push(record);
                        if batch.len() >= BATCH {
                            write(&*store, &mut batch).await;
                        }
                    }
                    write(&*store, &mut batch).await;
                    break;
                }
            }
        }
    });
    LogWriter {
        stop,
        task,
        flush: LogFlush(flush_tx),
    }
}

async fn write(store: &dyn Store, batch: &mut Vec<LogRecord>) {
    if batch.is_empty() {
        return;
    }
    if let Err(err) = store.append_logs(std::mem::take(batch)).await {
        tracing::warn!(error = %err, "cannot store log records");
    }
}

impl LogWriter {
    pub async fn flush_and_stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}
