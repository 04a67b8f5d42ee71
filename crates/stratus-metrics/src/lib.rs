//! The platform's metrics. Every name, label set and bucket list is
//! written here once; the rest of the platform records through handles
//! resolved ahead (a function's counters when its pool is made), so the
//! hot path costs a few atomic operations and never a label lookup.
//!
//! Exposed at `GET /metrics` in Prometheus's text format (0.0.4) or, when
//! the scraper asks for it, OpenMetrics. Labels are bounded: apps,
//! functions, services, versions, queues and fixed enumerations, never a
//! request id or a path.
//!
//! What a scrape reads of the platform's state (instances by state, queued
//! events, the store's health) is set by the server just before it
//! encodes ([`Metrics::set_state`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A series' labels, in order.
type Labels = Vec<(&'static str, String)>;

/// Seconds, from half a millisecond to about a minute: function phases and
/// proxied requests.
fn latency_buckets() -> impl Iterator<Item = f64> {
    LATENCY_BOUNDS.into_iter()
}

fn histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The handler returned an error, or the instance failed to start.
    Error,
    Timeout,
    /// Refused for want of an instance (the queue was full or waited too
    /// long, or the app is at its cap).
    Throttled,
    /// The runtime died during the invocation.
    Crashed,
    OutOfMemory,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Throttled,
        Outcome::Crashed,
        Outcome::OutOfMemory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Throttled => "throttled",
            Outcome::Crashed => "crashed",
            Outcome::OutOfMemory => "out_of_memory",
        }
    }
}

/// Where an invocation's time went: the whole, and each phase (the cold
/// ones only on a cold start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// From arrival to the answer.
    Total,
    /// Waiting for an instance.
    Queue,
    /// Making the sandbox and starting its process.
    Sandbox,
    /// The runtime's own start.
    RuntimeStart,
    /// The handler's import and init code.
    Init,
    /// The handler, from the event's hand-over to its answer.
    Handler,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Total,
        Phase::Queue,
        Phase::Sandbox,
        Phase::RuntimeStart,
        Phase::Init,
        Phase::Handler,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Total => "total",
            Phase::Queue => "queue",
            Phase::Sandbox => "sandbox",
            Phase::RuntimeStart => "runtime_start",
            Phase::Init => "init",
            Phase::Handler => "handler",
        }
    }
}

/// The exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus's text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it (as Prometheus's own
    /// scrapes do), else the Prometheus text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The upper bounds of the duration buckets, in seconds: half a
/// millisecond doubling to about a minute (`latency_buckets`).
pub const LATENCY_BOUNDS: [f64; 18] = {
    let mut bounds = [0.0005; 18];
    let mut i = 1;
    while i < 18 {
        bounds[i] = bounds[i - 1] * 2.0;
        i += 1;
    }
    bounds
};

/// One function's invocations on this node since it started, for
/// alerts: by outcome, and by total duration.
#[derive(Debug, Default)]
struct Totals {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    /// By [`LATENCY_BOUNDS`], the last past them all.
    durations: [AtomicU64; LATENCY_BOUNDS.len() + 1],
}

/// A function's running totals on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionTotals {
    pub app: String,
    pub function: String,
    /// By [`Outcome::ALL`].
    pub outcomes: [u64; Outcome::ALL.len()],
    /// Total durations by [`LATENCY_BOUNDS`], the last past them all.
    pub durations: [u64; LATENCY_BOUNDS.len() + 1],
}

/// What became of recorded spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanFate {
    Kept,
    Exported,
    /// `queue` (more came than could wait), `export` (the collector
    /// failed or could not keep up).
    Dropped(&'static str),
}

/// The platform's metrics; off (every handle a no-op) with
/// [`Metrics::off`]. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Inner>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Metrics").field(&self.0.is_some()).finish()
    }
}

struct Inner {
    registry: Registry,
    invocations: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    cold_starts: Family<Labels, Counter>,
    concurrent: Family<Labels, Gauge>,
    function_instances: Family<Labels, Gauge>,
    waiting: Family<Labels, Gauge>,
    events: Family<Labels, Gauge>,
    oldest_event: Family<Labels, Gauge<f64, AtomicU64>>,
    retries: Family<Labels, Counter>,
    cpu: Family<Labels, Counter<f64, AtomicU64>>,
    requests: Family<Labels, Counter>,
    request_durations: Family<Labels, Histogram, fn() -> Histogram>,
    websockets: Family<Labels, Gauge>,
    service_instances: Family<Labels, Gauge>,
    queue_messages: Family<Labels, Gauge>,
    storage_objects: Family<Labels, Gauge>,
    storage_bytes: Family<Labels, Gauge>,
    schedule_fires: Family<Labels, Counter>,
    schedule_misses: Family<Labels, Counter>,
    node_instances: Gauge,
    prestarted: Gauge,
    memory: Gauge,
    store_up: Gauge,
    store_latency: Histogram,
    logs_dropped: Counter,
    spans: Family<Labels, Counter>,
    /// Each function's running totals on this node, across its versions.
    totals: Mutex<HashMap<(String, String), Arc<Totals>>>,
    /// The live series of each function and service version, so that two
    /// pools of one version share theirs, and the last to go removes them.
    series: Mutex<HashMap<Labels, (u64, Weak<Series>)>>,
    next_series: AtomicU64,
}

impl Metrics {
    /// Metrics on, every family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stratus");
        let invocations = Family::<Labels, Counter>::default();
        registry.register(
            "function_invocations",
            "Invocations of a function version by outcome",
            invocations.clone(),
        );
        let durations: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(histogram);
        registry.register_with_unit(
            "function_duration",
            "Time of a function version's invocations: the total and each phase (sandbox, runtime_start and init on cold starts only)",
            Unit::Seconds,
            durations.clone(),
        );
        let cold_starts = Family::<Labels, Counter>::default();
        registry.register(
            "function_cold_starts",
            "Invocations of a function version that started an instance",
            cold_starts.clone(),
        );
        let cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "function_cpu",
            "CPU time of a function version's invocations by mode (user, system), from its instances' cgroups; for functions that run several events at once, the instance's while each ran",
            Unit::Seconds,
            cpu.clone(),
        );
        let concurrent = Family::<Labels, Gauge>::default();
        registry.register(
            "function_concurrent_executions",
            "Invocations of a function version running now on this node",
            concurrent.clone(),
        );
        let function_instances = Family::<Labels, Gauge>::default();
        registry.register(
            "function_instances",
            "Instances of a function version on this node, by state",
            function_instances.clone(),
        );
        let waiting = Family::<Labels, Gauge>::default();
        registry.register(
            "function_waiting_callers",
            "Callers of a function version waiting for an instance on this node",
            waiting.clone(),
        );
        let events = Family::<Labels, Gauge>::default();
        registry.register(
            "function_events",
            "Asynchronous events of a function by state (queued, in_flight, dead), in the store all nodes share",
            events.clone(),
        );
        let oldest_event = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "function_oldest_event_age",
            "Age of a function's oldest queued asynchronous event",
            Unit::Seconds,
            oldest_event.clone(),
        );
        let retries = Family::<Labels, Counter>::default();
        registry.register(
            "function_event_retries",
            "Asynchronous events of a function retried after a failure, by this node",
            retries.clone(),
        );
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "service_requests",
            "Requests proxied to a service version, by status class (2xx, 3xx, 4xx, 5xx)",
            requests.clone(),
        );
        let request_durations: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(histogram);
        registry.register_with_unit(
            "service_request_duration",
            "Time from a proxied request's arrival to its response's head",
            Unit::Seconds,
            request_durations.clone(),
        );
        let websockets = Family::<Labels, Gauge>::default();
        registry.register(
            "service_websocket_sessions",
            "WebSocket sessions open now to a service version through this node",
            websockets.clone(),
        );
        let service_instances = Family::<Labels, Gauge>::default();
        registry.register(
            "service_instances",
            "Instances of a service version on this node, by state",
            service_instances.clone(),
        );
        let queue_messages = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_messages",
            "Messages of an app's queue by state (queued: waiting to be received; in_flight: received, within their visibility timeout)",
            queue_messages.clone(),
        );
        let storage_objects = Family::<Labels, Gauge>::default();
        registry.register(
            "storage_objects",
            "Objects in an app's buckets",
            storage_objects.clone(),
        );
        let storage_bytes = Family::<Labels, Gauge>::default();
        registry.register_with_unit(
            "storage",
            "Bytes of the objects in an app's buckets",
            Unit::Bytes,
            storage_bytes.clone(),
        );
        let schedule_fires = Family::<Labels, Counter>::default();
        registry.register(
            "schedule_fires",
            "Times a function's schedule fired, by this node",
            schedule_fires.clone(),
        );
        let schedule_misses = Family::<Labels, Counter>::default();
        registry.register(
            "schedule_misses",
            "Slots of a function's schedule that passed without firing (the server was down or behind)",
            schedule_misses.clone(),
        );
        let node_instances = Gauge::default();
        registry.register(
            "node_instances",
            "Instances of functions and services this node runs",
            node_instances.clone(),
        );
        let prestarted = Gauge::default();
        registry.register(
            "node_prestarted_sandboxes",
            "Sandboxes made ahead of demand, ready for cold starts",
            prestarted.clone(),
        );
        let memory = Gauge::default();
        registry.register_with_unit(
            "node_resident_memory",
            "Resident memory of the server process",
            Unit::Bytes,
            memory.clone(),
        );
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "Whether the store answered this scrape's query (1) or not (0)",
            store_up.clone(),
        );
        let store_latency = histogram();
        registry.register_with_unit(
            "store_query_duration",
            "Time of the store's queries made for scrapes",
            Unit::Seconds,
            store_latency.clone(),
        );
        let logs_dropped = Counter::default();
        registry.register(
            "log_records_dropped",
            "Log records dropped because the log store could not keep up",
            logs_dropped.clone(),
        );
        let spans = Family::<Labels, Counter>::default();
        registry.register(
            "trace_spans",
            "Spans recorded by this node, by what became of them: kept (in memory, for stratus trace), exported (to the OTLP endpoint), dropped (reason: queue, export)",
            spans.clone(),
        );
        Metrics(Some(Arc::new(Inner {
            registry,
            invocations,
            durations,
            cold_starts,
            concurrent,
            function_instances,
            waiting,
            events,
            oldest_event,
            retries,
            cpu,
            requests,
            request_durations,
            websockets,
            service_instances,
            queue_messages,
            storage_objects,
            storage_bytes,
            schedule_fires,
            schedule_misses,
            node_instances,
            prestarted,
            memory,
            store_up,
            store_latency,
            logs_dropped,
            spans,
            totals: Mutex::default(),
            series: Mutex::default(),
            next_series: AtomicU64::new(0),
        })))
    }

    /// Metrics off: nothing is recorded and [`Metrics::encode`] is empty.
    pub fn off() -> Metrics {
        Metrics(None)
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The series of function `function` of `app` at `version`.
    pub fn function(&self, app: &str, function: &str, version: u32) -> FunctionMetrics {
        FunctionMetrics(self.series(
            Of::Function,
            vec![
                ("app", app.to_owned()),
                ("function", function.to_owned()),
                ("version", version.to_string()),
            ],
        ))
    }

    /// The series of service `service` of `app` at `version`.
    pub fn service(&self, app: &str, service: &str, version: u32) -> ServiceMetrics {
        ServiceMetrics(self.series(
            Of::Service,
            vec![
                ("app", app.to_owned()),
                ("service", service.to_owned()),
                ("version", version.to_string()),
            ],
        ))
    }

    fn series(&self, of: Of, base: Labels) -> Option<Arc<Series>> {
        let inner = self.0.as_ref()?;
        let mut all = inner.series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = all.get(&base).and_then(|(_, weak)| weak.upgrade()) {
            return Some(live);
        }
        let id = inner.next_series.fetch_add(1, Ordering::Relaxed);
        let series = Arc::new(Series::new(inner.clone(), of, base.clone(), id));
        all.insert(base, (id, Arc::downgrade(&series)));
        Some(series)
    }

    /// An asynchronous event of `function` of `app` failed and will be
    /// retried.
    pub fn event_retried(&self, app: &str, function: &str) {
        if let Some(inner) = &self.0 {
            inner
                .retries
                .get_or_create(&app_function(app, function))
                .inc();
        }
    }

    /// A schedule of `function` of `app` reached a slot: it fired or not,
    /// and `missed` slots passed without running at their time.
    pub fn schedule_slot(&self, app: &str, function: &str, fired: bool, missed: u64) {
        if let Some(inner) = &self.0 {
            let labels = app_function(app, function);
            if fired {
                inner.schedule_fires.get_or_create(&labels).inc();
            }
            if missed > 0 {
                inner.schedule_misses.get_or_create(&labels).inc_by(missed);
            }
        }
    }

    /// Every function's running totals on this node (empty with metrics
    /// off).
    pub fn totals(&self) -> Vec<FunctionTotals> {
        let Some(inner) = &self.0 else {
            return Vec::new();
        };
        let totals = inner.totals.lock().unwrap_or_else(|e| e.into_inner());
        totals
            .iter()
            .map(|((app, function), t)| FunctionTotals {
                app: app.clone(),
                function: function.clone(),
                outcomes: std::array::from_fn(|i| t.outcomes[i].load(Ordering::Relaxed)),
                durations: std::array::from_fn(|i| t.durations[i].load(Ordering::Relaxed)),
            })
            .collect()
    }

    /// `n` spans were stored, exported, or dropped for `reason`.
    pub fn spans(&self, n: u64, fate: SpanFate) {
        if let Some(inner) = &self.0 {
            let labels = match fate {
                SpanFate::Kept => vec![("result", "kept".to_owned())],
                SpanFate::Exported => vec![("result", "exported".to_owned())],
                SpanFate::Dropped(reason) => vec![
                    ("result", "dropped".to_owned()),
                    ("reason", reason.to_owned()),
                ],
            };
            inner.spans.get_or_create(&labels).inc_by(n);
        }
    }

    /// Sets what a scrape reads of the platform's state, replacing the
    /// last scrape's.
    pub fn set_state(&self, state: &State) {
        let Some(inner) = &self.0 else {
            return;
        };
        inner.function_instances.clear();
        inner.waiting.clear();
        inner.events.clear();
        inner.oldest_event.clear();
        inner.service_instances.clear();
        inner.queue_messages.clear();
        inner.storage_objects.clear();
        inner.storage_bytes.clear();
        for f in &state.functions {
            let base = vec![
                ("app", f.app.clone()),
                ("function", f.function.clone()),
                ("version", f.version.to_string()),
            ];
            for (state, count) in [("busy", f.busy), ("idle", f.idle)] {
                inner
                    .function_instances
                    .get_or_create(&with(&base, "state", state))
                    .set(count as i64);
            }
            inner.waiting.get_or_create(&base).set(f.waiting as i64);
        }
        for e in &state.events {
            let base = app_function(&e.app, &e.function);
            for (state, count) in [
                ("queued", e.queued),
                ("in_flight", e.in_flight),
                ("dead", e.dead),
            ] {
                inner
                    .events
                    .get_or_create(&with(&base, "state", state))
                    .set(count as i64);
            }
            if let Some(age) = e.oldest_age_seconds {
                inner.oldest_event.get_or_create(&base).set(age);
            }
        }
        for s in &state.services {
            let base = vec![
                ("app", s.app.clone()),
                ("service", s.service.clone()),
                ("version", s.version.to_string()),
            ];
            for (state, count) in [
                ("ready", s.ready),
                ("starting", s.starting),
                ("draining", s.draining),
            ] {
                inner
                    .service_instances
                    .get_or_create(&with(&base, "state", state))
                    .set(count as i64);
            }
        }
        for q in &state.queues {
            let base = vec![("app", q.app.clone()), ("queue", q.queue.clone())];
            for (state, count) in [("queued", q.queued), ("in_flight", q.in_flight)] {
                inner
                    .queue_messages
                    .get_or_create(&with(&base, "state", state))
                    .set(count as i64);
            }
        }
        for u in &state.storage {
            let base = vec![("app", u.app.clone())];
            inner
                .storage_objects
                .get_or_create(&base)
                .set(u.objects as i64);
            inner.storage_bytes.get_or_create(&base).set(u.bytes as i64);
        }
        let node = &state.node;
        inner.node_instances.set(node.instances as i64);
        inner.prestarted.set(node.prestarted as i64);
        inner.memory.set(node.resident_memory_bytes as i64);
        inner.store_up.set(i64::from(node.store_up));
        if let Some(latency) = node.store_latency_seconds {
            inner.store_latency.observe(latency);
        }
        inner
            .logs_dropped
            .inner()
            .store(node.log_records_dropped, Ordering::Relaxed);
    }

    /// Every metric, in `format`.
    pub fn encode(&self, format: Format) -> String {
        let Some(inner) = &self.0 else {
            return String::new();
        };
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &inner.registry);
        match format {
            Format::OpenMetrics => text,
            Format::Prometheus => to_prometheus_text(&text),
        }
    }
}

fn app_function(app: &str, function: &str) -> Labels {
    vec![("app", app.to_owned()), ("function", function.to_owned())]
}

fn with(base: &Labels, key: &'static str, value: &str) -> Labels {
    let mut labels = base.clone();
    labels.push((key, value.to_owned()));
    labels
}

/// OpenMetrics text as Prometheus's 0.0.4 text format: counters are
/// described under their samples' name (`_total`), and the `# UNIT` and
/// `# EOF` lines go.
fn to_prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match described {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// What a series is of.
#[derive(Clone, Copy)]
enum Of {
    Function,
    Service,
}

/// One function's or service's version: its handles, resolved once.
struct Series {
    inner: Arc<Inner>,
    base: Labels,
    id: u64,
    kind: SeriesKind,
}

enum SeriesKind {
    Function {
        invocations: [Counter; Outcome::ALL.len()],
        durations: [Histogram; Phase::ALL.len()],
        cold_starts: Counter,
        concurrent: Gauge,
        /// User, then system.
        cpu: [Counter<f64, AtomicU64>; 2],
        totals: Arc<Totals>,
    },
    Service {
        /// By status class, 1xx to 5xx.
        requests: [Counter; 5],
        duration: Histogram,
        websockets: Gauge,
    },
}

impl Series {
    fn new(inner: Arc<Inner>, of: Of, base: Labels, id: u64) -> Series {
        let kind = match of {
            Of::Function => SeriesKind::Function {
                invocations: Outcome::ALL.map(|o| {
                    inner
                        .invocations
                        .get_or_create_owned(&with(&base, "outcome", o.as_str()))
                }),
                durations: Phase::ALL.map(|p| {
                    inner
                        .durations
                        .get_or_create_owned(&with(&base, "phase", p.as_str()))
                }),
                cold_starts: inner.cold_starts.get_or_create_owned(&base),
                concurrent: inner.concurrent.get_or_create_owned(&base),
                cpu: CPU_MODES
                    .map(|mode| inner.cpu.get_or_create_owned(&with(&base, "mode", mode))),
                totals: {
                    let key = (base[0].1.clone(), base[1].1.clone());
                    let mut totals = inner.totals.lock().unwrap_or_else(|e| e.into_inner());
                    totals.entry(key).or_default().clone()
                },
            },
            Of::Service => SeriesKind::Service {
                requests: STATUS_CLASSES.map(|class| {
                    inner
                        .requests
                        .get_or_create_owned(&with(&base, "code", class))
                }),
                duration: inner.request_durations.get_or_create_owned(&base),
                websockets: inner.websockets.get_or_create_owned(&base),
            },
        };
        Series {
            inner,
            base,
            id,
            kind,
        }
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const CPU_MODES: [&str; 2] = ["user", "system"];

impl Drop for Series {
    fn drop(&mut self) {
        let inner = &self.inner;
        let mut all = inner.series.lock().unwrap_or_else(|e| e.into_inner());
        // A newer series of the same labels owns them now.
        if all.get(&self.base).map(|(id, _)| *id) != Some(self.id) {
            return;
        }
        all.remove(&self.base);
        let base = &self.base;
        match &self.kind {
            SeriesKind::Function { .. } => {
                for o in Outcome::ALL {
                    inner.invocations.remove(&with(base, "outcome", o.as_str()));
                }
                for p in Phase::ALL {
                    inner.durations.remove(&with(base, "phase", p.as_str()));
                }
                inner.cold_starts.remove(base);
                inner.concurrent.remove(base);
                for mode in CPU_MODES {
                    inner.cpu.remove(&with(base, "mode", mode));
                }
            }
            SeriesKind::Service { .. } => {
                for class in STATUS_CLASSES {
                    inner.requests.remove(&with(base, "code", class));
                }
                inner.request_durations.remove(base);
                inner.websockets.remove(base);
            }
        }
    }
}

/// A function version's handles; no-ops when metrics are off.
#[derive(Clone, Default)]
pub struct FunctionMetrics(Option<Arc<Series>>);

impl std::fmt::Debug for FunctionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FunctionMetrics").finish()
    }
}

impl FunctionMetrics {
    /// An invocation ended with `outcome`: with the time of each phase it
    /// had, in seconds.
    pub fn invoked(&self, outcome: Outcome, cold: bool, phases: &[(Phase, f64)]) {
        let Some(SeriesKind::Function {
            invocations,
            durations,
            cold_starts,
            totals,
            ..
        }) = self.0.as_deref().map(|s| &s.kind)
        else {
            return;
        };
        invocations[outcome as usize].inc();
        totals.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if cold {
            cold_starts.inc();
        }
        for (phase, seconds) in phases {
            durations[*phase as usize].observe(*seconds);
            if *phase == Phase::Total {
                let bucket = LATENCY_BOUNDS.partition_point(|bound| bound < seconds);
                totals.durations[bucket].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// An invocation used `user` and `system` seconds of CPU.
    pub fn cpu(&self, user: f64, system: f64) {
        if let Some(SeriesKind::Function { cpu, .. }) = self.0.as_deref().map(|s| &s.kind) {
            cpu[0].inc_by(user);
            cpu[1].inc_by(system);
        }
    }

    /// An invocation runs until the guard is dropped.
    pub fn running(&self) -> Running {
        match self.0.as_deref().map(|s| &s.kind) {
            Some(SeriesKind::Function { concurrent, .. }) => {
                concurrent.inc();
                Running(Some(concurrent.clone()))
            }
            _ => Running(None),
        }
    }
}

/// Counts one invocation (or WebSocket session) as running while it lives.
#[derive(Debug)]
pub struct Running(Option<Gauge>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.dec();
        }
    }
}

/// A service version's handles; no-ops when metrics are off.
#[derive(Clone, Default)]
pub struct ServiceMetrics(Option<Arc<Series>>);

impl std::fmt::Debug for ServiceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ServiceMetrics").finish()
    }
}

impl ServiceMetrics {
    /// A proxied request was answered with `status` after `seconds`.
    pub fn answered(&self, status: u16, seconds: f64) {
        if let Some(SeriesKind::Service {
            requests, duration, ..
        }) = self.0.as_deref().map(|s| &s.kind)
        {
            let class = usize::from(status / 100).clamp(1, 5) - 1;
            requests[class].inc();
            duration.observe(seconds);
        }
    }

    /// A WebSocket session is open until the guard is dropped.
    pub fn websocket(&self) -> Running {
        match self.0.as_deref().map(|s| &s.kind) {
            Some(SeriesKind::Service { websockets, .. }) => {
                websockets.inc();
                Running(Some(websockets.clone()))
            }
            _ => Running(None),
        }
    }
}

/// What a scrape reads of the platform's state.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub functions: Vec<FunctionState>,
    pub services: Vec<ServiceState>,
    pub events: Vec<EventState>,
    pub queues: Vec<QueueState>,
    /// What each app keeps in its buckets.
    pub storage: Vec<StorageState>,
    pub node: NodeState,
}

#[derive(Debug, Clone, Default)]
pub struct StorageState {
    pub app: String,
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct FunctionState {
    pub app: String,
    pub function: String,
    pub version: u32,
    pub busy: u64,
    pub idle: u64,
    pub waiting: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ServiceState {
    pub app: String,
    pub service: String,
    pub version: u32,
    pub ready: u64,
    pub starting: u64,
    pub draining: u64,
}

#[derive(Debug, Clone, Default)]
pub struct EventState {
    pub app: String,
    pub function: String,
    pub queued: u64,
    pub in_flight: u64,
    pub dead: u64,
    pub oldest_age_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct QueueState {
    pub app: String,
    pub queue: String,
    pub queued: u64,
    pub in_flight: u64,
}

#[derive(Debug, Clone, Default)]
pub struct NodeState {
    pub instances: u64,
    pub prestarted: u64,
    pub resident_memory_bytes: u64,
    pub store_up: bool,
    pub store_latency_seconds: Option<f64>,
    pub log_records_dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn invocations_are_counted_by_outcome_and_timed_by_phase() {
        let metrics = Metrics::new();
        let f = metrics.function("shop", "checkout", 3);
        f.invoked(
            Outcome::Success,
            true,
            &[(Phase::Total, 0.002), (Phase::Sandbox, 0.001)],
        );
        f.invoked(Outcome::Success, false, &[(Phase::Total, 0.001)]);
        f.invoked(Outcome::Throttled, false, &[]);
        let running = f.running();
        let text = metrics.encode(Format::Prometheus);
        let labels = r#"app="shop",function="checkout",version="3""#;
        assert_eq!(
            sample(
                &text,
                &format!(r#"stratus_function_invocations_total{{{labels},outcome="success"}}"#)
            ),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"stratus_function_invocations_total{{{labels},outcome="throttled"}}"#)
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                &format!("stratus_function_cold_starts_total{{{labels}}}")
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                &format!("stratus_function_concurrent_executions{{{labels}}}")
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"stratus_function_duration_seconds_count{{{labels},phase="total"}}"#)
            ),
            Some("2")
        );
        assert!(
            text.contains("# TYPE stratus_function_invocations_total counter"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        drop(running);
        let open = metrics.encode(Format::OpenMetrics);
        assert!(
            open.contains("# TYPE stratus_function_invocations counter"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert_eq!(
            sample(
                &open,
                &format!("stratus_function_concurrent_executions{{{labels}}}")
            ),
            Some("0")
        );
    }

    #[test]
    fn a_version_s_series_go_with_the_last_of_its_handles() {
        let metrics = Metrics::new();
        let a = metrics.function("shop", "checkout", 3);
        let b = metrics.function("shop", "checkout", 3);
        a.invoked(Outcome::Error, false, &[]);
        b.invoked(Outcome::Error, false, &[]);
        drop(a);
        let text = metrics.encode(Format::Prometheus);
        assert!(text.contains(r#"outcome="error"} 2"#), "{text}");
        drop(b);
        let text = metrics.encode(Format::Prometheus);
        assert!(!text.contains(r#"function="checkout""#), "{text}");
    }

    #[test]
    fn a_function_s_totals_outlive_its_versions() {
        let metrics = Metrics::new();
        let v1 = metrics.function("shop", "checkout", 1);
        v1.invoked(Outcome::Success, false, &[(Phase::Total, 0.0004)]);
        v1.invoked(Outcome::Error, false, &[(Phase::Total, 0.003)]);
        drop(v1);
        let v2 = metrics.function("shop", "checkout", 2);
        v2.invoked(Outcome::Throttled, false, &[]);
        v2.invoked(Outcome::Success, false, &[(Phase::Total, 100.0)]);
        let totals = metrics.totals();
        assert_eq!(totals.len(), 1);
        let t = &totals[0];
        assert_eq!((t.app.as_str(), t.function.as_str()), ("shop", "checkout"));
        assert_eq!(t.outcomes, [2, 1, 0, 1, 0, 0]);
        // 0.4 ms in the first bucket, 3 ms in the fourth (up to 4 ms), 100 s
        // past them all.
        assert_eq!(t.durations[0], 1);
        assert_eq!(t.durations[3], 1);
        assert_eq!(t.durations[LATENCY_BOUNDS.len()], 1);
        assert_eq!(t.durations.iter().sum::<u64>(), 3);
        assert!(Metrics::off().totals().is_empty());
    }

    #[test]
    fn services_count_requests_by_status_class() {
        let metrics = Metrics::new();
        let s = metrics.service("shop", "web", 1);
        s.answered(200, 0.01);
        s.answered(204, 0.01);
        s.answered(503, 0.5);
        let session = s.websocket();
        let text = metrics.encode(Format::Prometheus);
        let labels = r#"app="shop",service="web",version="1""#;
        assert_eq!(
            sample(
                &text,
                &format!(r#"stratus_service_requests_total{{{labels},code="2xx"}}"#)
            ),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                &format!(r#"stratus_service_requests_total{{{labels},code="5xx"}}"#)
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                &format!("stratus_service_websocket_sessions{{{labels}}}")
            ),
            Some("1")
        );
        drop(session);
    }

    #[test]
    fn off_records_nothing() {
        let metrics = Metrics::off();
        metrics
            .function("a", "b", 1)
            .invoked(Outcome::Success, true, &[]);
        assert_eq!(metrics.encode(Format::OpenMetrics), "");
    }

    #[test]
    fn the_scraper_s_accept_header_chooses_the_format() {
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
    }
}
