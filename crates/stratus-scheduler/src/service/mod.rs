//! Services: ordinary web servers (Flask, Express, any binary listening on
//! a port) run in sandboxes and reached through the gateway.
//!
//! A [`Service`] is one version of one service: its instances, scaled by
//! the requests in flight. A request takes a [`Lease`] on the least busy
//! ready instance below the service's `concurrency`; when there is none,
//! it starts another (up to `max_instances`) and waits, in a queue bounded
//! by `queue_depth` and the server's queue timeout, for one to become
//! ready. An instance is ready when its port accepts connections, or its
//! readiness path answers. Idle instances above `min_instances` retire
//! after `idle_timeout`; retiring drains: no new requests, those in flight
//! finish, long-lived ones (WebSockets) are told to end after
//! `drain_grace`. An instance that exits is replaced; one that keeps
//! failing to start or dies soon after backs off exponentially, and while
//! none can run, requests are answered at once rather than held.
//!
//! Within: `instance` (one process and its phase), `lease` (a request's
//! hold on one), `readiness`, `addresses` and `status` are leaves; this
//! module holds the queue and the lifecycle over them.

mod addresses;
mod instance;
mod lease;
mod readiness;
mod status;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stratus_logs::{LogRecord, LogStream};

pub use instance::{Phase, ServiceInstance};
pub use lease::Lease;
pub use status::{InstanceStatus, ServiceStatus};

use crate::capacity::AppCapacity;
use crate::config::ServiceConfig;
use crate::output::{LineSink, Output};
use crate::process::Kind;
use crate::recent::RecentErrors;
use crate::sandboxed::Sandboxes;
use addresses::Addresses;
use lease::Demand;

/// The first pause after a failed start; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How much longer than its patience a request waits for an instance
/// that is still starting: the sandbox's start, and a failure's report.
const START_MARGIN: Duration = Duration::from_secs(3);

/// How often a request waiting for starting instances looks whether they
/// are stuck.
const STUCK_CHECK: Duration = Duration::from_millis(500);

/// Why waiting is pointless, when no instance is ready and every starting
/// one printed an error and went quiet.
fn stuck(s: &State) -> Option<String> {
    let mut starting = s.instances.iter().filter(|i| i.phase() == Phase::Starting);
    let first = starting.next()?;
    if s.count(Phase::Ready) > 0 {
        return None;
    }
    let reason = first.stuck()?;
    starting.all(|i| i.stuck().is_some()).then_some(reason)
}

/// How long a failed start's last output may take to be read.
const OUTPUT_SETTLES: Duration = Duration::from_millis(500);

/// An instance that dies sooner than this after it became ready counts
/// as a failed start for the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a stopping instance has after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the closing handshake of a drained WebSocket may take.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How long a throttled request is told to wait before it retries.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a request got no instance.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service {0} is at capacity; retry later")]
    Throttled(String, Duration),
    #[error("service {service} cannot start: {reason}")]
    Unavailable { service: String, reason: String },
    /// The version was replaced while the request waited: route it again.
    #[error("the service was redeployed")]
    Retired,
}

/// What every service shares.
pub(crate) struct Context {
    pub sandboxes: Arc<Sandboxes>,
    /// Where fenced service instances get their addresses.
    addresses: Addresses,
}

impl Context {
    pub fn new(sandboxes: Arc<Sandboxes>) -> Arc<Context> {
        Arc::new(Context {
            sandboxes,
            addresses: Addresses::default(),
        })
    }
}

#[derive(Default)]
struct State {
    instances: Vec<Arc<ServiceInstance>>,
    restarts: u32,
    /// Failed starts (or early deaths) in a row, for the backoff.
    failures: u32,
    backoff_until: Option<Instant>,
}

impl State {
    fn count(&self, phase: Phase) -> usize {
        self.instances.iter().filter(|i| i.phase() == phase).count()
    }

    fn live(&self) -> usize {
        self.count(Phase::Starting) + self.count(Phase::Ready)
    }

    fn backing_off(&self) -> bool {
        self.backoff_until.is_some_and(|t| Instant::now() < t)
    }
}

/// One version of one service.
pub struct Service {
    ctx: Arc<Context>,
    pub config: Arc<ServiceConfig>,
    state: Mutex<State>,
    demand: Arc<Demand>,
    errors: RecentErrors,
    retired: AtomicBool,
    /// The whole application's instances, functions' too, for its cap.
    capacity: AppCapacity,
    /// Its proxied requests and WebSocket sessions, counted and timed.
    pub metrics: stratus_metrics::ServiceMetrics,
}

/// A request's place in a service's queue.
struct QueueSlot<'a> {
    service: &'a Service,
    held: bool,
}

impl QueueSlot<'_> {
    /// Gives the place back; `_s` proves the state is locked, under which
    /// the count changes.
    fn release(&mut self, _s: &mut State) {
        if std::mem::take(&mut self.held) {
            self.service.demand.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut s = self.service.lock();
            self.release(&mut s);
        }
    }
}

impl Service {
    pub(crate) fn new(ctx: Arc<Context>, config: ServiceConfig, capacity: AppCapacity) -> Service {
        let metrics =
            ctx.sandboxes
                .settings
                .metrics
                .service(&config.app, &config.spec.name, config.version);
        Service {
            metrics,
            ctx,
            config: Arc::new(config),
            state: Mutex::new(State::default()),
            demand: Arc::new(Demand::default()),
            errors: RecentErrors::default(),
            retired: AtomicBool::new(false),
            capacity,
        }
    }

    /// `max_instances`, or 1 where instances share one address and the
    /// service's port is fixed: a second could not bind it, and would find
    /// the first listening there instead.
    fn max_instances(&self) -> usize {
        let fixed_port = self.config.spec.port.is_some() || self.config.spec.command.is_none();
        if fixed_port && !self.ctx.sandboxes.launcher.service_fence() {
            1
        } else {
            self.config.spec.max_instances as usize
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name(&self) -> String {
        format!("{}/{}", self.config.app, self.config.spec.name)
    }

    fn waiting(&self) -> usize {
        self.demand.waiting.load(Ordering::Acquire)
    }

    fn notify(&self) {
        self.demand.changed.notify_waiters();
    }

    /// A lease on an instance with room for one more request, starting
    /// instances as the demand needs and waiting for one within bounds.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, ServiceError> {
        let spec = &self.config.spec;
        let concurrency = spec.concurrency as usize;
        // A request that waits for an instance to start waits as long as
        // the start may take.
        let patience = self
            .ctx
            .sandboxes
            .settings
            .limits
            .queue_timeout
            .max(spec.readiness.timeout);
        let mut deadline = tokio::time::Instant::now() + patience;
        let mut extended = false;
        // Holds the request's place in the queue; a caller that goes away
        // (the client hung up) gives it back when this future is dropped.
        let mut slot = QueueSlot {
            service: self,
            held: false,
        };
        // The common case: a ready instance has room.
        if let Some(lease) = self.try_lease(&mut self.lock(), concurrency) {
            return Ok(lease);
        }
        loop {
            let notified = self.demand.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let mut s = self.lock();
                if self.retired.load(Ordering::Acquire) {
                    slot.release(&mut s);
                    return Err(ServiceError::Retired);
                }
                if let Some(lease) = self.try_lease(&mut s, concurrency) {
                    slot.release(&mut s);
                    return Ok(lease);
                }
                if s.live() == 0 && s.backing_off() {
                    slot.release(&mut s);
                    let reason = self
                        .errors
                        .last()
                        .unwrap_or_else(|| "it keeps failing".to_owned());
                    return Err(ServiceError::Unavailable {
                        service: self.name(),
                        reason,
                    });
                }
                // Every instance is still starting, and none looks as if
                // it will: answer now, with what it printed. (It goes on
                // starting until its readiness timeout.)
                if let Some(reason) = stuck(&s) {
                    slot.release(&mut s);
                    return Err(ServiceError::Unavailable {
                        service: self.name(),
                        reason,
                    });
                }
                if !slot.held {
                    if self.waiting() >= spec.queue_depth as usize {
                        return Err(ServiceError::Throttled(self.name(), RETRY_AFTER));
                    }
                    self.demand.waiting.fetch_add(1, Ordering::SeqCst);
                    slot.held = true;
                    // A lease released since the look above saw no one
                    // waiting and woke no one: look again. (Both sides
                    // write, then read the other's count, sequentially
                    // consistent: one of them sees the other.)
                    if let Some(lease) = self.try_lease(&mut s, concurrency) {
                        slot.release(&mut s);
                        return Ok(lease);
                    }
                }
                // Enough instances starting for everyone waiting?
                let starting = s.count(Phase::Starting);
                if starting * concurrency < self.waiting()
                    && s.live() < self.max_instances()
                    && !s.backing_off()
                {
                    self.start(&mut s);
                }
                // A start held back by the backoff may go ahead when it ends.
                let wake = match s.backoff_until.filter(|_| s.backing_off()) {
                    Some(until) => deadline.min(tokio::time::Instant::from_std(until)),
                    None => deadline,
                };
                // Starting instances are looked at again for a stuck start.
                if s.count(Phase::Starting) > 0 {
                    wake.min(tokio::time::Instant::now() + STUCK_CHECK)
                } else {
                    wake
                }
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake_at) => {
                    if tokio::time::Instant::now() >= deadline {
                        let mut s = self.lock();
                        // An instance still starting: its success, or its
                        // failure with the reason, is the answer.
                        if !extended && s.count(Phase::Starting) > 0 {
                            extended = true;
                            deadline += START_MARGIN;
                            continue;
                        }
                        slot.release(&mut s);
                        return Err(ServiceError::Throttled(self.name(), RETRY_AFTER));
                    }
                }
            }
        }
    }

    /// A lease on the least busy ready instance with room, if any.
    fn try_lease(&self, s: &mut State, concurrency: usize) -> Option<Lease> {
        let instance = s
            .instances
            .iter()
            .filter(|i| i.phase() == Phase::Ready)
            .map(|i| (i.in_flight.load(Ordering::SeqCst), i))
            .filter(|(n, _)| *n < concurrency)
            .min_by_key(|(n, _)| *n)
            .map(|(_, i)| i.clone())?;
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Lease {
            demand: self.demand.clone(),
            instance,
        })
    }

    /// Starts one instance; it counts as starting at once. Called with
    /// the state locked, which `retire` takes after setting its flag, so
    /// a retired version never starts one it would not stop.
    fn start(self: &Arc<Self>, s: &mut State) {
        if self.retired.load(Ordering::Acquire) {
            return;
        }
        if !self.capacity.try_take() {
            // The application is at its cap: requests wait for a slot.
            return;
        }
        let fenced = self.ctx.sandboxes.launcher.service_fence();
        let ip = if fenced {
            self.ctx.addresses.take()
        } else {
            Ipv4Addr::LOCALHOST
        };
        let port = match (self.config.spec.port, &self.config.spec.command) {
            (Some(port), _) => port,
            (None, None) => stratus_manifest::SCF_PORT,
            (None, Some(_)) => free_port(ip).unwrap_or(0),
        };
        let reserved = self.ctx.sandboxes.reserve(Kind::SERVICE, true);
        let instance = Arc::new(ServiceInstance::new(
            reserved.id.clone(),
            SocketAddr::from((ip, port)),
        ));
        s.instances.push(instance.clone());
        let service = self.clone();
        tokio::spawn(async move {
            service
                .run_instance(instance, reserved, fenced.then_some(ip))
                .await;
            if fenced {
                service.ctx.addresses.release(ip);
            }
            service.capacity.give_back(1);
            service.notify();
        });
    }

    /// One instance's life: start, readiness, service, exit.
    async fn run_instance(
        self: &Arc<Self>,
        instance: Arc<ServiceInstance>,
        reserved: crate::sandboxed::Reserved,
        service_addr: Option<Ipv4Addr>,
    ) {
        let sandboxes = &self.ctx.sandboxes;
        let (spec, mut activation) = crate::process::service(
            &sandboxes.settings,
            sandboxes.launcher.isolation(),
            &self.config,
            instance.addr.port(),
            service_addr,
            &instance.id,
        );
        activation.egress = match sandboxes.egress.rule(&self.config.spec.network).await {
            Ok(rule) => rule,
            Err(err) => {
                sandboxes.discard(reserved);
                return self.failed(&instance, format!("cannot start: {err}"), true);
            }
        };
        let started_at = Instant::now();
        // A sandbox made ahead of demand, when there is one: only the
        // code, environment and program are left to hand over.
        let started = sandboxes.start(reserved, || spec, &activation).await;
        // Refill while this instance starts its app.
        sandboxes.prewarm.maintain();
        let started = match started {
            Ok(started) => started,
            Err(err) => return self.failed(&instance, format!("cannot start: {err}"), true),
        };
        let process = started.process;
        let _ = instance.process.set(process.clone());
        if instance.phase() != Phase::Starting {
            // Retired while it was being made.
            process.kill();
            return self.remove(&instance);
        }
        let output = Output::new(
            started.stdout,
            started.stderr,
            sandboxes.settings.limits.instance_log_rate,
        );
        let mut reading = tokio::spawn(output.read(Arc::new(Lines {
            service: self.clone(),
            instance: instance.clone(),
        })));
        let exited = process.wait(started.exited);
        tokio::pin!(exited);
        let ready = tokio::select! {
            // Not ready in time: it is still running.
            ready = readiness::wait_ready(&instance, &self.config.spec.readiness) => {
                ready.map_err(|message| (message, false))
            }
            status = &mut exited => {
                if instance.phase() != Phase::Starting {
                    return self.remove(&instance);
                }
                let status = crate::launch::describe(status);
                Err((format!("exited with {status} before it was ready"), true))
            }
        };
        if let Err((message, gone)) = ready {
            if !gone {
                process.kill();
                exited.await;
            }
            if instance.phase() != Phase::Starting {
                return self.remove(&instance);
            }
            // Its last words are part of the reason: the rest of its output
            // arrives as the pipes close.
            let _ = tokio::time::timeout(OUTPUT_SETTLES, &mut reading).await;
            return self.failed(&instance, instance.with_output(message), true);
        }
        instance.mark_ready();
        let ready = {
            let _s = self.lock();
            instance.set_phase(Phase::Ready)
        };
        if ready {
            tracing::debug!(service = %self.name(), instance = %instance.id, ms = started_at.elapsed().as_millis() as u64, "service instance ready");
            self.notify();
        } else if instance.phase() == Phase::Draining {
            // Retired while it started: nobody was given it. (Once it is
            // ready, a drain stops it, after its leases.)
            process.terminate();
        }
        // Only an instance that stays up ends the backoff: one that dies
        // soon after it became ready counts as a failed start.
        let status = tokio::select! {
            status = &mut exited => status,
            () = tokio::time::sleep(STABLE_AFTER) => {
                self.lock().failures = 0;
                exited.await
            }
        };
        if instance.phase() == Phase::Draining {
            self.remove(&instance);
            return;
        }
        let early = instance
            .ready_at()
            .is_some_and(|t| t.elapsed() < STABLE_AFTER);
        let status = crate::launch::describe(status);
        self.failed(&instance, format!("exited with {status}"), early);
    }

    /// An instance failed to start or died: it goes, the error is kept,
    /// and repeated failures back off the next start.
    fn failed(&self, instance: &Arc<ServiceInstance>, message: String, counts: bool) {
        instance.set_phase(Phase::Dead);
        tracing::warn!(service = %self.name(), instance = %instance.id, "{message}");
        self.emit(
            &instance.id,
            LogStream::Platform,
            format!("instance {}: {message}", instance.id),
        );
        {
            let mut s = self.lock();
            s.instances.retain(|i| !Arc::ptr_eq(i, instance));
            // Every instance that failed, whether or not it became ready,
            // is one the service must replace.
            s.restarts += 1;
            // Starts that fail together (a burst, min_instances) count once.
            if counts && !s.backing_off() {
                s.failures += 1;
                let pause = FIRST_BACKOFF
                    .saturating_mul(1 << s.failures.saturating_sub(1).min(10))
                    .min(MAX_BACKOFF);
                s.backoff_until = Some(Instant::now() + pause);
            }
        }
        self.errors.push(&instance.id, None, message);
        self.notify();
    }

    fn remove(&self, instance: &Arc<ServiceInstance>) {
        instance.set_phase(Phase::Dead);
        self.lock().instances.retain(|i| !Arc::ptr_eq(i, instance));
        self.notify();
    }

    /// Stops taking requests on `instance`, lets those in flight finish
    /// (long-lived ones get `drain_grace`, then their close), then stops it.
    fn drain(
        self: &Arc<Self>,
        instance: &Arc<ServiceInstance>,
        only_if_idle: bool,
        grace: Duration,
    ) {
        {
            // Under the lock that `acquire` leases under: no request can
            // be leased this instance once it drains.
            let _s = self.lock();
            if only_if_idle && instance.in_flight() > 0 {
                return;
            }
            instance.set_drain_until(Instant::now() + grace);
            if !instance.set_phase(Phase::Draining) {
                return;
            }
        }
        let service = self.clone();
        let instance = instance.clone();
        tokio::spawn(async move {
            let limit = grace + CLOSE_WAIT;
            let deadline = Instant::now() + limit;
            while instance.in_flight() > 0 && Instant::now() < deadline {
                let notified = service.demand.changed.notified();
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            }
            instance.terminate();
            let mut phase = instance.subscribe();
            let gone = phase.wait_for(|p| *p == Phase::Dead);
            if tokio::time::timeout(STOP_GRACE, gone).await.is_err() {
                instance.kill();
            }
        });
        self.notify();
    }

    /// Takes the version out of service: waiting requests are routed
    /// again, every instance drains, long-lived requests for `grace` at
    /// most (the service's `drain_grace` when `None`).
    pub(crate) fn retire(self: &Arc<Self>, grace: Option<Duration>) {
        let grace = grace.map_or(self.config.spec.drain_grace, |g| {
            g.min(self.config.spec.drain_grace)
        });
        self.retired.store(true, Ordering::Release);
        let instances = self.lock().instances.clone();
        for instance in &instances {
            if instance.phase() == Phase::Starting {
                // Nobody waits for it any more.
                instance.set_phase(Phase::Draining);
                instance.kill();
            } else {
                self.drain(instance, false, grace);
            }
        }
        self.notify();
    }

    /// Keeps `min_instances` running and retires instances idle past
    /// `idle_timeout`. Called every second.
    pub(crate) fn maintain(self: &Arc<Self>) {
        if self.retired.load(Ordering::Acquire) {
            return;
        }
        let spec = &self.config.spec;
        let mut s = self.lock();
        let mut live = s.live();
        let min = (spec.min_instances as usize).min(self.max_instances());
        while live < min && !s.backing_off() {
            self.start(&mut s);
            live += 1;
        }
        let idle: Vec<_> = s
            .instances
            .iter()
            .filter(|i| {
                i.phase() == Phase::Ready && i.in_flight() == 0 && i.idle_for() >= spec.idle_timeout
            })
            .cloned()
            .collect();
        drop(s);
        for instance in idle {
            if live <= spec.min_instances as usize {
                break;
            }
            self.drain(&instance, true, spec.drain_grace);
            live -= 1;
        }
    }

    pub fn status(&self) -> ServiceStatus {
        let s = self.lock();
        ServiceStatus {
            name: self.config.spec.name.clone(),
            version: self.config.version,
            ready: s.count(Phase::Ready),
            starting: s.count(Phase::Starting),
            draining: s.count(Phase::Draining),
            in_flight: s.instances.iter().map(|i| i.in_flight()).sum(),
            waiting: self.waiting(),
            restarts: s.restarts,
            min_instances: self.config.spec.min_instances,
            max_instances: self.config.spec.max_instances,
            backoff_ms: s
                .backoff_until
                .and_then(|t| t.checked_duration_since(Instant::now()))
                .map(|d| d.as_millis() as u64),
            errors: self.errors.list(),
            instance_list: s
                .instances
                .iter()
                .map(|i| InstanceStatus {
                    id: i.id.clone(),
                    phase: i.phase(),
                    addr: i.addr,
                    in_flight: i.in_flight(),
                })
                .collect(),
        }
    }

    pub(crate) fn has_instances(&self) -> bool {
        !self.lock().instances.is_empty()
    }

    /// Kills every instance at once (server shutdown).
    pub(crate) fn kill_all(&self) {
        for instance in self.lock().instances.iter() {
            instance.kill();
        }
    }

    /// Writes a record to the service's log.
    pub fn emit(&self, instance: &str, stream: LogStream, message: String) {
        self.log(instance, stream, None, message, None);
    }

    pub fn log(
        &self,
        instance: &str,
        stream: LogStream,
        request_id: Option<String>,
        message: String,
        fields: Option<serde_json::Value>,
    ) {
        self.ctx.sandboxes.logs.append(LogRecord {
            ts_ms: crate::clock::now_ms(),
            app: self.config.app.clone(),
            function: self.config.spec.name.clone(),
            version: self.config.version,
            instance: instance.to_owned(),
            request_id,
            stream,
            message,
            fields,
        });
    }
}

/// An instance's output lines, into the service's log; its last ones are
/// kept for a failure's reason.
struct Lines {
    service: Arc<Service>,
    instance: Arc<ServiceInstance>,
}

impl LineSink for Lines {
    fn line(&self, stream: LogStream, line: String) {
        if self.instance.phase() == Phase::Starting {
            self.instance.starting_line(&line);
        }
        self.service.emit(&self.instance.id, stream, line);
    }
}

/// A port free on `ip` now, for an instance to listen on.
fn free_port(ip: Ipv4Addr) -> Option<u16> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()
}
