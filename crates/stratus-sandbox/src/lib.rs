//! The sandbox: the one place that creates tenant processes.
//!
//! A small single-threaded launcher process is forked from `stratus` before
//! the async runtime starts ([`launcher::start`]); the server asks it for
//! processes over a Unix socket ([`LauncherClient`]) and never forks tenant
//! code itself. With [`Isolation::Namespaces`] each process gets its own
//! user, pid, mount, uts and ipc namespaces, runs as an unprivileged uid
//! without capabilities and with `no_new_privs`, and sees a filesystem made
//! of the host's system directories read-only, its code read-only at its
//! task root, a private size-limited `/tmp`, and nothing else of the host,
//! under a seccomp filter that refuses the system calls that reach past it.
//! With [`Isolation::None`] it is a plain child process in its own process
//! group. Both get cgroup limits where the host offers cgroups: memory,
//! pids and a CPU weight. Either way it dies with the launcher, which dies with the server.
#![allow(unsafe_code)] // fork, clone, mount and friends need libc.

mod btf;
mod cgroup;
mod client;
mod fs;
mod init;
mod landlock;
pub mod launcher;
mod listen;
mod net;
mod netguard;
mod seccomp;
mod slot;
mod spawn;
mod template;
mod wire;

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{LauncherClient, Spawned};
pub use net::RUNTIME_API_ADDR;
pub use netguard::{
    RUNTIME_API_HOST, SERVICE_ADDRS, SERVICE_NET, SERVICE_PREFIX, service_addr, service_listening,
};

/// How tenant processes are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Plain child processes: tenants share the host's users, files and network.
    None,
    /// User, pid, mount, uts and ipc namespaces with a private filesystem view.
    Namespaces,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Namespaces => "namespaces",
        }
    }
}

/// What the operator asked for with `--isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationRequest {
    /// The strongest the host allows.
    Auto,
    Exactly(Isolation),
}

fn default_max_files() -> u32 {
    1024
}

/// A host path made visible inside the sandbox: read-only, unless
/// `writable` (a build's working directory and caches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host: PathBuf,
    pub sandbox: PathBuf,
    #[serde(default)]
    pub writable: bool,
}

/// When a new process runs its program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Start {
    /// At once. The program reads its [`Activation`] from descriptor
    /// [`ACTIVATION_FD`] when it is ready for one: a runtime started ahead
    /// of demand, waiting to be handed a function.
    Now,
    /// Only once activated, with the activation's environment, directory
    /// and program: a sandbox made ahead of demand for a program that is
    /// not known yet (a `provided` function's `bootstrap`).
    OnActivation,
}

/// The descriptor on which a process started with [`Start::Now`] receives
/// its activation: one line of JSON, then end of file.
pub const ACTIVATION_FD: i32 = 3;

/// What to start. Paths (`program`, `cwd`, arguments) are as the process
/// sees them: under namespaces that is the sandbox's view, built from
/// `mounts`; without isolation, `mounts` is ignored and paths are the host's.
///
/// A process is made in two steps: [`LauncherClient::spawn`] builds its
/// sandbox (and, with [`Start::Now`], starts its program), and
/// [`LauncherClient::activate`] hands it a function: code, environment and
/// memory. The first step can happen long before the function is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The environment the program starts with; nothing of the server's
    /// is inherited.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// Where the function's code appears inside the sandbox once activated.
    pub task_root: PathBuf,
    /// The code, when it is known now: shown at `task_root` from the start.
    /// Otherwise it is attached on activation.
    pub code: Option<PathBuf>,
    pub start: Start,
    /// Size of the private writable `/tmp`, in MiB.
    pub tmp_mb: u32,
    /// Most processes the instance may have, where cgroups are available.
    pub pids_max: u32,
    /// Most open files (descriptors, sockets among them) of each of the
    /// instance's processes: `RLIMIT_NOFILE`, soft and hard.
    #[serde(default = "default_max_files")]
    pub max_files: u32,
    /// A network namespace of its own with only loopback, the Runtime API
    /// listening in it at [`RUNTIME_API_ADDR`]. Needs namespaces.
    #[serde(default)]
    pub private_network: bool,
    /// The memory limit until activation sets the function's own.
    pub memory_mb: u32,
    /// Under namespaces, a minimal init (as `docker run --init` gives) is
    /// the pid namespace's first process instead of the program, which
    /// runs as its child in a process group of its own. A namespace's
    /// first process gets signals from outside it only if it handles them
    /// and must reap the namespace's orphans; a program not written to be
    /// an init does neither, and so a SIGTERM from [`terminate_group`]
    /// would not reach a web server without a handler. The init passes on
    /// SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
    /// program's process group, reaps every orphan, and ends when the
    /// program does, with its [`ExitStatus`]. Without isolation the
    /// program leads its process group and gets its signals as it is, and
    /// this changes nothing.
    #[serde(default)]
    pub init: bool,
    /// The program (a runtime started with [`Start::Now`]) may be made
    /// from a template: one copy of it started outside any sandbox, loaded
    /// and forked into each new sandbox, instead of starting it afresh
    /// (see `template.rs`). The template reads `STRATUS_TEMPLATE_FD` and
    /// is started with this spec's environment; where it cannot start,
    /// the program starts afresh as without this.
    #[serde(default)]
    pub template: bool,
    /// Without namespaces, run the program as the unprivileged user
    /// (`nobody`) rather than as the server's own (builds run so). Under
    /// namespaces every program runs unprivileged anyway.
    #[serde(default)]
    pub unprivileged: bool,
}

/// Hands a made process its function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The function's code on the host, shown read-only at the spec's
    /// `task_root` unless it was given at spawn.
    pub code: PathBuf,
    /// The complete environment of the function.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// The program to run, for [`Start::OnActivation`].
    pub program: PathBuf,
    /// The function's memory size: its memory limit and CPU weight.
    pub memory_mb: u32,
    /// The program's arguments, for [`Start::OnActivation`], in place of
    /// the spec's: a sandbox made ahead of demand does not know them.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// The port of its Runtime API at [`RUNTIME_API_HOST`], when it shares
    /// the host's network: the only one there it may reach.
    #[serde(default)]
    pub runtime_api_port: Option<u16>,
    /// This instance is a service: every bind it makes to a port is moved
    /// to this address, one of [`SERVICE_NET`] that no other live instance
    /// holds ([`service_addr`]), where only the platform reaches it.
    /// Honoured only where [`LauncherClient::service_fence`] says so;
    /// elsewhere the service binds where it asks.
    #[serde(default)]
    pub service_addr: Option<std::net::Ipv4Addr>,
    /// Where it may connect, when it shares the host's network and that is
    /// narrower than anywhere: honoured only where
    /// [`LauncherClient::egress_fence`] says so, and the server must not
    /// start such an instance elsewhere.
    #[serde(default)]
    pub egress: Option<EgressRule>,
}

/// Where an instance on the host's network may connect, beyond the
/// platform's endpoints ([`LauncherClient::platform_endpoints`]): the
/// destinations of its policy ([`LauncherClient::set_egress`]) when
/// `listed`, anywhere but loopback otherwise; and anywhere on loopback
/// when `loopback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EgressRule {
    /// The policy whose destinations apply, from 1 to [`MAX_EGRESS_POLICY`].
    pub policy: u32,
    pub listed: bool,
    pub loopback: bool,
}

pub use netguard::{MAX_EGRESS_DESTINATIONS, MAX_EGRESS_POLICY};

/// How a process ended. For one with an init ([`ProcessSpec::init`]), how
/// its program ended, unless the init was killed first (as
/// [`kill_group`] kills it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The kernel killed it, or one of its processes, at its memory limit.
    #[serde(default)]
    pub oom_killed: bool,
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.oom_killed {
            return f.write_str("an out-of-memory kill");
        }
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "status {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => f.write_str("an unknown status"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start {program}: {message}")]
    Spawn { program: String, message: String },
    #[error("the launcher is gone; restart the server")]
    LauncherGone,
    #[error("cannot start the launcher: {0}")]
    Start(io::Error),
    #[error(
        "--isolation {requested}: cannot isolate tenants here: {reason}. Fix the cause, or run with --isolation none to run tenant code without isolation"
    )]
    Unavailable { requested: String, reason: String },
    #[error("launcher protocol: {0}")]
    Protocol(String),
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: i32) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions.
    let rc = unsafe { libc::kill(-(pid as i32), signal) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pid, signal, error = %err, "cannot signal process group");
        }
    }
}

/// Kills the process group led by `pid` at once. Under namespaces the
/// leader is the namespace's init (the program, or the init that runs it
/// with [`ProcessSpec::init`]), and everything in it dies with it.
pub fn kill_group(pid: u32) {
    signal_group(pid, libc::SIGKILL);
}

/// Asks the process group led by `pid` to stop. Under namespaces a
/// program without a handler for SIGTERM gets it only with
/// [`ProcessSpec::init`]: the namespace's first process, which leads the
/// group, gets no signal from outside that it does not handle.
pub fn terminate_group(pid: u32) {
    signal_group(pid, libc::SIGTERM);
}

/// Sends SIGUSR2 to one process: how the built-in runtimes are asked to
/// start and stop a profile.
pub fn send_sigusr2(pid: u32) -> io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid as i32, libc::SIGUSR2) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `user_usec` and `system_usec` of a cgroup v2 `cpu.stat`.
pub fn cpu_stat_us(stat: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        stat.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((field("user_usec")?, field("system_usec")?))
}

/// Peak resident memory of a process in KiB (`VmHWM`), while it runs.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
