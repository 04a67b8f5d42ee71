//! The scheduler: the snapshot of deployed functions and their pools.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use stratus_runtimes::InstalledRuntimes;
use stratus_sandbox::LauncherClient;
use tokio::sync::Notify;

use crate::instance::Instance;
use crate::invocation::{Invocation, InvokeError, InvokeOutcome};
use crate::logs::LogSender;
use crate::pool::{FunctionConfig, Pool};
use crate::prewarm::Prewarm;
use crate::process::Kind;
use crate::service::{Addresses, Service, ServiceConfig};

/// Scheduler settings; every limit here has a default in the server's flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub python: Interpreter,
    pub node: Interpreter,
    pub runtimes: InstalledRuntimes,
    pub region: String,
    /// Callers that may wait for a busy function before throttling starts.
    pub queue_depth: usize,
    /// Longest a caller waits for an instance before it is throttled.
    pub queue_timeout: Duration,
    /// Longest a runtime may take to initialise before its first event.
    pub init_timeout: Duration,
    /// Idle instances are stopped after this long without work.
    pub keep_alive: Duration,
    pub max_response_bytes: usize,
    /// Most instances of one application, all functions and versions together.
    pub app_max_instances: u32,
    /// Size of each instance's private `/tmp` under isolation, in MiB.
    pub tmp_mb: u32,
    /// Most processes of one instance, where cgroups are available.
    pub pids_max: u32,
    /// Most processes made ahead of demand per runtime and network mode;
    /// 0 makes every instance start from nothing.
    pub prestart_max: usize,
    /// Variables every instance gets before the Lambda ones (LANG, TZ, ...).
    pub base_env: Vec<(String, String)>,
    /// The server's PATH, for instances without isolation.
    pub host_path: String,
}

/// An interpreter the built-in runtimes run on.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub executable: PathBuf,
    /// Its installation directory when that lies outside the host's system
    /// directories (a pyenv or nvm install): shared read-only with sandboxes.
    pub prefix: Option<PathBuf>,
}

/// What pools and instances share.
pub(crate) struct Ctx {
    pub settings: Settings,
    pub launcher: Arc<LauncherClient>,
    pub logs: LogSender,
    pub prewarm: Prewarm,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    instances_changed: Notify,
    in_flight: AtomicUsize,
    all_done: Notify,
    app_instances: Mutex<HashMap<String, Arc<AtomicU32>>>,
}

impl Ctx {
    /// The instance count of `app`, shared by all its pools.
    pub fn app_counter(&self, app: &str) -> Arc<AtomicU32> {
        self.app_instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_owned())
            .or_default()
            .clone()
    }

    pub fn register(&self, instance: &Arc<Instance>) {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance.id.clone(), instance.clone());
    }

    pub fn unregister(&self, id: &str) {
        let removed = self
            .instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        drop(removed);
        self.instances_changed.notify_waiters();
    }

    fn live_instances(&self) -> Vec<Arc<Instance>> {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The process for `kind`, for one function with its environment or
    /// for any, made ahead of demand.
    pub fn process_spec(
        &self,
        kind: Kind,
        function: Option<(&FunctionConfig, &[(String, String)])>,
        instance_id: &str,
    ) -> stratus_sandbox::ProcessSpec {
        crate::process::spec(
            &self.settings,
            self.launcher.isolation(),
            kind,
            function,
            instance_id,
        )
    }

    pub fn function_arn(&self, config: &FunctionConfig) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.settings.region,
            config.qualified_name()
        )
    }
}

type Functions = HashMap<String, HashMap<String, Arc<Pool>>>;
type Services = HashMap<String, HashMap<String, Arc<Service>>>;

/// Owns every function's pool. Deploys swap in a new snapshot; invocations
/// read it without waiting on anything else.
pub struct Scheduler {
    ctx: Arc<Ctx>,
    functions: RwLock<Arc<Functions>>,
    services: RwLock<Arc<Services>>,
    /// Counts the addresses given to service instances.
    service_addresses: Arc<Addresses>,
    shutting_down: AtomicBool,
}

impl Scheduler {
    pub fn new(
        settings: Settings,
        launcher: Arc<LauncherClient>,
        logs: LogSender,
    ) -> Arc<Scheduler> {
        let scheduler = Arc::new(Scheduler {
            ctx: Arc::new(Ctx {
                prewarm: Prewarm::new(if launcher.prestart() {
                    settings.prestart_max
                } else {
                    0
                }),
                settings,
                launcher,
                logs,
                instances: Mutex::new(HashMap::new()),
                instances_changed: Notify::new(),
                in_flight: AtomicUsize::new(0),
                all_done: Notify::new(),
                app_instances: Mutex::new(HashMap::new()),
            }),
            functions: RwLock::new(Arc::new(HashMap::new())),
            services: RwLock::new(Arc::new(HashMap::new())),
            service_addresses: Arc::new(Addresses::default()),
            shutting_down: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&scheduler);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(scheduler) = weak.upgrade() else {
                    break;
                };
                let keep_alive = scheduler.ctx.settings.keep_alive;
                for pool in scheduler.snapshot().values().flat_map(|fns| fns.values()) {
                    pool.maintain(keep_alive);
                }
                if !scheduler.shutting_down.load(Ordering::Acquire) {
                    for service in scheduler.services().values().flat_map(|s| s.values()) {
                        service.maintain();
                    }
                }
                Prewarm::maintain(&scheduler.ctx);
            }
        });
        scheduler
    }

    /// The Lambda-style ARN of `app`/`function`.
    pub fn function_arn(&self, app: &str, function: &str) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{app}.{function}",
            self.ctx.settings.region
        )
    }

    /// Whether the scheduler refuses new work.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The largest result a function may return.
    pub fn max_response_bytes(&self) -> usize {
        self.ctx.settings.max_response_bytes
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
        let services: HashMap<String, Arc<Service>> = services
            .into_iter()
            .map(|config| {
                (
                    config.spec.name.clone(),
                    Arc::new(Service::new(
                        self.ctx.clone(),
                        config,
                        self.service_addresses.clone(),
                        self.ctx.app_counter(app),
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
                    Arc::new(Pool::new(
                        self.ctx.clone(),
                        config,
                        self.ctx.app_counter(app),
                    )),
                )
            })
            .collect();
        self.swap_app(app, Some(pools));
    }

    /// Takes `app` out of service; invocations in flight finish.
    pub fn remove_app(&self, app: &str) {
        self.swap_app(app, None);
        self.swap_services(app, None);
    }

    /// Tells the pools of processes made ahead of demand which kinds the
    /// deployed functions and services need, and refills them.
    fn refresh_wanted(&self) {
        let mut kinds: HashSet<Kind> = self
            .snapshot()
            .values()
            .flat_map(|fns| fns.values())
            .map(|pool| Kind::of(self.ctx.launcher.isolation(), &pool.config))
            .collect();
        if self.services().values().any(|s| !s.is_empty()) {
            kinds.insert(Kind::SERVICE);
        }
        self.ctx.prewarm.set_wanted(&kinds);
        Prewarm::maintain(&self.ctx);
    }

    fn swap_services(&self, app: &str, services: Option<HashMap<String, Arc<Service>>>) {
        let old = {
            let mut guard = self.services.write().unwrap_or_else(|p| p.into_inner());
            let mut next = Services::clone(&guard);
            let old = match services {
                Some(services) => next.insert(app.to_owned(), services),
                None => next.remove(app),
            };
            *guard = Arc::new(next);
            old
        };
        self.refresh_wanted();
        for service in old.into_iter().flat_map(|s| s.into_values()) {
            service.retire(None);
        }
    }

    /// Publishes a snapshot with `app`'s pools replaced (or removed), then
    /// retires the pools it replaced.
    fn swap_app(&self, app: &str, pools: Option<HashMap<String, Arc<Pool>>>) {
        let old = {
            let mut guard = self.functions.write().unwrap_or_else(|p| p.into_inner());
            let mut next = Functions::clone(&guard);
            let old = match pools {
                Some(pools) => next.insert(app.to_owned(), pools),
                None => next.remove(app),
            };
            *guard = Arc::new(next);
            old
        };
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
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(InvokeError::ShuttingDown);
        }
        let pool = self
            .pool(app, function)
            .ok_or_else(|| InvokeError::NoSuchFunction {
                app: app.to_owned(),
                function: function.to_owned(),
            })?;
        self.ctx.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlightGuard(self.ctx.clone());
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
        self.ctx.prewarm.stop();
        let deadline = Instant::now() + grace;
        // Services drain alongside: requests in flight finish, then each
        // instance gets SIGTERM.
        let services: Vec<_> = self
            .services()
            .values()
            .flat_map(|s| s.values().cloned())
            .collect();
        // WebSockets get their close with time left for the handshake.
        let websocket_grace = grace.saturating_sub(crate::service::CLOSE_WAIT);
        for service in &services {
            service.retire(Some(websocket_grace));
        }
        while (self.ctx.in_flight.load(Ordering::Acquire) > 0
            || services.iter().any(|s| s.has_instances()))
            && Instant::now() < deadline
        {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), self.ctx.all_done.notified()).await;
        }
        for service in &services {
            service.kill_all();
        }
        let instances = self.ctx.live_instances();
        if instances.is_empty() {
            return;
        }
        // Nothing is in flight any more (or the grace is over): runtimes hold
        // no state worth a graceful stop, and under namespaces the runtime is
        // its namespace's init, which ignores SIGTERM.
        tracing::info!(instances = instances.len(), "stopping instances");
        for instance in &instances {
            instance.kill();
        }
        drop(instances);
        self.wait_for_exit(Duration::from_secs(5)).await;
    }

    async fn wait_for_exit(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.ctx.instances_changed.notified();
            if self.ctx.live_instances().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

/// Counts an invocation in flight until dropped.
struct InFlightGuard(Arc<Ctx>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_done.notify_waiters();
        }
    }
}
