//! `stratus event http|queue|schedule`: a sample event of each trigger's
//! shape on stdout, made by the server's own code, to pipe into
//! `stratus invoke`.

use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, Clone, clap::Args)]
pub struct EventArgs {
    #[command(subcommand)]
    pub command: EventCommand,
    /// The app the event names (default: the app of ./stratus.yaml, else `app`)
    #[arg(long, global = true)]
    pub app: Option<String>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum EventCommand {
    /// What an HTTP function gets for a request (payload format 2.0)
    Http {
        /// GET, POST, ...
        method: String,
        /// The path, with a query if any: /users/7?full=1
        path: String,
        /// A request header, NAME:VALUE (again for more)
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The request body, or @FILE to read it from a file
        #[arg(long)]
        body: Option<String>,
    },
    /// What a consumer of a queue gets for a batch of messages
    Queue {
        queue: String,
        /// A message body, or @FILE (again for more; default: one `{}`)
        #[arg(long)]
        body: Vec<String>,
        /// The batch's shape: cloudevents (default) or sqs
        #[arg(long, default_value = "cloudevents")]
        format: String,
    },
    /// What a scheduled function gets when its schedule fires
    Schedule {
        /// The schedule (default: rate(5 minutes))
        #[arg(default_value = "rate(5 minutes)")]
        expression: String,
        /// The function it belongs to
        #[arg(long, default_value = "handler")]
        function: String,
        /// The event's shape: cloudevents (default), eventbridge or scf
        #[arg(long, default_value = "cloudevents")]
        format: String,
    },
}

/// `TEXT`, or the contents of the file `@FILE` names.
fn text_or_file(value: &str) -> anyhow::Result<Vec<u8>> {
    match value.strip_prefix('@') {
        Some(file) => std::fs::read(file).with_context(|| format!("cannot read {file}")),
        None => Ok(value.as_bytes().to_vec()),
    }
}

/// The app of `./stratus.yaml`, if there is one that parses.
fn app_here() -> Option<String> {
    let file = stratus_manifest::MANIFEST_FILE;
    let text = std::fs::read_to_string(file).ok()?;
    stratus_manifest::parse(file, &text)
        .ok()
        .map(|spec| spec.name)
}

pub fn run(args: EventArgs) -> anyhow::Result<ExitCode> {
    let app = args
        .app
        .or_else(app_here)
        .unwrap_or_else(|| "app".to_owned());
    let event = match args.command {
        EventCommand::Http {
            method,
            path,
            headers,
            body,
        } => {
            let headers = headers
                .iter()
                .map(|h| {
                    h.split_once(':')
                        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
                        .with_context(|| format!("--header {h:?}: give NAME:VALUE"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = body.as_deref().map(text_or_file).transpose()?;
            stratus_server::samples::http(
                &app,
                &method,
                &path,
                &headers,
                &body.unwrap_or_default(),
            )?
        }
        EventCommand::Queue {
            queue,
            body,
            format,
        } => {
            let mut bodies = body
                .iter()
                .map(|b| text_or_file(b))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if bodies.is_empty() {
                bodies.push(b"{}".to_vec());
            }
            stratus_server::samples::queue(&app, &queue, &bodies, &format)?
        }
        EventCommand::Schedule {
            expression,
            function,
            format,
        } => stratus_server::samples::schedule(&app, &function, &expression, &format)?,
    };
    println!("{}", serde_json::to_string_pretty(&event)?);
    Ok(ExitCode::SUCCESS)
}
