//! Requests that build (deploys) answer as a stream of JSON lines when the
//! client accepts `application/x-ndjson`: `{"step": ...}` as each step
//! begins, `{"line": ...}` for its output, and last `{"done": RESPONSE}`
//! or `{"error": {...}}` with the status the plain answer would have had
//! in `"status"`. Otherwise they answer once, as any request does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use super::ApiError;
use crate::build::{Progress, Sink};

pub(crate) const NDJSON: &str = "application/x-ndjson";

/// Runs `work` with a sink, answering as the client asked.
pub(crate) async fn answer<T, F, Fut>(headers: &HeaderMap, work: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(Arc<Sink>) -> Fut,
    Fut: Future<Output = Result<T, ApiError>> + Send + 'static,
{
    let streams = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON));
    if !streams {
        // Run apart, so a client that hangs up does not cut a build and
        // deploy short half-way.
        return match tokio::spawn(work(Sink::new(None))).await {
            Ok(Ok(done)) => Json(done).into_response(),
            Ok(Err(err)) => err.into_response(),
            Err(err) => ApiError::internal("the deploy stopped unexpectedly", err).into_response(),
        };
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Sink::new(Some(tx));
    let run = work(sink.clone());
    tokio::spawn(async move {
        let outcome = match run.await {
            Ok(done) => serde_json::json!({ "done": done }),
            Err(err) => {
                let mut body = err.body();
                body["status"] = err.status.as_u16().into();
                body
            }
        };
        sink.done(outcome);
    });
    let mut response = Response::new(axum::body::Body::new(Lines { rx }));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    response
}

/// The stream's body: one JSON line per piece of progress, ending after
/// the outcome.
struct Lines {
    rx: mpsc::UnboundedReceiver<Progress>,
}

impl http_body::Body for Lines {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let Some(progress) = std::task::ready!(self.rx.poll_recv(cx)) else {
            return Poll::Ready(None);
        };
        let (value, last) = match progress {
            Progress::Step(text) => (serde_json::json!({ "step": text }), false),
            Progress::Line(text) => (serde_json::json!({ "line": text }), false),
            Progress::Done(outcome) => (outcome, true),
        };
        if last {
            self.rx.close();
        }
        let mut line = value.to_string();
        line.push('\n');
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(line)))))
    }
}
