//! `queue` triggers: the app's named queues, each drained in batches by
//! its consumer function.
//!
//! A message is committed before `send` returns. A consumer receives up to
//! `batch_size` visible messages, hiding them for the queue's
//! `visibility_timeout` (plus the batch window), waits up to `batch_window`
//! for a fuller batch, and invokes its function with
//! `{"Records": [CloudEvent, ...]}`. If the function succeeds, the batch is
//! deleted, except the messages it names in a partial-batch response
//! (`{"batchItemFailures": [{"itemIdentifier": ID}]}`, as Lambda's SQS
//! integration reads it). A failed message comes back after a backoff,
//! until the consumer's `retries` are used up or it is older than the
//! queue's `retention`; it then moves to the consumer's dead letters, and
//! a redrive sends it back to its queue. Batches run concurrently up to the
//! consumer's `max_instances`. A node that dies mid-batch leaves its
//! messages hidden until the visibility timeout runs out; they are then
//! delivered again (at least once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use stratus_logs::Logs;
use stratus_manifest::{AppSpec, EventFormat, Trigger};
use stratus_scheduler::Scheduler;
use stratus_store::{MessageRecord, MessageSettlement, NewMessage, Store};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use super::{Source, cloudevent, shapes};
use crate::events::{Attempt, attempt, backoff_ms, logged};

/// The CloudEvents `type` of a queue's messages.
pub(crate) const EVENT_TYPE: &str = "stratus.queue.message";
/// Longest a consumer sleeps without looking at its queue (other nodes
/// send too).
const IDLE_LOOK_MS: i64 = 1000;

/// The event of one batch of queue `queue` of `app`, in `region`, in the
/// shape `format` names: `{"Records": [...]}`.
pub(crate) fn batch_event(
    batch: &[MessageRecord],
    format: EventFormat,
    (region, app, queue): (&str, &str, &str),
) -> Value {
    let source = format!("/apps/{app}/queues/{queue}");
    let records: Vec<Value> = batch
        .iter()
        .map(|m| {
            if format == EventFormat::Sqs {
                return shapes::sqs_record(m, region, app, queue);
            }
            let mut event = cloudevent::from_bytes(
                &m.message_id,
                &source,
                EVENT_TYPE,
                m.sent_ms,
                None,
                &m.body,
            );
            event.insert("receivecount".into(), json!(m.receives));
            // The distributed tracing extension: the sender's context.
            if let Some(trace) = &m.trace {
                event.insert("traceparent".into(), json!(trace));
            }
            Value::Object(event)
        })
        .collect();
    json!({ "Records": records })
}

/// What a consumer runs with; a change restarts it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Consumer {
    app: String,
    queue: String,
    function: String,
    batch_size: u32,
    batch_window: Duration,
    visibility: Duration,
    retention: Duration,
    retries: u32,
    concurrency: u32,
    /// The batch's shape, and the region SQS records name.
    format: EventFormat,
    region: String,
}

struct Running {
    consumer: Consumer,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

pub(crate) struct Queues {
    store: Arc<dyn Store>,
    scheduler: Arc<Scheduler>,
    logs: Arc<dyn Logs>,
    /// The region that SQS-shaped records name.
    region: String,
    /// Consumers by app and queue.
    running: Mutex<HashMap<(String, String), Running>>,
    /// The queues each app declares.
    declared: Mutex<HashMap<String, HashSet<String>>>,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("app {app:?} declares no queue {queue:?}")]
    NoSuchQueue { app: String, queue: String },
    #[error(transparent)]
    Store(#[from] stratus_store::StoreError),
}

impl Queues {
    pub fn new(
        store: Arc<dyn Store>,
        scheduler: Arc<Scheduler>,
        logs: Arc<dyn Logs>,
        region: String,
    ) -> Arc<Queues> {
        Arc::new(Queues {
            store,
            scheduler,
            logs,
            region,
            running: Mutex::new(HashMap::new()),
            declared: Mutex::new(HashMap::new()),
        })
    }

    /// The queues `app` declares, sorted.
    pub fn declared(&self, app: &str) -> Vec<String> {
        let declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        let mut queues: Vec<String> = declared
            .get(app)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default();
        queues.sort();
        queues
    }

    /// The consumer function of `app`'s `queue`, if it has one.
    pub fn consumer(&self, app: &str, queue: &str) -> Option<String> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .get(&(app.to_owned(), queue.to_owned()))
            .map(|r| r.consumer.function.clone())
    }

    /// Sends messages to `app`'s `queue` in one transaction and returns
    /// their ids; when this returns they will be delivered.
    pub async fn send(
        &self,
        app: &str,
        queue: &str,
        bodies: Vec<Bytes>,
        source: stratus_store::Source,
        parent: Option<stratus_trace::Context>,
    ) -> Result<Vec<String>, SendError> {
        let known = {
            let declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
            declared.get(app).is_some_and(|q| q.contains(queue))
        };
        if !known {
            return Err(SendError::NoSuchQueue {
                app: app.to_owned(),
                queue: queue.to_owned(),
            });
        }
        let now = crate::now_ms();
        let trace = crate::traces::produce(
            self.scheduler.tracer(),
            parent,
            app,
            format!("send to queue {queue}"),
            stratus_trace::now_ns(),
        )
        .traceparent();
        let messages: Vec<NewMessage> = bodies
            .into_iter()
            .map(|body| NewMessage {
                app: app.to_owned(),
                queue: queue.to_owned(),
                body: body.to_vec(),
                message_id: uuid::Uuid::new_v4().to_string(),
                source: source.clone(),
                sent_ms: now,
                visible_ms: now,
                trace: Some(trace.clone()),
            })
            .collect();
        let ids = messages.iter().map(|m| m.message_id.clone()).collect();
        self.store.send_messages(messages).await?;
        self.wake(app, queue);
        Ok(ids)
    }

    /// Tells the consumer of `app`'s `queue` that messages arrived.
    pub fn wake(&self, app: &str, queue: &str) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.get(&(app.to_owned(), queue.to_owned())) {
            r.wake.notify_one();
        }
    }
}

impl Source for Queues {
    fn reconcile(&self, app: &str, spec: Option<&AppSpec>) {
        let mut wanted = HashMap::new();
        if let Some(spec) = spec {
            for f in spec.functions.values() {
                for trigger in &f.events {
                    let Trigger::Queue(t) = trigger else { continue };
                    let Some(queue) = spec.queues.get(&t.queue) else {
                        continue;
                    };
                    let consumer = Consumer {
                        app: app.to_owned(),
                        queue: t.queue.clone(),
                        function: f.name.clone(),
                        batch_size: t.batch_size,
                        batch_window: t.batch_window,
                        visibility: queue.visibility_timeout,
                        retention: queue.retention,
                        retries: f.retries,
                        concurrency: f.max_instances.max(1),
                        format: t.format,
                        region: self.region.clone(),
                    };
                    wanted.insert((app.to_owned(), t.queue.clone()), consumer);
                }
            }
        }
        {
            let mut declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
            match spec {
                Some(spec) => {
                    declared.insert(app.to_owned(), spec.queues.keys().cloned().collect());
                }
                None => {
                    declared.remove(app);
                }
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|key, r| {
            let keep = key.0 != app || wanted.get(key) == Some(&r.consumer);
            if !keep {
                r.task.abort();
            }
            keep
        });
        for (key, consumer) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let wake = Arc::new(Notify::new());
            let worker = Worker {
                store: self.store.clone(),
                scheduler: self.scheduler.clone(),
                logs: self.logs.clone(),
                consumer: consumer.clone(),
                wake: wake.clone(),
            };
            let task = tokio::spawn(worker.run());
            running.insert(
                key,
                Running {
                    consumer,
                    wake,
                    task,
                },
            );
        }
    }

    fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for (_, r) in running.drain() {
            r.task.abort();
        }
    }
}

struct Worker {
    store: Arc<dyn Store>,
    scheduler: Arc<Scheduler>,
    logs: Arc<dyn Logs>,
    consumer: Consumer,
    wake: Arc<Notify>,
}

impl Worker {
    async fn run(self) {
        let this = Arc::new(self);
        let c = &this.consumer;
        let slots = Arc::new(Semaphore::new(c.concurrency as usize));
        // Hidden long enough for the window and the handling both.
        let hide_ms = (c.visibility + c.batch_window).as_millis() as i64;
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut batch = this.receive(c.batch_size, hide_ms).await;
            if batch.is_empty() {
                drop(permit);
                let now = crate::now_ms();
                let pause = match this.store.next_visible_ms(&c.app, &c.queue).await {
                    Ok(Some(at)) => (at - now).clamp(1, IDLE_LOOK_MS),
                    _ => IDLE_LOOK_MS,
                };
                let _ =
                    tokio::time::timeout(Duration::from_millis(pause as u64), this.wake.notified())
                        .await;
                continue;
            }
            // Wait up to the window for a fuller batch.
            let deadline = tokio::time::Instant::now() + c.batch_window;
            while batch.len() < c.batch_size as usize && tokio::time::Instant::now() < deadline {
                let left = deadline - tokio::time::Instant::now();
                let _ = tokio::time::timeout(
                    left.min(Duration::from_millis(IDLE_LOOK_MS as u64)),
                    this.wake.notified(),
                )
                .await;
                let more = this
                    .receive(c.batch_size - batch.len() as u32, hide_ms)
                    .await;
                batch.extend(more);
            }
            let worker = this.clone();
            tokio::spawn(async move {
                worker.deliver(batch).await;
                drop(permit);
            });
        }
    }

    async fn receive(&self, limit: u32, hide_ms: i64) -> Vec<MessageRecord> {
        let c = &self.consumer;
        match self
            .store
            .receive_messages(&c.app, &c.queue, crate::now_ms(), limit, hide_ms)
            .await
        {
            Ok(batch) => batch,
            Err(err) => {
                tracing::error!(app = c.app, queue = c.queue, %err, "cannot receive messages");
                tokio::time::sleep(Duration::from_millis(IDLE_LOOK_MS as u64)).await;
                Vec::new()
            }
        }
    }

    async fn deliver(&self, batch: Vec<MessageRecord>) {
        let c = &self.consumer;
        let payload =
            Bytes::from(batch_event(&batch, c.format, (&c.region, &c.app, &c.queue)).to_string());
        let request_id = uuid::Uuid::new_v4().to_string();
        // The batch continues the first message's trace, and links to
        // every message's producer.
        let producers: Vec<_> = batch
            .iter()
            .filter_map(|m| crate::traces::carried(m.trace.as_deref()))
            .collect();
        let mut trace = stratus_scheduler::Trace::under(producers.first().copied());
        trace.links = producers;
        // The ids of the messages that failed, and why.
        let ran = attempt(
            &self.scheduler,
            &c.app,
            &c.function,
            payload,
            &request_id,
            trace,
        )
        .await;
        let (failed, error): (HashSet<&str>, String) = match logged(&*self.logs, ran).await {
            // The messages come back when their visibility runs out.
            Attempt::Stopping | Attempt::Gone(_) => return,
            Attempt::Ran(Ok(response)) => match partial_failures(&response, &batch) {
                Some(ids) => (ids, "reported in batchItemFailures".to_owned()),
                None => (
                    batch.iter().map(|m| m.message_id.as_str()).collect(),
                    "the response's batchItemFailures names a message not in the batch".to_owned(),
                ),
            },
            Attempt::Ran(Err((kind, message))) => (
                batch.iter().map(|m| m.message_id.as_str()).collect(),
                format!("{kind}: {message}"),
            ),
        };
        let now = crate::now_ms();
        let retention = c.retention.as_millis() as i64;
        let settlements: Vec<MessageSettlement> = batch
            .iter()
            .map(|m| {
                if !failed.contains(m.message_id.as_str()) {
                    return MessageSettlement::Done {
                        id: m.id,
                        receives: m.receives,
                    };
                }
                let next = now + backoff_ms(m.receives);
                if m.receives > c.retries || next - m.sent_ms > retention {
                    tracing::warn!(app = c.app, queue = c.queue, message = m.message_id, %error, "message moved to the dead letters");
                    MessageSettlement::Dead {
                        id: m.id,
                        receives: m.receives,
                        function: c.function.clone(),
                        failed_ms: now,
                        error: error.clone(),
                    }
                } else {
                    MessageSettlement::Retry {
                        id: m.id,
                        receives: m.receives,
                        visible_ms: next,
                        error: error.clone(),
                    }
                }
            })
            .collect();
        if let Err(err) = self.store.settle_messages(settlements).await {
            // The messages come back when their visibility runs out.
            tracing::error!(app = c.app, queue = c.queue, %err, "cannot settle messages");
        }
        self.wake.notify_one();
    }
}

/// The messages a successful response names as failed: none for a
/// response without `batchItemFailures`; `None` if it names a message that
/// is not in the batch (the whole batch then counts as failed, as on
/// Lambda).
fn partial_failures<'a>(response: &Value, batch: &'a [MessageRecord]) -> Option<HashSet<&'a str>> {
    let Some(items) = response.get("batchItemFailures") else {
        return Some(HashSet::new());
    };
    let Some(items) = items.as_array() else {
        return if items.is_null() {
            Some(HashSet::new())
        } else {
            None
        };
    };
    let mut failed = HashSet::new();
    for item in items {
        let id = item.get("itemIdentifier").and_then(Value::as_str)?;
        let message = batch.iter().find(|m| m.message_id == id)?;
        failed.insert(message.message_id.as_str());
    }
    Some(failed)
}
