//! `stratus dev [DIR]`: deploys the app, redeploys it on every save, and
//! streams its logs, against the server the CLI is pointed at or a local
//! one it starts (and stops again on Ctrl-C).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use stratus_archive::{IGNORE_FILE, IgnoreRules};
use stratus_manifest::MANIFEST_FILE;

use super::deploy::{DeployOptions, deploy_dir};
use super::logs::{LogsArgs, run as follow_logs};
use crate::client::{Client, Connection};

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// The application directory, holding stratus.yaml
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// How often the directory is looked at for saved changes
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Run this function with its runtime's debugger listening on
    /// 127.0.0.1:--debug-port (Node.js's inspector; debugpy for Python,
    /// which its requirements.txt must list): one instance, started at
    /// once, one event at a time, with the longest timeout
    #[arg(long, value_name = "FUNCTION")]
    pub debug: Option<String>,
    /// The debugger's port
    #[arg(long, default_value_t = 9229, requires = "debug")]
    pub debug_port: u16,
    /// Arguments for the local server `stratus dev` starts when none
    /// answers (after `--`, e.g. `-- --listen 127.0.0.1:9080`)
    #[arg(last = true)]
    pub server_args: Vec<String>,
}

/// Directories never watched: version control, caches, the local server's
/// data, vendored dependencies (a change there comes with a manifest or
/// lock file change).
const UNWATCHED: &[&str] = &[".git", "__pycache__", "node_modules", ".stratus", ".venv"];

/// How long the tree must stay unchanged before a redeploy: an editor's
/// save can be several writes.
const SETTLE: Duration = Duration::from_millis(40);

pub async fn run(conn: &Connection, args: DevArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.canonicalize().with_context(|| {
        format!(
            "cannot open the application directory {}",
            args.dir.display()
        )
    })?;
    if !dir.join(MANIFEST_FILE).is_file() {
        bail!(
            "{} holds no {MANIFEST_FILE}; `stratus init NAME` makes an application directory",
            dir.display()
        );
    }
    let mut local = LocalServer::none();
    let (client, conn) = match answering(conn).await {
        Some(client) => (client, conn.clone()),
        None if conn.server.is_some() => bail!(
            "the server at {} does not answer; start it, or leave out --server (and STRATUS_URL) to have stratus dev start a local one",
            conn.server.as_deref().unwrap_or_default()
        ),
        None => {
            local = LocalServer::start(conn, &args.server_args).await?;
            let conn = Connection {
                data_dir: local.data_dir.clone(),
                ..conn.clone()
            };
            (Client::connect(&conn)?, conn)
        }
    };
    let options = DeployOptions {
        debug: args.debug.clone().map(|f| (f, args.debug_port)),
        ..DeployOptions::default()
    };
    let outcome = tokio::select! {
        outcome = develop(&client, &conn, &dir, args.poll, &options) => outcome,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    if options.debug.is_some() && local.child.is_none() {
        // The server stays: the app goes back to running undebugged.
        eprintln!("deploying without the debugger");
        deploy(&client, &dir, &DeployOptions::default()).await;
    }
    local.stop().await;
    outcome.map(|()| ExitCode::SUCCESS)
}

/// Deploys, then follows the logs and redeploys on each change, until the
/// server goes away.
async fn develop(
    client: &Client,
    conn: &Connection,
    dir: &Path,
    poll: Duration,
    options: &DeployOptions,
) -> anyhow::Result<()> {
    let mut seen = fingerprint(dir);
    let app = match deploy(client, dir, options).await {
        Some(app) => app,
        // Nothing deployed yet: wait for a fix, then go on as usual.
        None => loop {
            seen = changed(dir, &seen, poll).await;
            if let Some(app) = deploy(client, dir, options).await {
                break app;
            }
        },
    };
    eprintln!("watching {} for changes (Ctrl-C stops)", dir.display());
    let logs = LogsArgs {
        target: app.clone(),
        request_id: None,
        since: Some(SystemTime::now() - Duration::from_secs(1)),
        until: None,
        filter: None,
        follow: true,
        limit: 1000,
        output: "text".to_owned(),
    };
    let follow = follow_logs(conn, logs);
    tokio::pin!(follow);
    loop {
        tokio::select! {
            ended = &mut follow => {
                ended?;
                bail!("the log stream ended");
            }
            now = changed(dir, &seen, poll) => {
                seen = now;
                if let Some(name) = deploy(client, dir, options).await
                    && name != app
                {
                    eprintln!("the app is now named {name}; restart stratus dev to follow its logs");
                }
            }
        }
    }
}

/// Deploys `dir`, saying how it went; the app's name when it deployed.
async fn deploy(client: &Client, dir: &Path, options: &DeployOptions) -> Option<String> {
    let started = Instant::now();
    match deploy_dir(client, dir, options).await {
        Ok(deployed) => {
            let took = started.elapsed().as_secs_f64();
            if let Some((function, port)) = &options.debug {
                eprintln!(
                    "==> {function} runs with its debugger on 127.0.0.1:{port} (one instance, no timeout to speak of)"
                );
            }
            if deployed.changed {
                eprintln!(
                    "==> deployed {} version {} in {took:.2} s ({})",
                    deployed.app,
                    deployed.version,
                    deployed.contents()
                );
                for route in &deployed.routes {
                    eprintln!("    {route}");
                }
            } else {
                eprintln!(
                    "==> {} is unchanged at version {}",
                    deployed.app, deployed.version
                );
            }
            Some(deployed.app)
        }
        Err(err) => {
            eprintln!("==> not deployed: {err:#}\n    waiting for the next change");
            None
        }
    }
}

/// Waits until the tree differs from `seen` and then stays the same for
/// [`SETTLE`]; returns what it is then.
async fn changed(dir: &Path, seen: &u64, poll: Duration) -> u64 {
    loop {
        tokio::time::sleep(poll).await;
        let mut now = fingerprint(dir);
        if now == *seen {
            continue;
        }
        loop {
            tokio::time::sleep(SETTLE).await;
            let later = fingerprint(dir);
            if later == now {
                return now;
            }
            now = later;
        }
    }
}

/// A hash of every watched file's path, size, mode and modification time.
fn fingerprint(dir: &Path) -> u64 {
    let rules = std::fs::read_to_string(dir.join(IGNORE_FILE))
        .ok()
        .and_then(|text| IgnoreRules::parse(&text).ok())
        .unwrap_or_default();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut pending = vec![(dir.to_owned(), String::new())];
    while let Some((path, relative)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if relative.is_empty() {
                name.clone()
            } else {
                format!("{relative}/{name}")
            };
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                if !UNWATCHED.contains(&name.as_str()) && !rules.is_ignored(&child, true) {
                    pending.push((entry.path(), child));
                }
                continue;
            }
            if rules.is_ignored(&child, false) {
                continue;
            }
            use std::os::unix::fs::MetadataExt;
            (
                &child,
                meta.len(),
                meta.mode(),
                meta.mtime(),
                meta.mtime_nsec(),
            )
                .hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The server the CLI is pointed at, if it answers.
async fn answering(conn: &Connection) -> Option<Client> {
    let client = Client::connect(conn).ok()?;
    client.get_json("/v1/status").await.ok()?;
    Some(client)
}

/// A `stratus server` this command started, stopped with it.
struct LocalServer {
    child: Option<tokio::process::Child>,
    data_dir: PathBuf,
}

impl LocalServer {
    fn none() -> LocalServer {
        LocalServer {
            child: None,
            data_dir: PathBuf::new(),
        }
    }

    /// Starts `stratus server` on the CLI's data directory, its output in
    /// `dev-server.log` there, and waits until it answers.
    async fn start(conn: &Connection, extra: &[String]) -> anyhow::Result<LocalServer> {
        let data_dir = std::path::absolute(&conn.data_dir)?;
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let log_path = data_dir.join("dev-server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        // A server that was killed leaves its file behind: wait for a new one.
        let server_file = data_dir.join(stratus_server::SERVER_FILE);
        let _ = std::fs::remove_file(&server_file);
        let exe = std::env::current_exe().context("cannot find the stratus binary")?;
        let mut child = tokio::process::Command::new(exe)
            .arg("server")
            .args(extra)
            .arg("--data-dir")
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: stopped by this command, not by the
            // terminal's Ctrl-C in the middle of its own shutdown.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start stratus server")?;
        eprintln!(
            "started a local server (data in {}, its log in {})",
            data_dir.display(),
            log_path.display()
        );
        let local = LocalServer {
            child: None,
            data_dir,
        };
        let conn = Connection {
            data_dir: local.data_dir.clone(),
            server: None,
            ..conn.clone()
        };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "the local server exited ({status}):\n{}\nstart one yourself (stratus server), or pass it arguments after --",
                    tail.join("\n")
                );
            }
            if server_file.exists()
                && let Some(_client) = answering(&conn).await
            {
                return Ok(LocalServer {
                    child: Some(child),
                    ..local
                });
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the local server did not answer within a minute; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server this command started, and waits for it (it stops
    /// its instances first).
    async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        eprintln!("stopping the local server");
        if let Some(pid) = child.id() {
            stratus_sandbox::terminate_group(pid);
        }
        if tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}
