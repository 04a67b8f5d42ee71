//! `collections:`: the app's document database, its indexes and the
//! security rules clients are held to.
//!
//! ```yaml
//! collections:
//!   todos:
//!     indexes: [ { fields: [owner, created_at] }, { fields: [tags], multi: true } ]
//!     rules:
//!       read:   "auth.uid == doc.owner"
//!       create: "auth != null && request.doc.owner == auth.uid"
//!       update: "auth.uid == doc.owner && !changed('owner')"
//!       delete: "auth.uid == doc.owner"
//! ```
//!
//! Functions may use any collection; clients only those with a rule for
//! what they do (no rule: denied). `write:` stands for `create`,
//! `update` and `delete` where those are not given.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raw::{RawCollection, RawRules};
use crate::resolve::Checker;

/// The longest collection name.
pub const MAX_COLLECTION_NAME: usize = 64;
/// Indexes one collection may declare.
pub const MAX_INDEXES: usize = 16;
/// Fields one index may have.
pub const MAX_INDEX_FIELDS: usize = 8;

/// One collection an app declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionSpec {
    pub name: String,
    #[serde(default)]
    pub indexes: Vec<IndexDecl>,
    #[serde(default)]
    pub rules: CollectionRules,
}

/// A declared index: equality on a prefix of `fields`, then a range or an
/// order on the next; or, `multi`, one array field whose elements
/// `contains` filters look up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDecl {
    /// Dotted field paths.
    pub fields: Vec<String>,
    #[serde(default)]
    pub multi: bool,
}

/// The expressions that allow a client's reads and writes; `None`: deny.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<String>,
}

impl CollectionRules {
    /// Each rule given, with its name.
    pub fn each(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("read", &self.read),
            ("create", &self.create),
            ("update", &self.update),
            ("delete", &self.delete),
        ]
        .into_iter()
        .filter_map(|(name, rule)| rule.as_deref().map(|rule| (name, rule)))
    }
}

/// The roots a collection's rules may read.
pub const COLLECTION_RULE_ROOTS: &[&str] = &["auth", "doc", "request"];
/// The roots a bucket's rules may read.
pub const BUCKET_RULE_ROOTS: &[&str] = &["auth", "resource", "request"];

/// Why `name` is not a valid collection name, if it is not: a letter,
/// then letters, digits, `_` and `-`, at most 64 in all.
pub fn collection_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_COLLECTION_NAME {
        return Some(format!(
            "{name:?} is {} characters; a collection name has 1 to {MAX_COLLECTION_NAME}",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Some(format!(
            "{name:?} is not a collection name: start with a letter, then use letters, digits, `_` and `-`"
        ));
    }
    None
}

/// Why `path` is not a valid dotted field path, if it is not.
pub fn field_path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("a field path is empty".into());
    }
    for name in path.split('.') {
        if name.is_empty() {
            return Some(format!("field path {path:?} has an empty name"));
        }
        if name.starts_with('$') {
            return Some(format!(
                "field path {path:?}: names starting with `$` are reserved"
            ));
        }
    }
    None
}

pub(crate) fn resolve_collections(
    c: &mut Checker<'_>,
    raw: BTreeMap<String, Option<RawCollection>>,
) -> BTreeMap<String, CollectionSpec> {
    let mut collections = BTreeMap::new();
    for (name, raw) in raw {
        if let Some(spec) = resolve_collection(c, &name, raw.unwrap_or_default()) {
            collections.insert(name, spec);
        }
    }
    collections
}

fn resolve_collection(
    c: &mut Checker<'_>,
    name: &str,
    raw: RawCollection,
) -> Option<CollectionSpec> {
    let before = c.errors.len();
    if let Some(problem) = collection_name_problem(name) {
        c.error(
            format!("collections.{name}"),
            problem,
            Some("rename the collection, such as `todos` or `user_profiles`".into()),
        );
    }
    if raw.indexes.len() > MAX_INDEXES {
        c.error(
            format!("collections.{name}.indexes"),
            format!(
                "{} indexes; a collection may declare {MAX_INDEXES}",
                raw.indexes.len()
            ),
            Some("every index costs each write; drop the ones no query needs".into()),
        );
    }
    let mut indexes: Vec<IndexDecl> = Vec::new();
    for (i, index) in raw.indexes.into_iter().enumerate() {
        let key = format!("collections.{name}.indexes.{i}");
        let fields = index.fields.into_vec();
        if fields.is_empty() || fields.len() > MAX_INDEX_FIELDS {
            c.error(
                format!("{key}.fields"),
                format!("an index has 1 to {MAX_INDEX_FIELDS} fields"),
                Some("list the fields the collection's queries filter or sort on, such as `fields: [owner, created_at]`".into()),
            );
            continue;
        }
        for field in &fields {
            if let Some(problem) = field_path_problem(field) {
                c.error(
                    format!("{key}.fields"),
                    problem,
                    Some("name fields by their dotted paths, such as `address.city`".into()),
                );
            }
        }
        let multi = index.multi.unwrap_or(false);
        if multi && fields.len() != 1 {
            c.error(
                format!("{key}.multi"),
                "a multi index has one field, an array".into(),
                Some("give `fields: [tags]` with `multi: true`, or drop `multi`".into()),
            );
        }
        let decl = IndexDecl { fields, multi };
        if indexes.contains(&decl) {
            c.error(
                key,
                "this index is declared twice".into(),
                Some("remove one of them".into()),
            );
            continue;
        }
        indexes.push(decl);
    }
    let rules = resolve_rules(c, &format!("collections.{name}.rules"), raw.rules);
    (c.errors.len() == before).then(|| CollectionSpec {
        name: name.to_owned(),
        indexes,
        rules,
    })
}

fn resolve_rules(c: &mut Checker<'_>, key: &str, raw: Option<RawRules>) -> CollectionRules {
    let Some(raw) = raw else {
        return CollectionRules::default();
    };
    for (name, source) in [
        ("read", &raw.read),
        ("write", &raw.write),
        ("create", &raw.create),
        ("update", &raw.update),
        ("delete", &raw.delete),
    ] {
        if let Some(source) = source
            && let Err(err) = stratus_rules::Rule::parse(source, COLLECTION_RULE_ROOTS)
        {
            c.error(
                format!("{key}.{name}"),
                format!("rule {source:?}: {err}"),
                Some(RULE_HINT.into()),
            );
        }
    }
    let or_write = |rule: Option<String>| rule.or_else(|| raw.write.clone());
    CollectionRules {
        read: raw.read.clone(),
        create: or_write(raw.create.clone()),
        update: or_write(raw.update.clone()),
        delete: or_write(raw.delete.clone()),
    }
}

/// What a rule error's hint says.
pub(crate) const RULE_HINT: &str = "rules are expressions such as `auth != null && auth.uid == doc.owner`; the README's \"Security rules\" section lists what they may use";

/// A bucket's rules, checked: `read` and `write` over `auth`, `resource`
/// and `request`.
pub(crate) fn resolve_bucket_rules(
    c: &mut Checker<'_>,
    key: &str,
    raw: Option<crate::raw::RawBucketRules>,
) -> crate::buckets::BucketRules {
    let Some(raw) = raw else {
        return Default::default();
    };
    for (name, source) in [("read", &raw.read), ("write", &raw.write)] {
        if let Some(source) = source
            && let Err(err) = stratus_rules::Rule::parse(source, BUCKET_RULE_ROOTS)
        {
            c.error(
                format!("{key}.{name}"),
                format!("rule {source:?}: {err}"),
                Some(RULE_HINT.into()),
            );
        }
    }
    crate::buckets::BucketRules {
        read: raw.read,
        write: raw.write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_start_with_a_letter() {
        for good in ["todos", "user_profiles", "Orders2", "a-b"] {
            assert_eq!(collection_name_problem(good), None, "{good}");
        }
        for bad in ["", "_x", "9lives", "a.b", "a/b", "todo$", &"a".repeat(65)] {
            assert!(collection_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn field_paths_have_names_between_dots() {
        assert_eq!(field_path_problem("address.city"), None);
        assert!(field_path_problem("").is_some());
        assert!(field_path_problem("a..b").is_some());
        assert!(field_path_problem("$where").is_some());
    }
}
