//! HTTP services through the public listener, side by side with the same
//! app served directly and behind nginx.
//!
//! Starts a real `stratus server` (isolation `auto`) in a temporary data
//! directory and deploys services whose app is an ordinary web server:
//!
//! 1. HTTP/1.1: the Rust binary `hello_http --direct $PORT` (hyper, a
//!    200 `text/plain` "hello"), with `concurrency: 1000`, `min_instances: 1`
//!    and `max_instances: 1`, so that exactly one process serves, as in the
//!    references: the same binary reached directly, and a second instance
//!    of it behind nginx as a reverse proxy (keep-alive upstream). The load
//!    generator is a closed loop in this process: C keep-alive HTTP/1.1
//!    connections (hyper's client), each sending its next request when the
//!    previous answer has arrived, for a fixed wall time after a warm-up at
//!    the same concurrency; stratus is addressed by `Host: APP.localhost`.
//! 2. gRPC unary: a Node `@grpc/grpc-js` server (installed from npm into
//!    `target/test-deps`, as the tests do), reached directly, through
//!    nginx's `grpc_pass` (when nginx has the HTTP/2 and gRPC modules) and
//!    through stratus, routed by the `:authority` `APP.localhost`. The load
//!    generator is hyper's HTTP/2 client sending hand-framed gRPC messages:
//!    S streams multiplexed on one h2c connection, each a closed loop; a
//!    call counts when the status is 200, `grpc-status` is 0 and the reply
//!    is the expected message.
//! 3. Cold starts: a service with `min_instances: 0`, redeployed with a
//!    new `env` value before each round so that the version is new and has
//!    never run; the time from sending the first request (on an open
//!    connection) to the first byte of the answer, next to the time the app
//!    alone takes from spawn to the first byte of its first answer (the same
//!    binary spawned directly, in the same round).
//!
//! On two cores the load generator, the proxy and the app share the CPU.
//!
//! Run with `cargo bench -p stratus-cli --bench services`.
//! `STRATUS_BENCH_SECS` sets the seconds per figure (default 3),
//! `STRATUS_BENCH_CONNECTIONS` the HTTP/1.1 connection counts (default
//! `1,16,64`), `STRATUS_BENCH_STREAMS` the gRPC stream counts (default
//! `1,16`), `STRATUS_BENCH_COLD` the cold-start rounds (default 20, 0 skips
//! them), `STRATUS_BENCH_NGINX` the nginx binary (default `/usr/sbin/nginx`,
//! else `nginx` on PATH; without one the nginx columns are left out) and
//! `STRATUS_BENCH_NGINX_WORKERS` its `worker_processes` (default `auto`),
//! and `STRATUS_BENCH_ACCESS_LOG=0` turns the services' per-request log
//! records and nginx's access log off (both are on by default; nginx's
//! buffered, as the records are batched).
//! It prints figures only and never asserts on them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{
    Server, TaskResult, deploy, env_number, locate_example, percentile, read_all, sorted,
};

mod support;

const CONNECTIONS: [usize; 3] = [1, 16, 64];
const STREAMS: [usize; 2] = [1, 16];
const DEFAULT_SECS: f64 = 3.0;
const MAX_SECS: f64 = 600.0;
const WARMUP: Duration = Duration::from_secs(1);
const DEFAULT_COLD: usize = 20;
const MAX_COLD: usize = 1000;
/// Upper bound on requests per connection or stream in one measurement.
const MAX_REQUESTS_PER_TASK: usize = 2_000_000;
/// A request that takes longer counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reference process may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a deployed service may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after each cold-start deploy, for the previous version to drain.
const COLD_SETTLE: Duration = Duration::from_millis(500);
/// How often the app-alone cold start polls for the port.
const COLD_POLL: Duration = Duration::from_millis(1);

const HTTP_APP: &str = "hello";
const GRPC_APP: &str = "greeter";
const COLD_APP: &str = "cold";
const NGINX_DEFAULT: &str = "/usr/sbin/nginx";
/// The server's log filter: its default (`info`), and the line the
/// scheduler writes when a service instance is ready, with its start time.
const SERVER_LOG_FILTER: &str = "info,stratus_scheduler::service=debug";

/// The test suite's grpc-js install, shared (same name, same packages).
const GRPC_DEPS: &str = "svc-grpc";
const GRPC_PACKAGES: [&str; 2] = ["@grpc/grpc-js@1", "@grpc/proto-loader@0.7"];

const GREETER_PROTO: &str = r#"syntax = "proto3";
package bench;
service Greeter { rpc Hello (HelloRequest) returns (HelloReply); }
message HelloRequest { string name = 1; }
message HelloReply { string message = 1; }
"#;

/// A grpc-js server (insecure h2c) on `$PORT`, as one would write it for
/// no platform.
const GRPC_SERVER: &str = r#"const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const proto = grpc.loadPackageDefinition(loader.loadSync(`${__dirname}/greeter.proto`, { keepCase: true })).bench;
const server = new grpc.Server();
server.addService(proto.Greeter.service, {
  Hello(call, callback) {
    callback(null, { message: `hello ${call.request.name}` });
  },
});
server.bindAsync(`0.0.0.0:${process.env.PORT}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
});
"#;

const GRPC_PATH: &str = "/bench.Greeter/Hello";
/// `HelloRequest { name: "ada" }` behind the 5-byte gRPC prefix
/// (uncompressed, big-endian length).
const GRPC_REQUEST: &[u8] = b"\x00\x00\x00\x00\x05\x0a\x03ada";
/// `HelloReply { message: "hello ada" }`, framed.
const GRPC_REPLY: &[u8] = b"\x00\x00\x00\x00\x0b\x0a\x09hello ada";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("services bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Processes.

/// A child process stopped when dropped: SIGTERM (nginx's master then
/// stops its workers), then SIGKILL if it lingers.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// Spawns `command` and waits until `port` accepts connections.
fn start_listening(mut command: Command, port: u16, stderr: &Path) -> anyhow::Result<Proc> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr)?)
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let mut proc = Proc { child };
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(loopback(port)).is_err() {
        if let Some(status) = proc.child.try_wait()? {
            bail!(
                "{command:?} exited ({status}) before listening:\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("{command:?} did not listen on {port} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

fn hello_direct(hello_http: &Path, port: u16) -> Command {
    let mut command = Command::new(hello_http);
    command.arg("--direct").arg(port.to_string());
    command
}

fn grpc_direct(app_dir: &Path, port: u16) -> Command {
    let mut command = Command::new("node");
    command
        .arg(app_dir.join("server.js"))
        .current_dir(app_dir)
        .env("PORT", port.to_string());
    command
}

// ---------------------------------------------------------------------------
// Dependencies and apps.

fn copy_executable(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// `STRATUS_BENCH_ACCESS_LOG=0` deploys the services with `access_log:
/// false`: no log record per request.
fn access_log() -> bool {
    std::env::var("STRATUS_BENCH_ACCESS_LOG").map_or(true, |v| v != "0")
}

fn http_manifest() -> String {
    let access_log = access_log();
    format!(
        "app: {HTTP_APP}\nservices:\n  web:\n    command: [./hello_http, --direct, $PORT]\n    concurrency: 1000\n    min_instances: 1\n    max_instances: 1\n    access_log: {access_log}\n    http: {{ path: /* }}\n"
    )
}

fn grpc_manifest() -> String {
    format!(
        "app: {GRPC_APP}\nservices:\n  greeter:\n    command: [node, server.js]\n    concurrency: 1000\n    min_instances: 1\n    max_instances: 1\n    access_log: {}\n    http: {{ path: /* }}\n",
        access_log()
    )
}

fn cold_manifest(round: usize) -> String {
    format!(
        "app: {COLD_APP}\nservices:\n  web:\n    command: [./hello_http, --direct, $PORT]\n    min_instances: 0\n    max_instances: 1\n    env: {{ ROUND: \"{round}\" }}\n    http: {{ path: /* }}\n"
    )
}

/// The gRPC app: its server, proto and `node_modules`.
fn write_grpc_app(dir: &Path) -> anyhow::Result<()> {
    let modules = support::npm_install(GRPC_DEPS, &GRPC_PACKAGES)?;
    std::fs::create_dir_all(dir)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(&modules)
        .arg(dir)
        .status()
        .context("cannot run cp")?;
    if !status.success() {
        bail!("cp -a {} {} failed", modules.display(), dir.display());
    }
    std::fs::write(dir.join("server.js"), GRPC_SERVER)?;
    std::fs::write(dir.join("greeter.proto"), GREETER_PROTO)?;
    std::fs::write(dir.join("stratus.yaml"), grpc_manifest())?;
    Ok(())
}

// ---------------------------------------------------------------------------
// nginx.

struct Nginx {
    binary: PathBuf,
    version: String,
    workers: String,
}

/// The nginx to compare with, or why there is none.
fn find_nginx() -> Result<Nginx, String> {
    let binary = match std::env::var_os("STRATUS_BENCH_NGINX") {
        Some(path) => PathBuf::from(path),
        None if Path::new(NGINX_DEFAULT).is_file() => PathBuf::from(NGINX_DEFAULT),
        None => PathBuf::from("nginx"),
    };
    let out = Command::new(&binary)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "no nginx ({}: {e}); `apt-get install nginx-light` adds the nginx columns",
                binary.display()
            )
        })?;
    let version = String::from_utf8_lossy(&out.stderr)
        .trim()
        .trim_start_matches("nginx version: ")
        .to_owned();
    let workers = std::env::var("STRATUS_BENCH_NGINX_WORKERS").unwrap_or_else(|_| "auto".into());
    Ok(Nginx {
        binary,
        version,
        workers,
    })
}

/// Ports of one nginx configuration.
struct NginxPorts {
    http_listen: u16,
    http_upstream: u16,
    /// (listen, upstream) of the gRPC server block, when there is one.
    grpc: Option<(u16, u16)>,
}

fn nginx_config(dir: &Path, workers: &str, ports: &NginxPorts) -> String {
    let d = dir.display();
    // Run as root, the master would hand the workers to `nobody`, who
    // cannot enter the private temporary directory.
    let user = if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        "user root;\n"
    } else {
        ""
    };
    // Configured as the services are: a line per request, written in
    // batches, when their request records are on.
    let access_log = if access_log() {
        format!("access_log {d}/access.log combined buffer=64k flush=1s;")
    } else {
        "access_log off;".to_owned()
    };
    let mut conf = format!(
        "{user}worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {access_log}
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # Client connections: never closed by nginx during a measurement
    # (the default closes them after 1000 requests).
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream hello {{
        server 127.0.0.1:{http_upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{http_listen};
        location / {{
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
",
        http_upstream = ports.http_upstream,
        http_listen = ports.http_listen,
    );
    if let Some((listen, upstream)) = ports.grpc {
        conf.push_str(&format!(
            "
    upstream greeter {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{listen} http2;
        location / {{
            grpc_pass grpc://greeter;
        }}
    }}
"
        ));
    }
    conf.push_str("}\n");
    conf
}

/// Whether nginx accepts `conf` (`nginx -t`); its complaint if not.
fn nginx_test(nginx: &Nginx, dir: &Path, conf: &Path) -> Result<(), String> {
    let out = Command::new(&nginx.binary)
        .arg("-t")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

struct NginxRun {
    _proc: Proc,
    config: String,
    http: SocketAddr,
    grpc: Option<SocketAddr>,
    /// Why there is no gRPC server block.
    grpc_note: Option<String>,
}

/// Writes the configuration (with the gRPC block when `grpc_upstream` is
/// given and nginx takes it), starts nginx and waits for its listeners.
fn start_nginx(
    nginx: &Nginx,
    dir: &Path,
    http_upstream: u16,
    grpc_upstream: Option<u16>,
) -> anyhow::Result<NginxRun> {
    std::fs::create_dir_all(dir)?;
    let conf_path = dir.join("nginx.conf");
    let mut ports = NginxPorts {
        http_listen: free_port()?,
        http_upstream,
        grpc: match grpc_upstream {
            Some(upstream) => Some((free_port()?, upstream)),
            None => None,
        },
    };
    let mut grpc_note = None;
    let mut config = nginx_config(dir, &nginx.workers, &ports);
    std::fs::write(&conf_path, &config)?;
    if let Err(why) = nginx_test(nginx, dir, &conf_path) {
        if ports.grpc.is_none() {
            bail!("nginx refuses its configuration:\n{why}\n{config}");
        }
        // Without the HTTP/2 or gRPC module: HTTP/1.1 only.
        grpc_note = Some(format!(
            "nginx refuses `listen ... http2` / `grpc_pass` ({}): no nginx gRPC column",
            why.lines().next().unwrap_or("")
        ));
        ports.grpc = None;
        config = nginx_config(dir, &nginx.workers, &ports);
        std::fs::write(&conf_path, &config)?;
        if let Err(why) = nginx_test(nginx, dir, &conf_path) {
            bail!("nginx refuses its configuration:\n{why}\n{config}");
        }
    }
    let mut command = Command::new(&nginx.binary);
    command.arg("-p").arg(dir).arg("-c").arg(&conf_path);
    let proc = start_listening(command, ports.http_listen, &dir.join("stderr.log"))?;
    if let Some((listen, _)) = ports.grpc {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(loopback(listen)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {listen}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(NginxRun {
        _proc: proc,
        config,
        http: loopback(ports.http_listen),
        grpc: ports.grpc.map(|(listen, _)| loopback(listen)),
        grpc_note,
    })
}

// ---------------------------------------------------------------------------
// Load generators.

/// What one measurement saw.
#[derive(Default)]
struct Figures {
    requests: usize,
    errors: usize,
    secs: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Figures {
    fn rps(&self) -> f64 {
        if self.secs > 0.0 {
            self.requests as f64 / self.secs
        } else {
            0.0
        }
    }
}

fn gather(label: &str, started: Instant, results: Vec<TaskResult>) -> Figures {
    let secs = started.elapsed().as_secs_f64();
    let mut errors = 0;
    let mut first_error = None;
    let mut all = Vec::new();
    for r in results {
        errors += r.errors;
        first_error = first_error.or(r.first_error);
        all.extend(r.latencies);
    }
    if let Some(why) = first_error {
        eprintln!("{label}: {errors} errors, the first: {why}");
    }
    let all = sorted(all.into_iter());
    Figures {
        requests: all.len(),
        errors,
        secs,
        p50_ms: percentile(&all, 50.0),
        p99_ms: percentile(&all, 99.0),
    }
}

async fn http1_connect(addr: SocketAddr) -> anyhow::Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One GET: whether it was answered 200 "hello".
async fn http1_call(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> anyhow::Result<bool> {
    let request = hyper::Request::get("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let ok = response.status() == 200;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(ok && body.as_ref() == b"hello")
}

/// C keep-alive connections, each sending GET / with `host` in a closed
/// loop for `window`. A connection that breaks is made again (the failed
/// request counts as an error); only good answers count as requests.
async fn http1_load(
    label: &str,
    addr: SocketAddr,
    host: &'static str,
    connections: usize,
    window: Duration,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let mut result = TaskResult::default();
            let mut sender = None;
            while Instant::now() < deadline && result.latencies.len() < MAX_REQUESTS_PER_TASK {
                let mut s = match sender.take() {
                    Some(s) => s,
                    None => match http1_connect(addr).await {
                        Ok(s) => s,
                        Err(err) => {
                            result.error(format!("connect: {err:#}"));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                if s.ready().await.is_err() {
                    // Closed by the server between requests.
                    continue;
                }
                let sent = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, http1_call(&mut s, host)).await {
                    Ok(Ok(true)) => {
                        result.latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        sender = Some(s);
                    }
                    Ok(Ok(false)) => {
                        result.error("an answer other than 200 \"hello\"");
                        sender = Some(s);
                    }
                    Ok(Err(err)) => result.error(format!("{err:#}")),
                    Err(_) => result.error(format!("no answer within {REQUEST_TIMEOUT:?}")),
                }
            }
            result
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    Ok(gather(label, started, results))
}

async fn h2_connect(addr: SocketAddr) -> anyhow::Result<http2::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One unary call of `bench.Greeter/Hello`, checked: 200, `grpc-status`
/// 0 (in the trailers, or in the headers of a trailers-only answer) and
/// the expected reply.
async fn grpc_call(sender: &mut http2::SendRequest<Full<Bytes>>, uri: &str) -> anyhow::Result<()> {
    let request = hyper::Request::post(uri)
        .version(hyper::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(GRPC_REQUEST)))?;
    let response = sender.send_request(request).await?;
    if response.status() != 200 {
        bail!("HTTP status {}", response.status());
    }
    let in_headers = response.headers().get("grpc-status").cloned();
    let collected = response.into_body().collect().await?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers.get("grpc-status").cloned().or(in_headers);
    let status = status.as_ref().and_then(|v| v.to_str().ok());
    if status != Some("0") {
        bail!(
            "grpc-status {status:?}, grpc-message {:?}",
            trailers.get("grpc-message")
        );
    }
    let body = collected.to_bytes();
    if body.as_ref() != GRPC_REPLY {
        bail!("unexpected reply {body:?}");
    }
    Ok(())
}

/// S streams on one h2c connection, each a closed loop of unary calls for
/// `window`, with `:authority` `authority`.
async fn grpc_load(
    label: &str,
    addr: SocketAddr,
    authority: &str,
    streams: usize,
    window: Duration,
) -> anyhow::Result<Figures> {
    let sender = h2_connect(addr).await?;
    let uri = format!("http://{authority}{GRPC_PATH}");
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let mut sender = sender.clone();
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = TaskResult::default();
            while Instant::now() < deadline && result.latencies.len() < MAX_REQUESTS_PER_TASK {
                if let Err(err) = sender.ready().await {
                    result.error(format!("the connection closed: {err}"));
                    break;
                }
                let sent = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, grpc_call(&mut sender, &uri)).await {
                    Ok(Ok(())) => result.latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
                    Ok(Err(err)) => result.error(format!("{err:#}")),
                    Err(_) => result.error(format!("no answer within {REQUEST_TIMEOUT:?}")),
                }
            }
            result
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    Ok(gather(label, started, results))
}

#[derive(Clone, Copy)]
enum Protocol {
    Http1,
    Grpc,
}

/// A warm-up, then the measurement, at the same concurrency; `None` (and
/// why, on stderr) if it could not run.
async fn measure(
    protocol: Protocol,
    label: &str,
    addr: SocketAddr,
    host: &'static str,
    concurrency: usize,
    window: Duration,
) -> Option<Figures> {
    let once = |w| async move {
        match protocol {
            Protocol::Http1 => http1_load(label, addr, host, concurrency, w).await,
            Protocol::Grpc => grpc_load(label, addr, host, concurrency, w).await,
        }
    };
    let measured = match once(WARMUP).await {
        Ok(_) => once(window).await,
        Err(err) => Err(err),
    };
    match measured {
        Ok(figures) => Some(figures),
        Err(err) => {
            eprintln!("{label} x{concurrency}: {err:#}");
            None
        }
    }
}

/// Calls `check` until it succeeds or `READY_TIMEOUT` passes.
async fn until_ready<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() > deadline => {
                bail!("{what} not ready within {READY_TIMEOUT:?}: {err:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ---------------------------------------------------------------------------
// Cold starts.

/// Sends GET / with `host` on `stream` and returns the ms to the first
/// byte of the answer, after checking that the answer is a 200.
fn first_byte(mut stream: TcpStream, host: &str) -> anyhow::Result<f64> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READY_TIMEOUT))?;
    let request = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    let sent = Instant::now();
    stream.write_all(request.as_bytes())?;
    let mut first = [0u8; 1];
    stream.read_exact(&mut first)?;
    let ms = sent.elapsed().as_secs_f64() * 1000.0;
    let mut head = first.to_vec();
    head.extend(read_all(&mut stream).into_bytes());
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 200") {
        bail!("answer: {}", head.lines().next().unwrap_or(""));
    }
    Ok(ms)
}

/// The app alone: from spawning `hello_http --direct PORT` to the first
/// byte of its answer to its first request (connecting every millisecond
/// until the port accepts).
fn app_alone(hello_http: &Path) -> anyhow::Result<f64> {
    let port = free_port()?;
    let started = Instant::now();
    let child = hello_direct(hello_http, port)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start hello_http")?;
    let _proc = Proc { child };
    let stream = loop {
        match TcpStream::connect(loopback(port)) {
            Ok(stream) => break stream,
            Err(_) if started.elapsed() > START_TIMEOUT => {
                bail!("hello_http did not listen within {START_TIMEOUT:?}")
            }
            Err(_) => std::thread::sleep(COLD_POLL),
        }
    };
    first_byte(stream, "127.0.0.1")?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// One cold start through the platform: a new version (never started),
/// then one request on a connection opened beforehand.
fn platform_cold(
    app_dir: &Path,
    data_dir: &Path,
    public: SocketAddr,
    round: usize,
) -> anyhow::Result<f64> {
    std::fs::write(app_dir.join("stratus.yaml"), cold_manifest(round))?;
    deploy(app_dir, data_dir)?;
    std::thread::sleep(COLD_SETTLE);
    let stream = TcpStream::connect(public)?;
    first_byte(stream, &format!("{COLD_APP}.localhost"))
}

struct Cold {
    app: Vec<f64>,
    total: Vec<f64>,
    /// Per round: total less the app alone of the same round.
    added: Vec<f64>,
}

fn cold_starts(
    rounds: usize,
    hello_http: &Path,
    app_dir: &Path,
    data_dir: &Path,
    public: SocketAddr,
) -> anyhow::Result<Cold> {
    std::fs::create_dir_all(app_dir)?;
    copy_executable(hello_http, &app_dir.join("hello_http"))?;
    // One round unrecorded: page cache, the package upload.
    app_alone(hello_http)?;
    platform_cold(app_dir, data_dir, public, 0)?;
    let mut cold = Cold {
        app: Vec::new(),
        total: Vec::new(),
        added: Vec::new(),
    };
    for round in 1..=rounds {
        let total = platform_cold(app_dir, data_dir, public, round)?;
        let app = app_alone(hello_http)?;
        eprintln!("cold {round}/{rounds}: platform {total:.1} ms, app alone {app:.1} ms");
        cold.app.push(app);
        cold.total.push(total);
        cold.added.push(total - app);
    }
    Ok(cold)
}

// ---------------------------------------------------------------------------
// The run.

struct Row {
    concurrency: usize,
    direct: Option<Figures>,
    nginx: Option<Figures>,
    stratus: Option<Figures>,
}

fn counts(name: &str, default: &[usize]) -> anyhow::Result<Vec<usize>> {
    match std::env::var(name) {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().ok().filter(|n| (1..=1024).contains(n)))
            .collect::<Option<_>>()
            .with_context(|| format!("{name}: give counts from 1 to 1024, e.g. 1,16")),
        Err(_) => Ok(default.to_vec()),
    }
}

/// The isolation the server reported at start, from its log.
fn isolation(log: &Path) -> &'static str {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if text.contains("TENANT ISOLATION IS OFF") {
        "none"
    } else if text.contains("tenant isolation") {
        "namespaces"
    } else {
        "unknown"
    }
}

fn run() -> anyhow::Result<()> {
    let secs = env_number("STRATUS_BENCH_SECS", DEFAULT_SECS, |s| {
        s.is_finite() && *s > 0.0 && *s <= MAX_SECS
    })
    .with_context(|| format!("STRATUS_BENCH_SECS: give seconds, at most {MAX_SECS}"))?;
    let window = Duration::from_secs_f64(secs);
    let cold_rounds = env_number("STRATUS_BENCH_COLD", DEFAULT_COLD, |n| *n <= MAX_COLD)
        .with_context(|| format!("STRATUS_BENCH_COLD: give rounds, at most {MAX_COLD}"))?;
    let connection_counts = counts("STRATUS_BENCH_CONNECTIONS", &CONNECTIONS)?;
    let stream_counts = counts("STRATUS_BENCH_STREAMS", &STREAMS)?;

    let hello_http = locate_example("hello_http")?;
    let tmp = tempfile::Builder::new()
        .prefix("stratus-services-bench-")
        .tempdir()?;

    // The apps.
    let http_dir = tmp.path().join("app-http");
    std::fs::create_dir_all(&http_dir)?;
    copy_executable(&hello_http, &http_dir.join("hello_http"))?;
    std::fs::write(http_dir.join("stratus.yaml"), http_manifest())?;
    let grpc_dir = tmp.path().join("app-grpc");
    let grpc_ready = write_grpc_app(&grpc_dir).map_err(|e| format!("{e:#}"));
    if let Err(why) = &grpc_ready {
        eprintln!("no gRPC part: {why}");
    }

    // The references: hello_http twice (direct; nginx's upstream), and
    // the gRPC server twice.
    let direct_port = free_port()?;
    let _direct = start_listening(
        hello_direct(&hello_http, direct_port),
        direct_port,
        &tmp.path().join("direct.log"),
    )?;
    let upstream_port = free_port()?;
    let _upstream = start_listening(
        hello_direct(&hello_http, upstream_port),
        upstream_port,
        &tmp.path().join("upstream.log"),
    )?;
    let mut grpc_refs = None;
    if grpc_ready.is_ok() {
        let direct = free_port()?;
        let direct_proc = start_listening(
            grpc_direct(&grpc_dir, direct),
            direct,
            &tmp.path().join("grpc-direct.log"),
        )?;
        let upstream = free_port()?;
        let upstream_proc = start_listening(
            grpc_direct(&grpc_dir, upstream),
            upstream,
            &tmp.path().join("grpc-upstream.log"),
        )?;
        grpc_refs = Some((direct, upstream, direct_proc, upstream_proc));
    }
    let nginx = find_nginx();
    let nginx_run = match &nginx {
        Ok(nginx) => {
            let grpc_upstream = grpc_refs.as_ref().map(|(_, upstream, _, _)| *upstream);
            match start_nginx(
                nginx,
                &tmp.path().join("nginx"),
                upstream_port,
                grpc_upstream,
            ) {
                Ok(run) => Ok(run),
                Err(err) => Err(format!("nginx did not start: {err:#}")),
            }
        }
        Err(why) => Err(why.clone()),
    };
    if let Err(why) = &nginx_run {
        eprintln!("no nginx columns: {why}");
    }

    // The platform.
    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    // Debug for the scheduler's services only: it logs how long each
    // instance took from spawn to ready.
    let server = Server::start_with_env(&data_dir, &log, &[], &[("RUST_LOG", SERVER_LOG_FILTER)])?;
    let public: SocketAddr = server
        .public
        .trim_start_matches("http://")
        .parse()
        .context("the server's public address")?;
    deploy(&http_dir, &data_dir)?;
    if grpc_ready.is_ok() {
        deploy(&grpc_dir, &data_dir)?;
    }
    let http_host: &'static str = Box::leak(format!("{HTTP_APP}.localhost").into_boxed_str());
    let grpc_host: &'static str = Box::leak(format!("{GRPC_APP}.localhost").into_boxed_str());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (http_rows, grpc_rows) = runtime.block_on(async {
        until_ready("the HTTP service", || async {
            let mut sender = http1_connect(public).await?;
            if http1_call(&mut sender, http_host).await? {
                Ok(())
            } else {
                bail!("not 200 \"hello\"")
            }
        })
        .await?;
        if grpc_ready.is_ok() {
            until_ready("the gRPC service", || async {
                let mut sender = h2_connect(public).await?;
                grpc_call(&mut sender, &format!("http://{grpc_host}{GRPC_PATH}")).await
            })
            .await?;
        }

        let mut http_rows = Vec::new();
        for &connections in &connection_counts {
            let direct = measure(
                Protocol::Http1,
                "http direct",
                loopback(direct_port),
                "127.0.0.1",
                connections,
                window,
            )
            .await;
            let nginx = match &nginx_run {
                Ok(run) => {
                    measure(
                        Protocol::Http1,
                        "http nginx",
                        run.http,
                        "127.0.0.1",
                        connections,
                        window,
                    )
                    .await
                }
                Err(_) => None,
            };
            let stratus = measure(
                Protocol::Http1,
                "http stratus",
                public,
                http_host,
                connections,
                window,
            )
            .await;
            eprintln!(
                "http x{connections}: direct {:.0}/s, nginx {:.0}/s, stratus {:.0}/s",
                direct.as_ref().map_or(0.0, Figures::rps),
                nginx.as_ref().map_or(0.0, Figures::rps),
                stratus.as_ref().map_or(0.0, Figures::rps),
            );
            http_rows.push(Row {
                concurrency: connections,
                direct,
                nginx,
                stratus,
            });
        }

        let mut grpc_rows = Vec::new();
        if let Some((direct_port, ..)) = &grpc_refs {
            let direct_addr = loopback(*direct_port);
            let direct_authority: &'static str =
                Box::leak(direct_addr.to_string().into_boxed_str());
            let nginx_grpc = nginx_run.as_ref().ok().and_then(|run| run.grpc);
            let nginx_authority: &'static str = Box::leak(
                nginx_grpc
                    .map(|a| a.to_string())
                    .unwrap_or_default()
                    .into_boxed_str(),
            );
            for &streams in &stream_counts {
                let direct = measure(
                    Protocol::Grpc,
                    "grpc direct",
                    direct_addr,
                    direct_authority,
                    streams,
                    window,
                )
                .await;
                let nginx = match nginx_grpc {
                    Some(addr) => {
                        measure(
                            Protocol::Grpc,
                            "grpc nginx",
                            addr,
                            nginx_authority,
                            streams,
                            window,
                        )
                        .await
                    }
                    None => None,
                };
                let stratus = measure(
                    Protocol::Grpc,
                    "grpc stratus",
                    public,
                    grpc_host,
                    streams,
                    window,
                )
                .await;
                eprintln!(
                    "grpc x{streams}: direct {:.0}/s, nginx {:.0}/s, stratus {:.0}/s",
                    direct.as_ref().map_or(0.0, Figures::rps),
                    nginx.as_ref().map_or(0.0, Figures::rps),
                    stratus.as_ref().map_or(0.0, Figures::rps),
                );
                grpc_rows.push(Row {
                    concurrency: streams,
                    direct,
                    nginx,
                    stratus,
                });
            }
        }
        anyhow::Ok((http_rows, grpc_rows))
    })?;
    drop(runtime);
    // The references are idle from here on; the cold starts run alone.
    drop(grpc_refs);

    let cold = if cold_rounds > 0 {
        Some(cold_starts(
            cold_rounds,
            &hello_http,
            &tmp.path().join("app-cold"),
            &data_dir,
            public,
        )?)
    } else {
        None
    };

    let isolation = isolation(&log);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "HTTP services: stratus isolation {isolation}, {cores} cores shared by the load generator, the proxies and the apps"
    );
    println!(
        "stratus access_log: {on} (a log record stored per request); nginx access_log {on}{buffered}",
        on = if access_log() { "on" } else { "off" },
        buffered = if access_log() {
            " (buffer=64k flush=1s)"
        } else {
            ""
        }
    );
    let nginx_label = match (&nginx, &nginx_run) {
        (Ok(n), Ok(_)) => format!(
            "nginx {} with worker_processes {} ({cores} cores), keep-alive upstream (keepalive 64)",
            n.version, n.workers
        ),
        (_, Err(why)) => format!("nginx: {why}"),
        (Err(why), _) => format!("nginx: {why}"),
    };
    println!("{nginx_label}");
    print_table(
        &format!(
            "HTTP/1.1 keep-alive hello world, the same binary (hello_http --direct) behind each; {secs} s per figure after {} s warm-up",
            WARMUP.as_secs()
        ),
        "conns",
        &http_rows,
    );
    match (&grpc_ready, &nginx_run) {
        (Err(why), _) => println!("\ngRPC unary: not measured: {why}"),
        (Ok(()), nginx_run) => {
            print_table(
                &format!(
                    "gRPC unary (grpc-js {GRPC_PATH}), S streams multiplexed on one h2c connection; {secs} s per figure after {} s warm-up",
                    WARMUP.as_secs()
                ),
                "strms",
                &grpc_rows,
            );
            match nginx_run {
                Ok(run) => match &run.grpc_note {
                    Some(note) => println!("{note}"),
                    None => println!("nginx: grpc_pass over h2c (`listen ... http2`)"),
                },
                Err(_) => println!("nginx: no gRPC column (no nginx)"),
            }
        }
    }
    if let Some(cold) = &cold {
        // The first cold instance was the unrecorded round's.
        let ready = instance_ready_ms(&log, &format!("{COLD_APP}/web"));
        print_cold(cold, ready.get(1..).unwrap_or_default());
    }
    if let Ok(run) = &nginx_run {
        println!();
        println!("nginx configuration used:");
        print!("{}", run.config);
    }
    drop(nginx_run);
    drop(server);
    drop(tmp);
    Ok(())
}

// ---------------------------------------------------------------------------
// Tables.

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn rps(f: Option<&Figures>) -> String {
    f.map_or_else(|| "-".to_owned(), |f| format!("{:.0}", f.rps()))
}

fn share(part: Option<&Figures>, whole: Option<&Figures>) -> String {
    match (part, whole) {
        (Some(p), Some(w)) if w.rps() > 0.0 => format!("{:.0}%", 100.0 * p.rps() / w.rps()),
        _ => "-".to_owned(),
    }
}

fn print_table(title: &str, unit: &str, rows: &[Row]) {
    println!();
    println!("{title}");
    println!(
        "{:>5} | {:>8} {:>7} {:>7} | {:>8} {:>7} {:>7} | {:>9} {:>7} {:>7} | {:>9} {:>6} {:>6} {:>8} | {:>8}",
        unit,
        "direct/s",
        "p50 ms",
        "p99 ms",
        "nginx/s",
        "p50 ms",
        "p99 ms",
        "stratus/s",
        "p50 ms",
        "p99 ms",
        "+p50",
        "%dir",
        "%ngx",
        "p99/ngx",
        "errors"
    );
    for row in rows {
        let (d, n, s) = (
            row.direct.as_ref(),
            row.nginx.as_ref(),
            row.stratus.as_ref(),
        );
        let p50 = |f: Option<&Figures>| f.and_then(|f| f.p50_ms);
        let p99 = |f: Option<&Figures>| f.and_then(|f| f.p99_ms);
        let added = p50(s).zip(p50(d)).map_or_else(
            || "-".to_owned(),
            |(s, d)| format!("{:.0} µs", (s - d) * 1000.0),
        );
        let p99_ratio = p99(s)
            .zip(p99(n))
            .filter(|(_, n)| *n > 0.0)
            .map_or_else(|| "-".to_owned(), |(s, n)| format!("{:.2}x", s / n));
        let errors = [d, n, s]
            .iter()
            .map(|f| f.map_or_else(|| "-".to_owned(), |f| f.errors.to_string()))
            .collect::<Vec<_>>()
            .join("/");
        println!(
            "{:>5} | {:>8} {:>7} {:>7} | {:>8} {:>7} {:>7} | {:>9} {:>7} {:>7} | {:>9} {:>6} {:>6} {:>8} | {:>8}",
            row.concurrency,
            rps(d),
            ms(p50(d)),
            ms(p99(d)),
            rps(n),
            ms(p50(n)),
            ms(p99(n)),
            rps(s),
            ms(p50(s)),
            ms(p99(s)),
            added,
            share(s, d),
            share(s, n),
            p99_ratio,
            errors
        );
    }
    println!(
        "+p50: stratus's median less direct's; %dir, %ngx: stratus's requests/s as a share of direct's and nginx's; p99/ngx: stratus's p99 over nginx's; errors: direct/nginx/stratus; '-': not measured"
    );
}

/// The `ms` of each "service instance ready" line the server logged for
/// `service` (`APP/NAME`), in order: from spawning the sandbox to the
/// first successful readiness check, in whole milliseconds.
fn instance_ready_ms(log: &Path, service: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    // Without the terminal colours tracing may add.
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter(|line| line.contains("service instance ready"))
        .filter(|line| line.contains(&format!("service={service} ")))
        .filter_map(|line| {
            let (_, rest) = line.split_once(" ms=")?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn print_cold(cold: &Cold, ready: &[f64]) {
    println!();
    println!(
        "cold starts: {} rounds; each a new version of a service (min_instances 0) never started, one request on an open connection, to the first byte of the answer",
        cold.total.len()
    );
    println!("{:<16} {:>9} {:>9} {:>9}", "ms", "p50", "p90", "max");
    for (label, values) in [
        ("app alone", cold.app.as_slice()),
        ("platform total", cold.total.as_slice()),
        ("platform added", cold.added.as_slice()),
        ("  start→ready", ready),
    ] {
        let v = sorted(values.iter().copied());
        println!(
            "{:<16} {:>9} {:>9} {:>9}",
            label,
            fmt1(percentile(&v, 50.0)),
            fmt1(percentile(&v, 90.0)),
            fmt1(v.last().copied())
        );
    }
    println!(
        "app alone: hello_http --direct spawned by the bench, from spawn to the first byte of its first answer (the port polled every {} ms); platform added: per round, the platform's total less the app alone of the same round",
        COLD_POLL.as_millis()
    );
    println!(
        "  start→ready: of the platform total, the scheduler's own log of each instance from spawning its sandbox to its first successful readiness check (whole ms; readiness looked at 1, 2, 3 ms... apart, then every 20 ms); {} of {} rounds found",
        ready.len(),
        cold.total.len()
    );
}

fn fmt1(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}
