//! `stratus logs APP[/FN]`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use serde_json::Value;

use crate::client::{Client, Connection};

#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// APP or APP/FUNCTION
    pub target: String,
    /// Only the lines of this invocation
    #[arg(long)]
    pub request_id: Option<String>,
    /// Only lines newer than this, e.g. 10m or 2h
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Keep printing new lines as they arrive
    #[arg(long, short)]
    pub follow: bool,
    /// At most this many of the newest lines
    #[arg(long, default_value_t = 200)]
    pub limit: u32,
    /// `json` prints one JSON record per line
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub async fn run(conn: &Connection, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let (app, function) = match args.target.split_once('/') {
        Some((app, function)) => (app, Some(function)),
        None => (args.target.as_str(), None),
    };
    if app.is_empty() || function == Some("") {
        bail!("expected APP or APP/FUNCTION, not {:?}", args.target);
    }
    let client = Client::connect(conn)?;
    let mut query: Vec<(&str, String)> = vec![("app", app.to_owned())];
    if let Some(function) = function {
        query.push(("function", function.to_owned()));
    }
    if let Some(id) = &args.request_id {
        query.push(("request_id", id.clone()));
    }
    if let Some(since) = args.since {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        query.push((
            "since_ms",
            (now.saturating_sub(since).as_millis()).to_string(),
        ));
    }
    let mut after: Option<i64> = None;
    let mut limit = args.limit;
    loop {
        let mut q = query.clone();
        q.push(("limit", limit.to_string()));
        if let Some(after) = after {
            q.push(("after_id", after.to_string()));
        }
        let response = client
            .send(client.request(reqwest::Method::GET, "/v1/logs").query(&q))
            .await?;
        let body: Value = response.json().await?;
        for record in body["records"].as_array().into_iter().flatten() {
            print_record(record, &args.output);
        }
        if !args.follow {
            break;
        }
        after = body["last_id"].as_i64().or(after).or(Some(0));
        limit = 1000;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_record(record: &Value, output: &str) {
    if output == "json" {
        println!("{record}");
        return;
    }
    let ts = record["ts_ms"].as_i64().unwrap_or_default();
    let time = UNIX_EPOCH + Duration::from_millis(ts.max(0) as u64);
    println!(
        "{} {} v{} {} {} {}",
        humantime::format_rfc3339_millis(time),
        record["function"].as_str().unwrap_or("-"),
        record["version"],
        record["instance"].as_str().unwrap_or("-"),
        record["request_id"].as_str().unwrap_or("-"),
        record["message"].as_str().unwrap_or(""),
    );
}
