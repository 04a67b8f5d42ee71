//! One running process of a service, and its phase.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

use crate::launch::Process;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Ready,
    Draining,
    Dead,
}

/// One running process of a service.
pub struct ServiceInstance {
    pub id: String,
    /// Where the gateway reaches it.
    pub addr: SocketAddr,
    pub(crate) process: OnceLock<Arc<Process>>,
    phase: watch::Sender<Phase>,
    /// Requests holding a lease on it.
    pub(crate) in_flight: AtomicUsize,
    last_used: Mutex<Instant>,
    ready_at: Mutex<Option<Instant>>,
    /// Once draining: when long-lived requests on it must end.
    drain_until: Mutex<Option<Instant>>,
    /// Its last lines of output, for the reason it failed to start.
    tail: Mutex<VecDeque<String>>,
    /// While it starts: when it last wrote a line, and whether it has
    /// printed what looks like a fatal error.
    starting_output: Mutex<StartingOutput>,
}

#[derive(Debug, Default)]
struct StartingOutput {
    last_line: Option<Instant>,
    error_seen: bool,
}

/// How long a starting instance that printed an error must then be quiet,
/// and still not listen, before the requests waiting for it are answered.
const QUIET_AFTER_ERROR: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether `line` begins what an interpreter prints for an error nobody
/// caught: a Python traceback, or an exception that ended a thread.
fn starts_fatal_error(line: &str) -> bool {
    line.starts_with("Traceback (most recent call last):")
        || line.starts_with("Exception in thread ")
}

/// Lines of output kept for a failure's reason.
const TAIL_LINES: usize = 10;
/// Bytes kept of each such line.
const TAIL_LINE_BYTES: usize = 300;

impl ServiceInstance {
    pub(crate) fn new(id: String, addr: SocketAddr) -> ServiceInstance {
        ServiceInstance {
            id,
            addr,
            process: OnceLock::new(),
            phase: watch::channel(Phase::Starting).0,
            in_flight: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
            ready_at: Mutex::new(None),
            drain_until: Mutex::new(None),
            tail: Mutex::new(VecDeque::new()),
            starting_output: Mutex::new(StartingOutput::default()),
        }
    }

    /// Notes a line it wrote while starting.
    pub(crate) fn starting_line(&self, line: &str) {
        self.output(line);
        let mut seen = lock(&self.starting_output);
        seen.last_line = Some(Instant::now());
        seen.error_seen |= starts_fatal_error(line);
    }

    /// Why requests should not wait for it, if it printed what looks like
    /// a fatal error and has been quiet since, without listening: its
    /// process may live on (a web server whose main thread died, under an
    /// autoreloader that does not), but it will not serve.
    pub(crate) fn stuck(&self) -> Option<String> {
        let seen = lock(&self.starting_output);
        let quiet = seen.last_line.map(|t| t.elapsed())?;
        (seen.error_seen && quiet >= QUIET_AFTER_ERROR).then(|| {
            self.with_output(format!(
                "it printed an error and has not listened in the {}s since",
                quiet.as_secs()
            ))
        })
    }

    /// Keeps `line` among its last lines of output.
    pub(crate) fn output(&self, line: &str) {
        let mut end = line.len().min(TAIL_LINE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let mut tail = lock(&self.tail);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line[..end].to_owned());
    }

    /// `message`, with its last lines of output when it has any.
    pub(crate) fn with_output(&self, message: String) -> String {
        let tail = lock(&self.tail);
        if tail.is_empty() {
            return message;
        }
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        format!("{message}; its last output:\n{}", lines.join("\n"))
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves to `next` if the phases allow it: Dead is final, Draining only
    /// gives way to Dead.
    pub(crate) fn set_phase(&self, next: Phase) -> bool {
        self.phase.send_if_modified(|phase| {
            let allowed = match (*phase, next) {
                (Phase::Dead, _) => false,
                (Phase::Draining, p) => p == Phase::Dead,
                (current, p) => current != p,
            };
            if allowed {
                *phase = next;
            }
            allowed
        })
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    pub(crate) fn idle_for(&self) -> std::time::Duration {
        lock(&self.last_used).elapsed()
    }

    pub(crate) fn mark_ready(&self) {
        *lock(&self.ready_at) = Some(Instant::now());
    }

    /// When it became ready, if it did.
    pub(crate) fn ready_at(&self) -> Option<Instant> {
        *lock(&self.ready_at)
    }

    pub(crate) fn set_drain_until(&self, until: Instant) {
        *lock(&self.drain_until) = Some(until);
    }

    pub(crate) fn drain_until(&self) -> Option<Instant> {
        *lock(&self.drain_until)
    }

    pub(crate) fn kill(&self) {
        if let Some(process) = self.process.get() {
            process.kill();
        }
    }

    pub(crate) fn terminate(&self) {
        if let Some(process) = self.process.get() {
            process.terminate();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
