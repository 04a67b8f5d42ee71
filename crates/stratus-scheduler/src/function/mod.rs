//! Functions: the instance pool of each function version, its instances,
//! and the Lambda Runtime API exchange between an instance and its
//! runtime.
//!
//! Within: `pool` (admission, warm reuse, the wait queue, keep-alive)
//! uses `instance` (one runtime process and its listener), which serves
//! `runtime_api` over the state both share in `exchange`; `registry`
//! knows every live instance for shutdown.

mod exchange;
mod instance;
mod pool;
mod registry;
mod runtime_api;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use pool::{Pool, PoolStats};

use crate::config::FunctionConfig;
use crate::invocation::FunctionError;
use crate::sandboxed::Sandboxes;
use instance::Instance;
use registry::Registry;

/// What the pools of every function share.
pub(crate) struct Context {
    pub sandboxes: Arc<Sandboxes>,
    pub registry: Arc<Registry>,
}

impl Context {
    pub fn new(sandboxes: Arc<Sandboxes>) -> Arc<Context> {
        Arc::new(Context {
            sandboxes,
            registry: Arc::new(Registry::default()),
        })
    }

    async fn start(&self, config: &Arc<FunctionConfig>) -> Result<Arc<Instance>, FunctionError> {
        Instance::start(&self.sandboxes, &self.registry, config).await
    }

    /// Kills every live instance, old versions' too, and waits up to
    /// `limit` for them to exit.
    pub async fn kill_all(&self, limit: std::time::Duration) {
        let instances = self.registry.live();
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
        self.registry.wait_empty(limit).await;
    }
}
