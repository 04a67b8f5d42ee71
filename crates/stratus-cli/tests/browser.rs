//! The to-do example (`examples/todo`) in headless Chromium (Debian's,
//! driven over WebDriver by its ChromeDriver): a page the app serves signs
//! in anonymously with the client SDK from `/_stratus/sdk.js`, adds to-dos
//! through its form, lists them with a realtime watch that a second
//! browser (the same user's) updates within a second, and a third user's
//! page is refused the first user's to-do by the rules and says so.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, eventually, free_port};
use serde_json::{Value, json};

/// A ChromeDriver process, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
    _profiles: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: apt-get install chromium chromium-driver)");
        let url = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(20), || {
            common::client()
                .get(format!("{url}/status"))
                .send()
                .map_err(|e| e.to_string())
                .and_then(|r| r.json::<Value>().map_err(|e| e.to_string()))
                .and_then(|s| {
                    (s["value"]["ready"] == true)
                        .then_some(())
                        .ok_or("not ready".into())
                })
        });
        Driver {
            child,
            url,
            _profiles: tempfile::tempdir().unwrap(),
        }
    }

    /// A new browser, with a profile (and so storage) of its own.
    fn browser(&self) -> Browser {
        let profile = tempfile::tempdir_in(self._profiles.path()).unwrap().keep();
        let answer: Value = common::client()
            .post(format!("{}/session", self.url))
            .json(&json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             format!("--user-data-dir={}", profile.display())],
                },
            } } }))
            .timeout(Duration::from_secs(60))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        Browser {
            base: format!("{}/session/{id}", self.url),
        }
    }
}

struct Browser {
    base: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = common::client().delete(&self.base).send();
    }
}

impl Browser {
    fn call(&self, path: &str, body: Value) -> Value {
        let answer: Value = common::client()
            .post(format!("{}{path}", self.base))
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {path}: {answer}");
        }
        answer["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call("/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page; its return value.
    fn run(&self, script: &str) -> Value {
        self.call("/execute/sync", json!({ "script": script, "args": [] }))
    }

    /// Runs `script`, which ends by calling `done(value)`.
    fn run_async(&self, script: &str) -> Value {
        let script = format!("const done = arguments[arguments.length - 1]; {script}");
        self.call("/execute/async", json!({ "script": script, "args": [] }))
    }

    fn element(&self, css: &str) -> String {
        let found = self.call("/element", json!({ "using": "css selector", "value": css }));
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.call(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        );
    }

    fn click(&self, css: &str) {
        let element = self.element(css);
        self.call(&format!("/element/{element}/click"), json!({}));
    }

    /// Waits until the page has signed in and shows its watch's first snapshot.
    fn wait_ready(&self) -> String {
        eventually(Duration::from_secs(20), || {
            let ready = self.run("return [document.body.dataset.ready, document.body.dataset.uid, document.querySelector('#error').textContent]");
            if ready[0] == "yes" {
                Ok(ready[1].as_str().unwrap().to_owned())
            } else {
                Err(format!("page not ready: {ready}"))
            }
        })
    }

    /// The titles the page lists.
    fn titles(&self) -> Vec<String> {
        let titles = self.run(
            "return [...document.querySelectorAll('#list li span')].map((s) => s.textContent)",
        );
        serde_json::from_value(titles).unwrap()
    }

    fn error_text(&self) -> String {
        self.run("return document.querySelector('#error').textContent")
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn todo_app(server: &Server) -> String {
    let dir = server.path("todo");
    common::copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/todo"),
        &dir,
    );
    common::deploy(server, "todo");
    let port = server
        .public
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/');
    format!("http://todo.localhost:{port}/")
}

#[test]
fn the_to_do_page_signs_in_lists_live_and_is_held_to_the_rules() {
    let server = Server::start();
    let url = todo_app(&server);
    let driver = Driver::start();

    // The first user adds a to-do through the form.
    let first = driver.browser();
    first.open(&url);
    let uid = first.wait_ready();
    assert!(uid.starts_with("anon-"), "{uid}");
    first.type_into("#title", "milk");
    first.click("#add button");
    eventually(Duration::from_secs(10), || {
        let titles = first.titles();
        (titles == ["milk"])
            .then_some(())
            .ok_or(format!("listed {titles:?}; error: {}", first.error_text()))
    });

    // The same user in a second browser: its addition reaches the first
    // page's list through the watch within a second.
    let second = driver.browser();
    second.open(&url);
    second.wait_ready();
    let session = first
        .run("return Object.entries(localStorage).find(([k]) => k.startsWith('stratus.session:'))");
    second.run(&format!(
        "localStorage.setItem({}, {}); return true",
        session[0], session[1]
    ));
    second.open(&url);
    assert_eq!(
        second.wait_ready(),
        uid,
        "the second browser is the same user"
    );
    assert_eq!(second.titles(), ["milk"]);
    let before = first.run("return window.lastRender");
    second.type_into("#title", "eggs");
    let sent_at = second.run("return Date.now()").as_i64().unwrap();
    second.click("#add button");
    let started = Instant::now();
    let rendered_at = eventually(Duration::from_secs(10), || {
        let titles = first.titles();
        let at = first.run("return window.lastRender");
        (titles == ["milk", "eggs"] && at != before)
            .then(|| at.as_i64().unwrap())
            .ok_or(format!("first page lists {titles:?}"))
    });
    let delay = rendered_at - sent_at;
    eprintln!("the change reached the other browser's page in {delay} ms");
    assert!(
        delay < 1000,
        "the change took {delay} ms to reach the other browser"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A change trigger counted both.
    let admin = |path: &str| -> Value {
        common::client()
            .get(format!("{}/v1/apps/todo/db/{path}", server.admin))
            .bearer_auth(&server.token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    eventually(Duration::from_secs(30), || {
        let n = admin(&format!("counters/{uid}"))["data"]["n"].clone();
        (n == 2).then_some(()).ok_or(format!("counter is {n}"))
    });
    let milk = first.run("return document.querySelector('#list li').dataset.id");
    let milk = milk.as_str().unwrap().to_owned();

    // Another user sees none of it, and is refused it by id.
    let other = driver.browser();
    other.open(&url);
    let other_uid = other.wait_ready();
    assert_ne!(other_uid, uid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(other.titles().is_empty(), "{:?}", other.titles());
    other.run(&format!("window.peek('{milk}'); return true"));
    eventually(Duration::from_secs(10), || {
        let text = other.error_text();
        (text.starts_with("denied:") && text.contains("read rule"))
            .then_some(())
            .ok_or(text)
    });
    other.run(&format!("window.meddle('{milk}'); return true"));
    eventually(Duration::from_secs(10), || {
        let text = other.error_text();
        (text.starts_with("denied:") && text.contains("update"))
            .then_some(())
            .ok_or(text)
    });
    assert_eq!(admin(&format!("todos/{milk}"))["data"]["title"], "milk");
    // Nor may a user make a to-do in another's name.
    let refused = other.run_async(&format!(
        "window.app.db.collection('todos').add({{ owner: '{uid}', title: 'x', created_at: 1 }}).then(() => done('added'), (e) => done(e.code))"
    ));
    assert_eq!(refused, "denied");
    // Its own to-do shows on its own page, not on the first user's.
    other.type_into("#title", "tea");
    other.click("#add button");
    eventually(Duration::from_secs(10), || {
        (other.titles() == ["tea"])
            .then_some(())
            .ok_or(format!("{:?}", other.titles()))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(first.titles(), ["milk", "eggs"]);

    // A transaction through the SDK, as the owner: it reads, then writes
    // on condition of what it read; the watch shows the change.
    let version = second.run_async(&format!(
        "window.app.db.runTransaction(async (tx) => {{ const d = await tx.get('todos', '{milk}'); tx.update('todos', '{milk}', {{ set: {{ done: true }} }}); return d.version; }}).then(done, (e) => done(String(e)))"
    ));
    assert_eq!(version, 1, "{version}");
    eventually(Duration::from_secs(10), || {
        let done = first.run("return document.querySelector('#list li').className");
        (done == "done").then_some(()).ok_or(format!("{done}"))
    });
    assert_eq!(admin(&format!("todos/{milk}"))["version"], 2);

    // A callable function gets the caller, verified.
    let called = other
        .run_async("window.app.call('whoami', { hello: 1 }).then(done, (e) => done(String(e)))");
    assert_eq!(
        called,
        json!({ "uid": other_uid, "provider": "anonymous", "echo": { "hello": 1 } })
    );
}
