//! init → deploy → invoke → logs through the real binary, for every runtime,
//! and the ways deploys and invocations refuse bad input.
//!
//! Runs in both isolation modes: each runtime starts in a sandbox or as a plain process.

mod common;

use common::{Server, write_app};

#[test]
fn init_deploy_invoke_logs_for_each_runtime() {
    let server = Server::start();
    for (template, app, log_line) in [
        ("python", "hello-py", "greeting Ada"),
        ("nodejs", "hello-node", "greeting Ada"),
        ("provided", "hello-sh", "received {\"name\":\"Ada\"}"),
    ] {
        let dir = server.path(app);
        let dir = dir.to_str().unwrap();
        server.ok(&["init", dir, "--template", template]);
        let out = server.ok(&["deploy", dir]);
        assert!(out.contains(&format!("deployed {app} version 1")), "{out}");

        let target = format!("{app}/greet");
        let first = server.invoke(&target, r#"{"name":"Ada"}"#);
        assert_eq!(first["cold"], true, "{first}");
        assert!(first["error"].is_null(), "{first}");
        let message = first["result"]["message"].as_str().unwrap();
        assert!(message.starts_with("Hello"), "{first}");
        assert!(first["init_ms"].as_f64().unwrap() > 0.0);
        let phases = &first["phases"];
        assert!(phases["sandbox_ms"].as_f64().unwrap() > 0.0, "{first}");
        assert!(
            phases["runtime_start_ms"].as_f64().unwrap() > 0.0,
            "{first}"
        );
        // The built-in runtimes report the handler's own init; a shell
        // custom runtime cannot.
        assert_eq!(
            phases["handler_init_ms"].is_null(),
            template == "provided",
            "{first}"
        );

        let second = server.invoke(&target, r#"{"name":"Ada"}"#);
        assert_eq!(
            second["cold"], false,
            "a second call reuses the warm instance: {second}"
        );

        // The invocation's own log lines come back with --log.
        let out = server.cli(&["invoke", &target, "--data", r#"{"name":"Ada"}"#, "--log"]);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(log_line),
            "{out:?}"
        );

        let request_id = first["request_id"].as_str().unwrap();
        let logs = server.ok(&["logs", &target, "--request-id", request_id]);
        assert!(logs.contains(log_line), "{template}: {logs}");
        assert!(
            logs.contains(&format!("REPORT RequestId: {request_id}")),
            "{logs}"
        );
        assert!(
            logs.contains("Init Duration"),
            "the cold call's report has its init: {logs}"
        );

        let json = server.ok(&["logs", app, "--output", "json"]);
        let report = json
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["stream"] == "report")
            .expect("a report record");
        assert_eq!(report["fields"]["memory_size_mb"], 128);
        assert!(report["fields"]["billed_duration_ms"].as_u64().unwrap() >= 1);
    }
    let ls = server.ok(&["ls"]);
    for app in ["hello-py/greet", "hello-node/greet", "hello-sh/greet"] {
        assert!(ls.contains(app), "{ls}");
    }
}

#[test]
fn the_handlers_own_init_is_reported_apart() {
    let server = Server::start();
    let app = server.path("slowinit");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: slowinit\nfunctions:\n  py:\n    runtime: python3\n    handler: main.handler\n  js:\n    runtime: nodejs\n    handler: index.handler\n",
            ),
            (
                "main.py",
                "import time\ntime.sleep(0.4)\ndef handler(e, c):\n    return 1\n",
            ),
            (
                "index.js",
                "const start = Date.now(); while (Date.now() - start < 400) {}\nexports.handler = async () => 1;\n",
            ),
        ],
    );
    server.ok(&["deploy", app.to_str().unwrap()]);
    for target in ["slowinit/py", "slowinit/js"] {
        let cold = server.invoke(target, "{}");
        let phases = &cold["phases"];
        let handler_init = phases["handler_init_ms"].as_f64().unwrap();
        let runtime_start = phases["runtime_start_ms"].as_f64().unwrap();
        assert!(handler_init >= 400.0, "{target}: {cold}");
        assert!(
            runtime_start < handler_init,
            "{target}: the runtime's own start is apart: {cold}"
        );
        let total = cold["init_ms"].as_f64().unwrap();
        assert!(
            (total - handler_init - runtime_start).abs() < 0.01,
            "{cold}"
        );
        let logs = server.ok(&["logs", target, "--output", "json"]);
        assert!(logs.contains("\"handler_init_ms\""), "{logs}");
    }
}

#[test]
fn payload_and_context_reach_the_handler() {
    let server = Server::start();
    let app = server.path("ctx");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: ctx\nfunctions:\n  py:\n    runtime: python3\n    handler: main.handler\n    memory: 256\n    timeout: 7s\n    env: { COLOUR: blue, N: 3 }\n  js:\n    runtime: nodejs\n    handler: index.handler\n",
            ),
            (
                "main.py",
                "import os, importlib.util\ndef handler(event, context):\n    return {'host_pip': importlib.util.find_spec('pip') is not None, 'event': event, 'fn': context.function_name, 'mem': context.memory_limit_in_mb,\n            'left': context.get_remaining_time_in_millis(), 'colour': os.environ['COLOUR'], 'n': os.environ['N'],\n            'arn': context.invoked_function_arn, 'root': os.environ['LAMBDA_TASK_ROOT']}\n",
            ),
            (
                "index.js",
                "exports.handler = async (event, context) => ({ event, id: context.awsRequestId, mem: context.memoryLimitInMB, left: context.getRemainingTimeInMillis() });\n",
            ),
        ],
    );
    server.ok(&["deploy", app.to_str().unwrap()]);
    let event = r#"{"unicode":"héllo wörld ✓","list":[1,2.5,null,true],"nested":{"a":{"b":"c"}}}"#;
    let py = server.invoke("ctx/py", event);
    let expected: serde_json::Value = serde_json::from_str(event).unwrap();
    assert_eq!(py["result"]["event"], expected);
    assert_eq!(
        py["result"]["host_pip"], false,
        "the host interpreter's site-packages are not the function's: {py}"
    );
    assert_eq!(py["result"]["fn"], "ctx.py");
    assert_eq!(
        py["result"]["mem"], "256",
        "a string, as awslambdaric gives it"
    );
    assert_eq!(py["result"]["colour"], "blue");
    assert_eq!(py["result"]["n"], "3");
    let left = py["result"]["left"].as_i64().unwrap();
    assert!(
        left > 5000 && left <= 7000,
        "remaining time follows the 7s timeout: {left}"
    );
    assert!(
        py["result"]["arn"]
            .as_str()
            .unwrap()
            .ends_with(":function:ctx.py")
    );
    assert!(!py["result"]["root"].as_str().unwrap().is_empty());

    let js = server.invoke("ctx/js", event);
    assert_eq!(js["result"]["event"], expected);
    assert_eq!(js["result"]["id"], js["request_id"]);
    assert_eq!(js["result"]["mem"], "128");

    // An event from stdin and from a file.
    let out = server.cli_stdin(&["invoke", "ctx/js"], r#"{"from":"stdin"}"#);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("stdin"),
        "{out:?}"
    );
    std::fs::write(server.path("event.json"), r#"{"from":"file"}"#).unwrap();
    let file_arg = format!("@{}", server.path("event.json").display());
    let out = server.ok(&["invoke", "ctx/js", "--data", &file_arg]);
    assert!(out.contains("file"), "{out}");
}

#[test]
fn redeploy_is_atomic_and_unchanged_code_is_a_no_op() {
    let server = Server::start();
    let app = server.path("ver");
    let manifest = "app: ver\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n";
    write_app(
        &app,
        &[
            ("stratus.yaml", manifest),
            ("main.py", "def handler(e, c):\n    return 'one'\n"),
        ],
    );
    let dir = app.to_str().unwrap();
    assert!(server.ok(&["deploy", dir]).contains("version 1"));
    assert_eq!(server.invoke("ver/f", "{}")["result"], "one");
    assert!(
        server
            .ok(&["deploy", dir])
            .contains("unchanged at version 1")
    );

    // Ignored files do not change the package.
    write_app(
        &app,
        &[(".stratusignore", "*.log\n"), ("debug.log", "noise")],
    );
    let out = server.ok(&["deploy", dir]);
    assert!(
        out.contains("version 2"),
        "adding .stratusignore is a change: {out}"
    );
    write_app(&app, &[("debug.log", "more noise")]);
    assert!(
        server
            .ok(&["deploy", dir])
            .contains("unchanged at version 2")
    );

    write_app(
        &app,
        &[("main.py", "def handler(e, c):\n    return 'two'\n")],
    );
    assert!(server.ok(&["deploy", dir]).contains("version 3"));
    let after = server.invoke("ver/f", "{}");
    assert_eq!(after["result"], "two");
    assert_eq!(after["version"], "3");

    // A broken manifest changes nothing: version 3 keeps serving.
    write_app(
        &app,
        &[(
            "stratus.yaml",
            "app: ver\nfunctions:\n  f:\n    runtime: python4\n    handler: main.handler\n",
        )],
    );
    let err = server.fails(&["deploy", dir]);
    assert!(
        err.contains("stratus.yaml:4: functions.f.runtime: unknown runtime \"python4\""),
        "{err}"
    );
    assert!(err.contains("nothing was deployed"), "{err}");
    assert_eq!(server.invoke("ver/f", "{}")["version"], "3");

    server.ok(&["rm", "ver"]);
    assert!(
        server
            .fails(&["invoke", "ver/f"])
            .contains("does not exist")
    );
    assert!(server.fails(&["rm", "ver"]).contains("does not exist"));
}

#[test]
fn malformed_manifests_are_refused_with_their_location() {
    let server = Server::start();
    let cases = [
        (
            "app: Bad_Name\nfunctions:\n  f:\n    runtime: python3\n    handler: m.h\n",
            "stratus.yaml:1: app: invalid application name",
        ),
        (
            "app: a\nfunctions:\n  f:\n    runtim: python3\n    handler: m.h\n",
            "unknown key `runtim`",
        ),
        (
            "app: a\nfunctions:\n  f:\n    runtime: python3\n    handler: m.h\n    memory: lots\n",
            "functions.f.memory",
        ),
        (
            "app: a\nfunctions:\n  f:\n    runtime: python3\n    handler: m.h\n    memory: 32\n",
            "stratus.yaml:6: functions.f.memory: memory 32 MiB is out of range",
        ),
        (
            "app: a\nfunctions:\n  f:\n    runtime: python3\n    handler: m.h\n    timeout: 20m\n",
            "stratus.yaml:6: functions.f.timeout",
        ),
        (
            "app: a\nfunctions:\n  f:\n    runtime: python3\n",
            "a python3 function needs a handler",
        ),
        (
            "app: a\nfunctions:\n  f:\n    runtime: nodejs\n    handler: index.handler\n    code: ../elsewhere\n",
            "leaves the application directory",
        ),
        (
            "app: a\nfunctions:\n  f:\n    runtime: nodejs\n    handler: index.handler\n    code: ./missing\n",
            "does not exist",
        ),
        ("app: a\nfunctions: [1, 2\n", "stratus.yaml"),
    ];
    for (i, (manifest, expected)) in cases.iter().enumerate() {
        let dir = server.path(&format!("bad{i}"));
        write_app(&dir, &[("stratus.yaml", manifest)]);
        let err = server.fails(&["deploy", dir.to_str().unwrap()]);
        assert!(
            err.contains(expected),
            "case {i}: expected {expected:?} in:\n{err}"
        );
    }
    assert!(
        server.ok(&["ls"]).contains("no applications"),
        "nothing was deployed"
    );

    // A provided function without an executable bootstrap is refused by the server.
    let dir = server.path("nobootstrap");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: nb\nfunctions:\n  f:\n    runtime: provided\n",
            ),
            ("main.sh", ""),
        ],
    );
    let err = server.fails(&["deploy", dir.to_str().unwrap()]);
    assert!(err.contains("executable file named `bootstrap`"), "{err}");
    assert!(server.ok(&["ls"]).contains("no applications"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_refuses_bad_requests() {
    let server = Server::start();
    let app = server.path("api");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: api\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", "def handler(e, c):\n    return len(str(e))\n"),
        ],
    );
    server.ok(&["deploy", app.to_str().unwrap()]);
    let http = server.http();
    let url = format!("{}/v1/apps/api/functions/f/invoke", server.admin);

    let no_token = http.post(&url).body("{}").send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong = http
        .post(&url)
        .bearer_auth("nope")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let not_json = http
        .post(&url)
        .bearer_auth(&server.token)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    let body: serde_json::Value = not_json.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_payload");

    let big = format!("\"{}\"", "x".repeat(6 * 1024 * 1024 + 1));
    let too_big = http
        .post(&url)
        .bearer_auth(&server.token)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);

    let fits = format!("\"{}\"", "x".repeat(5 * 1024 * 1024));
    let ok = http
        .post(&url)
        .bearer_auth(&server.token)
        .body(fits)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("x-stratus-request-id"));
    assert_eq!(ok.text().await.unwrap(), (5 * 1024 * 1024).to_string());

    let cli_err = server.fails(&["invoke", "api/f", "--data", "not json"]);
    assert!(cli_err.contains("--data is not valid JSON"), "{cli_err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_archives_are_refused_and_the_server_keeps_serving() {
    use std::io::Write;
    let server = Server::start();
    let http = server.http();
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("parent", raw_tar("../escape.txt", b'0', b"evil", "")),
        (
            "absolute",
            raw_tar("/tmp/stratus-absolute.txt", b'0', b"evil", ""),
        ),
        ("symlink", raw_tar("link", b'2', b"", "/etc")),
        ("hardlink", raw_tar("hard", b'1', b"", "/etc/passwd")),
        ("garbage", b"this is not a gzip archive".to_vec()),
    ];
    for (name, archive) in hostile {
        let sha = stratus_archive::sha256_hex(&archive);
        let response = http
            .put(format!("{}/v1/packages/{sha}", server.admin))
            .bearer_auth(&server.token)
            .body(archive)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{name}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_package", "{name}: {body}");
        assert!(!server.data_dir.join("code").join(&sha).exists(), "{name}");
    }
    assert!(!server.data_dir.join("escape.txt").exists());
    assert!(!std::path::Path::new("/tmp/stratus-absolute.txt").exists());

    // A mismatched checksum is refused before anything is unpacked.
    let good_dir = server.path("good");
    std::fs::create_dir_all(&good_dir).unwrap();
    std::fs::write(good_dir.join("main.py"), "x = 1\n").unwrap();
    let good = stratus_archive::pack(&good_dir).unwrap();
    let response = http
        .put(format!("{}/v1/packages/{}", server.admin, "0".repeat(64)))
        .bearer_auth(&server.token)
        .body(good.bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let mut f = std::fs::File::create(server.path("note.txt")).unwrap();
    writeln!(f, "still alive").unwrap();
    let health = http
        .get(format!("{}/v1/health", server.admin))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// A one-entry gzip tar with a raw, unchecked path.
fn raw_tar(path: &str, kind: u8, data: &[u8], link: &str) -> Vec<u8> {
    use std::io::Write;
    let mut header = [0u8; 512];
    header[..path.len()].copy_from_slice(path.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = kind;
    header[157..157 + link.len()].copy_from_slice(link.as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| *b as u32).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(data);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let server = Server::start();
    let out = std::process::Command::new(common::BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another stratus server is already using"),
        "{stderr}"
    );
    // The first one is unharmed.
    assert!(server.ok(&["ls"]).contains("no applications"));
}

#[test]
fn what_an_upload_cut_short_by_a_crash_left_is_removed_at_start() {
    let mut server = Server::start();
    let app = server.path("crashy");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: crashy\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", "def handler(e, c):\n    return 'still here'\n"),
        ],
    );
    server.ok(&["deploy", app.to_str().unwrap()]);
    server.kill();
    // As a crash in the middle of two uploads leaves them.
    let partial_code = server.data_dir.join("code/.tmp-0123456789abcdef");
    std::fs::create_dir_all(partial_code.join("lib")).unwrap();
    std::fs::write(partial_code.join("lib/half.py"), "x = 1").unwrap();
    let partial_archive = server.data_dir.join("packages/.tmp-fedcba9876543210");
    std::fs::write(&partial_archive, b"\x1f\x8b truncated").unwrap();

    server.restart();
    assert!(!partial_code.exists(), "the partial unpack is still there");
    assert!(
        !partial_archive.exists(),
        "the partial archive is still there"
    );
    assert_eq!(server.invoke("crashy/f", "{}")["result"], "still here");
    let code: Vec<_> = std::fs::read_dir(server.data_dir.join("code"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(code.len(), 1, "{code:?}");
}

/// Unmounts a file system the test mounted, however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_during_an_upload_is_said_as_such() {
    let mut server = Server::start();
    server.stop();
    // Where packages are unpacked: a 1 MiB file system of its own.
    let code = server.data_dir.join("code");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&code)
        .output()
        .expect("run mount");
    if !mounted.status.success() {
        eprintln!(
            "cannot mount a small file system here ({}); the full-disk case is not checked",
            String::from_utf8_lossy(&mounted.stderr).trim()
        );
        return;
    }
    let _unmount = Mounted(code.clone());
    server.restart();
    let app = server.path("big");
    // 3 MB of digits that do not compress to nothing.
    let digits: String = (0..400_000u64)
        .map(|i| format!("{:07}", i.wrapping_mul(2_654_435_761) % 10_000_000))
        .collect();
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: big\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", "def handler(e, c):\n    return 1\n"),
            ("data.txt", &digits),
        ],
    );
    let out = server.fails(&["deploy", app.to_str().unwrap()]);
    assert!(out.contains("the server's disk is full"), "{out}");
    assert!(!out.contains("corrupt"), "{out}");
    // Nothing half-unpacked stays behind.
    let left: Vec<_> = std::fs::read_dir(&code)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// An app may declare at most `--app-max-functions` functions and
/// services, and the app listing comes in pages that `stratus ls` follows.
#[test]
fn functions_per_app_are_capped_and_listings_come_in_pages() {
    let server = Server::start_with(&["--app-max-functions", "3"]);
    let functions = |n: usize| -> String {
        (0..n)
            .map(|i| format!("  f{i}:\n    runtime: python3\n    handler: main.handler\n"))
            .collect()
    };
    let big = server.path("big");
    write_app(
        &big,
        &[
            (
                "stratus.yaml",
                &format!("app: big\nfunctions:\n{}", functions(4)),
            ),
            ("main.py", "def handler(e, c):\n    return 1\n"),
        ],
    );
    let refused = server.fails(&["deploy", big.to_str().unwrap()]);
    assert!(
        refused.contains("declares 4 functions and services, more than the 3")
            && refused.contains("--app-max-functions"),
        "{refused}"
    );
    for app in ["a1", "a2", "a3"] {
        let dir = server.path(app);
        write_app(
            &dir,
            &[
                (
                    "stratus.yaml",
                    &format!("app: {app}\nfunctions:\n{}", functions(3)),
                ),
                ("main.py", "def handler(e, c):\n    return 1\n"),
            ],
        );
        server.ok(&["deploy", dir.to_str().unwrap()]);
    }
    let http = common::client();
    let page = |query: &str| -> serde_json::Value {
        http.get(format!("{}/v1/apps?{query}", server.admin))
            .bearer_auth(&server.token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = page("limit=2");
    assert_eq!(names(&first), ["a1", "a2"], "{first}");
    assert_eq!(first["next"], "a2");
    let second = page("limit=2&after=a2");
    assert_eq!(names(&second), ["a3"], "{second}");
    assert!(second["next"].is_null(), "{second}");
    let bad = page("limit=0");
    assert_eq!(bad["error"]["code"], "invalid_limit", "{bad}");
    let listed: serde_json::Value =
        serde_json::from_str(&server.ok(&["ls", "--output", "json"])).unwrap();
    assert_eq!(names(&listed), ["a1", "a2", "a3"]);
}

/// An idle function instance is frozen until its next event, as Lambda
/// does: a background thread its handler started makes no progress
/// between invocations.
#[test]
fn an_idle_instance_s_background_work_waits_for_its_next_event() {
    let server = Server::start();
    let dir = server.path("daemon");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: daemon\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "main.py",
                "import threading, time\ncount = 0\nstarted = False\n\ndef tick():\n    global count\n    while True:\n        count += 1\n        time.sleep(0.01)\n\ndef handler(event, context):\n    global started\n    if not started:\n        started = True\n        threading.Thread(target=tick, daemon=True).start()\n    return count\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let first = server.invoke("daemon/f", "{}")["result"].as_u64().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let second = server.invoke("daemon/f", "{}");
    assert_eq!(second["cold"], false, "{second}");
    let ticks = second["result"].as_u64().unwrap() - first;
    // Unfrozen, it would have ticked about 150 times.
    assert!(ticks < 40, "the idle instance kept running: {ticks} ticks");
}
