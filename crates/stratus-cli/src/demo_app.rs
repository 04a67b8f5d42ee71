//! The demo application from `examples/demo`, built into the binary so that
//! `stratus demo` works from any directory.

/// (path, content, executable)
pub const FILES: &[(&str, &str, bool)] = &[
    (
        "stratus.yaml",
        include_str!("../../../examples/demo/stratus.yaml"),
        false,
    ),
    (
        "greet/main.py",
        include_str!("../../../examples/demo/greet/main.py"),
        false,
    ),
    (
        "wordcount/index.js",
        include_str!("../../../examples/demo/wordcount/index.js"),
        false,
    ),
    (
        "web/main.py",
        include_str!("../../../examples/demo/web/main.py"),
        false,
    ),
    (
        "site/server.js",
        include_str!("../../../examples/demo/site/server.js"),
        false,
    ),
    (
        "echo/bootstrap",
        include_str!("../../../examples/demo/echo/bootstrap"),
        true,
    ),
];

/// The path the demo requests from its HTTP function, under `/demo`.
pub const HTTP_PATH: &str = "/hello/Ada";

/// The path the demo requests from its service, under `/demo`.
pub const SERVICE_PATH: &str = "/site/welcome";

/// Example calls: (function, event).
pub const CALLS: &[(&str, &str)] = &[
    ("greet", r#"{"name":"Ada"}"#),
    (
        "wordcount",
        r#"{"text":"the quick brown fox jumps over the lazy dog the end"}"#,
    ),
    ("echo", r#"{"hello":"from stratus"}"#),
];
