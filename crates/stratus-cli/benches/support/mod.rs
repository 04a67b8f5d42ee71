//! What the benchmarks share: the stratus binary, a server they start and
//! stop, deploys, example binaries and percentiles.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The stratus binary under test.
pub const STRATUS: &str = env!("CARGO_BIN_EXE_stratus");

/// Where `cargo build --example NAME` is run from when an example is missing.
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

pub const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub const EXAMPLE_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The value of the environment variable `name`, or `default` when unset.
pub fn env_number<T: std::str::FromStr + std::fmt::Display>(
    name: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<T>()
            .ok()
            .filter(|n| valid(n))
            .with_context(|| format!("{name}={v} is out of range")),
        Err(_) => Ok(default),
    }
}

/// `target/<profile>/examples/NAME`, next to the directory this bench
/// executable lives in (`target/<profile>/deps`); built when missing.
pub fn locate_example(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot find the target directory from the bench executable")?;
    let candidates = [
        profile_dir.join("examples").join(name),
        profile_dir
            .parent()
            .map(|target| target.join("release").join("examples").join(name))
            .unwrap_or_default(),
    ];
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("building the {name} example ({cargo} build --release --example {name})");
    let mut child = Command::new(&cargo)
        .args(["build", "--release", "-p", "stratus-cli", "--example", name])
        .current_dir(MANIFEST_DIR)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {cargo}"))?;
    let status = wait_bounded(&mut child, EXAMPLE_BUILD_TIMEOUT)?
        .with_context(|| format!("building the {name} example took too long"))?;
    if !status.success() {
        bail!("building the {name} example failed ({status})");
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("the {name} example was built but is not in the target directory"))
}

pub fn deploy(app_dir: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let mut child = stratus_command()
        .arg("deploy")
        .arg(app_dir)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run stratus deploy")?;
    let status = wait_bounded(&mut child, Duration::from_secs(120))?
        .context("stratus deploy took more than 2 minutes")?;
    let mut out = String::new();
    for pipe in [
        child.stdout.take().map(read_all),
        child.stderr.take().map(read_all),
    ]
    .into_iter()
    .flatten()
    {
        out.push_str(&pipe);
    }
    if !status.success() {
        bail!("stratus deploy failed ({status}):\n{out}");
    }
    eprint!("{out}");
    Ok(())
}

pub fn read_all(mut r: impl std::io::Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// The stratus binary, with no ambient connection settings to mislead it.
pub fn stratus_command() -> Command {
    let mut cmd = Command::new(STRATUS);
    for var in ["STRATUS_URL", "STRATUS_TOKEN", "STRATUS_DATA_DIR"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Waits for `child` at most `limit`; `None` (and the child killed) if it overran.
pub fn wait_bounded(
    child: &mut Child,
    limit: Duration,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `stratus server`; dropping it stops the server (SIGTERM, then
/// wait, then SIGKILL if it does not stop in time), also on error or panic.
pub struct Server {
    child: Child,
    pub admin: String,
    pub public: String,
    pub token: String,
}

impl Server {
    /// The server's process id (for reading its CPU time from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(data_dir: &Path, log: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        Server::start_with_env(data_dir, log, extra, &[])
    }

    /// [`Server::start`] with `env` added to the server's environment
    /// (`RUST_LOG`, say).
    pub fn start_with_env(
        data_dir: &Path,
        log: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Server> {
        let log_file = std::fs::File::create(log)?;
        let child = stratus_command()
            .envs(env.iter().copied())
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--shutdown-grace",
                "2s",
                // Nothing installed in the background while measuring.
                "--python-packages=",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("cannot start stratus server")?;
        // From here on the guard owns the process: any early return stops it.
        let mut server = Server {
            child,
            admin: String::new(),
            public: String::new(),
            token: String::new(),
        };
        let server_file = data_dir.join("server.json");
        let token_file = data_dir.join("admin.token");
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "stratus server exited ({status}) before serving:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let info = std::fs::read(&server_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            let field = |name: &str| {
                info.as_ref()
                    .and_then(|v| v.get(name))
                    .and_then(|v| v.as_str())
                    .map(|s| s.trim_end_matches('/').to_owned())
            };
            let (admin, public) = (field("admin"), field("public"));
            let token = std::fs::read_to_string(&token_file)
                .ok()
                .filter(|t| !t.trim().is_empty());
            if let (Some(admin), Some(public), Some(token)) = (admin, public, token) {
                server.admin = admin;
                server.public = public;
                server.token = token.trim().to_owned();
                return Ok(server);
            }
            if Instant::now() >= deadline {
                bail!(
                    "stratus server wrote no {} within {SERVER_START_TIMEOUT:?}:\n{}",
                    server_file.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let termed = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let deadline = Instant::now() + SERVER_STOP_TIMEOUT;
            while Instant::now() < deadline {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("stratus server did not stop within {SERVER_STOP_TIMEOUT:?}; killing it");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `p`th percentile (nearest rank) of sorted `values`.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v
}

/// What one connection (or stream) of a closed-loop load saw: the latency
/// of each answer, in milliseconds, and the failures, the first named.
#[derive(Debug, Default)]
pub struct TaskResult {
    pub latencies: Vec<f64>,
    pub errors: usize,
    pub first_error: Option<String>,
}

impl TaskResult {
    pub fn error(&mut self, why: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(why.to_string());
        }
    }
}

/// utime + stime of a process (all its threads), in clock ticks, from its
/// `/proc/PID/stat` file.
pub fn process_ticks(stat: &str) -> Option<u64> {
    let text = std::fs::read_to_string(stat).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `target/test-deps/NAME/node_modules`, installed once from npm with the
/// same layout and marker as the tests' `npm_install`, so both share it.
pub fn npm_install(name: &str, packages: &[&str]) -> anyhow::Result<PathBuf> {
    let target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-deps")
        .join(name);
    let marker = target.join(".installed");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&target);
        std::fs::create_dir_all(&target)?;
        std::fs::write(target.join("package.json"), "{\"private\": true}")?;
        eprintln!("installing {packages:?} into {}", target.display());
        let status = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&target)
            .args(packages)
            .stdin(Stdio::null())
            .status()
            .context("cannot run npm")?;
        if !status.success() {
            bail!("npm install {packages:?} failed ({status})");
        }
        std::fs::write(&marker, "")?;
    }
    Ok(target.join("node_modules"))
}

/// What a closed-loop load saw: each answer's latency in milliseconds,
/// sorted, the answers `ok` refused, and how long it ran.
#[derive(Debug, Default)]
pub struct ClosedLoop {
    pub latencies_ms: Vec<f64>,
    pub errors: usize,
    pub secs: f64,
}

impl ClosedLoop {
    pub fn rps(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.secs
    }
}

/// Most requests one connection sends in one measurement, whatever the
/// time.
const MAX_REQUESTS_PER_CONNECTION: usize = 2_000_000;

/// `connections` keep-alive HTTP/1.1 connections to `addr`, each sending
/// `request()` in a closed loop for `window`; `ok` judges each answer by
/// its status and body.
pub async fn closed_loop<B>(
    addr: std::net::SocketAddr,
    connections: usize,
    window: Duration,
    request: impl Fn() -> anyhow::Result<hyper::Request<B>> + Clone + Send + 'static,
    ok: fn(hyper::StatusCode, &[u8]) -> bool,
) -> anyhow::Result<ClosedLoop>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline && latencies.len() < MAX_REQUESTS_PER_CONNECTION {
                let request = request()?;
                let sent = Instant::now();
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                if !ok(status, &body) {
                    errors += 1;
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, errs) = task.await??;
        all.extend(latencies);
        errors += errs;
    }
    Ok(ClosedLoop {
        latencies_ms: sorted(all.into_iter()),
        errors,
        secs: started.elapsed().as_secs_f64(),
    })
}
