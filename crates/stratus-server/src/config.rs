//! Server settings. Each is a flag of `stratus server`, and its default is
//! written once, here (or, for the data plane's limits, in
//! `stratus_scheduler::Limits`, and for the public listener's, in
//! [`HttpSettings`](crate::HttpSettings)).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Environment variables the server and CLI read, in one place.
pub mod env {
    pub const DATA_DIR: &str = "STRATUS_DATA_DIR";
    pub const URL: &str = "STRATUS_URL";
    pub const TOKEN: &str = "STRATUS_TOKEN";
    pub const CA: &str = "STRATUS_CA";
    pub const PYTHON: &str = "STRATUS_PYTHON";
    pub const NODE: &str = "STRATUS_NODE";
    pub const ISOLATION: &str = "STRATUS_ISOLATION";
    pub const STORE: &str = "STRATUS_STORE";
    pub const UV: &str = "STRATUS_UV";
    pub const METRICS_TOKEN: &str = "STRATUS_METRICS_TOKEN";
    /// The OpenTelemetry SDKs' own variable for the collector's address.
    pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
}

/// How the server writes its own log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub const DEFAULT_DATA_DIR: &str = ".stratus";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";

#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// Where the server keeps its state; set by the CLI's --data-dir.
    #[arg(skip)]
    pub data_dir: PathBuf,
    /// Public listener, for application traffic
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Admin listener, for the control API
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,
    /// How long invocations in flight may finish after SIGINT/SIGTERM
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Region reported to functions (AWS_REGION)
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Logs older than this are deleted
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub log_retention: Duration,
    /// Oldest logs are deleted beyond this many bytes of messages
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub log_max_bytes: u64,
    /// An app's oldest logs are deleted beyond this many bytes of its own
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub log_max_bytes_per_app: u64,
    /// Bytes kept free in reserve on the data directory's disk (a file,
    /// DATA_DIR/reserve), given up when the disk fills so that logs can be
    /// trimmed to make room; 0 keeps none
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub disk_reserve: u64,
    /// Most bytes of log records held in memory waiting to be stored;
    /// records past it are dropped and counted
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub log_buffer_bytes: usize,
    /// Failed invocations' scenes (`stratus failures`) older than this are
    /// deleted
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub failure_retention: Duration,
    /// Failed invocations' scenes kept per function, the newest
    #[arg(long, default_value_t = 100)]
    pub failures_kept: usize,
    /// A failed invocation's event is kept (for replay) up to this many
    /// bytes; a larger one is left out of its scene
    #[arg(long, default_value_t = 1024 * 1024)]
    pub failure_max_event_bytes: usize,
    /// Start even on a database that this data directory was not used with
    /// (emptied, removed or replaced), and go on with it
    #[arg(long)]
    pub accept_empty_store: bool,
    /// Where the platform's state is kept: a PostgreSQL database
    /// (postgres://USER@HOST/DB) that several nodes may share; default:
    /// SQLite in the data directory
    #[arg(long, env = env::STORE)]
    pub store: Option<String>,
    /// Connections to a PostgreSQL store, at most
    #[arg(long, default_value_t = stratus_store_postgres::DEFAULT_POOL_SIZE)]
    pub store_pool_size: usize,
    /// A file holding the admin token to use (and keep in the data
    /// directory), so that every node of a cluster takes the same one;
    /// default: the data directory's own, made at first start
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// The key that seals stored secrets (made there if missing); every
    /// node sharing a store must be given the same one; default:
    /// DATA_DIR/secrets.key
    #[arg(long)]
    pub secrets_key_file: Option<PathBuf>,
    /// Name server (ADDR:PORT) that resolves the hosts of egress rules
    /// (`network.outbound`), with their TTLs; repeat for more. Default:
    /// the nameservers of /etc/resolv.conf
    #[arg(long = "resolver", value_name = "ADDR:PORT")]
    pub resolvers: Vec<SocketAddr>,
    /// An interpreter a built-in runtime runs on, by versioned name
    /// (python3.12=/usr/bin/python3.12, nodejs22=/opt/node22/bin/node), or
    /// a language's default, which python3 and nodejs name (python3=PATH);
    /// repeat for more. Default: python3 and node on PATH, and the other
    /// python3.N on PATH
    #[arg(long = "runtime", value_name = "NAME=PATH")]
    pub runtimes: Vec<crate::RuntimeFlag>,
    /// Count and time invocations, proxied requests and events for
    /// GET /metrics (Prometheus); false turns recording off
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics: bool,
    /// Also serve /metrics, /healthz and /readyz (and nothing else) on this
    /// address, for scrapers that must not reach the admin API
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// A token scrapers must send (Authorization: Bearer) for /metrics;
    /// default: none, /metrics is open to whoever reaches the listener
    #[arg(long, env = env::METRICS_TOKEN, hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Record spans (W3C trace context) of invocations, proxied requests,
    /// events, messages and schedules, for `stratus trace` and
    /// --otlp-endpoint; false records none (trace context is still passed
    /// on)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub traces: bool,
    /// Spans older than this are forgotten
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub trace_retention: Duration,
    /// The memory this node keeps its newest spans in, in bytes (about 400
    /// bytes a span); older ones are forgotten first
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub trace_buffer: usize,
    /// Export spans to this OpenTelemetry collector, OTLP over HTTP
    /// (protobuf), batched: its base address (http://127.0.0.1:4318, to
    /// which /v1/traces is added) or its traces endpoint, http or https. Spans the
    /// collector cannot take in time are dropped and counted
    /// (stratus_trace_spans_total{result="dropped"})
    #[arg(long, env = env::OTLP_ENDPOINT, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// How often the node holding the evaluation lease evaluates every
    /// app's alerts
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub alert_interval: Duration,
    /// The server's own log: text (colour only on a terminal) or json, one
    /// object per line
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten, next_help_heading = "Limits")]
    pub limits: Limits,
    #[command(flatten, next_help_heading = "Builds")]
    pub builds: BuildSettings,
    #[command(flatten, next_help_heading = "Quotas")]
    pub quotas: crate::QuotaSettings,
    #[command(flatten, next_help_heading = "Instances")]
    pub data_plane: stratus_scheduler::Limits,
    /// The public listener's domain and limits.
    #[command(flatten, next_help_heading = "Public listener")]
    pub http: crate::HttpSettings,
    #[command(flatten, next_help_heading = "Files (the S3 API)")]
    pub objects: crate::ObjectSettings,
    #[command(flatten, next_help_heading = "Documents")]
    pub database: crate::DatabaseSettings,
    #[command(flatten, next_help_heading = "End users")]
    pub auth: crate::AuthSettings,
}

/// The control plane's limits.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "control_plane_limits")]
pub struct Limits {
    /// Largest synchronous invocation payload, in bytes (413 beyond)
    #[arg(long = "max-payload", default_value_t = 6 * 1024 * 1024)]
    pub max_payload_bytes: usize,
    /// Largest uploaded code package, compressed, in bytes
    #[arg(long = "max-package", default_value_t = 250 * 1024 * 1024)]
    pub max_package_bytes: usize,
    /// Largest code package once unpacked, in bytes
    #[arg(long = "max-unpacked", default_value_t = 250 * 1024 * 1024)]
    pub max_unpacked_bytes: u64,
    /// Most functions and services one app may declare
    #[arg(long, default_value_t = 1000)]
    pub app_max_functions: usize,
    /// Versions of each app whose code this node keeps, to roll back to at
    /// once (the active one is always kept)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_versions: u32,
    /// How long a package no kept version uses stays after it was last
    /// uploaded or asked for (a deploy on its way needs it)
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub package_grace: Duration,
    /// Most connections the admin listener serves at once
    #[arg(long, default_value_t = 256)]
    pub admin_max_connections: usize,
    /// Most connections the platform API (STRATUS_API_URL) serves at once
    #[arg(long, default_value_t = 1024)]
    pub platform_max_connections: usize,
    /// Most platform API connections one app's instances may hold at once
    /// (429 beyond)
    #[arg(long, default_value_t = 128)]
    pub platform_max_connections_per_app: usize,
    /// Most platform API connections one instance may hold at once (429
    /// beyond)
    #[arg(long, default_value_t = 32)]
    pub platform_max_connections_per_instance: usize,
}

/// How dependency builds run.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildSettings {
    /// Longest one build step may run before it is stopped
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub build_timeout: Duration,
    /// Memory limit of a build, in MiB
    #[arg(long, default_value_t = 2048)]
    pub build_memory_mb: u32,
    /// The uv executable that installs Python requirements (much faster
    /// than pip, which is used without it); default: uv on PATH
    #[arg(long, env = env::UV)]
    pub uv: Option<PathBuf>,
    /// Builds of each app whose records (logs, steps) are kept
    #[arg(long, default_value_t = 20)]
    pub keep_builds: usize,
    /// Packages the Python runtime gives every function, as Lambda's gives
    /// boto3 (installed once, at start, where registries are reachable; a
    /// function's own requirements come first); empty: none
    #[arg(long, default_value = "boto3")]
    pub python_packages: String,
}

impl ServerConfig {
    /// Every default, with the state in `data_dir`.
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: ServerConfig,
        }
        let mut config = <Defaults as clap::Parser>::parse_from(["stratus"]).config;
        config.data_dir = data_dir;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::ServerConfig;

    #[test]
    fn the_defaults_are_the_flags_defaults() {
        let config = ServerConfig::new("data".into());
        assert_eq!(config.listen.to_string(), super::DEFAULT_LISTEN);
        assert_eq!(config.data_plane.queue_depth, 100);
        assert_eq!(config.data_plane.max_response_bytes, 6 * 1024 * 1024);
        assert_eq!(config.limits.max_unpacked_bytes, 250 * 1024 * 1024);
        assert_eq!(config.http.domain, "localhost");
        assert!(config.http.tls().is_none());
    }
}
