//! `stratus ls`.

use std::process::ExitCode;

use crate::client::{Client, Connection};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {
    /// Print JSON instead of a table
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub async fn run(conn: &Connection, args: LsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    // Every page of the listing.
    let mut apps = Vec::new();
    let mut path = "/v1/apps?limit=1000".to_owned();
    loop {
        let page = client.get_json(&path).await?;
        apps.extend(page["apps"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/apps?limit=1000&after={}", urlencoded(next)),
            None => break,
        }
    }
    if args.output == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "apps": apps }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if apps.is_empty() {
        println!("no applications; deploy one with `stratus deploy DIR`");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("VERSION", Align::Right),
        ("RUNTIME", Align::Left),
        ("MEMORY", Align::Right),
        ("TIMEOUT", Align::Right),
        ("INSTANCES", Align::Right),
        ("ROUTES", Align::Left),
    ]);
    for app in apps {
        for f in app["functions"].as_array().cloned().unwrap_or_default() {
            let routes: Vec<&str> = f["routes"]
                .as_array()
                .map(|r| r.iter().filter_map(|r| r.as_str()).collect())
                .unwrap_or_default();
            table.row(vec![
                format!(
                    "{}/{}",
                    app["name"].as_str().unwrap_or(""),
                    f["name"].as_str().unwrap_or("")
                ),
                app["version"].to_string(),
                f["runtime"].as_str().unwrap_or("").to_owned(),
                format!("{}MB", f["memory_mb"]),
                format!("{}s", f["timeout_ms"].as_u64().unwrap_or(0) as f64 / 1000.0),
                f["instances"]["instances"].to_string(),
                routes.join(" "),
            ]);
        }
        for s in app["services"].as_array().cloned().unwrap_or_default() {
            let routes: Vec<&str> = s["routes"]
                .as_array()
                .map(|r| r.iter().filter_map(|r| r.as_str()).collect())
                .unwrap_or_default();
            table.row(vec![
                format!(
                    "{}/{}",
                    app["name"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or("")
                ),
                app["version"].to_string(),
                "service".to_owned(),
                format!("{}MB", s["memory_mb"]),
                "-".to_owned(),
                s["instances"].to_string(),
                routes.join(" "),
            ]);
        }
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

/// An app name for a query string: names are lower-case letters, digits
/// and hyphens, which need no escaping; anything else is escaped anyway.
fn urlencoded(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
