//! The scheduler: the snapshot of deployed functions and services, and
//! the way in for invocations, deploys and shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use stratus_logs::Logs;
use tokio::sync::Notify;

use crate::capacity::Capacities;
use crate::config::{FunctionConfig, ServiceConfig};
use crate::function::{self, Pool};
use crate::invocation::{Invocation, InvokeError, InvokeOutcome};
use crate::launch::Launch;
use crate::process::Kind;
use crate::sandboxed::Sandboxes;
use crate::service::{self, CLOSE_WAIT, Service};
use crate::settings::Settings;

/// How often pools, services and the prestart pools are looked after.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);
/// How long shutdown waits for killed instances to exit.
const EXIT_WAIT: Duration = Duration::from_secs(5);

type Functions = HashMap<String, HashMap<String, Arc<Pool>>>;
type Services = HashMap<String, HashMap<String, Arc<Service>>>;

/// Owns every function's pool and every service. Deploys swap in a new
/// snapshot; invocations read it without waiting on anything else.
pub struct Scheduler {
    sandboxes: Arc<Sandboxes>,
    functions_ctx: Arc<function::Context>,
    services_ctx: Arc<service::Context>,
    capacities: Capacities,
    functions: RwLock<Arc<Functions>>,
    services: RwLock<Arc<Services>>,
    in_flight: Arc<InFlight>,
    shutting_down: AtomicBool,
}

impl Scheduler {
    pub fn new(
        settings: Settings,
        launcher: Arc<dyn Launch>,
        logs: Arc<dyn Logs>,
    ) -> Arc<Scheduler> {
        let capacities = Capacities::new(settings.limits.app_max_instances);
        let sandboxes = Sandboxes::new(settings, launcher, logs);
        let scheduler = Arc::new(Scheduler {
            functions_ctx: function::Context::new(sandboxes.clone()),
            services_ctx: service::Context::new(sandboxes.clone()),
            sandboxes,
            capacities,
            functions: RwLock::new(Arc::new(HashMap::new())),
            services: RwLock::new(Arc::new(HashMap::new())),
            in_flight: Arc::new(InFlight::default()),
            shutting_down: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&scheduler);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTAIN_EVERY);
            loop {
                tick.tick().await;
                let Some(scheduler) = weak.upgrade() else {
                    break;
                };
                scheduler.maintain();
            }
        });
        scheduler
    }

    /// Shares each application's instance cap (`app_max_instances`) among
    /// `nodes` live nodes that serve the same applications: this node runs
    /// at most its part, rounded up. The hot path reads the share from
    /// memory; whoever counts the nodes calls this as they come and go.
    pub fn share_app_cap(&self, nodes: u32) {
        self.capacities.share_among(nodes);
    }

    /// Most instances of one application on this node: its share.
    pub fn app_cap_share(&self) -> u32 {
        self.capacities.share()
    }

    /// Stops idle instances past their keep-alive, keeps `min_instances`
    /// and refills the prestart pools.
    fn maintain(&self) {
        let keep_alive = self.sandboxes.settings.limits.keep_alive;
        for pool in self.snapshot().values().flat_map(|fns| fns.values()) {
            pool.maintain(keep_alive);
        }
        if !self.is_shutting_down() {
            for service in self.services().values().flat_map(|s| s.values()) {
                service.maintain();
            }
        }
        self.sandboxes.prewarm.maintain();
    }

    /// The Lambda-style ARN of `app`/`function`.
    pub fn function_arn(&self, app: &str, function: &str) -> String {
        self.sandboxes
            .settings
            .function_arn(&format!("{app}.{function}"))
    }

    /// Where invocations and proxied requests are counted and timed.
    pub fn metrics(&self) -> &stratus_metrics::Metrics {
        &self.sandboxes.settings.metrics
    }

    /// Where spans go.
    pub fn tracer(&self) -> &stratus_trace::Tracer {
        &self.sandboxes.settings.tracer
    }

    /// Runs one invocation on `config`, a version of a function that is
    /// not the one serving (a replay on an earlier version): on a pool
    /// of its own, within the app's instance cap, retired once it has
    /// answered.
    pub async fn invoke_detached(
        &self,
        config: FunctionConfig,
        invocation: Invocation,
    ) -> Result<InvokeOutcome, InvokeError> {
        let capacity = self.capacities.of(&config.app);
        let pool = Pool::new(self.functions_ctx.clone(), config, capacity);
        let outcome = pool.invoke(invocation, ()).await;
        pool.retire();
        outcome
    }

    /// Sandboxes made ahead of demand, ready for cold starts.
    pub fn prestarted(&self) -> usize {
        self.sandboxes.prewarm.ready_total()
    }

    /// The apps with live functions or services here, by name.
    pub fn apps(&self) -> Vec<String> {
        let mut apps: Vec<String> = self
            .snapshot()
            .keys()
            .chain(self.services().keys())
            .cloned()
            .collect();
        apps.sort_unstable();
        apps.dedup();
        apps
    }

    /// Whether the scheduler refuses new work.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The largest result a function may return.
    pub fn max_response_bytes(&self) -> usize {
        self.sandboxes.settings.limits.max_response_bytes
    }

    fn snapshot(&self) -> Arc<Functions> {
        self.functions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn services(&self) -> Arc<Services> {
        self.services
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The live version of service `name` of `app`.
    pub fn service(&self, app: &str, name: &str) -> Option<Arc<Service>> {
        self.services().get(app)?.get(name).cloned()
    }

    /// The live services of `app`, by name.
    pub fn app_services(&self, app: &str) -> Vec<Arc<Service>> {
        let mut services: Vec<_> = self
            .services()
            .get(app)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        services.sort_by(|a: &Arc<Service>, b| a.config.spec.name.cmp(&b.config.spec.name));
        services
    }

    /// Makes `functions` and `services` the live version of `app`; the
    /// pools of the version it replaces finish their invocations in
    /// flight, then stop, and its services drain.
    pub fn publish_app(
        &self,
        app: &str,
        functions: Vec<FunctionConfig>,
        services: Vec<ServiceConfig>,
    ) {
        let capacity = self.capacities.of(app);
        let services: HashMap<String, Arc<Service>> = services
            .into_iter()
            .map(|config| {
                (
                    config.spec.name.clone(),
                    Arc::new(Service::new(
                        self.services_ctx.clone(),
                        config,
                        capacity.clone(),
                    )),
                )
            })
            .collect();
        for service in services.values() {
            service.maintain();
        }
        self.swap_services(app, Some(services));
        let pools: HashMap<String, Arc<Pool>> = functions
            .into_iter()
            .map(|config| {
                (
                    config.spec.name.clone(),
                    Pool::new(self.functions_ctx.clone(), config, capacity.clone()),
                )
            })
            .collect();
        self.swap_functions(app, Some(pools));
    }

    /// Takes `app` out of service; invocations in flight finish.
    pub fn remove_app(&self, app: &str) {
        self.swap_functions(app, None);
        self.swap_services(app, None);
    }

    /// Tells the pools of processes made ahead of demand which kinds the
    /// deployed functions and services need, and refills them.
    fn refresh_wanted(&self) {
        let isolation = self.sandboxes.launcher.isolation();
        let mut kinds: HashSet<Kind> = self
            .snapshot()
            .values()
            .flat_map(|fns| fns.values())
            .map(|pool| Kind::of(&self.sandboxes.settings, isolation, &pool.config))
            .collect();
        if self.services().values().any(|s| !s.is_empty()) {
            kinds.insert(Kind::SERVICE);
        }
        self.sandboxes.prewarm.set_wanted(&kinds);
        self.sandboxes.prewarm.maintain();
    }

    fn swap_services(&self, app: &str, services: Option<HashMap<String, Arc<Service>>>) {
        let old = swap(&self.services, app, services);
        self.refresh_wanted();
        for service in old.into_iter().flat_map(|s| s.into_values()) {
            service.retire(None);
        }
    }

    /// Publishes a snapshot with `app`'s pools replaced (or removed), then
    /// retires the pools it replaced.
    fn swap_functions(&self, app: &str, pools: Option<HashMap<String, Arc<Pool>>>) {
        let old = swap(&self.functions, app, pools);
        self.refresh_wanted();
        for pool in old.into_iter().flat_map(|fns| fns.into_values()) {
            pool.retire();
        }
    }

    pub fn pool(&self, app: &str, function: &str) -> Option<Arc<Pool>> {
        self.snapshot().get(app)?.get(function).cloned()
    }

    /// The pools of `app`, by function name.
    pub fn app_pools(&self, app: &str) -> Vec<Arc<Pool>> {
        let mut pools: Vec<_> = self
            .snapshot()
            .get(app)
            .map(|fns| fns.values().cloned().collect())
            .unwrap_or_default();
        pools.sort_by(|a: &Arc<Pool>, b| a.config.spec.name.cmp(&b.config.spec.name));
        pools
    }

    pub async fn invoke(
        &self,
        app: &str,
        function: &str,
        invocation: Invocation,
    ) -> Result<InvokeOutcome, InvokeError> {
        if self.is_shutting_down() {
            return Err(InvokeError::ShuttingDown);
        }
        let pool = self
            .pool(app, function)
            .ok_or_else(|| InvokeError::NoSuchFunction {
                app: app.to_owned(),
                function: function.to_owned(),
            })?;
        let guard = self.in_flight.enter();
        // The invocation runs to completion in its own task even if the
        // caller goes away, so its instance always returns to the pool.
        let task = tokio::spawn(async move { pool.invoke(invocation, guard).await });
        match task.await {
            Ok(outcome) => outcome,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }

    /// Refuses new invocations, lets those in flight finish for up to
    /// `grace`, then stops every instance and waits for them to exit.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        self.sandboxes.prewarm.stop();
        let deadline = Instant::now() + grace;
        // Services drain alongside: requests in flight finish, then each
        // instance gets SIGTERM.
        let services: Vec<_> = self
            .services()
            .values()
            .flat_map(|s| s.values().cloned())
            .collect();
        // WebSockets get their close with time left for the handshake.
        let websocket_grace = grace.saturating_sub(CLOSE_WAIT);
        for service in &services {
            service.retire(Some(websocket_grace));
        }
        while (self.in_flight.count() > 0 || services.iter().any(|s| s.has_instances()))
            && Instant::now() < deadline
        {
            self.in_flight.wait(Duration::from_millis(50)).await;
        }
        for service in &services {
            service.kill_all();
        }
        self.functions_ctx.kill_all(EXIT_WAIT).await;
    }
}

/// Replaces `app`'s entry of the snapshot (or removes it) and returns
/// what was there: readers never wait on a writer and never see a
/// half-made change.
fn swap<T: Clone>(
    snapshot: &RwLock<Arc<HashMap<String, T>>>,
    app: &str,
    entry: Option<T>,
) -> Option<T> {
    let mut guard = snapshot.write().unwrap_or_else(|p| p.into_inner());
    let mut next = HashMap::clone(&guard);
    let old = match entry {
        Some(entry) => next.insert(app.to_owned(), entry),
        None => next.remove(app),
    };
    *guard = Arc::new(next);
    old
}

/// Counts invocations in flight, for shutdown.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    all_done: Notify,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.all_done.notified()).await;
    }
}

/// Counts an invocation in flight until dropped.
struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_done.notify_waiters();
        }
    }
}
