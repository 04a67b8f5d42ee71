//! `stratus server`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

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
        config.region = self.region.clone();
        config.log_retention = self.log_retention;
        config.log_max_bytes = self.log_max_bytes;
        config.limits.queue_depth = self.queue_depth;
        config.limits.queue_timeout = self.queue_timeout;
        config.limits.init_timeout = self.init_timeout;
        config.limits.max_payload_bytes = self.max_payload;
        config.limits.max_unpacked_bytes = self.max_package;
        config.limits.max_package_bytes = self.max_package as usize;
        config
    }
}

pub async fn run(conn: &Connection, args: ServerArgs) -> anyhow::Result<ExitCode> {
    let config = args.config(conn);
    let (public, admin) = stratus_server::bind(&config).await?;
    let (server, info) = spawn(&config, public, admin).await?;
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
    public: TcpListener,
    admin: TcpListener,
) -> anyhow::Result<(JoinHandle<anyhow::Result<()>>, ServerInfo)> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(stratus_server::run(
        config.clone(),
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
