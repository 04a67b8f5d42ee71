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
    let body = client.get_json("/v1/apps").await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let apps = body["apps"].as_array().cloned().unwrap_or_default();
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
