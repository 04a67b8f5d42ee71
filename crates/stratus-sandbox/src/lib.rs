//! The sandbox: the one place that creates tenant processes.
//!
//! [`Launcher`] is the interface the scheduler uses to start an instance's
//! process and [`ProcessLauncher`] the implementation without isolation:
//! each instance is a plain child process in its own process group, with
//! a cleared environment, its output on pipes, and a parent-death signal so
//! that it cannot outlive the server. Namespaces, cgroups and seccomp
//! replace it behind the same interface.
#![allow(unsafe_code)] // process-group signals and the parent-death signal need libc.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

/// What to start.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Working directory: the function's code.
    pub cwd: PathBuf,
    /// The complete environment; nothing of the server's is inherited.
    pub env: Vec<(String, String)>,
    /// The function's memory size, for launchers that enforce it.
    pub memory_mb: u32,
}

/// A started process: its output pipes and a handle to wait on it.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub child: Child,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("cannot create output pipes: {0}")]
    Pipe(io::Error),
}

/// Starts tenant processes.
pub trait Launcher: Send + Sync + 'static {
    fn spawn(&self, spec: &ProcessSpec) -> Result<Spawned, SandboxError>;
    /// A short description of the isolation applied, for start-up messages.
    fn isolation(&self) -> &'static str;
}

/// Plain child processes: no isolation between tenants.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessLauncher;

impl Launcher for ProcessLauncher {
    fn spawn(&self, spec: &ProcessSpec) -> Result<Spawned, SandboxError> {
        let (stdout_rx, stdout_tx) = io::pipe().map_err(SandboxError::Pipe)?;
        let (stderr_rx, stderr_tx) = io::pipe().map_err(SandboxError::Pipe)?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(OwnedFd::from(stdout_tx)))
            .stderr(Stdio::from(OwnedFd::from(stderr_tx)))
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure runs in the child between fork and exec and only
        // calls prctl, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| SandboxError::Spawn {
            program: spec.program.display().to_string(),
            source,
        })?;
        // Dropping the command closes our copies of the pipes' write ends, so
        // the readers see end-of-file when the process group exits.
        drop(command);
        let pid = child.id().unwrap_or_default();
        let stdout =
            pipe::Receiver::from_owned_fd(OwnedFd::from(stdout_rx)).map_err(SandboxError::Pipe)?;
        let stderr =
            pipe::Receiver::from_owned_fd(OwnedFd::from(stderr_rx)).map_err(SandboxError::Pipe)?;
        Ok(Spawned {
            pid,
            child,
            stdout,
            stderr,
        })
    }

    fn isolation(&self) -> &'static str {
        "none: instances are plain child processes that share the host's users, files and network"
    }
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

/// Kills the process group led by `pid` at once.
pub fn kill_group(pid: u32) {
    signal_group(pid, libc::SIGKILL);
}

/// Asks the process group led by `pid` to stop.
pub fn terminate_group(pid: u32) {
    signal_group(pid, libc::SIGTERM);
}

/// Peak resident memory of a process in KiB (`VmHWM`), while it runs.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
