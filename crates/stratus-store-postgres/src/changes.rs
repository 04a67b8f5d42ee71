//! Word of changes: a connection of its own LISTENs on the channel that
//! the triggers on apps, keys and credentials NOTIFY at commit, and counts
//! what it hears. A lost connection counts too (word may have been missed
//! while it was down), and is made again.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::schema::CHANGES;

/// Pause before listening again after the connection was lost.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// How often the listening connection is checked: a connection cut
/// without a word (a dead peer) is noticed within this and
/// [`PROBE_TIMEOUT`].
const PROBE_EVERY: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The count of what was heard, listening from the first wait on.
pub(crate) struct Feed {
    config: tokio_postgres::Config,
    heard: OnceLock<watch::Receiver<u64>>,
}

impl Feed {
    pub fn new(config: tokio_postgres::Config) -> Feed {
        Feed {
            config,
            heard: OnceLock::new(),
        }
    }

    /// Waits until the count passes `seen`; the count then.
    pub async fn changed_since(&self, seen: u64) -> u64 {
        let mut heard = self
            .heard
            .get_or_init(|| listen(self.config.clone()))
            .clone();
        let count = heard
            .wait_for(|count| *count > seen)
            .await
            .map(|count| *count);
        match count {
            Ok(count) => count,
            // The listener is gone (the runtime is shutting down).
            Err(_) => std::future::pending().await,
        }
    }
}

/// Starts listening, for as long as anyone waits for word.
fn listen(config: tokio_postgres::Config) -> watch::Receiver<u64> {
    let (count, heard) = watch::channel(0u64);
    let count = Arc::new(count);
    tokio::spawn(async move {
        let mut failing = false;
        while !count.is_closed() {
            match listen_once(&config, &count).await {
                Ok(()) => {}
                Err(err) if !failing => {
                    failing = true;
                    tracing::warn!(%err, "lost the store's word of changes; reading it again every few seconds until it is back");
                }
                Err(_) => {}
            }
            // Whatever was said meanwhile was missed.
            count.send_modify(|n| *n += 1);
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    });
    heard
}

/// Listens on one connection until it is lost.
async fn listen_once(
    config: &tokio_postgres::Config,
    count: &Arc<watch::Sender<u64>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let heard = count.clone();
    let mut driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => heard.send_modify(|n| *n += 1),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANGES}")).await?;
    // Anything said before the LISTEN took effect was missed.
    count.send_modify(|n| *n += 1);
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.tick().await;
    loop {
        tokio::select! {
            ended = &mut driver => {
                return match ended {
                    Ok(result) => result,
                    Err(_) => Ok(()),
                };
            }
            _ = probe.tick() => {
                match tokio::time::timeout(PROBE_TIMEOUT, client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Err(err),
                    // A peer that says nothing: drop the connection.
                    Err(_) => {
                        driver.abort();
                        return Ok(());
                    }
                }
            }
            () = count.closed() => {
                driver.abort();
                return Ok(());
            }
        }
    }
}
