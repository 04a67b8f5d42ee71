//! `stratus git remote APP`: the app's git remote on the server, where a
//! push deploys; `stratus git webhook APP`: a push to a repository
//! elsewhere deploys the app.

use std::process::ExitCode;

use reqwest::Method;

use crate::client::{Client, Connection};

#[derive(Debug, Clone, clap::Args)]
pub struct GitArgs {
    #[command(subcommand)]
    pub command: GitCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum GitCommand {
    /// Print the URL of APP's git remote on the server: `git push` of main
    /// there deploys it, the build's output shown as `remote:` lines, and a
    /// push that does not deploy is refused
    Remote {
        app: String,
        /// Put the admin token in the URL (git then needs no password;
        /// the URL is a secret)
        #[arg(long)]
        with_token: bool,
    },
    /// Make (or remake, with a new secret) the webhook through which a
    /// git host's pushes deploy APP; prints the URL and secret to give the
    /// host (content type application/json)
    Webhook {
        app: String,
        /// The repository the server fetches on a push (any URL it can
        /// reach)
        #[arg(long, required_unless_present = "rm")]
        url: Option<String>,
        /// The branch or tag whose pushes deploy (default: every pushed
        /// one)
        #[arg(long = "ref")]
        reference: Option<String>,
        /// The app's directory in the repository (default: its root)
        #[arg(long)]
        path: Option<String>,
        /// Remove the webhook instead
        #[arg(long, conflicts_with_all = ["url", "reference", "path"])]
        rm: bool,
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
}

pub async fn run(conn: &Connection, args: GitArgs) -> anyhow::Result<ExitCode> {
    let client = Client::connect(conn)?;
    match args.command {
        GitCommand::Remote { app, with_token } => {
            let base = client.base();
            let url = format!("{base}/v1/apps/{app}/git");
            if with_token {
                let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
                println!(
                    "{scheme}://stratus:{}@{rest}/v1/apps/{app}/git",
                    client.token()
                );
            } else {
                println!("{url}");
                eprintln!(
                    "git remote add stratus {url} && git push stratus main\n(git asks for a password: the admin token; or use --with-token)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        GitCommand::Webhook {
            app,
            url,
            reference,
            path,
            rm,
            output,
        } => {
            let at = format!("/v1/apps/{app}/webhooks/git");
            if rm {
                client.send(client.request(Method::DELETE, &at)).await?;
                println!("removed the git webhook of {app}");
                return Ok(ExitCode::SUCCESS);
            }
            let body = serde_json::json!({ "url": url, "ref": reference, "path": path });
            let made: serde_json::Value = client
                .send(client.request(Method::PUT, &at).json(&body))
                .await?
                .json()
                .await?;
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&made)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("payload URL  {}", made["url"].as_str().unwrap_or(""));
            println!("secret       {}", made["secret"].as_str().unwrap_or(""));
            println!(
                "a push of {} to {} deploys {app}; give the git host the URL, the secret and the content type application/json (the secret is not shown again)",
                made["ref"].as_str().unwrap_or("any branch or tag"),
                made["repository"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
