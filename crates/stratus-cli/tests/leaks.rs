//! Hundreds of cold starts leave nothing behind: no processes, no cgroups,
//! no mounts, no descriptors in the server. `STRATUS_LEAK_STARTS` sets the
//! number of cold starts (default 300).
//!
//! Runs in both isolation modes: processes, cgroups and mounts are made differently.

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

/// When process `pid` started (field 22 of its stat), to tell it from a
/// later process with the same pid.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)
        .map(str::to_owned)
}

/// Mounts of code slots left in the launcher's mount namespace.
fn slot_mounts(launcher: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{launcher}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("sandbox-slots"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn hundreds_of_cold_starts_leave_nothing_behind() {
    let starts: usize = std::env::var("STRATUS_LEAK_STARTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
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

    let (mut cold, mut prestarted) = (0, 0);
    let mut instances = Vec::new();
    for _ in 0..starts {
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
        if r.headers()["x-stratus-prestarted"] == "true" {
            prestarted += 1;
        }
        instances.push(
            r.headers()["x-stratus-instance"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        assert_eq!(r.text().await.unwrap(), "\"once\"");
    }
    assert_eq!(cold, starts, "every call started a new instance");
    assert!(prestarted > 0, "no call used a prestarted sandbox");

    // Removing the app lets go of its prestarted sandboxes too.
    server.ok(&["rm", "leak"]);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for instance in &instances {
        let left = common::processes_of(instance);
        assert!(
            left.is_empty(),
            "instance {instance} left processes behind: {left:?}"
        );
    }
    let groups = instance_cgroups(launcher);
    assert!(
        groups.is_empty(),
        "instances left cgroups behind: {groups:?}"
    );
    assert_eq!(slot_mounts(launcher), 0, "code slots are still mounted");
    let slots: Vec<_> = std::fs::read_dir(server.data_dir.join("sandbox-slots"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(slots.is_empty(), "slot directories left behind: {slots:?}");
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
    let instance = server.invoke("orphans/f", "{}")["result"]
        .as_str()
        .unwrap()
        .to_owned();
    let launcher = launcher_of(server.pid());
    // The runtime and the child it started.
    let started = std::time::Instant::now();
    while common::processes_of(&instance).len() < 2 && started.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        common::processes_of(&instance).len() >= 2,
        "instance {instance}: {:?}; the function's processes: {:?}",
        common::processes_of(&instance),
        common::processes_of_function("orphans.f")
    );
    assert!(
        !launcher_cgroups(launcher).is_empty() || !std::path::Path::new("/sys/fs/cgroup").exists()
    );

    // Everything the launcher made: the instance and the prestarted
    // sandboxes, which refill in the background once the instance has
    // answered (later when the machine is busy).
    let launched = || -> Vec<(u32, String)> {
        std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter_map(|pid| Some((pid, start_time(pid)?)))
            .collect()
    };
    let started = std::time::Instant::now();
    let mut children = launched();
    while children.len() < 2 && started.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        children = launched();
    }
    assert!(children.len() >= 2, "an instance and prestarted sandboxes");
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
    let left = common::processes_of(&instance);
    assert!(left.is_empty(), "instances outlived the server: {left:?}");
    let survivors: Vec<_> = children
        .iter()
        .filter(|(pid, started)| start_time(*pid).as_ref() == Some(started))
        .collect();
    assert!(
        survivors.is_empty(),
        "the launcher's children (instances, prestarted sandboxes) outlived it: {survivors:?}"
    );
    let groups = launcher_cgroups(launcher);
    assert!(groups.is_empty(), "cgroups outlived the server: {groups:?}");
}
