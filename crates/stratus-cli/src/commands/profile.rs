//! `stratus profile APP/FN`: samples the function's running instances,
//! writes a flame graph (SVG) and prints the frames where the time went.

use std::path::PathBuf;
use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, Connection};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct ProfileArgs {
    /// APP/FUNCTION
    pub target: String,
    /// How long to sample, 1 to 300 seconds
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Where to write the flame graph (default: APP-FUNCTION.svg here)
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Frames to list
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub async fn run(conn: &Connection, args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let Some((app, function)) = args.target.split_once('/') else {
        anyhow::bail!(
            "name the function as APP/FUNCTION (given {:?})",
            args.target
        );
    };
    let client = Client::connect(conn)?;
    eprintln!(
        "sampling {app}/{function} for {} s (invoke it meanwhile: idle instances give no samples)",
        args.seconds
    );
    let response = client
        .send(client.request(
            Method::POST,
            &format!(
                "/v1/apps/{app}/functions/{function}/profile?seconds={}",
                args.seconds
            ),
        ))
        .await?;
    let profile: Value = response.json().await?;
    let svg = args
        .svg
        .unwrap_or_else(|| PathBuf::from(format!("{app}-{function}.svg")));
    std::fs::write(&svg, profile["svg"].as_str().unwrap_or_default())
        .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", svg.display()))?;
    if args.output == "json" {
        let mut shown = profile.clone();
        if let Some(map) = shown.as_object_mut() {
            map.remove("svg");
            map.insert("svg_file".into(), Value::from(svg.display().to_string()));
        }
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} samples of {} instance(s) over {} s ({})",
        profile["samples"],
        profile["instances"].as_array().map_or(0, Vec::len),
        profile["seconds"],
        profile["profiler"].as_str().unwrap_or("")
    );
    let mut table = Table::new(&[
        ("SELF", Align::Right),
        ("TOTAL", Align::Right),
        ("FRAME", Align::Left),
    ]);
    for frame in profile["top"]
        .as_array()
        .into_iter()
        .flatten()
        .take(args.top)
    {
        table.row(vec![
            format!("{}%", frame["self_pct"]),
            format!("{}%", frame["total_pct"]),
            frame["frame"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    table.print();
    println!("flame graph: {}", svg.display());
    Ok(ExitCode::SUCCESS)
}
