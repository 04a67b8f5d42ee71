//! Triggers: what runs functions besides invocations, declared in a
//! function's `events:`.
//!
//! Each kind of trigger is one [`Source`] module. A source is told of every
//! app as it is deployed, changed or removed ([`Source::reconcile`]) and
//! runs whatever it needs for it: a timer per schedule, a consumer per
//! queue, later a subscription to an external broker. What it produces is
//! an event in the CloudEvents 1.0 shape ([`cloudevent`]), handed to the
//! durable event queue or to the function itself, so every source gets the
//! same retries, dead letters and counts. Adding a source is one module
//! that implements [`Source`] and one line in [`Triggers::new`].

pub(crate) mod cloudevent;
pub(crate) mod logs;
pub(crate) mod queue;
pub(crate) mod schedule;
pub(crate) mod shapes;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use stratus_manifest::AppSpec;

/// One kind of trigger.
pub(crate) trait Source: Send + Sync {
    /// Starts, changes or stops what runs for `app` to match `spec`
    /// (`None`: the app was removed). Called at start-up for every
    /// deployed app and on every deploy; must not block.
    fn reconcile(&self, app: &str, spec: Option<&AppSpec>);
    /// Stops everything: the server is shutting down.
    fn stop(&self);
}

/// Every source of the server.
pub(crate) struct Triggers {
    pub queues: Arc<queue::Queues>,
    /// Not a trigger of functions, but told of apps the same way.
    pub alerts: Arc<crate::alerts::Rules>,
    sources: Vec<Arc<dyn Source>>,
}

impl Triggers {
    pub fn new(
        schedules: Arc<schedule::Schedules>,
        queues: Arc<queue::Queues>,
        logs: Arc<logs::LogTriggers>,
    ) -> Triggers {
        let alerts = Arc::new(crate::alerts::Rules::default());
        Triggers {
            sources: vec![schedules, queues.clone(), logs, alerts.clone()],
            queues,
            alerts,
        }
    }

    pub fn reconcile(&self, app: &str, spec: Option<&AppSpec>) {
        for source in &self.sources {
            source.reconcile(app, spec);
        }
    }

    pub fn stop(&self) {
        for source in &self.sources {
            source.stop();
        }
    }
}

/// Time as the triggers see it: the system's, or one a test moves.
pub(crate) trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    /// Returns at `ms` or a little after; may return early, so callers
    /// look at the time again.
    fn sleep_until(&self, ms: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system clock. Sleeps are cut into pieces of at most half a minute,
/// so a clock that is set (or a suspended machine) is noticed soon.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::now_ms()
    }

    fn sleep_until(&self, ms: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let pause = (ms - crate::now_ms()).clamp(0, 30_000) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(pause)))
    }
}
