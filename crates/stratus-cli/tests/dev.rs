//! `stratus dev`: deploys an app, redeploys it on every save, streams its
//! logs, and leaves nothing running when stopped.
//!
//! Runs in both isolation modes (CI runs it again with STRATUS_ISOLATION=none).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{BIN, Server, eventually, lines, processes_with, write_app};

fn handler(word: &str) -> String {
    format!(
        "def handler(event, context):\n    print('serving', '{word}')\n    return {{'statusCode': 200, 'body': '{word}'}}\n"
    )
}

fn app(dir: &Path, word: &str) {
    write_app(
        dir,
        &[
            (
                "stratus.yaml",
                "app: loop\nfunctions:\n  page:\n    runtime: python3\n    handler: main.handler\n    http: { path: /page }\n",
            ),
            ("main.py", &handler(word)),
        ],
    );
}

fn served(public: &str) -> Option<(String, String)> {
    let response = common::client()
        .get(format!("{public}/loop/page"))
        .send()
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let id = common::request_id(&response);
    Some((response.text().unwrap_or_default(), id))
}

fn serves(public: &str, word: &str, within: Duration) -> String {
    eventually(within, || match served(public) {
        Some((body, id)) if body == word => Ok(id),
        other => Err(format!("{public}/loop/page answers {other:?}")),
    })
}

/// A `stratus dev` run, its stdout and stderr read as they come.
struct Dev {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    seen_out: Vec<String>,
    seen_err: Vec<String>,
    interrupted: bool,
}

impl Drop for Dev {
    /// A failed test stops dev (and the server it started) too.
    fn drop(&mut self) {
        if !self.interrupted {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Dev {
    fn spawn(command: &mut Command) -> Dev {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stratus dev");
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Dev {
            child,
            out,
            err,
            seen_out: Vec::new(),
            seen_err: Vec::new(),
            interrupted: false,
        }
    }

    fn drain(&mut self) {
        self.seen_out.extend(self.out.try_iter());
        self.seen_err.extend(self.err.try_iter());
    }

    /// Waits for a line of stdout (`stdout`) or stderr holding all of
    /// `needles`, and returns it.
    fn wait_for(&mut self, stdout: bool, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.drain();
            let seen = if stdout {
                &self.seen_out
            } else {
                &self.seen_err
            };
            if let Some(line) = seen.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "stratus dev printed no line with {needles:?}\nstdout:\n{}\nstderr:\n{}",
                self.seen_out.join("\n"),
                self.seen_err.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C, as a terminal sends it; dev must exit cleanly.
    fn interrupt(mut self) -> Vec<String> {
        self.interrupted = true;
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "stratus dev ignores Ctrl-C");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.drain();
        assert!(status.success(), "{status}\n{}", self.seen_err.join("\n"));
        std::mem::take(&mut self.seen_err)
    }
}

#[test]
fn a_save_is_served_at_once_with_its_logs_in_the_same_terminal() {
    let server = Server::start();
    let dir = server.path("loop");
    app(&dir, "one");
    let mut dev = Dev::spawn(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(["dev", dir.to_str().unwrap()])
            .env("STRATUS_CONFIG_DIR", common::config_dir(&server.data_dir)),
    );
    dev.wait_for(false, &["deployed loop version 1"]);
    let id = serves(&server.public, "one", Duration::from_secs(10));
    // The function's own line, with its name and request id.
    let line = dev.wait_for(true, &["serving one", &id]);
    assert!(line.contains(" page "), "{line}");

    // A save of the handler is served within moments.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(dir.join("main.py"), handler("two")).unwrap();
    let saved = Instant::now();
    let id = serves(&server.public, "two", Duration::from_secs(10));
    eprintln!("save to served: {:?}", saved.elapsed());
    dev.wait_for(false, &["deployed loop version 2"]);
    dev.wait_for(true, &["serving two", &id]);

    // A broken manifest deploys nothing, says why, and the loop goes on.
    std::fs::write(dir.join("stratus.yaml"), "app: loop\nfunctions: [\n").unwrap();
    dev.wait_for(false, &["not deployed", "stratus.yaml"]);
    assert_eq!(
        served(&server.public).map(|(body, _)| body).as_deref(),
        Some("two")
    );
    app(&dir, "three");
    serves(&server.public, "three", Duration::from_secs(10));
    dev.wait_for(false, &["deployed loop version 3"]);

    // Stopping it leaves the server it did not start alone.
    dev.interrupt();
    assert_eq!(
        served(&server.public).map(|(body, _)| body).as_deref(),
        Some("three")
    );
}

#[test]
fn without_a_server_it_starts_one_and_ctrl_c_leaves_nothing_running() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("loop");
    let data_dir = temp.path().join("data");
    app(&dir, "one");
    let mut dev = Dev::spawn(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["dev", dir.to_str().unwrap()])
            .args([
                "--",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("STRATUS_CONFIG_DIR", temp.path().join("config"))
            .env_remove("STRATUS_URL"),
    );
    dev.wait_for(false, &["started a local server"]);
    dev.wait_for(false, &["deployed loop version 1"]);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("server.json")).unwrap())
            .unwrap();
    let public = info["public"].as_str().unwrap().to_owned();
    let id = serves(&public, "one", Duration::from_secs(10));
    // `TIME FUNCTION VERSION INSTANCE REQUEST MESSAGE`
    let line = dev.wait_for(true, &["serving one", &id]);
    let instance = line.split(' ').nth(3).unwrap().to_owned();
    assert!(!common::processes_of(&instance).is_empty(), "{line}");

    dev.interrupt();
    // The server it started and the instances are gone.
    eventually(Duration::from_secs(10), || {
        let left = common::processes_of(&instance);
        let servers: Vec<u32> = processes_with(&format!(
            "STRATUS_CONFIG_DIR={}",
            temp.path().join("config").display()
        ));
        if left.is_empty() && servers.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "still running: instances {left:?}, servers {servers:?}"
            ))
        }
    });
    assert!(served(&public).is_none());
}
