//! `stratus keys create|ls|rm APP`: the keys callers present to an app's
//! `auth: key` routes.

use std::process::ExitCode;

use reqwest::Method;

use crate::client::{Client, Connection};

#[derive(Debug, Clone, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key for an application; it is printed once
    Create {
        app: String,
        /// What the key is for, shown by `stratus keys ls`
        #[arg(long)]
        name: Option<String>,
    },
    /// List an application's keys (their ids and names, not the secrets)
    Ls { app: String },
    /// Revoke a key, by its id or the whole key
    Rm { app: String, key: String },
}

pub async fn run(conn: &Connection, args: KeysArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        KeysCommand::Create { app, name } => {
            let body = serde_json::json!({ "name": name });
            let response = client
                .send(
                    client
                        .request(Method::POST, &format!("/v1/apps/{app}/keys"))
                        .json(&body),
                )
                .await?;
            let created: serde_json::Value = response.json().await?;
            let key = created["key"].as_str().unwrap_or_default();
            println!("{key}");
            eprintln!(
                "key {} of app {app} created; it is shown only now. Callers send it as `x-stratus-key: KEY` or `Authorization: Bearer KEY`.",
                created["id"].as_str().unwrap_or_default()
            );
        }
        KeysCommand::Ls { app } => {
            let listed = client.get_json(&format!("/v1/apps/{app}/keys")).await?;
            let keys = listed["keys"].as_array().cloned().unwrap_or_default();
            if keys.is_empty() {
                eprintln!("app {app} has no keys; `stratus keys create {app}` makes one");
            } else {
                println!("{:<10} {:<24} NAME", "ID", "CREATED");
                for key in keys {
                    let created = key["created_ms"]
                        .as_i64()
                        .and_then(|ms| {
                            std::time::UNIX_EPOCH
                                .checked_add(std::time::Duration::from_millis(ms as u64))
                        })
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                        .unwrap_or_default();
                    println!(
                        "{:<10} {:<24} {}",
                        key["id"].as_str().unwrap_or_default(),
                        created,
                        key["name"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        KeysCommand::Rm { app, key } => {
            let response = client
                .send(client.request(Method::DELETE, &format!("/v1/apps/{app}/keys/{key}")))
                .await?;
            let removed: serde_json::Value = response.json().await?;
            println!(
                "revoked key {} of app {app}",
                removed["id"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
