//! Several events per instance (`concurrency: N`): one instance runs up to
//! N at once before the function scales out; Python runs plain handlers on
//! threads and `async def` ones on one event loop, Node.js its async
//! handlers side by side; each event keeps its own context, and every line
//! it writes is filed under its own request.
//!
//! Runs in both isolation modes: instances come from the template or start
//! afresh, and their output is read the same way.

mod common;

use std::collections::{HashMap, HashSet};

use common::{Server, write_app};

/// Events sent at once.
const AT_ONCE: usize = 4;

const PYTHON_THREADS: &str = r#"import logging, threading, time

log = logging.getLogger()

def handler(event, context):
    start = time.time()
    print("start", context.aws_request_id)
    log.warning("logged %s", context.aws_request_id)
    print("partial", end="")
    time.sleep(event["sleep"])
    print(" end", context.aws_request_id)
    return {"start": start, "end": time.time(), "id": context.aws_request_id,
            "instance": context.log_stream_name, "thread": threading.current_thread().name}
"#;

const PYTHON_ASYNC: &str = r#"import asyncio, threading, time

async def handler(event, context):
    start = time.time()
    print("start", context.aws_request_id)
    print("partial", end="")
    await asyncio.sleep(event["sleep"])
    print(" end", context.aws_request_id)
    return {"start": start, "end": time.time(), "id": context.aws_request_id,
            "instance": context.log_stream_name, "thread": threading.current_thread().name}
"#;

const NODE_ASYNC: &str = r#"exports.handler = async (event, context) => {
  const start = Date.now() / 1000;
  console.log('start', context.awsRequestId);
  process.stdout.write('partial');
  await new Promise((resolve) => setTimeout(resolve, event.sleep * 1000));
  process.stdout.write(' end ' + context.awsRequestId + '\n');
  return { start, end: Date.now() / 1000, id: context.awsRequestId,
    instance: context.logStreamName, thread: 'main' };
};
"#;

/// Sends `AT_ONCE` events to `function` together; returns each answer and
/// whether its instance came from the template.
async fn burst(server: &Server, app: &str, function: &str) -> Vec<(serde_json::Value, String)> {
    let url = format!("{}/v1/apps/{app}/functions/{function}/invoke", server.admin);
    let calls: Vec<_> = (0..AT_ONCE)
        .map(|_| {
            let (http, url, token) = (server.http(), url.clone(), server.token.clone());
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .body(r#"{"sleep": 1.0}"#)
                    .send()
                    .await
                    .unwrap();
                let template = r
                    .headers()
                    .get("x-stratus-from-template")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let status = r.status();
                let text = r.text().await.unwrap();
                assert_eq!(status, 200, "{text}");
                (serde_json::from_str(&text).unwrap(), template)
            })
        })
        .collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

/// One instance ran them all at once, and each line went to its request.
fn ran_together(server: &Server, target: &str, answers: &[(serde_json::Value, String)]) {
    let results: Vec<_> = answers.iter().map(|(r, _)| r).collect();
    let instances: HashSet<_> = results.iter().map(|r| r["instance"].clone()).collect();
    assert_eq!(
        instances.len(),
        1,
        "one instance took them all: {results:?}"
    );
    let latest_start = results.iter().map(|r| r["start"].as_f64().unwrap());
    let earliest_end = results.iter().map(|r| r["end"].as_f64().unwrap());
    assert!(
        latest_start.fold(f64::MIN, f64::max) < earliest_end.fold(f64::MAX, f64::min),
        "the events overlapped: {results:?}"
    );
    let ids: HashSet<String> = results
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), AT_ONCE);

    let records = common::log_records(server, target, &[]);
    let mut whole = HashMap::<String, usize>::new();
    for record in &records {
        let message = record["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains('\u{1e}') && !message.contains('\u{1f}'),
            "marks are removed: {record}"
        );
        // A line that names a request is filed under it.
        if let Some(id) = ids.iter().find(|id| message.contains(id.as_str())) {
            assert_eq!(record["request_id"], id.as_str(), "{record}");
            if message == format!("partial end {id}") {
                *whole.entry(id.clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(
        whole.len(),
        AT_ONCE,
        "each event's partial line was finished whole, apart from the others': {records:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_instance_runs_several_events_at_once_and_files_each_line_under_its_own() {
    let server = Server::start();
    let dir = server.path("many");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: many\nfunctions:\n  threads:\n    runtime: python3\n    handler: threads.handler\n    code: py\n    concurrency: 4\n    max_instances: 1\n  loop:\n    runtime: python3\n    handler: looped.handler\n    code: py\n    concurrency: 4\n    max_instances: 1\n  single:\n    runtime: python3\n    handler: looped.handler\n    code: py\n  wide:\n    runtime: python3\n    handler: threads.handler\n    code: py\n    concurrency: 300\n  node:\n    runtime: nodejs\n    handler: index.handler\n    code: js\n    concurrency: 4\n    max_instances: 1\n",
            ),
            ("py/threads.py", PYTHON_THREADS),
            ("py/looped.py", PYTHON_ASYNC),
            ("js/index.js", NODE_ASYNC),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);

    // Plain Python handlers: on threads of their own.
    let answers = burst(&server, "many", "threads").await;
    ran_together(&server, "many/threads", &answers);
    let threads: HashSet<_> = answers.iter().map(|(r, _)| r["thread"].clone()).collect();
    assert_eq!(threads.len(), AT_ONCE, "{answers:?}");
    // The cold start was made from the loaded template, as with one event.
    assert!(
        answers.iter().any(|(_, template)| template == "true"),
        "{answers:?}"
    );
    // `logging` records carry the request of the event that logged them.
    let records = common::log_records(&server, "many/threads", &[]);
    for (r, _) in &answers {
        let id = r["id"].as_str().unwrap();
        assert!(
            records.iter().any(|l| {
                let m = l["message"].as_str().unwrap_or_default();
                m.starts_with("[WARNING]") && m.ends_with(&format!("\t{id}\tlogged {id}"))
            }),
            "{records:#?}"
        );
    }

    // `async def` handlers: side by side on one event loop.
    let answers = burst(&server, "many", "loop").await;
    ran_together(&server, "many/loop", &answers);
    for (r, _) in &answers {
        assert_eq!(r["thread"], "event-loop", "{answers:?}");
    }

    // With one event at a time, `async def` runs on the main thread's loop.
    let single = server.invoke("many/single", r#"{"sleep": 0}"#);
    assert_eq!(single["result"]["thread"], "MainThread", "{single}");

    // More events than the server's process limit leaves room for: the
    // instance gets a limit that fits a thread for each.
    for _ in 0..2 {
        let wide = server.invoke("many/wide", r#"{"sleep": 0.5}"#);
        assert!(
            wide["result"]["thread"]
                .as_str()
                .unwrap()
                .starts_with("Thread-"),
            "{wide}"
        );
    }
    // Its threads all started, and it lives on.
    let wide = server.invoke("many/wide", r#"{"sleep": 0}"#);
    assert_eq!(wide["cold"], false, "{wide}");

    // Node.js: async handlers side by side.
    let answers = burst(&server, "many", "node").await;
    ran_together(&server, "many/node", &answers);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_out_of_range_is_refused_at_deploy() {
    let server = Server::start();
    let dir = server.path("bad");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: bad\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    concurrency: 1001\n",
            ),
            ("main.py", "def handler(e, c):\n    return 1\n"),
        ],
    );
    let err = server.fails(&["deploy", dir.to_str().unwrap()]);
    assert!(err.contains("concurrency 1001 is out of range"), "{err}");
    assert!(err.contains("from 1 (the default) to 1000"), "{err}");
}
