//! `stratus failures ls|show|replay`: failed invocations' scenes (the
//! event, the error and stack, the last log lines, the phases, memory, the
//! variables' names), and the same event run again.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, Connection};
use crate::table::{Align, Table, text, time};

#[derive(Debug, Clone, clap::Args)]
pub struct FailuresArgs {
    #[command(subcommand)]
    pub command: FailuresCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum FailuresCommand {
    /// List an application's (or one function's: APP/FN) failed
    /// invocations, newest first
    #[command(visible_alias = "list")]
    Ls {
        /// APP or APP/FUNCTION
        target: String,
        /// How many to list
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Show one failure's scene
    Show {
        /// The failure's id, as `stratus failures ls` lists it
        id: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Invoke the function again with the failure's event, on its active
    /// version (or another this node keeps), and show the result next to
    /// the original
    Replay {
        id: String,
        /// Replay on this version instead of the active one
        #[arg(long)]
        version: Option<u32>,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
}

pub async fn run(conn: &Connection, args: FailuresArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        FailuresCommand::Ls {
            target,
            limit,
            output,
        } => {
            let (app, function) = match target.split_once('/') {
                Some((app, function)) => (app.to_owned(), Some(function.to_owned())),
                None => (target.clone(), None),
            };
            let mut path = format!("/v1/apps/{app}/failures?limit={limit}");
            if let Some(function) = &function {
                path.push_str(&format!("&function={function}"));
            }
            let listed = client.get_json(&path).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&listed)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("ID", Align::Left),
                ("FUNCTION", Align::Left),
                ("VERSION", Align::Right),
                ("AT", Align::Left),
                ("OUTCOME", Align::Left),
                ("ERROR", Align::Left),
            ]);
            for f in listed["failures"].as_array().into_iter().flatten() {
                table.row(vec![
                    text(&f["id"]),
                    text(&f["function"]),
                    f["version"].to_string(),
                    time(&f["at_ms"]),
                    text(&f["outcome"]),
                    text(&f["error_type"]),
                ]);
            }
            table.print();
            Ok(ExitCode::SUCCESS)
        }
        FailuresCommand::Show { id, output } => {
            let failure = client.get_json(&format!("/v1/failures/{id}")).await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&failure)?);
            } else {
                print_scene(&failure);
            }
            Ok(ExitCode::SUCCESS)
        }
        FailuresCommand::Replay {
            id,
            version,
            output,
        } => {
            let path = match version {
                Some(version) => format!("/v1/failures/{id}/replay?version={version}"),
                None => format!("/v1/failures/{id}/replay"),
            };
            let response = client.send(client.request(Method::POST, &path)).await?;
            let answer: Value = response.json().await?;
            let ok = answer["replay"]["ok"] == true;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let original = &answer["original"];
                let replay = &answer["replay"];
                println!(
                    "original  v{}  {}  {}: {}",
                    original["version"],
                    text(&original["outcome"]),
                    text(&original["error_type"]),
                    text(&original["scene"]["error"]["errorMessage"])
                );
                if ok {
                    println!(
                        "replay    v{}  success  {}",
                        replay["version"],
                        serde_json::to_string(&replay["result"])?
                    );
                } else {
                    println!(
                        "replay    v{}  error  {}: {}",
                        replay["version"],
                        text(&replay["error"]["errorType"]),
                        text(&replay["error"]["errorMessage"])
                    );
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(crate::exit::FUNCTION_FAILED)
            })
        }
    }
}

fn print_scene(f: &Value) {
    let scene = &f["scene"];
    println!("failure   {}", text(&f["id"]));
    println!(
        "function  {}/{} v{} (request {})",
        text(&f["app"]),
        text(&f["function"]),
        f["version"],
        text(&f["request_id"])
    );
    println!("at        {}", time(&f["at_ms"]));
    println!("outcome   {}", text(&f["outcome"]));
    println!(
        "error     {}: {}",
        text(&scene["error"]["errorType"]),
        text(&scene["error"]["errorMessage"])
    );
    for line in scene["error"]["stackTrace"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!("          {}", text(line).trim_end());
    }
    println!(
        "event     {}",
        serde_json::to_string(&f["event"]).unwrap_or_default()
    );
    let phases = &scene["phases"];
    println!(
        "phases    queue {} ms, handler {} ms{}",
        phases["queue_ms"],
        phases["duration_ms"],
        if scene["cold"] == true {
            " (cold start)"
        } else {
            ""
        }
    );
    println!("memory    {} MB at most", text(&scene["max_memory_mb"]));
    let names: Vec<String> = scene["env_names"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    println!("variables {}", names.join(", "));
    println!("last log lines:");
    for line in scene["logs"].as_array().into_iter().flatten() {
        println!("  {}", text(&line["message"]));
    }
}
