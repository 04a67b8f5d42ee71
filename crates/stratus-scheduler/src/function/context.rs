//! What the pools of every function share: the way to start an instance,
//! and the registry of those alive.

use std::sync::Arc;
use std::time::Duration;

use super::instance::Instance;
use super::registry::Registry;
use crate::config::FunctionConfig;
use crate::invocation::FunctionError;
use crate::sandboxed::Sandboxes;

pub(crate) struct Context {
    pub sandboxes: Arc<Sandboxes>,
    registry: Arc<Registry>,
}

impl Context {
    pub fn new(sandboxes: Arc<Sandboxes>) -> Arc<Context> {
        Arc::new(Context {
            sandboxes,
            registry: Arc::new(Registry::default()),
        })
    }

    /// Starts an instance of `config`, known to the registry until it exits.
    pub async fn start(
        &self,
        config: &Arc<FunctionConfig>,
    ) -> Result<Arc<Instance>, FunctionError> {
        let registry = self.registry.clone();
        let instance = Instance::start(
            &self.sandboxes,
            config,
            Box::new(move |id: &str| registry.unregister(id)),
        )
        .await?;
        self.registry.register(&instance);
        Ok(instance)
    }

    /// Kills every live instance, old versions' too, and waits up to
    /// `limit` for them to exit.
    pub async fn kill_all(&self, limit: Duration) {
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
