//! Starting one process, in the launcher: a plain fork and exec, or a clone
//! into fresh namespaces with a private filesystem.
//!
//! Everything the child needs is prepared before the fork; a close-on-exec
//! pipe carries a failure before `execve` back to the launcher, so a spawn
//! either returns a running process or says exactly what went wrong.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::cgroup::{Cgroups, InstanceGroup};
use crate::{ACTIVATION_FD, Isolation, ProcessSpec, Start, fs, init, landlock, net, seccomp, wire};

/// The uid and gid tenant code runs as inside its user namespace.
pub(crate) const SANDBOX_ID: u32 = 1000;
/// The host uid and gid that [`SANDBOX_ID`] maps to: `nobody`/`nogroup`.
const HOST_ID: u32 = 65534;
/// The host uid and gid of the namespace's root, which only builds the
/// filesystem view before tenant code runs: an id no host account has.
const HOST_SETUP_ID: u32 = 100_000;

pub(crate) struct Child {
    pub pid: u32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub group: InstanceGroup,
    /// The Runtime API's listening socket inside a private network.
    pub runtime_api: Option<OwnedFd>,
    /// Where the activation is written.
    pub control: OwnedFd,
    /// For a child waiting to exec on activation: its error pipe, which
    /// says whether the exec worked.
    pub waiting: Option<OwnedFd>,
    /// Where its init, when it has one, leaves the program's wait status.
    pub init_status: Option<OwnedFd>,
    /// Where its `listen` calls wait for the launcher, when they do.
    pub listen_notify: Option<OwnedFd>,
    /// A program made from a template into a holder's namespaces: a child
    /// of the launcher (its subreaper) but not of the init, so the
    /// launcher reaps it and then ends the holder.
    pub program: Option<u32>,
    /// Whether it was made from a template rather than started afresh.
    pub from_template: bool,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstring(s: impl AsRef<[u8]>) -> Result<CString, String> {
    CString::new(s.as_ref()).map_err(|_| "an argument or variable contains a NUL byte".to_owned())
}

/// Everything `execve` needs, allocated before the fork.
pub(crate) struct Exec {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
}

impl Exec {
    pub(crate) fn new(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        cwd: &Path,
    ) -> Result<Exec, String> {
        let program = cstring(program.as_os_str().as_bytes())?;
        let mut argv = vec![program.clone()];
        for arg in args {
            argv.push(cstring(arg)?);
        }
        let envp = env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        Ok(Exec {
            program,
            argv,
            envp,
            cwd: cstring(cwd.as_os_str().as_bytes())?,
        })
    }

    /// In the child, for [`Start::OnActivation`]: reads the activation to
    /// its end and makes it the program to run.
    fn from_activation(
        spec: &ProcessSpec,
        control: OwnedFd,
    ) -> Result<Exec, (&'static str, io::Error)> {
        let bytes = read_line(control).map_err(|e| ("read the activation", e))?;
        let message: wire::ActivationMessage = serde_json::from_slice(&bytes)
            .map_err(|e| ("read the activation", io::Error::other(e)))?;
        let args = message.args.as_ref().unwrap_or(&spec.args);
        Exec::new(&message.program, args, &message.env, &message.cwd)
            .map_err(|e| ("read the activation", io::Error::other(e)))
    }

    /// In the child: wires up stdio (and the activation descriptor, when
    /// given), changes directory, limits open files to `max_files` when
    /// given and execs. Returns only on failure, with the step that failed.
    ///
    /// The limit comes last: until exec closes them, the child holds the
    /// launcher's descriptors, which may number more than the limit, and a
    /// new descriptor would then be refused.
    pub(crate) fn exec(
        &self,
        stdout: RawFd,
        stderr: RawFd,
        activation: Option<RawFd>,
        max_files: Option<u32>,
    ) -> (&'static str, io::Error) {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: the pointers come from live CStrings and the vectors are
        // NULL-terminated; dup2/open/chdir/execve have no other preconditions.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
            if null < 0
                || libc::dup2(null, 0) < 0
                || libc::dup2(stdout, 1) < 0
                || libc::dup2(stderr, 2) < 0
            {
                return (
                    "set up standard input and output",
                    io::Error::last_os_error(),
                );
            }
            if let Some(fd) = activation {
                let ok = if fd == ACTIVATION_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(fd, ACTIVATION_FD) >= 0
                };
                if !ok {
                    return ("pass the activation descriptor", io::Error::last_os_error());
                }
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                return (
                    "change to the working directory",
                    io::Error::last_os_error(),
                );
            }
            if let Some(max_files) = max_files {
                let files = libc::rlimit {
                    rlim_cur: libc::rlim_t::from(max_files),
                    rlim_max: libc::rlim_t::from(max_files),
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &files) != 0 {
                    return ("limit open files", io::Error::last_os_error());
                }
            }
            libc::execve(self.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        ("execute", io::Error::last_os_error())
    }
}

/// Reads one line. Not to end of file: processes forked while this one
/// waited hold copies of the writing end until they exec.
fn read_line(fd: OwnedFd) -> io::Result<Vec<u8>> {
    let mut file = std::fs::File::from(fd);
    let mut line = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => return Err(io::Error::other("the launcher went away")),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        line.extend_from_slice(&chunk[..n]);
        if line.last() == Some(&b'\n') {
            return Ok(line);
        }
    }
}

/// Writes a failure to the error pipe and ends the child.
fn fail(err_fd: RawFd, step: &str, err: io::Error) -> ! {
    let message = format!("{step}: {err}");
    // SAFETY: writes a local buffer, then ends the forked child without
    // running destructors meant for the launcher.
    unsafe {
        libc::write(
            err_fd,
            message.as_ptr() as *const libc::c_void,
            message.len(),
        );
        libc::_exit(127)
    }
}

/// What a child sends on its error pipe when it is ready and waits for
/// its activation.
const WAITING: u8 = 0;

/// Waits for the child's verdict: end-of-file means `execve` succeeded,
/// [`WAITING`] that it waits for its activation (and the pipe is handed
/// back, to learn later how its exec went), anything else what failed.
fn verdict(err_read: OwnedFd, pid: i32) -> Result<Option<OwnedFd>, String> {
    let mut first = [0u8; 1];
    let mut file = std::fs::File::from(err_read);
    let n = loop {
        match file.read(&mut first) {
            Ok(n) => break n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break 0,
        }
    };
    if n == 0 {
        return Ok(None);
    }
    if first[0] == WAITING {
        return Ok(Some(OwnedFd::from(file)));
    }
    let mut message = vec![first[0]];
    let _ = file.read_to_end(&mut message);
    // SAFETY: reaps the child we created, which has exited or is exiting.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    Err(String::from_utf8_lossy(&message).into_owned())
}

/// Writes an activation to the process's control pipe and closes it.
pub(crate) fn write_activation(control: OwnedFd, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    // A pipe holds 64 KiB; the process reads only once it is whole, so a
    // larger environment needs a larger pipe, or the launcher would block.
    if bytes.len() > 64 * 1024 {
        // SAFETY: fcntl on a descriptor we own.
        let rc =
            unsafe { libc::fcntl(control.as_raw_fd(), libc::F_SETPIPE_SZ, bytes.len() as i32) };
        if rc < 0 {
            return Err(format!(
                "the environment ({} bytes) is too large to hand over: {}",
                bytes.len(),
                io::Error::last_os_error()
            ));
        }
    }
    std::fs::File::from(control)
        .write_all(bytes)
        .map_err(|e| format!("the process ended before its activation: {e}"))
}

/// After activating a child that waited to exec: how the exec went.
pub(crate) fn exec_verdict(err_read: OwnedFd) -> Result<(), String> {
    let mut message = String::new();
    let _ = std::fs::File::from(err_read).read_to_string(&mut message);
    if message.is_empty() {
        Ok(())
    } else {
        Err(message)
    }
}

/// In the child, for [`Start::OnActivation`]: says it is ready, waits for
/// its activation, and execs what it says. Returns only on failure.
fn exec_on_activation(
    spec: &ProcessSpec,
    control: OwnedFd,
    err_fd: RawFd,
    stdout: RawFd,
    stderr: RawFd,
) -> ! {
    // SAFETY: writes one byte from a local buffer.
    unsafe { libc::write(err_fd, [WAITING].as_ptr() as *const libc::c_void, 1) };
    let exec = match Exec::from_activation(spec, control) {
        Ok(exec) => exec,
        Err((step, err)) => fail(err_fd, step, err),
    };
    let (step, err) = exec.exec(stdout, stderr, None, Some(spec.max_files));
    fail(err_fd, step, err)
}

/// In the child: runs the program now or on activation, as the spec says.
fn run(
    spec: &ProcessSpec,
    exec: &Exec,
    control: OwnedFd,
    err_fd: RawFd,
    stdout: RawFd,
    stderr: RawFd,
) -> ! {
    if spec.start == Start::OnActivation {
        exec_on_activation(spec, control, err_fd, stdout, stderr);
    }
    let (step, err) = exec.exec(
        stdout,
        stderr,
        Some(control.as_raw_fd()),
        Some(spec.max_files),
    );
    fail(err_fd, step, err)
}

/// Makes a process as `spec` says. `slot`, when given, is the shared
/// mount point that the code is attached to later; it is shown at the
/// spec's task root. With `listen_notify`, a namespaced process on the
/// host's network hands its `listen` calls to the launcher
/// ([`crate::listen`]).
pub(crate) fn spawn(
    spec: &ProcessSpec,
    isolation: Isolation,
    root: &Path,
    slot: Option<&Path>,
    cgroups: &Cgroups,
    name: &str,
    listen_notify: bool,
) -> Result<Child, String> {
    let exec = Exec::new(&spec.program, &spec.args, &spec.env, &spec.cwd)?;
    // Only a namespace has an init to replace; elsewhere the program leads
    // its process group and gets its signals as it is.
    let with_init = spec.init && isolation == Isolation::Namespaces;
    let Plumbing {
        stdout,
        stderr,
        control,
        io,
        group,
    } = Plumbing::new(spec, cgroups, name, with_init)?;
    let started = match isolation {
        Isolation::None => spawn_plain(&exec, spec, &group, io).map(|(pid, waiting)| Started {
            pid,
            waiting,
            runtime_api: None,
            init_status: None,
            listen_notify: None,
        }),
        Isolation::Namespaces => {
            let notify = listen_notify && !spec.private_network;
            spawn_namespaced(&exec, spec, root, slot, &group, Some(io), notify)
        }
    };
    match started {
        Ok(started) => Ok(Child {
            pid: started.pid,
            stdout,
            stderr,
            group,
            runtime_api: started.runtime_api,
            control,
            waiting: started.waiting,
            init_status: started.init_status,
            listen_notify: started.listen_notify,
            program: None,
            from_template: false,
        }),
        Err(err) => {
            let mut group = group;
            group.kill_all();
            group.remove();
            Err(err)
        }
    }
}

/// The child's ends of its pipes.
pub(crate) struct ChildIo {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Where the activation arrives.
    pub control: OwnedFd,
}

/// What a new process of an instance starts with, however it is made:
/// its output and activation pipes and its cgroups.
pub(crate) struct Plumbing {
    /// The launcher's ends: output read, activation written.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub control: OwnedFd,
    pub io: ChildIo,
    pub group: InstanceGroup,
}

impl Plumbing {
    /// `with_init`: the sandbox has an init (or holder) besides the
    /// program, one more process rather than one less for the program.
    pub(crate) fn new(
        spec: &ProcessSpec,
        cgroups: &Cgroups,
        name: &str,
        with_init: bool,
    ) -> Result<Plumbing, String> {
        let pipes = || pipe().map_err(|e| format!("cannot create pipes: {e}"));
        let (stdout, out_w) = pipes()?;
        let (stderr, err_w) = pipes()?;
        let (control_r, control) = pipes()?;
        let pids_max = spec.pids_max.saturating_add(u32::from(with_init));
        let group = cgroups
            .create(name, spec.memory_mb, pids_max)
            .map_err(|e| format!("cannot create the instance's cgroups: {e}"))?;
        if spec.code.is_none() {
            group.set_idle();
        }
        Ok(Plumbing {
            stdout,
            stderr,
            control,
            io: ChildIo {
                stdout: out_w,
                stderr: err_w,
                control: control_r,
            },
            group,
        })
    }
}

/// Kills and reaps a child that did not get to run.
pub(crate) fn abort(pid: i32) {
    // SAFETY: kills and reaps the child we created.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// Puts a waiting child in its cgroups, then tells it to go on.
fn release(pid: i32, group: &InstanceGroup, go_w: OwnedFd) -> Result<(), String> {
    if let Err(err) = group.add(pid) {
        abort(pid);
        return Err(format!("cannot move the process into its cgroups: {err}"));
    }
    // SAFETY: writes one byte from a local buffer.
    unsafe { libc::write(go_w.as_raw_fd(), b"g".as_ptr() as *const libc::c_void, 1) };
    Ok(())
}

/// In the child: blocks until the launcher says go.
fn wait_for_go(go_r: OwnedFd, err_fd: RawFd) {
    let mut byte = [0u8; 1];
    if !matches!(std::fs::File::from(go_r).read(&mut byte), Ok(1)) {
        fail(
            err_fd,
            "wait for the launcher",
            io::Error::other("the launcher went away"),
        );
    }
}

fn spawn_plain(
    exec: &Exec,
    spec: &ProcessSpec,
    group: &InstanceGroup,
    io: ChildIo,
) -> Result<(u32, Option<OwnedFd>), String> {
    let (err_r, err_w) = pipe().map_err(|e| e.to_string())?;
    let (go_r, go_w) = pipe().map_err(|e| e.to_string())?;
    // SAFETY: the launcher is single-threaded, so the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(err_r);
        drop(go_w);
        wait_for_go(go_r, err_w.as_raw_fd());
        // SAFETY: plain syscalls in the child before exec.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            reset_signals();
            if spec.unprivileged
                && libc::geteuid() == 0
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(HOST_ID, HOST_ID, HOST_ID) != 0
                    || libc::setresuid(HOST_ID, HOST_ID, HOST_ID) != 0)
            {
                fail(
                    err_w.as_raw_fd(),
                    "drop to the unprivileged user",
                    io::Error::last_os_error(),
                );
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                fail(
                    err_w.as_raw_fd(),
                    "set no_new_privs",
                    io::Error::last_os_error(),
                );
            }
        }
        if let Err(err) = landlock::restrict(false) {
            fail(err_w.as_raw_fd(), "restrict with Landlock", err);
        }
        let (stdout, stderr) = (io.stdout.as_raw_fd(), io.stderr.as_raw_fd());
        run(spec, exec, io.control, err_w.as_raw_fd(), stdout, stderr);
    }
    drop(err_w);
    drop(go_r);
    drop(io);
    release(pid, group, go_w)?;
    verdict(err_r, pid).map(|waiting| (pid as u32, waiting))
}

/// A process made in its namespaces.
pub(crate) struct Started {
    pub pid: u32,
    /// Its error pipe, while it waits to exec on activation.
    pub waiting: Option<OwnedFd>,
    /// The Runtime API's listening socket inside a private network.
    pub runtime_api: Option<OwnedFd>,
    /// Where its init leaves the program's wait status.
    pub init_status: Option<OwnedFd>,
    /// Where its `listen` calls wait for the launcher, when they do.
    pub listen_notify: Option<OwnedFd>,
}

/// Makes a sandbox in its namespaces. With `io`, it runs the spec's
/// program; without, it is a holder: its first process becomes the init at
/// once and waits for a program made from a template to join it
/// ([`crate::template`]), which sets its own ids, filter and rules.
pub(crate) fn spawn_namespaced(
    exec: &Exec,
    spec: &ProcessSpec,
    root: &Path,
    slot: Option<&Path>,
    group: &InstanceGroup,
    io: Option<ChildIo>,
    listen_notify: bool,
) -> Result<Started, String> {
    let holder = io.is_none();
    let mut plan = fs::Plan::new(spec, root, slot)?;
    let filter = seccomp::program(listen_notify);
    let (err_r, err_w) = pipe().map_err(|e| e.to_string())?;
    let (go_r, go_w) = pipe().map_err(|e| e.to_string())?;
    // The child hands its Runtime API socket (in a private network) or its
    // filter's notification descriptor (on the host's) back over this
    // pair.
    let (fd_r, fd_w) = if spec.private_network || listen_notify {
        let (a, b) = socket_pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    // The init hands the program's wait status back over this pipe.
    let (status_r, status_w) = if spec.init {
        let (r, w) = pipe().map_err(|e| format!("cannot create pipes: {e}"))?;
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(r.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::SIGCHLD;
    if spec.private_network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: clone without a new stack behaves like fork; the launcher is
    // single-threaded, so the child may run any code.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) } as i32;
    if pid < 0 {
        return Err(format!("clone: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(err_r);
        drop(go_w);
        let err_fd = err_w.as_raw_fd();
        // Wait until the launcher has mapped our ids and set our limits.
        wait_for_go(go_r, err_fd);
        // SAFETY: plain syscalls in the child before exec.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            reset_signals();
            libc::setpgid(0, 0);
        }
        if let Err((step, err)) = plan.open_sources().and_then(|()| plan.enter_root()) {
            fail(err_fd, step, err);
        }
        // Become the namespace's root (mapped, so it can create files) to
        // build the view; tenant code never runs with this id.
        // SAFETY: plain syscalls; id 0 exists in the user namespace's map.
        if unsafe { libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 } {
            fail(
                err_fd,
                "become the namespace's root",
                io::Error::last_os_error(),
            );
        }
        if let Err((step, err)) = plan.apply() {
            fail(err_fd, step, err);
        }
        if let Some(fd_w) = fd_w.as_ref().filter(|_| spec.private_network) {
            if let Err(err) = net::loopback_up() {
                fail(err_fd, "bring up loopback", err);
            }
            let listener = match net::listen_runtime_api() {
                Ok(listener) => listener,
                Err(err) => fail(err_fd, "listen for the Runtime API", err),
            };
            if let Err(err) = wire::send(fd_w.as_raw_fd(), &(), &[listener.as_raw_fd()]) {
                fail(err_fd, "hand over the Runtime API socket", err);
            }
        }
        // SAFETY: plain syscalls; the ids exist in the user namespace's map.
        unsafe {
            let hostname = b"stratus";
            libc::sethostname(hostname.as_ptr() as *const libc::c_char, hostname.len());
            if libc::setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID) != 0
                || libc::setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID) != 0
            {
                fail(
                    err_fd,
                    "drop to the sandbox user",
                    io::Error::last_os_error(),
                );
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                fail(err_fd, "set no_new_privs", io::Error::last_os_error());
            }
        }
        // A holder's init signals a program that is not of its Landlock
        // domain; the program, which has its own, cannot signal the init.
        let mut landlock_plan = landlock::plan(true, !holder);
        if let Some(plan) = &mut landlock_plan {
            for mount in spec.mounts.iter().filter(|m| m.writable) {
                plan.allow_writes(&mount.sandbox);
            }
        }
        if let Err(err) = landlock::restrict_as(landlock_plan) {
            fail(err_fd, "restrict with Landlock", err);
        }
        let notify = match seccomp::install(&filter, listen_notify) {
            Ok(notify) => notify,
            Err(err) => fail(err_fd, "install the seccomp filter", err),
        };
        // Only the launcher may hold it: whoever answers the notifications
        // decides every listen.
        if let (Some(notify), Some(fd_w)) = (&notify, &fd_w)
            && let Err(err) = wire::send(fd_w.as_raw_fd(), &(), &[notify.as_raw_fd()])
        {
            fail(err_fd, "hand over the listen notifications", err);
        }
        drop(notify);
        if holder {
            let Some(status_w) = &status_w else {
                fail(
                    err_fd,
                    "hold the sandbox",
                    io::Error::other("a holder needs an init"),
                );
            };
            init::adopt(status_w.as_raw_fd());
        }
        let Some(io) = io else {
            fail(
                err_fd,
                "run the program",
                io::Error::other("no descriptors"),
            );
        };
        // With an init, this process stays behind as it, and the program
        // runs in a child made here: after everything above, which the
        // child keeps, and before anything the program itself gets (its
        // activation, its descriptors, its exec), which the child does as
        // this process would have.
        if let Some(status_w) = &status_w
            && let Err(err) = init::fork_program(status_w.as_raw_fd())
        {
            fail(err_fd, "start the program under its init", err);
        }
        let (stdout, stderr) = (io.stdout.as_raw_fd(), io.stderr.as_raw_fd());
        run(spec, exec, io.control, err_fd, stdout, stderr);
    }
    drop(err_w);
    drop(go_r);
    drop(io);
    drop(status_w);
    if let Err(err) = write_id_maps(pid) {
        abort(pid);
        return Err(format!("map the sandbox user: {err}"));
    }
    release(pid, group, go_w)?;
    drop(fd_w);
    let waiting = verdict(err_r, pid)?;
    let handed = match fd_r {
        Some(fd_r) => match wire::recv::<()>(fd_r.as_raw_fd(), libc::MSG_DONTWAIT) {
            Ok(Some(((), mut fds))) if fds.len() == 1 => fds.pop(),
            _ => {
                abort(pid);
                let what = if listen_notify {
                    "its listen notifications"
                } else {
                    "its Runtime API socket"
                };
                return Err(format!("the sandbox did not hand over {what}"));
            }
        },
        None => None,
    };
    let (runtime_api, listen_notify) = if listen_notify {
        (None, handed)
    } else {
        (handed, None)
    };
    Ok(Started {
        pid: pid as u32,
        waiting,
        runtime_api,
        init_status: status_r,
        listen_notify,
    })
}

/// A connected `SOCK_SEQPACKET` pair, close-on-exec.
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for socketpair to fill.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn write_id_maps(pid: i32) -> io::Result<()> {
    std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
    let map = format!("0 {HOST_SETUP_ID} 1\n{SANDBOX_ID} {HOST_ID} 1\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &map)
}

/// Restores the default disposition and an empty mask for the signals the
/// launcher changed, so tenant code starts as any process would.
///
/// # Safety
/// Only plain signal syscalls; call in a forked child.
pub(crate) unsafe fn reset_signals() {
    // SAFETY: see the function's contract.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut());
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Why a test sandbox did not start.
#[derive(Debug)]
pub(crate) enum ProbeError {
    /// The host cannot have namespaced sandboxes: the kernel lacks (or
    /// forbids) the namespaces, or the server is not root.
    Unsupported(String),
    /// The kernel has what sandboxes need, yet one failed to start: a
    /// problem to fix, never a reason to run without isolation.
    Failed(String),
}

/// Whether this kernel lets the launcher make the namespaces a sandbox
/// lives in; `Err` says why not.
fn namespaces_supported() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the server does not run as root, which namespaced sandboxes need".into());
    }
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::SIGCHLD;
    // SAFETY: clone without a new stack behaves like fork; the child only
    // calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) } as i32;
    if pid < 0 {
        return Err(format!(
            "the kernel refuses user, pid, mount, uts and ipc namespaces: {}",
            io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        // SAFETY: ends the child without running anything of the parent's.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: reaps the child we created.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    Ok(())
}

/// Starts `/bin/true` in a full sandbox; `Err` says why that is impossible
/// here, and whether the host or the setup is to blame.
pub(crate) fn probe(root: &Path) -> Result<(), ProbeError> {
    namespaces_supported().map_err(ProbeError::Unsupported)?;
    let spec = ProcessSpec {
        program: "/bin/true".into(),
        args: Vec::new(),
        cwd: "/".into(),
        env: Vec::new(),
        mounts: Vec::new(),
        task_root: "/var/task".into(),
        code: None,
        start: Start::Now,
        tmp_mb: 1,
        pids_max: 16,
        max_files: 64,
        private_network: false,
        memory_mb: 64,
        init: false,
        template: false,
        unprivileged: false,
    };
    let child = spawn(
        &spec,
        Isolation::Namespaces,
        root,
        None,
        &Cgroups::off(),
        "probe",
        false,
    )
    .map_err(ProbeError::Failed)?;
    let mut status = 0;
    // SAFETY: reaps the probe child we created.
    unsafe { libc::waitpid(child.pid as i32, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(ProbeError::Failed(format!(
            "a test sandbox ended with wait status {status}"
        )))
    }
}
