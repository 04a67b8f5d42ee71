//! HTTP services end to end: web apps written for no platform (Flask under
//! gunicorn, Express, a `ws` WebSocket server, a grpc-js server) run
//! unchanged behind the gateway; scale from zero, capacity, crashes,
//! draining on redeploy and logs.
//!
//! The fixture apps and client scripts live in `tests/services/`; each was
//! checked against the app run directly (PORT set, no gateway), so a failure
//! here is the platform's.
//!
//! Runs in both isolation modes: services are fenced only under namespaces.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    Server, client, copy_dir, count, deploy, eventually, lines, log_records, npm_install,
    pip_install, request_id, write_app,
};
use serde_json::{Value, json};

const FLASK_APP: &str = include_str!("services/flask_app.py");
const EXPRESS_SERVER: &str = include_str!("services/express_server.js");
const WS_SERVER: &str = include_str!("services/ws_server.js");
const GRPC_SERVER: &str = include_str!("services/grpc_server.js");
const GREETER_PROTO: &str = include_str!("services/greeter.proto");
/// A dependency-free Node server: `/crash`, `/slow?ms=N`, anything else
/// answers `{path, boot, version}`; one stdout line per request.
const PLAIN_SERVER: &str = include_str!("services/plain_server.js");

// ---------------------------------------------------------------------------
// Dependencies, installed once into target/test-deps.

fn flask_site() -> PathBuf {
    pip_install("svc-flask", &["flask>=3", "gunicorn>=22"])
}

fn django_site() -> PathBuf {
    pip_install("svc-django", &["django>=5,<6"])
}

fn express_modules() -> PathBuf {
    npm_install("svc-express", &["express@4"])
}

fn ws_modules() -> PathBuf {
    npm_install("svc-ws", &["ws@8"])
}

fn grpc_modules() -> PathBuf {
    npm_install("svc-grpc", &["@grpc/grpc-js@1", "@grpc/proto-loader@0.7"])
}

/// Copies what pip installed into `site` into the code directory `dir`
/// (console scripts aside): under isolation the service sees only its code.
fn copy_site(site: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(site).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != ".installed" && entry.file_name() != "bin" {
            copy_dir(&entry.path(), dir);
        }
    }
}

/// Copies an installed `node_modules` into the code directory `dir`.
fn copy_modules(modules: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    copy_dir(modules, dir);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/services")
        .join(name)
}

// ---------------------------------------------------------------------------
// Small helpers.

/// `127.0.0.1:PORT` of the public listener.
fn authority(server: &Server) -> String {
    server.public.trim_start_matches("http://").to_owned()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The entry of `service` of `app` in `stratus status APP --output json`.
fn service_status(server: &Server, app: &str, service: &str) -> Value {
    let out = server.ok(&["status", app, "--output", "json"]);
    let status: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("stratus status printed no JSON ({e}): {out}"));
    let apps = status["apps"]
        .as_array()
        .unwrap_or_else(|| panic!("no apps in {status}"));
    let entry = apps
        .iter()
        .find(|a| a["app"] == app)
        .unwrap_or_else(|| panic!("no app {app} in {status}"));
    entry["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services in {entry}"))
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("no service {service} in {entry}"))
        .clone()
}

/// A field of a structured log record (under `fields`, or at the top).
fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    match record.get("fields").and_then(|f| f.get(name)) {
        Some(value) => value,
        None => &record[name],
    }
}

/// The last element of a `Forwarded` header, as lowercase keys and unquoted
/// values.
fn forwarded(value: &str) -> HashMap<String, String> {
    value
        .rsplit(',')
        .next()
        .unwrap()
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            )
        })
        .collect()
}

/// A Node process that is killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `node SCRIPT ARGS` with `NODE_PATH=modules`; returns its stdout,
/// failing if it runs longer than `wait` or exits non-zero.
fn run_node(modules: &Path, script: &Path, args: &[&str], wait: Duration) -> String {
    let mut node = Node(
        Command::new("node")
            .arg(script)
            .args(args)
            .env("NODE_PATH", modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node"),
    );
    let stdout = lines(node.0.stdout.take().unwrap());
    let stderr = lines(node.0.stderr.take().unwrap());
    let deadline = Instant::now() + wait;
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = node.0.kill();
            let _ = node.0.wait();
            let out: Vec<String> = stdout.try_iter().collect();
            let err: Vec<String> = stderr.try_iter().collect();
            panic!("{} ran past {wait:?}: {out:?} {err:?}", script.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out: Vec<String> = stdout.iter().collect();
    let err: Vec<String> = stderr.iter().collect();
    assert!(
        status.success(),
        "{}: {status}: {out:?} {err:?}",
        script.display()
    );
    out.join("\n")
}

/// `tests/services/ws_client.js`: a `ws` client driven by commands on its
/// stdin (`text S`, `binary HEX`, `ping HEX`, `close CODE`) that reports
/// each event as a JSON line (`open`, `text`, `binary`, `pong`, `close`,
/// `error`, and `socket-end` / `socket-error` of its TCP connection).
struct WsClient {
    node: Node,
    stdin: ChildStdin,
    events: Receiver<String>,
    seen: Vec<Value>,
}

impl WsClient {
    /// Connects and waits for the open event.
    fn connect(modules: &Path, url: &str, headers: &[&str]) -> WsClient {
        let mut child = Command::new("node")
            .arg(fixture("ws_client.js"))
            .arg(url)
            .args(headers)
            .env("NODE_PATH", modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let stdin = child.stdin.take().unwrap();
        let events = lines(child.stdout.take().unwrap());
        let mut ws = WsClient {
            node: Node(child),
            stdin,
            events,
            seen: Vec::new(),
        };
        let open = ws.next(Duration::from_secs(30));
        assert_eq!(open["ev"], "open", "{url}: {open}");
        ws
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn next(&mut self, wait: Duration) -> Value {
        let line = self.events.recv_timeout(wait).unwrap_or_else(|e| {
            panic!(
                "no WebSocket event within {wait:?} ({e}); so far: {:?}",
                self.seen
            )
        });
        let event: Value = serde_json::from_str(&line).unwrap();
        self.seen.push(event.clone());
        event
    }

    /// Sends a text message and returns the text that comes back.
    fn echo(&mut self, text: &str) -> String {
        self.send(&format!("text {text}"));
        let reply = self.next(Duration::from_secs(10));
        assert_eq!(reply["ev"], "text", "reply to {text:?}: {reply}");
        reply["data"].as_str().unwrap().to_owned()
    }

    /// Waits for the close event; returns it, when it came, and the events
    /// before it.
    fn closed(&mut self, wait: Duration) -> (Value, Instant, Vec<Value>) {
        let deadline = Instant::now() + wait;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.next(left.max(Duration::from_millis(1)));
            if event["ev"] == "close" {
                return (event, Instant::now(), before);
            }
            before.push(event);
        }
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        let _ = self.node.0.kill();
    }
}

/// One response read off a raw HTTP/1.1 connection.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one final response (interim 1xx skipped), framed by
/// content-length or chunked encoding.
fn read_response(reader: &mut impl BufRead) -> RawResponse {
    fn read_line(reader: &mut impl BufRead) -> String {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    }
    loop {
        let line = read_line(reader);
        assert!(
            !line.is_empty(),
            "the connection closed instead of answering"
        );
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = read_line(reader);
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let size = read_line(reader);
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
                if size == 0 {
                    while !read_line(reader).trim_end().is_empty() {}
                    break;
                }
                let mut chunk = vec![0; size];
                reader.read_exact(&mut chunk).unwrap();
                response.body.extend_from_slice(&chunk);
                read_line(reader);
            }
        } else if let Some(length) = response.header("content-length") {
            let mut body = vec![0; length.parse().unwrap()];
            reader.read_exact(&mut body).unwrap();
            response.body = body;
        }
        return response;
    }
}

/// `n` bytes that do not compress, the same every run.
fn noise(n: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

// ---------------------------------------------------------------------------

#[test]
fn a_flask_app_runs_unchanged_under_gunicorn() {
    let server = Server::start();
    copy_site(&flask_site(), &server.path("flask/web"));
    write_app(
        &server.path("flask"),
        &[
            (
                "stratus.yaml",
                r#"app: flask
services:
  web:
    code: ./web
    command: ["python3", "-m", "gunicorn", "-b", "0.0.0.0:$PORT", "app:app"]
    http: { path: /* }
    env: { GREETING: hello from the manifest }
"#,
            ),
            ("web/app.py", FLASK_APP),
        ],
    );
    deploy(&server, "flask");
    let http = client();
    let authority = authority(&server);

    // Under /APP: the prefix is stripped and announced; the app sees the
    // host the client used and the forwarding headers.
    let response = http
        .get(format!("{}/flask/info/a/b?q=1&q=2", server.public))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let body: Value = response.json().unwrap();
    assert_eq!(body["path"], "/info/a/b", "{body}");
    assert_eq!(body["query"]["q"], json!(["1", "2"]), "{body}");
    assert_eq!(body["greeting"], "hello from the manifest", "{body}");
    let seen = &body["headers"];
    assert_eq!(seen["host"], authority.as_str(), "{seen}");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert_eq!(seen["x-forwarded-host"], authority.as_str(), "{seen}");
    assert_eq!(seen["x-forwarded-prefix"], "/flask", "{seen}");
    assert_eq!(seen["x-stratus-request-id"], id.as_str(), "{seen}");
    let fwd = forwarded(seen["forwarded"].as_str().expect("a Forwarded header"));
    assert!(
        fwd.get("for").is_some_and(|f| f.starts_with("127.0.0.1")),
        "{seen}"
    );
    assert_eq!(
        fwd.get("host").map(String::as_str),
        Some(authority.as_str()),
        "{seen}"
    );
    assert_eq!(fwd.get("proto").map(String::as_str), Some("http"), "{seen}");

    // At APP.localhost: no prefix.
    let response = http
        .get(format!("{}/info/z", server.public))
        .header("host", "flask.localhost")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(body["path"], "/info/z", "{body}");
    let seen = &body["headers"];
    assert_eq!(seen["host"], "flask.localhost", "{seen}");
    assert_eq!(seen["x-forwarded-host"], "flask.localhost", "{seen}");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert!(seen["x-forwarded-prefix"].is_null(), "{seen}");
    let fwd = forwarded(seen["forwarded"].as_str().expect("a Forwarded header"));
    assert_eq!(
        fwd.get("host").map(String::as_str),
        Some("flask.localhost"),
        "{seen}"
    );

    // 20 MiB of unknown length, streamed chunked: the app reads it all and
    // hashes it; the gateway passes it on as it comes (still chunked).
    let big = noise(20 * 1024 * 1024);
    let path = server.path("big.bin");
    std::fs::write(&path, &big).unwrap();
    let expected = sha256_of(&path);
    let started = Instant::now();
    let response = http
        .post(format!("{}/flask/sha256", server.public))
        .header("content-type", "application/octet-stream")
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(big)))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(body["size"], 20 * 1024 * 1024, "{body}");
    assert_eq!(body["sha256"], expected.as_str(), "{body}");
    assert_eq!(
        body["transfer_encoding"], "chunked",
        "the gateway buffered the body: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    // Expect: 100-continue gets its interim response and the body follows.
    let small = server.path("small.bin");
    std::fs::write(&small, noise(1024 * 1024)).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-v",
            "--max-time",
            "30",
            "-H",
            "Expect: 100-continue",
        ])
        .args([
            "-H",
            "content-type: application/octet-stream",
            "--data-binary",
        ])
        .arg(format!("@{}", small.display()))
        .arg(format!("{}/flask/sha256", server.public))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("< HTTP/1.1 100 Continue"), "{log}");
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["size"], 1024 * 1024, "{body}");
    assert_eq!(body["sha256"], sha256_of(&small).as_str(), "{body}");

    // Two requests on one kept-alive connection (gunicorn's sync worker
    // closes each upstream connection: the client's must stay open).
    let stream = TcpStream::connect(&authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut ids = Vec::new();
    for name in ["one", "two"] {
        (&stream)
            .write_all(
                format!("GET /flask/info/{name} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
            )
            .unwrap();
        let response = read_response(&mut reader);
        assert_eq!(response.status, 200, "{name}");
        assert_ne!(
            response.header("connection").map(str::to_ascii_lowercase),
            Some("close".to_owned()),
            "{name}: the connection is not kept alive"
        );
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["path"], format!("/info/{name}"), "{body}");
        ids.push(
            response
                .header("x-stratus-request-id")
                .expect("a request id")
                .to_owned(),
        );
    }
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn an_express_app_answers_and_streams_server_sent_events() {
    let server = Server::start();
    let dir = server.path("ex");
    copy_modules(&express_modules(), &dir);
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: ex\nservices:\n  api:\n    command: node server.js\n    readiness: { path: /healthz, timeout: 30s }\n    http: { path: /* }\n",
            ),
            ("server.js", EXPRESS_SERVER),
        ],
    );
    deploy(&server, "ex");
    let http = client();

    let response = http
        .get(format!("{}/ex/api/items/7?q=z", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    request_id(&response);
    let body: Value = response.json().unwrap();
    assert_eq!(
        body,
        json!({"id": "7", "q": "z", "path": "/api/items/7", "host": authority(&server)})
    );
    let response = http
        .post(format!("{}/api/items", server.public))
        .header("host", "ex.localhost")
        .json(&json!({"name": "lamp", "n": [1, 2]}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().unwrap();
    assert_eq!(body, json!({"got": {"name": "lamp", "n": [1, 2]}}));

    // Three events written 300 ms apart: the first reaches the client well
    // before the last is written.
    let response = http
        .get(format!("{}/ex/events", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = Vec::new();
    let mut first_seen = None;
    for line in BufReader::new(response).lines() {
        let line = line.unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            first_seen.get_or_insert_with(now_ms);
            events.push(serde_json::from_str::<Value>(data).unwrap());
        }
    }
    let ns: Vec<_> = events.iter().map(|e| e["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [0, 1, 2], "{events:?}");
    let first_seen = first_seen.unwrap();
    let last_written = events[2]["at"].as_i64().unwrap();
    assert!(
        first_seen + 300 <= last_written,
        "the first event arrived at {first_seen}, the last was written at {last_written}: buffered"
    );
}

#[test]
fn websockets_echo_through_the_gateway() {
    let server = Server::start();
    let modules = ws_modules();
    let dir = server.path("wsapp");
    copy_modules(&modules, &dir);
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: wsapp\nservices:\n  echo:\n    command: [node, server.js]\n    env: { VERSION: v1 }\n    http: { path: /* }\n",
            ),
            ("server.js", WS_SERVER),
        ],
    );
    deploy(&server, "wsapp");
    let ws_base = server.public.replacen("http://", "ws://", 1);
    let authority = authority(&server);

    // The same port answers plain HTTP.
    let response = client()
        .get(format!("{}/wsapp/", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "plain http, version v1\n");

    let mut ws = WsClient::connect(&modules, &format!("{ws_base}/wsapp/chat/room1?x=1"), &[]);
    let info: Value = serde_json::from_str(&ws.echo("info")).unwrap();
    assert_eq!(
        info,
        json!({"version": "v1", "url": "/chat/room1?x=1", "host": authority, "prefix": "/wsapp"})
    );
    assert_eq!(ws.echo("héllo ✓"), "v1:héllo ✓");
    ws.send("binary 00ff10807f");
    let reply = ws.next(Duration::from_secs(10));
    assert_eq!(reply["ev"], "binary", "{reply}");
    assert_eq!(reply["hex"], "00ff10807f", "{reply}");
    // A larger binary message, split across frames and reads on the way.
    let big: String = noise(256 * 1024)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ws.send(&format!("binary {big}"));
    let reply = ws.next(Duration::from_secs(10));
    assert_eq!(reply["ev"], "binary");
    assert!(
        reply["hex"] == big.as_str(),
        "the 256 KiB message came back altered"
    );
    ws.send("ping 6869");
    let reply = ws.next(Duration::from_secs(10));
    assert_eq!(reply["ev"], "pong", "{reply}");
    assert_eq!(reply["hex"], "6869");

    // Held open a while, it still works.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ws.echo("still here"), "v1:still here");
    ws.send("close 1000");
    let (close, _, before) = ws.closed(Duration::from_secs(10));
    assert_eq!(close["code"], 1000, "{close} after {before:?}");
    assert!(
        !before
            .iter()
            .any(|e| e["ev"] == "error" || e["ev"] == "socket-error"),
        "{before:?}"
    );

    // At APP.localhost, without the prefix.
    let mut ws = WsClient::connect(
        &modules,
        &format!("{ws_base}/chat"),
        &["Host: wsapp.localhost"],
    );
    let info: Value = serde_json::from_str(&ws.echo("info")).unwrap();
    assert_eq!(
        info,
        json!({"version": "v1", "url": "/chat", "host": "wsapp.localhost", "prefix": null})
    );
}

#[test]
fn grpc_calls_reach_a_grpc_js_server_with_their_trailers() {
    let server = Server::start();
    let modules = grpc_modules();
    let dir = server.path("grpcapp");
    copy_modules(&modules, &dir);
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: grpcapp\nservices:\n  greeter:\n    command: [node, server.js]\n    http: { path: /* }\n",
            ),
            ("server.js", GRPC_SERVER),
            ("greeter.proto", GREETER_PROTO),
        ],
    );
    deploy(&server, "grpcapp");

    // h2c to the public listener, routed by the authority.
    let out = run_node(
        &modules,
        &fixture("grpc_client.js"),
        &[
            &authority(&server),
            "grpcapp.localhost",
            fixture("greeter.proto").to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let result: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("the gRPC client printed no JSON ({e}): {out}"));

    let hello = &result["hello"];
    assert!(hello["error"].is_null(), "{result}");
    assert_eq!(hello["reply"]["message"], "hello ada", "{result}");
    assert_eq!(hello["reply"]["client_header"], "grpc-js", "{result}");
    assert_eq!(hello["reply"]["authority"], "grpcapp.localhost", "{result}");
    assert!(
        !hello["reply"]["request_id"].as_str().unwrap().is_empty(),
        "the app gets x-stratus-request-id: {result}"
    );
    assert_eq!(hello["trailers"]["x-done"], "yes", "{result}");

    assert_eq!(result["count"]["got"], json!([1, 2, 3, 4, 5]), "{result}");
    assert_eq!(result["count"]["code"], 0, "{result}");

    let fail = &result["fail"];
    assert_eq!(fail["code"], 9, "FAILED_PRECONDITION: {result}");
    assert_eq!(fail["details"], "not today", "{result}");
    assert_eq!(fail["trailers"]["x-why"], "because bob", "{result}");
    assert_eq!(fail["trailers"]["x-detail-bin"], "hex:000102ff", "{result}");
}

#[test]
fn a_burst_at_a_cold_service_is_served() {
    // 500 clients, all from 127.0.0.1 here: past the default cap per address.
    let server = Server::start_with(&["--max-connections-per-address", "0"]);
    write_app(
        &server.path("burst"),
        &[
            (
                "stratus.yaml",
                "app: burst\nservices:\n  hello:\n    command: [node, server.js]\n    min_instances: 0\n    idle_timeout: 30s\n    http: { path: /* }\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "burst");
    let before = service_status(&server, "burst", "hello");
    assert_eq!(
        count(&before["instances"]["ready"]) + count(&before["instances"]["starting"]),
        0,
        "not cold: {before}"
    );

    let public = server.public.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let outcomes: Vec<String> = runtime.block_on(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let calls: Vec<_> = (0..500)
            .map(|i| {
                let (http, url) = (http.clone(), format!("{public}/burst/hello/{i}"));
                tokio::spawn(async move {
                    match http.get(&url).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            match response.json::<Value>().await {
                                Ok(body)
                                    if status == 200 && body["path"] == format!("/hello/{i}") =>
                                {
                                    "200".to_owned()
                                }
                                Ok(body) => format!("{status} {body}"),
                                Err(e) => format!("{status} unreadable: {e}"),
                            }
                        }
                        Err(e) => format!("error: {e}"),
                    }
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for call in calls {
            outcomes.push(call.await.unwrap());
        }
        outcomes
    });
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for outcome in &outcomes {
        *tally.entry(outcome.as_str()).or_default() += 1;
    }
    assert_eq!(tally.get("200"), Some(&500), "{tally:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let after = service_status(&server, "burst", "hello");
    assert!(count(&after["instances"]["ready"]) >= 1, "{after}");
}

#[test]
fn past_its_capacity_a_service_answers_429() {
    let server = Server::start();
    write_app(
        &server.path("cap"),
        &[
            (
                "stratus.yaml",
                "app: cap\nservices:\n  slow:\n    command: [node, server.js]\n    concurrency: 1\n    max_instances: 1\n    queue_depth: 2\n    http: { path: /* }\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "cap");
    let http = client();
    // Warm: the one instance is up.
    let response = http
        .get(format!("{}/cap/warm", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);

    // One in flight and two waiting are served; the rest are turned away.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let (http, barrier) = (http.clone(), barrier.clone());
            let url = format!("{}/cap/slow?ms=1500", server.public);
            std::thread::spawn(move || {
                barrier.wait();
                let response = http.get(url).send().unwrap();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let id = response
                    .headers()
                    .get("x-stratus-request-id")
                    .map(|v| v.to_str().unwrap().to_owned());
                (status, retry_after, id, response.text().unwrap())
            })
        })
        .collect();
    let results: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    let summary: Vec<_> = results.iter().map(|r| (r.0, r.1.clone())).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let throttled: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(ok + throttled.len(), 6, "{results:?}");
    assert_eq!(ok, 3, "1 in flight + queue_depth 2 are served: {summary:?}");
    assert_eq!(throttled.len(), 3, "{summary:?}");
    for (_, retry_after, id, body) in throttled {
        let retry_after = retry_after.as_deref().expect("429 carries Retry-After");
        assert!(
            retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
            "Retry-After: {retry_after}"
        );
        assert!(id.is_some(), "429 without a request id: {body}");
    }
}

#[test]
fn crashed_instances_are_replaced_and_a_dead_command_answers_503() {
    let server = Server::start_with(&["--queue-timeout", "5s"]);
    write_app(
        &server.path("crashy"),
        &[
            (
                "stratus.yaml",
                "app: crashy\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "crashy");
    write_app(
        &server.path("dead"),
        &[(
            "stratus.yaml",
            "app: dead\nservices:\n  broken:\n    command: \"echo booting; exit 3\"\n    http: { path: /* }\n",
        )],
    );
    deploy(&server, "dead");
    let http = client();

    let response = http
        .get(format!("{}/crashy/hello", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let first: Value = response.json().unwrap();

    // The request whose instance dies under it: 502, with its id.
    let response = http
        .get(format!("{}/crashy/crash", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 502);
    let id = request_id(&response);
    let body: Value = response.json().unwrap();
    assert_eq!(body["requestId"], id.as_str(), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    // A new instance takes the next requests.
    let second: Value = eventually(Duration::from_secs(15), || {
        let response = http
            .get(format!("{}/crashy/hello", server.public))
            .send()
            .unwrap();
        match response.status().as_u16() {
            200 => Ok(response.json::<Value>().unwrap()),
            503 => Err("503".to_owned()),
            other => panic!("after a crash: {other} {}", response.text().unwrap()),
        }
    });
    assert_ne!(second["boot"], first["boot"], "the same process answered");
    let web = eventually(Duration::from_secs(10), || {
        let web = service_status(&server, "crashy", "web");
        let errors = web["errors"].as_array().map_or(0, Vec::len);
        if web["restarts"].as_u64().unwrap_or(0) >= 1 && errors >= 1 {
            Ok(web)
        } else {
            Err(format!("no restart or error reported: {web}"))
        }
    });
    assert!(
        web["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{web}"
    );
    eventually(Duration::from_secs(10), || {
        let logs = server.ok(&["logs", "crashy/web"]);
        if logs.contains("crashing on purpose") {
            Ok(())
        } else {
            Err(logs)
        }
    });

    // A command that exits at once: answered 503, not left hanging.
    for _ in 0..2 {
        let started = Instant::now();
        let response = http
            .get(format!("{}/dead/anything", server.public))
            .send()
            .unwrap();
        let took = started.elapsed();
        let status = response.status();
        assert_eq!(status, 503, "{}", response.text().unwrap());
        assert!(took < Duration::from_secs(10), "answered after {took:?}");
        let id = request_id(&response);
        let body: Value = response.json().unwrap();
        assert_eq!(body["requestId"], id.as_str(), "{body}");
        // With the reason, and what it printed.
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("exited with"), "{body}");
        assert!(message.contains("booting"), "{body}");
    }
    let broken = eventually(Duration::from_secs(10), || {
        let broken = service_status(&server, "dead", "broken");
        if broken["errors"].as_array().is_some_and(|e| !e.is_empty()) {
            Ok(broken)
        } else {
            Err(format!("no error reported: {broken}"))
        }
    });
    assert_eq!(count(&broken["instances"]["ready"]), 0, "{broken}");
    let text = server.ok(&["status", "dead"]);
    assert!(text.contains("broken"), "{text}");
}

/// A service in Python that calls a function of its app through the
/// platform API and says which interpreter it runs on; it says when it
/// gets SIGTERM.
const PY_SERVICE: &str = r#"import json, os, signal, sys, time, urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

def stop(signum, frame):
    print("stopping", flush=True)
    time.sleep(0.5)
    print("stopped cleanly", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        request = urllib.request.Request(
            os.environ["STRATUS_API_URL"] + "/v1/apps/" + os.environ["STRATUS_APP"] + "/functions/where/invoke",
            data=b"{}", method="POST",
            headers={"Authorization": "Bearer " + os.environ["STRATUS_API_TOKEN"]})
        called = urllib.request.urlopen(request, timeout=10).read().decode()
        body = json.dumps({"python": os.path.realpath(sys.executable), "called": called}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// A one-string command runs as a shell script, whole, and the server it
/// `exec`s at its end gets the SIGTERM of a drain and finishes cleanly.
/// Services run the functions' interpreter and reach the platform API with
/// a token of their own.
#[test]
fn a_command_line_runs_as_a_script_with_the_functions_interpreter() {
    let server = Server::start();
    write_app(
        &server.path("shell"),
        &[(
            "stratus.yaml",
            "app: shell\nservices:\n  files:\n    command: \"echo first && echo second; exec python3 -m http.server $PORT\"\n    http: { path: /* }\n",
        )],
    );
    deploy(&server, "shell");
    write_app(
        &server.path("script"),
        &[
            (
                "stratus.yaml",
                "app: script\nservices:\n  py:\n    command: \"echo migrating && exec python3 app.py\"\n    http: { path: /* }\nfunctions:\n  where:\n    runtime: python3\n    handler: where.handler\n",
            ),
            ("app.py", PY_SERVICE),
            (
                "where.py",
                "import os, sys\n\ndef handler(event, context):\n    return os.path.realpath(sys.executable)\n",
            ),
        ],
    );
    deploy(&server, "script");
    let http = client();
    let response = http
        .get(format!("{}/shell/", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually(Duration::from_secs(10), || {
        let logs = server.ok(&["logs", "shell/files"]);
        if logs.contains("first") && logs.contains("second") {
            Ok(())
        } else {
            Err(logs)
        }
    });

    let response = http
        .get(format!("{}/script/anything", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().unwrap();
    let function_python = server.invoke("script/where", "{}")["result"].clone();
    assert!(function_python.is_string(), "{function_python}");
    assert_eq!(seen["python"], function_python, "{seen}");
    assert!(
        seen["called"]
            .as_str()
            .is_some_and(|c| c.contains(function_python.as_str().unwrap())),
        "{seen}"
    );

    // A redeploy (of a changed app) drains it: SIGTERM reaches python3,
    // which the line `exec`ed, and it stops in its own time.
    std::fs::write(server.path("script").join("changed.txt"), "yes").unwrap();
    deploy(&server, "script");
    eventually(Duration::from_secs(20), || {
        let logs = server.ok(&["logs", "script/py"]);
        if logs.contains("stopped cleanly") {
            Ok(())
        } else {
            Err(logs)
        }
    });
}

/// A service that never listens: the waiting request gets 503 once the
/// readiness timeout has run out, with the reason and its last output; the
/// failure is counted and the next start backs off.
#[test]
fn a_service_that_never_listens_is_answered_503_with_its_output() {
    let server = Server::start();
    write_app(
        &server.path("silent"),
        &[(
            "stratus.yaml",
            "app: silent\nservices:\n  web:\n    command: \"echo configured; echo about to wait >&2; sleep 600\"\n    http: { path: /* }\n    readiness: { timeout: 2s }\n",
        )],
    );
    deploy(&server, "silent");
    let started = Instant::now();
    let response = client()
        .get(format!("{}/silent/", server.public))
        .send()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), 503, "after {took:?}");
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    let body: Value = response.json().unwrap();
    let message = body["message"].as_str().unwrap_or_default();
    for part in ["not ready within 2s", "configured", "about to wait"] {
        assert!(message.contains(part), "{part}: {body}");
    }
    let web = service_status(&server, "silent", "web");
    assert!(web["restarts"].as_u64().unwrap_or(0) >= 1, "{web}");
    assert!(web["backoff_ms"].as_u64().unwrap_or(0) > 0, "{web}");
    // While it backs off, requests are answered at once, with the reason.
    let started = Instant::now();
    let response = client()
        .get(format!("{}/silent/", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(response.text().unwrap().contains("about to wait"));
}

#[test]
fn a_redeploy_drains_a_live_websocket_with_a_going_away_close() {
    let server = Server::start();
    let modules = ws_modules();
    let dir = server.path("drain");
    copy_modules(&modules, &dir);
    let manifest = |version: &str| {
        format!(
            "app: drain\nservices:\n  echo:\n    command: [node, server.js]\n    drain_grace: 2s\n    env: {{ VERSION: {version} }}\n    http: {{ path: /* }}\n"
        )
    };
    write_app(
        &dir,
        &[("stratus.yaml", &manifest("v1")), ("server.js", WS_SERVER)],
    );
    deploy(&server, "drain");
    let ws_base = server.public.replacen("http://", "ws://", 1);

    let mut old = WsClient::connect(&modules, &format!("{ws_base}/drain/live"), &[]);
    assert_eq!(old.echo("before"), "v1:before");

    write_app(&dir, &[("stratus.yaml", &manifest("v2"))]);
    let deploy_started = Instant::now();
    deploy(&server, "drain");
    let deployed = Instant::now();

    // The old connection goes on during the grace...
    assert_eq!(old.echo("during the grace"), "v1:during the grace");
    // ...while new ones reach the new version.
    let mut new = WsClient::connect(&modules, &format!("{ws_base}/drain/live"), &[]);
    assert_eq!(new.echo("new"), "v2:new");

    // Then it gets a clean close frame 1001 and a FIN, never a reset.
    let (close, closed_at, before) = old.closed(Duration::from_secs(12));
    assert_eq!(close["code"], 1001, "{close} after {before:?}");
    assert!(
        !before
            .iter()
            .any(|e| e["ev"] == "error" || e["ev"] == "socket-error"),
        "{before:?}"
    );
    assert!(
        before.iter().any(|e| e["ev"] == "socket-end"),
        "the gateway did not end the TCP connection cleanly: {before:?}"
    );
    let after_start = closed_at - deploy_started;
    assert!(
        after_start >= Duration::from_millis(1800),
        "closed {after_start:?} after the deploy began: the 2s grace was not given"
    );
    assert!(
        closed_at - deployed < Duration::from_secs(8),
        "closed {:?} after the deploy",
        closed_at - deployed
    );

    // The new connection is untouched by the old one's end.
    assert_eq!(new.echo("still"), "v2:still");
    let response = client()
        .get(format!("{}/drain/", server.public))
        .send()
        .unwrap();
    assert_eq!(response.text().unwrap(), "plain http, version v2\n");
}

#[test]
fn service_output_and_requests_are_in_the_logs() {
    let server = Server::start();
    write_app(
        &server.path("logged"),
        &[
            (
                "stratus.yaml",
                "app: logged\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "logged");
    let response = client()
        .get(format!("{}/logged/hello/xyz?a=1", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = request_id(&response);

    let (line, request) = eventually(Duration::from_secs(10), || {
        let records = log_records(&server, "logged/web", &[]);
        let line = records.iter().find(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("served GET /hello/xyz request={id}")))
        });
        let request = records
            .iter()
            .find(|r| r["stream"] == "request" && r["request_id"] == id.as_str());
        match (line, request) {
            (Some(line), Some(request)) => Ok((line.clone(), request.clone())),
            _ => Err(format!("{records:#?}")),
        }
    });
    assert_eq!(line["stream"], "stdout", "{line}");
    assert_eq!(line["app"], "logged", "{line}");
    assert_eq!(line["function"], "web", "{line}");
    let instance = line["instance"].as_str().unwrap_or_default();
    assert!(!instance.is_empty() && instance != "-", "{line}");

    assert_eq!(request["function"], "web", "{request}");
    assert_eq!(*field(&request, "method"), "GET", "{request}");
    let path = field(&request, "path").as_str().unwrap_or_default();
    assert!(
        path.split('?').next().unwrap().ends_with("/hello/xyz"),
        "{request}"
    );
    assert_eq!(*field(&request, "status"), 200, "{request}");
    assert!(field(&request, "duration_ms").is_number(), "{request}");

    // The request's own records, by its id.
    let by_id = log_records(&server, "logged/web", &["--request-id", &id]);
    assert!(by_id.iter().any(|r| r["stream"] == "request"), "{by_id:#?}");
    assert!(
        by_id.iter().all(|r| r["request_id"] == id.as_str()),
        "{by_id:#?}"
    );

    // `access_log: false`: the app's own output, no request records.
    write_app(
        &server.path("quiet"),
        &[
            (
                "stratus.yaml",
                "app: quiet\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n    access_log: false\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "quiet");
    let response = client()
        .get(format!("{}/quiet/hello/q", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = request_id(&response);
    let records = eventually(Duration::from_secs(10), || {
        let records = log_records(&server, "quiet/web", &[]);
        if records.iter().any(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("request={id}")))
        }) {
            Ok(records)
        } else {
            Err(format!("{records:#?}"))
        }
    });
    assert!(
        !records.iter().any(|r| r["stream"] == "request"),
        "{records:#?}"
    );
}

/// The fence is in force when the server runs with namespaces (the
/// default where the host allows them); `STRATUS_ISOLATION=none` runs the
/// suite without it.
fn fenced() -> bool {
    std::env::var("STRATUS_ISOLATION").map_or(true, |v| v != "none")
}

#[test]
fn a_service_is_reachable_only_through_the_gateway() {
    let server = Server::start();
    write_app(
        &server.path("fenced"),
        &[
            (
                "stratus.yaml",
                "app: fenced\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n    min_instances: 1\nfunctions:\n  probe:\n    runtime: python3\n    handler: probe.handler\n",
            ),
            ("server.js", PLAIN_SERVER),
            (
                "probe.py",
                "import socket\n\ndef handler(event, context):\n    out = {}\n    for target in event['targets']:\n        host, port = target.rsplit(':', 1)\n        try:\n            with socket.create_connection((host, int(port)), timeout=2) as s:\n                s.sendall(b'GET /x HTTP/1.0\\r\\n\\r\\n')\n                out[target] = 'connected: ' + s.recv(4096).decode('latin-1')\n        except OSError as err:\n            out[target] = type(err).__name__\n    return out\n",
            ),
        ],
    );
    deploy(&server, "fenced");
    let response = client()
        .get(format!("{}/fenced/hello/x", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    // Tells this service's answers from those of whatever else may hold
    // the same port number on 127.0.0.1 (other servers of the suite do).
    let boot = response.json::<serde_json::Value>().unwrap()["boot"]
        .as_str()
        .unwrap()
        .to_owned();
    let web = service_status(&server, "fenced", "web");
    let addr: std::net::SocketAddr = web["instance_list"][0]["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no instance address: {web}"));
    let port = addr.port();

    if !fenced() {
        // Without the fence the app listens where it asked.
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{web}");
        return;
    }
    assert!(
        addr.ip().to_string().starts_with("127.91."),
        "the instance has an address of its own: {web}"
    );
    // The gateway's position (outside the fence) reaches it there, and
    // only there: the app's bind of 0.0.0.0 was moved.
    assert!(answer(addr).contains(&boot));
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        !answer(loopback).contains(&boot),
        "the service answers on 127.0.0.1"
    );
    // Another tenant cannot reach it, at its address or on loopback.
    let targets = [addr.to_string(), format!("127.0.0.1:{port}")];
    let event = serde_json::json!({ "targets": targets }).to_string();
    let result = server.invoke("fenced/probe", &event);
    let seen = &result["result"];
    assert_eq!(seen[&targets[0]], "PermissionError", "{result}");
    let other = seen[&targets[1]].as_str().unwrap_or_default();
    assert!(!other.contains(&boot), "{result}");
}

/// What `addr` answers to a plain HTTP request; empty when nothing does.
fn answer(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(b"GET /x HTTP/1.0\r\n\r\n");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// A route with `strip_prefix` hands its target the path after the route's
/// literal part (and after `/APP` in prefix mode), and says what it removed
/// in `X-Forwarded-Prefix`; other routes are left as they are.
#[test]
fn a_route_may_strip_its_prefix() {
    let server = Server::start();
    write_app(
        &server.path("strip"),
        &[
            (
                "stratus.yaml",
                "app: strip\nservices:\n  py:\n    command: [node, server.js]\n    http: { path: [/py/*, /v1/api/*], strip_prefix: true }\n  rest:\n    command: [node, server.js]\n    http: { path: /rest/* }\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "strip");
    let http = client();
    let get = |path: &str, host: Option<&str>| -> Value {
        let mut request = http.get(format!("{}{path}", server.public));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().unwrap()
    };
    for (path, host, seen, prefix) in [
        ("/strip/py/docs", None, "/docs", "/strip/py"),
        ("/strip/py/", None, "/", "/strip/py"),
        ("/strip/v1/api/users/7", None, "/users/7", "/strip/v1/api"),
        ("/py/docs?x=1", Some("strip.localhost"), "/docs", "/py"),
    ] {
        let answer = get(path, host);
        assert_eq!(answer["path"], seen, "{path}: {answer}");
        assert_eq!(answer["prefix"], prefix, "{path}: {answer}");
    }
    let answer = get("/strip/rest/items", None);
    assert_eq!(answer["path"], "/rest/items", "{answer}");
    assert_eq!(answer["prefix"], "/strip", "{answer}");

    // A route with nothing literal to strip is refused at deploy.
    write_app(
        &server.path("nostrip"),
        &[(
            "stratus.yaml",
            "app: nostrip\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /*, strip_prefix: true }\n",
        )],
    );
    let out = server.fails(&["deploy", server.path("nostrip").to_str().unwrap()]);
    assert!(out.contains("strip_prefix"), "{out}");
}

/// A Node.js server that speaks only HTTP/2 without TLS, and says which
/// version each request came in.
const H2C_SERVER: &str = r#"const http2 = require('http2');
const server = http2.createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ version: req.httpVersion, path: req.url, cookie: req.headers.cookie || null }));
});
server.listen(Number(process.env.PORT), '0.0.0.0');
"#;

/// `protocol: h2c` takes every request to the service as HTTP/2, whatever
/// the client spoke.
#[test]
fn an_h2c_service_gets_http2_for_every_request() {
    let server = Server::start();
    write_app(
        &server.path("h2"),
        &[
            (
                "stratus.yaml",
                "app: h2\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n    protocol: h2c\n",
            ),
            ("server.js", H2C_SERVER),
        ],
    );
    deploy(&server, "h2");
    let response = client()
        .post(format!("{}/h2/items?x=1", server.public))
        .header("cookie", "a=1")
        .body("hello")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let seen: Value = response.json().unwrap();
    assert_eq!(seen["version"], "2.0", "{seen}");
    assert_eq!(seen["path"], "/items?x=1", "{seen}");
    assert_eq!(seen["cookie"], "a=1", "{seen}");

    // A protocol it does not know is refused at deploy.
    write_app(
        &server.path("h3"),
        &[(
            "stratus.yaml",
            "app: h3\nservices:\n  web:\n    command: [node, server.js]\n    protocol: h3\n",
        )],
    );
    let out = server.fails(&["deploy", server.path("h3").to_str().unwrap()]);
    assert!(out.contains("protocol"), "{out}");
}

/// An unchanged Django project under `runserver` cannot open its SQLite
/// file in the read-only code directory; its main thread dies while the
/// autoreloader lives on, never listening. The waiting request is answered
/// at once (not after the readiness timeout) with what it printed. With the
/// database in `/tmp`, as README says, it serves.
#[test]
fn a_django_project_that_cannot_start_is_reported_at_once() {
    let server = Server::start();
    let site = django_site();
    let code = server.path("dj/web");
    copy_site(&site, &code);
    let made = std::process::Command::new(common::python())
        .args(["-m", "django", "startproject", "mysite"])
        .arg(&code)
        .env("PYTHONPATH", &site)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    write_app(
        &server.path("dj"),
        &[(
            "stratus.yaml",
            "app: dj\nservices:\n  web:\n    code: ./web\n    command: \"python3 manage.py runserver 0.0.0.0:$PORT\"\n    http: { path: /* }\n",
        )],
    );
    deploy(&server, "dj");
    // Without isolation the code directory is the host's, and writable.
    if fenced() {
        let started = Instant::now();
        let response = client()
            .get(format!("{}/dj/", server.public))
            .send()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "after {took:?}");
        let text = response.text().unwrap();
        assert!(text.contains("unable to open database file"), "{text}");
        assert!(took < Duration::from_secs(15), "answered after {took:?}");
    }

    // The fix README gives: the database in /tmp, migrated at start.
    let settings = code.join("mysite/settings.py");
    let original = std::fs::read_to_string(&settings).unwrap();
    let patched = original.replace(
        "'NAME': BASE_DIR / 'db.sqlite3',",
        "'NAME': os.environ.get('SQLITE_PATH', BASE_DIR / 'db.sqlite3'),",
    );
    assert_ne!(
        patched, original,
        "the settings name the database as expected"
    );
    std::fs::write(&settings, format!("import os\n{patched}")).unwrap();
    write_app(
        &server.path("dj"),
        &[(
            "stratus.yaml",
            "app: dj\nservices:\n  web:\n    code: ./web\n    command: \"python3 manage.py migrate --noinput && exec python3 manage.py runserver --noreload 0.0.0.0:$PORT\"\n    http: { path: /* }\n    env: { SQLITE_PATH: /tmp/db.sqlite3 }\n",
        )],
    );
    deploy(&server, "dj");
    let response = eventually(Duration::from_secs(60), || {
        let response = client()
            .get(format!("{}/dj/", server.public))
            .send()
            .unwrap();
        match response.status().as_u16() {
            200 => Ok(response),
            other => Err(format!("{other}: {}", response.text().unwrap())),
        }
    });
    assert!(response.text().unwrap().contains("Django"));
}

#[test]
fn idle_instances_retire_and_busy_ones_scale_out() {
    let server = Server::start();
    write_app(
        &server.path("elastic"),
        &[
            (
                "stratus.yaml",
                "app: elastic\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n    concurrency: 2\n    max_instances: 3\n    idle_timeout: 2s\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "elastic");
    // Six slow requests at once need three instances of two each.
    let url = format!("{}/elastic/slow?ms=1500", server.public);
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || client().get(url).send().unwrap().status().as_u16())
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let web = service_status(&server, "elastic", "web");
    assert_eq!(count(&web["instances"]["ready"]), 3, "{web}");
    // Idle past `idle_timeout`, every one retires: none is kept.
    eventually(Duration::from_secs(15), || {
        let web = service_status(&server, "elastic", "web");
        let live = count(&web["instances"]["ready"])
            + count(&web["instances"]["starting"])
            + count(&web["instances"]["draining"]);
        if live == 0 {
            Ok(())
        } else {
            Err(format!("{web}"))
        }
    });
    // And a new request starts one again.
    let response = client()
        .get(format!("{}/elastic/hello/again", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn status_shows_functions_with_their_recent_errors() {
    let server = Server::start();
    write_app(
        &server.path("mixed"),
        &[
            (
                "stratus.yaml",
                "app: mixed\nfunctions:\n  fails:\n    runtime: python3\n    handler: main.handler\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n",
            ),
            (
                "main.py",
                "def handler(event, context):\n    raise ValueError('no thanks')\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "mixed");
    let result = server.invoke("mixed/fails", "{}");
    let request = result["request_id"].as_str().unwrap_or_default().to_owned();
    assert!(!request.is_empty(), "{result}");

    let status: Value =
        serde_json::from_str(&server.ok(&["status", "mixed", "--output", "json"])).unwrap();
    let app = &status["apps"][0];
    let fails = &app["functions"][0];
    assert_eq!(fails["name"], "fails", "{status}");
    assert_eq!(count(&fails["instances"]["idle"]), 1, "{status}");
    let error = &fails["errors"][0];
    assert_eq!(error["request_id"], request.as_str(), "{status}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("ValueError") && m.contains("no thanks")),
        "{status}"
    );
    assert_eq!(app["services"][0]["name"], "web", "{status}");
    assert_eq!(
        count(&app["services"][0]["instances"]["ready"]),
        0,
        "{status}"
    );

    let text = server.ok(&["status"]);
    assert!(text.contains("mixed/fails"), "{text}");
    assert!(text.contains("mixed/web"), "{text}");
    assert!(
        text.contains("recent errors") && text.contains("no thanks"),
        "{text}"
    );
    let ls = server.ok(&["ls"]);
    assert!(
        ls.lines().any(|l| l.starts_with("mixed/web")
            && l.contains("service")
            && l.contains("ANY /mixed/*")),
        "{ls}"
    );
    let missing = server.fails(&["status", "nope"]);
    assert!(missing.contains("does not exist"), "{missing}");
}

#[test]
fn callers_that_give_up_while_queued_free_their_places() {
    let server = Server::start();
    write_app(
        &server.path("slowstart"),
        &[
            (
                "stratus.yaml",
                "app: slowstart\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n    queue_depth: 3\n    env: { START_DELAY_MS: 2500 }\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "slowstart");
    // Five callers in turn, each giving up while the instance starts: each
    // held a place in a queue of three for a moment.
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    for _ in 0..5 {
        let gave_up = impatient
            .get(format!("{}/slowstart/hello/x", server.public))
            .send();
        assert!(gave_up.is_err(), "answered before the start: {gave_up:?}");
    }
    let web = eventually(Duration::from_secs(5), || {
        let web = service_status(&server, "slowstart", "web");
        if count(&web["waiting"]) == 0 {
            Ok(web)
        } else {
            Err(format!("{web}"))
        }
    });
    // One start served them all: giving up did not start more.
    let live = count(&web["instances"]["ready"]) + count(&web["instances"]["starting"]);
    assert_eq!(live, 1, "{web}");
    // The queue has its places back: three patient callers all get in.
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{}/slowstart/hello/y", server.public);
            std::thread::spawn(move || client().get(url).send().unwrap().status().as_u16())
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 200]);
}

#[test]
fn a_forged_host_or_a_stalled_upload_is_refused() {
    let server = Server::start_with(&["--body-timeout", "1s"]);
    write_app(
        &server.path("guarded"),
        &[
            (
                "stratus.yaml",
                "app: guarded\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "guarded");
    let raw = |request: &str| {
        let mut tcp = std::net::TcpStream::connect(authority(&server)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(request.as_bytes()).unwrap();
        let mut reader = std::io::BufReader::new(tcp);
        read_response(&mut reader)
    };
    // A Host that would reshape the instance's request path.
    let forged = raw(
        "GET /guarded/hello HTTP/1.1\r\nHost: x/admin?\r\ncontent-type: application/grpc\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(forged.status, 400);
    let quoted =
        raw("GET /guarded/hello HTTP/1.1\r\nHost: a\";proto=https\r\nConnection: close\r\n\r\n");
    assert_eq!(quoted.status, 400);

    // An upload that stops part-way is cut off after --body-timeout.
    let mut tcp = std::net::TcpStream::connect(authority(&server)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    tcp.write_all(
        b"POST /guarded/upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(tcp);
    let stalled = read_response(&mut reader);
    assert_eq!(stalled.status, 408);
    assert!(started.elapsed() >= Duration::from_millis(900));
    // And the instance is free again.
    let response = client()
        .get(format!("{}/guarded/hello/after", server.public))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[test]
fn a_server_shutdown_closes_live_websockets_with_going_away() {
    // The shutdown grace is shorter than the service's drain_grace: the
    // close comes within the server's, leaving time for the handshake.
    let mut server = Server::start_with(&["--shutdown-grace", "6s"]);
    let modules = ws_modules();
    let dir = server.path("stopping");
    copy_modules(&modules, &dir);
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: stopping\nservices:\n  echo:\n    command: [node, server.js]\n    drain_grace: 1m\n    env: { VERSION: v1 }\n    http: { path: /* }\n",
            ),
            ("server.js", WS_SERVER),
        ],
    );
    deploy(&server, "stopping");
    let ws_base = server.public.replacen("http://", "ws://", 1);
    let mut live = WsClient::connect(&modules, &format!("{ws_base}/stopping/live"), &[]);
    assert_eq!(live.echo("hi"), "v1:hi");

    let stopping = Instant::now();
    // SIGTERM, without waiting for the exit: the close comes before it.
    Command::new("kill")
        .arg(server.pid().to_string())
        .status()
        .unwrap();
    let (close, closed_at, before) = live.closed(Duration::from_secs(10));
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(close["code"], 1001, "{close} after {before:?}");
    assert!(
        before.iter().any(|e| e["ev"] == "socket-end")
            && !before.iter().any(|e| e["ev"] == "socket-error"),
        "{before:?}"
    );
    // Within the shutdown grace less the time kept for the handshake.
    assert!(
        closed_at - stopping < Duration::from_secs(4),
        "closed {:?} after the stop began",
        closed_at - stopping
    );
}

#[test]
fn services_count_toward_the_application_cap() {
    let server = Server::start_with(&["--app-max-instances", "1", "--queue-timeout", "1s"]);
    write_app(
        &server.path("capped"),
        &[
            (
                "stratus.yaml",
                "app: capped\nservices:\n  web:\n    command: [node, server.js]\n    http: { path: /* }\n    concurrency: 1\n    max_instances: 3\n    readiness: { timeout: 1s }\n",
            ),
            ("server.js", PLAIN_SERVER),
        ],
    );
    deploy(&server, "capped");
    let url = format!("{}/capped/slow?ms=2500", server.public);
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300 * i));
                client().get(url).send().unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort_unstable();
    // The second would need a second instance, which the cap refuses.
    assert_eq!(statuses, [200, 429]);
    let web = service_status(&server, "capped", "web");
    assert_eq!(count(&web["instances"]["ready"]), 1, "{web}");
    assert_eq!(count(&web["instances"]["starting"]), 0, "{web}");
}
