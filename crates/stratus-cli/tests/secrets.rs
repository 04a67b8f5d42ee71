//! Apps' secrets through the real CLI and server: set from stdin, named in
//! the manifest, seen by the function, rotated, and never given back.

mod common;

use common::{Server, eventually, write_app};
use std::time::Duration;

const MANIFEST: &str = "app: shh\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    env:\n      GREETING: hello\n      DB_PASSWORD: { secret: db_password }\n";
/// The function gives the value back reversed: the test sees it arrived,
/// and no answer holds it as it is.
const MAIN: &str = "import os\n\ndef handler(event, context):\n    return {'greeting': os.environ['GREETING'], 'reversed': os.environ['DB_PASSWORD'][::-1]}\n";

fn reversed(text: &str) -> String {
    text.chars().rev().collect()
}

/// Every admin API answer a person might read about the app.
fn answers(server: &Server) -> String {
    let http = common::client();
    [
        "/v1/apps",
        "/v1/apps/shh",
        "/v1/apps/shh/secrets",
        "/v1/status",
        "/v1/apps/shh/keys",
        "/2015-03-31/functions/shh.f",
    ]
    .iter()
    .map(|path| {
        http.get(format!("{}{path}", server.admin))
            .bearer_auth(&server.token)
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    })
    .collect::<Vec<_>>()
    .join("\n")
}

#[test]
fn a_secret_reaches_its_function_and_nothing_else() {
    let mut server = Server::start();
    let dir = server.path("shh");
    write_app(&dir, &[("stratus.yaml", MANIFEST), ("main.py", MAIN)]);
    let dir = dir.to_str().unwrap();

    // Named before it is set: nothing is deployed.
    let refused = server.fails(&["deploy", dir]);
    assert!(
        refused.contains("env DB_PASSWORD names secret \"db_password\"")
            && refused.contains("stratus secret set shh db_password"),
        "{refused}"
    );

    let first = "correct horse battery staple 7f3e";
    let out = server.cli_stdin(
        &["secret", "set", "shh", "db_password"],
        &format!("{first}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    server.ok(&["deploy", dir]);
    let result = server.invoke("shh/f", "{}")["result"].clone();
    assert_eq!(result["greeting"], "hello");
    assert_eq!(
        result["reversed"],
        reversed(first),
        "the trailing newline is dropped"
    );

    let listed = server.ok(&["secret", "ls", "shh"]);
    assert!(
        listed.contains("db_password") && listed.contains("DB_PASSWORD"),
        "{listed}"
    );
    let said = answers(&server) + &server.ok(&["ls"]) + &server.ok(&["status", "shh"]);
    assert!(
        !said.contains(first),
        "the API gave the secret back: {said}"
    );

    // Rotated: new instances see the new value.
    let second = "tr0ub4dor & 3 rotated";
    let file = server.path("second.txt");
    std::fs::write(&file, second).unwrap();
    server.ok(&[
        "secret",
        "set",
        "shh",
        "db_password",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    eventually(Duration::from_secs(10), || {
        let seen = server.invoke("shh/f", "{}")["result"]["reversed"].clone();
        match seen == reversed(second) {
            true => Ok(()),
            false => Err(format!("still {seen}")),
        }
    });

    // In use: not deleted.
    let in_use = server.fails(&["secret", "rm", "shh", "db_password"]);
    assert!(
        in_use.contains("names secret \"db_password\" (env DB_PASSWORD)"),
        "{in_use}"
    );
    let bad = server.fails(&["secret", "set", "shh", "no spaces"]);
    assert!(bad.contains("a secret name has 1 to 64"), "{bad}");

    // At rest, sealed: neither value is in the database files, and the
    // restarted server opens the secret again.
    server.stop();
    let stored: Vec<u8> = ["stratus.db", "stratus.db-wal"]
        .iter()
        .flat_map(|f| std::fs::read(server.data_dir.join(f)).unwrap_or_default())
        .collect();
    for value in [first, second] {
        assert!(
            !stored.windows(value.len()).any(|w| w == value.as_bytes()),
            "{value:?} is stored in the clear"
        );
    }
    server.restart();
    assert_eq!(
        server.invoke("shh/f", "{}")["result"]["reversed"],
        reversed(second)
    );
    let log = std::fs::read_to_string(server.path("restart.log")).unwrap_or_default();
    assert!(!log.contains(second), "{log}");

    // Deploy without it, then it can go; removing the app takes the rest.
    write_app(
        &server.path("shh"),
        &[(
            "stratus.yaml",
            "app: shh\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
        )],
    );
    server.ok(&["deploy", dir]);
    server.ok(&["secret", "rm", "shh", "db_password"]);
    let listed = server.ok(&["secret", "ls", "shh", "--output", "json"]);
    assert!(!listed.contains("db_password"), "{listed}");
}
