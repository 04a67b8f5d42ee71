//! Apps' documents in PostgreSQL: bodies are `jsonb`, queries are SQL
//! over `body #> '{a,b}'`.
//!
//! `jsonb` compares as the documents' semantics want within a kind (`1 =
//! 1.0`, strings equal byte for byte, a JSON null a value, a missing field
//! SQL NULL), and never equal across kinds, so equality needs no guard;
//! ranges keep to one kind with `jsonb_typeof`. Strings order by the
//! database's collation, not by their bytes (documented as a backend
//! difference of [`Documents`]).
//!
//! The names of the app and collection go into the SQL as literals, not
//! parameters, so that the planner can prove a declared index's predicate
//! (`WHERE app = '...' AND collection = '...'`); values are always bound.
//! Declared indexes are built online (`CREATE INDEX CONCURRENTLY`), outside
//! any transaction; a `multi` index is a GIN index (`jsonb_path_ops`) of
//! the array, serving `@>`.
//!
//! A write locks the rows it reads (`FOR UPDATE`, in the order of their
//! keys, so that two writes never wait for each other in a circle); a
//! create that another transaction beat to it finds the row at its insert
//! and the write starts over, seeing it. Change records take their `seq`
//! with no lock (one would serialise every commit): a record may commit
//! after one with a higher `seq`, and followers wait a while for such gaps
//! (see [`ChangeRecord::seq`]). The write path's statements are
//! prepared once per connection.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use deadpool_postgres::GenericClient;
use serde_json::{Number, Value};
use stratus_store::documents::{
    Aggregation, Body, Change, ChangeRecord, CollectionIndexes, CollectionUsage, Comparison,
    DocWrite, Document, Documents, Fetched, FieldPath, Filter, Group, IndexSpec, MAX_CHECK_ROUNDS,
    MAX_GROUPS, Measure, MeasureOp, Query, StoredDocument, Verdict, WriteCheck, WriteError,
    apply_writes, final_states,
};
use stratus_store::{Result as StoreResult, StoreError};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::{Error, PostgresStore, Result, insert_events, run};

/// Times a write starts over (after another transaction created a
/// document it was creating, or a deadlock) before it gives up.
const WRITE_ATTEMPTS: usize = 20;

const DOCUMENT_COLUMNS: &str = "collection, id, version, body, created_ms, updated_ms";

/// A refusal of what was asked, as the store reports it.
fn refused(why: impl Into<String>) -> Error {
    Error::Store(StoreError::Database(why.into().into()))
}

/// A JSON value bound as (or read from) `jsonb`.
#[derive(Debug, Clone)]
struct Jsonb(String);

impl Jsonb {
    fn of(value: &Value) -> Jsonb {
        let mut out = String::new();
        write_json(value, &mut out);
        Jsonb(out)
    }
}

/// `value` as JSON text, every float written with a decimal point and no
/// exponent: `jsonb` keeps numbers as `numeric`, and gives `1e16` back as
/// the integer `10000000000000000`, where `10000000000000000.0` comes back
/// a float as it went in.
fn write_json(value: &Value, out: &mut String) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            let text = f.to_string();
            out.push_str(&text);
            if !text.contains('.') {
                out.push_str(".0");
            }
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (name, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(name.as_str()).to_string());
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn body_json(body: &Body) -> Jsonb {
    let mut out = String::new();
    write_json(&Value::Object(body.clone()), &mut out);
    Jsonb(out)
}

impl ToSql for Jsonb {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            // The version of jsonb's binary format: JSON text.
            out.put_u8(1);
        }
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }

    to_sql_checked!();
}

/// A `jsonb` value read.
struct JsonValue(Value);

impl<'a> FromSql<'a> for JsonValue {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<JsonValue, Box<dyn std::error::Error + Sync + Send>> {
        let text = match (*ty == Type::JSONB, raw.split_first()) {
            (true, Some((1, text))) => text,
            (true, _) => return Err("an unknown jsonb format".into()),
            (false, _) => raw,
        };
        Ok(JsonValue(serde_json::from_slice(text)?))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }
}

fn to_body(value: Value) -> Result<Body> {
    Ok(serde_json::from_value(value)?)
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

/// `names` as a literal of a text array: `'{"a","b"}'`.
fn text_array(names: &[String]) -> String {
    let elements: Vec<String> = names
        .iter()
        .map(|name| format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("'{{{}}}'", elements.join(",").replace('\'', "''"))
}

/// Whether PostgreSQL takes `name` as the index of an array element on a
/// path (`strtol`: spaces, a sign, digits).
fn index_like(name: &str) -> bool {
    let digits = name
        .trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r'])
        .trim_start_matches(['+', '-']);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The SQL of field `path`: its `jsonb` value, SQL NULL when it is not
/// there. A name on the way that PostgreSQL would take for the index of
/// an array element (`a.0`) reaches only into an object, as
/// [`FieldPath::get`] does.
fn field(path: &FieldPath) -> String {
    let names = path.segments();
    let value = format!("body #> {}", text_array(names));
    let guards: Vec<String> = (1..names.len())
        .filter(|&i| index_like(&names[i]))
        .map(|i| {
            format!(
                "jsonb_typeof(body #> {}) = 'object'",
                text_array(&names[..i])
            )
        })
        .collect();
    if guards.is_empty() {
        format!("({value})")
    } else {
        format!("(CASE WHEN {} THEN {value} END)", guards.join(" AND "))
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

/// Binds `value` as the next parameter; its placeholder.
fn bind(params: &mut Vec<Param>, value: impl ToSql + Sync + Send + 'static) -> String {
    params.push(Box::new(value));
    format!("${}", params.len())
}

fn param_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// `app = '...' AND collection = '...'`: what a declared index of the
/// collection is partial to.
fn selection(app: &str, collection: &str) -> Result<String> {
    Ok(format!(
        "app = {} AND collection = {}",
        literal(app)?,
        literal(collection)?
    ))
}

fn filter_sql(filter: &Filter, params: &mut Vec<Param>) -> String {
    match filter {
        Filter::Compare {
            field: path,
            op,
            value,
        } => {
            let x = field(path);
            let p = format!("{}::jsonb", bind(params, Jsonb::of(value)));
            match op {
                Comparison::Eq => format!("{x} = {p}"),
                Comparison::Ne => format!("{x} <> {p}"),
                range => {
                    let kind = match value {
                        Value::Number(_) => "number",
                        Value::String(_) => "string",
                        _ => return "FALSE".into(),
                    };
                    let op = match range {
                        Comparison::Lt => "<",
                        Comparison::Le => "<=",
                        Comparison::Gt => ">",
                        _ => ">=",
                    };
                    format!("({x} {op} {p} AND jsonb_typeof({x}) = '{kind}')")
                }
            }
        }
        Filter::In {
            field: path,
            values,
        } => {
            let values: Vec<Jsonb> = values.iter().map(Jsonb::of).collect();
            format!("{} = ANY({}::jsonb[])", field(path), bind(params, values))
        }
        Filter::Contains { field: path, value } => {
            let x = field(path);
            // An array holding the value contains `[value]`; a scalar of
            // the array's, not one inside an array in it.
            let p = bind(params, Jsonb::of(&Value::Array(vec![value.clone()])));
            format!("(jsonb_typeof({x}) = 'array' AND {x} @> {p}::jsonb)")
        }
        Filter::Exists {
            field: path,
            exists,
        } => {
            if *exists {
                format!("{} IS NOT NULL", field(path))
            } else {
                format!("{} IS NULL", field(path))
            }
        }
        Filter::And(all) => join(all, " AND ", params),
        Filter::Or(any) => join(any, " OR ", params),
    }
}

fn join(filters: &[Filter], with: &str, params: &mut Vec<Param>) -> String {
    let parts: Vec<String> = filters.iter().map(|f| filter_sql(f, params)).collect();
    format!("({})", parts.join(with))
}

/// The SQL that selects what `query` selects, in its order, and its
/// parameters.
fn query_sql(app: &str, query: &Query) -> Result<(String, Vec<Param>)> {
    let mut params = Vec::new();
    let mut sql = format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE {}",
        selection(app, &query.collection)?
    );
    if let Some(filter) = &query.filter {
        sql.push_str(" AND ");
        sql.push_str(&filter_sql(filter, &mut params));
    }
    let fields: Vec<String> = query.order.iter().map(|o| field(&o.field)).collect();
    for x in &fields {
        sql.push_str(&format!(" AND {x} IS NOT NULL"));
    }
    if let Some(cursor) = &query.after {
        if cursor.values.len() != query.order.len() {
            return Err(refused(format!(
                "a cursor has {} values for a query sorted by {} fields",
                cursor.values.len(),
                query.order.len()
            )));
        }
        let values: Vec<String> = cursor
            .values
            .iter()
            .map(|v| format!("{}::jsonb", bind(&mut params, Jsonb::of(v))))
            .collect();
        let mut alternatives = Vec::new();
        for k in 0..=fields.len() {
            let mut all: Vec<String> = (0..k)
                .map(|i| format!("{} = {}", fields[i], values[i]))
                .collect();
            if k == fields.len() {
                all.push(format!(
                    "id > {}::text",
                    bind(&mut params, cursor.id.clone())
                ));
            } else {
                let op = if query.order[k].descending { "<" } else { ">" };
                all.push(format!("{} {op} {}", fields[k], values[k]));
            }
            alternatives.push(format!("({})", all.join(" AND ")));
        }
        sql.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
        // The same, as a range an index seeks to.
        if let Some(first) = query.order.first() {
            let op = if first.descending { "<=" } else { ">=" };
            sql.push_str(&format!(" AND {} {op} {}", fields[0], values[0]));
        }
    }
    sql.push_str(" ORDER BY ");
    for (o, x) in query.order.iter().zip(&fields) {
        sql.push_str(x);
        sql.push_str(if o.descending { " DESC, " } else { ", " });
    }
    sql.push_str(&format!(
        "id LIMIT {}",
        bind(&mut params, i64::from(query.limit))
    ));
    Ok((sql, params))
}

/// The columns of one measure.
fn measure_sql(m: &Measure) -> String {
    let Some(path) = &m.field else {
        return match m.op {
            MeasureOp::Count => "count(*)".into(),
            // Only a count goes without a field: the others have no
            // numbers to work on.
            MeasureOp::Sum => "'0', 0::bigint".into(),
            MeasureOp::Avg => "NULL::float8".into(),
            _ => "NULL::text".into(),
        };
    };
    let x = field(path);
    let number = format!("CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x})::numeric END");
    match m.op {
        MeasureOp::Count => format!("count({x})"),
        // The sum, and how many of its terms were floats (a float is
        // written with a decimal point, see `write_json`).
        MeasureOp::Sum => {
            format!("sum({number})::text, count(CASE WHEN scale({number}) > 0 THEN 1 END)")
        }
        MeasureOp::Min => format!("min({number})::text"),
        MeasureOp::Max => format!("max({number})::text"),
        MeasureOp::Avg => format!("avg({number})::float8"),
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Reads one measure's columns from `row` at `at`; the column after.
fn measure_value(m: &Measure, row: &Row, at: usize) -> Result<(Value, usize)> {
    Ok(match m.op {
        MeasureOp::Count => (Value::from(row.try_get::<_, i64>(at)?), at + 1),
        MeasureOp::Sum => {
            let sum: Option<String> = row.try_get(at)?;
            let floats: i64 = row.try_get(at + 1)?;
            let value = match sum {
                None => Value::from(0),
                // Integers sum to an integer while it fits 64 bits, as
                // on SQLite.
                Some(text) => match text.parse::<i64>() {
                    Ok(sum) if floats == 0 => Value::from(sum),
                    _ => float(
                        text.parse::<f64>()
                            .map_err(|err| refused(err.to_string()))?,
                    ),
                },
            };
            (value, at + 2)
        }
        MeasureOp::Min | MeasureOp::Max => {
            let value: Option<String> = row.try_get(at)?;
            (
                value
                    .map(|text| serde_json::from_str(&text))
                    .transpose()?
                    .unwrap_or(Value::Null),
                at + 1,
            )
        }
        MeasureOp::Avg => (
            row.try_get::<_, Option<f64>>(at)?
                .map_or(Value::Null, float),
            at + 1,
        ),
    })
}

fn document_from_row(row: &Row) -> Result<Document> {
    Ok(Document {
        collection: row.try_get(0)?,
        id: row.try_get(1)?,
        version: row.try_get(2)?,
        body: to_body(row.try_get::<_, JsonValue>(3)?.0)?,
        created_ms: row.try_get(4)?,
        updated_ms: row.try_get(5)?,
    })
}

/// The documents `keys` name of `app` (locked for update if `lock`, in
/// the order of their keys), by key; a key with no document is missing.
async fn read_documents(
    tx: &impl GenericClient,
    app: &str,
    keys: &[(String, String)],
    lock: bool,
) -> Result<BTreeMap<(String, String), Document>> {
    if keys.is_empty() {
        return Ok(BTreeMap::new());
    }
    let (collections, ids): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(c, id)| (c.as_str(), id.as_str())).unzip();
    let sql = format!(
        "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE app = $1 \
         AND (collection, id) IN (SELECT * FROM unnest($2::text[], $3::text[])) \
         ORDER BY collection, id{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let statement = tx.prepare_cached(&sql).await?;
    let rows = tx.query(&statement, &[&app, &collections, &ids]).await?;
    rows.iter()
        .map(|row| {
            let d = document_from_row(row)?;
            Ok(((d.collection.clone(), d.id.clone()), d))
        })
        .collect()
}

/// Why an attempt at a write ended.
enum Attempt {
    Done(std::result::Result<Vec<Change>, WriteError>),
    /// Another transaction created a document this one was creating:
    /// start over, seeing it.
    Again,
}

async fn write_once(
    store: &PostgresStore,
    app: &str,
    writes: &[DocWrite],
    now_ms: i64,
    check: &dyn WriteCheck,
) -> Result<Attempt> {
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let mut keys: Vec<(String, String)> = writes
        .iter()
        .map(|w| (w.collection.clone(), w.id.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    let mut found = read_documents(&tx, app, &keys, true).await?;
    let current: Fetched = keys
        .into_iter()
        .map(|key| {
            let document = found.remove(&key);
            (key, document)
        })
        .collect();
    let changes = match apply_writes(writes, current.clone(), now_ms) {
        Ok(changes) => changes,
        Err(err) => return Ok(Attempt::Done(Err(err))),
    };
    let mut fetched = Fetched::new();
    let mut rounds = 0;
    let events = loop {
        match check.check(app, &changes, &fetched) {
            Verdict::Commit(events) => break events,
            Verdict::Refuse(why) => return Ok(Attempt::Done(Err(WriteError::Refused(why)))),
            Verdict::Need(_) if rounds == MAX_CHECK_ROUNDS => {
                return Ok(Attempt::Done(Err(WriteError::Refused(format!(
                    "the write's check asked for more documents {MAX_CHECK_ROUNDS} times and still could not decide; the write is refused"
                )))));
            }
            Verdict::Need(refs) => {
                rounds += 1;
                let mut unread = Vec::new();
                for key in refs {
                    if fetched.contains_key(&key) {
                        continue;
                    }
                    match current.get(&key) {
                        Some(document) => {
                            fetched.insert(key, document.clone());
                        }
                        None => unread.push(key),
                    }
                }
                unread.sort();
                unread.dedup();
                let mut read = read_documents(&tx, app, &unread, false).await?;
                for key in unread {
                    let document = read.remove(&key);
                    fetched.insert(key, document);
                }
            }
        }
    };

    for ((collection, id), state) in final_states(&changes) {
        let existed = current
            .get(&(collection.to_owned(), id.to_owned()))
            .is_some_and(Option::is_some);
        match state {
            Some(d) if existed => {
                let update = tx
                    .prepare_cached(
                        "UPDATE documents SET version = $4, body = $5::jsonb, updated_ms = $6 \
                         WHERE app = $1 AND collection = $2 AND id = $3",
                    )
                    .await?;
                tx.execute(
                    &update,
                    &[
                        &app,
                        &collection,
                        &id,
                        &d.version,
                        &body_json(&d.body),
                        &d.updated_ms,
                    ],
                )
                .await?;
            }
            Some(d) => {
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO documents (app, collection, id, version, body, created_ms, updated_ms) \
                         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) ON CONFLICT (app, collection, id) DO NOTHING",
                    )
                    .await?;
                let inserted = tx
                    .execute(
                        &insert,
                        &[
                            &app,
                            &collection,
                            &id,
                            &d.version,
                            &body_json(&d.body),
                            &d.created_ms,
                            &d.updated_ms,
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    return Ok(Attempt::Again);
                }
            }
            None => {
                let delete = tx
                    .prepare_cached(
                        "DELETE FROM documents WHERE app = $1 AND collection = $2 AND id = $3",
                    )
                    .await?;
                tx.execute(&delete, &[&app, &collection, &id]).await?;
            }
        }
    }
    insert_events(&tx, events).await?;
    if !changes.is_empty() {
        // No lock orders the records' commits (one would serialise every
        // write, fsync and all): a record may commit after one with a
        // higher seq, which followers wait for (see the trait).
        let record = tx
            .prepare_cached(
                "INSERT INTO document_changes (app, collection, id, version, body, at_ms) \
                 VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
            )
            .await?;
        for c in &changes {
            let (version, body) = match (&c.after, &c.before) {
                (Some(after), _) => (after.version, Some(body_json(&after.body))),
                (None, Some(before)) => (before.version, None),
                (None, None) => continue,
            };
            tx.execute(
                &record,
                &[&app, &c.collection, &c.id, &version, &body, &now_ms],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(Attempt::Done(Ok(changes)))
}

/// Whether an attempt that failed so is worth starting over.
fn worth_again(err: &Error) -> bool {
    matches!(err, Error::Pg(err) if err.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || err.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE))
}

/// The SQL that builds index `spec` of `app`'s `collection` (online, if
/// `concurrently`).
fn create_index_sql(
    app: &str,
    collection: &str,
    spec: &IndexSpec,
    concurrently: bool,
) -> Result<String> {
    let name = spec.index_name(app, collection);
    let how = if concurrently { "CONCURRENTLY " } else { "" };
    let columns = if spec.multi {
        format!("USING GIN ({} jsonb_path_ops)", field(&spec.fields[0]))
    } else {
        let columns: Vec<String> = spec.fields.iter().map(field).collect();
        format!("({}, id)", columns.join(", "))
    };
    Ok(format!(
        "CREATE INDEX {how}IF NOT EXISTS {name} ON documents {columns} WHERE {}",
        selection(app, collection)?
    ))
}

/// Drops the database indexes `names`, online.
pub(crate) async fn drop_indexes(client: &impl GenericClient, names: &[String]) -> Result<()> {
    for name in names {
        client
            .batch_execute(&format!(
                "DROP INDEX CONCURRENTLY IF EXISTS \"{}\"",
                name.replace('"', "\"\"")
            ))
            .await?;
    }
    Ok(())
}

/// Removes every document of `app`, its change records and the records
/// of its indexes inside the caller's transaction: the names of the
/// indexes, for the caller to drop (with [`drop_indexes`]) once it
/// committed.
pub(crate) async fn delete_app_documents(
    tx: &impl GenericClient,
    app: &str,
) -> Result<Vec<String>> {
    tx.execute("DELETE FROM documents WHERE app = $1", &[&app])
        .await?;
    tx.execute("DELETE FROM document_changes WHERE app = $1", &[&app])
        .await?;
    Ok(tx
        .query(
            "DELETE FROM document_indexes WHERE app = $1 RETURNING name",
            &[&app],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
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

fn specs_from_rows(rows: &[Row]) -> Result<Vec<CollectionIndexes>> {
    let mut indexes: BTreeMap<(String, String), Vec<IndexSpec>> = BTreeMap::new();
    for row in rows {
        let spec: &str = row.try_get(2)?;
        indexes
            .entry((row.try_get(0)?, row.try_get(1)?))
            .or_default()
            .push(IndexSpec::from_json(spec).map_err(refused)?);
    }
    Ok(collection_indexes(indexes))
}

/// Every document and declared index, for a dump, inside the caller's
/// transaction.
pub(crate) async fn export(
    tx: &impl GenericClient,
) -> Result<(Vec<StoredDocument>, Vec<CollectionIndexes>)> {
    let rows = tx
        .query(
            &format!(
                "SELECT {DOCUMENT_COLUMNS}, app FROM documents ORDER BY app COLLATE \"C\", collection, id"
            ),
            &[],
        )
        .await?;
    let documents = rows
        .iter()
        .map(|row| {
            Ok(StoredDocument {
                app: row.try_get(6)?,
                document: document_from_row(row)?,
            })
        })
        .collect::<Result<_>>()?;
    let rows = tx
        .query("SELECT app, collection, spec FROM document_indexes", &[])
        .await?;
    Ok((documents, specs_from_rows(&rows)?))
}

/// Loads the documents and indexes of a dump inside the caller's
/// transaction, building the indexes (in it: the store is new).
pub(crate) async fn import(
    tx: &impl GenericClient,
    documents: &[StoredDocument],
    indexes: &[CollectionIndexes],
) -> Result<()> {
    let insert = tx
        .prepare(
            "INSERT INTO documents (app, collection, id, version, body, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
        )
        .await?;
    for StoredDocument { app, document: d } in documents {
        tx.execute(
            &insert,
            &[
                app,
                &d.collection,
                &d.id,
                &d.version,
                &body_json(&d.body),
                &d.created_ms,
                &d.updated_ms,
            ],
        )
        .await?;
    }
    for c in indexes {
        for spec in &c.indexes {
            if let Some(why) = spec.problem() {
                return Err(refused(why));
            }
            tx.batch_execute(&create_index_sql(&c.app, &c.collection, spec, false)?)
                .await?;
            tx.execute(
                "INSERT INTO document_indexes (app, collection, name, spec) VALUES ($1, $2, $3, $4)",
                &[
                    &c.app,
                    &c.collection,
                    &spec.index_name(&c.app, &c.collection),
                    &spec.to_json(),
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// How many documents the store holds, for the check that an import goes
/// into an empty store.
pub(crate) const HELD: &str = "(SELECT COUNT(*) FROM documents) || ' documents'";

#[async_trait]
impl Documents for PostgresStore {
    async fn get_document(
        &self,
        app: &str,
        collection: &str,
        id: &str,
    ) -> StoreResult<Option<Document>> {
        run(async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE app = $1 AND collection = $2 AND id = $3"
                ))
                .await?;
            let row = client
                .query_opt(&statement, &[&app, &collection, &id])
                .await?;
            row.as_ref().map(document_from_row).transpose()
        })
        .await
    }

    async fn get_documents(
        &self,
        app: &str,
        refs: Vec<(String, String)>,
    ) -> StoreResult<Vec<Option<Document>>> {
        run(async {
            let client = self.client().await?;
            let mut keys = refs.clone();
            keys.sort();
            keys.dedup();
            let found = read_documents(&client, app, &keys, false).await?;
            Ok(refs.iter().map(|key| found.get(key).cloned()).collect())
        })
        .await
    }

    async fn query_documents(&self, app: &str, query: Query) -> StoreResult<Vec<Document>> {
        run(async {
            if let Some(why) = query.filter.as_ref().and_then(Filter::problem) {
                return Err(refused(why));
            }
            let (sql, params) = query_sql(app, &query)?;
            let rows = self
                .client()
                .await?
                .query(&sql, &param_refs(&params))
                .await?;
            rows.iter().map(document_from_row).collect()
        })
        .await
    }

    async fn aggregate_documents(&self, app: &str, a: Aggregation) -> StoreResult<Vec<Group>> {
        run(async {
            if let Some(why) = a.filter.as_ref().and_then(Filter::problem) {
                return Err(refused(why));
            }
            let mut params = Vec::new();
            let mut columns: Vec<String> = Vec::new();
            if let Some(path) = &a.group_by {
                columns.push(format!("COALESCE({}, 'null'::jsonb)", field(path)));
            }
            columns.extend(a.measures.iter().map(measure_sql));
            if columns.is_empty() {
                // An aggregate, for one row.
                columns.push("count(*)".into());
            }
            let mut sql = format!(
                "SELECT {} FROM documents WHERE {}",
                columns.join(", "),
                selection(app, &a.collection)?
            );
            if let Some(filter) = &a.filter {
                sql.push_str(" AND ");
                sql.push_str(&filter_sql(filter, &mut params));
            }
            if a.group_by.is_some() {
                sql.push_str(&format!(" GROUP BY 1 ORDER BY 1 LIMIT {MAX_GROUPS}"));
            }
            let rows = self
                .client()
                .await?
                .query(&sql, &param_refs(&params))
                .await?;
            let mut groups = Vec::with_capacity(rows.len());
            for row in &rows {
                let mut at = 0;
                let key = match &a.group_by {
                    Some(_) => {
                        at = 1;
                        Some(row.try_get::<_, JsonValue>(0)?.0)
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
        })
        .await
    }

    async fn count_documents(&self, app: &str, collection: &str, up_to: u64) -> StoreResult<u64> {
        run(async {
            let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
            let count: i64 = self
                .client()
                .await?
                .query_one(
                    "SELECT count(*) FROM (SELECT 1 FROM documents WHERE app = $1 AND collection = $2 LIMIT $3) held",
                    &[&app, &collection, &up_to],
                )
                .await?
                .get(0);
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
        run(async {
            for _ in 0..WRITE_ATTEMPTS {
                match write_once(self, app, &writes, now_ms, check.as_ref()).await {
                    Ok(Attempt::Done(done)) => return Ok(done),
                    Ok(Attempt::Again) => continue,
                    Err(err) if worth_again(&err) => continue,
                    Err(err) => return Err(err),
                }
            }
            Err(Error::Store(StoreError::Unavailable(format!(
                "a write of documents started over {WRITE_ATTEMPTS} times, each time beaten by another; try again"
            ))))
        })
        .await
    }

    async fn set_indexes(
        &self,
        app: &str,
        collection: &str,
        indexes: Vec<IndexSpec>,
    ) -> StoreResult<()> {
        run(async {
            for spec in &indexes {
                if let Some(why) = spec.problem() {
                    return Err(refused(why));
                }
            }
            let wanted: BTreeMap<String, IndexSpec> = indexes
                .into_iter()
                .map(|spec| (spec.index_name(app, collection), spec))
                .collect();
            let client = self.client().await?;
            let have: Vec<String> = client
                .query(
                    "SELECT name FROM document_indexes WHERE app = $1 AND collection = $2",
                    &[&app, &collection],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for name in &have {
                if !wanted.contains_key(name) {
                    client
                        .execute(
                            "DELETE FROM document_indexes WHERE app = $1 AND collection = $2 AND name = $3",
                            &[&app, &collection, name],
                        )
                        .await?;
                    drop_indexes(&client, std::slice::from_ref(name)).await?;
                }
            }
            for (name, spec) in &wanted {
                // A build that failed (or was cut short) leaves an invalid
                // index behind, which IF NOT EXISTS would keep.
                let invalid = client
                    .query_opt(
                        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                         WHERE c.relname = $1 AND NOT i.indisvalid",
                        &[name],
                    )
                    .await?
                    .is_some();
                if invalid {
                    drop_indexes(&client, std::slice::from_ref(name)).await?;
                }
                if invalid || !have.contains(name) {
                    client
                        .batch_execute(&create_index_sql(app, collection, spec, true)?)
                        .await?;
                    client
                        .execute(
                            "INSERT INTO document_indexes (app, collection, name, spec) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (app, collection, name) DO NOTHING",
                            &[&app, &collection, name, &spec.to_json()],
                        )
                        .await?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn list_indexes(&self, app: &str) -> StoreResult<Vec<CollectionIndexes>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT app, collection, spec FROM document_indexes WHERE app = $1",
                    &[&app],
                )
                .await?;
            specs_from_rows(&rows)
        })
        .await
    }

    async fn list_collections(&self, app: &str) -> StoreResult<Vec<CollectionUsage>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT collection, count(*), COALESCE(sum(octet_length(body::text)), 0)::bigint \
                     FROM documents WHERE app = $1 GROUP BY collection ORDER BY collection",
                    &[&app],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| CollectionUsage {
                    collection: row.get(0),
                    documents: row.get::<_, i64>(1) as u64,
                    bytes: row.get::<_, i64>(2) as u64,
                })
                .collect())
        })
        .await
    }

    async fn delete_collection(&self, app: &str, collection: &str) -> StoreResult<u64> {
        run(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let deleted = tx
                .execute(
                    "DELETE FROM documents WHERE app = $1 AND collection = $2",
                    &[&app, &collection],
                )
                .await?;
            let names: Vec<String> = tx
                .query(
                    "DELETE FROM document_indexes WHERE app = $1 AND collection = $2 RETURNING name",
                    &[&app, &collection],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            tx.commit().await?;
            drop_indexes(&client, &names).await?;
            Ok(deleted)
        })
        .await
    }

    async fn document_changes(&self, after: i64, limit: u32) -> StoreResult<Vec<ChangeRecord>> {
        run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT seq, app, collection, id, version, body, at_ms FROM document_changes \
                     WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&after, &i64::from(limit)],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(ChangeRecord {
                        seq: row.try_get(0)?,
                        app: row.try_get(1)?,
                        collection: row.try_get(2)?,
                        id: row.try_get(3)?,
                        version: row.try_get(4)?,
                        body: row
                            .try_get::<_, Option<JsonValue>>(5)?
                            .map(|b| to_body(b.0))
                            .transpose()?,
                        at_ms: row.try_get(6)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn last_document_change(&self) -> StoreResult<i64> {
        run(async {
            let last: i64 = self
                .client()
                .await?
                .query_one(
                    "SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('document_changes', 'seq')::regclass), 0)",
                    &[],
                )
                .await?
                .get(0);
            Ok(last)
        })
        .await
    }

    async fn trim_document_changes(&self, before_ms: i64) -> StoreResult<u64> {
        run(async {
            Ok(self
                .client()
                .await?
                .execute(
                    "DELETE FROM document_changes WHERE at_ms < $1",
                    &[&before_ms],
                )
                .await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> FieldPath {
        FieldPath::parse(p).unwrap()
    }

    #[test]
    fn paths_are_text_arrays_quoted_whole() {
        assert_eq!(field(&path("a.b")), r#"(body #> '{"a","b"}')"#);
        assert_eq!(
            field(&path(r#"it's.q"uo\te.{x,y}"#)),
            r#"(body #> '{"it''s","q\"uo\\te","{x,y}"}')"#
        );
        assert_eq!(
            field(&path("a.0.b. -1")),
            r#"(CASE WHEN jsonb_typeof(body #> '{"a"}') = 'object' AND jsonb_typeof(body #> '{"a","0","b"}') = 'object' THEN body #> '{"a","0","b"," -1"}' END)"#
        );
        assert!(index_like("+7") && index_like(" 12") && !index_like("1a") && !index_like("-"));
    }

    /// The server the tests use (as the conformance tests do).
    fn server() -> String {
        std::env::var("STRATUS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
    }

    async fn admin(sql: &str) {
        let (client, connection) = tokio_postgres::connect(&server(), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL (set STRATUS_TEST_POSTGRES)");
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    }

    /// A declared index serves equality on its fields, a range and order
    /// after them, and a multi index `contains`, once the planner knows
    /// the collection is large.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_use_the_declared_indexes() {
        use stratus_store::documents::{AllowAll, DocOp, Order};
        let database = format!("stratus_unit_plans_{}", std::process::id());
        admin(&format!("DROP DATABASE IF EXISTS {database}")).await;
        admin(&format!("CREATE DATABASE {database}")).await;
        let url = match server().rsplit_once('/') {
            Some((base, _)) => format!("{base}/{database}"),
            None => panic!("no database in {}", server()),
        };
        let store = PostgresStore::connect(&url, 2).await.unwrap();
        for chunk in 0..4 {
            let writes = (0..500)
                .map(|i| {
                    let n = chunk * 500 + i;
                    DocWrite {
                        collection: "people".into(),
                        id: format!("p{n:05}"),
                        op: DocOp::Create(
                            serde_json::from_value(serde_json::json!({
                                "address": {"city": format!("city-{}", n % 300)},
                                "age": n % 90,
                                "tags": [format!("t{}", n % 400), "all"],
                            }))
                            .unwrap(),
                        ),
                        if_version: None,
                    }
                })
                .collect();
            store
                .write_documents("it's", writes, 1, Arc::new(AllowAll))
                .await
                .unwrap()
                .unwrap();
        }
        let by_city_age = IndexSpec {
            fields: vec![path("address.city"), path("age")],
            multi: false,
        };
        let tags = IndexSpec {
            fields: vec![path("tags")],
            multi: true,
        };
        store
            .set_indexes("it's", "people", vec![by_city_age.clone(), tags.clone()])
            .await
            .unwrap();
        let client = store.client().await.unwrap();
        client.batch_execute("ANALYZE documents").await.unwrap();
        let plan = |q: Query| {
            let client = &client;
            async move {
                let (sql, params) = query_sql("it's", &q).unwrap();
                let rows = client
                    .query(&format!("EXPLAIN {sql}"), &param_refs(&params))
                    .await
                    .unwrap();
                rows.iter()
                    .map(|row| row.get::<_, String>(0))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        let query = |filter: Filter, order: Vec<Order>| Query {
            collection: "people".into(),
            filter: Some(filter),
            order,
            after: None,
            limit: 10,
        };
        let city = Filter::Compare {
            field: path("address.city"),
            op: Comparison::Eq,
            value: Value::from("city-7"),
        };
        let name = by_city_age.index_name("it's", "people");
        let used = plan(query(city.clone(), Vec::new())).await;
        assert!(used.contains(&name), "{used}");
        let older = Filter::Compare {
            field: path("age"),
            op: Comparison::Gt,
            value: Value::from(30),
        };
        let by_age = vec![Order {
            field: path("age"),
            descending: false,
        }];
        let used = plan(query(Filter::And(vec![city, older]), by_age)).await;
        assert!(used.contains(&name), "{used}");
        let tagged = Filter::Contains {
            field: path("tags"),
            value: Value::from("t17"),
        };
        let used = plan(query(tagged, Vec::new())).await;
        assert!(used.contains(&tags.index_name("it's", "people")), "{used}");
        drop(client);
        drop(store);
        admin(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await;
    }

    #[test]
    fn floats_stay_floats_in_jsonb() {
        let value =
            serde_json::json!({"f": 1e16, "g": -2.0, "h": 0.1, "i": 3, "j": 1e-7, "s": "a\"b"});
        let Jsonb(text) = Jsonb::of(&value);
        assert_eq!(
            text,
            r#"{"f":10000000000000000.0,"g":-2.0,"h":0.1,"i":3,"j":0.0000001,"s":"a\"b"}"#
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }
}
