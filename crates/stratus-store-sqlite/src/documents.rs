//! Apps' documents in SQLite: bodies are JSON text, queries are SQL over
//! `json_extract` and `json_type`.
//!
//! A field `a.b` is `body ->> '$."a"."b"'`. SQLite's JSON
//! functions give a JSON `true` as the integer 1, a JSON null as SQL NULL
//! (as a missing field), and an array or object as its JSON text, so every
//! comparison carries a guard on `json_type` beside it that keeps to the
//! meaning of [`Filter::matches`]; the plain `json_extract(...) = ?` term
//! stays in the WHERE clause for an expression index to serve it.
//!
//! SQLite plans without statistics as if an equality on the app and the
//! collection left few rows, and would rather take the primary key for
//! them (and sort) than a declared index for the field asked. So the store
//! keeps statistics of its own in `sqlite_stat1` (nobody runs `ANALYZE`
//! over them): a collection holds many documents, an equality on an
//! indexed field few. A declared index is led by the app and collection
//! too, for the same reason: it then serves every query of its collection
//! that the primary key would, and its order besides.
//!
//! The names of the app and collection go into the SQL as literals, not
//! parameters: a declared index is a partial index of one collection
//! (`WHERE app = '...' AND collection = '...'`), and SQLite uses a partial
//! index only for a query whose WHERE clause holds those very terms.
//! Values are always bound.
//!
//! SQLite cannot index the elements of an array (`json_each`), so a
//! `multi` index is a table, `document_terms`: a row per scalar element of
//! the field's array per document, kept in the transaction of every write.
//! A `contains` on a field a multi index names looks there; on any other
//! field it scans the arrays with `json_each`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde_json::{Number, Value};
use stratus_store::documents::{
    Aggregation, Body, Change, ChangeRecord, CollectionIndexes, CollectionUsage, Comparison,
    DocWrite, Document, Documents, Fetched, FieldPath, Filter, Group, IndexSpec, MAX_CHECK_ROUNDS,
    MAX_GROUPS, Measure, MeasureOp, Query, StoredDocument, Verdict, WriteCheck, WriteError,
    apply_writes, final_states,
};
use stratus_store::{Result as StoreResult, StoreError};

use super::{Error, Result, SqliteStore, insert_events};

const DOCUMENT_COLUMNS: &str = "collection, id, version, body, created_ms, updated_ms";

/// Documents a collection is taken to hold, in the statistics the planner
/// is given (see the migration that made the table).
const ASSUMED_COLLECTION_ROWS: u64 = 10_000;
/// Documents taken to share a value of an index's first field, its
/// second, ...
const ASSUMED_ROWS_PER_VALUE: [u64; 2] = [10, 5];

/// A refusal of what was asked, as the store reports it.
fn refused(why: impl Into<String>) -> Error {
    Error::Store(StoreError::Database(why.into().into()))
}

/// `text` as an SQL string literal.
fn literal(text: &str) -> Result<String> {
    if text.contains('\0') {
        return Err(refused(format!(
            "`{}` holds the character U+0000, which names of apps and collections cannot hold",
            text.escape_debug()
        )));
    }
    Ok(format!("'{}'", text.replace('\'', "''")))
}

/// The JSON path of `path` (`$."a"."b"`), each name quoted, with `"`, `\`
/// and control characters escaped as the JSON path syntax takes them.
fn json_path(path: &FieldPath) -> String {
    let mut out = String::from("$");
    for name in path.segments() {
        out.push_str(".\"");
        for c in name.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// The SQL of one field of the body.
struct Field {
    /// Its JSON path, an SQL literal.
    path: String,
    /// Its value as SQL: `->>`, which is `json_extract` without the JSON
    /// subtype on arrays and objects (SQLite does not sort by an indexed
    /// expression that may carry one).
    x: String,
    /// Its kind: `json_type`, NULL when it is not there.
    t: String,
}

impl Field {
    fn of(path: &FieldPath) -> Field {
        let path = format!("'{}'", json_path(path).replace('\'', "''"));
        Field {
            x: format!("(body ->> {path})"),
            t: format!("json_type(body, {path})"),
            path,
        }
    }
}

/// Binds `value` as the next numbered parameter; its placeholder.
fn bind(params: &mut Vec<Sql>, value: Sql) -> String {
    params.push(value);
    format!("?{}", params.len())
}

fn number(n: &Number) -> Sql {
    match n.as_i64() {
        Some(i) => Sql::Integer(i),
        None => Sql::Real(n.as_f64().unwrap_or(0.0)),
    }
}

/// A value as `json_extract` gives it: what sorting compares.
fn sort_value(value: &Value) -> Sql {
    match value {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => number(n),
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

/// What a query is translated in: its collection, as literals, and the
/// fields the collection's multi indexes name.
struct Scope {
    app: String,
    collection: String,
    multi: BTreeSet<FieldPath>,
}

impl Scope {
    fn read(conn: &Connection, app: &str, collection: &str) -> Result<Scope> {
        Ok(Scope {
            app: literal(app)?,
            collection: literal(collection)?,
            multi: multi_fields(conn, app, collection)?,
        })
    }

    /// `app = '...' AND collection = '...'`: the terms that make a
    /// collection's partial indexes usable.
    fn selection(&self) -> String {
        format!("app = {} AND collection = {}", self.app, self.collection)
    }

    fn filter(&self, filter: &Filter, params: &mut Vec<Sql>) -> String {
        match filter {
            Filter::Compare { field, op, value } => {
                let f = Field::of(field);
                match op {
                    Comparison::Eq => equals(&f, value, params),
                    Comparison::Ne => {
                        format!(
                            "({} IS NOT NULL AND NOT {})",
                            f.t,
                            equals(&f, value, params)
                        )
                    }
                    range => {
                        let guard = match value {
                            Value::Number(_) => "IN ('integer', 'real')",
                            Value::String(_) => "= 'text'",
                            // Ranges take numbers and strings only.
                            _ => return "0".into(),
                        };
                        let p = bind(params, sort_value(value));
                        let op = match range {
                            Comparison::Lt => "<",
                            Comparison::Le => "<=",
                            Comparison::Gt => ">",
                            _ => ">=",
                        };
                        format!("({} {op} {p} AND {} {guard})", f.x, f.t)
                    }
                }
            }
            Filter::In { field, values } => {
                let f = Field::of(field);
                let mut kinds = Vec::new();
                let (mut numbers, mut strings) = (Vec::new(), Vec::new());
                for value in values {
                    match value {
                        Value::Null => kinds.push("'null'"),
                        Value::Bool(true) => kinds.push("'true'"),
                        Value::Bool(false) => kinds.push("'false'"),
                        Value::Number(n) => numbers.push(bind(params, number(n))),
                        Value::String(s) => strings.push(bind(params, Sql::Text(s.clone()))),
                        _ => {}
                    }
                }
                let mut any = Vec::new();
                if !kinds.is_empty() {
                    any.push(format!("{} IN ({})", f.t, kinds.join(", ")));
                }
                if !numbers.is_empty() {
                    any.push(format!(
                        "({} IN ({}) AND {} IN ('integer', 'real'))",
                        f.x,
                        numbers.join(", "),
                        f.t
                    ));
                }
                if !strings.is_empty() {
                    any.push(format!(
                        "({} IN ({}) AND {} = 'text')",
                        f.x,
                        strings.join(", "),
                        f.t
                    ));
                }
                if any.is_empty() {
                    "0".into()
                } else {
                    format!("({})", any.join(" OR "))
                }
            }
            Filter::Contains { field, value } => {
                if self.multi.contains(field) {
                    let Some((kind, term)) = term(value, params) else {
                        return "0".into();
                    };
                    let name = format!("'{}'", field.to_string().replace('\'', "''"));
                    format!(
                        "id IN (SELECT t.id FROM document_terms t WHERE t.app = {} AND t.collection = {} \
                         AND t.field = {name} AND t.kind = '{kind}' AND t.value = {term})",
                        self.app, self.collection
                    )
                } else {
                    let f = Field::of(field);
                    let element = match value {
                        Value::Null => "j.type = 'null'".to_owned(),
                        Value::Bool(b) => format!("j.type = '{b}'"),
                        Value::Number(n) => format!(
                            "j.type IN ('integer', 'real') AND j.atom = {}",
                            bind(params, number(n))
                        ),
                        Value::String(s) => format!(
                            "j.type = 'text' AND j.atom = {}",
                            bind(params, Sql::Text(s.clone()))
                        ),
                        _ => return "0".into(),
                    };
                    format!(
                        "({} = 'array' AND EXISTS (SELECT 1 FROM json_each(body, {}) j WHERE {element}))",
                        f.t, f.path
                    )
                }
            }
            Filter::Exists { field, exists } => {
                let f = Field::of(field);
                if *exists {
                    format!("{} IS NOT NULL", f.t)
                } else {
                    format!("{} IS NULL", f.t)
                }
            }
            Filter::And(all) => self.join(all, " AND ", params),
            Filter::Or(any) => self.join(any, " OR ", params),
        }
    }

    fn join(&self, filters: &[Filter], with: &str, params: &mut Vec<Sql>) -> String {
        let parts: Vec<String> = filters.iter().map(|f| self.filter(f, params)).collect();
        format!("({})", parts.join(with))
    }
}

/// `field == value`: never NULL when the field is there.
fn equals(f: &Field, value: &Value, params: &mut Vec<Sql>) -> String {
    match value {
        Value::Null => format!("({} IS NULL AND {} = 'null')", f.x, f.t),
        Value::Bool(b) => format!("({} = {} AND {} = '{b}')", f.x, i64::from(*b), f.t),
        Value::Number(n) => format!(
            "({} = {} AND {} IN ('integer', 'real'))",
            f.x,
            bind(params, number(n)),
            f.t
        ),
        Value::String(s) => format!(
            "({} = {} AND {} = 'text')",
            f.x,
            bind(params, Sql::Text(s.clone())),
            f.t
        ),
        // An array or object is never equal to anything (Filter::problem
        // refuses such an operand).
        _ => "0".into(),
    }
}

/// The kind and value a scalar element is kept under in `document_terms`
/// (and what the SQL of [`fill_terms`] makes of it).
fn term(value: &Value, params: &mut Vec<Sql>) -> Option<(&'static str, String)> {
    Some(match value {
        Value::Null => ("null", "0".into()),
        Value::Bool(b) => ("boolean", i64::from(*b).to_string()),
        Value::Number(n) => ("number", bind(params, number(n))),
        Value::String(s) => ("string", bind(params, Sql::Text(s.clone()))),
        _ => return None,
    })
}

/// The SQL that selects what `query` selects, in its order, and its
/// parameters.
fn query_sql(scope: &Scope, query: &Query) -> Result<(String, Vec<Sql>)> {
    let mut params = Vec::new();
    let mut sql = format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE {}",
        scope.selection()
    );
    if let Some(filter) = &query.filter {
        sql.push_str(" AND ");
        sql.push_str(&scope.filter(filter, &mut params));
    }
    let fields: Vec<Field> = query.order.iter().map(|o| Field::of(&o.field)).collect();
    // A document without a field it is sorted by is not selected.
    for f in &fields {
        sql.push_str(&format!(" AND {} IS NOT NULL", f.t));
    }
    if let Some(cursor) = &query.after {
        if cursor.values.len() != query.order.len() {
            return Err(refused(format!(
                "a cursor has {} values for a query sorted by {} fields",
                cursor.values.len(),
                query.order.len()
            )));
        }
        // After (v1, ..., id) in the order of the results: (x1 after v1),
        // or (x1 at v1 and x2 after v2), ..., or (all at theirs and id
        // after). SQL NULL (a JSON null) sorts first, and last when
        // descending.
        let values: Vec<Option<String>> = cursor
            .values
            .iter()
            .map(|v| (!v.is_null()).then(|| bind(&mut params, sort_value(v))))
            .collect();
        let at = |i: usize| match &values[i] {
            Some(p) => format!("{} = {p}", fields[i].x),
            None => format!("{} IS NULL", fields[i].x),
        };
        let mut alternatives = Vec::new();
        for k in 0..=fields.len() {
            let mut all: Vec<String> = (0..k).map(at).collect();
            if k == fields.len() {
                all.push(format!(
                    "id > {}",
                    bind(&mut params, Sql::Text(cursor.id.clone()))
                ));
            } else {
                let x = &fields[k].x;
                match (query.order[k].descending, &values[k]) {
                    (false, Some(p)) => all.push(format!("{x} > {p}")),
                    (false, None) => all.push(format!("{x} IS NOT NULL")),
                    (true, Some(p)) => all.push(format!("({x} < {p} OR {x} IS NULL)")),
                    (true, None) => continue,
                }
            }
            alternatives.push(format!("({})", all.join(" AND ")));
        }
        sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
        // The same, as a range an index seeks to.
        if let (Some(first), Some(Some(p))) = (query.order.first(), values.first())
            && !first.descending
        {
            sql.push_str(&format!(" AND {} >= {p}", fields[0].x));
        }
    }
    sql.push_str(" ORDER BY ");
    for (o, f) in query.order.iter().zip(&fields) {
        sql.push_str(&f.x);
        sql.push_str(if o.descending { " DESC, " } else { ", " });
    }
    sql.push_str(&format!(
        "id LIMIT {}",
        bind(&mut params, Sql::Integer(i64::from(query.limit)))
    ));
    Ok((sql, params))
}

/// The kinds of a group's key, in the order groups come in: missing or
/// null, booleans, numbers, strings, arrays, objects.
fn key_class(f: &Field) -> String {
    format!(
        "CASE {} WHEN 'true' THEN 1 WHEN 'false' THEN 1 WHEN 'integer' THEN 2 WHEN 'real' THEN 2 \
         WHEN 'text' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 ELSE 0 END",
        f.t
    )
}

/// The columns of one measure.
fn measure_sql(m: &Measure) -> String {
    let Some(path) = &m.field else {
        return match m.op {
            MeasureOp::Count => "COUNT(*)".into(),
            // Only a count goes without a field: the others have no
            // numbers to work on.
            MeasureOp::Sum => "NULL, NULL, 0.0, 0".into(),
            _ => "NULL".into(),
        };
    };
    let f = Field::of(path);
    let numeric = format!("{} IN ('integer', 'real')", f.t);
    match m.op {
        MeasureOp::Count => format!("COUNT({})", f.t),
        // Integers in two halves, whose sums cannot overflow; floats
        // apart. Put together in Rust.
        MeasureOp::Sum => {
            let integer = format!("{} = 'integer' AND typeof({}) = 'integer'", f.t, f.x);
            let float = format!("{numeric} AND typeof({}) = 'real'", f.x);
            format!(
                "SUM(CASE WHEN {integer} THEN {x} >> 32 END), \
                 SUM(CASE WHEN {integer} THEN {x} & 4294967295 END), \
                 TOTAL(CASE WHEN {float} THEN {x} END), \
                 COUNT(CASE WHEN {float} THEN 1 END)",
                x = f.x
            )
        }
        MeasureOp::Min => format!("MIN(CASE WHEN {numeric} THEN {} END)", f.x),
        MeasureOp::Max => format!("MAX(CASE WHEN {numeric} THEN {} END)", f.x),
        MeasureOp::Avg => format!("AVG(CASE WHEN {numeric} THEN {} END)", f.x),
    }
}

/// A number SQLite gave back, as JSON.
fn sql_number(value: Sql) -> Value {
    match value {
        Sql::Integer(i) => Value::from(i),
        Sql::Real(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        _ => Value::Null,
    }
}

/// Reads one measure's columns from `row` at `at`; the column after.
fn measure_value(
    m: &Measure,
    row: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<(Value, usize)> {
    Ok(match m.op {
        MeasureOp::Count => (Value::from(row.get::<_, i64>(at)?), at + 1),
        MeasureOp::Sum => {
            let high: Option<i64> = row.get(at)?;
            let low: Option<i64> = row.get(at + 1)?;
            let floats: f64 = row.get(at + 2)?;
            let float_count: i64 = row.get(at + 3)?;
            let integers = i128::from(high.unwrap_or(0)) * (1 << 32) + i128::from(low.unwrap_or(0));
            let sum = match i64::try_from(integers) {
                Ok(sum) if float_count == 0 => Value::from(sum),
                _ => Number::from_f64(integers as f64 + floats).map_or(Value::Null, Value::Number),
            };
            (sum, at + 4)
        }
        MeasureOp::Min | MeasureOp::Max => (sql_number(row.get(at)?), at + 1),
        MeasureOp::Avg => (
            row.get::<_, Option<f64>>(at)?
                .and_then(Number::from_f64)
                .map_or(Value::Null, Value::Number),
            at + 1,
        ),
    })
}

/// A group's key from its class ([`key_class`]) and value.
fn group_key(class: i64, value: Sql) -> Result<Value> {
    Ok(match (class, value) {
        (1, Sql::Integer(i)) => Value::Bool(i != 0),
        (2, n) => sql_number(n),
        (3, Sql::Text(s)) => Value::String(s),
        (4 | 5, Sql::Text(s)) => serde_json::from_str(&s)?,
        _ => Value::Null,
    })
}

/// A document's row, its body still text.
type RawDocument = (String, String, i64, String, i64, i64);

fn raw_document(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawDocument> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn decode(
    (collection, id, version, body, created_ms, updated_ms): RawDocument,
) -> Result<Document> {
    Ok(Document {
        collection,
        id,
        version,
        body: serde_json::from_str(&body)?,
        created_ms,
        updated_ms,
    })
}

fn read_document(
    conn: &Connection,
    app: &str,
    collection: &str,
    id: &str,
) -> Result<Option<Document>> {
    conn.prepare_cached(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE app = ?1 AND collection = ?2 AND id = ?3"
    ))?
    .query_row(params![app, collection, id], raw_document)
    .optional()?
    .map(decode)
    .transpose()
}

/// The indexes `app`'s `collection` declares, by name.
fn declared(conn: &Connection, app: &str, collection: &str) -> Result<BTreeMap<String, IndexSpec>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, spec FROM document_indexes WHERE app = ?1 AND collection = ?2",
    )?;
    let rows = stmt.query_map(params![app, collection], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (name, spec) = row?;
        out.insert(name, IndexSpec::from_json(&spec).map_err(refused)?);
    }
    Ok(out)
}

/// The fields the multi indexes of `app`'s `collection` name.
fn multi_fields(conn: &Connection, app: &str, collection: &str) -> Result<BTreeSet<FieldPath>> {
    Ok(declared(conn, app, collection)?
        .into_values()
        .filter(|spec| spec.multi)
        .filter_map(|spec| spec.fields.into_iter().next())
        .collect())
}

/// Adds the terms of `field` of the documents of `app`'s `collection` (or
/// of document `id` only) to `document_terms`: a row per scalar element of
/// the array the field holds.
fn fill_terms(
    conn: &Connection,
    app: &str,
    collection: &str,
    field: &FieldPath,
    id: Option<&str>,
) -> Result<()> {
    let f = Field::of(field);
    let sql = format!(
        "INSERT OR IGNORE INTO document_terms (app, collection, field, kind, value, id) \
         SELECT d.app, d.collection, ?3, \
         CASE j.type WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' WHEN 'text' THEN 'string' \
         WHEN 'null' THEN 'null' ELSE 'boolean' END, \
         CASE j.type WHEN 'true' THEN 1 WHEN 'false' THEN 0 WHEN 'null' THEN 0 ELSE j.atom END, \
         d.id FROM documents d, json_each(d.body, {path}) j \
         WHERE d.app = ?1 AND d.collection = ?2 AND (?4 IS NULL OR d.id = ?4) \
         AND json_type(d.body, {path}) = 'array' AND j.type NOT IN ('array', 'object')",
        path = f.path
    );
    conn.prepare_cached(&sql)?
        .execute(params![app, collection, field.to_string(), id])?;
    Ok(())
}

/// Builds the index `spec` of `app`'s `collection` and records it.
fn create_index(conn: &Connection, app: &str, collection: &str, spec: &IndexSpec) -> Result<()> {
    if let Some(why) = spec.problem() {
        return Err(refused(why));
    }
    let name = spec.index_name(app, collection);
    if spec.multi {
        fill_terms(conn, app, collection, &spec.fields[0], None)?;
    } else {
        // Led by the app and collection although it holds only theirs
        // (see the module's documentation).
        let columns: Vec<String> = spec.fields.iter().map(|f| Field::of(f).x).collect();
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS {name} ON documents (app, collection, {}, id) \
             WHERE app = {} AND collection = {}",
            columns.join(", "),
            literal(app)?,
            literal(collection)?
        ))?;
        // Rows of the collection, then per column of equality: one per
        // app and collection, few per value of the first field, fewer for
        // the next, one per id.
        let mut stat = vec![ASSUMED_COLLECTION_ROWS; 3];
        stat.extend(
            (0..spec.fields.len()).map(|i| ASSUMED_ROWS_PER_VALUE.get(i).copied().unwrap_or(2)),
        );
        stat.push(1);
        let stat: Vec<String> = stat.iter().map(u64::to_string).collect();
        conn.execute(
            "DELETE FROM sqlite_stat1 WHERE tbl = 'documents' AND idx = ?1",
            [&name],
        )?;
        conn.execute(
            "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('documents', ?1, ?2)",
            params![name, stat.join(" ")],
        )?;
        conn.execute_batch("ANALYZE sqlite_schema")?;
    }
    conn.execute(
        "INSERT OR REPLACE INTO document_indexes (app, collection, name, spec) VALUES (?1, ?2, ?3, ?4)",
        params![app, collection, name, spec.to_json()],
    )?;
    Ok(())
}

/// Drops index `name` (`spec`) of `app`'s `collection` and its record.
fn drop_index(
    conn: &Connection,
    app: &str,
    collection: &str,
    name: &str,
    spec: &IndexSpec,
) -> Result<()> {
    if spec.multi
        && let Some(field) = spec.fields.first()
    {
        conn.execute(
            "DELETE FROM document_terms WHERE app = ?1 AND collection = ?2 AND field = ?3",
            params![app, collection, field.to_string()],
        )?;
    }
    drop_named(conn, name)?;
    conn.execute(
        "DELETE FROM document_indexes WHERE app = ?1 AND collection = ?2 AND name = ?3",
        params![app, collection, name],
    )?;
    Ok(())
}

/// Drops the database index `name`, if there is one, and its statistics.
fn drop_named(conn: &Connection, name: &str) -> Result<()> {
    conn.execute_batch(&format!(
        "DROP INDEX IF EXISTS \"{}\"",
        name.replace('"', "\"\"")
    ))?;
    let forgot = conn.execute(
        "DELETE FROM sqlite_stat1 WHERE tbl = 'documents' AND idx = ?1",
        [name],
    )?;
    if forgot > 0 {
        conn.execute_batch("ANALYZE sqlite_schema")?;
    }
    Ok(())
}

/// Drops every index of `app` (of its `collection` only, if given) and
/// forgets their terms.
pub(crate) fn drop_indexes(conn: &Connection, app: &str, collection: Option<&str>) -> Result<()> {
    let names: Vec<(String, String)> = conn
        .prepare(
            "SELECT collection, name FROM document_indexes WHERE app = ?1 AND (?2 IS NULL OR collection = ?2)",
        )?
        .query_map(params![app, collection], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (_, name) in &names {
        drop_named(conn, name)?;
    }
    conn.execute(
        "DELETE FROM document_indexes WHERE app = ?1 AND (?2 IS NULL OR collection = ?2)",
        params![app, collection],
    )?;
    conn.execute(
        "DELETE FROM document_terms WHERE app = ?1 AND (?2 IS NULL OR collection = ?2)",
        params![app, collection],
    )?;
    Ok(())
}

/// Removes every document of `app`, its indexes and its change records,
/// inside the caller's transaction.
pub(crate) fn delete_app_documents(conn: &Connection, app: &str) -> Result<()> {
    drop_indexes(conn, app, None)?;
    conn.execute("DELETE FROM documents WHERE app = ?1", [app])?;
    conn.execute("DELETE FROM document_changes WHERE app = ?1", [app])?;
    Ok(())
}

/// Every document and declared index, for a dump.
pub(crate) fn export(conn: &Connection) -> Result<(Vec<StoredDocument>, Vec<CollectionIndexes>)> {
    let mut stmt = conn.prepare(&format!(
        "SELECT app, {DOCUMENT_COLUMNS} FROM documents ORDER BY app, collection, id"
    ))?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            (
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
            ),
        ))
    })?;
    let mut documents = Vec::new();
    for row in rows {
        let (app, raw) = row?;
        documents.push(StoredDocument {
            app,
            document: decode(raw)?,
        });
    }
    let mut stmt = conn.prepare("SELECT app, collection, spec FROM document_indexes")?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut indexes: BTreeMap<(String, String), Vec<IndexSpec>> = BTreeMap::new();
    for row in rows {
        let (app, collection, spec) = row?;
        indexes
            .entry((app, collection))
            .or_default()
            .push(IndexSpec::from_json(&spec).map_err(refused)?);
    }
    Ok((documents, collection_indexes(indexes)))
}

fn collection_indexes(
    indexes: BTreeMap<(String, String), Vec<IndexSpec>>,
) -> Vec<CollectionIndexes> {
    indexes
        .into_iter()
        .map(|((app, collection), mut indexes)| {
            indexes.sort();
            CollectionIndexes {
                app,
                collection,
                indexes,
            }
        })
        .collect()
}

/// Loads the documents and indexes of a dump inside the caller's
/// transaction, building the indexes.
pub(crate) fn import(
    conn: &Connection,
    documents: &[StoredDocument],
    indexes: &[CollectionIndexes],
) -> Result<()> {
    let mut insert = conn.prepare(
        "INSERT INTO documents (app, collection, id, version, body, created_ms, updated_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for StoredDocument { app, document: d } in documents {
        insert.execute(params![
            app,
            d.collection,
            d.id,
            d.version,
            serde_json::to_string(&d.body)?,
            d.created_ms,
            d.updated_ms
        ])?;
    }
    for c in indexes {
        for spec in &c.indexes {
            create_index(conn, &c.app, &c.collection, spec)?;
        }
    }
    Ok(())
}

/// How many documents the dump of this store would hold, for the check
/// that an import goes into an empty store.
pub(crate) const HELD: &str = "(SELECT COUNT(*) FROM documents) || ' documents'";

/// Applies `writes` in one transaction: see [`Documents::write_documents`].
fn write(
    conn: &mut Connection,
    app: &str,
    writes: Vec<DocWrite>,
    now_ms: i64,
    check: &dyn WriteCheck,
) -> Result<std::result::Result<Vec<Change>, WriteError>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut current = Fetched::new();
    for w in &writes {
        let key = (w.collection.clone(), w.id.clone());
        if let std::collections::btree_map::Entry::Vacant(entry) = current.entry(key) {
            entry.insert(read_document(&tx, app, &w.collection, &w.id)?);
        }
    }
    let changes = match apply_writes(&writes, current.clone(), now_ms) {
        Ok(changes) => changes,
        Err(err) => return Ok(Err(err)),
    };
    let mut fetched = Fetched::new();
    let mut rounds = 0;
    let events = loop {
        match check.check(app, &changes, &fetched) {
            Verdict::Commit(events) => break events,
            Verdict::Refuse(why) => return Ok(Err(WriteError::Refused(why))),
            Verdict::Need(_) if rounds == MAX_CHECK_ROUNDS => {
                return Ok(Err(WriteError::Refused(format!(
                    "the write's check asked for more documents {MAX_CHECK_ROUNDS} times and still could not decide; the write is refused"
                ))));
            }
            Verdict::Need(refs) => {
                rounds += 1;
                for key in refs {
                    if fetched.contains_key(&key) {
                        continue;
                    }
                    let document = match current.get(&key) {
                        Some(document) => document.clone(),
                        None => read_document(&tx, app, &key.0, &key.1)?,
                    };
                    fetched.insert(key, document);
                }
            }
        }
    };

    let mut multi: BTreeMap<&str, BTreeSet<FieldPath>> = BTreeMap::new();
    for ((collection, id), state) in final_states(&changes) {
        match state {
            Some(d) => {
                tx.prepare_cached(
                    "INSERT INTO documents (app, collection, id, version, body, created_ms, updated_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (app, collection, id) DO UPDATE SET \
                     version = excluded.version, body = excluded.body, created_ms = excluded.created_ms, \
                     updated_ms = excluded.updated_ms",
                )?
                .execute(params![
                    app,
                    collection,
                    id,
                    d.version,
                    serde_json::to_string(&d.body)?,
                    d.created_ms,
                    d.updated_ms
                ])?;
            }
            None => {
                tx.prepare_cached(
                    "DELETE FROM documents WHERE app = ?1 AND collection = ?2 AND id = ?3",
                )?
                .execute(params![app, collection, id])?;
            }
        }
        if !multi.contains_key(collection) {
            multi.insert(collection, multi_fields(&tx, app, collection)?);
        }
        let fields = &multi[collection];
        if !fields.is_empty() {
            tx.prepare_cached(
                "DELETE FROM document_terms WHERE app = ?1 AND collection = ?2 AND id = ?3",
            )?
            .execute(params![app, collection, id])?;
            if state.is_some() {
                for field in fields {
                    fill_terms(&tx, app, collection, field, Some(id))?;
                }
            }
        }
    }
    {
        let mut record = tx.prepare_cached(
            "INSERT INTO document_changes (app, collection, id, version, body, at_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for c in &changes {
            let (version, body) = match (&c.after, &c.before) {
                (Some(after), _) => (after.version, Some(serde_json::to_string(&after.body)?)),
                (None, Some(before)) => (before.version, None),
                (None, None) => continue,
            };
            record.execute(params![app, c.collection, c.id, version, body, now_ms])?;
        }
    }
    insert_events(&tx, events)?;
    tx.commit()?;
    Ok(Ok(changes))
}

fn set_indexes(
    conn: &mut Connection,
    app: &str,
    collection: &str,
    specs: Vec<IndexSpec>,
) -> Result<()> {
    for spec in &specs {
        if let Some(why) = spec.problem() {
            return Err(refused(why));
        }
    }
    let wanted: BTreeMap<String, IndexSpec> = specs
        .into_iter()
        .map(|spec| (spec.index_name(app, collection), spec))
        .collect();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let have = declared(&tx, app, collection)?;
    for (name, spec) in &have {
        if !wanted.contains_key(name) {
            drop_index(&tx, app, collection, name, spec)?;
        }
    }
    for (name, spec) in &wanted {
        if !have.contains_key(name) {
            create_index(&tx, app, collection, spec)?;
        }
    }
    tx.commit()?;
    Ok(())
}

fn aggregate(conn: &Connection, app: &str, a: &Aggregation) -> Result<Vec<Group>> {
    if let Some(why) = a.filter.as_ref().and_then(Filter::problem) {
        return Err(refused(why));
    }
    let scope = Scope::read(conn, app, &a.collection)?;
    let mut params = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let key = a.group_by.as_ref().map(Field::of);
    if let Some(f) = &key {
        columns.push(key_class(f));
        columns.push(f.x.clone());
    }
    columns.extend(a.measures.iter().map(measure_sql));
    if columns.is_empty() {
        // An aggregate, for one row.
        columns.push("count(*)".into());
    }
    let mut sql = format!(
        "SELECT {} FROM documents WHERE {}",
        columns.join(", "),
        scope.selection()
    );
    if let Some(filter) = &a.filter {
        sql.push_str(" AND ");
        sql.push_str(&scope.filter(filter, &mut params));
    }
    if let Some(f) = &key {
        let class = key_class(f);
        sql.push_str(&format!(
            " GROUP BY {class}, {x} ORDER BY {class}, {x} LIMIT {MAX_GROUPS}",
            x = f.x
        ));
    }
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(params))?;
    let mut groups = Vec::new();
    while let Some(row) = rows.next()? {
        let mut at = 0;
        let key = match &key {
            Some(_) => {
                at = 2;
                Some(group_key(row.get(0)?, row.get(1)?)?)
            }
            None => None,
        };
        let mut values = Body::new();
        for m in &a.measures {
            let (value, next) = measure_value(m, row, at)?;
            values.insert(m.name.clone(), value);
            at = next;
        }
        groups.push(Group { key, values });
    }
    Ok(groups)
}

fn change_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ChangeRecord, Option<String>)> {
    Ok((
        ChangeRecord {
            seq: row.get(0)?,
            app: row.get(1)?,
            collection: row.get(2)?,
            id: row.get(3)?,
            version: row.get(4)?,
            body: None,
            at_ms: row.get(6)?,
        },
        row.get(5)?,
    ))
}

#[async_trait]
impl Documents for SqliteStore {
    async fn get_document(
        &self,
        app: &str,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Document>> {
        let (app, collection, id) = (app.to_owned(), collection.to_owned(), id.to_owned());
        self.call(move |conn| read_document(conn, &app, &collection, &id))
            .await
    }

    async fn get_documents(
        &self,
        app: &str,
        refs: Vec<(String, String)>,
    ) -> StoreResult<Vec<Option<Document>>> {
        let app = app.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let documents = refs
                .iter()
                .map(|(collection, id)| read_document(&tx, &app, collection, id))
                .collect::<Result<_>>()?;
            tx.commit()?;
            Ok(documents)
        })
        .await
    }

    async fn query_documents(&self, app: &str, query: Query) -> StoreResult<Vec<Document>> {
        let app = app.to_owned();
        self.call(move |conn| {
            if let Some(why) = query.filter.as_ref().and_then(Filter::problem) {
                return Err(refused(why));
            }
            let scope = Scope::read(conn, &app, &query.collection)?;
            let (sql, params) = query_sql(&scope, &query)?;
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(params_from_iter(params), raw_document)?;
            rows.map(|row| decode(row?)).collect()
        })
        .await
    }

    async fn aggregate_documents(
        &self,
        app: &str,
        aggregation: Aggregation,
    ) -> StoreResult<Vec<Group>> {
        let app = app.to_owned();
        self.call(move |conn| aggregate(conn, &app, &aggregation))
            .await
    }

    async fn count_documents(&self, app: &str, collection: &str, up_to: u64) -> StoreResult<u64> {
        let (app, collection) = (app.to_owned(), collection.to_owned());
        let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let count: i64 = conn.query_row(
                "SELECT COUNT(*) FROM (SELECT 1 FROM documents WHERE app = ?1 AND collection = ?2 LIMIT ?3)",
                params![app, collection, up_to],
                |row| row.get(0),
            )?;
            Ok(count as u64)
        })
        .await
    }

    async fn write_documents(
        &self,
        app: &str,
        writes: Vec<DocWrite>,
        now_ms: i64,
        check: Arc<dyn WriteCheck>,
    ) -> StoreResult<std::result::Result<Vec<Change>, WriteError>> {
        let app = app.to_owned();
        self.call(move |conn| write(conn, &app, writes, now_ms, check.as_ref()))
            .await
    }

    async fn set_indexes(
        &self,
        app: &str,
        collection: &str,
        indexes: Vec<IndexSpec>,
    ) -> StoreResult<()> {
        let (app, collection) = (app.to_owned(), collection.to_owned());
        self.call(move |conn| set_indexes(conn, &app, &collection, indexes))
            .await
    }

    async fn list_indexes(&self, app: &str) -> StoreResult<Vec<CollectionIndexes>> {
        let app = app.to_owned();
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT collection, spec FROM document_indexes WHERE app = ?1")?;
            let rows = stmt.query_map([&app], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut indexes: BTreeMap<(String, String), Vec<IndexSpec>> = BTreeMap::new();
            for row in rows {
                let (collection, spec) = row?;
                indexes
                    .entry((app.clone(), collection))
                    .or_default()
                    .push(IndexSpec::from_json(&spec).map_err(refused)?);
            }
            Ok(collection_indexes(indexes))
        })
        .await
    }

    async fn list_collections(&self, app: &str) -> StoreResult<Vec<CollectionUsage>> {
        let app = app.to_owned();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT collection, COUNT(*), COALESCE(SUM(octet_length(body)), 0) FROM documents \
                 WHERE app = ?1 GROUP BY collection ORDER BY collection",
            )?;
            let rows = stmt.query_map([&app], |row| {
                Ok(CollectionUsage {
                    collection: row.get(0)?,
                    documents: row.get::<_, i64>(1)? as u64,
                    bytes: row.get::<_, i64>(2)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn delete_collection(&self, app: &str, collection: &str) -> StoreResult<u64> {
        let (app, collection) = (app.to_owned(), collection.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            drop_indexes(&tx, &app, Some(&collection))?;
            let deleted = tx.execute(
                "DELETE FROM documents WHERE app = ?1 AND collection = ?2",
                params![app, collection],
            )?;
            tx.commit()?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn document_changes(&self, after: i64, limit: u32) -> StoreResult<Vec<ChangeRecord>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, app, collection, id, version, body, at_ms FROM document_changes \
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, i64::from(limit)], change_from_row)?;
            let mut changes = Vec::new();
            for row in rows {
                let (mut change, body) = row?;
                change.body = body.map(|b| serde_json::from_str(&b)).transpose()?;
                changes.push(change);
            }
            Ok(changes)
        })
        .await
    }

    async fn last_document_change(&self) -> StoreResult<i64> {
        self.call(|conn| {
            // The last seq given, whether or not its record was trimmed
            // (or went with its app) since.
            Ok(conn
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'document_changes'",
                    [],
                    |row| row.get(0),
                )
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn trim_document_changes(&self, before_ms: i64) -> StoreResult<u64> {
        self.call(move |conn| {
            let deleted =
                conn.execute("DELETE FROM document_changes WHERE at_ms < ?1", [before_ms])?;
            Ok(deleted as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_store::documents::Order;

    fn path(p: &str) -> FieldPath {
        FieldPath::parse(p).unwrap()
    }

    #[test]
    fn paths_quote_every_name() {
        assert_eq!(json_path(&path("a.b")), r#"$."a"."b""#);
        assert_eq!(json_path(&path(r#"q"uo\te"#)), r#"$."q\"uo\\te""#);
        assert_eq!(json_path(&path("it's.[0]")), r#"$."it's"."[0]""#);
        assert_eq!(json_path(&path("tab\there")), r#"$."tab\u0009here""#);
        assert_eq!(Field::of(&path("it's")).path, r#"'$."it''s"'"#);
    }

    fn plan(conn: &Connection, sql: &str, params: Vec<Sql>) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params_from_iter(params), |row| row.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    /// A declared index serves equality on its fields, a range after
    /// them, its order and the cursor of a page; `contains` on a multi
    /// index's field looks up its terms.
    #[tokio::test]
    async fn queries_use_the_declared_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db")).unwrap();
        let by_city_age = IndexSpec {
            fields: vec![path("address.city"), path("age")],
            multi: false,
        };
        let tags = IndexSpec {
            fields: vec![path("tags")],
            multi: true,
        };
        store
            .set_indexes("it's", "people", vec![by_city_age.clone(), tags])
            .await
            .unwrap();
        let name = by_city_age.index_name("it's", "people");
        let conn = store.conn.lock().unwrap();
        let scope = Scope::read(&conn, "it's", "people").unwrap();

        let query = |filter: Filter, order: Vec<Order>| Query {
            collection: "people".into(),
            filter: Some(filter),
            order,
            after: None,
            limit: 10,
        };
        let city_in_paris = || Filter::Compare {
            field: path("address.city"),
            op: Comparison::Eq,
            value: Value::from("paris"),
        };
        let city = city_in_paris();
        let (sql, params) = query_sql(&scope, &query(city.clone(), Vec::new())).unwrap();
        let used = plan(&conn, &sql, params);
        assert!(
            used.contains(&format!(
                "USING INDEX {name} (app=? AND collection=? AND <expr>=?)"
            )),
            "{used}"
        );

        let older = Filter::Compare {
            field: path("age"),
            op: Comparison::Gt,
            value: Value::from(30),
        };
        let by_age = vec![Order {
            field: path("age"),
            descending: false,
        }];
        let mut q = query(Filter::And(vec![city, older]), by_age);
        let (sql, params) = query_sql(&scope, &q).unwrap();
        let used = plan(&conn, &sql, params);
        assert!(
            used.contains(&format!(
                "USING INDEX {name} (app=? AND collection=? AND <expr>=? AND <expr>>?)"
            )),
            "{used}"
        );
        assert!(!used.contains("TEMP B-TREE"), "sorted by the index: {used}");
        q.after = Some(stratus_store::documents::Cursor {
            values: vec![Value::from(40)],
            id: "x".into(),
        });
        let (sql, params) = query_sql(&scope, &q).unwrap();
        let used = plan(&conn, &sql, params);
        assert!(used.contains(&format!("USING INDEX {name}")), "{used}");

        // Sorted by the index's fields alone: in its order, no sort.
        let by_city = Query {
            filter: None,
            order: vec![
                Order {
                    field: path("address.city"),
                    descending: false,
                },
                Order {
                    field: path("age"),
                    descending: false,
                },
            ],
            after: None,
            ..q.clone()
        };
        let (sql, params) = query_sql(&scope, &by_city).unwrap();
        let used = plan(&conn, &sql, params);
        assert!(used.contains(&format!("USING INDEX {name}")), "{used}");
        assert!(!used.contains("TEMP B-TREE"), "{used}");
        // A field no index names: the primary key, in the order of ids.
        let other = Filter::Compare {
            field: path("name"),
            op: Comparison::Eq,
            value: Value::from("ann"),
        };
        let (sql, params) = query_sql(&scope, &query(other, Vec::new())).unwrap();
        let used = plan(&conn, &sql, params);
        assert!(
            used.contains("USING INDEX sqlite_autoindex_documents_1 (app=? AND collection=?)"),
            "{used}"
        );
        assert!(!used.contains("TEMP B-TREE"), "{used}");
        // Another collection's index is no use.
        let elsewhere = Scope::read(&conn, "it's", "pets").unwrap();
        let (sql, params) = query_sql(&elsewhere, &query(city_in_paris(), Vec::new())).unwrap();
        let used = plan(&conn, &sql, params);
        assert!(!used.contains("docidx_"), "{used}");

        let tagged = Filter::Contains {
            field: path("tags"),
            value: Value::from("red"),
        };
        let (sql, params) = query_sql(&scope, &query(tagged, Vec::new())).unwrap();
        let used = plan(&conn, &sql, params);
        assert!(
            used.contains(
                "SEARCH t USING PRIMARY KEY (app=? AND collection=? AND field=? AND kind=? AND value=?)"
            ),
            "{used}"
        );
        assert!(!used.contains("json_each"), "{used}");
    }
}
