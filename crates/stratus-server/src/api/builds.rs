//! `stratus builds`: the record of each build of an app's dependencies.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};
use stratus_store::BuildRecord;

use super::ApiError;
use crate::AppState;

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Listing {
    limit: Option<usize>,
}

/// The build as `stratus builds` shows it; one cut short by its server's
/// crash or restart says `interrupted`.
fn summary(state: &AppState, build: &BuildRecord) -> Value {
    let detail: Value = serde_json::from_str(&build.detail).unwrap_or(Value::Null);
    let parts = detail["parts"].as_array().cloned().unwrap_or_default();
    let status = if state.builder.interrupted(build) {
        "interrupted"
    } else {
        build.status.as_str()
    };
    json!({
        "id": build.id,
        "status": status,
        "version": build.version,
        "started_ms": build.started_ms,
        "duration_ms": build.finished_ms.map(|f| f - build.started_ms),
        "cache_hits": parts.iter().filter(|p| p["cached"] == true).count(),
        "parts": parts,
        "error": detail["error"],
    })
}

/// `GET /v1/apps/{app}/builds?limit=N`: the newest builds, newest first.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    Query(listing): Query<Listing>,
) -> Result<Json<Value>, ApiError> {
    let limit = listing.limit.unwrap_or(20).min(1000);
    let builds = state.store.list_builds(&app, limit).await?;
    Ok(Json(json!({
        "app": app,
        "builds": builds.iter().map(|b| summary(&state, b)).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/apps/{app}/builds/{id}`: one build with its log.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let Some(build) = state.store.get_build(&app, &id).await? else {
        return Err(ApiError::not_found(format!(
            "app {app} has no build {id}; stratus builds ls {app} lists them"
        )));
    };
    let detail: Value = serde_json::from_str(&build.detail).unwrap_or(Value::Null);
    let mut out = summary(&state, &build);
    out["app"] = json!(app);
    out["log"] = detail["log"].clone();
    Ok(Json(out))
}

/// `GET /v1/runtimes`: the interpreters this node runs and builds for, and
/// its build tools (`stratus runtimes`; `deploy --build local` checks that
/// the deploying machine builds for the same).
pub(crate) async fn runtimes(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.builder.report())
}
