//! `GET /v1/logs`: stored log lines and report records.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::json;
use stratus_logs::LogQuery;

use super::ApiError;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogParams {
    app: Option<String>,
    function: Option<String>,
    request_id: Option<String>,
    /// Only records at or after this Unix time in milliseconds.
    since_ms: Option<i64>,
    /// Only records after this id (for following); oldest first.
    after_id: Option<i64>,
    limit: Option<u32>,
}

const MAX_LIMIT: u32 = 10_000;
/// Longest a query waits for the records sent before it to be stored.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    Query(params): Query<LogParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if params.function.is_some() && params.app.is_none() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "a function filter needs an app filter too",
        ));
    }
    // Records sent before this query (say, before the response a client
    // just read) are stored first. Following (`after_id`) polls anyway.
    if params.after_id.is_none() {
        let _ = tokio::time::timeout(FLUSH_WAIT, state.logs.flush()).await;
    }
    let records = state
        .logs
        .query(LogQuery {
            app: params.app,
            function: params.function,
            request_id: params.request_id,
            since_ms: params.since_ms,
            after_id: params.after_id,
            limit: params.limit.unwrap_or(200).clamp(1, MAX_LIMIT),
        })
        .await?;
    let last_id = records.last().map(|r| r.id).or(params.after_id);
    Ok(Json(json!({ "records": records, "last_id": last_id })))
}
