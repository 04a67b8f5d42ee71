//! Server settings, with their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Environment variables the server and CLI read, in one place.
pub mod env {
    pub const DATA_DIR: &str = "STRATUS_DATA_DIR";
    pub const URL: &str = "STRATUS_URL";
    pub const TOKEN: &str = "STRATUS_TOKEN";
    pub const PYTHON: &str = "STRATUS_PYTHON";
    pub const NODE: &str = "STRATUS_NODE";
    pub const ISOLATION: &str = "STRATUS_ISOLATION";
}

pub const DEFAULT_DATA_DIR: &str = ".stratus";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// How long invocations in flight may run on after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    pub limits: Limits,
    pub region: String,
    pub keep_alive: Duration,
    /// Most processes made ahead of demand per runtime and network mode.
    pub prestart: usize,
    pub log_retention: Duration,
    pub log_max_bytes: u64,
    /// The public listener's domain and limits.
    pub http: crate::HttpSettings,
}

/// Request and capacity limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest synchronous invocation payload (413 beyond).
    pub max_payload_bytes: usize,
    /// Largest result a function may return.
    pub max_response_bytes: usize,
    /// Largest uploaded code package, compressed.
    pub max_package_bytes: usize,
    /// Largest code package once unpacked.
    pub max_unpacked_bytes: u64,
    pub queue_depth: usize,
    pub queue_timeout: Duration,
    pub init_timeout: Duration,
    /// Size of each instance's private `/tmp` under isolation, in MiB.
    pub tmp_mb: u32,
    /// Most processes of one instance.
    pub pids_max: u32,
    /// Most instances of one application, all its functions together.
    pub app_max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 6 * 1024 * 1024,
            max_response_bytes: 6 * 1024 * 1024,
            max_package_bytes: 250 * 1024 * 1024,
            max_unpacked_bytes: 250 * 1024 * 1024,
            queue_depth: 100,
            queue_timeout: Duration::from_secs(10),
            init_timeout: Duration::from_secs(10),
            tmp_mb: 512,
            pids_max: 256,
            app_max_instances: 300,
        }
    }
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            data_dir,
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            admin_listen: DEFAULT_ADMIN_LISTEN.parse().expect("valid default"),
            shutdown_grace: Duration::from_secs(10),
            limits: Limits::default(),
            region: "us-east-1".to_owned(),
            keep_alive: Duration::from_secs(600),
            prestart: 8,
            log_retention: Duration::from_secs(7 * 24 * 3600),
            log_max_bytes: 512 * 1024 * 1024,
            http: crate::HttpSettings::default(),
        }
    }
}
