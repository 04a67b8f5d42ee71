//! The launch seam: what the scheduler needs from the sandbox, and the
//! handle through which it signals a process.
//!
//! [`Launch`] is implemented by the launcher's client, which forks real
//! sandboxes, and in tests by a fake that plays the processes' part from
//! tokio tasks (`fake.rs`), so that the pools, the service queue and the
//! prestart pools can be tested without root or child processes.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use stratus_sandbox::{
    Activation, ExitStatus, Isolation, LauncherClient, ProcessSpec, SandboxError, Spawned,
};
use tokio::sync::oneshot;

/// A signal for a process's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Asks it to stop (SIGTERM).
    Terminate,
    /// Stops it at once (SIGKILL).
    Kill,
}

/// Makes sandboxed processes and signals them.
#[async_trait]
pub trait Launch: Send + Sync + 'static {
    /// The isolation processes get.
    fn isolation(&self) -> Isolation;

    /// Whether a process can be made before its code is known and get it
    /// on activation (so processes can be made ahead of demand).
    fn can_prestart(&self) -> bool;

    /// Whether each service instance listens only at the address its
    /// activation names, whatever it binds.
    fn service_fence(&self) -> bool;

    /// Whether an instance can be held to an [`EgressRule`] in its
    /// activation.
    ///
    /// [`EgressRule`]: stratus_sandbox::EgressRule
    fn egress_fence(&self) -> bool;

    /// Makes `addresses` the destinations of egress policy `policy`.
    async fn set_egress(
        &self,
        policy: u32,
        addresses: &[std::net::SocketAddr],
    ) -> Result<(), SandboxError>;

    /// Makes a process as `spec` describes.
    async fn spawn(&self, spec: &ProcessSpec) -> Result<Spawned, SandboxError>;

    /// Hands process `pid` its function or program. On failure the process
    /// is gone.
    async fn activate(&self, pid: u32, activation: &Activation) -> Result<(), SandboxError>;

    /// Sends `signal` to the process group that `pid` leads. Call through
    /// [`Process`], which never signals a reaped pid.
    fn signal(&self, pid: u32, signal: Signal);

    /// The process's peak resident memory in KiB, while it runs.
    fn peak_rss_kib(&self, pid: u32) -> Option<u64>;

    /// The CPU time the instance `pid` leads has used, all its processes
    /// together: (user, system) in microseconds; `None` where it cannot be
    /// read (no cgroup of its own).
    fn cpu_time_us(&self, pid: u32) -> Option<(u64, u64)>;

    /// Freezes the instance `pid` leads (it runs nothing, its background
    /// threads included, until thawed), or thaws it. A no-op where
    /// instances have no group to freeze. Call through [`Process`].
    fn freeze(&self, pid: u32, frozen: bool);
}

#[async_trait]
impl Launch for LauncherClient {
    fn isolation(&self) -> Isolation {
        LauncherClient::isolation(self)
    }

    fn can_prestart(&self) -> bool {
        self.prestart()
    }

    fn service_fence(&self) -> bool {
        LauncherClient::service_fence(self)
    }

    fn egress_fence(&self) -> bool {
        LauncherClient::egress_fence(self)
    }

    async fn set_egress(
        &self,
        policy: u32,
        addresses: &[std::net::SocketAddr],
    ) -> Result<(), SandboxError> {
        LauncherClient::set_egress(self, policy, addresses).await
    }

    async fn spawn(&self, spec: &ProcessSpec) -> Result<Spawned, SandboxError> {
        LauncherClient::spawn(self, spec).await
    }

    async fn activate(&self, pid: u32, activation: &Activation) -> Result<(), SandboxError> {
        LauncherClient::activate(self, pid, activation).await
    }

    fn signal(&self, pid: u32, signal: Signal) {
        match signal {
            Signal::Terminate => stratus_sandbox::terminate_group(pid),
            Signal::Kill => stratus_sandbox::kill_group(pid),
        }
    }

    fn peak_rss_kib(&self, pid: u32) -> Option<u64> {
        stratus_sandbox::peak_rss_kib(pid)
    }

    fn cpu_time_us(&self, pid: u32) -> Option<(u64, u64)> {
        LauncherClient::cpu_time_us(self, pid)
    }

    fn freeze(&self, pid: u32, frozen: bool) {
        LauncherClient::freeze(self, pid, frozen)
    }
}

/// A process the scheduler started. Signals go to its group until its
/// exit has been seen ([`Process::reaped`]); after that they go nowhere,
/// since the pid may belong to another process by then.
pub(crate) struct Process {
    launcher: Arc<dyn Launch>,
    /// `None` once reaped. Signals are sent under the lock, so none is in
    /// flight once `reaped` returns.
    pid: Mutex<Option<u32>>,
}

impl Process {
    pub fn new(launcher: Arc<dyn Launch>, pid: u32) -> Arc<Process> {
        Arc::new(Process {
            launcher,
            pid: Mutex::new(Some(pid)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<u32>> {
        self.pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = *self.lock() {
            self.launcher.signal(pid, signal);
        }
    }

    pub fn kill(&self) {
        self.signal(Signal::Kill);
    }

    /// Asks it to stop; a frozen process is thawed first, or it could not
    /// handle the signal.
    pub fn terminate(&self) {
        if let Some(pid) = *self.lock() {
            self.launcher.freeze(pid, false);
            self.launcher.signal(pid, Signal::Terminate);
        }
    }

    /// Freezes or thaws it, until it is reaped.
    pub fn freeze(&self, frozen: bool) {
        if let Some(pid) = *self.lock() {
            self.launcher.freeze(pid, frozen);
        }
    }

    /// Its exit has been seen: signal it no more.
    pub fn reaped(&self) {
        *self.lock() = None;
    }

    /// Its process id, until it is reaped.
    pub fn pid(&self) -> Option<u32> {
        *self.lock()
    }

    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = (*self.lock())?;
        self.launcher.peak_rss_kib(pid)
    }

    pub fn cpu_time_us(&self) -> Option<(u64, u64)> {
        let pid = (*self.lock())?;
        self.launcher.cpu_time_us(pid)
    }

    /// Waits for the process to end (`exited` is its `Spawned::exited`),
    /// then kills what it left behind in its group and marks it reaped.
    /// `None` when the launcher went away without saying.
    pub async fn wait(&self, exited: oneshot::Receiver<ExitStatus>) -> Option<ExitStatus> {
        let status = exited.await.ok();
        // Children it left behind go with it.
        self.kill();
        self.reaped();
        status
    }
}

/// How `status` reads in a message: "status 1", "signal 9", ...
pub(crate) fn describe(status: Option<ExitStatus>) -> String {
    status.map_or_else(
        || "an unknown status (the launcher is gone)".to_owned(),
        |s| s.to_string(),
    )
}
