//! The admin API client: finds the server and token, and turns API errors
//! into messages.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use stratus_server::config::env;

use crate::exit::{Failure, classified};

/// Where the CLI finds the server.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Admin URL of the server (default: from DATA_DIR/server.json)
    #[arg(long, global = true, env = env::URL)]
    pub server: Option<String>,
    /// Admin token (default: from DATA_DIR/admin.token)
    #[arg(long, global = true, env = env::TOKEN, hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory of a local server
    #[arg(long, global = true, env = env::DATA_DIR, default_value = stratus_server::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// A PEM certificate to trust for an https:// server, besides the
    /// usual roots (a server's own, self-signed one)
    #[arg(long, global = true, env = env::CA)]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// The server the CLI is pointed at: `--server` (or `STRATUS_URL`);
    /// else the local server of the data directory; else the current
    /// context (`stratus login`); else the last local server started,
    /// wherever it keeps its data.
    pub fn connect(conn: &Connection) -> anyhow::Result<Client> {
        if let Some(url) = &conn.server {
            let token = match &conn.token {
                Some(token) => token.clone(),
                None => read_token(&conn.data_dir)?,
            };
            return Client::build(
                url.trim_end_matches('/').to_owned(),
                token,
                conn.ca.as_deref(),
            );
        }
        if conn.data_dir.join(stratus_server::SERVER_FILE).exists() {
            return Client::local(conn, &conn.data_dir);
        }
        let contexts = crate::contexts::Contexts::load()?;
        if let Some(context) = contexts.current() {
            let context = crate::contexts::Context {
                token: conn.token.clone().unwrap_or_else(|| context.token.clone()),
                ca: conn.ca.clone().or_else(|| context.ca.clone()),
                ..context.clone()
            };
            return Client::for_context(&context);
        }
        if let Some(local) = contexts
            .local
            .filter(|dir| dir.join(stratus_server::SERVER_FILE).exists())
        {
            return Client::local(conn, &local);
        }
        // Says there is none, and how to start one.
        Client::local(conn, &conn.data_dir)
    }

    /// The local server whose data directory is `data_dir`.
    fn local(conn: &Connection, data_dir: &Path) -> anyhow::Result<Client> {
        let base = read_server_file(data_dir)?;
        let token = match &conn.token {
            Some(token) => token.clone(),
            None => read_token(data_dir)?,
        };
        Client::build(base, token, conn.ca.as_deref())
    }

    /// The server of a saved context.
    pub fn for_context(context: &crate::contexts::Context) -> anyhow::Result<Client> {
        Client::build(
            context.server.clone(),
            context.token.clone(),
            context.ca.as_deref(),
        )
    }

    fn build(base: String, token: String, ca: Option<&Path>) -> anyhow::Result<Client> {
        let mut http = reqwest::Client::builder().tcp_nodelay(true);
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the certificate {}", ca.display()))?;
            let certificate = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate (--ca)", ca.display()))?;
            http = http.add_root_certificate(certificate);
        }
        let http = http.build().context("cannot set up the HTTP client")?;
        Ok(Client { http, base, token })
    }

    pub fn new(base: String, token: String) -> Client {
        Client {
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .expect("http client"),
            base,
            token,
        }
    }

    /// The server's admin URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The admin token it sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends a request; a non-success answer becomes an error with the
    /// server's message and details.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.map_err(|err| {
            // The whole chain: a certificate the client does not trust is
            // said at its end.
            let mut why = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                why.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            classified(
                Failure::Unreachable,
                format!(
                    "cannot reach the stratus server at {} ({why}); is `stratus server` running?",
                    self.base
                ),
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(api_error(response).await)
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = self.send(self.request(Method::GET, path)).await?;
        Ok(response.json().await?)
    }

    /// Sends a request that builds, printing its progress to standard
    /// error as it comes (`==> step`, then the step's output indented),
    /// and returns the final answer; a failure is an error as [`send`]'s.
    ///
    /// [`send`]: Client::send
    pub async fn send_with_progress(
        &self,
        request: RequestBuilder,
    ) -> anyhow::Result<serde_json::Value> {
        let mut response = self
            .send(request.header(reqwest::header::ACCEPT, NDJSON))
            .await?;
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(NDJSON));
        if !streamed {
            return Ok(response.json().await?);
        }
        let mut pending = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the server hung up during the deploy; see `stratus builds ls`")?
        {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(item) = serde_json::from_slice::<serde_json::Value>(&line) else {
                    continue;
                };
                if let Some(step) = item["step"].as_str() {
                    eprintln!("==> {step}");
                } else if let Some(text) = item["line"].as_str() {
                    eprintln!("    {text}");
                } else if item.get("done").is_some() {
                    return Ok(item["done"].clone());
                } else if item.get("error").is_some() {
                    let status = item["status"]
                        .as_u64()
                        .and_then(|s| StatusCode::from_u16(s as u16).ok())
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    return Err(error_from_body(status, None, &item));
                }
            }
        }
        bail!("the server ended the answer before the outcome; see `stratus builds ls`")
    }
}

/// The media type of answers streamed as JSON lines.
const NDJSON: &str = "application/x-ndjson";

async fn api_error(response: Response) -> anyhow::Error {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    error_from_body(status, retry_after, &body)
}

/// The error of an answer `{"error": {"message", "details"}}`.
fn error_from_body(
    status: StatusCode,
    retry_after: Option<String>,
    body: &serde_json::Value,
) -> anyhow::Error {
    let error = &body["error"];
    let mut message = error["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the server answered {status}"));
    if let Some(details) = error["details"].as_array() {
        for detail in details {
            message.push_str("\n  ");
            message.push_str(&detail.as_str().unwrap_or_default().replace('\n', "\n  "));
        }
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        && let Some(after) = &retry_after
    {
        message.push_str(&format!(" (Retry-After: {after})"));
    }
    match status {
        StatusCode::NOT_FOUND => classified(Failure::NotFound, message),
        StatusCode::TOO_MANY_REQUESTS => classified(Failure::Throttled, message),
        StatusCode::SERVICE_UNAVAILABLE if retry_after.is_some() => {
            classified(Failure::Throttled, message)
        }
        _ => anyhow!(message),
    }
}

/// The admin token a local server keeps in its data directory.
fn read_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(stratus_server::TOKEN_FILE);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| {
            format!(
                "cannot read the admin token at {}; pass --token or set {}",
                path.display(),
                env::TOKEN
            )
        })?
        .trim()
        .to_owned())
}

fn read_server_file(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(stratus_server::SERVER_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) => {
            return Err(classified(
                Failure::Unreachable,
                format!(
                    "no running server found ({} is missing); start one with `stratus server`, or pass --server and --token",
                    path.display()
                ),
            ));
        }
    };
    let info: stratus_server::ServerInfo =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    Ok(info.admin)
}

/// `APP/FN` as given, or `FN` of the app whose `stratus.yaml` is in the
/// current directory.
pub fn function_target(target: &str) -> anyhow::Result<(String, String)> {
    if target.contains('/') {
        let (app, function) = split_target(target)?;
        return Ok((app.to_owned(), function.to_owned()));
    }
    let file = stratus_manifest::MANIFEST_FILE;
    let Ok(text) = std::fs::read_to_string(file) else {
        bail!(
            "expected APP/FUNCTION, e.g. hello/greet, not {target:?} (a function's name alone is read as one of the app in ./{file}, and there is none here)"
        );
    };
    let spec = stratus_manifest::parse(file, &text).map_err(|errors| {
        anyhow::anyhow!("./{file} names the app of {target:?}, but it does not parse:\n{errors}")
    })?;
    Ok((spec.name, target.to_owned()))
}

/// Splits `APP/FN`.
pub fn split_target(target: &str) -> anyhow::Result<(&str, &str)> {
    match target.split_once('/') {
        Some((app, function))
            if !app.is_empty() && !function.is_empty() && !function.contains('/') =>
        {
            Ok((app, function))
        }
        _ => bail!("expected APP/FUNCTION, e.g. hello/greet, not {target:?}"),
    }
}
