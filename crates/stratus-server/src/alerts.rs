//! Alerts: the `alerts:` of each app, evaluated every `--alert-interval`
//! by the node that holds the `alert-evaluation` lease (so once in a
//! cluster), with their state and history in the store's `Alerts`.
//!
//! What an alert watches comes from where every node can read it:
//! - invocation metrics (error rate, errors, invocations, throttles, p99
//!   duration) from the running totals each node reports with its
//!   heartbeat (`stratus_metrics::Metrics::totals`, in `cluster::report`):
//!   the evaluator keeps a sample of every live node's totals per
//!   evaluation and takes the difference over the window, node by node (a
//!   node whose totals went down restarted: its new totals are its
//!   window's). Until its samples cover the window (after a start, or
//!   when the lease moved to it) it has no data, and an alert keeps its
//!   state;
//! - dead letters and the age of the oldest event or message from the
//!   store's event and message counts;
//! - log lines from the log store (the shared one in a cluster).
//!
//! An alert whose condition holds becomes `pending`, and `firing` once it
//! has held for its `for:`; one that no longer holds is `ok` again
//! (`resolved`, if it fired). Firing and resolving run the alert's
//! actions with a CloudEvent of type `stratus.alert.firing` or
//! `stratus.alert.resolved`: queued for a function (idempotently, keyed by
//! the alert and the time it changed, so an evaluation cut short and done
//! again by the next lease holder does not queue it twice), sent to a
//! queue, or posted to a webhook signed with HMAC-SHA256
//! (`X-Stratus-Signature-256: sha256=HEX` over the body, with the app's
//! secret as the key), retried three times.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use stratus_manifest::AppSpec;
use stratus_manifest::alerts::{AlertAction, AlertCondition, AlertMetric, AlertSpec};
use stratus_metrics::{LATENCY_BOUNDS, Outcome};
use stratus_store::{AlertChange, AlertRecord, LogQuery, LogStream, Source};

use crate::AppState;
use crate::api::ApiError;
use crate::triggers;

/// The lease the evaluating node holds.
const LEASE: &str = "alert-evaluation";
/// State changes kept per app.
const HISTORY_KEPT: usize = 1000;
/// Log lines counted at most in one evaluation.
const MAX_COUNTED_LINES: u32 = 10_000;
/// A webhook's attempts, and how long each may take.
const WEBHOOK_ATTEMPTS: u32 = 3;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The states an alert is in.
const OK: &str = "ok";
const PENDING: &str = "pending";
const FIRING: &str = "firing";
const NO_DATA: &str = "insufficient_data";

/// The alerts each app declares, as deploys tell.
#[derive(Default)]
pub(crate) struct Rules {
    apps: Mutex<BTreeMap<String, Vec<AlertSpec>>>,
    stopping: AtomicBool,
}

impl triggers::Source for Rules {
    fn reconcile(&self, app: &str, spec: Option<&AppSpec>) {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        match spec {
            Some(spec) if !spec.alerts.is_empty() => {
                apps.insert(app.to_owned(), spec.alerts.values().cloned().collect());
            }
            _ => {
                apps.remove(app);
            }
        }
    }

    fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

impl Rules {
    fn snapshot(&self) -> BTreeMap<String, Vec<AlertSpec>> {
        self.apps.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One function's totals: invocations by [`Outcome::ALL`], then total
/// durations by [`LATENCY_BOUNDS`] (and one past them).
type Totals = Vec<u64>;

/// The totals each node reported, per function, at one evaluation.
type Sample = HashMap<String, HashMap<(String, String), Totals>>;

/// Samples of the nodes' totals, oldest first.
#[derive(Default)]
struct Samples(VecDeque<(i64, Sample)>);

impl Samples {
    /// The totals of `app`/`function` over the `window_ms` before the
    /// newest sample, summed over the nodes; `None` until the samples
    /// cover the window.
    fn over(&self, app: &str, function: &str, window_ms: i64) -> Option<Totals> {
        let (now, newest) = self.0.back()?;
        let (_, then) = self.0.iter().rev().find(|(at, _)| *at <= now - window_ms)?;
        let key = (app.to_owned(), function.to_owned());
        let width = Outcome::ALL.len() + LATENCY_BOUNDS.len() + 1;
        let mut sum = vec![0u64; width];
        for (node, totals) in newest {
            let Some(now) = totals.get(&key) else {
                continue;
            };
            let before = then.get(node).and_then(|t| t.get(&key));
            let restarted = before.is_some_and(|b| b.iter().zip(now).any(|(b, n)| n < b));
            for (i, n) in now.iter().enumerate().take(width) {
                let b = match before {
                    Some(b) if !restarted => b.get(i).copied().unwrap_or(0),
                    _ => 0,
                };
                sum[i] += n - b.min(*n);
            }
        }
        Some(sum)
    }

    fn push(&mut self, at: i64, sample: Sample, keep_ms: i64) {
        self.0.push_back((at, sample));
        // Keep one sample older than the longest window.
        while self.0.len() > 2 && self.0[1].0 <= at - keep_ms {
            self.0.pop_front();
        }
    }
}

/// The value of `metric` in `totals` (a window's).
fn value_of(metric: AlertMetric, totals: &[u64]) -> f64 {
    let outcome = |o: Outcome| totals[o as usize];
    let errors = outcome(Outcome::Error)
        + outcome(Outcome::Timeout)
        + outcome(Outcome::Crashed)
        + outcome(Outcome::OutOfMemory);
    let ran = errors + outcome(Outcome::Success);
    match metric {
        AlertMetric::Errors => errors as f64,
        AlertMetric::Invocations => ran as f64,
        AlertMetric::Throttles => outcome(Outcome::Throttled) as f64,
        AlertMetric::ErrorRate if ran == 0 => 0.0,
        AlertMetric::ErrorRate => errors as f64 / ran as f64,
        AlertMetric::P99Duration => p99_ms(&totals[Outcome::ALL.len()..]),
        _ => 0.0,
    }
}

/// The 99th percentile of durations counted by [`LATENCY_BOUNDS`], in
/// milliseconds, interpolated within its bucket as PromQL's
/// `histogram_quantile` does (the last bucket reads as its lower bound).
fn p99_ms(buckets: &[u64]) -> f64 {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return 0.0;
    }
    let rank = 0.99 * count as f64;
    let mut below = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        if (below + n) as f64 >= rank && *n > 0 {
            let lower = if i == 0 { 0.0 } else { LATENCY_BOUNDS[i - 1] };
            let Some(&upper) = LATENCY_BOUNDS.get(i) else {
                return lower * 1000.0;
            };
            let within = (rank - below as f64) / *n as f64;
            return (lower + (upper - lower) * within) * 1000.0;
        }
        below += n;
    }
    LATENCY_BOUNDS[LATENCY_BOUNDS.len() - 1] * 1000.0
}

/// The totals every live node reported with its heartbeat.
async fn sample(state: &AppState, now: i64) -> Sample {
    let nodes = match state.store.list_nodes().await {
        Ok(nodes) => nodes,
        Err(err) => {
            tracing::warn!(%err, "alerts: cannot read the nodes' reports");
            return Sample::new();
        }
    };
    nodes
        .into_iter()
        .filter(|node| crate::cluster::is_live(node, now))
        .map(|node| {
            let report: Value = serde_json::from_str(&node.report).unwrap_or(Value::Null);
            let mut totals = HashMap::new();
            for (app, entry) in report.as_object().into_iter().flatten() {
                for (function, numbers) in entry["totals"].as_object().into_iter().flatten() {
                    let numbers: Totals = numbers
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|n| n.as_u64().unwrap_or(0))
                        .collect();
                    totals.insert((app.clone(), function.clone()), numbers);
                }
            }
            (node.id, totals)
        })
        .collect()
}

/// The running totals of this node's functions, as its heartbeat reports
/// them: `{APP: {FUNCTION: [outcomes..., durations...]}}`.
pub(crate) fn node_totals(state: &AppState) -> BTreeMap<String, serde_json::Map<String, Value>> {
    let mut apps: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    for t in state.scheduler.metrics().totals() {
        let numbers: Vec<u64> = t.outcomes.iter().chain(&t.durations).copied().collect();
        apps.entry(t.app)
            .or_default()
            .insert(t.function, json!(numbers));
    }
    apps
}

/// What an evaluation saw of an alert's condition: its value, or why it
/// has none.
type Observed = Result<f64, String>;

/// An app's queued events and messages, read from the store at most once
/// per evaluation, whichever of its alerts asks first.
#[derive(Default)]
struct Backlog {
    events: Option<Result<Vec<stratus_store::EventCounts>, String>>,
    messages: Option<Result<Vec<stratus_store::QueueCounts>, String>>,
}

impl Backlog {
    async fn events(
        &mut self,
        state: &AppState,
        app: &str,
        now: i64,
    ) -> Result<&[stratus_store::EventCounts], String> {
        if self.events.is_none() {
            let read = state.store.count_events(Some(app), now).await;
            self.events = Some(read.map_err(|err| format!("the store did not answer: {err}")));
        }
        self.events
            .as_ref()
            .expect("read")
            .as_deref()
            .map_err(Clone::clone)
    }

    async fn messages(
        &mut self,
        state: &AppState,
        app: &str,
        now: i64,
    ) -> Result<&[stratus_store::QueueCounts], String> {
        if self.messages.is_none() {
            let read = state.store.count_messages(Some(app), now).await;
            self.messages = Some(read.map_err(|err| format!("the store did not answer: {err}")));
        }
        self.messages
            .as_ref()
            .expect("read")
            .as_deref()
            .map_err(Clone::clone)
    }
}

async fn observe(
    state: &AppState,
    samples: &Samples,
    backlog: &mut Backlog,
    app: &str,
    alert: &AlertSpec,
    now: i64,
) -> Observed {
    let window_ms = alert.window.as_millis() as i64;
    match &alert.condition {
        AlertCondition::Metric {
            metric,
            function,
            queue,
        } => {
            let function = function.as_deref().unwrap_or("");
            if metric.windowed() {
                let totals = samples.over(app, function, window_ms).ok_or_else(|| {
                    "the evaluator has not watched the invocations for a whole window yet"
                        .to_owned()
                })?;
                return Ok(value_of(*metric, &totals));
            }
            if *metric == AlertMetric::QueueAge {
                let queue = queue.as_deref().unwrap_or("");
                let oldest = backlog
                    .messages(state, app, now)
                    .await?
                    .iter()
                    .find(|c| c.queue == queue)
                    .and_then(|c| c.oldest_sent_ms);
                return Ok(oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0));
            }
            let counts = backlog.events(state, app, now).await?;
            let mine = counts.iter().find(|c| c.function == function);
            Ok(match metric {
                AlertMetric::DeadLetters => mine.map_or(0, |c| c.dead) as f64,
                _ => mine
                    .and_then(|c| c.oldest_queued_ms)
                    .map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0),
            })
        }
        AlertCondition::Logs { pattern, from } => {
            let since = now - window_ms;
            let mut count = 0usize;
            let sources: Vec<Option<String>> = if from.is_empty() {
                vec![None]
            } else {
                from.iter().cloned().map(Some).collect()
            };
            for function in sources {
                let lines = state
                    .logs
                    .query(LogQuery {
                        app: Some(app.to_owned()),
                        function,
                        request_id: None,
                        since_ms: Some(since),
                        until_ms: Some(now),
                        contains: Some(pattern.clone()),
                        after_id: None,
                        limit: MAX_COUNTED_LINES,
                    })
                    .await
                    .map_err(|err| format!("the log store did not answer: {err}"))?;
                // The lines of the app's code and the platform's about it,
                // not the records of each invocation or request.
                count += lines
                    .iter()
                    .filter(|l| {
                        matches!(
                            l.record.stream,
                            LogStream::Stdout | LogStream::Stderr | LogStream::Platform
                        )
                    })
                    .count();
            }
            Ok(count as f64)
        }
    }
}

/// What an alert watches, for people.
fn condition_text(alert: &AlertSpec) -> String {
    let window = humantime::format_duration(alert.window);
    match &alert.condition {
        AlertCondition::Metric {
            metric,
            function,
            queue,
        } => {
            let of = function.as_deref().or(queue.as_deref()).unwrap_or("");
            if metric.windowed() {
                format!(
                    "{}({of}) over {window} {}",
                    metric.as_str(),
                    alert.threshold
                )
            } else {
                format!("{}({of}) {}", metric.as_str(), alert.threshold)
            }
        }
        AlertCondition::Logs { pattern, from } => {
            let from = if from.is_empty() {
                "the app".to_owned()
            } else {
                from.join(", ")
            };
            format!(
                "lines of {from} containing {pattern:?} over {window} {}",
                alert.threshold
            )
        }
    }
}

/// An alert's state after an evaluation: the new state and since when.
fn next_state(
    previous: Option<&AlertRecord>,
    alert: &AlertSpec,
    observed: &Observed,
    now: i64,
) -> (&'static str, i64) {
    let (was, since) = previous
        .map(|p| (p.state.as_str(), p.since_ms))
        .unwrap_or((NO_DATA, now));
    let stay = |state: &'static str| {
        if was == state {
            (state, since)
        } else {
            (state, now)
        }
    };
    let Ok(value) = observed else {
        // No data: what was seen last stands.
        return match was {
            FIRING => (FIRING, since),
            PENDING => (PENDING, since),
            OK => (OK, since),
            _ => (NO_DATA, since),
        };
    };
    if !alert.threshold.holds(*value) {
        return stay(OK);
    }
    match was {
        FIRING => (FIRING, since),
        PENDING if now - since >= alert.hold.as_millis() as i64 => (FIRING, now),
        PENDING => (PENDING, since),
        _ if alert.hold.is_zero() => (FIRING, now),
        _ => (PENDING, now),
    }
}

/// Evaluates alerts until the server stops.
pub(crate) async fn run(state: Arc<AppState>) {
    let interval = state.config.alert_interval;
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Samples::default();
    let http = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let rules = state.triggers.alerts.clone();
    while !rules.stopping.load(Ordering::Acquire) {
        every.tick().await;
        let apps = rules.snapshot();
        let now = crate::now_ms();
        let lease_ms = 3 * interval.as_millis() as i64;
        let mine = match state
            .store
            .take_lease(LEASE, &state.node_id, now + lease_ms.max(10_000), now)
            .await
        {
            Ok(mine) => mine,
            Err(err) => {
                tracing::warn!(%err, "alerts: cannot take the evaluation lease; not evaluating now");
                false
            }
        };
        if !mine {
            // Another node evaluates; were this one to take over, its
            // samples would have a gap.
            samples = Samples::default();
            continue;
        }
        let longest = apps
            .values()
            .flatten()
            .map(|a| a.window.as_millis() as i64)
            .max()
            .unwrap_or(0);
        samples.push(
            now,
            sample(&state, now).await,
            longest + interval.as_millis() as i64,
        );
        for (app, alerts) in apps {
            evaluate(&state, &http, &samples, &app, &alerts, now).await;
        }
    }
}

async fn evaluate(
    state: &Arc<AppState>,
    http: &reqwest::Client,
    samples: &Samples,
    app: &str,
    alerts: &[AlertSpec],
    now: i64,
) {
    let previous: HashMap<String, AlertRecord> = match state.store.list_alerts(app).await {
        Ok(list) => list.into_iter().map(|a| (a.name.clone(), a)).collect(),
        Err(err) => {
            tracing::warn!(%err, app, "alerts: cannot read their states; not evaluating now");
            return;
        }
    };
    let mut states = Vec::new();
    let mut changes = Vec::new();
    let mut backlog = Backlog::default();
    for alert in alerts {
        let observed = observe(state, samples, &mut backlog, app, alert, now).await;
        let before = previous.get(&alert.name);
        let (to, since) = next_state(before, alert, &observed, now);
        let from = before.map(|b| b.state.as_str()).unwrap_or(NO_DATA);
        let detail = json!({
            "condition": condition_text(alert),
            "value": observed.as_ref().ok(),
            "no_data": observed.as_ref().err(),
            "threshold": alert.threshold.value,
        });
        if from != to {
            changes.push(AlertChange {
                app: app.to_owned(),
                name: alert.name.clone(),
                at_ms: now,
                from: from.to_owned(),
                to: to.to_owned(),
                detail: detail.to_string(),
            });
            let kind = match (from, to) {
                (_, FIRING) => Some("firing"),
                (FIRING, _) => Some("resolved"),
                _ => None,
            };
            if let Some(kind) = kind {
                let event = alert_event(app, alert, kind, since, &observed, now);
                act(state, http, app, alert, kind, since, event).await;
            }
        }
        states.push(AlertRecord {
            app: app.to_owned(),
            name: alert.name.clone(),
            state: to.to_owned(),
            since_ms: since,
            evaluated_ms: now,
            detail: detail.to_string(),
        });
    }
    let changed = !changes.is_empty();
    if let Err(err) = state.store.put_alerts(states, changes).await {
        tracing::warn!(%err, app, "alerts: cannot store their states");
        return;
    }
    if changed || previous.len() > alerts.len() {
        let declared: Vec<String> = alerts.iter().map(|a| a.name.clone()).collect();
        if let Err(err) = state.store.trim_alerts(app, &declared, HISTORY_KEPT).await {
            tracing::warn!(%err, app, "alerts: cannot trim their history");
        }
    }
}

/// The CloudEvent an alert's actions are given.
fn alert_event(
    app: &str,
    alert: &AlertSpec,
    kind: &str,
    since: i64,
    observed: &Observed,
    now: i64,
) -> Value {
    let id = format!("{app}/{}/{kind}/{since}", alert.name);
    Value::Object(triggers::cloudevent::from_json(
        &id,
        &format!("/apps/{app}/alerts/{}", alert.name),
        &format!("stratus.alert.{kind}"),
        now,
        Some(&alert.name),
        json!({
            "app": app,
            "alert": alert.name,
            "state": if kind == "firing" { FIRING } else { OK },
            "condition": condition_text(alert),
            "value": observed.as_ref().ok(),
            "threshold": alert.threshold.value,
            "since": triggers::cloudevent::rfc3339(since),
        }),
    ))
}

/// Runs an alert's actions for its change to `kind`.
async fn act(
    state: &Arc<AppState>,
    http: &reqwest::Client,
    app: &str,
    alert: &AlertSpec,
    kind: &str,
    since: i64,
    event: Value,
) {
    let body = Bytes::from(event.to_string());
    for action in &alert.actions {
        let done = match action {
            AlertAction::Invoke(function) => state
                .events
                .enqueue_as(
                    app,
                    function,
                    body.clone(),
                    Source::Other(format!("alert:{}", alert.name)),
                    // Idempotent while queued: an evaluation done again
                    // does not queue it twice.
                    format!("alert-{}-{kind}-{since}", alert.name),
                    None,
                )
                .await
                .map(drop)
                .map_err(|err| err.to_string()),
            AlertAction::Queue(queue) => state
                .triggers
                .queues
                .send(
                    app,
                    queue,
                    vec![body.clone()],
                    Source::Other(format!("alert:{}", alert.name)),
                    None,
                )
                .await
                .map(drop)
                .map_err(|err| err.to_string()),
            AlertAction::Webhook { url, secret } => match state.secrets.values(app).get(secret) {
                Some(key) => {
                    let signature = sign(key.as_bytes(), &body);
                    let (http, url, body) = (http.clone(), url.clone(), body.clone());
                    let (app, name, kind) = (app.to_owned(), alert.name.clone(), kind.to_owned());
                    tokio::spawn(async move {
                        post(&http, &url, body, &signature, &kind, &app, &name).await
                    });
                    Ok(())
                }
                None => Err(format!(
                    "the app has no secret {secret:?} to sign the webhook with; set it with `stratus secret set {app} {secret}`"
                )),
            },
        };
        if let Err(err) = done {
            tracing::warn!(app, alert = alert.name, kind, %err, "alert action failed");
        }
    }
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `key`.
fn sign(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    format!(
        "sha256={}",
        crate::hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: Bytes,
    signature: &str,
    kind: &str,
    app: &str,
    alert: &str,
) {
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let sent = http
            .post(url)
            .header("content-type", "application/cloudevents+json")
            .header("x-stratus-event", format!("stratus.alert.{kind}"))
            .header("x-stratus-signature-256", signature)
            .body(body.clone())
            .send()
            .await;
        let why = match sent {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("it answered {}", response.status()),
            Err(err) => err.to_string(),
        };
        tracing::warn!(app, alert, url, attempt, %why, "alert webhook not delivered");
        if attempt < WEBHOOK_ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    /// Changes shown at most.
    #[serde(default = "default_history")]
    history: usize,
}

fn default_history() -> usize {
    20
}

/// `GET /v1/apps/{app}/alerts`: each declared alert with its state, and the
/// latest changes.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    crate::api::require_app(&state, &app).await?;
    let declared = state
        .triggers
        .alerts
        .snapshot()
        .remove(&app)
        .unwrap_or_default();
    let stored: HashMap<String, AlertRecord> = state
        .store
        .list_alerts(&app)
        .await?
        .into_iter()
        .map(|a| (a.name.clone(), a))
        .collect();
    let alerts: Vec<Value> = declared
        .iter()
        .map(|alert| {
            let record = stored.get(&alert.name);
            let detail: Value = record
                .and_then(|r| serde_json::from_str(&r.detail).ok())
                .unwrap_or(Value::Null);
            json!({
                "name": alert.name,
                "condition": condition_text(alert),
                "for_ms": alert.hold.as_millis() as u64,
                "state": record.map_or(NO_DATA, |r| r.state.as_str()),
                "since_ms": record.map(|r| r.since_ms),
                "evaluated_ms": record.map(|r| r.evaluated_ms),
                "value": detail["value"],
                "no_data": detail["no_data"],
                "actions": alert.actions.iter().map(|a| match a {
                    AlertAction::Invoke(f) => format!("invoke {f}"),
                    AlertAction::Queue(q) => format!("queue {q}"),
                    AlertAction::Webhook { url, .. } => format!("webhook {url}"),
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let history: Vec<Value> = state
        .store
        .alert_history(&app, params.history.min(HISTORY_KEPT))
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "at_ms": c.at_ms,
                "from": c.from,
                "to": c.to,
                "detail": serde_json::from_str::<Value>(&c.detail).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({ "app": app, "alerts": alerts, "history": history })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(manifest_alert: &str) -> AlertSpec {
        let text = format!(
            "app: a\nfunctions:\n  f:\n    runtime: python3\n    handler: m.h\nalerts:\n  x:\n{manifest_alert}    actions: [ {{ invoke: f }} ]\n"
        );
        stratus_manifest::parse("stratus.yaml", &text)
            .unwrap()
            .alerts
            .remove("x")
            .unwrap()
    }

    fn record(state: &str, since: i64) -> AlertRecord {
        AlertRecord {
            app: "a".into(),
            name: "x".into(),
            state: state.into(),
            since_ms: since,
            evaluated_ms: since,
            detail: "{}".into(),
        }
    }

    #[test]
    fn an_alert_fires_after_holding_for_its_for_and_resolves() {
        let a = alert("    metric: errors\n    function: f\n    above: 2\n    for: 10s\n");
        // No data yet, then fine.
        assert_eq!(next_state(None, &a, &Err("no".into()), 0), (NO_DATA, 0));
        assert_eq!(
            next_state(Some(&record(NO_DATA, 0)), &a, &Ok(1.0), 5),
            (OK, 5)
        );
        // Holds: pending, and firing once it held 10 s.
        let pending = next_state(Some(&record(OK, 5)), &a, &Ok(3.0), 1_000);
        assert_eq!(pending, (PENDING, 1_000));
        assert_eq!(
            next_state(Some(&record(PENDING, 1_000)), &a, &Ok(3.0), 10_999),
            (PENDING, 1_000)
        );
        assert_eq!(
            next_state(Some(&record(PENDING, 1_000)), &a, &Ok(3.0), 11_000),
            (FIRING, 11_000)
        );
        // A gap in the data keeps it firing; then it resolves.
        assert_eq!(
            next_state(Some(&record(FIRING, 11_000)), &a, &Err("no".into()), 12_000),
            (FIRING, 11_000)
        );
        assert_eq!(
            next_state(Some(&record(FIRING, 11_000)), &a, &Ok(0.0), 13_000),
            (OK, 13_000)
        );
        // Pending that stops holding is fine again, without firing.
        assert_eq!(
            next_state(Some(&record(PENDING, 1_000)), &a, &Ok(0.0), 2_000),
            (OK, 2_000)
        );
        // Without `for:` it fires at once; `below` watches for too few.
        let quiet = alert("    metric: invocations\n    function: f\n    below: 1\n");
        assert_eq!(
            next_state(Some(&record(OK, 0)), &quiet, &Ok(0.0), 7),
            (FIRING, 7)
        );
    }

    fn totals(outcomes: [u64; 6], durations: &[(usize, u64)]) -> Totals {
        let mut t = outcomes.to_vec();
        t.extend(std::iter::repeat_n(0, LATENCY_BOUNDS.len() + 1));
        for (i, n) in durations {
            t[Outcome::ALL.len() + i] = *n;
        }
        t
    }

    fn sample(nodes: &[(&str, Totals)]) -> Sample {
        nodes
            .iter()
            .map(|(node, t)| {
                (
                    node.to_string(),
                    HashMap::from([(("a".to_owned(), "f".to_owned()), t.clone())]),
                )
            })
            .collect()
    }

    #[test]
    fn windows_take_each_node_s_difference_and_survive_restarts() {
        let mut samples = Samples::default();
        samples.push(
            0,
            sample(&[("n1", totals([10, 1, 0, 0, 0, 0], &[]))]),
            60_000,
        );
        // Not a whole window yet.
        assert_eq!(samples.over("a", "f", 10_000), None);
        samples.push(
            10_000,
            sample(&[
                ("n1", totals([12, 3, 1, 4, 0, 0], &[(2, 5)])),
                // A node that started within the window.
                ("n2", totals([5, 0, 0, 0, 0, 0], &[])),
            ]),
            60_000,
        );
        let window = samples.over("a", "f", 10_000).unwrap();
        assert_eq!(&window[..6], &[7, 2, 1, 4, 0, 0]);
        assert_eq!(value_of(AlertMetric::Errors, &window), 3.0);
        assert_eq!(value_of(AlertMetric::Invocations, &window), 10.0);
        assert_eq!(value_of(AlertMetric::Throttles, &window), 4.0);
        assert_eq!(value_of(AlertMetric::ErrorRate, &window), 0.3);
        // n1 restarted: its totals went down, so they are all new.
        samples.push(
            20_000,
            sample(&[("n1", totals([1, 0, 0, 0, 0, 0], &[]))]),
            60_000,
        );
        let window = samples.over("a", "f", 10_000).unwrap();
        assert_eq!(&window[..6], &[1, 0, 0, 0, 0, 0]);
        assert_eq!(
            samples
                .over("a", "other", 10_000)
                .unwrap()
                .iter()
                .sum::<u64>(),
            0
        );
    }

    #[test]
    fn p99_is_interpolated_in_its_bucket() {
        let mut buckets = vec![0u64; LATENCY_BOUNDS.len() + 1];
        assert_eq!(p99_ms(&buckets), 0.0);
        // 100 in the bucket from 1 ms to 2 ms: the 99th is near 2 ms.
        buckets[2] = 100;
        assert!(
            (p99_ms(&buckets) - 1.99).abs() < 1e-9,
            "{}",
            p99_ms(&buckets)
        );
        // One slow one past every bound among 50: it is the p99.
        buckets[2] = 49;
        buckets[LATENCY_BOUNDS.len()] = 1;
        assert_eq!(
            p99_ms(&buckets),
            LATENCY_BOUNDS[LATENCY_BOUNDS.len() - 1] * 1000.0
        );
    }

    #[test]
    fn webhooks_are_signed_as_github_signs_them() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
