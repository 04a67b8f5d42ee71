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
    /// Only lines at or after this: a time ago (10m, 2h) or an RFC 3339
    /// time (2026-12-05T08:00:00Z)
    #[arg(long, value_parser = moment)]
    pub since: Option<SystemTime>,
    /// Only lines before this: a time ago or an RFC 3339 time
    #[arg(long, value_parser = moment)]
    pub until: Option<SystemTime>,
    /// Only lines that hold this text
    #[arg(long)]
    pub filter: Option<String>,
    /// Keep printing new lines as the server stores them
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
    for (name, at) in [("since_ms", args.since), ("until_ms", args.until)] {
        if let Some(at) = at {
            query.push((name, at.duration_since(UNIX_EPOCH)?.as_millis().to_string()));
        }
    }
    if let Some(text) = &args.filter {
        query.push(("contains", text.clone()));
    }
    query.push(("limit", args.limit.to_string()));
    if args.follow {
        query.push(("follow", "true".to_owned()));
    }
    let mut response = client
        .send(
            client
                .request(reqwest::Method::GET, "/v1/logs")
                .query(&query),
        )
        .await?;
    if !args.follow {
        let body: Value = response.json().await?;
        for record in body["records"].as_array().into_iter().flatten() {
            print_record(record, &args.output);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // The server pushes one JSON record per line as it stores them.
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Ok(record) = serde_json::from_slice::<Value>(&line) {
                print_record(&record, &args.output);
            }
        }
    }
    bail!("the server ended the stream of logs; is it still running?")
}

/// A moment given as a time ago (`10m`) or an RFC 3339 time.
fn moment(text: &str) -> Result<SystemTime, String> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(at);
    }
    match humantime::parse_duration(text) {
        Ok(ago) => Ok(SystemTime::now() - ago),
        Err(_) => Err(format!(
            "{text:?} is neither a time ago (10m, 2h) nor an RFC 3339 time (2026-12-05T08:00:00Z)"
        )),
    }
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
