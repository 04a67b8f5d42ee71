//! The server's side of the launcher protocol, on the async runtime.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::launcher::LauncherHandle;
use crate::wire::{self, Reply, Request};
use crate::{ExitStatus, Isolation, ProcessSpec, SandboxError};

/// A started process: its output pipes and its end.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    /// Resolves when the launcher has reaped the process.
    pub exited: oneshot::Receiver<ExitStatus>,
    /// The Runtime API's listening socket inside the process's private
    /// network, when it has one.
    pub runtime_api: Option<std::net::TcpListener>,
}

type SpawnReply = Result<(u32, Vec<OwnedFd>, oneshot::Receiver<ExitStatus>), String>;

#[derive(Default)]
struct State {
    pending: HashMap<u64, oneshot::Sender<SpawnReply>>,
    exits: HashMap<u32, oneshot::Sender<ExitStatus>>,
    gone: bool,
}

/// Asks the launcher for processes. Cheap to share.
pub struct LauncherClient {
    sock: Arc<AsyncFd<OwnedFd>>,
    state: Arc<Mutex<State>>,
    next_id: AtomicU64,
    isolation: Isolation,
    reason: String,
    limits: String,
    pid: u32,
}

impl std::fmt::Debug for LauncherClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LauncherClient")
            .field("isolation", &self.isolation)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl LauncherClient {
    /// Takes over the launcher's socket; needs the tokio runtime. Waits for
    /// the launcher to say which isolation it runs with.
    pub fn connect(handle: LauncherHandle) -> Result<LauncherClient, SandboxError> {
        let fd = handle.sock.as_raw_fd();
        let (isolation, reason, limits) = match wire::recv::<Reply>(fd, 0) {
            Ok(Some((
                Reply::Ready {
                    isolation,
                    reason,
                    limits,
                },
                _,
            ))) => (isolation, reason, limits),
            Ok(_) => {
                return Err(SandboxError::Protocol(
                    "the launcher did not say it was ready".into(),
                ));
            }
            Err(err) => return Err(SandboxError::Start(err)),
        };
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        // SAFETY: an OwnedFd is open and always returns the same descriptor
        // for as long as the AsyncFd that owns it lives.
        let sock = unsafe { AsyncFd::register(handle.sock) }
            .map_err(|err| SandboxError::Start(err.into()))?;
        let sock = Arc::new(sock);
        let state = Arc::new(Mutex::new(State::default()));
        tokio::spawn(read_replies(sock.clone(), state.clone()));
        Ok(LauncherClient {
            sock,
            state,
            next_id: AtomicU64::new(1),
            isolation,
            reason,
            limits,
            pid: handle.pid,
        })
    }

    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// Why the launcher runs with this isolation.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Which resource limits the launcher enforces.
    pub fn limits(&self) -> &str {
        &self.limits
    }

    /// Starts a process as `spec` describes.
    pub async fn spawn(&self, spec: &ProcessSpec) -> Result<Spawned, SandboxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.gone {
                return Err(SandboxError::LauncherGone);
            }
            state.pending.insert(id, tx);
        }
        let request = Request::Spawn {
            id,
            spec: spec.clone(),
        };
        loop {
            let mut guard = self
                .sock
                .writable()
                .await
                .map_err(|_| SandboxError::LauncherGone)?;
            match guard.try_io(|fd| wire::send(fd.get_ref().as_raw_fd(), &request, &[])) {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return Err(SandboxError::LauncherGone),
                Err(_would_block) => continue,
            }
        }
        let reply = rx.await.map_err(|_| SandboxError::LauncherGone)?;
        let (pid, mut fds, exited) = reply.map_err(|message| SandboxError::Spawn {
            program: spec.program.display().to_string(),
            message,
        })?;
        let expected = if spec.private_network { 3 } else { 2 };
        if fds.len() != expected {
            crate::kill_group(pid);
            return Err(SandboxError::Protocol(format!(
                "expected {expected} descriptors, got {}",
                fds.len()
            )));
        }
        let runtime_api = if spec.private_network {
            fds.pop().map(std::net::TcpListener::from)
        } else {
            None
        };
        let stderr = fds.pop().expect("two descriptors");
        let stdout = fds.pop().expect("two descriptors");
        let receiver = |fd: OwnedFd| {
            pipe::Receiver::from_owned_fd(fd).map_err(|e| SandboxError::Protocol(e.to_string()))
        };
        Ok(Spawned {
            pid,
            stdout: receiver(stdout)?,
            stderr: receiver(stderr)?,
            exited,
            runtime_api,
        })
    }
}

async fn read_replies(sock: Arc<AsyncFd<OwnedFd>>, state: Arc<Mutex<State>>) {
    loop {
        let Ok(mut guard) = sock.readable().await else {
            break;
        };
        let received =
            guard.try_io(|fd| wire::recv::<Reply>(fd.get_ref().as_raw_fd(), libc::MSG_DONTWAIT));
        let message = match received {
            Err(_would_block) => continue,
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => break,
            Ok(Err(err)) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Ok(Err(err)) => {
                tracing::error!(error = %err, "launcher socket failed");
                break;
            }
        };
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        match message {
            (Reply::Spawned { id, pid }, fds) => {
                // Registered before anyone can see the pid, so no exit is missed.
                let (exit_tx, exit_rx) = oneshot::channel();
                state.exits.insert(pid, exit_tx);
                if let Some(tx) = state.pending.remove(&id)
                    && let Err(Ok((pid, _, _))) = tx.send(Ok((pid, fds, exit_rx)))
                {
                    crate::kill_group(pid);
                }
            }
            (Reply::Failed { id, error }, _) => {
                if let Some(tx) = state.pending.remove(&id) {
                    let _ = tx.send(Err(error));
                }
            }
            (Reply::Exited { pid, status }, _) => {
                if let Some(tx) = state.exits.remove(&pid) {
                    let _ = tx.send(status);
                }
            }
            (Reply::Ready { .. }, _) => {}
        }
    }
    tracing::error!("the launcher exited; no new instances can start");
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.gone = true;
    state.pending.clear();
    for (_, tx) in state.exits.drain() {
        let _ = tx.send(ExitStatus {
            code: None,
            signal: Some(libc::SIGKILL),
            oom_killed: false,
        });
    }
}
