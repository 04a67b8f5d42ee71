//! Dead letters: events whose function failed them every time it was
//! allowed to, kept with their payload and last error until redriven or
//! deleted.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use stratus_store::DeadLetter;

use super::ApiError;
use super::keys::require_app;
use crate::AppState;

/// Most dead letters in one listing.
const MAX_LIST: u32 = 1000;

#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    function: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Redrive {
    #[serde(default)]
    function: Option<String>,
    #[serde(default)]
    ids: Option<Vec<i64>>,
}

fn describe(letter: &DeadLetter, with_payload: bool) -> serde_json::Value {
    let mut value = json!({
        "id": letter.id,
        "function": letter.function,
        "request_id": letter.request_id,
        "source": letter.source,
        "attempts": letter.attempts,
        "error": letter.error,
        "created_ms": letter.created_ms,
        "failed_ms": letter.failed_ms,
    });
    if with_payload {
        // Payloads are JSON when they came through the invoke API; show
        // anything else as text.
        value["payload"] = serde_json::from_slice(&letter.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&letter.payload).into_owned())
        });
    }
    value
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    require_app(&state, &app).await?;
    let letters = state
        .store
        .list_dead_letters(
            &app,
            params.function.as_deref(),
            params.after,
            params.limit.unwrap_or(MAX_LIST).min(MAX_LIST),
        )
        .await?;
    let letters: Vec<_> = letters.iter().map(|l| describe(l, false)).collect();
    Ok(Json(json!({ "dead_letters": letters })).into_response())
}

pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path((app, id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    require_app(&state, &app).await?;
    match state.store.get_dead_letter(&app, id).await? {
        Some(letter) => Ok(Json(describe(&letter, true)).into_response()),
        None => Err(ApiError::not_found(format!(
            "app {app} has no dead letter {id}; `stratus dlq ls {app}` lists them"
        ))),
    }
}

pub(crate) async fn redrive(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_app(&state, &app).await?;
    let request: Redrive = if body.iter().all(u8::is_ascii_whitespace) {
        Redrive::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::bad_request(
                "invalid_request",
                format!(
                    "send {{\"function\": \"fn\", \"ids\": [1, 2]}}, either, or nothing: {err}"
                ),
            )
        })?
    };
    let redriven = state
        .store
        .redrive_dead_letters(
            &app,
            request.function.as_deref(),
            request.ids,
            crate::now_ms(),
        )
        .await?;
    state.events.wake();
    Ok(Json(json!({ "redriven": redriven })).into_response())
}
