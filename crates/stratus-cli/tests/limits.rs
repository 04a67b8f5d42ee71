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
