//! The launcher process: forked before the async runtime, single-threaded,
//! it starts every tenant process, reaps them, and reports their exits.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::cgroup::{Cgroups, InstanceGroup};
use crate::listen;
use crate::netguard::NetGuard;
use crate::slot::{self, Slots};
use crate::spawn::ProbeError;
use crate::template::Templates;
use crate::wire::{self, ActivationMessage, Facts, Refusal, Reply, Request};
use crate::{
    Activation, Isolation, IsolationRequest, ProcessSpec, SandboxError, init, landlock, spawn,
};

/// The server's end of the launcher, before the async runtime exists.
#[derive(Debug)]
pub struct LauncherHandle {
    pub(crate) sock: OwnedFd,
    pub(crate) pid: u32,
}

/// Forks the launcher. Must be called while the process is single-threaded,
/// before the tokio runtime is built. `state_dir` holds the empty directory
/// that sandboxes mount their private root on, and the slots that code is
/// attached to.
pub fn start(request: IsolationRequest, state_dir: &Path) -> Result<LauncherHandle, SandboxError> {
    create_private_dir(state_dir).map_err(SandboxError::Start)?;
    let root = state_dir.join("sandbox-root");
    std::fs::create_dir_all(&root).map_err(SandboxError::Start)?;
    let root = root.canonicalize().map_err(SandboxError::Start)?;
    let slots = root.with_file_name("sandbox-slots");
    let (server_end, launcher_end) = spawn::socket_pair().map_err(SandboxError::Start)?;
    // SAFETY: the caller guarantees a single-threaded process, so the child
    // may run arbitrary code until it exits.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(SandboxError::Start(io::Error::last_os_error())),
        0 => {
            drop(server_end);
            let code = match serve(launcher_end, request, root, slots) {
                Ok(()) => 0,
                Err(err) => {
                    eprintln!("stratus launcher: {err}");
                    1
                }
            };
            // SAFETY: _exit ends the forked child without running the
            // parent's atexit handlers or destructors twice.
            unsafe { libc::_exit(code) }
        }
        pid => {
            drop(launcher_end);
            Ok(LauncherHandle {
                sock: server_end,
                pid: pid as u32,
            })
        }
    }
}

/// Creates `dir`, mode 0700, unless it exists; its parents as usual.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// The launcher's loop: spawn requests in, spawn replies and exits out.
/// It outlives the server only until it sees the server's end of the socket
/// close, however the server ended; then it kills every instance, removes
/// their cgroups and exits.
fn serve(
    sock: OwnedFd,
    request: IsolationRequest,
    root: PathBuf,
    slots: PathBuf,
) -> io::Result<()> {
    // SAFETY: the signal-mask calls have no memory preconditions;
    // the sigset is initialised by sigemptyset before use.
    let sigfd = unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        libc::sigaddset(&mut mask, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
        // SIGINT from a terminal reaches the whole foreground group; the
        // server decides when instances stop, not the keyboard.
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        // A process that dies before reading its activation must not end us.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signalfd(-1, &mask, libc::SFD_CLOEXEC)
    };
    if sigfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a fresh descriptor that we now own.
    let sigfd = unsafe { OwnedFd::from_raw_fd(sigfd) };

    // Processes made from templates are reparented to the launcher when
    // the template's child that made them ends, so that it reaps them as
    // it reaps the processes it forks itself.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Slots need mounts of the launcher's own, out of the host's sight.
    let own_mounts = slot::private_mounts();
    let (isolation, reason) = match choose(request, &root) {
        Ok(chosen) => chosen,
        Err(refusal) => return wire::send(sock.as_raw_fd(), &Reply::Refused(refusal), &[]),
    };
    let slots = match (isolation, own_mounts) {
        (Isolation::None, _) => None,
        (Isolation::Namespaces, Err(err)) => {
            eprintln!("stratus launcher: sandboxes start on demand only: no private mounts: {err}");
            None
        }
        (Isolation::Namespaces, Ok(())) if !slot::supported() => None,
        (Isolation::Namespaces, Ok(())) => match Slots::new(slots) {
            Ok(slots) => Some(slots),
            Err(err) => {
                eprintln!("stratus launcher: sandboxes start on demand only: {err}");
                None
            }
        },
    };
    let prestart = isolation == Isolation::None || slots.is_some();
    // SAFETY: getpid has no preconditions.
    let cgroups = Cgroups::detect(unsafe { libc::getpid() } as u32);
    let limits = cgroups.summary.clone();
    let (guard, network, listen_notify) = guard(isolation, &cgroups);
    let service_fence = guard.as_ref().is_some_and(|g| g.services().is_ok());
    let egress_fence = guard.as_ref().is_some_and(|g| g.egress().is_ok());
    let listen_fence = listen_notify || guard.as_ref().is_some_and(|g| g.listen().is_ok());
    let landlock = landlock::summary(isolation == Isolation::Namespaces);
    wire::send(
        sock.as_raw_fd(),
        &Reply::Ready(Facts {
            isolation,
            reason,
            limits,
            prestart,
            network,
            service_fence,
            egress_fence,
            listen_fence,
            landlock,
            freezer: cgroups.guard_group().is_some(),
        }),
        &[],
    )?;

    let mut children: HashMap<u32, Tenant> = HashMap::new();
    let mut templates = Templates::default();
    // Groups of exited instances whose last processes are still dying.
    let mut draining: Vec<InstanceGroup> = Vec::new();
    let mut spawned: u64 = 0;
    // Runs until the server's end closes or a reply cannot be sent; either
    // way the server is gone, and so must its instances be.
    let outcome = (|| -> io::Result<()> {
        let mut polls: Vec<libc::pollfd> = Vec::new();
        loop {
            let pollin = |fd: RawFd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            polls.clear();
            polls.extend([pollin(sock.as_raw_fd()), pollin(sigfd.as_raw_fd())]);
            // Listens that wait for an answer.
            polls.extend(
                children
                    .values()
                    .filter_map(|t| t.listen_notify.as_ref())
                    .map(|fd| pollin(fd.as_raw_fd())),
            );
            let timeout = if draining.is_empty() { -1 } else { 50 };
            // SAFETY: polls is a valid array of pollfd structs of this length.
            let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            for poll in &polls[2..] {
                if poll.revents & libc::POLLIN != 0 {
                    answer_listen(&mut children, poll.fd);
                } else if poll.revents != 0 {
                    // Every process under the filter is gone.
                    forget_listen(&mut children, poll.fd);
                }
            }
            if polls[1].revents != 0 {
                drain_signalfd(sigfd.as_raw_fd());
                reap(
                    sock.as_raw_fd(),
                    &mut children,
                    &mut draining,
                    &mut templates,
                    guard.as_ref(),
                )?;
            }
            draining.retain_mut(|group| !group.remove());
            if polls[0].revents != 0 {
                match wire::recv::<Request>(sock.as_raw_fd(), 0) {
                    Ok(Some((Request::Spawn { id, spec }, _))) => {
                        spawned += 1;
                        let name = format!("i{spawned}");
                        let made = make(
                            &spec,
                            isolation,
                            &root,
                            slots.as_ref(),
                            &cgroups,
                            &name,
                            listen_notify,
                            &mut templates,
                        );
                        match made {
                            Ok((pid, fds, tenant)) => {
                                let freezer = tenant.group.freezer.clone();
                                let from_template = tenant.from_template;
                                children.insert(pid, tenant);
                                let fds: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
                                let reply = Reply::Spawned {
                                    id,
                                    pid,
                                    freezer,
                                    from_template,
                                };
                                wire::send(sock.as_raw_fd(), &reply, &fds)?;
                            }
                            Err(error) => {
                                wire::send(sock.as_raw_fd(), &Reply::Failed { id, error }, &[])?
                            }
                        }
                    }
                    Ok(Some((
                        Request::Activate {
                            id,
                            pid,
                            activation,
                        },
                        _,
                    ))) => {
                        let outcome = match children.get_mut(&pid) {
                            Some(tenant) => tenant.activate(&activation, guard.as_ref()),
                            None => Err("the process has already exited".to_owned()),
                        };
                        let reply = match outcome {
                            Ok(()) => Reply::Done { id },
                            Err(error) => {
                                crate::kill_group(pid);
                                Reply::Failed { id, error }
                            }
                        };
                        wire::send(sock.as_raw_fd(), &reply, &[])?;
                    }
                    Ok(Some((Request::Reserve { id, addresses }, _))) => {
                        let outcome = match &guard {
                            Some(guard) => addresses
                                .iter()
                                .try_for_each(|addr| guard.reserve(*addr))
                                .map_err(|e| format!("cannot reserve an address: {e}")),
                            None => Ok(()),
                        };
                        wire::send(sock.as_raw_fd(), &settled(id, outcome), &[])?;
                    }
                    Ok(Some((Request::Platform { id, addresses }, _))) => {
                        let outcome = match &guard {
                            Some(guard) => guard.set_egress(0, &addresses).map_err(|e| {
                                format!("cannot let instances reach the platform: {e}")
                            }),
                            None => Ok(()),
                        };
                        wire::send(sock.as_raw_fd(), &settled(id, outcome), &[])?;
                    }
                    Ok(Some((
                        Request::Egress {
                            id,
                            policy,
                            addresses,
                        },
                        _,
                    ))) => {
                        let outcome = match &guard {
                            _ if policy == 0 || policy > crate::MAX_EGRESS_POLICY => Err(format!(
                                "egress policy {policy} is not between 1 and {}",
                                crate::MAX_EGRESS_POLICY
                            )),
                            Some(guard) if guard.egress().is_ok() => guard
                                .set_egress(policy, &addresses)
                                .map_err(|e| format!("cannot set egress policy {policy}: {e}")),
                            Some(guard) => Err(format!(
                                "egress rules cannot be enforced here: {}",
                                guard.egress().err().unwrap_or_default()
                            )),
                            None => Err(
                                "egress rules cannot be enforced here: there is no network fence"
                                    .to_owned(),
                            ),
                        };
                        wire::send(sock.as_raw_fd(), &settled(id, outcome), &[])?;
                    }
                    // The server is gone: so are its instances.
                    Ok(None) | Err(_) => return Ok(()),
                }
            }
        }
    })();
    templates.stop();
    shut_down(&mut children, &mut draining, &cgroups);
    outcome
}

/// The reply to request `id`, done or failed.
fn settled(id: u64, outcome: Result<(), String>) -> Reply {
    match outcome {
        Ok(()) => Reply::Done { id },
        Err(error) => Reply::Failed { id, error },
    }
}

/// Answers a `listen` waiting at the notification descriptor `fd`.
fn answer_listen(children: &mut HashMap<u32, Tenant>, fd: RawFd) {
    let tenant = children.values().find(|t| {
        t.listen_notify
            .as_ref()
            .is_some_and(|n| n.as_raw_fd() == fd)
    });
    if let Some(notify) = tenant.and_then(|t| t.listen_notify.as_ref())
        && let Err(err) = listen::answer(notify)
    {
        eprintln!("stratus launcher: cannot answer a listen: {err}");
        forget_listen(children, fd);
    }
}

/// Stops watching the notification descriptor `fd`: nobody is left to
/// call, or it cannot be read. A process still under the filter then
/// gets `ENOSYS` from `listen`, never a listen the fence did not judge.
fn forget_listen(children: &mut HashMap<u32, Tenant>, fd: RawFd) {
    for tenant in children.values_mut() {
        if tenant
            .listen_notify
            .as_ref()
            .is_some_and(|n| n.as_raw_fd() == fd)
        {
            tenant.listen_notify = None;
        }
    }
}

/// Attaches the network guard where there are namespaces to keep tenants
/// from undoing it; says what fences outbound instances, and whether
/// instances on the host's network hand their `listen` calls to the
/// launcher ([`listen`]) since no BPF LSM program refuses them.
fn guard(isolation: Isolation, cgroups: &Cgroups) -> (Option<NetGuard>, String, bool) {
    let attached = match (isolation, cgroups.guard_group()) {
        (Isolation::None, _) => Err("no isolation".to_owned()),
        (_, None) => Err("no cgroup v2 hierarchy to attach to".to_owned()),
        (_, Some(group)) => NetGuard::attach(group),
    };
    match attached {
        Ok(guard) => {
            let egress = match guard.egress() {
                Ok(()) => "; egress rules (network.outbound) hold for TCP and UDP".to_owned(),
                Err(reason) => format!(
                    "; egress rules (network.outbound) cannot be enforced, and instances that have them do not start: {reason}"
                ),
            };
            // The BPF LSM program where the kernel takes it; else, where
            // binds are fenced, the launcher judges each listen.
            let notify = match (guard.listen(), guard.services()) {
                (Ok(()), _) => Ok(false),
                (Err(_), Ok(())) => listen::supported().map(|()| true),
                (Err(reason), Err(_)) => Err(reason.to_owned()),
            };
            let listen = match (&notify, guard.listen()) {
                (Ok(false), _) => {
                    "a listen with no bind (at a port the kernel picks) is refused (BPF LSM)"
                        .to_owned()
                }
                (Ok(true), _) => "a listen with no bind (at a port the kernel picks) is refused (seccomp user notification)".to_owned(),
                (Err(reason), Err(lsm)) => format!(
                    "but a listen with no bind (at a port the kernel picks) is not fenced: {lsm}; {reason}"
                ),
                (Err(reason), Ok(())) => format!(
                    "but a listen with no bind (at a port the kernel picks) is not fenced: {reason}"
                ),
            };
            let message = match guard.services() {
                Ok(()) => format!(
                    "outbound instances cannot connect to the admin listener, to other instances' Runtime APIs or to services, which listen only at their own addresses in {}/{} (cgroup BPF); binds on every address go to loopback, UDP's too; {listen}",
                    crate::SERVICE_NET,
                    crate::SERVICE_PREFIX
                ),
                Err(reason) => format!(
                    "outbound instances cannot connect to the admin listener or to other instances' Runtime APIs (cgroup BPF); services listen where they ask, within instances' reach: {reason}"
                ),
            } + &egress;
            (Some(guard), message, notify == Ok(true))
        }
        Err(reason) => {
            // Instances keep their v2 group all the same: it is where they
            // are frozen while idle.
            (
                None,
                format!(
                    "outbound instances can reach the admin listener, other instances' Runtime APIs and services on loopback: {reason}"
                ),
                false,
            )
        }
    }
}

/// A process the launcher made, until it is reaped.
struct Tenant {
    group: InstanceGroup,
    /// Where its activation is written; taken when it is.
    control: Option<OwnedFd>,
    /// The error pipe of a process that waits to exec on activation.
    waiting: Option<OwnedFd>,
    /// The slot its code is attached to on activation.
    slot: Option<PathBuf>,
    /// Where its init leaves the program's wait status.
    init_status: Option<OwnedFd>,
    /// Where its `listen` calls wait for the launcher, when they do.
    listen_notify: Option<OwnedFd>,
    /// The program, when it was made from a template into this holder's
    /// namespaces, and how it ended once it has.
    program: Option<u32>,
    program_status: Option<libc::c_int>,
    from_template: bool,
}

/// Makes a process, with a slot for its code when the code comes later.
/// Returns its pid and the descriptors for the server: stdout, stderr and
/// the Runtime API's socket in a private network.
#[allow(clippy::too_many_arguments)]
fn make(
    spec: &ProcessSpec,
    isolation: Isolation,
    root: &Path,
    slots: Option<&Slots>,
    cgroups: &Cgroups,
    name: &str,
    listen_notify: bool,
    templates: &mut Templates,
) -> Result<(u32, Vec<OwnedFd>, Tenant), String> {
    let slot = match (isolation, &spec.code, slots) {
        (Isolation::Namespaces, None, Some(slots)) => Some(
            slots
                .create(name)
                .map_err(|e| format!("cannot make a slot for the code: {e}"))?,
        ),
        (Isolation::Namespaces, None, None) => {
            return Err("this host cannot attach code to a sandbox made without it".to_owned());
        }
        _ => None,
    };
    let made = templates
        .spawn(
            spec,
            isolation,
            root,
            slot.as_deref(),
            cgroups,
            name,
            listen_notify,
        )
        .unwrap_or_else(|| {
            spawn::spawn(
                spec,
                isolation,
                root,
                slot.as_deref(),
                cgroups,
                name,
                listen_notify,
            )
        });
    match made {
        Ok(child) => {
            let mut fds = vec![child.stdout, child.stderr];
            fds.extend(child.runtime_api);
            let tenant = Tenant {
                group: child.group,
                control: Some(child.control),
                waiting: child.waiting,
                slot,
                init_status: child.init_status,
                listen_notify: child.listen_notify,
                program: child.program,
                program_status: None,
                from_template: child.from_template,
            };
            Ok((child.pid, fds, tenant))
        }
        Err(err) => {
            if let Some(slot) = &slot {
                slot::release(slot);
            }
            Err(err)
        }
    }
}

impl Tenant {
    /// Attaches the code, sets the memory, and hands over the rest.
    fn activate(
        &mut self,
        activation: &Activation,
        guard: Option<&NetGuard>,
    ) -> Result<(), String> {
        let control = self
            .control
            .take()
            .ok_or("the process was activated already")?;
        if let Some(slot) = &self.slot {
            slot::attach(&activation.code, slot).map_err(|e| {
                format!(
                    "cannot show {} in the sandbox: {e}",
                    activation.code.display()
                )
            })?;
        }
        self.group
            .set_memory(activation.memory_mb)
            .map_err(|e| format!("cannot set the memory limit: {e}"))?;
        // Before the activation is written: a service may bind as soon as
        // it has it. Without a guard services go unfenced, and the server
        // knows it from `service_fence`.
        let fenced = activation.runtime_api_port.is_some()
            || activation.service_addr.is_some()
            || activation.egress.is_some();
        match (guard, self.group.net_id) {
            (Some(guard), Some(id)) if fenced => guard
                .admit(
                    id,
                    activation.runtime_api_port,
                    activation.service_addr,
                    activation.egress,
                )
                .map_err(|e| format!("cannot admit the instance to the network fence: {e}"))?,
            // Never silently wider than asked.
            _ if activation.egress.is_some() => {
                return Err(
                    "this host cannot narrow where an instance may connect (no network fence); remove the function's `network.outbound` list and `loopback: false`, or run the server with namespaces and cgroup v2".to_owned(),
                );
            }
            _ => {}
        }
        let message = ActivationMessage {
            env: activation.env.clone(),
            cwd: activation.cwd.clone(),
            program: activation.program.clone(),
            args: activation.args.clone(),
        };
        let mut bytes = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        spawn::write_activation(control, &bytes)?;
        match self.waiting.take() {
            Some(errors) => spawn::exec_verdict(errors),
            None => Ok(()),
        }
    }

    /// Kills what is left of it and lets go of its slot.
    fn end(&mut self, guard: Option<&NetGuard>) {
        self.group.kill_all();
        if let (Some(guard), Some(id)) = (guard, self.group.net_id) {
            guard.forget(id);
        }
        if let Some(slot) = self.slot.take() {
            slot::release(&slot);
        }
    }
}

/// Kills every instance, reaps it and removes its cgroups, giving dying
/// processes a few seconds to leave their groups.
fn shut_down(
    children: &mut HashMap<u32, Tenant>,
    draining: &mut Vec<InstanceGroup>,
    cgroups: &Cgroups,
) {
    let mut dying = std::collections::HashSet::new();
    for (pid, mut tenant) in children.drain() {
        crate::kill_group(pid);
        if let Some(program) = tenant.program {
            // SAFETY: kill(2) on a child of ours, not yet reaped.
            unsafe { libc::kill(program as i32, libc::SIGKILL) };
            dying.insert(program);
        }
        tenant.end(None);
        dying.insert(pid);
        draining.push(tenant.group);
    }
    // Reaped in the order they end, not one by one: a holder's init ends
    // only once the launcher has reaped the program the template made in
    // its namespace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !dying.is_empty() && std::time::Instant::now() < deadline {
        // SAFETY: waitpid with a null status pointer.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid > 0 {
            dying.remove(&(pid as u32));
        } else if pid < 0 {
            break;
        } else {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    for _ in 0..250 {
        draining.retain_mut(|group| !group.remove());
        if draining.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cgroups.remove();
}

fn drain_signalfd(fd: RawFd) {
    let mut info = [0u8; 128];
    // SAFETY: reads into a local buffer of the size given.
    unsafe { libc::read(fd, info.as_mut_ptr() as *mut libc::c_void, info.len()) };
}

/// Reaps every exited child and reports it.
fn reap(
    sock: RawFd,
    children: &mut HashMap<u32, Tenant>,
    draining: &mut Vec<InstanceGroup>,
    templates: &mut Templates,
    guard: Option<&NetGuard>,
) -> io::Result<()> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return Ok(());
        }
        let pid = pid as u32;
        if templates.reaped(pid) {
            continue;
        }
        // A program made from a template into a holder: its holder ends
        // with it, and the instance's status is the program's.
        if let Some((leader, tenant)) = children.iter_mut().find(|(_, t)| t.program == Some(pid)) {
            tenant.program_status = Some(status);
            crate::kill_group(*leader);
            continue;
        }
        // An orphan the launcher adopted as subreaper: nobody's instance.
        if !children.contains_key(&pid) {
            continue;
        }
        // The leader is gone; whatever it left in its group goes too.
        crate::kill_group(pid);
        let tenant = children.remove(&pid);
        let oom_killed = tenant.as_ref().is_some_and(|t| t.group.oom_killed());
        // With an init, how its program ended; the init can only exit.
        let status = tenant
            .as_ref()
            .and_then(|t| {
                t.program_status
                    .or_else(|| t.init_status.as_ref().and_then(init::program_status))
            })
            .unwrap_or(status);
        if let Some(mut tenant) = tenant {
            tenant.end(guard);
            if !tenant.group.remove() {
                draining.push(tenant.group);
            }
        }
        let status = if libc::WIFEXITED(status) {
            crate::ExitStatus {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
                oom_killed,
            }
        } else {
            crate::ExitStatus {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
                oom_killed,
            }
        };
        wire::send(sock, &Reply::Exited { pid, status }, &[])?;
    }
}

/// Picks the isolation to run with, and says why; `Err` refuses to run
/// with less than was asked for. `auto` falls back to none only where the
/// host cannot have sandboxes, never because setting one up failed.
fn choose(request: IsolationRequest, root: &Path) -> Result<(Isolation, String), Refusal> {
    let refuse = |requested: &str, reason: String| Refusal {
        requested: requested.to_owned(),
        reason,
    };
    match request {
        IsolationRequest::Exactly(Isolation::None) => {
            Ok((Isolation::None, "--isolation none was given".into()))
        }
        IsolationRequest::Exactly(Isolation::Namespaces) => match spawn::probe(root) {
            Ok(()) => Ok((
                Isolation::Namespaces,
                "--isolation namespaces was given".into(),
            )),
            Err(ProbeError::Unsupported(reason) | ProbeError::Failed(reason)) => {
                Err(refuse("namespaces", reason))
            }
        },
        IsolationRequest::Auto => match spawn::probe(root) {
            Ok(()) => Ok((
                Isolation::Namespaces,
                "the host allows user, pid, mount, uts and ipc namespaces".into(),
            )),
            Err(ProbeError::Unsupported(reason)) => Ok((
                Isolation::None,
                format!("namespaces are unavailable: {reason}"),
            )),
            Err(ProbeError::Failed(reason)) => Err(refuse(
                "auto",
                format!(
                    "the host has namespaces, but a test sandbox under {} failed: {reason}",
                    root.display()
                ),
            )),
        },
    }
}
