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
/// rest is dropped, and its log says how much; what is read past eight
/// times that rate waits, so a writer cannot make the server read as fast
/// as it writes.
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
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let seen = server.invoke("flood/f", r#"{"mib": 40}"#);
                assert_eq!(seen["result"], "done", "{seen}");
            });
        }
    });
    let took = started.elapsed();
    let after = peak();
    eprintln!(
        "server peak memory: {} MiB before, {} MiB after 160 MiB of output in {took:?}",
        before / 1024,
        after / 1024
    );
    // 40 MiB each, read at 8 MiB/s past the first second's 8 MiB: the
    // writers waited.
    assert!(
        took >= std::time::Duration::from_secs(3),
        "40 MiB of output each went in {took:?}, faster than it is read"
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

const NOISY: &str = "import sys\ndef handler(event, context):\n    line = 'y' * 10000 + '\\n'\n    for _ in range(event['lines']):\n        sys.stdout.write(line)\n    sys.stdout.flush()\n    return 'done'\n";

/// Bytes of log messages stored for `target`.
fn stored_log_bytes(server: &Server, target: &str) -> usize {
    common::log_records(server, target, &[])
        .iter()
        .filter_map(|r| r["message"].as_str().map(str::len))
        .sum()
}

/// The log budget holds on write, per app and in total, and trimmed logs
/// give their space back: the log files shrink, and the database holds
/// none of them.
#[test]
fn the_log_budget_holds_per_app_and_the_log_files_shrink() {
    let server = Server::start_with(&[
        "--log-max-bytes",
        "4000000",
        "--log-max-bytes-per-app",
        "1000000",
        "--instance-log-rate",
        "1000000000",
    ]);
    for app in ["noisy", "quiet"] {
        let dir = server.path(app);
        write_app(
            &dir,
            &[
                (
                    "stratus.yaml",
                    &format!(
                        "app: {app}\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    timeout: 60s\n"
                    ),
                ),
                ("main.py", NOISY),
            ],
        );
        server.ok(&["deploy", dir.to_str().unwrap()]);
    }
    assert_eq!(
        server.invoke("quiet/f", r#"{"lines": 20}"#)["result"],
        "done"
    );
    let database = || -> u64 {
        ["stratus.db", "stratus.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(server.data_dir.join(f)).map_or(0, |m| m.len()))
            .sum()
    };
    let size = || -> u64 {
        let mut bytes = 0;
        for app in std::fs::read_dir(server.data_dir.join("logs")).unwrap() {
            for segment in std::fs::read_dir(app.unwrap().path()).unwrap() {
                bytes += segment.map_or(0, |s| s.metadata().map_or(0, |m| m.len()));
            }
        }
        bytes
    };
    let mut peak = 0;
    for _ in 0..5 {
        assert_eq!(
            server.invoke("noisy/f", r#"{"lines": 2000}"#)["result"],
            "done"
        );
        peak = peak.max(size());
    }
    // 100 MB were written; the app keeps its own megabyte.
    let settled = common::eventually(std::time::Duration::from_secs(20), || {
        let bytes = stored_log_bytes(&server, "noisy/f");
        if bytes <= 1_100_000 {
            Ok(bytes)
        } else {
            Err(format!("noisy/f holds {bytes} bytes of logs"))
        }
    });
    eprintln!(
        "noisy/f keeps {settled} bytes of logs; the log files peaked at {peak} bytes and are {} now",
        size()
    );
    assert!(
        stored_log_bytes(&server, "quiet/f") >= 200_000,
        "the quiet app keeps its logs"
    );
    // Past the budget by at most what arrives between two trims.
    assert!(peak < 64_000_000, "the log files grew to {peak} bytes");
    common::eventually(std::time::Duration::from_secs(20), || {
        let now = size();
        if now <= 4_000_000 {
            Ok(())
        } else {
            Err(format!("the log files still hold {now} bytes"))
        }
    });
    assert!(
        database() < 2_000_000,
        "the database holds {} bytes",
        database()
    );
}

/// On a full disk the server keeps serving: the reserve is given up, logs
/// are trimmed to make room, and a restart on the full disk starts,
/// saying it runs degraded.
#[test]
fn a_full_disk_is_survived_and_a_restart_on_it_starts() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("not root: cannot mount a small file system for the data directory");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=80m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let unmount = Unmount(small.clone());
    let data_dir = small.join("data");
    let mut server = Server::start_at(
        dir,
        data_dir,
        &[
            "--disk-reserve",
            "16000000",
            "--log-max-bytes",
            "1000000000",
            "--log-max-bytes-per-app",
            "1000000000",
            "--instance-log-rate",
            "1000000000",
        ],
    );
    let app = server.path("noisy");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: noisy\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    timeout: 60s\n",
            ),
            ("main.py", NOISY),
        ],
    );
    server.ok(&["deploy", app.to_str().unwrap()]);
    // 160 MB of logs onto an 80 MB disk, and the function goes on
    // answering. The reserve, a fifth of the disk, is well above the 4 MB
    // the journal grows to between checkpoints, which a trim may need.
    for _ in 0..16 {
        assert_eq!(
            server.invoke("noisy/f", r#"{"lines": 1000}"#)["result"],
            "done"
        );
    }
    // Once there is room, the reserve is back (logs give way if they
    // must), and logs are stored again.
    let reserve = server.data_dir.join("reserve");
    common::eventually(std::time::Duration::from_secs(90), || {
        if reserve.exists() {
            Ok(())
        } else {
            let ls = std::process::Command::new("ls")
                .arg("-la")
                .arg(&server.data_dir)
                .output()
                .unwrap();
            let df = std::process::Command::new("df")
                .arg(&server.data_dir)
                .output()
                .unwrap();
            Err(format!(
                "the reserve is not back: {} {}",
                String::from_utf8_lossy(&ls.stdout),
                String::from_utf8_lossy(&df.stdout)
            ))
        }
    });
    assert_eq!(
        server.invoke("noisy/f", r#"{"lines": 1}"#)["result"],
        "done"
    );
    common::eventually(std::time::Duration::from_secs(20), || {
        let stored = stored_log_bytes(&server, "noisy/f");
        if stored > 0 {
            Ok(())
        } else {
            Err("no logs kept".into())
        }
    });
    // Fill what is left, as another writer on the disk would.
    let filler = server.data_dir.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=100"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    server.stop();
    server.restart();
    assert_eq!(
        server.invoke("noisy/f", r#"{"lines": 1}"#)["result"],
        "done"
    );
    let log = std::fs::read_to_string(server.dir.path().join("restart.log")).unwrap_or_default();
    assert!(log.contains("DEGRADED"), "{log}");
    server.stop();
    drop(unmount);
}
