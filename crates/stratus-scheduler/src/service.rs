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

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use stratus_manifest::ServiceSpec;
use stratus_store::LogRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, watch};

use crate::prewarm::Prewarm;
use crate::process::Kind;
use crate::scheduler::Ctx;

/// Errors kept for `stratus status`.
const MAX_ERRORS: usize = 10;
/// The first pause after a failed start; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// An instance that dies sooner than this after it became ready counts
/// as a failed start for the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a stopping instance has after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the closing handshake of a drained WebSocket may take.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Longest log line kept as one record.
const MAX_LINE: usize = 64 * 1024;

/// Everything needed to run one service of one application version.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub app: String,
    pub version: u32,
    pub spec: ServiceSpec,
    /// The unpacked code package, read-only.
    pub code_dir: PathBuf,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Ready,
    Draining,
    Dead,
}

/// One running process of a service.
pub struct ServiceInstance {
    pub id: String,
    /// Where the gateway reaches it.
    pub addr: SocketAddr,
    pid: AtomicU32,
    phase: watch::Sender<Phase>,
    in_flight: AtomicUsize,
    last_used: Mutex<Instant>,
    ready_at: Mutex<Option<Instant>>,
    /// Once draining: when long-lived requests on it must end.
    drain_until: Mutex<Option<Instant>>,
}

impl ServiceInstance {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    fn set_phase(&self, next: Phase) -> bool {
        self.phase.send_if_modified(|phase| {
            // Dead is final; Draining only gives way to Dead.
            let allowed = match (*phase, next) {
                (Phase::Dead, _) => false,
                (Phase::Draining, p) => p == Phase::Dead,
                (current, p) => current != p,
            };
            if allowed {
                *phase = next;
            }
            allowed
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

/// An error of a function or service, as `stratus status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    pub ts_ms: i64,
    pub instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub message: String,
}

/// The last few errors, oldest first.
#[derive(Debug, Default)]
pub(crate) struct RecentErrors(Mutex<VecDeque<RecentError>>);

impl RecentErrors {
    pub fn push(&self, instance: &str, request_id: Option<&str>, message: String) {
        let mut errors = self.0.lock().unwrap_or_else(|p| p.into_inner());
        errors.push_back(RecentError {
            ts_ms: crate::now_ms(),
            instance: instance.to_owned(),
            request_id: request_id.map(str::to_owned),
            message,
        });
        while errors.len() > MAX_ERRORS {
            errors.pop_front();
        }
    }

    pub fn list(&self) -> Vec<RecentError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn last(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .back()
            .map(|e| e.message.clone())
    }
}

/// A service's state for `stratus status`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub version: u32,
    pub ready: usize,
    pub starting: usize,
    pub draining: usize,
    pub in_flight: usize,
    pub waiting: usize,
    pub restarts: u32,
    pub min_instances: u32,
    pub max_instances: u32,
    /// Milliseconds until the next start is allowed, when backing off.
    pub backoff_ms: Option<u64>,
    pub errors: Vec<RecentError>,
    pub instance_list: Vec<InstanceStatus>,
}

/// One instance of a service, for `stratus status`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub phase: Phase,
    /// Where the gateway reaches it.
    pub addr: SocketAddr,
    pub in_flight: usize,
}

/// One version of one service.
pub struct Service {
    ctx: Arc<Ctx>,
    pub config: Arc<ServiceConfig>,
    state: Mutex<State>,
    /// Capacity changed: an instance became ready or died, a lease ended.
    changed: Notify,
    /// Requests waiting for capacity; changed with the state locked.
    waiting: AtomicUsize,
    errors: RecentErrors,
    retired: AtomicBool,
    /// Where service instances of this server get their addresses.
    addresses: Arc<Addresses>,
    /// Instances of the whole application, functions' too, for its cap.
    app_instances: Arc<AtomicU32>,
}

/// The addresses of live service instances: two never share one, also
/// once the counter has gone round the network.
#[derive(Default)]
pub(crate) struct Addresses {
    next: AtomicU32,
    taken: Mutex<std::collections::HashSet<Ipv4Addr>>,
}

impl Addresses {
    fn take(&self) -> Ipv4Addr {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let ip = stratus_sandbox::service_addr(self.next.fetch_add(1, Ordering::Relaxed));
            if taken.insert(ip) {
                return ip;
            }
        }
    }

    fn release(&self, ip: Ipv4Addr) {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
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
            self.service.waiting.fetch_sub(1, Ordering::AcqRel);
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

/// A request's hold on one instance; dropping it frees the slot.
pub struct Lease {
    service: Arc<Service>,
    instance: Arc<ServiceInstance>,
}

impl Lease {
    pub fn addr(&self) -> SocketAddr {
        self.instance.addr
    }

    pub fn instance_id(&self) -> &str {
        &self.instance.id
    }

    /// Completes when long-lived requests on the instance must end: its
    /// drain began and the grace it was given is over (or it died).
    pub fn ending(&self) -> impl Future<Output = ()> + Send + 'static {
        let instance = self.instance.clone();
        async move {
            let mut rx = instance.phase.subscribe();
            let phase = rx
                .wait_for(|p| matches!(p, Phase::Draining | Phase::Dead))
                .await
                .map(|p| *p);
            if phase.is_ok_and(|p| p == Phase::Draining) {
                let until = *instance
                    .drain_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if let Some(until) = until {
                    tokio::time::sleep_until(until.into()).await;
                }
            }
        }
    }

    /// Completes when the instance has died.
    pub fn died(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.instance.phase.subscribe();
        async move {
            let _ = rx.wait_for(|p| *p == Phase::Dead).await;
        }
    }

    pub fn is_dead(&self) -> bool {
        self.instance.phase() == Phase::Dead
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self
            .instance
            .last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.instance.in_flight.fetch_sub(1, Ordering::SeqCst);
        // Waking is for requests in the queue and for a drain waiting for
        // the instance to be idle; most releases have neither.
        if self.service.waiting.load(Ordering::SeqCst) > 0
            || self.instance.phase() == Phase::Draining
        {
            self.service.changed.notify_waiters();
        }
    }
}

impl Service {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        config: ServiceConfig,
        addresses: Arc<Addresses>,
        app_instances: Arc<AtomicU32>,
    ) -> Service {
        Service {
            ctx,
            config: Arc::new(config),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            waiting: AtomicUsize::new(0),
            errors: RecentErrors::default(),
            retired: AtomicBool::new(false),
            addresses,
            app_instances,
        }
    }

    /// `max_instances`, or 1 where instances share one address and the
    /// service's port is fixed: a second could not bind it, and would find
    /// the first listening there instead.
    fn max_instances(&self) -> usize {
        let fixed_port = self.config.spec.port.is_some() || self.config.spec.command.is_none();
        if fixed_port && !self.ctx.launcher.service_fence() {
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

    /// A lease on an instance with room for one more request, starting
    /// instances as the demand needs and waiting for one within bounds.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, ServiceError> {
        let spec = &self.config.spec;
        let concurrency = spec.concurrency as usize;
        // A request that waits for an instance to start waits as long as
        // the start may take.
        let patience = self.ctx.settings.queue_timeout.max(spec.readiness.timeout);
        let deadline = tokio::time::Instant::now() + patience;
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
            let notified = self.changed.notified();
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
                if !slot.held {
                    if self.waiting.load(Ordering::Acquire) >= spec.queue_depth as usize {
                        return Err(ServiceError::Throttled(self.name(), Duration::from_secs(1)));
                    }
                    self.waiting.fetch_add(1, Ordering::SeqCst);
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
                if starting * concurrency < self.waiting.load(Ordering::Acquire)
                    && s.live() < self.max_instances()
                    && !s.backing_off()
                {
                    self.start(&mut s);
                }
                // A start held back by the backoff may go ahead when it ends.
                match s.backoff_until.filter(|_| s.backing_off()) {
                    Some(until) => deadline.min(tokio::time::Instant::from_std(until)),
                    None => deadline,
                }
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake_at) => {
                    if tokio::time::Instant::now() >= deadline {
                        slot.release(&mut self.lock());
                        return Err(ServiceError::Throttled(self.name(), Duration::from_secs(1)));
                    }
                }
            }
        }
    }

    /// A lease on the least busy ready instance with room, if any.
    fn try_lease(self: &Arc<Self>, s: &mut State, concurrency: usize) -> Option<Lease> {
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
            service: self.clone(),
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
        let cap = self.ctx.settings.app_max_instances;
        let taken = self
            .app_instances
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            });
        if taken.is_err() {
            // The application is at its cap: requests wait for a slot.
            return;
        }
        let fenced = self.ctx.launcher.service_fence();
        let ip = if fenced {
            self.addresses.take()
        } else {
            Ipv4Addr::LOCALHOST
        };
        let port = match (self.config.spec.port, &self.config.spec.command) {
            (Some(port), _) => port,
            (None, None) => stratus_manifest::SCF_PORT,
            (None, Some(_)) => free_port(ip).unwrap_or(0),
        };
        let instance = Arc::new(ServiceInstance {
            id: crate::instance::new_id(),
            addr: SocketAddr::from((ip, port)),
            pid: AtomicU32::new(0),
            phase: watch::channel(Phase::Starting).0,
            in_flight: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
            ready_at: Mutex::new(None),
            drain_until: Mutex::new(None),
        });
        s.instances.push(instance.clone());
        let service = self.clone();
        tokio::spawn(async move {
            let addresses = service.addresses.clone();
            service
                .clone()
                .run_instance(instance, fenced.then_some(ip), port)
                .await;
            if fenced {
                addresses.release(ip);
            }
            service.app_instances.fetch_sub(1, Ordering::AcqRel);
            service.changed.notify_waiters();
        });
    }

    async fn run_instance(
        self: Arc<Self>,
        instance: Arc<ServiceInstance>,
        service_addr: Option<Ipv4Addr>,
        port: u16,
    ) {
        let config = &self.config;
        let (spec, activation) = crate::process::service(
            &self.ctx.settings,
            self.ctx.launcher.isolation(),
            config,
            port,
            service_addr,
            &instance.id,
        );
        let started = Instant::now();
        // A sandbox made ahead of demand, when there is one: only the
        // code, environment and program are left to hand over.
        let spawned = match self.ctx.prewarm.take(Kind::SERVICE) {
            Some(prestarted) => {
                let pid = prestarted.spawned.pid;
                match self.ctx.launcher.activate(pid, &activation).await {
                    Ok(()) => Ok(prestarted.spawned),
                    Err(err) => {
                        tracing::warn!(error = %err, "a prestarted sandbox could not be activated");
                        self.spawn_own(&spec, &activation).await
                    }
                }
            }
            None => self.spawn_own(&spec, &activation).await,
        };
        // Refill while this instance starts its app.
        Prewarm::maintain(&self.ctx);
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(err) => return self.failed(&instance, format!("cannot start: {err}"), true),
        };
        let pid = spawned.pid;
        instance.pid.store(pid, Ordering::Relaxed);
        if instance.phase() != Phase::Starting {
            // Retired while it was being made.
            stratus_sandbox::kill_group(pid);
            return self.remove(&instance);
        }
        tokio::spawn(read_output(
            self.clone(),
            instance.id.clone(),
            "stdout",
            spawned.stdout,
        ));
        tokio::spawn(read_output(
            self.clone(),
            instance.id.clone(),
            "stderr",
            spawned.stderr,
        ));
        let exited = spawned.exited;
        tokio::pin!(exited);
        let ready = tokio::select! {
            ready = self.wait_ready(&instance) => ready,
            status = &mut exited => {
                let status = status.map_or_else(|_| "an unknown status".to_owned(), |s| s.to_string());
                stratus_sandbox::kill_group(pid);
                instance.pid.store(0, Ordering::Relaxed);
                if instance.phase() != Phase::Starting {
                    return self.remove(&instance);
                }
                return self.failed(&instance, format!("exited with {status} before it was ready"), true);
            }
        };
        if let Err(message) = ready {
            stratus_sandbox::kill_group(pid);
            let _ = exited.await;
            instance.pid.store(0, Ordering::Relaxed);
            if instance.phase() != Phase::Starting {
                return self.remove(&instance);
            }
            return self.failed(&instance, message, true);
        }
        *instance.ready_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        {
            let _s = self.lock();
            if instance.set_phase(Phase::Ready) {
                tracing::debug!(service = %self.name(), instance = %instance.id, ms = started.elapsed().as_millis() as u64, "service instance ready");
            }
        }
        self.changed.notify_waiters();
        if instance.phase() == Phase::Draining {
            // Retired while it started: nobody will use it.
            stratus_sandbox::terminate_group(pid);
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
        stratus_sandbox::kill_group(pid);
        instance.pid.store(0, Ordering::Relaxed);
        let was_draining = instance.phase() == Phase::Draining;
        if was_draining {
            self.remove(&instance);
            return;
        }
        let status = status.map_or_else(|_| "an unknown status".to_owned(), |s| s.to_string());
        let early = instance
            .ready_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() < STABLE_AFTER);
        self.failed(&instance, format!("exited with {status}"), early);
    }

    /// Makes a sandbox for this instance alone and starts its program.
    async fn spawn_own(
        &self,
        spec: &stratus_sandbox::ProcessSpec,
        activation: &stratus_sandbox::Activation,
    ) -> Result<stratus_sandbox::Spawned, stratus_sandbox::SandboxError> {
        let spawned = self.ctx.launcher.spawn(spec).await?;
        if let Err(err) = self.ctx.launcher.activate(spawned.pid, activation).await {
            stratus_sandbox::kill_group(spawned.pid);
            return Err(err);
        }
        Ok(spawned)
    }

    /// Polls the instance until it is ready, or says why it is not.
    async fn wait_ready(&self, instance: &ServiceInstance) -> Result<(), String> {
        let readiness = &self.config.spec.readiness;
        let deadline = Instant::now() + readiness.timeout;
        // Apps start in milliseconds: look often at first, then less.
        let mut pause = Duration::from_millis(1);
        loop {
            if instance.phase() != Phase::Starting {
                return Err("stopped before it was ready".to_owned());
            }
            let own = match instance.addr {
                // With no listener at its own address, a connection there
                // would reach any wildcard listener on the port, another
                // tenant's included: only the instance can bind its address.
                SocketAddr::V4(v4) if *v4.ip() != Ipv4Addr::LOCALHOST => {
                    stratus_sandbox::service_listening(v4)
                }
                _ => true,
            };
            let check = match &readiness.path {
                _ if !own => Err(format!("nothing listens on {}", instance.addr)),
                // Its own address is listening: connections are accepted.
                None if instance.addr.ip() != std::net::IpAddr::V4(Ipv4Addr::LOCALHOST) => Ok(()),
                None => tokio::net::TcpStream::connect(instance.addr)
                    .await
                    .map(drop)
                    .map_err(|e| format!("port {}: {e}", instance.addr.port())),
                Some(path) => probe(instance.addr, path).await,
            };
            match check {
                Ok(()) => return Ok(()),
                Err(last) if Instant::now() >= deadline => {
                    return Err(format!(
                        "not ready within {}s: {last}",
                        readiness.timeout.as_secs()
                    ));
                }
                Err(_) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause + Duration::from_millis(1)).min(Duration::from_millis(20));
        }
    }

    /// An instance failed to start or died: it goes, the error is kept,
    /// and repeated failures back off the next start.
    fn failed(&self, instance: &Arc<ServiceInstance>, message: String, counts: bool) {
        let was_ready = instance
            .ready_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        instance.set_phase(Phase::Dead);
        tracing::warn!(service = %self.name(), instance = %instance.id, "{message}");
        self.emit(
            &instance.id,
            "platform",
            format!("instance {}: {message}", instance.id),
        );
        {
            let mut s = self.lock();
            s.instances.retain(|i| !Arc::ptr_eq(i, instance));
            if was_ready {
                s.restarts += 1;
            }
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
        self.changed.notify_waiters();
    }

    fn remove(&self, instance: &Arc<ServiceInstance>) {
        instance.set_phase(Phase::Dead);
        self.lock().instances.retain(|i| !Arc::ptr_eq(i, instance));
        self.changed.notify_waiters();
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
            if only_if_idle && instance.in_flight.load(Ordering::Acquire) > 0 {
                return;
            }
            *instance
                .drain_until
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + grace);
            if !instance.set_phase(Phase::Draining) {
                return;
            }
        }
        let service = self.clone();
        let instance = instance.clone();
        tokio::spawn(async move {
            let limit = grace + CLOSE_WAIT;
            let deadline = Instant::now() + limit;
            while instance.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                let notified = service.changed.notified();
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
            }
            let pid = instance.pid.load(Ordering::Relaxed);
            stratus_sandbox::terminate_group(pid);
            let mut phase = instance.phase.subscribe();
            let gone = phase.wait_for(|p| *p == Phase::Dead);
            if tokio::time::timeout(STOP_GRACE, gone).await.is_err() {
                stratus_sandbox::kill_group(instance.pid.load(Ordering::Relaxed));
            }
        });
        self.changed.notify_waiters();
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
                stratus_sandbox::kill_group(instance.pid.load(Ordering::Relaxed));
            } else {
                self.drain(instance, false, grace);
            }
        }
        self.changed.notify_waiters();
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
                i.phase() == Phase::Ready
                    && i.in_flight.load(Ordering::Acquire) == 0
                    && i.last_used
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .elapsed()
                        >= spec.idle_timeout
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
            in_flight: s
                .instances
                .iter()
                .map(|i| i.in_flight.load(Ordering::Acquire))
                .sum(),
            waiting: self.waiting.load(Ordering::Acquire),
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
                    in_flight: i.in_flight.load(Ordering::Acquire),
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
            stratus_sandbox::kill_group(instance.pid.load(Ordering::Relaxed));
        }
    }

    /// Writes a record to the service's log.
    pub fn emit(&self, instance: &str, stream: &str, message: String) {
        self.log(instance, stream, None, message, None);
    }

    pub fn log(
        &self,
        instance: &str,
        stream: &str,
        request_id: Option<String>,
        message: String,
        fields: Option<serde_json::Value>,
    ) {
        self.ctx.logs.send(LogRecord {
            ts_ms: crate::now_ms(),
            app: self.config.app.clone(),
            function: self.config.spec.name.clone(),
            version: self.config.version,
            instance: instance.to_owned(),
            request_id,
            stream: stream.to_owned(),
            message,
            fields,
        });
    }
}

/// A port free on `ip` now, for an instance to listen on.
fn free_port(ip: Ipv4Addr) -> Option<u16> {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()
}

/// One readiness request: ready on a 2xx or 3xx status.
async fn probe(addr: SocketAddr, path: &str) -> Result<(), String> {
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("port {}: {e}", addr.port()))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: stratus-readiness\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("readiness {path}: {e}"))?;
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head)
            .await
            .map_err(|e| format!("readiness {path}: {e}"))?;
        match std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse::<u16>().ok())
        {
            Some(status) if (200..400).contains(&status) => Ok(()),
            Some(status) => Err(format!("readiness {path} answered {status}")),
            None => Err(format!("readiness {path}: not an HTTP answer")),
        }
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .unwrap_or_else(|_| Err(format!("readiness {path}: no answer within 2s")))
}

/// Copies an instance's output into the log, one record per line.
async fn read_output(
    service: Arc<Service>,
    instance: String,
    stream: &'static str,
    mut pipe: pipe::Receiver,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            if !buf.is_empty() {
                service.emit(
                    &instance,
                    stream,
                    String::from_utf8_lossy(&buf).into_owned(),
                );
            }
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + pos];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            service.emit(
                &instance,
                stream,
                String::from_utf8_lossy(line).into_owned(),
            );
            start += pos + 1;
        }
        while buf.len() - start > MAX_LINE {
            let line = &buf[start..start + MAX_LINE];
            service.emit(
                &instance,
                stream,
                String::from_utf8_lossy(line).into_owned(),
            );
            start += MAX_LINE;
        }
        buf.drain(..start);
    }
}
