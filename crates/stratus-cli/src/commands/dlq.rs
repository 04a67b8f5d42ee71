//! `stratus dlq ls|show|redrive`: events whose function failed them every
//! time it was allowed to.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, Connection};
use crate::table::{Align, Table, time};

#[derive(Debug, Clone, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// List the dead letters of an application, or of one function (APP/FN)
    #[command(visible_alias = "list")]
    Ls {
        target: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Show one dead letter with its payload
    Show {
        app: String,
        id: i64,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Send dead letters back to be delivered again, with fresh retries:
    /// all of the application or function (APP/FN), or those given by --id
    Redrive {
        target: String,
        #[arg(long = "id")]
        ids: Vec<i64>,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
}

/// `APP` or `APP/FN`.
fn split(target: &str) -> anyhow::Result<(&str, Option<&str>)> {
    match target.split_once('/') {
        None if !target.is_empty() => Ok((target, None)),
        Some((app, function))
            if !app.is_empty() && !function.is_empty() && !function.contains('/') =>
        {
            Ok((app, Some(function)))
        }
        _ => {
            anyhow::bail!("expected APP or APP/FUNCTION, e.g. shop or shop/orders, not {target:?}")
        }
    }
}

pub async fn run(conn: &Connection, args: DlqArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        DlqCommand::Ls { target, output } => {
            let (app, function) = split(&target)?;
            let path = match function {
                Some(function) => format!("/v1/apps/{app}/dlq?function={function}"),
                None => format!("/v1/apps/{app}/dlq"),
            };
            let listed = client.get_json(&path).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            let letters = listed["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if letters.is_empty() {
                eprintln!("{target} has no dead letters");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("ID", Align::Right),
                ("FUNCTION", Align::Left),
                ("REQUEST_ID", Align::Left),
                ("ATTEMPTS", Align::Right),
                ("FAILED", Align::Left),
                ("ERROR", Align::Left),
            ]);
            for l in letters {
                table.row(vec![
                    l["id"].as_i64().unwrap_or(0).to_string(),
                    l["function"].as_str().unwrap_or("").to_owned(),
                    l["request_id"].as_str().unwrap_or("").to_owned(),
                    l["attempts"].as_u64().unwrap_or(0).to_string(),
                    time(&l["failed_ms"]),
                    l["error"].as_str().unwrap_or("").to_owned(),
                ]);
            }
            table.print();
        }
        DlqCommand::Show { app, id, output } => {
            let letter = client.get_json(&format!("/v1/apps/{app}/dlq/{id}")).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&letter)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("id:         {}", letter["id"]);
            println!("function:   {}", letter["function"].as_str().unwrap_or(""));
            println!(
                "request id: {}",
                letter["request_id"].as_str().unwrap_or("")
            );
            println!("attempts:   {}", letter["attempts"]);
            println!("accepted:   {}", time(&letter["created_ms"]));
            println!("failed:     {}", time(&letter["failed_ms"]));
            println!("error:      {}", letter["error"].as_str().unwrap_or(""));
            println!(
                "payload:\n{}",
                serde_json::to_string_pretty(&letter["payload"])?
            );
        }
        DlqCommand::Redrive {
            target,
            ids,
            output,
        } => {
            let (app, function) = split(&target)?;
            let mut body = json!({});
            if let Some(function) = function {
                body["function"] = json!(function);
            }
            if !ids.is_empty() {
                body["ids"] = json!(ids);
            }
            let response = client
                .send(
                    client
                        .request(Method::POST, &format!("/v1/apps/{app}/dlq/redrive"))
                        .json(&body),
                )
                .await?;
            let done: Value = response.json().await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!("redriven {}", done["redriven"]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
