//! `stratus rm APP`.

use std::process::ExitCode;

use reqwest::Method;

use crate::client::{Client, Connection};

#[derive(Debug, Clone, clap::Args)]
pub struct RmArgs {
    /// The application to remove
    pub app: String,
}

pub async fn run(conn: &Connection, args: RmArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    client
        .send(client.request(Method::DELETE, &format!("/v1/apps/{}", args.app)))
        .await?;
    println!("removed {}", args.app);
    Ok(ExitCode::SUCCESS)
}
