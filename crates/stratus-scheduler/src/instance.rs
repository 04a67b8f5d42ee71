//! One instance: a runtime process, its Runtime API listener, and the tasks
//! that read its output and notice its exit.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::serve::ListenerExt;
use bytes::Bytes;
use stratus_sandbox::Spawned;
use stratus_store::LogRecord;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::invocation::{FunctionError, Invocation, seconds};
use crate::pool::FunctionConfig;
use crate::prewarm::Prewarm;
use crate::process::{self, Kind};
use crate::scheduler::Ctx;
use stratus_sandbox::Activation;

/// Longest log line kept as one record; longer output is split.
const MAX_LINE: usize = 256 * 1024;
/// Most bytes of output read from one stream in one round.
const MAX_DRAIN: usize = 1024 * 1024;
/// Longest the refill of prestarted sandboxes waits for a new instance to
/// finish starting.
const REFILL_DELAY_MAX: Duration = Duration::from_secs(1);
/// Most bytes of an invocation's own log lines returned to the caller.
const MAX_CAPTURE: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(crate) enum State {
    Running,
    Dead(DeathCause),
}

#[derive(Debug, Clone)]
pub(crate) enum DeathCause {
    /// The runtime reported that it could not initialise.
    InitError(FunctionError),
    Exited {
        status: String,
        during_init: bool,
    },
    /// Killed by the kernel at its memory limit.
    OutOfMemory,
    /// Stopped by the platform (timeout, retirement, shutdown).
    Killed,
}

/// What the runtime answered.
#[derive(Debug)]
pub(crate) enum RuntimeResult {
    Response(Bytes),
    Error(FunctionError),
    /// The runtime is streaming its response; `done` says when the post
    /// ended, with the error the runtime reported in its trailers, if any.
    Stream {
        stream: crate::ResponseStream,
        done: oneshot::Receiver<Option<FunctionError>>,
        /// For the pool to end the stream with a timeout's error.
        abort: mpsc::Sender<crate::StreamChunk>,
    },
}

/// An event on its way to the runtime.
pub(crate) struct Dispatch {
    pub invocation: Invocation,
    pub timeout: Duration,
    pub trace_id: String,
    pub function_arn: String,
    pub dispatched_tx: oneshot::Sender<Instant>,
    pub result_tx: oneshot::Sender<RuntimeResult>,
}

struct InFlight {
    request_id: String,
    result_tx: oneshot::Sender<RuntimeResult>,
}

#[derive(Default)]
struct Inner {
    in_flight: Option<InFlight>,
    last_done: Option<String>,
    /// Request id that output lines are tagged with.
    request_id: Option<String>,
    capture: Option<(Vec<String>, usize)>,
}

/// State shared by the instance, its Runtime API handlers and its output reader.
pub(crate) struct Shared {
    pub next_rx: tokio::sync::Mutex<mpsc::Receiver<Dispatch>>,
    pub max_response_bytes: usize,
    inner: Mutex<Inner>,
    state_tx: watch::Sender<State>,
    started: Instant,
    /// When the launcher had the process running.
    spawned_at: OnceLock<Instant>,
    ready_at: OnceLock<Instant>,
    /// Notified when the instance answers a request.
    settled: tokio::sync::Notify,
    /// The user's own init as the runtime measured it, when it says.
    handler_init_ms: OnceLock<f64>,
    /// The process was made ahead of demand.
    prestarted: bool,
    pid: AtomicU32,
    /// The process's stdout and stderr, read by the output task and, to
    /// catch up before a result is reported, by the Runtime API handlers.
    output: OnceLock<Mutex<Output>>,
    pub instance_id: String,
    config: Arc<FunctionConfig>,
    logs: crate::LogSender,
}

impl Shared {
    /// The runtime asked for work: initialisation is over.
    pub fn mark_ready(&self, handler_init_ms: Option<f64>) {
        let _ = self.ready_at.set(Instant::now());
        if let Some(ms) = handler_init_ms {
            let _ = self.handler_init_ms.set(ms);
        }
    }

    /// Records `invocation` as in flight; false if another one is.
    pub fn begin(
        &self,
        invocation: &Invocation,
        result_tx: oneshot::Sender<RuntimeResult>,
    ) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.in_flight.is_some() {
            return false;
        }
        inner.in_flight = Some(InFlight {
            request_id: invocation.request_id.clone(),
            result_tx,
        });
        inner.request_id = Some(invocation.request_id.clone());
        inner.capture = invocation.want_logs.then(|| (Vec::new(), 0));
        true
    }

    pub fn abandon(&self, request_id: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner
            .in_flight
            .as_ref()
            .is_some_and(|f| f.request_id == request_id)
        {
            inner.in_flight = None;
            inner.request_id = None;
        }
    }

    /// Completes the in-flight invocation `request_id` with `result`, after
    /// the output written before it has been read and tagged.
    pub async fn finish(&self, request_id: &str, result: RuntimeResult) -> Result<(), StatusCode> {
        self.sync_output();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.in_flight.take() {
            Some(f) if f.request_id == request_id => {
                // A streamed response's output is still the invocation's
                // until the stream ends (`end_stream`).
                if !matches!(result, RuntimeResult::Stream { .. }) {
                    inner.request_id = None;
                }
                let _ = f.result_tx.send(result);
                inner.last_done = Some(f.request_id);
                self.settled.notify_one();
                Ok(())
            }
            other => {
                inner.in_flight = other;
                if inner.last_done.as_deref() == Some(request_id) {
                    Err(StatusCode::FORBIDDEN)
                } else {
                    Err(StatusCode::BAD_REQUEST)
                }
            }
        }
    }

    /// Waits (briefly) until the output written so far has been read and
    /// tagged.
    fn sync_output(&self) {
        let Some(output) = self.output.get() else {
            return;
        };
        let mut output = output.lock().unwrap_or_else(|p| p.into_inner());
        output.out.drain(self, true);
        output.err.drain(self, true);
    }

    /// Reads what the process has written so far to the chosen streams
    /// without waiting and emits the complete lines; `last` emits the rest
    /// too and ends the streams (they broke).
    fn drain_output(&self, stdout: bool, stderr: bool, last: bool) {
        let Some(output) = self.output.get() else {
            return;
        };
        let mut guard = output.lock().unwrap_or_else(|p| p.into_inner());
        let output = &mut *guard;
        for (chosen, stream) in [(stdout, &mut output.out), (stderr, &mut output.err)] {
            if chosen {
                stream.drain(self, last);
                stream.eof |= last;
            }
        }
    }

    fn output_ended(&self) -> (bool, bool) {
        match self.output.get() {
            Some(output) => {
                let output = output.lock().unwrap_or_else(|p| p.into_inner());
                (output.out.eof, output.err.eof)
            }
            None => (true, true),
        }
    }

    /// A streamed response has ended: output no longer belongs to it.
    pub fn end_stream(&self, request_id: &str) {
        self.sync_output();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.request_id.as_deref() == Some(request_id) && inner.in_flight.is_none() {
            inner.request_id = None;
        }
    }

    /// Marks the instance dead (the first cause wins) and kills its processes.
    pub fn die(&self, cause: DeathCause) {
        let changed = self.state_tx.send_if_modified(|state| match state {
            State::Running => {
                *state = State::Dead(cause);
                true
            }
            State::Dead(_) => false,
        });
        // Once the process has been reaped its pid is 0 here, so a pid the
        // kernel has since reused is never signalled.
        if changed {
            stratus_sandbox::kill_group(self.pid.load(Ordering::Relaxed));
        }
    }

    fn log(&self, stream: &'static str, line: String) {
        let request_id = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((lines, bytes)) = inner.capture.as_mut() {
                *bytes += line.len() + 1;
                lines.push(line.clone());
                while *bytes > MAX_CAPTURE && lines.len() > 1 {
                    *bytes -= lines.remove(0).len() + 1;
                }
            }
            inner.request_id.clone()
        };
        self.emit(stream, request_id, line, None);
    }

    pub fn emit(
        &self,
        stream: &str,
        request_id: Option<String>,
        message: String,
        fields: Option<serde_json::Value>,
    ) {
        self.logs.send(LogRecord {
            ts_ms: crate::now_ms(),
            app: self.config.app.clone(),
            function: self.config.spec.name.clone(),
            version: self.config.version,
            instance: self.instance_id.clone(),
            request_id,
            stream: stream.to_owned(),
            message,
            fields,
        });
    }
}

/// A running instance of a function version.
pub(crate) struct Instance {
    pub id: String,
    pub shared: Arc<Shared>,
    dispatch_tx: mpsc::Sender<Dispatch>,
    state_rx: watch::Receiver<State>,
    api_task: JoinHandle<()>,
    last_used: Mutex<Instant>,
    /// The last reading of the process's peak memory, and when it was made.
    peak_rss: Mutex<Option<(Instant, u64)>>,
}

/// How long a reading of an instance's peak memory is reused: reading
/// `/proc` on every invocation costs more than a fast invocation itself.
const PEAK_RSS_REUSE: Duration = Duration::from_millis(100);

impl Drop for Instance {
    fn drop(&mut self) {
        self.api_task.abort();
        self.shared.die(DeathCause::Killed);
    }
}

/// How an instance started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartPhases {
    /// Making the sandbox, or activating one made ahead.
    pub sandbox_ms: f64,
    /// From then to the runtime's first request for work.
    pub init_ms: f64,
    /// The user's own init, when the runtime reports it.
    pub handler_init_ms: Option<f64>,
    pub prestarted: bool,
}

/// A fresh instance id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Makes a process for `config` alone and activates it.
async fn start_own(
    ctx: &Ctx,
    kind: Kind,
    config: &FunctionConfig,
    activation: &Activation,
    shared: &Shared,
) -> Result<Spawned, stratus_sandbox::SandboxError> {
    let spec = ctx.process_spec(kind, Some((config, &activation.env)), &shared.instance_id);
    let spawned = ctx.launcher.spawn(&spec).await?;
    let _ = shared.spawned_at.set(Instant::now());
    ctx.launcher.activate(spawned.pid, activation).await?;
    Ok(spawned)
}

/// Why a run ended without a result from the runtime.
pub(crate) enum RunFailure {
    Died(DeathCause),
    InitTimeout(Duration),
    Timeout(Duration),
}

impl Instance {
    /// Starts the runtime process and its Runtime API listener.
    pub async fn start(
        ctx: &Arc<Ctx>,
        config: &Arc<FunctionConfig>,
    ) -> Result<Arc<Instance>, FunctionError> {
        let isolation = ctx.launcher.isolation();
        let kind = Kind::of(isolation, config);
        // With a private network the Runtime API listens inside it, on a
        // socket the launcher hands over; otherwise on a host loopback
        // address kept for Runtime APIs, each instance allowed only its own.
        let (listener, api_addr, api_port) = if kind.private_network {
            (None, stratus_sandbox::RUNTIME_API_ADDR.to_owned(), None)
        } else {
            let listener = tokio::net::TcpListener::bind((stratus_sandbox::RUNTIME_API_HOST, 0))
                .await
                .map_err(|err| {
                    platform_error(format!("cannot bind the runtime API listener: {err}"))
                })?;
            let addr = listener
                .local_addr()
                .map_err(|err| platform_error(format!("runtime API listener: {err}")))?;
            (Some(listener), addr.to_string(), Some(addr.port()))
        };
        let prestarted = if process::needs_own_start(config) {
            None
        } else {
            ctx.prewarm.take(kind)
        };
        let id = prestarted.as_ref().map_or_else(new_id, |p| p.id.clone());
        let (dispatch_tx, dispatch_rx) = mpsc::channel(1);
        let (state_tx, state_rx) = watch::channel(State::Running);
        let shared = Arc::new(Shared {
            next_rx: tokio::sync::Mutex::new(dispatch_rx),
            max_response_bytes: ctx.settings.max_response_bytes,
            inner: Mutex::new(Inner::default()),
            state_tx,
            started: Instant::now(),
            spawned_at: OnceLock::new(),
            ready_at: OnceLock::new(),
            settled: tokio::sync::Notify::new(),
            handler_init_ms: OnceLock::new(),
            prestarted: prestarted.is_some(),
            pid: AtomicU32::new(0),
            output: OnceLock::new(),
            instance_id: id.clone(),
            config: config.clone(),
            logs: ctx.logs.clone(),
        });
        let activation =
            process::activation(&ctx.settings, isolation, config, (&api_addr, api_port), &id);
        // The runtime starts work the moment it reads its activation: the
        // sandbox phase ends when the activation is sent.
        let spawned = match prestarted {
            Some(p) => {
                let _ = shared.spawned_at.set(Instant::now());
                match ctx.launcher.activate(p.spawned.pid, &activation).await {
                    Ok(()) => Ok(p.spawned),
                    // It died waiting: start one of the function's own.
                    Err(err) => {
                        tracing::warn!(error = %err, "a prestarted process could not be activated");
                        start_own(ctx, kind, config, &activation, &shared).await
                    }
                }
            }
            None => start_own(ctx, kind, config, &activation, &shared).await,
        };
        // Refill once this instance has answered its first request: making
        // a sandbox (mounts, cgroups, an interpreter's start) competes with
        // its start and with that request.
        let (refill_ctx, refill_shared) = (ctx.clone(), shared.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFILL_DELAY_MAX, refill_shared.settled.notified()).await;
            Prewarm::maintain(&refill_ctx);
        });
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(err) => {
                return Err(FunctionError::unhandled(
                    "Runtime.InvalidEntrypoint",
                    entrypoint_message(config, &err.to_string()),
                ));
            }
        };
        let Spawned {
            pid,
            stdout,
            stderr,
            exited,
            runtime_api,
        } = spawned;
        let listener = match (listener, runtime_api) {
            (Some(listener), _) => Ok(listener),
            (None, Some(std)) => std
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(std)),
            (None, None) => Err(std::io::Error::other(
                "the launcher gave no Runtime API socket",
            )),
        };
        let listener = match listener {
            Ok(listener) => listener,
            Err(err) => {
                stratus_sandbox::kill_group(pid);
                return Err(platform_error(format!("runtime API listener: {err}")));
            }
        };
        // The runtime may already be connecting: the backlog holds it.
        let router = crate::runtime_api::router(shared.clone());
        let api_task = tokio::spawn(async move {
            // Runtimes wait on every answer: never hold small writes back.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, router).await;
        });
        shared.pid.store(pid, Ordering::Relaxed);
        tracing::debug!(instance = %id, pid, app = %config.app, function = %config.spec.name, "instance started");

        let (stdout, stderr) = (Arc::new(stdout), Arc::new(stderr));
        let _ = shared.output.set(Mutex::new(Output {
            out: Stream::new("stdout", stdout.clone()),
            err: Stream::new("stderr", stderr.clone()),
        }));
        tokio::spawn(read_output(shared.clone(), stdout, stderr));
        let watcher_shared = shared.clone();
        let registry = ctx.clone();
        let watcher_id = id.clone();
        tokio::spawn(async move {
            let (status, oom) = match exited.await {
                Ok(status) => (status.to_string(), status.oom_killed),
                Err(_) => ("an unknown status (the launcher is gone)".to_owned(), false),
            };
            // Children the runtime left behind go with it.
            stratus_sandbox::kill_group(pid);
            watcher_shared.pid.store(0, Ordering::Relaxed);
            let during_init = watcher_shared.ready_at.get().is_none();
            watcher_shared.die(if oom {
                DeathCause::OutOfMemory
            } else {
                DeathCause::Exited {
                    status,
                    during_init,
                }
            });
            registry.unregister(&watcher_id);
        });

        let instance = Arc::new(Instance {
            id,
            shared,
            dispatch_tx,
            state_rx,
            api_task,
            last_used: Mutex::new(Instant::now()),
            peak_rss: Mutex::new(None),
        });
        ctx.register(&instance);
        Ok(instance)
    }

    pub fn is_alive(&self) -> bool {
        matches!(*self.state_rx.borrow(), State::Running)
    }

    pub fn pid(&self) -> u32 {
        self.shared.pid.load(Ordering::Relaxed)
    }

    /// The process's peak resident memory (VmHWM) in KiB, read at most
    /// every `PEAK_RSS_REUSE` and in between as last read: a peak only
    /// grows, so the figure lags a fast-growing function by that much.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let mut last = self.peak_rss.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, kib)) = *last
            && at.elapsed() < PEAK_RSS_REUSE
        {
            return Some(kib);
        }
        let kib = stratus_sandbox::peak_rss_kib(self.pid())?;
        *last = Some((Instant::now(), kib));
        Some(kib)
    }

    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The cold-start phases of this instance: creating the sandbox,
    /// starting the runtime, and the user's own init (when the runtime
    /// reports it). `None` until the runtime first asked for work.
    pub fn start_phases(&self) -> Option<StartPhases> {
        let s = &self.shared;
        let spawned = *s.spawned_at.get()?;
        let ready = *s.ready_at.get()?;
        Some(StartPhases {
            sandbox_ms: spawned.duration_since(s.started).as_secs_f64() * 1000.0,
            init_ms: ready.duration_since(spawned).as_secs_f64() * 1000.0,
            handler_init_ms: s.handler_init_ms.get().copied(),
            prestarted: s.prestarted,
        })
    }

    pub fn kill(&self) {
        self.shared.die(DeathCause::Killed);
    }

    pub fn take_captured(&self) -> Vec<String> {
        let mut inner = self.shared.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .capture
            .take()
            .map(|(lines, _)| lines)
            .unwrap_or_default()
    }

    /// Hands `dispatch` to the runtime and waits for its answer, enforcing
    /// the init timeout until the runtime takes the event and the function
    /// timeout after. Returns when the event was dispatched and the result.
    pub async fn run(
        &self,
        mut dispatch: Dispatch,
        init_timeout: Duration,
    ) -> (Option<Instant>, Result<RuntimeResult, RunFailure>) {
        let (dispatched_tx, dispatched_rx) = oneshot::channel();
        let (result_tx, result_rx) = oneshot::channel();
        dispatch.dispatched_tx = dispatched_tx;
        dispatch.result_tx = result_tx;
        let timeout = dispatch.timeout;
        let mut state = self.state_rx.clone();
        if self.dispatch_tx.try_send(dispatch).is_err() {
            return (None, Err(RunFailure::Died(DeathCause::Killed)));
        }
        let dispatched_at = tokio::select! {
            biased;
            at = dispatched_rx => match at {
                Ok(at) => at,
                Err(_) => return (None, Err(RunFailure::Died(wait_dead(&mut state).await))),
            },
            cause = wait_dead(&mut state) => return (None, Err(RunFailure::Died(cause))),
            _ = tokio::time::sleep(init_timeout) => {
                self.kill();
                return (None, Err(RunFailure::InitTimeout(init_timeout)));
            }
        };
        let outcome = tokio::select! {
            biased;
            result = result_rx => match result {
                Ok(result) => Ok(result),
                Err(_) => Err(RunFailure::Died(wait_dead(&mut state).await)),
            },
            cause = wait_dead(&mut state) => Err(RunFailure::Died(cause)),
            _ = tokio::time::sleep_until((dispatched_at + timeout).into()) => {
                self.kill();
                Err(RunFailure::Timeout(timeout))
            }
        };
        (Some(dispatched_at), outcome)
    }
}

impl Dispatch {
    pub fn new(
        invocation: Invocation,
        timeout: Duration,
        trace_id: String,
        function_arn: String,
    ) -> Dispatch {
        // The channels are replaced by `Instance::run`.
        Dispatch {
            invocation,
            timeout,
            trace_id,
            function_arn,
            dispatched_tx: oneshot::channel().0,
            result_tx: oneshot::channel().0,
        }
    }
}

impl RunFailure {
    pub fn into_error(self, memory_mb: u32) -> FunctionError {
        match self {
            RunFailure::Died(DeathCause::OutOfMemory) => FunctionError::unhandled(
                "Runtime.OutOfMemory",
                format!("out of memory (limit {memory_mb} MiB)"),
            ),
            RunFailure::Timeout(t) => FunctionError::unhandled(
                "Sandbox.Timedout",
                format!("timed out after {}", seconds(t)),
            ),
            RunFailure::InitTimeout(t) => FunctionError::unhandled(
                "Runtime.InitTimeout",
                format!(
                    "the runtime did not finish initialising within {}",
                    seconds(t)
                ),
            ),
            RunFailure::Died(DeathCause::InitError(err)) => err,
            RunFailure::Died(DeathCause::Exited {
                status,
                during_init,
            }) => FunctionError::unhandled(
                "Runtime.ExitError",
                if during_init {
                    format!(
                        "the runtime exited during init with {status}; see `stratus logs` for its output"
                    )
                } else {
                    format!("the runtime exited with {status} before responding")
                },
            ),
            RunFailure::Died(DeathCause::Killed) => FunctionError::unhandled(
                "Runtime.Killed",
                "the instance was stopped before it responded",
            ),
        }
    }
}

async fn wait_dead(state: &mut watch::Receiver<State>) -> DeathCause {
    match state.wait_for(|s| matches!(s, State::Dead(_))).await {
        Ok(state) => match &*state {
            State::Dead(cause) => cause.clone(),
            State::Running => DeathCause::Killed,
        },
        Err(_) => DeathCause::Killed,
    }
}

fn platform_error(message: String) -> FunctionError {
    FunctionError::unhandled("Stratus.PlatformError", message)
}

fn entrypoint_message(config: &FunctionConfig, err: &str) -> String {
    match config.spec.runtime {
        stratus_manifest::Runtime::Provided => format!(
            "{err}; a provided function needs an executable file named `bootstrap` at the root of its code"
        ),
        _ => err.to_owned(),
    }
}

/// Reads the process's stdout and stderr line by line until both close.
/// The Runtime API handlers drain the same streams before they report a
/// result, so a result is never reported before its log lines.
async fn read_output(
    shared: Arc<Shared>,
    stdout: Arc<pipe::Receiver>,
    stderr: Arc<pipe::Receiver>,
) {
    loop {
        let (out_eof, err_eof) = shared.output_ended();
        if out_eof && err_eof {
            break;
        }
        tokio::select! {
            ready = stdout.readable(), if !out_eof => {
                shared.drain_output(true, false, ready.is_err());
            }
            ready = stderr.readable(), if !err_eof => {
                shared.drain_output(false, true, ready.is_err());
            }
        }
    }
    shared.sync_output();
}

/// Both output streams of an instance.
struct Output {
    out: Stream,
    err: Stream,
}

struct Stream {
    name: &'static str,
    pipe: Arc<pipe::Receiver>,
    buf: Vec<u8>,
    eof: bool,
}

impl Stream {
    fn new(name: &'static str, pipe: Arc<pipe::Receiver>) -> Stream {
        Stream {
            name,
            pipe,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Reads what is available without waiting; emits complete lines, and
    /// the partial last line too when `flush` is set.
    fn drain(&mut self, shared: &Shared, flush: bool) {
        let mut chunk = [0u8; 16 * 1024];
        let mut read = 0;
        // A process that writes without pause is read in bounded rounds, so
        // no caller is held here for long; the rest is read next round.
        let mut caught_up = false;
        while !self.eof {
            if read >= MAX_DRAIN {
                break;
            }
            match self.pipe.try_read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    read += n;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    caught_up = true;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.eof = true,
            }
        }
        let flush = flush && caught_up;
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            self.emit(shared, start, start + pos);
            start += pos + 1;
        }
        while self.buf.len() - start > MAX_LINE {
            self.emit(shared, start, start + MAX_LINE);
            start += MAX_LINE;
        }
        if (flush || self.eof) && start < self.buf.len() {
            self.emit(shared, start, self.buf.len());
            start = self.buf.len();
        }
        self.buf.drain(..start);
    }

    fn emit(&self, shared: &Shared, from: usize, to: usize) {
        let line = String::from_utf8_lossy(&self.buf[from..to]);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        shared.log(self.name, line.to_owned());
    }
}
