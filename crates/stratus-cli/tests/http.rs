//! HTTP functions through the public listener, end to end: the payload
//! format 2.0 event each runtime receives and the response its result
//! becomes, adapters written by others (`lambda_http`, `mangum`,
//! `serverless-http`), keys, CORS, streaming, HTTP/2 and every error status.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{
    Server, client, copy_dir, deploy, example, npm_install, pip_install, request_id, write_app,
};
use serde_json::Value;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

const PY_APP: &str = r#"
import base64, json, os, time

def echo(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-trace": os.environ.get("_X_AMZN_TRACE_ID", "")},
        "cookies": ["a=1; Path=/", "b=2"],
        "body": json.dumps(event),
    }

def binary(event, context):
    return {"statusCode": 200, "headers": {"content-type": "image/png"},
            "isBase64Encoded": True, "body": base64.b64encode(bytes(range(256))).decode()}

def plain(event, context):
    return {"hello": "world", "n": 1}

def broken(event, context):
    return {"statusCode": "teapot"}

def fails(event, context):
    raise ValueError("no thanks")

def slow(event, context):
    time.sleep(float(event.get("queryStringParameters", {}).get("s", "3")))
    return {"statusCode": 204}
"#;

const NODE_APP: &str = r#"
exports.echo = async (event) => ({
  statusCode: 200,
  headers: { 'content-type': 'application/json', 'x-trace': process.env._X_AMZN_TRACE_ID || '' },
  cookies: ['a=1; Path=/', 'b=2'],
  body: JSON.stringify(event),
});
exports.binary = async () => ({ statusCode: 200, headers: { 'content-type': 'image/png' },
  isBase64Encoded: true, body: Buffer.from([...Array(256).keys()]).toString('base64') });
exports.plain = async () => ({ hello: 'world', n: 1 });

exports.sse = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream = awslambda.HttpResponseStream.from(responseStream,
    { statusCode: 200, headers: { 'content-type': 'text/event-stream' }, cookies: ['s=1'] });
  for (let i = 0; i < 3; i++) {
    responseStream.write(`data: ${i}\n\n`);
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
  responseStream.end();
});
exports.raw = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType('text/plain');
  responseStream.write('one ');
  responseStream.end('two');
});
exports.hangs = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write('started ');
  await new Promise((resolve) => setTimeout(resolve, 5000));
  responseStream.end('never');
});
exports.callback = (event, context, callback) => {
  setTimeout(() => callback(null, { statusCode: 200, body: 'called back' }), 20);
};
exports.breaks = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write('partial ');
  await new Promise((resolve) => setTimeout(resolve, 100));
  throw new Error('broke off');
});
"#;

fn manifest(app: &str, runtime: &str) -> String {
    format!(
        r#"app: {app}
functions:
  echo:
    runtime: {runtime}
    handler: main.echo
    http:
      path: ["/echo/{{id}}", /files/*]
      methods: [GET, POST]
  binary:
    runtime: {runtime}
    handler: main.binary
    http: {{ path: /binary }}
  plain:
    runtime: {runtime}
    handler: main.plain
    http: {{ path: /plain }}
"#
    )
}

/// Writes `files` into the directory `dir` of the server's temp dir and
/// deploys it; returns what `stratus deploy` printed.
fn deploy_app(server: &Server, dir: &str, files: &[(&str, &str)]) -> String {
    write_app(&server.path(dir), files);
    deploy(server, dir)
}

#[test]
fn each_runtime_gets_the_request_and_shapes_the_response() {
    let server = Server::start();
    let http = client();
    for (app, runtime, file, code) in [
        ("py", "python3", "main.py", PY_APP),
        ("js", "nodejs", "main.js", NODE_APP),
    ] {
        write_app(
            &server.path(app),
            &[("stratus.yaml", &manifest(app, runtime)), (file, code)],
        );
        let out = deploy(&server, app);
        assert!(
            out.contains(&format!(
                "GET,POST {}/{app}/echo/{{id}} -> echo",
                server.public
            )),
            "{out}"
        );

        // Under the app's path prefix, with repeated headers and query keys,
        // cookies, a trace context and a unicode path parameter.
        let response = http
            .get(format!(
                "{}/{app}/echo/%C3%A9t%C3%A9?x=1&x=2&y=a%20b&empty=",
                server.public
            ))
            .header("x-multi", "one")
            .header("cookie", "c=3; d=4")
            .header("traceparent", TRACEPARENT)
            .header("user-agent", "stratus-test")
            .send()
            .unwrap();
        let id = request_id(&response);
        assert_eq!(response.status(), 200, "{runtime}");
        let cookies: Vec<_> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2"], "{runtime}");
        // The function is in the caller's trace, under a span of the
        // platform's (its invocation's handler span), in both forms.
        let xray = response.headers()["x-trace"].to_str().unwrap().to_owned();
        assert!(
            xray.starts_with("Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=")
                && !xray.contains("b7ad6b7169203331")
                && xray.ends_with(";Sampled=1"),
            "{runtime}: the function sees the caller's trace: {xray}"
        );
        let event: Value = response.json().unwrap();
        let traceparent = event["headers"]["traceparent"].as_str().unwrap();
        assert_eq!(
            traceparent,
            format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                &xray[xray.find("Parent=").unwrap() + 7..][..16]
            ),
            "{runtime}"
        );
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["routeKey"], "GET /echo/{id}");
        assert_eq!(event["rawPath"], "/echo/%C3%A9t%C3%A9");
        assert_eq!(event["rawQueryString"], "x=1&x=2&y=a%20b&empty=");
        assert_eq!(event["pathParameters"]["id"], "été");
        assert_eq!(event["queryStringParameters"]["x"], "1,2");
        assert_eq!(event["queryStringParameters"]["y"], "a b");
        assert_eq!(event["queryStringParameters"]["empty"], "");
        assert_eq!(event["cookies"], serde_json::json!(["c=3", "d=4"]));
        assert_eq!(event["headers"]["x-multi"], "one");
        assert_eq!(event["headers"]["x-forwarded-prefix"], format!("/{app}"));
        assert_eq!(event["headers"]["x-forwarded-for"], "127.0.0.1");
        assert!(event["headers"].get("cookie").is_none());
        assert!(event.get("body").is_none() || event["body"].is_null());
        let context = &event["requestContext"];
        assert_eq!(context["requestId"], id.as_str());
        assert_eq!(context["http"]["method"], "GET");
        assert_eq!(context["http"]["path"], "/echo/%C3%A9t%C3%A9");
        assert_eq!(context["http"]["protocol"], "HTTP/1.1");
        assert_eq!(context["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(context["http"]["userAgent"], "stratus-test");
        assert_eq!(context["domainName"], "127.0.0.1");
        assert_eq!(context["stage"], "$default");
        assert!(context["timeEpoch"].as_i64().unwrap() > 1_700_000_000_000);

        // At {app}.localhost, without a prefix; a binary body arrives base64.
        let bytes: Vec<u8> = (0..=255u8).collect();
        let response = http
            .post(format!("{}/files/a/b.bin", server.public))
            .header("host", format!("{app}.localhost"))
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{runtime}");
        let event: Value = response.json().unwrap();
        assert_eq!(event["routeKey"], "POST /files/*");
        assert_eq!(event["pathParameters"]["proxy"], "a/b.bin");
        assert_eq!(
            event["requestContext"]["domainName"],
            format!("{app}.localhost")
        );
        assert!(event["headers"].get("x-forwarded-prefix").is_none());
        assert_eq!(event["isBase64Encoded"], true);
        let body = base64::engine::general_purpose::STANDARD
            .decode(event["body"].as_str().unwrap())
            .unwrap();
        assert_eq!(body, bytes);

        // Text bodies arrive as text, unicode intact.
        let response = http
            .post(format!("{}/{app}/echo/1", server.public))
            .header("content-type", "text/plain; charset=utf-8")
            .body("héllo ✓")
            .send()
            .unwrap();
        let event: Value = response.json().unwrap();
        assert_eq!(event["body"], "héllo ✓");
        assert_eq!(event["isBase64Encoded"], false);

        // isBase64Encoded responses are decoded to their bytes.
        let response = http
            .get(format!("{}/{app}/binary", server.public))
            .send()
            .unwrap();
        assert_eq!(response.headers()["content-type"], "image/png");
        assert_eq!(response.bytes().unwrap().to_vec(), bytes);

        // A result without statusCode is a 200 JSON response.
        let response = http
            .get(format!("{}/{app}/plain", server.public))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: Value = response.json().unwrap();
        assert_eq!(body, serde_json::json!({"hello": "world", "n": 1}));

        // HEAD follows GET, without a body.
        let response = http
            .head(format!("{}/{app}/plain", server.public))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.bytes().unwrap().is_empty());
    }
}

#[test]
fn adapters_written_by_others_work_unchanged() {
    let server = Server::start();
    let http = client();

    // lambda_http (crates.io), buffered and streaming.
    let dir = server.path("lh");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(example("http_fixture"), dir.join("bootstrap")).unwrap();
    write_app(
        &dir,
        &[(
            "stratus.yaml",
            "app: lh\nfunctions:\n  hi:\n    runtime: provided\n    http: { path: \"/hi/{id}\" }\n  stream:\n    runtime: provided\n    env: { STREAM: 1 }\n    http: { path: /stream, streaming: true }\n",
        )],
    );
    deploy(&server, "lh");
    let response = http
        .post(format!("{}/lh/hi/5?name=ada", server.public))
        .body("some text")
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-built-with"], "lambda_http");
    let body: Value = response.json().unwrap();
    assert_eq!(
        body,
        serde_json::json!({"hello": "ada", "id": "5", "method": "POST", "path": "/hi/5", "body": "some text"})
    );
    let response = http
        .get(format!("{}/lh/stream?name=bo", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-built-with"], "lambda_http");
    let text = response.text().unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().all(|l| l.contains("\"hello\":\"bo\"")),
        "{text}"
    );

    // mangum (PyPI) wrapping a Starlette ASGI app.
    let site = pip_install("mangum", &["mangum", "starlette"]);
    let dir = server.path("asgi");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&site).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != ".installed" && entry.file_name() != "bin" {
            copy_dir(&entry.path(), &dir);
        }
    }
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: asgi\nfunctions:\n  web:\n    runtime: python3\n    handler: app.handler\n    http: { path: /* }\n",
            ),
            (
                "app.py",
                r#"
from mangum import Mangum
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def item(request):
    return JSONResponse({"id": request.path_params["id"], "q": request.query_params.getlist("q"),
                         "path": request.url.path, "agent": request.headers.get("user-agent")})

async def create(request):
    response = JSONResponse({"got": await request.json()}, status_code=201)
    response.set_cookie("session", "abc")
    response.set_cookie("theme", "dark")
    return response

app = Starlette(routes=[Route("/items/{id}", item), Route("/items", create, methods=["POST"])])
handler = Mangum(app, lifespan="off")
"#,
            ),
        ],
    );
    deploy(&server, "asgi");
    let response = http
        .get(format!("{}/items/7?q=a&q=b", server.public))
        .header("host", "asgi.localhost")
        .header("user-agent", "ua/1")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(
        body,
        serde_json::json!({"id": "7", "q": ["a", "b"], "path": "/items/7", "agent": "ua/1"})
    );
    let response = http
        .post(format!("{}/asgi/items", server.public))
        .json(&serde_json::json!({"name": "lamp"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let body: Value = response.json().unwrap();
    assert_eq!(body, serde_json::json!({"got": {"name": "lamp"}}));

    // serverless-http (npm) wrapping an Express app.
    let modules = npm_install("express-adapter", &["express@4", "serverless-http@3"]);
    let dir = server.path("express");
    std::fs::create_dir_all(&dir).unwrap();
    copy_dir(&modules, &dir);
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: express\nfunctions:\n  web:\n    runtime: nodejs\n    handler: app.handler\n    http: { path: /* }\n",
            ),
            (
                "app.js",
                r#"
const express = require('express');
const serverless = require('serverless-http');
const app = express();
app.use(express.json());
app.get('/users/:id', (req, res) => res.json({ id: req.params.id, q: req.query.q, path: req.path }));
app.post('/users', (req, res) => res.status(201).cookie('a', '1').cookie('b', '2').json({ got: req.body }));
module.exports.handler = serverless(app);
"#,
            ),
        ],
    );
    deploy(&server, "express");
    let response = http
        .get(format!("{}/express/users/42?q=x", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(
        body,
        serde_json::json!({"id": "42", "q": "x", "path": "/users/42"})
    );
    let response = http
        .post(format!("{}/users", server.public))
        .header("host", "express.localhost")
        .json(&serde_json::json!({"n": [1, 2]}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers().get_all("set-cookie").iter().count(), 2);
    let body: Value = response.json().unwrap();
    assert_eq!(body, serde_json::json!({"got": {"n": [1, 2]}}));
}

/// Sends `raw` on a new connection and reads until the server closes it
/// or `wait` passes.
fn raw_exchange(public: &str, raw: &[u8], wait: Duration) -> String {
    let addr = public.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn errors_have_a_status_a_short_body_and_the_request_id() {
    let server = Server::start_with(&[
        "--max-body",
        "1000",
        "--max-url-bytes",
        "300",
        "--max-header-bytes",
        "8192",
        "--header-timeout",
        "1s",
        "--queue-depth",
        "1",
        "--queue-timeout",
        "5s",
    ]);
    deploy_app(
        &server,
        "e",
        &[
            (
                "stratus.yaml",
                r#"app: e
functions:
  echo:
    runtime: python3
    handler: main.echo
    http: { path: /echo, methods: [GET, POST] }
  broken:
    runtime: python3
    handler: main.broken
    http: { path: /broken }
  fails:
    runtime: python3
    handler: main.fails
    http: { path: /fails }
  slow:
    runtime: python3
    handler: main.slow
    timeout: 1s
    max_instances: 1
    http: { path: /slow }
"#,
            ),
            ("main.py", PY_APP),
        ],
    );
    let http = client();
    let check = |response: reqwest::blocking::Response, status: u16, says: &str| {
        assert_eq!(response.status(), status, "{says}");
        let id = request_id(&response);
        let body: Value = response.json().unwrap();
        assert_eq!(body["requestId"], id.as_str());
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(says), "{status}: {message}");
        id
    };

    let get = |path: &str| http.get(format!("{}{path}", server.public)).send().unwrap();
    check(get("/nope/x"), 404, "no application serves this address");
    check(get("/e/none"), 404, "no route of app e matches GET /none");
    let response = http
        .delete(format!("{}/e/echo", server.public))
        .send()
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, POST");
    check(response, 405, "DELETE is not allowed here");
    let response = http
        .post(format!("{}/e/echo", server.public))
        .body(vec![b'x'; 1001])
        .send()
        .unwrap();
    check(response, 413, "larger than 1000 bytes");
    check(
        get(&format!("/e/echo?{}", "q".repeat(300))),
        414,
        "longer than 300 bytes",
    );
    let response = http
        .get(format!("{}/e/echo", server.public))
        .header("x-big", "b".repeat(9000))
        .send()
        .unwrap();
    check(response, 431, "larger than 8192 bytes (--max-header-bytes)");
    // Far past the limit, the connection's buffer ends it: a bare 431.
    let response = http
        .get(format!("{}/e/echo", server.public))
        .header("x-big", "b".repeat(40_000))
        .send()
        .unwrap();
    assert_eq!(response.status(), 431);

    // The function's own failures.
    let id = check(get("/e/fails"), 502, "the function failed");
    let logs = server.ok(&["logs", "e/fails", "--request-id", &id]);
    assert!(logs.contains("no thanks"), "{logs}");
    let id = check(get("/e/broken"), 502, "not a valid HTTP response");
    let logs = server.ok(&["logs", "e/broken", "--request-id", &id]);
    assert!(
        logs.contains("statusCode must be a number from 200 to 599"),
        "{logs}"
    );
    check(get("/e/slow?s=3"), 504, "did not answer in time");

    // One instance, one waiting place: a third caller is throttled.
    let callers: Vec<_> = (0..3)
        .map(|i| {
            let url = format!("{}/e/slow?s=0.8", server.public);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150 * i));
                client().get(url).send().unwrap()
            })
        })
        .collect();
    let responses: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    let throttled: Vec<_> = responses
        .into_iter()
        .filter(|r| r.status() == 429)
        .collect();
    assert_eq!(throttled.len(), 1);
    let response = throttled.into_iter().next().unwrap();
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    check(response, 429, "too many requests");

    // A client that never finishes its headers is cut off.
    let started = Instant::now();
    let out = raw_exchange(
        &server.public,
        b"GET /e/echo HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(10),
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a slow client held the connection for {:?}: {out}",
        started.elapsed()
    );
}

#[test]
fn keys_guard_routes_and_cors_answers_browsers() {
    let server = Server::start();
    deploy_app(
        &server,
        "k",
        &[
            (
                "stratus.yaml",
                r#"app: k
functions:
  open:
    runtime: python3
    handler: main.plain
    http:
      path: /open
      methods: [GET, PUT]
      cors: { origins: ["https://app.example"], credentials: true, expose_headers: [x-stratus-request-id], max_age: 10m }
  closed:
    runtime: python3
    handler: main.plain
    http: { path: /closed, auth: key }
"#,
            ),
            ("main.py", PY_APP),
        ],
    );
    let http = client();
    let closed = format!("{}/k/closed", server.public);

    let response = http.get(&closed).send().unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let response = http
        .get(&closed)
        .header("x-stratus-key", "sk_nope_nope")
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);

    let key = server
        .ok(&["keys", "create", "k", "--name", "ci"])
        .trim()
        .to_owned();
    assert!(key.starts_with("sk_"), "{key}");
    let response = http
        .get(&closed)
        .header("x-stratus-key", &key)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = http.get(&closed).bearer_auth(&key).send().unwrap();
    assert_eq!(response.status(), 200);
    let listed = server.ok(&["keys", "ls", "k"]);
    assert!(listed.contains("ci"), "{listed}");
    assert!(!listed.contains(&key), "secrets are never listed: {listed}");

    // A revoked key stops working at once.
    server.ok(&["keys", "rm", "k", &key]);
    let response = http
        .get(&closed)
        .header("x-stratus-key", &key)
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);

    // A preflight from an allowed origin is answered by the gateway.
    let open = format!("{}/k/open", server.public);
    let response = http
        .request(reqwest::Method::OPTIONS, &open)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "Content-Type, X-Custom")
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "content-type, x-custom");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    // Other origins and methods are refused.
    let response = http
        .request(reqwest::Method::OPTIONS, &open)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let response = http
        .request(reqwest::Method::OPTIONS, &open)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "DELETE")
        .send()
        .unwrap();
    assert_eq!(response.status(), 405);
    // The actual request carries the CORS headers.
    let response = http
        .get(&open)
        .header("origin", "https://app.example")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-expose-headers"], "x-stratus-request-id");
    assert_eq!(h["vary"], "Origin");
    let response = http
        .get(&open)
        .header("origin", "https://evil.example")
        .send()
        .unwrap();
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[test]
fn overlapping_routes_are_refused_and_nothing_is_deployed() {
    let server = Server::start();
    let ok = "app: o\nfunctions:\n  a:\n    runtime: python3\n    handler: main.plain\n    http: { path: /a }\n";
    deploy_app(&server, "o", &[("stratus.yaml", ok), ("main.py", PY_APP)]);
    let clash = "app: o\nfunctions:\n  a:\n    runtime: python3\n    handler: main.plain\n    http: { path: \"/users/{id}\" }\n  b:\n    runtime: python3\n    handler: main.plain\n    http: { path: \"/users/{name}\", methods: [GET] }\n";
    write_app(&server.path("o"), &[("stratus.yaml", clash)]);
    let err = server.fails(&["deploy", server.path("o").to_str().unwrap()]);
    assert!(
        err.contains("routes /users/{id} (any method) of function a and /users/{name} (GET) of function b overlap"),
        "{err}"
    );
    assert!(err.contains("nothing was deployed"), "{err}");
    let response = client()
        .get(format!("{}/o/a", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "the earlier version still serves");
}

#[test]
fn streamed_responses_arrive_as_they_are_written() {
    let server = Server::start();
    deploy_app(
        &server,
        "s",
        &[
            (
                "stratus.yaml",
                r#"app: s
functions:
  sse:
    runtime: nodejs
    handler: main.sse
    http: { path: /sse, streaming: true }
  buffered:
    runtime: nodejs
    handler: main.sse
    http: { path: /buffered }
  raw:
    runtime: nodejs
    handler: main.raw
    http: { path: /raw, streaming: true }
  breaks:
    runtime: nodejs
    handler: main.breaks
    http: { path: /breaks, streaming: true }
  hangs:
    runtime: nodejs
    handler: main.hangs
    timeout: 1s
    http: { path: /hangs, streaming: true }
  hangs-buffered:
    runtime: nodejs
    handler: main.hangs
    timeout: 1s
    http: { path: /hangs-buffered }
  callback:
    runtime: nodejs
    handler: main.callback
    http: { path: /callback }
"#,
            ),
            ("main.js", NODE_APP),
        ],
    );
    let http = client();

    let started = Instant::now();
    let mut response = http.get(format!("{}/s/sse", server.public)).send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["set-cookie"], "s=1");
    let mut first = [0u8; 9];
    response.read_exact(&mut first).unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first, b"data: 0\n\n");
    let mut rest = String::new();
    response.read_to_string(&mut rest).unwrap();
    let all_at = started.elapsed();
    assert_eq!(rest, "data: 1\n\ndata: 2\n\n");
    assert!(
        all_at - first_at >= Duration::from_millis(700),
        "the first event came {first_at:?} in, the last {all_at:?}: not streamed"
    );

    // A route that does not stream gets the same body at once.
    let response = http
        .get(format!("{}/s/buffered", server.public))
        .send()
        .unwrap();
    assert_eq!(response.headers()["content-length"], "27");
    assert_eq!(
        response.text().unwrap(),
        "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    );

    // Without a prelude, the body is the stream, with its content type.
    let response = http.get(format!("{}/s/raw", server.public)).send().unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.text().unwrap(), "one two");

    // An error part-way cuts the response off instead of completing it.
    let response = http
        .get(format!("{}/s/breaks", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    assert!(
        response.text().is_err(),
        "a broken stream must not look complete"
    );
    let logs = server.ok(&["logs", "s/breaks", "--request-id", &id]);
    assert!(logs.contains("broke off"), "{logs}");

    // A stream that outlives the function's timeout is cut off; buffered,
    // it is a 504.
    let started = Instant::now();
    let response = http
        .get(format!("{}/s/hangs", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.text().is_err(),
        "a timed-out stream must not look complete"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let response = http
        .get(format!("{}/s/hangs-buffered", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 504);

    // A callback handler answers once its event loop is empty, as on Lambda.
    let started = Instant::now();
    let response = http
        .get(format!("{}/s/callback", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "called back");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn http2_pipelining_and_expect_continue() {
    let server = Server::start();
    deploy_app(
        &server,
        "p",
        &[
            (
                "stratus.yaml",
                "app: p\nfunctions:\n  echo:\n    runtime: python3\n    handler: main.echo\n    http: { path: /echo/* }\n",
            ),
            ("main.py", PY_APP),
        ],
    );

    // h2c with prior knowledge, by curl.
    let out = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-i"])
        .arg(format!("{}/p/echo/h2", server.public))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(text.contains("\"protocol\": \"HTTP/2.0\""), "{text}");
    assert!(text.contains("x-stratus-request-id"), "{text}");

    // Two pipelined requests on one connection are answered in order.
    let out = raw_exchange(
        &server.public,
        b"GET /p/echo/first HTTP/1.1\r\nHost: x\r\n\r\nGET /p/echo/second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(20),
    );
    let first = out.find("/echo/first").expect(&out);
    let second = out.find("/echo/second").expect(&out);
    assert!(first < second, "{out}");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");

    // Expect: 100-continue gets its interim response before the body.
    let body = server.path("body.txt");
    std::fs::write(&body, "z".repeat(5000)).unwrap();
    let out = Command::new("curl")
        .args(["-sv", "-H", "Expect: 100-continue", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("{}/p/echo/upload", server.public))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("HTTP/1.1 100 Continue"), "{log}");
    let event: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event["body"].as_str().unwrap().len(), 5000);
}

#[test]
fn a_deploy_under_load_drops_nothing() {
    let server = Server::start();
    let version = |n: u32| format!("def plain(event, context):\n    return {{'version': {n}}}\n");
    let yaml = "app: d\nfunctions:\n  v:\n    runtime: python3\n    handler: main.plain\n    http: { path: /v }\n";
    deploy_app(
        &server,
        "d",
        &[("stratus.yaml", yaml), ("main.py", &version(1))],
    );
    let url = format!("{}/d/v", server.public);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Callers that have been answered by the last version.
    let on_last = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, on_last) = (url.clone(), stop.clone(), on_last.clone());
            std::thread::spawn(move || {
                let http = client();
                let mut seen = Vec::new();
                let started = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(60)
                {
                    let response = http.get(&url).send().expect("request failed");
                    let status = response.status().as_u16();
                    let body = response.text().unwrap();
                    assert_eq!(status, 200, "during a deploy: {body}");
                    let body: Value = serde_json::from_str(&body).unwrap();
                    let version = body["version"].as_u64().unwrap();
                    if version == 4 && seen.last() != Some(&4) {
                        on_last.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    seen.push(version);
                }
                seen
            })
        })
        .collect();
    for n in 2..=4 {
        std::thread::sleep(Duration::from_millis(400));
        write_app(&server.path("d"), &[("main.py", &version(n))]);
        deploy(&server, "d");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while on_last.load(std::sync::atomic::Ordering::Relaxed) < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for caller in callers {
        let seen = caller.join().expect("a caller failed");
        total += seen.len();
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "versions went back: {seen:?}"
        );
        assert_eq!(seen.last(), Some(&4));
    }
    assert!(total > 20, "only {total} requests were made");
}

#[test]
fn https_with_http2_by_alpn_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::self_signed(dir.path());
    let server = Server::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(server.public.starts_with("https://"), "{}", server.public);
    deploy_app(
        &server,
        "t",
        &[
            (
                "stratus.yaml",
                "app: t\nfunctions:\n  echo:\n    runtime: python3\n    handler: main.echo\n    http: { path: \"/echo/{id}\" }\n",
            ),
            ("main.py", PY_APP),
        ],
    );
    for (flag, status_line, protocol) in [
        ("--http2", "HTTP/2 200", "HTTP/2.0"),
        ("--http1.1", "HTTP/1.1 200", "HTTP/1.1"),
    ] {
        let out = Command::new("curl")
            .args(["-s", "-i", flag, "--cacert"])
            .arg(&cert)
            .arg(format!("{}/t/echo/1", server.public))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(status_line), "{text}");
        assert!(
            text.contains(&format!("\"protocol\": \"{protocol}\"")),
            "{text}"
        );
        assert!(text.contains("\"x-forwarded-proto\": \"https\""), "{text}");
    }
    // Plain HTTP on the TLS port is not answered as HTTP.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(server.public.replace("https://", "http://") + "/t/echo/1")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");
}

#[test]
fn a_bad_certificate_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = Command::new(common::BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&empty)
        .arg("--tls-key")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot serve HTTPS") && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
}

#[test]
fn connections_past_the_cap_wait_their_turn() {
    let server = Server::start_with(&["--max-connections", "1", "--header-timeout", "1s"]);
    deploy_app(
        &server,
        "c",
        &[
            (
                "stratus.yaml",
                "app: c\nfunctions:\n  plain:\n    runtime: python3\n    handler: main.plain\n    http: { path: /plain }\n",
            ),
            ("main.py", PY_APP),
        ],
    );
    let url = format!("{}/c/plain", server.public);
    // Warm, and alone: answered at once.
    let response = client().get(&url).send().unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    std::thread::sleep(Duration::from_millis(200));

    // A client that holds the one connection slot without finishing its
    // headers makes the next one wait until it is cut off.
    let addr = server.public.trim_start_matches("http://").to_owned();
    let mut holder = TcpStream::connect(&addr).unwrap();
    holder
        .write_all(b"GET /c/plain HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let response = reqwest::blocking::Client::new().get(&url).send().unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(
        waited >= Duration::from_millis(600),
        "served at once ({waited:?}) past a cap of one connection"
    );
    drop(holder);
}
