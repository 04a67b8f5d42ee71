//! `stratus rules test`: an app's security rules run against cases
//! written in YAML, with no server, exactly as the server applies them.
//!
//! ```yaml
//! documents:                      # what get() and exists() find
//!   admins/alice: { since: 2020 }
//! cases:
//!   - name: the owner reads her to-do
//!     auth: { uid: alice }        # left out, or null: signed out
//!     read: todos                 # read, create, update, delete or query: the collection
//!     doc: { owner: alice }       # the stored document (read, update, delete)
//!     allow: true
//!   - update: todos
//!     auth: { uid: alice }
//!     doc: { owner: alice }
//!     request: { owner: bob }     # the document as the write leaves it (create, update)
//!     allow: false
//!   - query: todos
//!     auth: { uid: alice }
//!     where: [[owner, "==", alice]]
//!     allow: true
//!   - download: uploads           # upload, download or remove: a bucket's file
//!     key: users/alice/a.png
//!     size: 1000                  # the upload's size (or the stored file's)
//!     allow: true
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use stratus_manifest::AppSpec;
use stratus_manifest::collections::BUCKET_RULE_ROOTS;
use stratus_rules::{Env, Looked, Lookup, Request, Rule, Verdict as RuleVerdict};
use stratus_store::documents::{Body, Change, Document, Fetched, Verdict, WriteCheck};

use super::rules::{self, ClientCheck, Denied, Fetches, Outcome, Read};
use super::{AppDb, Catalog};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    documents: BTreeMap<String, Value>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    #[serde(default)]
    auth: Option<Value>,
    read: Option<String>,
    create: Option<String>,
    update: Option<String>,
    delete: Option<String>,
    query: Option<String>,
    upload: Option<String>,
    download: Option<String>,
    remove: Option<String>,
    doc: Option<Value>,
    request: Option<Value>,
    #[serde(rename = "where")]
    filter: Option<Value>,
    /// The document's id (`request.id`; default `case`).
    id: Option<String>,
    key: Option<String>,
    size: Option<u64>,
    time: Option<i64>,
    allow: bool,
}

/// One case's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CaseOutcome {
    pub name: String,
    pub expected: bool,
    pub allowed: bool,
    /// Why it was denied, when it was.
    pub reason: Option<String>,
}

impl CaseOutcome {
    pub fn passed(&self) -> bool {
        self.expected == self.allowed
    }
}

/// Runs the cases of `yaml` against the rules `spec` declares.
pub fn run_rule_cases(spec: &AppSpec, yaml: &str) -> Result<Vec<CaseOutcome>, String> {
    let file: CaseFile =
        serde_norway::from_str(yaml).map_err(|err| format!("the cases do not parse: {err}"))?;
    let catalog = Catalog::default();
    catalog.publish(&spec.name, spec);
    let db = catalog.get(&spec.name).expect("just published");
    let mut documents = Fetches::default();
    for (path, doc) in &file.documents {
        if rules::split_path(path).is_none() || !doc.is_object() {
            return Err(format!(
                "documents: {path:?} is not COLLECTION/ID with an object of fields"
            ));
        }
        documents.0.insert(path.clone(), Some(doc.clone()));
    }
    file.cases
        .iter()
        .enumerate()
        .map(|(i, case)| run(spec, &db, &documents, case, i))
        .collect()
}

/// What `get()` finds: the documents given, and nothing else.
struct Given<'a>(&'a Fetches);

impl Lookup for Given<'_> {
    fn lookup(&self, path: &str) -> Looked<'_> {
        match self.0.lookup(path) {
            Looked::NotFetched => Looked::Missing,
            found => found,
        }
    }
}

/// `auth` as rules read it: the fields given, with the others' defaults.
fn auth_of(given: &Option<Value>) -> Option<Value> {
    let given = given.as_ref().filter(|a| !a.is_null())?;
    let mut auth = json!({ "uid": null, "provider": "custom", "email": null, "claims": {} });
    if let (Some(out), Some(given)) = (auth.as_object_mut(), given.as_object()) {
        for (k, v) in given {
            out.insert(k.clone(), v.clone());
        }
    }
    Some(auth)
}

fn body(value: &Option<Value>, what: &str, label: &str) -> Result<Option<Body>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(_) => Err(format!("{label}: `{what}` is an object of fields")),
    }
}

fn run(
    spec: &AppSpec,
    db: &std::sync::Arc<AppDb>,
    documents: &Fetches,
    case: &Case,
    i: usize,
) -> Result<CaseOutcome, String> {
    let ops = [
        ("read", &case.read),
        ("create", &case.create),
        ("update", &case.update),
        ("delete", &case.delete),
        ("query", &case.query),
        ("upload", &case.upload),
        ("download", &case.download),
        ("remove", &case.remove),
    ];
    let given: Vec<(&str, &String)> = ops
        .iter()
        .filter_map(|(op, target)| target.as_ref().map(|t| (*op, t)))
        .collect();
    let name = case
        .name
        .clone()
        .unwrap_or_else(|| format!("case {}", i + 1));
    let [(op, target)] = given.as_slice() else {
        return Err(format!(
            "{name}: give exactly one of read, create, update, delete, query (a collection) or upload, download, remove (a bucket)"
        ));
    };
    let auth = auth_of(&case.auth);
    let time = case.time.unwrap_or_else(crate::now_ms);
    let lookup = Given(documents);
    let denial = match *op {
        "read" => {
            let doc = body(&case.doc, "doc", &name)?.map(Value::Object);
            let id = case.id.as_deref().unwrap_or("case");
            settle(documents, |f| {
                let read = Read {
                    collection: target,
                    id,
                    doc: doc.as_ref(),
                    explain: true,
                };
                rules::check_read(db, read, auth.as_ref(), time, f)
            })
        }
        "query" => {
            let filter = match &case.filter {
                Some(f) => {
                    super::wire::filter(f).map_err(|e| format!("{name}: `where`: {}", e.0))?
                }
                None => None,
            };
            settle(documents, |f| {
                rules::check_query(db, target, filter.as_ref(), auth.as_ref(), time, f)
            })
        }
        "create" | "update" | "delete" => {
            let stored = |body: Body| Document {
                collection: (*target).clone(),
                id: case.id.clone().unwrap_or_else(|| "case".into()),
                version: 1,
                body,
                created_ms: time,
                updated_ms: time,
            };
            let before = body(&case.doc, "doc", &name)?;
            let after = body(&case.request, "request", &name)?;
            let (before, after) = match *op {
                "create" => (None, Some(after.unwrap_or_default())),
                "update" => (
                    Some(before.unwrap_or_default()),
                    Some(after.unwrap_or_default()),
                ),
                _ => (Some(before.unwrap_or_default()), None),
            };
            let change = Change {
                collection: (*target).clone(),
                id: case.id.clone().unwrap_or_else(|| "case".into()),
                before: before.map(stored),
                after: after.map(stored),
            };
            let check = ClientCheck {
                db: db.clone(),
                auth: auth.clone(),
                now_ms: time,
                max_document_bytes: usize::MAX,
                explain: true,
            };
            let mut fetched: Fetched = documents
                .0
                .iter()
                .filter_map(|(path, doc)| {
                    let (c, id) = rules::split_path(path)?;
                    Some((
                        (c.clone(), id.clone()),
                        doc.as_ref().map(|d| Document {
                            collection: c,
                            id,
                            version: 1,
                            body: d.as_object().cloned().unwrap_or_default(),
                            created_ms: time,
                            updated_ms: time,
                        }),
                    ))
                })
                .collect();
            let mut verdict = check.check(&spec.name, std::slice::from_ref(&change), &fetched);
            for _ in 0..stratus_rules::MAX_LOOKUPS + 1 {
                let Verdict::Need(refs) = &verdict else { break };
                for r in refs {
                    fetched.entry(r.clone()).or_insert(None);
                }
                verdict = check.check(&spec.name, std::slice::from_ref(&change), &fetched);
            }
            match verdict {
                Verdict::Commit(_) => None,
                Verdict::Refuse(why) => Some(why),
                Verdict::Need(_) => Some("the rule reads too many documents".into()),
            }
        }
        _ => {
            let Some(bucket) = spec.buckets.get(*target) else {
                return Err(format!("{name}: the app declares no bucket {target:?}"));
            };
            let (rule_name, source) = match *op {
                "download" => ("read", bucket.rules.read.as_deref()),
                _ => ("write", bucket.rules.write.as_deref()),
            };
            match source {
                None => Some(format!("bucket {target} has no `{rule_name}` rule")),
                Some(source) => {
                    let rule = Rule::parse(source, BUCKET_RULE_ROOTS)
                        .map_err(|e| format!("{name}: {e}"))?;
                    let mut resource = json!({ "key": case.key.clone().unwrap_or_default() });
                    if *op != "upload"
                        && let Some(size) = case.size
                    {
                        resource["size"] = json!(size);
                    }
                    let env = Env {
                        auth: auth.as_ref(),
                        doc: None,
                        request: Request {
                            doc: None,
                            time,
                            size: match *op {
                                "upload" => case.size,
                                "remove" => Some(0),
                                _ => None,
                            },
                            id: None,
                        },
                        resource: Some(&resource),
                    };
                    match rule.evaluate(&env, &lookup) {
                        RuleVerdict::Allow => None,
                        RuleVerdict::Deny(why) => Some(why),
                        RuleVerdict::Need(path) => Some(format!("get({path:?}) found nothing")),
                    }
                }
            }
        }
    };
    Ok(CaseOutcome {
        name,
        expected: case.allow,
        allowed: denial.is_none(),
        reason: denial,
    })
}

/// An evaluation's denial, if any, with every lookup answered from the
/// documents given (any other is missing).
fn settle(documents: &Fetches, mut check: impl FnMut(&Fetches) -> Outcome) -> Option<String> {
    let mut fetched = Fetches(documents.0.clone());
    for _ in 0..=stratus_rules::MAX_LOOKUPS {
        match check(&fetched) {
            Outcome::Allowed => return None,
            Outcome::Denied(Denied(why)) => return Some(why),
            Outcome::Need(path) => {
                fetched.0.insert(path, None);
            }
        }
    }
    Some("the rule reads too many documents".into())
}
