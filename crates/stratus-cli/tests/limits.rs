//! Resource limits: a function that exhausts its memory or its process
//! budget is stopped, the caller learns why, and everything else carries on.
//!
//! Runs in both isolation modes: the limits are enforced around a sandbox or a plain process.

mod common;

use common::{Server, write_app};

const BOMBS: &str = r#"import os, time

def memory(event, context):
    hog = bytearray(512 * 1024 * 1024)
    return len(hog)

def forks(event, context):
    children = 0
    try:
        for _ in range(2000):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            children += 1
    except OSError as e:
        return {"children": children, "stopped_by": type(e).__name__}
    return {"children": children, "stopped_by": None}

def fine(event, context):
    return "fine"
"#;

#[test]
fn memory_and_process_bombs_are_contained() {
    let server = Server::start_with(&["--pids-max", "64"]);
    let dir = server.path("bombs");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: bombs\nfunctions:\n  memory:\n    runtime: python3\n    handler: main.memory\n  forks:\n    runtime: python3\n    handler: main.forks\n    memory: 2048\n  fine:\n    runtime: python3\n    handler: main.fine\n",
            ),
            ("main.py", BOMBS),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    assert_eq!(server.invoke("bombs/fine", "{}")["result"], "fine");

    let oom = server.invoke("bombs/memory", "{}");
    assert_eq!(oom["error"]["errorType"], "Runtime.OutOfMemory", "{oom}");
    assert_eq!(
        oom["error"]["errorMessage"],
        "out of memory (limit 128 MiB)"
    );
    let logs = server.ok(&["logs", "bombs/memory"]);
    assert!(logs.contains("out of memory (limit 128 MiB)"), "{logs}");

    let forks = server.invoke("bombs/forks", "{}");
    assert!(forks["error"].is_null(), "{forks}");
    let children = forks["result"]["children"].as_u64().unwrap();
    assert!(children < 64, "the pids limit stops the bomb: {forks}");
    assert!(
        children > 10,
        "the limit is the configured one, not lower: {forks}"
    );
    assert_eq!(forks["result"]["stopped_by"], "BlockingIOError", "{forks}");

    // The platform and the other functions are unharmed.
    assert_eq!(server.invoke("bombs/fine", "{}")["result"], "fine");
    let again = server.invoke("bombs/memory", "{}");
    assert_eq!(
        again["error"]["errorType"], "Runtime.OutOfMemory",
        "{again}"
    );
}

/// Output without newlines, from several instances at once, costs the
/// server little memory: each instance's lines pass at its log rate, the
/// rest is dropped, and its log says how much.
#[test]
fn a_flood_of_output_is_rate_limited_and_bounded_in_memory() {
    let server = Server::start_with(&["--instance-log-rate", "1048576"]);
    let dir = server.path("flood");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: flood\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    timeout: 60s\n",
            ),
            (
                "main.py",
                "import sys\ndef handler(event, context):\n    chunk = 'x' * (1 << 20)\n    for _ in range(event['mib']):\n        sys.stdout.write(chunk)\n    sys.stdout.flush()\n    return 'done'\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let peak = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    let before = peak();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let seen = server.invoke("flood/f", r#"{"mib": 200}"#);
                assert_eq!(seen["result"], "done", "{seen}");
            });
        }
    });
    let after = peak();
    eprintln!(
        "server peak memory: {} MiB before, {} MiB after 800 MiB of output",
        before / 1024,
        after / 1024
    );
    assert!(
        after < before + 256 * 1024,
        "the server's peak memory grew from {before} kB to {after} kB"
    );
    let records = common::log_records(&server, "flood/f", &[]);
    assert!(
        records
            .iter()
            .any(|r| r["message"].as_str().is_some_and(|m| m.contains(
                "of output dropped: over this instance's log rate of 1048576 bytes per second"
            ))),
        "the log says what was dropped"
    );
}
