//! The channel that carries log records from instances to the log writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use stratus_store::LogRecord;
use tokio::sync::mpsc;

/// Sends log records without ever waiting: when the writer falls behind and
/// the channel is full, records are dropped and counted rather than slowing
/// invocations down.
#[derive(Debug, Clone)]
pub struct LogSender {
    tx: mpsc::Sender<LogRecord>,
    dropped: Arc<AtomicU64>,
}

impl LogSender {
    pub fn new(capacity: usize) -> (LogSender, mpsc::Receiver<LogRecord>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            LogSender {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    pub fn send(&self, record: LogRecord) {
        if self.tx.try_send(record).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "log writer is behind; dropping log records");
            }
        }
    }
}
