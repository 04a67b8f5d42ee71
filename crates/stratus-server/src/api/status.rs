//! `GET /v1/status`: every function and service with its instances by
//! state and, for services, restarts and recent errors.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::api::ApiError;

#[derive(Debug, Deserialize)]
pub(crate) struct StatusQuery {
    app: Option<String>,
}

pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    Query(query): Query<StatusQuery>,
) -> Result<Response, ApiError> {
    let versions = match &query.app {
        Some(app) => match state.store.active_version(app).await? {
            Some(version) => vec![version],
            None => return Err(crate::deploy::status_for_missing_app(app)),
        },
        None => state.store.active_versions().await?,
    };
    let counts = state
        .store
        .count_events(query.app.as_deref(), crate::now_ms())
        .await?;
    let apps: Vec<_> = versions
        .iter()
        .map(|version| {
            let functions: Vec<_> = state
                .scheduler
                .app_pools(&version.app)
                .iter()
                .map(|pool| {
                    let stats = pool.stats();
                    let events = counts
                        .iter()
                        .find(|c| c.app == version.app && c.function == pool.config.spec.name);
                    json!({
                        "events": {
                            "queued": events.map_or(0, |c| c.queued),
                            "in_flight": events.map_or(0, |c| c.in_flight),
                            "dead": events.map_or(0, |c| c.dead),
                        },
                        "name": pool.config.spec.name,
                        "version": pool.config.version,
                        "runtime": pool.config.spec.runtime,
                        "instances": {
                            "busy": stats.instances.saturating_sub(stats.idle),
                            "idle": stats.idle,
                        },
                        "waiting": stats.waiting,
                        "min_instances": pool.config.spec.min_instances,
                        "max_instances": pool.config.spec.max_instances,
                        "errors": pool.recent_errors(),
                    })
                })
                .collect();
            let services: Vec<_> = state
                .scheduler
                .app_services(&version.app)
                .iter()
                .map(|service| {
                    let s = service.status();
                    json!({
                        "name": s.name,
                        "version": s.version,
                        "instances": {
                            "ready": s.ready,
                            "starting": s.starting,
                            "draining": s.draining,
                        },
                        "in_flight": s.in_flight,
                        "waiting": s.waiting,
                        "restarts": s.restarts,
                        "min_instances": s.min_instances,
                        "max_instances": s.max_instances,
                        "backoff_ms": s.backoff_ms,
                        "errors": s.errors,
                        "instance_list": s.instance_list,
                    })
                })
                .collect();
            json!({
                "app": version.app,
                "version": version.version,
                "functions": functions,
                "services": services,
            })
        })
        .collect();
    Ok(Json(json!({ "apps": apps })).into_response())
}
