//! Traces across a chain of functions: an HTTP function that invokes a
//! second asynchronously through the platform API, which sends to a queue
//! consumed by a third that makes a span of its own with the OpenTelemetry
//! SDK. One trace, with the right parents and links, shown by `stratus
//! trace` and exported over OTLP/HTTP to a receiver that decodes it with
//! the `opentelemetry-proto` definitions.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, client, write_app};
use serde_json::Value;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: each request to /v1/traces is decoded with the
/// `opentelemetry-proto` message classes and its spans written to `out`,
/// one JSON object a line. It answers 200, as a collector does.
const RECEIVER: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

port, out = int(sys.argv[1]), sys.argv[2]

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with open(out, "a") as f:
            for rs in request.resource_spans:
                resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        f.write(json.dumps({
                            "path": self.path,
                            "content_type": self.headers["content-type"],
                            "service": resource.get("service.name"),
                            "scope": ss.scope.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_id": s.parent_span_id.hex(),
                            "name": s.name,
                            "kind": s.kind,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                            "status": s.status.code,
                            "links": [[l.trace_id.hex(), l.span_id.hex()] for l in s.links],
                            "attributes": {kv.key: kv.value.WhichOneof("value") for kv in s.attributes},
                        }) + "\n")
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

const MANIFEST: &str = r#"app: chain
functions:
  front:
    runtime: python3
    handler: front.handler
    http: { path: /go, methods: [GET] }
  middle:
    runtime: python3
    handler: middle.handler
  last:
    runtime: python3
    handler: last.handler
    code: last
    events:
      - queue: jobs
        batch_size: 10
        batch_window: 1s
queues:
  jobs:
"#;

/// Calls the platform API, passing the trace context on as any
/// instrumented HTTP client would (here by hand, from TRACEPARENT).
const PLATFORM: &str = r#"
import json, os, urllib.request

def call(path, body, **headers):
    request = urllib.request.Request(
        os.environ["STRATUS_API_URL"] + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": "Bearer " + os.environ["STRATUS_API_TOKEN"],
                 "traceparent": os.environ["TRACEPARENT"], **headers})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")
"#;

const FRONT: &str = r#"
import json, os
from platform_api import call

def handler(event, context):
    call("/v1/apps/chain/functions/middle/invoke", {"n": 1},
         **{"X-Stratus-Invocation-Type": "Event"})
    return {"statusCode": 200, "body": json.dumps({
        "header": event["headers"].get("traceparent"),
        "env": os.environ.get("TRACEPARENT"),
        "context": context.traceparent,
    })}
"#;

const MIDDLE: &str = r#"
from platform_api import call

def handler(event, context):
    call("/v1/apps/chain/queues/jobs/messages", {"job": event["n"]})
    call("/v1/apps/chain/queues/jobs/messages", {"job": event["n"] + 1})
    return "sent"
"#;

/// The OpenTelemetry SDK inside the function: its span's parent comes
/// from TRACEPARENT, as the SDK's own propagator reads it.
const LAST: &str = r#"
import json, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("last")

def handler(event, context):
    parent = TraceContextTextMapPropagator().extract({"traceparent": os.environ["TRACEPARENT"]})
    with tracer.start_as_current_span("resize", context=parent) as span:
        own = span.get_span_context()
        print("SDK-SPAN " + json.dumps({
            "trace_id": format(own.trace_id, "032x"),
            "span_id": format(own.span_id, "016x"),
            "parent_id": format(span.parent.span_id, "016x"),
            "records": len(event["Records"]) if "Records" in event else len(event),
        }))
    return {"batchItemFailures": []}
"#;

struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn receiver(dir: &Path, port: u16, out: &Path) -> Receiver {
    let script = dir.join("receiver.py");
    std::fs::write(&script, RECEIVER).unwrap();
    let child = Command::new(common::python())
        .arg(&script)
        .arg(port.to_string())
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with opentelemetry-proto (pip install opentelemetry-proto)");
    common::eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|err| format!("the OTLP receiver did not start: {err}"))
    });
    Receiver(child)
}

fn exported(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn a_chain_of_functions_is_one_trace_shown_and_exported() {
    let otlp_port = common::free_port();
    let server = Server::start_with(&["--otlp-endpoint", &format!("http://127.0.0.1:{otlp_port}")]);
    let out = server.path("otlp.jsonl");
    let received = receiver(&server.path(""), otlp_port, &out);

    let app = server.path("chain");
    write_app(
        &app,
        &[
            ("stratus.yaml", MANIFEST),
            ("platform_api.py", PLATFORM),
            ("front.py", FRONT),
            ("middle.py", MIDDLE),
            ("last/last.py", LAST),
            ("last/requirements.txt", "opentelemetry-sdk\n"),
        ],
    );
    common::deploy(&server, "chain");

    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let response = client()
        .get(format!("{}/chain/go", server.public))
        .header("traceparent", &caller)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().unwrap();
    // The function sees one context three ways: the event's header, the
    // environment (one event at a time) and the context object.
    let front_parent = seen["header"].as_str().unwrap().to_owned();
    assert_eq!(seen["env"], front_parent.as_str(), "{seen}");
    assert_eq!(seen["context"], front_parent.as_str(), "{seen}");
    assert!(front_parent.starts_with(&format!("00-{CALLER_TRACE}-")));
    assert!(!front_parent.contains(CALLER_SPAN));
    let front_handler = &front_parent[36..52];

    // The last function ran (after the queue's batch window) and made its
    // span with the SDK.
    let sdk: Value = common::eventually(Duration::from_secs(60), || {
        let logs = server.ok(&["logs", "chain/last"]);
        logs.lines()
            .find_map(|line| {
                line.split_once("SDK-SPAN ")
                    .map(|(_, json)| json.to_owned())
            })
            .map(|json| serde_json::from_str(&json).unwrap())
            .ok_or(logs)
    });

    // Every span is in the caller's trace: the one trace of the chain.
    let trace: Value = common::eventually(Duration::from_secs(15), || {
        let shown = server.cli(&["trace", CALLER_TRACE, "--output", "json"]);
        let trace: Value = serde_json::from_slice(&shown.stdout)
            .map_err(|_| String::from_utf8_lossy(&shown.stderr).into_owned())?;
        let done = trace["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["name"] == "last"));
        if done {
            Ok(trace)
        } else {
            Err(trace.to_string())
        }
    });
    let spans = trace["spans"].as_array().unwrap();
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    let named =
        |name: &str| -> Vec<&Value> { spans.iter().filter(|s| s["name"] == name).collect() };
    let parent_of = |span: &Value| -> &Value {
        by_id
            .get(span["parent_id"].as_str().unwrap_or(""))
            .unwrap_or_else(|| panic!("the parent of {span} is in the trace"))
    };
    let one = |name: &str| -> &Value {
        let found = named(name);
        assert_eq!(found.len(), 1, "one {name} span: {trace:#}");
        found[0]
    };

    // front: under the caller's span; its handler span is what it saw.
    let front = one("front");
    assert_eq!(front["parent_id"], CALLER_SPAN);
    assert_eq!(front["kind"], "server");
    let handlers: Vec<&Value> = named("handler")
        .into_iter()
        .filter(|h| h["parent_id"] == front["span_id"])
        .collect();
    assert_eq!(handlers.len(), 1, "{trace:#}");
    let front_handler_span = handlers[0];
    assert_eq!(front_handler_span["span_id"], front_handler);

    // The asynchronous invoke: a producer span under front's handler, and
    // middle under it.
    let queued = one("queue event for middle");
    assert_eq!(queued["kind"], "producer");
    assert_eq!(queued["parent_id"], front_handler);
    let middle = one("middle");
    assert_eq!(parent_of(middle)["span_id"], queued["span_id"]);

    // Two sends to the queue, each a producer span under middle's handler.
    let sends = named("send to queue jobs");
    assert_eq!(sends.len(), 2, "{trace:#}");
    for send in &sends {
        let handler = parent_of(send);
        assert_eq!(handler["name"], "handler");
        assert_eq!(handler["parent_id"], middle["span_id"]);
    }

    // The batch: under the first message's producer, linked to both.
    let last = one("last");
    assert_eq!(parent_of(last)["name"], "send to queue jobs");
    let links: Vec<&str> = last["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(sdk["records"], 2, "one batch of both messages: {sdk}");
    for send in &sends {
        let link = format!("{CALLER_TRACE}-{}", send["span_id"].as_str().unwrap());
        assert!(links.contains(&link.as_str()), "{links:?} links {link}");
    }

    // The SDK's span is inside the platform's: under last's handler span.
    let last_handler = spans
        .iter()
        .find(|s| s["name"] == "handler" && s["parent_id"] == last["span_id"])
        .unwrap();
    assert_eq!(sdk["trace_id"], CALLER_TRACE, "{sdk}");
    assert_eq!(sdk["parent_id"], last_handler["span_id"], "{sdk}");

    // Cold starts show their phases inside the invocation.
    assert_eq!(last["attributes"]["faas.coldstart"], true);
    assert!(
        spans
            .iter()
            .any(|s| s["parent_id"] == last["span_id"] && s["name"] == "sandbox"),
        "{trace:#}"
    );

    // The waterfall, by trace id and by an invocation's request id.
    let text = server.ok(&["trace", CALLER_TRACE]);
    assert!(
        text.starts_with(&format!("trace {CALLER_TRACE}  ")),
        "{text}"
    );
    for name in [
        "front",
        "  handler",
        "queue event for middle",
        "middle",
        "send to queue jobs",
        "last",
    ] {
        assert!(text.contains(name), "{name} in\n{text}");
    }
    let request_id = last["request_id"].as_str().unwrap();
    let by_request = server.ok(&["trace", request_id]);
    assert!(
        by_request.starts_with(&format!("trace {CALLER_TRACE}  ")),
        "{by_request}"
    );
    let unknown = server.fails(&["trace", "no-such-request"]);
    assert!(
        unknown.contains("no spans of no-such-request are kept"),
        "{unknown}"
    );

    // The collector received the same spans, decoded by the
    // opentelemetry-proto definitions, as the app's service.
    let exported = common::eventually(Duration::from_secs(15), || {
        let all = exported(&out);
        let ours: Vec<Value> = all
            .into_iter()
            .filter(|s| s["trace_id"] == CALLER_TRACE)
            .collect();
        if ours.len() >= spans.len() {
            Ok(ours)
        } else {
            Err(format!("{} of {} spans exported", ours.len(), spans.len()))
        }
    });
    for span in spans {
        let sent = exported
            .iter()
            .find(|e| e["span_id"] == span["span_id"])
            .unwrap_or_else(|| panic!("{span} exported"));
        assert_eq!(sent["path"], "/v1/traces");
        assert_eq!(sent["content_type"], "application/x-protobuf");
        assert_eq!(sent["service"], "chain");
        assert_eq!(sent["scope"], "stratus");
        assert_eq!(sent["name"], span["name"]);
        assert_eq!(
            sent["parent_id"],
            span["parent_id"].as_str().unwrap_or(""),
            "{sent}"
        );
        assert_eq!(
            sent["start"].as_u64().unwrap() as i64,
            span["start_ns"].as_i64().unwrap()
        );
        assert!(sent["end"].as_u64() >= sent["start"].as_u64());
    }
    let exported_last = exported.iter().find(|e| e["name"] == "last").unwrap();
    assert_eq!(exported_last["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(exported_last["links"].as_array().unwrap().len(), 2);
    assert_eq!(exported_last["attributes"]["faas.coldstart"], "bool_value");

    // With the collector gone, export drops and counts; nothing waits.
    drop(received);
    let started = std::time::Instant::now();
    let response = client()
        .get(format!("{}/chain/go", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    common::eventually(Duration::from_secs(30), || {
        let metrics = client()
            .get(format!("{}/metrics", server.admin))
            .send()
            .and_then(|r| r.text())
            .map_err(|e| e.to_string())?;
        let dropped = metrics.lines().any(|l| {
            l.starts_with("stratus_trace_spans_total{")
                && l.contains("result=\"dropped\"")
                && l.contains("reason=\"export\"")
        });
        if dropped { Ok(()) } else { Err(metrics) }
    });
}
