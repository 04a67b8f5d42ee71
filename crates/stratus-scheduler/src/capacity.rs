//! The application cap: most instances of one application, all its
//! functions, services and versions together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What holds idle instances of an application and can give one up to
/// make room for another of its functions.
pub(crate) trait Idle: Send + Sync {
    /// How long its longest-idle instance that may go has been idle.
    fn longest_idle(&self) -> Option<Duration>;
    /// Stops that instance and gives its place back; false if there was
    /// none by now.
    fn evict_longest_idle(&self) -> bool;
}

/// One application's share of instances. Clones count together.
#[derive(Clone)]
pub(crate) struct AppCapacity {
    used: Arc<AtomicU32>,
    /// Every application's cap on this node (shared: it changes with the
    /// nodes that share the cluster's).
    max: Arc<AtomicU32>,
    holders: Arc<Mutex<Vec<Weak<dyn Idle>>>>,
}

impl std::fmt::Debug for AppCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCapacity")
            .field("used", &self.used)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl AppCapacity {
    /// Lets `holder`'s idle instances give way to the application's others.
    pub fn register(&self, holder: Weak<dyn Idle>) {
        let mut holders = self.holders.lock().unwrap_or_else(|p| p.into_inner());
        holders.retain(|h| h.strong_count() > 0);
        holders.push(holder);
    }

    /// Whether every place is taken.
    pub fn is_full(&self) -> bool {
        self.used.load(Ordering::Acquire) >= self.max()
    }

    /// Stops the application's longest-idle instance held by anyone but
    /// `asking`, so that `asking` can start one; false if none is idle.
    pub fn make_room(&self, asking: &dyn Idle) -> bool {
        let holders: Vec<Arc<dyn Idle>> = self
            .holders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|h| !std::ptr::addr_eq(Arc::as_ptr(h), asking as *const dyn Idle))
            .collect();
        let mut by_idle: Vec<(Duration, Arc<dyn Idle>)> = holders
            .into_iter()
            .filter_map(|h| Some((h.longest_idle()?, h)))
            .collect();
        by_idle.sort_by_key(|(idle, _)| std::cmp::Reverse(*idle));
        // The longest idle first; one that was taken meanwhile yields to the next.
        by_idle.into_iter().any(|(_, h)| h.evict_longest_idle())
    }

    /// Takes one instance's place, if the application has room.
    pub fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max()).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back `n` places taken with [`AppCapacity::try_take`].
    pub fn give_back(&self, n: u32) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }
}

/// Every application's capacity, made on first use.
#[derive(Debug)]
pub(crate) struct Capacities {
    /// The cap of one application across all the nodes that share it.
    whole: u32,
    /// This node's share of it.
    max: Arc<AtomicU32>,
    apps: Mutex<HashMap<String, AppCapacity>>,
}

impl Capacities {
    pub fn new(max: u32) -> Capacities {
        Capacities {
            whole: max,
            max: Arc::new(AtomicU32::new(max)),
            apps: Mutex::new(HashMap::new()),
        }
    }

    /// Shares each application's cap among `nodes` live nodes: this node
    /// takes its part, rounded up (at least one instance). Instances above
    /// a lowered share keep running; new ones wait until there is room.
    pub fn share_among(&self, nodes: u32) {
        let share = self.whole.div_ceil(nodes.max(1)).max(1);
        self.max.store(share, Ordering::Release);
    }

    /// This node's share of each application's cap.
    pub fn share(&self) -> u32 {
        self.max.load(Ordering::Acquire)
    }

    pub fn of(&self, app: &str) -> AppCapacity {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_owned())
            .or_insert_with(|| AppCapacity {
                used: Arc::new(AtomicU32::new(0)),
                max: self.max.clone(),
                holders: Arc::default(),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::Capacities;

    #[test]
    fn an_app_shares_its_cap_and_apps_do_not() {
        let caps = Capacities::new(2);
        let (a1, a2, b) = (caps.of("a"), caps.of("a"), caps.of("b"));
        assert!(a1.try_take());
        assert!(a2.try_take());
        assert!(!a1.try_take(), "the cap counts both handles");
        assert!(b.try_take(), "another app has its own");
        a2.give_back(1);
        assert!(a1.try_take());
        assert_eq!(a1.used(), 2);
    }

    #[test]
    fn nodes_share_each_app_s_cap() {
        let caps = Capacities::new(5);
        let a = caps.of("a");
        caps.share_among(2);
        assert_eq!(a.max(), 3, "rounded up");
        assert!(a.try_take() && a.try_take() && a.try_take());
        assert!(!a.try_take(), "this node's share is taken");
        caps.share_among(10);
        assert_eq!(caps.of("b").max(), 1, "at least one each");
        assert!(a.is_full());
        a.give_back(3);
        assert!(a.try_take() && !a.try_take());
        caps.share_among(1);
        assert_eq!(a.max(), 5, "alone again: the whole cap");
        assert!(a.try_take());
    }
}
