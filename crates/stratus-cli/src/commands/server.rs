//! `stratus server`.

use std::process::ExitCode;

use stratus_sandbox::launcher::LauncherHandle;
use stratus_sandbox::{Isolation, IsolationRequest, LauncherClient};
use stratus_server::{ServerConfig, ServerInfo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::client::Connection;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// How instances are isolated: auto picks the strongest the host allows
    #[arg(long, value_enum, env = stratus_server::config::env::ISOLATION, default_value_t = IsolationArg::Auto)]
    pub isolation: IsolationArg,
    #[command(flatten)]
    pub config: ServerConfig,
}

impl ServerArgs {
    /// The server's settings, with the state in the CLI's data directory.
    pub fn config(&self, conn: &Connection) -> ServerConfig {
        ServerConfig {
            data_dir: conn.data_dir.clone(),
            ..self.config.clone()
        }
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
        match (config.data_plane.prestart_max, launcher.prestart()) {
            (0, _) => "off (--prestart 0)".to_owned(),
            (n, true) => format!("up to {n} sandboxes per runtime, made ahead of demand"),
            (_, false) =>
                "off (this kernel cannot attach code to a made sandbox; Linux 5.12+ can)".to_owned(),
        }
    );
    let (server, info) = spawn(&config, launcher, public, admin).await?;
    // The CLI finds this server from any directory.
    crate::contexts::remember_local(&config.data_dir);
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
