//! One instance of a function: a runtime process, its Runtime API
//! listener, the task that reads its output and the one that notices its
//! exit.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stratus_sandbox::SandboxError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::exchange::{DeathCause, Dispatch, RuntimeResult, Shared, State};
use crate::config::FunctionConfig;
use crate::invocation::{FunctionError, seconds};
use crate::output::Output;
use crate::process::{self, Kind};
use crate::sandboxed::Sandboxes;

/// Longest the refill of prestarted sandboxes waits for a new instance to
/// finish starting.
const REFILL_DELAY_MAX: Duration = Duration::from_secs(1);
/// How long a reading of an instance's peak memory is reused: reading
/// `/proc` on every invocation costs more than a fast invocation itself.
const PEAK_RSS_REUSE: Duration = Duration::from_millis(100);

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
    /// Events given to it and not yet concluded; kept by its pool, under
    /// the pool's lock.
    pub(super) load: AtomicU32,
    /// Its pool no longer counts it (its slot was given back).
    pub(super) gone: AtomicBool,
    /// Frozen while idle; the caller that takes it thaws it.
    pub(super) frozen: AtomicBool,
    /// Counts the times its load fell to 0: a freeze planned for one
    /// idle spell does not happen in the next.
    pub(super) idle_spells: AtomicU64,
}

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
    pub from_template: bool,
}

/// Why a run ended without a result from the runtime.
pub(crate) enum RunFailure {
    Died(DeathCause),
    InitTimeout(Duration),
    /// A runtime past its init did not ask for the event in time: with
    /// `concurrency` above 1, one that asks for fewer at once than it may.
    NotTaken {
        waited: Duration,
        concurrency: usize,
    },
    Timeout(Duration),
}

impl Instance {
    /// Starts the runtime process and its Runtime API listener;
    /// `on_exit` is told the instance's id once its process has exited.
    pub async fn start(
        sandboxes: &Arc<Sandboxes>,
        config: &Arc<FunctionConfig>,
        on_exit: Box<dyn FnOnce(&str) + Send>,
    ) -> Result<Arc<Instance>, FunctionError> {
        let settings = &sandboxes.settings;
        let isolation = sandboxes.launcher.isolation();
        let kind = Kind::of(settings, isolation, config);
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
        // Before a sandbox is taken: an instance that cannot be fenced as
        // asked does not start.
        let egress = if kind.private_network {
            None
        } else {
            sandboxes
                .egress
                .rule(&config.spec.network)
                .await
                .map_err(|err| {
                    FunctionError::unhandled(
                        "Runtime.NetworkUnavailable",
                        format!("cannot start {}: {err}", config.qualified_name()),
                    )
                })?
        };
        let reserved = sandboxes.reserve(kind, !process::needs_own_start(&settings.limits, config));
        let id = reserved.id.clone();
        let (shared, dispatch_tx, state_rx) = Shared::new(
            id.clone(),
            config.clone(),
            sandboxes.logs.clone(),
            settings.limits.max_response_bytes,
            reserved.prestarted(),
        );
        let mut activation =
            process::activation(settings, isolation, config, (&api_addr, api_port), &id);
        activation.egress = egress;
        let started = sandboxes
            .start(
                reserved,
                || {
                    process::spec(
                        settings,
                        isolation,
                        kind,
                        Some((config, &activation.env)),
                        &id,
                    )
                },
                &activation,
            )
            .await;
        // Refill once this instance has answered its first request: making
        // a sandbox (mounts, cgroups, an interpreter's start) competes with
        // its start and with that request.
        let (prewarm, refill_shared) = (sandboxes.prewarm.clone(), shared.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFILL_DELAY_MAX, refill_shared.settled.notified()).await;
            prewarm.maintain();
        });
        let started = started.map_err(|err| {
            FunctionError::unhandled(
                "Runtime.InvalidEntrypoint",
                entrypoint_message(config, &err),
            )
        })?;
        let _ = shared.activated_at.set(started.activated_at);
        let _ = shared.from_template.set(started.from_template);
        let process = started.process;
        let _ = shared.process.set(process.clone());
        let listener = match (listener, started.runtime_api) {
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
                process.kill();
                return Err(platform_error(format!("runtime API listener: {err}")));
            }
        };
        // The runtime may already be connecting: the backlog holds it.
        let router = super::runtime_api::router(shared.clone());
        let max_connections = super::capped::max_connections(shared.concurrency);
        let api_task = tokio::spawn(async move {
            let listener = super::capped::Capped::new(listener, max_connections);
            let _ = axum::serve(listener, router).await;
        });
        tracing::debug!(instance = %id, app = %config.app, function = %config.spec.name, "instance started");

        let output = Output::new(
            started.stdout,
            started.stderr,
            settings.limits.instance_log_rate,
        );
        let _ = shared.output.set(output.clone());
        tokio::spawn(output.read(shared.clone()));
        let (watcher, watcher_id) = (shared.clone(), id.clone());
        let exited = started.exited;
        tokio::spawn(async move {
            let status = process.wait(exited).await;
            let during_init = watcher.ready_at.get().is_none();
            watcher.die(if status.is_some_and(|s| s.oom_killed) {
                DeathCause::OutOfMemory
            } else {
                DeathCause::Exited {
                    status: crate::launch::describe(status),
                    during_init,
                }
            });
            on_exit(&watcher_id);
        });

        let instance = Arc::new(Instance {
            id,
            shared,
            dispatch_tx,
            state_rx,
            api_task,
            last_used: Mutex::new(Instant::now()),
            peak_rss: Mutex::new(None),
            load: AtomicU32::new(0),
            gone: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            idle_spells: AtomicU64::new(0),
        });
        Ok(instance)
    }

    pub fn is_alive(&self) -> bool {
        matches!(*self.state_rx.borrow(), State::Running)
    }

    /// The process's peak resident memory (VmHWM) in KiB, read at most
    /// every `PEAK_RSS_REUSE` and in between as last read: a peak only
    /// grows, so the figure lags a fast-growing function by that much.
    pub fn cpu_time_us(&self) -> Option<(u64, u64)> {
        self.shared.process.get()?.cpu_time_us()
    }

    pub fn peak_rss_kib(&self) -> Option<u64> {
        let mut last = self.peak_rss.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, kib)) = *last
            && at.elapsed() < PEAK_RSS_REUSE
        {
            return Some(kib);
        }
        let kib = self.shared.process.get()?.peak_rss_kib()?;
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
        let activated = *s.activated_at.get()?;
        let ready = *s.ready_at.get()?;
        Some(StartPhases {
            sandbox_ms: activated.duration_since(s.started).as_secs_f64() * 1000.0,
            init_ms: ready.duration_since(activated).as_secs_f64() * 1000.0,
            handler_init_ms: s.handler_init_ms.get().copied(),
            prestarted: s.prestarted,
            from_template: s.from_template.get().copied().unwrap_or(false),
        })
    }

    pub fn kill(&self) {
        self.shared.die(DeathCause::Killed);
    }

    /// Freezes an idle instance until its next event, as Lambda does: its
    /// background work waits too. Or thaws it for that event.
    pub fn freeze(&self, frozen: bool) {
        if let Some(process) = self.shared.process.get() {
            process.freeze(frozen);
        }
    }

    pub fn take_captured(&self, request_id: &str) -> Vec<String> {
        self.shared.take_captured(request_id)
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
                let failure = if self.shared.ready_at.get().is_some() {
                    RunFailure::NotTaken {
                        waited: init_timeout,
                        concurrency: self.shared.concurrency,
                    }
                } else {
                    RunFailure::InitTimeout(init_timeout)
                };
                return (None, Err(failure));
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

impl RunFailure {
    pub fn into_error(self, memory_mb: u32) -> FunctionError {
        match self {
            RunFailure::Died(DeathCause::OutOfMemory) => FunctionError::unhandled(
                "Runtime.OutOfMemory",
                format!("out of memory (limit {memory_mb} MiB)"),
            ),
            RunFailure::Timeout(t) => FunctionError::timeout(
                "Sandbox.Timedout",
                format!("timed out after {}", seconds(t)),
            ),
            RunFailure::NotTaken {
                waited,
                concurrency,
            } => FunctionError::timeout(
                "Runtime.EventNotTaken",
                if concurrency > 1 {
                    format!(
                        "the runtime did not ask for the event within {}: with `concurrency: {concurrency}` it must ask for up to {concurrency} events at once (AWS_LAMBDA_MAX_CONCURRENCY)",
                        seconds(waited)
                    )
                } else {
                    format!(
                        "the runtime did not ask for the event within {}",
                        seconds(waited)
                    )
                },
            ),
            RunFailure::InitTimeout(t) => FunctionError::timeout(
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
    FunctionError::platform("Stratus.PlatformError", message)
}

fn entrypoint_message(config: &FunctionConfig, err: &SandboxError) -> String {
    match config.spec.runtime {
        stratus_manifest::Runtime::Provided => format!(
            "{err}; a provided function needs an executable file named `bootstrap` at the root of its code"
        ),
        _ => err.to_string(),
    }
}
