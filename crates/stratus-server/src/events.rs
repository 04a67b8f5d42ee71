//! Asynchronous invocation: events accepted durably, then delivered to
//! their functions at least once, with retries and dead letters.
//!
//! An event is acknowledged only once the store has committed it. The
//! dispatcher claims due events with a lease, runs each through the
//! scheduler as an invocation with the event's request id (the same on
//! every attempt), and settles it: delivered events leave the queue;
//! failed ones come back after a backoff (about 1 s, 2 s, 4 s ..., with
//! jitter, at most 5 minutes) while the function's `retries` and
//! `max_event_age` allow, and then move to the dead letters, from which
//! they can be redriven. A node that dies mid-delivery leaves its leases
//! behind; the next start releases them, so those events run again: the
//! window for duplicates is the events in flight at the crash.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use stratus_logs::Logs;
use stratus_scheduler::{Invocation, InvokeError, Scheduler, StreamChunk, Trace};
use stratus_store::{
    EventRecord, FollowUp, NewEvent, NewMessage, Settlement, Source, Store, StoreError,
};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

/// Claims of an event for a function this node does not serve, when other
/// nodes share the store, before it is taken for gone: room for a node to
/// take up a deploy made on another.
const UNSERVED_ATTEMPTS: u32 = 10;
/// Events delivered at once.
const MAX_IN_FLIGHT: usize = 256;
/// How long a claimed event is kept from other claimers. The claimer
/// extends the lease every [`RENEW_EVERY`] while it delivers the event
/// (however long the function runs); a claimer that dies stops, so its
/// events are claimed again, by another node or after a restart, within
/// this long.
const LEASE_MS: i64 = 30_000;
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// The first retry's pause; it doubles up to `MAX_BACKOFF_MS`.
const FIRST_BACKOFF_MS: i64 = 1000;
const MAX_BACKOFF_MS: i64 = 5 * 60 * 1000;
/// Longest the dispatcher sleeps without looking at the queue.
const IDLE_LOOK: Duration = Duration::from_secs(1);
/// Shortest it sleeps while some functions are busy: the events due first
/// may be theirs, which wait for a delivery to end (and that wakes it).
const BUSY_LOOK_MS: i64 = 50;

/// A function's `max_instances` and the deliveries it allows at once.
type FunctionSlots = (u32, Arc<Semaphore>);

/// The queue of asynchronous invocations and its dispatcher.
pub(crate) struct Events {
    store: Arc<dyn Store>,
    scheduler: Arc<Scheduler>,
    logs: Arc<dyn Logs>,
    wake: Notify,
    slots: Arc<Semaphore>,
    /// Deliveries per function at once: at most its `max_instances`, so
    /// that the dispatcher itself never throttles a function (a throttled
    /// attempt would use up one of its retries).
    per_function: Mutex<HashMap<(String, String), FunctionSlots>>,
    stopping: AtomicBool,
    /// Other nodes share the store: an event for a function this node does
    /// not serve yet may be for a deploy it has not taken up.
    shared: bool,
    /// Events on their way into the store, committed together.
    accept: mpsc::Sender<Accept>,
    /// The events this node is delivering, by id, with the attempt it
    /// holds: their leases are extended until they are settled.
    delivering: Mutex<HashMap<i64, u32>>,
    /// Events claimed and not yet run, per function: a function that
    /// holds as many as it may run at once gets no more until one has run,
    /// so that one busy function does not take every place.
    held: Mutex<HashMap<(String, String), u32>>,
}

/// An event to store, and who waits for its commit.
type Accept = (NewEvent, oneshot::Sender<Result<(), StoreError>>);

/// Most events committed in one transaction.
const MAX_COMMIT: usize = 512;

impl Events {
    pub fn new(
        store: Arc<dyn Store>,
        scheduler: Arc<Scheduler>,
        logs: Arc<dyn Logs>,
        shared: bool,
    ) -> Arc<Events> {
        let (accept, pending) = mpsc::channel(4 * MAX_COMMIT);
        tokio::spawn(commit(store.clone(), pending));
        Arc::new(Events {
            store,
            scheduler,
            logs,
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            per_function: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            shared,
            accept,
            delivering: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Stores an event for `app`/`function` and returns its request id;
    /// when this returns, the event will be delivered.
    pub async fn enqueue(
        &self,
        app: &str,
        function: &str,
        payload: Bytes,
        source: Source,
        parent: Option<stratus_trace::Context>,
    ) -> stratus_store::Result<String> {
        let request_id = uuid::Uuid::new_v4().to_string();
        self.enqueue_as(app, function, payload, source, request_id, parent)
            .await
    }

    /// As [`Events::enqueue`], under a request id of the caller's: an
    /// event with the same id still queued for the function is not queued
    /// twice. The event is queued in a producer span under `parent`.
    pub async fn enqueue_as(
        &self,
        app: &str,
        function: &str,
        payload: Bytes,
        source: Source,
        request_id: String,
        parent: Option<stratus_trace::Context>,
    ) -> stratus_store::Result<String> {
        let started_ns = stratus_trace::now_ns();
        let now = crate::now_ms();
        // The producer span is recorded before the commit ends; it says
        // when the event was handed over.
        let trace = crate::traces::produce(
            self.scheduler.tracer(),
            parent,
            app,
            format!("queue event for {function}"),
            started_ns,
        );
        let event = NewEvent {
            app: app.to_owned(),
            function: function.to_owned(),
            payload: payload.to_vec(),
            request_id: request_id.clone(),
            source,
            created_ms: now,
            not_before_ms: now,
            trace: Some(trace.traceparent()),
        };
        let (done_tx, done_rx) = oneshot::channel();
        let gone = || StoreError::Worker("the event writer stopped".to_owned());
        self.accept
            .send((event, done_tx))
            .await
            .map_err(|_| gone())?;
        done_rx.await.map_err(|_| gone())??;
        self.wake.notify_one();
        Ok(request_id)
    }

    /// Wakes the dispatcher: events were redriven.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops claiming events; deliveries in flight finish with the
    /// scheduler's shutdown, and those cut short run again after a restart.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Delivers events until stopped. Leases left by an earlier run of
    /// this node are released first.
    pub async fn run(self: Arc<Self>) {
        // A store of its own: whatever is leased was this node's. A shared
        // store's leases may be other nodes'; this node's lapse by
        // themselves.
        if !self.shared {
            match self.store.release_leases(crate::now_ms()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(events = n, "redelivering events in flight at the last stop")
                }
                Err(err) => tracing::error!(%err, "cannot release the leases of the last run"),
            }
        }
        let renewing = tokio::spawn(self.clone().renew());
        while !self.stopping.load(Ordering::Acquire) {
            let free = self.slots.available_permits();
            if free == 0 {
                // Every slot is busy: wait for one.
                if let Ok(permit) = self.slots.acquire().await {
                    drop(permit);
                }
                continue;
            }
            let now = crate::now_ms();
            let wanted = free.min(64) as u32;
            let busy = self.busy();
            let claimed = match self
                .store
                .claim_events_except(now, wanted, LEASE_MS, &busy)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::error!(%err, "cannot claim events");
                    tokio::time::sleep(IDLE_LOOK).await;
                    continue;
                }
            };
            let full = claimed.len() as u32 == wanted;
            for event in claimed {
                let Ok(permit) = self.slots.clone().acquire_owned().await else {
                    return;
                };
                self.lock_delivering().insert(event.id, event.attempts);
                let held = Held::take(&self, &event);
                let this = self.clone();
                tokio::spawn(async move {
                    let id = event.id;
                    this.deliver(event, held).await;
                    this.lock_delivering().remove(&id);
                    drop(permit);
                });
            }
            if full {
                continue;
            }
            // Sleep until the next event is due, or one arrives, or a
            // delivery ends. The next due may be a busy function's, which
            // must wait for a delivery of its own to end.
            let soonest = if busy.is_empty() { 1 } else { BUSY_LOOK_MS };
            let pause = match self.store.next_due_ms().await {
                Ok(Some(due)) => Duration::from_millis((due - crate::now_ms()).max(soonest) as u64),
                _ => IDLE_LOOK,
            };
            let _ = tokio::time::timeout(pause.min(IDLE_LOOK), self.wake.notified()).await;
        }
        renewing.abort();
    }

    fn lock_delivering(&self) -> std::sync::MutexGuard<'_, HashMap<i64, u32>> {
        self.delivering.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), u32>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One event of `function` has run (or will not).
    fn release(&self, function: (String, String)) {
        let mut held = self.lock_held();
        if let std::collections::hash_map::Entry::Occupied(mut entry) = held.entry(function) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
        drop(held);
        // The function may take another event now.
        self.wake.notify_one();
    }

    /// The functions (`APP/FUNCTION`) that hold as many claimed events as
    /// they may run at once.
    fn busy(&self) -> Vec<String> {
        let held = self.lock_held();
        let limits = self.per_function.lock().unwrap_or_else(|p| p.into_inner());
        held.iter()
            .filter(|(function, count)| {
                limits
                    .get(*function)
                    .is_some_and(|(max, _)| **count >= *max)
            })
            .map(|((app, function), _)| format!("{app}/{function}"))
            .collect()
    }

    /// Extends the leases of the events being delivered, every
    /// [`RENEW_EVERY`], until the dispatcher stops.
    async fn renew(self: Arc<Self>) {
        let mut every = tokio::time::interval(RENEW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let leases: Vec<(i64, u32)> = self
                .lock_delivering()
                .iter()
                .map(|(id, attempt)| (*id, *attempt))
                .collect();
            if leases.is_empty() {
                continue;
            }
            let until = crate::now_ms() + LEASE_MS;
            if let Err(err) = self.store.extend_leases(leases, until).await {
                tracing::warn!(%err, "cannot extend the leases of events being delivered");
            }
        }
    }

    async fn deliver(&self, event: EventRecord, held: Held) {
        let Some(pool) = self.scheduler.pool(&event.app, &event.function) else {
            let now = crate::now_ms();
            if self.shared && event.attempts < UNSERVED_ATTEMPTS {
                // Again once this node (or another) serves it; an event of
                // a function that is gone for good runs out of attempts.
                let error = format!(
                    "function {}/{} is not served by this node (yet)",
                    event.app, event.function
                );
                let later = now + crate::cluster::TAKE_UP_PAUSE.as_millis() as i64;
                return self.settle(Settlement::retry(&event, later, error)).await;
            }
            let error = format!("function {}/{} no longer exists", event.app, event.function);
            return self.settle(Settlement::dead(&event, now, error)).await;
        };
        let spec = &pool.config.spec;
        let (retries, max_age) = (spec.retries, spec.max_event_age);
        let destinations = (spec.on_success.clone(), spec.on_failure.clone());
        let limit = self.function_slots(&event.app, &event.function, spec.max_instances);
        let function_arn = self.scheduler.function_arn(&event.app, &event.function);
        drop(pool);
        let Ok(turn) = limit.acquire_owned().await else {
            return;
        };
        let trace = Trace::under(crate::traces::carried(event.trace.as_deref()));
        // Destinations continue the trace from inside the handler.
        let handler = trace.handler;
        let ran = attempt(
            &self.scheduler,
            &event.app,
            &event.function,
            Bytes::from(event.payload.clone()),
            &event.request_id,
            trace,
        )
        .await;
        // The function is done: the next event may go to it while this
        // one waits for its logs.
        drop(turn);
        drop(held);
        let attempt = match logged(&*self.logs, ran).await {
            Attempt::Ran(result) => result,
            Attempt::Stopping => return,
            Attempt::Gone(error) => {
                return self
                    .settle(Settlement::dead(&event, crate::now_ms(), error))
                    .await;
            }
        };
        let record = |condition: &str, response: serde_json::Value, error: bool| {
            destination_record(&event, &function_arn, condition, response, error)
        };
        let (error_type, message) = match attempt {
            Ok(response) => {
                let then = destinations
                    .0
                    .iter()
                    .map(|to| {
                        let record = record("Success", response.clone(), false);
                        self.chained(&event, to, record, &handler)
                    })
                    .collect();
                return self
                    .settle(Settlement::Done {
                        id: event.id,
                        attempt: event.attempts,
                        then,
                    })
                    .await;
            }
            Err(error) => error,
        };
        if self.scheduler.is_shutting_down() {
            // Cut short by the shutdown, most likely: run it again after.
            return;
        }
        let error = format!("{error_type}: {message}");
        let now = crate::now_ms();
        let next = now + backoff_ms(event.attempts);
        let too_old = next - event.created_ms > max_age.as_millis() as i64;
        let settlement = if event.attempts > retries || too_old {
            let (why, condition) = if too_old && event.attempts <= retries {
                (
                    format!("{error} (older than max_event_age, not retried)"),
                    "EventAgeExceeded",
                )
            } else {
                (error, "RetriesExhausted")
            };
            let response = serde_json::json!({ "errorType": error_type, "errorMessage": message });
            let then = destinations
                .1
                .iter()
                .map(|to| {
                    let record = record(condition, response.clone(), true);
                    self.chained(&event, to, record, &handler)
                })
                .collect();
            Settlement::Dead {
                id: event.id,
                attempt: event.attempts,
                failed_ms: now,
                error: why,
                then,
            }
        } else {
            self.scheduler
                .metrics()
                .event_retried(&event.app, &event.function);
            Settlement::retry(&event, next, error)
        };
        self.settle(settlement).await;
    }

    /// What a destination `to` (a function of the app, or else one of its
    /// queues) receives about `event`.
    fn chained(
        &self,
        event: &EventRecord,
        to: &str,
        record: serde_json::Value,
        handler: &stratus_trace::Context,
    ) -> FollowUp {
        let now = crate::now_ms();
        let id = uuid::Uuid::new_v4().to_string();
        let source = Source::Destination(event.function.clone());
        let trace = Some(
            crate::traces::produce(
                self.scheduler.tracer(),
                Some(*handler),
                &event.app,
                format!("destination {to}"),
                stratus_trace::now_ns(),
            )
            .traceparent(),
        );
        if self.scheduler.pool(&event.app, to).is_some() {
            FollowUp::Event(NewEvent {
                app: event.app.clone(),
                function: to.to_owned(),
                payload: record.to_string().into_bytes(),
                request_id: id,
                source,
                created_ms: now,
                not_before_ms: now,
                trace,
            })
        } else {
            FollowUp::Message(NewMessage {
                app: event.app.clone(),
                queue: to.to_owned(),
                body: record.to_string().into_bytes(),
                message_id: id,
                source,
                sent_ms: now,
                visible_ms: now,
                trace,
            })
        }
    }

    /// The semaphore of `app`/`function`, sized by its `max_instances`
    /// (made anew when a deploy changes that).
    fn function_slots(&self, app: &str, function: &str, max: u32) -> Arc<Semaphore> {
        let mut map = self.per_function.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry((app.to_owned(), function.to_owned()))
            .or_insert_with(|| (max, Arc::new(Semaphore::new(max as usize))));
        if entry.0 != max {
            *entry = (max, Arc::new(Semaphore::new(max as usize)));
        }
        entry.1.clone()
    }

    async fn settle(&self, settlement: Settlement) {
        if let Err(err) = self.store.settle_events(vec![settlement]).await {
            // The lease runs out and the event is delivered again.
            tracing::error!(%err, "cannot settle an event");
        }
        self.wake.notify_one();
    }
}

/// An event claimed and not yet run, counted against its function until
/// dropped.
struct Held {
    events: Arc<Events>,
    function: Option<(String, String)>,
}

impl Held {
    fn take(events: &Arc<Events>, event: &EventRecord) -> Held {
        let function = (event.app.clone(), event.function.clone());
        *events.lock_held().entry(function.clone()).or_default() += 1;
        Held {
            events: events.clone(),
            function: Some(function),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(function) = self.function.take() {
            self.events.release(function);
        }
    }
}

/// How one delivery went.
pub(crate) enum Attempt {
    /// The function ran: its result, or its error as (type, message).
    Ran(Result<serde_json::Value, (String, String)>),
    /// The server is shutting down: the delivery did not happen, or its
    /// log lines could not be stored. Either way it is left to be run
    /// again.
    Stopping,
    /// The function no longer exists.
    Gone(String),
}

/// `ran`, once the log lines and report of a delivery that ran are
/// stored: what settles it must never outlive them at a crash. If they
/// cannot be stored, the delivery is left to run again.
pub(crate) async fn logged(logs: &dyn Logs, ran: Attempt) -> Attempt {
    if matches!(ran, Attempt::Ran(_))
        && let Err(err) = logs.flush().await
    {
        tracing::warn!(%err, "an attempt's log lines are not stored; it is left to run again");
        return Attempt::Stopping;
    }
    ran
}

/// Runs `function` of `app` on `payload` as a delivery of an event, with
/// the event's `request_id`; settle it only once it is [`logged`].
pub(crate) async fn attempt(
    scheduler: &Scheduler,
    app: &str,
    function: &str,
    payload: Bytes,
    request_id: &str,
    trace: Trace,
) -> Attempt {
    let mut invocation = Invocation::new(payload);
    invocation.request_id = request_id.to_owned();
    invocation.trace = trace;
    match scheduler.invoke(app, function, invocation).await {
        Ok(mut outcome) => Attempt::Ran(match (outcome.result, outcome.stream.take()) {
            (Ok(body), None) => Ok(serde_json::from_slice(&body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
            })),
            (Ok(_), Some(mut stream)) => {
                // Nobody reads an asynchronous result; a stream still
                // tells whether the function succeeded.
                let mut ended = Ok(serde_json::Value::Null);
                while let Some(chunk) = stream.body.recv().await {
                    match chunk {
                        StreamChunk::Data(_) => {}
                        StreamChunk::End => break,
                        StreamChunk::Failed(err) => {
                            ended = Err((err.error_type, err.message));
                            break;
                        }
                    }
                }
                ended
            }
            (Err(err), _) => Err((err.error_type, err.message)),
        }),
        // Left leased: the next start runs it again.
        Err(InvokeError::ShuttingDown) => Attempt::Stopping,
        Err(InvokeError::NoSuchFunction { app, function }) => {
            Attempt::Gone(format!("function {app}/{function} no longer exists"))
        }
        Err(err @ InvokeError::Throttled { .. }) => {
            Attempt::Ran(Err(("Stratus.Throttled".to_owned(), err.to_string())))
        }
    }
}

/// Commits accepted events, as many together as have arrived while the
/// last commit ran: under load one transaction carries many callers'
/// events, and each caller hears back only after it committed.
async fn commit(store: Arc<dyn Store>, mut pending: mpsc::Receiver<Accept>) {
    let mut batch = Vec::with_capacity(MAX_COMMIT);
    while pending.recv_many(&mut batch, MAX_COMMIT).await > 0 {
        let (events, waiters): (Vec<NewEvent>, Vec<_>) = batch.drain(..).unzip();
        let result = store.enqueue_events(events).await.map(drop);
        for waiter in waiters {
            let _ = waiter.send(match &result {
                Ok(()) => Ok(()),
                Err(err) => Err(err.duplicate()),
            });
        }
    }
}

/// What a destination receives, in the shape of Lambda's destination
/// records: the request (its id, the function, why, how many attempts),
/// the event as sent, and the function's result or error.
fn destination_record(
    event: &EventRecord,
    function_arn: &str,
    condition: &str,
    response: serde_json::Value,
    error: bool,
) -> serde_json::Value {
    let request: serde_json::Value = serde_json::from_slice(&event.payload).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&event.payload).into_owned())
    });
    let mut response_context = serde_json::json!({
        "statusCode": 200,
        "executedVersion": "$LATEST",
    });
    if error {
        response_context["functionError"] = serde_json::json!("Unhandled");
    }
    let timestamp = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    serde_json::json!({
        "version": "1.0",
        "timestamp": timestamp,
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": event.attempts,
        },
        "requestPayload": request,
        "responseContext": response_context,
        "responsePayload": response,
    })
}

/// The pause before the attempt after `attempts` failed ones: doubling
/// from a second, at most five minutes, with up to a quarter of jitter
/// either way so that retries of a burst spread out.
pub(crate) fn backoff_ms(attempts: u32) -> i64 {
    let base = FIRST_BACKOFF_MS
        .saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(MAX_BACKOFF_MS);
    let mut bytes = [0u8; 2];
    let jitter = match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX) - 0.5,
        Err(_) => 0.0,
    };
    base + (base as f64 * jitter / 2.0) as i64
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_with_jitter_up_to_five_minutes() {
        for (attempts, base) in [(1, 1000), (2, 2000), (3, 4000), (12, 300_000)] {
            for _ in 0..50 {
                let pause = backoff_ms(attempts);
                assert!(
                    pause >= base * 3 / 4 && pause <= base * 5 / 4,
                    "{attempts}: {pause}"
                );
            }
        }
    }
}
