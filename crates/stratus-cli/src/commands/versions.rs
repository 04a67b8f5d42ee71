//! `stratus versions APP` and `stratus rollback APP [VERSION]`: every
//! version an app was deployed as, and going back to one at once, without
//! a new deploy.

use std::process::ExitCode;

use reqwest::Method;

use crate::client::{Client, Connection};
use crate::table::{Align, Table, time};

#[derive(Debug, Clone, clap::Args)]
pub struct VersionsArgs {
    /// The application
    pub app: String,
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// The application
    pub app: String,
    /// The version to make active again (default: the one before the
    /// active one)
    pub version: Option<u32>,
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub async fn list(conn: &Connection, args: VersionsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    let listed = client
        .get_json(&format!("/v1/apps/{}/versions", args.app))
        .await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        ("VERSION", Align::Right),
        ("", Align::Left),
        ("DEPLOYED", Align::Left),
        ("SOURCE", Align::Left),
    ]);
    for version in listed["versions"].as_array().into_iter().flatten() {
        table.row(vec![
            version["version"].to_string(),
            if version["active"] == true {
                "active".to_owned()
            } else {
                String::new()
            },
            time(&version["created_ms"]),
            version["source"].as_str().unwrap_or_default().to_owned(),
        ]);
    }
    table.print();
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(conn: &Connection, args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    let body = match args.version {
        Some(version) => serde_json::json!({ "version": version }),
        None => serde_json::json!({}),
    };
    let answer: serde_json::Value = client
        .send(
            client
                .request(Method::POST, &format!("/v1/apps/{}/rollback", args.app))
                .json(&body),
        )
        .await?
        .json()
        .await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "{} runs version {} again ({})",
            args.app,
            answer["version"],
            answer["source"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
