//! The start of a sandboxed instance, the same for functions and
//! services: take a process made ahead of demand or make one, activate
//! it, and hand back what the instance needs to run and be watched.

use std::sync::Arc;
use std::time::Instant;

use stratus_logs::Logs;
use stratus_sandbox::{Activation, ExitStatus, ProcessSpec, SandboxError, Spawned};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::egress::{EgressPolicies, Resolver};
use crate::launch::{Launch, Process, Signal};
use crate::prewarm::{Prestarted, Prewarm};
use crate::process::Kind;
use crate::settings::Settings;

/// What starting instances takes; shared by functions and services.
pub(crate) struct Sandboxes {
    pub settings: Arc<Settings>,
    pub launcher: Arc<dyn Launch>,
    pub prewarm: Arc<Prewarm>,
    pub logs: Arc<dyn Logs>,
    pub egress: EgressPolicies,
}

/// An instance about to start: its id, and the process made ahead of
/// demand that it will take, if there was one.
pub(crate) struct Reserved {
    pub id: String,
    prestarted: Option<Prestarted>,
}

impl Reserved {
    pub fn prestarted(&self) -> bool {
        self.prestarted.is_some()
    }
}

/// A started instance's process.
pub(crate) struct Started {
    pub process: Arc<Process>,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    /// Resolves when the process has been reaped; see [`Process::wait`].
    pub exited: oneshot::Receiver<ExitStatus>,
    /// The Runtime API's socket in the process's private network.
    pub runtime_api: Option<std::net::TcpListener>,
    /// When the activation was sent: the program starts work then.
    pub activated_at: Instant,
    /// Made from a loaded template rather than started afresh.
    pub from_template: bool,
}

impl Sandboxes {
    pub fn new(
        settings: Settings,
        launcher: Arc<dyn Launch>,
        logs: Arc<dyn Logs>,
    ) -> Arc<Sandboxes> {
        let settings = Arc::new(settings);
        let resolver = Arc::new(Resolver::new(settings.name_servers.clone()));
        Arc::new(Sandboxes {
            prewarm: Prewarm::new(launcher.clone(), settings.clone()),
            egress: EgressPolicies::new(launcher.clone(), resolver),
            settings,
            launcher,
            logs,
        })
    }

    /// An id for a new instance of `kind`, with a process made ahead of
    /// demand when one is ready and `may_prestart` allows it.
    pub fn reserve(&self, kind: Kind, may_prestart: bool) -> Reserved {
        let prestarted = may_prestart.then(|| self.prewarm.take(kind)).flatten();
        Reserved {
            id: prestarted
                .as_ref()
                .map_or_else(crate::ids::new_id, |p| p.id.clone()),
            prestarted,
        }
    }

    /// Lets go of a reserved instance that will not start: its process
    /// made ahead of demand, if it had one, is killed.
    pub fn discard(&self, reserved: Reserved) {
        if let Some(p) = reserved.prestarted {
            self.launcher.signal(p.spawned.pid, Signal::Kill);
        }
    }

    /// Activates the reserved process, or, when there is none or it died
    /// waiting, makes one with `spec` and activates that.
    pub async fn start(
        &self,
        reserved: Reserved,
        spec: impl FnOnce() -> ProcessSpec,
        activation: &Activation,
    ) -> Result<Started, SandboxError> {
        if let Some(p) = reserved.prestarted {
            let activated_at = Instant::now();
            match self.launcher.activate(p.spawned.pid, activation).await {
                Ok(()) => return Ok(self.started(p.spawned, activated_at)),
                Err(err) => {
                    tracing::warn!(error = %err, "a prestarted process could not be activated");
                }
            }
        }
        let spawned = self.launcher.spawn(&spec()).await?;
        let activated_at = Instant::now();
        if let Err(err) = self.launcher.activate(spawned.pid, activation).await {
            // Not reaped yet: its pid is still its own.
            self.launcher.signal(spawned.pid, Signal::Kill);
            return Err(err);
        }
        Ok(self.started(spawned, activated_at))
    }

    fn started(&self, spawned: Spawned, activated_at: Instant) -> Started {
        let Spawned {
            pid,
            stdout,
            stderr,
            exited,
            runtime_api,
            from_template,
        } = spawned;
        Started {
            process: Process::new(self.launcher.clone(), pid),
            stdout,
            stderr,
            exited,
            runtime_api,
            activated_at,
            from_template,
        }
    }
}
