//! Finds the line of a key path in block-style YAML, for error messages
//! about values that parsed but are not valid.

/// The 1-based line where the dotted `path` is written, or the line of the
/// deepest parent that can be found (keys inside flow mappings such as
/// `env: { A: b }` resolve to their parent's line).
pub(crate) fn line_of(text: &str, path: &str) -> Option<usize> {
    let mut found = None;
    let mut parent_indent: Option<usize> = None;
    let mut start = 0;
    // The line of the list item last matched, whose own `- key:` is
    // inside the item.
    let mut item_line = None;
    let lines: Vec<&str> = text.lines().collect();
    'segments: for segment in path.split('.').filter(|s| !s.is_empty()) {
        let index: Option<usize> = segment.parse().ok();
        let mut items = 0;
        let mut dash_indent = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let item = trimmed.strip_prefix("- ").map(str::trim_start);
            if item_line == Some(i) && item.is_none() {
                // A bare `-`: the item's keys are on the lines below.
                continue;
            }
            let (indent, content) = match item {
                Some(rest) if item_line == Some(i) => (indent + 2, rest),
                _ => (indent, trimmed),
            };
            if parent_indent.is_some_and(|p| indent <= p) {
                break;
            }
            if let Some(n) = index {
                // The n-th `- ` at the list's own indentation.
                if (item.is_some() || trimmed == "-") && dash_indent.is_none_or(|d| d == indent) {
                    dash_indent = Some(indent);
                    if items == n {
                        found = Some(i + 1);
                        parent_indent = Some(indent);
                        start = i;
                        item_line = Some(i);
                        continue 'segments;
                    }
                    items += 1;
                }
                continue;
            }
            if key_of(content) == Some(segment) {
                found = Some(i + 1);
                parent_indent = Some(indent);
                start = i + 1;
                item_line = None;
                continue 'segments;
            }
        }
        break;
    }
    found
}

/// The line where the last segment of `path` is written a second time under
/// the same parent, for duplicate keys in block-style YAML.
pub(crate) fn repeat_line_of(text: &str, path: &str) -> Option<usize> {
    let segment = path.rsplit('.').next()?;
    let first = line_of(text, path)?;
    let lines: Vec<&str> = text.lines().collect();
    let first_line = lines[first - 1];
    let first_trimmed = first_line.trim_start();
    if key_of(first_trimmed) != Some(segment) {
        return None;
    }
    let indent = first_line.len() - first_trimmed.len();
    for (i, line) in lines.iter().enumerate().skip(first) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let line_indent = line.len() - trimmed.len();
        if line_indent < indent {
            break;
        }
        if line_indent == indent && key_of(trimmed) == Some(segment) {
            return Some(i + 1);
        }
    }
    None
}

fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once(':')?;
    let key = key.trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
        .unwrap_or(key);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::{line_of, repeat_line_of};

    const TEXT: &str = "app: hello\n# comment\nfunctions:\n  greet:\n    runtime: python3\n    env: { A: b }\n  other:\n    memory: 1\n";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of(TEXT, "app"), Some(1));
        assert_eq!(line_of(TEXT, "functions.greet.runtime"), Some(5));
        assert_eq!(line_of(TEXT, "functions.other.memory"), Some(8));
        assert_eq!(line_of(TEXT, "functions.greet.env.A"), Some(6));
        assert_eq!(line_of(TEXT, "functions.greet.memory"), Some(4));
    }

    #[test]
    fn finds_keys_in_list_items() {
        let text = "f:\n  events:\n    - schedule: a\n      timezone: b\n    - queue: q\n\n    -\n      queue: r\n  other: 1\n";
        assert_eq!(line_of(text, "f.events.0"), Some(3));
        assert_eq!(line_of(text, "f.events.0.schedule"), Some(3));
        assert_eq!(line_of(text, "f.events.0.timezone"), Some(4));
        assert_eq!(line_of(text, "f.events.1.queue"), Some(5));
        assert_eq!(line_of(text, "f.events.1.timezone"), Some(5));
        assert_eq!(line_of(text, "f.events.2.queue"), Some(8));
        assert_eq!(line_of(text, "f.events.3"), Some(2));
        assert_eq!(line_of(text, "f.other"), Some(9));
    }

    #[test]
    fn finds_repeated_keys() {
        let text = "app: a\nfunctions:\n  greet:\n    memory: 1\n  other: {}\n  greet:\n    memory: 2\napp: b\n";
        assert_eq!(repeat_line_of(text, "app"), Some(8));
        assert_eq!(repeat_line_of(text, "functions.greet"), Some(6));
        assert_eq!(repeat_line_of(text, "functions.other"), None);
        assert_eq!(repeat_line_of(text, "functions.greet.runtime"), None);
    }
}
