//! Manifest errors: where (file, line, key), what, and how to fix it.

use std::fmt;

/// One problem found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: String,
    /// 1-based line, when the problem can be pinned to one.
    pub line: Option<usize>,
    /// Dotted key path such as `functions.greet.memory`; empty for the document.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a manifest; a manifest with any is not deployed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl ManifestErrors {
    pub(crate) fn one(error: ManifestError) -> Self {
        ManifestErrors(vec![error])
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Top-level keys, for "did you mean" hints.
const TOP_KEYS: &[&str] = &["version", "app", "functions", "services", "queues"];

/// Keys of a function, for "did you mean" hints.
const FUNCTION_KEYS: &[&str] = &[
    "runtime",
    "handler",
    "code",
    "memory",
    "timeout",
    "env",
    "max_instances",
    "min_instances",
    "concurrency",
    "keep_alive",
    "network",
    "http",
    "retries",
    "max_event_age",
    "on_success",
    "on_failure",
    "events",
    "log_format",
    "log_level",
];

/// Keys of one entry of a function's `events:`.
const TRIGGER_KEYS: &[&str] = &[
    "schedule",
    "timezone",
    "catch_up",
    "queue",
    "batch_size",
    "batch_window",
    "cloudevents",
    "format",
];

/// Keys of a function's `http:`.
const HTTP_KEYS: &[&str] = &[
    "path",
    "methods",
    "auth",
    "cors",
    "streaming",
    "strip_prefix",
];

/// Keys of `cors:`.
const CORS_KEYS: &[&str] = &[
    "origins",
    "credentials",
    "methods",
    "headers",
    "expose_headers",
    "max_age",
];

/// Sections that later manifest features add; named so that users get a clear answer.
const FUTURE_KEYS: &[&str] = &["routes"];

/// Keys of a service.
const SERVICE_KEYS: &[&str] = &[
    "code",
    "command",
    "port",
    "http",
    "readiness",
    "concurrency",
    "min_instances",
    "max_instances",
    "idle_timeout",
    "memory",
    "queue_depth",
    "drain_grace",
    "access_log",
    "env",
    "network",
    "protocol",
];

/// Turns a YAML or type error from serde into a located, hinted error.
pub(crate) fn from_yaml(file: &str, text: &str, err: &serde_norway::Error) -> ManifestError {
    if is_blank(text) {
        return ManifestError {
            file: file.to_owned(),
            line: None,
            key: String::new(),
            message: "the manifest is empty".to_owned(),
            hint: Some("start from `stratus init NAME --template python`".to_owned()),
        };
    }
    let (message, positions) = strip_positions(&err.to_string());
    // serde names list items `events[2]`; keys here are dotted throughout.
    let mut message = message.replace(']', "").replace('[', ".");
    let mut line = err.location().map(|l| l.line());
    // An error found at the end of the file (an unclosed quote or bracket) is
    // reported where the unfinished construct began, the second position.
    if line.is_some_and(|l| l > text.lines().count()) {
        line = positions.get(1).copied().or(line);
    }
    // serde_norway prefixes the path of the offending value: "functions.greet: ...".
    let mut key = String::new();
    if let Some((path, rest)) = message.split_once(": ")
        && !path.contains(' ')
        && !path.is_empty()
    {
        key = path.to_owned();
        message = rest.to_owned();
    }

    let mut hint = None;
    if let Some(field) = between(&message, "unknown field `", "`") {
        let field = field.to_owned();
        key = join(&key, &field);
        line = crate::locate::line_of(text, &key).or(line);
        // Unknown fields come from the top level or from a function.
        let in_function = key.contains('.');
        let parent = key.rsplit('.').nth(1).unwrap_or("");
        let in_env = key.rsplit('.').nth(2) == Some("env");
        let known = match parent {
            _ if in_env => &["secret"],
            "http" => HTTP_KEYS,
            "cors" => CORS_KEYS,
            "readiness" => &["path", "timeout"],
            "cloudevents" => &["type", "source"],
            _ if key.starts_with("queues.") => &["visibility_timeout", "retention"],
            _ if key.contains(".events.") => TRIGGER_KEYS,
            _ if key.starts_with("services.") => SERVICE_KEYS,
            _ if in_function => FUNCTION_KEYS,
            _ => TOP_KEYS,
        };
        hint = Some(if FUTURE_KEYS.contains(&field.as_str()) {
            format!("`{field}` is not supported by this version of stratus; remove it")
        } else if !in_function && FUNCTION_KEYS.contains(&field.as_str()) {
            format!(
                "`{field}` is a function setting; indent it under a function's name in `functions:`"
            )
        } else if in_function && TOP_KEYS.contains(&field.as_str()) {
            format!(
                "`{field}` is a top-level key; move `{field}:` out of the function, with no indentation"
            )
        } else if let Some(best) = closest(&field, known) {
            format!("did you mean `{best}`?")
        } else {
            "remove it; see the manifest reference in the README".to_owned()
        });
        message = format!("unknown key `{field}`");
    } else if let Some(field) = between(&message, "missing field `", "`") {
        let field = field.to_owned();
        hint = Some(format!("add `{field}:`{}", example_for(&field)));
        key = join(&key, &field);
        // The mapping that lacks the key, not whichever key serde read first.
        line = crate::locate::line_of(text, &key).or(line);
        message = format!("`{field}` is required");
    } else if let Some(field) = between(&message, "duplicate field `", "`")
        .or_else(|| between(&message, "duplicate key `", "`"))
    {
        let field = field.to_owned();
        key = join(&key, &field);
        line = crate::locate::repeat_line_of(text, &key)
            .or_else(|| crate::locate::line_of(text, &key))
            .or(line);
        hint = Some("each key may appear only once; remove or rename one of them".to_owned());
        message = format!("duplicate key `{field}`");
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        hint = type_hint(&key).map(str::to_owned);
        // serde names Rust types ("expected u32", "expected struct RawFunction");
        // the hint says what is expected in the manifest's terms.
        if hint.is_some()
            && let Some((found, _)) = message.split_once(", expected ")
        {
            message = found.replace("unit value", "null");
        }
    } else if message.contains("more than one document") {
        message = "the manifest holds more than one YAML document".to_owned();
        line = second_document_line(text).or(line);
        hint = Some(
            "keep one document: remove this `---` and what follows, or merge it into the first"
                .to_owned(),
        );
    } else if key.is_empty() {
        let tab = line
            .and_then(|l| text.lines().nth(l.saturating_sub(1)))
            .is_some_and(|l| l.contains('\t'));
        hint = Some(if tab {
            "indent with spaces; YAML does not allow tabs".to_owned()
        } else {
            "this is not valid YAML; check the indentation and quoting on this line and the one before".to_owned()
        });
    }

    ManifestError {
        file: file.to_owned(),
        line,
        key,
        message,
        hint,
    }
}

/// Whether the manifest holds nothing but blank lines and comments.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

/// Removes libyaml's positions from "PROBLEM at line L column C, while CONTEXT
/// at line L column C", returning the text and the lines it named, in order.
fn strip_positions(full: &str) -> (String, Vec<usize>) {
    const AT: &str = " at line ";
    let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut message = String::new();
    let mut lines = Vec::new();
    let mut rest = full;
    while let Some(at) = rest.find(AT) {
        let after = &rest[at + AT.len()..];
        let n = digits(after);
        if n == 0 {
            message.push_str(&rest[..at + AT.len()]);
            rest = after;
            continue;
        }
        message.push_str(&rest[..at]);
        lines.extend(after[..n].parse::<usize>().ok());
        rest = &after[n..];
        if let Some(column) = rest.strip_prefix(" column ") {
            rest = &column[digits(column)..];
        }
    }
    message.push_str(rest);
    (message, lines)
}

/// The line of the `---` that starts a second document.
fn second_document_line(text: &str) -> Option<usize> {
    let mut content = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            if content {
                return Some(i + 1);
            }
        } else if !trimmed.trim_start().is_empty() && !trimmed.trim_start().starts_with('#') {
            content = true;
        }
    }
    None
}

/// What the value at a key path should be, for type errors.
fn type_hint(key: &str) -> Option<&'static str> {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        [] | [""] | ["."] => Some("a manifest is a mapping with `app:` and `functions:` keys"),
        ["functions", _] => Some(
            "a function is a mapping of its settings, e.g. `runtime: python3` indented below its name",
        ),
        ["functions" | "services", _, "env", _] => Some(
            "an environment value is a string, number or boolean (write `\"\"` for an empty one), or `{ secret: NAME }`",
        ),
        [.., last] => expected_for(last),
    }
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() || parent == "." {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

fn example_for(field: &str) -> &'static str {
    match field {
        "app" => " with the application's name, e.g. `app: hello`",
        "runtime" => " with one of python3, nodejs, provided",
        _ => "",
    }
}

/// What a key expects, for type errors.
pub(crate) fn expected_for(key: &str) -> Option<&'static str> {
    Some(match key {
        "version" => "the manifest version is `1`",
        "app" => "the application's name, e.g. `app: hello`",
        "functions" => "`functions` maps function names to their settings",
        "runtime" => "one of python3, nodejs, provided",
        "handler" => "python3: `module.function`, nodejs: `file.export`",
        "code" => "a directory relative to the manifest, e.g. `./greet`",
        "memory" => "a whole number of MiB between 64 and 10240, e.g. `memory: 256`",
        "timeout" => "a duration such as `30s`, `2m` or `500ms`, at most 15m",
        "env" => "a map of variable names to values, e.g. `env: { GREETING: hi }`",
        "max_instances" => "a whole number between 1 and 1000",
        "min_instances" => "a whole number of instances kept warm, at most max_instances",
        "keep_alive" => "a duration such as `10m` or `30s`, between 1s and 24h",
        "network" => {
            "`outbound` (the default: may connect out), `none` (loopback and the Runtime API only), or `{ outbound: [HOST:PORT, ...], loopback: false }` (only there)"
        }
        "format" => {
            "the event's shape: `cloudevents` (the default); for a schedule `eventbridge` (AWS's Scheduled Event) or `scf` (Tencent SCF's timer event); for a queue `sqs` (SQS records); for storage `s3` (S3 event notifications)"
        }
        "log_format" => "`text` (the default) or `json` (one JSON object per log record)",
        "log_level" => "one of trace, debug, info, warn, error, fatal",
        "protocol" => {
            "`http1` (the default; gRPC requests still go as HTTP/2) or `h2c` (every request as HTTP/2 without TLS)"
        }
        "http" => {
            "routes on the public listener, e.g. `http: { path: /api/*, methods: [GET, POST] }`"
        }
        "path" => "a route such as `/hello`, `/users/{id}` or `/api/*`, or a list of them",
        "methods" => "a list of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, or `ANY`",
        "auth" => {
            "`none` (anyone) or `key` (callers present an app key from `stratus keys create`)"
        }
        "cors" => "e.g. `cors: { origins: [\"https://example.com\"], credentials: false }`",
        "origins" => "a list of origins such as `https://example.com`, or `*` for any",
        "credentials" => "`true` or `false`",
        "streaming" => "`true` to stream the response, `false` (the default) to buffer it",
        "strip_prefix" => {
            "`true` to remove each route's part before `/*` from the path the target sees"
        }
        "headers" | "expose_headers" => "a list of header names, e.g. `[x-request-id]`",
        "max_age" => "a duration such as `10m`, at most 24h",
        "events" => {
            "a list of triggers, e.g. `events: [{ schedule: \"0 3 * * *\" }, { queue: orders }]`"
        }
        "queues" => {
            "a map of queue names to settings, e.g. `queues: { orders: { visibility_timeout: 30s } }`"
        }
        "schedule" => "five cron fields such as `\"0 3 * * *\"`, or `rate(5 minutes)`",
        "timezone" => "an IANA time zone such as `Asia/Shanghai` or `UTC` (the default)",
        "catch_up" => {
            "`skip` (the default: missed slots do not run) or `once` (the latest runs once)"
        }
        "queue" => "the name of a queue declared under `queues:`",
        "batch_size" => "a whole number of messages from 1 to 100 (default 10)",
        "batch_window" => "a duration such as `2s`, at most 5m (default 0: no waiting)",
        "visibility_timeout" => {
            "a duration such as `30s`, from 1s to 12h, at least the consumer's timeout"
        }
        "retention" => "a duration such as `4d`, from 1m to 14d",
        "cloudevents" => "filters such as `cloudevents: { type: com.example.order.* }`",
        _ => return None,
    })
}

/// The known word nearest to `word`, if it is near enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
