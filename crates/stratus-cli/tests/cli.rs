//! The CLI as a person at a shell uses it: output piped into another
//! program, which may stop reading.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::{BIN, Server, write_app};

/// SIGPIPE's number on Linux.
const SIGPIPE: i32 = 13;

/// `stratus logs APP | head -1`: the CLI ends quietly when its reader goes
/// away, with no panic and no "Broken pipe".
#[test]
fn a_reader_that_goes_away_ends_the_cli_quietly() {
    let server = Server::start();
    let dir = server.path("chatty");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: chatty\nfunctions:\n  talk:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "main.py",
                "def handler(event, context):\n    for i in range(3000):\n        print('line %d of a long log' % i)\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    server.invoke("chatty/talk", "{}");
    for args in [
        &["logs", "chatty", "--limit", "3000"][..],
        &["logs", "chatty", "--limit", "3000", "--output", "json"][..],
    ] {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(&server.data_dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader is gone.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(SIGPIPE),
            "{args:?}: {:?}",
            out.status
        );
    }
}

/// Tables line up under their headers whatever the names' lengths; `list`
/// and `delete` are `ls` and `rm`; inside an app's directory a function's
/// name alone is enough; completion scripts for the common shells.
#[test]
fn tables_aliases_completion_and_the_app_of_the_directory() {
    let server = Server::start();
    let dir = server.path("a-long-application-name");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: a-long-application-name\nfunctions:\n  a-function-with-a-long-name:\n    runtime: python3\n    handler: main.handler\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "main.py",
                "def handler(event, context):\n    return 'here'\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);

    let listed = server.ok(&["list"]);
    let lines: Vec<&str> = listed.lines().collect();
    let column = |line: &str, word: &str| line.find(word);
    // VERSION's right edge: every row's version ends where the header does.
    let header = lines[0];
    let version_end = column(header, "VERSION").unwrap() + "VERSION".len();
    for row in &lines[1..] {
        assert_eq!(row.as_bytes()[version_end - 1], b'1', "{listed}");
    }
    let status = server.ok(&["status", "a-long-application-name"]);
    let header = status.lines().next().unwrap();
    let kind = column(header, "KIND").unwrap();
    for row in status.lines().skip(1).take(2) {
        assert_eq!(&row[kind..kind + 8], "function", "{status}");
    }

    // The app of the directory.
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["invoke", "f"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("here"),
        "{out:?}"
    );
    let elsewhere = Command::new(BIN)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["invoke", "f"])
        .current_dir(server.dir.path())
        .output()
        .unwrap();
    assert!(!elsewhere.status.success());
    assert!(
        String::from_utf8_lossy(&elsewhere.stderr).contains("expected APP/FUNCTION"),
        "{elsewhere:?}"
    );

    // `delete` is `rm`.
    server.ok(&["delete", "a-long-application-name"]);
    assert!(server.ok(&["ls"]).contains("no applications"));

    for (shell, says) in [
        ("bash", "_stratus()"),
        ("zsh", "#compdef stratus"),
        ("fish", "complete -c stratus"),
    ] {
        let script = server.ok(&["completion", shell]);
        assert!(script.contains(says), "{shell}: {script}");
        assert!(script.contains("deploy"), "{shell}");
    }
}

/// Exit codes tell apart a function's failure (1), a wrong command line
/// (2), something not found (3), throttling (4) and an unreachable server
/// (5); `deploy --output json` says what was deployed and where.
#[test]
fn exit_codes_and_json_output_are_for_scripts() {
    let server = Server::start_with(&["--queue-depth", "1", "--queue-timeout", "1s"]);
    let dir = server.path("codes");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: codes\nfunctions:\n  fail:\n    runtime: python3\n    handler: main.fail\n  slow:\n    runtime: python3\n    handler: main.slow\n    max_instances: 1\n    http: { path: /slow }\n",
            ),
            (
                "main.py",
                "import time\n\ndef fail(event, context):\n    raise ValueError('no')\n\ndef slow(event, context):\n    time.sleep(3)\n    return 'done'\n",
            ),
        ],
    );
    let out = server.ok(&["deploy", dir.to_str().unwrap(), "--output", "json"]);
    let deployed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(deployed["app"], "codes", "{out}");
    assert_eq!(deployed["version"], 1, "{out}");
    assert_eq!(deployed["changed"], true, "{out}");
    assert!(
        deployed["routes"][0]
            .as_str()
            .is_some_and(|r| r.contains("http://") && r.contains("/slow")),
        "{out}"
    );

    let created = server.ok(&["init", "made-here", "--output", "json"]);
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["app"], "made-here", "{created}");
    let backup = server.dir.path().join("backup");
    let backed = server.ok(&["backup", backup.to_str().unwrap(), "--output", "json"]);
    let backed: serde_json::Value = serde_json::from_str(&backed).unwrap();
    assert!(backed["files"].as_u64().unwrap() > 0, "{backed}");

    let code = |args: &[&str]| server.cli(args).status.code();
    assert_eq!(code(&["invoke", "codes/fail"]), Some(1));
    assert_eq!(code(&["invoke"]), Some(2));
    assert_eq!(code(&["invoke", "codes/nope"]), Some(3));
    assert_eq!(
        code(&["--server", "http://127.0.0.1:1", "--token", "x", "ls"]),
        Some(5)
    );
    // Three at once of a function that runs one at a time with one caller
    // waiting: at least one is throttled.
    let codes: Vec<Option<i32>> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| code(&["invoke", "codes/slow"])))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(codes.contains(&Some(4)), "{codes:?}");
    assert!(codes.contains(&Some(0)), "{codes:?}");
}

/// `logs` filters by text and by time (a time ago or RFC 3339), and
/// `--follow` prints lines as the server pushes them.
#[test]
fn logs_filter_by_text_and_time_and_follow_as_pushed() {
    let server = Server::start();
    let dir = server.path("lines");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: lines\nfunctions:\n  say:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "main.py",
                "def handler(event, context):\n    print('alpha ' + event['tag'])\n    print('beta ' + event['tag'])\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    server.invoke("lines/say", r#"{"tag": "first"}"#);

    let filtered = server.ok(&["logs", "lines", "--filter", "beta"]);
    assert!(filtered.contains("beta first"), "{filtered}");
    assert!(!filtered.contains("alpha"), "{filtered}");
    let before = server.ok(&["logs", "lines", "--until", "2000-01-01T00:00:00Z"]);
    assert!(before.trim().is_empty(), "{before}");
    let since = server.ok(&["logs", "lines", "--since", "2000-01-01T00:00:00Z"]);
    assert!(since.contains("alpha first"), "{since}");
    let recent = server.ok(&["logs", "lines", "--since", "1h", "--filter", "alpha"]);
    assert!(recent.contains("alpha first"), "{recent}");
    let bad = server.fails(&["logs", "lines", "--since", "yesterday-ish"]);
    assert!(bad.contains("RFC 3339"), "{bad}");

    let mut follower = Command::new(BIN)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["logs", "lines", "--follow", "--filter", "second"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    server.invoke("lines/say", r#"{"tag": "second"}"#);
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the followed line arrives");
    assert!(line.contains("second"), "{line}");
    let _ = follower.kill();
    let _ = follower.wait();
}

/// The admin API over HTTPS (`--admin-tls-cert`, `--admin-tls-key`), and
/// the CLI reaching it: trusting the server's own certificate with `--ca`,
/// and refusing it, with the reason, without.
#[test]
fn the_cli_speaks_https_to_an_admin_api_that_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::self_signed(dir.path());
    let server = Server::start_with(&[
        "--admin-tls-cert",
        cert.to_str().unwrap(),
        "--admin-tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(server.admin.starts_with("https://"), "{}", server.admin);
    let cli = |extra: &[&str]| {
        Command::new(BIN)
            .args(["--server", &server.admin, "--token", &server.token])
            .args(extra)
            .arg("ls")
            .output()
            .unwrap()
    };
    let trusted = cli(&["--ca", cert.to_str().unwrap()]);
    assert!(trusted.status.success(), "{trusted:?}");
    assert!(
        String::from_utf8_lossy(&trusted.stdout).contains("no applications"),
        "{trusted:?}"
    );
    let untrusted = cli(&[]);
    assert_eq!(untrusted.status.code(), Some(5), "{untrusted:?}");
    let said = String::from_utf8_lossy(&untrusted.stderr).to_lowercase();
    assert!(said.contains("certificate"), "{said}");
}

/// `deploy` says what it packs and uploads (or that the server has it
/// already), and `--wait` returns once `min_instances` are up, or fails
/// with the reason a service cannot start.
#[test]
fn deploy_shows_progress_and_waits_for_min_instances() {
    let server = Server::start();
    let dir = server.path("up");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: up\nservices:\n  web:\n    code: ./site\n    command: \"exec python3 -m http.server $PORT\"\n    min_instances: 1\n",
            ),
            ("site/index.html", "hello"),
        ],
    );
    let out = server.cli(&["deploy", dir.to_str().unwrap(), "--wait"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("packing site"), "{said}");
    assert!(said.contains(" sent"), "{said}");
    let status = server.ok(&["status", "up", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["apps"][0]["services"][0]["instances"]["ready"], 1,
        "ready as deploy returned: {status}"
    );
    // The same code again: nothing to upload.
    std::fs::write(
        dir.join("stratus.yaml"),
        "app: up\nservices:\n  web:\n    code: ./site\n    command: \"exec python3 -m http.server $PORT\"\n    min_instances: 1\n    env: { CHANGED: \"1\" }\n",
    )
    .unwrap();
    let out = server.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unchanged, already on the server"),
        "{out:?}"
    );

    let broken = server.path("broken");
    write_app(
        &broken,
        &[(
            "stratus.yaml",
            "app: broken\nservices:\n  web:\n    command: \"echo cannot work; exit 3\"\n    min_instances: 1\n",
        )],
    );
    let out = server.cli(&[
        "deploy",
        broken.to_str().unwrap(),
        "--wait",
        "--wait-timeout",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("cannot start") && said.contains("cannot work"),
        "{said}"
    );
}

/// `stratus login` saves a named context (its token checked first) in a
/// private file, and the CLI then reaches that server from any directory;
/// `context ls|use|rm` manage them; with none, the last local server
/// started is found from anywhere.
#[test]
fn login_saves_contexts_and_a_local_server_is_found_from_anywhere() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    let config = common::config_dir(&server.data_dir);
    let elsewhere = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], stdin: &str| {
        common::output_with_stdin(
            Command::new(BIN)
                .args(args)
                .env("STRATUS_CONFIG_DIR", &config)
                .env_remove("STRATUS_URL")
                .env_remove("STRATUS_TOKEN")
                .env_remove("STRATUS_DATA_DIR")
                .current_dir(elsewhere.path()),
            stdin,
        )
    };
    // A wrong token is refused, and nothing is saved.
    let wrong = cli(
        &["login", &server.admin, "--name", "prod"],
        "not-the-token\n",
    );
    assert!(!wrong.status.success(), "{wrong:?}");
    let listed = cli(&["context", "ls"], "");
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("prod"),
        "{listed:?}"
    );
    // The token from standard input.
    let login = cli(&["login", &server.admin, "--name", "prod"], &server.token);
    assert!(login.status.success(), "{login:?}");
    let file = config.join("contexts.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let ls = cli(&["ls"], "");
    assert!(ls.status.success(), "{ls:?}");
    let listed = String::from_utf8_lossy(&cli(&["context", "ls"], "").stdout).into_owned();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with('*') && l.contains("prod")),
        "{listed}"
    );
    let as_json = cli(&["context", "ls", "--output", "json"], "");
    let as_json: serde_json::Value = serde_json::from_slice(&as_json.stdout).unwrap();
    assert_eq!(as_json["current"], "prod", "{as_json}");
    assert!(
        !as_json.to_string().contains(&server.token),
        "no token: {as_json}"
    );
    assert_eq!(cli(&["context", "use", "nope"], "").status.code(), Some(3));
    assert!(cli(&["context", "rm", "prod"], "").status.success());
    // No context: the local server this test started, found from anywhere.
    let ls = cli(&["ls"], "");
    assert!(ls.status.success(), "{ls:?}");
}

/// `stratus event` prints events of each trigger's shape that a handler
/// takes as it takes the real ones: piped into `stratus invoke`.
#[test]
fn sample_events_pipe_into_invoke() {
    let server = Server::start();
    let dir = server.path("samples");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: samples\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "main.py",
                "import json\ndef handler(event, context):\n    if 'rawPath' in event:\n        return {'statusCode': 200, 'body': event['requestContext']['http']['method'] + ' ' + event['rawPath'] + ' ' + event.get('body', '')}\n    if 'Records' in event:\n        return [r['body'] for r in event['Records']]\n    return event['detail-type']\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let cases: [(&[&str], serde_json::Value); 3] = [
        (
            &["event", "http", "post", "/orders/7", "--body", "hi"],
            serde_json::json!({"statusCode": 200, "body": "POST /orders/7 hi"}),
        ),
        (
            &[
                "event", "queue", "work", "--body", "a", "--body", "b", "--format", "sqs",
            ],
            serde_json::json!(["a", "b"]),
        ),
        (
            &[
                "event",
                "schedule",
                "rate(1 hour)",
                "--format",
                "eventbridge",
            ],
            serde_json::json!("Scheduled Event"),
        ),
    ];
    for (args, expected) in cases {
        let event = server.ok(args);
        let out = server.cli_stdin(&["invoke", "samples/f"], &event);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result, expected, "{args:?}");
    }
    let bad = server.fails(&["event", "schedule", "every day"]);
    assert!(bad.contains("schedule"), "{bad}");
}
