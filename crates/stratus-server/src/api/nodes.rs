//! `GET /v1/nodes`: the nodes that use the store, by their heartbeats.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiError;
use crate::AppState;
use crate::cluster::DOWN_AFTER_MS;

pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let now = crate::now_ms();
    let nodes: Vec<_> = state
        .store
        .list_nodes()
        .await?
        .into_iter()
        .map(|node| {
            let silent_ms = (now - node.heartbeat_ms).max(0);
            json!({
                "id": node.id,
                "this": node.id == state.node_id,
                "admin_url": node.admin_url,
                "public_url": node.public_url,
                "version": node.version,
                "uptime_ms": (node.heartbeat_ms - node.started_ms).max(0),
                "instances": node.instances,
                "heartbeat_ms": node.heartbeat_ms,
                "silent_ms": silent_ms,
                "up": silent_ms <= DOWN_AFTER_MS,
            })
        })
        .collect();
    Ok(Json(json!({ "nodes": nodes })).into_response())
}
