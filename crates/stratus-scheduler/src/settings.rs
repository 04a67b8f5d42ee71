//! The scheduler's settings: the data plane's limits, which are the
//! server's flags (with the `clap` feature), and what the server found
//! out about the host.

use std::path::PathBuf;
use std::time::Duration;

use stratus_runtimes::InstalledRuntimes;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub python: Interpreter,
    pub node: Interpreter,
    pub runtimes: InstalledRuntimes,
    /// Reported to functions (`AWS_REGION`) and in their ARNs.
    pub region: String,
    pub limits: Limits,
    /// Variables every instance gets before the Lambda ones (LANG, TZ, ...).
    pub base_env: Vec<(String, String)>,
    /// The server's PATH, for instances without isolation.
    pub host_path: String,
    /// Name servers that resolve egress rules' hosts; `None`: those of
    /// `/etc/resolv.conf`.
    pub name_servers: Option<Vec<std::net::SocketAddr>>,
    /// What each instance is told of the platform's API; `None`: nothing.
    pub platform_api: Option<std::sync::Arc<dyn PlatformApi>>,
}

/// The platform's API as instances see it: variables each instance gets
/// of its own (where the API is, and a credential that names the
/// instance), which only the platform can make.
pub trait PlatformApi: Send + Sync + std::fmt::Debug {
    /// The variables of instance `instance` of app `app`.
    fn env(&self, app: &str, instance: &str) -> Vec<(String, String)>;
}

/// The data plane's limits. Each default is written here once, as the
/// server's flag.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", group(id = "data_plane_limits"))]
pub struct Limits {
    /// Callers that may wait for a busy function before it throttles
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 100))]
    pub queue_depth: usize,
    /// Longest a caller waits for a free instance before it is throttled
    #[cfg_attr(feature = "clap", arg(long, default_value = "10s", value_parser = humantime::parse_duration))]
    pub queue_timeout: Duration,
    /// Longest a runtime may take to initialise
    #[cfg_attr(feature = "clap", arg(long, default_value = "10s", value_parser = humantime::parse_duration))]
    pub init_timeout: Duration,
    /// Idle instances stop after this long without work
    #[cfg_attr(feature = "clap", arg(long, default_value = "10m", value_parser = humantime::parse_duration))]
    pub keep_alive: Duration,
    /// An idle function instance is frozen after this long without an
    /// event, so one kept busy is not frozen and thawed between events
    #[cfg_attr(feature = "clap", arg(long, default_value = "20ms", value_parser = humantime::parse_duration))]
    pub freeze_after: Duration,
    /// Largest result a function may return, in bytes
    #[cfg_attr(feature = "clap", arg(long = "max-response", default_value_t = 6 * 1024 * 1024))]
    pub max_response_bytes: usize,
    /// Most instances of one application, all its functions and services
    /// together; nodes that share a store divide it among themselves
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 300))]
    pub app_max_instances: u32,
    /// Size of each instance's private /tmp under isolation, in MiB
    #[cfg_attr(feature = "clap", arg(long = "tmp-size", default_value_t = 512))]
    pub tmp_mb: u32,
    /// Most processes of one instance (a cgroup limit)
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 256))]
    pub pids_max: u32,
    /// Most open files and sockets of each process of an instance
    /// (RLIMIT_NOFILE), well below the server's own
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1024))]
    pub instance_max_files: u32,
    /// Bytes of log lines one instance may write per second (a second's
    /// worth may come at once); lines past it are dropped, and its log
    /// says how many
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2 * 1024 * 1024))]
    pub instance_log_rate: u64,
    /// Most sandboxes made ahead of demand per runtime and network mode,
    /// runtime started, for cold starts to take; 0 turns this off
    #[cfg_attr(feature = "clap", arg(long = "prestart", default_value_t = 8))]
    pub prestart_max: usize,
    /// Make Python instances by forking a loaded template into each new
    /// sandbox rather than starting an interpreter in it
    #[cfg_attr(feature = "clap", arg(long, default_value_t = true, action = clap::ArgAction::Set))]
    pub templates: bool,
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
