//! `GET /v1/status`: every function and service with its instances by
//! state and, for services, restarts and recent errors. Where nodes share
//! the store, the instances of every live node count, each as its last
//! heartbeat reported them (at most a few seconds old); recent errors and
//! the instance list are this node's.

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
    let storage = state.store.object_usage(query.app.as_deref()).await?;
    let (nodes, others) = other_nodes(&state).await;
    // What the other nodes run of `app`'s `kind` `name`: the sums of each
    // count they reported.
    let elsewhere = |app: &str, kind: &str, name: &str, len: usize| -> Vec<u64> {
        let mut sums = vec![0u64; len];
        for report in &others {
            if let Some(counts) = report[app][kind][name].as_array() {
                for (sum, count) in sums.iter_mut().zip(counts) {
                    *sum += count.as_u64().unwrap_or(0);
                }
            }
        }
        sums
    };
    let apps: Vec<_> = versions
        .iter()
        .map(|version| {
            let functions: Vec<_> = state
                .scheduler
                .app_pools(&version.app)
                .iter()
                .map(|pool| {
                    let stats = pool.stats();
                    let more = elsewhere(&version.app, "functions", &pool.config.spec.name, 3);
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
                            "busy": stats.instances.saturating_sub(stats.idle) as u64 + more[0],
                            "idle": stats.idle as u64 + more[1],
                        },
                        "waiting": stats.waiting as u64 + more[2],
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
                    let more = elsewhere(&version.app, "services", &s.name, 5);
                    json!({
                        "name": s.name,
                        "version": s.version,
                        "instances": {
                            "ready": s.ready as u64 + more[0],
                            "starting": s.starting as u64 + more[1],
                            "draining": s.draining as u64 + more[2],
                        },
                        "in_flight": s.in_flight as u64 + more[3],
                        "waiting": s.waiting as u64 + more[4],
                        "restarts": s.restarts,
                        "min_instances": s.min_instances,
                        "max_instances": s.max_instances,
                        "backoff_ms": s.backoff_ms,
                        "errors": s.errors,
                        "instance_list": s.instance_list,
                    })
                })
                .collect();
            let usage = storage.iter().find(|u| u.app == version.app);
            json!({
                "app": version.app,
                "version": version.version,
                "functions": functions,
                "services": services,
                "storage": usage.map(|u| json!({
                    "buckets": u.buckets, "objects": u.objects, "bytes": u.bytes,
                })),
            })
        })
        .collect();
    Ok(Json(json!({
        "apps": apps,
        "nodes": nodes,
        // This node's share of each app's instance cap.
        "app_max_instances": state.scheduler.app_cap_share(),
    }))
    .into_response())
}

/// How many nodes are live (this one included), and the reports of the
/// others, where nodes share the store.
async fn other_nodes(state: &AppState) -> (usize, Vec<serde_json::Value>) {
    if state.shared_packages.is_none() {
        return (1, Vec::new());
    }
    // The status still answers, for this node, without the store.
    let Ok(nodes) = state.store.list_nodes().await else {
        return (1, Vec::new());
    };
    let now = crate::now_ms();
    let live: Vec<_> = nodes
        .iter()
        .filter(|n| crate::cluster::is_live(n, now))
        .collect();
    let others = live
        .iter()
        .filter(|n| n.id != state.node_id)
        .filter_map(|n| serde_json::from_str(&n.report).ok())
        .collect();
    (live.len().max(1), others)
}
