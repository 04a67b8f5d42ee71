//! Asynchronous invocations end to end: an event is acknowledged once it is
//! durably stored, delivered at least once under the request id the caller
//! got back, retried with a growing backoff, moved to the dead letters when
//! its retries run out, redriven from there, counted by `stratus status`,
//! and not lost to a `kill -9` of the server.
//!
//! Evidence of a delivery is what the function leaves behind: its log lines
//! and REPORT records (`stratus logs APP/FN --output json`), tagged with the
//! request id of every attempt; and, for the crash test, a line it sends to
//! a listener of the test (the logs of the killed server can lose records;
//! see `a_kill_9_loses_no_accepted_event`).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use std::time::{Duration, Instant};

use common::{
    Server, Witness, client, count, deploy, eventually, log_records, processes_of_function,
    write_app,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Small helpers.

/// `stratus invoke TARGET --async --data DATA`: the request id of the
/// `accepted REQUEST_ID` line it prints.
fn invoke_async(server: &Server, target: &str, data: &str) -> String {
    let out = server.ok(&["invoke", target, "--async", "--data", data]);
    let id = out
        .trim()
        .strip_prefix("accepted ")
        .unwrap_or_else(|| panic!("expected `accepted REQUEST_ID`, got {out:?}"));
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "expected `accepted REQUEST_ID`, got {out:?}"
    );
    id.to_owned()
}

/// POST `body` to the admin invoke endpoint of APP/FN as an `Event`
/// invocation: the status and the body.
fn post_event(
    http: &reqwest::blocking::Client,
    admin: &str,
    token: &str,
    target: &str,
    body: &str,
) -> (u16, String) {
    let (app, function) = target.split_once('/').unwrap();
    let response = http
        .post(format!("{admin}/v1/apps/{app}/functions/{function}/invoke"))
        .bearer_auth(token)
        .header("x-stratus-invocation-type", "Event")
        .body(body.to_owned())
        .send()
        .unwrap_or_else(|e| panic!("POST {target} as an Event: {e}"));
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}

/// The request id of a 202 answer to an `Event` invocation.
fn accepted_id(status: u16, body: &str) -> String {
    assert_eq!(status, 202, "an Event invocation is answered 202: {body}");
    let body: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("the 202 of an Event invocation is not JSON ({e}): {body}"));
    body["request_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("no request_id in the 202 answer: {body}"))
        .to_owned()
}

fn message(record: &Value) -> &str {
    record["message"].as_str().unwrap_or_default()
}

fn outcome(record: &Value) -> &str {
    record["fields"]["outcome"].as_str().unwrap_or_default()
}

/// The REPORT records of the attempts of `request_id`, oldest first.
fn reports(server: &Server, target: &str, request_id: &str) -> Vec<Value> {
    let mut reports: Vec<Value> = log_records(server, target, &["--request-id", request_id])
        .into_iter()
        .filter(|r| r["stream"] == "report" && r["request_id"] == request_id)
        .collect();
    reports.sort_by_key(|r| r["ts_ms"].as_i64().unwrap_or_default());
    reports
}

/// `events` of APP/FN in `stratus status APP --output json`, as (queued,
/// in_flight, dead).
fn event_counts(server: &Server, target: &str) -> (u64, u64, u64) {
    let (app, function) = target.split_once('/').unwrap();
    let out = server.ok(&["status", app, "--output", "json"]);
    let status: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stratus status printed no JSON ({e}): {out}"));
    let entry = status["apps"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["app"] == app))
        .unwrap_or_else(|| panic!("no app {app} in {status}"));
    let function = entry["functions"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["name"] == function))
        .unwrap_or_else(|| panic!("no function {function} in {entry}"));
    let events = &function["events"];
    let count = |key: &str| {
        events[key].as_u64().unwrap_or_else(|| {
            panic!("status of {target}: events.{key} should be a count: {function}")
        })
    };
    (count("queued"), count("in_flight"), count("dead"))
}

/// `stratus dlq ls TARGET --output json`: the dead letters.
fn dead_letters(server: &Server, target: &str) -> Vec<Value> {
    let out = server.ok(&["dlq", "ls", target, "--output", "json"]);
    let list: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stratus dlq ls printed no JSON ({e}): {out}"));
    list["dead_letters"]
        .as_array()
        .unwrap_or_else(|| panic!("no dead_letters array in {list}"))
        .clone()
}

/// The only dead letter of `target`, once there is one.
fn the_dead_letter(server: &Server, target: &str, within: Duration) -> Value {
    eventually(within, || match dead_letters(server, target).as_slice() {
        [] => Err(format!("no dead letter for {target} yet")),
        [one] => Ok(one.clone()),
        many => panic!("one event, several dead letters for {target}: {many:?}"),
    })
}

/// A dead letter's `function`: the function's name (the app is known from
/// the query; `APP/FN` is accepted too).
fn names_function(letter: &Value, app: &str, function: &str) -> bool {
    letter["function"] == function || letter["function"] == format!("{app}/{function}").as_str()
}

// ---------------------------------------------------------------------------
// Accepted, then delivered.

const ECHO: &str = r#"import json, time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    print("DELIVERED " + context.aws_request_id + " " + json.dumps(event, sort_keys=True), flush=True)
    return {"ok": True}
"#;

#[test]
fn async_invocations_are_accepted_then_delivered() {
    let server = Server::start();
    write_app(
        &server.path("echo"),
        &[
            (
                "stratus.yaml",
                "app: echo\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", ECHO),
        ],
    );
    deploy(&server, "echo");

    // The CLI answers once the event is stored, not once the handler (4 s
    // here, after a cold start) is done.
    let started = Instant::now();
    let slow = invoke_async(&server, "echo/f", r#"{"n": 1, "sleep": 4}"#);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "`invoke --async` took {took:?}: it waited for the handler"
    );

    let out = server.ok(&[
        "invoke",
        "echo/f",
        "--async",
        "--data",
        r#"{"n": 2}"#,
        "--output",
        "json",
    ]);
    let accepted: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("`invoke --async --output json` printed no JSON ({e}): {out}"));
    assert_eq!(accepted["status"], 202, "{accepted}");
    let quick = accepted["request_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("no request_id: {accepted}"))
        .to_owned();

    // The admin API directly.
    let http = client();
    let (status, body) = post_event(&http, &server.admin, &server.token, "echo/f", r#"{"n": 3}"#);
    let api = accepted_id(status, &body);

    let ids = BTreeSet::from([slow.as_str(), quick.as_str(), api.as_str()]);
    assert_eq!(ids.len(), 3, "every event has its own request id: {ids:?}");

    // Each ran with the request id its caller got, and the payload it sent.
    for (id, payload) in [
        (slow.as_str(), r#""n": 1"#),
        (quick.as_str(), r#""n": 2"#),
        (api.as_str(), r#""n": 3"#),
    ] {
        eventually(Duration::from_secs(30), || {
            let records = log_records(&server, "echo/f", &["--request-id", id]);
            let marker = format!("DELIVERED {id} ");
            let Some(line) = records.iter().find(|r| message(r).contains(&marker)) else {
                return Err(format!("the handler has not run as {id}: {records:?}"));
            };
            assert!(
                message(line).contains(payload),
                "event {id} was delivered with another payload: {line}"
            );
            assert_eq!(line["request_id"], id, "{line}");
            if !records
                .iter()
                .any(|r| r["stream"] == "report" && outcome(r) == "success")
            {
                return Err(format!("no successful REPORT for {id} yet: {records:?}"));
            }
            Ok(())
        });
    }

    // Refused as synchronous calls are, and not queued.
    let err = server.fails(&["invoke", "echo/nope", "--async", "--data", "{}"]);
    assert!(
        err.contains("echo/nope") && err.contains("does not exist"),
        "{err}"
    );
    let err = server.fails(&["invoke", "nope/f", "--async", "--data", "{}"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = server.fails(&["invoke", "echo/f", "--async", "--data", "not json"]);
    assert!(err.contains("not valid JSON"), "{err}");
    let (status, body) = post_event(&http, &server.admin, &server.token, "echo/nope", "{}");
    assert_eq!(status, 404, "{body}");
    let (status, body) = post_event(&http, &server.admin, &server.token, "echo/f", "{not json");
    assert_eq!(status, 400, "{body}");

    eventually(Duration::from_secs(15), || {
        match event_counts(&server, "echo/f") {
            (0, 0, 0) => Ok(()),
            counts => Err(format!("(queued, in_flight, dead) = {counts:?}")),
        }
    });
    assert!(dead_letters(&server, "echo").is_empty());
}

// ---------------------------------------------------------------------------
// Retries, dead letters, redrive.

const FAILING: &str = r#"def handler(event, context):
    print("ATTEMPT " + context.aws_request_id, flush=True)
    raise RuntimeError("order " + event["order"] + " failed")
"#;

const FIXED: &str = r#"def handler(event, context):
    print("FIXED " + context.aws_request_id + " " + event["order"], flush=True)
    return "ok"
"#;

const RETRY_MANIFEST: &str = "app: retry\nfunctions:\n  always:\n    runtime: python3\n    handler: main.handler\n    retries: 2\n  once:\n    runtime: python3\n    handler: main.handler\n    retries: 0\n";

/// Waits until `request_id` has `n` REPORTs with outcome `error` (the logs
/// are written in batches), then insists that there are exactly `n`
/// attempts, none successful; returns their times (ms).
fn failed_attempts(server: &Server, target: &str, request_id: &str, n: usize) -> Vec<i64> {
    eventually(Duration::from_secs(10), || {
        let reports = reports(server, target, request_id);
        if reports.iter().filter(|r| outcome(r) == "error").count() < n {
            return Err(format!("fewer than {n} failed attempts: {reports:?}"));
        }
        Ok(())
    });
    // Anything written late (a further attempt) has had time to land too.
    std::thread::sleep(Duration::from_millis(500));
    let reports = reports(server, target, request_id);
    assert_eq!(
        reports.len(),
        n,
        "{target}: {n} attempts of {request_id}, each with a REPORT: {reports:#?}"
    );
    assert!(
        reports.iter().all(|r| outcome(r) == "error"),
        "{reports:#?}"
    );
    reports
        .iter()
        .map(|r| {
            r["ts_ms"]
                .as_i64()
                .unwrap_or_else(|| panic!("a log record has its ts_ms: {r}"))
        })
        .collect()
}

#[test]
fn failures_are_retried_with_backoff_then_dead_lettered_and_redriven() {
    let server = Server::start();
    write_app(
        &server.path("retry"),
        &[("stratus.yaml", RETRY_MANIFEST), ("main.py", FAILING)],
    );
    deploy(&server, "retry");
    let always = invoke_async(&server, "retry/always", r#"{"order": "A-1"}"#);
    let once = invoke_async(&server, "retry/once", r#"{"order": "B-2"}"#);

    // retries: 0: one attempt, then the dead letters.
    let once_letter = the_dead_letter(&server, "retry/once", Duration::from_secs(20));
    assert_eq!(once_letter["request_id"], once.as_str(), "{once_letter}");
    assert_eq!(count(&once_letter["attempts"]), 1, "{once_letter}");
    assert!(
        names_function(&once_letter, "retry", "once"),
        "{once_letter}"
    );
    failed_attempts(&server, "retry/once", &once, 1);

    // retries: 2: three attempts, the same request id each time, about 1 s
    // then 2 s apart, then the dead letters.
    let letter = the_dead_letter(&server, "retry/always", Duration::from_secs(30));
    assert_eq!(letter["request_id"], always.as_str(), "{letter}");
    assert_eq!(count(&letter["attempts"]), 3, "{letter}");
    assert!(names_function(&letter, "retry", "always"), "{letter}");
    let error = letter["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("order A-1 failed"),
        "the last error: {letter}"
    );
    let (created, failed) = (
        letter["created_ms"].as_i64().unwrap_or_default(),
        letter["failed_ms"].as_i64().unwrap_or_default(),
    );
    assert!(
        created > 0 && failed - created >= 1500,
        "two backoffs passed between its creation and its death: {letter}"
    );
    let times = failed_attempts(&server, "retry/always", &always, 3);
    let (first, second) = (times[1] - times[0], times[2] - times[1]);
    // "About 1 s, 2 s" with jitter: assumed to keep each delay within a
    // third of its value, so the second is still longer than the first.
    assert!(
        first >= 500,
        "the first retry came {first} ms after the failure"
    );
    assert!(
        second >= 1000 && second > first,
        "the backoff grows: {first} ms, then {second} ms"
    );
    let markers = log_records(&server, "retry/always", &["--request-id", &always])
        .iter()
        .filter(|r| message(r).contains(&format!("ATTEMPT {always}")))
        .count();
    assert_eq!(markers, 3, "the handler ran 3 times as {always}");

    // The listings: all of the app, one function, one letter.
    let both = dead_letters(&server, "retry");
    assert_eq!(both.len(), 2, "{both:?}");
    let table = server.ok(&["dlq", "ls", "retry"]);
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "ID",
        "FUNCTION",
        "REQUEST_ID",
        "ATTEMPTS",
        "FAILED",
        "ERROR",
    ] {
        assert!(header.contains(column), "no {column} column: {table}");
    }
    let row = table
        .lines()
        .find(|l| l.contains(&always))
        .unwrap_or_else(|| panic!("no row for {always}: {table}"));
    assert!(
        row.contains("always") && row.split_whitespace().any(|cell| cell == "3"),
        "{row}"
    );
    assert!(table.contains(&once), "{table}");

    let id = count(&letter["id"]).to_string();
    let shown: Value =
        serde_json::from_str(&server.ok(&["dlq", "show", "retry", &id, "--output", "json"]))
            .unwrap();
    assert_eq!(shown["request_id"], always.as_str(), "{shown}");
    assert_eq!(count(&shown["attempts"]), 3, "{shown}");
    assert!(names_function(&shown, "retry", "always"), "{shown}");
    // The payload as sent: a JSON value (JSON text in a string is accepted).
    let payload = match &shown["payload"] {
        Value::String(text) => serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("payload is not the JSON sent ({e}): {shown}")),
        other => other.clone(),
    };
    assert_eq!(payload, json!({"order": "A-1"}), "{shown}");
    let text = server.ok(&["dlq", "show", "retry", &id]);
    assert!(text.contains(&always) && text.contains("A-1"), "{text}");
    let missing = server.fails(&["dlq", "show", "retry", "999999"]);
    assert!(
        !missing.trim().is_empty(),
        "an unknown dead letter is an error"
    );

    // Fixed and redriven: delivered under the same request id, with fresh
    // retries; the other function's letter stays until redriven by id.
    write_app(&server.path("retry"), &[("main.py", FIXED)]);
    deploy(&server, "retry");
    assert_eq!(
        server.ok(&["dlq", "redrive", "retry/always"]).trim(),
        "redriven 1"
    );
    eventually(Duration::from_secs(20), || {
        let reports = reports(&server, "retry/always", &always);
        if !reports.iter().any(|r| outcome(r) == "success") {
            return Err(format!("the redriven event has not succeeded: {reports:?}"));
        }
        Ok(())
    });
    let fixed = log_records(&server, "retry/always", &["--request-id", &always]);
    assert!(
        fixed
            .iter()
            .any(|r| message(r).contains(&format!("FIXED {always} A-1"))),
        "the redriven event keeps its payload: {fixed:?}"
    );
    assert!(dead_letters(&server, "retry/always").is_empty());
    let left = dead_letters(&server, "retry");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["request_id"], once.as_str(), "{left:?}");

    let once_id = count(&once_letter["id"]).to_string();
    assert_eq!(
        server
            .ok(&["dlq", "redrive", "retry", "--id", &once_id])
            .trim(),
        "redriven 1"
    );
    eventually(Duration::from_secs(20), || {
        let reports = reports(&server, "retry/once", &once);
        if !reports.iter().any(|r| outcome(r) == "success") {
            return Err(format!("the redriven event has not succeeded: {reports:?}"));
        }
        Ok(())
    });
    assert!(dead_letters(&server, "retry").is_empty());
    assert_eq!(server.ok(&["dlq", "redrive", "retry"]).trim(), "redriven 0");
    for target in ["retry/always", "retry/once"] {
        eventually(Duration::from_secs(10), || {
            match event_counts(&server, target) {
                (0, 0, 0) => Ok(()),
                counts => Err(format!("{target}: (queued, in_flight, dead) = {counts:?}")),
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Manifest keys.

/// `max_event_age` bounds retries by age, at least 1m: seeing it stop them
/// would take minutes, so this checks the keys' bounds instead.
#[test]
fn retries_and_max_event_age_are_validated() {
    let server = Server::start();
    let manifest = |extra: &str| -> String {
        format!(
            "app: val\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n{extra}"
        )
    };
    let refused = [
        (
            "    retries: 11\n",
            "stratus.yaml:6: functions.f.retries",
            &["10"][..],
        ),
        ("    retries: -1\n", "functions.f.retries", &[][..]),
        (
            "    max_event_age: 10s\n",
            "stratus.yaml:6: functions.f.max_event_age",
            &["1m", "1 minute", "60s"][..],
        ),
        (
            "    max_event_age: 7h\n",
            "stratus.yaml:6: functions.f.max_event_age",
            &["6h", "6 hours"][..],
        ),
        (
            "    max_event_age: soon\n",
            "functions.f.max_event_age",
            &[][..],
        ),
    ];
    for (i, (extra, location, bound)) in refused.iter().enumerate() {
        let dir = format!("bad{i}");
        write_app(
            &server.path(&dir),
            &[("stratus.yaml", &manifest(extra)), ("main.py", FIXED)],
        );
        let err = server.fails(&["deploy", server.path(&dir).to_str().unwrap()]);
        assert!(
            err.contains(location),
            "{extra:?}: expected {location:?} in:\n{err}"
        );
        assert!(
            bound.is_empty() || bound.iter().any(|b| err.contains(b)),
            "{extra:?}: the error names the bound ({bound:?}):\n{err}"
        );
        assert!(err.contains("nothing was deployed"), "{extra:?}: {err}");
    }
    assert!(
        server.ok(&["ls"]).contains("no applications"),
        "nothing was deployed"
    );

    // The bounds themselves are fine.
    for (i, extra) in [
        "    retries: 0\n    max_event_age: 1m\n",
        "    retries: 10\n    max_event_age: 6h\n",
    ]
    .iter()
    .enumerate()
    {
        let dir = format!("good{i}");
        write_app(
            &server.path(&dir),
            &[("stratus.yaml", &manifest(extra)), ("main.py", FIXED)],
        );
        deploy(&server, &dir);
    }
    assert!(server.ok(&["ls"]).contains("val/f"));
}

// ---------------------------------------------------------------------------
// A crash loses nothing.

const WITNESSED: &str = r#"import os, socket, time

def handler(event, context):
    time.sleep(0.1)
    rid = context.aws_request_id
    print("DELIVERED " + rid, flush=True)
    with socket.create_connection(("127.0.0.1", int(os.environ["WITNESS_PORT"])), timeout=10) as s:
        s.sendall((rid + "\n").encode())
    return "ok"
"#;

/// Why the evidence here is a listener of the test and not only the logs:
/// the logs say what the platform believes, and the test must see what
/// happened. The handler therefore reports its request id to the test over
/// TCP (`network: outbound` reaches host services) once it has done its
/// work: that record survives the kill. The test then insists that
/// - every request id that got a 202 reaches the handler at least once,
///   and no other id does;
/// - the kill came while events were still waiting (else it proves
///   nothing);
/// - every accepted event has a successful REPORT in the logs: an event
///   is settled only once the lines and report of its attempt are stored,
///   so one settled before the kill has its report, and one that was not
///   is run again after the restart;
/// - the queue ends empty: queued 0, in_flight 0, dead 0.
#[test]
fn a_kill_9_loses_no_accepted_event() {
    const EVENTS: usize = 100;
    const SENDERS: usize = 4;
    let mut server = Server::start();
    let witness = Witness::start();
    // Two instances at 0.1 s an event: at least 5 s of work, so the kill
    // lands mid-way. Generous retries: a throttled attempt is a failure,
    // and this test is about durability, not the retry policy.
    write_app(
        &server.path("crash"),
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: crash\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    timeout: 3s\n    max_instances: 2\n    retries: 10\n    env:\n      WITNESS_PORT: \"{}\"\n",
                    witness.port
                ),
            ),
            ("main.py", WITNESSED),
        ],
    );
    deploy(&server, "crash");

    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (admin, token) = (server.admin.clone(), server.token.clone());
            std::thread::spawn(move || {
                let http = client();
                (0..EVENTS / SENDERS)
                    .map(|i| {
                        let body = json!({"n": s * (EVENTS / SENDERS) + i}).to_string();
                        let (status, body) = post_event(&http, &admin, &token, "crash/f", &body);
                        accepted_id(status, &body)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let accepted: BTreeSet<String> = senders
        .into_iter()
        .flat_map(|s| s.join().expect("a sender"))
        .collect();
    assert_eq!(accepted.len(), EVENTS, "distinct request ids");

    // Deliveries are under way: kill -9.
    eventually(Duration::from_secs(30), || {
        let n = witness.distinct().len();
        if n >= 5 {
            Ok(())
        } else {
            Err(format!("{n} delivered"))
        }
    });
    server.kill();
    let started = Instant::now();
    while !processes_of_function("crash.f").is_empty() && started.elapsed().as_secs() < 10 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = processes_of_function("crash.f");
    assert!(left.is_empty(), "instances outlived the server: {left:?}");
    // The reports of handlers that finished before the kill are taken in
    // (the listener drains its backlog) once it has been quiet a while.
    let mut before = witness.lines().len();
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let now = witness.lines().len();
        if now == before {
            break;
        }
        before = now;
    }
    let delivered_before: BTreeSet<String> = witness.distinct();
    assert!(
        delivered_before.len() < EVENTS,
        "every event was delivered before the kill: nothing was in flight"
    );

    server.restart();

    // Every accepted event is delivered, in the end.
    eventually(Duration::from_secs(90), || {
        let seen = witness.distinct();
        let missing: Vec<_> = accepted.difference(&seen).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {EVENTS} accepted events never reached the handler ({} before the kill): {missing:?}",
                missing.len(),
                delivered_before.len()
            ))
        }
    });
    let seen = witness.distinct();
    let strangers: Vec<_> = seen.difference(&accepted).collect();
    assert!(
        strangers.is_empty(),
        "the handler ran under request ids nobody was given: {strangers:?}"
    );

    // Every delivery that settled its event is in the logs, those before
    // the kill too.
    eventually(Duration::from_secs(15), || {
        let records = log_records(&server, "crash/f", &[]);
        let succeeded: BTreeSet<&str> = records
            .iter()
            .filter(|r| r["stream"] == "report" && outcome(r) == "success")
            .filter_map(|r| r["request_id"].as_str())
            .collect();
        let unlogged: Vec<_> = accepted
            .iter()
            .filter(|id| !succeeded.contains(id.as_str()))
            .collect();
        if unlogged.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} delivered events have no successful REPORT ({} delivered before the kill): {unlogged:?}",
                unlogged.len(),
                delivered_before.len()
            ))
        }
    });

    eventually(Duration::from_secs(30), || {
        match event_counts(&server, "crash/f") {
            (0, 0, 0) => Ok(()),
            counts => Err(format!("(queued, in_flight, dead) = {counts:?}")),
        }
    });
    assert!(dead_letters(&server, "crash").is_empty());
}

// ---------------------------------------------------------------------------
// Status.

const COUNTED: &str = r#"import time

def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("counted failure")
    time.sleep(2)
    return "ok"
"#;

/// `events` in `stratus status`: queued and in flight while events wait or
/// run, dead once one is given up on. A failed event waiting out its
/// backoff is assumed to count as queued (it waits to be claimed again),
/// not in flight.
#[test]
fn status_counts_queued_and_dead_events() {
    let server = Server::start();
    // `slow` has one instance for three events; its retries are there in
    // case an event finding that instance busy counts as throttled.
    write_app(
        &server.path("counts"),
        &[
            (
                "stratus.yaml",
                "app: counts\nfunctions:\n  slow:\n    runtime: python3\n    handler: main.handler\n    max_instances: 1\n    retries: 10\n  dies:\n    runtime: python3\n    handler: main.handler\n    retries: 0\n  retried:\n    runtime: python3\n    handler: main.handler\n    retries: 2\n",
            ),
            ("main.py", COUNTED),
        ],
    );
    deploy(&server, "counts");
    for target in ["counts/slow", "counts/dies", "counts/retried"] {
        assert_eq!(event_counts(&server, target), (0, 0, 0), "{target}");
    }

    // Three 2 s events on one instance: none can be done yet.
    let http = client();
    for n in 0..3 {
        let body = json!({ "n": n }).to_string();
        let (status, body) = post_event(&http, &server.admin, &server.token, "counts/slow", &body);
        accepted_id(status, &body);
    }
    let (queued, in_flight, dead) = event_counts(&server, "counts/slow");
    assert_eq!(
        (queued + in_flight, dead),
        (3, 0),
        "three events waiting or running: queued {queued}, in_flight {in_flight}, dead {dead}"
    );

    // retries: 0: dead after its one attempt.
    invoke_async(&server, "counts/dies", r#"{"fail": true}"#);
    eventually(Duration::from_secs(20), || {
        match event_counts(&server, "counts/dies") {
            (0, 0, 1) => Ok(()),
            (q, f, d) if q + f + d == 1 => Err(format!("still alive: ({q}, {f}, {d})")),
            counts => panic!("one event, counted as (queued, in_flight, dead) = {counts:?}"),
        }
    });

    // retries: 2: queued while it waits out its backoffs (about 1 s, then
    // 2 s), then dead.
    invoke_async(&server, "counts/retried", r#"{"fail": true}"#);
    let mut seen_queued = false;
    eventually(Duration::from_secs(30), || {
        match event_counts(&server, "counts/retried") {
            (0, 0, 1) => Ok(()),
            (q, f, 0) if q + f == 1 => {
                seen_queued |= q == 1;
                Err(format!("still alive: ({q}, {f}, 0)"))
            }
            counts => panic!("one event, counted as (queued, in_flight, dead) = {counts:?}"),
        }
    });
    assert!(
        seen_queued,
        "the failed event was never counted as queued while it waited for its retries"
    );

    eventually(Duration::from_secs(30), || {
        match event_counts(&server, "counts/slow") {
            (0, 0, 0) => Ok(()),
            counts => Err(format!("(queued, in_flight, dead) = {counts:?}")),
        }
    });
    // The dead stay counted until redriven or deleted.
    assert_eq!(event_counts(&server, "counts/dies"), (0, 0, 1));
    assert_eq!(event_counts(&server, "counts/retried"), (0, 0, 1));
    let letters: BTreeMap<String, u64> = dead_letters(&server, "counts")
        .iter()
        .map(|l| {
            (
                l["function"].as_str().unwrap_or_default().to_owned(),
                count(&l["attempts"]),
            )
        })
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(
        letters.values().copied().collect::<Vec<_>>(),
        vec![1, 3],
        "{letters:?}"
    );
}

#[test]
fn a_backlog_waits_for_the_function_instead_of_being_throttled() {
    // One instance and a one-second queue: a dispatcher that sent all six
    // at once would see most of them throttled, and with `retries: 0`
    // they would go straight to the dead letters.
    let server = Server::start_with(&["--queue-timeout", "1s"]);
    write_app(
        &server.path("backlog"),
        &[
            (
                "stratus.yaml",
                "app: backlog\nfunctions:\n  slow:\n    runtime: python3\n    handler: main.handler\n    max_instances: 1\n    retries: 0\n",
            ),
            (
                "main.py",
                "import time\n\ndef handler(event, context):\n    time.sleep(0.5)\n    print('done', context.aws_request_id)\n    return {}\n",
            ),
        ],
    );
    deploy(&server, "backlog");
    let ids: Vec<String> = (0..6)
        .map(|i| invoke_async(&server, "backlog/slow", &format!("{{\"n\":{i}}}")))
        .collect();
    eventually(Duration::from_secs(20), || {
        let (queued, in_flight, dead) = event_counts(&server, "backlog/slow");
        if queued + in_flight == 0 {
            Ok(dead)
        } else {
            Err(format!(
                "queued {queued}, in flight {in_flight}, dead {dead}"
            ))
        }
    });
    let (_, _, dead) = event_counts(&server, "backlog/slow");
    assert_eq!(dead, 0, "{:#?}", dead_letters(&server, "backlog/slow"));
    let records = log_records(&server, "backlog/slow", &[]);
    for id in &ids {
        assert!(
            records
                .iter()
                .any(|r| r["message"].as_str() == Some(&format!("done {id}"))),
            "{id} was not delivered"
        );
    }
}

/// A function with a long backlog and one instance does not hold up the
/// events of another: the dispatcher claims no more of a function's events
/// than it can run while others wait.
#[test]
fn a_busy_function_does_not_hold_up_the_others() {
    let server = Server::start();
    write_app(
        &server.path("busy"),
        &[
            (
                "stratus.yaml",
                "app: busy\nfunctions:\n  slow:\n    runtime: python3\n    handler: main.slow\n    max_instances: 1\n  fast:\n    runtime: python3\n    handler: main.fast\n",
            ),
            (
                "main.py",
                "import time\n\ndef slow(event, context):\n    time.sleep(0.2)\n\ndef fast(event, context):\n    print('fast done')\n",
            ),
        ],
    );
    deploy(&server, "busy");
    let http = common::client();
    // More than the dispatcher delivers at once (256), at 0.2 s each.
    for i in 0..300 {
        let (status, body) = post_event(
            &http,
            &server.admin,
            &server.token,
            "busy/slow",
            &format!("{{\"n\":{i}}}"),
        );
        accepted_id(status, &body);
    }
    let started = std::time::Instant::now();
    invoke_async(&server, "busy/fast", "{}");
    eventually(Duration::from_secs(20), || {
        let records = log_records(&server, "busy/fast", &[]);
        match records.iter().any(|r| message(r) == "fast done") {
            true => Ok(()),
            false => Err("the fast function's event is not handled".to_owned()),
        }
    });
    // Behind the slow backlog it would wait 45 × 0.2 s or more.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the fast function's event waited {took:?} behind the slow one's"
    );
}

#[test]
fn destinations_chain_functions_on_success_and_on_failure() {
    let server = Server::start();
    write_app(
        &server.path("chain"),
        &[
            (
                "stratus.yaml",
                "app: chain\nfunctions:\n  first:\n    runtime: python3\n    handler: main.first\n    on_success: second\n  second:\n    runtime: python3\n    handler: main.second\n    on_success: third\n  third:\n    runtime: python3\n    handler: main.third\n  fails:\n    runtime: python3\n    handler: main.fails\n    retries: 0\n    on_failure: third\n",
            ),
            (
                "main.py",
                r#"import json

def first(event, context):
    return {"step": 1, "order": event["order"]}

def second(event, context):
    # A destination record: the first function's result is its responsePayload.
    return {"step": 2, "order": event["responsePayload"]["order"], "from": event["requestContext"]["requestId"]}

def third(event, context):
    print("THIRD " + json.dumps(event, sort_keys=True))
    return {}

def fails(event, context):
    raise RuntimeError("out of stock")
"#,
            ),
        ],
    );
    deploy(&server, "chain");
    let first = invoke_async(&server, "chain/first", r#"{"order":"A-7"}"#);
    let failed = invoke_async(&server, "chain/fails", r#"{"order":"B-8"}"#);

    let records = eventually(Duration::from_secs(20), || {
        let seen: Vec<Value> = log_records(&server, "chain/third", &[])
            .iter()
            .filter_map(|r| r["message"].as_str()?.strip_prefix("THIRD "))
            .map(|json| serde_json::from_str(json).unwrap())
            .collect();
        if seen.len() >= 2 {
            Ok(seen)
        } else {
            Err(format!("{seen:#?}"))
        }
    });
    // first → second → third: third gets second's record, whose result
    // carries what first returned.
    let success = records
        .iter()
        .find(|r| r["requestContext"]["condition"] == "Success")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(success["version"], "1.0");
    assert_eq!(success["responsePayload"]["step"], 2, "{success}");
    assert_eq!(success["responsePayload"]["order"], "A-7", "{success}");
    assert_eq!(
        success["responsePayload"]["from"],
        first.as_str(),
        "{success}"
    );
    assert!(
        success["requestContext"]["functionArn"]
            .as_str()
            .is_some_and(|a| a.ends_with(":function:chain.second")),
        "{success}"
    );
    // fails → third on failure, with the event and the error.
    let failure = records
        .iter()
        .find(|r| r["requestContext"]["condition"] == "RetriesExhausted")
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(failure["requestContext"]["requestId"], failed.as_str());
    assert_eq!(failure["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(failure["requestPayload"]["order"], "B-8");
    assert_eq!(failure["responseContext"]["functionError"], "Unhandled");
    assert_eq!(failure["responsePayload"]["errorType"], "RuntimeError");
    assert_eq!(failure["responsePayload"]["errorMessage"], "out of stock");
    // The failed event is a dead letter as well.
    assert_eq!(dead_letters(&server, "chain/fails").len(), 1);

    // A destination must be another function of the app.
    write_app(
        &server.path("loop"),
        &[
            (
                "stratus.yaml",
                "app: loop\nfunctions:\n  a:\n    runtime: python3\n    handler: main.a\n    on_failure: a\n  b:\n    runtime: python3\n    handler: main.a\n    on_success: nowhere\n",
            ),
            ("main.py", "def a(event, context):\n    return {}\n"),
        ],
    );
    let refused = server.fails(&["deploy", server.path("loop").to_str().unwrap()]);
    assert!(
        refused.contains("cannot be its own destination"),
        "{refused}"
    );
    assert!(
        refused.contains("no function or queue \"nowhere\""),
        "{refused}"
    );
}
