//! What observability costs: warm invocations through the admin invoke API
//! and requests to an HTTP function, on a server with metrics and traces
//! on (the defaults: every invocation's spans recorded and kept, 100%
//! sampled) next to one started with `--metrics=false --traces=false`, in
//! the same run.
//!
//! Both servers get the same app (a no-op Python function with an HTTP
//! route). Each case (invoke or HTTP, 1 or 16 connections) is measured in
//! rounds that alternate between the two servers, so that the machine's
//! noise falls on both; the report gives each side's median requests per
//! second and median p50 across rounds, their ratio, the median and the
//! range of each round's own ratio (the two sides of a round ran moments
//! apart, so the machine's drift cancels within it), and the p50 added in
//! microseconds. Targets: at most 5% fewer requests/s and at most 10 µs
//! added at p50. Run with `cargo bench -p stratus-cli --bench
//! observability`; `STRATUS_BENCH_SECS` sets the seconds per measurement
//! (default 2), `STRATUS_BENCH_ROUNDS` the rounds (default 5). It prints
//! figures only and never asserts on them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use support::{Server, closed_loop, deploy, env_number, percentile};

mod support;

const APP: &str = "obsbench";
const DEFAULT_SECS: f64 = 2.0;
const MAX_SECS: f64 = 600.0;
const DEFAULT_ROUNDS: usize = 5;
const MAX_ROUNDS: usize = 100;
const CONNECTIONS: [usize; 2] = [1, 16];
const WARMUP: Duration = Duration::from_millis(500);

#[derive(Clone, Copy)]
enum Case {
    /// POST /v1/apps/APP/functions/f/invoke on the admin listener.
    Invoke,
    /// GET /APP/f on the public listener.
    Http,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Invoke => "invoke API",
            Case::Http => "HTTP function",
        }
    }
}

struct Figures {
    rps: f64,
    p50_us: f64,
    errors: usize,
}

/// C connections, each sending the case's request in a closed loop for
/// `window`.
async fn load(
    (addr, token): (SocketAddr, String),
    case: Case,
    connections: usize,
    window: Duration,
) -> anyhow::Result<Figures> {
    let seen = closed_loop(
        addr,
        connections,
        window,
        move || {
            Ok(match case {
                Case::Invoke => hyper::Request::post(format!("/v1/apps/{APP}/functions/f/invoke"))
                    .header("host", "127.0.0.1")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(b"{}")))?,
                Case::Http => hyper::Request::get(format!("/{APP}/f"))
                    .header("host", "127.0.0.1")
                    .body(Full::new(Bytes::new()))?,
            })
        },
        |status, _| status == 200,
    )
    .await?;
    Ok(Figures {
        rps: seen.rps(),
        p50_us: percentile(&seen.latencies_ms, 50.0).map_or(f64::NAN, |ms| ms * 1000.0),
        errors: seen.errors,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn write_app(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("stratus.yaml"),
        format!(
            "app: {APP}\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    max_instances: 32\n    http: {{ path: /f }}\n"
        ),
    )?;
    std::fs::write(
        dir.join("main.py"),
        "def handler(event, context):\n    return {'statusCode': 200, 'body': 'ok'}\n",
    )?;
    Ok(())
}

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    url.trim_start_matches("http://")
        .parse()
        .with_context(|| format!("not an address: {url}"))
}

fn run() -> anyhow::Result<()> {
    let secs = env_number("STRATUS_BENCH_SECS", DEFAULT_SECS, |s| {
        s.is_finite() && *s > 0.0 && *s <= MAX_SECS
    })
    .with_context(|| format!("STRATUS_BENCH_SECS: give seconds, at most {MAX_SECS}"))?;
    let rounds = env_number("STRATUS_BENCH_ROUNDS", DEFAULT_ROUNDS, |r| {
        (1..=MAX_ROUNDS).contains(r)
    })
    .with_context(|| format!("STRATUS_BENCH_ROUNDS: give 1 to {MAX_ROUNDS}"))?;
    let window = Duration::from_secs_f64(secs);
    let tmp = tempfile::Builder::new()
        .prefix("stratus-observability-bench-")
        .tempdir()?;
    let app_dir = tmp.path().join("app");
    write_app(&app_dir)?;
    let mut servers = Vec::new();
    for (label, extra) in [
        ("all on", &[][..]),
        ("all off", &["--metrics=false", "--traces=false"][..]),
    ] {
        let data_dir = tmp.path().join(label.replace(' ', "-"));
        let server = Server::start(&data_dir, &tmp.path().join(format!("{label}.log")), extra)?;
        deploy(&app_dir, &data_dir)?;
        servers.push((label, server));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "observability cost: {rounds} rounds of {secs} s per case, alternating between the two servers"
    );
    println!(
        "{:<14} {:>5} {:>10} {:>10} {:>6} {:>19} {:>10} {:>10} {:>8}",
        "case",
        "conns",
        "on req/s",
        "off req/s",
        "ratio",
        "round ratio (range)",
        "on p50 µs",
        "off p50 µs",
        "Δp50 µs"
    );
    for case in [Case::Invoke, Case::Http] {
        for connections in CONNECTIONS {
            let mut figures: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
            for round in 0..rounds {
                // Alternate which goes first, as well as between them.
                let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for side in order {
                    let server = &servers[side].1;
                    let target = match case {
                        Case::Invoke => (addr_of(&server.admin)?, server.token.clone()),
                        Case::Http => (addr_of(&server.public)?, String::new()),
                    };
                    runtime.block_on(load(target.clone(), case, connections, WARMUP))?;
                    figures[side].push(runtime.block_on(load(
                        target,
                        case,
                        connections,
                        window,
                    ))?);
                }
            }
            let errors: usize = figures.iter().flatten().map(|f| f.errors).sum();
            let rps = |side: usize| median(figures[side].iter().map(|f| f.rps).collect());
            let p50 = |side: usize| median(figures[side].iter().map(|f| f.p50_us).collect());
            let paired: Vec<f64> = figures[0]
                .iter()
                .zip(&figures[1])
                .map(|(on, off)| on.rps / off.rps)
                .collect();
            let (low, high) = paired
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), r| {
                    (l.min(*r), h.max(*r))
                });
            println!(
                "{:<14} {:>5} {:>10.0} {:>10.0} {:>6.3} {:>19} {:>10.1} {:>10.1} {:>8.1}{}",
                case.name(),
                connections,
                rps(0),
                rps(1),
                rps(0) / rps(1),
                format!("{:.3} ({low:.3}-{high:.3})", median(paired)),
                p50(0),
                p50(1),
                p50(0) - p50(1),
                if errors > 0 {
                    format!("  ({errors} failed requests)")
                } else {
                    String::new()
                }
            );
        }
    }
    println!("targets: ratio at least 0.95 and Δp50 at most 10 µs with everything on");
    drop(servers);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
