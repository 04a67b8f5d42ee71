//! `.stratusignore`: gitignore's patterns and semantics, matched by the
//! `ignore` crate (ripgrep's gitignore matcher): `#` comments, `!`
//! negation (the last matching rule wins), a trailing `/` for directories,
//! a leading or inner `/` to anchor a pattern at the package root, `*`,
//! `?`, `**`, character classes such as `[cod]` and `[!a-z]`, and `\` to
//! escape. As in git, a file under an ignored directory cannot be
//! re-included: the directory is not walked.

use ignore::gitignore::{Gitignore, GitignoreBuilder};

#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    matcher: Option<Gitignore>,
}

impl IgnoreRules {
    /// The rules of `text`; a line that is not a valid pattern is an error
    /// naming its line.
    pub fn parse(text: &str) -> Result<IgnoreRules, String> {
        // Relative paths are matched against the root, whatever it is.
        let mut builder = GitignoreBuilder::new("/");
        for (n, line) in text.lines().enumerate() {
            builder
                .add_line(None, line)
                .map_err(|err| format!("line {}: {err}", n + 1))?;
        }
        let matcher = builder.build().map_err(|err| err.to_string())?;
        Ok(IgnoreRules {
            matcher: Some(matcher),
        })
    }

    /// Whether `path` (relative, `/`-separated) is ignored.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        self.matcher
            .as_ref()
            .is_some_and(|m| m.matched(path, is_dir).is_ignore())
    }
}

#[cfg(test)]
mod tests {
    use super::IgnoreRules;

    #[test]
    fn patterns() {
        let rules = IgnoreRules::parse(
            "# c\n*.pyc\n/build\nnode_modules/\ndocs/**/*.md\n!keep.pyc\n*.py[cod]\n[Tt]emp*\n\\#literal\n",
        )
        .unwrap();
        let cases = [
            ("a.pyc", false, true),
            ("x/a.pyc", false, true),
            ("keep.pyc", false, true),
            ("a.pyo", false, true),
            ("x/y/a.pyd", false, true),
            ("a.pyx", false, false),
            ("Temp.txt", false, true),
            ("x/temporary", true, true),
            ("#literal", false, true),
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

    #[test]
    fn the_last_matching_rule_wins() {
        let rules = IgnoreRules::parse("*.log\n!important.log\n").unwrap();
        assert!(rules.is_ignored("debug.log", false));
        assert!(!rules.is_ignored("important.log", false));
    }

    #[test]
    fn a_bad_pattern_names_its_line() {
        let err = IgnoreRules::parse("ok\n[z-a]\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
