//! `GET /v1/logs`: stored log lines and report records; with `follow`, a
//! stream of them as they are stored (one JSON record per line), so that
//! a client need not poll.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use stratus_logs::{LogQuery, Logs};
use stratus_scheduler::StreamChunk;

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
    /// Only records before this Unix time in milliseconds.
    until_ms: Option<i64>,
    /// Only records whose message holds this text.
    contains: Option<String>,
    /// Only records after this id (for following); oldest first.
    after_id: Option<i64>,
    limit: Option<u32>,
    /// Stream the records, then those stored later, as JSON lines.
    #[serde(default)]
    follow: bool,
}

const MAX_LIMIT: u32 = 10_000;
/// Longest a query waits for the records sent before it to be stored.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How often a followed stream looks for new records.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// Records sent to a follower at a time.
const FOLLOW_BATCH: u32 = 1000;

pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    Query(params): Query<LogParams>,
) -> Result<Response, ApiError> {
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
    let query = LogQuery {
        app: params.app,
        function: params.function,
        request_id: params.request_id,
        since_ms: params.since_ms,
        until_ms: params.until_ms,
        contains: params.contains,
        after_id: params.after_id,
        limit: params.limit.unwrap_or(200).clamp(1, MAX_LIMIT),
    };
    if params.follow {
        return Ok(follow(state.logs.clone(), query));
    }
    let records = state.logs.query(query).await?;
    let last_id = records.last().map(|r| r.id).or(params.after_id);
    Ok(Json(json!({ "records": records, "last_id": last_id })).into_response())
}

/// The records `query` finds, then every later one that matches, as JSON
/// lines, until the client goes away.
fn follow(logs: Arc<dyn Logs>, mut query: LogQuery) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<StreamChunk>(4);
    tokio::spawn(async move {
        loop {
            let records = match logs.query(query.clone()).await {
                Ok(records) => records,
                Err(err) => {
                    tracing::warn!(%err, "cannot read logs for a follower");
                    Vec::new()
                }
            };
            if let Some(last) = records.last() {
                query.after_id = Some(last.id);
            } else if query.after_id.is_none() {
                // Nothing yet: follow from the start.
                query.after_id = Some(0);
            }
            query.limit = FOLLOW_BATCH;
            if !records.is_empty() {
                let mut lines = String::new();
                for record in &records {
                    lines.push_str(&json!(record).to_string());
                    lines.push('\n');
                }
                if tx
                    .send(StreamChunk::Data(Bytes::from(lines)))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
                () = tx.closed() => return,
            }
        }
    });
    let mut response = Body::new(crate::public::ChannelBody::new(Bytes::new(), rx)).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    response
}
