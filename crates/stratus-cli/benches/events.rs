//! Asynchronous invocation: durable acknowledgements, dispatch throughput
//! and the latency from enqueue to handler.
//!
//! Starts a real `stratus server` (isolation `auto`) in a temporary data
//! directory and deploys one application with four functions: `noop-py`
//! (python3, returns nothing), `noop-rust` (the `noop_rust` example,
//! `provided`), `stamp` (python3, prints its request id and
//! `time.time_ns()` as it is entered), each with `max_instances: 32`, and
//! `parked` (python3, sleeps 15 minutes, `max_instances: 1`).
//!
//! 1. Acknowledgements: C keep-alive HTTP/1.1 connections (hyper's client;
//!    C = 1, 16, 64) each POST `x-stratus-invocation-type: Event` invokes of
//!    a small JSON payload to the admin API in a closed loop for a fixed
//!    time after a 1 s warm-up, counting the 202s. Twice: to `noop-py`,
//!    which the dispatcher delivers while the acknowledgements are measured
//!    (the queue is drained between rows), and to `parked`, whose first
//!    event holds the function's only instance, so that the dispatcher,
//!    with all its delivery slots taken by `parked` events waiting for that
//!    instance, does nothing: the enqueue path alone. That one runs last,
//!    since it stops all delivery.
//! 2. Dispatch: a backlog of N events per function, enqueued over 64
//!    connections as fast as they are acknowledged, then the time until
//!    `GET /v1/status` counts none queued or in flight (polled every
//!    100 ms). The dispatcher starts delivering while the backlog is still
//!    being enqueued, so the figure is the events left at the last
//!    acknowledgement over the time they took to drain, with nothing else
//!    running; the rate of the whole run is given too. The functions are
//!    warmed first (a backlog of 1,000, drained).
//! 3. Latency: `stamp` events sent on a fixed schedule (open loop, not
//!    waiting for answers) at R/s for S seconds, after a 1 s warm-up at the
//!    same rate; per request id, the handler's clock (its log line, from
//!    `GET /v1/logs`) less the client's clock just before it sent the
//!    request, on the same machine.
//!
//! 4. Cluster (only with `STRATUS_BENCH_STORE`): with the same database,
//!    more nodes are started (`STRATUS_BENCH_NODES` in all, default 3, 1
//!    skips this part) and take up the deploy; then acknowledgements to
//!    `noop-py` over 64 connections spread across the nodes, dispatch of a
//!    backlog sent through the first node and delivered by all, and the
//!    latency at R/s sent through the first node. The extra nodes then
//!    stop and the same three figures are taken on the first node alone
//!    again, so that each cluster figure sits between two single-node ones.
//!
//! Each figure comes with the CPU the server, this process and everything
//! else (the instances, mostly) used meanwhile, in cores, from /proc.
//!
//! Run with `cargo bench -p stratus-cli --bench events`;
//! `STRATUS_BENCH_SECS` sets the seconds per acknowledgement figure
//! (default 3), `STRATUS_BENCH_CONNECTIONS` the connection counts (default
//! `1,16,64`), `STRATUS_BENCH_EVENTS` the backlog (default 20000, 0 skips
//! part 2), `STRATUS_BENCH_RUNTIMES` the runtimes of part 2 (default
//! `python3,provided`), `STRATUS_BENCH_RATE` the events per second of part 3
//! (default 1000), `STRATUS_BENCH_LATENCY_SECS` its length (default 5, 0
//! skips it) and `STRATUS_BENCH_STORE` a PostgreSQL database (new and
//! empty) to keep the server's state in instead of SQLite (and to run
//! part 4). It prints figures only and never asserts on them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use support::{
    Server, TaskResult, deploy, env_number, locate_example, percentile, process_ticks, sorted,
};

mod support;

const CONNECTIONS: [usize; 3] = [1, 16, 64];
const DEFAULT_SECS: f64 = 3.0;
const MAX_SECS: f64 = 600.0;
const WARMUP: Duration = Duration::from_secs(1);
/// Events of the dispatch part, per function.
const DEFAULT_BACKLOG: usize = 20_000;
const MAX_BACKLOG: usize = 1_000_000;
/// Events that warm a function's instances before the dispatch part.
const WARM_BACKLOG: usize = 1_000;
/// Connections that enqueue a backlog.
const BACKLOG_CONNECTIONS: usize = 64;
const DEFAULT_RATE: f64 = 1000.0;
const DEFAULT_LATENCY_SECS: f64 = 5.0;
/// `max_instances` of the no-op and stamp functions.
const MAX_INSTANCES: u32 = 32;
/// How often the queue is looked at while it drains.
const POLL: Duration = Duration::from_millis(100);
/// Longest a backlog may take to drain before the bench gives up on it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Pause after a drain for the last log lines to reach the log writer.
const LOG_SETTLE: Duration = Duration::from_millis(500);
const LOG_PAGE: usize = 10_000;
/// A request that takes longer counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection gives up after this many errors.
const MAX_ERRORS_PER_TASK: usize = 100;

/// The issue's targets.
const TARGET_ACKS_PER_S: f64 = 5000.0;
const TARGET_DISPATCH_PER_S: f64 = 2000.0;
const TARGET_P99_MS: f64 = 20.0;
const TARGET_RATE: f64 = 1000.0;
/// Cluster: nodes of part 4, and the share of one node's dispatch rate
/// that they must reach together.
const DEFAULT_NODES: usize = 3;
const TARGET_CLUSTER_SHARE: f64 = 0.8;
/// Longest a new node may take to take up the deploy.
const TAKE_UP_TIMEOUT: Duration = Duration::from_secs(30);

const PAYLOAD: &[u8] = br#"{"bench":true,"n":42}"#;
const APP: &str = "events";
const NOOP_PY: &str = "noop-py";
const NOOP_RUST: &str = "noop-rust";
const STAMP: &str = "stamp";
const PARKED: &str = "parked";
/// What `stamp` prints before its request id and clock.
const STAMP_TAG: &str = "STAMP ";

const NOOP_PY_SOURCE: &str = "def handler(event, context):\n    return None\n";
const STAMP_SOURCE: &str = "import time\n\n\ndef handler(event, context):\n    now = time.time_ns()\n    print(\"STAMP \" + context.aws_request_id + \" \" + str(now), flush=True)\n    return None\n";
const PARKED_SOURCE: &str =
    "import time\n\n\ndef handler(event, context):\n    time.sleep(900)\n    return None\n";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("events bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

// --- setup -----------------------------------------------------------------

fn write_app(dir: &Path, noop_rust: Option<&Path>) -> anyhow::Result<()> {
    let mut manifest = format!("app: {APP}\nfunctions:\n");
    let python = |manifest: &mut String, name: &str, max: u32, timeout: &str| {
        writeln!(
            manifest,
            "  {name}:\n    runtime: python3\n    handler: main.handler\n    code: ./{name}\n    max_instances: {max}\n    timeout: {timeout}"
        )
    };
    python(&mut manifest, NOOP_PY, MAX_INSTANCES, "30s")?;
    python(&mut manifest, STAMP, MAX_INSTANCES, "30s")?;
    python(&mut manifest, PARKED, 1, "15m")?;
    for (name, source) in [
        (NOOP_PY, NOOP_PY_SOURCE),
        (STAMP, STAMP_SOURCE),
        (PARKED, PARKED_SOURCE),
    ] {
        std::fs::create_dir_all(dir.join(name))?;
        std::fs::write(dir.join(name).join("main.py"), source)?;
    }
    if let Some(noop_rust) = noop_rust {
        writeln!(
            manifest,
            "  {NOOP_RUST}:\n    runtime: provided\n    code: ./{NOOP_RUST}\n    max_instances: {MAX_INSTANCES}"
        )?;
        std::fs::create_dir_all(dir.join(NOOP_RUST))?;
        // fs::copy keeps the permission bits, so bootstrap stays executable.
        std::fs::copy(noop_rust, dir.join(NOOP_RUST).join("bootstrap"))
            .with_context(|| format!("cannot copy {}", noop_rust.display()))?;
    }
    std::fs::write(dir.join("stratus.yaml"), manifest)?;
    Ok(())
}

/// The isolation the server reported at start, from its log.
fn isolation(log: &Path) -> &'static str {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if text.contains("TENANT ISOLATION IS OFF") {
        "none"
    } else if text.contains("tenant isolation") {
        "namespaces"
    } else {
        "unknown"
    }
}

fn counts(name: &str, default: &[usize]) -> anyhow::Result<Vec<usize>> {
    match std::env::var(name) {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().ok().filter(|n| (1..=1024).contains(n)))
            .collect::<Option<_>>()
            .with_context(|| format!("{name}: give counts from 1 to 1024, e.g. 1,16")),
        Err(_) => Ok(default.to_vec()),
    }
}

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

// --- CPU -----------------------------------------------------------------------

/// CPU time counters from /proc, in clock ticks.
#[derive(Clone, Copy)]
struct CpuSnapshot {
    server: u64,
    bench: u64,
    /// All CPUs: busy and total.
    busy: u64,
    total: u64,
    cpus: u64,
}

fn cpu_snapshot(server_pid: u32) -> CpuSnapshot {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut busy = 0;
    let mut total = 0;
    let mut cpus = 0;
    for line in stat.lines() {
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("cpu") => {
                let v: Vec<u64> = parts.filter_map(|p| p.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal (guest is in user).
                total = v.iter().take(8).sum();
                busy = total - v.get(3).copied().unwrap_or(0) - v.get(4).copied().unwrap_or(0);
            }
            Some(name) if name.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    CpuSnapshot {
        server: process_ticks(&format!("/proc/{server_pid}/stat")).unwrap_or(0),
        bench: process_ticks("/proc/self/stat").unwrap_or(0),
        busy,
        total,
        cpus: cpus.max(1),
    }
}

/// Cores in use between two snapshots: (server, bench, rest, idle).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    server: f64,
    bench: f64,
    rest: f64,
    idle: f64,
    /// Seconds of server CPU.
    server_secs: f64,
}

impl CpuUse {
    fn between(a: CpuSnapshot, b: CpuSnapshot, wall: Duration) -> CpuUse {
        // Ticks of one CPU over the interval.
        let per_cpu = b.total.saturating_sub(a.total) as f64 / a.cpus as f64;
        if per_cpu <= 0.0 {
            return CpuUse::default();
        }
        let cores = |ticks: u64| ticks as f64 / per_cpu;
        let server = cores(b.server.saturating_sub(a.server));
        let bench = cores(b.bench.saturating_sub(a.bench));
        let busy = cores(b.busy.saturating_sub(a.busy));
        CpuUse {
            server,
            bench,
            rest: (busy - server - bench).max(0.0),
            idle: (a.cpus as f64 - busy).max(0.0),
            server_secs: server * wall.as_secs_f64(),
        }
    }

    fn columns(&self) -> String {
        format!(
            "{:>6.2} {:>6.2} {:>6.2} {:>6.2}",
            self.server, self.bench, self.rest, self.idle
        )
    }

    /// Server CPU per event, in µs.
    fn server_us_per(&self, events: usize) -> String {
        if events == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}", self.server_secs * 1e6 / events as f64)
        }
    }
}

const CPU_HEADER: &str = "server  bench   rest   idle";

// --- the admin API -------------------------------------------------------------

/// The admin API over reqwest: status, logs and paced events.
#[derive(Clone)]
struct Admin {
    http: reqwest::Client,
    base: String,
    auth: String,
}

/// A function's line of `GET /v1/status`.
#[derive(Clone, Copy, Default)]
struct FunctionStatus {
    queued: u64,
    in_flight: u64,
    dead: u64,
    instances: u64,
}

impl FunctionStatus {
    fn pending(&self) -> u64 {
        self.queued + self.in_flight
    }
}

impl Admin {
    fn new(server: &Server) -> anyhow::Result<Admin> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Admin {
            http,
            base: server.admin.clone(),
            auth: format!("Bearer {}", server.token),
        })
    }

    async fn get_json(&self, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .header("authorization", &self.auth)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "GET {path_and_query}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }

    async fn status(&self, function: &str) -> anyhow::Result<FunctionStatus> {
        let status = self.get_json(&format!("/v1/status?app={APP}")).await?;
        let entry = status["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["app"] == APP))
            .with_context(|| format!("no app {APP} in /v1/status: {status}"))?;
        let f = entry["functions"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == function))
            .with_context(|| format!("no function {function} in /v1/status: {entry}"))?;
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        Ok(FunctionStatus {
            queued: n(&f["events"]["queued"]),
            in_flight: n(&f["events"]["in_flight"]),
            dead: n(&f["events"]["dead"]),
            instances: n(&f["instances"]["busy"]) + n(&f["instances"]["idle"]),
        })
    }

    /// Polls until no event of `function` is queued or in flight: how long
    /// that took, or `None` past `limit`.
    async fn drain(&self, function: &str, limit: Duration) -> anyhow::Result<Option<Duration>> {
        let started = Instant::now();
        let mut told = started;
        loop {
            let status = self.status(function).await?;
            if status.pending() == 0 {
                return Ok(Some(started.elapsed()));
            }
            if started.elapsed() > limit {
                eprintln!(
                    "{function}: {} events still pending after {limit:?}",
                    status.pending()
                );
                return Ok(None);
            }
            if told.elapsed() > Duration::from_secs(5) {
                eprintln!(
                    "  {function}: {} queued, {} in flight",
                    status.queued, status.in_flight
                );
                told = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One `Event` invocation: the request id of its 202.
    async fn post_event(&self, function: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!(
                "{}/v1/apps/{APP}/functions/{function}/invoke",
                self.base
            ))
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .header("x-stratus-invocation-type", "Event")
            .body(PAYLOAD)
            .send()
            .await?;
        let status = response.status();
        let header = response
            .headers()
            .get("x-stratus-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await?;
        if status != 202 {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        match header {
            Some(id) => Ok(id),
            None => serde_json::from_slice::<serde_json::Value>(&body)?["request_id"]
                .as_str()
                .map(str::to_owned)
                .context("a 202 without a request id"),
        }
    }

    /// Every `stamp` line of `function`'s logs: request id → the handler's
    /// clock in ns (the first, if an event ran twice), and the number of
    /// duplicate lines.
    async fn stamps(&self, function: &str) -> anyhow::Result<(HashMap<String, i128>, usize)> {
        // A query without after_id stores the records sent so far first.
        self.get_json(&format!("/v1/logs?app={APP}&function={function}&limit=1"))
            .await?;
        let mut stamps = HashMap::new();
        let mut duplicates = 0;
        let mut after = 0i64;
        loop {
            let page = self
                .get_json(&format!(
                    "/v1/logs?app={APP}&function={function}&after_id={after}&limit={LOG_PAGE}"
                ))
                .await?;
            let records = page["records"].as_array().cloned().unwrap_or_default();
            for record in &records {
                if let Some(id) = record["id"].as_i64() {
                    after = after.max(id);
                }
                let message = record["message"].as_str().unwrap_or_default();
                let Some(at) = message.find(STAMP_TAG) else {
                    continue;
                };
                let mut words = message[at + STAMP_TAG.len()..].split_whitespace();
                let (Some(id), Some(ns)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(ns) = ns.parse::<i128>() else {
                    continue;
                };
                match stamps.entry(id.to_owned()) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(ns);
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        duplicates += 1;
                        if ns < *o.get() {
                            o.insert(ns);
                        }
                    }
                }
            }
            if records.len() < LOG_PAGE {
                break;
            }
        }
        Ok((stamps, duplicates))
    }
}

// --- closed-loop load over hyper -----------------------------------------------

/// What a closed-loop load saw: 202s, their latencies, the rest as errors.
struct Acks {
    acks: usize,
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Acks {
    fn rate(&self) -> f64 {
        self.acks as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// How long a load runs: until a deadline, or until a number of events
/// has been taken.
#[derive(Clone)]
enum Budget {
    Until(Instant),
    Events(Arc<AtomicUsize>),
}

impl Budget {
    /// Whether one more request may go.
    fn take(&self) -> bool {
        match self {
            Budget::Until(deadline) => Instant::now() < *deadline,
            Budget::Events(left) => left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok(),
        }
    }

    /// Gives back what `take` took, for a request that failed.
    fn give_back(&self) {
        if let Budget::Events(left) = self {
            left.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Where `Event` invocations of one function go.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    path: Arc<str>,
    auth: Arc<str>,
}

impl Target {
    fn new(server: &Server, function: &str) -> anyhow::Result<Target> {
        let addr: SocketAddr = server
            .admin
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("the server's admin address {}", server.admin))?;
        Ok(Target {
            addr,
            path: format!("/v1/apps/{APP}/functions/{function}/invoke").into(),
            auth: format!("Bearer {}", server.token).into(),
        })
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One `Event` invocation: whether it was answered 202 (else the answer).
async fn post_event(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    target: &Target,
) -> anyhow::Result<Result<(), String>> {
    let request = hyper::Request::post(&*target.path)
        .header("host", "127.0.0.1")
        .header("authorization", &*target.auth)
        .header("content-type", "application/json")
        .header("x-stratus-invocation-type", "Event")
        .body(Full::new(Bytes::from_static(PAYLOAD)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status == 202 {
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        )))
    }
}

/// C keep-alive connections, each POSTing `Event` invocations in a closed
/// loop while `budget` allows. A connection that breaks is made again.
async fn closed_loop(target: &Target, connections: usize, budget: Budget) -> anyhow::Result<Acks> {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let target = target.clone();
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = TaskResult::default();
            result.latencies.reserve(16 * 1024);
            let mut sender = None;
            while result.errors < MAX_ERRORS_PER_TASK && budget.take() {
                let mut s = match sender.take() {
                    Some(s) => s,
                    None => match connect(target.addr).await {
                        Ok(s) => s,
                        Err(err) => {
                            budget.give_back();
                            result.error(format!("connect: {err:#}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                if s.ready().await.is_err() {
                    // Closed by the server between requests.
                    budget.give_back();
                    continue;
                }
                let sent = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, post_event(&mut s, &target)).await {
                    Ok(Ok(Ok(()))) => {
                        result.latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        sender = Some(s);
                    }
                    Ok(Ok(Err(answer))) => {
                        budget.give_back();
                        result.error(answer);
                        sender = Some(s);
                    }
                    Ok(Err(err)) => {
                        budget.give_back();
                        result.error(format!("{err:#}"));
                    }
                    Err(_) => {
                        budget.give_back();
                        result.error(format!("no answer within {REQUEST_TIMEOUT:?}"));
                    }
                }
            }
            result
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let r = task.await?;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
        all.extend(r.latencies);
    }
    let wall = started.elapsed();
    let all = sorted(all.into_iter());
    Ok(Acks {
        acks: all.len(),
        errors,
        first_error,
        wall,
        p50_ms: percentile(&all, 50.0),
        p99_ms: percentile(&all, 99.0),
    })
}

// --- 1. acknowledgements ----------------------------------------------------------

struct AckRow {
    function: &'static str,
    mode: &'static str,
    connections: usize,
    acks: Acks,
    cpu: CpuUse,
    /// Events of the function queued or in flight when the window ended.
    pending_after: u64,
    /// How long they took to drain, when they were drained.
    drained_in: Option<Duration>,
}

/// The function part 1 sends to, and whether the dispatcher delivers its
/// events meanwhile (then the queue is drained around each row).
struct AckCase {
    target: Target,
    function: &'static str,
    mode: &'static str,
    drain: bool,
}

async fn measure_acks(
    server_pid: u32,
    admin: &Admin,
    case: &AckCase,
    connections: usize,
    window: Duration,
) -> anyhow::Result<AckRow> {
    let AckCase {
        target,
        function,
        mode,
        drain,
    } = case;
    let (function, mode, drain) = (*function, *mode, *drain);
    closed_loop(target, connections, Budget::Until(Instant::now() + WARMUP)).await?;
    if drain {
        admin.drain(function, DRAIN_TIMEOUT).await?;
    }
    eprintln!("acknowledgements: {function} ({mode}) over {connections} connections");
    let before = cpu_snapshot(server_pid);
    let started = Instant::now();
    let acks = closed_loop(target, connections, Budget::Until(started + window)).await?;
    let wall = started.elapsed();
    let cpu = CpuUse::between(before, cpu_snapshot(server_pid), wall);
    let pending_after = admin.status(function).await?.pending();
    let drained_in = if drain {
        admin.drain(function, DRAIN_TIMEOUT).await?
    } else {
        None
    };
    if let Some(why) = &acks.first_error {
        eprintln!("  {} errors, the first: {why}", acks.errors);
    }
    Ok(AckRow {
        function,
        mode,
        connections,
        acks,
        cpu,
        pending_after,
        drained_in,
    })
}

// --- 2. dispatch ------------------------------------------------------------------

struct DispatchRow {
    function: &'static str,
    runtime: &'static str,
    events: usize,
    enqueue: Acks,
    /// Queued or in flight at the last acknowledgement.
    left: u64,
    /// From the last acknowledgement until none is left.
    drain: Option<Duration>,
    /// From the first request until none is left.
    total: Option<Duration>,
    enqueue_cpu: CpuUse,
    drain_cpu: CpuUse,
    instances: u64,
    dead: u64,
}

impl DispatchRow {
    fn drain_rate(&self) -> Option<f64> {
        self.drain
            .map(|d| self.left as f64 / d.as_secs_f64().max(1e-9))
    }

    fn total_rate(&self) -> Option<f64> {
        self.total
            .map(|d| self.enqueue.acks as f64 / d.as_secs_f64().max(1e-9))
    }
}

async fn enqueue(target: &Target, events: usize) -> anyhow::Result<Acks> {
    let budget = Budget::Events(Arc::new(AtomicUsize::new(events)));
    closed_loop(target, BACKLOG_CONNECTIONS.min(events.max(1)), budget).await
}

async fn measure_dispatch(
    server: &Server,
    admin: &Admin,
    function: &'static str,
    runtime: &'static str,
    events: usize,
) -> anyhow::Result<DispatchRow> {
    let pid = server.pid();
    let target = Target::new(server, function)?;
    eprintln!("dispatch: warming {function} with {WARM_BACKLOG} events");
    enqueue(&target, WARM_BACKLOG).await?;
    admin.drain(function, DRAIN_TIMEOUT).await?;
    let dead_before = admin.status(function).await?.dead;

    eprintln!("dispatch: {events} events to {function}");
    let a = cpu_snapshot(pid);
    let started = Instant::now();
    let acks = enqueue(&target, events).await?;
    let enqueued = Instant::now();
    let b = cpu_snapshot(pid);
    let left = admin.status(function).await?.pending();
    let drain = admin.drain(function, DRAIN_TIMEOUT).await?;
    let c = cpu_snapshot(pid);
    let drained = Instant::now();
    let total = drain.map(|_| drained - started);
    let status = admin.status(function).await?;
    if let Some(why) = &acks.first_error {
        eprintln!("  {} errors, the first: {why}", acks.errors);
    }
    Ok(DispatchRow {
        function,
        runtime,
        events,
        left,
        drain,
        total,
        enqueue_cpu: CpuUse::between(a, b, enqueued - started),
        drain_cpu: CpuUse::between(b, c, drained - enqueued),
        instances: status.instances,
        dead: status.dead.saturating_sub(dead_before),
        enqueue: acks,
    })
}

// --- 3. latency -------------------------------------------------------------------

/// One paced event: when it was due and sent, and its answer.
struct Sent {
    /// How late the send was against the schedule, in ms.
    lag_ms: f64,
    /// The client's clock just before sending, in ns since the epoch.
    sent_ns: i128,
    /// The client's clock when the 202 had arrived.
    acked_ns: i128,
    request_id: Result<String, String>,
}

struct LatencyRow {
    rate: f64,
    secs: f64,
    sent: usize,
    acked: usize,
    handled: usize,
    duplicates: usize,
    first_error: Option<String>,
    lag_ms: Vec<f64>,
    /// Sorted, in ms.
    send_to_handler: Vec<f64>,
    send_to_ack: Vec<f64>,
    ack_to_handler: Vec<f64>,
    cpu: CpuUse,
    drained_in: Option<Duration>,
}

/// Sends `Event` invocations to `function` on a fixed schedule, `rate`
/// per second for `secs`, without waiting for the answers.
async fn paced(admin: &Admin, function: &'static str, rate: f64, secs: f64) -> Vec<Sent> {
    let n = (rate * secs).round().max(1.0) as usize;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let lag_ms = due.elapsed().as_secs_f64() * 1000.0;
            let sent_ns = unix_ns();
            let request_id = admin
                .post_event(function)
                .await
                .map_err(|e| format!("{e:#}"));
            Sent {
                lag_ms,
                sent_ns,
                acked_ns: unix_ns(),
                request_id,
            }
        }));
    }
    let mut sent = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok(s) => sent.push(s),
            Err(err) => sent.push(Sent {
                lag_ms: 0.0,
                sent_ns: 0,
                acked_ns: 0,
                request_id: Err(err.to_string()),
            }),
        }
    }
    sent
}

async fn measure_latency(
    server_pid: u32,
    admin: &Admin,
    rate: f64,
    secs: f64,
) -> anyhow::Result<LatencyRow> {
    eprintln!("latency: warming {STAMP} at {rate}/s for 1 s");
    paced(admin, STAMP, rate, WARMUP.as_secs_f64()).await;
    admin.drain(STAMP, DRAIN_TIMEOUT).await?;

    eprintln!("latency: {STAMP} at {rate}/s for {secs} s");
    let a = cpu_snapshot(server_pid);
    let started = Instant::now();
    let sent = paced(admin, STAMP, rate, secs).await;
    let wall = started.elapsed();
    let cpu = CpuUse::between(a, cpu_snapshot(server_pid), wall);
    let drained_in = admin.drain(STAMP, DRAIN_TIMEOUT).await?;
    tokio::time::sleep(LOG_SETTLE).await;
    let (stamps, duplicates) = admin.stamps(STAMP).await?;

    let mut row = LatencyRow {
        rate,
        secs,
        sent: sent.len(),
        acked: 0,
        handled: 0,
        duplicates,
        first_error: None,
        lag_ms: sorted(sent.iter().map(|s| s.lag_ms)),
        send_to_handler: Vec::new(),
        send_to_ack: Vec::new(),
        ack_to_handler: Vec::new(),
        cpu,
        drained_in,
    };
    let ms = |ns: i128| ns as f64 / 1e6;
    for s in &sent {
        let id = match &s.request_id {
            Ok(id) => id,
            Err(err) => {
                row.first_error.get_or_insert_with(|| err.clone());
                continue;
            }
        };
        row.acked += 1;
        row.send_to_ack.push(ms(s.acked_ns - s.sent_ns));
        if let Some(&handled_ns) = stamps.get(id) {
            row.handled += 1;
            row.send_to_handler.push(ms(handled_ns - s.sent_ns));
            row.ack_to_handler.push(ms(handled_ns - s.acked_ns));
        }
    }
    for v in [
        &mut row.send_to_handler,
        &mut row.send_to_ack,
        &mut row.ack_to_handler,
    ] {
        v.sort_by(f64::total_cmp);
    }
    Ok(row)
}

// --- 4. cluster ------------------------------------------------------------------

/// What part 4 is given.
struct ClusterRun<'a> {
    first: &'a Server,
    admin: &'a Admin,
    url: &'a str,
    dir: &'a Path,
    nodes: usize,
    backlog: usize,
    rate: f64,
    latency_secs: f64,
}

/// The three figures with some number of nodes.
struct ClusterRow {
    nodes: usize,
    acks: Acks,
    dispatch: DispatchRow,
    latency: LatencyRow,
}

/// One node alone, then `nodes` together, then one alone again.
async fn measure_cluster(run: ClusterRun<'_>) -> anyhow::Result<Vec<ClusterRow>> {
    let mut rows = vec![cluster_row(&run, &[run.first]).await?];
    let token = run.dir.join("data").join("admin.token");
    let token = token.to_str().context("a temporary path that is UTF-8")?;
    let mut extra = Vec::new();
    for n in 1..run.nodes {
        let data_dir = run.dir.join(format!("node{n}"));
        let log = run.dir.join(format!("node{n}.log"));
        let node = Server::start(
            &data_dir,
            &log,
            &["--store", run.url, "--admin-token-file", token],
        )?;
        eprintln!("cluster: node {} at {}", n + 1, node.admin);
        extra.push(node);
    }
    for node in &extra {
        taken_up(&Admin::new(node)?).await?;
    }
    let all: Vec<&Server> = std::iter::once(run.first).chain(extra.iter()).collect();
    rows.push(cluster_row(&run, &all).await?);
    // Stopped (SIGTERM, waited for) before the last single-node row.
    drop(all);
    drop(extra);
    rows.push(cluster_row(&run, &[run.first]).await?);
    Ok(rows)
}

/// Waits until the node serves the functions of the app.
async fn taken_up(admin: &Admin) -> anyhow::Result<()> {
    let deadline = Instant::now() + TAKE_UP_TIMEOUT;
    while admin.status(NOOP_PY).await.is_err() {
        if Instant::now() > deadline {
            bail!("a node did not take up the deploy within {TAKE_UP_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

async fn cluster_row(run: &ClusterRun<'_>, nodes: &[&Server]) -> anyhow::Result<ClusterRow> {
    let n = nodes.len();
    let connections = BACKLOG_CONNECTIONS;
    eprintln!("cluster: {n} node(s): acknowledgements over {connections} connections");
    let targets = nodes
        .iter()
        .map(|node| Target::new(node, NOOP_PY))
        .collect::<anyhow::Result<Vec<_>>>()?;
    spread(&targets, connections, Instant::now() + WARMUP).await?;
    run.admin.drain(NOOP_PY, DRAIN_TIMEOUT).await?;
    let acks = spread(
        &targets,
        connections,
        Instant::now() + Duration::from_secs(3),
    )
    .await?;
    run.admin.drain(NOOP_PY, DRAIN_TIMEOUT).await?;
    let dispatch = measure_dispatch(run.first, run.admin, NOOP_PY, "python3", run.backlog).await?;
    let latency = measure_latency(run.first.pid(), run.admin, run.rate, run.latency_secs).await?;
    Ok(ClusterRow {
        nodes: n,
        acks,
        dispatch,
        latency,
    })
}

/// A closed-loop load until `until` over `connections` split across
/// `targets` as evenly as they go.
async fn spread(targets: &[Target], connections: usize, until: Instant) -> anyhow::Result<Acks> {
    let n = targets.len();
    let tasks: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let target = target.clone();
            let share = connections / n + usize::from(i < connections % n);
            tokio::spawn(async move { closed_loop(&target, share, Budget::Until(until)).await })
        })
        .collect();
    let mut loads = Vec::with_capacity(n);
    for task in tasks {
        loads.push(task.await??);
    }
    merged(loads)
}

/// Loads that ran side by side, as one: their 202s over the longest wall
/// time; the p50 and p99 are the worst of theirs.
fn merged(loads: Vec<Acks>) -> anyhow::Result<Acks> {
    let worst = |f: fn(&Acks) -> Option<f64>| loads.iter().filter_map(f).max_by(f64::total_cmp);
    Ok(Acks {
        acks: loads.iter().map(|l| l.acks).sum(),
        errors: loads.iter().map(|l| l.errors).sum(),
        first_error: loads.iter().find_map(|l| l.first_error.clone()),
        wall: loads.iter().map(|l| l.wall).max().unwrap_or_default(),
        p50_ms: worst(|l| l.p50_ms),
        p99_ms: worst(|l| l.p99_ms),
    })
}

fn print_cluster(rows: &[ClusterRow]) {
    println!();
    println!("4. cluster: nodes on one PostgreSQL database, on this host");
    println!(
        "   target: {} nodes dispatch >= {TARGET_CLUSTER_SHARE:.1} x one node's rate; p99 <= 30 ms at {TARGET_RATE:.0}/s",
        rows.iter().map(|r| r.nodes).max().unwrap_or(1)
    );
    println!();
    println!(
        "{:>5}  {:>9} {:>7}  {:>10} {:>9}  {:>9} {:>9} {:>8}",
        "nodes", "acks/s", "errors", "overall/s", "dead", "p50 ms", "p99 ms", "handled"
    );
    println!("{}", "-".repeat(80));
    for row in rows {
        let latency = &row.latency;
        println!(
            "{:>5}  {:>9.0} {:>7}  {:>10} {:>9}  {:>9} {:>9} {:>8}",
            row.nodes,
            row.acks.rate(),
            row.acks.errors,
            row.dispatch
                .total_rate()
                .map_or("-".to_owned(), |r| format!("{r:.0}")),
            row.dispatch.dead,
            ms(percentile(&latency.send_to_handler, 50.0)),
            ms(percentile(&latency.send_to_handler, 99.0)),
            format!("{}/{}", latency.handled, latency.sent),
        );
    }
    let single: Vec<f64> = rows
        .iter()
        .filter(|r| r.nodes == 1)
        .filter_map(|r| r.dispatch.total_rate())
        .collect();
    if let (Some(cluster), false) = (
        rows.iter()
            .find(|r| r.nodes > 1)
            .and_then(|r| r.dispatch.total_rate()),
        single.is_empty(),
    ) {
        let one = single.iter().sum::<f64>() / single.len() as f64;
        println!();
        println!(
            "overall rate with more nodes / one node (mean of the rows before and after) = {:.2} (target {TARGET_CLUSTER_SHARE:.1})",
            cluster / one
        );
    }
    println!(
        "acks/s: 202s over 64 connections spread across the nodes for 3 s, p50/p99 the worst node's;"
    );
    println!(
        "overall/s: a backlog of N sent through the first node and delivered by every node, N / (first request until drained)\n\
         (the dispatchers keep up with the enqueue, so this is the slower of the two); latency: sent through the first"
    );
}

// --- run -------------------------------------------------------------------------

fn run() -> anyhow::Result<()> {
    let secs = env_number("STRATUS_BENCH_SECS", DEFAULT_SECS, |s| {
        s.is_finite() && *s > 0.0 && *s <= MAX_SECS
    })
    .with_context(|| format!("STRATUS_BENCH_SECS: give seconds, at most {MAX_SECS}"))?;
    let window = Duration::from_secs_f64(secs);
    let connection_counts = counts("STRATUS_BENCH_CONNECTIONS", &CONNECTIONS)?;
    let backlog = env_number("STRATUS_BENCH_EVENTS", DEFAULT_BACKLOG, |n| {
        *n <= MAX_BACKLOG
    })
    .with_context(|| format!("STRATUS_BENCH_EVENTS: give events, at most {MAX_BACKLOG}"))?;
    let runtimes =
        std::env::var("STRATUS_BENCH_RUNTIMES").unwrap_or_else(|_| "python3,provided".to_owned());
    let wants = |runtime: &str| runtimes.split(',').any(|r| r.trim() == runtime);
    let rate = env_number("STRATUS_BENCH_RATE", DEFAULT_RATE, |r| {
        r.is_finite() && *r > 0.0 && *r <= 100_000.0
    })
    .context("STRATUS_BENCH_RATE: give events per second, at most 100000")?;
    let latency_secs = env_number("STRATUS_BENCH_LATENCY_SECS", DEFAULT_LATENCY_SECS, |s| {
        s.is_finite() && *s >= 0.0 && *s <= MAX_SECS
    })
    .with_context(|| format!("STRATUS_BENCH_LATENCY_SECS: give seconds, at most {MAX_SECS}"))?;

    let nodes = env_number("STRATUS_BENCH_NODES", DEFAULT_NODES, |n| {
        (1..=8).contains(n)
    })
    .context("STRATUS_BENCH_NODES: give the nodes of the cluster part, 1 to 8")?;

    let with_rust = backlog > 0 && wants("provided");
    let noop_rust = if with_rust {
        Some(locate_example("noop_rust")?)
    } else {
        None
    };
    let tmp = tempfile::Builder::new()
        .prefix("stratus-events-bench-")
        .tempdir()?;
    let app_dir = tmp.path().join("app");
    write_app(&app_dir, noop_rust.as_deref())?;
    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    // `STRATUS_BENCH_STORE=postgres://…` (a new, empty database): the same
    // figures with the state in PostgreSQL.
    let store = std::env::var("STRATUS_BENCH_STORE").ok();
    let extra: Vec<&str> = match &store {
        Some(url) => vec!["--store", url.as_str()],
        None => Vec::new(),
    };
    let server = Server::start(&data_dir, &log, &extra)?;
    eprintln!(
        "server: admin {}, store {}",
        server.admin,
        store.as_deref().unwrap_or("SQLite in the data directory")
    );
    deploy(&app_dir, &data_dir)?;
    let pid = server.pid();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (acks, dispatch, latency, cluster) = runtime.block_on(async {
        let admin = Admin::new(&server)?;
        let delivering = AckCase {
            target: Target::new(&server, NOOP_PY)?,
            function: NOOP_PY,
            mode: "delivering",
            drain: true,
        };
        // Start noop-py's first instance: no cold start in the first row.
        enqueue(&delivering.target, 1).await?;
        admin.drain(NOOP_PY, DRAIN_TIMEOUT).await?;

        let mut acks = Vec::new();
        for &connections in &connection_counts {
            acks.push(measure_acks(pid, &admin, &delivering, connections, window).await?);
        }

        let mut dispatch = Vec::new();
        if backlog > 0 {
            for (function, runtime) in [(NOOP_PY, "python3"), (NOOP_RUST, "provided")] {
                if wants(runtime) {
                    dispatch
                        .push(measure_dispatch(&server, &admin, function, runtime, backlog).await?);
                }
            }
        }

        let latency = if latency_secs > 0.0 {
            Some(measure_latency(pid, &admin, rate, latency_secs).await?)
        } else {
            None
        };

        let mut cluster = Vec::new();
        if let (Some(url), true) = (&store, nodes > 1) {
            let backlog = if backlog > 0 {
                backlog
            } else {
                DEFAULT_BACKLOG
            };
            let rows = measure_cluster(ClusterRun {
                first: &server,
                admin: &admin,
                url,
                dir: tmp.path(),
                nodes,
                backlog,
                rate,
                latency_secs: if latency_secs > 0.0 {
                    latency_secs
                } else {
                    DEFAULT_LATENCY_SECS
                },
            })
            .await?;
            cluster.extend(rows);
        }

        // Last: the parked function takes every delivery slot for good.
        let parked = AckCase {
            target: Target::new(&server, PARKED)?,
            function: PARKED,
            mode: "parked",
            drain: false,
        };
        for &connections in &connection_counts {
            acks.push(measure_acks(pid, &admin, &parked, connections, window).await?);
        }
        anyhow::Ok((acks, dispatch, latency, cluster))
    })?;
    drop(runtime);

    println!();
    println!(
        "stratus events benchmark: client and server on this host ({} CPUs), isolation {}",
        cpu_snapshot(pid).cpus,
        isolation(&log)
    );
    print_acks(&acks, secs);
    if !dispatch.is_empty() {
        print_dispatch(&dispatch);
    }
    if let Some(latency) = &latency {
        print_latency(latency);
    }
    if !cluster.is_empty() {
        print_cluster(&cluster);
    }
    println!();
    println!(
        "cpu: cores in use meanwhile (/proc): server = the stratus server process, bench = this \
         process (the clients), rest = everything else (the instances, mostly), idle = unused"
    );
    // Stop the server (SIGTERM, wait) before the data directory goes away.
    drop(server);
    drop(tmp);
    Ok(())
}

// --- report ------------------------------------------------------------------------

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn of_target(value: f64, target: f64) -> String {
    format!("{:.0}%", 100.0 * value / target)
}

fn print_acks(rows: &[AckRow], secs: f64) {
    println!();
    println!(
        "1. durable acknowledgements: POST /v1/apps/{APP}/functions/FN/invoke, \
         x-stratus-invocation-type: Event, {}-byte JSON payload, keep-alive HTTP/1.1 (hyper), \
         closed loop, {secs} s per row after {} s warm-up",
        PAYLOAD.len(),
        WARMUP.as_secs()
    );
    println!("   target: >= {TARGET_ACKS_PER_S:.0} acknowledged events/s");
    println!();
    println!(
        "{:<8} {:<10} {:>5} {:>7} {:>8} {:>7} {:>8} {:>8} {:>4} | {} {:>7} | {:>8} {:>8}",
        "function",
        "dispatch",
        "conns",
        "acks",
        "acks/s",
        "target",
        "p50 ms",
        "p99 ms",
        "err",
        CPU_HEADER,
        "srv µs",
        "pending",
        "drain s",
    );
    println!("{}", "-".repeat(126));
    for row in rows {
        let a = &row.acks;
        println!(
            "{:<8} {:<10} {:>5} {:>7} {:>8.0} {:>7} {:>8} {:>8} {:>4} | {} {:>7} | {:>8} {:>8}",
            row.function,
            row.mode,
            row.connections,
            a.acks,
            a.rate(),
            of_target(a.rate(), TARGET_ACKS_PER_S),
            ms(a.p50_ms),
            ms(a.p99_ms),
            a.errors,
            row.cpu.columns(),
            row.cpu.server_us_per(a.acks),
            row.pending_after,
            row.drained_in
                .map_or_else(|| "-".to_owned(), |d| format!("{:.2}", d.as_secs_f64())),
        );
    }
    println!();
    println!("acks/s = 202s / wall time of the row; target = acks/s as a share of the target;");
    println!("p50/p99 = the time from sending a request to its 202 (after the commit)");
    println!(
        "dispatch: delivering = to {NOOP_PY} (python3 no-op, max_instances {MAX_INSTANCES}), which \
         the dispatcher delivers at the same time"
    );
    println!(
        "  (the queue drained before each row); parked = to {PARKED} (max_instances 1), whose \
         first event sleeps 15 min on its only"
    );
    println!(
        "  instance while the dispatcher's 256 delivery slots hold events waiting for it: \
         nothing is delivered, the enqueue path alone"
    );
    println!(
        "srv µs = server CPU per acknowledged event; pending = the function's events queued or \
         in flight at the end of the row;"
    );
    println!("drain s = the time they then took to be delivered");
}

fn print_dispatch(rows: &[DispatchRow]) {
    println!();
    println!(
        "2. dispatch: a backlog of N events per function (max_instances {MAX_INSTANCES}, warmed \
         with {WARM_BACKLOG} events first), enqueued over {BACKLOG_CONNECTIONS} connections, then \
         drained; GET /v1/status polled every {} ms",
        POLL.as_millis()
    );
    println!("   target: >= {TARGET_DISPATCH_PER_S:.0} dispatched events/s");
    println!();
    println!(
        "{:<10} {:<9} {:>6} {:>9} {:>9} {:>6} | {:>6} {:>8} {:>12} {:>7} {:>10} | {:>5} {:>4} | {} {:>7}",
        "function",
        "runtime",
        "events",
        "enqueue s",
        "enqueue/s",
        "err",
        "left",
        "drain s",
        "dispatched/s",
        "target",
        "overall/s",
        "inst",
        "dead",
        CPU_HEADER,
        "srv µs",
    );
    println!("{}", "-".repeat(138));
    for row in rows {
        let drain_rate = row.drain_rate();
        println!(
            "{:<10} {:<9} {:>6} {:>9.2} {:>9.0} {:>6} | {:>6} {:>8} {:>12} {:>7} {:>10} | {:>5} {:>4} | {} {:>7}",
            row.function,
            row.runtime,
            row.events,
            row.enqueue.wall.as_secs_f64(),
            row.enqueue.rate(),
            row.enqueue.errors,
            row.left,
            row.drain
                .map_or_else(|| "-".to_owned(), |d| format!("{:.2}", d.as_secs_f64())),
            drain_rate.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}")),
            drain_rate.map_or_else(|| "-".to_owned(), |r| of_target(r, TARGET_DISPATCH_PER_S)),
            row.total_rate()
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}")),
            row.instances,
            row.dead,
            row.drain_cpu.columns(),
            row.drain_cpu.server_us_per(row.left as usize),
        );
    }
    println!();
    println!(
        "enqueue s, enqueue/s = acknowledging the N events (the dispatcher already delivering); \
         left = queued or in flight at the last 202"
    );
    println!(
        "drain s = from the last 202 until none was queued or in flight; dispatched/s = left / \
         drain s; target = its share of the target"
    );
    println!(
        "overall/s = N / (first request until drained); inst = the function's instances at the \
         end; dead = events that became dead letters"
    );
    println!("cpu and srv µs (server CPU per event) over the drain; during the enqueue:");
    for row in rows {
        println!(
            "  {:<10} {} (server {} µs per acknowledged event)",
            row.function,
            row.enqueue_cpu.columns(),
            row.enqueue_cpu.server_us_per(row.enqueue.acks)
        );
    }
}

fn print_latency(row: &LatencyRow) {
    let pct = |v: &[f64], p: f64| ms(percentile(v, p));
    println!();
    println!(
        "3. enqueue-to-handler latency: {} events/s on a fixed schedule (open loop) for {} s to \
         {STAMP} (python3, max_instances {MAX_INSTANCES}), after a 1 s warm-up",
        row.rate, row.secs
    );
    println!(
        "   target: p99 <= {TARGET_P99_MS:.0} ms at {TARGET_RATE:.0} events/s{}",
        if (row.rate - TARGET_RATE).abs() > f64::EPSILON {
            " (this run's rate differs)"
        } else {
            ""
        }
    );
    println!();
    println!(
        "sent {}, acknowledged {}, handled {} (found in the logs), duplicate lines {}; sends \
         behind schedule p50 {} ms, p99 {} ms, max {} ms",
        row.sent,
        row.acked,
        row.handled,
        row.duplicates,
        pct(&row.lag_ms, 50.0),
        pct(&row.lag_ms, 99.0),
        pct(&row.lag_ms, 100.0),
    );
    println!(
        "queue drained {} after the last send; cpu while sending: {CPU_HEADER} = {}",
        row.drained_in
            .map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
        row.cpu.columns()
    );
    println!();
    println!(
        "{:<20} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ms", "n", "p50", "p90", "p99", "max", "target"
    );
    println!("{}", "-".repeat(76));
    for (label, values, target) in [
        ("send -> handler", &row.send_to_handler, true),
        ("  send -> 202", &row.send_to_ack, false),
        ("  202 -> handler", &row.ack_to_handler, false),
    ] {
        println!(
            "{:<20} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            label,
            values.len(),
            pct(values, 50.0),
            pct(values, 90.0),
            pct(values, 99.0),
            pct(values, 100.0),
            if target {
                percentile(values, 99.0)
                    .map_or_else(|| "-".to_owned(), |p| of_target(p, TARGET_P99_MS))
            } else {
                String::new()
            },
        );
    }
    println!();
    println!(
        "send = the client's clock just before the request; handler = time.time_ns() as the \
         handler is entered (its log line);"
    );
    println!(
        "202 = the client's clock when the acknowledgement arrived (202 -> handler can be \
         negative); target = p99 as a share of {TARGET_P99_MS:.0} ms"
    );
    if let Some(err) = &row.first_error {
        println!(
            "{} not acknowledged, the first: {err}",
            row.sent - row.acked
        );
    }
}
