//! `stratus demo` and `stratus logs --follow`, as a user runs them.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Server, lines};

#[test]
fn demo_deploys_the_example_app_and_calls_each_function() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let mut output = String::new();
    while !output.contains("press Ctrl-C") {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
            }
            Err(_) => panic!("demo did not finish starting:\n{output}"),
        }
    }
    assert!(output.contains("deployed demo version 1"), "{output}");
    assert!(output.contains(r#""message":"Hello, Ada!""#), "{output}");
    assert!(output.contains(r#""words":11"#), "{output}");
    assert!(output.contains(r#""runtime":"sh""#), "{output}");
    assert!(
        output.contains(r#"200 {"message": "Hello, Ada!", "method": "GET", "path": "/hello/Ada"}"#),
        "{output}"
    );
    assert!(output.contains("stratus logs demo/greet"), "{output}");
    // The state went to ./.stratus, where the CLI finds the server by itself.
    let ls = Command::new(BIN)
        .arg("ls")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&ls.stdout);
    assert!(listed.contains("demo/wordcount"), "{listed}");
    assert!(
        listed.contains("GET /demo/hello GET /demo/hello/{name}"),
        "{listed}"
    );

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn logs_follow_prints_new_lines_as_they_arrive() {
    let server = Server::start();
    let app = server.path("hello");
    server.ok(&["init", app.to_str().unwrap()]);
    server.ok(&["deploy", app.to_str().unwrap()]);
    let mut follow = Command::new(BIN)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["logs", "hello/greet", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines(follow.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    server.invoke("hello/greet", r#"{"name":"Follower"}"#);
    let mut seen = String::new();
    while !seen.contains("REPORT") {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => seen.push_str(&line),
            Err(_) => panic!("no new log lines arrived: {seen}"),
        }
    }
    assert!(seen.contains("greeting Follower"), "{seen}");
    follow.kill().unwrap();
    follow.wait().unwrap();
}
