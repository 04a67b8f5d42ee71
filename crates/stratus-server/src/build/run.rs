//! Running one build step: a tool (uv, pip, npm, ...) in a sandbox of its
//! own, made by the launcher as instances are (namespaces, cgroups,
//! seccomp, Landlock), with the host's network, the code read-only, a
//! writable working directory and cache, a memory limit and a timeout.
//! Without namespaces it runs as `nobody` with the same limits.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stratus_sandbox::{Isolation, Mount, ProcessSpec, Start};
use stratus_scheduler::Launch;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// What a build tells whoever watches it.
#[derive(Debug, Clone)]
pub(crate) enum Progress {
    /// A step begins (or is found done already).
    Step(String),
    /// A line of a step's output.
    Line(String),
    /// What came of the whole request, last.
    Done(serde_json::Value),
}

/// Bytes of output a build's record keeps: the newest lines.
const LOG_BYTES: usize = 256 * 1024;
/// Lines of a failed step's output its error shows.
pub(crate) const FAILURE_LINES: usize = 30;

/// A build's output: sent on to its watcher, and kept (the newest
/// [`LOG_BYTES`]) for its record.
#[derive(Default)]
pub(crate) struct Sink {
    watcher: Option<mpsc::UnboundedSender<Progress>>,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: usize,
}

impl Sink {
    pub fn new(watcher: Option<mpsc::UnboundedSender<Progress>>) -> Arc<Sink> {
        Arc::new(Sink {
            watcher,
            log: Mutex::default(),
        })
    }

    pub fn step(&self, text: String) {
        self.keep(format!("==> {text}"));
        if let Some(w) = &self.watcher {
            let _ = w.send(Progress::Step(text));
        }
    }

    pub fn line(&self, text: String) {
        self.keep(text.clone());
        if let Some(w) = &self.watcher {
            let _ = w.send(Progress::Line(text));
        }
    }

    /// Tells the watcher how the request ended.
    pub fn done(&self, outcome: serde_json::Value) {
        if let Some(w) = &self.watcher {
            let _ = w.send(Progress::Done(outcome));
        }
    }

    fn keep(&self, line: String) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.bytes += line.len() + 1;
        log.lines.push_back(line);
        while log.bytes > LOG_BYTES {
            let Some(gone) = log.lines.pop_front() else {
                break;
            };
            log.bytes -= gone.len() + 1;
            log.dropped += 1;
        }
    }

    /// Everything kept, one line each.
    pub fn text(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(log.bytes + 64);
        if log.dropped > 0 {
            out.push_str(&format!("[{} earlier lines not kept]\n", log.dropped));
        }
        for line in &log.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// The newest `n` lines.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.lines
            .iter()
            .skip(log.lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// One command of a build.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
}

/// Where a step runs and what it may use.
pub(crate) struct Room {
    pub isolation: Isolation,
    /// The code, read-only: the step's `/var/task`.
    pub code: PathBuf,
    /// Mounts besides the code (host and sandbox paths alike without
    /// namespaces, where they are not made).
    pub mounts: Vec<Mount>,
    pub memory_mb: u32,
    pub timeout: Duration,
    /// Whether the step runs as the user nobody (a server running as
    /// root without namespaces; namespaced sandboxes always do).
    pub as_nobody: bool,
}

/// Runs `step`, its output into `sink`; `Err` says how it failed.
pub(crate) async fn run(
    launcher: &Arc<dyn Launch>,
    room: &Room,
    step: &Step,
    sink: &Arc<Sink>,
) -> Result<(), String> {
    let spec = ProcessSpec {
        program: step.program.clone(),
        args: step.args.clone(),
        cwd: step.cwd.clone(),
        env: step.env.clone(),
        mounts: match room.isolation {
            Isolation::Namespaces => room.mounts.clone(),
            Isolation::None => Vec::new(),
        },
        task_root: PathBuf::from(super::TASK_ROOT),
        code: Some(room.code.clone()),
        start: Start::Now,
        tmp_mb: 1024,
        pids_max: 4096,
        max_files: 16_384,
        private_network: false,
        memory_mb: room.memory_mb,
        init: true,
        template: false,
        unprivileged: room.as_nobody,
    };
    let spawned = launcher
        .spawn(&spec)
        .await
        .map_err(|e| format!("cannot start the step: {e}"))?;
    let pid = spawned.pid;
    let readers = [
        tokio::spawn(pump(spawned.stdout, sink.clone())),
        tokio::spawn(pump(spawned.stderr, sink.clone())),
    ];
    let status = tokio::time::timeout(room.timeout, spawned.exited).await;
    // Whatever it left running goes with it.
    launcher.signal(pid, stratus_scheduler::Signal::Kill);
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    match status {
        Err(_) => Err(format!(
            "it ran longer than {} (--build-timeout) and was stopped",
            humantime::format_duration(room.timeout)
        )),
        Ok(Err(_)) => Err("the launcher went away; restart the server".to_owned()),
        Ok(Ok(status)) if status.oom_killed => Err(format!(
            "it ran out of memory ({} MiB, --build-memory-mb)",
            room.memory_mb
        )),
        Ok(Ok(status)) if status.code == Some(0) => Ok(()),
        Ok(Ok(status)) => Err(format!("it exited with {status}")),
    }
}

/// Reads `pipe` into lines of `sink` until it closes.
async fn pump(pipe: impl AsyncRead + Unpin, sink: Arc<Sink>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                // A progress bar redraws with CRs: its last state counts.
                let text = text.trim_end().rsplit('\r').next().unwrap_or("");
                if !text.trim().is_empty() {
                    sink.line(text.to_owned());
                }
            }
        }
    }
}
