//! Cold starts from sandboxes made ahead of demand: each becomes exactly
//! the function it is handed, with that function's code, environment and
//! memory, and nothing of any other; functions that need their own start
//! get one; `--prestart 0` turns it off.
//!
//! Runs in both isolation modes: prestarted sandboxes are made differently.

mod common;

use std::time::Duration;

use common::{Server, write_app};

const SHOW: &str = r#"import os

def handler(event, context):
    task = os.environ["LAMBDA_TASK_ROOT"]
    try:
        open(os.path.join(task, "x"), "w")
        write = "allowed"
    except OSError as e:
        write = "refused: " + e.strerror
    return {
        "files": sorted(os.listdir(task)),
        "marker": open(os.path.join(task, "marker.txt")).read(),
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if k in ("GREETING", "STRATUS_ACTIVATION_FD", "STRATUS_PRESTARTED", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "PYTHONPATH")},
        "memory": context.memory_limit_in_mb,
        "write_task": write,
        "cgroup_memory": open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read().strip() if os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes") else None,
    }
"#;

const NODE_SHOW: &str = r#"const fs = require('fs');
exports.handler = async () => ({
  files: fs.readdirSync(process.env.LAMBDA_TASK_ROOT).sort(),
  marker: fs.readFileSync(process.env.LAMBDA_TASK_ROOT + '/marker.txt', 'utf8'),
  greeting: process.env.GREETING,
  tz: process.env.TZ === undefined ? null : 'set',
  activation: process.env.STRATUS_ACTIVATION_FD === undefined ? null : 'leaked',
});
"#;

fn deploy(server: &Server, app: &str, files: &[(&str, &str)]) {
    let dir = server.path(app);
    write_app(&dir, files);
    server.ok(&["deploy", dir.to_str().unwrap()]);
}

fn manifest(app: &str, runtime: &str, handler: &str, extra: &str) -> String {
    format!(
        "app: {app}\nfunctions:\n  f:\n    runtime: {runtime}\n    handler: {handler}\n    memory: 192\n    env:\n      GREETING: hello from {app}\n{extra}"
    )
}

/// Gives the background refill time to make sandboxes for what was deployed.
fn settle() {
    std::thread::sleep(Duration::from_millis(1500));
}

#[test]
fn prestarted_sandboxes_become_exactly_their_function() {
    let server = Server::start();
    let a = manifest("pa", "python3", "main.handler", "");
    let b = manifest("pb", "python3", "main.handler", "");
    let n = manifest("pn", "nodejs", "index.handler", "");
    deploy(
        &server,
        "pa",
        &[("stratus.yaml", &a), ("main.py", SHOW), ("marker.txt", "A")],
    );
    deploy(
        &server,
        "pb",
        &[
            ("stratus.yaml", &b),
            ("main.py", SHOW),
            ("marker.txt", "B"),
            ("only_b.txt", ""),
        ],
    );
    deploy(
        &server,
        "pn",
        &[
            ("stratus.yaml", &n),
            ("index.js", NODE_SHOW),
            ("marker.txt", "N"),
        ],
    );
    let isolated = !std::env::var("STRATUS_ISOLATION").is_ok_and(|v| v == "none");
    for (app, marker, files) in [
        ("pa", "A", vec!["main.py", "marker.txt", "stratus.yaml"]),
        (
            "pb",
            "B",
            vec!["main.py", "marker.txt", "only_b.txt", "stratus.yaml"],
        ),
    ] {
        // Each cold start takes the pool's sandbox; it refills in between.
        settle();
        let out = server.invoke(&format!("{app}/f"), "{}");
        assert_eq!(out["cold"], true, "{out}");
        assert_eq!(out["phases"]["prestarted"], true, "{out}");
        let r = &out["result"];
        assert_eq!(r["marker"], marker, "{out}");
        if isolated {
            assert_eq!(r["files"], serde_json::json!(files), "{out}");
        } else {
            let has_b = r["files"]
                .as_array()
                .unwrap()
                .contains(&"only_b.txt".into());
            assert_eq!(has_b, app == "pb", "{out}");
        }
        assert_eq!(r["env"]["GREETING"], format!("hello from {app}"), "{out}");
        assert_eq!(r["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "192", "{out}");
        assert!(r["env"].get("STRATUS_ACTIVATION_FD").is_none(), "{out}");
        assert!(r["env"].get("STRATUS_PRESTARTED").is_none(), "{out}");
        assert_eq!(r["memory"], "192");
        if isolated {
            assert_eq!(r["cwd"], "/var/task");
            assert!(
                r["write_task"].as_str().unwrap().starts_with("refused"),
                "{out}"
            );
            if !r["cgroup_memory"].is_null() {
                // Inside its namespace the cgroup files are the host's view:
                // present only where the host mounts them so.
                let limit: u64 = r["cgroup_memory"].as_str().unwrap().parse().unwrap();
                assert!(limit >= 192 << 20, "{out}");
            }
        }
    }
    settle();
    let out = server.invoke("pn/f", "{}");
    assert_eq!(out["phases"]["prestarted"], true, "{out}");
    let r = &out["result"];
    assert_eq!(r["marker"], "N", "{out}");
    assert_eq!(r["greeting"], "hello from pn", "{out}");
    assert!(r["activation"].is_null(), "{out}");
    assert_eq!(
        r["files"],
        serde_json::json!(["index.js", "marker.txt", "stratus.yaml"])
    );
}

#[test]
fn a_function_that_needs_its_own_start_gets_one() {
    let server = Server::start();
    let m = manifest("own", "python3", "main.handler", "").replace(
        "GREETING: hello from own\n",
        "GREETING: hello from own\n      PYTHONPATH: /opt/nowhere\n",
    );
    deploy(
        &server,
        "own",
        &[("stratus.yaml", &m), ("main.py", SHOW), ("marker.txt", "O")],
    );
    settle();
    let out = server.invoke("own/f", "{}");
    assert_eq!(out["phases"]["prestarted"], false, "{out}");
    assert_eq!(out["result"]["env"]["PYTHONPATH"], "/opt/nowhere");
    assert_eq!(out["result"]["marker"], "O");
}

#[test]
fn prestart_zero_starts_every_instance_from_nothing() {
    let server = Server::start_with(&["--prestart", "0"]);
    let m = manifest("zero", "python3", "main.handler", "");
    deploy(
        &server,
        "zero",
        &[("stratus.yaml", &m), ("main.py", SHOW), ("marker.txt", "Z")],
    );
    settle();
    let out = server.invoke("zero/f", "{}");
    assert_eq!(out["cold"], true);
    assert_eq!(out["phases"]["prestarted"], false, "{out}");
    assert_eq!(out["result"]["marker"], "Z");
}

#[test]
fn a_provided_bootstrap_that_cannot_run_fails_clearly_from_a_prestarted_sandbox() {
    let server = Server::start();
    deploy(
        &server,
        "nob",
        &[
            (
                "stratus.yaml",
                "app: nob\nfunctions:\n  f:\n    runtime: provided\n",
            ),
            ("bootstrap", "#!/no/such/interpreter\n"),
        ],
    );
    settle();
    let out = server.invoke("nob/f", "{}");
    let error = &out["error"];
    assert_eq!(error["errorType"], "Runtime.InvalidEntrypoint", "{out}");
    let message = error["errorMessage"].as_str().unwrap();
    assert!(message.contains("execute"), "{out}");
    assert!(message.contains("No such file or directory"), "{out}");
    // The next call tries again, and fails the same way.
    let again = server.invoke("nob/f", "{}");
    assert_eq!(again["error"]["errorType"], "Runtime.InvalidEntrypoint");
}
