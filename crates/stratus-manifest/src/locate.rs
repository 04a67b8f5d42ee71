//! Finds the line of a key path in block-style YAML, for error messages
//! about values that parsed but are not valid.

/// The 1-based line where the dotted `path` is written, or the line of the
/// deepest parent that can be found (keys inside flow mappings such as
/// `env: { A: b }` resolve to their parent's line).
pub(crate) fn line_of(text: &str, path: &str) -> Option<usize> {
    let mut found = None;
    let mut parent_indent: Option<usize> = None;
    let mut start = 0;
    let lines: Vec<&str> = text.lines().collect();
    'segments: for segment in path.split('.').filter(|s| !s.is_empty()) {
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if parent_indent.is_some_and(|p| indent <= p) {
                break;
            }
            if key_of(trimmed) == Some(segment) {
                found = Some(i + 1);
                parent_indent = Some(indent);
                start = i + 1;
                continue 'segments;
            }
        }
        break;
    }
    found
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
    use super::line_of;

    const TEXT: &str = "app: hello\n# comment\nfunctions:\n  greet:\n    runtime: python3\n    env: { A: b }\n  other:\n    memory: 1\n";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(line_of(TEXT, "app"), Some(1));
        assert_eq!(line_of(TEXT, "functions.greet.runtime"), Some(5));
        assert_eq!(line_of(TEXT, "functions.other.memory"), Some(8));
        assert_eq!(line_of(TEXT, "functions.greet.env.A"), Some(6));
        assert_eq!(line_of(TEXT, "functions.greet.memory"), Some(4));
    }
}
