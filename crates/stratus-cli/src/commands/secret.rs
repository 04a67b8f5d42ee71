//! `stratus secret set|ls|rm APP`: an app's secrets, which its manifest
//! names as `env: { VAR: { secret: NAME } }`. Values go in and never come
//! out: `ls` shows names, times and the variables that use each.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use reqwest::Method;

use crate::client::{Client, Connection};
use crate::table::{Align, Table, time};

#[derive(Debug, Clone, clap::Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SecretCommand {
    /// Set (or rotate) a secret of an application, read from stdin (one
    /// trailing newline dropped) or from a file; new instances get it
    Set {
        app: String,
        name: String,
        /// Read the value from this file, as it is
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List an application's secrets (names, not values)
    #[command(visible_alias = "list")]
    Ls {
        app: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Delete a secret no deployed version uses
    #[command(visible_alias = "delete")]
    Rm { app: String, name: String },
}

pub async fn run(conn: &Connection, args: SecretArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        SecretCommand::Set {
            app,
            name,
            from_file,
        } => {
            let value = match &from_file {
                Some(file) => std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                        eprintln!("type the value of {name}, then Ctrl-D:");
                    }
                    let mut value = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut value)
                        .context("cannot read the value from stdin")?;
                    if value.ends_with(b"\n") {
                        value.pop();
                        if value.ends_with(b"\r") {
                            value.pop();
                        }
                    }
                    value
                }
            };
            client
                .send(
                    client
                        .request(Method::PUT, &format!("/v1/apps/{app}/secrets/{name}"))
                        .body(value),
                )
                .await?;
            eprintln!("secret {name} of app {app} set; new instances get it");
        }
        SecretCommand::Ls { app, output } => {
            let listed = client.get_json(&format!("/v1/apps/{app}/secrets")).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            let secrets = listed["secrets"].as_array().cloned().unwrap_or_default();
            if secrets.is_empty() {
                eprintln!("app {app} has no secrets; `stratus secret set {app} NAME` sets one");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("NAME", Align::Left),
                ("UPDATED", Align::Left),
                ("USED BY", Align::Left),
            ]);
            for secret in secrets {
                let updated = time(&secret["updated_ms"]);
                let used: Vec<&str> = secret["used_by"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str())
                    .collect();
                table.row(vec![
                    secret["name"].as_str().unwrap_or_default().to_owned(),
                    updated,
                    if used.is_empty() {
                        "-".to_owned()
                    } else {
                        used.join(", ")
                    },
                ]);
            }
            table.print();
        }
        SecretCommand::Rm { app, name } => {
            client
                .send(client.request(Method::DELETE, &format!("/v1/apps/{app}/secrets/{name}")))
                .await?;
            eprintln!("secret {name} of app {app} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
