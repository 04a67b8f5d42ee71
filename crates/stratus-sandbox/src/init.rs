//! A minimal init, as `tini` or `docker run --init` give, for a process
//! that asks for one ([`ProcessSpec::init`]) under namespaces.
//!
//! The namespace's first process is its pid 1, and the kernel treats it as
//! an init: a signal from outside the namespace reaches it only if it has
//! a handler for it (SIGKILL excepted), and the namespace's orphans are
//! reparented to it, to be reaped. A program that is not written to be an
//! init gets neither right: the platform's SIGTERM is lost on a web server
//! without a handler, which then has to be killed, and the zombies of its
//! orphaned grandchildren pile up.
//!
//! So the first process stays behind as the init, and the program runs as
//! its child, set up exactly as it would have been as pid 1. The init
//! passes on to the program's process group the signals meant for it,
//! reaps every child, and when the program ends hands its wait status to
//! the launcher on a pipe ([`program_status`]) and exits, which ends
//! everything else in the namespace.
//!
//! The init runs in a forked child of the launcher, with the sandbox's
//! seccomp filter, Landlock rules and ids. After the fork it makes only
//! system calls: nothing that allocates or takes a lock, all of it safe in
//! a signal handler.
//!
//! [`ProcessSpec::init`]: crate::ProcessSpec::init

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The signals the init passes on to the program: those a platform or an
/// operator sends to ask a program to stop, reload or report.
pub(crate) const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// How long the init sleeps at most between looks for exited children.
/// SIGCHLD wakes it at once; this only bounds a wakeup that was missed.
const RECHECK: libc::timespec = libc::timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// The signals the init waits for, kept blocked: those it forwards and
/// SIGCHLD. A blocked signal is queued even for a namespace's init with no
/// handler, which the kernel would otherwise drop.
fn waited() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in FORWARDED {
            libc::sigaddset(&mut set, signal);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// In the namespace's first process, once its sandbox is set up: forks
/// the program's process. Returns in that child, which goes on to run the
/// program as the first process would have: the fork keeps the seccomp
/// filter, the Landlock rules, the ids, the cgroups, the descriptors and
/// the signal dispositions, and the child gets back the signal mask. It
/// leads a process group of its own, which the init signals. The parent
/// becomes the init and never returns; `Err` if there is no fork.
///
/// `status_fd` is where the init writes the program's wait status; the
/// child must not keep it past its exec (it is close-on-exec).
pub(crate) fn fork_program(status_fd: RawFd) -> io::Result<()> {
    let set = waited();
    // SAFETY: a zeroed sigset_t is a valid value; sigprocmask fills it.
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    // Blocked before the fork, so that a signal that arrives while the
    // init is being made waits for it instead of being dropped.
    // SAFETY: sigprocmask reads the local set and fills a local mask.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut before) };
    // SAFETY: the launcher is single-threaded, so is this child of it, and
    // the forked child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = io::Error::last_os_error();
        // SAFETY: restores the mask saved above.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) };
        return Err(err);
    }
    if pid == 0 {
        // SAFETY: plain syscalls in the child before exec. Its own group,
        // so that the init's signals reach what the program starts as
        // they would reach it without namespaces, and not the init.
        unsafe {
            libc::setpgid(0, 0);
            libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        }
        return Ok(());
    }
    // SAFETY: setpgid on our own child: the child does the same, and
    // whichever runs first makes the group, so no signal is forwarded to
    // a group that is not there yet. Errors (the child has exec'd, and so
    // made the group itself) change nothing.
    unsafe { libc::setpgid(pid, pid) };
    supervise(pid, status_fd, false)
}

/// The pid, in the namespace, of a program made from a template: the
/// first process to join the namespace after its init, which forks
/// nothing.
pub(crate) const ADOPTED_PROGRAM: libc::pid_t = 2;

/// In the namespace's first process of a sandbox whose program is made
/// elsewhere ([`crate::template`]): becomes the init at once and waits for
/// the program, which joins the namespace as [`ADOPTED_PROGRAM`] and
/// becomes this init's child when the process that forked it ends. Until
/// then there is no child, and that is no reason to end.
pub(crate) fn adopt(status_fd: RawFd) -> ! {
    let set = waited();
    // SAFETY: sigprocmask reads the local set.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    supervise(ADOPTED_PROGRAM, status_fd, true)
}

/// The init's loop: forwards signals, reaps children, and ends when the
/// program does. An init that `adopts` its program waits for it however
/// long it has no child.
fn supervise(program: libc::pid_t, status_fd: RawFd, adopts: bool) -> ! {
    // Nothing of the launcher's is the init's business: its copies of the
    // error pipe, the instance's output and the activation would keep them
    // open, and those of other instances' pipes their ends.
    // SAFETY: closes descriptors this process never uses again; the
    // OwnedFds in its callers' frames that own some of them are never
    // dropped, since this process ends in _exit.
    unsafe { close_all_but(status_fd) };
    let set = waited();
    loop {
        // SAFETY: the set and the timeout are valid locals; no siginfo is
        // asked for.
        let signal = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &RECHECK) };
        if FORWARDED.contains(&signal) {
            forward(program, signal);
        }
        reap(program, status_fd, adopts);
    }
}

/// Sends `signal` to the program's process group, or to the program
/// alone if it has left the group.
fn forward(program: libc::pid_t, signal: libc::c_int) {
    // Never 0 or 1, so -program is never this process's group (0) or
    // every process there is (-1).
    if program <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        if libc::kill(-program, signal) != 0 {
            libc::kill(program, signal);
        }
    }
}

/// Reaps every child that has exited; ends the init as the program ended,
/// once it has.
fn reap(program: libc::pid_t, status_fd: RawFd, adopts: bool) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == program {
            exit_as(status, status_fd);
        }
        if pid > 0 {
            continue;
        }
        if pid < 0 && !adopts && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            // No children, so no program: it cannot be, but an init with
            // nothing to wait for must not wait forever.
            // SAFETY: ends this process, which owns nothing to clean up.
            unsafe { libc::_exit(1) };
        }
        return;
    }
}

/// Hands the program's wait status to the launcher and exits with its
/// exit code, or 128 and its signal's number if a signal ended it, as a
/// shell says. An init cannot die of a signal it sends itself, so the
/// launcher reports the status from the pipe.
fn exit_as(status: libc::c_int, status_fd: RawFd) -> ! {
    let bytes = status.to_ne_bytes();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    };
    // SAFETY: writes a local buffer (less than PIPE_BUF, so at once and
    // whole, into an empty pipe), then ends this process, which owns
    // nothing to clean up; its end takes the namespace with it.
    unsafe {
        libc::write(status_fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(code)
    }
}

/// Closes every descriptor but `keep`.
///
/// # Safety
/// Nothing in this process may use the descriptors closed.
unsafe fn close_all_but(keep: RawFd) {
    let close_range = |first: libc::c_uint, last: libc::c_uint| -> bool {
        // SAFETY: close_range(2) takes plain integers; the caller owns
        // the descriptors in the range.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) == 0 }
    };
    let keep = keep.max(0) as libc::c_uint;
    let below = keep == 0 || close_range(0, keep - 1);
    let above = close_range(keep + 1, libc::c_uint::MAX);
    if below && above {
        return;
    }
    // A kernel before 5.9: one by one, up to the limit on descriptors.
    // SAFETY: getrlimit fills a local struct; close takes integers.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        let last = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1024
        };
        for fd in 0..last {
            if fd != keep as libc::c_int {
                libc::close(fd);
            }
        }
    }
}

/// In the launcher, once the process has been reaped: the program's wait
/// status, if its init wrote one. None if the init itself was killed
/// while the program ran, as a group kill does: then the init's own status
/// (SIGKILL) is the process's.
pub(crate) fn program_status(fd: &OwnedFd) -> Option<libc::c_int> {
    let mut bytes = [0u8; 4];
    // SAFETY: reads into a local buffer of the size given. The launcher's
    // end does not block, and every writer has ended by now anyway: the
    // init last, and the others before the init could be reaped.
    let n = unsafe { libc::read(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()) };
    (n == bytes.len() as isize).then(|| libc::c_int::from_ne_bytes(bytes))
}
