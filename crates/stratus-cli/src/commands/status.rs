//! `stratus status [APP]`.

use std::process::ExitCode;

use serde_json::Value;

use crate::client::{Client, Connection};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Only this application
    pub app: Option<String>,
    /// Print JSON instead of a table
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub async fn run(conn: &Connection, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    let path = match &args.app {
        Some(app) => format!("/v1/status?app={app}"),
        None => "/v1/status".to_owned(),
    };
    let body = client.get_json(&path).await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let apps = body["apps"].as_array().cloned().unwrap_or_default();
    if apps.is_empty() {
        println!("no applications; deploy one with `stratus deploy DIR`");
        return Ok(ExitCode::SUCCESS);
    }
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("KIND", Align::Left),
        ("VERSION", Align::Right),
        ("INSTANCES", Align::Left),
        ("RESTARTS", Align::Right),
    ]);
    let mut errors: Vec<(i64, String)> = Vec::new();
    for app in &apps {
        let name = app["app"].as_str().unwrap_or("");
        for f in app["functions"].as_array().into_iter().flatten() {
            let i = &f["instances"];
            table.row(vec![
                format!("{name}/{}", f["name"].as_str().unwrap_or("")),
                "function".to_owned(),
                count(&f["version"]).to_string(),
                format!(
                    "{} busy, {} idle, {} waiting",
                    count(&i["busy"]),
                    count(&i["idle"]),
                    count(&f["waiting"])
                ),
                "-".to_owned(),
            ]);
            errors.extend(error_lines(
                &format!("{name}/{}", f["name"].as_str().unwrap_or("")),
                &f["errors"],
            ));
        }
        for s in app["services"].as_array().into_iter().flatten() {
            let i = &s["instances"];
            let full = format!("{name}/{}", s["name"].as_str().unwrap_or(""));
            let mut state = format!(
                "{} ready, {} starting, {} draining",
                count(&i["ready"]),
                count(&i["starting"]),
                count(&i["draining"])
            );
            if let Some(ms) = s["backoff_ms"].as_u64() {
                state.push_str(&format!(", backing off {:.1}s", ms as f64 / 1000.0));
            }
            table.row(vec![
                full.clone(),
                "service".to_owned(),
                count(&s["version"]).to_string(),
                state,
                count(&s["restarts"]).to_string(),
            ]);
            errors.extend(error_lines(&full, &s["errors"]));
        }
    }
    let nodes = count(&body["nodes"]);
    if nodes > 1 {
        println!("instances across {nodes} live nodes (`stratus nodes` lists them)\n");
    }
    table.print();
    let stored: Vec<String> = apps
        .iter()
        .filter(|app| app["storage"].is_object())
        .map(|app| {
            let s = &app["storage"];
            format!(
                "{}: {} buckets, {} objects, {}",
                app["app"].as_str().unwrap_or(""),
                count(&s["buckets"]),
                count(&s["objects"]),
                crate::table::bytes(count(&s["bytes"]))
            )
        })
        .collect();
    if !stored.is_empty() {
        println!("\nstorage:");
        for line in stored {
            println!("{line}");
        }
    }
    if !errors.is_empty() {
        errors.sort();
        println!("\nrecent errors:");
        for (_, line) in errors.iter().rev().take(10).rev() {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `(time, line)` for each error of `name`, for one list in time order.
fn error_lines(name: &str, errors: &Value) -> Vec<(i64, String)> {
    errors
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let ts = e["ts_ms"].as_i64().unwrap_or(0);
            let when = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ts.max(0) as u64),
            );
            let request = e["request_id"]
                .as_str()
                .map(|r| format!(" request {r}"))
                .unwrap_or_default();
            (
                ts,
                format!(
                    "  {when} {name} instance {}{request}: {}",
                    e["instance"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                ),
            )
        })
        .collect()
}
