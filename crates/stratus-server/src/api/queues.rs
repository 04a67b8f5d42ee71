//! The app's queues: `POST /v1/apps/{app}/queues/{queue}/messages` sends a
//! message (the body, as it is), `GET /v1/apps/{app}/queues` lists the
//! queues with their consumers and counts.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use stratus_store::Source;

use super::ApiError;
use super::keys::require_app;
use crate::AppState;
use crate::triggers::queue::SendError;

/// Largest message, as on SQS.
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024;

pub(crate) async fn send(
    State(state): State<Arc<AppState>>,
    Path((app, queue)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
                format!(
                    "a message is at most {MAX_MESSAGE_BYTES} bytes; send a reference to larger data"
                ),
            )
        })?;
    let parent = crate::traces::parent_of(&headers);
    let ids = send_to(&state, &app, &queue, vec![body], Source::Send, parent).await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "app": app, "queue": queue, "message_id": ids[0] })),
    )
        .into_response())
}

/// Sends `bodies` to `app`'s `queue`, as the API answers it.
pub(crate) async fn send_to(
    state: &AppState,
    app: &str,
    queue: &str,
    bodies: Vec<Bytes>,
    source: Source,
    parent: Option<stratus_trace::Context>,
) -> Result<Vec<String>, ApiError> {
    let bytes = bodies.iter().map(|b| b.len() as u64).sum();
    state.quotas.admit(
        app,
        crate::quotas::Kind::Messages,
        bodies.len() as u64,
        bytes,
    )?;
    match state
        .triggers
        .queues
        .send(app, queue, bodies, source, parent)
        .await
    {
        Ok(ids) => Ok(ids),
        Err(SendError::NoSuchQueue { .. }) => {
            require_app(state, app).await?;
            let declared = state.triggers.queues.declared(app);
            Err(ApiError::not_found(format!(
                "app {app:?} declares no queue {queue:?}; {}",
                if declared.is_empty() {
                    "declare it under `queues:` in the manifest and deploy".to_owned()
                } else {
                    format!("its queues: {}", declared.join(", "))
                }
            )))
        }
        Err(SendError::Store(err)) => Err(err.into()),
    }
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    require_app(&state, &app).await?;
    let counts = state
        .store
        .count_messages(Some(&app), crate::now_ms())
        .await?;
    let queues: Vec<_> = state
        .triggers
        .queues
        .declared(&app)
        .into_iter()
        .map(|queue| {
            let c = counts.iter().find(|c| c.queue == queue);
            json!({
                "name": queue,
                "consumer": state.triggers.queues.consumer(&app, &queue),
                "queued": c.map_or(0, |c| c.queued),
                "in_flight": c.map_or(0, |c| c.in_flight),
            })
        })
        .collect();
    Ok(Json(json!({ "app": app, "queues": queues })).into_response())
}
