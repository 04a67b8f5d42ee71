//! What one misbehaving tenant (or outsider) costs everyone else: the
//! latency of a quiet app's HTTP function while another app floods its
//! log, burns CPU, hogs the platform API, forks to its limit or runs out
//! of memory, and while an outsider holds a thousand silent connections
//! to the public listener; with the server's memory and descriptors
//! meanwhile.
//!
//! Starts a real `stratus server` (isolation `auto`, every limit at its
//! default) in a temporary data directory and deploys two apps: `quiet`,
//! one python3 HTTP hello-world, and `noisy`, whose functions misbehave
//! for as long as they are asked to. Each phase runs one kind of
//! misbehaviour (or none: the baseline) and meanwhile measures the quiet
//! function through the public listener with a closed loop of C
//! keep-alive connections (default 4), while sampling the server's
//! resident memory and open descriptors every 100 ms. Phases are
//! interleaved, baseline among them, for R rounds (default 3); it prints
//! each phase's median p50 and p99 latency, requests/s and its ratio to
//! the baseline, the errors the quiet app saw, and the server's peak
//! memory and descriptors. On two cores the load generator, the server,
//! the quiet function and the noisy one share the CPU: a CPU hog costs
//! others what the kernel's CPU weights let it.
//!
//! Run with `cargo bench -p stratus-cli --bench tenants`;
//! `STRATUS_BENCH_SECS` sets the seconds per phase (default 4),
//! `STRATUS_BENCH_ROUNDS` the rounds (default 3) and
//! `STRATUS_BENCH_CONNECTIONS` the quiet app's connections (default 4).
//! It prints figures only and never asserts on them.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use support::{Server, deploy, env_number, percentile, sorted};

mod support;

const QUIET: &str = "def handler(event, context):\n    return {\"statusCode\": 200, \"headers\": {\"content-type\": \"text/plain\"}, \"body\": \"hello\"}\n";

const NOISY: &str = r#"import os, socket, sys, time, urllib.parse

def flood(event, context):
    # Output with no newline, as fast as it goes.
    chunk, end = "x" * 65536, time.time() + event["secs"]
    while time.time() < end:
        sys.stdout.write(chunk)
    return "flooded"

def spin(event, context):
    end, n = time.time() + event["secs"], 0
    while time.time() < end:
        n += 1
    return n

def hog(event, context):
    # Every platform API connection it can get, held open.
    url = urllib.parse.urlparse(os.environ["STRATUS_API_URL"])
    held, end = [], time.time() + event["secs"]
    while time.time() < end and len(held) < 5000:
        try:
            held.append(socket.create_connection((url.hostname, url.port), timeout=1))
        except OSError:
            time.sleep(0.01)
    time.sleep(max(0, end - time.time()))
    return len(held)

def forks(event, context):
    # Processes until the pids limit, held.
    children, end = 0, time.time() + event["secs"]
    while time.time() < end:
        try:
            if os.fork() == 0:
                time.sleep(event["secs"])
                os._exit(0)
            children += 1
        except OSError:
            time.sleep(0.05)
    return children

def memory(event, context):
    # Past its memory limit: the instance is killed, and called again.
    hoard = []
    while True:
        hoard.append(bytearray(16 << 20))
"#;

/// One kind of misbehaviour: how many of which noisy function, or the
/// outsider's silent connections.
#[derive(Clone, Copy)]
enum Noise {
    None,
    Function(&'static str, usize),
    SilentConnections(usize),
}

const PHASES: [(&str, Noise); 7] = [
    ("baseline", Noise::None),
    ("log flood (4 writers)", Noise::Function("flood", 4)),
    ("CPU (8 spinners)", Noise::Function("spin", 8)),
    ("platform API hog (2)", Noise::Function("hog", 2)),
    ("fork to the limit (2)", Noise::Function("forks", 2)),
    ("out of memory (2, looping)", Noise::Function("memory", 2)),
    ("1000 silent connections", Noise::SilentConnections(1000)),
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tenants bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the quiet app and the server saw in one phase.
struct Seen {
    latencies: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    rps: f64,
    peak_rss_mb: f64,
    peak_fds: usize,
}

fn run() -> anyhow::Result<()> {
    let secs: f64 = env_number("STRATUS_BENCH_SECS", 4.0, |s| *s > 0.0 && *s <= 600.0)?;
    let rounds: usize = env_number("STRATUS_BENCH_ROUNDS", 3, |r| (1..=50).contains(r))?;
    let connections: usize = env_number("STRATUS_BENCH_CONNECTIONS", 4, |c| (1..=256).contains(c))?;
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let server = Server::start(&data_dir, &dir.path().join("server.log"), &[])?;
    write_apps(dir.path())?;
    for app in ["quiet", "noisy"] {
        deploy(&dir.path().join(app), &data_dir)?;
    }
    let public: SocketAddr = server
        .public
        .trim_start_matches("http://")
        .parse()
        .context("the public address")?;
    let url = format!("{}/quiet/hello", server.public);
    // Warm: the quiet app's instances are started before any phase.
    measure(&url, connections, Duration::from_secs(1), server.pid())?;

    let mut seen: Vec<Vec<Seen>> = PHASES.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, (name, noise)) in PHASES.iter().enumerate() {
            eprintln!("round {}/{rounds}: {name}", round + 1);
            let phase = run_phase(&server, public, &url, *noise, secs, connections)?;
            seen[i].push(phase);
        }
    }
    report(&seen, secs, rounds, connections);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let dropped = log.lines().filter(|l| l.contains("dropped")).count();
    println!("server log lines that mention dropped output: {dropped}");
    Ok(())
}

fn write_apps(root: &Path) -> anyhow::Result<()> {
    let quiet = root.join("quiet");
    std::fs::create_dir_all(&quiet)?;
    std::fs::write(
        quiet.join("stratus.yaml"),
        "app: quiet\nfunctions:\n  hello:\n    runtime: python3\n    handler: main.handler\n    http: { path: /hello }\n",
    )?;
    std::fs::write(quiet.join("main.py"), QUIET)?;
    let noisy = root.join("noisy");
    std::fs::create_dir_all(&noisy)?;
    let mut manifest = String::from("app: noisy\nfunctions:\n");
    for f in ["flood", "spin", "hog", "forks", "memory"] {
        manifest.push_str(&format!(
            "  {f}:\n    runtime: python3\n    handler: main.{f}\n    timeout: 120s\n    memory: 128\n"
        ));
    }
    std::fs::write(noisy.join("stratus.yaml"), manifest)?;
    std::fs::write(noisy.join("main.py"), NOISY)?;
    Ok(())
}

fn run_phase(
    server: &Server,
    public: SocketAddr,
    url: &str,
    noise: Noise,
    secs: f64,
    connections: usize,
) -> anyhow::Result<Seen> {
    let window = Duration::from_secs_f64(secs);
    let stop = Arc::new(AtomicBool::new(false));
    let mut noisy = Vec::new();
    let mut silent = Vec::new();
    match noise {
        Noise::None => {}
        Noise::Function(function, count) => {
            for _ in 0..count {
                let (admin, token, stop) =
                    (server.admin.clone(), server.token.clone(), stop.clone());
                noisy.push(std::thread::spawn(move || {
                    noise_loop(&admin, &token, function, secs, &stop)
                }));
            }
            // Under way before the quiet app is measured.
            std::thread::sleep(Duration::from_millis(500));
        }
        Noise::SilentConnections(count) => {
            // From another address than the quiet app's client: one
            // address is held to its own share of connections.
            for _ in 0..count {
                match silent_connection(public) {
                    Ok(stream) => silent.push(stream),
                    Err(err) => {
                        eprintln!("silent connection {}: {err}", silent.len() + 1);
                        break;
                    }
                }
            }
        }
    }
    let seen = measure(url, connections, window, server.pid());
    stop.store(true, Ordering::Relaxed);
    for thread in noisy {
        let _ = thread.join();
    }
    drop(silent);
    // Let the noise settle before the next phase.
    std::thread::sleep(Duration::from_millis(500));
    seen
}

/// Calls a noisy function again and again, each call lasting the phase,
/// until told to stop.
fn noise_loop(admin: &str, token: &str, function: &str, secs: f64, stop: &AtomicBool) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .expect("a client");
    let url = format!("{admin}/v1/apps/noisy/functions/{function}/invoke");
    while !stop.load(Ordering::Relaxed) {
        let _ = client
            .post(&url)
            .bearer_auth(token)
            .body(format!("{{\"secs\": {}}}", secs + 1.0))
            .send()
            .and_then(|r| r.bytes());
    }
}

/// A TCP connection from 127.0.0.2 that never sends a byte.
fn silent_connection(to: SocketAddr) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.2:0".parse().expect("an address"))?;
        socket.connect(to).await?.into_std()
    })
}

/// The quiet app under a closed loop of `connections` for `window`, and
/// the server's peaks meanwhile.
fn measure(url: &str, connections: usize, window: Duration, pid: u32) -> anyhow::Result<Seen> {
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut rss, mut fds) = (0.0f64, 0usize);
            while !done.load(Ordering::Relaxed) {
                rss = rss.max(rss_mb(pid));
                fds = fds.max(open_fds(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            (rss, fds)
        })
    };
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let url = url.to_owned();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("a client");
                let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
                while start.elapsed() < window {
                    let sent = Instant::now();
                    match client.get(&url).send().and_then(|r| {
                        let status = r.status();
                        r.bytes().map(|_| status)
                    }) {
                        Ok(status) if status.is_success() => {
                            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        }
                        Ok(status) => {
                            errors += 1;
                            first_error.get_or_insert(format!("status {status}"));
                        }
                        Err(err) => {
                            errors += 1;
                            first_error.get_or_insert(err.to_string());
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut seen = Seen {
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
        rps: 0.0,
        peak_rss_mb: 0.0,
        peak_fds: 0,
    };
    for worker in workers {
        let (latencies, errors, first_error) = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        seen.latencies.extend(latencies);
        seen.errors += errors;
        if seen.first_error.is_none() {
            seen.first_error = first_error;
        }
    }
    seen.rps = seen.latencies.len() as f64 / start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let (rss, fds) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    seen.peak_rss_mb = rss;
    seen.peak_fds = fds;
    if seen.latencies.is_empty() {
        bail!(
            "the quiet app answered nothing in {window:?}: {}",
            seen.first_error.unwrap_or_default()
        );
    }
    Ok(seen)
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let v = sorted(values);
    percentile(&v, 50.0).unwrap_or(f64::NAN)
}

fn report(seen: &[Vec<Seen>], secs: f64, rounds: usize, connections: usize) {
    println!(
        "quiet app (python3 HTTP hello) at {connections} connections while another app misbehaves; {secs} s per phase, {rounds} rounds interleaved, medians of the rounds"
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7}",
        "phase", "p50 ms", "p99 ms", "req/s", "p50 x", "p99 x", "errors", "peak MB", "fds"
    );
    let stat = |phase: &[Seen], f: &dyn Fn(&Seen) -> f64| median(phase.iter().map(f));
    let p = |q: f64| {
        move |s: &Seen| percentile(&sorted(s.latencies.iter().copied()), q).unwrap_or(f64::NAN)
    };
    let (base50, base99) = (stat(&seen[0], &p(50.0)), stat(&seen[0], &p(99.0)));
    for ((name, _), phase) in PHASES.iter().zip(seen) {
        let (p50, p99) = (stat(phase, &p(50.0)), stat(phase, &p(99.0)));
        let errors: usize = phase.iter().map(|s| s.errors).sum();
        let peak_rss = phase.iter().map(|s| s.peak_rss_mb).fold(0.0, f64::max);
        let peak_fds = phase.iter().map(|s| s.peak_fds).max().unwrap_or(0);
        println!(
            "{:<28} {:>9.2} {:>9.2} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>9.1} {:>7}",
            name,
            p50,
            p99,
            stat(phase, &|s| s.rps),
            p50 / base50,
            p99 / base99,
            errors,
            peak_rss,
            peak_fds
        );
        if let Some(first) = phase.iter().find_map(|s| s.first_error.as_deref()) {
            println!("    first error: {first}");
        }
    }
}
