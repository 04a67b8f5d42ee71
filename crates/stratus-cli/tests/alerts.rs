//! Alerts and log triggers end to end: an error-rate alert fires, invokes its function with
//! the alert's CloudEvent, posts a correctly signed webhook and sends to a
//! queue, then resolves; a log-pattern alert fires on matching lines; and
//! `stratus alerts ls` shows states and history; a `logs` trigger hands
//! matching lines on in batches, each line in one batch across a crash.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, write_app};
use serde_json::Value;

/// A webhook receiver: every request's headers (lower-cased) and body.
type Received = Arc<Mutex<Vec<(Vec<(String, String)>, Vec<u8>)>>>;

fn webhook_receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let keep = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let Some((name, value)) = line.trim_end().split_once(':') else {
                    break;
                };
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
            let length: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            keep.lock().unwrap().push((headers, body));
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .unwrap();
        }
    });
    (port, received)
}

/// HMAC-SHA256 of `body` under `key`, hex, as Python's hmac computes it.
fn hmac_sha256(key: &str, body: &[u8]) -> String {
    let mut child = Command::new(common::python())
        .args([
            "-c",
            "import hmac, hashlib, sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())",
            key,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

const CODE: &str = r#"
import json

def pay(event, context):
    if event.get("fail"):
        print("payment failed for order", event.get("order"))
        raise ValueError("card declined")
    return "paid"

def on_alert(event, context):
    print("ALERT " + json.dumps(event))

def audit(event, context):
    for record in event["Records"]:
        print("AUDIT " + json.dumps(record["data"]))
    return {"batchItemFailures": []}
"#;

/// The alert events a function printed under `marker`, in order.
fn printed(server: &Server, function: &str, marker: &str) -> Vec<Value> {
    server
        .ok(&["logs", function])
        .lines()
        .filter_map(|line| line.split_once(marker))
        .map(|(_, json)| serde_json::from_str(json).unwrap())
        .collect()
}

fn states(server: &Server) -> Value {
    serde_json::from_str(&server.ok(&["alerts", "ls", "watch", "--output", "json"])).unwrap()
}

fn state_of(listed: &Value, alert: &str) -> String {
    listed["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == alert)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn an_error_rate_alert_fires_acts_and_resolves() {
    let server = Server::start_with(&["--alert-interval", "500ms"]);
    let (port, hooks) = webhook_receiver();
    let manifest = format!(
        r#"app: watch
functions:
  pay:
    runtime: python3
    handler: main.pay
    retries: 0
  on-alert:
    runtime: python3
    handler: main.on_alert
  audit:
    runtime: python3
    handler: main.audit
    events:
      - queue: incidents
        batch_window: 0s
queues:
  incidents:
alerts:
  pay-errors:
    metric: error_rate
    function: pay
    above: 0.5
    window: 3s
    actions:
      - invoke: on-alert
      - webhook: {{ url: "http://127.0.0.1:{port}/hook", secret: hook_key }}
      - queue: incidents
  declines:
    logs: {{ pattern: payment failed, from: [pay] }}
    above: 2
    window: 1m
    for: 1s
    actions:
      - invoke: on-alert
"#
    );
    write_app(
        &server.path("watch"),
        &[("stratus.yaml", &manifest), ("main.py", CODE)],
    );
    common::deploy(&server, "watch");
    let out = server.cli_stdin(&["secret", "set", "watch", "hook_key"], "s3cret-key");
    assert!(out.status.success(), "{out:?}");

    // Once the evaluator has watched a whole window, the alert is fine.
    common::eventually(Duration::from_secs(20), || {
        let listed = states(&server);
        match state_of(&listed, "pay-errors").as_str() {
            "ok" => Ok(()),
            other => Err(format!("{other}: {listed}")),
        }
    });
    let ls = server.ok(&["alerts", "ls", "watch"]);
    assert!(ls.contains("error_rate(pay) over 3s > 0.5"), "{ls}");
    assert!(
        ls.contains("lines of pay containing \"payment failed\" over 1m > 2"),
        "{ls}"
    );

    // Every call fails: the error rate is 1.
    for order in 0..4 {
        let failed = server.cli(&[
            "invoke",
            "watch/pay",
            "--data",
            &format!(r#"{{"fail": true, "order": {order}}}"#),
        ]);
        assert!(!failed.status.success());
    }
    let firing = common::eventually(Duration::from_secs(20), || {
        let events = printed(&server, "watch/on-alert", "ALERT ");
        events
            .into_iter()
            .find(|e| e["type"] == "stratus.alert.firing" && e["data"]["alert"] == "pay-errors")
            .ok_or_else(|| server.ok(&["alerts", "ls", "watch"]))
    });
    assert_eq!(firing["specversion"], "1.0");
    assert_eq!(firing["source"], "/apps/watch/alerts/pay-errors");
    assert_eq!(firing["data"]["state"], "firing");
    assert_eq!(firing["data"]["value"], 1.0);
    assert_eq!(firing["data"]["threshold"], 0.5);

    // The webhook got the same event, signed with the app's secret.
    let (headers, body) = common::eventually(Duration::from_secs(10), || {
        hooks
            .lock()
            .unwrap()
            .first()
            .cloned()
            .ok_or("no webhook yet".to_owned())
    });
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("content-type"), "application/cloudevents+json");
    assert_eq!(header("x-stratus-event"), "stratus.alert.firing");
    assert_eq!(
        header("x-stratus-signature-256"),
        format!("sha256={}", hmac_sha256("s3cret-key", &body))
    );
    let posted: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(posted["id"], firing["id"]);

    // And the queue's consumer, the event as the message's body.
    common::eventually(Duration::from_secs(15), || {
        let audited = printed(&server, "watch/audit", "AUDIT ");
        audited
            .iter()
            .any(|d| d["type"] == "stratus.alert.firing" && d["data"]["alert"] == "pay-errors")
            .then_some(())
            .ok_or(format!("{audited:?}"))
    });

    // The lines said "payment failed" four times: the log alert fires
    // once it held for its second.
    common::eventually(Duration::from_secs(20), || {
        let events = printed(&server, "watch/on-alert", "ALERT ");
        events
            .iter()
            .any(|e| e["type"] == "stratus.alert.firing" && e["data"]["alert"] == "declines")
            .then_some(())
            .ok_or_else(|| server.ok(&["alerts", "ls", "watch", "--output", "json"]))
    });

    // Calls succeed again; once the window holds no failure, it resolves.
    common::eventually(Duration::from_secs(30), || {
        server.ok(&["invoke", "watch/pay", "--data", "{}"]);
        let events = printed(&server, "watch/on-alert", "ALERT ");
        events
            .iter()
            .any(|e| e["type"] == "stratus.alert.resolved" && e["data"]["alert"] == "pay-errors")
            .then_some(())
            .ok_or(format!("{events:?}"))
    });
    common::eventually(Duration::from_secs(10), || {
        let kinds: Vec<String> = hooks
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| {
                h.iter()
                    .find(|(n, _)| n == "x-stratus-event")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect();
        (kinds == ["stratus.alert.firing", "stratus.alert.resolved"])
            .then_some(())
            .ok_or(format!("{kinds:?}"))
    });

    // State and history.
    let listed = states(&server);
    assert_eq!(state_of(&listed, "pay-errors"), "ok");
    assert_eq!(state_of(&listed, "declines"), "firing");
    let changes: Vec<(String, String, String)> = listed["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "pay-errors")
        .map(|c| {
            (
                c["from"].as_str().unwrap().to_owned(),
                c["to"].as_str().unwrap().to_owned(),
                c["name"].as_str().unwrap().to_owned(),
            )
        })
        .rev()
        .collect();
    let transitions: Vec<(&str, &str)> = changes
        .iter()
        .map(|(f, t, _)| (f.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        transitions,
        [
            ("insufficient_data", "ok"),
            ("ok", "firing"),
            ("firing", "ok")
        ]
    );
    let text = server.ok(&["alerts", "ls", "watch"]);
    assert!(text.contains("latest changes:"), "{text}");
    assert!(text.contains("pay-errors  firing -> ok"), "{text}");
}

const TAIL: &str = r#"
import json

def work(event, context):
    print("ERROR disk full on job", event["job"])
    print("fine line of job", event["job"])
    return "done"

def watch(event, context):
    assert event["type"] == "stratus.logs.lines", event
    for line in event["data"]["lines"]:
        print("GOT " + json.dumps(dict(line, event=event["id"])))
    print("ERROR the watcher's own lines are not its input")
"#;

/// The lines the watcher was handed, in order.
fn handed(server: &Server) -> Vec<Value> {
    printed(server, "tail/watch", "GOT ")
}

#[test]
fn a_log_trigger_hands_on_each_matching_line_in_one_batch_across_a_crash() {
    let mut server = Server::start();
    write_app(
        &server.path("tail"),
        &[
            (
                "stratus.yaml",
                "app: tail\nfunctions:\n  worker:\n    runtime: python3\n    handler: main.work\n  watch:\n    runtime: python3\n    handler: main.watch\n    events:\n      - logs: { pattern: ERROR, from: [worker] }\n        batch_window: 300ms\n",
            ),
            ("main.py", TAIL),
        ],
    );
    common::deploy(&server, "tail");
    let run = |server: &Server, job: &str| {
        server.ok(&[
            "invoke",
            "tail/worker",
            "--data",
            &format!(r#"{{"job": "{job}"}}"#),
        ]);
    };
    // Lines from before the trigger's first look are not its; keep
    // working until the watcher hears of some.
    let mut job = 0;
    common::eventually(Duration::from_secs(30), || {
        job += 1;
        run(&server, &format!("warm-{job}"));
        if handed(&server).is_empty() {
            Err("nothing handed on yet".to_owned())
        } else {
            Ok(())
        }
    });
    for n in 0..3 {
        run(&server, &format!("before-{n}"));
    }
    common::eventually(Duration::from_secs(15), || {
        let got = handed(&server);
        let messages: Vec<&str> = got.iter().filter_map(|l| l["message"].as_str()).collect();
        (0..3)
            .all(|n| messages.contains(&format!("ERROR disk full on job before-{n}").as_str()))
            .then_some(())
            .ok_or(format!("{messages:?}"))
    });

    // A crash, then more lines: each is handed on once.
    server.kill();
    server.restart();
    run(&server, "after");
    common::eventually(Duration::from_secs(30), || {
        let got = handed(&server);
        got.iter()
            .any(|l| l["message"] == "ERROR disk full on job after")
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    std::thread::sleep(Duration::from_secs(1));
    // Each line is in one batch; a batch in flight at the crash may be
    // delivered again (events are at least once), with the same id.
    let got = handed(&server);
    let mut batches: std::collections::HashMap<i64, std::collections::HashSet<String>> =
        Default::default();
    for line in &got {
        batches
            .entry(line["id"].as_i64().unwrap())
            .or_default()
            .insert(line["event"].as_str().unwrap().to_owned());
    }
    for (id, events) in &batches {
        assert_eq!(
            events.len(),
            1,
            "line {id} was handed on in two batches: {events:?}"
        );
    }
    for line in &got {
        // Only the worker's lines that match, with where they came from.
        assert_eq!(line["function"], "worker", "{line}");
        assert_eq!(line["stream"], "stdout", "{line}");
        assert!(
            line["message"]
                .as_str()
                .unwrap()
                .starts_with("ERROR disk full on job "),
            "{line}"
        );
        assert!(line["request_id"].is_string(), "{line}");
    }
}
