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
    /// The key file every node of the cluster is given
    /// (--secrets-key-file; made if it does not exist): stored secrets are
    /// sealed anew with it. Without it they stay sealed with the data
    /// directory's own secrets.key, which the nodes must then be given
    #[arg(long)]
    pub secrets_key_file: Option<PathBuf>,
}

/// Moves a single node's state from SQLite into PostgreSQL.
pub async fn run(conn: &Connection, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let from = args.from.unwrap_or_else(|| conn.data_dir.clone());
    let moved =
        stratus_server::migrate::migrate(&from, &args.to, args.secrets_key_file.as_deref()).await?;
    println!(
        "moved the state of {} into the PostgreSQL store: {}",
        from.display(),
        moved.summary
    );
    let key = match &args.secrets_key_file {
        Some(file) => file.clone(),
        None => from.join(stratus_server::SECRETS_KEY_FILE),
    };
    println!(
        "logs stay behind; start the nodes with `stratus server --store URL --secrets-key-file {}` (the first on --data-dir {} keeps its admin token; give the others that node's admin.token with --admin-token-file)",
        key.display(),
        from.display()
    );
    Ok(ExitCode::SUCCESS)
}
