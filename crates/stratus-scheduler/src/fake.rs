//! A launcher that makes no processes: each "process" is a tokio task that
//! plays a runtime or a web server as its activation asks, so that pools,
//! the service queue and the prestart pools are tested in-process,
//! without root and without children.
//!
//! A function's fake runtime speaks the real Runtime API over TCP to the
//! instance's own listener; a service's fake server really listens on its
//! `$PORT`. Signals end the task and report an exit as the launcher would.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use stratus_logs::MemoryLogs;
use stratus_manifest::{FunctionSpec, Runtime, ServiceSpec};
use stratus_sandbox::{Activation, ExitStatus, Isolation, ProcessSpec, SandboxError, Spawned};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{FunctionConfig, ServiceConfig};
use crate::launch::{Launch, Signal};
use crate::settings::{Interpreter, Language, Languages, Limits, Settings};

/// What a fake function does with one event.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// Answers with this result.
    Ok(Bytes),
    /// Reports an error of this type.
    Error(&'static str),
    /// Exits with this status before it answers.
    Exit(i32),
}

pub(crate) type Handler =
    Arc<dyn Fn(Bytes) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// What an activated fake process does.
#[derive(Clone)]
pub(crate) enum Program {
    /// A runtime that takes events from the Runtime API and hands each to
    /// the handler, printing `handling PAYLOAD` to stdout first.
    Function(Handler),
    /// A web server on `$PORT` that answers every request with 200 `ok`,
    /// listening after `after`.
    Service { after: Duration },
    /// Exits at once with this status.
    Exit(i32),
}

type Behaviour = Arc<dyn Fn(&Activation) -> Program + Send + Sync>;

struct FakeProcess {
    exit: Option<oneshot::Sender<ExitStatus>>,
    /// The write ends of its output, closed at its exit.
    stdout: Option<pipe::Sender>,
    _stderr: pipe::Sender,
    task: Option<JoinHandle<()>>,
}

/// Counts of what was asked of the launcher; signals count only when
/// they reach a live process.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    spawns: AtomicUsize,
    activations: AtomicUsize,
    terminates: AtomicUsize,
    kills: AtomicUsize,
}

impl Counts {
    pub fn spawns(&self) -> usize {
        self.spawns.load(Ordering::SeqCst)
    }

    pub fn activations(&self) -> usize {
        self.activations.load(Ordering::SeqCst)
    }

    pub fn terminates(&self) -> usize {
        self.terminates.load(Ordering::SeqCst)
    }

    pub fn kills(&self) -> usize {
        self.kills.load(Ordering::SeqCst)
    }
}

pub(crate) struct FakeLauncher {
    /// Processes frozen now; a frozen function's runtime fails any event
    /// it is given, as a real frozen one would never take it.
    frozen: Arc<Mutex<std::collections::HashSet<u32>>>,
    next_pid: AtomicU32,
    /// Shared with each process's task, which reports its own exit.
    processes: Arc<Processes>,
    behaviour: Mutex<Behaviour>,
    pub counts: Counts,
    prestart: bool,
    /// Whether it claims to hold instances to egress rules.
    pub egress_fence: std::sync::atomic::AtomicBool,
    /// Each egress policy's destinations, as last set.
    pub egress: Mutex<std::collections::HashMap<u32, Vec<std::net::SocketAddr>>>,
}

impl FakeLauncher {
    /// A launcher whose processes all run `program`; `prestart` says
    /// whether processes may be made ahead of demand.
    pub fn new(program: Program, prestart: bool) -> Arc<FakeLauncher> {
        Arc::new(FakeLauncher {
            frozen: Arc::default(),
            // Far above any real pid, so a stray signal could hit nothing.
            next_pid: AtomicU32::new(1 << 30),
            processes: Arc::new(Processes::default()),
            behaviour: Mutex::new(Arc::new(move |_: &Activation| program.clone())),
            counts: Counts::default(),
            prestart,
            egress_fence: true.into(),
            egress: Mutex::default(),
        })
    }

    /// From now on, activated processes run `program`.
    pub fn set_program(&self, program: Program) {
        *self.behaviour.lock().unwrap() = Arc::new(move |_: &Activation| program.clone());
    }

    /// Processes that have not exited.
    pub fn live(&self) -> usize {
        self.processes.lock().len()
    }

    /// Pids of the processes frozen now.
    pub fn frozen(&self) -> Vec<u32> {
        self.frozen.lock().unwrap().iter().copied().collect()
    }

    /// Pids of the processes that have not exited.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.lock().keys().copied().collect()
    }
}

#[derive(Default)]
struct Processes(Mutex<HashMap<u32, FakeProcess>>);

impl Processes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, FakeProcess>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends process `pid` with `status`, as its reaping would.
    fn exit(&self, pid: u32, status: ExitStatus) {
        let process = self.lock().remove(&pid);
        if let Some(mut process) = process {
            if let Some(task) = process.task.take() {
                task.abort();
            }
            if let Some(exit) = process.exit.take() {
                let _ = exit.send(status);
            }
        }
    }

    fn stdout(&self, pid: u32) -> Option<pipe::Sender> {
        let processes = self.lock();
        let fd = processes.get(&pid)?.stdout.as_ref()?;
        use std::os::fd::AsFd;
        let owned = fd.as_fd().try_clone_to_owned().ok()?;
        pipe::Sender::from_owned_fd(owned).ok()
    }
}

#[async_trait]
impl Launch for FakeLauncher {
    fn isolation(&self) -> Isolation {
        Isolation::None
    }

    fn can_prestart(&self) -> bool {
        self.prestart
    }

    fn service_fence(&self) -> bool {
        false
    }

    fn egress_fence(&self) -> bool {
        self.egress_fence.load(Ordering::SeqCst)
    }

    async fn set_egress(
        &self,
        policy: u32,
        addresses: &[std::net::SocketAddr],
    ) -> Result<(), SandboxError> {
        self.egress
            .lock()
            .unwrap()
            .insert(policy, addresses.to_vec());
        Ok(())
    }

    async fn spawn(&self, _spec: &ProcessSpec) -> Result<Spawned, SandboxError> {
        self.counts.spawns.fetch_add(1, Ordering::SeqCst);
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst);
        let pipes = || pipe::pipe().map_err(SandboxError::Start);
        let (out_tx, out_rx) = pipes()?;
        let (err_tx, err_rx) = pipes()?;
        let (exit_tx, exit_rx) = oneshot::channel();
        self.processes.lock().insert(
            pid,
            FakeProcess {
                exit: Some(exit_tx),
                stdout: Some(out_tx),
                _stderr: err_tx,
                task: None,
            },
        );
        Ok(Spawned {
            pid,
            stdout: out_rx,
            stderr: err_rx,
            exited: exit_rx,
            runtime_api: None,
            from_template: false,
        })
    }

    async fn activate(&self, pid: u32, activation: &Activation) -> Result<(), SandboxError> {
        self.counts.activations.fetch_add(1, Ordering::SeqCst);
        let program = (self.behaviour.lock().unwrap())(activation);
        let env: HashMap<String, String> = activation.env.iter().cloned().collect();
        let stdout = self
            .processes
            .stdout(pid)
            .ok_or_else(|| SandboxError::Spawn {
                program: "fake".into(),
                message: "the process is gone".into(),
            })?;
        let processes = self.processes.clone();
        let frozen = self.frozen.clone();
        let is_frozen: Arc<dyn Fn() -> bool + Send + Sync> =
            Arc::new(move || frozen.lock().unwrap().contains(&pid));
        let task = tokio::spawn(async move {
            let code = run(program, env, stdout, is_frozen).await;
            processes.exit(
                pid,
                ExitStatus {
                    code: Some(code),
                    signal: None,
                    oom_killed: false,
                },
            );
        });
        let mut processes = self.processes.lock();
        match processes.get_mut(&pid) {
            Some(process) => {
                process.task = Some(task);
                Ok(())
            }
            None => {
                task.abort();
                Err(SandboxError::Spawn {
                    program: "fake".into(),
                    message: "the process is gone".into(),
                })
            }
        }
    }

    fn signal(&self, pid: u32, signal: Signal) {
        if !self.processes.lock().contains_key(&pid) {
            // Its group is gone: nothing to signal.
            return;
        }
        let counter = match signal {
            Signal::Terminate => &self.counts.terminates,
            Signal::Kill => &self.counts.kills,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let number = match signal {
            Signal::Terminate => 15,
            Signal::Kill => 9,
        };
        self.processes.exit(
            pid,
            ExitStatus {
                code: None,
                signal: Some(number),
                oom_killed: false,
            },
        );
    }

    fn cpu_time_us(&self, _pid: u32) -> Option<(u64, u64)> {
        None
    }

    fn peak_rss_kib(&self, _pid: u32) -> Option<u64> {
        Some(1024)
    }

    fn freeze(&self, pid: u32, frozen: bool) {
        if !self.processes.lock().contains_key(&pid) {
            return;
        }
        let mut set = self.frozen.lock().unwrap();
        if frozen {
            set.insert(pid);
        } else {
            set.remove(&pid);
        }
    }
}

/// Runs `program` until it exits; returns its exit status.
async fn run(
    program: Program,
    env: HashMap<String, String>,
    stdout: pipe::Sender,
    is_frozen: Arc<dyn Fn() -> bool + Send + Sync>,
) -> i32 {
    match program {
        Program::Exit(code) => code,
        Program::Service { after } => {
            tokio::time::sleep(after).await;
            let port = env
                .get("PORT")
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or(0);
            let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await else {
                return 1;
            };
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return 1;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tcp
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        }
        Program::Function(handler) => {
            let api = env
                .get("AWS_LAMBDA_RUNTIME_API")
                .cloned()
                .unwrap_or_default();
            // As Lambda's multi-concurrency runtimes: that many loops, each
            // with a long poll of its own, and output lines marked with
            // the request they belong to.
            // `FAKE_LOOPS` in the function's environment overrides it, as
            // a runtime that asks for fewer at once would.
            let workers: usize = env
                .get("FAKE_LOOPS")
                .or_else(|| env.get("AWS_LAMBDA_MAX_CONCURRENCY"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let stdout = Arc::new(tokio::sync::Mutex::new(stdout));
            let mut loops = tokio::task::JoinSet::new();
            for _ in 0..workers {
                let (api, handler, is_frozen) = (api.clone(), handler.clone(), is_frozen.clone());
                loops.spawn(serve(api, handler, is_frozen, stdout.clone(), workers > 1));
            }
            // The first loop to end ends the process.
            let code = loops.join_next().await;
            code.and_then(Result::ok).unwrap_or(0)
        }
    }
}

/// One loop of a fake function runtime: fetches events, writes a line for
/// each (marked with its request when `mark`), and answers.
async fn serve(
    api: String,
    handler: Handler,
    is_frozen: Arc<dyn Fn() -> bool + Send + Sync>,
    stdout: Arc<tokio::sync::Mutex<pipe::Sender>>,
    mark: bool,
) -> i32 {
    let base = format!("http://{api}/2018-06-01/runtime");
    let client = reqwest::Client::new();
    loop {
        let Ok(next) = client.get(format!("{base}/invocation/next")).send().await else {
            return 1;
        };
        let id = next
            .headers()
            .get("lambda-runtime-aws-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Ok(payload) = next.bytes().await else {
            return 1;
        };
        let text = format!("handling {}\n", String::from_utf8_lossy(&payload));
        let line = if mark {
            format!("\u{1e}{id}\u{1f}{text}")
        } else {
            text
        };
        let _ = stdout.lock().await.write_all(line.as_bytes()).await;
        let reply = if is_frozen() {
            Reply::Error("Frozen")
        } else {
            handler(payload).await
        };
        let posted = match reply {
            Reply::Ok(body) => {
                client
                    .post(format!("{base}/invocation/{id}/response"))
                    .body(body)
                    .send()
                    .await
            }
            Reply::Error(error_type) => {
                client
                    .post(format!("{base}/invocation/{id}/error"))
                    .body(format!(
                        r#"{{"errorType":"{error_type}","errorMessage":"failed"}}"#
                    ))
                    .send()
                    .await
            }
            Reply::Exit(code) => return code,
        };
        if posted.is_err() {
            return 1;
        }
    }
}

/// A handler that answers every event with its payload.
pub(crate) fn echo() -> Handler {
    Arc::new(|payload| Box::pin(async move { Reply::Ok(payload) }))
}

/// A handler that answers each event only once `gate` lets it through.
pub(crate) fn gated(gate: Arc<tokio::sync::Semaphore>) -> Handler {
    Arc::new(move |payload| {
        let gate = gate.clone();
        Box::pin(async move {
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            Reply::Ok(payload)
        })
    })
}

/// A handler that gives `reply` to every event.
pub(crate) fn always(reply: Reply) -> Handler {
    Arc::new(move |_| {
        let reply = reply.clone();
        Box::pin(async move { reply })
    })
}

/// Settings for tests: short waits, small queues.
pub(crate) fn settings() -> Settings {
    let language = |runtime, bootstrap: &str| Language {
        runtime,
        version: None,
        identity: None,
        interpreter: Interpreter {
            executable: PathBuf::from("/bin/true"),
            prefix: None,
        },
        bootstrap: PathBuf::from(bootstrap),
    };
    Settings {
        languages: Languages::new(vec![
            language(Runtime::Python3, "/nonexistent/bootstrap.py"),
            language(Runtime::Nodejs, "/nonexistent/bootstrap.js"),
        ]),
        region: "us-east-1".into(),
        limits: Limits {
            queue_depth: 4,
            // Generous: a loaded machine must not turn waits into failures.
            queue_timeout: Duration::from_secs(5),
            init_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(600),
            max_response_bytes: 1024 * 1024,
            app_max_instances: 100,
            tmp_mb: 16,
            pids_max: 16,
            instance_max_files: 1024,
            instance_log_rate: 1 << 30,
            freeze_after: Duration::from_millis(1),
            prestart_max: 0,
            templates: false,
        },
        base_env: Vec::new(),
        host_path: "/usr/bin:/bin".into(),
        name_servers: None,
        platform_api: None,
        metrics: stratus_metrics::Metrics::new(),
        tracer: stratus_trace::Tracer::off(),
        failures: None,
    }
}

/// A `provided` function of app `app`, version 1.
pub(crate) fn function(app: &str, name: &str, max_instances: u32) -> FunctionConfig {
    let spec: FunctionSpec = serde_json::from_value(serde_json::json!({
        "name": name,
        "runtime": "provided",
        "handler": "handler",
        "code": ".",
        "memory_mb": 128,
        "timeout": 10000,
        "env": {},
        "max_instances": max_instances,
    }))
    .expect("a valid function spec");
    FunctionConfig {
        app: app.into(),
        version: 1,
        spec,
        code_dir: PathBuf::from("/nonexistent"),
        secrets: crate::SecretEnv::default(),
    }
}

/// A service of app `app` with `$PORT` chosen by the platform.
pub(crate) fn service(
    app: &str,
    name: &str,
    concurrency: u32,
    max_instances: u32,
) -> ServiceConfig {
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": name,
        "code": ".",
        "command": { "exec": ["fake"] },
        "port": null,
        "http": { "paths": ["/*"], "methods": [], "auth": "none", "cors": null },
        "readiness": { "path": null, "timeout": 10000 },
        "concurrency": concurrency,
        "min_instances": 0,
        "max_instances": max_instances,
        "idle_timeout": 600000,
        "memory_mb": 128,
        "queue_depth": 4,
        "drain_grace": 200,
        "env": {},
    }))
    .expect("a valid service spec");
    ServiceConfig {
        app: app.into(),
        version: 1,
        spec,
        code_dir: PathBuf::from("/nonexistent"),
        secrets: crate::SecretEnv::default(),
        deps: None,
    }
}

/// A scheduler on a fake launcher, with its logs in memory.
pub(crate) fn scheduler(
    settings: Settings,
    launcher: &Arc<FakeLauncher>,
) -> (Arc<crate::Scheduler>, Arc<MemoryLogs>) {
    let logs = Arc::new(MemoryLogs::default());
    let scheduler = crate::Scheduler::new(settings, launcher.clone(), logs.clone());
    (scheduler, logs)
}

/// Waits until `done` holds, for at most `limit`.
pub(crate) async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}
