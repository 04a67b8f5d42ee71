//! `stratus rm APP`.

use std::process::ExitCode;

use reqwest::Method;

use crate::client::{Client, Connection};

#[derive(Debug, Clone, clap::Args)]
pub struct RmArgs {
    /// The application to remove
    pub app: String,
    /// Remove its buckets with the objects they hold too (without it, an
    /// app whose buckets hold objects is not removed)
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

pub async fn run(conn: &Connection, args: RmArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    client
        .send(client.request(
            Method::DELETE,
            &format!(
                "/v1/apps/{}{}",
                args.app,
                if args.force { "?force=true" } else { "" }
            ),
        ))
        .await?;
    if args.output == "json" {
        println!("{}", serde_json::json!({ "removed": args.app }));
    } else {
        println!("removed {}", args.app);
    }
    Ok(ExitCode::SUCCESS)
}
