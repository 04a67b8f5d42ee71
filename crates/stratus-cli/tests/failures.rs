//! Timeouts, crashes, init failures, throttling and shutdown: each fails only
//! what it must, with a message that says what happened.

mod common;

use common::{Server, processes_of, write_app};

const APP: &str = r#"app: fail
functions:
  slow:
    runtime: python3
    handler: main.slow
    timeout: 1s
  crash:
    runtime: python3
    handler: main.crash
  ok:
    runtime: python3
    handler: main.ok
  noimport:
    runtime: python3
    handler: broken.handler
  nohandler:
    runtime: python3
    handler: main.missing
  jsthrow:
    runtime: nodejs
    handler: index.boom
  jssyntax:
    runtime: nodejs
    handler: bad.handler
  nobin:
    runtime: provided
    code: ./exits
"#;

const MAIN_PY: &str = r#"import os, time
def slow(event, context):
    print("sleeping", flush=True)
    time.sleep(event.get("sleep", 5))
    return context.log_stream_name
def crash(event, context):
    if event.get("crash"):
        os._exit(3)
    return context.log_stream_name
def ok(event, context):
    return "ok"
"#;

fn deploy_failing_app(server: &Server) {
    let dir = server.path("fail");
    write_app(
        &dir,
        &[
            ("stratus.yaml", APP),
            ("main.py", MAIN_PY),
            ("broken.py", "import no_such_module_anywhere\n"),
            (
                "index.js",
                "exports.boom = async () => { const e = new TypeError('bad input'); throw e; };\n",
            ),
            ("bad.js", "exports.handler = async () => { return ( };\n"),
            (
                "exits/bootstrap",
                "#!/bin/sh\necho 'bootstrap giving up' >&2\nexit 7\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
}

fn error_of(result: &serde_json::Value) -> (String, String) {
    let error = &result["error"];
    (
        error["errorType"].as_str().unwrap_or_default().to_owned(),
        error["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn timeouts_kill_the_instance_and_the_next_call_gets_a_fresh_one() {
    let server = Server::start();
    deploy_failing_app(&server);
    let warm = server.invoke("fail/slow", r#"{"sleep": 0}"#);
    let first = warm["result"].as_str().unwrap().to_owned();
    assert!(!processes_of(&first).is_empty());

    let timed_out = server.invoke("fail/slow", r#"{"sleep": 5}"#);
    assert_eq!(
        error_of(&timed_out),
        ("Sandbox.Timedout".into(), "timed out after 1.00 s".into())
    );
    assert!(
        processes_of(&first).is_empty(),
        "the timed-out instance is killed"
    );

    let next = server.invoke("fail/slow", r#"{"sleep": 0}"#);
    assert_eq!(next["cold"], true, "{next}");
    assert_ne!(next["result"], first.as_str());

    let logs = server.ok(&[
        "logs",
        "fail/slow",
        "--request-id",
        timed_out["request_id"].as_str().unwrap(),
    ]);
    assert!(logs.contains("sleeping"), "{logs}");
    assert!(logs.contains("timed out after 1.00 s"), "{logs}");

    // The CLI exits 1 with the error on stderr.
    let out = server.cli(&["invoke", "fail/slow", "--data", r#"{"sleep": 3}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out after 1.00 s"));
}

#[test]
fn a_crash_fails_only_its_own_invocation() {
    let server = Server::start();
    deploy_failing_app(&server);
    let before = server.invoke("fail/crash", "{}");
    assert!(before["error"].is_null());
    let crashed = server.invoke("fail/crash", r#"{"crash": true}"#);
    let (kind, message) = error_of(&crashed);
    assert_eq!(kind, "Runtime.ExitError");
    assert!(message.contains("exited with status 3"), "{message}");
    let after = server.invoke("fail/crash", "{}");
    assert!(after["error"].is_null(), "{after}");
    assert_eq!(after["cold"], true);
    assert_ne!(
        after["result"], before["result"],
        "a new process serves the next call"
    );
    // Other functions were never affected.
    assert_eq!(server.invoke("fail/ok", "{}")["result"], "ok");
}

#[test]
fn init_and_handler_errors_reach_the_caller() {
    let server = Server::start();
    deploy_failing_app(&server);
    let cases = [
        (
            "fail/noimport",
            "Runtime.ImportModuleError",
            "No module named 'no_such_module_anywhere'",
        ),
        ("fail/nohandler", "Runtime.HandlerNotFound", "missing"),
        ("fail/jsthrow", "TypeError", "bad input"),
        ("fail/jssyntax", "Runtime.UserCodeSyntaxError", ""),
        ("fail/nobin", "Runtime.ExitError", "during init"),
    ];
    for (target, kind, message) in cases {
        let result = server.invoke(target, "{}");
        let (got_kind, got_message) = error_of(&result);
        assert_eq!(got_kind, kind, "{target}: {result}");
        assert!(got_message.contains(message), "{target}: {got_message}");
        // And again: an init failure is reported each time, not cached as a hang.
        let again = server.invoke(target, "{}");
        assert_eq!(error_of(&again).0, kind, "{target} again: {again}");
    }
    let thrown = server.invoke("fail/jsthrow", "{}");
    assert!(!thrown["error"]["stackTrace"].as_array().unwrap().is_empty());
    let logs = server.ok(&["logs", "fail/nobin"]);
    assert!(logs.contains("bootstrap giving up"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_functions_queue_then_throttle() {
    let server = Server::start_with(&["--queue-depth", "1", "--queue-timeout", "20s"]);
    let dir = server.path("busy");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: busy\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    max_instances: 2\n",
            ),
            (
                "main.py",
                "import time\ndef handler(e, c):\n    time.sleep(1.5)\n    return c.log_stream_name\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let http = server.http();
    let url = format!("{}/v1/apps/busy/functions/f/invoke", server.admin);
    let calls = (0..4).map(|i| {
        let http = http.clone();
        let url = url.clone();
        let token = server.token.clone();
        async move {
            // Staggered so that the throttled one is the last to arrive.
            tokio::time::sleep(std::time::Duration::from_millis(150 * i)).await;
            let r = http
                .post(&url)
                .bearer_auth(token)
                .body("{}")
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), retry, r.text().await.unwrap())
        }
    });
    let results = futures_join(calls.collect()).await;
    let ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let throttled: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(ok.len(), 3, "two run at once and one waits: {results:?}");
    assert_eq!(throttled.len(), 1, "{results:?}");
    assert!(throttled[0].1.is_some(), "429 carries Retry-After");
    assert!(throttled[0].2.contains("throttled"), "{results:?}");
    let instances: std::collections::HashSet<_> = ok.iter().map(|r| r.2.clone()).collect();
    assert_eq!(
        instances.len(),
        2,
        "at most max_instances instances: {instances:?}"
    );
}

async fn futures_join<F: std::future::Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_work_and_leaves_no_processes() {
    let mut server = Server::start();
    let dir = server.path("bye");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: bye\nfunctions:\n  py:\n    runtime: python3\n    handler: main.handler\n  js:\n    runtime: nodejs\n    handler: index.handler\n",
            ),
            (
                "main.py",
                "import subprocess, time\nchildren = []\ndef handler(e, c):\n    children.append(subprocess.Popen(['sleep', '300']))\n    time.sleep(e.get('sleep', 0))\n    return c.log_stream_name\n",
            ),
            (
                "index.js",
                "exports.handler = async (e, c) => c.logStreamName;\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let py = server.invoke("bye/py", "{}");
    let js = server.invoke("bye/js", "{}");
    let instances = [
        py["result"].as_str().unwrap().to_owned(),
        js["result"].as_str().unwrap().to_owned(),
    ];
    assert!(
        processes_of(&instances[0]).len() >= 2,
        "the runtime and its child"
    );
    assert!(!processes_of(&instances[1]).is_empty());

    // An invocation in flight when SIGTERM arrives still completes.
    let http = server.http();
    let url = format!("{}/v1/apps/bye/functions/py/invoke", server.admin);
    let token = server.token.clone();
    let in_flight = tokio::spawn(async move {
        let r = http
            .post(url)
            .bearer_auth(token)
            .body(r#"{"sleep": 1.5}"#)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let status = server.stop();
    assert!(status.success(), "clean exit: {status:?}");
    let (code, body) = in_flight.await.unwrap();
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    for instance in &instances {
        let left = processes_of(instance);
        assert!(
            left.is_empty(),
            "processes of instance {instance} outlived the server: {left:?}"
        );
    }
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(processes_of(body.as_str().unwrap()).is_empty());
    assert!(!server.data_dir.join("server.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_hangs_up_does_not_leak_its_instance() {
    let server = Server::start_with(&["--queue-timeout", "5s"]);
    let dir = server.path("hangup");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: hangup\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    max_instances: 1\n",
            ),
            (
                "main.py",
                "import time\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return 'done'\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let url = format!("{}/v1/apps/hangup/functions/f/invoke", server.admin);
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    for _ in 0..3 {
        let gone = impatient
            .post(&url)
            .bearer_auth(&server.token)
            .body(r#"{"sleep": 1}"#)
            .send()
            .await;
        assert!(gone.is_err(), "the caller timed out");
    }
    // The only instance comes back to the pool once those invocations end.
    let after = server.invoke("hangup/f", "{}");
    assert_eq!(after["result"], "done", "{after}");
}

/// An event nested deeper than a runtime's parser can go is that event's
/// unmarshal error (Python's recursion limit); either way the instance
/// lives on and serves the next one.
#[test]
fn an_event_nested_too_deep_fails_alone() {
    let server = Server::start();
    let dir = server.path("deep");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: deep\nfunctions:\n  py:\n    runtime: python3\n    handler: main.handler\n  js:\n    runtime: nodejs\n    handler: index.handler\n",
            ),
            (
                "main.py",
                "def handler(event, context):\n    return 'fine'\n",
            ),
            ("index.js", "exports.handler = async () => 'fine';\n"),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let http = common::client();
    let invoke = |function: &str, body: String| {
        let response = http
            .post(format!(
                "{}/v1/apps/deep/functions/{function}/invoke",
                server.admin
            ))
            .bearer_auth(&server.token)
            .body(body)
            .send()
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (error, instance) = (
            header("x-stratus-function-error"),
            header("x-stratus-instance"),
        );
        let body: serde_json::Value = response.json().unwrap();
        (error, instance, body)
    };
    for function in ["py", "js"] {
        let (error, first, body) = invoke(function, deep.clone());
        // Python's parser recurses and gives up; V8's does not.
        if function == "py" {
            assert_eq!(error.as_deref(), Some("Unhandled"), "{function}: {body}");
            assert_eq!(
                body["errorType"], "Runtime.UnmarshalError",
                "{function}: {body}"
            );
        }
        let (error, next, body) = invoke(function, "{}".to_owned());
        assert_eq!(error, None, "{function}: {body}");
        assert_eq!(body, "fine");
        assert_eq!(first, next, "{function}: the instance died");
    }
}
