//! `stratus server`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use stratus_sandbox::launcher::LauncherHandle;
use stratus_sandbox::{Isolation, IsolationRequest, LauncherClient};
use stratus_server::config::{DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN};
use stratus_server::{ServerConfig, ServerInfo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::client::Connection;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Public listener, for application traffic
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Admin listener, for the control API
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,
    /// How long invocations in flight may finish after SIGINT/SIGTERM
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Idle instances stop after this long without work
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub keep_alive: Duration,
    /// Most sandboxes made ahead of demand per runtime and network mode,
    /// runtime started, for cold starts to take; 0 turns this off
    #[arg(long, default_value_t = 8)]
    pub prestart: usize,
    /// Callers that may wait for a busy function before it throttles
    #[arg(long, default_value_t = 100)]
    pub queue_depth: usize,
    /// Longest a caller waits for a free instance before it is throttled
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub queue_timeout: Duration,
    /// Longest a runtime may take to initialise
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub init_timeout: Duration,
    /// Largest synchronous invocation payload, in bytes
    #[arg(long, default_value_t = 6 * 1024 * 1024)]
    pub max_payload: usize,
    /// Largest code package once unpacked, in bytes
    #[arg(long, default_value_t = 250 * 1024 * 1024)]
    pub max_package: u64,
    /// Logs older than this are deleted
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub log_retention: Duration,
    /// Oldest logs are deleted beyond this many bytes of messages
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub log_max_bytes: u64,
    /// How instances are isolated: auto picks the strongest the host allows
    #[arg(long, value_enum, env = stratus_server::config::env::ISOLATION, default_value_t = IsolationArg::Auto)]
    pub isolation: IsolationArg,
    /// Most instances of one application, all its functions together
    #[arg(long, default_value_t = 300)]
    pub app_max_instances: u32,
    /// Most processes of one instance (a cgroup limit)
    #[arg(long, default_value_t = 256)]
    pub pids_max: u32,
    /// Size of each instance's private /tmp under isolation, in MiB
    #[arg(long, default_value_t = 512)]
    pub tmp_size: u32,
    /// Apps are reached at APP.DOMAIN on the public listener, as well as under /APP/
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Largest HTTP request body buffered for a function, in bytes (413 beyond)
    #[arg(long, default_value_t = 6 * 1024 * 1024)]
    pub max_body: usize,
    /// Largest HTTP request line and headers, in bytes (431 beyond)
    #[arg(long, default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Longest HTTP path and query, in bytes (414 beyond)
    #[arg(long, default_value_t = 8 * 1024)]
    pub max_url_bytes: usize,
    /// How long a client may take to send a request's headers
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (408 beyond)
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Most client connections the public listener serves at once; more
    /// wait to be accepted
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Serve the public listener over HTTPS with this PEM certificate chain
    /// (HTTP/2 and HTTP/1.1 by ALPN); needs --tls-key
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Region reported to functions (AWS_REGION)
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
}

impl ServerArgs {
    pub fn config(&self, conn: &Connection) -> ServerConfig {
        let mut config = ServerConfig::new(conn.data_dir.clone());
        config.listen = self.listen;
        config.admin_listen = self.admin_listen;
        config.shutdown_grace = self.shutdown_grace;
        config.keep_alive = self.keep_alive;
        config.prestart = self.prestart;
        config.region = self.region.clone();
        config.log_retention = self.log_retention;
        config.log_max_bytes = self.log_max_bytes;
        config.limits.queue_depth = self.queue_depth;
        config.limits.queue_timeout = self.queue_timeout;
        config.limits.init_timeout = self.init_timeout;
        config.limits.max_payload_bytes = self.max_payload;
        config.limits.max_unpacked_bytes = self.max_package;
        config.limits.max_package_bytes = self.max_package as usize;
        config.limits.tmp_mb = self.tmp_size;
        config.limits.pids_max = self.pids_max;
        config.limits.app_max_instances = self.app_max_instances;
        config.http.domain = self.domain.trim_matches('.').to_ascii_lowercase();
        config.http.max_body_bytes = self.max_body;
        config.http.max_header_bytes = self.max_header_bytes;
        config.http.max_url_bytes = self.max_url_bytes;
        config.http.header_timeout = self.header_timeout;
        config.http.body_timeout = self.body_timeout;
        config.http.max_connections = self.max_connections;
        config.http.tls = self
            .tls_cert
            .clone()
            .zip(self.tls_key.clone())
            .map(|(cert, key)| stratus_server::TlsFiles { cert, key });
        config
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    Auto,
    Namespaces,
    None,
}

impl IsolationArg {
    pub fn request(self) -> IsolationRequest {
        match self {
            IsolationArg::Auto => IsolationRequest::Auto,
            IsolationArg::Namespaces => IsolationRequest::Exactly(Isolation::Namespaces),
            IsolationArg::None => IsolationRequest::Exactly(Isolation::None),
        }
    }
}

/// Connects to the launcher and insists on the isolation that was asked for.
pub fn connect(args: &ServerArgs, handle: LauncherHandle) -> anyhow::Result<LauncherClient> {
    let launcher = LauncherClient::connect(handle)?;
    if args.isolation == IsolationArg::Namespaces && launcher.isolation() != Isolation::Namespaces {
        anyhow::bail!(
            "--isolation namespaces is not available on this host ({}); use --isolation none to run without isolation",
            launcher.reason()
        );
    }
    Ok(launcher)
}

pub async fn run(
    conn: &Connection,
    args: ServerArgs,
    launcher: LauncherHandle,
) -> anyhow::Result<ExitCode> {
    let launcher = connect(&args, launcher)?;
    let config = args.config(conn);
    let (public, admin) = stratus_server::bind(&config).await?;
    println!(
        "isolation: {} ({})",
        launcher.isolation().as_str(),
        launcher.reason()
    );
    println!("network: {}", launcher.network());
    println!("{}", launcher.landlock());
    println!(
        "prestart: {}",
        match (config.prestart, launcher.prestart()) {
            (0, _) => "off (--prestart 0)".to_owned(),
            (n, true) => format!("up to {n} sandboxes per runtime, made ahead of demand"),
            (_, false) =>
                "off (this kernel cannot attach code to a made sandbox; Linux 5.12+ can)".to_owned(),
        }
    );
    let (server, info) = spawn(&config, launcher, public, admin).await?;
    println!("stratus is running");
    println!("  public: {}", info.public);
    println!("  admin:  {}", info.admin);
    println!("  data:   {}", config.data_dir.display());
    server.await??;
    Ok(ExitCode::SUCCESS)
}

/// Starts the server until SIGINT/SIGTERM and waits until it serves.
pub async fn spawn(
    config: &ServerConfig,
    launcher: LauncherClient,
    public: TcpListener,
    admin: TcpListener,
) -> anyhow::Result<(JoinHandle<anyhow::Result<()>>, ServerInfo)> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(stratus_server::run(
        config.clone(),
        launcher,
        public,
        admin,
        stratus_server::shutdown_signal(),
        Some(ready_tx),
    ));
    match ready_rx.await {
        Ok(info) => Ok((server, info)),
        // The server stopped before serving: its error says why.
        Err(_) => Err(server
            .await?
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the server stopped during start-up"))),
    }
}
