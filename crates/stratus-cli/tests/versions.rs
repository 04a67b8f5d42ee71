//! Every version an app was deployed as, and going back to one at once.

mod common;

use common::{Server, write_app};

fn app(server: &Server, value: &str) {
    write_app(
        &server.path("back"),
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: back\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    env:\n      V: \"{value}\"\n"
                ),
            ),
            (
                "main.py",
                "import os\ndef handler(event, context):\n    return os.environ['V']\n",
            ),
        ],
    );
    server.ok(&["deploy", server.path("back").to_str().unwrap()]);
}

fn listed(server: &Server) -> serde_json::Value {
    serde_json::from_str(&server.ok(&["versions", "back", "--output", "json"])).unwrap()
}

#[test]
fn an_earlier_version_serves_again_at_once_and_the_next_deploy_comes_after() {
    let server = Server::start();
    app(&server, "one");
    let first = server.fails(&["rollback", "back"]);
    assert!(first.contains("is app back's first"), "{first}");
    app(&server, "two");
    assert_eq!(server.invoke("back/f", "{}")["result"], "two");

    let versions = listed(&server);
    assert_eq!(versions["active"], 2);
    let rows = versions["versions"].as_array().unwrap();
    assert_eq!(
        rows.iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 1]
    );
    assert!(
        rows.iter()
            .all(|v| v["source"].as_str().unwrap().starts_with("upload .@")),
        "{versions}"
    );
    let table = server.ok(&["versions", "back"]);
    assert!(
        table.contains("active") && table.contains("upload"),
        "{table}"
    );

    // Back to the one before, without a deploy.
    let said = server.ok(&["rollback", "back"]);
    assert!(said.contains("back runs version 1 again"), "{said}");
    assert_eq!(server.invoke("back/f", "{}")["result"], "one");
    assert_eq!(listed(&server)["active"], 1);
    // Forward again, by number.
    server.ok(&["rollback", "back", "2"]);
    assert_eq!(server.invoke("back/f", "{}")["result"], "two");
    let missing = server.cli(&["rollback", "back", "9"]);
    assert_eq!(missing.status.code(), Some(3), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("has no version 9"));

    // After a rollback, a deploy numbers after the newest.
    server.ok(&["rollback", "back", "1"]);
    app(&server, "three");
    assert_eq!(listed(&server)["active"], 3);
    assert_eq!(server.invoke("back/f", "{}")["result"], "three");
}
