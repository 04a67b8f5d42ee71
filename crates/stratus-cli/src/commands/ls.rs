//! `stratus ls`.

use std::process::ExitCode;

use crate::client::{Client, Connection};

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
    println!(
        "{:<24} {:>7}  {:<10} {:>7} {:>8} {:>9}  ROUTES",
        "NAME", "VERSION", "RUNTIME", "MEMORY", "TIMEOUT", "INSTANCES"
    );
    for app in apps {
        for f in app["functions"].as_array().cloned().unwrap_or_default() {
            let routes: Vec<&str> = f["routes"]
                .as_array()
                .map(|r| r.iter().filter_map(|r| r.as_str()).collect())
                .unwrap_or_default();
            println!(
                "{:<24} {:>7}  {:<10} {:>5}MB {:>7}s {:>9}  {}",
                format!(
                    "{}/{}",
                    app["name"].as_str().unwrap_or(""),
                    f["name"].as_str().unwrap_or("")
                ),
                app["version"],
                f["runtime"].as_str().unwrap_or(""),
                f["memory_mb"],
                f["timeout_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
                f["instances"]["instances"],
                routes.join(" "),
            );
        }
        for s in app["services"].as_array().cloned().unwrap_or_default() {
            let routes: Vec<&str> = s["routes"]
                .as_array()
                .map(|r| r.iter().filter_map(|r| r.as_str()).collect())
                .unwrap_or_default();
            println!(
                "{:<24} {:>7}  {:<10} {:>5}MB {:>8} {:>9}  {}",
                format!(
                    "{}/{}",
                    app["name"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or("")
                ),
                app["version"],
                "service",
                s["memory_mb"],
                "-",
                s["instances"],
                routes.join(" "),
            );
        }
    }
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
