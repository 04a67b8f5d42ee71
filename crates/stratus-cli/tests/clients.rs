//! What clients (pages, mini-programs, mobile apps) call on an app's host
//! under `/_stratus/`, as plain HTTP and JSON: sign-in (anonymous, email
//! and password, tickets functions mint), sessions that refresh, expire
//! and are revoked, the document database and files under the rules, a
//! realtime watch over a WebSocket (Node.js's `ws`), and 500 concurrent
//! client writes counted by a change trigger. Hostile input is refused
//! with what to do: forged and expired tokens, another app's ticket, a
//! rule that would build a huge string.
//!
//! Runs in both isolation modes.

mod common;

use std::time::Duration;

use common::{Server, eventually, npm_install, write_app};
use reqwest::Method;
use serde_json::{Value, json};

const MANIFEST: &str = r#"
app: notes
functions:
  mint:
    runtime: python3
    handler: main.mint
  count:
    runtime: python3
    handler: main.count
    events:
      - database: { collection: notes, on: [created] }
collections:
  notes:
    indexes: [ { fields: [owner] } ]
    rules:
      read: "auth != null && (doc.owner == auth.uid || auth.claims.role == 'admin')"
      create: "auth != null && request.doc.owner == auth.uid"
      update: "auth != null && auth.uid == doc.owner && !changed('owner')"
      delete: "auth != null && exists('admins/' + auth.uid)"
  admins:
    rules: { read: "false" }
  stats:
    rules: { read: "true" }
  profiles:
    rules:
      read: "auth != null"
      write: "auth != null && request.id == auth.uid"
  heavy:
    rules:
      create: "request.doc.s + request.doc.s + request.doc.s + request.doc.s + request.doc.s != ''"
buckets:
  media:
    rules:
      read: "resource.key.starts_with('public/') || (auth != null && resource.key.starts_with('users/' + auth.uid + '/'))"
      write: "auth != null && resource.key.starts_with('users/' + auth.uid + '/') && request.size <= 1024"
"#;

const FUNCTIONS: &str = r#"
from stratus import auth, db, StratusError

def mint(event, context):
    return {"ticket": auth.ticket(event["uid"], claims=event.get("claims") or {})}

def count(event, context):
    ref = db.collection("stats").doc("notes")
    for _ in range(10):
        try:
            ref.update(inc={"n": 1})
            return
        except StratusError as err:
            if err.code != "no_such_document":
                raise
        try:
            ref.create({"n": 1})
            return
        except StratusError as err:
            if err.code != "document_exists":
                raise
"#;

struct App {
    server: Server,
    /// `http://notes.localhost:PORT/_stratus`, reached through 127.0.0.1.
    base: String,
    port: String,
}

fn start(extra: &[&str]) -> App {
    let server = Server::start_with(extra);
    write_app(
        &server.path("notes"),
        &[("stratus.yaml", MANIFEST), ("main.py", FUNCTIONS)],
    );
    common::deploy(&server, "notes");
    let port = server
        .public
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    App {
        base: format!("http://127.0.0.1:{port}/notes/_stratus"),
        server,
        port,
    }
}

impl App {
    /// A call to the client API, with a session's access token if given.
    fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = common::client().request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
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

    fn anonymous(&self) -> (String, String, String) {
        let (status, session) = self.call(Method::POST, "/auth/anonymous", None, None);
        assert_eq!(status, 200, "{session}");
        (
            session["user"]["uid"].as_str().unwrap().to_owned(),
            session["access_token"].as_str().unwrap().to_owned(),
            session["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = common::client()
            .request(method, format!("{}/v1/apps/notes{path}", self.server.admin))
            .bearer_auth(&self.server.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

fn message(answer: &Value) -> &str {
    answer["error"]["message"].as_str().unwrap_or("")
}

#[test]
fn sessions_refresh_once_expire_and_are_revoked() {
    let app = start(&["--session-ttl", "2s"]);
    let (uid, token, refresh) = app.anonymous();
    let (status, me) = app.call(Method::GET, "/auth/me", Some(&token), None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me["user"],
        json!({"uid": uid, "provider": "anonymous", "email": null, "claims": {}})
    );
    // The SDK is served on the app's host, as a module.
    let sdk = common::client()
        .get(format!("{}/sdk.js", app.base))
        .send()
        .unwrap();
    assert_eq!(
        sdk.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(sdk.text().unwrap().contains("export function createClient"));

    // A refresh token works once.
    let (status, renewed) = app.call(
        Method::POST,
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!(status, 200, "{renewed}");
    assert_ne!(renewed["refresh_token"], json!(refresh));
    let (status, again) = app.call(
        Method::POST,
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!((status, code(&again)), (401, "invalid_session"), "{again}");

    // Forged and expired tokens are refused, saying why.
    // Another signature of the same length (a character well inside it).
    let mut forged = token.clone().into_bytes();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, refused) = app.call(Method::GET, "/auth/me", Some(&forged), None);
    assert_eq!(
        (status, code(&refused)),
        (401, "invalid_session"),
        "{refused}"
    );
    assert!(message(&refused).contains("not signed"), "{refused}");
    let (status, refused) = app.call(Method::GET, "/auth/me", Some("not.a.jwt"), None);
    assert_eq!(status, 401, "{refused}");
    // A two-second token, a few seconds on.
    std::thread::sleep(Duration::from_millis(3200));
    let (status, expired) = app.call(Method::GET, "/auth/me", Some(&token), None);
    assert_eq!(status, 401, "{expired}");
    assert!(message(&expired).contains("expired"), "{expired}");

    // Revoking the user ends its sessions at once.
    let (status, fresh) = app.call(
        Method::POST,
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": renewed["refresh_token"]})),
    );
    assert_eq!(status, 200, "{fresh}");
    let token = fresh["access_token"].as_str().unwrap();
    let refresh = fresh["refresh_token"].as_str().unwrap();
    let (status, _) = app.call(Method::GET, "/auth/me", Some(token), None);
    assert_eq!(status, 200);
    let out = app.server.ok(&["users", "revoke", "notes", &uid]);
    assert!(out.contains("1 sessions ended"), "{out}");
    let (status, refused) = app.call(Method::GET, "/auth/me", Some(token), None);
    assert_eq!(status, 401, "{refused}");
    assert!(message(&refused).contains("revoked"), "{refused}");
    let (status, _) = app.call(
        Method::POST,
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!(status, 401);
    let listed = app.server.ok(&["users", "ls", "notes"]);
    assert!(
        listed.contains(&uid) && listed.contains("anonymous"),
        "{listed}"
    );
}

#[test]
fn email_sign_in_checks_passwords_and_limits_attempts() {
    let app = start(&["--signin-attempts", "3"]);
    let signup = |email: &str, password: &str| {
        app.call(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": email, "password": password})),
        )
    };
    let signin = |email: &str, password: &str| {
        app.call(
            Method::POST,
            "/auth/signin",
            None,
            Some(json!({"email": email, "password": password})),
        )
    };
    let (status, weak) = signup("ann@example.com", "short");
    assert_eq!((status, code(&weak)), (400, "weak_password"));
    let (status, bad) = signup("not an email", "long enough password");
    assert_eq!((status, code(&bad)), (400, "invalid_email"));
    let (status, session) = signup("Ann@Example.com", "correct horse battery");
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["email"], "ann@example.com");
    let (status, taken) = signup("ann@example.com", "another password");
    assert_eq!((status, code(&taken)), (409, "email_taken"));

    let (status, ok) = signin("ann@example.com", "correct horse battery");
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["user"]["uid"], session["user"]["uid"]);
    for _ in 0..3 {
        let (status, wrong) = signin("ann@example.com", "wrong horse battery");
        assert_eq!((status, code(&wrong)), (401, "wrong_credentials"));
    }
    // Limited now, even with the right password.
    let (status, limited) = signin("ann@example.com", "correct horse battery");
    assert_eq!(
        (status, code(&limited)),
        (429, "too_many_attempts"),
        "{limited}"
    );
    // Nobody's email answers as a wrong password does.
    let (status, nobody) = signin("bob@example.com", "whatever password");
    assert_eq!((status, code(&nobody)), (401, "wrong_credentials"));
}

#[test]
fn tickets_are_minted_by_the_app_s_functions_for_that_app_only() {
    let app = start(&[]);
    let minted = app.server.invoke(
        "notes/mint",
        r#"{"uid": "user-42", "claims": {"role": "admin"}}"#,
    );
    let ticket = minted["result"]["ticket"].as_str().unwrap().to_owned();
    let (status, session) = app.call(
        Method::POST,
        "/auth/ticket",
        None,
        Some(json!({"ticket": ticket})),
    );
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["user"]["uid"], "user-42");
    assert_eq!(session["user"]["claims"], json!({"role": "admin"}));

    // Another app's ticket is not this app's.
    write_app(
        &app.server.path("other"),
        &[
            (
                "stratus.yaml",
                "app: other\nfunctions:\n  mint:\n    runtime: python3\n    handler: main.mint\n",
            ),
            ("main.py", FUNCTIONS),
        ],
    );
    common::deploy(&app.server, "other");
    let foreign = app.server.invoke("other/mint", r#"{"uid": "user-42"}"#);
    let foreign = foreign["result"]["ticket"].as_str().unwrap();
    let (status, refused) = app.call(
        Method::POST,
        "/auth/ticket",
        None,
        Some(json!({"ticket": foreign})),
    );
    assert_eq!(
        (status, code(&refused)),
        (401, "invalid_ticket"),
        "{refused}"
    );
    // Nor is an access token a ticket, or a ticket an access token.
    let access = session["access_token"].as_str().unwrap();
    let (status, refused) = app.call(
        Method::POST,
        "/auth/ticket",
        None,
        Some(json!({"ticket": access})),
    );
    assert_eq!((status, code(&refused)), (401, "invalid_ticket"));
    let (status, _) = app.call(Method::GET, "/auth/me", Some(&ticket), None);
    assert_eq!(status, 401);
    // The admin API mints them too, and checks what it is given.
    let (status, minted) = app.admin(Method::POST, "/auth/tickets", Some(json!({"uid": "a/b"})));
    assert_eq!(status, 400, "{minted}");
    let (status, minted) = app.admin(
        Method::POST,
        "/auth/tickets",
        Some(json!({"uid": "ops", "ttl_secs": 60})),
    );
    assert_eq!(status, 200, "{minted}");
}

#[test]
fn clients_are_held_to_the_collections_rules() {
    let app = start(&[]);
    let (ann, ann_token, _) = app.anonymous();
    let (bob, bob_token, _) = app.anonymous();
    let (status, note) = app.call(
        Method::POST,
        "/db/notes",
        Some(&ann_token),
        Some(json!({"owner": ann, "text": "ann's"})),
    );
    assert_eq!(status, 201, "{note}");
    let id = note["id"].as_str().unwrap().to_owned();

    // Signed out, or someone else: refused, saying which rule.
    let (status, refused) = app.call(Method::GET, &format!("/db/notes/{id}"), None, None);
    assert_eq!((status, code(&refused)), (403, "denied"), "{refused}");
    let (status, refused) = app.call(
        Method::GET,
        &format!("/db/notes/{id}"),
        Some(&bob_token),
        None,
    );
    assert_eq!(status, 403);
    assert!(message(&refused).contains("read rule"), "{refused}");
    let (status, own) = app.call(
        Method::GET,
        &format!("/db/notes/{id}"),
        Some(&ann_token),
        None,
    );
    assert_eq!((status, own["data"]["text"].clone()), (200, json!("ann's")));
    let (status, refused) = app.call(
        Method::POST,
        "/db/notes",
        Some(&bob_token),
        Some(json!({"owner": ann, "text": "in ann's name"})),
    );
    assert_eq!(status, 403, "{refused}");

    // A query must filter so that its documents are the caller's.
    let (status, refused) = app.call(
        Method::POST,
        "/db/notes/_query",
        Some(&ann_token),
        Some(json!({})),
    );
    assert_eq!(status, 403, "{refused}");
    assert!(message(&refused).contains("`owner`"), "{refused}");
    let (status, page) = app.call(
        Method::POST,
        "/db/notes/_query",
        Some(&ann_token),
        Some(json!({"where": ["owner", "==", ann]})),
    );
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["documents"].as_array().unwrap().len(), 1);
    let (status, _) = app.call(
        Method::POST,
        "/db/notes/_query",
        Some(&bob_token),
        Some(json!({"where": ["owner", "==", ann]})),
    );
    assert_eq!(status, 403);

    // Protected fields stay.
    let (status, refused) = app.call(
        Method::PATCH,
        &format!("/db/notes/{id}"),
        Some(&ann_token),
        Some(json!({"set": {"owner": bob}})),
    );
    assert_eq!(status, 403, "{refused}");
    // Clients learn which rule denied, not what it read (the server's log
    // has the reason at debug level).
    assert_eq!(message(&refused), "the update rule of notes denies this");
    let (status, _) = app.call(
        Method::PATCH,
        &format!("/db/notes/{id}"),
        Some(&ann_token),
        Some(json!({"set": {"text": "edited"}})),
    );
    assert_eq!(status, 200);

    // A write the store refuses says why only to those who may read the
    // document: to others it is the rule's denial, whatever the reason
    // (a version, a type, an overflow would tell its fields).
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/db/notes/{id}"),
            json!({"inc": {"text": 1}}),
        ),
        (
            Method::PATCH,
            format!("/db/notes/{id}"),
            json!({"set": {"x": 1}, "if_version": 9}),
        ),
        (
            Method::PUT,
            format!("/db/notes/{id}?if_version=9"),
            json!({"owner": bob}),
        ),
        (
            Method::PATCH,
            "/db/notes/nothing-here".to_owned(),
            json!({"set": {"x": 1}}),
        ),
    ] {
        let (status, refused) = app.call(method, &path, Some(&bob_token), Some(body));
        assert_eq!(
            (status, code(&refused)),
            (403, "denied"),
            "{path}: {refused}"
        );
    }
    let (status, conflict) = app.call(
        Method::PATCH,
        &format!("/db/notes/{id}"),
        Some(&ann_token),
        Some(json!({"set": {"x": 1}, "if_version": 9})),
    );
    assert_eq!(
        (status, code(&conflict)),
        (409, "version_conflict"),
        "{conflict}"
    );
    // Deleting what is not there is the delete rule's call too.
    let (status, refused) = app.call(
        Method::DELETE,
        "/db/notes/nothing-here",
        Some(&bob_token),
        None,
    );
    assert_eq!((status, code(&refused)), (403, "denied"), "{refused}");

    // get() lookups: only admins delete.
    let (status, refused) = app.call(
        Method::DELETE,
        &format!("/db/notes/{id}"),
        Some(&ann_token),
        None,
    );
    assert_eq!(status, 403, "{refused}");
    app.server
        .ok(&["db", "put", &format!("notes/admins/{ann}"), "{}"]);
    let (status, deleted) = app.call(
        Method::DELETE,
        &format!("/db/notes/{id}"),
        Some(&ann_token),
        None,
    );
    assert_eq!((status, deleted["deleted"].clone()), (200, json!(true)));

    // An admin's claims read everything.
    let minted = app.server.invoke(
        "notes/mint",
        r#"{"uid": "boss", "claims": {"role": "admin"}}"#,
    );
    let (_, boss) = app.call(
        Method::POST,
        "/auth/ticket",
        None,
        Some(json!({"ticket": minted["result"]["ticket"]})),
    );
    let boss_token = boss["access_token"].as_str().unwrap();
    app.call(
        Method::POST,
        "/db/notes",
        Some(&bob_token),
        Some(json!({"owner": bob, "text": "bob's"})),
    );
    let (status, all) = app.call(
        Method::POST,
        "/db/notes/_query",
        Some(boss_token),
        Some(json!({})),
    );
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["documents"].as_array().unwrap().len(), 1);

    // No rule, no access; undeclared, no access.
    let (status, refused) = app.call(Method::GET, "/db/admins/x", Some(boss_token), None);
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = app.call(
        Method::POST,
        "/db/secret",
        Some(boss_token),
        Some(json!({})),
    );
    assert_eq!(status, 403);
    assert!(message(&refused).contains("not declared"), "{refused}");

    // A rule that would build a huge string stops at its bound.
    let (status, refused) = app.call(
        Method::POST,
        "/db/heavy",
        None,
        Some(json!({"s": "x".repeat(20_000)})),
    );
    // The rule holds for any string: only its bound on what it builds
    // (64 KiB) denies the large one.
    assert_eq!(status, 403, "{refused}");
    let (status, _) = app.call(
        Method::POST,
        "/db/heavy",
        None,
        Some(json!({"s": "x".repeat(1000)})),
    );
    assert_eq!(status, 201);
    // `request.id`: a profile is written by the user it is named after.
    let (status, _) = app.call(
        Method::PUT,
        &format!("/db/profiles/{bob}"),
        Some(&bob_token),
        Some(json!({"name": "Bob"})),
    );
    assert_eq!(status, 200);
    let (status, _) = app.call(
        Method::PUT,
        &format!("/db/profiles/{ann}"),
        Some(&bob_token),
        Some(json!({"name": "not Ann"})),
    );
    assert_eq!(status, 403);

    // A non-function may not call.
    let (status, refused) = app.call(
        Method::POST,
        "/call/count",
        Some(boss_token),
        Some(json!({})),
    );
    assert_eq!((status, code(&refused)), (403, "not_callable"));
}

#[test]
fn files_follow_the_bucket_s_rules() {
    let app = start(&[]);
    let (uid, token, _) = app.anonymous();
    let put = |key: &str, body: Vec<u8>, token: Option<&str>| {
        let mut request = common::client()
            .put(format!("{}/files/media/{key}", app.base))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().unwrap().status().as_u16()
    };
    let get = |key: &str, token: Option<&str>| {
        let mut request = common::client().get(format!("{}/files/media/{key}", app.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    assert_eq!(
        put(
            &format!("users/{uid}/a.txt"),
            b"mine".to_vec(),
            Some(&token)
        ),
        200
    );
    assert_eq!(
        put("users/someone/a.txt", b"theirs".to_vec(), Some(&token)),
        403
    );
    assert_eq!(
        put(&format!("users/{uid}/big"), vec![0; 2048], Some(&token)),
        403
    );
    assert_eq!(put(&format!("users/{uid}/anon"), b"x".to_vec(), None), 403);
    assert_eq!(
        get(&format!("users/{uid}/a.txt"), Some(&token)),
        (200, "mine".to_owned())
    );
    let (other, other_token, _) = app.anonymous();
    assert_ne!(other, uid);
    assert_eq!(
        get(&format!("users/{uid}/a.txt"), Some(&other_token)).0,
        403
    );
    // Public files, put by the app, are anyone's to read.
    let out = app.server.cli_stdin(
        &["files", "cp", "-", "notes/media/public/hello.txt"],
        "hello",
    );
    assert!(out.status.success());
    assert_eq!(get("public/hello.txt", None), (200, "hello".to_owned()));

    // What a client uploads cannot run on the app's origin: a page is
    // served as a download, under a policy that runs nothing.
    let page = common::client()
        .put(format!("{}/files/media/users/{uid}/x.html", app.base))
        .bearer_auth(&token)
        .header("content-type", "text/html")
        .body("<script>alert(1)</script>")
        .send()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let served = common::client()
        .get(format!("{}/files/media/users/{uid}/x.html", app.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    let headers = served.headers();
    assert_eq!(headers["content-disposition"], "attachment");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-security-policy"],
        "sandbox; default-src 'none'"
    );
    let image = common::client()
        .put(format!("{}/files/media/users/{uid}/p.png", app.base))
        .bearer_auth(&token)
        .header("content-type", "image/png")
        .body(vec![0x89, b'P', b'N', b'G'])
        .send()
        .unwrap();
    assert_eq!(image.status().as_u16(), 200);
    let image = common::client()
        .get(format!("{}/files/media/users/{uid}/p.png", app.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert!(
        image.headers().get("content-disposition").is_none(),
        "an image shows in place"
    );
    // A deletion is a write, of size 0.
    let deleted = common::client()
        .delete(format!("{}/files/media/users/{uid}/x.html", app.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
}

/// Subscribes to a query over the watch WebSocket with Node.js's `ws`,
/// prints each message as a line, and stops after `count` messages.
const WATCHER: &str = r#"
const WebSocket = require('ws');
const [url, subscription, count] = process.argv.slice(2);
const socket = new WebSocket(url);
let seen = 0;
socket.on('open', () => socket.send(subscription));
socket.on('message', (data) => {
  console.log(String(data));
  if (++seen >= Number(count)) socket.close();
});
socket.on('close', () => process.exit(0));
setTimeout(() => process.exit(3), 30000);
"#;

#[test]
fn a_watch_gets_a_snapshot_then_changes_as_they_commit() {
    let app = start(&[]);
    let modules = npm_install("ws", &["ws@8"]);
    let (uid, token, _) = app.anonymous();
    app.call(
        Method::POST,
        "/db/notes",
        Some(&token),
        Some(json!({"owner": uid, "text": "first"})),
    );
    let script = app.server.path("watch.js");
    std::fs::write(&script, WATCHER).unwrap();
    let url = format!(
        "ws://127.0.0.1:{}/notes/_stratus/watch?access_token={token}",
        app.port
    );
    let subscription = json!({"op": "subscribe", "id": "mine", "collection": "notes", "where": ["owner", "==", uid]});
    let child = std::process::Command::new("node")
        .arg(&script)
        .args([url.as_str(), &subscription.to_string(), "4"])
        .env("NODE_PATH", &modules)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let (_, second) = app.call(
        Method::POST,
        "/db/notes",
        Some(&token),
        Some(json!({"owner": uid, "text": "second"})),
    );
    let id = second["id"].as_str().unwrap();
    app.call(
        Method::PATCH,
        &format!("/db/notes/{id}"),
        Some(&token),
        Some(json!({"set": {"text": "edited"}})),
    );
    // Made by the app itself (a function, an import) and by someone else:
    // only what the query selects and the rules allow arrives.
    app.server.ok(&[
        "db",
        "put",
        "notes/notes/theirs",
        r#"{"owner": "someone", "text": "x"}"#,
    ]);
    app.server.ok(&["db", "rm", &format!("notes/notes/{id}")]);
    let out = child.wait_with_output().unwrap();
    let messages: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(messages.len(), 4, "{messages:?}");
    assert_eq!(messages[0]["type"], "snapshot");
    assert_eq!(messages[0]["documents"][0]["data"]["text"], "first");
    assert_eq!(
        (
            messages[1]["change"].clone(),
            messages[1]["document"]["data"]["text"].clone()
        ),
        (json!("added"), json!("second"))
    );
    assert_eq!(
        (
            messages[2]["change"].clone(),
            messages[2]["document"]["data"]["text"].clone()
        ),
        (json!("modified"), json!("edited"))
    );
    assert_eq!(
        (
            messages[3]["change"].clone(),
            messages[3]["document"]["id"].clone()
        ),
        (json!("removed"), json!(id))
    );

    // A watch the rules do not allow is refused.
    let out = std::process::Command::new("node")
        .arg(&script)
        .args([
            url.as_str(),
            &json!({"op": "subscribe", "id": 1, "collection": "notes"}).to_string(),
            "1",
        ])
        .env("NODE_PATH", &modules)
        .output()
        .unwrap();
    let refused: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (refused["type"].clone(), refused["error"]["code"].clone()),
        (json!("error"), json!("denied")),
        "{refused}"
    );
}

#[test]
fn five_hundred_concurrent_client_writes_are_all_counted_by_a_trigger() {
    let app = start(&[]);
    let users: Vec<(String, String, String)> = (0..10).map(|_| app.anonymous()).collect();
    std::thread::scope(|scope| {
        for (uid, token, _) in &users {
            for _ in 0..5 {
                let app = &app;
                scope.spawn(move || {
                    for i in 0..10 {
                        let (status, answer) = app.call(
                            Method::POST,
                            "/db/notes",
                            Some(token),
                            Some(json!({"owner": uid, "i": i})),
                        );
                        assert_eq!(status, 201, "{answer}");
                    }
                });
            }
        }
    });
    eventually(Duration::from_secs(120), || {
        let (_, stats) = app.admin(Method::GET, "/db/stats/notes", None);
        let n = stats["data"]["n"].clone();
        (n == 500)
            .then_some(())
            .ok_or(format!("the counter is at {n}"))
    });
    let count = app
        .server
        .ok(&["db", "query", "notes/notes", "--count", "--allow-scan"]);
    assert_eq!(count.trim(), "500");
}
