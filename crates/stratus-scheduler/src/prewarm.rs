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

use crate::process::Kind;
use crate::scheduler::Ctx;

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
}

impl Prewarm {
    pub fn new(max: usize) -> Prewarm {
        Prewarm {
            max,
            pools: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
        }
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
                stratus_sandbox::kill_group(p.spawned.pid);
            }
        }
    }

    /// Drops dead processes and the surplus over each pool's target, and
    /// starts what is missing.
    pub fn maintain(ctx: &Arc<Ctx>) {
        let this = &ctx.prewarm;
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
                        stratus_sandbox::kill_group(p.spawned.pid);
                    }
                }
                while pool.ready.len() + pool.starting < target && pool.starting < PARALLEL_STARTS {
                    pool.starting += 1;
                    starts.push(*kind);
                }
            }
        }
        for kind in starts {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let id = crate::instance::new_id();
                let spec = ctx.process_spec(kind, None, &id);
                let made = ctx.launcher.spawn(&spec).await;
                let retry = {
                    let mut pools = ctx.prewarm.lock();
                    let pool = pools.entry(kind).or_default();
                    pool.starting -= 1;
                    match made {
                        Ok(spawned) if !ctx.prewarm.stopped.load(Ordering::Acquire) => {
                            pool.ready.push_back(Prestarted { id, spawned });
                            true
                        }
                        Ok(spawned) => {
                            stratus_sandbox::kill_group(spawned.pid);
                            false
                        }
                        Err(err) => {
                            tracing::warn!(kind = ?kind, error = %err, "cannot pre-start a process");
                            false
                        }
                    }
                };
                if retry {
                    Prewarm::maintain(&ctx);
                }
            });
        }
    }
}

fn alive(p: &mut Prestarted) -> bool {
    matches!(p.spawned.exited.try_recv(), Err(TryRecvError::Empty))
}
