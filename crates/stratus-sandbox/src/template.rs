//! Processes made from a template: a runtime started once, outside any
//! sandbox, with its bootstrap and the modules functions commonly import
//! already loaded, which forks every new process instead of starting an
//! interpreter (the design of SOCK, USENIX ATC 2018).
//!
//! Each new process is made in three steps, and is then exactly what a
//! process started from scratch would be:
//!
//! 1. The launcher builds the sandbox as for any process, but its first
//!    process, the init, runs no program: it is a *holder*
//!    ([`init::adopt`]) that keeps the namespaces, the filesystem view, the
//!    private network and the cgroups alive.
//! 2. The template forks a child, which drops its supplementary groups and
//!    joins the holder's namespaces all at once (`setns` on the holder's
//!    pidfd: user first, then mount, pid, uts, ipc and network), and forks
//!    again, so that the grandchild is in the holder's pid namespace. The
//!    first child reports the grandchild's pid and exits; the grandchild is
//!    reparented to the launcher, a child subreaper, which moves it into the
//!    instance's cgroups and only then tells it to go on.
//! 3. The grandchild becomes the namespace's root and then the sandbox
//!    user (which clears every capability), sets `no_new_privs`, applies
//!    the Landlock plan and the seccomp filter the launcher computed for
//!    it, limits its descriptors, takes its output pipes and activation
//!    descriptor, closes everything else, and waits for its activation as
//!    a runtime started ahead of demand does.
//!
//! Without namespaces only steps 2 and 3 remain, without `setns` and the
//! change of ids, as a plain process has none.
//!
//! Nothing writable is shared: the fork copies the template's memory
//! (copy-on-write), every process has its own sandbox, and the template
//! itself never runs tenant code. A template that fails is stopped and
//! marked broken: its processes start from scratch instead, and the
//! launcher says so once on its standard error.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroups;
use crate::spawn::{self, Child, Exec, Plumbing};
use crate::{Isolation, ProcessSpec, landlock, seccomp};

/// The descriptor on which a template reads its requests.
const TEMPLATE_FD: RawFd = 4;
/// How long a template may take to load before it counts as broken.
const START_TIMEOUT_MS: i32 = 20_000;
/// How long each step of making a process may take.
const STEP_TIMEOUT_MS: i32 = 5_000;

/// What identifies a template: the program and arguments it runs, as the
/// host sees them.
type Key = (PathBuf, Vec<String>);

/// A running template.
struct Zygote {
    pid: u32,
    sock: OwnedFd,
}

/// The launcher's templates, one per program and arguments.
#[derive(Default)]
pub(crate) struct Templates {
    running: HashMap<Key, Zygote>,
    /// Templates that could not start or failed, and why.
    broken: HashMap<Key, String>,
}

/// What a template's child is asked to do, in one message with the
/// descriptors: activation, stdout, stderr, the reply socket, and under
/// namespaces the holder's pidfd.
#[derive(Serialize)]
struct Request<'a> {
    /// The namespaces to join through the pidfd; 0 without namespaces.
    setns: i32,
    /// The id to run as inside the namespace.
    uid: Option<u32>,
    landlock: Option<landlock::Plan>,
    /// The seccomp program, one `[code, jt, jf, k]` per instruction.
    seccomp: Option<Vec<[u32; 4]>>,
    /// Whether the filter's notifications go to the launcher.
    notify: bool,
    max_files: u32,
    /// Without namespaces: the launcher's pid, which the new process must
    /// have as its parent before it may go on.
    reparent_to: Option<u32>,
    /// Under namespaces: the pid the new process must have in the holder's
    /// pid namespace, which the holder's init signals.
    expect_pid: Option<i32>,
    syscalls: Syscalls,
    /// Where the new process waits for its activation.
    cwd: &'a str,
    /// The command line and environment the new process shows, as a
    /// process started from the program with them would.
    argv: Vec<&'a str>,
    env: &'a [(String, String)],
}

/// Numbers of the system calls the template's children make, from the
/// launcher's own build, so that the template needs no table of them.
#[derive(Serialize)]
struct Syscalls {
    setns: i64,
    seccomp: i64,
    landlock_create_ruleset: i64,
    landlock_add_rule: i64,
    landlock_restrict_self: i64,
}

const SYSCALLS: Syscalls = Syscalls {
    setns: libc::SYS_setns,
    seccomp: libc::SYS_seccomp,
    landlock_create_ruleset: libc::SYS_landlock_create_ruleset,
    landlock_add_rule: libc::SYS_landlock_add_rule,
    landlock_restrict_self: libc::SYS_landlock_restrict_self,
};

/// What the template and its children answer.
#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    error: Option<String>,
}

impl Templates {
    /// Makes a process as `spec` says from its template, `None` when the
    /// spec has none or its template is broken: then the caller starts it
    /// from scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        &mut self,
        spec: &ProcessSpec,
        isolation: Isolation,
        root: &Path,
        slot: Option<&Path>,
        cgroups: &Cgroups,
        name: &str,
        listen_notify: bool,
    ) -> Option<Result<Child, String>> {
        if !spec.template || (isolation == Isolation::Namespaces && !spec.init) {
            return None;
        }
        let key = host_key(spec, isolation);
        if self.broken.contains_key(&key) {
            return None;
        }
        if !self.running.contains_key(&key) {
            match start(spec, &key) {
                Ok(zygote) => {
                    self.running.insert(key.clone(), zygote);
                }
                Err(err) => {
                    self.mark_broken(key, err);
                    return None;
                }
            }
        }
        let zygote = self.running.get(&key)?;
        match make(
            zygote,
            spec,
            isolation,
            root,
            slot,
            cgroups,
            name,
            listen_notify,
        ) {
            Ok(child) => Some(Ok(child)),
            // The template is gone or wedged: stop it, and let this and
            // later processes start from scratch.
            Err(Failure::Template(err)) => {
                if let Some(zygote) = self.running.remove(&key) {
                    crate::kill_group(zygote.pid);
                }
                self.mark_broken(key, err);
                None
            }
            Err(Failure::Process(err)) => Some(Err(err)),
        }
    }

    fn mark_broken(&mut self, key: Key, err: String) {
        eprintln!(
            "stratus launcher: the template for {} failed, so its processes start from scratch: {err}",
            key.0.display()
        );
        self.broken.insert(key, err);
    }

    /// Whether `pid` was a template; if so, it is forgotten, and the next
    /// process of its kind starts a new one.
    pub fn reaped(&mut self, pid: u32) -> bool {
        let before = self.running.len();
        self.running.retain(|_, z| z.pid != pid);
        before != self.running.len()
    }

    /// Stops every template.
    pub fn stop(&mut self) {
        for (_, zygote) in self.running.drain() {
            crate::kill_group(zygote.pid);
            // SAFETY: reaps a child we created and just killed.
            unsafe { libc::waitpid(zygote.pid as i32, std::ptr::null_mut(), 0) };
        }
    }
}

/// The program and arguments as the host sees them: a path inside one of
/// the spec's mounts is translated back.
fn host_key(spec: &ProcessSpec, isolation: Isolation) -> Key {
    let host = |arg: &str| -> String {
        if isolation == Isolation::Namespaces {
            for mount in &spec.mounts {
                if let Ok(rest) = Path::new(arg).strip_prefix(&mount.sandbox) {
                    return mount.host.join(rest).display().to_string();
                }
            }
        }
        arg.to_owned()
    };
    (
        PathBuf::from(host(&spec.program.display().to_string())),
        spec.args.iter().map(|a| host(a)).collect(),
    )
}

/// Starts a template: the program with the spec's environment (less what
/// names one instance), its request socket at [`TEMPLATE_FD`], in a
/// process group of its own, dying with the launcher. Waits until it has
/// loaded.
fn start(spec: &ProcessSpec, key: &Key) -> Result<Zygote, String> {
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| k != "AWS_LAMBDA_LOG_STREAM_NAME")
        .cloned()
        .collect();
    env.push(("STRATUS_TEMPLATE_FD".to_owned(), TEMPLATE_FD.to_string()));
    let exec = Exec::new(&key.0, &key.1, &env, Path::new("/"))?;
    let (ours, theirs) =
        spawn::socket_pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
    // SAFETY: the launcher is single-threaded, so the child may run any
    // code before it execs.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: plain syscalls in the child before exec; dup2 clears
        // close-on-exec on the copy.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            spawn::reset_signals();
            if libc::dup2(theirs.as_raw_fd(), TEMPLATE_FD) < 0 {
                libc::_exit(127);
            }
        }
        // Its output is the launcher's standard error: a template says
        // only why it failed.
        let (step, err) = exec.exec(2, 2, None, None);
        eprintln!("stratus launcher: cannot start a template: {step}: {err}");
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(127) }
    }
    drop(theirs);
    let zygote = Zygote {
        pid: pid as u32,
        sock: ours,
    };
    match receive(zygote.sock.as_raw_fd(), START_TIMEOUT_MS) {
        Ok((Answer { ready: true, .. }, _)) => Ok(zygote),
        Ok((answer, _)) => {
            crate::kill_group(zygote.pid);
            Err(answer
                .error
                .unwrap_or_else(|| "it did not say it was ready".to_owned()))
        }
        Err(err) => {
            crate::kill_group(zygote.pid);
            Err(err)
        }
    }
}

/// Why a process could not be made from its template.
enum Failure {
    /// The template itself failed: it is of no further use.
    Template(String),
    /// This process failed: the template may still make others.
    Process(String),
}

#[allow(clippy::too_many_arguments)]
fn make(
    zygote: &Zygote,
    spec: &ProcessSpec,
    isolation: Isolation,
    root: &Path,
    slot: Option<&Path>,
    cgroups: &Cgroups,
    name: &str,
    listen_notify: bool,
) -> Result<Child, Failure> {
    let process = Failure::Process;
    let namespaced = isolation == Isolation::Namespaces;
    // Under namespaces the holder is the one more process.
    let Plumbing {
        stdout: out_r,
        stderr: err_r,
        control: control_w,
        io,
        mut group,
    } = Plumbing::new(spec, cgroups, name, namespaced).map_err(process)?;
    let fail = |group: &mut crate::cgroup::InstanceGroup, err: Failure| {
        group.kill_all();
        group.remove();
        err
    };
    let holder = if namespaced {
        let exec = Exec::new(&spec.program, &spec.args, &spec.env, &spec.cwd)
            .map_err(|e| fail(&mut group, process(e)))?;
        match spawn::spawn_namespaced(&exec, spec, root, slot, &group, None, false) {
            Ok(started) => Some(started),
            Err(err) => return Err(fail(&mut group, process(err))),
        }
    } else {
        None
    };
    let abort_holder = |group: &mut crate::cgroup::InstanceGroup, err: Failure| {
        if let Some(holder) = &holder {
            spawn::abort(holder.pid as i32);
        }
        fail(group, err)
    };
    let pidfd = match &holder {
        Some(holder) => match pidfd_open(holder.pid) {
            Ok(fd) => Some(fd),
            Err(err) => {
                return Err(abort_holder(
                    &mut group,
                    Failure::Template(format!("pidfd_open: {err}")),
                ));
            }
        },
        None => None,
    };
    let (reply, reply_theirs) = spawn::socket_pair().map_err(|e| {
        abort_holder(
            &mut group,
            process(format!("cannot create a socket pair: {e}")),
        )
    })?;
    let notify = namespaced && listen_notify && !spec.private_network;
    let request = Request {
        setns: if namespaced {
            let mut flags = libc::CLONE_NEWUSER
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWIPC;
            if spec.private_network {
                flags |= libc::CLONE_NEWNET;
            }
            flags
        } else {
            0
        },
        uid: namespaced.then_some(spawn::SANDBOX_ID),
        landlock: landlock::plan(namespaced, true),
        seccomp: namespaced.then(|| {
            seccomp::program(notify)
                .iter()
                .map(|i| [u32::from(i.code), u32::from(i.jt), u32::from(i.jf), i.k])
                .collect()
        }),
        notify,
        max_files: spec.max_files,
        // SAFETY: getpid has no preconditions.
        reparent_to: (!namespaced).then(|| unsafe { libc::getpid() } as u32),
        expect_pid: namespaced.then_some(crate::init::ADOPTED_PROGRAM),
        syscalls: SYSCALLS,
        cwd: "/",
        argv: std::iter::once(spec.program.to_str().unwrap_or_default())
            .chain(spec.args.iter().map(String::as_str))
            .collect(),
        env: &spec.env,
    };
    let mut fds = vec![
        io.control.as_raw_fd(),
        io.stdout.as_raw_fd(),
        io.stderr.as_raw_fd(),
        reply_theirs.as_raw_fd(),
    ];
    fds.extend(pidfd.as_ref().map(|fd| fd.as_raw_fd()));
    if let Err(err) = crate::wire::send(zygote.sock.as_raw_fd(), &request, &fds) {
        return Err(abort_holder(
            &mut group,
            Failure::Template(format!("cannot reach the template: {err}")),
        ));
    }
    drop((io, reply_theirs, pidfd));
    // The first child says which process it made, or why it could not.
    let program = match receive(reply.as_raw_fd(), STEP_TIMEOUT_MS) {
        Ok((Answer { pid: Some(pid), .. }, _)) => pid,
        Ok((answer, _)) => {
            let err = answer
                .error
                .unwrap_or_else(|| "the template's child said nothing".to_owned());
            return Err(abort_holder(&mut group, process(err)));
        }
        Err(err) => {
            return Err(abort_holder(
                &mut group,
                Failure::Template(format!("the template did not answer: {err}")),
            ));
        }
    };
    let kill_program = |group: &mut crate::cgroup::InstanceGroup, err: Failure| {
        // SAFETY: kill(2) on the process the template made for us; the
        // launcher reaps it when it ends.
        unsafe { libc::kill(program as i32, libc::SIGKILL) };
        abort_holder(group, err)
    };
    if let Err(err) = group.add(program as i32) {
        return Err(kill_program(
            &mut group,
            process(format!("cannot move the process into its cgroups: {err}")),
        ));
    }
    if let Err(err) = crate::wire::send(reply.as_raw_fd(), &(), &[]) {
        return Err(kill_program(
            &mut group,
            process(format!("the new process went away: {err}")),
        ));
    }
    let listen_notify = match receive(reply.as_raw_fd(), STEP_TIMEOUT_MS) {
        Ok((Answer { ready: true, .. }, mut fds)) if fds.len() == usize::from(notify) => fds.pop(),
        Ok((answer, _)) => {
            let err = answer
                .error
                .unwrap_or_else(|| "the new process did not hand over what it should".to_owned());
            return Err(kill_program(&mut group, process(err)));
        }
        Err(err) => {
            return Err(kill_program(
                &mut group,
                process(format!("the new process did not get ready: {err}")),
            ));
        }
    };
    let (pid, runtime_api, init_status) = match holder {
        Some(holder) => (holder.pid, holder.runtime_api, holder.init_status),
        None => (program, None, None),
    };
    Ok(Child {
        pid,
        stdout: out_r,
        stderr: err_r,
        group,
        runtime_api,
        control: control_w,
        waiting: None,
        init_status,
        listen_notify,
        program: namespaced.then_some(program),
        from_template: true,
    })
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits up to `timeout_ms` for one message on `sock`.
fn receive(sock: RawFd, timeout_ms: i32) -> Result<(Answer, Vec<OwnedFd>), String> {
    let mut poll = libc::pollfd {
        fd: sock,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: poll reads and writes one live pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        if n > 0 {
            break;
        }
        if n == 0 {
            return Err(format!("no answer within {} ms", timeout_ms));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err.to_string());
        }
    }
    match crate::wire::recv::<Answer>(sock, libc::MSG_DONTWAIT) {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => Err("it ended".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}
