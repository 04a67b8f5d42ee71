//! Triggers end to end: schedules on the real clock, queues with batches,
//! partial batch failures, dead letters and redrive, messages sent from
//! inside a function with its own credentials, a destination that is a
//! queue, and the CloudEvents ingest endpoint in binary and structured
//! mode. (Schedules under a clock the test moves, across nodes and
//! restarts, are tested in `stratus-server`'s `triggers::schedule`.)
//!
//! Evidence of a delivery is what the function prints: `EVENT <json>`
//! lines in its logs.

mod common;

use std::time::Duration;

use common::{Server, client, deploy, eventually, log_records, write_app};
use serde_json::Value;

/// The JSON of every `EVENT ` line `target` printed, oldest first.
fn events(server: &Server, target: &str) -> Vec<Value> {
    let mut records = log_records(server, target, &[]);
    records.sort_by_key(|r| r["id"].as_i64().unwrap_or_default());
    records
        .iter()
        .filter_map(|r| r["message"].as_str()?.strip_prefix("EVENT "))
        .map(|json| serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}")))
        .collect()
}

const PRINT_EVENT: &str = r#"import json

def handler(event, context):
    print("EVENT " + json.dumps(event, sort_keys=True), flush=True)
    return {"ok": True}
"#;

fn unix_ms(rfc3339: &str) -> i64 {
    let time = humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z'))
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not RFC 3339: {e}"));
    time.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn schedules_fire_on_the_real_clock_as_cloudevents() {
    let server = Server::start();
    write_app(
        &server.path("cron"),
        &[
            (
                "stratus.yaml",
                "app: cron\nfunctions:\n  tick:\n    runtime: python3\n    handler: main.handler\n    keep_alive: 1s\n    events:\n      - schedule: rate(2 seconds)\n  minutely:\n    runtime: python3\n    handler: main.handler\n    events:\n      - schedule: \"* * * * *\"\n        timezone: Asia/Shanghai\n",
            ),
            ("main.py", PRINT_EVENT),
        ],
    );
    deploy(&server, "cron");

    // Every two seconds, on slots counted from the epoch; the function's
    // instance retires after a second idle, so each firing wakes it.
    let ticks = eventually(Duration::from_secs(20), || {
        let ticks = events(&server, "cron/tick");
        if ticks.len() >= 3 {
            Ok(ticks)
        } else {
            Err(format!("{} ticks so far", ticks.len()))
        }
    });
    let mut slots = Vec::new();
    for tick in &ticks {
        assert_eq!(tick["specversion"], "1.0", "{tick}");
        assert_eq!(tick["type"], "stratus.schedule.fired", "{tick}");
        assert_eq!(
            tick["source"], "/apps/cron/functions/tick/schedule",
            "{tick}"
        );
        assert_eq!(tick["datacontenttype"], "application/json", "{tick}");
        assert_eq!(tick["data"]["schedule"], "rate(2 seconds)", "{tick}");
        assert_eq!(tick["data"]["late"], false, "{tick}");
        assert!(
            tick["id"].as_str().is_some_and(|id| id.len() == 36),
            "{tick}"
        );
        let slot = unix_ms(tick["time"].as_str().unwrap());
        assert_eq!(slot % 2000, 0, "a rate's slots are whole periods: {tick}");
        slots.push(slot);
    }
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), ticks.len(), "a slot fired twice: {ticks:?}");

    // The minute's first second in Shanghai is a whole UTC minute too.
    let minute = eventually(Duration::from_secs(75), || {
        events(&server, "cron/minutely")
            .into_iter()
            .next()
            .ok_or_else(|| "no minutely event yet".to_owned())
    });
    let slot = unix_ms(minute["time"].as_str().unwrap());
    assert_eq!(slot % 60_000, 0, "{minute}");
    assert_eq!(minute["data"]["timezone"], "Asia/Shanghai", "{minute}");
}

const CONSUMER: &str = r#"import json

def handler(event, context):
    print("EVENT " + json.dumps(event, sort_keys=True), flush=True)
    failures = []
    for record in event["Records"]:
        data = record["data"] if isinstance(record["data"], dict) else {}
        if data.get("poison") or (data.get("flaky") and record["receivecount"] == 1):
            failures.append({"itemIdentifier": record["id"]})
    return {"batchItemFailures": failures}
"#;

const PRODUCER: &str = r#"import json, os, urllib.request, urllib.error

def call(path, body=None):
    request = urllib.request.Request(
        os.environ["STRATUS_API_URL"] + path,
        data=None if body is None else body.encode(),
        headers={"Authorization": "Bearer " + os.environ["STRATUS_API_TOKEN"]},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, None

def handler(event, context):
    sent = call("/v1/apps/shop/queues/orders/messages", json.dumps({"from": "inside", "n": event["n"]}))
    other_app = call("/v1/apps/other/queues/orders/messages", "{}")
    admin = call("/v1/apps")
    return {"sent": sent[0], "message_id": sent[1]["message_id"], "other_app": other_app[0], "admin": admin[0]}
"#;

const FLAKY: &str = r#"def handler(event, context):
    raise RuntimeError("out of stock")
"#;

#[test]
fn queues_deliver_batches_with_partial_failures_and_dead_letters() {
    let server = Server::start();
    write_app(
        &server.path("shop"),
        &[
            (
                "stratus.yaml",
                "app: shop\nfunctions:\n  consume:\n    runtime: python3\n    handler: consumer.handler\n    retries: 1\n    events:\n      - queue: orders\n        batch_size: 5\n        batch_window: 2s\n  produce:\n    runtime: python3\n    handler: producer.handler\n  flaky:\n    runtime: python3\n    handler: flaky.handler\n    retries: 0\n    on_failure: failures\n  audit:\n    runtime: python3\n    handler: consumer.handler\n    events:\n      - queue: failures\nqueues:\n  orders: { visibility_timeout: 40s }\n  failures:\n  idle:\n",
            ),
            ("consumer.py", CONSUMER),
            ("producer.py", PRODUCER),
            ("flaky.py", FLAKY),
        ],
    );
    deploy(&server, "shop");

    // Five messages within the window arrive as one batch of five.
    let mut ids = Vec::new();
    for body in [
        r#"{"n": 1}"#,
        r#"{"n": 2, "flaky": true}"#,
        r#"{"n": 3}"#,
        r#"{"n": 4, "poison": true}"#,
        "plain text",
    ] {
        let out = server.ok(&["queue", "send", "shop/orders", body]);
        let id = out
            .trim()
            .strip_prefix("sent ")
            .unwrap_or_else(|| panic!("{out}"));
        ids.push(id.to_owned());
    }
    let batches = eventually(Duration::from_secs(30), || {
        let batches = events(&server, "shop/consume");
        // The first batch, the flaky message's retry, and the poison
        // message's retry.
        let records: usize = batches
            .iter()
            .map(|b| b["Records"].as_array().unwrap().len())
            .sum();
        if records >= 7 {
            Ok(batches)
        } else {
            Err(format!("{records} records delivered so far: {batches:?}"))
        }
    });
    let first = batches[0]["Records"].as_array().unwrap();
    let first_ids: Vec<&str> = first.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(first_ids, ids, "one batch of five, in order: {batches:?}");
    for record in first {
        assert_eq!(record["specversion"], "1.0", "{record}");
        assert_eq!(record["type"], "stratus.queue.message", "{record}");
        assert_eq!(record["source"], "/apps/shop/queues/orders", "{record}");
        assert_eq!(record["receivecount"], 1, "{record}");
    }
    assert_eq!(first[0]["data"]["n"], 1);
    assert_eq!(first[4]["data"], "plain text");
    assert_eq!(first[4]["datacontenttype"], "text/plain");

    // Only the failed ones come back, with their ids, counted.
    let retried: Vec<(String, u64)> = batches[1..]
        .iter()
        .flat_map(|b| b["Records"].as_array().unwrap().clone())
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["receivecount"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(retried.contains(&(ids[1].clone(), 2)), "{retried:?}");
    assert!(retried.contains(&(ids[3].clone(), 2)), "{retried:?}");
    assert!(
        retried.iter().all(|(id, _)| id == &ids[1] || id == &ids[3]),
        "a handled message came back: {retried:?}"
    );

    // The poison message fails its retry too and becomes a dead letter of
    // the consumer; a redrive puts it back in the queue.
    let letter = eventually(Duration::from_secs(20), || {
        let out = server.ok(&["dlq", "ls", "shop/consume", "--output", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        match list["dead_letters"].as_array().unwrap().as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!("dead letters: {other:?}")),
        }
    });
    assert_eq!(letter["source"], "queue:orders", "{letter}");
    assert_eq!(letter["request_id"], ids[3].as_str(), "{letter}");
    let out = server.ok(&["dlq", "redrive", "shop/consume"]);
    assert!(out.contains('1'), "{out}");
    eventually(Duration::from_secs(20), || {
        let again = events(&server, "shop/consume")
            .iter()
            .flat_map(|b| b["Records"].as_array().unwrap().clone())
            .filter(|r| r["id"] == ids[3].as_str() && r["receivecount"] == 1)
            .count();
        // The first delivery, and the one after the redrive.
        if again >= 2 {
            Ok(())
        } else {
            Err(format!("{again} deliveries at receive 1"))
        }
    });

    // A function sends with its own credentials, which reach no other app
    // and not the rest of the admin API.
    let produced = server.invoke("shop/produce", r#"{"n": 9}"#)["result"].clone();
    assert_eq!(produced["sent"], 200, "{produced}");
    assert_eq!(produced["other_app"], 401, "{produced}");
    assert_eq!(produced["admin"], 401, "{produced}");
    let from_inside = produced["message_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), || {
        events(&server, "shop/consume")
            .iter()
            .flat_map(|b| b["Records"].as_array().unwrap().clone())
            .find(|r| r["id"] == from_inside.as_str())
            .filter(|r| r["data"]["from"] == "inside")
            .map(drop)
            .ok_or_else(|| "the message sent from inside has not arrived".to_owned())
    });

    // A failed event's record goes to a queue named as its destination.
    let out = server.ok(&[
        "invoke",
        "shop/flaky",
        "--async",
        "--data",
        r#"{"sku": "x1"}"#,
    ]);
    let request_id = out.trim().strip_prefix("accepted ").unwrap().to_owned();
    let record = eventually(Duration::from_secs(20), || {
        events(&server, "shop/audit")
            .into_iter()
            .next()
            .ok_or_else(|| "no destination record yet".to_owned())
    });
    let data = &record["Records"][0]["data"];
    assert_eq!(
        data["requestContext"]["requestId"],
        request_id.as_str(),
        "{record}"
    );
    assert_eq!(
        data["requestContext"]["condition"], "RetriesExhausted",
        "{record}"
    );
    assert_eq!(data["requestPayload"]["sku"], "x1", "{record}");
    assert_eq!(
        data["responsePayload"]["errorMessage"], "out of stock",
        "{record}"
    );

    // Counts, and refusals that say what to do.
    let out = server.ok(&["queue", "ls", "shop", "--output", "json"]);
    let listed: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["failures", "idle", "orders"], "{listed}");
    assert_eq!(listed["queues"][2]["consumer"], "consume", "{listed}");
    assert_eq!(listed["queues"][1]["consumer"], Value::Null, "{listed}");
    let err = server.fails(&["queue", "send", "shop/nope", "{}"]);
    assert!(
        err.contains("declares no queue \"nope\"") && err.contains("orders"),
        "{err}"
    );
}

#[test]
fn cloudevents_are_ingested_in_binary_and_structured_mode() {
    let server = Server::start();
    write_app(
        &server.path("hub"),
        &[
            (
                "stratus.yaml",
                "app: hub\nfunctions:\n  orders:\n    runtime: python3\n    handler: main.handler\n    events:\n      - cloudevents:\n          type: com.example.order.*\n  everything:\n    runtime: python3\n    handler: main.handler\n    events:\n      - cloudevents:\n          source: /billing\n",
            ),
            ("main.py", PRINT_EVENT),
        ],
    );
    deploy(&server, "hub");
    let out = server.ok(&["keys", "create", "hub", "--output", "json"]);
    let key: Value = serde_json::from_str(&out).unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let http = client();
    let url = format!("{}/v1/apps/hub/cloudevents", server.admin);

    // Binary mode, with an app key: attributes in headers, data as sent.
    let response = http
        .post(&url)
        .bearer_auth(&key)
        .header("ce-specversion", "1.0")
        .header("ce-id", "order-1")
        .header("ce-source", "/shop")
        .header("ce-type", "com.example.order.created")
        .header("ce-subject", "caf%C3%A9")
        .header("ce-time", "2026-12-01T10:00:00Z")
        .header("content-type", "application/json")
        .body(r#"{"total": 12}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().unwrap();
    assert_eq!(
        accepted["accepted"][0]["functions"],
        serde_json::json!(["orders"])
    );

    // Structured mode, with the admin token; it matches both functions.
    let response = http
        .post(&url)
        .bearer_auth(&server.token)
        .header("content-type", "application/cloudevents+json; charset=utf-8")
        .body(r#"{"specversion":"1.0","id":"inv-7","source":"/billing","type":"com.example.order.invoiced","data":{"invoice":7}}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().unwrap();
    assert_eq!(
        accepted["accepted"][0]["functions"],
        serde_json::json!(["everything", "orders"])
    );

    let orders = eventually(Duration::from_secs(20), || {
        let got = events(&server, "hub/orders");
        if got.len() >= 2 {
            Ok(got)
        } else {
            Err(format!("{got:?}"))
        }
    });
    let binary = orders.iter().find(|e| e["id"] == "order-1").unwrap();
    assert_eq!(binary["specversion"], "1.0");
    assert_eq!(binary["source"], "/shop");
    assert_eq!(binary["type"], "com.example.order.created");
    assert_eq!(binary["subject"], "café");
    assert_eq!(binary["time"], "2026-12-01T10:00:00Z");
    assert_eq!(binary["datacontenttype"], "application/json");
    assert_eq!(binary["data"]["total"], 12);
    let structured = orders.iter().find(|e| e["id"] == "inv-7").unwrap();
    assert_eq!(structured["data"]["invoice"], 7);
    eventually(Duration::from_secs(20), || {
        let got = events(&server, "hub/everything");
        if got.iter().any(|e| e["id"] == "inv-7") {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });

    // Refusals: no subscriber, not a CloudEvent, a wrong key.
    let post = |ce_type: &str, auth: &str| {
        http.post(&url)
            .bearer_auth(auth)
            .header("ce-specversion", "1.0")
            .header("ce-id", "x")
            .header("ce-source", "/shop")
            .header("ce-type", ce_type)
            .send()
            .unwrap()
    };
    let response = post("com.example.user.created", &key);
    assert_eq!(response.status(), 404);
    let body = response.text().unwrap();
    assert!(body.contains("no function of app"), "{body}");
    assert_eq!(
        post("com.example.order.created", "sk_nope_nope").status(),
        401
    );
    let response = http
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/cloudevents+json")
        .body(r#"{"specversion":"1.0","id":"1","type":"t"}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().unwrap().contains("no source"));
}
