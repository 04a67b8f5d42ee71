//! HTTP functions through the public listener, side by side with the same
//! hello-world handler served directly, without the platform.
//!
//! Starts a real `stratus server` (isolation `auto`) in a temporary data
//! directory and deploys one hello-world HTTP function per runtime: python3,
//! nodejs, and a `provided` Rust binary built with `lambda_runtime`. The
//! references, started in the same run: Python's `http.server`
//! (`ThreadingHTTPServer`), Node's `http.createServer` and the same Rust
//! binary serving over hyper (`hello_http --direct`), each answering the
//! same 200 `text/plain` "hello". The rows `python3-c64` and `nodejs-c64`
//! are the same handlers with `concurrency: 64`: one instance takes up to
//! 64 requests at once. The JavaScript rows have a second reference: the
//! same handler as a Worker in Cloudflare's `workerd` (the npm package,
//! installed into `target/test-deps`; left out when npm cannot get it).
//!
//! The load generator is a closed loop in this process: C keep-alive
//! HTTP/1.1 connections (hyper's client), each sending its next request
//! when the previous answer has arrived, for a fixed wall time after a
//! warm-up at the same concurrency. It reports requests/s and latency
//! p50/p99 at 1, 16 and 64 connections, the platform's added latency
//! at p50 and its throughput as a share of direct. On two cores the load
//! generator, the platform and the handler share the CPU.
//!
//! Run with `cargo bench -p stratus-cli --bench http`; `STRATUS_BENCH_SECS`
//! sets the seconds per measurement (default 3), `STRATUS_BENCH_RUNTIMES`
//! the runtimes to measure (default `python3,python3-c64,nodejs,nodejs-c64,provided`) and
//! `STRATUS_BENCH_CONNECTIONS` the connection counts (default `1,16,64`).
//! It prints figures only and never asserts on them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Empty;
use support::{Server, closed_loop, deploy, env_number, locate_example, percentile, process_ticks};

mod support;

const CONNECTIONS: [usize; 3] = [1, 16, 64];
const DEFAULT_SECS: f64 = 3.0;
const MAX_SECS: f64 = 600.0;
const WARMUP: Duration = Duration::from_secs(1);
/// Upper bound on requests per connection in one measurement.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const APP: &str = "hello";

const PY_FUNCTION: &str = "def handler(event, context):\n    return {\"statusCode\": 200, \"headers\": {\"content-type\": \"text/plain\"}, \"body\": \"hello\"}\n";
const NODE_FUNCTION: &str = "exports.handler = async () => ({ statusCode: 200, headers: { 'content-type': 'text/plain' }, body: 'hello' });\n";

const PY_DIRECT: &str = r#"
import socket, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    request_queue_size = 256

Server(("127.0.0.1", int(sys.argv[1])), Hello).serve_forever()
"#;

const WORKER: &str = r#"
export default {
  async fetch() {
    return new Response("hello", { headers: { "content-type": "text/plain" } });
  },
};
"#;

/// `workerd serve` on `port` with the hello Worker beside the config.
fn workerd(dir: &Path, port: u16) -> anyhow::Result<Command> {
    let modules = support::npm_install("workerd", &["workerd"])?;
    std::fs::write(dir.join("worker.js"), WORKER)?;
    let config = dir.join("workerd.capnp");
    std::fs::write(
        &config,
        format!(
            r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .hello) ],
  sockets = [ (name = "http", address = "127.0.0.1:{port}", http = (), service = "main") ],
);
const hello :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "worker.js") ],
  compatibilityDate = "2024-09-23",
);
"#
        ),
    )?;
    let mut command = Command::new(modules.join(".bin/workerd"));
    command.arg("serve").arg(config).stderr(Stdio::null());
    Ok(command)
}

const NODE_DIRECT: &str = r#"
require('http').createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('hello');
}).listen(Number(process.argv[2]), '127.0.0.1');
"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("http bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A child process that is killed when dropped.
struct Reference {
    child: Child,
    port: u16,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the command `make` gives for a free port, and waits until it
/// listens there.
fn start_reference(make: impl FnOnce(u16) -> anyhow::Result<Command>) -> anyhow::Result<Reference> {
    let port = free_port()?;
    let mut command = make(port)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {command:?}"))?;
    let reference = Reference { child, port };
    let deadline = Instant::now() + START_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{command:?} did not listen on {port} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(reference)
}

fn python() -> anyhow::Result<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("python3 is needed")?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn write_app(dir: &Path, hello_http: &Path) -> anyhow::Result<()> {
    for sub in ["py", "node", "rust"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::write(dir.join("py/main.py"), PY_FUNCTION)?;
    std::fs::write(dir.join("node/index.js"), NODE_FUNCTION)?;
    std::fs::copy(hello_http, dir.join("rust/bootstrap"))?;
    std::fs::write(
        dir.join("stratus.yaml"),
        format!(
            "app: {APP}\nfunctions:\n  py:\n    runtime: python3\n    handler: main.handler\n    code: py\n    http: {{ path: /py }}\n  node:\n    runtime: nodejs\n    handler: index.handler\n    code: node\n    http: {{ path: /node }}\n  node64:\n    runtime: nodejs\n    handler: index.handler\n    code: node\n    concurrency: 64\n    http: {{ path: /node64 }}\n  py64:\n    runtime: python3\n    handler: main.handler\n    code: py\n    concurrency: 64\n    http: {{ path: /py64 }}\n  rust:\n    runtime: provided\n    code: rust\n    http: {{ path: /rust }}\n"
        ),
    )?;
    Ok(())
}

/// What one measurement saw.
struct Figures {
    requests: usize,
    errors: usize,
    secs: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Figures {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

/// C connections, each sending GET `path` in a closed loop for `window`.
async fn load(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    window: Duration,
) -> anyhow::Result<Figures> {
    let path = path.to_owned();
    let seen = closed_loop(
        addr,
        connections,
        window,
        move || {
            Ok(hyper::Request::get(path.as_str())
                .header("host", "127.0.0.1")
                .body(Empty::<Bytes>::new())?)
        },
        |status, body| status == 200 && body == b"hello",
    )
    .await?;
    Ok(Figures {
        requests: seen.latencies_ms.len(),
        errors: seen.errors,
        secs: seen.secs,
        p50_ms: percentile(&seen.latencies_ms, 50.0),
        p99_ms: percentile(&seen.latencies_ms, 99.0),
    })
}

async fn measure(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    window: Duration,
) -> anyhow::Result<Figures> {
    load(addr, path, connections, WARMUP).await?;
    load(addr, path, connections, window).await
}

struct Row {
    runtime: &'static str,
    connections: usize,
    direct: Figures,
    /// The same handler in workerd, for the JavaScript rows.
    workerd: Option<Figures>,
    platform: Figures,
    /// The server process's CPU per request, in µs.
    server_us: f64,
}

fn run() -> anyhow::Result<()> {
    let secs = env_number("STRATUS_BENCH_SECS", DEFAULT_SECS, |s| {
        s.is_finite() && *s > 0.0 && *s <= MAX_SECS
    })
    .with_context(|| format!("STRATUS_BENCH_SECS: give seconds, at most {MAX_SECS}"))?;
    let window = Duration::from_secs_f64(secs);
    let hello_http = locate_example("hello_http")?;
    let tmp = tempfile::Builder::new()
        .prefix("stratus-http-bench-")
        .tempdir()?;
    let app_dir = tmp.path().join("app");
    write_app(&app_dir, &hello_http)?;
    std::fs::write(tmp.path().join("direct.py"), PY_DIRECT)?;
    std::fs::write(tmp.path().join("direct.js"), NODE_DIRECT)?;

    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let server = Server::start(&data_dir, &log, &[])?;
    deploy(&app_dir, &data_dir)?;
    let public: SocketAddr = server
        .public
        .trim_start_matches("http://")
        .parse()
        .context("the server's public address")?;

    let python = python()?;
    let with_port = |program: &Path, args: &[&Path]| {
        let (program, args) = (
            program.to_owned(),
            args.iter().map(|a| a.to_path_buf()).collect::<Vec<_>>(),
        );
        move |port: u16| {
            let mut command = Command::new(program);
            command.args(args).arg(port.to_string());
            Ok(command)
        }
    };
    let (direct_py, direct_js) = (tmp.path().join("direct.py"), tmp.path().join("direct.js"));
    let (python_ref, node_ref, rust_ref) = (
        start_reference(with_port(Path::new(&python), &[&direct_py]))?,
        start_reference(with_port(Path::new("node"), &[&direct_js]))?,
        start_reference(with_port(&hello_http, &[Path::new("--direct")]))?,
    );
    let workerd_ref = match start_reference(|port| workerd(tmp.path(), port)) {
        Ok(reference) => Some(reference),
        Err(err) => {
            eprintln!("no workerd column: {err:#}");
            None
        }
    };
    // `-c64`: the same handler with `concurrency: 64`.
    let references = [
        ("python3", "/hello/py", &python_ref, None),
        ("python3-c64", "/hello/py64", &python_ref, None),
        ("nodejs", "/hello/node", &node_ref, workerd_ref.as_ref()),
        (
            "nodejs-c64",
            "/hello/node64",
            &node_ref,
            workerd_ref.as_ref(),
        ),
        ("provided", "/hello/rust", &rust_ref, None),
    ];

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runtimes = std::env::var("STRATUS_BENCH_RUNTIMES")
        .unwrap_or_else(|_| "python3,python3-c64,nodejs,nodejs-c64,provided".to_owned());
    let connection_counts: Vec<usize> = match std::env::var("STRATUS_BENCH_CONNECTIONS") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().ok().filter(|n| (1..=1024).contains(n)))
            .collect::<Option<_>>()
            .context("STRATUS_BENCH_CONNECTIONS: give counts from 1 to 1024, e.g. 1,16")?,
        Err(_) => CONNECTIONS.to_vec(),
    };
    let rows = runtime.block_on(async {
        let mut rows = Vec::new();
        for (runtime, path, reference, worker) in &references {
            if !runtimes.split(',').any(|r| r.trim() == *runtime) {
                continue;
            }
            let direct_addr: SocketAddr = ([127, 0, 0, 1], reference.port).into();
            for &connections in &connection_counts {
                let direct = measure(direct_addr, "/", connections, window).await?;
                let workerd = match worker {
                    Some(worker) => {
                        let addr: SocketAddr = ([127, 0, 0, 1], worker.port).into();
                        Some(measure(addr, "/", connections, window).await?)
                    }
                    None => None,
                };
                load(public, path, connections, WARMUP).await?;
                let stat = format!("/proc/{}/stat", server.pid());
                let before = process_ticks(&stat).unwrap_or(0);
                let platform = load(public, path, connections, window).await?;
                // Ticks of 10 ms.
                let ticks = process_ticks(&stat).unwrap_or(0) - before;
                eprintln!(
                    "{runtime} x{connections}: direct {:.0}/s, platform {:.0}/s",
                    direct.rps(),
                    platform.rps()
                );
                let server_us = ticks as f64 * 10_000.0 / platform.requests.max(1) as f64;
                rows.push(Row {
                    runtime,
                    connections,
                    direct,
                    workerd,
                    platform,
                    server_us,
                });
            }
        }
        anyhow::Ok(rows)
    })?;
    drop(runtime);
    drop((python_ref, node_ref, rust_ref, workerd_ref));
    print_table(&rows, secs);
    drop(server);
    drop(tmp);
    Ok(())
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn print_table(rows: &[Row], secs: f64) {
    println!();
    println!(
        "HTTP functions: hello world over keep-alive HTTP/1.1, {secs} s per figure after {}s warm-up",
        WARMUP.as_secs()
    );
    println!(
        "{:<11} {:>5} | {:>9} {:>8} {:>8} | {:>9} {:>8} {:>8} | {:>10} {:>8} | {:>10} | {:>6}",
        "runtime",
        "conns",
        "direct/s",
        "p50 ms",
        "p99 ms",
        "stratus/s",
        "p50 ms",
        "p99 ms",
        "added p50",
        "share",
        "server CPU",
        "errors"
    );
    for row in rows {
        let added = row
            .platform
            .p50_ms
            .zip(row.direct.p50_ms)
            .map(|(p, d)| format!("{:.0} µs", (p - d) * 1000.0))
            .unwrap_or_else(|| "-".to_owned());
        let share = if row.direct.rps() > 0.0 {
            format!("{:.0}%", 100.0 * row.platform.rps() / row.direct.rps())
        } else {
            "-".to_owned()
        };
        println!(
            "{:<11} {:>5} | {:>9.0} {:>8} {:>8} | {:>9.0} {:>8} {:>8} | {:>10} {:>8} | {:>7.0} µs | {:>6}",
            row.runtime,
            row.connections,
            row.direct.rps(),
            ms(row.direct.p50_ms),
            ms(row.direct.p99_ms),
            row.platform.rps(),
            ms(row.platform.p50_ms),
            ms(row.platform.p99_ms),
            added,
            share,
            row.server_us,
            row.direct.errors + row.platform.errors
        );
    }
    println!(
        "added p50: the platform's median latency less the direct server's; share: the platform's requests/s as a share of direct; server CPU: the server process's CPU per request"
    );
    let workerd: Vec<&Row> = rows.iter().filter(|r| r.workerd.is_some()).collect();
    if !workerd.is_empty() {
        println!();
        println!("The JavaScript rows against the same handler as a Worker in workerd");
        println!(
            "{:<11} {:>5} | {:>9} {:>8} {:>8} | {:>9} {:>11} {:>11}",
            "runtime",
            "conns",
            "workerd/s",
            "p50 ms",
            "p99 ms",
            "stratus/s",
            "of workerd",
            "of direct"
        );
        for row in workerd {
            let w = row.workerd.as_ref().expect("filtered");
            let share = |of: f64| {
                if of > 0.0 {
                    format!("{:.0}%", 100.0 * row.platform.rps() / of)
                } else {
                    "-".to_owned()
                }
            };
            println!(
                "{:<11} {:>5} | {:>9.0} {:>8} {:>8} | {:>9.0} {:>11} {:>11}",
                row.runtime,
                row.connections,
                w.rps(),
                ms(w.p50_ms),
                ms(w.p99_ms),
                row.platform.rps(),
                share(w.rps()),
                share(row.direct.rps())
            );
        }
    }
}
