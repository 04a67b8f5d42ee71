//! Traces: the W3C trace context the platform reads and passes on
//! (`traceparent`, and the X-Ray header Lambda runtimes read), the spans
//! it records, and their OTLP protobuf encoding.
//!
//! A span is recorded whole, when it has ended, through a [`Tracer`]: a
//! handle on the node's [`Sink`], which must never block (it queues, and
//! drops what does not fit). `Tracer::off()` records nothing.

mod context;
pub mod otlp;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use context::{Context, SpanId, TraceId};

/// What a span stands for, as OpenTelemetry's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    /// A request served: an invocation, a proxied request.
    Server,
    /// A call to another service: a webhook, an export.
    Client,
    /// Work put on a queue: an event enqueued, a message sent.
    Producer,
    /// Work taken from a queue: an event or a batch delivered.
    Consumer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Internal => "internal",
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        }
    }

    pub fn parse(text: &str) -> Kind {
        match text {
            "server" => Kind::Server,
            "client" => Kind::Client,
            "producer" => Kind::Producer,
            "consumer" => Kind::Consumer,
            _ => Kind::Internal,
        }
    }
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// One ended span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Its trace and its own id.
    pub context: Context,
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: Kind,
    /// The app it belongs to.
    pub app: String,
    /// Wall-clock times, nanoseconds since the epoch.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Set when it failed: what went wrong.
    pub error: Option<String>,
    /// The invocation it is, or is part of: `stratus trace REQUEST_ID`.
    pub request_id: Option<String>,
    pub attributes: Vec<(&'static str, Value)>,
    /// Spans it follows from without being their child (the producers of
    /// a batch's messages).
    pub links: Vec<Context>,
}

impl Span {
    /// A span of `context` that ran from `start_ns` until `end_ns`.
    pub fn new(
        context: Context,
        parent: Option<SpanId>,
        name: impl Into<String>,
        kind: Kind,
        app: &str,
        start_ns: u64,
        end_ns: u64,
    ) -> Span {
        Span {
            context,
            parent,
            name: name.into(),
            kind,
            app: app.to_owned(),
            start_ns,
            end_ns,
            error: None,
            request_id: None,
            attributes: Vec::new(),
            links: Vec::new(),
        }
    }

    pub fn attribute(mut self, key: &'static str, value: Value) -> Span {
        self.attributes.push((key, value));
        self
    }
}

/// Where a node's spans go. Called on the invocation's path: it must not
/// block.
pub trait Sink: Send + Sync + std::fmt::Debug {
    fn record(&self, spans: Vec<Span>);
}

/// A handle on the node's [`Sink`], or on nothing.
#[derive(Debug, Clone, Default)]
pub struct Tracer(Option<Arc<dyn Sink>>);

impl Tracer {
    pub fn new(sink: Arc<dyn Sink>) -> Tracer {
        Tracer(Some(sink))
    }

    /// Records nothing.
    pub fn off() -> Tracer {
        Tracer(None)
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Records `spans`, unless tracing is off. Spans of unsampled traces
    /// are not recorded.
    pub fn record(&self, mut spans: Vec<Span>) {
        if let Some(sink) = &self.0 {
            spans.retain(|span| span.context.sampled);
            if !spans.is_empty() {
                sink.record(spans);
            }
        }
    }

    /// The context a piece of work runs in: a child of `parent`, or the
    /// root of a new trace.
    pub fn child_or_root(parent: Option<&Context>) -> Context {
        match parent {
            Some(parent) => parent.child(),
            None => Context::root(),
        }
    }
}

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `ago` before `now_ns`, in nanoseconds since the epoch.
pub fn ns_before(now_ns: u64, ago: Duration) -> u64 {
    now_ns.saturating_sub(ago.as_nanos() as u64)
}
