//! Security rules, applied to clients' reads and writes: each collection's
//! `read`, `create`, `update` and `delete` (no rule: denied), over
//! `auth`, `doc` (stored), `request.doc` (incoming) and `request.time`,
//! with `get()` lookups of other documents of the app.
//!
//! A read of one document is checked against it; a query must imply the
//! read rule by its filters (each alternative of its `or`s), and each
//! document it returns is checked too. A write is checked inside its
//! transaction ([`ClientCheck`]), with the documents before and after as
//! the transaction sees them, and `get()` reading there too.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use stratus_manifest::collections::{COLLECTION_RULE_ROOTS, CollectionSpec};
use stratus_rules::{Env, Looked, Lookup, Request, Rule, Verdict as RuleVerdict};
use stratus_store::documents::{Change, Comparison, DocOp, Fetched, Filter, Verdict, WriteCheck};

use super::AppDb;

/// A collection's rules, parsed (checked when the manifest was).
#[derive(Debug, Default)]
pub(crate) struct Rules {
    pub read: Option<Rule>,
    pub create: Option<Rule>,
    pub update: Option<Rule>,
    pub delete: Option<Rule>,
}

impl Rules {
    pub fn of(spec: &CollectionSpec) -> Rules {
        let parse = |source: &Option<String>| {
            source.as_deref().and_then(|s| {
                Rule::parse(s, COLLECTION_RULE_ROOTS)
                    .inspect_err(|err| tracing::error!(rule = s, %err, "a deployed rule does not parse; it denies"))
                    .ok()
            })
        };
        Rules {
            read: parse(&spec.rules.read),
            create: parse(&spec.rules.create),
            update: parse(&spec.rules.update),
            delete: parse(&spec.rules.delete),
        }
    }
}

/// What a client was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied(pub String);

/// Documents read for `get()`, by `collection/id`.
#[derive(Debug, Default)]
pub(crate) struct Fetches(pub BTreeMap<String, Option<Value>>);

impl Lookup for Fetches {
    fn lookup(&self, path: &str) -> Looked<'_> {
        self.0.lookup(path)
    }
}

/// A path `get()` asked for, as (collection, id); `None` if it is not
/// one (the rule then denies on its own).
pub(crate) fn split_path(path: &str) -> Option<(String, String)> {
    let (collection, id) = path.split_once('/')?;
    Some((collection.to_owned(), id.to_owned()))
}

/// The rule of `op` on `collection`, or why there is none.
fn rule<'a>(db: &'a AppDb, collection: &str, op: &str) -> Result<&'a Rule, Denied> {
    let Some(c) = db.collections.get(collection) else {
        return Err(Denied(format!(
            "collection {collection} is not declared, so clients may not use it; declare it with rules under `collections:`"
        )));
    };
    let rules = &c.rules;
    let found = match op {
        "read" => &rules.read,
        "create" => &rules.create,
        "update" => &rules.update,
        _ => &rules.delete,
    };
    found.as_ref().ok_or_else(|| {
        Denied(format!(
            "collection {collection} has no `{op}` rule, so clients may not {op} its documents"
        ))
    })
}

/// Refuses a client's write to a collection with no rule that could allow
/// it (undeclared, or without the rule of its kind; a `set` may create or
/// update), before anything is read.
pub(crate) fn require_rule(db: &AppDb, collection: &str, op: &DocOp) -> Result<(), Denied> {
    match op {
        DocOp::Create(_) => rule(db, collection, "create").map(|_| ()),
        DocOp::Update(_) => rule(db, collection, "update").map(|_| ()),
        DocOp::Delete => rule(db, collection, "delete").map(|_| ()),
        DocOp::Set(_) => rule(db, collection, "create")
            .or_else(|_| rule(db, collection, "update"))
            .map(|_| ()),
    }
}

/// Whether a client may delete a document that is not there: the delete
/// rule with no `doc`.
pub(crate) fn check_delete_of_nothing(
    db: &AppDb,
    collection: &str,
    id: &str,
    auth: Option<&Value>,
    now_ms: i64,
    fetched: &Fetches,
) -> Outcome {
    let rule = match rule(db, collection, "delete") {
        Ok(rule) => rule,
        Err(denied) => return Outcome::Denied(denied),
    };
    let env = Env {
        auth,
        doc: None,
        request: Request {
            doc: None,
            time: now_ms,
            size: None,
            id: Some(id),
        },
        resource: None,
    };
    outcome(rule.evaluate(&env, fetched), collection, "delete")
}

/// An evaluation's outcome: allowed, denied, or a document to fetch
/// first.
pub(crate) enum Outcome {
    Allowed,
    Denied(Denied),
    Need(String),
}

/// A verdict as a client learns it: that the rule denied, not why (the
/// reason may quote what it read: values, lengths, whether a document
/// exists); the reason goes to the server's log, and `stratus rules test`
/// shows it.
fn outcome(verdict: RuleVerdict, collection: &str, op: &str) -> Outcome {
    match verdict {
        RuleVerdict::Allow => Outcome::Allowed,
        RuleVerdict::Deny(why) => {
            tracing::debug!(collection, op, reason = %why, "a rule denied a client");
            Outcome::Denied(Denied(format!("the {op} rule of {collection} denies this")))
        }
        RuleVerdict::Need(path) => Outcome::Need(path),
    }
}

/// The same, with the reason kept: for `stratus rules test`, which runs
/// on the app author's own machine.
pub(crate) fn explained(verdict: RuleVerdict, collection: &str, op: &str) -> Outcome {
    match verdict {
        RuleVerdict::Deny(why) => Outcome::Denied(Denied(format!(
            "the {op} rule of {collection} denies this: {why}"
        ))),
        other => outcome(other, collection, op),
    }
}

/// Whether `auth` may read `doc` (`None`: there is none) of `collection`.
pub(crate) fn check_read(
    db: &AppDb,
    read: Read<'_>,
    auth: Option<&Value>,
    now_ms: i64,
    fetched: &Fetches,
) -> Outcome {
    let rule = match rule(db, read.collection, "read") {
        Ok(rule) => rule,
        Err(denied) => return Outcome::Denied(denied),
    };
    let env = Env {
        auth,
        doc: read.doc,
        request: Request {
            doc: None,
            time: now_ms,
            size: None,
            id: Some(read.id),
        },
        resource: None,
    };
    let verdict = rule.evaluate(&env, fetched);
    if read.explain {
        explained(verdict, read.collection, "read")
    } else {
        outcome(verdict, read.collection, "read")
    }
}

/// One document a client reads: its collection and id, its fields
/// (`None`: there is none), and whether the reason of a denial is kept.
#[derive(Clone, Copy)]
pub(crate) struct Read<'a> {
    pub collection: &'a str,
    pub id: &'a str,
    pub doc: Option<&'a Value>,
    pub explain: bool,
}

/// Whether a query's filter implies the read rule, for every alternative
/// of its `or`s.
pub(crate) fn check_query(
    db: &AppDb,
    collection: &str,
    filter: Option<&Filter>,
    auth: Option<&Value>,
    now_ms: i64,
    fetched: &Fetches,
) -> Outcome {
    let rule = match rule(db, collection, "read") {
        Ok(rule) => rule,
        Err(denied) => return Outcome::Denied(denied),
    };
    let alternatives = match filter {
        None => vec![Vec::new()],
        Some(filter) => match filter.alternatives(super::wire::MAX_ALTERNATIVES) {
            Some(alternatives) => alternatives,
            None => {
                return Outcome::Denied(Denied(
                    "the query's filter has too many alternatives".into(),
                ));
            }
        },
    };
    let env = Env {
        auth,
        doc: None,
        request: Request {
            doc: None,
            time: now_ms,
            size: None,
            id: None,
        },
        resource: None,
    };
    for conditions in alternatives {
        let fixed = fixed_fields(&conditions);
        match rule.implied(&env, &fixed, fetched) {
            RuleVerdict::Allow => {}
            RuleVerdict::Deny(why) => {
                tracing::debug!(collection, reason = %why, "a rule denied a client's query");
                // Which field the query must fix is the rule's shape, not
                // data; any other reason is kept from the client.
                let hint = if why.starts_with("the query must filter on") {
                    format!(": {why}")
                } else {
                    String::new()
                };
                return Outcome::Denied(Denied(format!(
                    "the query's filters do not imply the read rule of {collection}{hint}"
                )));
            }
            RuleVerdict::Need(path) => return Outcome::Need(path),
        }
    }
    Outcome::Allowed
}

/// The fields a conjunction fixes: `field == v` and `field in [...]`
/// (several conditions on one field: the values they all allow).
fn fixed_fields(conditions: &[&Filter]) -> BTreeMap<String, Vec<Value>> {
    let mut fixed: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for c in conditions {
        let (field, values) = match c {
            Filter::Compare {
                field,
                op: Comparison::Eq,
                value,
            } => (field, vec![value.clone()]),
            Filter::In { field, values } => (field, values.clone()),
            _ => continue,
        };
        let key = field.to_string();
        match fixed.get_mut(&key) {
            Some(have) => have.retain(|v| {
                values
                    .iter()
                    .any(|w| stratus_store::documents::json_eq(v, w))
            }),
            None => {
                fixed.insert(key, values);
            }
        }
    }
    fixed
}

/// The checks of a client's write: the collection's rules on each change,
/// then limits and triggers as for any write.
pub(crate) struct ClientCheck {
    pub db: Arc<AppDb>,
    pub auth: Option<Value>,
    pub now_ms: i64,
    pub max_document_bytes: usize,
    /// Keep the reasons of denials (`stratus rules test`).
    pub explain: bool,
}

impl WriteCheck for ClientCheck {
    fn check(&self, app: &str, changes: &[Change], fetched: &Fetched) -> Verdict {
        let fetches = Fetches(
            fetched
                .iter()
                .map(|((c, id), doc)| {
                    (
                        format!("{c}/{id}"),
                        doc.as_ref().map(|d| Value::Object(d.body.clone())),
                    )
                })
                .collect(),
        );
        let mut needed = Vec::new();
        for change in changes {
            let op = match (&change.before, &change.after) {
                (None, Some(_)) => "create",
                (Some(_), Some(_)) => "update",
                (Some(_), None) => "delete",
                (None, None) => continue,
            };
            let rule = match rule(&self.db, &change.collection, op) {
                Ok(rule) => rule,
                Err(Denied(why)) => return Verdict::Refuse(why),
            };
            let before = change
                .before
                .as_ref()
                .map(|d| Value::Object(d.body.clone()));
            let after = change.after.as_ref().map(|d| Value::Object(d.body.clone()));
            let env = Env {
                auth: self.auth.as_ref(),
                doc: before.as_ref(),
                request: Request {
                    doc: after.as_ref(),
                    time: self.now_ms,
                    size: None,
                    id: Some(&change.id),
                },
                resource: None,
            };
            let verdict = rule.evaluate(&env, &fetches);
            let judged = if self.explain {
                explained(verdict, &change.collection, op)
            } else {
                outcome(verdict, &change.collection, op)
            };
            match judged {
                Outcome::Allowed => {}
                Outcome::Denied(Denied(why)) => {
                    return Verdict::Refuse(why);
                }
                Outcome::Need(path) => match split_path(&path) {
                    Some(r) => needed.push(r),
                    None => {
                        return Verdict::Refuse(format!("get({path:?}) is not a document path"));
                    }
                },
            }
        }
        if !needed.is_empty() {
            return Verdict::Need(needed);
        }
        if let Some(why) = super::check::limits(changes, self.max_document_bytes) {
            return Verdict::Refuse(why);
        }
        Verdict::Commit(super::check::events(app, &self.db, changes))
    }
}
