//! `stratus backup` and `stratus restore`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::client::Connection;

#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// A new directory to write the backup to
    pub dir: PathBuf,
    /// `json` prints what was done as one object
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// A directory `stratus backup` wrote
    pub dir: PathBuf,
    /// `json` prints what was done as one object
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

/// Copies the data directory's state, consistently, while a server may be
/// running on it.
pub fn backup(conn: &Connection, args: BackupArgs) -> anyhow::Result<ExitCode> {
    let copied = stratus_server::backup::backup(&conn.data_dir, &args.dir)
        .with_context(|| format!("cannot back up {}", conn.data_dir.display()))?;
    if args.output == "json" {
        println!(
            "{}",
            serde_json::json!({
                "from": conn.data_dir,
                "to": args.dir,
                "files": copied.files,
                "bytes": copied.bytes,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "backed up {} to {}: {} files, {} bytes",
        conn.data_dir.display(),
        args.dir.display(),
        copied.files,
        copied.bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// Copies a backup into a new or empty data directory.
pub fn restore(conn: &Connection, args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let copied = stratus_server::backup::restore(&args.dir, &conn.data_dir)
        .with_context(|| format!("cannot restore into {}", conn.data_dir.display()))?;
    if args.output == "json" {
        println!(
            "{}",
            serde_json::json!({
                "from": args.dir,
                "to": conn.data_dir,
                "files": copied.files,
                "bytes": copied.bytes,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "restored {} into {}: {} files, {} bytes; start the server on it with `stratus server --data-dir {}`",
        args.dir.display(),
        conn.data_dir.display(),
        copied.files,
        copied.bytes,
        conn.data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
