//! gitignore-style patterns from `.stratusignore`.
//!
//! Supported: `#` comments, `!` negation (the last matching rule wins),
//! a trailing `/` for directories only, a leading or inner `/` to anchor a
//! pattern at the package root, `*`, `?` and `**`.

#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: String,
    negate: bool,
    dir_only: bool,
    anchored: bool,
}

impl IgnoreRules {
    pub fn parse(text: &str) -> IgnoreRules {
        let rules = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (negate, line) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, line),
                };
                let (dir_only, line) = match line.strip_suffix('/') {
                    Some(rest) => (true, rest),
                    None => (false, line),
                };
                let anchored = line.contains('/');
                Rule {
                    pattern: line.trim_start_matches('/').to_owned(),
                    negate,
                    dir_only,
                    anchored,
                }
            })
            .collect();
        IgnoreRules { rules }
    }

    /// Whether `path` (relative, `/`-separated) is ignored.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        let mut ignored = false;
        for rule in &self.rules {
            if rule.dir_only && !is_dir {
                continue;
            }
            let subject = if rule.anchored { path } else { name };
            if glob(rule.pattern.as_bytes(), subject.as_bytes()) {
                ignored = !rule.negate;
            }
        }
        ignored
    }
}

/// Glob match where `*` and `?` stop at `/` and `**` crosses it.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=text.len()).any(|i| (i == 0 || text[i - 1] == b'/') && glob(rest, &text[i..]))
        }
        [b'*', rest @ ..] => {
            for i in 0..=text.len() {
                if glob(rest, &text[i..]) {
                    return true;
                }
                if i < text.len() && text[i] == b'/' {
                    break;
                }
            }
            false
        }
        [b'?', rest @ ..] => matches!(text, [c, tail @ ..] if *c != b'/' && glob(rest, tail)),
        [c, rest @ ..] => matches!(text, [t, tail @ ..] if t == c && glob(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use super::IgnoreRules;

    #[test]
    fn patterns() {
        let rules =
            IgnoreRules::parse("# c\n*.pyc\n/build\nnode_modules/\ndocs/**/*.md\n!keep.pyc\n");
        let cases = [
            ("a.pyc", false, true),
            ("x/a.pyc", false, true),
            ("keep.pyc", false, false),
            ("build", true, true),
            ("x/build", true, false),
            ("node_modules", true, true),
            ("node_modules", false, false),
            ("docs/a.md", false, true),
            ("docs/x/y/a.md", false, true),
            ("main.py", false, false),
        ];
        for (path, is_dir, expected) in cases {
            assert_eq!(rules.is_ignored(path, is_dir), expected, "{path}");
        }
    }
}
