//! `stratus dev`: deploys an app, redeploys it on every save, streams its
//! logs, and leaves nothing running when stopped.
//!
//! Runs in both isolation modes (CI runs it again with STRATUS_ISOLATION=none).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{BIN, Server, eventually, lines, processes_with, write_app};

fn handler(word: &str) -> String {
    format!(
        "def handler(event, context):\n    print('serving', '{word}')\n    return {{'statusCode': 200, 'body': '{word}'}}\n"
    )
}

fn app(dir: &Path, word: &str) {
    write_app(
        dir,
        &[
            (
                "stratus.yaml",
                "app: loop\nfunctions:\n  page:\n    runtime: python3\n    handler: main.handler\n    http: { path: /page }\n",
            ),
            ("main.py", &handler(word)),
        ],
    );
}

fn served(public: &str) -> Option<(String, String)> {
    let response = common::client()
        .get(format!("{public}/loop/page"))
        .send()
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let id = common::request_id(&response);
    Some((response.text().unwrap_or_default(), id))
}

fn serves(public: &str, word: &str, within: Duration) -> String {
    eventually(within, || match served(public) {
        Some((body, id)) if body == word => Ok(id),
        other => Err(format!("{public}/loop/page answers {other:?}")),
    })
}

/// A `stratus dev` run, its stdout and stderr read as they come.
struct Dev {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    seen_out: Vec<String>,
    seen_err: Vec<String>,
    interrupted: bool,
}

impl Drop for Dev {
    /// A failed test stops dev (and the server it started) too.
    fn drop(&mut self) {
        if !self.interrupted {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Dev {
    fn spawn(command: &mut Command) -> Dev {
        let mut child = command
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stratus dev");
        let out = lines(child.stdout.take().unwrap());
        let err = lines(child.stderr.take().unwrap());
        Dev {
            child,
            out,
            err,
            seen_out: Vec::new(),
            seen_err: Vec::new(),
            interrupted: false,
        }
    }

    fn drain(&mut self) {
        self.seen_out.extend(self.out.try_iter());
        self.seen_err.extend(self.err.try_iter());
    }

    /// Waits for a line of stdout (`stdout`) or stderr holding all of
    /// `needles`, and returns it.
    fn wait_for(&mut self, stdout: bool, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.drain();
            let seen = if stdout {
                &self.seen_out
            } else {
                &self.seen_err
            };
            if let Some(line) = seen.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "stratus dev printed no line with {needles:?}\nstdout:\n{}\nstderr:\n{}",
                self.seen_out.join("\n"),
                self.seen_err.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ctrl-C, as a terminal sends it; dev must exit cleanly.
    fn interrupt(mut self) -> Vec<String> {
        self.interrupted = true;
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "stratus dev ignores Ctrl-C");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.drain();
        assert!(status.success(), "{status}\n{}", self.seen_err.join("\n"));
        std::mem::take(&mut self.seen_err)
    }
}

#[test]
fn a_save_is_served_at_once_with_its_logs_in_the_same_terminal() {
    let server = Server::start();
    let dir = server.path("loop");
    app(&dir, "one");
    let mut dev = Dev::spawn(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(["dev", dir.to_str().unwrap()])
            .env("STRATUS_CONFIG_DIR", common::config_dir(&server.data_dir)),
    );
    dev.wait_for(false, &["deployed loop version 1"]);
    let id = serves(&server.public, "one", Duration::from_secs(10));
    // The function's own line, with its name and request id.
    let line = dev.wait_for(true, &["serving one", &id]);
    assert!(line.contains(" page "), "{line}");

    // A save of the handler is served within moments.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(dir.join("main.py"), handler("two")).unwrap();
    let saved = Instant::now();
    let id = serves(&server.public, "two", Duration::from_secs(10));
    eprintln!("save to served: {:?}", saved.elapsed());
    dev.wait_for(false, &["deployed loop version 2"]);
    dev.wait_for(true, &["serving two", &id]);

    // A broken manifest deploys nothing, says why, and the loop goes on.
    std::fs::write(dir.join("stratus.yaml"), "app: loop\nfunctions: [\n").unwrap();
    dev.wait_for(false, &["not deployed", "stratus.yaml"]);
    assert_eq!(
        served(&server.public).map(|(body, _)| body).as_deref(),
        Some("two")
    );
    app(&dir, "three");
    serves(&server.public, "three", Duration::from_secs(10));
    dev.wait_for(false, &["deployed loop version 3"]);

    // Stopping it leaves the server it did not start alone.
    dev.interrupt();
    assert_eq!(
        served(&server.public).map(|(body, _)| body).as_deref(),
        Some("three")
    );
}

#[test]
fn without_a_server_it_starts_one_and_ctrl_c_leaves_nothing_running() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("loop");
    let data_dir = temp.path().join("data");
    app(&dir, "one");
    let mut dev = Dev::spawn(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["dev", dir.to_str().unwrap()])
            .args([
                "--",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("STRATUS_CONFIG_DIR", temp.path().join("config"))
            .env_remove("STRATUS_URL"),
    );
    dev.wait_for(false, &["started a local server"]);
    dev.wait_for(false, &["deployed loop version 1"]);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("server.json")).unwrap())
            .unwrap();
    let public = info["public"].as_str().unwrap().to_owned();
    let id = serves(&public, "one", Duration::from_secs(10));
    // `TIME FUNCTION VERSION INSTANCE REQUEST MESSAGE`
    let line = dev.wait_for(true, &["serving one", &id]);
    let instance = line.split(' ').nth(3).unwrap().to_owned();
    assert!(!common::processes_of(&instance).is_empty(), "{line}");

    dev.interrupt();
    // The server it started and the instances are gone.
    eventually(Duration::from_secs(10), || {
        let left = common::processes_of(&instance);
        let servers: Vec<u32> = processes_with(&format!(
            "STRATUS_CONFIG_DIR={}",
            temp.path().join("config").display()
        ));
        if left.is_empty() && servers.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "still running: instances {left:?}, servers {servers:?}"
            ))
        }
    });
    assert!(served(&public).is_none());
}

/// `stratus dev DIR --debug FUNCTION` on a free port; the port.
fn debugging(server: &Server, dir: &Path, function: &str) -> (Dev, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let dev = Dev::spawn(
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(["dev", dir.to_str().unwrap(), "--debug", function])
            .args(["--debug-port", &port])
            .env("STRATUS_CONFIG_DIR", common::config_dir(&server.data_dir)),
    );
    (dev, port)
}

/// `stratus invoke TARGET --data DATA` on a thread of its own: it waits
/// while the debugger holds the function.
fn invoke_in_background(
    server: &Server,
    target: &str,
    data: &str,
) -> std::thread::JoinHandle<std::process::Output> {
    let (data_dir, target, data) = (server.data_dir.clone(), target.to_owned(), data.to_owned());
    std::thread::spawn(move || {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["invoke", &target, "--data", &data])
            .env("STRATUS_CONFIG_DIR", common::config_dir(&data_dir))
            .output()
            .unwrap()
    })
}

/// A Chrome DevTools protocol client, as a debugger's front end speaks it:
/// finds the inspector's target, sets a breakpoint on line 2 of index.js,
/// says so, and when execution pauses there says where and reads `event.n`
/// in the paused frame; resumes when told to on standard input.
const CDP_CLIENT: &str = r#"
const port = process.argv[2];
const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
let next = 0;
const waiting = new Map();
const send = (method, params = {}) => new Promise((resolve) => {
  next += 1;
  waiting.set(next, resolve);
  ws.send(JSON.stringify({ id: next, method, params }));
});
ws.onmessage = async (message) => {
  const msg = JSON.parse(message.data);
  if (msg.id) { waiting.get(msg.id)(msg); return; }
  if (msg.method === "Debugger.paused") {
    const frame = msg.params.callFrames[0];
    const local = await send("Debugger.evaluateOnCallFrame", { callFrameId: frame.callFrameId, expression: "event.n" });
    console.log(`paused at line ${frame.location.lineNumber + 1} n=${local.result.result.value}`);
    // Resumes when told to, on standard input.
    await new Promise((resolve) => process.stdin.once("data", resolve));
    await send("Debugger.resume");
    console.log("resumed");
    process.exit(0);
  }
};
ws.onopen = async () => {
  await send("Debugger.enable");
  const set = await send("Debugger.setBreakpointByUrl", { lineNumber: 1, urlRegex: "index\\.js$" });
  console.log(`breakpoint ${set.result.locations.length}`);
};
"#;

/// `stratus dev --debug FUNCTION` runs a Node.js function with its
/// inspector on the given port: a DevTools protocol client sets a
/// breakpoint in the handler, an invocation stops there, and finishes once
/// resumed.
#[test]
fn a_debugger_stops_a_node_function_at_its_breakpoint_and_resumes_it() {
    let server = Server::start();
    let dir = server.path("dbg");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: dbg\nfunctions:\n  api:\n    runtime: nodejs\n    handler: index.handler\n    timeout: 2s\n",
            ),
            (
                "index.js",
                "exports.handler = async (event) => {\n  const doubled = event.n * 2;\n  return { doubled };\n};\n",
            ),
        ],
    );
    let (mut dev, port) = debugging(&server, &dir, "api");
    dev.wait_for(false, &["runs with its debugger on 127.0.0.1", &port]);
    dev.wait_for(false, &["deployed dbg version 1"]);
    // The instance is started at once, its inspector listening.
    eventually(Duration::from_secs(20), || {
        common::client()
            .get(format!("http://127.0.0.1:{port}/json/list"))
            .send()
            .map_err(|e| e.to_string())
            .map(drop)
    });
    let script = server.path("cdp.mjs");
    std::fs::write(&script, CDP_CLIENT).unwrap();
    let mut client = Command::new("node")
        .arg("--experimental-websocket")
        .arg(&script)
        .arg(&port)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let said = lines(client.stdout.take().unwrap());
    let next = |what: &str| {
        said.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the debugger client did not say {what}"))
    };
    assert_eq!(next("the breakpoint"), "breakpoint 1");
    let invocation = invoke_in_background(&server, "dbg/api", r#"{"n":21}"#);
    assert_eq!(next("where it paused"), "paused at line 2 n=21");
    // Paused past the function's own 2 s timeout: the invocation still
    // finishes once resumed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !invocation.is_finished(),
        "the invocation ended while paused"
    );
    use std::io::Write;
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"resume\n")
        .unwrap();
    assert_eq!(next("that it resumed"), "resumed");
    let out = invocation.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["doubled"], 42);
    let _ = client.wait();

    // Stopped: the app runs undebugged again, the inspector closed.
    dev.interrupt();
    let shown = server.ok(&["ls", "--output", "json"]);
    assert!(!shown.contains("--inspect"), "{shown}");
    eventually(
        Duration::from_secs(10),
        || match std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
            Ok(_) => Err("the inspector still listens".to_owned()),
            Err(_) => Ok(()),
        },
    );
    assert_eq!(
        server.invoke("dbg/api", r#"{"n":2}"#)["result"]["doubled"],
        4
    );
}

/// One Debug Adapter Protocol connection, as VS Code speaks it to debugpy.
struct Dap {
    stream: std::io::BufReader<std::net::TcpStream>,
    seq: u64,
    /// Events read while waiting for something else.
    events: Vec<serde_json::Value>,
}

impl Dap {
    /// Connects once it listens (debugpy's adapter takes one client: no
    /// probing first).
    fn connect(port: &str) -> Dap {
        let stream = eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect(format!("127.0.0.1:{port}")).map_err(|e| e.to_string())
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Dap {
            stream: std::io::BufReader::new(stream),
            seq: 0,
            events: Vec::new(),
        }
    }

    fn send(&mut self, command: &str, arguments: serde_json::Value) -> u64 {
        use std::io::Write;
        self.seq += 1;
        let body = serde_json::json!({
            "seq": self.seq, "type": "request", "command": command, "arguments": arguments,
        })
        .to_string();
        let stream = self.stream.get_mut();
        write!(stream, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.seq
    }

    fn read(&mut self) -> serde_json::Value {
        use std::io::{BufRead, Read};
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                length = n.parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// The response to request `seq`.
    fn response(&mut self, seq: u64) -> serde_json::Value {
        loop {
            let message = self.read();
            if message["type"] == "response" && message["request_seq"] == seq {
                assert_eq!(message["success"], true, "{message}");
                return message;
            }
            self.events.push(message);
        }
    }

    /// The next event named `name`, read or already seen.
    fn event(&mut self, name: &str) -> serde_json::Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i);
        }
        loop {
            let message = self.read();
            if message["event"] == name {
                return message;
            }
            self.events.push(message);
        }
    }
}

/// `stratus dev --debug` on a Python function runs it under debugpy (from
/// its requirements.txt): a Debug Adapter Protocol client attaches, sets
/// a breakpoint, the invocation stops there and finishes once continued.
#[test]
fn a_debugger_stops_a_python_function_at_its_breakpoint_and_continues_it() {
    let server = Server::start();
    let dir = server.path("pydbg");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: pydbg\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    timeout: 2s\n",
            ),
            ("requirements.txt", "debugpy\n"),
            (
                "main.py",
                "def handler(event, context):\n    doubled = event['n'] * 2\n    return {'doubled': doubled, 'file': __file__}\n",
            ),
        ],
    );
    let (mut dev, port) = debugging(&server, &dir, "f");
    dev.wait_for(false, &["deployed pydbg version 1"]);
    // Where the function's code is, as Python sees it.
    let file = server.invoke("pydbg/f", r#"{"n":1}"#)["result"]["file"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut dap = Dap::connect(&port);
    let init = dap.send(
        "initialize",
        serde_json::json!({"adapterID": "debugpy", "clientID": "stratus-test", "linesStartAt1": true, "columnsStartAt1": true, "pathFormat": "path"}),
    );
    dap.response(init);
    let attach = dap.send("attach", serde_json::json!({"justMyCode": true}));
    dap.event("initialized");
    let set = dap.send(
        "setBreakpoints",
        serde_json::json!({"source": {"path": file}, "breakpoints": [{"line": 2}]}),
    );
    let set = dap.response(set);
    assert_eq!(set["body"]["breakpoints"][0]["verified"], true, "{set}");
    let done = dap.send("configurationDone", serde_json::json!({}));
    dap.response(done);
    dap.response(attach);

    let invocation = invoke_in_background(&server, "pydbg/f", r#"{"n":21}"#);
    let stopped = dap.event("stopped");
    assert_eq!(stopped["body"]["reason"], "breakpoint", "{stopped}");
    let thread = stopped["body"]["threadId"].clone();
    let trace = dap.send("stackTrace", serde_json::json!({"threadId": thread}));
    let trace = dap.response(trace);
    assert_eq!(trace["body"]["stackFrames"][0]["line"], 2, "{trace}");
    // Paused past the function's own 2 s timeout.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !invocation.is_finished(),
        "the invocation ended while paused"
    );
    let go = dap.send("continue", serde_json::json!({"threadId": thread}));
    dap.response(go);
    let out = invocation.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["doubled"], 42);
    dev.interrupt();
}
