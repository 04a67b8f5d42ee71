//! `stratus users ls|revoke|rm APP [UID]`: an app's end users, through the
//! admin API.

use std::process::ExitCode;

use reqwest::Method;

use crate::client::{Client, Connection};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub command: UsersCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UsersCommand {
    /// List an application's users
    #[command(visible_alias = "list")]
    Ls {
        app: String,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// End every session of a user, at once: its refresh tokens stop
    /// working and its access tokens are refused
    Revoke { app: String, uid: String },
    /// Delete a user and its sessions
    Rm { app: String, uid: String },
}

pub async fn run(conn: &Connection, args: UsersArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        UsersCommand::Ls { app, output } => {
            let mut users = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut request = client
                    .request(Method::GET, &format!("/v1/apps/{app}/users"))
                    .query(&[("limit", "1000")]);
                if let Some(after) = &after {
                    request = request.query(&[("after", after)]);
                }
                let page: serde_json::Value = client.send(request).await?.json().await?;
                users.extend(page["users"].as_array().cloned().unwrap_or_default());
                match page["next"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break,
                }
            }
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&users)?);
                return Ok(ExitCode::SUCCESS);
            }
            if users.is_empty() {
                println!("app {app} has no users");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("UID", Align::Left),
                ("PROVIDER", Align::Left),
                ("EMAIL", Align::Left),
                ("CREATED", Align::Left),
                ("LAST SIGN-IN", Align::Left),
            ]);
            for u in &users {
                table.row(vec![
                    crate::table::text(&u["uid"]),
                    crate::table::text(&u["provider"]),
                    crate::table::text(&u["email"]),
                    crate::table::time(&u["created_ms"]),
                    crate::table::time(&u["last_sign_in_ms"]),
                ]);
            }
            table.print();
        }
        UsersCommand::Revoke { app, uid } => {
            let answer: serde_json::Value = client
                .send(client.request(Method::POST, &format!("/v1/apps/{app}/users/{uid}/revoke")))
                .await?
                .json()
                .await?;
            println!("revoked {uid}: {} sessions ended", answer["sessions_ended"]);
        }
        UsersCommand::Rm { app, uid } => {
            client
                .send(client.request(Method::DELETE, &format!("/v1/apps/{app}/users/{uid}")))
                .await?;
            println!("deleted user {uid} of {app}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
