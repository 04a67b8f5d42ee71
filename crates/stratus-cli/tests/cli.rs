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
