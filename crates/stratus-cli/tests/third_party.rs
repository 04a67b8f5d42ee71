//! Unmodified runtime clients written by others, as `provided` functions:
//! `awslambdaric` from PyPI and a Rust binary built with `lambda_runtime`.
//!
//! Runs in both isolation modes: the runtimes see a sandbox's filesystem or the host's.

mod common;

use std::path::PathBuf;

use common::{Server, copy_dir, example, pip_install, python, write_app};

/// `awslambdaric`, installed once from PyPI into `target/test-deps`.
fn awslambdaric() -> PathBuf {
    pip_install("awslambdaric", &["awslambdaric"])
}

#[test]
fn awslambdaric_runs_as_a_provided_function() {
    let server = Server::start();
    let dir = server.path("ric");
    let bootstrap = format!(
        "#!/bin/sh\nexport PYTHONPATH=\"$LAMBDA_TASK_ROOT/vendor:$LAMBDA_TASK_ROOT\"\nexec {} -m awslambdaric main.handler\n",
        python()
    );
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: ric\nfunctions:\n  f:\n    runtime: provided\n    handler: main.handler\n",
            ),
            ("bootstrap", &bootstrap),
            (
                "main.py",
                "def handler(event, context):\n    if event.get('fail'):\n        raise ValueError('no thanks')\n    print('ric says hi')\n    return {'got': event, 'id': context.aws_request_id, 'mem': context.memory_limit_in_mb}\n",
            ),
        ],
    );
    copy_dir(&awslambdaric(), &dir.join("vendor"));
    server.ok(&["deploy", dir.to_str().unwrap()]);

    let ok = server.invoke("ric/f", r#"{"x": [1, "two"]}"#);
    assert!(ok["error"].is_null(), "{ok}");
    assert_eq!(ok["result"]["got"]["x"][1], "two");
    assert_eq!(ok["result"]["id"], ok["request_id"]);
    assert_eq!(ok["result"]["mem"], "128");
    let warm = server.invoke("ric/f", "{}");
    assert_eq!(warm["cold"], false);

    let failed = server.invoke("ric/f", r#"{"fail": true}"#);
    assert_eq!(failed["error"]["errorType"], "ValueError", "{failed}");
    assert_eq!(failed["error"]["errorMessage"], "no thanks");
    let after = server.invoke("ric/f", "{}");
    assert!(
        after["error"].is_null(),
        "the runtime carries on after an error: {after}"
    );

    let logs = server.ok(&[
        "logs",
        "ric/f",
        "--request-id",
        ok["request_id"].as_str().unwrap(),
    ]);
    assert!(logs.contains("ric says hi"), "{logs}");
}

#[test]
fn a_lambda_runtime_rust_binary_runs_as_a_provided_function() {
    let server = Server::start();
    let dir = server.path("rust");
    write_app(
        &dir,
        &[(
            "stratus.yaml",
            "app: rust\nfunctions:\n  f:\n    runtime: provided\n    memory: 512\n",
        )],
    );
    std::fs::copy(example("lambda_fixture"), dir.join("bootstrap")).unwrap();
    server.ok(&["deploy", dir.to_str().unwrap()]);

    let ok = server.invoke("rust/f", r#"{"op": "ok", "n": 42}"#);
    assert!(ok["error"].is_null(), "{ok}");
    assert_eq!(ok["result"]["echo"]["n"], 42);
    assert_eq!(ok["result"]["request_id"], ok["request_id"]);
    assert_eq!(ok["result"]["function"], "rust.f");
    assert_eq!(ok["result"]["memory"], 512);
    assert!(ok["result"]["deadline"].as_u64().unwrap() > 0);

    let handled = server.invoke("rust/f", r#"{"op": "err"}"#);
    assert_eq!(
        handled["error"]["errorMessage"], "the handler refused the event",
        "{handled}"
    );

    let panicked = server.invoke("rust/f", r#"{"op": "panic"}"#);
    assert!(!panicked["error"].is_null(), "{panicked}");
    assert!(
        panicked["error"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("the handler panicked"),
        "{panicked}"
    );

    let after = server.invoke("rust/f", r#"{"op": "ok"}"#);
    assert!(after["error"].is_null(), "{after}");
}
