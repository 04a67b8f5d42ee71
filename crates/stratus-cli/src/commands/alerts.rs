//! `stratus alerts ls APP`: each alert of an application with its state,
//! since when, the value its last evaluation saw, and the latest changes.

use std::process::ExitCode;

use serde_json::Value;

use crate::client::{Client, Connection};
use crate::table::{Align, Table, text, time};

#[derive(Debug, Clone, clap::Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub command: AlertsCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AlertsCommand {
    /// List an application's alerts: state, since when, the value last
    /// seen, the condition; then their latest changes
    #[command(visible_alias = "list")]
    Ls {
        app: String,
        /// How many of the latest changes to show
        #[arg(long, default_value_t = 10)]
        history: usize,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
}

pub async fn run(conn: &Connection, args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    let AlertsCommand::Ls {
        app,
        history,
        output,
    } = args.command;
    let listed = client
        .get_json(&format!("/v1/apps/{app}/alerts?history={history}"))
        .await?;
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let alerts = listed["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        println!("{app} declares no alerts (`alerts:` in its stratus.yaml)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        ("ALERT", Align::Left),
        ("STATE", Align::Left),
        ("SINCE", Align::Left),
        ("VALUE", Align::Right),
        ("EVALUATED", Align::Left),
        ("CONDITION", Align::Left),
    ]);
    for a in &alerts {
        table.row(vec![
            text(&a["name"]),
            text(&a["state"]),
            when(&a["since_ms"]),
            value(&a["value"]),
            when(&a["evaluated_ms"]),
            text(&a["condition"]),
        ]);
    }
    table.print();
    let changes = listed["history"].as_array().cloned().unwrap_or_default();
    if !changes.is_empty() {
        println!();
        println!("latest changes:");
        for c in changes {
            println!(
                "  {}  {}  {} -> {}  {}",
                time(&c["at_ms"]),
                text(&c["name"]),
                text(&c["from"]),
                text(&c["to"]),
                value(&c["detail"]["value"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn when(ms: &Value) -> String {
    if ms.is_null() {
        "-".to_owned()
    } else {
        time(ms)
    }
}

fn value(v: &Value) -> String {
    match v.as_f64() {
        Some(n) if n.fract() == 0.0 => format!("{n:.0}"),
        Some(n) => format!("{n:.3}"),
        None => "-".to_owned(),
    }
}
