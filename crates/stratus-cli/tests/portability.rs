//! Handlers written for other platforms run unchanged: Python `logging` and
//! Node.js `console` levels as AWS's runtimes write them, with Lambda's
//! advanced logging controls (`log_format`, `log_level`,
//! `AWS_LAMBDA_LOG_LEVEL`).

mod common;

use common::{Server, log_records, write_app};
use serde_json::Value;

const PY: &str = r#"import logging

def text(event, context):
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    logger.info("info from logging")
    logger.debug("debug that is not shown")
    logging.getLogger("app.db").warning("warning from a child logger")
    return "ok"

def json_format(event, context):
    logger = logging.getLogger("app")
    logger.info("info below the level")
    logger.warning("warning as json")
    try:
        1 / 0
    except ZeroDivisionError:
        logger.exception("it failed")
    print("plain print")
    return "ok"
"#;

const NODE: &str = r#"exports.json = async () => {
  console.debug('debug below the level');
  console.info('info as json', { n: 1 });
  console.error('error as json');
  return 'ok';
};
exports.levels = async () => {
  console.log('log below the level');
  console.warn('warn below the level');
  console.error('error kept');
  return 'ok';
};
"#;

const APP: &str = r#"app: portable
functions:
  py-text:
    runtime: python3
    handler: main.text
  py-json:
    runtime: python3
    handler: main.json_format
    log_format: json
    log_level: warn
  node-json:
    runtime: nodejs
    handler: index.json
    log_format: json
  node-levels:
    runtime: nodejs
    handler: index.levels
    env: { AWS_LAMBDA_LOG_LEVEL: ERROR }
"#;

/// The messages of `function`'s records of invocation `request_id`.
fn messages(server: &Server, function: &str, request_id: &str) -> Vec<String> {
    log_records(
        server,
        &format!("portable/{function}"),
        &["--request-id", request_id],
    )
    .iter()
    .filter(|r| r["stream"] == "stdout" || r["stream"] == "stderr")
    .filter_map(|r| r["message"].as_str().map(str::to_owned))
    .collect()
}

fn call(server: &Server, function: &str) -> String {
    let out = server.invoke(&format!("portable/{function}"), "{}");
    assert_eq!(out["result"], "ok", "{out}");
    out["request_id"].as_str().unwrap().to_owned()
}

#[test]
fn logging_and_console_levels_and_formats_are_as_lambdas() {
    let server = Server::start();
    let dir = server.path("portable");
    write_app(
        &dir,
        &[("stratus.yaml", APP), ("main.py", PY), ("index.js", NODE)],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);

    // Python, text: a root handler writes records at the root's level, with
    // the level, the time and the request id.
    let id = call(&server, "py-text");
    let lines = messages(&server, "py-text", &id);
    let info = lines
        .iter()
        .find(|l| l.ends_with("info from logging"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let fields: Vec<&str> = info.split('\t').collect();
    assert_eq!(fields[0], "[INFO]", "{info}");
    assert!(fields[1].ends_with('Z'), "{info}");
    assert_eq!(fields[2], id, "{info}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[WARNING]") && l.ends_with("warning from a child logger")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("not shown")), "{lines:?}");

    // Python, JSON at WARN: one object per record, below the level nothing.
    let id = call(&server, "py-json");
    let lines = messages(&server, "py-json", &id);
    let records: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !lines.iter().any(|l| l.contains("below the level")),
        "{lines:?}"
    );
    let warning = records
        .iter()
        .find(|r| r["message"] == "warning as json")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(warning["level"], "WARNING");
    assert_eq!(warning["requestId"], id.as_str());
    assert_eq!(warning["logger"], "app");
    let failed = records
        .iter()
        .find(|r| r["message"] == "it failed")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(failed["errorType"], "ZeroDivisionError");
    assert!(lines.iter().any(|l| l == "plain print"), "{lines:?}");

    // Node.js, JSON at the default INFO.
    let id = call(&server, "node-json");
    let lines = messages(&server, "node-json", &id);
    assert!(
        !lines.iter().any(|l| l.contains("below the level")),
        "{lines:?}"
    );
    let records: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let info = records
        .iter()
        .find(|r| r["level"] == "INFO")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(info["message"], "info as json { n: 1 }");
    assert_eq!(info["requestId"], id.as_str());
    assert!(
        records
            .iter()
            .any(|r| r["level"] == "ERROR" && r["message"] == "error as json"),
        "{lines:?}"
    );

    // Node.js, text, with the level from the function's own environment.
    let id = call(&server, "node-levels");
    let lines = messages(&server, "node-levels", &id);
    assert_eq!(lines, ["error kept"], "{lines:?}");

    // A level or format the platform does not know is refused at deploy.
    let bad = server.path("bad");
    write_app(
        &bad,
        &[(
            "stratus.yaml",
            "app: bad\nfunctions:\n  f:\n    runtime: python3\n    handler: main.text\n    log_level: loud\n",
        )],
    );
    let out = server.fails(&["deploy", bad.to_str().unwrap()]);
    assert!(out.contains("log_level"), "{out}");
}

const SHAPES_APP: &str = r#"app: shapes
functions:
  scf:
    runtime: python3
    handler: main.record
    events:
      - schedule: "* * * * * * *"
        format: scf
  eventbridge:
    runtime: python3
    handler: main.record
    events:
      - schedule: "*/2 * * * * * *"
        format: eventbridge
  noon:
    runtime: python3
    handler: main.record
    events:
      - schedule: "cron(0 12 ? * MON-FRI *)"
      - schedule: "cron(15 10 L * ? *)"
  sqs:
    runtime: python3
    handler: main.sqs
    events:
      - queue: jobs
        format: sqs
queues:
  jobs:
"#;

const SHAPES: &str = r#"import json

def record(event, context):
    print("EVENT " + json.dumps(event))

def sqs(event, context):
    print("EVENT " + json.dumps(event))
    return {"batchItemFailures": []}
"#;

/// The first event `function` of app `shapes` logged.
fn first_event(server: &Server, function: &str) -> Value {
    common::eventually(std::time::Duration::from_secs(20), || {
        log_records(server, &format!("shapes/{function}"), &[])
            .iter()
            .filter_map(|r| r["message"].as_str())
            .find_map(|m| m.strip_prefix("EVENT "))
            .map(|e| serde_json::from_str::<Value>(e).unwrap())
            .ok_or_else(|| format!("no event of {function} yet"))
    })
}

/// Schedules in Tencent SCF's seven fields (seconds first) and AWS's
/// `cron(...)`, and the event shapes other platforms' handlers expect.
#[test]
fn schedules_and_queues_speak_other_platforms_forms() {
    let server = Server::start();
    let dir = server.path("shapes");
    write_app(&dir, &[("stratus.yaml", SHAPES_APP), ("main.py", SHAPES)]);
    server.ok(&["deploy", dir.to_str().unwrap()]);
    server.ok(&["queue", "send", "shapes/jobs", "hello queue"]);

    let timer = first_event(&server, "scf");
    assert_eq!(timer["Type"], "Timer", "{timer}");
    assert!(
        timer["Time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{timer}"
    );

    let scheduled = first_event(&server, "eventbridge");
    assert_eq!(scheduled["detail-type"], "Scheduled Event", "{scheduled}");
    assert_eq!(scheduled["source"], "aws.events", "{scheduled}");

    let batch = first_event(&server, "sqs");
    let record = &batch["Records"][0];
    assert_eq!(record["body"], "hello queue", "{batch}");
    assert_eq!(record["eventSource"], "aws:sqs", "{batch}");
    assert_eq!(
        record["attributes"]["ApproximateReceiveCount"], "1",
        "{batch}"
    );
    assert_eq!(
        record["md5OfBody"], "778e165e87cc13f0713e9d3bf72a9734",
        "{batch}"
    );

    // A format a trigger does not have is refused at deploy.
    let bad = server.path("bad");
    write_app(
        &bad,
        &[(
            "stratus.yaml",
            "app: bad\nfunctions:\n  f:\n    runtime: python3\n    handler: main.record\n    events:\n      - schedule: \"@daily\"\n        format: sqs\n",
        )],
    );
    let out = server.fails(&["deploy", bad.to_str().unwrap()]);
    assert!(out.contains("no format \"sqs\""), "{out}");
}
