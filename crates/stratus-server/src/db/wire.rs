//! The document API's JSON: what functions, people (`stratus db`) and
//! clients send, read into the store's model, and the documents it
//! answers with. One form for every caller:
//!
//! - A document: `{"id", "version", "created_ms", "updated_ms", "data"}`.
//! - A filter (`where`): a condition `["FIELD", "OP", VALUE]` (OP one of
//!   `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `contains`, `exists`), a list
//!   of filters (all of them), or `{"and": [...]}` / `{"or": [...]}`.
//! - An order (`order_by`): a list of `"FIELD"` or `["FIELD", "asc"|"desc"]`.
//! - A page: `limit`, and `after`, the `next` token of the page before.
//! - An update: `{"set": {PATH: V}, "unset": [PATH], "inc": {PATH: N},
//!   "push": {PATH: [V, ...]}, "pull": {PATH: [V, ...]}}`.

use base64::Engine;
use serde_json::{Map, Value, json};
use stratus_store::documents::{
    Aggregation, Body, Comparison, Cursor, DocOp, DocWrite, Document, FieldPath, Filter, Group,
    Measure, MeasureOp, Order, Update, body_problem,
};

/// Filters one query may nest, and conditions it may hold in all.
const MAX_FILTER_DEPTH: usize = 8;
const MAX_CONDITIONS: usize = 64;
/// Alternatives a filter's `or`s may make (its disjunctive normal form).
pub(crate) const MAX_ALTERNATIVES: usize = 32;
/// Keys a query may sort by.
const MAX_ORDER: usize = 8;
/// The longest document id.
pub(crate) const MAX_ID_BYTES: usize = 128;

/// A request the API cannot take, and why, for a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(why: String) -> Invalid {
        Invalid(why)
    }
}

type Result<T> = std::result::Result<T, Invalid>;

/// The JSON form of a document.
pub(crate) fn document(doc: &Document) -> Value {
    json!({
        "id": doc.id,
        "version": doc.version,
        "created_ms": doc.created_ms,
        "updated_ms": doc.updated_ms,
        "data": doc.body,
    })
}

/// A document with only the fields `select` names (all when `None`).
pub(crate) fn projected(doc: &Document, select: Option<&[FieldPath]>) -> Value {
    let Some(select) = select else {
        return document(doc);
    };
    let mut data = Map::new();
    for path in select {
        if let Some(value) = path.get(&doc.body) {
            put_path(&mut data, path.segments(), value.clone());
        }
    }
    json!({
        "id": doc.id,
        "version": doc.version,
        "created_ms": doc.created_ms,
        "updated_ms": doc.updated_ms,
        "data": data,
    })
}

fn put_path(map: &mut Map<String, Value>, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let inner = map
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = inner {
                put_path(inner, rest, value);
            }
        }
    }
}

/// What is wrong with `id` as a document id, if anything: 1 to 128 bytes,
/// no `/` or control characters, not `.` or `..`, not starting with `_`
/// (the API's own words, such as `_query`, start so).
pub(crate) fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        Some(format!(
            "a document id has 1 to {MAX_ID_BYTES} bytes; {id:?} has {}",
            id.len()
        ))
    } else if id.contains('/') || id.chars().any(char::is_control) {
        Some(format!(
            "document id {id:?} holds a `/` or a control character"
        ))
    } else if id == "." || id == ".." {
        Some(format!("{id:?} is not a document id"))
    } else if id.starts_with('_') {
        Some(format!(
            "document id {id:?} starts with `_`, which the API keeps for itself"
        ))
    } else {
        None
    }
}

/// A new document id: 20 letters and digits, random.
pub(crate) fn new_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the system has randomness");
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// Checks a collection name.
pub(crate) fn collection(name: &str) -> Result<String> {
    match stratus_manifest::collections::collection_name_problem(name) {
        Some(why) => Err(Invalid(why)),
        None => Ok(name.to_owned()),
    }
}

/// Checks a document id.
pub(crate) fn id(id: &str) -> Result<String> {
    match id_problem(id) {
        Some(why) => Err(Invalid(why)),
        None => Ok(id.to_owned()),
    }
}

fn path(text: &str) -> Result<FieldPath> {
    FieldPath::parse(text).map_err(Invalid)
}

/// A document's fields, as sent: an object whose names are allowed.
pub(crate) fn body(value: Value) -> Result<Body> {
    match value {
        Value::Object(body) => {
            if let Some(why) = body_problem(&body) {
                return Err(Invalid(why));
            }
            Ok(body)
        }
        other => Err(Invalid(format!(
            "a document is a JSON object of fields, not {}",
            stratus_store::documents::kind(&other)
        ))),
    }
}

/// A filter (`where`), or `None` for `null`.
pub(crate) fn filter(value: &Value) -> Result<Option<Filter>> {
    if value.is_null() {
        return Ok(None);
    }
    let mut conditions = 0;
    let filter = filter_at(value, 0, &mut conditions)?;
    if let Some(why) = filter.problem() {
        return Err(Invalid(why));
    }
    if filter.alternatives(MAX_ALTERNATIVES).is_none() {
        return Err(Invalid(format!(
            "the filter's `or`s make more than {MAX_ALTERNATIVES} alternatives; simplify it"
        )));
    }
    Ok(Some(filter))
}

fn filter_at(value: &Value, depth: usize, conditions: &mut usize) -> Result<Filter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(Invalid(format!(
            "the filter nests deeper than {MAX_FILTER_DEPTH} levels"
        )));
    }
    match value {
        Value::Array(items) if is_condition(items) => condition(items, conditions),
        Value::Array(items) => Ok(Filter::And(
            items
                .iter()
                .map(|item| filter_at(item, depth + 1, conditions))
                .collect::<Result<_>>()?,
        )),
        Value::Object(map) if map.len() == 1 => {
            let (word, inner) = map.iter().next().expect("one entry");
            let Value::Array(items) = inner else {
                return Err(Invalid(format!("`{word}` takes a list of filters")));
            };
            let all = items
                .iter()
                .map(|item| filter_at(item, depth + 1, conditions))
                .collect::<Result<Vec<_>>>()?;
            match word.as_str() {
                "and" => Ok(Filter::And(all)),
                "or" => Ok(Filter::Or(all)),
                other => Err(Invalid(format!(
                    "unknown filter `{other}`; a filter is [FIELD, OP, VALUE], a list of filters, or {{\"and\": [...]}} / {{\"or\": [...]}}"
                ))),
            }
        }
        _ => Err(Invalid(format!(
            "cannot read {value} as a filter; a filter is [FIELD, OP, VALUE], a list of filters, or {{\"and\": [...]}} / {{\"or\": [...]}}"
        ))),
    }
}

/// Whether a list is one condition (`[FIELD, OP, VALUE]`) rather than a
/// list of filters.
fn is_condition(items: &[Value]) -> bool {
    items.len() == 3 && items[0].is_string() && items[1].is_string()
}

fn condition(items: &[Value], conditions: &mut usize) -> Result<Filter> {
    *conditions += 1;
    if *conditions > MAX_CONDITIONS {
        return Err(Invalid(format!(
            "the filter has more than {MAX_CONDITIONS} conditions"
        )));
    }
    let field = path(items[0].as_str().expect("checked"))?;
    let op = items[1].as_str().expect("checked");
    let value = items[2].clone();
    Ok(match op {
        "in" => match value {
            Value::Array(values) => Filter::In { field, values },
            other => {
                return Err(Invalid(format!(
                    "`{field} in` takes a list of values, not {other}"
                )));
            }
        },
        "contains" => Filter::Contains { field, value },
        "exists" => match value {
            Value::Bool(exists) => Filter::Exists { field, exists },
            other => {
                return Err(Invalid(format!(
                    "`{field} exists` takes true or false, not {other}"
                )));
            }
        },
        symbol => match Comparison::from_symbol(symbol) {
            Some(op) => Filter::Compare { field, op, value },
            None => {
                return Err(Invalid(format!(
                    "unknown operator {symbol:?}; use ==, !=, <, <=, >, >=, in, contains or exists"
                )));
            }
        },
    })
}

/// An order (`order_by`).
pub(crate) fn order(value: &Value) -> Result<Vec<Order>> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::String(_) => std::slice::from_ref(value),
        Value::Array(items) => items.as_slice(),
        other => {
            return Err(Invalid(format!(
                "cannot read {other} as an order; give a list of \"FIELD\" or [\"FIELD\", \"desc\"]"
            )));
        }
    };
    // `["created_at", "desc"]` alone is one key, not two.
    let items: Vec<Value> = if items.len() == 2
        && items[1]
            .as_str()
            .is_some_and(|d| d.eq_ignore_ascii_case("asc") || d.eq_ignore_ascii_case("desc"))
    {
        vec![Value::Array(items.to_vec())]
    } else {
        items.to_vec()
    };
    if items.len() > MAX_ORDER {
        return Err(Invalid(format!(
            "a query sorts by at most {MAX_ORDER} fields"
        )));
    }
    let mut order = Vec::new();
    for item in &items {
        let (field, direction) = match item {
            Value::String(field) => (field.as_str(), "asc"),
            Value::Array(pair) if pair.len() == 2 => match (&pair[0], &pair[1]) {
                (Value::String(field), Value::String(direction)) => {
                    (field.as_str(), direction.as_str())
                }
                _ => return Err(Invalid(format!("cannot read {item} as a sort key"))),
            },
            _ => return Err(Invalid(format!("cannot read {item} as a sort key"))),
        };
        let descending = match direction.to_ascii_lowercase().as_str() {
            "asc" => false,
            "desc" => true,
            other => {
                return Err(Invalid(format!(
                    "unknown direction {other:?}; use \"asc\" or \"desc\""
                )));
            }
        };
        order.push(Order {
            field: path(field)?,
            descending,
        });
    }
    Ok(order)
}

/// The `next` token of a page that ended at `cursor`.
pub(crate) fn cursor_token(cursor: &Cursor) -> String {
    let json = json!({ "v": cursor.values, "id": cursor.id });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
}

/// A `next` token read back, for a query sorted by `order`.
pub(crate) fn cursor(token: &str, order: &[Order]) -> Result<Cursor> {
    let bad = || {
        Invalid(
            "`after` is not a `next` token of this query; pass back the `next` the last page gave"
                .into(),
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let values = value["v"].as_array().ok_or_else(bad)?.clone();
    let id = value["id"].as_str().ok_or_else(bad)?.to_owned();
    if values.len() != order.len() {
        return Err(bad());
    }
    Ok(Cursor { values, id })
}

/// Field paths to keep (`select`).
pub(crate) fn select(value: &Value) -> Result<Option<Vec<FieldPath>>> {
    match value {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(p) => path(p),
                other => Err(Invalid(format!("cannot read {other} as a field to select"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        other => Err(Invalid(format!(
            "`select` is a list of field paths, not {other}"
        ))),
    }
}

/// An update (`PATCH`'s body, or a transaction's `update`).
pub(crate) fn update(value: &Value) -> Result<Update> {
    let Value::Object(map) = value else {
        return Err(Invalid(
            "an update is an object of `set`, `unset`, `inc`, `push` and `pull`".into(),
        ));
    };
    let mut update = Update::default();
    for (word, inner) in map {
        match word.as_str() {
            "set" => {
                for (p, v) in fields(word, inner)? {
                    if let Value::Object(body) = &v
                        && let Some(why) = body_problem(body)
                    {
                        return Err(Invalid(format!("in `set.{p}`: {why}")));
                    }
                    update.set.push((path(p)?, v.clone()));
                }
            }
            "unset" => {
                let Value::Array(items) = inner else {
                    return Err(Invalid("`unset` is a list of field paths".into()));
                };
                for item in items {
                    let Some(p) = item.as_str() else {
                        return Err(Invalid("`unset` is a list of field paths".into()));
                    };
                    update.unset.push(path(p)?);
                }
            }
            "inc" => {
                for (p, v) in fields(word, inner)? {
                    let Value::Number(n) = v else {
                        return Err(Invalid(format!("`inc.{p}` is {v}, not a number")));
                    };
                    update.inc.push((path(p)?, n.clone()));
                }
            }
            "push" | "pull" => {
                for (p, v) in fields(word, inner)? {
                    let Value::Array(values) = v else {
                        return Err(Invalid(format!(
                            "`{word}.{p}` is a list of the values to {word}"
                        )));
                    };
                    let entry = (path(p)?, values.clone());
                    if word == "push" {
                        update.push.push(entry);
                    } else {
                        update.pull.push(entry);
                    }
                }
            }
            "if_version" => {}
            other => {
                return Err(Invalid(format!(
                    "unknown update `{other}`; use set, unset, inc, push and pull"
                )));
            }
        }
    }
    if update.is_empty() {
        return Err(Invalid("the update changes nothing".into()));
    }
    Ok(update)
}

fn fields<'a>(word: &str, value: &'a Value) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| Invalid(format!("`{word}` is an object of field paths and values")))
}

/// `if_version` of a request's JSON, if given.
pub(crate) fn if_version(value: &Value) -> Result<Option<i64>> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .filter(|v| *v >= 0)
            .map(Some)
            .ok_or_else(|| Invalid(format!("`if_version` is a version (0 or more), not {n}"))),
        other => Err(Invalid(format!(
            "`if_version` is a version (0 or more), not {other}"
        ))),
    }
}

/// Writes most in one transaction.
pub(crate) const MAX_WRITES: usize = 500;

/// A transaction's writes: `{"writes": [{"op", "collection", "id", "data"
/// | "update", "if_version"}]}`; a `create` without an id gets a new one.
pub(crate) fn writes(value: &Value) -> Result<Vec<DocWrite>> {
    let Some(items) = value["writes"].as_array() else {
        return Err(Invalid(
            "a transaction is {\"writes\": [{\"op\": \"create\"|\"set\"|\"update\"|\"delete\", \"collection\", \"id\", ...}]}".into(),
        ));
    };
    if items.is_empty() || items.len() > MAX_WRITES {
        return Err(Invalid(format!(
            "a transaction has 1 to {MAX_WRITES} writes; this one has {}",
            items.len()
        )));
    }
    items.iter().map(write).collect()
}

fn write(item: &Value) -> Result<DocWrite> {
    let collection = collection(item["collection"].as_str().unwrap_or_default())?;
    let op_name = item["op"].as_str().unwrap_or_default();
    let id = match item["id"].as_str() {
        Some(given) => id(given)?,
        None if op_name == "create" => new_id(),
        None => {
            return Err(Invalid(format!(
                "a `{op_name}` write names its document's `id`"
            )));
        }
    };
    let op = match op_name {
        "create" => DocOp::Create(body(item["data"].clone())?),
        "set" => DocOp::Set(body(item["data"].clone())?),
        "update" => DocOp::Update(update(&item["update"])?),
        "delete" => DocOp::Delete,
        other => {
            return Err(Invalid(format!(
                "unknown write {other:?}; use create, set, update or delete"
            )));
        }
    };
    Ok(DocWrite {
        collection,
        id,
        op,
        if_version: if_version(&item["if_version"])?,
    })
}

/// An aggregation's measures: `{"NAME": "count" | "count:FIELD" |
/// "sum:FIELD" | "min:FIELD" | "max:FIELD" | "avg:FIELD"}`.
pub(crate) fn aggregation(collection: String, value: &Value) -> Result<Aggregation> {
    let filter = filter(&value["where"])?;
    let group_by = match &value["group_by"] {
        Value::Null => None,
        Value::String(p) => Some(path(p)?),
        other => return Err(Invalid(format!("`group_by` is a field path, not {other}"))),
    };
    let mut measures = Vec::new();
    match &value["measures"] {
        Value::Null => measures.push(Measure {
            name: "count".into(),
            op: MeasureOp::Count,
            field: None,
        }),
        Value::Object(map) => {
            for (name, spec) in map {
                let Some(spec) = spec.as_str() else {
                    return Err(Invalid(format!(
                        "measure `{name}` is \"count\", \"count:FIELD\" or \"sum|min|max|avg:FIELD\""
                    )));
                };
                let (op, field) = match spec.split_once(':') {
                    Some((op, field)) => (op, Some(path(field)?)),
                    None => (spec, None),
                };
                let op = MeasureOp::from_name(op).ok_or_else(|| {
                    Invalid(format!(
                        "unknown measure {op:?}; use count, sum, min, max or avg"
                    ))
                })?;
                if op != MeasureOp::Count && field.is_none() {
                    return Err(Invalid(format!(
                        "measure `{name}` needs a field: \"{}:FIELD\"",
                        op.name()
                    )));
                }
                measures.push(Measure {
                    name: name.clone(),
                    op,
                    field,
                });
            }
        }
        other => {
            return Err(Invalid(format!(
                "`measures` is an object of names and measures, not {other}"
            )));
        }
    }
    if measures.is_empty() || measures.len() > 16 {
        return Err(Invalid("an aggregation has 1 to 16 measures".into()));
    }
    Ok(Aggregation {
        collection,
        filter,
        group_by,
        measures,
    })
}

/// The JSON form of an aggregation's groups.
pub(crate) fn groups(groups: &[Group]) -> Value {
    Value::Array(
        groups
            .iter()
            .map(|g| {
                let mut out = g.values.clone();
                if let Some(key) = &g.key {
                    out.insert("key".into(), key.clone());
                }
                Value::Object(out)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_conditions_lists_and_alternatives() {
        let f = filter(&json!([["owner", "==", "u1"], ["n", ">", 3]]))
            .unwrap()
            .unwrap();
        let body = json!({"owner": "u1", "n": 4});
        assert!(f.matches(body.as_object().unwrap()));
        let f = filter(&json!(["tags", "contains", "x"])).unwrap().unwrap();
        assert!(f.matches(json!({"tags": ["x"]}).as_object().unwrap()));
        let f = filter(&json!({"or": [["a", "==", 1], ["b", "exists", true]]}))
            .unwrap()
            .unwrap();
        assert!(f.matches(json!({"b": null}).as_object().unwrap()));
        assert!(filter(&json!(["a", "~", 1])).is_err());
        assert!(filter(&json!(["a", "in", 1])).is_err());
        assert!(filter(&json!(["a.$b", "==", 1])).is_err());
        assert!(filter(&json!({"nor": []})).is_err());
        let deep = (0..20).fold(json!(["a", "==", 1]), |f, _| json!({ "and": [f] }));
        assert!(filter(&deep).unwrap_err().0.contains("deeper"));
    }

    #[test]
    fn orders_take_fields_and_directions() {
        let o = order(&json!(["created_at", "desc"])).unwrap();
        assert_eq!(o.len(), 1);
        assert!(o[0].descending);
        let o = order(&json!(["a", ["b", "desc"], "c"])).unwrap();
        assert_eq!(o.len(), 3);
        assert!(!o[0].descending && o[1].descending);
        assert!(order(&json!([["a", "sideways"]])).is_err());
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_queries() {
        let order = order(&json!(["n"])).unwrap();
        let c = Cursor {
            values: vec![json!(3)],
            id: "x".into(),
        };
        assert_eq!(cursor(&cursor_token(&c), &order).unwrap(), c);
        assert!(cursor(&cursor_token(&c), &[]).is_err());
        assert!(cursor("not base64!", &order).is_err());
    }

    #[test]
    fn updates_read_every_operator() {
        let u = update(&json!({"set": {"a.b": 1}, "unset": ["c"], "inc": {"n": 2}, "push": {"t": ["x"]}, "pull": {"t": ["y"]}})).unwrap();
        let mut body = json!({"c": 1, "t": ["y"]}).as_object().unwrap().clone();
        u.apply(&mut body).unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"a": {"b": 1}, "n": 2, "t": ["x"]})
        );
        assert!(update(&json!({})).is_err());
        assert!(update(&json!({"inc": {"n": "1"}})).is_err());
        assert!(update(&json!({"set": {"a": {"$x": 1}}})).is_err());
        assert!(update(&json!({"merge": {}})).is_err());
    }

    #[test]
    fn ids_and_bodies_are_checked() {
        assert!(id_problem("abc-123").is_none());
        assert!(id_problem("user@example.com").is_none());
        for bad in ["", "a/b", "_query", ".", "..", "a\nb", &"x".repeat(129)] {
            assert!(id_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(new_id().len(), 20);
        assert!(body(json!([1])).is_err());
        assert!(body(json!({"a.b": 1})).unwrap_err().0.contains("`.`"));
        assert!(body(json!({"$set": 1})).unwrap_err().0.contains("`$`"));
        assert!(body(json!({"ünï": "çødé ✓"})).is_ok());
    }

    #[test]
    fn transactions_name_their_writes() {
        let w = writes(&json!({"writes": [
            {"op": "create", "collection": "todos", "data": {"t": 1}},
            {"op": "update", "collection": "todos", "id": "a", "update": {"inc": {"n": 1}}, "if_version": 2},
            {"op": "delete", "collection": "todos", "id": "b"},
        ]}))
        .unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].id.len(), 20);
        assert_eq!(w[1].if_version, Some(2));
        assert!(writes(&json!({"writes": []})).is_err());
        assert!(writes(&json!({"writes": [{"op": "update", "collection": "t"}]})).is_err());
        assert!(
            writes(&json!({"writes": [{"op": "set", "collection": "9t", "id": "a", "data": {}}]}))
                .is_err()
        );
    }

    #[test]
    fn aggregations_read_measures() {
        let a = aggregation(
            "orders".into(),
            &json!({"group_by": "status", "measures": {"n": "count", "total": "sum:amount"}}),
        )
        .unwrap();
        assert_eq!(a.measures.len(), 2);
        assert!(aggregation("o".into(), &json!({"measures": {"x": "sum"}})).is_err());
        assert!(aggregation("o".into(), &json!({"measures": {"x": "median:a"}})).is_err());
    }
}
