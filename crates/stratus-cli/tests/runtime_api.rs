//! The Lambda Runtime API contract as a runtime sees it: status codes,
//! headers and error shapes, checked from inside a `provided` function.

mod common;

use common::{Server, python, write_app};

/// A custom runtime that probes the API and reports what it saw.
const PROBE: &str = r#"
import http.client, json, os, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
conn = http.client.HTTPConnection(host, int(port))

def call(method, path, body=None, headers=None):
    global conn
    for attempt in (0, 1):
        try:
            conn.request(method, "/2018-06-01/runtime" + path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # A server may close a keep-alive connection after an error
            # answer; a client opens another, as runtime clients do.
            if attempt:
                raise
            conn.close()
            conn = http.client.HTTPConnection(host, int(port))

seen = {"env": {k: os.environ.get(k) for k in [
    "_HANDLER", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_REGION", "LAMBDA_TASK_ROOT", "GREETING"]}}

status, headers, body = call("GET", "/invocation/next")
rid = headers["lambda-runtime-aws-request-id"]
seen["next"] = {"status": status, "event": json.loads(body),
    "deadline_in_ms": int(headers["lambda-runtime-deadline-ms"]) - int(time.time() * 1000),
    "arn": headers.get("lambda-runtime-invoked-function-arn"),
    "trace": headers.get("lambda-runtime-trace-id"),
    "content_type": headers.get("content-type"), "request_id": rid}
s, _, b = call("POST", "/invocation/not-a-request/response", b"{}")
seen["unknown_id"] = [s, json.loads(b)["errorType"]]
s, _, b = call("POST", "/nowhere", b"{}")
seen["unknown_path"] = s
s, _, b = call("POST", "/invocation/%s/response" % rid, json.dumps({"first": True}))
seen["response"] = [s, json.loads(b)]
s, _, b = call("POST", "/invocation/%s/response" % rid, b"{}")
seen["again"] = [s, json.loads(b)["errorType"]]

status, headers, body = call("GET", "/invocation/next")
rid = headers["lambda-runtime-aws-request-id"]
s, _, b = call("POST", "/invocation/%s/error" % rid,
    json.dumps({"errorType": "Custom.Failure", "errorMessage": "it broke", "stackTrace": ["frame 1", "frame 2"]}),
    {"Lambda-Runtime-Function-Error-Type": "Custom.Failure"})
seen["error"] = [s, json.loads(b)]

status, headers, body = call("GET", "/invocation/next")
rid = headers["lambda-runtime-aws-request-id"]
call("POST", "/invocation/%s/response" % rid, json.dumps(seen))

status, headers, body = call("GET", "/invocation/next")
rid = headers["lambda-runtime-aws-request-id"]
call("POST", "/invocation/%s/response" % rid, b"x" * (1024 * 1024 + 1))
"#;

#[test]
fn the_runtime_api_speaks_lambdas_contract() {
    // A result limit below the default, which the last answer passes.
    let server = Server::start_with(&["--max-response", "1048576"]);
    let dir = server.path("probe");
    let bootstrap = format!("#!{}\n{PROBE}", python());
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: probe\nfunctions:\n  f:\n    runtime: provided\n    handler: probe.anything\n    memory: 192\n    timeout: 9s\n    env: { GREETING: hi }\n",
            ),
            ("bootstrap", &bootstrap),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);

    let first = server.invoke("probe/f", r#"{"n": 1}"#);
    assert_eq!(
        first["result"],
        serde_json::json!({ "first": true }),
        "{first}\nlogs:\n{}",
        server.cli(&["logs", "probe/f"]).stdout.escape_ascii()
    );
    let failed = server.invoke("probe/f", "{}");
    assert_eq!(failed["error"]["errorType"], "Custom.Failure");
    assert_eq!(failed["error"]["errorMessage"], "it broke");
    assert_eq!(
        failed["error"]["stackTrace"],
        serde_json::json!(["frame 1", "frame 2"])
    );

    let seen = &server.invoke("probe/f", "{}")["result"];
    assert_eq!(seen["next"]["status"], 200);
    assert_eq!(seen["next"]["event"], serde_json::json!({ "n": 1 }));
    assert_eq!(seen["next"]["request_id"], first["request_id"]);
    assert_eq!(seen["next"]["content_type"], "application/json");
    let deadline = seen["next"]["deadline_in_ms"].as_i64().unwrap();
    assert!(
        (8000..=9000).contains(&deadline),
        "deadline follows the 9s timeout: {deadline}"
    );
    assert!(
        seen["next"]["arn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:lambda:us-east-1:")
    );
    assert!(
        seen["next"]["trace"]
            .as_str()
            .unwrap()
            .starts_with("Root=1-")
    );
    assert_eq!(
        seen["unknown_id"],
        serde_json::json!([400, "InvalidRequestID"])
    );
    assert_eq!(seen["unknown_path"], 404);
    assert_eq!(
        seen["response"],
        serde_json::json!([202, { "status": "OK" }])
    );
    assert_eq!(
        seen["again"],
        serde_json::json!([403, "InvalidStateTransition"])
    );
    assert_eq!(seen["error"], serde_json::json!([202, { "status": "OK" }]));
    let env = &seen["env"];
    assert_eq!(env["_HANDLER"], "probe.anything");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "probe.f");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "1");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "192");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/stratus/probe/f");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert_eq!(env["GREETING"], "hi");
    assert!(
        !env["AWS_LAMBDA_LOG_STREAM_NAME"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    let too_large = server.invoke("probe/f", "{}");
    assert_eq!(
        too_large["error"]["errorType"], "Function.ResponseSizeTooLarge",
        "{too_large}"
    );
    assert!(
        too_large["error"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("limit of 1048576 bytes")),
        "{too_large}"
    );
}
