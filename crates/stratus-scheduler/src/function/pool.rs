//! The instance pool of one function version: warm reuse, bounded scale-out
//! and a bounded wait queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use stratus_logs::LogStream;
use tokio::sync::oneshot;

use super::context::Context;
use super::exchange::{Dispatch, RuntimeResult, Shared};
use super::instance::{Instance, RunFailure};
use crate::capacity::{AppCapacity, Idle};
use crate::config::FunctionConfig;
use crate::invocation::{
    FunctionError, Invocation, InvokeError, InvokeOutcome, Phases, StreamChunk, seconds,
};
use crate::recent::{RecentError, RecentErrors};

/// Instance counts of a pool, for status displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    pub instances: u32,
    pub idle: u32,
    pub waiting: u32,
}

enum Grant {
    Warm(Arc<Instance>),
    /// A free slot: the receiver starts a new instance.
    Start,
}

#[derive(Default)]
struct PoolState {
    /// Idle instances, most recently used last.
    idle: Vec<Arc<Instance>>,
    /// Instances that exist or are being started, idle or busy.
    total: u32,
    waiters: VecDeque<oneshot::Sender<Grant>>,
    retired: bool,
}

pub struct Pool {
    pub config: Arc<FunctionConfig>,
    ctx: Arc<Context>,
    state: Mutex<PoolState>,
    /// The whole application's instances, every version, for its cap.
    capacity: AppCapacity,
    /// When starting a warm instance last failed, to pace retries.
    warm_failed: Mutex<Option<Instant>>,
    errors: RecentErrors,
}

impl Pool {
    /// A pool whose idle instances may give way to the application's
    /// other functions when the application is at its cap.
    pub(crate) fn new(
        ctx: Arc<Context>,
        config: FunctionConfig,
        capacity: AppCapacity,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            config: Arc::new(config),
            ctx,
            state: Mutex::new(PoolState::default()),
            capacity,
            warm_failed: Mutex::new(None),
            errors: Default::default(),
        });
        let holder: Arc<dyn Idle> = pool.clone();
        pool.capacity.register(Arc::downgrade(&holder));
        pool
    }

    /// Takes a slot for a new instance, if the function and the application
    /// have room.
    fn take_slot(&self, s: &mut PoolState) -> bool {
        if s.total >= self.config.spec.max_instances {
            return false;
        }
        let taken = self.capacity.try_take();
        if taken {
            s.total += 1;
        }
        taken
    }

    /// Gives back `n` slots.
    fn free_slots(&self, s: &mut PoolState, n: u32) {
        s.total -= n;
        self.capacity.give_back(n);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The function's last errors, oldest first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        self.errors.list()
    }

    pub fn stats(&self) -> PoolStats {
        let s = self.lock();
        PoolStats {
            instances: s.total,
            idle: s.idle.len() as u32,
            waiting: s.waiters.len() as u32,
        }
    }

    async fn acquire(&self) -> Result<Grant, InvokeError> {
        // Whether the application had no idle instance to give way.
        let mut no_room = false;
        let rx = loop {
            let mut s = self.lock();
            while let Some(instance) = s.idle.pop() {
                if instance.is_alive() {
                    return Ok(Grant::Warm(instance));
                }
                self.free_slots(&mut s, 1);
            }
            if self.take_slot(&mut s) {
                return Ok(Grant::Start);
            }
            // The function has room but the application has none: an idle
            // instance of another of its functions gives way. (A slot freed
            // so may go to another caller first; then the next gives way,
            // as long as any is idle.)
            if !no_room && s.total < self.config.spec.max_instances {
                drop(s);
                no_room = !self.capacity.make_room(self);
                continue;
            }
            if s.total == 0 {
                // Nothing of this function runs that could free up: the
                // application as a whole is at its cap, all of it busy.
                return Err(InvokeError::Throttled {
                    retry_after: Duration::from_secs(1),
                    reason: self.at_cap(),
                });
            }
            if s.waiters.len() >= self.ctx.sandboxes.settings.limits.queue_depth {
                return Err(InvokeError::Throttled {
                    retry_after: Duration::from_secs(1),
                    reason: format!(
                        "all {} instances of {} are busy and {} callers are already waiting{}",
                        s.total,
                        self.config.qualified_name(),
                        s.waiters.len(),
                        self.cap_note(&s),
                    ),
                });
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.push_back(tx);
            break rx;
        };
        let mut rx = rx;
        match tokio::time::timeout(self.ctx.sandboxes.settings.limits.queue_timeout, &mut rx).await
        {
            Ok(Ok(grant)) => Ok(grant),
            Ok(Err(_)) => Err(InvokeError::ShuttingDown),
            Err(_) => {
                // A grant sent just as the wait ended must not be lost.
                rx.close();
                match rx.try_recv() {
                    Ok(grant) => Ok(grant),
                    Err(_) => Err(InvokeError::Throttled {
                        retry_after: Duration::from_secs(1),
                        reason: format!(
                            "no instance of {} became free within {}{}",
                            self.config.qualified_name(),
                            seconds(self.ctx.sandboxes.settings.limits.queue_timeout),
                            self.cap_note(&self.lock()),
                        ),
                    }),
                }
            }
        }
    }

    fn at_cap(&self) -> String {
        format!(
            "application {} is at its cap of {} instances, all of them busy",
            self.config.app,
            self.capacity.max()
        )
    }

    /// Why the function could not scale out, when the application's cap
    /// is the reason.
    fn cap_note(&self, s: &PoolState) -> String {
        if s.total < self.config.spec.max_instances && self.capacity.is_full() {
            format!("; {}", self.at_cap())
        } else {
            String::new()
        }
    }

    /// Returns an instance after use; `None` or a dead instance frees its slot.
    fn release(&self, instance: Option<Arc<Instance>>) {
        let mut s = self.lock();
        match instance {
            Some(instance) if instance.is_alive() => {
                instance.touch();
                let mut grant = Grant::Warm(instance);
                while let Some(waiter) = s.waiters.pop_front() {
                    match waiter.send(grant) {
                        Ok(()) => return,
                        Err(back) => grant = back,
                    }
                }
                let Grant::Warm(instance) = grant else {
                    unreachable!()
                };
                if s.retired {
                    self.free_slots(&mut s, 1);
                    instance.kill();
                } else {
                    // Frozen before anyone can take it, so a thaw that
                    // follows a take always comes after.
                    instance.freeze(true);
                    s.idle.push(instance);
                }
            }
            dead => {
                if let Some(instance) = dead {
                    instance.kill();
                }
                while let Some(waiter) = s.waiters.pop_front() {
                    if waiter.send(Grant::Start).is_ok() {
                        return;
                    }
                }
                self.free_slots(&mut s, 1);
            }
        }
    }

    /// Stops taking new instances into the pool and stops the idle ones;
    /// busy ones finish their invocation first.
    pub(crate) fn retire(&self) {
        let idle = {
            let mut s = self.lock();
            s.retired = true;
            let idle = s.idle.len() as u32;
            self.free_slots(&mut s, idle);
            std::mem::take(&mut s.idle)
        };
        for instance in idle {
            instance.kill();
        }
    }

    /// Stops idle instances unused for longer than the function's keep-alive
    /// (`default` unless it sets one), keeping `min_instances`, then starts
    /// instances in the background until `min_instances` exist.
    pub(crate) fn maintain(self: &Arc<Self>, default: Duration) {
        let keep_alive = self.config.spec.keep_alive.unwrap_or(default);
        let min = self.config.spec.min_instances;
        let (expired, to_start) = {
            let mut s = self.lock();
            let mut expired = Vec::new();
            // Oldest first: the idle stack keeps the most recently used last.
            let mut i = 0;
            while i < s.idle.len() {
                let dead = !s.idle[i].is_alive();
                if dead || (s.total > min && s.idle[i].idle_for() >= keep_alive) {
                    expired.push(s.idle.remove(i));
                    self.free_slots(&mut s, 1);
                } else {
                    i += 1;
                }
            }
            let pacing = self
                .warm_failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t.elapsed() < Duration::from_secs(30));
            let mut to_start = 0;
            while !s.retired && !pacing && s.total < min && self.take_slot(&mut s) {
                to_start += 1;
            }
            (expired, to_start)
        };
        for instance in expired {
            tracing::debug!(instance = %instance.id, "retiring idle instance");
            instance.kill();
        }
        for _ in 0..to_start {
            let pool = self.clone();
            tokio::spawn(async move {
                match pool.ctx.start(&pool.config).await {
                    Ok(instance) => pool.release(Some(instance)),
                    Err(error) => {
                        tracing::warn!(function = %pool.config.qualified_name(), error = %error.message, "cannot start a warm instance");
                        *pool.warm_failed.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Instant::now());
                        pool.release(None);
                    }
                }
            });
        }
    }

    /// Runs one invocation on a warm or new instance. `keep` is dropped
    /// when the invocation has ended, which for a streamed response is
    /// after this returns.
    pub async fn invoke(
        self: &Arc<Self>,
        invocation: Invocation,
        keep: impl Send + 'static,
    ) -> Result<InvokeOutcome, InvokeError> {
        let arrived = Instant::now();
        let request_id = invocation.request_id.clone();
        let want_logs = invocation.want_logs;
        let trace_id = invocation.trace_id.clone().unwrap_or_else(new_trace_id);
        let mut stale = 0;
        let (instance, cold, queue, dispatched_at, outcome) = loop {
            let grant = self.acquire().await?;
            // Waiting for a warm instance or a slot; the sandbox and runtime
            // start of a cold one are phases of their own.
            let queue = arrived.elapsed();
            let (instance, cold) = match grant {
                Grant::Warm(instance) => {
                    instance.freeze(false);
                    (instance, false)
                }
                Grant::Start => match self.ctx.start(&self.config).await {
                    Ok(instance) => (instance, true),
                    Err(error) => {
                        self.release(None);
                        return Ok(self.failed_start(invocation, arrived, error));
                    }
                },
            };
            let dispatch = Dispatch::new(
                invocation.clone(),
                self.config.spec.timeout,
                trace_id.clone(),
                self.ctx
                    .sandboxes
                    .settings
                    .function_arn(&self.config.qualified_name()),
            );
            let (dispatched_at, outcome) = instance
                .run(dispatch, self.ctx.sandboxes.settings.limits.init_timeout)
                .await;
            // A warm runtime that exited after its last answer (as one-shot
            // custom runtimes do) never saw this event: run it elsewhere.
            if !cold
                && dispatched_at.is_none()
                && matches!(outcome, Err(RunFailure::Died(_)))
                && stale < 3
            {
                stale += 1;
                self.release(None);
                continue;
            }
            break (instance, cold, queue, dispatched_at, outcome);
        };
        let (result, outcome_name, stream) = match outcome {
            Ok(RuntimeResult::Response(body)) => (Ok(body), "success", None),
            Ok(RuntimeResult::Error(error)) => (Err(error), "error", None),
            Ok(RuntimeResult::Stream {
                stream,
                done,
                abort,
            }) => (
                Ok(bytes::Bytes::new()),
                "success",
                Some((stream, done, abort)),
            ),
            Err(failure) => {
                let name = match failure {
                    RunFailure::Timeout(_) | RunFailure::InitTimeout(_) => "timeout",
                    RunFailure::Died(_) => "crash",
                };
                let error = failure.into_error(self.config.spec.memory_mb);
                instance.shared.emit(
                    LogStream::Platform,
                    Some(request_id.clone()),
                    format!("{}: {}", error.error_type, error.message),
                    None,
                );
                (Err(error), name, None)
            }
        };
        let ended = Ended {
            instance,
            request_id,
            cold,
            queue,
            dispatched_at,
            want_logs,
        };
        let Some((stream, done, abort)) = stream else {
            let (phases, max_memory_mb, logs) = self.conclude(&ended, &result, outcome_name);
            drop(keep);
            return Ok(InvokeOutcome {
                request_id: ended.request_id,
                version: self.config.version,
                instance: ended.instance.id.clone(),
                cold,
                phases,
                max_memory_mb,
                result,
                stream: None,
                logs,
                memory_mb: self.config.spec.memory_mb,
            });
        };
        // The body is still coming: the instance stays busy, and the
        // function's timeout still runs, until the runtime's post ends.
        let outcome = InvokeOutcome {
            request_id: ended.request_id.clone(),
            version: self.config.version,
            instance: ended.instance.id.clone(),
            cold,
            phases: self.phases(&ended),
            max_memory_mb: None,
            result: Ok(bytes::Bytes::new()),
            stream: Some(stream),
            logs: Vec::new(),
            memory_mb: self.config.spec.memory_mb,
        };
        let pool = self.clone();
        let timeout = self.config.spec.timeout;
        tokio::spawn(async move {
            let _keep = keep;
            let deadline = ended.dispatched_at.unwrap_or_else(Instant::now) + timeout;
            let (result, name) = tokio::select! {
                ended = done => match ended {
                    Ok(None) => (Ok(bytes::Bytes::new()), "success"),
                    Ok(Some(error)) => (Err(error), "error"),
                    Err(_) => (
                        Err(FunctionError::unhandled(
                            "Runtime.ExitError",
                            "the runtime stopped before it finished streaming the response",
                        )),
                        "crash",
                    ),
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let error = RunFailure::Timeout(timeout).into_error(pool.config.spec.memory_mb);
                    // The caller hears of the timeout before the kill cuts
                    // the runtime's post off.
                    let failed = StreamChunk::Failed(error.clone());
                    let _ = tokio::time::timeout(Duration::from_secs(1), abort.send(failed)).await;
                    ended.instance.kill();
                    ended.instance.shared.emit(
                        LogStream::Platform,
                        Some(ended.request_id.clone()),
                        format!("{}: {} while streaming the response", error.error_type, error.message),
                        None,
                    );
                    (Err(error), "timeout")
                }
            };
            pool.conclude(&ended, &result, name);
        });
        Ok(outcome)
    }

    fn phases(&self, ended: &Ended) -> Phases {
        let duration = ended.dispatched_at.map(|t| t.elapsed()).unwrap_or_default();
        let start = if ended.cold {
            ended.instance.start_phases()
        } else {
            None
        };
        Phases {
            queue_ms: ms(ended.queue),
            sandbox_ms: start.map(|s| s.sandbox_ms),
            init_ms: start.map(|s| s.init_ms),
            runtime_start_ms: start.map(|s| s.init_ms - s.handler_init_ms.unwrap_or(0.0)),
            handler_init_ms: start.and_then(|s| s.handler_init_ms),
            prestarted: start.map(|s| s.prestarted),
            from_template: start.map(|s| s.from_template),
            duration_ms: ms(duration),
        }
    }

    /// Reports an invocation that has ended and gives its instance back.
    fn conclude(
        &self,
        ended: &Ended,
        result: &Result<bytes::Bytes, FunctionError>,
        outcome_name: &str,
    ) -> (Phases, Option<u64>, Vec<String>) {
        let phases = self.phases(ended);
        let instance = &ended.instance;
        let max_memory_mb = instance.peak_rss_kib().map(|kib| kib.div_ceil(1024));
        let logs = if ended.want_logs {
            instance.take_captured()
        } else {
            Vec::new()
        };
        self.report(
            &instance.shared,
            &ended.request_id,
            ended.cold,
            phases,
            max_memory_mb,
            result,
            outcome_name,
        );
        let healthy = instance.is_alive();
        self.release(Some(instance.clone()).filter(|_| healthy));
        (phases, max_memory_mb, logs)
    }

    fn failed_start(
        &self,
        invocation: Invocation,
        arrived: Instant,
        error: FunctionError,
    ) -> InvokeOutcome {
        tracing::warn!(function = %self.config.qualified_name(), error = %error.message, "instance failed to start");
        InvokeOutcome {
            request_id: invocation.request_id,
            version: self.config.version,
            instance: String::new(),
            cold: true,
            phases: Phases {
                queue_ms: ms(arrived.elapsed()),
                ..Phases::default()
            },
            max_memory_mb: None,
            result: Err(error),
            stream: None,
            logs: Vec::new(),
            memory_mb: self.config.spec.memory_mb,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        shared: &Shared,
        request_id: &str,
        cold: bool,
        phases: Phases,
        max_memory_mb: Option<u64>,
        result: &Result<bytes::Bytes, FunctionError>,
        outcome: &str,
    ) {
        let billed = phases.duration_ms.ceil().max(1.0) as u64;
        let memory = self.config.spec.memory_mb;
        let mut message =
            crate::invocation::report_line(request_id, &phases, memory, max_memory_mb)
                .replace('\t', " ");
        if let Some(sandbox) = phases.sandbox_ms {
            message.push_str(&format!(" Sandbox Duration: {sandbox:.2} ms"));
        }
        if let Err(error) = result {
            message.push_str(&format!(" Status: {outcome} ({})", error.error_type));
            self.errors.push(
                &shared.instance_id,
                Some(request_id),
                format!("{}: {}", error.error_type, error.message),
            );
        }
        let fields = serde_json::json!({
            "duration_ms": phases.duration_ms,
            "billed_duration_ms": billed,
            "memory_size_mb": memory,
            "max_memory_used_mb": max_memory_mb,
            "init_duration_ms": phases.init_ms,
            "sandbox_ms": phases.sandbox_ms,
            "runtime_start_ms": phases.runtime_start_ms,
            "handler_init_ms": phases.handler_init_ms,
            "prestarted": phases.prestarted,
            "from_template": phases.from_template,
            "queue_ms": phases.queue_ms,
            "cold": cold,
            "outcome": outcome,
            "error_type": result.as_ref().err().map(|e| e.error_type.clone()),
        });
        shared.emit(
            LogStream::Report,
            Some(request_id.to_owned()),
            message,
            Some(fields),
        );
    }
}

impl Idle for Pool {
    fn longest_idle(&self) -> Option<Duration> {
        let s = self.lock();
        // Instances kept for `min_instances` stay.
        if s.total <= self.config.spec.min_instances {
            return None;
        }
        // The idle stack keeps the most recently used last.
        s.idle.first().map(|instance| instance.idle_for())
    }

    fn evict_longest_idle(&self) -> bool {
        let instance = {
            let mut s = self.lock();
            if s.idle.is_empty() || s.total <= self.config.spec.min_instances {
                return false;
            }
            let instance = s.idle.remove(0);
            self.free_slots(&mut s, 1);
            instance
        };
        tracing::debug!(instance = %instance.id, function = %self.config.qualified_name(), "an idle instance gives way to another function of its application");
        instance.kill();
        true
    }
}

/// An invocation whose runtime has answered or failed.
struct Ended {
    instance: Arc<Instance>,
    request_id: String,
    cold: bool,
    queue: Duration,
    dispatched_at: Option<Instant>,
    want_logs: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A trace id in the X-Ray format Lambda runtimes expect.
fn new_trace_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        crate::clock::now_ms() / 1000,
        &id[..24],
        &id[16..32]
    )
}
