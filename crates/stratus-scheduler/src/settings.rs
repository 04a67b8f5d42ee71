//! The scheduler's settings: what the server's flags say about the data
//! plane, and where the interpreters are.

use std::path::PathBuf;
use std::time::Duration;

use stratus_runtimes::InstalledRuntimes;

/// Scheduler settings. Their defaults are the server's flags'.
#[derive(Debug, Clone)]
pub struct Settings {
    pub python: Interpreter,
    pub node: Interpreter,
    pub runtimes: InstalledRuntimes,
    pub region: String,
    /// Callers that may wait for a busy function before throttling starts.
    pub queue_depth: usize,
    /// Longest a caller waits for an instance before it is throttled.
    pub queue_timeout: Duration,
    /// Longest a runtime may take to initialise before its first event.
    pub init_timeout: Duration,
    /// Idle instances are stopped after this long without work.
    pub keep_alive: Duration,
    pub max_response_bytes: usize,
    /// Most instances of one application, all functions and versions together.
    pub app_max_instances: u32,
    /// Size of each instance's private `/tmp` under isolation, in MiB.
    pub tmp_mb: u32,
    /// Most processes of one instance, where cgroups are available.
    pub pids_max: u32,
    /// Most processes made ahead of demand per runtime and network mode;
    /// 0 makes every instance start from nothing.
    pub prestart_max: usize,
    /// Variables every instance gets before the Lambda ones (LANG, TZ, ...).
    pub base_env: Vec<(String, String)>,
    /// The server's PATH, for instances without isolation.
    pub host_path: String,
}

/// An interpreter the built-in runtimes run on.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub executable: PathBuf,
    /// Its installation directory when that lies outside the host's system
    /// directories (a pyenv or nvm install): shared read-only with sandboxes.
    pub prefix: Option<PathBuf>,
}

impl Settings {
    /// The Lambda-style ARN of function `qualified` (`app.function`).
    pub fn function_arn(&self, qualified: &str) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{qualified}",
            self.region
        )
    }
}
