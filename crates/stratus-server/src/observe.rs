//! What operators' tools read of a node without credentials: `/healthz`
//! (the process answers), `/readyz` (it can serve traffic) on every
//! listener, and `/metrics` (Prometheus) on the admin listener or
//! `--metrics-listen`, behind `--metrics-token` when one is set.
//!
//! Ready means the node serves: it is not shutting down. A store that
//! does not answer leaves it ready, since deployed functions still run
//! (a load balancer must not drain every node during a database outage);
//! `/readyz?verbose` and the `stratus_store_up` metric report the store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use stratus_metrics::{Format, Metrics};

use crate::AppState;

/// The longest the store may take to answer a probe or a scrape's queries.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `/metrics`, `/healthz` and `/readyz`: the admin listener's
/// unauthenticated routes, and all that `--metrics-listen` serves.
pub(crate) fn router<S>(state: Arc<AppState>) -> Router<S> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn healthz() -> Response {
    let (status, body) = liveness();
    json_response(status, body)
}

/// The process answers.
fn liveness() -> (StatusCode, serde_json::Value) {
    (StatusCode::OK, json!({ "status": "alive" }))
}

async fn readyz(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (status, body) = readiness(&state, is_verbose(request.uri().query())).await;
    json_response(status, body)
}

/// Whether this node serves traffic, and with `verbose`, how its parts
/// are.
pub(crate) async fn readiness(state: &AppState, verbose: bool) -> (StatusCode, serde_json::Value) {
    let stopping = state.scheduler.is_shutting_down();
    let status = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut body = json!({ "status": if stopping { "stopping" } else { "ready" } });
    if verbose {
        let (up, latency, error) = probe_store(state).await;
        body["store"] = json!({
            "up": up,
            "latency_ms": latency.map(|s| (s * 1e6).round() / 1e3),
            "error": error,
            "note": "the node stays ready while the store is down: deployed functions still run",
        });
        body["node"] = json!(state.node_id);
    }
    (status, body)
}

/// Asks the store something small: whether it answered, how fast, and
/// why not.
async fn probe_store(state: &AppState) -> (bool, Option<f64>, Option<String>) {
    let began = Instant::now();
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, state.store.active_versions()).await {
        Ok(Ok(_)) => (true, Some(began.elapsed().as_secs_f64()), None),
        Ok(Err(err)) => (false, None, Some(err.to_string())),
        Err(_) => (
            false,
            None,
            Some(format!(
                "no answer within {}s",
                STORE_PROBE_TIMEOUT.as_secs()
            )),
        ),
    }
}

async fn metrics(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let metrics = state.scheduler.metrics().clone();
    if !metrics.enabled() {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({ "error": { "code": "metrics_off", "message": "this server runs with --metrics=false" } }),
        );
    }
    if let Some(token) = &state.config.metrics_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !crate::api::constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return json_response(
                StatusCode::UNAUTHORIZED,
                json!({ "error": { "code": "unauthorized", "message": "send `Authorization: Bearer` with the metrics token (--metrics-token); Prometheus: `authorization: { credentials: ... }` in the scrape config" } }),
            );
        }
    }
    let format = Format::negotiate(
        request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    // One scrape at a time sets the state it reads.
    let _one = state.scrapes.lock().await;
    metrics.set_state(&scrape_state(&state).await);
    let mut response = metrics.encode(format).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

/// What a scrape reads: this node's instances, and the store's queued
/// events and messages.
async fn scrape_state(state: &AppState) -> stratus_metrics::State {
    let mut out = stratus_metrics::State::default();
    let scheduler = &state.scheduler;
    let mut instances = 0;
    for app in scheduler.apps() {
        for pool in scheduler.app_pools(&app) {
            let stats = pool.stats();
            instances += u64::from(stats.instances);
            out.functions.push(stratus_metrics::FunctionState {
                app: pool.config.app.clone(),
                function: pool.config.spec.name.clone(),
                version: pool.config.version,
                busy: u64::from(stats.instances.saturating_sub(stats.idle)),
                idle: u64::from(stats.idle),
                waiting: u64::from(stats.waiting),
            });
        }
        for service in scheduler.app_services(&app) {
            let s = service.status();
            instances += (s.ready + s.starting + s.draining) as u64;
            out.services.push(stratus_metrics::ServiceState {
                app: app.clone(),
                service: s.name.clone(),
                version: s.version,
                ready: s.ready as u64,
                starting: s.starting as u64,
                draining: s.draining as u64,
            });
        }
    }
    let now = crate::now_ms();
    let began = Instant::now();
    let counts = tokio::time::timeout(STORE_PROBE_TIMEOUT, async {
        let events = state.store.count_events(None, now).await?;
        let messages = state.store.count_messages(None, now).await?;
        let storage = state.store.object_usage(None).await?;
        Ok::<_, stratus_store::StoreError>((events, messages, storage))
    })
    .await;
    match counts {
        Ok(Ok((events, messages, storage))) => {
            out.storage = storage
                .into_iter()
                .map(|u| stratus_metrics::StorageState {
                    app: u.app,
                    objects: u.objects,
                    bytes: u.bytes,
                })
                .collect();
            out.node.store_up = true;
            out.node.store_latency_seconds = Some(began.elapsed().as_secs_f64());
            out.events = events
                .into_iter()
                .map(|e| stratus_metrics::EventState {
                    app: e.app,
                    function: e.function,
                    queued: e.queued,
                    in_flight: e.in_flight,
                    dead: e.dead,
                    oldest_age_seconds: e
                        .oldest_queued_ms
                        .map(|at| (now - at).max(0) as f64 / 1000.0),
                })
                .collect();
            out.queues = messages
                .into_iter()
                .map(|q| stratus_metrics::QueueState {
                    app: q.app,
                    queue: q.queue,
                    queued: q.queued,
                    in_flight: q.in_flight,
                })
                .collect();
        }
        Ok(Err(err)) => {
            tracing::warn!(%err, "a metrics scrape cannot read the store");
        }
        Err(_) => tracing::warn!("a metrics scrape's store queries took too long"),
    }
    out.node.instances = instances;
    out.node.prestarted = scheduler.prestarted() as u64;
    out.node.resident_memory_bytes = resident_memory_bytes().unwrap_or(0);
    out.node.log_records_dropped = state.logs.dropped();
    out
}

/// The server process's resident memory, from `/proc/self/statm`.
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The public listener's probes.
pub(crate) struct Probes(pub Arc<AppState>);

#[async_trait::async_trait]
impl crate::public::Probes for Probes {
    async fn probe(
        &self,
        name: &str,
        query: Option<&str>,
    ) -> Option<(StatusCode, serde_json::Value)> {
        match name {
            "healthz" => Some(liveness()),
            "readyz" => Some(readiness(&self.0, is_verbose(query)).await),
            _ => None,
        }
    }
}

fn is_verbose(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    })
}

/// Metrics as `--metrics` asks: on, or off.
pub(crate) fn metrics_for(on: bool) -> Metrics {
    if on { Metrics::new() } else { Metrics::off() }
}
