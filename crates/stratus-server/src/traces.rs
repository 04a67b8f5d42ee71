//! Traces: the spans the scheduler, the platform API, the event
//! dispatcher and the triggers record, kept in the store's `Spans` for
//! `--trace-retention` (`stratus trace`) and exported, when
//! `--otlp-endpoint` names a collector, as OTLP over HTTP (protobuf).
//!
//! Recording never waits: [`Collector::record`] queues a batch and drops
//! it (counted) when [`QUEUE`] batches wait already. One task stores what
//! came in every [`FLUSH`] (one transaction), hands it to the exporter's
//! own bounded queue (dropping, counted, when the collector is slow or
//! down) and trims by age once a minute.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value as JsonValue, json};
use stratus_metrics::{Metrics, SpanFate};
use stratus_store::{SpanRecord, Store};
use stratus_trace::{Context, Kind, Sink, Span, Tracer, Value};
use tokio::sync::mpsc;

use crate::AppState;
use crate::api::ApiError;

/// Batches of spans waiting to be stored before more are dropped.
const QUEUE: usize = 4096;
/// How often what came in is stored.
const FLUSH: Duration = Duration::from_millis(200);
/// Batches waiting for the exporter before more are dropped.
const EXPORT_QUEUE: usize = 64;
/// Spans in one export request at most.
const EXPORT_BATCH: usize = 2048;
/// How long the collector has to answer an export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Spans of one trace shown at most.
const MAX_SPANS: usize = 10_000;

/// The trace context a request arrives in: its `traceparent`, or else
/// the X-Ray header AWS SDKs send (`X-Amzn-Trace-Id`, from the
/// `_X_AMZN_TRACE_ID` a function is given).
pub(crate) fn parent_of(headers: &HeaderMap) -> Option<Context> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    text("traceparent")
        .and_then(Context::from_traceparent)
        .or_else(|| text("x-amzn-trace-id").and_then(Context::from_xray))
}

/// Records the span of work put on a queue (an event, a message) under
/// `parent`, the context of whoever queued it, from `started_ns` until
/// now; the queued work carries the context this returns, as its
/// `traceparent`, so that whoever takes it continues the trace.
pub(crate) fn produce(
    tracer: &Tracer,
    parent: Option<Context>,
    app: &str,
    name: String,
    started_ns: u64,
) -> Context {
    let context = Tracer::child_or_root(parent.as_ref());
    tracer.record(vec![Span::new(
        context,
        parent.map(|p| p.span_id),
        name,
        Kind::Producer,
        app,
        started_ns,
        stratus_trace::now_ns(),
    )]);
    context
}

/// The context queued work carries (its stored `traceparent`).
pub(crate) fn carried(trace: Option<&str>) -> Option<Context> {
    trace.and_then(Context::from_traceparent)
}

/// Where the node's spans go.
#[derive(Debug)]
pub(crate) struct Collector {
    tx: mpsc::Sender<Vec<Span>>,
    metrics: Metrics,
}

impl Sink for Collector {
    fn record(&self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        if self.tx.try_send(spans).is_err() {
            self.metrics.spans(n, SpanFate::Dropped("queue"));
        }
    }
}

/// How spans are kept and where they are exported.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub retention: Duration,
    /// The collector's traces endpoint (`…/v1/traces`).
    pub otlp: Option<hyper::Uri>,
    /// This node, as the exported resources' `host.name`.
    pub node: String,
}

/// A collector, and the receiver [`keep`] stores from.
pub(crate) fn collector(metrics: Metrics) -> (Arc<Collector>, mpsc::Receiver<Vec<Span>>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Arc::new(Collector { tx, metrics }), rx)
}

/// The traces endpoint of `--otlp-endpoint`: a collector's base address
/// (`http://collector:4318`) gets OTLP's `/v1/traces`; an address that
/// names a path is used as it is.
pub(crate) fn otlp_endpoint(given: &str) -> anyhow::Result<hyper::Uri> {
    let uri: hyper::Uri = given.parse().map_err(|err| {
        anyhow::anyhow!("--otlp-endpoint {given}: not an address ({err}); give the collector's OTLP/HTTP address, such as http://127.0.0.1:4318")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => anyhow::bail!(
            "--otlp-endpoint {given}: {other}:// is not supported; export over http:// (a collector's OTLP/HTTP port, 4318, on this host or network)"
        ),
        None => anyhow::bail!(
            "--otlp-endpoint {given}: give the scheme and host, such as http://127.0.0.1:4318"
        ),
    }
    if matches!(uri.path(), "" | "/") {
        let base = given.trim_end_matches('/');
        return Ok(format!("{base}/v1/traces").parse()?);
    }
    Ok(uri)
}

/// Stores, exports and trims spans until the collector's senders are gone.
pub(crate) async fn keep(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Vec<Span>>,
    settings: Settings,
    metrics: Metrics,
) {
    let export = settings.otlp.clone().map(|endpoint| {
        let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
        tokio::spawn(export(endpoint, settings.node.clone(), rx, metrics.clone()));
        tx
    });
    let mut trimmed_at = tokio::time::Instant::now();
    while let Some(first) = rx.recv().await {
        let mut spans = first;
        let deadline = tokio::time::Instant::now() + FLUSH;
        while let Ok(Some(more)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            spans.extend(more);
        }
        while let Ok(more) = rx.try_recv() {
            spans.extend(more);
        }
        let n = spans.len() as u64;
        let records = spans.iter().map(record).collect();
        match store.put_spans(records).await {
            Ok(()) => metrics.spans(n, SpanFate::Stored),
            Err(err) => {
                metrics.spans(n, SpanFate::Dropped("store"));
                tracing::warn!(%err, spans = n, "spans not stored");
            }
        }
        if let Some(export) = &export
            && export.try_send(spans).is_err()
        {
            metrics.spans(n, SpanFate::Dropped("export"));
        }
        if trimmed_at.elapsed() >= Duration::from_secs(60) {
            trimmed_at = tokio::time::Instant::now();
            let before = stratus_trace::ns_before(stratus_trace::now_ns(), settings.retention);
            if let Err(err) = store.trim_spans(before as i64).await {
                tracing::warn!(%err, "old spans not trimmed");
            }
        }
    }
}

/// Posts batches to the collector, one request at a time.
async fn export(
    endpoint: hyper::Uri,
    node: String,
    mut rx: mpsc::Receiver<Vec<Span>>,
    metrics: Metrics,
) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut failures = 0u64;
    while let Some(mut spans) = rx.recv().await {
        while spans.len() < EXPORT_BATCH {
            match rx.try_recv() {
                Ok(more) => spans.extend(more),
                Err(_) => break,
            }
        }
        let n = spans.len() as u64;
        let body = stratus_trace::otlp::encode(&spans, &node);
        let request = hyper::Request::post(endpoint.clone())
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let outcome = tokio::time::timeout(EXPORT_TIMEOUT, client.request(request)).await;
        let failed = match outcome {
            Ok(Ok(response)) if response.status().is_success() => None,
            Ok(Ok(response)) => Some(format!("the collector answered {}", response.status())),
            Ok(Err(err)) => Some(format!("{err}")),
            Err(_) => Some(format!(
                "the collector did not answer within {EXPORT_TIMEOUT:?}"
            )),
        };
        match failed {
            None => metrics.spans(n, SpanFate::Exported),
            Some(reason) => {
                metrics.spans(n, SpanFate::Dropped("export"));
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(endpoint = %endpoint, %reason, failures, "spans not exported");
                }
            }
        }
    }
}

fn record(span: &Span) -> SpanRecord {
    let attributes: Map<String, JsonValue> = span
        .attributes
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Str(text) => json!(text),
                Value::Int(n) => json!(n),
                Value::Bool(b) => json!(b),
            };
            ((*key).to_owned(), value)
        })
        .collect();
    let links: Vec<String> = span
        .links
        .iter()
        .map(|link| format!("{}-{}", link.trace_id, link.span_id))
        .collect();
    SpanRecord {
        trace_id: span.context.trace_id.to_string(),
        span_id: span.context.span_id.to_string(),
        parent_id: span.parent.map(|p| p.to_string()),
        app: span.app.clone(),
        name: span.name.clone(),
        kind: span.kind.as_str().to_owned(),
        start_ns: span.start_ns as i64,
        end_ns: span.end_ns as i64,
        error: span.error.clone(),
        request_id: span.request_id.clone(),
        detail: json!({ "attributes": attributes, "links": links }).to_string(),
    }
}

/// `GET /v1/traces/{id}`: the spans of a trace, by its id or by the
/// request id of an invocation in it.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = id.trim().to_ascii_lowercase();
    let trace_id = if stratus_trace::TraceId::parse(&id).is_some() {
        Some(id.clone())
    } else {
        state.store.trace_of_request(&id).await?
    };
    let spans = match &trace_id {
        Some(trace_id) => state.store.trace_spans(trace_id, MAX_SPANS).await?,
        None => Vec::new(),
    };
    if spans.is_empty() {
        return Err(ApiError::not_found(format!(
            "no spans of {id} are kept: give a trace id (32 hexadecimal digits, as in traceparent) or an invocation's request id; spans are kept for --trace-retention, and not at all with --traces false"
        )));
    }
    let spans: Vec<JsonValue> = spans
        .into_iter()
        .map(|s| {
            let detail: JsonValue = serde_json::from_str(&s.detail).unwrap_or(JsonValue::Null);
            json!({
                "span_id": s.span_id,
                "parent_id": s.parent_id,
                "app": s.app,
                "name": s.name,
                "kind": s.kind,
                "start_ns": s.start_ns,
                "end_ns": s.end_ns,
                "error": s.error,
                "request_id": s.request_id,
                "attributes": detail.get("attributes").cloned().unwrap_or(json!({})),
                "links": detail.get("links").cloned().unwrap_or(json!([])),
            })
        })
        .collect();
    Ok(Json(json!({ "trace_id": trace_id, "spans": spans })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_otlp_endpoint_gets_the_traces_path() {
        assert_eq!(
            otlp_endpoint("http://127.0.0.1:4318").unwrap().to_string(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            otlp_endpoint("http://collector:4318/").unwrap().to_string(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            otlp_endpoint("http://collector:4318/custom/traces")
                .unwrap()
                .to_string(),
            "http://collector:4318/custom/traces"
        );
        assert!(otlp_endpoint("https://collector:4318").is_err());
        assert!(otlp_endpoint("collector:4318").is_err());
    }

    #[test]
    fn a_request_s_context_is_its_traceparent_or_its_xray_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(parent_of(&headers), None);
        headers.insert(
            "x-amzn-trace-id",
            "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"
                .parse()
                .unwrap(),
        );
        let xray = parent_of(&headers).unwrap();
        assert_eq!(xray.span_id.to_string(), "b7ad6b7169203331");
        headers.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let traceparent = parent_of(&headers).unwrap();
        assert_eq!(traceparent.trace_id, xray.trace_id);
        assert_eq!(traceparent.span_id.to_string(), "00f067aa0ba902b7");
    }
}
