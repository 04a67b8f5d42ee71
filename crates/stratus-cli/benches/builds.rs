//! What installing dependencies on deploy costs: a FastAPI app with
//! `fastapi` and `mangum` in its `requirements.txt`.
//!
//! Starts a real `stratus server` (isolation `auto`) in a temporary data
//! directory and, for R rounds (default 3), interleaves:
//! - direct: the same install run directly on the host (`uv pip install
//!   --compile-bytecode --target`, or pip without uv), with an empty cache;
//! - cold deploy: `stratus deploy` of a new app whose requirements differ
//!   by a comment (a new layer, and an app cache of its own: empty), so
//!   the build starts from nothing as the direct install does;
//! - code-only redeploy: a one-line change of that app's code (the layer
//!   is reused);
//! - build-less deploy: a one-line change of an app without dependencies.
//!
//! Then, with `stratus dev` watching a FastAPI app with an HTTP route, R
//! rounds (default 5) interleave:
//! - dev save to served: the handler's file is saved with a new answer,
//!   timed until the route serves it (target 1 s);
//! - deploy to served: the same change made by hand, `stratus deploy` and
//!   then requests until the route serves it.
//!
//! Each deploy is timed around the whole `stratus deploy` command (pack,
//! upload, build, activate). It prints the median of each and the ratios
//! cold deploy / direct and code-only redeploy / build-less deploy, with
//! the targets (1.2 and 1.5). Registries are reached over the network in
//! both the direct and the built install, so their speed varies alike.
//!
//! Run with `cargo bench -p stratus-cli --bench builds`;
//! `STRATUS_BENCH_ROUNDS` sets the rounds. It prints figures only and never
//! asserts on them.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use support::{Server, env_number, read_all, stratus_command, wait_bounded};

mod support;

const REQUIREMENTS: &str = "fastapi\nmangum\n";

const MAIN: &str = r#"from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()

@app.get("/")
def index():
    return {"hello": "world"}

handler = Mangum(app, lifespan="off")
"#;

const PLAIN: &str = "def handler(event, context):\n    return 'hello'\n";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The real interpreter (not a version manager's shim).
fn python() -> anyhow::Result<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("cannot run python3")?;
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

/// uv beside the interpreter or on PATH, as the server finds it.
fn uv(python: &Path) -> Option<PathBuf> {
    let beside = python.parent()?.join("uv");
    if beside.is_file() {
        return Some(beside);
    }
    Command::new("uv")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("uv"))
}

/// Runs `command`, failing with its output unless it succeeds; returns
/// how long it took.
fn timed(command: &mut Command, what: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    // Drained as it runs, so a chatty install never blocks on its pipe.
    let out = child
        .stdout
        .take()
        .map(|p| std::thread::spawn(|| read_all(p)));
    let err = child
        .stderr
        .take()
        .map(|p| std::thread::spawn(|| read_all(p)));
    let status = wait_bounded(&mut child, Duration::from_secs(600))?
        .with_context(|| format!("{what} took more than 10 minutes"))?;
    let elapsed = started.elapsed();
    if !status.success() {
        let text: String = [out, err]
            .into_iter()
            .flatten()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        bail!("{what} failed ({status}):\n{text}");
    }
    Ok(elapsed)
}

fn write(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, text)?;
    }
    Ok(())
}

fn deploy(dir: &Path, data_dir: &Path) -> anyhow::Result<Duration> {
    timed(
        stratus_command()
            .arg("deploy")
            .arg(dir)
            .arg("--data-dir")
            .arg(data_dir),
        &format!("stratus deploy {}", dir.display()),
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run() -> anyhow::Result<()> {
    let rounds: usize = env_number("STRATUS_BENCH_ROUNDS", 3, |n| *n >= 1)?;
    let python = python()?;
    let uv = uv(&python);
    let scratch = tempfile::tempdir()?;
    let data_dir = scratch.path().join("data");
    let server = Server::start(&data_dir, &scratch.path().join("server.log"), &[])?;
    let manifest = |app: &str| {
        format!("app: {app}\nfunctions:\n  api:\n    runtime: python3\n    handler: main.handler\n")
    };
    let plain = scratch.path().join("plain");
    write(
        &plain,
        &[("stratus.yaml", &manifest("plain")), ("main.py", PLAIN)],
    )?;
    deploy(&plain, &data_dir)?;

    let (mut direct, mut cold, mut code_only, mut buildless) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let requirements = format!("# round {round}\n{REQUIREMENTS}");
        // Direct, from an empty cache.
        let here = scratch.path().join(format!("direct-{round}"));
        write(&here, &[("requirements.txt", &requirements)])?;
        let mut install = match &uv {
            Some(uv) => {
                let mut c = Command::new(uv);
                c.args([
                    "pip",
                    "install",
                    "--link-mode",
                    "copy",
                    "--compile-bytecode",
                    "--python",
                ])
                .arg(&python)
                .arg("--cache-dir")
                .arg(here.join("cache"));
                c
            }
            None => {
                let mut c = Command::new(&python);
                c.args(["-m", "pip", "install", "--no-input", "--cache-dir"])
                    .arg(here.join("cache"));
                c
            }
        };
        install
            .arg("--target")
            .arg(here.join("out"))
            .arg("-r")
            .arg(here.join("requirements.txt"));
        let took = timed(&mut install, "the direct install")?;
        direct.push(took.as_secs_f64());

        // A cold build: a new app, a new layer.
        let app = scratch.path().join(format!("fast{round}"));
        write(
            &app,
            &[
                ("stratus.yaml", &manifest(&format!("fast{round}"))),
                ("requirements.txt", &requirements),
                ("main.py", MAIN),
            ],
        )?;
        cold.push(deploy(&app, &data_dir)?.as_secs_f64());

        // One line of code changes.
        write(&app, &[("main.py", &format!("{MAIN}# change {round}\n"))])?;
        code_only.push(deploy(&app, &data_dir)?.as_secs_f64());
        write(
            &plain,
            &[("main.py", &format!("{PLAIN}# change {round}\n"))],
        )?;
        buildless.push(deploy(&plain, &data_dir)?.as_secs_f64());
        eprintln!(
            "round {round}: direct {:.2}s, cold deploy {:.2}s, code-only redeploy {:.3}s, build-less deploy {:.3}s",
            direct[round - 1],
            cold[round - 1],
            code_only[round - 1],
            buildless[round - 1]
        );
    }
    let installer = if uv.is_some() { "uv" } else { "pip" };
    let (direct, cold) = (median(&mut direct), median(&mut cold));
    let (code_only, buildless) = (median(&mut code_only), median(&mut buildless));
    println!("FastAPI + mangum from requirements.txt, {rounds} rounds, medians ({installer}):");
    println!("  direct install, empty cache      {direct:8.2} s");
    println!(
        "  first deploy (cold build)        {cold:8.2} s   {:.2}x direct (target <= 1.2x)",
        cold / direct
    );
    println!("  build-less deploy                {buildless:8.3} s");
    println!(
        "  code-only redeploy               {code_only:8.3} s   {:.2}x build-less (target <= 1.5x)",
        code_only / buildless
    );
    let (mut saved, mut by_hand) = dev_rounds(&server, &data_dir, scratch.path())?;
    let (saved, by_hand) = (median(&mut saved), median(&mut by_hand));
    println!("stratus dev, a code-only save of the FastAPI app, medians:");
    println!("  deploy by hand to served         {by_hand:8.3} s");
    println!(
        "  dev save to served               {saved:8.3} s   {:.2}x by hand (target <= 1 s)",
        saved / by_hand
    );
    drop(server);
    Ok(())
}

/// The FastAPI app behind an HTTP route, answering `word`.
fn routed(dir: &Path, app: &str, word: &str) -> anyhow::Result<()> {
    let main = MAIN
        .replace("@app.get(\"/\")", "@app.get(\"/{rest:path}\")")
        .replace("def index():", "def index(rest: str):")
        .replace("\"world\"", &format!("\"{word}\""));
    write(
        dir,
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: {app}\nfunctions:\n  api:\n    runtime: python3\n    handler: main.handler\n    http: {{ path: /hello }}\n"
                ),
            ),
            ("requirements.txt", REQUIREMENTS),
            ("main.py", &main),
        ],
    )
}

/// Requests `url` until it answers with `word` in its body; the time since
/// `since`.
fn served_after(url: &str, word: &str, since: Instant) -> anyhow::Result<Duration> {
    let client = reqwest::blocking::Client::new();
    loop {
        if let Ok(response) = client.get(url).send()
            && response.status().is_success()
            && response.text().unwrap_or_default().contains(word)
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(120) {
            bail!("{url} did not serve {word:?} within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Interleaved rounds of a save under `stratus dev` and the same change
/// deployed by hand, each timed until served.
fn dev_rounds(
    server: &Server,
    data_dir: &Path,
    scratch: &Path,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let rounds: usize = env_number("STRATUS_BENCH_DEV_ROUNDS", 5, |n| *n >= 1)?;
    let watched = scratch.join("watched");
    let manual = scratch.join("manual");
    routed(&watched, "watched", "w0")?;
    routed(&manual, "manual", "m0")?;
    deploy(&manual, data_dir)?;
    let mut dev = stratus_command()
        .arg("--data-dir")
        .arg(data_dir)
        .arg("dev")
        .arg(&watched)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start stratus dev")?;
    let watched_url = format!("{}/watched/hello", server.public);
    let manual_url = format!("{}/manual/hello", server.public);
    let outcome = (|| {
        served_after(&watched_url, "w0", Instant::now())?;
        served_after(&manual_url, "m0", Instant::now())?;
        let (mut saved, mut by_hand) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            // Past the file system's timestamp granularity and dev's poll.
            std::thread::sleep(Duration::from_millis(300));
            let word = format!("w{round}");
            let started = Instant::now();
            routed(&watched, "watched", &word)?;
            saved.push(served_after(&watched_url, &word, started)?.as_secs_f64());
            let word = format!("m{round}");
            let started = Instant::now();
            routed(&manual, "manual", &word)?;
            deploy(&manual, data_dir)?;
            by_hand.push(served_after(&manual_url, &word, started)?.as_secs_f64());
            eprintln!(
                "dev round {round}: save to served {:.3}s, deploy by hand to served {:.3}s",
                saved[round - 1],
                by_hand[round - 1]
            );
        }
        Ok((saved, by_hand))
    })();
    let _ = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status();
    let _ = wait_bounded(&mut dev, Duration::from_secs(30));
    outcome
}
