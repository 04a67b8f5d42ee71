//! `stratus migrate`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::client::Connection;

#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// The data directory whose state moves (default: --data-dir); no
    /// server may be running on it
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// The PostgreSQL database it moves into (postgres://USER@HOST/DB),
    /// new and empty
    #[arg(long)]
    pub to: String,
}

/// Moves a single node's state from SQLite into PostgreSQL.
pub async fn run(conn: &Connection, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let from = args.from.unwrap_or_else(|| conn.data_dir.clone());
    let moved = stratus_server::migrate::migrate(&from, &args.to).await?;
    println!(
        "moved the state of {} into the PostgreSQL store: {}",
        from.display(),
        moved.summary
    );
    println!(
        "logs stay behind; start the node on it with `stratus server --data-dir {} --store URL`",
        from.display()
    );
    Ok(ExitCode::SUCCESS)
}
