//! Invocation latency, throughput and cold starts through the admin invoke API.
//!
//! Starts a real `stratus server` (isolation `auto`) in a temporary data
//! directory, deploys one application with a no-op function per runtime
//! (python3, nodejs and a `provided` Rust binary built with `lambda_runtime`),
//! and drives each function at concurrency 1 and 16 for a fixed wall time. As
//! a reference it also measures `GET /v1/health` on the same listener: the
//! HTTP floor without any function.
//!
//! Then cold starts in bursts: one more application per runtime with N
//! functions per round (`max_instances: 1`, all on one code directory),
//! each called once with no pause between calls, so that every call starts
//! a fresh instance and the pool of sandboxes made ahead of demand runs
//! dry. A round runs with 1 caller and one with 8 callers at once. Python
//! runs on this server, whose instances are forked from a loaded template,
//! and, as the reference, on a second server started with `--templates
//! false`, where each starts its interpreter afresh; the rounds alternate
//! between the two. It reports the phases the platform measured, cold
//! starts per second, the CPU the server's own processes (server, launcher,
//! templates) and the whole host spent per cold start, and, once those
//! instances are idle, their memory.
//!
//! Run with `cargo bench -p stratus-cli --bench invoke`;
//! `STRATUS_BENCH_SECS` sets the seconds per warm measurement (default 3),
//! `STRATUS_BENCH_COLD` the functions per runtime and round of the cold
//! part (default 200, 0 skips it), `STRATUS_BENCH_COLD_PAUSE_MS` a pause
//! before each cold call (default 0; 150 lets the pool refill between
//! calls, as under paced traffic). It prints figures only and never
//! asserts on them.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use support::{Server, deploy, env_number, locate_example, percentile, sorted};

mod support;

const CONCURRENCY: [usize; 2] = [1, 16];
/// Instances each function may run: more than the highest concurrency.
const MAX_INSTANCES: u32 = 32;
const WARMUP_CALLS: usize = 20;
const DEFAULT_SECS: f64 = 3.0;
const MAX_SECS: f64 = 3600.0;
/// Functions per runtime in the cold-start part.
const DEFAULT_COLD: usize = 200;
/// Pause before each cold call: none, a burst.
const DEFAULT_COLD_PAUSE_MS: u64 = 0;
/// Callers at once in each round of cold calls.
const COLD_CALLERS: [usize; 2] = [1, 8];
const MAX_COLD: usize = 1000;
/// The server's default cap on one application's instances; raised when the
/// cold part needs more.
const APP_MAX_INSTANCES: usize = 300;
/// Upper bound on calls per caller task in one measurement, whatever the time.
const MAX_CALLS_PER_TASK: usize = 1_000_000;
/// A caller task gives up after this many failed calls.
const MAX_ERRORS_PER_TASK: usize = 100;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The payload every function echoes back.
const PAYLOAD: &str = r#"{"bench":true,"n":42}"#;

/// (function name = code directory, runtime, handler) of the deployed functions.
const FUNCTIONS: [(&str, &str, Option<&str>); 3] = [
    ("python", "python3", Some("main.handler")),
    ("node", "nodejs", Some("index.handler")),
    ("rust", "provided", None),
];
const APP: &str = "bench";

/// An application of the cold-start part: N functions of one runtime.
struct ColdApp {
    name: &'static str,
    /// How the report names it.
    label: &'static str,
    runtime: &'static str,
    handler: Option<&'static str>,
    /// The code file, in the code directory all the functions share.
    file: &'static str,
    /// Its text; `None` for the noop_rust binary.
    source: Option<&'static str>,
}

const COLD_APPS: [ColdApp; 3] = [
    ColdApp {
        name: "cold-python",
        label: "python3",
        runtime: "python3",
        handler: Some("main.handler"),
        file: "main.py",
        source: Some(PYTHON_COLD),
    },
    ColdApp {
        name: "cold-node",
        label: "nodejs",
        runtime: "nodejs",
        handler: Some("index.handler"),
        file: "index.js",
        source: Some(NODE_COLD),
    },
    ColdApp {
        name: "cold-rust",
        label: "provided",
        runtime: "provided",
        handler: None,
        file: "bootstrap",
        source: None,
    },
];

/// The cold functions answer 1, or, asked with `{"memory": true}`, their
/// process's resident and proportional memory: a process forked from a
/// template cannot be told apart by its environment from outside.
const PYTHON_COLD: &str = "def handler(e, c):
    if isinstance(e, dict) and e.get('memory'):
        with open('/proc/self/smaps_rollup') as f:
            kib = {l.split(':')[0]: int(l.split()[1]) for l in f if l.split()[-1:] == ['kB']}
        return {'rss_kib': kib['Rss'], 'pss_kib': kib['Pss']}
    return 1
";
const NODE_COLD: &str = r"exports.handler = async (e) => {
  if (e && e.memory) {
    const kib = {};
    for (const l of require('fs').readFileSync('/proc/self/smaps_rollup', 'utf8').split('\n')) {
      const m = /^(\w+):\s+(\d+) kB/.exec(l);
      if (m) kib[m[1]] = Number(m[2]);
    }
    return { rss_kib: kib.Rss, pss_kib: kib.Pss };
  }
  return 1;
};
";

/// The python3 application again, on the reference server, whose instances
/// start their interpreter afresh.
const COLD_FRESH: ColdApp = ColdApp {
    label: "python3 fresh",
    ..COLD_APPS[0]
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("invoke bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let secs = env_number("STRATUS_BENCH_SECS", DEFAULT_SECS, |s| {
        s.is_finite() && *s > 0.0 && *s <= MAX_SECS
    })
    .with_context(|| format!("STRATUS_BENCH_SECS: give seconds, at most {MAX_SECS}"))?;
    let cold_functions = env_number("STRATUS_BENCH_COLD", DEFAULT_COLD, |n| *n <= MAX_COLD)
        .with_context(|| {
            format!("STRATUS_BENCH_COLD: give functions per runtime, 0 to {MAX_COLD}")
        })?;
    let window = Duration::from_secs_f64(secs);
    let pause = env_number("STRATUS_BENCH_COLD_PAUSE_MS", DEFAULT_COLD_PAUSE_MS, |ms| {
        *ms <= 10_000
    })
    .context("STRATUS_BENCH_COLD_PAUSE_MS: give milliseconds, at most 10000")?;
    let pause = Duration::from_millis(pause);

    let rounds = COLD_CALLERS.len();
    let noop_rust = locate_example("noop_rust")?;
    let tmp = tempfile::Builder::new()
        .prefix("stratus-bench-")
        .tempdir()?;
    let mut app_dirs = vec![tmp.path().join("app")];
    write_app(&app_dirs[0], &noop_rust)?;
    if cold_functions > 0 {
        for app in &COLD_APPS {
            let dir = tmp.path().join(app.name);
            write_cold_app(&dir, app, cold_functions * rounds, &noop_rust)?;
            app_dirs.push(dir);
        }
    }

    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let app_max = (cold_functions * rounds).max(APP_MAX_INSTANCES).to_string();
    let server = Server::start(&data_dir, &log, &["--app-max-instances", &app_max])?;
    eprintln!("server: admin {}", server.admin);
    for dir in &app_dirs {
        deploy(dir, &data_dir)?;
    }
    // The reference for cold starts: the same python3 application on a
    // server whose instances start their interpreter afresh.
    let fresh_data = tmp.path().join("data-fresh");
    let fresh = if cold_functions > 0 {
        let log = tmp.path().join("server-fresh.log");
        let args = ["--app-max-instances", &app_max, "--templates", "false"];
        let fresh = Server::start(&fresh_data, &log, &args)?;
        deploy(&app_dirs[1], &fresh_data)?;
        Some(fresh)
    } else {
        None
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (rows, cold) = runtime.block_on(async {
        let caller = Caller::new(&server)?;
        let rows = measure_all(&caller, window).await?;
        let cold = match &fresh {
            Some(fresh) => {
                let reference = Caller::new(fresh)?;
                measure_cold(&caller, &reference, cold_functions, pause).await?
            }
            None => Vec::new(),
        };
        anyhow::Ok((rows, cold))
    })?;
    drop(runtime);

    print_table(&rows, secs);
    if !cold.is_empty() {
        print_cold(&cold, cold_functions, pause, isolation(&log));
    }
    // Stop the servers (SIGTERM, wait) before the data directory goes away.
    drop(fresh);
    drop(server);
    drop(tmp);
    Ok(())
}

// --- setup -----------------------------------------------------------------

/// One function's entry in a stratus.yaml.
fn function_entry(
    manifest: &mut String,
    name: &str,
    runtime: &str,
    handler: Option<&str>,
    code: &str,
    max_instances: u32,
) -> std::fmt::Result {
    writeln!(manifest, "  {name}:\n    runtime: {runtime}")?;
    if let Some(handler) = handler {
        writeln!(manifest, "    handler: {handler}")?;
    }
    writeln!(
        manifest,
        "    code: ./{code}\n    max_instances: {max_instances}"
    )
}

fn write_app(dir: &Path, noop_rust: &Path) -> anyhow::Result<()> {
    let mut manifest = format!("app: {APP}\nfunctions:\n");
    for (name, runtime, handler) in FUNCTIONS {
        function_entry(&mut manifest, name, runtime, handler, name, MAX_INSTANCES)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("stratus.yaml"), manifest)?;

    let python = dir.join("python");
    std::fs::create_dir_all(&python)?;
    std::fs::write(python.join("main.py"), "def handler(e, c):\n    return e\n")?;

    let node = dir.join("node");
    std::fs::create_dir_all(&node)?;
    std::fs::write(node.join("index.js"), "exports.handler = async (e) => e;\n")?;

    let rust = dir.join("rust");
    std::fs::create_dir_all(&rust)?;
    copy_bootstrap(noop_rust, &rust.join("bootstrap"))
}

fn copy_bootstrap(noop_rust: &Path, to: &Path) -> anyhow::Result<()> {
    // fs::copy keeps the permission bits, so bootstrap stays executable.
    std::fs::copy(noop_rust, to).with_context(|| format!("cannot copy {}", noop_rust.display()))?;
    Ok(())
}

/// The name of the `i`th function of a cold-start application.
fn cold_function(i: usize) -> String {
    format!("f{i:04}")
}

/// `functions` functions of one runtime with one instance each, all on the
/// same code directory.
fn write_cold_app(
    dir: &Path,
    app: &ColdApp,
    functions: usize,
    noop_rust: &Path,
) -> anyhow::Result<()> {
    let mut manifest = format!("app: {}\nfunctions:\n", app.name);
    for i in 0..functions {
        let name = cold_function(i);
        function_entry(&mut manifest, &name, app.runtime, app.handler, "code", 1)?;
    }
    let code = dir.join("code");
    std::fs::create_dir_all(&code)?;
    std::fs::write(dir.join("stratus.yaml"), manifest)?;
    match app.source {
        Some(source) => std::fs::write(code.join(app.file), source)?,
        None => copy_bootstrap(noop_rust, &code.join(app.file))?,
    }
    Ok(())
}

// --- measurement -------------------------------------------------------------

#[derive(Clone)]
enum Target {
    /// `GET /v1/health`.
    Health,
    /// `POST /v1/apps/{app}/functions/{function}/invoke`.
    Invoke { app: String, function: String },
}

impl Target {
    fn invoke(app: &str, function: &str) -> Target {
        Target::Invoke {
            app: app.to_owned(),
            function: function.to_owned(),
        }
    }

    fn label(&self) -> String {
        match self {
            Target::Health => "GET /v1/health".to_owned(),
            Target::Invoke { app, function } => format!("{app}/{function}"),
        }
    }
}

/// One successful call.
#[derive(Clone)]
struct Sample {
    client_ms: f64,
    /// `x-stratus-duration-ms`: the handler as the platform measured it.
    handler_ms: Option<f64>,
    /// `x-stratus-queue-ms`: waiting for a free (or new) instance.
    queue_ms: Option<f64>,
    /// `x-stratus-init-ms`, on cold calls only.
    init_ms: Option<f64>,
    /// `x-stratus-sandbox-ms`: creating the sandbox and starting the process.
    sandbox_ms: Option<f64>,
    /// `x-stratus-runtime-start-ms`: process start to the runtime's first
    /// request for work, less the handler's init.
    runtime_start_ms: Option<f64>,
    /// `x-stratus-handler-init-ms`: the user's module init (python3, nodejs).
    handler_init_ms: Option<f64>,
    cold: bool,
    /// `x-stratus-prestarted`: the cold start took a sandbox made ahead.
    prestarted: bool,
    /// `x-stratus-instance`.
    instance: String,
}

struct Row {
    label: String,
    invoke: bool,
    concurrency: usize,
    wall: Duration,
    samples: Vec<Sample>,
    errors: usize,
    first_error: Option<String>,
}

#[derive(Clone)]
struct Caller {
    http: reqwest::Client,
    base: String,
    auth: String,
    server_pid: u32,
}

impl Caller {
    /// One keep-alive client, shared by every caller.
    fn new(server: &Server) -> anyhow::Result<Caller> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Caller {
            http,
            base: server.admin.clone(),
            auth: format!("Bearer {}", server.token),
            server_pid: server.pid(),
        })
    }

    async fn call(&self, target: &Target) -> anyhow::Result<Sample> {
        let request = match target {
            Target::Health => self.http.get(format!("{}/v1/health", self.base)),
            Target::Invoke { app, function } => self
                .http
                .post(format!(
                    "{}/v1/apps/{app}/functions/{function}/invoke",
                    self.base
                ))
                .header("content-type", "application/json")
                .body(PAYLOAD),
        };
        let started = Instant::now();
        let response = request.header("authorization", &self.auth).send().await?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let number = |name: &str| header(name).and_then(|v| v.parse::<f64>().ok());
        let function_error = header("x-stratus-function-error");
        let handler_ms = number("x-stratus-duration-ms");
        let queue_ms = number("x-stratus-queue-ms");
        let init_ms = number("x-stratus-init-ms");
        let sandbox_ms = number("x-stratus-sandbox-ms");
        let runtime_start_ms = number("x-stratus-runtime-start-ms");
        let handler_init_ms = number("x-stratus-handler-init-ms");
        let cold = header("x-stratus-cold").as_deref() == Some("true");
        let prestarted = header("x-stratus-prestarted").as_deref() == Some("true");
        let instance = header("x-stratus-instance").unwrap_or_default();
        // Reading the body to the end keeps the connection reusable.
        let body = response.bytes().await?;
        let client_ms = started.elapsed().as_secs_f64() * 1000.0;
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        if let Some(kind) = function_error {
            bail!(
                "function error ({kind}): {}",
                String::from_utf8_lossy(&body)
            );
        }
        if matches!(target, Target::Invoke { .. }) && handler_ms.is_none() {
            bail!("no x-stratus-duration-ms header in the response");
        }
        Ok(Sample {
            client_ms,
            handler_ms,
            queue_ms,
            init_ms,
            sandbox_ms,
            runtime_start_ms,
            handler_init_ms,
            cold,
            prestarted,
            instance,
        })
    }

    /// The memory that functions `range` of a cold-start application
    /// report of their own processes, asked once each.
    async fn reported_memory(&self, app: &str, range: std::ops::Range<usize>) -> ProcessMemory {
        let mut memory = ProcessMemory::default();
        for i in range {
            let url = format!(
                "{}/v1/apps/{app}/functions/{}/invoke",
                self.base,
                cold_function(i)
            );
            let answer = self
                .http
                .post(url)
                .header("authorization", &self.auth)
                .header("content-type", "application/json")
                .body(r#"{"memory":true}"#)
                .send()
                .await;
            let Ok(answer) = answer else { continue };
            let Ok(value) = answer.json::<serde_json::Value>().await else {
                continue;
            };
            if let (Some(rss), Some(pss)) = (value["rss_kib"].as_u64(), value["pss_kib"].as_u64()) {
                memory.processes += 1;
                memory.rss_kib += rss;
                memory.pss_kib += pss;
            }
        }
        memory
    }

    /// (instances, idle instances) of all the functions of `app`, from
    /// `GET /v1/apps/{app}`.
    async fn instances(&self, app: &str) -> anyhow::Result<(u64, u64)> {
        let response = self
            .http
            .get(format!("{}/v1/apps/{app}", self.base))
            .header("authorization", &self.auth)
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "GET /v1/apps/{app}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let described: serde_json::Value = serde_json::from_slice(&body)?;
        let functions = described["functions"]
            .as_array()
            .with_context(|| format!("GET /v1/apps/{app} lists no functions"))?;
        let count = |field: &str| {
            functions
                .iter()
                .filter_map(|f| f["instances"][field].as_u64())
                .sum()
        };
        Ok((count("instances"), count("idle")))
    }
}

/// Runs `concurrency` callers in a loop against `target` until `window` has
/// passed (or each has made `max_calls` calls).
async fn load(
    caller: &Caller,
    target: &Target,
    concurrency: usize,
    window: Duration,
    max_calls: usize,
) -> Row {
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let caller = caller.clone();
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(4096);
            let mut errors = 0;
            let mut first_error = None;
            for _ in 0..max_calls {
                if Instant::now() >= deadline || errors >= MAX_ERRORS_PER_TASK {
                    break;
                }
                match caller.call(&target).await {
                    Ok(sample) => samples.push(sample),
                    Err(err) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{err:#}"));
                    }
                }
            }
            (samples, errors, first_error)
        }));
    }
    let mut row = Row {
        label: target.label(),
        invoke: matches!(target, Target::Invoke { .. }),
        concurrency,
        wall: Duration::ZERO,
        samples: Vec::new(),
        errors: 0,
        first_error: None,
    };
    for task in tasks {
        match task.await {
            Ok((samples, errors, first_error)) => {
                row.samples.extend(samples);
                row.errors += errors;
                if row.first_error.is_none() {
                    row.first_error = first_error;
                }
            }
            Err(err) => {
                row.errors += 1;
                row.first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    row.wall = started.elapsed();
    row
}

async fn measure_all(caller: &Caller, window: Duration) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();

    // The HTTP floor: the same listener, auth middleware and client, no function.
    let health = Target::Health;
    let warm = load(caller, &health, 1, window, WARMUP_CALLS).await;
    if warm.samples.is_empty() {
        bail!(
            "GET /v1/health failed: {}",
            warm.first_error.unwrap_or_default()
        );
    }
    for concurrency in CONCURRENCY {
        eprintln!("measuring {} at concurrency {concurrency}", health.label());
        rows.push(load(caller, &health, concurrency, window, MAX_CALLS_PER_TASK).await);
    }

    for (name, runtime, _) in FUNCTIONS {
        let target = Target::invoke(APP, name);
        // The first call starts an instance: report it, it is not measured below.
        let first = caller
            .call(&target)
            .await
            .with_context(|| format!("the first call of {APP}/{name} ({runtime}) failed"))?;
        eprintln!(
            "{APP}/{name} ({runtime}): first call {:.1} ms (cold: {}, init {} ms, handler {} ms)",
            first.client_ms,
            first.cold,
            fmt_opt(first.init_ms),
            fmt_opt(first.handler_ms),
        );
        let warm = load(caller, &target, 1, window * 10, WARMUP_CALLS).await;
        if warm.errors > 0 {
            bail!(
                "warming up {APP}/{name} failed: {}",
                warm.first_error.unwrap_or_default()
            );
        }
        for concurrency in CONCURRENCY {
            if concurrency > 1 {
                // Start enough instances first, so that the measured window
                // is warm (cold calls that still happen are counted).
                let warm = load(caller, &target, concurrency, window * 10, 3).await;
                if warm.samples.is_empty() {
                    bail!(
                        "warming up {APP}/{name} at concurrency {concurrency} failed: {}",
                        warm.first_error.unwrap_or_default()
                    );
                }
            }
            eprintln!("measuring {APP}/{name} at concurrency {concurrency}");
            rows.push(load(caller, &target, concurrency, window, MAX_CALLS_PER_TASK).await);
        }
    }
    Ok(rows)
}

// --- cold starts -------------------------------------------------------------

/// The figures of one cold call, in ms.
#[derive(Clone, Copy)]
struct ColdSample {
    client: f64,
    queue: f64,
    sandbox: f64,
    runtime_start: f64,
    /// 0 when the runtime does not report it (`provided`).
    handler_init: f64,
    handler: f64,
    prestarted: bool,
}

impl ColdSample {
    /// `None` unless the call was cold and reported its start phases.
    fn of(sample: &Sample) -> Option<ColdSample> {
        if !sample.cold {
            return None;
        }
        Some(ColdSample {
            client: sample.client_ms,
            queue: sample.queue_ms?,
            sandbox: sample.sandbox_ms?,
            runtime_start: sample.runtime_start_ms?,
            handler_init: sample.handler_init_ms.unwrap_or(0.0),
            handler: sample.handler_ms?,
            prestarted: sample.prestarted,
        })
    }

    /// The platform's part of the cold start: from the request to the
    /// handler entered, the user's init excluded, the HTTP round trip included.
    fn platform(&self) -> f64 {
        self.client - self.handler_init - self.handler
    }

    /// Sandbox and runtime start: what starting an instance costs.
    fn start(&self) -> f64 {
        self.sandbox + self.runtime_start
    }

    /// The platform's part less its measured phases: HTTP round trip,
    /// routing, scheduling and handing the event to the runtime.
    fn rest(&self) -> f64 {
        self.platform() - self.queue - self.start()
    }
}

/// One figure of a cold call.
type Figure = fn(&ColdSample) -> f64;

/// The rows of the cold-start table: a label and the figure it reports.
const COLD_FIGURES: [(&str, Figure); 9] = [
    ("platform part", ColdSample::platform),
    ("  queue", |s| s.queue),
    ("  sandbox + runtime start", ColdSample::start),
    ("    sandbox", |s| s.sandbox),
    ("    runtime start", |s| s.runtime_start),
    ("  rest: HTTP, dispatch", ColdSample::rest),
    ("handler init", |s| s.handler_init),
    ("handler", |s| s.handler),
    ("client", |s| s.client),
];

/// What the live processes of an application's instances hold.
#[derive(Default)]
struct ProcessMemory {
    processes: usize,
    rss_kib: u64,
    pss_kib: u64,
}

/// The cold calls of one runtime, and the memory of the instances they left.
struct ColdRow {
    label: &'static str,
    callers: usize,
    /// CPU seconds of the server's own processes and of the host over the
    /// round.
    cpu: (f64, f64),
    samples: Vec<ColdSample>,
    /// Calls that answered without being cold starts.
    not_cold: usize,
    errors: usize,
    first_error: Option<String>,
    wall: Duration,
    /// (instances, idle instances) the server lists after the calls.
    instances: (u64, u64),
    /// The instances the calls started.
    instance_ids: Vec<String>,
    memory: ProcessMemory,
}

/// Calls every function of every cold-start application once, round by
/// round (one per number of callers), alternating between this server and
/// the reference for python3, then measures the instances those calls left
/// idle.
async fn measure_cold(
    caller: &Caller,
    reference: &Caller,
    functions: usize,
    pause: Duration,
) -> anyhow::Result<Vec<ColdRow>> {
    let mut rows = Vec::new();
    for (round, callers) in COLD_CALLERS.into_iter().enumerate() {
        let first = round * functions;
        let runs = [
            (caller, &COLD_APPS[0]),
            (reference, &COLD_FRESH),
            (caller, &COLD_APPS[1]),
            (caller, &COLD_APPS[2]),
        ];
        for (caller, app) in runs {
            eprintln!(
                "cold starts: {functions} functions of {} ({}), {callers} callers",
                app.name, app.label
            );
            let mut row = cold_calls(caller, app, first..first + functions, callers, pause).await;
            if callers == 1 {
                row.instances = caller.instances(app.name).await?;
                row.memory = match app.source {
                    Some(_) => {
                        caller
                            .reported_memory(app.name, first..first + functions)
                            .await
                    }
                    None => instance_memory(&row.instance_ids),
                };
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// CPU time in seconds: of the server's own processes (those of its tree
/// running as root: the server, the launcher and the templates, with
/// what they reaped), and of the whole host.
fn cpu_seconds(server: u32) -> (f64, f64) {
    let tick = 100.0;
    let mut own = 0.0;
    let mut pending = vec![server];
    while let Some(pid) = pending.pop() {
        let root = std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .is_some_and(|ids| ids.split_whitespace().next() == Some("0"))
        });
        if root && let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            // utime, stime, cutime, cstime: fields 14 to 17, 12 to 15 here.
            own += fields.get(11..15).map_or(0.0, |f| {
                f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
            });
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                    pending.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
    }
    let host = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.strip_prefix("cpu ")?.to_owned();
            let v: Vec<f64> = line
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            // user, nice, system, irq, softirq, steal: all but idle and iowait.
            Some(
                v.iter()
                    .take(8)
                    .enumerate()
                    .filter(|(i, _)| *i != 3 && *i != 4)
                    .map(|(_, x)| x)
                    .sum::<f64>(),
            )
        })
        .unwrap_or(0.0);
    (own / tick, host / tick)
}

async fn cold_calls(
    caller: &Caller,
    app: &ColdApp,
    functions: std::ops::Range<usize>,
    callers: usize,
    pause: Duration,
) -> ColdRow {
    let mut row = ColdRow {
        label: app.label,
        callers,
        samples: Vec::with_capacity(functions.len()),
        not_cold: 0,
        errors: 0,
        first_error: None,
        wall: Duration::ZERO,
        cpu: (0.0, 0.0),
        instances: (0, 0),
        instance_ids: Vec::with_capacity(functions.len()),
        memory: ProcessMemory::default(),
    };
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(functions.start));
    let cpu_before = cpu_seconds(caller.server_pid);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let caller = caller.clone();
            let next = next.clone();
            let name = app.name;
            let end = functions.end;
            tokio::spawn(async move {
                let mut results = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= end {
                        return results;
                    }
                    // Time for the platform to refill its pool of prestarted
                    // sandboxes, when a pause is asked for.
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                    let target = Target::invoke(name, &cold_function(i));
                    let outcome = caller.call(&target).await;
                    results.push((target, outcome));
                }
            })
        })
        .collect();
    for task in tasks {
        let Ok(results) = task.await else {
            row.errors += 1;
            continue;
        };
        for (target, outcome) in results {
            match outcome {
                Ok(sample) => {
                    row.instance_ids.push(sample.instance.clone());
                    match ColdSample::of(&sample) {
                        Some(cold) => row.samples.push(cold),
                        None => row.not_cold += 1,
                    }
                }
                Err(err) => {
                    row.errors += 1;
                    row.first_error
                        .get_or_insert_with(|| format!("{}: {err:#}", target.label()));
                }
            }
        }
    }
    row.wall = started.elapsed();
    let cpu_after = cpu_seconds(caller.server_pid);
    row.cpu = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    row
}

/// Resident memory of the live processes whose environment names one of
/// `instances` (`AWS_LAMBDA_LOG_STREAM_NAME=<instance>`). Reading other
/// users' `environ` needs root, as the bench runs; otherwise it finds none.
fn instance_memory(instances: &[String]) -> ProcessMemory {
    let needles: std::collections::HashSet<Vec<u8>> = instances
        .iter()
        .map(|i| format!("AWS_LAMBDA_LOG_STREAM_NAME={i}").into_bytes())
        .collect();
    let mut memory = ProcessMemory::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return memory;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        let dir = entry.path();
        let named = std::fs::read(dir.join("environ"))
            .is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| needles.contains(var)));
        // A zombie has no VmRSS line.
        let Some(rss) = named
            .then(|| proc_kib(&dir.join("status"), "VmRSS:"))
            .flatten()
        else {
            continue;
        };
        memory.processes += 1;
        memory.rss_kib += rss;
        memory.pss_kib += proc_kib(&dir.join("smaps_rollup"), "Pss:").unwrap_or(0);
    }
    memory
}

/// A `Field:   123 kB` line of a /proc file, in KiB.
fn proc_kib(file: &Path, field: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

// --- report ------------------------------------------------------------------

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn print_table(rows: &[Row], secs: f64) {
    let floor = |concurrency: usize| {
        rows.iter()
            .find(|r| !r.invoke && r.concurrency == concurrency)
            .and_then(|r| percentile(&sorted(r.samples.iter().map(|s| s.client_ms)), 50.0))
    };
    println!();
    println!(
        "stratus invoke benchmark: {secs} s per row, payload {} bytes, client and server on this host",
        PAYLOAD.len()
    );
    println!();
    println!(
        "{:<16} {:>4} {:>7} {:>9} {:>10} {:>10} {:>11} {:>12} {:>11} {:>9} {:>5} {:>4}",
        "target",
        "conc",
        "calls",
        "inv/s",
        "client p50",
        "client p99",
        "handler p50",
        "overhead p50",
        "- floor p50",
        "queue p50",
        "cold",
        "err",
    );
    println!("{}", "-".repeat(124));
    for row in rows {
        let client = sorted(row.samples.iter().map(|s| s.client_ms));
        let handler = sorted(row.samples.iter().filter_map(|s| s.handler_ms));
        let queue = sorted(row.samples.iter().filter_map(|s| s.queue_ms));
        let client_p50 = percentile(&client, 50.0);
        let handler_p50 = percentile(&handler, 50.0);
        let overhead = client_p50.zip(handler_p50).map(|(c, h)| c - h);
        let above_floor = if row.invoke {
            overhead.zip(floor(row.concurrency)).map(|(o, f)| o - f)
        } else {
            None
        };
        let rate = row.samples.len() as f64 / row.wall.as_secs_f64().max(1e-9);
        let cold = row.samples.iter().filter(|s| s.cold).count();
        println!(
            "{:<16} {:>4} {:>7} {:>9.1} {:>10} {:>10} {:>11} {:>12} {:>11} {:>9} {:>5} {:>4}",
            row.label,
            row.concurrency,
            row.samples.len(),
            rate,
            fmt_opt(client_p50),
            fmt_opt(percentile(&client, 99.0)),
            fmt_opt(handler_p50),
            fmt_opt(overhead),
            fmt_opt(above_floor),
            fmt_opt(percentile(&queue, 50.0)),
            cold,
            row.errors,
        );
    }
    println!();
    println!("times in ms; inv/s = successful calls / wall time of the row");
    println!("handler p50 = x-stratus-duration-ms (dispatch to the runtime until its answer)");
    println!("overhead p50 = client p50 - handler p50");
    println!("- floor p50 = overhead p50 - client p50 of GET /v1/health at the same concurrency");
    for row in rows.iter().filter(|r| r.errors > 0) {
        println!(
            "{} at concurrency {}: {} errors, first: {}",
            row.label,
            row.concurrency,
            row.errors,
            row.first_error.as_deref().unwrap_or("?")
        );
    }
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

fn print_cold(rows: &[ColdRow], functions: usize, pause: Duration, isolation: &str) {
    println!();
    println!(
        "cold starts in bursts: {functions} functions per runtime and round (max_instances 1), \
         each called once, {} ms apart; isolation {isolation}",
        pause.as_millis()
    );
    println!("python3: instances forked from a template; python3 fresh: the reference server");
    println!("(--templates false), whose instances start their interpreter afresh");
    for callers in COLD_CALLERS {
        println!();
        println!("{callers} caller(s) at once");
        println!(
            "{:<14} {:<26} {:>5} {:>9} {:>9} {:>9} {:>9}",
            "runtime", "figure", "n", "p50", "p90", "p99", "max"
        );
        println!("{}", "-".repeat(87));
        for row in rows.iter().filter(|r| r.callers == callers) {
            for (i, (label, figure)) in COLD_FIGURES.iter().enumerate() {
                let values = sorted(row.samples.iter().map(figure));
                let pct = |p| fmt_opt(percentile(&values, p));
                println!(
                    "{:<14} {:<26} {:>5} {:>9} {:>9} {:>9} {:>9}",
                    if i == 0 { row.label } else { "" },
                    label,
                    values.len(),
                    pct(50.0),
                    pct(90.0),
                    pct(99.0),
                    pct(100.0),
                );
            }
        }
    }
    println!();
    println!(
        "{:<14} {:>7} {:>7} {:>10} {:>13} {:>11} {:>9} {:>6}",
        "runtime",
        "callers",
        "starts",
        "starts/s",
        "server CPU ms",
        "host CPU ms",
        "prestart",
        "errors"
    );
    println!("{}", "-".repeat(84));
    for row in rows {
        let n = row.samples.len().max(1) as f64;
        println!(
            "{:<14} {:>7} {:>7} {:>10.1} {:>13.2} {:>11.2} {:>9} {:>6}",
            row.label,
            row.callers,
            row.samples.len(),
            row.samples.len() as f64 / row.wall.as_secs_f64().max(1e-9),
            row.cpu.0 * 1000.0 / n,
            row.cpu.1 * 1000.0 / n,
            row.samples.iter().filter(|s| s.prestarted).count(),
            row.errors,
        );
        if let Some(err) = &row.first_error {
            println!("  first error: {err}");
        }
        if row.not_cold > 0 {
            println!("  {} calls were not cold starts", row.not_cold);
        }
    }
    println!();
    println!("times in ms, sorted samples, nearest rank");
    println!("platform part = client - handler init - handler: request received until the handler");
    println!("  is entered, the user's init excluded, the HTTP round trip included");
    println!("sandbox = taking a prestarted sandbox, or making one (x-stratus-sandbox-ms)");
    println!("runtime start = activation (code attached, environment handed over) to the");
    println!("  runtime's first request for work, less the handler init");
    println!("  (x-stratus-runtime-start-ms); for provided it includes exec and all of main()");
    println!("rest = platform part - queue - sandbox - runtime start: HTTP, routing, dispatch");
    println!(
        "handler init = the user's module init as the runtime reported it (none for provided)"
    );
    println!("server CPU = CPU of the server's processes that run as root (server, launcher,");
    println!("  templates, and the template children they reaped) per cold start; host CPU =");
    println!("  the whole host's busy CPU per cold start (instances, client and all)");
    println!("prestart = cold starts that took a sandbox made ahead of demand");
    print_memory(rows);
}

fn print_memory(rows: &[ColdRow]) {
    let mib = |kib: u64, per: u64| {
        if per == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", kib as f64 / 1024.0 / per as f64)
        }
    };
    println!();
    println!("memory per idle warm instance, after the first round of cold calls");
    println!();
    println!(
        "{:<14} {:>9} {:>6} {:>9} {:>14} {:>14} {:>13}",
        "runtime",
        "instances",
        "idle",
        "processes",
        "RSS MiB/inst",
        "PSS MiB/inst",
        "RSS total MiB"
    );
    println!("{}", "-".repeat(80));
    for row in rows.iter().filter(|r| r.callers == 1) {
        let (instances, idle) = row.instances;
        println!(
            "{:<14} {:>9} {:>6} {:>9} {:>14} {:>14} {:>13}",
            row.label,
            instances,
            idle,
            row.memory.processes,
            mib(row.memory.rss_kib, instances),
            mib(row.memory.pss_kib, instances),
            mib(row.memory.rss_kib, 1),
        );
    }
    println!();
    println!(
        "instances and idle from GET /v1/apps/{{app}}; processes: for python3 and nodejs, the runtime"
    );
    println!(
        "processes, as each function reported its own; for provided, those whose environment has"
    );
    println!(
        "AWS_LAMBDA_LOG_STREAM_NAME=<an instance the calls started>; RSS = sum of their VmRSS / instances"
    );
    println!(
        "(shared pages counted in each); PSS = the same with shared pages split between sharers"
    );
}
