//! Apps' document databases: collections of JSON documents, the queries,
//! aggregations and writes the store runs over them, and what each of
//! those means, written once here in Rust ([`Filter::matches`],
//! [`Update::apply`], [`compare_values`]) for every backend to agree
//! with (the conformance suite checks them against these) and for the
//! server to evaluate changes with (a watch of a query).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Number, Value};

use crate::{NewEvent, Result};

/// A document's fields: a JSON object.
pub type Body = Map<String, Value>;

/// Segments a field path may have.
pub const MAX_PATH_SEGMENTS: usize = 32;

/// How deeply objects and arrays may nest in a document.
pub const MAX_DEPTH: usize = 32;

/// One stored document.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub collection: String,
    pub id: String,
    /// 1 when it was created, one more with every write since.
    pub version: i64,
    pub body: Body,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A path to a field, its names separated by dots (`address.city`). A
/// name is never empty, holds no `.` and does not start with `$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// The path `path` names, or what is wrong with it.
    pub fn parse(path: &str) -> std::result::Result<FieldPath, String> {
        if path.is_empty() {
            return Err("a field path is empty".into());
        }
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if segments.len() > MAX_PATH_SEGMENTS {
            return Err(format!(
                "field path `{path}` has {} names; at most {MAX_PATH_SEGMENTS} are allowed",
                segments.len()
            ));
        }
        for segment in &segments {
            field_name_problem(segment)
                .map_or(Ok(()), |why| Err(format!("field path `{path}`: {why}")))?;
        }
        Ok(FieldPath(segments))
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The field's value in `body`, if it has one.
    pub fn get<'a>(&self, body: &'a Body) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = body.get(first)?;
        for name in rest {
            value = value.as_object()?.get(name)?;
        }
        Some(value)
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// What is wrong with `name` as the name of a field, if anything.
pub fn field_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("a field name is empty".into())
    } else if name.contains('\0') {
        Some(format!(
            "field name `{}` holds the character U+0000, which documents cannot hold",
            name.escape_debug()
        ))
    } else if name.contains('.') {
        Some(format!(
            "field name `{name}` holds a `.`, which separates the names of nested fields; rename it"
        ))
    } else if name.starts_with('$') {
        Some(format!(
            "field name `{name}` starts with `$`, which is reserved; rename it"
        ))
    } else {
        None
    }
}

/// What is wrong with `body` as a document, if anything: a field name
/// [`field_name_problem`] refuses (at any depth), a string holding the
/// character U+0000 (which PostgreSQL cannot keep in JSON), or nesting
/// deeper than [`MAX_DEPTH`]. The store refuses to write such a body
/// ([`WriteError::Invalid`]).
pub fn body_problem(body: &Body) -> Option<String> {
    let mut at = Vec::new();
    for (name, inner) in body {
        if let Some(why) = field_name_problem(name) {
            return Some(why);
        }
        at.push(name.clone());
        if let Some(why) = walk_all(inner, 2, &mut at) {
            return Some(why);
        }
        at.pop();
    }
    None
}

fn walk_all(value: &Value, depth: usize, at: &mut Vec<String>) -> Option<String> {
    if depth > MAX_DEPTH {
        return Some(format!(
            "the document nests deeper than {MAX_DEPTH} levels (at `{}`)",
            at.join(".")
        ));
    }
    match value {
        Value::Object(map) => {
            for (name, inner) in map {
                if let Some(why) = field_name_problem(name) {
                    return Some(format!("in `{}`: {why}", at.join(".")));
                }
                at.push(name.clone());
                if let Some(why) = walk_all(inner, depth + 1, at) {
                    return Some(why);
                }
                at.pop();
            }
            None
        }
        Value::Array(items) => items.iter().find_map(|item| walk_all(item, depth + 1, at)),
        Value::String(text) if text.contains('\0') => Some(format!(
            "`{}` holds a string with the character U+0000, which documents cannot hold",
            at.join(".")
        )),
        _ => None,
    }
}

/// Whether two JSON values are equal as the database compares them:
/// numbers by value (`1 == 1.0`), arrays and objects field by field.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => numbers_eq(a, b),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(name, a)| b.get(name).is_some_and(|b| json_eq(a, b)))
        }
        (a, b) => a == b,
    }
}

fn numbers_eq(a: &Number, b: &Number) -> bool {
    compare_numbers(a, b).is_eq()
}

/// A number as an integer, if it is one (of either sign, any size JSON
/// numbers here take).
fn integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Numbers by value, exactly: integers as integers (an `i64` and a `u64`
/// alike), an integer and a float without rounding the integer, `-0.0`
/// equal to `0.0`.
fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    match (integer(a), integer(b)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(a), None) => compare_integer_float(a, b.as_f64().unwrap_or(0.0)),
        (None, Some(b)) => compare_integer_float(b, a.as_f64().unwrap_or(0.0)).reverse(),
        // JSON has no NaN: floats always compare.
        (None, None) => {
            let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
    }
}

fn compare_integer_float(i: i128, f: f64) -> Ordering {
    let rounded = i as f64;
    match rounded.partial_cmp(&f) {
        // Equal after rounding the integer: then `f` is a whole number
        // within range of it, and the two compare exactly as integers.
        Some(Ordering::Equal) => i.cmp(&(f as i128)),
        Some(order) => order,
        None => Ordering::Equal,
    }
}

/// The order of two values of one kind: numbers by value, strings by
/// their UTF-8 bytes, `false` before `true`; `None` for two values of
/// different kinds, or of a kind without an order (arrays, objects,
/// null). Range filters compare only values a kind orders.
pub fn compare_same_kind(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => Some(compare_numbers(a, b)),
        (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// A total order of values, for sorting: by kind (null, booleans,
/// numbers, strings, then arrays and objects by their JSON text), then
/// as [`compare_same_kind`] orders. Backends agree with it within numbers,
/// strings (but see [`Documents`] on PostgreSQL's collation) and booleans,
/// and nulls tie; the order across kinds, and of arrays and objects, is
/// the backend's own.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    rank(a)
        .cmp(&rank(b))
        .then_with(|| match compare_same_kind(a, b) {
            Some(order) => order,
            None => a.to_string().cmp(&b.to_string()),
        })
}

/// How a field is compared with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    /// Its operator: `==`, `!=`, `<`, `<=`, `>`, `>=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Eq => "==",
            Comparison::Ne => "!=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }

    pub fn from_symbol(symbol: &str) -> Option<Comparison> {
        Some(match symbol {
            "==" => Comparison::Eq,
            "!=" => Comparison::Ne,
            "<" => Comparison::Lt,
            "<=" => Comparison::Le,
            ">" => Comparison::Gt,
            ">=" => Comparison::Ge,
            _ => return None,
        })
    }
}

/// Which documents a query selects.
///
/// - `Compare` with `Eq`: the field is there and equals the value
///   ([`json_eq`]); `== null` matches a field that is there and null,
///   never a missing one.
/// - `Compare` with `Ne`: the field is there and does not equal it.
/// - `Compare` with a range: the field holds a value of the same kind
///   (a number, or a string) that compares so ([`compare_same_kind`]).
/// - `In`: the field is there and equals one of the values.
/// - `Contains`: the field is an array with an element equal to it.
/// - `Exists`: whether the field is there (a null is there).
///
/// Operands of `==`, `!=`, `in` and `contains` are scalars (null,
/// booleans, numbers, strings); of ranges, numbers or strings
/// ([`Filter::problem`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        field: FieldPath,
        op: Comparison,
        value: Value,
    },
    In {
        field: FieldPath,
        values: Vec<Value>,
    },
    Contains {
        field: FieldPath,
        value: Value,
    },
    Exists {
        field: FieldPath,
        exists: bool,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

/// Values an `in` filter may list.
pub const MAX_IN_VALUES: usize = 100;

impl Filter {
    /// Whether `body` is selected.
    pub fn matches(&self, body: &Body) -> bool {
        match self {
            Filter::Compare { field, op, value } => {
                let Some(have) = field.get(body) else {
                    return false;
                };
                match op {
                    Comparison::Eq => json_eq(have, value),
                    Comparison::Ne => !json_eq(have, value),
                    range => {
                        if !matches!(value, Value::Number(_) | Value::String(_)) {
                            return false;
                        }
                        match compare_same_kind(have, value) {
                            None => false,
                            Some(order) => match range {
                                Comparison::Lt => order.is_lt(),
                                Comparison::Le => order.is_le(),
                                Comparison::Gt => order.is_gt(),
                                _ => order.is_ge(),
                            },
                        }
                    }
                }
            }
            Filter::In { field, values } => field
                .get(body)
                .is_some_and(|have| values.iter().any(|v| json_eq(have, v))),
            Filter::Contains { field, value } => field
                .get(body)
                .and_then(Value::as_array)
                .is_some_and(|items| items.iter().any(|item| json_eq(item, value))),
            Filter::Exists { field, exists } => field.get(body).is_some() == *exists,
            Filter::And(all) => all.iter().all(|f| f.matches(body)),
            Filter::Or(any) => any.iter().any(|f| f.matches(body)),
        }
    }

    /// What is wrong with the filter, if anything: an operand of a kind
    /// its operator does not take, an empty `and`/`or`/`in`, too many
    /// `in` values, a string operand holding U+0000.
    pub fn problem(&self) -> Option<String> {
        fn scalar(value: &Value) -> bool {
            !matches!(value, Value::Array(_) | Value::Object(_))
        }
        fn nul(value: &Value) -> bool {
            value.as_str().is_some_and(|s| s.contains('\0'))
        }
        let operands: &[Value] = match self {
            Filter::Compare { value, .. } | Filter::Contains { value, .. } => {
                std::slice::from_ref(value)
            }
            Filter::In { values, .. } => values,
            _ => &[],
        };
        if operands.iter().any(nul) {
            return Some(
                "a filter compares with a string holding the character U+0000, which no document holds"
                    .into(),
            );
        }
        match self {
            Filter::Compare { field, op, value } => match op {
                Comparison::Eq | Comparison::Ne if !scalar(value) => Some(format!(
                    "`{field} {}` compares with an array or object; compare its fields (`{field}.NAME`) or use `contains`",
                    op.symbol()
                )),
                Comparison::Lt | Comparison::Le | Comparison::Gt | Comparison::Ge
                    if !matches!(value, Value::Number(_) | Value::String(_)) =>
                {
                    Some(format!(
                        "`{field} {}` needs a number or a string to compare with, not {value}",
                        op.symbol()
                    ))
                }
                _ => None,
            },
            Filter::In { field, values } => {
                if values.is_empty() {
                    Some(format!("`{field} in` lists no values"))
                } else if values.len() > MAX_IN_VALUES {
                    Some(format!(
                        "`{field} in` lists {} values; at most {MAX_IN_VALUES} are allowed",
                        values.len()
                    ))
                } else if !values.iter().all(scalar) {
                    Some(format!(
                        "`{field} in` lists an array or object; list scalars only"
                    ))
                } else {
                    None
                }
            }
            Filter::Contains { field, value } if !scalar(value) => Some(format!(
                "`{field} contains` takes a scalar (null, a boolean, a number or a string)"
            )),
            Filter::Contains { .. } | Filter::Exists { .. } => None,
            Filter::And(all) | Filter::Or(all) if all.is_empty() => {
                Some("an `and` or `or` filter has no filters in it".into())
            }
            Filter::And(all) | Filter::Or(all) => all.iter().find_map(Filter::problem),
        }
    }

    /// The filter as alternatives, each a conjunction of leaf filters
    /// (its disjunctive normal form), or `None` when there would be more
    /// than `limit` alternatives.
    pub fn alternatives(&self, limit: usize) -> Option<Vec<Vec<&Filter>>> {
        match self {
            Filter::And(all) => {
                let mut out: Vec<Vec<&Filter>> = vec![Vec::new()];
                for filter in all {
                    let inner = filter.alternatives(limit)?;
                    if out.len() * inner.len() > limit {
                        return None;
                    }
                    out = out
                        .iter()
                        .flat_map(|left| {
                            inner.iter().map(move |right| {
                                let mut both = left.clone();
                                both.extend(right.iter().copied());
                                both
                            })
                        })
                        .collect();
                }
                Some(out)
            }
            Filter::Or(any) => {
                let mut out = Vec::new();
                for filter in any {
                    out.extend(filter.alternatives(limit)?);
                    if out.len() > limit {
                        return None;
                    }
                }
                Some(out)
            }
            leaf => Some(vec![vec![leaf]]),
        }
    }
}

/// One key a query sorts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub field: FieldPath,
    pub descending: bool,
}

/// Where a page ends: the sort values and the id of its last document.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// One value per [`Order`] of the query, in order.
    pub values: Vec<Value>,
    pub id: String,
}

/// A query of one collection.
///
/// Documents are sorted by `order`, then by id (ascending); a document
/// that lacks a field the query sorts by is not selected. `after` starts
/// the page after that position in this order. Without `order`, documents
/// come in the order of their ids (as bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub collection: String,
    pub filter: Option<Filter>,
    pub order: Vec<Order>,
    pub after: Option<Cursor>,
    pub limit: u32,
}

impl Query {
    /// Whether a document is selected (the filter and the sort fields),
    /// not counting `after` and `limit`.
    pub fn selects(&self, body: &Body) -> bool {
        self.order.iter().all(|o| o.field.get(body).is_some())
            && self.filter.as_ref().is_none_or(|f| f.matches(body))
    }

    /// The order of two selected documents in the query's results.
    pub fn compare(&self, a: &Document, b: &Document) -> Ordering {
        for order in &self.order {
            let (x, y) = (order.field.get(&a.body), order.field.get(&b.body));
            let by = match (x, y) {
                (Some(x), Some(y)) => compare_values(x, y),
                _ => Ordering::Equal,
            };
            let by = if order.descending { by.reverse() } else { by };
            if by.is_ne() {
                return by;
            }
        }
        a.id.as_bytes().cmp(b.id.as_bytes())
    }

    /// Where a page that ends with `last` ends.
    pub fn cursor_after(&self, last: &Document) -> Cursor {
        Cursor {
            values: self
                .order
                .iter()
                .map(|o| o.field.get(&last.body).cloned().unwrap_or(Value::Null))
                .collect(),
            id: last.id.clone(),
        }
    }
}

/// What an aggregation computes per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureOp {
    /// Documents in the group (with a field: those that have it).
    Count,
    /// The sum of the field's numbers (0 with none).
    Sum,
    /// The least of the field's numbers (null with none).
    Min,
    /// The greatest of the field's numbers (null with none).
    Max,
    /// The mean of the field's numbers (null with none).
    Avg,
}

impl MeasureOp {
    pub fn name(self) -> &'static str {
        match self {
            MeasureOp::Count => "count",
            MeasureOp::Sum => "sum",
            MeasureOp::Min => "min",
            MeasureOp::Max => "max",
            MeasureOp::Avg => "avg",
        }
    }

    pub fn from_name(name: &str) -> Option<MeasureOp> {
        Some(match name {
            "count" => MeasureOp::Count,
            "sum" => MeasureOp::Sum,
            "min" => MeasureOp::Min,
            "max" => MeasureOp::Max,
            "avg" => MeasureOp::Avg,
            _ => return None,
        })
    }
}

/// One value an aggregation computes, under `name`. Only `Count` may go
/// without a field; values of the field that are not numbers are left
/// out of the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measure {
    pub name: String,
    pub op: MeasureOp,
    pub field: Option<FieldPath>,
}

/// Counts, sums, least, greatest and mean values of the documents a
/// filter selects, in one group or grouped by a field's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregation {
    pub collection: String,
    pub filter: Option<Filter>,
    /// Documents without the field make a group of their own, keyed null.
    pub group_by: Option<FieldPath>,
    pub measures: Vec<Measure>,
}

/// Groups an aggregation may return.
pub const MAX_GROUPS: usize = 1000;

/// One group of an aggregation's answer. Groups come in the order of
/// their keys; an aggregation without `group_by` answers one group (with
/// no key) even when nothing matched. A `Sum` of integers is an integer;
/// any other sum, and every mean, a float.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub key: Option<Value>,
    pub values: Body,
}

/// The changes an update makes to a document's fields, applied in this
/// order: set, unset, increment, push, pull.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Update {
    /// Sets fields, making the objects on the way as needed.
    pub set: Vec<(FieldPath, Value)>,
    /// Removes fields (one that is not there is no error).
    pub unset: Vec<FieldPath>,
    /// Adds to numbers; a missing field starts at 0. Integers stay
    /// integers unless they overflow (an error).
    pub inc: Vec<(FieldPath, Number)>,
    /// Appends to arrays; a missing field starts empty.
    pub push: Vec<(FieldPath, Vec<Value>)>,
    /// Removes every element equal ([`json_eq`]) to one of the values.
    pub pull: Vec<(FieldPath, Vec<Value>)>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.unset.is_empty()
            && self.inc.is_empty()
            && self.push.is_empty()
            && self.pull.is_empty()
    }

    /// Applies the update to `body`, or says why it cannot be (a field
    /// on the way that is not an object, an increment of something that
    /// is not a number, a push or pull on something that is not an
    /// array). `body` is unchanged on error only if the caller applies
    /// to a copy; the store always does.
    pub fn apply(&self, body: &mut Body) -> std::result::Result<(), String> {
        for (path, value) in &self.set {
            *slot(body, path)? = value.clone();
        }
        for path in &self.unset {
            remove(body, path);
        }
        for (path, by) in &self.inc {
            let field = slot(body, path)?;
            *field =
                match &*field {
                    Value::Null => Value::Number(by.clone()),
                    Value::Number(have) => Value::Number(add(have, by).ok_or_else(|| {
                        format!("incrementing `{path}` ({have}) by {by} overflows")
                    })?),
                    other => {
                        return Err(format!(
                            "cannot increment `{path}`: it holds {}, not a number",
                            kind(other)
                        ));
                    }
                };
        }
        for (path, values) in &self.push {
            let field = slot(body, path)?;
            match field {
                Value::Null => *field = Value::Array(values.clone()),
                Value::Array(items) => items.extend(values.iter().cloned()),
                other => {
                    return Err(format!(
                        "cannot push to `{path}`: it holds {}, not an array",
                        kind(other)
                    ));
                }
            }
        }
        for (path, values) in &self.pull {
            match get_mut(body, path)? {
                None => {}
                Some(Value::Array(items)) => {
                    items.retain(|item| !values.iter().any(|v| json_eq(item, v)))
                }
                Some(other) => {
                    return Err(format!(
                        "cannot pull from `{path}`: it holds {}, not an array",
                        kind(other)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A value's kind, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn add(a: &Number, b: &Number) -> Option<Number> {
    match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => a.checked_add(b).map(Number::from),
        _ => Number::from_f64(a.as_f64()? + b.as_f64()?),
    }
}

/// The field at `path`, made (null) with the objects on the way if it is
/// not there.
fn slot<'a>(body: &'a mut Body, path: &FieldPath) -> std::result::Result<&'a mut Value, String> {
    let (last, on_the_way) = path.0.split_last().expect("a path has a name");
    let mut map = body;
    for (i, name) in on_the_way.iter().enumerate() {
        let next = map
            .entry(name.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        map = match next {
            Value::Object(inner) => inner,
            other => {
                return Err(format!(
                    "cannot set `{path}`: `{}` holds {}, not an object",
                    path.0[..=i].join("."),
                    kind(other)
                ));
            }
        };
    }
    Ok(map.entry(last.clone()).or_insert(Value::Null))
}

fn get_mut<'a>(
    body: &'a mut Body,
    path: &FieldPath,
) -> std::result::Result<Option<&'a mut Value>, String> {
    let (last, on_the_way) = path.0.split_last().expect("a path has a name");
    let mut map = body;
    for name in on_the_way {
        match map.get_mut(name) {
            Some(Value::Object(inner)) => map = inner,
            _ => return Ok(None),
        }
    }
    Ok(map.get_mut(last))
}

fn remove(body: &mut Body, path: &FieldPath) {
    let (last, on_the_way) = path.0.split_last().expect("a path has a name");
    let mut map = body;
    for name in on_the_way {
        match map.get_mut(name) {
            Some(Value::Object(inner)) => map = inner,
            _ => return,
        }
    }
    map.remove(last);
}

/// What a write does to one document.
#[derive(Debug, Clone, PartialEq)]
pub enum DocOp {
    /// Creates it; [`WriteError::Exists`] if it is there.
    Create(Body),
    /// Creates it, or replaces its fields.
    Set(Body),
    /// Changes its fields; [`WriteError::Missing`] if it is not there.
    Update(Update),
    /// Deletes it; deleting a document that is not there changes nothing
    /// (and makes no [`Change`]) unless `if_version` says otherwise.
    Delete,
}

/// A write of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocWrite {
    pub collection: String,
    pub id: String,
    pub op: DocOp,
    /// Applies only if the document's version is this one; `Some(0)`:
    /// only if it is not there. [`WriteError::Conflict`] otherwise.
    pub if_version: Option<i64>,
}

/// What a write changed in one document.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub collection: String,
    pub id: String,
    /// As it was; `None` if it was created.
    pub before: Option<Document>,
    /// As it is; `None` if it was deleted.
    pub after: Option<Document>,
}

/// Documents read inside a write's transaction for its [`WriteCheck`],
/// keyed by (collection, id): `None` for one that is not there.
pub type Fetched = BTreeMap<(String, String), Option<Document>>;

/// What a [`WriteCheck`] decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Commit, queuing these events in the same transaction.
    Commit(Vec<NewEvent>),
    /// Commit nothing: [`WriteError::Refused`] with this reason.
    Refuse(String),
    /// Read these documents (collection, id), as they are before the
    /// write, into [`Fetched`] and ask again.
    Need(Vec<(String, String)>),
}

/// Times a store asks a [`WriteCheck`] again for more documents before it
/// refuses the write.
pub const MAX_CHECK_ROUNDS: usize = 10;

/// Decides, inside a write's transaction, whether its changes commit and
/// which events they queue: a client's security rules, a size limit,
/// change triggers.
pub trait WriteCheck: Send + Sync {
    fn check(&self, app: &str, changes: &[Change], fetched: &Fetched) -> Verdict;
}

/// The changes `writes` make, in order, to `documents` (as they are before
/// the write, keyed by (collection, id); a document missing from it is
/// taken as not there), stamped `now_ms`: what [`Documents::write_documents`]
/// means, written once for every backend. A backend reads (and locks) the
/// documents the writes name, calls this, asks its [`WriteCheck`], and
/// stores the last state of each document changed.
///
/// Checks each `if_version` ([`WriteError::Conflict`], before anything
/// else), and refuses a create of a document that is there
/// ([`WriteError::Exists`]), an update of one that is not
/// ([`WriteError::Missing`]), and an update that cannot apply or a body
/// [`body_problem`] refuses ([`WriteError::Invalid`]).
pub fn apply_writes(
    writes: &[DocWrite],
    mut documents: Fetched,
    now_ms: i64,
) -> std::result::Result<Vec<Change>, WriteError> {
    let mut changes = Vec::with_capacity(writes.len());
    for w in writes {
        let key = (w.collection.clone(), w.id.clone());
        let before = documents.get(&key).cloned().flatten();
        if let Some(expected) = w.if_version {
            let found = before.as_ref().map(|d| d.version);
            let holds = if expected == 0 {
                found.is_none()
            } else {
                found == Some(expected)
            };
            if !holds {
                return Err(WriteError::Conflict {
                    collection: w.collection.clone(),
                    id: w.id.clone(),
                    expected,
                    found,
                });
            }
        }
        let next = |body: Body| Document {
            collection: w.collection.clone(),
            id: w.id.clone(),
            version: before.as_ref().map_or(1, |d| d.version + 1),
            body,
            created_ms: before.as_ref().map_or(now_ms, |d| d.created_ms),
            updated_ms: now_ms,
        };
        let invalid = |why: String| WriteError::Invalid {
            collection: w.collection.clone(),
            id: w.id.clone(),
            why,
        };
        let after = match &w.op {
            DocOp::Create(_) if before.is_some() => {
                return Err(WriteError::Exists {
                    collection: w.collection.clone(),
                    id: w.id.clone(),
                });
            }
            DocOp::Create(body) | DocOp::Set(body) => Some(next(body.clone())),
            DocOp::Update(update) => {
                let Some(have) = &before else {
                    return Err(WriteError::Missing {
                        collection: w.collection.clone(),
                        id: w.id.clone(),
                    });
                };
                let mut body = have.body.clone();
                update.apply(&mut body).map_err(invalid)?;
                Some(next(body))
            }
            DocOp::Delete if before.is_none() => continue,
            DocOp::Delete => None,
        };
        if let Some(why) = after.as_ref().and_then(|d| body_problem(&d.body)) {
            return Err(invalid(why));
        }
        documents.insert(key, after.clone());
        changes.push(Change {
            collection: w.collection.clone(),
            id: w.id.clone(),
            before,
            after,
        });
    }
    Ok(changes)
}

/// The state each document `changes` changed is left in, by (collection,
/// id): the last change of each wins.
pub fn final_states(changes: &[Change]) -> BTreeMap<(&str, &str), Option<&Document>> {
    changes
        .iter()
        .map(|c| ((c.collection.as_str(), c.id.as_str()), c.after.as_ref()))
        .collect()
}

/// A check that commits every write and queues nothing.
#[derive(Debug, Clone, Copy)]
pub struct AllowAll;

impl WriteCheck for AllowAll {
    fn check(&self, _: &str, _: &[Change], _: &Fetched) -> Verdict {
        Verdict::Commit(Vec::new())
    }
}

/// Why a write committed nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("document {collection}/{id} exists already")]
    Exists { collection: String, id: String },
    #[error("there is no document {collection}/{id}")]
    Missing { collection: String, id: String },
    #[error(
        "document {collection}/{id} is at version {}, not {expected}: it changed since it was read; read it again",
        found.map_or_else(|| "none (it is not there)".to_owned(), |v| v.to_string())
    )]
    Conflict {
        collection: String,
        id: String,
        expected: i64,
        found: Option<i64>,
    },
    #[error("cannot update {collection}/{id}: {why}")]
    Invalid {
        collection: String,
        id: String,
        why: String,
    },
    #[error("{0}")]
    Refused(String),
}

/// An index a collection declares. A `multi` index has one field, an
/// array, and serves `contains` filters on its elements; the others serve
/// equality on a prefix of their fields, then a range or order on the
/// next.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexSpec {
    pub fields: Vec<FieldPath>,
    pub multi: bool,
}

/// Fields one index may have.
pub const MAX_INDEX_FIELDS: usize = 8;

impl IndexSpec {
    /// What is wrong with the spec, if anything: no fields, too many, a
    /// field twice, or a `multi` index of more than one field. The store
    /// refuses such a spec.
    pub fn problem(&self) -> Option<String> {
        if self.fields.is_empty() {
            Some("an index has no fields".into())
        } else if self.multi && self.fields.len() > 1 {
            Some(format!(
                "a multi index has one field, an array; this one has {}",
                self.fields.len()
            ))
        } else if self.fields.len() > MAX_INDEX_FIELDS {
            Some(format!(
                "an index has {} fields; at most {MAX_INDEX_FIELDS} are allowed",
                self.fields.len()
            ))
        } else {
            self.fields
                .iter()
                .enumerate()
                .find_map(|(i, f)| self.fields[..i].contains(f).then_some(f))
                .map(|twice| format!("an index names field `{twice}` twice"))
        }
    }

    /// The spec as stores record it: `{"fields":["a.b","c"],"multi":false}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "fields": self.fields.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "multi": self.multi,
        })
        .to_string()
    }

    /// The spec [`IndexSpec::to_json`] gave, or what is wrong with it.
    pub fn from_json(text: &str) -> std::result::Result<IndexSpec, String> {
        let value: Value = serde_json::from_str(text).map_err(|err| err.to_string())?;
        let fields = value
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("index spec {text} has no fields"))?
            .iter()
            .map(|f| {
                f.as_str()
                    .ok_or_else(|| format!("index spec {text} names a field that is not a string"))
                    .and_then(FieldPath::parse)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let multi = value.get("multi").and_then(Value::as_bool).unwrap_or(false);
        Ok(IndexSpec { fields, multi })
    }

    /// The name of the database index that serves this spec for `app`'s
    /// `collection`: `docidx_` and 16 hex digits of a hash (64-bit
    /// FNV-1a, stable across builds and nodes) of the three.
    pub fn index_name(&self, app: &str, collection: &str) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [app, collection, &self.to_json()] {
            for byte in part.bytes().chain([0]) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("docidx_{hash:016x}")
    }
}

/// One app's collection, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionUsage {
    pub collection: String,
    pub documents: u64,
    /// The JSON text of their bodies.
    pub bytes: u64,
}

/// One committed change: what a watch of a query follows, on every node.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    /// Increases with every change, in the order changes are made within
    /// a write. Across writes, on PostgreSQL, a record may commit after one
    /// with a higher `seq` (nothing serialises writes' commits), so a
    /// follower that reads past a missing `seq` waits a moment for it
    /// before it moves on; on SQLite, writes commit one at a time, in
    /// `seq` order.
    pub seq: i64,
    pub app: String,
    pub collection: String,
    pub id: String,
    /// The version the document has now, or had when it was deleted.
    pub version: i64,
    /// Its fields now; `None` when it was deleted.
    pub body: Option<Body>,
    pub at_ms: i64,
}

/// The stored form of one app's document, in a [`crate::Dump`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDocument {
    pub app: String,
    pub document: Document,
}

/// The indexes one app's collection declares, in a [`crate::Dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionIndexes {
    pub app: String,
    pub collection: String,
    pub indexes: Vec<IndexSpec>,
}

/// Apps' documents.
///
/// Every backend selects exactly what [`Filter::matches`] and
/// [`Query::selects`] select, and orders as [`Query::compare`] does within
/// numbers, strings and booleans. Where they differ:
///
/// - Strings in ranges and sorts: SQLite compares their bytes (as
///   [`compare_same_kind`] does); PostgreSQL compares them by the
///   database's collation (`jsonb` has no other), which is the same only
///   for a `C` collation (or, in practice, for strings of lowercase ASCII
///   letters and digits). Equality is byte for byte on both.
/// - Values of different kinds sorted by one field, and arrays and
///   objects sorted, come in an order of the backend's own (SQLite sorts
///   `true` and `false` among the numbers as 1 and 0, and arrays and
///   objects among the strings as their JSON text; PostgreSQL sorts null,
///   strings, numbers, booleans, arrays, objects); a cursor pages through
///   them all the same, each document once. Groups of an aggregation
///   likewise.
/// - Integers beyond 64 bits of sign: SQLite compares them as floats.
/// - [`CollectionUsage::bytes`] counts the JSON text SQLite keeps
///   (compact), and on PostgreSQL `jsonb`'s text form (`octet_length(body::text)`,
///   with a space after each `:` and `,`).
#[async_trait]
pub trait Documents: Send + Sync {
    async fn get_document(&self, app: &str, collection: &str, id: &str)
    -> Result<Option<Document>>;

    /// Several documents (collection, id) at once, as of one moment, in
    /// the order asked.
    async fn get_documents(
        &self,
        app: &str,
        refs: Vec<(String, String)>,
    ) -> Result<Vec<Option<Document>>>;

    /// Up to `query.limit` documents the query selects, in its order.
    /// Refuses (an error) a filter with a [`Filter::problem`], and a cursor
    /// without one value per sort field.
    async fn query_documents(&self, app: &str, query: Query) -> Result<Vec<Document>>;

    /// The aggregation's groups (at most [`MAX_GROUPS`], the first by key).
    /// Documents whose `group_by` field is null and those without it make
    /// one group, keyed null; numbers equal by value (`1`, `1.0`) one group,
    /// keyed by either. A measure other than `Count` without a field has
    /// no numbers: a sum of 0, else null.
    async fn aggregate_documents(&self, app: &str, aggregation: Aggregation) -> Result<Vec<Group>>;

    /// How many documents `collection` holds, counting no further than
    /// `up_to` (so that the answer is cheap for a large collection).
    async fn count_documents(&self, app: &str, collection: &str, up_to: u64) -> Result<u64>;

    /// Applies `writes` in order in one transaction (a later write of the
    /// same document sees the earlier one), asking `check` about the
    /// changes before anything is written, and commits them with the
    /// events it gives and their [`ChangeRecord`]s: all of it, or nothing
    /// and the reason. A write that changes nothing (deleting a document
    /// that is not there) makes no change. Writes stamp `now_ms`.
    async fn write_documents(
        &self,
        app: &str,
        writes: Vec<DocWrite>,
        now_ms: i64,
        check: Arc<dyn WriteCheck>,
    ) -> Result<std::result::Result<Vec<Change>, WriteError>>;

    /// Makes `collection`'s indexes those given: builds the missing ones
    /// (with the documents it holds) and drops the others. Refuses (an
    /// error, having changed nothing) a spec with an [`IndexSpec::problem`].
    /// PostgreSQL builds and drops them online (`CONCURRENTLY`), outside a
    /// transaction: writes go on meanwhile.
    async fn set_indexes(&self, app: &str, collection: &str, indexes: Vec<IndexSpec>)
    -> Result<()>;

    /// The indexes each collection of `app` has, by collection.
    async fn list_indexes(&self, app: &str) -> Result<Vec<CollectionIndexes>>;

    /// The collections of `app` that hold documents, by name.
    async fn list_collections(&self, app: &str) -> Result<Vec<CollectionUsage>>;

    /// Deletes every document of a collection (queuing no events) and its
    /// indexes; how many documents went.
    async fn delete_collection(&self, app: &str, collection: &str) -> Result<u64>;

    /// Up to `limit` committed changes whose `seq` is above `after` (0 for
    /// all), by `seq`.
    async fn document_changes(&self, after: i64, limit: u32) -> Result<Vec<ChangeRecord>>;

    /// The highest `seq` given to a change so far (0 if none; perhaps of
    /// a write still in progress): where a new follower starts. Trimming
    /// the records (or deleting their app) does not move it back.
    async fn last_document_change(&self) -> Result<i64>;

    /// Forgets the changes committed before `before_ms`; how many went.
    async fn trim_document_changes(&self, before_ms: i64) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> FieldPath {
        FieldPath::parse(p).unwrap()
    }

    fn body(value: Value) -> Body {
        match value {
            Value::Object(fields) => fields,
            other => panic!("{other} is not an object"),
        }
    }

    fn cmp(field: &str, op: &str, value: Value) -> Filter {
        Filter::Compare {
            field: path(field),
            op: Comparison::from_symbol(op).unwrap(),
            value,
        }
    }

    #[test]
    fn paths_parse_and_reach_only_into_objects() {
        assert_eq!(path("a.b").segments(), ["a", "b"]);
        assert_eq!(path("a.b").to_string(), "a.b");
        for bad in ["", "a..b", ".a", "a.", "$x", "a.$b", "a\u{0}b"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad:?}");
        }
        let long = vec!["x"; MAX_PATH_SEGMENTS + 1].join(".");
        assert!(FieldPath::parse(&long).unwrap_err().contains("at most"));
        assert!(FieldPath::parse(&vec!["x"; MAX_PATH_SEGMENTS].join(".")).is_ok());

        let b = body(json!({"a": {"b": 1, "0": "o"}, "arr": ["x"], "n": null}));
        assert_eq!(path("a.b").get(&b), Some(&json!(1)));
        assert_eq!(path("a.0").get(&b), Some(&json!("o")));
        assert_eq!(path("arr.0").get(&b), None, "no indexing into arrays");
        assert_eq!(path("n").get(&b), Some(&Value::Null));
        assert_eq!(path("n.x").get(&b), None);
        assert_eq!(path("missing").get(&b), None);
    }

    #[test]
    fn bodies_with_bad_names_nul_or_deep_nesting_are_refused() {
        assert_eq!(
            body_problem(&body(json!({"a": {"b": [1, {"c": "d"}]}}))),
            None
        );
        assert!(body_problem(&body(json!({"a.b": 1}))).is_some());
        assert!(body_problem(&body(json!({"a": [{"$b": 1}]}))).is_some());
        assert!(body_problem(&body(json!({"a": {"": 1}}))).is_some());
        let nul = body_problem(&body(json!({"a": ["x", "y\u{0}"]}))).unwrap();
        assert!(nul.contains("U+0000"), "{nul}");
        assert!(body_problem(&body(json!({"a\u{0}": 1}))).is_some());
        // MAX_DEPTH levels of nesting, counting the body's own fields.
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH - 1 {
            deep = json!({ "d": deep });
        }
        assert_eq!(body_problem(&body(deep.clone())), None);
        let deeper = json!({ "d": deep });
        let why = body_problem(&body(deeper)).unwrap();
        assert!(why.contains("deeper than"), "{why}");
        let arrays = (0..MAX_DEPTH).fold(json!(1), |v, _| json!([v]));
        assert!(body_problem(&body(json!({ "a": arrays }))).is_some());
    }

    #[test]
    fn equality_is_by_value_within_a_kind() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!(-0.0), &json!(0)));
        assert!(json_eq(&json!([1, {"a": 2.0}]), &json!([1.0, {"a": 2}])));
        assert!(!json_eq(&json!([1, 2]), &json!([1, 2, 3])));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"b": 1})));
        assert!(!json_eq(&json!(true), &json!(1)));
        assert!(!json_eq(&json!("1"), &json!(1)));
        assert!(!json_eq(&json!(null), &json!(0)));
        assert!(json_eq(&json!(null), &json!(null)));
        // Integers exactly, whatever their size or sign.
        assert!(!json_eq(&json!(u64::MAX), &json!(u64::MAX - 1)));
        assert!(!json_eq(&json!(i64::MAX), &json!(1u64 << 63)));
        assert!(!json_eq(
            &json!(9_007_199_254_740_993_i64),
            &json!(9_007_199_254_740_992.0)
        ));
        assert!(json_eq(
            &json!(9_007_199_254_740_992_i64),
            &json!(9_007_199_254_740_992.0)
        ));
    }

    #[test]
    fn values_order_within_a_kind_and_by_kind() {
        use Ordering::*;
        let order = |a: Value, b: Value| compare_same_kind(&a, &b);
        assert_eq!(order(json!(1), json!(2)), Some(Less));
        assert_eq!(order(json!(2.5), json!(2)), Some(Greater));
        assert_eq!(order(json!(1), json!(1.0)), Some(Equal));
        assert_eq!(order(json!(-0.0), json!(0.0)), Some(Equal));
        assert_eq!(order(json!(-1), json!(u64::MAX)), Some(Less));
        assert_eq!(order(json!(i64::MIN), json!(-1e300)), Some(Greater));
        assert_eq!(order(json!(u64::MAX), json!(1e300)), Some(Less));
        assert_eq!(
            order(
                json!(9_007_199_254_740_993_i64),
                json!(9_007_199_254_740_992.0)
            ),
            Some(Greater),
            "an integer is not rounded to compare with a float"
        );
        assert_eq!(order(json!("Z"), json!("a")), Some(Less), "by bytes");
        assert_eq!(order(json!("é"), json!("z")), Some(Greater));
        assert_eq!(order(json!("ab"), json!("b")), Some(Less));
        assert_eq!(order(json!(false), json!(true)), Some(Less));
        assert_eq!(order(json!(1), json!("1")), None);
        assert_eq!(order(json!(true), json!(1)), None);
        assert_eq!(order(json!(null), json!(null)), None);
        assert_eq!(order(json!([1]), json!([1])), None);

        let mut all = vec![
            json!({"a": 1}),
            json!("b"),
            json!([2]),
            json!(3),
            json!(true),
            json!(null),
            json!("a"),
            json!(-1.5),
            json!(false),
            json!([1, 2]),
        ];
        all.sort_by(compare_values);
        assert_eq!(
            all,
            [
                json!(null),
                json!(false),
                json!(true),
                json!(-1.5),
                json!(3),
                json!("a"),
                json!("b"),
                json!([1, 2]),
                json!([2]),
                json!({"a": 1}),
            ]
        );
    }

    #[test]
    fn every_filter_matches_as_documented() {
        let b = body(json!({
            "i": 1, "f": 2.5, "s": "abc", "t": true, "n": null,
            "arr": [1, "x", null, [2], {"k": 1}], "o": {"k": 1}, "str": "1",
        }));
        let yes = |f: Filter| assert!(f.matches(&b), "{f:?}");
        let no = |f: Filter| assert!(!f.matches(&b), "{f:?}");
        yes(cmp("i", "==", json!(1.0)));
        no(cmp("i", "==", json!("1")));
        no(cmp("t", "==", json!(1)));
        yes(cmp("t", "==", json!(true)));
        yes(cmp("n", "==", json!(null)));
        no(cmp("missing", "==", json!(null)));
        no(cmp("str", "==", json!(1)));
        yes(cmp("i", "!=", json!(2)));
        yes(cmp("o", "!=", json!(1)));
        no(cmp("missing", "!=", json!(1)));
        yes(cmp("n", "!=", json!(0)));
        no(cmp("n", "!=", json!(null)));
        yes(cmp("i", "<", json!(2)));
        yes(cmp("i", "<=", json!(1.0)));
        no(cmp("i", "<", json!("2")));
        no(cmp("str", "<", json!(2)));
        yes(cmp("str", "<", json!("2")));
        yes(cmp("s", ">", json!("ab")));
        yes(cmp("s", ">=", json!("abc")));
        no(cmp("s", ">", json!("abc")));
        no(cmp("t", ">", json!(false)));
        no(cmp("t", ">", json!(0)));
        no(cmp("n", "<", json!(1)));
        no(cmp("o", "<", json!(1)));
        no(cmp("missing", ">", json!(0)));
        yes(cmp("f", ">", json!(2)));
        yes(cmp("o.k", "==", json!(1)));
        yes(Filter::In {
            field: path("s"),
            values: vec![json!(1), json!("abc")],
        });
        yes(Filter::In {
            field: path("n"),
            values: vec![json!(null)],
        });
        no(Filter::In {
            field: path("t"),
            values: vec![json!(1), json!("true")],
        });
        no(Filter::In {
            field: path("missing"),
            values: vec![json!(null)],
        });
        let contains = |field: &str, value: Value| Filter::Contains {
            field: path(field),
            value,
        };
        yes(contains("arr", json!(1.0)));
        yes(contains("arr", json!("x")));
        yes(contains("arr", json!(null)));
        no(contains("arr", json!(2)));
        no(contains("o", json!(1)));
        no(contains("s", json!("abc")));
        no(contains("missing", json!(null)));
        let exists = |field: &str, exists: bool| Filter::Exists {
            field: path(field),
            exists,
        };
        yes(exists("n", true));
        yes(exists("missing", false));
        yes(exists("o.k", true));
        no(exists("arr.0", true));
        yes(Filter::And(vec![
            cmp("i", "==", json!(1)),
            exists("s", true),
        ]));
        no(Filter::And(vec![
            cmp("i", "==", json!(1)),
            exists("s", false),
        ]));
        yes(Filter::Or(vec![
            cmp("i", "==", json!(2)),
            exists("s", true),
        ]));
        no(Filter::Or(vec![
            cmp("i", "==", json!(2)),
            exists("s", false),
        ]));
    }

    #[test]
    fn filters_with_operands_their_operators_do_not_take_are_refused() {
        let contains = |value: Value| Filter::Contains {
            field: path("a"),
            value,
        };
        let problems = [
            cmp("a", "==", json!([1])),
            cmp("a", "!=", json!({"b": 1})),
            cmp("a", "<", json!(true)),
            cmp("a", ">=", json!(null)),
            cmp("a", "==", json!("x\u{0}")),
            Filter::In {
                field: path("a"),
                values: Vec::new(),
            },
            Filter::In {
                field: path("a"),
                values: vec![json!(1); MAX_IN_VALUES + 1],
            },
            Filter::In {
                field: path("a"),
                values: vec![json!(1), json!([2])],
            },
            contains(json!([1])),
            contains(json!("\u{0}")),
            Filter::And(Vec::new()),
            Filter::Or(vec![cmp("a", "==", json!(1)), Filter::Or(Vec::new())]),
        ];
        for f in problems {
            assert!(f.problem().is_some(), "{f:?}");
        }
        let fine = [
            cmp("a", "==", json!(null)),
            cmp("a", "<", json!("x")),
            Filter::In {
                field: path("a"),
                values: vec![json!(1); MAX_IN_VALUES],
            },
            contains(json!(null)),
            Filter::And(vec![Filter::Or(vec![cmp("a", "!=", json!(true))])]),
        ];
        for f in fine {
            assert_eq!(f.problem(), None, "{f:?}");
        }
    }

    #[test]
    fn filters_expand_into_alternatives_up_to_a_limit() {
        let (a, b, c, d) = (
            cmp("a", "==", json!(1)),
            cmp("b", "==", json!(1)),
            cmp("c", "==", json!(1)),
            cmp("d", "==", json!(1)),
        );
        let f = Filter::And(vec![
            Filter::Or(vec![a.clone(), b.clone()]),
            Filter::Or(vec![c.clone(), d.clone()]),
        ]);
        assert_eq!(
            f.alternatives(10).unwrap(),
            vec![vec![&a, &c], vec![&a, &d], vec![&b, &c], vec![&b, &d]]
        );
        assert_eq!(f.alternatives(3), None);
        assert_eq!(a.alternatives(1).unwrap(), vec![vec![&a]]);
        let wide = Filter::Or(vec![a.clone(), b.clone(), c.clone()]);
        assert_eq!(wide.alternatives(2), None);
        // The alternatives select what the filter does.
        for value in [
            json!({"a": 1, "c": 1}),
            json!({"b": 1}),
            json!({"b": 1, "d": 1}),
        ] {
            let b = body(value);
            let any = f
                .alternatives(10)
                .unwrap()
                .iter()
                .any(|all| all.iter().all(|leaf| leaf.matches(&b)));
            assert_eq!(any, f.matches(&b));
        }
    }

    fn doc(id: &str, value: Value) -> Document {
        Document {
            collection: "c".into(),
            id: id.into(),
            version: 1,
            body: body(value),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn queries_select_documents_with_their_sort_fields_in_order() {
        let q = Query {
            collection: "c".into(),
            filter: Some(cmp("n", ">", json!(0))),
            order: vec![
                Order {
                    field: path("g"),
                    descending: false,
                },
                Order {
                    field: path("n"),
                    descending: true,
                },
            ],
            after: None,
            limit: 10,
        };
        assert!(q.selects(&body(json!({"g": null, "n": 1}))));
        assert!(!q.selects(&body(json!({"n": 1}))), "no sort field");
        assert!(!q.selects(&body(json!({"g": "x", "n": 0}))), "the filter");
        let mut docs = [
            doc("d", json!({"g": "b", "n": 1})),
            doc("a", json!({"g": "b", "n": 1.0})),
            doc("c", json!({"g": "a", "n": 1})),
            doc("b", json!({"g": "b", "n": 5})),
            doc("e", json!({"g": null, "n": 2})),
        ];
        docs.sort_by(|a, b| q.compare(a, b));
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["e", "c", "b", "a", "d"]);
        assert_eq!(
            q.cursor_after(&docs[2]),
            Cursor {
                values: vec![json!("b"), json!(5)],
                id: "b".into(),
            }
        );
        let plain = Query {
            order: Vec::new(),
            ..q
        };
        docs.sort_by(|a, b| plain.compare(a, b));
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn updates_apply_set_unset_inc_push_and_pull_in_order() {
        let mut b =
            body(json!({"a": {"b": 1}, "n": 1, "f": 1.5, "list": [1, "x", 1.0], "s": "str"}));
        let u = Update {
            set: vec![(path("a.c.d"), json!(true)), (path("gone"), json!(1))],
            unset: vec![path("gone"), path("a.b"), path("no.such.field")],
            inc: vec![
                (path("n"), 2.into()),
                (path("f"), 1.into()),
                (path("new.count"), 3.into()),
                (path("nothing"), Number::from_f64(0.5).unwrap()),
            ],
            push: vec![
                (path("list"), vec![json!(2)]),
                (path("fresh"), vec![json!("y")]),
            ],
            pull: vec![
                (path("list"), vec![json!(1)]),
                (path("absent"), vec![json!(1)]),
            ],
        };
        assert!(!u.is_empty());
        assert!(Update::default().is_empty());
        u.apply(&mut b).unwrap();
        assert_eq!(
            Value::Object(b.clone()),
            json!({
                "a": {"c": {"d": true}}, "n": 3, "f": 2.5, "list": ["x", 2],
                "s": "str", "new": {"count": 3}, "nothing": 0.5, "fresh": ["y"],
            })
        );
        assert!(b["n"].is_i64());

        let fails = |u: Update, needle: &str| {
            let mut copy = b.clone();
            let why = u.apply(&mut copy).unwrap_err();
            assert!(why.contains(needle), "{why}");
        };
        fails(
            Update {
                set: vec![(path("s.x"), json!(1))],
                ..Update::default()
            },
            "`s` holds a string, not an object",
        );
        fails(
            Update {
                inc: vec![(path("s"), 1.into())],
                ..Update::default()
            },
            "not a number",
        );
        fails(
            Update {
                inc: vec![(path("n"), i64::MAX.into())],
                ..Update::default()
            },
            "overflows",
        );
        fails(
            Update {
                push: vec![(path("s"), vec![json!(1)])],
                ..Update::default()
            },
            "not an array",
        );
        fails(
            Update {
                pull: vec![(path("a"), vec![json!(1)])],
                ..Update::default()
            },
            "holds an object, not an array",
        );
    }

    fn write(id: &str, op: DocOp, if_version: Option<i64>) -> DocWrite {
        DocWrite {
            collection: "c".into(),
            id: id.into(),
            op,
            if_version,
        }
    }

    #[test]
    fn writes_apply_in_order_with_versions_and_stamps() {
        let existing = Document {
            version: 4,
            created_ms: 5,
            updated_ms: 6,
            ..doc("x", json!({"n": 1}))
        };
        let documents = Fetched::from([
            (("c".into(), "x".into()), Some(existing.clone())),
            (("c".into(), "gone".into()), None),
        ]);
        let inc = Update {
            inc: vec![(path("n"), 1.into())],
            ..Update::default()
        };
        let changes = apply_writes(
            &[
                write("x", DocOp::Update(inc.clone()), Some(4)),
                write("x", DocOp::Update(inc.clone()), Some(5)),
                write("y", DocOp::Create(body(json!({"a": 1}))), Some(0)),
                write("y", DocOp::Set(body(json!({"b": 2}))), None),
                write("gone", DocOp::Delete, None),
                write("x", DocOp::Delete, None),
            ],
            documents.clone(),
            100,
        )
        .unwrap();
        assert_eq!(
            changes.len(),
            5,
            "a delete of what is not there is no change"
        );
        let after = |i: usize| changes[i].after.clone();
        assert_eq!(after(0).unwrap().version, 5);
        assert_eq!(changes[1].before, after(0));
        let x = after(1).unwrap();
        assert_eq!(
            (x.version, x.created_ms, x.updated_ms, x.body["n"].clone()),
            (6, 5, 100, json!(3))
        );
        let y = after(3).unwrap();
        assert_eq!((y.version, y.created_ms, y.updated_ms), (2, 100, 100));
        assert_eq!(Value::Object(y.body.clone()), json!({"b": 2}));
        assert_eq!(changes[4].before, Some(x));
        assert_eq!(changes[4].after, None);
        let last = final_states(&changes);
        assert_eq!(last.len(), 2);
        assert_eq!(last[&("c", "x")], None);
        assert_eq!(last[&("c", "y")], Some(&y));

        let err = |writes: &[DocWrite]| apply_writes(writes, documents.clone(), 1).unwrap_err();
        assert_eq!(
            err(&[write("x", DocOp::Delete, Some(3))]),
            WriteError::Conflict {
                collection: "c".into(),
                id: "x".into(),
                expected: 3,
                found: Some(4),
            }
        );
        assert_eq!(
            err(&[write("x", DocOp::Create(Body::new()), Some(0))]),
            WriteError::Conflict {
                collection: "c".into(),
                id: "x".into(),
                expected: 0,
                found: Some(4),
            }
        );
        let missing = err(&[write("new", DocOp::Delete, Some(1))]);
        assert_eq!(
            missing.to_string(),
            "document c/new is at version none (it is not there), not 1: it changed since it was read; read it again"
        );
        assert_eq!(
            err(&[write("x", DocOp::Create(Body::new()), None)]),
            WriteError::Exists {
                collection: "c".into(),
                id: "x".into(),
            }
        );
        assert_eq!(
            err(&[write("new", DocOp::Update(inc.clone()), None)]),
            WriteError::Missing {
                collection: "c".into(),
                id: "new".into(),
            }
        );
        // Missing from what was read: not there.
        assert_eq!(
            err(&[write("unread", DocOp::Update(inc), None)]),
            WriteError::Missing {
                collection: "c".into(),
                id: "unread".into(),
            }
        );
        assert!(matches!(
            err(&[write("x", DocOp::Set(body(json!({"$bad": 1}))), None)]),
            WriteError::Invalid { .. }
        ));
        assert!(matches!(
            err(&[write(
                "x",
                DocOp::Update(Update {
                    push: vec![(path("n"), vec![json!(1)])],
                    ..Update::default()
                }),
                None
            )]),
            WriteError::Invalid { .. }
        ));
    }

    #[test]
    fn index_specs_are_checked_recorded_and_named_stably() {
        let spec = IndexSpec {
            fields: vec![path("a.b"), path("it's")],
            multi: false,
        };
        assert_eq!(spec.problem(), None);
        assert_eq!(spec.to_json(), r#"{"fields":["a.b","it's"],"multi":false}"#);
        assert_eq!(IndexSpec::from_json(&spec.to_json()).unwrap(), spec);
        assert!(IndexSpec::from_json(r#"{"fields":["a..b"]}"#).is_err());
        assert!(IndexSpec::from_json(r#"{"multi":true}"#).is_err());
        let name = spec.index_name("app", "people");
        // Stable across builds and nodes: a store finds its indexes by it.
        assert_eq!(name, "docidx_aaaff1b62ab9e820");
        assert!(name.len() <= 63 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let multi = IndexSpec {
            multi: true,
            ..spec.clone()
        };
        assert_ne!(multi.index_name("app", "people"), name);
        assert_ne!(spec.index_name("app", "peoples"), name);
        assert_ne!(spec.index_name("ap", "ppeople"), name);
        assert!(multi.problem().unwrap().contains("one field"));
        let single = IndexSpec {
            fields: vec![path("tags")],
            multi: true,
        };
        assert_eq!(single.problem(), None);
        assert!(
            IndexSpec {
                fields: Vec::new(),
                multi: false
            }
            .problem()
            .is_some()
        );
        let twice = IndexSpec {
            fields: vec![path("a"), path("b"), path("a")],
            multi: false,
        };
        assert!(twice.problem().unwrap().contains("twice"));
        let many = IndexSpec {
            fields: (0..=MAX_INDEX_FIELDS)
                .map(|i| path(&format!("f{i}")))
                .collect(),
            multi: false,
        };
        assert!(many.problem().is_some());
    }

    #[test]
    fn operators_and_measures_round_trip_their_names() {
        for op in [
            Comparison::Eq,
            Comparison::Ne,
            Comparison::Lt,
            Comparison::Le,
            Comparison::Gt,
            Comparison::Ge,
        ] {
            assert_eq!(Comparison::from_symbol(op.symbol()), Some(op));
        }
        assert_eq!(Comparison::from_symbol("="), None);
        for op in [
            MeasureOp::Count,
            MeasureOp::Sum,
            MeasureOp::Min,
            MeasureOp::Max,
            MeasureOp::Avg,
        ] {
            assert_eq!(MeasureOp::from_name(op.name()), Some(op));
        }
        assert_eq!(MeasureOp::from_name("median"), None);
        assert_eq!(kind(&json!([])), "an array");
    }
}
