//! `stratus login URL` and `stratus context ls|use|rm`: named servers.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::client::{Client, Connection};
use crate::contexts::{Context, Contexts};
use crate::table::{Align, Table};

#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// The server's admin URL, e.g. https://stratus.example.com:8081
    pub url: String,
    /// The context's name (default: the URL's host)
    #[arg(long)]
    pub name: Option<String>,
    /// `json` prints what was done as one object
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ContextArgs {
    #[command(subcommand)]
    pub command: ContextCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ContextCommand {
    /// List the saved contexts; `*` marks the current one
    #[command(visible_alias = "list")]
    Ls {
        /// `json` prints the names, servers and the current one (never the
        /// tokens)
        #[arg(long, value_parser = ["text", "json"], default_value = "text")]
        output: String,
    },
    /// Make a saved context the current one
    Use { name: String },
    /// Forget a saved context
    #[command(visible_alias = "delete")]
    Rm { name: String },
}

/// Checks the token against the server, then saves the context as current.
pub async fn login(conn: &Connection, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let server = args.url.trim_end_matches('/').to_owned();
    let host = reqwest::Url::parse(&server)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .with_context(|| {
            format!("{server:?} is not a URL such as https://stratus.example.com:8081")
        })?;
    let token = match &conn.token {
        Some(token) => token.clone(),
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("admin token for {server}: ");
            }
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        bail!("no token: pass --token, set STRATUS_TOKEN, or type it when asked");
    }
    let context = Context {
        server: server.clone(),
        token,
        ca: conn
            .ca
            .clone()
            .map(|ca| std::path::absolute(ca).unwrap_or_default()),
    };
    // The token must work before it is saved.
    let client = Client::for_context(&context)?;
    client.get_json("/v1/health").await?;
    let name = args.name.unwrap_or(host);
    let mut contexts = Contexts::load()?;
    contexts.contexts.insert(name.clone(), context);
    contexts.current = Some(name.clone());
    let path = contexts.save()?;
    if args.output == "json" {
        println!(
            "{}",
            serde_json::json!({ "context": name, "server": server, "saved_in": path })
        );
    } else {
        println!(
            "logged in to {server} as context {name} (saved in {})",
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(args: ContextArgs) -> anyhow::Result<ExitCode> {
    let mut contexts = Contexts::load()?;
    match args.command {
        ContextCommand::Ls { output } => {
            if output == "json" {
                let listed: Vec<_> = contexts
                    .contexts
                    .iter()
                    .map(|(name, c)| serde_json::json!({ "name": name, "server": c.server }))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "current": contexts.current, "contexts": listed })
                );
                return Ok(ExitCode::SUCCESS);
            }
            if contexts.contexts.is_empty() {
                println!("no contexts; `stratus login URL` saves one");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(&[
                ("CURRENT", Align::Left),
                ("NAME", Align::Left),
                ("SERVER", Align::Left),
            ]);
            for (name, context) in &contexts.contexts {
                let current = contexts.current.as_deref() == Some(name.as_str());
                table.row(vec![
                    if current { "*" } else { "" }.to_owned(),
                    name.clone(),
                    context.server.clone(),
                ]);
            }
            table.print();
        }
        ContextCommand::Use { name } => {
            if !contexts.contexts.contains_key(&name) {
                return Err(crate::exit::classified(
                    crate::exit::Failure::NotFound,
                    format!("no context {name:?}; `stratus context ls` lists them"),
                ));
            }
            contexts.current = Some(name.clone());
            contexts.save()?;
            println!("using context {name}");
        }
        ContextCommand::Rm { name } => {
            if contexts.contexts.remove(&name).is_none() {
                return Err(crate::exit::classified(
                    crate::exit::Failure::NotFound,
                    format!("no context {name:?}; `stratus context ls` lists them"),
                ));
            }
            if contexts.current.as_deref() == Some(name.as_str()) {
                contexts.current = None;
            }
            contexts.save()?;
            println!("forgot context {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
