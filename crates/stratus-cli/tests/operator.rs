//! An operator's mistakes lose nothing silently: a database removed or
//! replaced under the running server stops every write with the reason,
//! and a server refuses to start on a database its data directory was not
//! used with, unless told `--accept-empty-store`. A backup taken while
//! the server is busy restores into a server that serves the same state.

mod common;

use std::process::{Command, Stdio};

use common::{BIN, Server, write_app};

fn deploy_hello(server: &Server, app: &str) {
    let dir = server.path(app);
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: {app}\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n"
                ),
            ),
            ("main.py", "def handler(e, c):\n    return 'hi'\n"),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
}

/// Starts `stratus server` on `server`'s data directory and waits for it
/// to exit within a few seconds: (success, stderr).
fn start_expecting_exit(server: &Server, extra: &[&str]) -> (bool, String) {
    let mut child = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status.success(), stderr);
        }
        if started.elapsed() > std::time::Duration::from_secs(4) {
            let _ = child.kill();
            let _ = child.wait();
            return (true, "still running".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn remove_database(server: &Server) {
    for file in ["stratus.db", "stratus.db-wal", "stratus.db-shm"] {
        let _ = std::fs::remove_file(server.data_dir.join(file));
    }
}

#[test]
fn a_database_removed_while_running_stops_every_write() {
    let mut server = Server::start();
    deploy_hello(&server, "before");
    remove_database(&server);
    let dir = server.path("after");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: after\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", "def handler(e, c):\n    return 'hi'\n"),
        ],
    );
    let refused = server.fails(&["deploy", dir.to_str().unwrap()]);
    assert!(
        refused.contains("was removed or replaced while the server ran"),
        "{refused}"
    );
    let refused = server.fails(&["keys", "create", "before"]);
    assert!(refused.contains("was removed or replaced"), "{refused}");
    let refused = server.fails(&["invoke", "before/f", "--async"]);
    assert!(refused.contains("was removed or replaced"), "{refused}");
    server.stop();

    // A new, empty database is not taken for the old one.
    let (ok, stderr) = start_expecting_exit(&server, &[]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("is new and empty, but this data directory was used with another one")
            && stderr.contains("--accept-empty-store"),
        "{stderr}"
    );
}

#[test]
fn an_emptied_or_replaced_database_is_refused_at_start_unless_accepted() {
    let mut server = Server::start();
    deploy_hello(&server, "kept");
    server.stop();
    let db = server.data_dir.join("stratus.db");
    let copy = server.path("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    remove_database(&server);
    std::fs::write(&db, b"").unwrap();
    let (ok, stderr) = start_expecting_exit(&server, &[]);
    assert!(!ok && stderr.contains("is new and empty"), "{stderr}");

    // The right file back: it starts, with everything.
    remove_database(&server);
    std::fs::copy(&copy, &db).unwrap();
    server.restart();
    assert_eq!(server.invoke("kept/f", "{}")["result"], "hi");
    server.stop();

    // Another data directory's database is refused too.
    let other = Server::start();
    deploy_hello(&other, "other");
    let mut other = other;
    other.stop();
    remove_database(&server);
    std::fs::copy(other.data_dir.join("stratus.db"), &db).unwrap();
    let (ok, stderr) = start_expecting_exit(&server, &[]);
    assert!(!ok && stderr.contains("was replaced"), "{stderr}");

    // Told to, it goes on with the empty one.
    remove_database(&server);
    std::fs::write(&db, b"").unwrap();
    let (ok, stderr) = start_expecting_exit(&server, &["--accept-empty-store"]);
    assert!(ok && stderr == "still running", "{stderr}");
}

/// A backup taken while the server is busy restores into a new data
/// directory that serves the same apps, keys and queued events.
#[test]
fn a_backup_taken_under_load_restores_and_serves() {
    let server = Server::start();
    deploy_hello(&server, "kept");
    let key = server.ok(&["keys", "create", "kept", "--output", "json"]);
    let key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let accepted = std::sync::atomic::AtomicUsize::new(0);
    let backup = server.path("backup");
    std::thread::scope(|scope| {
        // Load: asynchronous invocations, each written to the store.
        scope.spawn(|| {
            let http = common::client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = http
                    .post(format!("{}/v1/apps/kept/functions/f/invoke", server.admin))
                    .bearer_auth(&server.token)
                    .header("x-stratus-invocation-type", "Event")
                    .body("{}")
                    .send()
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let out = server.ok(&["backup", backup.to_str().unwrap()]);
        assert!(out.contains("backed up"), "{out}");
        std::thread::sleep(std::time::Duration::from_millis(200));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(accepted.load(std::sync::atomic::Ordering::Relaxed) > 10);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // Into a data directory that holds state: refused.
    let refused = server.fails(&["restore", backup.to_str().unwrap()]);
    assert!(refused.contains("already holds state"), "{refused}");

    // Into a new one: it starts and serves what the old one had.
    let dir = tempfile::tempdir().unwrap();
    let restored_dir = dir.path().join("data");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&restored_dir)
        .args(["restore", backup.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = Server::start_in(dir, &[]);
    assert_eq!(restored.token, server.token, "the admin token came along");
    assert_eq!(restored.invoke("kept/f", "{}")["result"], "hi");
    let keys = restored.ok(&["keys", "ls", "kept"]);
    assert!(keys.contains(key["id"].as_str().unwrap()), "{keys}");
}
