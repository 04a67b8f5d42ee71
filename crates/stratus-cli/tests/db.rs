//! The document database through the real binary: `stratus db` for
//! people, the admin API's JSON, the SDK functions import (`from stratus
//! import db, files` in Python, `require('stratus')` in Node.js), indexes
//! a deploy builds and queries that need one, change triggers committed
//! with their changes (also across a `kill -9`), and hostile documents.
//!
//! Runs in both isolation modes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Server, eventually, write_app};
use serde_json::{Value, json};

const MANIFEST: &str = r#"
app: todo
functions:
  noop:
    runtime: python3
    handler: main.handler
collections:
  todos:
    indexes:
      - { fields: [owner, created_at] }
      - { fields: [tags], multi: true }
  stats: {}
"#;

fn start(extra: &[&str]) -> Server {
    let server = Server::start_with(extra);
    write_app(
        &server.path("todo"),
        &[
            ("stratus.yaml", MANIFEST),
            ("main.py", "def handler(event, context):\n    return 1\n"),
        ],
    );
    common::deploy(&server, "todo");
    server
}

/// `stratus db ARGS` printing JSON, parsed.
fn db_json(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["db"];
    all.extend_from_slice(args);
    let out = server.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("stratus {all:?} printed {out}"))
}

fn admin(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = common::client()
        .request(method, format!("{}/v1/apps/todo/db{path}", server.admin))
        .bearer_auth(&server.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn documents_are_written_read_queried_exported_and_imported_with_the_cli() {
    let server = start(&[]);
    let a = db_json(
        &server,
        &[
            "put",
            "todo/todos/a",
            r#"{"owner": "ann", "created_at": 1, "title": "milk", "tags": ["shop"]}"#,
        ],
    );
    assert_eq!(a["id"], "a");
    assert_eq!(a["version"], 1);
    let b = db_json(
        &server,
        &[
            "put",
            "todo/todos",
            r#"{"owner": "ann", "created_at": 2, "title": "eggs", "tags": ["shop", "food"]}"#,
        ],
    );
    let b_id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(b_id.len(), 20);
    // From standard input.
    let out = server.cli_stdin(
        &["db", "put", "todo/todos/c"],
        r#"{"owner": "bob", "created_at": 3, "title": "tea", "tags": []}"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let got = db_json(&server, &["get", "todo/todos/a"]);
    assert_eq!(got["data"]["title"], "milk");
    let listed = server.ok(&["db", "ls", "todo/todos"]);
    assert!(
        listed.contains("milk") && listed.contains("tea"),
        "{listed}"
    );
    let collections = server.ok(&["db", "ls", "todo"]);
    assert!(
        collections.contains("todos") && collections.contains("stats"),
        "{collections}"
    );

    // Queries print one document a line.
    let out = server.ok(&[
        "db",
        "query",
        "todo/todos",
        "--where",
        r#"["owner", "==", "ann"]"#,
        "--order-by",
        "created_at:desc",
    ]);
    let titles: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["data"]["title"].clone())
        .collect();
    assert_eq!(titles, vec![json!("eggs"), json!("milk")]);
    let out = server.ok(&[
        "db",
        "query",
        "todo/todos",
        "--where",
        r#"["tags", "contains", "shop"]"#,
        "--count",
    ]);
    assert_eq!(out.trim(), "2");
    let out = server.ok(&[
        "db",
        "query",
        "todo/todos",
        "--where",
        r#"{"or": [["owner", "==", "bob"], ["created_at", "in", [1]]]}"#,
        "--select",
        "title",
    ]);
    let docs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    assert!(
        docs.iter()
            .all(|d| d["data"].as_object().unwrap().len() == 1),
        "{docs:?}"
    );

    // Updates by operator, and versions.
    let (status, doc) = admin(
        &server,
        reqwest::Method::PATCH,
        "/todos/a",
        Some(
            json!({"set": {"meta.seen": true}, "inc": {"n": 2}, "push": {"tags": ["x", "y"]},
                    "pull": {"tags": ["shop"]}, "unset": ["created_at"], "if_version": 1}),
        ),
    );
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["version"], 2);
    assert_eq!(
        doc["data"],
        json!({"owner": "ann", "title": "milk", "tags": ["x", "y"], "meta": {"seen": true}, "n": 2})
    );
    let (status, err) = admin(
        &server,
        reqwest::Method::PATCH,
        "/todos/a",
        Some(json!({"inc": {"n": 1}, "if_version": 1})),
    );
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["error"]["code"], "version_conflict");
    let (status, err) = admin(
        &server,
        reqwest::Method::PATCH,
        "/todos/a",
        Some(json!({"inc": {"title": 1}})),
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a number"),
        "{err}"
    );
    let refused = server.fails(&["db", "put", "todo/todos/a", "{}", "--if-version", "7"]);
    assert!(refused.contains("version 2, not 7"), "{refused}");
    let (status, err) = admin(
        &server,
        reqwest::Method::PATCH,
        "/todos/nope",
        Some(json!({"inc": {"n": 1}})),
    );
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (404, json!("no_such_document"))
    );

    // A transaction commits all of its writes or none.
    let (status, err) = admin(
        &server,
        reqwest::Method::POST,
        "/_transaction",
        Some(json!({"writes": [
            {"op": "set", "collection": "todos", "id": "d", "data": {"title": "d"}},
            {"op": "create", "collection": "todos", "id": "a", "data": {}},
        ]})),
    );
    assert_eq!(status, 409, "{err}");
    assert!(
        server
            .fails(&["db", "get", "todo/todos/d"])
            .contains("no document")
    );
    let (status, done) = admin(
        &server,
        reqwest::Method::POST,
        "/_transaction",
        Some(json!({"writes": [
            {"op": "set", "collection": "todos", "id": "d", "data": {"title": "d"}},
            {"op": "delete", "collection": "todos", "id": "c"},
        ]})),
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["changes"][1]["deleted"], true);
    assert!(server.ok(&["db", "rm", "todo/todos/d"]).contains("deleted"));
    assert!(
        server
            .ok(&["db", "rm", "todo/todos/d"])
            .contains("was not there")
    );

    // Export, then import into another collection: ids and fields kept.
    let file = server.path("todos.jsonl");
    server.ok(&["db", "export", "todo/todos", file.to_str().unwrap()]);
    let exported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(exported.lines().count(), 2, "{exported}");
    let mut lines = exported.clone();
    lines.push_str("{\"title\": \"bare\"}\n");
    std::fs::write(&file, lines).unwrap();
    let out = server.ok(&["db", "import", "todo/archive", file.to_str().unwrap()]);
    assert!(out.contains("imported 3"), "{out}");
    assert_eq!(
        db_json(&server, &["get", "todo/archive/a"])["data"]["title"],
        "milk"
    );
    assert_eq!(
        db_json(&server, &["get", &format!("todo/archive/{b_id}")])["data"]["title"],
        "eggs"
    );
    let page = admin(&server, reqwest::Method::GET, "/archive?limit=2", None).1;
    assert_eq!(page["documents"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let rest = admin(
        &server,
        reqwest::Method::GET,
        &format!("/archive?limit=2&after={next}"),
        None,
    )
    .1;
    assert_eq!(rest["documents"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next"], Value::Null);
}

#[test]
fn hostile_documents_are_refused_with_what_to_do() {
    let server = start(&[]);
    let dotted = server.fails(&["db", "put", "todo/todos/x", r#"{"a.b": 1}"#]);
    assert!(dotted.contains("`.`"), "{dotted}");
    let dollar = server.fails(&["db", "put", "todo/todos/x", r#"{"nested": {"$where": 1}}"#]);
    assert!(dollar.contains("`$`"), "{dollar}");
    let deep = (0..40).fold(json!(1), |v, _| json!({ "d": v }));
    let nested = server.fails(&["db", "put", "todo/todos/x", &deep.to_string()]);
    assert!(nested.contains("deeper than 32"), "{nested}");
    let bad_id = server.fails(&["db", "put", "todo/todos/_x", "{}"]);
    assert!(bad_id.contains("starts with `_`"), "{bad_id}");
    let bad_collection = server.fails(&["db", "put", "todo/9lives/x", "{}"]);
    assert!(
        bad_collection.contains("start with a letter"),
        "{bad_collection}"
    );
    let not_an_object = server.fails(&["db", "put", "todo/todos/x", "[1, 2]"]);
    assert!(not_an_object.contains("JSON object"), "{not_an_object}");

    // 16 MiB: refused with the limit, whole.
    let big = json!({ "blob": "x".repeat(16 << 20) });
    let (status, err) = admin(&server, reqwest::Method::PUT, "/todos/big", Some(big));
    assert_eq!(status, 413, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--document-max-size"),
        "{err}"
    );
    // Growing past the limit by updates is refused too.
    let half = "y".repeat(700 << 10);
    assert_eq!(
        admin(
            &server,
            reqwest::Method::PUT,
            "/todos/grow",
            Some(json!({"a": half}))
        )
        .0,
        200
    );
    let (status, err) = admin(
        &server,
        reqwest::Method::PATCH,
        "/todos/grow",
        Some(json!({"set": {"b": half}})),
    );
    assert_eq!(status, 403, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--document-max-size"),
        "{err}"
    );
    assert_eq!(db_json(&server, &["get", "todo/todos/grow"])["version"], 1);

    // Unicode is kept as it is, in names and values.
    let doc = db_json(
        &server,
        &[
            "put",
            "todo/todos/ünï",
            r#"{"名前": "çødé ✓", "emoji": "🦀"}"#,
        ],
    );
    assert_eq!(doc["id"], "ünï");
    let got = db_json(&server, &["get", "todo/todos/ünï"]);
    assert_eq!(got["data"], json!({"名前": "çødé ✓", "emoji": "🦀"}));

    // Filters that make no sense say so.
    let (status, err) = admin(
        &server,
        reqwest::Method::POST,
        "/todos/_query",
        Some(json!({"where": ["owner", "~=", "x"]})),
    );
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown operator"),
        "{err}"
    );
    let (status, _) = admin(
        &server,
        reqwest::Method::POST,
        "/todos/_query",
        Some(json!("a string")),
    );
    assert_eq!(status, 400);
    let broken = common::client()
        .post(format!("{}/v1/apps/todo/db/todos/_query", server.admin))
        .bearer_auth(&server.token)
        .body("{")
        .send()
        .unwrap();
    assert_eq!(broken.status().as_u16(), 400);
    assert!(broken.text().unwrap().contains("not JSON"));
    let (status, err) = admin(
        &server,
        reqwest::Method::POST,
        "/todos/_query",
        Some(json!({"limit": 5000})),
    );
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--db-max-results"),
        "{err}"
    );
}

#[test]
fn a_query_no_index_serves_is_refused_on_a_large_collection() {
    let server = start(&["--db-scan-limit", "10"]);
    let lines: String = (0..12)
        .map(|i| {
            json!({"id": format!("t{i:02}"), "data": {"owner": if i % 2 == 0 { "ann" } else { "bob" },
                   "created_at": i, "title": format!("task {i}"), "tags": if i < 3 { vec!["urgent"] } else { vec![] }}})
            .to_string()
                + "\n"
        })
        .collect();
    let out = server.cli_stdin(&["db", "import", "todo/todos", "-"], &lines);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let refused = server.fails(&[
        "db",
        "query",
        "todo/todos",
        "--where",
        r#"["title", "==", "task 3"]"#,
    ]);
    assert!(refused.contains("{ fields: [title] }"), "{refused}");
    assert!(refused.contains("allow_scan"), "{refused}");
    let scanned = server.ok(&[
        "db",
        "query",
        "todo/todos",
        "--where",
        r#"["title", "==", "task 3"]"#,
        "--allow-scan",
    ]);
    assert_eq!(scanned.lines().count(), 1);
    // Served by the declared indexes.
    let by_owner = server.ok(&[
        "db",
        "query",
        "todo/todos",
        "--where",
        r#"["owner", "==", "ann"]"#,
        "--order-by",
        "created_at",
        "--limit",
        "3",
    ]);
    let ids: Vec<String> = by_owner
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["t00", "t02", "t04"]);
    let urgent = server.ok(&[
        "db",
        "query",
        "todo/todos",
        "--where",
        r#"["tags", "contains", "urgent"]"#,
        "--count",
    ]);
    assert_eq!(urgent.trim(), "3");
    let sorted = server.fails(&["db", "query", "todo/todos", "--order-by", "title"]);
    assert!(sorted.contains("{ fields: [title] }"), "{sorted}");

    // Declaring the index lets the query run.
    let manifest = MANIFEST.replace(
        "      - { fields: [tags], multi: true }\n",
        "      - { fields: [tags], multi: true }\n      - { fields: [title] }\n",
    );
    write_app(&server.path("todo"), &[("stratus.yaml", &manifest)]);
    common::deploy(&server, "todo");
    let found = server.ok(&[
        "db",
        "query",
        "todo/todos",
        "--where",
        r#"["title", "==", "task 3"]"#,
    ]);
    assert_eq!(found.lines().count(), 1, "{found}");

    // Aggregations.
    let (status, groups) = admin(
        &server,
        reqwest::Method::POST,
        "/todos/_aggregate",
        Some(
            json!({"group_by": "owner", "measures": {"n": "count", "total": "sum:created_at", "last": "max:created_at"},
                    "allow_scan": true}),
        ),
    );
    assert_eq!(status, 200, "{groups}");
    assert_eq!(
        groups["groups"],
        json!([{"key": "ann", "n": 6, "total": 30, "last": 10}, {"key": "bob", "n": 6, "total": 36, "last": 11}])
    );
}

const SDK_MANIFEST: &str = r#"
app: sdk
functions:
  py:
    runtime: python3
    handler: main.handler
  js:
    runtime: nodejs
    handler: index.handler
collections:
  notes: {}
buckets:
  files: {}
"#;

const PY_SDK: &str = r#"
from stratus import db, files, StratusError

def handler(event, context):
    notes = db.collection("notes")
    a = notes.add({"title": "a", "n": 1, "tags": ["x"]})
    notes.doc("b").set({"title": "b", "n": 2, "tags": []})
    notes.doc(a.id).update(inc={"n": 10}, push={"tags": ["y"]})
    try:
        notes.doc("b").create({"title": "again"})
        exists = None
    except StratusError as err:
        exists = err.code
    with db.batch() as b:
        b.create("notes", {"title": "c", "n": 3}, id="c")
        b.update("notes", "b", set={"done": True})
    page = notes.where("n", ">", 2).order_by("n", "desc").limit(1).get()
    rest = notes.where("n", ">", 2).order_by("n", "desc").limit(1).after(page.next).get()
    everything = [d.id for d in notes.order_by("title").limit(1).stream()]
    got = db.get_all([("notes", "b"), ("notes", "missing")])
    files.put("files", "dir/hello.txt", "hello from python")
    listed = [o["key"] for o in files.list("files", "dir/")]
    body = files.get("files", "dir/hello.txt").decode()
    files.delete("files", "dir/hello.txt")
    return {
        "a": notes.doc(a.id).get().data,
        "exists": exists,
        "page": [d.id for d in page], "rest": [d.id for d in rest],
        "everything": everything,
        "b": got[0].data, "missing": got[1],
        "count": notes.count(),
        "sum": notes.aggregate({"total": "sum:n"})[0]["total"],
        "deleted": notes.doc("c").delete(),
        "gone": notes.doc("c").get(),
        "listed": listed, "body": body, "after_delete": files.get("files", "dir/hello.txt"),
    }
"#;

const JS_SDK: &str = r#"
const { db, files } = require('stratus');
exports.handler = async () => {
  const notes = db.collection('notes');
  const a = await notes.add({ title: 'js', n: 100 });
  await notes.doc(a.id).update({ inc: { n: 1 } });
  let conflict = null;
  try { await notes.doc(a.id).update({ set: { x: 1 }, ifVersion: 1 }); } catch (err) { conflict = err.code; }
  const top = await notes.where('n', '>=', 100).orderBy('n', 'desc').limit(5).get();
  await files.put('files', 'js.txt', 'hello from node');
  const body = (await files.get('files', 'js.txt')).toString();
  return { n: (await notes.doc(a.id).get()).data.n, conflict, top: top.map((d) => d.data.title),
           body, count: await notes.count(), missing: await notes.doc('nope').get() };
};
"#;

#[test]
fn functions_use_the_sdk_with_their_own_credentials() {
    let server = Server::start();
    write_app(
        &server.path("sdk"),
        &[
            ("stratus.yaml", SDK_MANIFEST),
            ("main.py", PY_SDK),
            ("index.js", JS_SDK),
        ],
    );
    common::deploy(&server, "sdk");
    let out = server.invoke("sdk/py", "{}");
    let r = &out["result"];
    assert_eq!(
        r["a"],
        json!({"title": "a", "n": 11, "tags": ["x", "y"]}),
        "{out}"
    );
    assert_eq!(r["exists"], "document_exists", "{out}");
    assert_eq!(r["page"], json!([r["page"][0].clone()]));
    assert_eq!(r["rest"], json!(["c"]), "{out}");
    assert_eq!(r["everything"].as_array().unwrap().len(), 3, "{out}");
    assert_eq!(
        r["b"],
        json!({"title": "b", "n": 2, "tags": [], "done": true}),
        "{out}"
    );
    assert_eq!(r["missing"], Value::Null);
    assert_eq!(r["count"], 3);
    assert_eq!(r["sum"], 16);
    assert_eq!(r["deleted"], true);
    assert_eq!(r["gone"], Value::Null);
    assert_eq!(r["listed"], json!(["dir/hello.txt"]), "{out}");
    assert_eq!(r["body"], "hello from python");
    assert_eq!(r["after_delete"], Value::Null);

    let out = server.invoke("sdk/js", "{}");
    let r = &out["result"];
    assert_eq!(r["n"], 101, "{out}");
    assert_eq!(r["conflict"], "version_conflict", "{out}");
    assert_eq!(r["top"], json!(["js"]), "{out}");
    assert_eq!(r["body"], "hello from node");
    assert_eq!(r["count"], 3);
    assert_eq!(r["missing"], Value::Null);

    // The function's token acts for its own app only.
    let other = server.ok(&["db", "ls", "sdk"]);
    assert!(other.contains("notes"), "{other}");
}

const TRIGGER_MANIFEST: &str = r#"
app: todo
functions:
  noop:
    runtime: python3
    handler: main.handler
  count:
    runtime: python3
    handler: count.handler
    timeout: 30s
    events:
      - database: { collection: todos, on: [created, deleted] }
  audit:
    runtime: python3
    handler: count.audit
    events:
      - database: { collection: todos }
collections:
  todos: {}
  stats: {}
  seen: {}
"#;

/// Keeps `stats/todos.n` at the number of todos, and records every event
/// it gets (idempotently, by document and version) in `seen`.
const COUNTER: &str = r#"
from stratus import db

def handler(event, context):
    assert event["type"] in ("stratus.database.document.created", "stratus.database.document.deleted"), event
    step = 1 if event["type"].endswith("created") else -1
    db.collection("stats").doc("todos").update(inc={"n": step})

def audit(event, context):
    data = event["data"]
    kind = event["type"].rsplit(".", 1)[1]
    db.collection("seen").doc(f"{data['id']}-{data['version']}-{kind}").set(
        {"before": data["before"], "after": data["after"], "subject": event["subject"]})
"#;

fn deploy_counter(server: &Server) {
    write_app(
        &server.path("todo"),
        &[
            ("stratus.yaml", TRIGGER_MANIFEST),
            ("main.py", "def handler(event, context):\n    return 1\n"),
            ("count.py", COUNTER),
        ],
    );
    common::deploy(server, "todo");
    server.ok(&["db", "put", "todo/stats/todos", r#"{"n": 0}"#]);
}

fn doc_field(server: &Server, path: &str, field: &str) -> Value {
    let (status, doc) = admin(server, reqwest::Method::GET, path, None);
    if status != 200 {
        return Value::Null;
    }
    doc["data"][field].clone()
}

#[test]
fn change_triggers_keep_a_counter_correct_under_concurrent_writes() {
    let server = start(&[]);
    deploy_counter(&server);
    let writers = 20;
    let per_writer = 15;
    std::thread::scope(|scope| {
        for w in 0..writers {
            let server = &server;
            scope.spawn(move || {
                for i in 0..per_writer {
                    let (status, doc) = admin(
                        server,
                        reqwest::Method::POST,
                        "/todos",
                        Some(json!({"w": w, "i": i})),
                    );
                    assert_eq!(status, 201, "{doc}");
                    if i % 5 == 0 {
                        let id = doc["id"].as_str().unwrap();
                        let (status, _) = admin(
                            server,
                            reqwest::Method::DELETE,
                            &format!("/todos/{id}"),
                            None,
                        );
                        assert_eq!(status, 200);
                    }
                }
            });
        }
    });
    let expected = writers * (per_writer - per_writer / 5);
    eventually(Duration::from_secs(60), || {
        let n = doc_field(&server, "/stats/todos", "n");
        (n == json!(expected))
            .then_some(())
            .ok_or(format!("n is {n}, not {expected}"))
    });
    // An update fires the audit, with the document before and after.
    let (_, doc) = admin(
        &server,
        reqwest::Method::POST,
        "/todos",
        Some(json!({"t": 1})),
    );
    let id = doc["id"].as_str().unwrap().to_owned();
    admin(
        &server,
        reqwest::Method::PATCH,
        &format!("/todos/{id}"),
        Some(json!({"set": {"t": 2}})),
    );
    let seen = eventually(Duration::from_secs(30), || {
        let (status, doc) = admin(
            &server,
            reqwest::Method::GET,
            &format!("/seen/{id}-2-updated"),
            None,
        );
        (status == 200).then_some(doc).ok_or("not yet".to_owned())
    });
    assert_eq!(
        seen["data"],
        json!({"before": {"t": 1}, "after": {"t": 2}, "subject": id})
    );
    // An import without --triggers fires nothing.
    let out = server.cli_stdin(
        &["db", "import", "todo/todos"],
        "{\"id\": \"quiet\", \"data\": {}}\n",
    );
    assert!(out.status.success());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(doc_field(&server, "/stats/todos", "n"), json!(expected + 1));
}

#[test]
fn a_kill_9_during_writes_loses_no_acknowledged_write_and_no_change_s_event() {
    let mut server = start(&[]);
    deploy_counter(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = std::sync::Mutex::new(Vec::new());
    let admin_url = server.admin.clone();
    let token = server.token.clone();
    std::thread::scope(|scope| {
        for w in 0..6 {
            let (stop, acknowledged, admin_url, token) = (&stop, &acknowledged, &admin_url, &token);
            scope.spawn(move || {
                let client = common::client();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("w{w}-{i}");
                    let sent = client
                        .put(format!("{admin_url}/v1/apps/todo/db/todos/{id}"))
                        .bearer_auth(token)
                        .json(&json!({"w": w, "i": i}))
                        .timeout(Duration::from_secs(5))
                        .send();
                    match sent {
                        Ok(r) if r.status().is_success() => acknowledged.lock().unwrap().push(id),
                        _ => break,
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        server.kill();
        stop.store(true, Ordering::Relaxed);
    });
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(
        acknowledged.len() > 20,
        "only {} writes before the kill",
        acknowledged.len()
    );
    server.restart();
    for id in &acknowledged {
        let (status, doc) = admin(&server, reqwest::Method::GET, &format!("/todos/{id}"), None);
        assert_eq!(status, 200, "acknowledged {id} is gone: {doc}");
    }
    // Every committed document has its created event: the audit records it.
    let stored: Vec<String> = server
        .ok(&["db", "export", "todo/todos"])
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(stored.len() >= acknowledged.len());
    eventually(Duration::from_secs(90), || {
        let missing: Vec<&String> = stored
            .iter()
            .filter(|id| {
                admin(
                    &server,
                    reqwest::Method::GET,
                    &format!("/seen/{id}-1-created"),
                    None,
                )
                .0 != 200
            })
            .take(3)
            .collect();
        missing
            .is_empty()
            .then_some(())
            .ok_or(format!("no event seen yet for {missing:?}"))
    });
}

#[test]
fn an_app_with_documents_is_removed_only_with_force() {
    let server = start(&[]);
    server.ok(&["db", "put", "todo/todos/a", r#"{"t": 1}"#]);
    let refused = server.fails(&["rm", "todo"]);
    assert!(
        refused.contains("1 documents") && refused.contains("--force"),
        "{refused}"
    );
    server.ok(&["rm", "todo", "--force"]);
    common::deploy(&server, "todo");
    assert!(
        server
            .fails(&["db", "get", "todo/todos/a"])
            .contains("no document")
    );
    // An app that does not exist has no database.
    let missing = server.fails(&["db", "ls", "nothing"]);
    assert!(missing.contains("no app nothing"), "{missing}");
}

#[test]
fn rule_cases_run_without_a_server() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/todo");
    let out = std::process::Command::new(common::BIN)
        .args(["rules", "test"])
        .arg(&example)
        .arg(example.join("rules_test.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("17 cases, 17 passed, 0 failed"), "{text}");

    // get() reads the documents the file gives; a case that comes out
    // otherwise fails the run, with the rule's reason.
    let dir = tempfile::tempdir().unwrap();
    write_app(
        dir.path(),
        &[
            (
                "stratus.yaml",
                "app: club\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\ncollections:\n  rooms:\n    rules:\n      read: \"get('members/' + auth.uid) != null\"\n      delete: \"get('members/' + auth.uid).role == 'admin'\"\nbuckets:\n  photos:\n    rules:\n      write: \"auth != null && resource.key.starts_with(auth.uid + '/') && request.size < 100\"\n",
            ),
            (
                "cases.yaml",
                "documents:\n  members/ann: { role: admin }\n  members/bob: { role: guest }\ncases:\n  - { name: a member reads, auth: { uid: bob }, read: rooms, doc: {}, allow: true }\n  - { name: a stranger does not, auth: { uid: eve }, read: rooms, doc: {}, allow: false }\n  - { name: an admin deletes, auth: { uid: ann }, delete: rooms, doc: {}, allow: true }\n  - { name: a guest deletes, auth: { uid: bob }, delete: rooms, doc: {}, allow: true }\n  - { name: a small upload of one's own, auth: { uid: bob }, upload: photos, key: bob/a.png, size: 10, allow: true }\n  - { name: a large one, auth: { uid: bob }, upload: photos, key: bob/b.png, size: 1000, allow: false }\n",
            ),
        ],
    );
    let out = std::process::Command::new(common::BIN)
        .args(["rules", "test"])
        .arg(dir.path())
        .arg(dir.path().join("cases.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("6 cases, 5 passed, 1 failed"), "{text}");
    assert!(
        text.contains(
            "FAIL  a guest deletes: denied, expected allowed (the delete rule of rooms denies this"
        ),
        "{text}"
    );
    // A case file that does not parse says where.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "cases:\n  - { read: rooms, allow: maybe }\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["rules", "test"])
        .arg(dir.path())
        .arg(dir.path().join("bad.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("do not parse"), "{err}");
}
