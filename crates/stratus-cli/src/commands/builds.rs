//! `stratus builds ls|show APP`: the builds that installed an app's
//! dependencies on deploy, with their steps, cache hits and logs.

use std::process::ExitCode;

use serde_json::Value;

use crate::client::{Client, Connection};
use crate::table::{Align, Table, time};

#[derive(Debug, Clone, clap::Args)]
pub struct BuildsArgs {
    #[command(subcommand)]
    pub command: BuildsCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BuildsCommand {
    /// List an application's builds, newest first
    #[command(visible_alias = "list")]
    Ls {
        app: String,
        /// How many to list
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Show one build: each step, whether its layer was cached, and the log
    Show {
        app: String,
        /// The build's id, as `stratus builds ls` lists it
        id: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
}

/// `12.3s`, or `-` while running.
fn duration(ms: &Value) -> String {
    match ms.as_u64() {
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
        None => "-".to_owned(),
    }
}

/// `v3`, or `-` when the build made no version.
fn version(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_owned(), |v| format!("v{v}"))
}

pub async fn run(conn: &Connection, args: BuildsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        BuildsCommand::Ls { app, limit, output } => {
            let listed = client
                .get_json(&format!("/v1/apps/{app}/builds?limit={limit}"))
                .await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("ID", Align::Left),
                ("STATUS", Align::Left),
                ("VERSION", Align::Left),
                ("STARTED", Align::Left),
                ("DURATION", Align::Right),
                ("CACHED", Align::Right),
            ]);
            for build in listed["builds"].as_array().into_iter().flatten() {
                let parts = build["parts"].as_array().map_or(0, Vec::len);
                table.row(vec![
                    build["id"].as_str().unwrap_or_default().to_owned(),
                    build["status"].as_str().unwrap_or_default().to_owned(),
                    version(&build["version"]),
                    time(&build["started_ms"]),
                    duration(&build["duration_ms"]),
                    format!("{}/{parts}", build["cache_hits"].as_u64().unwrap_or(0)),
                ]);
            }
            table.print();
        }
        BuildsCommand::Show { app, id, output } => {
            let build = client
                .get_json(&format!("/v1/apps/{app}/builds/{id}"))
                .await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&build)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "build {id} of {app}: {} in {} ({}), version {}",
                build["status"].as_str().unwrap_or_default(),
                duration(&build["duration_ms"]),
                time(&build["started_ms"]),
                version(&build["version"]),
            );
            for part in build["parts"].as_array().into_iter().flatten() {
                println!(
                    "  {} ({}): {}, {} in {}, layer {}",
                    part["code"].as_str().unwrap_or_default(),
                    part["runtime"].as_str().unwrap_or_default(),
                    part["step"].as_str().unwrap_or_default(),
                    match (part["ok"] == true, part["cached"] == true) {
                        (true, true) => "cached",
                        (true, false) => "built",
                        _ => "failed",
                    },
                    duration(&part["duration_ms"]),
                    part["layer"].as_str().unwrap_or_default(),
                );
            }
            if let Some(error) = build["error"].as_str() {
                println!("error: {error}");
            }
            if let Some(log) = build["log"].as_str().filter(|l| !l.is_empty()) {
                println!("--- log");
                print!("{log}");
                if !log.ends_with('\n') {
                    println!();
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
