//! Failed invocations' scenes, kept for `stratus failures`: the event,
//! the error and its stack, the last log lines, the phases, peak memory,
//! the version and the names of the function's variables.
//!
//! The scheduler hands each scene over on the invocation's path
//! ([`Keeper::failed`] never blocks: past [`QUEUE`] waiting scenes, more
//! are dropped and counted); a task adds the invocation's log lines once
//! they have been written, stores the scene, and trims the app's to the
//! retention (`--failure-retention`) and the count per function
//! (`--failures-kept`).
//!
//! `GET /v1/apps/{app}/failures[?function=]`, `GET /v1/failures/{id}`
//! and `POST /v1/failures/{id}/replay` (the same event, on the active
//! version) serve them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use stratus_logs::Logs;
use stratus_scheduler::{FailureSink, Invocation, Scene};
use stratus_store::{FailureRecord, LogQuery, Store};
use tokio::sync::mpsc;

use crate::AppState;
use crate::api::ApiError;

/// Scenes waiting to be stored before more are dropped.
const QUEUE: usize = 1024;
/// How long after a failure its log lines are read: long enough for the
/// log writer to have stored them.
const LOGS_SETTLE: Duration = Duration::from_millis(500);
/// The last lines of the invocation a scene keeps.
const LOG_LINES: u32 = 50;
/// Failures listed at most.
const MAX_LIST: usize = 1000;

/// Where scenes go, and how many were dropped.
#[derive(Debug)]
pub(crate) struct Keeper {
    tx: mpsc::Sender<(Scene, i64)>,
    dropped: AtomicU64,
}

impl FailureSink for Keeper {
    fn failed(&self, scene: Scene) {
        if self.tx.try_send((scene, crate::now_ms())).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "failure scenes dropped: they came faster than they could be stored"
                );
            }
        }
    }
}

/// How long and how many scenes are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    pub max_age: Duration,
    pub per_function: usize,
    pub max_event_bytes: usize,
}

/// A keeper, and the receiver its task ([`keep`]) stores from.
pub(crate) fn keeper() -> (Arc<Keeper>, mpsc::Receiver<(Scene, i64)>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (
        Arc::new(Keeper {
            tx,
            dropped: AtomicU64::new(0),
        }),
        rx,
    )
}

/// Stores each scene `rx` brings, with its log lines.
pub(crate) async fn keep(
    store: Arc<dyn Store>,
    logs: Arc<dyn Logs>,
    retention: Retention,
    mut rx: mpsc::Receiver<(Scene, i64)>,
) {
    while let Some((scene, at_ms)) = rx.recv().await {
        let settle = at_ms + LOGS_SETTLE.as_millis() as i64 - crate::now_ms();
        if settle > 0 {
            tokio::time::sleep(Duration::from_millis(settle as u64)).await;
        }
        let lines = logs
            .query(LogQuery {
                app: Some(scene.app.clone()),
                function: Some(scene.function.clone()),
                request_id: Some(scene.request_id.clone()),
                limit: LOG_LINES,
                ..LogQuery::default()
            })
            .await
            .unwrap_or_default();
        let record = record(&scene, at_ms, &lines, retention.max_event_bytes);
        let app = record.app.clone();
        if let Err(err) = store.put_failure(record).await {
            tracing::warn!(app, %err, "cannot keep a failure's scene");
            continue;
        }
        let oldest = crate::now_ms() - retention.max_age.as_millis() as i64;
        if let Err(err) = store
            .trim_failures(&app, retention.per_function, oldest)
            .await
        {
            tracing::warn!(app, %err, "cannot trim the failures kept");
        }
    }
}

/// A failure's id: when it happened, sortable, and random characters.
fn failure_id(at_ms: i64) -> String {
    let mut salt = [0u8; 4];
    let _ = getrandom::fill(&mut salt);
    format!("f{at_ms:013}-{}", crate::hex::encode(&salt))
}

fn record(
    scene: &Scene,
    at_ms: i64,
    lines: &[stratus_store::StoredLog],
    max_event_bytes: usize,
) -> FailureRecord {
    let kept = scene.event.len() <= max_event_bytes;
    let logs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| {
            json!({
                "ts_ms": l.record.ts_ms,
                "stream": l.record.stream,
                "message": l.record.message,
            })
        })
        .collect();
    FailureRecord {
        id: failure_id(at_ms),
        app: scene.app.clone(),
        function: scene.function.clone(),
        version: scene.version,
        request_id: scene.request_id.clone(),
        at_ms,
        outcome: scene.outcome.to_owned(),
        error_type: scene.error.error_type.clone(),
        event: if kept {
            scene.event.to_vec()
        } else {
            Vec::new()
        },
        scene: json!({
            "error": scene.error,
            "logs": logs,
            "phases": scene.phases,
            "max_memory_mb": scene.max_memory_mb,
            "cold": scene.cold,
            "instance": scene.instance,
            "env_names": scene.env_names,
            "event_bytes": scene.event.len(),
            "event_kept": kept,
        })
        .to_string(),
    }
}

/// A failure as the API shows it: the event as JSON when it is.
fn shown(f: &FailureRecord, with_scene: bool) -> serde_json::Value {
    let mut it = json!({
        "id": f.id,
        "app": f.app,
        "function": f.function,
        "version": f.version,
        "request_id": f.request_id,
        "at_ms": f.at_ms,
        "outcome": f.outcome,
        "error_type": f.error_type,
    });
    if with_scene {
        it["event"] = serde_json::from_slice(&f.event)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&f.event)));
        it["scene"] = serde_json::from_str(&f.scene).unwrap_or_default();
    }
    it
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    function: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(100).min(MAX_LIST);
    let failures = state
        .store
        .list_failures(&app, query.function.as_deref(), limit)
        .await?;
    let failures: Vec<_> = failures.iter().map(|f| shown(f, false)).collect();
    Ok(Json(json!({ "app": app, "failures": failures })).into_response())
}

async fn find(state: &AppState, id: &str) -> Result<FailureRecord, ApiError> {
    state.store.get_failure(id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no failure {id}; `stratus failures ls APP` lists those kept"
        ))
    })
}

pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let failure = find(&state, &id).await?;
    Ok(Json(shown(&failure, true)).into_response())
}

/// Invokes the failure's function again with its event, on the active
/// version, and answers both outcomes.
#[derive(Debug, Deserialize)]
pub(crate) struct ReplayParams {
    /// Replay on this version (one this node keeps) instead of the active
    /// one.
    version: Option<u32>,
}

pub(crate) async fn replay(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<ReplayParams>,
) -> Result<Response, ApiError> {
    let failure = find(&state, &id).await?;
    let scene: serde_json::Value = serde_json::from_str(&failure.scene).unwrap_or_default();
    if scene["event_kept"] == false {
        return Err(ApiError::bad_request(
            "event_not_kept",
            format!(
                "the event of {id} ({} bytes) was larger than --failure-max-event-bytes and was not kept; it cannot be replayed",
                scene["event_bytes"]
            ),
        ));
    }
    let invocation = Invocation::new(bytes::Bytes::from(failure.event.clone()));
    let active = state
        .scheduler
        .pool(&failure.app, &failure.function)
        .map(|pool| pool.config.version);
    let outcome = match params.version {
        Some(version) if Some(version) != active => {
            let config = version_config(&state, &failure, version).await?;
            state.scheduler.invoke_detached(config, invocation).await
        }
        _ => {
            state
                .scheduler
                .invoke(&failure.app, &failure.function, invocation)
                .await
        }
    }
    .map_err(crate::api::invoke_error)?;
    let (result, error) = match &outcome.result {
        Ok(body) => (
            serde_json::from_slice(body).unwrap_or_else(|_| json!(String::from_utf8_lossy(body))),
            serde_json::Value::Null,
        ),
        Err(error) => (serde_json::Value::Null, json!(error)),
    };
    Ok(Json(json!({
        "original": shown(&failure, true),
        "replay": {
            "request_id": outcome.request_id,
            "version": outcome.version,
            "ok": outcome.result.is_ok(),
            "result": result,
            "error": error,
            "duration_ms": outcome.phases.duration_ms,
        },
    }))
    .into_response())
}

/// The failed function as version `version` of its app had it, when this
/// node still keeps that version's code.
async fn version_config(
    state: &AppState,
    failure: &FailureRecord,
    version: u32,
) -> Result<stratus_scheduler::FunctionConfig, ApiError> {
    let (app, function) = (&failure.app, &failure.function);
    let versions = state.store.list_versions(app).await?;
    let Some(record) = versions.into_iter().find(|v| v.version == version) else {
        return Err(ApiError::not_found(format!(
            "{app} has no version {version}; `stratus versions {app}` lists them"
        )));
    };
    let configs =
        crate::function_configs(&state.config.data_dir, &record, &state.secrets.values(app));
    let Some(config) = configs.into_iter().find(|c| c.spec.name == *function) else {
        return Err(ApiError::not_found(format!(
            "version {version} of {app} has no function {function}"
        )));
    };
    if !config.code_dir.is_dir() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "version_not_kept",
            format!(
                "this node no longer keeps the code of version {version} of {app} (it keeps the last --keep-versions); replay on a newer one, or deploy that code again"
            ),
        ));
    }
    Ok(config)
}
