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

/// Keys the manifest knows, for "did you mean" hints.
const KNOWN_KEYS: &[&str] = &[
    "version",
    "app",
    "functions",
    "runtime",
    "handler",
    "code",
    "memory",
    "timeout",
    "env",
    "max_instances",
];

/// Sections that later manifest features add; named so that users get a clear answer.
const FUTURE_KEYS: &[&str] = &["http", "events", "services", "queues", "routes"];

/// Turns a YAML or type error from serde into a located, hinted error.
pub(crate) fn from_yaml(file: &str, text: &str, err: &serde_norway::Error) -> ManifestError {
    let full = err.to_string();
    let mut line = err.location().map(|l| l.line());
    let mut message = match full.rfind(" at line ") {
        Some(at) => full[..at].to_owned(),
        None => full.clone(),
    };
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
        hint = Some(if FUTURE_KEYS.contains(&field.as_str()) {
            format!("`{field}` is not supported by this version of stratus; remove it")
        } else if let Some(best) = closest(&field, KNOWN_KEYS) {
            format!("did you mean `{best}`?")
        } else {
            "remove it; see the manifest reference in the README".to_owned()
        });
        message = format!("unknown key `{field}`");
    } else if let Some(field) = between(&message, "missing field `", "`") {
        let field = field.to_owned();
        hint = Some(format!("add `{field}:`{}", example_for(&field)));
        key = join(&key, &field);
        message = format!("`{field}` is required");
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let last = key.rsplit('.').next().unwrap_or("");
        hint = expected_for(last).map(str::to_owned);
    } else if text.trim().is_empty() {
        message = "the manifest is empty".to_owned();
        hint = Some("start from `stratus init NAME --template python`".to_owned());
    }

    ManifestError {
        file: file.to_owned(),
        line,
        key,
        message,
        hint,
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
