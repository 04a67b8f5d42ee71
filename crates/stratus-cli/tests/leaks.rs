//! Hundreds of cold starts leave nothing behind: no processes, no cgroups,
//! no descriptors in the server.

mod common;

use common::{Server, write_app};

/// A custom runtime that answers one event and exits, so every call is cold.
const ONE_SHOT: &str = r#"#!/bin/sh
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
ID="$(curl -sS -D - -o /dev/null "$API/invocation/next" | grep -i '^lambda-runtime-aws-request-id:' | tr -d '[:space:]' | cut -d: -f2)"
curl -sS -o /dev/null -X POST "$API/invocation/$ID/response" -d '"once"'
"#;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn launcher_of(server: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{server}/task/{server}/children"))
        .unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("stratus"))
        })
        .expect("the launcher is a child of the server")
}

/// The launcher's own cgroups, one per hierarchy.
fn launcher_cgroups(launcher: u32) -> Vec<std::path::PathBuf> {
    let name = format!("stratus-{launcher}");
    let mut bases = Vec::new();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for mount in mounts
        .lines()
        .filter(|l| l.contains(" cgroup"))
        .filter_map(|l| l.split_whitespace().nth(1))
    {
        let mut stack = vec![std::path::PathBuf::from(mount)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if entry.file_name().to_string_lossy() == name {
                        bases.push(entry.path());
                    } else if dir.components().count() < 8 {
                        stack.push(entry.path());
                    }
                }
            }
        }
    }
    bases
}

/// Instance cgroups left under the launcher's own groups.
fn instance_cgroups(launcher: u32) -> Vec<std::path::PathBuf> {
    launcher_cgroups(launcher)
        .iter()
        .flat_map(|b| std::fs::read_dir(b).into_iter().flatten().flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_cold_starts_leave_nothing_behind() {
    let server = Server::start();
    let dir = server.path("leak");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: leak\nfunctions:\n  f:\n    runtime: provided\n    max_instances: 4\n",
            ),
            ("bootstrap", ONE_SHOT),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let launcher = launcher_of(server.pid());
    let url = format!("{}/v1/apps/leak/functions/f/invoke", server.admin);
    let http = server.http();
    // Warm up the server's own pools (connections, threads) before counting.
    for _ in 0..5 {
        http.post(&url)
            .bearer_auth(&server.token)
            .body("{}")
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let fds_before = fd_count(server.pid());

    let mut cold = 0;
    for _ in 0..300 {
        let r = http
            .post(&url)
            .bearer_auth(&server.token)
            .body("{}")
            .send()
            .await
            .unwrap();
        if r.headers()["x-stratus-cold"] == "true" {
            cold += 1;
        }
        assert_eq!(r.text().await.unwrap(), "\"once\"");
    }
    assert_eq!(cold, 300, "every call started a new instance");

    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let left = common::processes_of_function("leak.f");
    assert!(left.is_empty(), "instances left processes behind: {left:?}");
    let groups = instance_cgroups(launcher);
    assert!(
        groups.is_empty(),
        "instances left cgroups behind: {groups:?}"
    );
    let fds_after = fd_count(server.pid());
    assert!(
        fds_after <= fds_before + 4,
        "the server's descriptors grew from {fds_before} to {fds_after}"
    );
}

#[test]
fn a_killed_server_takes_its_instances_and_cgroups_with_it() {
    let mut server = Server::start();
    let dir = server.path("orphans");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: orphans\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "main.py",
                "import subprocess\ndef handler(e, c):\n    subprocess.Popen(['sleep', '300'])\n    return c.log_stream_name\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    server.invoke("orphans/f", "{}");
    let launcher = launcher_of(server.pid());
    assert!(common::processes_of_function("orphans.f").len() >= 2);
    assert!(
        !launcher_cgroups(launcher).is_empty() || !std::path::Path::new("/sys/fs/cgroup").exists()
    );

    server.kill();
    let started = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{launcher}")).exists()
        && started.elapsed().as_secs() < 10
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{launcher}")).exists(),
        "the launcher outlived the server"
    );
    let left = common::processes_of_function("orphans.f");
    assert!(left.is_empty(), "instances outlived the server: {left:?}");
    let groups = launcher_cgroups(launcher);
    assert!(groups.is_empty(), "cgroups outlived the server: {groups:?}");
}
