//! A node that keeps its state in PostgreSQL (`--store postgres://…`), on
//! the real server this machine runs (`STRATUS_TEST_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), each test in a database
//! of its own: it serves, its state and logs are in the database and
//! survive a restart, and a store it cannot reach stops it at start with
//! the reason.

mod common;

use std::process::{Command, Stdio};

use common::{BIN, Server, write_app};

/// A database of its own on the test server, dropped at the end.
struct Database {
    server: String,
    name: String,
}

fn block_on<T>(work: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

/// Runs `sql` on the database `url` names; the rows' first columns, as
/// text.
fn sql(url: &str, sql: &str) -> Vec<String> {
    block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|err| {
                panic!("cannot reach PostgreSQL at {url} (set STRATUS_TEST_POSTGRES): {err}")
            });
        tokio::spawn(connection);
        client
            .simple_query(sql)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .collect()
    })
}

impl Database {
    fn new(tag: &str) -> Database {
        let server = std::env::var("STRATUS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("stratus_cli_{tag}_{}", std::process::id());
        sql(&server, &format!("DROP DATABASE IF EXISTS {name}"));
        sql(&server, &format!("CREATE DATABASE {name}"));
        Database { server, name }
    }

    fn url(&self) -> String {
        let (base, _) = self.server.rsplit_once('/').expect("a database in the URL");
        format!("{base}/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        sql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

const HANDLER: &str = "def handler(event, context):\n    print('handled', event.get('n'))\n    return {'n': event.get('n')}\n";

#[test]
fn a_node_on_postgresql_serves_and_keeps_its_state_there() {
    let db = Database::new("serves");
    let url = db.url();
    let mut server = Server::start_with(&["--store", &url]);
    let dir = server.path("pg");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: pg\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", HANDLER),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    assert_eq!(server.invoke("pg/f", r#"{"n": 1}"#)["result"]["n"], 1);
    let accepted = server.ok(&["invoke", "pg/f", "--async", "-d", r#"{"n": 2}"#]);
    assert!(accepted.starts_with("accepted"), "{accepted}");

    // The state is in the database, not in the data directory.
    assert_eq!(sql(&url, "SELECT name FROM apps"), ["pg"]);
    assert!(!server.data_dir.join("stratus.db").exists());
    // So are the logs, the asynchronous event's among them.
    common::eventually(std::time::Duration::from_secs(20), || {
        let lines = sql(&url, "SELECT message FROM logs WHERE stream = 'stdout'");
        if lines.iter().any(|l| l == "handled 2") {
            Ok(())
        } else {
            Err(format!("stored lines: {lines:?}"))
        }
    });
    let records = common::log_records(&server, "pg/f", &[]);
    assert!(
        records.iter().any(|r| r["message"] == "handled 1"),
        "{records:?}"
    );

    // A restart finds it all again.
    server.stop();
    server.restart();
    assert_eq!(server.invoke("pg/f", r#"{"n": 3}"#)["result"]["n"], 3);
    let status = server.ok(&["status", "pg"]);
    assert!(status.contains("pg/f"), "{status}");
}

/// `n` nodes on the store at `url`: the first makes the cluster's admin
/// token, the others are handed it.
fn cluster(url: &str, n: usize) -> Vec<Server> {
    let first = Server::start_with(&["--store", url]);
    let token = first.data_dir.join("admin.token");
    let token = token.to_str().unwrap().to_owned();
    let mut nodes = vec![first];
    nodes.extend(
        (1..n).map(|_| Server::start_with(&["--store", url, "--admin-token-file", &token])),
    );
    nodes
}

/// `stratus server ARGS` on a new data directory, expected to exit: its
/// stderr.
fn start_expecting_failure(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the server started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_store_that_cannot_be_reached_or_named_stops_the_start_with_the_reason() {
    let unreachable =
        start_expecting_failure(&["--store", "postgres://postgres:secret@127.0.0.1:1/gone"]);
    assert!(
        unreachable.contains(
            "cannot open the PostgreSQL database postgres://postgres:***@127.0.0.1:1/gone"
        ),
        "{unreachable}"
    );
    assert!(!unreachable.contains("secret"), "{unreachable}");
    let unknown = start_expecting_failure(&["--store", "mysql://root@127.0.0.1/db"]);
    assert!(
        unknown.contains("give postgres://USER@HOST/DB"),
        "{unknown}"
    );
}

/// `stratus migrate` on the data directory, expected to succeed or not:
/// (success, stdout and stderr).
fn migrate(data_dir: &std::path::Path, to: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["migrate", "--from"])
        .arg(data_dir)
        .args(["--to", to])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A populated single node moves into PostgreSQL, whole, and serves there
/// from the same data directory; the target must be new, and the source
/// must not be in use.
#[test]
fn a_single_node_migrates_into_postgresql_and_serves_there() {
    let db = Database::new("migrate");
    let url = db.url();
    let home = tempfile::tempdir().unwrap();
    let data_dir = home.path().join("data");
    let mut single = Server::start_at(tempfile::tempdir().unwrap(), data_dir.clone(), &[]);
    let dir = single.path("moved");
    let out = single.cli_stdin(&["secret", "set", "moved", "w"], "sealed here");
    assert!(out.status.success(), "{out:?}");
    for version in ["1", "2"] {
        write_app(
            &dir,
            &[
                (
                    "stratus.yaml",
                    &format!(
                        "app: moved\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    env:\n      V: \"{version}\"\n      W: {{ secret: w }}\n"
                    ),
                ),
                (
                    "main.py",
                    "import os\ndef handler(event, context):\n    return os.environ['V'] + ':' + os.environ['W'][::-1]\n",
                ),
            ],
        );
        single.ok(&["deploy", dir.to_str().unwrap()]);
    }
    let key = single.ok(&["keys", "create", "moved", "--name", "ci"]);
    let aws = single.ok(&["keys", "create", "moved", "--aws", "--output", "json"]);
    let aws: serde_json::Value = serde_json::from_str(&aws).unwrap();
    let aws_id = aws["access_key_id"].as_str().unwrap().to_owned();
    assert_eq!(single.invoke("moved/f", "{}")["result"], "2:ereh delaes");
    let cluster_key = home.path().join("cluster.key");
    let cluster_key = cluster_key.to_str().unwrap();

    let (ok, said) = migrate(&data_dir, &url, &["--secrets-key-file", cluster_key]);
    assert!(!ok, "migrated while a server ran: {said}");
    assert!(
        said.contains("another stratus server is already using"),
        "{said}"
    );
    single.stop();

    let (ok, said) = migrate(&data_dir, &url, &["--secrets-key-file", cluster_key]);
    assert!(ok, "{said}");
    assert!(said.contains("1 apps, 2 versions"), "{said}");
    assert!(said.contains("1 app keys"), "{said}");
    assert!(said.contains("1 secrets"), "{said}");
    let (ok, said) = migrate(&data_dir, &url, &["--secrets-key-file", cluster_key]);
    assert!(!ok, "migrated twice");
    assert!(
        said.contains("is not a new database; nothing was copied"),
        "{said}"
    );

    // The same data directory, now on PostgreSQL with the cluster's key:
    // its identity moved, it keeps its admin token (the cluster takes it),
    // and its secrets were sealed anew.
    let token = single.token.clone();
    let mut node = Server::start_at(
        tempfile::tempdir().unwrap(),
        data_dir.clone(),
        &["--store", &url, "--secrets-key-file", cluster_key],
    );
    assert_eq!(node.token, token);
    assert_eq!(node.invoke("moved/f", "{}")["result"], "2:ereh delaes");
    node.stop();
    node.restart();
    let log = std::fs::read_to_string(node.path("restart.log")).unwrap();
    assert!(!log.contains(&aws_id), "the secret does not open: {log}");
    let stored = sql(
        &url,
        &format!("SELECT secret FROM aws_credentials WHERE access_key_id = '{aws_id}'"),
    );
    assert!(stored[0].starts_with("sealed:"), "{stored:?}");
    let keys = node.ok(&["keys", "ls", "moved"]);
    assert!(
        keys.contains("ci"),
        "the key moved: {keys} (created as {key})"
    );
    assert_eq!(
        sql(&url, "SELECT count(*) FROM versions WHERE app = 'moved'"),
        ["2"]
    );
}

fn cluster_app(dir: &std::path::Path, version: &str) {
    write_app(
        dir,
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: shared\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    env:\n      V: \"{version}\"\n    http: {{ path: /v }}\n  closed:\n    runtime: python3\n    handler: main.handler\n    http: {{ path: /closed, auth: key }}\n    env: {{ S: {{ secret: s }} }}\n"
                ),
            ),
            (
                "main.py",
                "import os\ndef handler(event, context):\n    print('handled', event.get('n'))\n    if 'secret' in event:\n        return os.environ['S'][::-1]\n    if 'requestContext' in event:\n        return {'statusCode': 200, 'body': os.environ.get('V', '-')}\n    return os.environ['V']\n",
            ),
        ],
    );
}

/// Sets secret `s` of app `shared` through `node`.
fn set_secret(node: &Server, value: &str) {
    let out = node.cli_stdin(&["secret", "set", "shared", "s"], value);
    assert!(out.status.success(), "{out:?}");
}

/// What `closed` of app `shared` on `node` sees of secret `s`.
fn secret_seen(node: &Server) -> Option<String> {
    let out = node.cli(&["invoke", "shared/closed", "--data", r#"{"secret": 1}"#]);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let reversed = body.as_str().or_else(|| body["result"].as_str())?;
    Some(reversed.chars().rev().collect())
}

/// nginx from the host (Debian's `nginx-light` will do) balancing the
/// nodes' public listeners, stopped when dropped.
struct Balancer {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(nodes: &[Server]) -> Balancer {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is needed for the cluster test (Debian: apt-get install nginx-light)");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let servers: String = nodes
            .iter()
            .map(|n| {
                format!(
                    "        server {};\n",
                    n.public.trim_start_matches("http://")
                )
            })
            .collect();
        let d = dir.path().display();
        let user = if std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
        {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            "{user}\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
                 upstream nodes {{\n{servers}    }}\n\
                 server {{\n        listen 127.0.0.1:{port};\n        location / {{ proxy_pass http://nodes; proxy_set_header Host $host; }}\n    }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx)
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        common::eventually(std::time::Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .map(|_| ())
                .map_err(|err| format!("nginx does not listen: {err}"))
        });
        Balancer {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `GET /shared/v` answers on `node`'s public listener, if anything.
fn served(node: &Server) -> Option<String> {
    served_at(&node.public)
}

fn served_at(public: &str) -> Option<String> {
    let response = common::client()
        .get(format!("{public}/shared/v"))
        .send()
        .ok()?;
    response
        .status()
        .is_success()
        .then(|| response.text().unwrap_or_default())
}

/// Three nodes share one database, one admin token and one secrets key:
/// a deploy through one serves through the others (and through nginx in
/// front of them all), which take the package from the store; a key made through one opens routes on the others; a
/// redeploy and a removal through another node follow; an event accepted
/// by one node is handled and its lines are read through any.
#[test]
fn three_nodes_share_one_database_and_take_up_each_other_s_deploys() {
    // Word of a change reaches every node at once (LISTEN/NOTIFY); a
    // deploy's first request also starts an instance.
    let within = std::time::Duration::from_secs(1);
    let deployed_within = std::time::Duration::from_secs(3);
    let db = Database::new("cluster");
    let url = db.url();
    let shared = tempfile::tempdir().unwrap();
    let token_file = shared.path().join("admin.token");
    std::fs::write(&token_file, "t".repeat(40)).unwrap();
    let key_file = shared.path().join("secrets.key");
    let (token_file, key_file) = (token_file.to_str().unwrap(), key_file.to_str().unwrap());
    // The first node is handed a known token; the others take it from
    // the first one's data directory, as an operator would.
    let first = Server::start_with(&[
        "--store",
        &url,
        "--admin-token-file",
        token_file,
        "--secrets-key-file",
        key_file,
        "--app-max-instances",
        "10",
    ]);
    let kept = first.data_dir.join("admin.token");
    let kept = kept.to_str().unwrap().to_owned();
    let mut nodes = vec![first];
    for _ in 1..3 {
        nodes.push(Server::start_with(&[
            "--store",
            &url,
            "--admin-token-file",
            &kept,
            "--secrets-key-file",
            key_file,
            "--app-max-instances",
            "10",
        ]));
    }
    assert!(
        nodes.iter().all(|n| n.token == "t".repeat(40)),
        "one admin token"
    );
    // The store keeps only its hash.
    let stored = sql(&url, "SELECT value FROM meta");
    assert!(
        !stored.iter().any(|v| v.contains(&"t".repeat(40))),
        "{stored:?}"
    );
    // A node without the token, or with another, does not start.
    let without = start_expecting_failure(&["--store", &url]);
    assert!(
        without.contains("the store already has an admin token, made by another node")
            && without.contains("--admin-token-file"),
        "{without}"
    );
    let other = shared.path().join("other.token");
    std::fs::write(&other, "u".repeat(40)).unwrap();
    let wrong = start_expecting_failure(&[
        "--store",
        &url,
        "--admin-token-file",
        other.to_str().unwrap(),
    ]);
    assert!(
        wrong.contains("holds another admin token than the store's"),
        "{wrong}"
    );
    let dir = nodes[0].path("shared");
    cluster_app(&dir, "1");
    // A secret set through one node is there for a deploy through another
    // at once, and reaches the instances of every node.
    set_secret(&nodes[2], "first value");
    nodes[0].ok(&["deploy", dir.to_str().unwrap()]);
    for node in &nodes {
        common::eventually(deployed_within, || match served(node) {
            Some(body) if body == "1" => Ok(()),
            other => Err(format!("node at {} answers {other:?}", node.public)),
        });
    }
    assert_eq!(nodes[2].invoke("shared/f", "{}")["result"], "1");
    for node in &nodes {
        common::eventually(within, || match secret_seen(node) {
            Some(seen) if seen == "first value" => Ok(()),
            other => Err(format!("node at {} sees {other:?}", node.public)),
        });
    }
    set_secret(&nodes[1], "rotated value");
    for node in &nodes {
        common::eventually(deployed_within, || match secret_seen(node) {
            Some(seen) if seen == "rotated value" => Ok(()),
            other => Err(format!("node at {} sees {other:?}", node.public)),
        });
    }
    let listed = nodes[0].ok(&["nodes"]);
    // Each node runs its share of the app cap (10 among 3: 4), and the
    // status of any node counts every node's instances.
    let status = |node: &Server| -> serde_json::Value {
        serde_json::from_str(&node.ok(&["status", "shared", "--output", "json"])).unwrap()
    };
    for node in &nodes {
        common::eventually(
            deployed_within,
            || match status(node)["app_max_instances"].as_u64() {
                Some(4) => Ok(()),
                other => Err(format!("the share at {}: {other:?}", node.public)),
            },
        );
    }
    common::eventually(std::time::Duration::from_secs(5), || {
        let body = status(&nodes[0]);
        let functions = body["apps"][0]["functions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let f = functions
            .iter()
            .find(|f| f["name"] == "closed")
            .map_or(serde_json::Value::Null, |f| f["instances"].clone());
        let instances = f["busy"].as_u64().unwrap_or(0) + f["idle"].as_u64().unwrap_or(0);
        match (body["nodes"].as_u64(), instances) {
            (Some(3), 3..) => Ok(()),
            other => Err(format!("nodes and instances: {other:?} in {body}")),
        }
    });
    assert_eq!(listed.matches(" up").count(), 3, "{listed}");
    assert!(listed.contains("(this)"), "{listed}");
    // Through a load balancer in front of all three.
    let balancer = Balancer::start(&nodes);
    for _ in 0..9 {
        assert_eq!(served_at(&balancer.url).as_deref(), Some("1"));
    }
    drop(balancer);

    // A key made through one node opens the route on the others.
    let key = nodes[0]
        .ok(&["keys", "create", "shared", "--name", "ci"])
        .trim()
        .to_owned();
    for node in &nodes {
        common::eventually(within, || {
            let status = common::client()
                .get(format!("{}/shared/closed", node.public))
                .header("x-stratus-key", &key)
                .send()
                .map(|r| r.status().as_u16());
            match status {
                Ok(200) => Ok(()),
                other => Err(format!("node at {} answers {other:?}", node.public)),
            }
        });
    }
    // So does an AWS credential: every node opens its secret.
    let aws = nodes[1].ok(&["keys", "create", "shared", "--aws", "--output", "json"]);
    let aws: serde_json::Value = serde_json::from_str(&aws).unwrap();
    let id = aws["access_key_id"].as_str().unwrap().to_owned();
    nodes[2].stop();
    nodes[2].restart();
    // A node given another key cannot open it, and says so.
    let mut stranger = Server::start_with(&["--store", &url, "--admin-token-file", token_file]);
    stranger.stop();
    stranger.restart();
    common::eventually(within, || {
        let log = std::fs::read_to_string(stranger.path("restart.log")).unwrap_or_default();
        if log.contains(&id) && log.contains("cannot sign requests") {
            Ok(())
        } else {
            Err(format!("the stranger's log: {log}"))
        }
    });
    // By now the node given the shared key would have said so too.
    let log = std::fs::read_to_string(nodes[2].path("restart.log")).unwrap();
    assert!(
        !log.contains(&id),
        "the credential opens on a restarted node: {log}"
    );
    drop(stranger);

    // A redeploy through another node.
    let dir = nodes[1].path("shared");
    cluster_app(&dir, "2");
    nodes[1].ok(&["deploy", dir.to_str().unwrap()]);
    for node in &nodes {
        common::eventually(deployed_within, || match served(node) {
            Some(body) if body == "2" => Ok(()),
            other => Err(format!("node at {} answers {other:?}", node.public)),
        });
    }
    // A rollback through a third goes back on every node, and forward.
    for (through, version) in [(2, "1"), (0, "2")] {
        nodes[through].ok(&["rollback", "shared", version]);
        for node in &nodes {
            common::eventually(deployed_within, || match served(node) {
                Some(body) if body == version => Ok(()),
                other => Err(format!("node at {} answers {other:?}", node.public)),
            });
        }
    }

    // An event accepted by one node is handled, and any node reads its line.
    let accepted = nodes[1].ok(&["invoke", "shared/f", "--async", "-d", r#"{"n": 7}"#]);
    assert!(accepted.starts_with("accepted"), "{accepted}");
    common::eventually(std::time::Duration::from_secs(20), || {
        let lines = common::log_records(&nodes[2], "shared/f", &[]);
        if lines.iter().any(|r| r["message"] == "handled 7") {
            Ok(())
        } else {
            Err(format!("lines: {lines:?}"))
        }
    });

    // A removal through the third.
    nodes[2].ok(&["rm", "shared"]);
    for node in &nodes {
        common::eventually(within, || match served(node) {
            None => Ok(()),
            Some(body) => Err(format!("node at {} still answers {body}", node.public)),
        });
    }
}

/// Events and queue messages accepted across three nodes are all handled,
/// at least once, though one node is killed (`kill -9`) with some in hand:
/// its leases lapse (and its messages become visible again) and the others
/// deliver them. Counted by an effect outside the platform: each handler
/// reports what it handled to a listener of the test.
#[test]
fn events_accepted_across_nodes_survive_a_node_killed_mid_way() {
    const EVENTS: usize = 1000;
    const MESSAGES: usize = 500;
    let db = Database::new("killed");
    let url = db.url();
    let mut nodes = cluster(&url, 3);
    let witness = common::Witness::start();
    let dir = nodes[0].path("durable");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: durable\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    max_instances: 4\n    retries: 10\n    env: {{ WITNESS_PORT: \"{port}\" }}\n  g:\n    runtime: python3\n    handler: main.consume\n    timeout: 4s\n    env: {{ WITNESS_PORT: \"{port}\" }}\n    events:\n      - queue: work\nqueues:\n  work: {{ visibility_timeout: 5s }}\n",
                    port = witness.port
                ),
            ),
            (
                "main.py",
                "import os, socket, time\n\ndef tell(line):\n    with socket.create_connection(('127.0.0.1', int(os.environ['WITNESS_PORT'])), timeout=10) as s:\n        s.sendall((line + '\\n').encode())\n\ndef handler(event, context):\n    time.sleep(0.05)\n    tell('handled %d' % event['n'])\n    return 'ok'\n\ndef consume(event, context):\n    for record in event['Records']:\n        time.sleep(0.01)\n        tell('message %d' % record['data']['n'])\n",
            ),
        ],
    );
    nodes[0].ok(&["deploy", dir.to_str().unwrap()]);
    for node in &nodes {
        common::eventually(std::time::Duration::from_secs(10), || {
            let out = node.cli(&["invoke", "durable/f", "--data", r#"{"n": -1}"#]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
    }

    let http = common::client();
    let post = |node: &Server, n: usize| {
        let response = http
            .post(format!("{}/v1/apps/durable/functions/f/invoke", node.admin))
            .bearer_auth(&node.token)
            .header("x-stratus-invocation-type", "Event")
            .body(format!(r#"{{"n": {n}}}"#))
            .send()
            .unwrap();
        assert_eq!(response.status(), 202, "{:?}", response.text());
    };
    let send = |node: &Server, n: usize| {
        let response = http
            .post(format!(
                "{}/v1/apps/durable/queues/work/messages",
                node.admin
            ))
            .bearer_auth(&node.token)
            .body(format!(r#"{{"n": {n}}}"#))
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{:?}", response.text());
    };
    for n in 0..EVENTS / 2 {
        post(&nodes[n % 3], n);
        if n < MESSAGES / 2 {
            send(&nodes[n % 3], n);
        }
    }
    // The first node dies with events in hand.
    let before = witness.distinct().len();
    nodes[0].kill();
    for n in EVENTS / 2..EVENTS {
        post(&nodes[1 + n % 2], n);
    }
    for n in MESSAGES / 2..MESSAGES {
        send(&nodes[1 + n % 2], n);
    }
    assert!(
        before < EVENTS + MESSAGES,
        "the kill came after everything was handled: it proves nothing"
    );
    // The others see the dead node go down.
    common::eventually(std::time::Duration::from_secs(30), || {
        let listed = nodes[1].ok(&["nodes", "--output", "json"]);
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let up: Vec<bool> = listed["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["up"].as_bool().unwrap())
            .collect();
        if up.len() == 3 && up.iter().filter(|u| **u).count() == 2 {
            Ok(())
        } else {
            Err(format!("nodes: {listed}"))
        }
    });
    common::eventually(std::time::Duration::from_secs(120), || {
        let seen = witness.distinct();
        for (what, total) in [("handled", EVENTS), ("message", MESSAGES)] {
            let missing: Vec<usize> = (0..total)
                .filter(|n| !seen.contains(&format!("{what} {n}")))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "{} of {total} not {what} yet: {missing:?}",
                    missing.len()
                ));
            }
        }
        Ok(())
    });
    // Nothing was handled that was not sent.
    let stray: Vec<String> = witness
        .distinct()
        .into_iter()
        .filter(|line| {
            let (what, n) = line.split_once(' ').unwrap_or(("", ""));
            let n: i64 = n.parse().unwrap_or(-2);
            !matches!(
                (what, n),
                ("handled", -1) | ("handled", 0..=999) | ("message", 0..=499)
            )
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// A TCP proxy in front of the database that the test can cut (every
/// connection dropped, new ones refused) and restore.
struct Cut {
    port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Bumped on every cut: connections of an older generation end.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Cut {
    fn start(upstream: u16) -> Cut {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (o, g) = (open.clone(), generation.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let born = g.load(Ordering::SeqCst);
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let g = g.clone();
                    std::thread::spawn(move || pipe(from, to, born, &g));
                }
            }
        });
        Cut {
            port,
            open,
            generation,
        }
    }

    fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.open.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either ends or the proxy is cut.
fn pipe(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    born: u64,
    generation: &std::sync::atomic::AtomicU64,
) {
    use std::io::{Read, Write};
    let _ = from.set_read_timeout(Some(std::time::Duration::from_millis(100)));
    let mut buf = [0u8; 16384];
    while generation.load(std::sync::atomic::Ordering::SeqCst) == born {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// The database connection is cut and restored: the warm function keeps
/// answering, what needs the store fails with the reason meanwhile, and
/// the node takes up its work again by itself.
#[test]
fn a_node_rides_out_a_cut_database_connection() {
    let db = Database::new("cut");
    let (base, name) = db
        .url()
        .rsplit_once('/')
        .map(|(b, n)| (b.to_owned(), n.to_owned()))
        .unwrap();
    let upstream: u16 = base
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(5432);
    let proxy = Cut::start(upstream);
    let through = format!("postgres://postgres@127.0.0.1:{}/{name}", proxy.port);
    let server = Server::start_with(&["--store", &through]);
    let dir = server.path("steady");
    cluster_app(&dir, "1");
    set_secret(&server, "steady");
    server.ok(&["deploy", dir.to_str().unwrap()]);
    assert_eq!(served(&server).as_deref(), Some("1"));

    proxy.cut();
    for _ in 0..5 {
        assert_eq!(
            served(&server).as_deref(),
            Some("1"),
            "the warm function answers"
        );
    }
    let refused = server.fails(&["deploy", dir.to_str().unwrap()]);
    assert!(refused.contains("the store cannot be reached"), "{refused}");

    proxy.restore();
    cluster_app(&dir, "2");
    common::eventually(std::time::Duration::from_secs(20), || {
        let out = server.cli(&["deploy", dir.to_str().unwrap()]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    assert_eq!(served(&server).as_deref(), Some("2"));
}

/// A schedule that fires every second, while the nodes restart one after
/// another: each slot fires once across the cluster.
#[test]
fn a_schedule_fires_each_slot_once_across_restarting_nodes() {
    let db = Database::new("schedule");
    let url = db.url();
    let mut nodes = cluster(&url, 3);
    let dir = nodes[0].path("ticks");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: ticks\nfunctions:\n  tick:\n    runtime: python3\n    handler: main.handler\n    events:\n      - schedule: rate(1 second)\n",
            ),
            (
                "main.py",
                "def handler(event, context):\n    print('slot', event['data']['scheduledTime'])\n",
            ),
        ],
    );
    nodes[0].ok(&["deploy", dir.to_str().unwrap()]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    for node in nodes.iter_mut() {
        node.stop();
        node.restart();
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let slots = sql(
        &url,
        "SELECT message FROM logs WHERE stream = 'stdout' AND message LIKE 'slot %' ORDER BY id",
    );
    let mut seen = std::collections::BTreeSet::new();
    for slot in &slots {
        assert!(seen.insert(slot.clone()), "{slot} fired twice: {slots:?}");
    }
    assert!(
        seen.len() >= 8,
        "only {} slots in ~10 s: {slots:?}",
        seen.len()
    );
}

#[test]
fn nodes_share_buckets_through_the_store_and_one_objects_directory() {
    let db = Database::new("objects");
    let url = db.url();
    let shared = tempfile::tempdir().unwrap();
    let objects = shared.path().to_str().unwrap().to_owned();
    let first = Server::start_with(&["--store", &url, "--objects-dir", &objects]);
    let token = first.data_dir.join("admin.token");
    let second = Server::start_with(&[
        "--store",
        &url,
        "--objects-dir",
        &objects,
        "--admin-token-file",
        token.to_str().unwrap(),
    ]);
    let dir = first.path("drop");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: drop\nbuckets:\n  box: {}\nfunctions:\n  seen:\n    runtime: python3\n    handler: main.handler\n    events:\n      - storage: { bucket: box, on: created }\n",
            ),
            (
                "main.py",
                "def handler(event, context):\n    print('stored', event['subject'])\n",
            ),
        ],
    );
    first.ok(&["deploy", dir.to_str().unwrap()]);
    let note = first.path("note.txt");
    std::fs::write(&note, "shared bytes").unwrap();
    // Put through one node (once it serves the app), read through the
    // other.
    common::eventually(std::time::Duration::from_secs(30), || {
        let out = second.cli(&["files", "cp", note.to_str().unwrap(), "drop/box/n.txt"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    assert_eq!(
        first.ok(&["files", "cp", "drop/box/n.txt", "-"]),
        "shared bytes"
    );
    // The storage trigger ran once, on whichever node claimed its event.
    common::eventually(std::time::Duration::from_secs(30), || {
        let seen = sql(
            &url,
            "SELECT message FROM logs WHERE stream = 'stdout' AND message LIKE 'stored %'",
        );
        if seen == ["stored n.txt"] {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    let seen = sql(
        &url,
        "SELECT count(*) FROM logs WHERE message LIKE 'stored %'",
    );
    assert_eq!(seen, ["1"]);
    let status = second.ok(&["bucket", "ls", "drop"]);
    assert!(
        status.contains("drop-box") && status.contains("1 objects"),
        "{status}"
    );
}

/// Watches a query over the client WebSocket with Node.js's `ws`: prints
/// each message as a line and stops after `count` of them.
const WATCHER: &str = r#"
const WebSocket = require('ws');
const [url, subscription, count] = process.argv.slice(2);
const socket = new WebSocket(url);
let seen = 0;
socket.on('open', () => socket.send(subscription));
socket.on('message', (data) => {
  console.log(JSON.stringify({ at: Date.now(), message: JSON.parse(String(data)) }));
  if (++seen >= Number(count)) socket.close();
});
socket.on('close', () => process.exit(0));
setTimeout(() => process.exit(3), 30000);
"#;

#[test]
fn nodes_share_documents_sessions_and_watches_through_the_store() {
    let db = Database::new("documents");
    let url = db.url();
    let first = Server::start_with(&["--store", &url]);
    let token = first.data_dir.join("admin.token");
    let second = Server::start_with(&[
        "--store",
        &url,
        "--admin-token-file",
        token.to_str().unwrap(),
    ]);
    let dir = first.path("board");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: board\nfunctions:\n  seen:\n    runtime: python3\n    handler: main.handler\n    events:\n      - database: { collection: posts, on: created }\ncollections:\n  posts:\n    indexes: [ { fields: [room] } ]\n    rules:\n      read: \"auth != null\"\n      create: \"auth != null && request.doc.author == auth.uid\"\n",
            ),
            (
                "main.py",
                "def handler(event, context):\n    print('posted', event['subject'])\n",
            ),
        ],
    );
    first.ok(&["deploy", dir.to_str().unwrap()]);
    let public = |node: &Server| {
        let port = node
            .public
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_owned();
        format!("127.0.0.1:{port}")
    };
    // A session from the first node works on the second.
    let session: serde_json::Value = common::eventually(std::time::Duration::from_secs(30), || {
        let response = common::client()
            .post(format!(
                "http://{}/board/_stratus/auth/anonymous",
                public(&first)
            ))
            .send()
            .map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(response.text().unwrap_or_default());
        }
        response.json().map_err(|e| e.to_string())
    });
    let access = session["access_token"].as_str().unwrap().to_owned();
    let uid = session["user"]["uid"].as_str().unwrap().to_owned();
    let post = |node: &Server, text: &str| -> serde_json::Value {
        common::eventually(std::time::Duration::from_secs(30), || {
            let response = common::client()
                .post(format!("http://{}/board/_stratus/db/posts", public(node)))
                .bearer_auth(&access)
                .json(&serde_json::json!({"room": "lobby", "author": uid, "text": text}))
                .send()
                .map_err(|e| e.to_string())?;
            if response.status() != 201 {
                return Err(response.text().unwrap_or_default());
            }
            response.json().map_err(|e| e.to_string())
        })
    };
    post(&second, "hello from the second node");

    // A watch through the first node sees a post made through the second.
    let modules = common::npm_install("ws", &["ws@8"]);
    let script = first.path("watch.js");
    std::fs::write(&script, WATCHER).unwrap();
    let subscription = serde_json::json!({"op": "subscribe", "id": "lobby", "collection": "posts", "where": ["room", "==", "lobby"]});
    let child = std::process::Command::new("node")
        .arg(&script)
        .args([
            format!(
                "ws://{}/board/_stratus/watch?access_token={access}",
                public(&first)
            ),
            subscription.to_string(),
            "2".to_owned(),
        ])
        .env("NODE_PATH", &modules)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let sent_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    post(&second, "live from the second node");
    let out = child.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["message"]["type"], "snapshot");
    assert_eq!(
        lines[0]["message"]["documents"].as_array().unwrap().len(),
        1
    );
    assert_eq!(lines[1]["message"]["change"], "added");
    assert_eq!(
        lines[1]["message"]["document"]["data"]["text"],
        "live from the second node"
    );
    let delay = lines[1]["at"].as_i64().unwrap() - sent_at;
    eprintln!("a change through the second node reached a watch on the first in {delay} ms");
    assert!(delay < 1000, "{delay} ms");

    // Each post's trigger ran once, on whichever node claimed its event.
    common::eventually(std::time::Duration::from_secs(30), || {
        let seen = sql(
            &url,
            "SELECT count(*) FROM logs WHERE stream = 'stdout' AND message LIKE 'posted %'",
        );
        (seen == ["2"]).then_some(()).ok_or(format!("{seen:?}"))
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        sql(
            &url,
            "SELECT count(*) FROM logs WHERE message LIKE 'posted %'"
        ),
        ["2"]
    );
    let listed = first.ok(&[
        "db",
        "query",
        "board/posts",
        "--where",
        r#"["room", "==", "lobby"]"#,
        "--count",
    ]);
    assert_eq!(listed.trim(), "2");
}
