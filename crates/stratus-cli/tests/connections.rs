//! No client and no tenant holds the server's connections: every listener
//! (public, admin, the platform API functions call) closes connections that
//! send nothing, only the HTTP/2 preface, or stay idle, caps connections
//! per client address (per app on the platform API), and an instance's
//! descriptors are capped well below the server's.
//!
//! Runs in both isolation modes: the limits are the listeners' and the
//! instance's own.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Server, write_app};

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

/// Whether the server closed `stream` within `within`: reads until EOF, a
/// reset, or the time is up.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn get(stream: &mut TcpStream, host: &str) -> String {
    write!(stream, "GET /v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn silent_preface_only_and_idle_connections_are_closed_on_every_listener() {
    let server = Server::start_with(&["--header-timeout", "1s", "--idle-timeout", "2s"]);
    for url in [&server.public, &server.admin] {
        let to = addr(url);
        let started = Instant::now();
        let mut silent = TcpStream::connect(to).unwrap();
        let mut preface = TcpStream::connect(to).unwrap();
        preface.write_all(HTTP2_PREFACE).unwrap();
        // An HTTP/2 connection with its settings but no stream.
        let mut no_stream = TcpStream::connect(to).unwrap();
        no_stream.write_all(HTTP2_PREFACE).unwrap();
        no_stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
        // A keep-alive connection after one request.
        let mut idle = TcpStream::connect(to).unwrap();
        assert!(get(&mut idle, "localhost").starts_with("HTTP/1.1"));
        for (what, stream) in [
            ("silent", &mut silent),
            ("preface only", &mut preface),
            ("no stream", &mut no_stream),
        ] {
            assert!(
                closed_within(stream, Duration::from_secs(5)),
                "{url}: a connection that sent {what} stays open"
            );
        }
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "closed only after the header timeout"
        );
        assert!(
            closed_within(&mut idle, Duration::from_secs(6)),
            "{url}: an idle keep-alive connection stays open"
        );
    }
}

#[test]
fn one_address_cannot_take_every_connection() {
    let server = Server::start_with(&["--max-connections-per-address", "20"]);
    let to = addr(&server.public);
    let mut held: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(to).unwrap()).collect();
    // Past the cap, a connection from the same address is closed at once.
    let mut extra = TcpStream::connect(to).unwrap();
    assert!(
        closed_within(&mut extra, Duration::from_secs(3)),
        "the 21st connection of one address is served"
    );
    // Those held are served.
    assert!(get(&mut held[0], "localhost").starts_with("HTTP/1.1"));
    // When one ends, its address may connect again.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut again = TcpStream::connect(to).unwrap();
    assert!(get(&mut again, "localhost").starts_with("HTTP/1.1"));
}

const PLATFORM: &str = r#"import http.client, json, os, socket, time, urllib.parse

def echo(event, context):
    return "echo"

def hog(event, context):
    url = urllib.parse.urlparse(os.environ["STRATUS_API_URL"])
    app = os.environ["APP"]
    statuses, held = [], []
    for _ in range(event["connections"]):
        c = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        c.request("POST", "/v1/apps/%s/functions/echo/invoke" % app, body="{}",
                  headers={"Authorization": "Bearer " + os.environ["STRATUS_API_TOKEN"]})
        r = c.getresponse()
        body = r.read()
        if r.status == 429:
            error = json.loads(body)["error"]
            # Which cap: the flag the message names.
            statuses.append(error["code"] + " " + error["message"].split("(--")[1].split(")")[0])
        else:
            statuses.append(r.status)
        held.append(c)
    time.sleep(event.get("hold", 0))
    return statuses

def files(event, context):
    opened = []
    try:
        while len(opened) < 100000:
            opened.append(socket.socket())
    except OSError as e:
        return {"opened": len(opened), "error": e.strerror}
    return {"opened": len(opened), "error": None}
"#;

#[test]
fn one_app_cannot_take_the_platform_api_or_the_server_s_descriptors() {
    let server = Server::start_with(&[
        "--platform-max-connections-per-app",
        "5",
        "--platform-max-connections-per-instance",
        "3",
        "--instance-max-files",
        "200",
    ]);
    for app in ["hog", "other"] {
        let dir = server.path(app);
        let manifest = format!(
            "app: {app}\nfunctions:\n  echo:\n    runtime: python3\n    handler: main.echo\n  hog:\n    runtime: python3\n    handler: main.hog\n    timeout: 60s\n    env:\n      APP: {app}\n  files:\n    runtime: python3\n    handler: main.files\n"
        );
        write_app(&dir, &[("stratus.yaml", &manifest), ("main.py", PLATFORM)]);
        server.ok(&["deploy", dir.to_str().unwrap()]);
    }
    // One instance: its own share.
    let per_instance = "too_many_connections platform-max-connections-per-instance";
    let hog = server.invoke("hog/hog", r#"{"connections": 5}"#);
    assert_eq!(
        hog["result"],
        serde_json::json!([200, 200, 200, per_instance, per_instance]),
        "{hog}"
    );
    // Two instances at once: each its own share, and together the app's.
    let results: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let server = &server;
                scope.spawn(move || server.invoke("hog/hog", r#"{"connections": 4, "hold": 3}"#))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let statuses: Vec<&serde_json::Value> = results
        .iter()
        .flat_map(|r| r["result"].as_array().unwrap_or_else(|| panic!("{r}")))
        .collect();
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(served, 5, "{results:?}");
    assert!(
        statuses
            .iter()
            .any(|s| *s == "too_many_connections platform-max-connections-per-app"),
        "{results:?}"
    );
    // The connections have closed with the instance's call; another app
    // is served throughout.
    let other = server.invoke("other/hog", r#"{"connections": 3}"#);
    assert_eq!(
        other["result"],
        serde_json::json!([200, 200, 200]),
        "{other}"
    );

    let files = server.invoke("hog/files", "{}");
    let opened = files["result"]["opened"]
        .as_u64()
        .unwrap_or_else(|| panic!("{files}"));
    assert!(opened < 200, "{files}");
    assert_eq!(files["result"]["error"], "Too many open files", "{files}");
}

/// Request bodies buffered for functions are bounded in total: past the
/// budget a request is answered 503 with Retry-After at once, and served
/// again once the bodies in flight are done.
#[test]
fn buffered_request_bodies_are_bounded_in_total() {
    let server = Server::start_with(&["--max-buffered-bodies", "1000000", "--max-body", "800000"]);
    let dir = server.path("up");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: up\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    http: { path: /size, methods: [POST] }\n",
            ),
            (
                "main.py",
                "import base64\ndef handler(event, context):\n    body = event.get('body') or ''\n    if event.get('isBase64Encoded'):\n        body = base64.b64decode(body)\n    return str(len(body))\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let to = addr(&server.public);
    let post = |stream: &mut TcpStream, length: usize| {
        write!(
            stream,
            "POST /up/size HTTP/1.1\r\nHost: localhost\r\nContent-Length: {length}\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
    };
    // A whole response: its head, and as many bytes as it says it has.
    let response = |stream: &mut TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = stream.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if n == 0 || body.len() >= length {
                    return text;
                }
            }
            assert!(n > 0, "the connection closed: {text}");
        }
    };
    // An upload of 700 kB that has sent only part of its body.
    let mut slow = TcpStream::connect(to).unwrap();
    post(&mut slow, 700_000);
    slow.write_all(&[b'a'; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut second = TcpStream::connect(to).unwrap();
    post(&mut second, 400_000);
    let refused = response(&mut second);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    assert!(refused.contains("--max-buffered-bodies"), "{refused}");
    // The slow upload completes and is served; then there is room again.
    slow.write_all(&vec![b'a'; 699_000]).unwrap();
    let served = response(&mut slow);
    assert!(
        served.starts_with("HTTP/1.1 200") && served.ends_with("\"700000\""),
        "{served}"
    );
    let mut third = TcpStream::connect(to).unwrap();
    post(&mut third, 400_000);
    third.write_all(&vec![b'b'; 400_000]).unwrap();
    let served = response(&mut third);
    assert!(
        served.starts_with("HTTP/1.1 200") && served.ends_with("\"400000\""),
        "{served}"
    );
}

/// An app's queues and asynchronous events are bounded in count and in
/// bytes: past its quota a send or an asynchronous invocation is refused
/// with 429 and the reason, and other apps are not held to it.
#[test]
fn queued_messages_and_events_are_held_to_per_app_quotas() {
    let server = Server::start_with(&[
        "--app-max-queued-messages",
        "3",
        "--app-max-queued-event-bytes",
        "1000",
    ]);
    for app in ["greedy", "modest"] {
        let dir = server.path(app);
        write_app(
            &dir,
            &[
                (
                    "stratus.yaml",
                    &format!(
                        "app: {app}\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\nqueues:\n  q: {{}}\n"
                    ),
                ),
                ("main.py", "def handler(e, c):\n    return 1\n"),
            ],
        );
        server.ok(&["deploy", dir.to_str().unwrap()]);
    }
    let http = common::client();
    let send = |app: &str| {
        http.post(format!("{}/v1/apps/{app}/queues/q/messages", server.admin))
            .bearer_auth(&server.token)
            .body("message")
            .send()
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(send("greedy").status(), 200);
    }
    let refused = send("greedy");
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--app-max-queued-messages"),
        "{body}"
    );
    assert_eq!(
        send("modest").status(),
        200,
        "other apps are not held to it"
    );

    let event = |app: &str, bytes: usize| {
        http.post(format!("{}/v1/apps/{app}/functions/f/invoke", server.admin))
            .bearer_auth(&server.token)
            .header("x-stratus-invocation-type", "Event")
            .body(format!("\"{}\"", "x".repeat(bytes)))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(event("greedy", 600), 202);
    assert_eq!(event("greedy", 600), 429, "past the bytes");
    assert_eq!(event("modest", 600), 202);
}

/// A runtime that opens hundreds of connections to its own Runtime API
/// holds only a few of the server's descriptors: past the instance's cap,
/// they wait in the kernel's backlog.
#[test]
fn a_runtime_cannot_spend_the_server_s_descriptors_on_its_runtime_api() {
    let server = Server::start();
    let dir = server.path("greedy");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: greedy\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    timeout: 30s\n",
            ),
            (
                "main.py",
                "import os, socket\nheld = []\ndef handler(event, context):\n    host, port = os.environ['AWS_LAMBDA_RUNTIME_API'].rsplit(':', 1)\n    for _ in range(event['connections']):\n        try:\n            held.append(socket.create_connection((host, int(port)), timeout=0.2))\n        except OSError:\n            break\n    return len(held)\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .count()
    };
    assert_eq!(
        server.invoke("greedy/f", r#"{"connections": 1}"#)["result"],
        1
    );
    let before = descriptors();
    let seen = server.invoke("greedy/f", r#"{"connections": 400}"#);
    let held = seen["result"].as_u64().unwrap_or_else(|| panic!("{seen}"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = descriptors();
    eprintln!("server descriptors: {before} before, {after} with {held} connections opened");
    assert!(held > 100, "{seen}");
    assert!(
        after < before + 100,
        "the server holds {after} descriptors, {before} before"
    );
    // The instance still answers: its own connections keep their places.
    assert_eq!(
        server.invoke("greedy/f", r#"{"connections": 0}"#)["result"],
        held
    );
}
