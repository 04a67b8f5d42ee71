//! `stratus queue send|ls`: the messages of an app's queues.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::Context;
use reqwest::Method;

use crate::client::{Client, Connection, split_target};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueCommand {
    /// Send a message to a queue (APP/QUEUE): DATA as given, `@FILE`, or
    /// standard input
    Send {
        target: String,
        data: Option<String>,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// List an application's queues with their consumers and messages
    #[command(visible_alias = "list")]
    Ls {
        app: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
}

pub async fn run(conn: &Connection, args: QueueArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        QueueCommand::Send {
            target,
            data,
            output,
        } => {
            let (app, queue) = split_target(&target)?;
            let body = match data.as_deref() {
                Some(file) if file.starts_with('@') => std::fs::read(&file[1..])
                    .with_context(|| format!("cannot read {}", &file[1..]))?,
                Some(text) => text.as_bytes().to_vec(),
                None if !std::io::stdin().is_terminal() => {
                    let mut body = Vec::new();
                    std::io::stdin().read_to_end(&mut body)?;
                    body
                }
                None => anyhow::bail!(
                    "no message: give it as an argument (`stratus queue send {target} '{{\"id\":1}}'`), as @FILE, or on standard input"
                ),
            };
            let request = client
                .request(
                    Method::POST,
                    &format!("/v1/apps/{app}/queues/{queue}/messages"),
                )
                .body(body);
            let sent: serde_json::Value = client.send(request).await?.json().await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&sent)?);
            } else {
                println!("sent {}", sent["message_id"].as_str().unwrap_or_default());
            }
        }
        QueueCommand::Ls { app, output } => {
            let listed = client.get_json(&format!("/v1/apps/{app}/queues")).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            let queues = listed["queues"].as_array().cloned().unwrap_or_default();
            if queues.is_empty() {
                println!("app {app} declares no queues");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("QUEUE", Align::Left),
                ("CONSUMER", Align::Left),
                ("QUEUED", Align::Right),
                ("IN FLIGHT", Align::Right),
            ]);
            for q in queues {
                table.row(vec![
                    q["name"].as_str().unwrap_or_default().to_owned(),
                    q["consumer"].as_str().unwrap_or("-").to_owned(),
                    q["queued"].to_string(),
                    q["in_flight"].to_string(),
                ]);
            }
            table.print();
        }
    }
    Ok(ExitCode::SUCCESS)
}
