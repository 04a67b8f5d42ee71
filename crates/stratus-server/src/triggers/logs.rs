//! `events: - logs: { pattern, from }`: a function receives, in batches,
//! the log lines of its app's other functions and services that contain a
//! pattern (the log-service trigger).
//!
//! One follower per trigger reads the log store every `batch_window`
//! while its node holds the trigger's lease (one node in a cluster, where
//! the log store is shared). Its cursor is the id of the last line it
//! handed on, kept with the schedules' slots (`Schedules::fire_schedule`):
//! a batch's event and the cursor past it commit in one transaction, so a
//! crash or a move of the lease neither loses lines nor delivers a batch
//! twice. A new trigger starts after the newest line there is: lines
//! written before it was deployed are not delivered. Only what the code
//! wrote (stdout, stderr) and what the platform said about it count, not
//! invocation reports or request records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use stratus_logs::Logs;
use stratus_manifest::{AppSpec, LogsTrigger, Trigger};
use stratus_store::{LogQuery, LogStream, NewEvent, Store};
use tokio::task::JoinHandle;

use super::Source;
use super::cloudevent;

/// The events' type.
pub(crate) const EVENT_TYPE: &str = "stratus.logs.lines";
/// How long a follower holds its lease after taking it.
const LEASE_MS: i64 = 30_000;

type Key = (String, String, String);

pub(crate) struct LogTriggers {
    store: Arc<dyn Store>,
    logs: Arc<dyn Logs>,
    /// Tells the event dispatcher that an event was queued.
    wake: Arc<dyn Fn() + Send + Sync>,
    /// This node, as the holder of followers' leases.
    node: String,
    running: Mutex<HashMap<Key, JoinHandle<()>>>,
}

impl LogTriggers {
    pub fn new(
        store: Arc<dyn Store>,
        logs: Arc<dyn Logs>,
        wake: Arc<dyn Fn() + Send + Sync>,
        node: String,
    ) -> Arc<LogTriggers> {
        Arc::new(LogTriggers {
            store,
            logs,
            wake,
            node,
            running: Mutex::new(HashMap::new()),
        })
    }
}

/// What identifies a trigger's cursor across deploys: its pattern and
/// sources (changing them starts after the newest line again).
fn cursor_name(t: &LogsTrigger) -> String {
    format!("logs:{}@{}", t.pattern, t.from.join(","))
}

impl Source for LogTriggers {
    fn reconcile(&self, app: &str, spec: Option<&AppSpec>) {
        let mut wanted: HashMap<Key, (String, LogsTrigger)> = HashMap::new();
        for f in spec.iter().flat_map(|spec| spec.functions.values()) {
            for trigger in &f.events {
                if let Trigger::Logs(t) = trigger {
                    let key = (
                        app.to_owned(),
                        f.name.clone(),
                        format!("{}#{}#{:?}", cursor_name(t), t.batch_size, t.batch_window),
                    );
                    wanted.insert(key, (f.name.clone(), t.clone()));
                }
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|key, task| {
            let keep = key.0 != app || wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (function, trigger)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let follower = Follower {
                store: self.store.clone(),
                logs: self.logs.clone(),
                wake: self.wake.clone(),
                node: self.node.clone(),
                app: app.to_owned(),
                function,
                trigger,
            };
            running.insert(key, tokio::spawn(follower.run()));
        }
    }

    fn stop(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for (_, task) in running.drain() {
            task.abort();
        }
    }
}

struct Follower {
    store: Arc<dyn Store>,
    logs: Arc<dyn Logs>,
    wake: Arc<dyn Fn() + Send + Sync>,
    node: String,
    app: String,
    function: String,
    trigger: LogsTrigger,
}

impl Follower {
    async fn run(self) {
        let cursor = cursor_name(&self.trigger);
        let lease = format!("{cursor}:{}/{}", self.app, self.function);
        loop {
            tokio::time::sleep(self.trigger.batch_window).await;
            let now = crate::now_ms();
            match self
                .store
                .take_lease(&lease, &self.node, now + LEASE_MS, now)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(err) => {
                    tracing::warn!(%err, app = self.app, function = self.function, "logs trigger: cannot take its lease");
                    continue;
                }
            }
            // Batch after batch while there are more.
            loop {
                match self.step(&cursor).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(err) => {
                        tracing::warn!(%err, app = self.app, function = self.function, "logs trigger: cannot read or queue lines");
                        break;
                    }
                }
            }
        }
    }

    /// Hands on the next batch; whether a whole batch was read (there may
    /// be more).
    async fn step(&self, cursor: &str) -> anyhow::Result<bool> {
        let (app, function) = (&self.app, &self.function);
        let Some(after) = self.store.last_schedule_slot(app, function, cursor).await? else {
            // A new trigger: it starts after the newest line there is.
            let newest = self
                .logs
                .query(LogQuery {
                    app: Some(app.clone()),
                    limit: 1,
                    ..LogQuery::default()
                })
                .await?;
            let start = newest.last().map_or(0, |l| l.id);
            self.store
                .fire_schedule(app, function, cursor, start, None)
                .await?;
            return Ok(false);
        };
        let limit = self.trigger.batch_size;
        let only = match self.trigger.from.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        let read = self
            .logs
            .query(LogQuery {
                app: Some(app.clone()),
                function: only,
                after_id: Some(after),
                contains: Some(self.trigger.pattern.clone()),
                limit,
                ..LogQuery::default()
            })
            .await?;
        let Some(last) = read.last().map(|l| l.id) else {
            return Ok(false);
        };
        let from = &self.trigger.from;
        let lines: Vec<serde_json::Value> = read
            .iter()
            .filter(|l| {
                let r = &l.record;
                matches!(
                    r.stream,
                    LogStream::Stdout | LogStream::Stderr | LogStream::Platform
                ) && r.function != *function
                    && (from.is_empty() || from.contains(&r.function))
            })
            .map(|l| {
                let r = &l.record;
                json!({
                    "id": l.id,
                    "time": cloudevent::rfc3339(r.ts_ms),
                    "function": r.function,
                    "version": r.version,
                    "instance": r.instance,
                    "request_id": r.request_id,
                    "stream": r.stream.as_str(),
                    "message": r.message,
                })
            })
            .collect();
        let event = (!lines.is_empty()).then(|| {
            let now = crate::now_ms();
            let id = format!("{app}/{function}/{cursor}/{last}");
            let event = cloudevent::from_json(
                &id,
                &format!("/apps/{app}/logs"),
                EVENT_TYPE,
                now,
                None,
                json!({ "pattern": self.trigger.pattern, "lines": lines }),
            );
            NewEvent {
                app: app.clone(),
                function: function.clone(),
                payload: serde_json::Value::Object(event).to_string().into_bytes(),
                request_id: id,
                source: stratus_store::Source::Logs,
                created_ms: now,
                not_before_ms: now,
                trace: None,
            }
        });
        let queued = event.is_some();
        // The cursor moves past every line read, handed on or not.
        if self
            .store
            .fire_schedule(app, function, cursor, last, event)
            .await?
            && queued
        {
            (self.wake)();
        }
        Ok(read.len() as u32 == limit)
    }
}
