//! `stratus invoke APP/FN`.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, Connection, function_target};

#[derive(Debug, Clone, clap::Args)]
pub struct InvokeArgs {
    /// The function, as APP/FUNCTION, or FUNCTION of the app in
    /// ./stratus.yaml
    pub target: String,
    /// The event: JSON text, or @FILE to read it from a file (default: stdin, or {})
    #[arg(long, short)]
    pub data: Option<String>,
    /// Also print the invocation's log lines (to stderr)
    #[arg(long)]
    pub log: bool,
    /// `json` prints result, error, request id, duration and cold/warm as one object
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub output: String,
    /// Queue the event and return once it is stored: it is delivered at
    /// least once, retried on failure, and dead-lettered when retries run out
    #[arg(long = "async", conflicts_with = "log")]
    pub r#async: bool,
}

/// What an invocation returned, as the CLI shows it.
#[derive(Debug)]
pub struct Invoked {
    pub body: Value,
    pub error: bool,
    pub request_id: String,
    pub cold: bool,
    pub duration_ms: f64,
    pub init_ms: Option<f64>,
    pub sandbox_ms: Option<f64>,
    pub runtime_start_ms: Option<f64>,
    pub handler_init_ms: Option<f64>,
    /// Cold starts only: whether the sandbox was made ahead of demand.
    pub prestarted: Option<bool>,
    /// Cold starts only: whether the process was made from a loaded
    /// template rather than started afresh.
    pub from_template: Option<bool>,
    pub queue_ms: f64,
    /// CPU time in user and kernel mode, from the instance's cgroup.
    pub cpu_user_ms: Option<f64>,
    pub cpu_system_ms: Option<f64>,
    /// `invocation`, or `instance` for a function that runs several
    /// events at once.
    pub cpu_scope: Option<String>,
    pub max_memory_mb: Option<f64>,
    pub version: String,
    pub logs: String,
}

pub async fn run(conn: &Connection, args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let (app, function) = function_target(&args.target)?;
    let (app, function) = (app.as_str(), function.as_str());
    let payload = read_payload(args.data.as_deref())?;
    let client = Client::connect(conn)?;
    if args.r#async {
        let response = client
            .send(
                client
                    .request(
                        Method::POST,
                        &format!("/v1/apps/{app}/functions/{function}/invoke"),
                    )
                    .header("x-stratus-invocation-type", "Event")
                    .header("content-type", "application/json")
                    .body(payload),
            )
            .await?;
        let status = response.status().as_u16();
        let accepted: Value = response.json().await?;
        let request_id = accepted["request_id"].as_str().unwrap_or_default();
        if args.output == "json" {
            let out = json!({ "request_id": request_id, "status": status });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!("accepted {request_id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let invoked = invoke(&client, app, function, payload, args.log).await?;
    if args.output == "json" {
        let out = json!({
            "result": if invoked.error { Value::Null } else { invoked.body.clone() },
            "error": if invoked.error { invoked.body.clone() } else { Value::Null },
            "request_id": invoked.request_id,
            "version": invoked.version,
            "cold": invoked.cold,
            "duration_ms": invoked.duration_ms,
            "init_ms": invoked.init_ms,
            "queue_ms": invoked.queue_ms,
            "phases": {
                "queue_ms": invoked.queue_ms,
                "sandbox_ms": invoked.sandbox_ms,
                "runtime_start_ms": invoked.runtime_start_ms,
                "handler_init_ms": invoked.handler_init_ms,
                "handler_ms": invoked.duration_ms,
                "prestarted": invoked.prestarted,
                "from_template": invoked.from_template,
            },
            "cpu": {
                "user_ms": invoked.cpu_user_ms,
                "system_ms": invoked.cpu_system_ms,
                "scope": invoked.cpu_scope,
            },
            "max_memory_mb": invoked.max_memory_mb,
            "logs": if args.log { Value::String(invoked.logs.clone()) } else { Value::Null },
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if args.log && !invoked.logs.is_empty() {
            eprint!("{}", invoked.logs);
        }
        let text = serde_json::to_string_pretty(&invoked.body)?;
        if invoked.error {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    Ok(if invoked.error {
        ExitCode::from(crate::exit::FUNCTION_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_payload(data: Option<&str>) -> anyhow::Result<String> {
    let (text, source) = match data {
        Some(file) if file.starts_with('@') => (
            std::fs::read_to_string(&file[1..])
                .with_context(|| format!("cannot read {}", &file[1..]))?,
            file[1..].to_owned(),
        ),
        Some(text) => (text.to_owned(), "--data".to_owned()),
        None if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            (text, "standard input".to_owned())
        }
        None => ("{}".to_owned(), String::new()),
    };
    let text = if text.trim().is_empty() {
        "{}".to_owned()
    } else {
        text
    };
    if let Err(err) = serde_json::from_str::<Value>(&text) {
        bail!(
            "{source} is not valid JSON ({err}); pass a JSON document, e.g. --data '{{\"name\":\"Ada\"}}'"
        );
    }
    Ok(text)
}

pub async fn invoke(
    client: &Client,
    app: &str,
    function: &str,
    payload: String,
    log: bool,
) -> anyhow::Result<Invoked> {
    let path = format!(
        "/v1/apps/{app}/functions/{function}/invoke{}",
        if log { "?log=tail" } else { "" }
    );
    let response = client
        .send(
            client
                .request(Method::POST, &path)
                .header("content-type", "application/json")
                .body(payload),
        )
        .await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let number = |name: &str| header(name).and_then(|v| v.parse::<f64>().ok());
    let error = header("x-stratus-function-error").is_some();
    let logs = header("x-stratus-log-result")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let invoked = Invoked {
        error,
        request_id: header("x-stratus-request-id").unwrap_or_default(),
        cold: header("x-stratus-cold").as_deref() == Some("true"),
        duration_ms: number("x-stratus-duration-ms").unwrap_or_default(),
        init_ms: number("x-stratus-init-ms"),
        sandbox_ms: number("x-stratus-sandbox-ms"),
        runtime_start_ms: number("x-stratus-runtime-start-ms"),
        handler_init_ms: number("x-stratus-handler-init-ms"),
        prestarted: header("x-stratus-prestarted").map(|v| v == "true"),
        from_template: header("x-stratus-from-template").map(|v| v == "true"),
        queue_ms: number("x-stratus-queue-ms").unwrap_or_default(),
        cpu_user_ms: number("x-stratus-cpu-user-ms"),
        cpu_system_ms: number("x-stratus-cpu-system-ms"),
        cpu_scope: header("x-stratus-cpu-scope"),
        max_memory_mb: number("x-stratus-max-memory-mb"),
        version: header("x-stratus-version").unwrap_or_default(),
        logs,
        body: Value::Null,
    };
    let bytes = response.bytes().await?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Invoked { body, ..invoked })
}
