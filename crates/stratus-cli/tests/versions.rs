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

/// The code of versions past `--keep-versions` goes (after
/// `--package-grace`); going back to one of those is refused, saying so,
/// and a kept one still serves again at once.
#[test]
fn the_code_of_versions_no_longer_kept_goes() {
    let server = Server::start_with(&["--keep-versions", "2", "--package-grace", "0s"]);
    for value in ["one", "two", "three", "four"] {
        write_app(
            &server.path("back"),
            &[
                (
                    "stratus.yaml",
                    "app: back\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
                ),
                (
                    "main.py",
                    &format!("def handler(event, context):\n    return '{value}'\n"),
                ),
            ],
        );
        server.ok(&["deploy", server.path("back").to_str().unwrap()]);
    }
    // Versions 4 and 3 keep their code.
    common::eventually(std::time::Duration::from_secs(10), || {
        let kept = std::fs::read_dir(server.data_dir.join("code"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() == 64)
            .count();
        match kept {
            2 => Ok(()),
            n => Err(format!("{n} packages unpacked")),
        }
    });
    let refused = server.fails(&["rollback", "back", "1"]);
    assert!(
        refused.contains("cannot be made active again; deploy it anew"),
        "{refused}"
    );
    assert_eq!(server.invoke("back/f", "{}")["result"], "four");
    server.ok(&["rollback", "back", "3"]);
    assert_eq!(server.invoke("back/f", "{}")["result"], "three");
    assert_eq!(
        listed(&server)["versions"].as_array().unwrap().len(),
        4,
        "every version stays listed"
    );
}
