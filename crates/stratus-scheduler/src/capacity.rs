//! The application cap: most instances of one application, all its
//! functions, services and versions together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// One application's share of instances. Clones count together.
#[derive(Debug, Clone)]
pub(crate) struct AppCapacity {
    used: Arc<AtomicU32>,
    max: u32,
}

impl AppCapacity {
    /// Takes one instance's place, if the application has room.
    pub fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back `n` places taken with [`AppCapacity::try_take`].
    pub fn give_back(&self, n: u32) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    #[cfg(test)]
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }
}

/// Every application's capacity, made on first use.
#[derive(Debug)]
pub(crate) struct Capacities {
    max: u32,
    apps: Mutex<HashMap<String, AppCapacity>>,
}

impl Capacities {
    pub fn new(max: u32) -> Capacities {
        Capacities {
            max,
            apps: Mutex::new(HashMap::new()),
        }
    }

    pub fn of(&self, app: &str) -> AppCapacity {
        self.apps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_owned())
            .or_insert_with(|| AppCapacity {
                used: Arc::new(AtomicU32::new(0)),
                max: self.max,
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
}
