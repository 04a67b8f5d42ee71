//! What operators' tools see of a node: probes without credentials, the
//! server's own log as text or JSON, and metrics that a real Prometheus
//! server (Debian's `prometheus`) scrapes and answers PromQL about.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Server, client, write_app};

#[test]
fn probes_answer_without_credentials_on_every_listener() {
    let metrics = common::free_port();
    let server = Server::start_with(&["--metrics-listen", &format!("127.0.0.1:{metrics}")]);
    let http = client();
    for base in [
        server.admin.clone(),
        server.public.clone(),
        format!("http://127.0.0.1:{metrics}"),
    ] {
        let alive = http.get(format!("{base}/healthz")).send().unwrap();
        assert_eq!(alive.status(), 200, "{base}");
        let body: serde_json::Value = alive.json().unwrap();
        assert_eq!(body["status"], "alive", "{base}");
        let ready: serde_json::Value = http
            .get(format!("{base}/readyz?verbose"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(ready["status"], "ready", "{base}: {ready}");
        assert_eq!(ready["store"]["up"], true, "{base}: {ready}");
    }
    // The metrics listener serves nothing else of the admin API.
    let status = http
        .get(format!("http://127.0.0.1:{metrics}/v1/status"))
        .bearer_auth(&server.token)
        .send()
        .unwrap();
    assert_eq!(status.status(), 404);
    // The admin API still wants its token.
    let refused = http
        .get(format!("{}/v1/status", server.admin))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);

    // An app cannot take a name the node's own paths use.
    write_app(
        &server.path("metrics"),
        &[
            (
                "stratus.yaml",
                "app: metrics\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", "def handler(event, context):\n    return 1\n"),
        ],
    );
    let said = server.fails(&["deploy", server.path("metrics").to_str().unwrap()]);
    assert!(
        said.contains("the application name \"metrics\" is reserved"),
        "{said}"
    );
}

/// The server's log once it says it serves.
fn log_once_serving(log: &Path) -> String {
    common::eventually(Duration::from_secs(30), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("stratus is serving") {
            Ok(text)
        } else {
            Err(text)
        }
    })
}

#[test]
fn the_server_s_log_is_plain_text_in_a_file_or_one_json_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let text_log = dir.path().join("text.log");
    let mut text = common::spawn_logging_to(&dir.path().join("text"), &[], &text_log, "info");
    let written = log_once_serving(&text_log);
    let _ = text.kill();
    let _ = text.wait();
    assert!(
        !written.contains('\u{1b}'),
        "no colour codes in a file: {written:?}"
    );
    assert!(written.contains("INFO"), "{written}");

    let json_log = dir.path().join("json.log");
    let mut json = common::spawn_logging_to(
        &dir.path().join("json"),
        &["--log-format", "json"],
        &json_log,
        "info",
    );
    let written = log_once_serving(&json_log);
    let _ = json.kill();
    let _ = json.wait();
    let lines: Vec<serde_json::Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "stratus is serving")
        .unwrap_or_else(|| panic!("{written}"));
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(
        serving["fields"]["admin"]
            .as_str()
            .is_some_and(|a| a.starts_with("http://127.0.0.1:")),
        "{serving}"
    );
}

/// A Prometheus server of the test's own, stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target: &str, token: &str) -> Prometheus {
        let binary = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("Prometheus is needed (Debian: apt-get install prometheus)");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: stratus\n    authorization:\n      credentials: {token}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = common::free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The value of the one series `query` gives, once it gives one.
    fn value(&self, query: &str) -> Option<f64> {
        let answer: serde_json::Value = client()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .ok()?
            .json()
            .ok()?;
        let result = answer["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` gives `expected`.
    fn expect(&self, query: &str, expected: f64) {
        common::eventually(Duration::from_secs(60), || match self.value(query) {
            Some(value) if value == expected => Ok(()),
            other => Err(format!("{query}: {other:?}, want {expected}")),
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_counts_the_platform_made() {
    let metrics_port = common::free_port();
    let token = "scrape-secret";
    let server = Server::start_with(&[
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
        "--metrics-token",
        token,
        // A busy function throttles at once.
        "--queue-depth",
        "0",
    ]);
    write_app(
        &server.path("obs"),
        &[
            (
                "stratus.yaml",
                "app: obs\nfunctions:\n  ok:\n    runtime: python3\n    handler: main.ok\n  boom:\n    runtime: python3\n    handler: main.boom\n  slow:\n    runtime: python3\n    handler: main.slow\n    max_instances: 1\n  dead:\n    runtime: python3\n    handler: main.boom\n    retries: 0\n",
            ),
            (
                "main.py",
                "import time\n\ndef ok(event, context):\n    return 'ok'\n\ndef boom(event, context):\n    raise ValueError('boom')\n\ndef slow(event, context):\n    time.sleep(float(event.get('sleep', 0)))\n    return 'slept'\n",
            ),
        ],
    );
    common::deploy(&server, "obs");
    for _ in 0..3 {
        assert_eq!(server.invoke("obs/ok", "{}")["result"], "ok");
    }
    let failed = server.cli(&["invoke", "obs/boom", "--data", "{}"]);
    assert!(!failed.status.success());
    // One call keeps `slow` busy; the next is throttled.
    assert_eq!(server.invoke("obs/slow", "{}")["result"], "slept");
    let busy = std::thread::scope(|s| {
        let long = s.spawn(|| server.invoke("obs/slow", r#"{"sleep": 3}"#));
        common::eventually(Duration::from_secs(10), || {
            let status: serde_json::Value =
                serde_json::from_str(&server.ok(&["status", "obs", "--output", "json"])).unwrap();
            let slow = status["apps"][0]["functions"]
                .as_array()
                .and_then(|f| f.iter().find(|f| f["name"] == "slow").cloned())
                .unwrap_or_default();
            if slow["instances"]["busy"] == 1 {
                Ok(())
            } else {
                Err(slow.to_string())
            }
        });
        let throttled = server.cli(&["invoke", "obs/slow", "--data", "{}"]);
        let said = String::from_utf8_lossy(&throttled.stderr).into_owned();
        long.join().unwrap();
        (throttled.status.success(), said)
    });
    assert!(!busy.0, "the second call was throttled: {}", busy.1);
    server.ok(&["invoke", "obs/dead", "--async", "--data", "{}"]);
    common::eventually(Duration::from_secs(30), || {
        let letters = server.ok(&["dlq", "ls", "obs"]);
        if letters.contains("dead") {
            Ok(())
        } else {
            Err(letters)
        }
    });

    // The endpoint itself: the token, and both formats.
    let http = client();
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    assert_eq!(http.get(&url).send().unwrap().status(), 401);
    let text = http.get(&url).bearer_auth(token).send().unwrap();
    assert_eq!(
        text.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = text.text().unwrap();
    assert!(
        text.contains(r#"stratus_function_invocations_total{app="obs",function="ok",version="1",outcome="success"} 3"#),
        "{text}"
    );
    let open = http
        .get(&url)
        .bearer_auth(token)
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(open.text().unwrap().ends_with("# EOF\n"));
    // The admin listener serves it too.
    let admin = http
        .get(format!("{}/metrics", server.admin))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(admin.status(), 200);

    let prometheus = Prometheus::scraping(&format!("127.0.0.1:{metrics_port}"), token);
    let of = |function: &str, outcome: &str| {
        format!(
            r#"stratus_function_invocations_total{{app="obs",function="{function}",outcome="{outcome}"}}"#
        )
    };
    prometheus.expect(&of("ok", "success"), 3.0);
    prometheus.expect(&of("boom", "error"), 1.0);
    prometheus.expect(&of("slow", "throttled"), 1.0);
    prometheus.expect(&of("slow", "success"), 2.0);
    prometheus.expect(
        r#"stratus_function_cold_starts_total{app="obs",function="ok"}"#,
        1.0,
    );
    prometheus.expect(
        r#"stratus_function_events{app="obs",function="dead",state="dead"}"#,
        1.0,
    );
    prometheus.expect(
        r#"stratus_function_duration_seconds_count{app="obs",function="ok",phase="handler"}"#,
        3.0,
    );
    prometheus.expect(r#"stratus_store_up"#, 1.0);
    // The slow call's three seconds are in its handler's time.
    common::eventually(Duration::from_secs(30), || {
        match prometheus.value(
            r#"stratus_function_duration_seconds_sum{app="obs",function="slow",phase="handler"}"#,
        ) {
            Some(seconds) if seconds > 2.9 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

/// Each invocation's CPU time, from its instance's cgroup, next to its
/// duration and memory: in `--output json`, the REPORT record and the
/// metrics. (Without isolation instances have no cgroup of their own, and
/// no CPU time is reported.)
#[test]
fn an_invocation_s_cpu_time_is_reported_beside_its_duration() {
    if std::env::var("STRATUS_ISOLATION").as_deref() == Ok("none") {
        return;
    }
    let server = Server::start();
    write_app(
        &server.path("cpu"),
        &[
            (
                "stratus.yaml",
                "app: cpu\nfunctions:\n  spin:\n    runtime: python3\n    handler: main.spin\n  nap:\n    runtime: python3\n    handler: main.nap\n",
            ),
            (
                "main.py",
                "import time\n\ndef spin(event, context):\n    end = time.process_time() + 0.3\n    n = 0\n    while time.process_time() < end:\n        n += 1\n    return n\n\ndef nap(event, context):\n    time.sleep(0.3)\n    return 'rested'\n",
            ),
        ],
    );
    common::deploy(&server, "cpu");
    let cpu = |function: &str| {
        let out: serde_json::Value = serde_json::from_str(
            &server.ok(&["invoke", function, "--data", "{}", "--output", "json"]),
        )
        .unwrap();
        out
    };
    let spin = cpu("cpu/spin");
    let used = spin["cpu"]["user_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("{spin}"))
        + spin["cpu"]["system_ms"].as_f64().unwrap();
    assert!(used >= 250.0, "a CPU-bound handler: {spin}");
    assert_eq!(spin["cpu"]["scope"], "invocation", "{spin}");
    assert!(
        spin["max_memory_mb"].as_f64().is_some_and(|mb| mb > 1.0),
        "{spin}"
    );
    let nap = cpu("cpu/nap");
    let used = nap["cpu"]["user_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("{nap}"))
        + nap["cpu"]["system_ms"].as_f64().unwrap();
    assert!(
        used < 100.0 && nap["duration_ms"].as_f64().unwrap() >= 300.0,
        "a handler that sleeps: {nap}"
    );
    let reports = common::log_records(&server, "cpu/spin", &[]);
    assert!(
        reports
            .iter()
            .filter(|r| r["stream"] == "report")
            .any(|r| r["message"]
                .as_str()
                .is_some_and(|m| m.contains("CPU Time: ") && m.contains(" ms user, "))
                && r["fields"]["cpu_user_ms"].as_f64().is_some()),
        "{reports:?}"
    );
    let metrics = client()
        .get(format!("{}/metrics", server.admin))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let spent: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("stratus_function_cpu_seconds_total{") && l.contains(r#"function="spin""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(spent >= 0.25, "{metrics}");
}

/// A failed invocation keeps its scene: the event, the error and stack,
/// its log lines, the phases, and the names (not values) of its
/// variables; after a fix, replaying it runs the same event again.
#[test]
fn a_failure_s_scene_is_kept_and_replays_after_a_fix() {
    let server = Server::start();
    let manifest = "app: scene\nfunctions:\n  pay:\n    runtime: python3\n    handler: main.handler\n    env:\n      CURRENCY: secret-eur\n";
    write_app(
        &server.path("scene"),
        &[
            ("stratus.yaml", manifest),
            (
                "main.py",
                "def handler(event, context):\n    print('charging', event['amount'])\n    return charge(event['amount'])\n\ndef charge(amount):\n    raise ValueError('no card for %d' % amount)\n",
            ),
        ],
    );
    common::deploy(&server, "scene");
    let failed = server.cli(&["invoke", "scene/pay", "--data", r#"{"amount": 42}"#]);
    assert!(!failed.status.success());
    let id = common::eventually(Duration::from_secs(15), || {
        let listed: serde_json::Value =
            serde_json::from_str(&server.ok(&["failures", "ls", "scene/pay", "--output", "json"]))
                .unwrap();
        match listed["failures"][0]["id"].as_str() {
            Some(id) => Ok(id.to_owned()),
            None => Err(listed.to_string()),
        }
    });
    let listed = server.ok(&["failures", "ls", "scene"]);
    assert!(
        listed.contains(&id) && listed.contains("ValueError"),
        "{listed}"
    );

    let shown: serde_json::Value =
        serde_json::from_str(&server.ok(&["failures", "show", &id, "--output", "json"])).unwrap();
    assert_eq!(
        shown["event"],
        serde_json::json!({ "amount": 42 }),
        "{shown}"
    );
    assert_eq!(shown["outcome"], "error");
    let scene = &shown["scene"];
    assert_eq!(scene["error"]["errorType"], "ValueError", "{shown}");
    assert_eq!(scene["error"]["errorMessage"], "no card for 42");
    assert!(
        scene["error"]["stackTrace"].as_array().is_some_and(|s| s
            .iter()
            .any(|l| l.as_str().unwrap_or("").contains("charge"))),
        "{shown}"
    );
    assert!(
        scene["logs"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["message"] == "charging 42")),
        "{shown}"
    );
    assert!(scene["phases"]["duration_ms"].as_f64().is_some(), "{shown}");
    assert!(
        scene["env_names"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n == "CURRENCY")),
        "{shown}"
    );
    assert!(
        !shown.to_string().contains("secret-eur"),
        "no values: {shown}"
    );
    let text = server.ok(&["failures", "show", &id]);
    assert!(
        text.contains("ValueError: no card for 42") && text.contains("charging 42"),
        "{text}"
    );

    // Still failing: the replay says so.
    let again = server.cli(&["failures", "replay", &id]);
    assert!(!again.status.success());
    // Fixed and deployed: the same event succeeds.
    write_app(
        &server.path("scene"),
        &[(
            "main.py",
            "def handler(event, context):\n    return {'charged': event['amount']}\n",
        )],
    );
    common::deploy(&server, "scene");
    let replayed: serde_json::Value =
        serde_json::from_str(&server.ok(&["failures", "replay", &id, "--output", "json"])).unwrap();
    assert_eq!(replayed["replay"]["ok"], true, "{replayed}");
    assert_eq!(
        replayed["replay"]["result"],
        serde_json::json!({ "charged": 42 })
    );
    assert_eq!(replayed["replay"]["version"], 2);
    assert_eq!(replayed["original"]["version"], 1);
    let text = server.ok(&["failures", "replay", &id]);
    assert!(
        text.contains("original  v1  error  ValueError: no card for 42")
            && text.contains(r#"replay    v2  success  {"charged":42}"#),
        "{text}"
    );
    // On the version that failed, kept by this node: it fails as it did,
    // and the active version still serves.
    let on_v1: serde_json::Value = serde_json::from_slice(
        &server
            .cli(&[
                "failures",
                "replay",
                &id,
                "--version",
                "1",
                "--output",
                "json",
            ])
            .stdout,
    )
    .unwrap();
    assert_eq!(on_v1["replay"]["ok"], false, "{on_v1}");
    assert_eq!(on_v1["replay"]["version"], 1, "{on_v1}");
    assert_eq!(on_v1["replay"]["error"]["errorType"], "ValueError");
    let active = server.ok(&["invoke", "scene/pay", "--data", r#"{"amount": 1}"#]);
    assert!(active.contains("charged"), "{active}");
    let missing = server.fails(&["failures", "replay", &id, "--version", "9"]);
    assert!(missing.contains("scene has no version 9"), "{missing}");
}

#[test]
fn a_profile_of_a_busy_python_function_names_its_hot_function() {
    let server = Server::start();
    write_app(
        &server.path("hot"),
        &[
            (
                "stratus.yaml",
                "app: hot\nfunctions:\n  spin:\n    runtime: python3\n    handler: main.handler\n    timeout: 60s\n",
            ),
            (
                "main.py",
                "import time\n\ndef burn_cpu_here(n):\n    total = 0\n    for i in range(n):\n        total += i * i\n    return total\n\ndef handler(event, context):\n    end = time.time() + event['seconds']\n    while time.time() < end:\n        burn_cpu_here(20000)\n    return 'done'\n",
            ),
        ],
    );
    common::deploy(&server, "hot");
    // Nothing runs: nothing to sample, and it says what to do.
    let idle = server.fails(&["profile", "hot/spin", "--seconds", "1"]);
    assert!(idle.contains("no instance of hot/spin runs now"), "{idle}");

    let busy = {
        let (admin, token) = (server.admin.clone(), server.token.clone());
        std::thread::spawn(move || {
            client()
                .post(format!("{admin}/v1/apps/hot/functions/spin/invoke"))
                .bearer_auth(token)
                .body(r#"{"seconds": 8}"#)
                .timeout(Duration::from_secs(60))
                .send()
                .unwrap()
                .status()
        })
    };
    // Once its instance has started (a cold start takes a moment), the
    // busy function is sampled.
    let svg = server.path("spin.svg");
    let shown = common::eventually(Duration::from_secs(20), || {
        let out = server.cli(&[
            "profile",
            "hot/spin",
            "--seconds",
            "3",
            "--svg",
            svg.to_str().unwrap(),
        ]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    let top: Vec<&str> = shown.lines().skip(2).take(3).collect();
    assert!(
        top.iter().any(|line| line.contains("burn_cpu_here")),
        "the hot function is among the top frames:\n{shown}"
    );
    assert!(shown.contains("(py-spy)"), "{shown}");
    let graph = std::fs::read_to_string(&svg).unwrap();
    assert!(
        graph.starts_with("<?xml") && graph.contains("<svg"),
        "{graph}"
    );
    assert!(graph.contains("burn_cpu_here"));
    assert!(busy.join().unwrap().is_success());
}

#[test]
fn a_profile_of_a_busy_node_function_names_its_hot_function() {
    let server = Server::start();
    write_app(
        &server.path("hotjs"),
        &[
            (
                "stratus.yaml",
                "app: hotjs\nfunctions:\n  spin:\n    runtime: nodejs\n    handler: index.handler\n",
            ),
            (
                "index.js",
                "function burnCpuHere(n) {\n  let total = 0;\n  for (let i = 0; i < n; i++) total += Math.sqrt(i) * i;\n  return total;\n}\n\nexports.handler = async (event) => {\n  const end = Date.now() + event.ms;\n  let total = 0;\n  while (Date.now() < end) total += burnCpuHere(20000);\n  return { total };\n};\n",
            ),
        ],
    );
    common::deploy(&server, "hotjs");
    // Short busy invocations one after another: the runtime reads the
    // requests to start and stop between them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (admin, token, stop) = (server.admin.clone(), server.token.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut failed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = client()
                    .post(format!("{admin}/v1/apps/hotjs/functions/spin/invoke"))
                    .bearer_auth(&token)
                    .body(r#"{"ms": 150}"#)
                    .send()
                    .unwrap()
                    .status();
                failed += usize::from(!status.is_success());
            }
            failed
        })
    };
    let svg = server.path("spin.svg");
    let shown = common::eventually(Duration::from_secs(30), || {
        let out = server.cli(&[
            "profile",
            "hotjs/spin",
            "--seconds",
            "2",
            "--svg",
            svg.to_str().unwrap(),
        ]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load.join().unwrap(), 0, "every invocation succeeded");
    let top: Vec<&str> = shown.lines().skip(2).take(3).collect();
    assert!(
        top.iter()
            .any(|line| line.contains("burnCpuHere (index.js:1)")),
        "the hot function, with its file and line, is among the top frames:\n{shown}"
    );
    assert!(shown.contains("(v8)"), "{shown}");
    assert!(
        std::fs::read_to_string(&svg)
            .unwrap()
            .contains("burnCpuHere")
    );
    // The runtime profiled and went on serving.
    let again = server.ok(&["invoke", "hotjs/spin", "--data", r#"{"ms": 1}"#]);
    assert!(again.contains("total"), "{again}");
}
