//! The scheduler: the snapshot of deployed functions and their pools.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use stratus_manifest::Runtime;
use stratus_runtimes::InstalledRuntimes;
use stratus_sandbox::{Launcher, ProcessSpec};
use tokio::sync::Notify;

use crate::instance::Instance;
use crate::invocation::{Invocation, InvokeError, InvokeOutcome};
use crate::logs::LogSender;
use crate::pool::{FunctionConfig, Pool};

/// Scheduler settings; every limit here has a default in the server's flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub python: PathBuf,
    pub node: PathBuf,
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
    /// Variables every instance gets before the function's own (PATH, LANG, ...).
    pub base_env: Vec<(String, String)>,
}

/// What pools and instances share.
pub(crate) struct Ctx {
    pub settings: Settings,
    pub launcher: Arc<dyn Launcher>,
    pub logs: LogSender,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    instances_changed: Notify,
    in_flight: AtomicUsize,
    all_done: Notify,
}

impl Ctx {
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

    pub fn function_arn(&self, config: &FunctionConfig) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{}",
            self.settings.region,
            config.qualified_name()
        )
    }

    /// The process an instance of `config` runs, with the Lambda environment.
    pub fn process_spec(
        &self,
        config: &FunctionConfig,
        runtime_api: &str,
        instance_id: &str,
    ) -> ProcessSpec {
        let s = &self.settings;
        let spec = &config.spec;
        let code = config.code_dir.display().to_string();
        let (program, args, runtime_dir) = match spec.runtime {
            Runtime::Python3 => (
                s.python.clone(),
                vec![
                    "-u".into(),
                    s.runtimes.python_bootstrap.clone().into_os_string(),
                ],
                parent(&s.runtimes.python_bootstrap),
            ),
            Runtime::Nodejs => (
                s.node.clone(),
                vec![s.runtimes.node_bootstrap.clone().into_os_string()],
                parent(&s.runtimes.node_bootstrap),
            ),
            Runtime::Provided => (config.code_dir.join("bootstrap"), Vec::new(), code.clone()),
        };
        let mut env = s.base_env.clone();
        let lambda = [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
            ("_HANDLER", spec.handler.clone()),
            ("LAMBDA_TASK_ROOT", code.clone()),
            ("LAMBDA_RUNTIME_DIR", runtime_dir),
            ("AWS_LAMBDA_FUNCTION_NAME", config.qualified_name()),
            ("AWS_LAMBDA_FUNCTION_VERSION", config.version.to_string()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.memory_mb.to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/stratus/{}/{}", config.app, spec.name),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", instance_id.to_owned()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
            ("AWS_EXECUTION_ENV", format!("stratus_{}", spec.runtime)),
            ("AWS_REGION", s.region.clone()),
            ("AWS_DEFAULT_REGION", s.region.clone()),
        ];
        env.extend(lambda.into_iter().map(|(k, v)| (k.to_owned(), v)));
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        ProcessSpec {
            program,
            args,
            cwd: config.code_dir.clone(),
            env,
            memory_mb: spec.memory_mb,
        }
    }
}

fn parent(path: &std::path::Path) -> String {
    path.parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

type Functions = HashMap<String, HashMap<String, Arc<Pool>>>;

/// Owns every function's pool. Deploys swap in a new snapshot; invocations
/// read it without waiting on anything else.
pub struct Scheduler {
    ctx: Arc<Ctx>,
    functions: RwLock<Arc<Functions>>,
    shutting_down: AtomicBool,
}

impl Scheduler {
    pub fn new(settings: Settings, launcher: Arc<dyn Launcher>, logs: LogSender) -> Arc<Scheduler> {
        let scheduler = Arc::new(Scheduler {
            ctx: Arc::new(Ctx {
                settings,
                launcher,
                logs,
                instances: Mutex::new(HashMap::new()),
                instances_changed: Notify::new(),
                in_flight: AtomicUsize::new(0),
                all_done: Notify::new(),
            }),
            functions: RwLock::new(Arc::new(HashMap::new())),
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
                    pool.reap(keep_alive);
                }
            }
        });
        scheduler
    }

    pub fn settings(&self) -> &Settings {
        &self.ctx.settings
    }

    fn snapshot(&self) -> Arc<Functions> {
        self.functions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes `functions` the live version of `app`; the pools of the version
    /// it replaces finish their invocations in flight, then stop.
    pub fn publish_app(&self, app: &str, functions: Vec<FunctionConfig>) {
        let pools: HashMap<String, Arc<Pool>> = functions
            .into_iter()
            .map(|config| {
                (
                    config.spec.name.clone(),
                    Arc::new(Pool::new(self.ctx.clone(), config)),
                )
            })
            .collect();
        let old = {
            let mut guard = self.functions.write().unwrap_or_else(|p| p.into_inner());
            let mut next = Functions::clone(&guard);
            let old = next.insert(app.to_owned(), pools);
            *guard = Arc::new(next);
            old
        };
        for pool in old.into_iter().flat_map(|fns| fns.into_values()) {
            pool.retire();
        }
    }

    /// Takes `app` out of service; invocations in flight finish.
    pub fn remove_app(&self, app: &str) {
        let old = {
            let mut guard = self.functions.write().unwrap_or_else(|p| p.into_inner());
            let mut next = Functions::clone(&guard);
            let old = next.remove(app);
            *guard = Arc::new(next);
            old
        };
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
        let task = tokio::spawn(async move {
            let _guard = guard;
            pool.invoke(invocation).await
        });
        match task.await {
            Ok(outcome) => outcome,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }

    /// Refuses new invocations, lets those in flight finish for up to
    /// `grace`, then stops every instance and waits for them to exit.
    pub async fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        let deadline = Instant::now() + grace;
        while self.ctx.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            let _ =
                tokio::time::timeout(Duration::from_millis(50), self.ctx.all_done.notified()).await;
        }
        let instances = self.ctx.live_instances();
        if instances.is_empty() {
            return;
        }
        tracing::info!(instances = instances.len(), "stopping instances");
        for instance in &instances {
            instance.terminate();
        }
        drop(instances);
        if !self.wait_for_exit(Duration::from_secs(2)).await {
            for instance in self.ctx.live_instances() {
                instance.kill();
            }
            self.wait_for_exit(Duration::from_secs(2)).await;
        }
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
