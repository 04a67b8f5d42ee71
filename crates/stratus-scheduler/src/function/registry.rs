//! Every live function instance, old versions' included, for shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::instance::Instance;

#[derive(Default)]
pub(crate) struct Registry {
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    changed: Notify,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Instance>>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, instance: &Arc<Instance>) {
        self.lock().insert(instance.id.clone(), instance.clone());
    }

    pub fn unregister(&self, id: &str) {
        let removed = self.lock().remove(id);
        drop(removed);
        self.changed.notify_waiters();
    }

    pub fn live(&self) -> Vec<Arc<Instance>> {
        self.lock().values().cloned().collect()
    }

    /// Waits up to `limit` for every instance to exit; false if some are
    /// still there.
    pub async fn wait_empty(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if self.lock().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}
