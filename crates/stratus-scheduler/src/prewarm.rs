//! Processes made ahead of demand.
//!
//! A cold start spends most of its time creating the sandbox and starting
//! the interpreter, and neither depends on the function. So for every
//! [`Kind`] that a deployed function has, sandboxes are made before they
//! are needed: for `python3` and `nodejs` with the runtime already started
//! (interpreter up, bootstrap and common modules loaded, blocked on its
//! activation descriptor), for `provided` ready to exec `bootstrap`. A cold
//! start takes one, attaches the function's code and hands it the
//! function's environment; only the user's own init is left.
//!
//! Each process is used by exactly one instance and never returns here, so
//! nothing passes between functions or tenants. Pools refill in the
//! background after every take, sized by the cold starts of the last
//! minute (at least one, at most `max`); idle processes are blocked in a
//! read and cost no CPU.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stratus_sandbox::Spawned;
use tokio::sync::oneshot::error::TryRecvError;

use crate::launch::{Launch, Signal};
use crate::process::Kind;
use crate::settings::Settings;

/// Cold starts this recent size the pools.
const DEMAND_WINDOW: Duration = Duration::from_secs(60);
/// Processes of one kind started at once while refilling.
const PARALLEL_STARTS: usize = 2;

/// A process made ahead of demand, and the instance id it will have.
pub(crate) struct Prestarted {
    pub id: String,
    pub spawned: Spawned,
}

#[derive(Default)]
struct KindPool {
    ready: VecDeque<Prestarted>,
    starting: usize,
    /// When recent cold starts of this kind happened.
    demand: VecDeque<Instant>,
    /// Some deployed function has this kind.
    wanted: bool,
}

impl KindPool {
    fn target(&mut self, max: usize) -> usize {
        let horizon = Instant::now() - DEMAND_WINDOW;
        while self.demand.front().is_some_and(|t| *t < horizon) {
            self.demand.pop_front();
        }
        if self.wanted {
            self.demand.len().clamp(1, max)
        } else {
            0
        }
    }
}

pub(crate) struct Prewarm {
    /// Most processes kept per kind; 0 turns pre-starting off.
    max: usize,
    pools: Mutex<HashMap<Kind, KindPool>>,
    stopped: AtomicBool,
    launcher: Arc<dyn Launch>,
    settings: Arc<Settings>,
}

impl Prewarm {
    /// Pools of at most `settings.limits.prestart_max` processes per kind, or
    /// none where the launcher cannot attach code to a made sandbox.
    pub fn new(launcher: Arc<dyn Launch>, settings: Arc<Settings>) -> Arc<Prewarm> {
        Arc::new(Prewarm {
            max: if launcher.can_prestart() {
                settings.limits.prestart_max
            } else {
                0
            },
            pools: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
            launcher,
            settings,
        })
    }

    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Kind, KindPool>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A live process of `kind`, if one is ready; counts the demand. Always
    /// `None` when pre-starting is off, or the launcher cannot attach code
    /// to a made sandbox (then the pools are built with `max` 0).
    pub fn take(&self, kind: Kind) -> Option<Prestarted> {
        if !self.enabled() {
            return None;
        }
        let mut pools = self.lock();
        let pool = pools.entry(kind).or_default();
        pool.demand.push_back(Instant::now());
        while let Some(mut p) = pool.ready.pop_front() {
            if alive(&mut p) {
                return Some(p);
            }
        }
        None
    }

    /// The kinds that deployed functions have; the others are let go.
    pub fn set_wanted(&self, kinds: &HashSet<Kind>) {
        let mut pools = self.lock();
        for kind in kinds {
            pools.entry(*kind).or_default();
        }
        for (kind, pool) in pools.iter_mut() {
            pool.wanted = kinds.contains(kind);
        }
    }

    /// Stops refilling and kills every process still waiting.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        for pool in self.lock().values_mut() {
            for p in pool.ready.drain(..) {
                self.launcher.signal(p.spawned.pid, Signal::Kill);
            }
        }
    }

    /// Drops dead processes and the surplus over each pool's target, and
    /// starts what is missing.
    pub fn maintain(self: &Arc<Self>) {
        let this = self;
        if !this.enabled() || this.stopped.load(Ordering::Acquire) {
            return;
        }
        let mut starts = Vec::new();
        {
            let mut pools = this.lock();
            for (kind, pool) in pools.iter_mut() {
                pool.ready.retain_mut(|p| {
                    let live = alive(p);
                    if !live {
                        tracing::warn!(kind = ?kind, "a pre-started process exited before use");
                    }
                    live
                });
                let target = pool.target(this.max);
                while pool.ready.len() > target {
                    if let Some(p) = pool.ready.pop_back() {
                        this.launcher.signal(p.spawned.pid, Signal::Kill);
                    }
                }
                while pool.ready.len() + pool.starting < target && pool.starting < PARALLEL_STARTS {
                    pool.starting += 1;
                    starts.push(*kind);
                }
            }
        }
        for kind in starts {
            let this = this.clone();
            tokio::spawn(async move {
                let id = crate::ids::new_id();
                let spec = crate::process::spec(
                    &this.settings,
                    this.launcher.isolation(),
                    kind,
                    None,
                    &id,
                );
                let made = this.launcher.spawn(&spec).await;
                let retry = {
                    let mut pools = this.lock();
                    let pool = pools.entry(kind).or_default();
                    pool.starting -= 1;
                    match made {
                        Ok(spawned) if !this.stopped.load(Ordering::Acquire) => {
                            pool.ready.push_back(Prestarted { id, spawned });
                            true
                        }
                        Ok(spawned) => {
                            this.launcher.signal(spawned.pid, Signal::Kill);
                            false
                        }
                        Err(err) => {
                            tracing::warn!(kind = ?kind, error = %err, "cannot pre-start a process");
                            false
                        }
                    }
                };
                if retry {
                    this.maintain();
                }
            });
        }
    }
}

fn alive(p: &mut Prestarted) -> bool {
    matches!(p.spawned.exited.try_recv(), Err(TryRecvError::Empty))
}

impl Prewarm {
    /// Processes of `kind` ready to be taken.
    #[cfg(test)]
    fn ready(&self, kind: Kind) -> usize {
        self.lock().get(&kind).map_or(0, |pool| pool.ready.len())
    }

    /// Processes of every kind ready to be taken.
    pub fn ready_total(&self) -> usize {
        self.lock().values().map(|pool| pool.ready.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use stratus_manifest::Runtime;

    use super::Prewarm;
    use crate::fake::{self, FakeLauncher, Program};
    use crate::launch::Launch;
    use crate::process::Kind;

    const KIND: Kind = Kind {
        runtime: Runtime::Provided,
        interpreter: 0,
        private_network: false,
        service: false,
    };

    fn prewarm(launcher: &Arc<FakeLauncher>, max: usize) -> Arc<Prewarm> {
        let mut settings = fake::settings();
        settings.limits.prestart_max = max;
        Prewarm::new(launcher.clone(), Arc::new(settings))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pools_follow_the_last_minutes_cold_starts_within_their_bounds() {
        let launcher = FakeLauncher::new(Program::Exit(0), true);
        let prewarm = prewarm(&launcher, 3);
        prewarm.set_wanted(&HashSet::from([KIND]));
        prewarm.maintain();
        // A wanted kind keeps one ready with no demand yet.
        assert!(fake::eventually(Duration::from_secs(5), || prewarm.ready(KIND) == 1).await);

        // Three cold starts: the first takes the one there, and the pool
        // grows to match.
        assert!(prewarm.take(KIND).is_some());
        assert!(prewarm.take(KIND).is_none());
        assert!(prewarm.take(KIND).is_none());
        prewarm.maintain();
        assert!(fake::eventually(Duration::from_secs(5), || prewarm.ready(KIND) == 3).await);

        // More demand does not pass the maximum.
        for _ in 0..5 {
            prewarm.take(KIND);
        }
        prewarm.maintain();
        assert!(fake::eventually(Duration::from_secs(5), || prewarm.ready(KIND) == 3).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(prewarm.ready(KIND), 3);

        // A kind no longer wanted is let go, its processes killed.
        let kills = launcher.counts.kills();
        prewarm.set_wanted(&HashSet::new());
        prewarm.maintain();
        assert_eq!(prewarm.ready(KIND), 0);
        assert_eq!(launcher.counts.kills(), kills + 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_that_died_waiting_is_replaced() {
        let launcher = FakeLauncher::new(Program::Exit(0), true);
        let prewarm = prewarm(&launcher, 2);
        prewarm.set_wanted(&HashSet::from([KIND]));
        prewarm.maintain();
        assert!(fake::eventually(Duration::from_secs(5), || prewarm.ready(KIND) == 1).await);
        let pid = launcher.pids()[0];
        launcher.signal(pid, crate::launch::Signal::Kill);
        prewarm.maintain();
        assert!(
            fake::eventually(Duration::from_secs(5), || prewarm.ready(KIND) == 1
                && launcher.pids() != [pid])
            .await
        );
        let taken = prewarm.take(KIND).expect("a live process");
        assert_ne!(taken.spawned.pid, pid);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_made_ahead_where_code_cannot_be_attached_later() {
        let launcher = FakeLauncher::new(Program::Exit(0), false);
        let prewarm = prewarm(&launcher, 4);
        prewarm.set_wanted(&HashSet::from([KIND]));
        prewarm.maintain();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(prewarm.take(KIND).is_none());
        assert_eq!(launcher.counts.spawns(), 0);
    }
}
