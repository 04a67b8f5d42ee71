//! The instance pool of one function version: warm reuse, bounded scale-out
//! and a bounded wait queue.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
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
use crate::settings::Scene;

/// Instance counts of a pool, for status displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    pub instances: u32,
    pub idle: u32,
    pub waiting: u32,
}

enum Grant {
    /// A running instance with room for the event; `true` when it was
    /// idle, and so frozen.
    Warm(Arc<Instance>, bool),
    /// A free slot: the receiver starts a new instance.
    Start,
}

#[derive(Default)]
struct PoolState {
    /// Running instances with room for another event (with a concurrency
    /// of 1, the idle ones), most recently used last.
    open: Vec<Arc<Instance>>,
    /// Instances that exist or are being started, idle or busy.
    total: u32,
    waiters: VecDeque<oneshot::Sender<Grant>>,
    /// Instances being started for a caller: each has room for
    /// `concurrency - 1` more events, which later callers wait for rather
    /// than start instances of their own.
    starting: u32,
    /// Callers waiting for that room.
    promised: u32,
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
    metrics: stratus_metrics::FunctionMetrics,
    /// Every instance it started that may still run, busy or idle (for
    /// `stratus profile`).
    started: Mutex<Vec<std::sync::Weak<Instance>>>,
}

impl Pool {
    /// A pool whose idle instances may give way to the application's
    /// other functions when the application is at its cap.
    pub(crate) fn new(
        ctx: Arc<Context>,
        config: FunctionConfig,
        capacity: AppCapacity,
    ) -> Arc<Pool> {
        let metrics =
            ctx.sandboxes
                .settings
                .metrics
                .function(&config.app, &config.spec.name, config.version);
        let pool = Arc::new(Pool {
            metrics,
            config: Arc::new(config),
            ctx,
            state: Mutex::new(PoolState::default()),
            capacity,
            warm_failed: Mutex::new(None),
            errors: Default::default(),
            started: Mutex::new(Vec::new()),
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
            idle: s.open.iter().filter(|i| load(i) == 0).count() as u32,
            waiting: s.waiters.len() as u32,
        }
    }

    /// Most events one instance runs at once.
    fn concurrency(&self) -> u32 {
        self.config.spec.concurrency.max(1)
    }

    /// The most recently used running instance with room, if any; dead
    /// ones found on the way give their slots back.
    fn take_open(&self, s: &mut PoolState) -> Option<Grant> {
        while let Some(instance) = s.open.last().cloned() {
            if !instance.is_alive() {
                s.open.pop();
                self.forget(s, &instance);
                continue;
            }
            let load = instance.load.fetch_add(1, Relaxed) + 1;
            if load >= self.concurrency() {
                s.open.pop();
            }
            let thaw = instance.frozen.swap(false, Relaxed);
            return Some(Grant::Warm(instance, thaw));
        }
        None
    }

    /// Stops counting `instance` (once) and gives its slot to a waiter,
    /// who starts a new instance, or back.
    fn forget(&self, s: &mut PoolState, instance: &Arc<Instance>) {
        instance.kill();
        if instance.gone.swap(true, Relaxed) {
            return;
        }
        if !self.hand_on_slot(s) {
            self.free_slots(s, 1);
        }
    }

    /// Gives a slot that came free to the first waiter, who starts an
    /// instance in it; false if nobody waits.
    fn hand_on_slot(&self, s: &mut PoolState) -> bool {
        while let Some(waiter) = s.waiters.pop_front() {
            if waiter.send(Grant::Start).is_ok() {
                s.starting += 1;
                s.promised = s.promised.saturating_sub(1);
                return true;
            }
        }
        false
    }

    async fn acquire(&self) -> Result<Grant, InvokeError> {
        // Whether the application had no idle instance to give way.
        let mut no_room = false;
        let rx = loop {
            let mut s = self.lock();
            if let Some(grant) = self.take_open(&mut s) {
                return Ok(grant);
            }
            // An instance being started has room: wait for it rather than
            // start another.
            if s.promised < s.starting * (self.concurrency() - 1) {
                let (tx, rx) = oneshot::channel();
                s.waiters.push_back(tx);
                s.promised += 1;
                break rx;
            }
            if self.take_slot(&mut s) {
                s.starting += 1;
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

    /// Gives `instance`'s room to waiters, as much as it has; what is left
    /// opens it to later callers. Its load counts what it runs; `was_open`:
    /// it is in the open list.
    fn offer(self: &Arc<Self>, s: &mut PoolState, instance: &Arc<Instance>, was_open: bool) {
        let n = self.concurrency();
        while load(instance) < n
            && let Some(waiter) = s.waiters.pop_front()
        {
            instance.load.fetch_add(1, Relaxed);
            if waiter.send(Grant::Warm(instance.clone(), false)).is_ok() {
                s.promised = s.promised.saturating_sub(1);
            } else {
                instance.load.fetch_sub(1, Relaxed);
            }
        }
        let load = load(instance);
        let remove = |s: &mut PoolState| s.open.retain(|i| !Arc::ptr_eq(i, instance));
        if s.retired {
            if load == 0 {
                remove(s);
                self.forget(s, instance);
            }
            return;
        }
        if load == 0 {
            self.freeze_later(instance);
        }
        match (was_open, load < n) {
            (false, true) => s.open.push(instance.clone()),
            (true, false) => remove(s),
            _ => {}
        }
    }

    /// Freezes `instance` once it has been idle for `--freeze-after`, as
    /// Lambda does: its background work waits for its next event (never a
    /// debugged function's, whose debugger talks to it meanwhile). Done
    /// under the pool's lock, so a take (which thaws what it finds frozen)
    /// comes wholly before or after.
    fn freeze_later(self: &Arc<Self>, instance: &Arc<Instance>) {
        // A debugger talks to the runtime between events too.
        if self
            .config
            .spec
            .env
            .contains_key(stratus_manifest::DEBUG_PORT_ENV)
        {
            return;
        }
        let spell = instance.idle_spells.fetch_add(1, Relaxed) + 1;
        let (pool, instance) = (Arc::downgrade(self), instance.clone());
        let after = self.ctx.sandboxes.settings.limits.freeze_after;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(pool) = pool.upgrade() else {
                return;
            };
            let _s = pool.lock();
            let still_idle = load(&instance) == 0
                && instance.idle_spells.load(Relaxed) == spell
                && !instance.gone.load(Relaxed)
                && instance.is_alive();
            if still_idle {
                instance.freeze(true);
                instance.frozen.store(true, Relaxed);
            }
        });
    }

    /// A new instance has started, for the caller that asked (`for_caller`)
    /// or ahead of demand.
    /// The process ids of its running instances, by instance id.
    pub fn running_pids(&self) -> Vec<(String, u32)> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        started.retain(|weak| weak.strong_count() > 0);
        started
            .iter()
            .filter_map(|weak| {
                let instance = weak.upgrade()?;
                let pid = instance.shared.process.get()?.pid()?;
                Some((instance.id.clone(), pid))
            })
            .collect()
    }

    fn started(self: &Arc<Self>, instance: &Arc<Instance>, for_caller: bool) {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(instance));
        let mut s = self.lock();
        if for_caller {
            s.starting = s.starting.saturating_sub(1);
            instance.load.store(1, Relaxed);
        }
        self.offer(&mut s, instance, false);
        let room = s.starting * (self.concurrency() - 1);
        s.promised = s.promised.min(room);
    }

    /// A start for a caller failed: its slot goes to a waiter or back.
    fn start_failed(&self) {
        let mut s = self.lock();
        s.starting = s.starting.saturating_sub(1);
        if !self.hand_on_slot(&mut s) {
            self.free_slots(&mut s, 1);
        }
        let room = s.starting * (self.concurrency() - 1);
        s.promised = s.promised.min(room);
    }

    /// Returns an instance after an event; a dead one gives its slot up.
    fn release(self: &Arc<Self>, instance: &Arc<Instance>) {
        let mut s = self.lock();
        let was_open = instance.load.fetch_sub(1, Relaxed) < self.concurrency();
        if !instance.is_alive() {
            if was_open {
                s.open.retain(|i| !Arc::ptr_eq(i, instance));
            }
            self.forget(&mut s, instance);
            return;
        }
        instance.touch();
        self.offer(&mut s, instance, was_open);
    }

    /// Stops taking new instances into the pool and stops the idle ones;
    /// busy ones finish their invocation first.
    pub(crate) fn retire(&self) {
        let mut s = self.lock();
        s.retired = true;
        // Busy ones are stopped when their last event ends (`offer`).
        for instance in std::mem::take(&mut s.open) {
            if load(&instance) == 0 {
                instance.kill();
                if !instance.gone.swap(true, Relaxed) {
                    self.free_slots(&mut s, 1);
                }
            }
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
            // Oldest first: the open list keeps the most recently used last.
            let mut i = 0;
            while i < s.open.len() {
                let instance = &s.open[i];
                let dead = !instance.is_alive();
                let unused = load(instance) == 0 && instance.idle_for() >= keep_alive;
                if dead || (s.total > min && unused) {
                    let instance = s.open.remove(i);
                    if !instance.gone.swap(true, Relaxed) {
                        self.free_slots(&mut s, 1);
                    }
                    expired.push(instance);
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
                    Ok(instance) => pool.started(&instance, false),
                    Err(error) => {
                        tracing::warn!(function = %pool.config.qualified_name(), error = %error.message, "cannot start a warm instance");
                        *pool.warm_failed.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Instant::now());
                        let mut s = pool.lock();
                        if !pool.hand_on_slot(&mut s) {
                            pool.free_slots(&mut s, 1);
                        }
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
        let mut stale = 0;
        let (instance, cold, queue, dispatched_at, outcome, running) = loop {
            let grant = match self.acquire().await {
                Ok(grant) => grant,
                Err(throttled @ InvokeError::Throttled { .. }) => {
                    self.metrics
                        .invoked(stratus_metrics::Outcome::Throttled, false, &[]);
                    return Err(throttled);
                }
                Err(other) => return Err(other),
            };
            let running = self.metrics.running();
            // Waiting for a warm instance or a slot; the sandbox and runtime
            // start of a cold one are phases of their own.
            let queue = arrived.elapsed();
            let (instance, cold) = match grant {
                Grant::Warm(instance, thaw) => {
                    if thaw {
                        instance.freeze(false);
                    }
                    (instance, false)
                }
                Grant::Start => match self.ctx.start(&self.config).await {
                    Ok(instance) => {
                        self.started(&instance, true);
                        (instance, true)
                    }
                    Err(error) => {
                        self.start_failed();
                        return Ok(self.failed_start(invocation, arrived, error));
                    }
                },
            };
            let dispatch = Dispatch::new(
                invocation.clone(),
                self.config.spec.timeout,
                self.ctx
                    .sandboxes
                    .settings
                    .function_arn(&self.config.qualified_name()),
            );
            let cpu_before = instance.cpu_time_us();
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
                self.release(&instance);
                continue;
            }
            break (
                instance,
                cold,
                queue,
                dispatched_at,
                outcome,
                (running, cpu_before),
            );
        };
        let (running, cpu_before) = running;
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
                    RunFailure::Timeout(_)
                    | RunFailure::InitTimeout(_)
                    | RunFailure::NotTaken { .. } => "timeout",
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
            arrived,
            cpu_before,
            event: invocation.payload.clone(),
            trace: invocation.trace.clone(),
            _running: running,
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
            cpu_user_ms: None,
            cpu_system_ms: None,
            cpu_scope: None,
        }
    }

    /// Reports an invocation that has ended and gives its instance back.
    fn conclude(
        self: &Arc<Self>,
        ended: &Ended,
        result: &Result<bytes::Bytes, FunctionError>,
        outcome_name: &str,
    ) -> (Phases, Option<u64>, Vec<String>) {
        let mut phases = self.phases(ended);
        if let (Some((user0, system0)), Some((user1, system1))) =
            (ended.cpu_before, ended.instance.cpu_time_us())
        {
            phases.cpu_user_ms = Some(user1.saturating_sub(user0) as f64 / 1000.0);
            phases.cpu_system_ms = Some(system1.saturating_sub(system0) as f64 / 1000.0);
            phases.cpu_scope = Some(if self.config.spec.concurrency > 1 {
                "instance"
            } else {
                "invocation"
            });
        }
        self.measure(
            outcome_name,
            result,
            ended.cold,
            &phases,
            ended.arrived.elapsed(),
        );
        let instance = &ended.instance;
        let max_memory_mb = instance.peak_rss_kib().map(|kib| kib.div_ceil(1024));
        self.trace(ended, &phases, result, outcome_name);
        if let Err(error) = result {
            self.capture(Scene {
                app: self.config.app.clone(),
                function: self.config.spec.name.clone(),
                version: self.config.version,
                request_id: ended.request_id.clone(),
                outcome: outcome_of(outcome_name, result).as_str(),
                error: error.clone(),
                event: ended.event.clone(),
                phases,
                max_memory_mb,
                cold: ended.cold,
                instance: instance.id.clone(),
                env_names: Vec::new(),
            });
        }
        let logs = if ended.want_logs {
            instance.take_captured(&ended.request_id)
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
        self.release(instance);
        (phases, max_memory_mb, logs)
    }

    /// Hands a failure's scene to the sink, with the names of the
    /// variables the function was given.
    fn capture(&self, mut scene: Scene) {
        let Some(sink) = &self.ctx.sandboxes.settings.failures else {
            return;
        };
        let mut names: Vec<String> = self
            .config
            .spec
            .env
            .keys()
            .cloned()
            .chain(self.config.secrets.0.iter().map(|(name, _)| name.clone()))
            .collect();
        names.sort_unstable();
        names.dedup();
        scene.env_names = names;
        sink.failed(scene);
    }

    /// Records an ended invocation's spans: the invocation, under its
    /// caller's span, and its phases inside it; the handler's span is the
    /// one the function was given as its parent.
    fn trace(
        &self,
        ended: &Ended,
        phases: &Phases,
        result: &Result<bytes::Bytes, FunctionError>,
        outcome_name: &str,
    ) {
        let tracer = &self.ctx.sandboxes.settings.tracer;
        if !tracer.is_on() || !ended.trace.handler.sampled {
            return;
        }
        let end = stratus_trace::now_ns();
        let start = stratus_trace::ns_before(end, ended.arrived.elapsed());
        let handler_start = ended
            .dispatched_at
            .map(|at| stratus_trace::ns_before(end, at.elapsed()))
            .unwrap_or(end);
        let mut spans = self.invocation_spans(&ended.trace, &ended.request_id, start, end);
        let invocation = spans[0].context.span_id;
        let error = result
            .as_ref()
            .err()
            .map(|e| format!("{}: {}", e.error_type, e.message));
        spans[0].error.clone_from(&error);
        let root = &mut spans[0];
        root.attributes.extend([
            ("faas.coldstart", stratus_trace::Value::Bool(ended.cold)),
            (
                "stratus.outcome",
                stratus_trace::Value::Str(outcome_of(outcome_name, result).as_str().to_owned()),
            ),
            (
                "stratus.instance",
                stratus_trace::Value::Str(ended.instance.id.clone()),
            ),
        ]);
        // The phases, one after another from the arrival.
        let mut at = start;
        let mut phase = |name: &'static str, ms: f64| {
            let until = (at + (ms * 1e6) as u64).min(handler_start.max(at));
            let span = stratus_trace::Span::new(
                ended.trace.handler.child(),
                Some(invocation),
                name,
                stratus_trace::Kind::Internal,
                &self.config.app,
                at,
                until,
            );
            at = until;
            span
        };
        let mut phase_spans = Vec::with_capacity(5);
        if phases.queue_ms >= 0.05 {
            phase_spans.push(phase("queue wait", phases.queue_ms));
        }
        for (name, ms) in [
            ("sandbox", phases.sandbox_ms),
            ("runtime start", phases.runtime_start_ms),
            ("init", phases.handler_init_ms),
        ] {
            if let Some(ms) = ms {
                phase_spans.push(phase(name, ms));
            }
        }
        spans.extend(phase_spans);
        let mut handler = stratus_trace::Span::new(
            ended.trace.handler,
            Some(invocation),
            "handler",
            stratus_trace::Kind::Internal,
            &self.config.app,
            handler_start,
            end,
        );
        handler.error = error;
        spans.push(handler);
        tracer.record(spans);
    }

    /// The span of an invocation of this pool's function, with the
    /// attributes every one has.
    fn invocation_spans(
        &self,
        trace: &crate::invocation::Trace,
        request_id: &str,
        start: u64,
        end: u64,
    ) -> Vec<stratus_trace::Span> {
        let mut span = stratus_trace::Span::new(
            trace.handler.child(),
            trace.parent.map(|parent| parent.span_id),
            self.config.spec.name.clone(),
            stratus_trace::Kind::Server,
            &self.config.app,
            start,
            end,
        )
        .attribute(
            "faas.name",
            stratus_trace::Value::Str(self.config.spec.name.clone()),
        )
        .attribute(
            "faas.version",
            stratus_trace::Value::Int(i64::from(self.config.version)),
        );
        span.request_id = Some(request_id.to_owned());
        span.links.clone_from(&trace.links);
        vec![span]
    }

    /// Counts an ended invocation, and times it, in the metrics.
    fn measure(
        &self,
        outcome_name: &str,
        result: &Result<bytes::Bytes, FunctionError>,
        cold: bool,
        phases: &Phases,
        total: Duration,
    ) {
        use stratus_metrics::Phase;
        let outcome = outcome_of(outcome_name, result);
        // On the stack: this runs for every invocation.
        let mut timed = [(Phase::Total, total.as_secs_f64()); Phase::ALL.len()];
        let mut n = 1;
        for (phase, ms) in [
            (Phase::Queue, Some(phases.queue_ms)),
            (Phase::Handler, Some(phases.duration_ms)),
            (Phase::Sandbox, phases.sandbox_ms),
            (Phase::RuntimeStart, phases.runtime_start_ms),
            (Phase::Init, phases.handler_init_ms),
        ] {
            if let Some(ms) = ms {
                timed[n] = (phase, ms / 1000.0);
                n += 1;
            }
        }
        self.metrics.invoked(outcome, cold, &timed[..n]);
        if let (Some(user), Some(system)) = (phases.cpu_user_ms, phases.cpu_system_ms) {
            self.metrics.cpu(user / 1000.0, system / 1000.0);
        }
    }

    fn failed_start(
        &self,
        invocation: Invocation,
        arrived: Instant,
        error: FunctionError,
    ) -> InvokeOutcome {
        self.capture(Scene {
            app: self.config.app.clone(),
            function: self.config.spec.name.clone(),
            version: self.config.version,
            request_id: invocation.request_id.clone(),
            outcome: stratus_metrics::Outcome::Error.as_str(),
            error: error.clone(),
            event: invocation.payload.clone(),
            phases: Phases {
                queue_ms: ms(arrived.elapsed()),
                ..Phases::default()
            },
            max_memory_mb: None,
            cold: true,
            instance: String::new(),
            env_names: Vec::new(),
        });
        tracing::warn!(function = %self.config.qualified_name(), error = %error.message, "instance failed to start");
        let tracer = &self.ctx.sandboxes.settings.tracer;
        if tracer.is_on() && invocation.trace.handler.sampled {
            let end = stratus_trace::now_ns();
            let start = stratus_trace::ns_before(end, arrived.elapsed());
            let mut spans =
                self.invocation_spans(&invocation.trace, &invocation.request_id, start, end);
            spans[0].error = Some(format!("{}: {}", error.error_type, error.message));
            tracer.record(spans);
        }
        self.metrics.invoked(
            stratus_metrics::Outcome::Error,
            true,
            &[(
                stratus_metrics::Phase::Total,
                arrived.elapsed().as_secs_f64(),
            )],
        );
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
        if let (Some(user), Some(system)) = (phases.cpu_user_ms, phases.cpu_system_ms) {
            message.push_str(&format!(
                " CPU Time: {user:.2} ms user, {system:.2} ms system"
            ));
            if phases.cpu_scope == Some("instance") {
                message.push_str(" (the instance's, events together)");
            }
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
            "cpu_user_ms": phases.cpu_user_ms,
            "cpu_system_ms": phases.cpu_system_ms,
            "cpu_scope": phases.cpu_scope,
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
        longest_idle(&s).map(|at| s.open[at].idle_for())
    }

    fn evict_longest_idle(&self) -> bool {
        let instance = {
            let mut s = self.lock();
            if s.total <= self.config.spec.min_instances {
                return false;
            }
            let Some(at) = longest_idle(&s) else {
                return false;
            };
            let instance = s.open.remove(at);
            if !instance.gone.swap(true, Relaxed) {
                self.free_slots(&mut s, 1);
            }
            instance
        };
        tracing::debug!(instance = %instance.id, function = %self.config.qualified_name(), "an idle instance gives way to another function of its application");
        instance.kill();
        true
    }
}

/// Events an instance runs now (read under its pool's lock).
fn load(instance: &Instance) -> u32 {
    instance.load.load(Relaxed)
}

/// Where in the open list the instance idle the longest is: the list
/// keeps the most recently used last.
fn longest_idle(s: &PoolState) -> Option<usize> {
    s.open.iter().position(|i| load(i) == 0)
}

/// An invocation whose runtime has answered or failed.
struct Ended {
    instance: Arc<Instance>,
    request_id: String,
    cold: bool,
    queue: Duration,
    dispatched_at: Option<Instant>,
    want_logs: bool,
    arrived: Instant,
    /// The instance's CPU time when the event was handed over.
    cpu_before: Option<(u64, u64)>,
    /// The event, for the scene of a failure.
    event: bytes::Bytes,
    trace: crate::invocation::Trace,
    /// Counts the invocation as running until it is reported.
    _running: stratus_metrics::Running,
}

/// How an invocation that ended as `outcome_name` with `result` counts.
fn outcome_of(
    outcome_name: &str,
    result: &Result<bytes::Bytes, FunctionError>,
) -> stratus_metrics::Outcome {
    use stratus_metrics::Outcome;
    match (outcome_name, result) {
        ("success", _) => Outcome::Success,
        ("timeout", _) => Outcome::Timeout,
        ("crash", Err(e)) if e.error_type == "Runtime.OutOfMemory" => Outcome::OutOfMemory,
        ("crash", _) => Outcome::Crashed,
        _ => Outcome::Error,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
