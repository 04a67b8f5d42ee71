//! Traces: the spans the scheduler, the platform API, the event
//! dispatcher and the triggers record, kept by each node in memory
//! ([`Kept`]: the newest within `--trace-buffer` bytes and
//! `--trace-retention`) for `stratus trace`, which asks every live node,
//! and exported, when `--otlp-endpoint` names a collector, as OTLP over
//! HTTP (protobuf) for keeping longer.
//!
//! Recording never waits: [`Collector::record`] queues a batch and drops
//! it (counted) when [`QUEUE`] batches wait already. One task takes what
//! came in every [`FLUSH`] into [`Kept`] and hands it to the exporter's
//! own bounded queue (dropping, counted, when the collector is slow or
//! down). Spans are kept in memory rather than in the store: every
//! invocation makes two or more, and writing them to the database took a
//! fifth of the throughput of warm invocations.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value as JsonValue, json};
use stratus_metrics::{Metrics, SpanFate};
use stratus_trace::{Context, Kind, Sink, Span, TraceId, Tracer, Value};
use tokio::sync::mpsc;

use crate::AppState;
use crate::api::ApiError;

/// Batches of spans waiting to be kept before more are dropped.
const QUEUE: usize = 4096;
/// How often what came in is kept.
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
    /// The collector's traces endpoint (`…/v1/traces`).
    pub otlp: Option<reqwest::Url>,
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
pub(crate) fn otlp_endpoint(given: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(given).map_err(|err| {
        anyhow::anyhow!("--otlp-endpoint {given}: not an address ({err}); give the collector's OTLP/HTTP address, such as http://127.0.0.1:4318")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        anyhow::bail!(
            "--otlp-endpoint {given}: give an http:// or https:// address with a host, such as http://127.0.0.1:4318"
        );
    }
    if matches!(url.path(), "" | "/") {
        url.set_path("/v1/traces");
    }
    Ok(url)
}

/// Keeps and exports spans until the collector's senders are gone.
pub(crate) async fn keep(
    kept: Arc<Kept>,
    mut rx: mpsc::Receiver<Vec<Span>>,
    settings: Settings,
    metrics: Metrics,
) {
    let export = settings.otlp.clone().map(|endpoint| {
        let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
        tokio::spawn(export(endpoint, settings.node.clone(), rx, metrics.clone()));
        tx
    });
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
        match &export {
            Some(export) => {
                kept.push(spans.clone());
                if export.try_send(spans).is_err() {
                    metrics.spans(n, SpanFate::Dropped("export"));
                }
            }
            None => kept.push(spans),
        }
        metrics.spans(n, SpanFate::Kept);
    }
}

/// The spans this node recorded, newest last, within `--trace-buffer`
/// bytes and `--trace-retention`, found by trace and by the request id of
/// an invocation.
pub(crate) struct Kept {
    inner: Mutex<KeptInner>,
    budget: usize,
    retention: Duration,
}

#[derive(Default)]
struct KeptInner {
    /// By arrival; each with its sequence number.
    spans: VecDeque<(u64, Span)>,
    next: u64,
    by_trace: HashMap<TraceId, Vec<u64>>,
    by_request: HashMap<String, TraceId>,
    bytes: usize,
}

/// About what a kept span takes in memory.
fn footprint(span: &Span) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let attributes: usize = span
        .attributes
        .iter()
        .map(|(key, value)| {
            key.len()
                + 24
                + match value {
                    Value::Str(s) => s.len(),
                    _ => 8,
                }
        })
        .sum();
    200 + span.name.len()
        + span.app.len()
        + text(&span.error)
        + 2 * text(&span.request_id)
        + attributes
        + 32 * span.links.len()
}

impl Kept {
    pub(crate) fn new(budget: usize, retention: Duration) -> Kept {
        Kept {
            inner: Mutex::new(KeptInner::default()),
            budget,
            retention,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeptInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, spans: Vec<Span>) {
        let oldest = stratus_trace::ns_before(stratus_trace::now_ns(), self.retention);
        let mut k = self.lock();
        for span in spans {
            let seq = k.next;
            k.next += 1;
            k.bytes += footprint(&span);
            k.by_trace
                .entry(span.context.trace_id)
                .or_default()
                .push(seq);
            if let Some(request) = &span.request_id {
                let trace = span.context.trace_id;
                k.by_request.insert(request.clone(), trace);
            }
            k.spans.push_back((seq, span));
        }
        while let Some((_, front)) = k.spans.front() {
            if k.bytes <= self.budget && front.start_ns >= oldest {
                break;
            }
            let (seq, span) = k.spans.pop_front().expect("a front");
            k.bytes -= footprint(&span);
            let trace = span.context.trace_id;
            if let Some(seqs) = k.by_trace.get_mut(&trace) {
                seqs.retain(|s| *s != seq);
                if seqs.is_empty() {
                    k.by_trace.remove(&trace);
                }
            }
            if let Some(request) = &span.request_id
                && k.by_request.get(request) == Some(&trace)
                && !k.by_trace.contains_key(&trace)
            {
                k.by_request.remove(request);
            }
        }
    }

    /// The kept spans of the trace `id` names (a trace id, or the request
    /// id of an invocation in it), by start.
    fn trace(&self, id: &str) -> Option<(TraceId, Vec<Span>)> {
        let k = self.lock();
        let trace = TraceId::parse(id).or_else(|| k.by_request.get(id).copied())?;
        let first = k.spans.front().map_or(0, |(seq, _)| *seq);
        let mut spans: Vec<Span> = k
            .by_trace
            .get(&trace)?
            .iter()
            .filter_map(|seq| k.spans.get((seq - first) as usize))
            .map(|(_, span)| span.clone())
            .take(MAX_SPANS)
            .collect();
        spans.sort_by_key(|s| s.start_ns);
        Some((trace, spans))
    }
}

/// Posts batches to the collector, one request at a time.
async fn export(
    endpoint: reqwest::Url,
    node: String,
    mut rx: mpsc::Receiver<Vec<Span>>,
    metrics: Metrics,
) {
    let client = match reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build() {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%err, "no HTTP client to export spans with");
            return;
        }
    };
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
        let sent = client
            .post(endpoint.clone())
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await;
        let failed = match sent {
            Ok(response) if response.status().is_success() => None,
            Ok(response) => Some(format!("the collector answered {}", response.status())),
            Err(err) if err.is_timeout() => Some(format!(
                "the collector did not answer within {EXPORT_TIMEOUT:?}"
            )),
            Err(err) => Some(format!("{err}")),
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

fn span_json(span: &Span) -> JsonValue {
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
    json!({
        "span_id": span.context.span_id.to_string(),
        "parent_id": span.parent.map(|p| p.to_string()),
        "app": span.app,
        "name": span.name,
        "kind": span.kind.as_str(),
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "error": span.error,
        "request_id": span.request_id,
        "attributes": attributes,
        "links": links,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ShowParams {
    /// Only this node's spans (what one node asks the others).
    #[serde(default)]
    local: bool,
}

/// `GET /v1/traces/{id}`: the spans of a trace, by its id or by the
/// request id of an invocation in it, from every live node.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<ShowParams>,
) -> Result<Response, ApiError> {
    let id = id.trim().to_owned();
    let lower = id.to_ascii_lowercase();
    let lookup = if TraceId::parse(&lower).is_some() {
        &lower
    } else {
        &id
    };
    let (mut trace_id, mut spans): (Option<String>, Vec<JsonValue>) = match state.kept.trace(lookup)
    {
        Some((trace, spans)) => (
            Some(trace.to_string()),
            spans.iter().map(span_json).collect(),
        ),
        None => (None, Vec::new()),
    };
    if !params.local {
        // The other nodes keep the spans of what they ran.
        for (trace, more) in from_other_nodes(&state, lookup).await {
            trace_id.get_or_insert(trace);
            for span in more {
                if !spans.iter().any(|s| s["span_id"] == span["span_id"]) {
                    spans.push(span);
                }
            }
        }
        spans.sort_by_key(|s| s["start_ns"].as_u64().unwrap_or(0));
    }
    if spans.is_empty() {
        return Err(ApiError::not_found(format!(
            "no spans of {id} are kept: give a trace id (32 hexadecimal digits, as in traceparent) or an invocation's request id; each node keeps its spans in memory for --trace-retention within --trace-buffer (since it started), and none with --traces false"
        )));
    }
    Ok(Json(json!({ "trace_id": trace_id, "spans": spans })).into_response())
}

/// What the other live nodes keep of `id`: their trace id and spans.
async fn from_other_nodes(state: &AppState, id: &str) -> Vec<(String, Vec<JsonValue>)> {
    let Ok(nodes) = state.store.list_nodes().await else {
        return Vec::new();
    };
    let now = crate::now_ms();
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(client) => client,
        Err(_) => return Vec::new(),
    };
    let asks = nodes
        .into_iter()
        .filter(|n| n.id != state.node_id && crate::cluster::is_live(n, now))
        .map(|node| {
            let request = client
                .get(format!(
                    "{}/v1/traces/{id}?local=true",
                    node.admin_url.trim_end_matches('/')
                ))
                .bearer_auth(&state.token);
            async move {
                let answer: JsonValue = request
                    .send()
                    .await
                    .ok()?
                    .error_for_status()
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let trace = answer["trace_id"].as_str()?.to_owned();
                Some((trace, answer["spans"].as_array()?.clone()))
            }
        });
    let mut found = Vec::new();
    for answer in asks {
        if let Some(answer) = answer.await {
            found.push(answer);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &Context, name: &str, request: Option<&str>, start_ns: u64) -> Span {
        let mut span = Span::new(
            trace.child(),
            None,
            name,
            Kind::Server,
            "a",
            start_ns,
            start_ns + 1,
        );
        span.request_id = request.map(str::to_owned);
        span
    }

    #[test]
    fn kept_spans_are_found_by_trace_or_request_and_forgotten_oldest_first() {
        let now = stratus_trace::now_ns();
        let (one, two) = (Context::root(), Context::root());
        let budget = 4 * footprint(&span(&one, "x", Some("req-0"), now));
        let kept = Kept::new(budget, Duration::from_secs(3600));
        kept.push(vec![
            span(&one, "b", None, now + 2),
            span(&one, "x", Some("req-1"), now + 1),
            span(&two, "y", Some("req-2"), now),
        ]);
        let (trace, spans) = kept.trace("req-1").unwrap();
        assert_eq!(trace, one.trace_id);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["x", "b"]);
        assert_eq!(kept.trace(&two.trace_id.to_string()).unwrap().1.len(), 1);
        assert!(kept.trace("req-none").is_none());
        // Past the budget, the oldest go first, with their request ids.
        kept.push(vec![
            span(&two, "z", None, now + 3),
            span(&two, "w", None, now + 4),
        ]);
        let (_, spans) = kept.trace("req-2").unwrap();
        assert_eq!(spans.len(), 3);
        assert_eq!(kept.trace("req-1").unwrap().1.len(), 1);
        kept.push(vec![span(&two, "v", None, now + 5)]);
        assert!(kept.trace("req-1").is_none());
        assert!(kept.trace(&one.trace_id.to_string()).is_none());
        // Past the retention, too.
        let short = Kept::new(usize::MAX, Duration::from_secs(1));
        short.push(vec![span(
            &one,
            "old",
            Some("req-old"),
            now - 5_000_000_000,
        )]);
        assert!(short.trace("req-old").is_none());
    }

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
        assert_eq!(
            otlp_endpoint("https://collector.example.com")
                .unwrap()
                .to_string(),
            "https://collector.example.com/v1/traces"
        );
        assert!(otlp_endpoint("ftp://collector:4318").is_err());
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
