//! Security rules for an app's document collections and file buckets: a
//! small expression language, written in the app's manifest, that the
//! server evaluates for every client read and write.
//!
//! ```text
//! read:   "auth.uid == doc.owner"
//! create: "auth != null && request.doc.owner == auth.uid && size(request.doc.title) <= 200"
//! update: "auth.uid == doc.owner && !changed('owner')"
//! delete: "auth.uid == doc.owner || get('admins/' + auth.uid) != null"
//! bucket read:  "resource.key.starts_with('public/')"
//! bucket write: "auth != null && request.size < 1048576 && starts_with(resource.key, 'users/' + auth.uid + '/')"
//! ```
//!
//! A rule is parsed once ([`Rule::parse`], at deploy time: its errors are
//! meant for the app's author) and evaluated many times
//! ([`Rule::evaluate`]), synchronously and without side effects. The
//! crate only evaluates: where there is no rule, denying is the caller's
//! default. Only [`Verdict::Allow`] allows.
//!
//! # The language
//!
//! An expression, whose value must be `true` for the operation to be
//! allowed. There are no statements, assignments, loops, recursion or
//! user-defined functions: every expression is evaluated at most once per
//! evaluation, so the time a rule takes is bounded by its size and the
//! [bounds](#bounds) below.
//!
//! ## Values
//!
//! The values are JSON's: `null`, bools, numbers, strings, lists and maps.
//!
//! - Literals: `null`, `true`, `false`; numbers `12`, `-3`, `2.5`, `1e3`
//!   (integers are exact 64-bit, anything else a double; `1 == 1.0`);
//!   strings in `'…'` or `"…"` with the escapes `\\` `\'` `\"` `\n` `\r`
//!   `\t` and `\uXXXX` (a surrogate pair as two of them); lists `[a, b]`;
//!   maps `{'k': v}` whose keys are strings (any expression giving a
//!   string; a key given twice is an error). A trailing comma is allowed
//!   in lists and maps.
//! - Whitespace (spaces, tabs, newlines) separates tokens and is
//!   otherwise ignored. There are no comments.
//!
//! ## Variables
//!
//! Each kind of rule may use some of these ([`COLLECTION_ROOTS`],
//! [`BUCKET_ROOTS`]); any other name is refused when the rule is parsed,
//! with a message naming what the rule may use.
//!
//! - `auth`: `null` when the client is signed out, else a map
//!   (`uid`, `provider`, `claims`, … as the caller supplies it).
//! - `doc`: the stored document's body, `null` when there is none (a
//!   create, or a read of a missing document).
//! - `request`: a map with `doc` (the document as it would be after the
//!   write; `null` when the operation carries none, as for reads and
//!   deletes), `time` (milliseconds since the Unix epoch) and, when the
//!   caller gives them, `size` (buckets: an upload's size in bytes) and
//!   `id` (the id of the one document read or written: `profiles/{uid}`
//!   may be written by `uid` alone with `request.id == auth.uid`).
//! - `resource`: for buckets, the object: a map with `key`, `size`, … as
//!   the caller supplies it; `null` when the caller gives none.
//!
//! ## Operators
//!
//! From the loosest to the tightest binding:
//!
//! | operators | meaning |
//! |---|---|
//! | `c ? a : b` | `a` if `c` is true, `b` if false; `c` must be a bool (right-associative) |
//! | `a \|\| b` | or |
//! | `a && b` | and |
//! | `== != < <= > >= in` | comparisons; they do not chain (`a < b < c` is refused) |
//! | `+ -` | `+` adds numbers and joins two strings or two lists |
//! | `* / %` | `/` is exact when two integers divide evenly, else a decimal (`7 / 2 == 3.5`); `%` keeps the dividend's sign |
//! | `!x  -x` | not (of a bool), minus (of a number) |
//! | `a.b  a[i]  a.f(…)` | a map's field, a list's element or a map's field by key, a method call |
//!
//! - `==` and `!=` compare any two values deeply: numbers by value, lists
//!   element by element, maps by keys and values. Values of different
//!   types are simply unequal (`1 == '1'` is false).
//! - `< <= > >=` order two numbers or two strings (strings by Unicode
//!   code point); anything else is an error.
//! - `x in c` is true when `x` is an element of the list `c` (by `==`), a
//!   key of the map `c`, or a substring of the string `c`.
//! - Arithmetic is on numbers only; integer overflow, division (or `%`)
//!   by zero and results beyond a double's range are errors.
//!
//! ## Functions
//!
//! Called as `f(x, …)`, or, except `changed`, `get` and `exists`, as a
//! method on their first argument: `x.f(…)` (`doc.title.size()`,
//! `resource.key.starts_with('public/')`). An unknown function, or a call
//! with the wrong number of arguments, is refused at parse time.
//!
//! | function | gives |
//! |---|---|
//! | `size(x)` | the characters in a string, the elements of a list, the keys of a map |
//! | `changed(path)` | whether `request.doc` and `doc` differ at a dotted field path (`'owner'`, `'address.city'`); a field present on one side only has changed, absent on both has not. Meant for update rules (on a create, every field of `request.doc` has changed) |
//! | `get(path)` | the stored body of the document at `'collection/id'`, `null` when there is none |
//! | `exists(path)` | whether there is a document at `'collection/id'` |
//! | `starts_with(s, p)`, `ends_with(s, p)` | whether string `s` starts (ends) with `p` |
//! | `contains(c, x)` | `x in c` |
//! | `lower(s)`, `upper(s)` | the string in lower (upper) case |
//! | `type(x)` | `'null'`, `'bool'`, `'number'`, `'string'`, `'list'` or `'map'` |
//! | `has(m, key)` | whether map `m` has the key |
//! | `keys(m)` | a map's keys, as a list, in the map's own order |
//! | `int(x)` | a number truncated toward zero, or a string of an integer (`'42'`) read |
//! | `string(x)` | a string as is; numbers as `5`, `2.5`; `true`, `false`, `null`; lists and maps as compact JSON |
//!
//! ## Errors
//!
//! Reading a field a map does not have, a field of `null` or of a
//! non-map, an index out of range, a type mismatch, division by zero:
//! these are errors, and a rule that ends in an error denies, with the
//! error as the reason. The logical operators absorb errors as CEL's do:
//! `a || b` is true if either side is true, even if the other errored,
//! and `a && b` is false if either side is false, even if the other
//! errored; otherwise the error propagates. So `has(doc, 'x') && doc.x ==
//! 1` and `doc.x == 1` both deny a document without `x`, and
//! `doc.public == true || auth.uid == doc.owner` allows a public document
//! for a signed-out client. `!`, `?:` and every other operator propagate
//! errors. A rule whose value is anything but the bool `true` denies, and
//! the reason says why: the error, `` `auth != null` is false `` (naming
//! the conjunct that failed when the rule is a chain of `&&`), or what it
//! gave instead of a bool.
//!
//! ## Lookups
//!
//! `get()` and `exists()` read other documents through a [`Lookup`] the
//! caller supplies. Evaluation stays synchronous: a lookup answers from
//! what the caller has at hand, and a path it has not fetched
//! ([`Looked::NotFetched`]) makes the evaluation give [`Verdict::Need`]
//! with that path. The caller fetches the document (asynchronously, or
//! inside its transaction) and evaluates again with it. A needed fetch is
//! absorbed like an error: `auth.uid == doc.owner || get(…) != null`
//! allows the owner without a fetch, and a `&&` with a false side needs
//! none. Paths are exactly `'collection/id'`, both non-empty; anything
//! else is an error. Within one evaluation the same path is looked up
//! once. A caller that keeps what it fetched between rounds needs at most
//! [`MAX_LOOKUPS`] rounds of fetching.
//!
//! ## Query implication
//!
//! A client's query (a list of documents) is allowed only when its
//! filters imply the read rule for every document it could return:
//! [`Rule::implied`] evaluates the rule with `doc` partly known, from the
//! query's `field == v` and `field in [v1, v2, …]` filters. A read of a
//! field the query fixes gives the query's value (`doc.address.city` is
//! known when `address.city` is fixed, and so is the whole of
//! `doc.address` when `address` is); a read of any other field, or of
//! `doc` as a whole, is unknown. Logic is then three-valued: `unknown ||
//! true` is true, `unknown && false` is false, and anything else with an
//! unknown is unknown. The rule must come out true for every combination
//! of the fixed values (only fields the rule reads count); an unknown at
//! the end denies, naming the field the query must filter on.
//!
//! # Bounds
//!
//! A hostile rule (or document) cannot run for long or take much memory:
//!
//! - A rule's source is at most [`MAX_SOURCE_BYTES`] bytes, and its
//!   expressions nest at most [`MAX_DEPTH`] levels deep (parentheses,
//!   lists, calls, operators on operators; a chain of `&&` or `||` counts
//!   as one level). Both are refused at parse time, which never recurses
//!   deeper than that.
//! - Evaluation has a budget of [`MAX_STEPS`] steps: one per expression
//!   evaluated, plus one per 256 bytes or 16 elements built-in functions
//!   and comparisons go through.
//! - Strings built with `+`, `lower`, `upper` and `string`, and lists
//!   built with `+`, hold at most [`MAX_BUILT`] bytes (elements).
//! - One evaluation reads at most [`MAX_LOOKUPS`] distinct documents with
//!   `get()` and `exists()`.
//! - Query implication checks at most [`MAX_COMBINATIONS`] combinations.
//!
//! Exceeding a bound denies, with a reason naming the bound; unlike an
//! error, it is never absorbed by `||` or `&&`. Values nested more than
//! 128 levels deep (deeper than `serde_json` parses) cannot be compared
//! or converted: an error.
//!
//! Parsing and evaluation recurse only as deep as a rule nests, so their
//! stack use is bounded too: at the deepest rule, about 64 KiB in an
//! optimized build and 256 KiB in a debug build.
//!
//! # Example
//!
//! ```
//! use serde_json::json;
//! use stratus_rules::{COLLECTION_ROOTS, Env, NoLookup, Request, Rule, Verdict};
//!
//! let rule = Rule::parse("auth.uid == doc.owner && !changed('owner')", COLLECTION_ROOTS)?;
//! let auth = json!({"uid": "alice"});
//! let stored = json!({"owner": "alice", "title": "Old"});
//! let incoming = json!({"owner": "alice", "title": "New"});
//! let env = Env {
//!     auth: Some(&auth),
//!     doc: Some(&stored),
//!     request: Request { doc: Some(&incoming), time: 1_700_000_000_000, size: None, id: None },
//!     resource: None,
//! };
//! assert_eq!(rule.evaluate(&env, &NoLookup), Verdict::Allow);
//! # Ok::<(), stratus_rules::ParseError>(())
//! ```

mod eval;
mod lex;
mod parse;
mod value;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;

/// The variables a collection rule may use.
pub const COLLECTION_ROOTS: &[&str] = &["auth", "doc", "request"];
/// The variables a bucket rule may use.
pub const BUCKET_ROOTS: &[&str] = &["auth", "resource", "request"];

/// The longest rule source, in bytes.
pub const MAX_SOURCE_BYTES: usize = 4096;
/// How deep a rule's expressions may nest.
pub const MAX_DEPTH: usize = 64;
/// An evaluation's budget, in steps.
pub const MAX_STEPS: usize = 10_000;
/// The most bytes a built string, or elements a built list, may hold.
pub const MAX_BUILT: usize = 65_536;
/// The most distinct documents one evaluation may read with `get()` and
/// `exists()` (for [`Rule::implied`]: all its combinations together).
pub const MAX_LOOKUPS: usize = 10;
/// The most combinations of fixed values [`Rule::implied`] checks.
pub const MAX_COMBINATIONS: usize = 100;

/// A parsed rule. Cheap to evaluate; `Send` and `Sync`.
#[derive(Clone, Debug)]
pub struct Rule {
    source: String,
    expr: parse::Expr,
}

impl Rule {
    /// Parses a rule that may use the variables `roots` (of `auth`, `doc`,
    /// `request`, `resource`; usually [`COLLECTION_ROOTS`] or
    /// [`BUCKET_ROOTS`]; other names are ignored). The error is meant for
    /// the rule's author, at deploy time.
    pub fn parse(source: &str, roots: &[&str]) -> Result<Rule, ParseError> {
        let expr = parse::parse(source, roots)?;
        Ok(Rule {
            source: source.to_owned(),
            expr,
        })
    }

    /// The rule as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the rule for one operation.
    pub fn evaluate(&self, env: &Env<'_>, lookup: &dyn Lookup) -> Verdict {
        eval::evaluate(&self.source, &self.expr, *env, lookup)
    }

    /// Whether a query's filters imply the rule for every document the
    /// query can return (see [the crate docs](crate#query-implication)).
    ///
    /// `fixed` maps dotted field paths (`owner`, `address.city`) to the
    /// values the query allows there: one for `field == v`, several for
    /// `field in [v1, v2, …]`. `env.doc` is ignored. An empty list of
    /// values denies.
    ///
    /// The caller's query engine must match `field == v` only for
    /// documents that have the field and hold `v` there (by this crate's
    /// equality: `1 == 1.0`), and must return nothing else: a filter on
    /// `x == null` must not match documents without `x`.
    ///
    /// The step budget applies to each combination; the lookup cap to all
    /// of them together. A [`Verdict::Need`] asks, as for `evaluate`, for
    /// a document to be fetched before calling again.
    pub fn implied(
        &self,
        env: &Env<'_>,
        fixed: &BTreeMap<String, Vec<Value>>,
        lookup: &dyn Lookup,
    ) -> Verdict {
        eval::implied(&self.source, &self.expr, *env, fixed, lookup)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// What a rule is evaluated against, all borrowed from the caller.
#[derive(Clone, Copy, Debug, Default)]
pub struct Env<'a> {
    /// The signed-in client (`uid`, `provider`, `claims`, …); `None` (or
    /// JSON null) when signed out.
    pub auth: Option<&'a Value>,
    /// The stored document's body; `None` when there is none.
    pub doc: Option<&'a Value>,
    /// The operation.
    pub request: Request<'a>,
    /// For buckets, the object (`key`, `size`, …); `None` elsewhere.
    pub resource: Option<&'a Value>,
}

/// The `request` variable.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// `request.doc`: the document as it would be after the write; `None`
    /// (`null`) when the operation carries none.
    pub doc: Option<&'a Value>,
    /// `request.time`: milliseconds since the Unix epoch.
    pub time: i64,
    /// `request.size`: for uploads, the size in bytes; when `None`,
    /// `request` has no `size` field.
    pub size: Option<u64>,
    /// `request.id`: the id of the document read or written (its path's
    /// last part); when `None` (a query), `request` has no `id` field.
    pub id: Option<&'a str>,
}

/// A rule's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Denied, with the reason, readable by the app's author.
    Deny(String),
    /// The document at this path (`collection/id`) must be fetched and
    /// the rule evaluated again with it.
    Need(String),
}

impl Verdict {
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// Reads other documents for `get()` and `exists()`.
pub trait Lookup {
    /// The document at `path` (always `collection/id`, both non-empty).
    fn lookup(&self, path: &str) -> Looked<'_>;
}

/// What a [`Lookup`] knows of a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Looked<'a> {
    /// The document's body: borrowed (no copy is made) or owned.
    Found(Cow<'a, Value>),
    /// There is no such document.
    Missing,
    /// Not fetched yet: evaluation gives [`Verdict::Need`] for it.
    NotFetched,
}

/// A lookup that has fetched nothing: `get()` and `exists()` give
/// [`Verdict::Need`].
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLookup;

impl Lookup for NoLookup {
    fn lookup(&self, _: &str) -> Looked<'_> {
        Looked::NotFetched
    }
}

/// Fetched documents by path: `Some(body)` found, `None` known missing;
/// a path not in the map is not fetched.
impl Lookup for HashMap<String, Option<Value>> {
    fn lookup(&self, path: &str) -> Looked<'_> {
        looked(self.get(path))
    }
}

/// As for `HashMap`.
impl Lookup for BTreeMap<String, Option<Value>> {
    fn lookup(&self, path: &str) -> Looked<'_> {
        looked(self.get(path))
    }
}

fn looked(entry: Option<&Option<Value>>) -> Looked<'_> {
    match entry {
        Some(Some(v)) => Looked::Found(Cow::Borrowed(v)),
        Some(None) => Looked::Missing,
        None => Looked::NotFetched,
    }
}

/// A closure answering owned values, e.g. from a synchronous read.
impl<F> Lookup for F
where
    F: Fn(&str) -> Looked<'static>,
{
    fn lookup(&self, path: &str) -> Looked<'_> {
        self(path)
    }
}

/// Why a rule did not parse: a message for the rule's author, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    message: String,
    offset: usize,
    line: usize,
    column: usize,
}

impl ParseError {
    fn new(src: &str, offset: usize, message: impl Into<String>) -> ParseError {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &src[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        ParseError {
            message: message.into(),
            offset,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The byte offset in the source where it is wrong.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The line (from 1) of [`offset`](Self::offset).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column (from 1, in characters) of [`offset`](Self::offset).
    pub fn column(&self) -> usize {
        self.column
    }
}

/// `column 12: expected ')' after the arguments of size(…)`, with the
/// line first when the rule has several.
impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 1 {
            write!(f, "line {}, ", self.line)?;
        }
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ParseError {}
