//! `stratus keys create|ls|rm APP`: the keys callers present to an app's
//! `auth: key` routes, and (`--aws`) the AWS credentials they sign Lambda
//! Invoke API requests with.

use std::process::ExitCode;

use reqwest::Method;

use crate::client::{Client, Connection};
use crate::table::{Align, Table, time};

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
        /// Create an AWS credential (access key id and secret access key) for
        /// the Lambda Invoke API instead, printed in the form of ~/.aws/credentials
        #[arg(long)]
        aws: bool,
        /// Print the server's JSON answer instead
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// List an application's keys and AWS credentials (ids and names, not the secrets)
    #[command(visible_alias = "list")]
    Ls {
        app: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Revoke a key or an AWS credential, by its id (an access key id for a
    /// credential) or the whole key
    #[command(visible_alias = "delete")]
    Rm {
        app: String,
        key: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
}

pub async fn run(conn: &Connection, args: KeysArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        KeysCommand::Create {
            app,
            name,
            aws,
            output,
        } => {
            let body = serde_json::json!({ "name": name, "aws": aws });
            let response = client
                .send(
                    client
                        .request(Method::POST, &format!("/v1/apps/{app}/keys"))
                        .json(&body),
                )
                .await?;
            let created: serde_json::Value = response.json().await?;
            let text = |field: &str| created[field].as_str().unwrap_or_default().to_owned();
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else if aws {
                println!("aws_access_key_id = {}", text("access_key_id"));
                println!("aws_secret_access_key = {}", text("secret_access_key"));
            } else {
                println!("{}", text("key"));
            }
            if aws {
                eprintln!(
                    "AWS credential {} of app {app} created; the secret is shown only now. Point an AWS SDK at the admin URL (endpoint_url) with any region to invoke {app}'s functions as APP.FN.",
                    text("access_key_id")
                );
            } else {
                eprintln!(
                    "key {} of app {app} created; it is shown only now. Callers send it as `x-stratus-key: KEY` or `Authorization: Bearer KEY`.",
                    text("id")
                );
            }
        }
        KeysCommand::Ls { app, output } => {
            let listed = client.get_json(&format!("/v1/apps/{app}/keys")).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            let keys = listed["keys"].as_array().cloned().unwrap_or_default();
            if keys.is_empty() {
                eprintln!("app {app} has no keys; `stratus keys create {app}` makes one");
            } else {
                let mut table = Table::new(&[
                    ("KIND", Align::Left),
                    ("ID", Align::Left),
                    ("CREATED", Align::Left),
                    ("NAME", Align::Left),
                ]);
                for key in keys {
                    let created = time(&key["created_ms"]);
                    table.row(vec![
                        key["kind"].as_str().unwrap_or_default().to_owned(),
                        key["id"].as_str().unwrap_or_default().to_owned(),
                        created,
                        key["name"].as_str().unwrap_or_default().to_owned(),
                    ]);
                }
                table.print();
            }
        }
        KeysCommand::Rm { app, key, output } => {
            let response = client
                .send(client.request(Method::DELETE, &format!("/v1/apps/{app}/keys/{key}")))
                .await?;
            let removed: serde_json::Value = response.json().await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&removed)?);
                return Ok(ExitCode::SUCCESS);
            }
            let id = removed["id"].as_str().unwrap_or_default();
            let what = if id.starts_with("AKST") {
                "AWS credential"
            } else {
                "key"
            };
            println!("revoked {what} {id} of app {app}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
