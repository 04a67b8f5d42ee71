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
use crate::wire::{self, Facts, Reply, Request};
use crate::{Activation, ExitStatus, Isolation, ProcessSpec, SandboxError};

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
    /// Made from a loaded template rather than started afresh.
    pub from_template: bool,
}

/// The launcher's answer to one request.
enum Answer {
    Spawned {
        pid: u32,
        fds: Vec<OwnedFd>,
        exited: oneshot::Receiver<ExitStatus>,
        from_template: bool,
    },
    Done,
}

type Pending = oneshot::Sender<Result<Answer, String>>;

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    exits: HashMap<u32, oneshot::Sender<ExitStatus>>,
    /// Each running process's `cgroup.freeze`, where it has one.
    freezers: HashMap<u32, std::path::PathBuf>,
    gone: bool,
}

/// Asks the launcher for processes. Cheap to share.
pub struct LauncherClient {
    sock: Arc<AsyncFd<OwnedFd>>,
    state: Arc<Mutex<State>>,
    next_id: AtomicU64,
    facts: Facts,
    pid: u32,
}

impl std::fmt::Debug for LauncherClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LauncherClient")
            .field("isolation", &self.facts.isolation)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl LauncherClient {
    /// Takes over the launcher's socket; needs the tokio runtime. Waits for
    /// the launcher to say which isolation it runs with.
    pub fn connect(handle: LauncherHandle) -> Result<LauncherClient, SandboxError> {
        let fd = handle.sock.as_raw_fd();
        let facts = match wire::recv::<Reply>(fd, 0) {
            Ok(Some((Reply::Ready(facts), _))) => facts,
            Ok(Some((Reply::Refused(refusal), _))) => {
                return Err(SandboxError::Unavailable {
                    requested: refusal.requested,
                    reason: refusal.reason,
                });
            }
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
            facts,
            pid: handle.pid,
        })
    }

    pub fn isolation(&self) -> Isolation {
        self.facts.isolation
    }

    /// Why the launcher runs with this isolation.
    pub fn reason(&self) -> &str {
        &self.facts.reason
    }

    /// Which resource limits the launcher enforces.
    pub fn limits(&self) -> &str {
        &self.facts.limits
    }

    /// What keeps instances on the host's network from the platform's own
    /// listeners and from each other.
    pub fn network(&self) -> &str {
        &self.facts.network
    }

    /// Whether services are fenced: each listens only at its
    /// [`Activation::service_addr`], whatever it binds, which only the
    /// platform can reach. When not, services bind where they ask (reach
    /// them on `127.0.0.1`), and [`LauncherClient::network`] says why.
    pub fn service_fence(&self) -> bool {
        self.facts.service_fence
    }

    /// What Landlock enforces.
    pub fn landlock(&self) -> &str {
        &self.facts.landlock
    }

    /// Whether an instance on the host's network can be held to an
    /// [`crate::EgressRule`].
    pub fn egress_fence(&self) -> bool {
        self.facts.egress_fence
    }

    /// Whether a `listen` on every address at a port the kernel picks (a
    /// socket never bound, or bound to port 0) is refused on the host's
    /// network.
    pub fn listen_fence(&self) -> bool {
        self.facts.listen_fence
    }

    /// Whether processes can be frozen ([`LauncherClient::freeze`]).
    pub fn can_freeze(&self) -> bool {
        self.facts.freezer
    }

    /// Freezes process `pid`'s cgroup, or thaws it: a frozen process runs
    /// nothing until thawed (signals that kill still end it). Written
    /// directly, without a round trip to the launcher; a process that has
    /// exited, or has no group of its own, is left as it is.
    pub fn freeze(&self, pid: u32, frozen: bool) {
        let path = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.freezers.get(&pid).cloned()
        };
        if let Some(path) = path
            && let Err(err) = std::fs::write(&path, if frozen { "1" } else { "0" })
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(pid, frozen, %err, "cannot freeze or thaw an instance");
        }
    }

    /// The CPU time the instance `pid` leads has used, all its processes
    /// together: (user, system) in microseconds, from its cgroup v2
    /// group's `cpu.stat`. `None` where it has no such group.
    pub fn cpu_time_us(&self, pid: u32) -> Option<(u64, u64)> {
        let group = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.freezers.get(&pid)?.parent()?.to_path_buf()
        };
        crate::cpu_stat_us(&std::fs::read_to_string(group.join("cpu.stat")).ok()?)
    }

    /// Whether a process can be made before its code is known
    /// ([`ProcessSpec::code`] `None`) and get it on activation.
    pub fn prestart(&self) -> bool {
        self.facts.prestart
    }

    /// Sends `request` (whose id is `id`) and waits for its answer.
    async fn ask(
        &self,
        id: u64,
        request: &Request,
    ) -> Result<Result<Answer, String>, SandboxError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.gone {
                return Err(SandboxError::LauncherGone);
            }
            state.pending.insert(id, tx);
        }
        loop {
            let mut guard = self
                .sock
                .writable()
                .await
                .map_err(|_| SandboxError::LauncherGone)?;
            match guard.try_io(|fd| wire::send(fd.get_ref().as_raw_fd(), request, &[])) {
                Ok(Ok(())) => break,
                Ok(Err(err)) => {
                    self.state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pending
                        .remove(&id);
                    // Too large for one message is the request's fault; the
                    // launcher is fine.
                    if err.raw_os_error() == Some(libc::EMSGSIZE) {
                        return Err(SandboxError::Protocol(format!(
                            "the request is too large for the launcher ({err}); make the function's environment smaller"
                        )));
                    }
                    return Err(SandboxError::LauncherGone);
                }
                Err(_would_block) => continue,
            }
        }
        rx.await.map_err(|_| SandboxError::LauncherGone)
    }

    /// Makes a process as `spec` describes; with [`Start::Now`] its program
    /// runs at once, waiting for [`LauncherClient::activate`].
    ///
    /// [`Start::Now`]: crate::Start::Now
    pub async fn spawn(&self, spec: &ProcessSpec) -> Result<Spawned, SandboxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request::Spawn {
            id,
            spec: spec.clone(),
        };
        let answer = self
            .ask(id, &request)
            .await?
            .map_err(|message| SandboxError::Spawn {
                program: spec.program.display().to_string(),
                message,
            })?;
        let Answer::Spawned {
            pid,
            mut fds,
            exited,
            from_template,
        } = answer
        else {
            return Err(SandboxError::Protocol("expected a spawned process".into()));
        };
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
            from_template,
        })
    }

    /// Hands process `pid` its function. On failure the process is killed.
    pub async fn activate(&self, pid: u32, activation: &Activation) -> Result<(), SandboxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request::Activate {
            id,
            pid,
            activation: activation.clone(),
        };
        match self.ask(id, &request).await? {
            Ok(Answer::Done) => Ok(()),
            Ok(Answer::Spawned { .. }) => {
                Err(SandboxError::Protocol("expected an activation".into()))
            }
            Err(message) => Err(SandboxError::Spawn {
                program: activation.program.display().to_string(),
                message,
            }),
        }
    }
}

impl LauncherClient {
    /// Makes the platform's listeners at `addresses` unreachable from
    /// outbound instances. Call before any instance starts.
    pub async fn reserve(&self, addresses: &[std::net::SocketAddr]) -> Result<(), SandboxError> {
        self.settle(|id| Request::Reserve {
            id,
            addresses: addresses.to_vec(),
        })
        .await
    }
}

impl LauncherClient {
    /// Lets every instance reach the platform's endpoints at `addresses`,
    /// whatever its egress rule. Replaces the earlier set.
    pub async fn platform_endpoints(
        &self,
        addresses: &[std::net::SocketAddr],
    ) -> Result<(), SandboxError> {
        self.settle(|id| Request::Platform {
            id,
            addresses: addresses.to_vec(),
        })
        .await
    }

    /// Makes `addresses` the destinations of egress policy `policy`, for
    /// instances whose [`crate::EgressRule`] names it. Replaces the earlier
    /// set.
    pub async fn set_egress(
        &self,
        policy: u32,
        addresses: &[std::net::SocketAddr],
    ) -> Result<(), SandboxError> {
        self.settle(|id| Request::Egress {
            id,
            policy,
            addresses: addresses.to_vec(),
        })
        .await
    }

    /// Sends the request `make` builds with a new id, and waits until the
    /// launcher has done it.
    async fn settle(&self, make: impl FnOnce(u64) -> Request) -> Result<(), SandboxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match self.ask(id, &make(id)).await? {
            Ok(_) => Ok(()),
            Err(message) => Err(SandboxError::Protocol(message)),
        }
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
            (
                Reply::Spawned {
                    id,
                    pid,
                    freezer,
                    from_template,
                },
                fds,
            ) => {
                // Registered before anyone can see the pid, so no exit is missed.
                let (exit_tx, exit_rx) = oneshot::channel();
                state.exits.insert(pid, exit_tx);
                if let Some(freezer) = freezer {
                    state.freezers.insert(pid, freezer);
                }
                if let Some(tx) = state.pending.remove(&id)
                    && let Err(Ok(Answer::Spawned { pid, .. })) = tx.send(Ok(Answer::Spawned {
                        pid,
                        fds,
                        exited: exit_rx,
                        from_template,
                    }))
                {
                    crate::kill_group(pid);
                }
            }
            (Reply::Done { id }, _) => {
                if let Some(tx) = state.pending.remove(&id) {
                    let _ = tx.send(Ok(Answer::Done));
                }
            }
            (Reply::Failed { id, error }, _) => {
                if let Some(tx) = state.pending.remove(&id) {
                    let _ = tx.send(Err(error));
                }
            }
            (Reply::Exited { pid, status }, _) => {
                state.freezers.remove(&pid);
                if let Some(tx) = state.exits.remove(&pid) {
                    let _ = tx.send(status);
                }
            }
            (Reply::Ready(_) | Reply::Refused(_), _) => {}
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
