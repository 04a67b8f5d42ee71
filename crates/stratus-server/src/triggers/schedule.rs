//! `schedule` triggers: a cron expression or a rate fires the function once
//! per slot.
//!
//! Every node runs a timer per schedule. When a slot comes, the timer
//! records it in the store and queues the event in one transaction, unless
//! a slot as late is already recorded: of several nodes (or a restarted
//! one) firing the same slot, one wins, so each slot fires once. The event
//! goes through the durable queue like any asynchronous invocation, so it
//! wakes a function scaled to zero and has its retries and dead letters.
//!
//! A slot is on time if it is handled within [`ON_TIME_MS`] of its time.
//! Slots found later than that (the server was down, or the machine was
//! suspended) are *missed*, and the schedule's `catch_up` decides: `skip`
//! records the latest as skipped without running it; `once` runs the
//! latest, once, with `"late": true` in its data. A new schedule starts
//! with its next slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use stratus_manifest::{AppSpec, CatchUp, EventFormat, ScheduleTrigger, Trigger};
use stratus_store::{NewEvent, Store};
use tokio::task::JoinHandle;

use super::{Clock, Source, cloudevent, shapes};

/// How late a slot may be handled and still count as on time.
const ON_TIME_MS: i64 = 60_000;
/// The CloudEvents `type` of a schedule's events.
pub(crate) const EVENT_TYPE: &str = "stratus.schedule.fired";

/// Identifies a running timer: app, function, and the trigger as declared
/// (a changed catch-up policy restarts it).
type TimerKey = (String, String, String);

/// The event of `schedule`'s slot `slot` (ms) for function `function` of
/// `app`, in `region`, in the shape the schedule's `format` names.
pub(crate) fn event(
    schedule: &ScheduleTrigger,
    id: &str,
    slot: i64,
    late: bool,
    (region, app, function): (&str, &str, &str),
) -> serde_json::Value {
    match schedule.format {
        EventFormat::EventBridge => shapes::eventbridge_scheduled(id, slot, region, app, function),
        EventFormat::Scf => shapes::scf_timer(slot, function),
        EventFormat::CloudEvents | EventFormat::Sqs | EventFormat::S3 => {
            let source = format!("/apps/{app}/functions/{function}/schedule");
            let data = json!({
                "schedule": schedule.expression,
                "timezone": schedule.timezone,
                "scheduledTime": cloudevent::rfc3339(slot),
                "late": late,
            });
            serde_json::Value::Object(cloudevent::from_json(
                id, &source, EVENT_TYPE, slot, None, data,
            ))
        }
    }
}

pub(crate) struct Schedules {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The region that EventBridge-shaped events name.
    region: String,
    /// Tells the event dispatcher that an event was queued.
    wake: Arc<dyn Fn() + Send + Sync>,
    timers: Mutex<HashMap<TimerKey, JoinHandle<()>>>,
    /// Counts fires and misses.
    metrics: stratus_metrics::Metrics,
    /// Records each fire as the root of a trace.
    tracer: stratus_trace::Tracer,
}

impl Schedules {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        wake: Arc<dyn Fn() + Send + Sync>,
        region: String,
        metrics: stratus_metrics::Metrics,
        tracer: stratus_trace::Tracer,
    ) -> Arc<Schedules> {
        Arc::new(Schedules {
            store,
            clock,
            region,
            wake,
            timers: Mutex::new(HashMap::new()),
            metrics,
            tracer,
        })
    }

    /// How many timers run, for tests.
    #[cfg(test)]
    fn timers(&self) -> usize {
        self.timers.lock().unwrap().len()
    }
}

impl Source for Schedules {
    fn reconcile(&self, app: &str, spec: Option<&AppSpec>) {
        let mut wanted: HashMap<TimerKey, (String, ScheduleTrigger)> = HashMap::new();
        for f in spec.iter().flat_map(|spec| spec.functions.values()) {
            for trigger in &f.events {
                if let Trigger::Schedule(schedule) = trigger {
                    let key = (
                        app.to_owned(),
                        f.name.clone(),
                        format!(
                            "{}#{:?}#{:?}",
                            schedule.key(),
                            schedule.catch_up,
                            schedule.format
                        ),
                    );
                    wanted.insert(key, (f.name.clone(), schedule.clone()));
                }
            }
        }
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        timers.retain(|key, timer| {
            let keep = key.0 != app || wanted.contains_key(key);
            if !keep {
                timer.abort();
            }
            keep
        });
        for (key, (function, schedule)) in wanted {
            if timers.contains_key(&key) {
                continue;
            }
            let timer = Timer {
                store: self.store.clone(),
                clock: self.clock.clone(),
                region: self.region.clone(),
                wake: self.wake.clone(),
                app: app.to_owned(),
                function,
                schedule,
                metrics: self.metrics.clone(),
                tracer: self.tracer.clone(),
            };
            timers.insert(key, tokio::spawn(timer.run()));
        }
    }

    fn stop(&self) {
        let mut timers = self.timers.lock().unwrap_or_else(|p| p.into_inner());
        for (_, timer) in timers.drain() {
            timer.abort();
        }
    }
}

struct Timer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    region: String,
    wake: Arc<dyn Fn() + Send + Sync>,
    app: String,
    function: String,
    schedule: ScheduleTrigger,
    metrics: stratus_metrics::Metrics,
    tracer: stratus_trace::Tracer,
}

/// Most slots counted as missed at once (a long outage of an every-minute
/// schedule).
const MAX_COUNTED_MISSES: u64 = 100_000;

impl Timer {
    async fn run(self) {
        let schedule = match self.schedule.schedule() {
            Ok(schedule) => schedule,
            Err(err) => {
                // The manifest was validated; a time zone can still vanish
                // from the host's database.
                tracing::error!(app = self.app, function = self.function, %err, "schedule not started");
                return;
            }
        };
        let key = self.schedule.key();
        let mut last = loop {
            match self
                .store
                .last_schedule_slot(&self.app, &self.function, &key)
                .await
            {
                Ok(last) => break last,
                Err(err) => {
                    tracing::error!(%err, "cannot read a schedule's last slot; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        loop {
            let now = self.clock.now_ms();
            if let Some(due) = schedule.last_at_or_before(now)
                && last.is_none_or(|last| due > last)
            {
                let late = now - due > ON_TIME_MS;
                let run = match (last, late, self.schedule.catch_up) {
                    // A new schedule starts with its next slot.
                    (None, _, _) => false,
                    (Some(_), false, _) | (Some(_), true, CatchUp::Once) => true,
                    (Some(_), true, CatchUp::Skip) => false,
                };
                // Slots between the last and this one passed unseen; this
                // one is missed too when it is late and skipped.
                let mut missed = u64::from(late && !run && last.is_some());
                let mut at = last.unwrap_or(due);
                while missed < MAX_COUNTED_MISSES
                    && let Some(next) = schedule.next_after(at)
                    && next < due
                {
                    missed += 1;
                    at = next;
                }
                match self.fire(due, run, late).await {
                    Ok(won) => {
                        if won {
                            self.metrics
                                .schedule_slot(&self.app, &self.function, run, missed);
                        }
                        last = Some(due);
                    }
                    Err(err) => {
                        tracing::error!(app = self.app, function = self.function, %err, "cannot record a schedule's slot; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let Some(next) = schedule.next_after(self.clock.now_ms()) else {
                return;
            };
            while self.clock.now_ms() < next {
                self.clock.sleep_until(next).await;
            }
        }
    }

    /// Records `slot` and, if `run`, queues its event; a slot that another
    /// node or an earlier run recorded is left alone. Whether this one
    /// recorded it.
    async fn fire(&self, slot: i64, run: bool, late: bool) -> stratus_store::Result<bool> {
        // Each fire is the root of a trace.
        let trace = stratus_trace::Context::root();
        let started_ns = stratus_trace::now_ns();
        let event = run.then(|| {
            let id = uuid::Uuid::new_v4().to_string();
            let now = self.clock.now_ms();
            let event = event(
                &self.schedule,
                &id,
                slot,
                late,
                (&self.region, &self.app, &self.function),
            );
            NewEvent {
                app: self.app.clone(),
                function: self.function.clone(),
                payload: Bytes::from(event.to_string()).to_vec(),
                request_id: id,
                source: stratus_store::Source::Schedule,
                created_ms: now,
                not_before_ms: now,
                trace: Some(trace.traceparent()),
            }
        });
        let won = self
            .store
            .fire_schedule(&self.app, &self.function, &self.schedule.key(), slot, event)
            .await?;
        if won && run {
            let mut span = stratus_trace::Span::new(
                trace,
                None,
                format!("schedule {}", self.schedule.key()),
                stratus_trace::Kind::Producer,
                &self.app,
                started_ns,
                stratus_trace::now_ns(),
            );
            span.attributes.push((
                "stratus.slot",
                stratus_trace::Value::Str(cloudevent::rfc3339(slot)),
            ));
            self.tracer.record(vec![span]);
            tracing::info!(
                app = self.app,
                function = self.function,
                slot = cloudevent::rfc3339(slot),
                late,
                "schedule fired"
            );
            (self.wake)();
        } else if won {
            tracing::info!(
                app = self.app,
                function = self.function,
                slot = cloudevent::rfc3339(slot),
                "schedule slot skipped"
            );
        }
        Ok(won)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use stratus_store_sqlite::SqliteStore;
    use tokio::sync::watch;

    use super::*;

    /// A clock the test moves.
    struct ManualClock(watch::Sender<i64>);

    impl Clock for ManualClock {
        fn now_ms(&self) -> i64 {
            *self.0.borrow()
        }

        fn sleep_until(&self, ms: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
            let mut rx = self.0.subscribe();
            Box::pin(async move {
                let _ = rx.wait_for(|now| *now >= ms).await;
            })
        }
    }

    fn ms(text: &str) -> i64 {
        let time = humantime::parse_rfc3339(text).unwrap();
        time.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    fn app(catch_up: &str) -> AppSpec {
        let manifest = format!(
            "app: jobs\nfunctions:\n  nightly:\n    runtime: python3\n    handler: main.handler\n    events:\n      - schedule: \"0 3 * * *\"\n        timezone: Asia/Shanghai\n        catch_up: {catch_up}\n"
        );
        stratus_manifest::parse("stratus.yaml", &manifest).unwrap()
    }

    struct Node {
        schedules: Arc<Schedules>,
    }

    fn node(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> Node {
        let clock: Arc<dyn Clock> = clock.clone();
        Node {
            schedules: Schedules::new(
                store.clone(),
                clock,
                Arc::new(|| {}),
                "us-east-1".into(),
                stratus_metrics::Metrics::off(),
                stratus_trace::Tracer::off(),
            ),
        }
    }

    /// The scheduled times of the events queued so far, claiming them.
    async fn fired(store: &Arc<dyn Store>) -> Vec<(String, bool)> {
        let events = store.claim_events(i64::MAX / 2, 100, 1).await.unwrap();
        let mut out = Vec::new();
        for event in events {
            let body: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
            assert_eq!(body["specversion"], "1.0");
            assert_eq!(body["type"], EVENT_TYPE);
            assert_eq!(body["id"], event.request_id.as_str());
            assert_eq!(body["source"], "/apps/jobs/functions/nightly/schedule");
            assert_eq!(body["time"], body["data"]["scheduledTime"]);
            assert_eq!(event.function, "nightly");
            out.push((
                body["time"].as_str().unwrap().to_owned(),
                body["data"]["late"].as_bool().unwrap(),
            ));
            store
                .settle_events(vec![stratus_store::Settlement::done(&event)])
                .await
                .unwrap();
        }
        out
    }

    /// Moves the clock and lets the timers run.
    async fn advance(clock: &ManualClock, to: i64) {
        clock.0.send_replace(to);
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn fires_once_per_slot_across_nodes_and_catches_up_by_policy() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
        // 03:00 in Shanghai is 19:00 UTC the day before.
        let clock = Arc::new(ManualClock(watch::channel(ms("2026-01-01T18:00:00Z")).0));

        // Two nodes share the store and run the same schedule.
        let (a, b) = (node(&store, &clock), node(&store, &clock));
        a.schedules.reconcile("jobs", Some(&app("skip")));
        b.schedules.reconcile("jobs", Some(&app("skip")));
        assert_eq!(a.schedules.timers(), 1);
        advance(&clock, ms("2026-01-01T18:59:59Z")).await;
        assert_eq!(fired(&store).await, vec![]);
        advance(&clock, ms("2026-01-01T19:00:00Z")).await;
        advance(&clock, ms("2026-01-01T19:00:30Z")).await;
        assert_eq!(
            fired(&store).await,
            vec![("2026-01-01T19:00:00.000Z".to_owned(), false)]
        );

        // Both nodes stop; three slots pass; with `skip` none of them runs
        // when they come back, and the next slot runs as usual.
        a.schedules.stop();
        b.schedules.stop();
        advance(&clock, ms("2026-01-05T12:00:00Z")).await;
        let a = node(&store, &clock);
        a.schedules.reconcile("jobs", Some(&app("skip")));
        advance(&clock, ms("2026-01-05T12:00:01Z")).await;
        assert_eq!(fired(&store).await, vec![]);
        assert_eq!(
            store
                .last_schedule_slot("jobs", "nightly", "0 3 * * *@Asia/Shanghai")
                .await
                .unwrap(),
            Some(ms("2026-01-04T19:00:00Z"))
        );
        advance(&clock, ms("2026-01-05T19:00:00Z")).await;
        assert_eq!(
            fired(&store).await,
            vec![("2026-01-05T19:00:00.000Z".to_owned(), false)]
        );

        // With `once`, the latest missed slot runs once, marked late.
        a.schedules.stop();
        advance(&clock, ms("2026-01-08T01:00:00Z")).await;
        let (a, b) = (node(&store, &clock), node(&store, &clock));
        a.schedules.reconcile("jobs", Some(&app("once")));
        b.schedules.reconcile("jobs", Some(&app("once")));
        advance(&clock, ms("2026-01-08T01:00:01Z")).await;
        assert_eq!(
            fired(&store).await,
            vec![("2026-01-07T19:00:00.000Z".to_owned(), true)]
        );

        // A node that restarts right after a slot fired does not fire it
        // again.
        advance(&clock, ms("2026-01-08T19:00:00Z")).await;
        a.schedules.stop();
        let c = node(&store, &clock);
        c.schedules.reconcile("jobs", Some(&app("once")));
        advance(&clock, ms("2026-01-08T19:00:10Z")).await;
        assert_eq!(
            fired(&store).await,
            vec![("2026-01-08T19:00:00.000Z".to_owned(), false)]
        );

        // Removing the app stops its timers.
        b.schedules.reconcile("jobs", None);
        c.schedules.reconcile("jobs", None);
        assert_eq!(b.schedules.timers(), 0);
        advance(&clock, ms("2026-01-09T19:00:00Z")).await;
        assert_eq!(fired(&store).await, vec![]);
    }
}
