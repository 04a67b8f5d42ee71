//! `stratus nodes`.

use std::process::ExitCode;

use crate::client::{Client, Connection};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct NodesArgs {
    /// Print JSON instead of a table
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub async fn run(conn: &Connection, args: NodesArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    let body = client.get_json("/v1/nodes").await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        ("NODE", Align::Left),
        ("ADMIN", Align::Left),
        ("VERSION", Align::Left),
        ("UPTIME", Align::Right),
        ("INSTANCES", Align::Right),
        ("HEARD", Align::Right),
        ("STATE", Align::Left),
    ]);
    for node in body["nodes"].as_array().into_iter().flatten() {
        let ms = |key: &str| node[key].as_i64().unwrap_or(0);
        let id = node["id"].as_str().unwrap_or("");
        table.row(vec![
            if node["this"].as_bool() == Some(true) {
                format!("{id} (this)")
            } else {
                id.to_owned()
            },
            node["admin_url"].as_str().unwrap_or("").to_owned(),
            node["version"].as_str().unwrap_or("").to_owned(),
            format!("{}s", ms("uptime_ms") / 1000),
            node["instances"].as_u64().unwrap_or(0).to_string(),
            format!("{:.1}s ago", ms("silent_ms") as f64 / 1000.0),
            if node["up"].as_bool() == Some(true) {
                "up"
            } else {
                "down"
            }
            .to_owned(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}
