//! Per-app quotas on what waits in the store: asynchronous events and
//! queued messages, each bounded in count and in bytes.
//!
//! The usage is read from the store every [`REFRESH`] and grows in memory
//! with each admission in between, so it never undercounts what was
//! admitted since the last reading (settled events and deleted messages
//! count until the next one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use stratus_store::Store;

use crate::api::ApiError;

const REFRESH: Duration = Duration::from_secs(5);

/// The quotas, per app; each default is written once, as its flag's.
#[derive(Debug, Clone, clap::Args)]
pub struct QuotaSettings {
    /// Most asynchronous events one app may have waiting (429 beyond)
    #[arg(long, default_value_t = 100_000)]
    pub app_max_queued_events: u64,
    /// Most bytes of asynchronous event payloads one app may have waiting
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub app_max_queued_event_bytes: u64,
    /// Most messages one app's queues may hold together (429 beyond)
    #[arg(long, default_value_t = 100_000)]
    pub app_max_queued_messages: u64,
    /// Most bytes of messages one app's queues may hold together
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub app_max_queued_message_bytes: u64,
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Events,
    Messages,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    count: u64,
    bytes: u64,
}

pub(crate) struct Quotas {
    settings: QuotaSettings,
    usage: Mutex<HashMap<(String, Kind), Usage>>,
}

impl Quotas {
    pub fn new(settings: QuotaSettings) -> Arc<Quotas> {
        Arc::new(Quotas {
            settings,
            usage: Mutex::default(),
        })
    }

    fn limits(&self, kind: Kind) -> (u64, u64, &'static str) {
        let s = &self.settings;
        match kind {
            Kind::Events => (
                s.app_max_queued_events,
                s.app_max_queued_event_bytes,
                "asynchronous events waiting (--app-max-queued-events, --app-max-queued-event-bytes); let them be handled first",
            ),
            Kind::Messages => (
                s.app_max_queued_messages,
                s.app_max_queued_message_bytes,
                "messages in its queues (--app-max-queued-messages, --app-max-queued-message-bytes); consume some first",
            ),
        }
    }

    /// Counts `count` more of `kind`, `bytes` in all, for `app`, or says
    /// why the app may not have them.
    pub fn admit(&self, app: &str, kind: Kind, count: u64, bytes: u64) -> Result<(), ApiError> {
        let (max_count, max_bytes, what) = self.limits(kind);
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let used = usage.entry((app.to_owned(), kind)).or_default();
        if used.count + count > max_count || used.bytes + bytes > max_bytes {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "app {app} holds {} {what}: at most {max_count} and {max_bytes} bytes",
                    used.count
                ),
            )
            .retrying_after(REFRESH.as_secs()));
        }
        used.count += count;
        used.bytes += bytes;
        Ok(())
    }

    /// Reads the usage from the store.
    pub async fn refresh(&self, store: &dyn Store) {
        match store.backlogs().await {
            Ok(backlogs) => {
                let mut usage = HashMap::new();
                for b in backlogs {
                    usage.insert(
                        (b.app.clone(), Kind::Events),
                        Usage {
                            count: b.events,
                            bytes: b.event_bytes,
                        },
                    );
                    usage.insert(
                        (b.app, Kind::Messages),
                        Usage {
                            count: b.messages,
                            bytes: b.message_bytes,
                        },
                    );
                }
                *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = usage;
            }
            Err(err) => tracing::warn!(%err, "cannot read what apps hold queued"),
        }
    }

    /// Refreshes the usage until the returned task is aborted.
    pub fn start(self: &Arc<Self>, store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
        let quotas = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REFRESH);
            loop {
                every.tick().await;
                quotas.refresh(&*store).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_is_held_to_its_count_and_bytes_and_others_are_not() {
        let quotas = Quotas::new(QuotaSettings {
            app_max_queued_events: 3,
            app_max_queued_event_bytes: 100,
            app_max_queued_messages: 10,
            app_max_queued_message_bytes: 10,
        });
        quotas.admit("a", Kind::Events, 2, 20).unwrap();
        let err = quotas.admit("a", Kind::Events, 2, 20).unwrap_err();
        assert!(
            format!("{err:?}").contains("--app-max-queued-events"),
            "{err:?}"
        );
        quotas.admit("a", Kind::Events, 1, 20).unwrap();
        assert!(
            quotas.admit("b", Kind::Events, 3, 100).is_ok(),
            "apps apart"
        );
        assert!(quotas.admit("a", Kind::Messages, 1, 11).is_err(), "bytes");
        assert!(quotas.admit("a", Kind::Messages, 1, 10).is_ok());
    }
}
