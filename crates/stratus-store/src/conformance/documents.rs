//! Documents: queries that select and order as the Rust reference does
//! ([`Filter::matches`], [`Query::compare`]) for every operator and mix
//! of kinds, with and without declared indexes, page by page; aggregations;
//! writes with their operators, versions, checks, events and change
//! records, all or nothing, under concurrency; indexes, collections and
//! apps removed; documents kept across a reopen.
//!
//! Strings that are sorted or compared by range are lowercase ASCII here:
//! PostgreSQL orders strings by the database's collation (a documented
//! difference of the backends); everything else agrees exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::Fixture;
use crate::documents::{
    Aggregation, AllowAll, Body, Change, Comparison, Cursor, DocOp, DocWrite, Document, Fetched,
    FieldPath, Filter, Group, IndexSpec, MAX_CHECK_ROUNDS, Measure, MeasureOp, Order, Query,
    Update, Verdict, WriteCheck, WriteError, json_eq,
};
use crate::{NewEvent, Source, Store};

pub(crate) fn path(p: &str) -> FieldPath {
    FieldPath::parse(p).unwrap()
}

pub(crate) fn body(value: Value) -> Body {
    match value {
        Value::Object(fields) => fields,
        other => panic!("{other} is not an object"),
    }
}

fn doc_write(collection: &str, id: &str, op: DocOp) -> DocWrite {
    DocWrite {
        collection: collection.into(),
        id: id.into(),
        op,
        if_version: None,
    }
}

pub(crate) fn create(collection: &str, id: &str, value: Value) -> DocWrite {
    doc_write(collection, id, DocOp::Create(body(value)))
}

fn set(collection: &str, id: &str, value: Value) -> DocWrite {
    doc_write(collection, id, DocOp::Set(body(value)))
}

fn update(collection: &str, id: &str, update: Update) -> DocWrite {
    doc_write(collection, id, DocOp::Update(update))
}

fn delete(collection: &str, id: &str) -> DocWrite {
    doc_write(collection, id, DocOp::Delete)
}

fn if_version(mut write: DocWrite, version: i64) -> DocWrite {
    write.if_version = Some(version);
    write
}

/// Writes with a check that allows everything, at `now_ms`.
pub(crate) async fn write_at(
    store: &dyn Store,
    app: &str,
    now_ms: i64,
    writes: Vec<DocWrite>,
) -> Result<Vec<Change>, WriteError> {
    store
        .write_documents(app, writes, now_ms, Arc::new(AllowAll))
        .await
        .unwrap()
}

async fn write(
    store: &dyn Store,
    app: &str,
    writes: Vec<DocWrite>,
) -> Result<Vec<Change>, WriteError> {
    write_at(store, app, 100, writes).await
}

/// Creates the documents (id, body) in `collection`, as stored.
async fn load(
    store: &dyn Store,
    app: &str,
    collection: &str,
    docs: &[(String, Value)],
) -> Vec<Document> {
    let writes = docs
        .iter()
        .map(|(id, value)| create(collection, id, value.clone()))
        .collect();
    let changes = write(store, app, writes).await.unwrap();
    let stored: Vec<Document> = changes.into_iter().map(|c| c.after.unwrap()).collect();
    for (d, (_, value)) in stored.iter().zip(docs) {
        assert_eq!(Value::Object(d.body.clone()), *value, "kept as written");
    }
    stored
}

fn cmp(field: &str, op: &str, value: Value) -> Filter {
    Filter::Compare {
        field: path(field),
        op: Comparison::from_symbol(op).unwrap(),
        value,
    }
}

fn is_in(field: &str, values: Vec<Value>) -> Filter {
    Filter::In {
        field: path(field),
        values,
    }
}

fn contains(field: &str, value: Value) -> Filter {
    Filter::Contains {
        field: path(field),
        value,
    }
}

fn exists(field: &str, exists: bool) -> Filter {
    Filter::Exists {
        field: path(field),
        exists,
    }
}

fn asc(field: &str) -> Order {
    Order {
        field: path(field),
        descending: false,
    }
}

fn desc(field: &str) -> Order {
    Order {
        field: path(field),
        descending: true,
    }
}

fn query(collection: &str, filter: Option<Filter>, order: Vec<Order>, limit: u32) -> Query {
    Query {
        collection: collection.into(),
        filter,
        order,
        after: None,
        limit,
    }
}

fn ids(documents: &[Document]) -> Vec<&str> {
    documents.iter().map(|d| d.id.as_str()).collect()
}

/// What the reference selects of `documents`, in its order.
fn reference<'a>(documents: &'a [Document], query: &Query) -> Vec<&'a Document> {
    let mut selected: Vec<&Document> = documents
        .iter()
        .filter(|d| query.selects(&d.body))
        .collect();
    selected.sort_by(|a, b| query.compare(a, b));
    selected
}

/// Runs `query` (whole, then page by page in pages of `page`) and checks
/// that the store selects what the reference does, in the same order.
async fn agrees(store: &dyn Store, app: &str, documents: &[Document], query: &Query, page: u32) {
    let expected: Vec<&str> = reference(documents, query)
        .iter()
        .map(|d| d.id.as_str())
        .take(query.limit as usize)
        .collect();
    let got = store.query_documents(app, query.clone()).await.unwrap();
    assert_eq!(ids(&got), expected, "{query:?}");
    for d in &got {
        let stored = documents.iter().find(|s| s.id == d.id).unwrap();
        assert_eq!(d, stored, "whole documents");
    }
    let mut paged = Vec::new();
    let mut q = Query {
        limit: page,
        after: None,
        ..query.clone()
    };
    loop {
        let got = store.query_documents(app, q.clone()).await.unwrap();
        assert!(got.len() <= page as usize);
        let Some(last) = got.last() else { break };
        q.after = Some(q.cursor_after(last));
        paged.extend(got.iter().map(|d| d.id.clone()));
        if paged.len() > documents.len() {
            panic!("pages never end: {query:?}");
        }
    }
    let all: Vec<&str> = reference(documents, query)
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(paged, all, "page by page: {query:?}");
}

/// The ids `filter` selects of `collection`, as the store says; checked
/// against the reference too.
async fn selected(
    store: &dyn Store,
    app: &str,
    documents: &[Document],
    collection: &str,
    filter: Filter,
) -> Vec<String> {
    let q = query(collection, Some(filter), Vec::new(), 1000);
    let got = store.query_documents(app, q.clone()).await.unwrap();
    let expected: Vec<&str> = reference(documents, &q)
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(ids(&got), expected, "the reference agrees: {q:?}");
    got.into_iter().map(|d| d.id).collect()
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// Values of every kind in one field `v`, and what each operator selects
/// of them: equality by value across integers and floats, never across
/// kinds (a string "1", `true`, 1); null a value, unlike a missing field;
/// ranges within one kind; `!=` only where the field is there.
pub async fn filters_select_by_kind_as_the_reference_does(f: &dyn Fixture) {
    let store = f.open().await;
    let docs: Vec<(String, Value)> = [
        ("a", json!({"v": 1})),
        ("b", json!({"v": 1.0})),
        ("c", json!({"v": "1"})),
        ("d", json!({"v": true})),
        ("e", json!({"v": null})),
        ("f", json!({"w": 1})),
        ("g", json!({"v": [1, 2]})),
        ("h", json!({"v": {"w": 1}})),
        ("i", json!({"v": 2.5})),
        ("j", json!({"v": "abc"})),
        ("k", json!({"v": false})),
        ("l", json!({"v": 0})),
        ("m", json!({"v": "b"})),
        ("n", json!({"v": [[1], "x", null, true, 2.0]})),
        ("o", json!({"v": "[1,2]"})),
        ("p", json!({"v": -3})),
    ]
    .into_iter()
    .map(|(id, v)| (id.to_owned(), v))
    .collect();
    let stored = load(&*store, "a", "things", &docs).await;
    let sel = |filter: Filter| selected(&*store, "a", &stored, "things", filter);

    assert_eq!(sel(cmp("v", "==", json!(1))).await, strings(&["a", "b"]));
    assert_eq!(sel(cmp("v", "==", json!(1.0))).await, strings(&["a", "b"]));
    assert_eq!(sel(cmp("v", "==", json!("1"))).await, strings(&["c"]));
    assert_eq!(sel(cmp("v", "==", json!(true))).await, strings(&["d"]));
    assert_eq!(sel(cmp("v", "==", json!(false))).await, strings(&["k"]));
    assert_eq!(sel(cmp("v", "==", json!(0))).await, strings(&["l"]));
    assert_eq!(sel(cmp("v", "==", json!(null))).await, strings(&["e"]));
    assert_eq!(sel(cmp("v", "==", json!("[1,2]"))).await, strings(&["o"]));
    assert_eq!(sel(cmp("v", "==", json!("nope"))).await, strings(&[]));
    assert_eq!(
        sel(cmp("v", "!=", json!(1))).await,
        strings(&[
            "c", "d", "e", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"
        ])
    );
    assert_eq!(
        sel(cmp("v", "!=", json!(null))).await,
        strings(&[
            "a", "b", "c", "d", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"
        ])
    );
    assert_eq!(
        sel(cmp("v", "!=", json!(true))).await,
        strings(&[
            "a", "b", "c", "e", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p"
        ])
    );
    assert_eq!(
        sel(cmp("v", "<", json!(2))).await,
        strings(&["a", "b", "l", "p"])
    );
    assert_eq!(
        sel(cmp("v", "<=", json!(1))).await,
        strings(&["a", "b", "l", "p"])
    );
    assert_eq!(
        sel(cmp("v", ">=", json!(1))).await,
        strings(&["a", "b", "i"])
    );
    assert_eq!(sel(cmp("v", ">", json!(1))).await, strings(&["i"]));
    assert_eq!(
        sel(cmp("v", ">", json!(-3.5))).await,
        strings(&["a", "b", "i", "l", "p"])
    );
    assert_eq!(sel(cmp("v", ">", json!("a"))).await, strings(&["j", "m"]));
    assert_eq!(sel(cmp("v", ">=", json!("b"))).await, strings(&["m"]));
    assert_eq!(
        sel(cmp("v", "<", json!("b"))).await,
        strings(&["c", "j", "o"])
    );
    assert_eq!(
        sel(is_in(
            "v",
            vec![json!(1), json!("abc"), json!(null), json!(false)]
        ))
        .await,
        strings(&["a", "b", "e", "j", "k"])
    );
    assert_eq!(sel(is_in("v", vec![json!(true)])).await, strings(&["d"]));
    assert_eq!(
        sel(is_in("v", vec![json!("1"), json!(2.5), json!(7)])).await,
        strings(&["c", "i"])
    );
    assert_eq!(sel(exists("v", false)).await, strings(&["f"]));
    assert_eq!(sel(exists("v", true)).await.len(), 15);
    assert_eq!(sel(cmp("v.w", "==", json!(1))).await, strings(&["h"]));
    assert_eq!(sel(exists("v.w", true)).await, strings(&["h"]));
    assert_eq!(sel(cmp("w", "==", json!(1))).await, strings(&["f"]));
    // Contains: an element of an array, not one inside an array in it.
    assert_eq!(sel(contains("v", json!(1))).await, strings(&["g"]));
    assert_eq!(sel(contains("v", json!(2))).await, strings(&["g", "n"]));
    assert_eq!(sel(contains("v", json!("x"))).await, strings(&["n"]));
    assert_eq!(sel(contains("v", json!(null))).await, strings(&["n"]));
    assert_eq!(sel(contains("v", json!(true))).await, strings(&["n"]));
    assert_eq!(sel(contains("v", json!("1"))).await, strings(&[]));
    assert_eq!(sel(contains("v", json!("abc"))).await, strings(&[]));
    assert_eq!(sel(contains("v.w", json!(1))).await, strings(&[]));
    assert_eq!(
        sel(Filter::And(vec![
            cmp("v", ">=", json!(1)),
            cmp("v", "<", json!(2))
        ]))
        .await,
        strings(&["a", "b"])
    );
    assert_eq!(
        sel(Filter::Or(vec![
            cmp("v", "==", json!("abc")),
            cmp("v", "==", json!(true)),
            Filter::And(vec![exists("v", false), cmp("w", ">", json!(0))]),
        ]))
        .await,
        strings(&["d", "f", "j"])
    );

    // A filter the reference refuses, the store refuses too.
    let refused = store
        .query_documents(
            "a",
            query("things", Some(Filter::And(Vec::new())), Vec::new(), 10),
        )
        .await;
    assert!(refused.is_err());
    // Another app's collection of the same name is another collection.
    assert!(
        store
            .query_documents("b", query("things", None, Vec::new(), 10))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Field names that need quoting in a path, paths through arrays and
/// objects, names that look like the index of an array element.
pub async fn nested_paths_and_odd_names_are_fields(f: &dyn Fixture) {
    let store = f.open().await;
    let docs: Vec<(String, Value)> = [
        (
            "a",
            json!({"arr": ["x", "y"], "it's": 1, "q\"uote": {"in\\side": 2}}),
        ),
        (
            "b",
            json!({"arr": {"0": "x", "-1": "z"}, "a b": {"c d": 3}, "[0]": 4}),
        ),
        (
            "c",
            json!({"arr": [{"0": "x"}], "{x,y}": 5, "NULL": 6, "é": {"ü": "ß"}}),
        ),
        (
            "d",
            json!({"deep": {"er": {"est": {"x": 1}}}, "arr": "x", "tab\there": 7}),
        ),
    ]
    .into_iter()
    .map(|(id, v)| (id.to_owned(), v))
    .collect();
    let stored = load(&*store, "a", "odd", &docs).await;
    let sel = |filter: Filter| selected(&*store, "a", &stored, "odd", filter);
    assert_eq!(sel(cmp("arr.0", "==", json!("x"))).await, strings(&["b"]));
    assert_eq!(sel(cmp("arr.-1", "==", json!("z"))).await, strings(&["b"]));
    assert_eq!(sel(exists("arr.0", true)).await, strings(&["b"]));
    assert_eq!(sel(exists("arr.0.0", true)).await, strings(&[]));
    assert_eq!(sel(cmp("it's", "==", json!(1))).await, strings(&["a"]));
    assert_eq!(
        sel(cmp("q\"uote.in\\side", "==", json!(2))).await,
        strings(&["a"])
    );
    assert_eq!(sel(cmp("a b.c d", "==", json!(3))).await, strings(&["b"]));
    assert_eq!(sel(cmp("[0]", "==", json!(4))).await, strings(&["b"]));
    assert_eq!(sel(cmp("{x,y}", "==", json!(5))).await, strings(&["c"]));
    assert_eq!(sel(cmp("NULL", "==", json!(6))).await, strings(&["c"]));
    assert_eq!(sel(cmp("é.ü", "==", json!("ß"))).await, strings(&["c"]));
    assert_eq!(sel(cmp("tab\there", "==", json!(7))).await, strings(&["d"]));
    assert_eq!(
        sel(cmp("deep.er.est.x", ">", json!(0))).await,
        strings(&["d"])
    );
    assert_eq!(sel(cmp("deep.er", "!=", json!(1))).await, strings(&["d"]));
    assert_eq!(sel(contains("arr", json!("x"))).await, strings(&["a"]));

    // Indexes on such fields are made and serve the same answers.
    store
        .set_indexes(
            "a",
            "odd",
            vec![
                IndexSpec {
                    fields: vec![path("it's"), path("q\"uote.in\\side")],
                    multi: false,
                },
                IndexSpec {
                    fields: vec![path("arr.0")],
                    multi: false,
                },
                IndexSpec {
                    fields: vec![path("arr")],
                    multi: true,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(sel(cmp("arr.0", "==", json!("x"))).await, strings(&["b"]));
    assert_eq!(sel(cmp("it's", "==", json!(1))).await, strings(&["a"]));
    assert_eq!(sel(contains("arr", json!("x"))).await, strings(&["a"]));
    let sorted = query("odd", None, vec![desc("arr.0")], 10);
    agrees(&*store, "a", &stored, &sorted, 1).await;
}

/// `contains` means the same on a field a multi index names, kept with
/// every write, as on one it does not.
pub async fn contains_agrees_with_and_without_a_multi_index(f: &dyn Fixture) {
    let store = f.open().await;
    let docs: Vec<(String, Value)> = [
        ("a", json!({"tags": ["red", "green"]})),
        ("b", json!({"tags": ["blue", 1, true, null]})),
        ("c", json!({"tags": "red"})),
        ("d", json!({"tags": [["red"]]})),
        ("e", json!({"tags": {"x": "red"}})),
        ("f", json!({"tags": [1.0, "Red", false]})),
        ("g", json!({"other": ["red"]})),
        ("h", json!({"tags": ["red", "red", 1, 1.0]})),
    ]
    .into_iter()
    .map(|(id, v)| (id.to_owned(), v))
    .collect();
    let mut stored = load(&*store, "a", "tagged", &docs).await;
    let probes = [
        (json!("red"), vec!["a", "h"]),
        (json!("Red"), vec!["f"]),
        (json!(1), vec!["b", "f", "h"]),
        (json!(1.0), vec!["b", "f", "h"]),
        (json!(true), vec!["b"]),
        (json!(false), vec!["f"]),
        (json!(null), vec!["b"]),
        (json!("1"), vec![]),
        (json!("blue"), vec!["b"]),
    ];
    for (value, expected) in &probes {
        let got = selected(
            &*store,
            "a",
            &stored,
            "tagged",
            contains("tags", value.clone()),
        )
        .await;
        assert_eq!(got, strings(expected), "contains {value} without an index");
    }
    let multi = IndexSpec {
        fields: vec![path("tags")],
        multi: true,
    };
    store
        .set_indexes("a", "tagged", vec![multi.clone()])
        .await
        .unwrap();
    for (value, expected) in &probes {
        let got = selected(
            &*store,
            "a",
            &stored,
            "tagged",
            contains("tags", value.clone()),
        )
        .await;
        assert_eq!(got, strings(expected), "contains {value} with an index");
    }

    // Kept with writes: pushes, pulls, replacements, deletions, creations.
    let push = Update {
        push: vec![(path("tags"), vec![json!("red")])],
        ..Update::default()
    };
    let pull = Update {
        pull: vec![(path("tags"), vec![json!("red")])],
        ..Update::default()
    };
    write(
        &*store,
        "a",
        vec![
            update("tagged", "b", push),
            update("tagged", "a", pull),
            set("tagged", "c", json!({"tags": ["red"]})),
            delete("tagged", "h"),
            create("tagged", "i", json!({"tags": ["red", 2]})),
            // Created and deleted in one write: never there.
            create("tagged", "j", json!({"tags": ["red"]})),
            delete("tagged", "j"),
        ],
    )
    .await
    .unwrap();
    stored = store
        .query_documents("a", query("tagged", None, Vec::new(), 100))
        .await
        .unwrap();
    assert_eq!(
        selected(
            &*store,
            "a",
            &stored,
            "tagged",
            contains("tags", json!("red"))
        )
        .await,
        strings(&["b", "c", "i"])
    );
    assert_eq!(
        selected(
            &*store,
            "a",
            &stored,
            "tagged",
            contains("tags", json!("green"))
        )
        .await,
        strings(&["a"])
    );
    assert_eq!(
        selected(&*store, "a", &stored, "tagged", contains("tags", json!(1))).await,
        strings(&["b", "f"])
    );
    // Combined with other filters.
    assert_eq!(
        selected(
            &*store,
            "a",
            &stored,
            "tagged",
            Filter::Or(vec![
                contains("tags", json!(2)),
                Filter::And(vec![
                    contains("tags", json!("red")),
                    contains("tags", json!(true))
                ]),
            ]),
        )
        .await,
        strings(&["b", "i"])
    );
    // Dropped: the same answers.
    store.set_indexes("a", "tagged", Vec::new()).await.unwrap();
    assert_eq!(
        selected(
            &*store,
            "a",
            &stored,
            "tagged",
            contains("tags", json!("red"))
        )
        .await,
        strings(&["b", "c", "i"])
    );
    // Declared again over documents already there.
    store.set_indexes("a", "tagged", vec![multi]).await.unwrap();
    assert_eq!(
        selected(
            &*store,
            "a",
            &stored,
            "tagged",
            contains("tags", json!("red"))
        )
        .await,
        strings(&["b", "c", "i"])
    );
}

/// Sorting by several fields in mixed directions, then by id; documents
/// without a sort field left out; pages of a cursor continue exactly.
pub async fn sorts_on_several_fields_and_pages_through_them(f: &dyn Fixture) {
    let store = f.open().await;
    let mut docs = Vec::new();
    for i in 0..50u32 {
        let group = ["apple", "banana", "cherry"][(i % 3) as usize];
        let mut d = json!({
            "group": group,
            "rank": (i * 7) % 11,
            "score": f64::from(i % 4) / 2.0,
            "nested": {"level": i % 5},
        });
        if i % 9 == 4 {
            d.as_object_mut().unwrap().remove("rank");
        }
        if i % 13 == 6 {
            d["group"] = json!(null);
        }
        docs.push((format!("doc-{:02}", (i * 17) % 50), d));
    }
    let stored = load(&*store, "a", "sorted", &docs).await;
    let orders = [
        vec![],
        vec![asc("rank")],
        vec![desc("rank")],
        vec![asc("group"), desc("rank")],
        vec![desc("group"), asc("score"), desc("nested.level")],
        vec![desc("score"), desc("rank")],
        vec![asc("nested.level"), asc("score"), asc("rank")],
    ];
    let filters = [
        None,
        Some(cmp("rank", ">", json!(3))),
        Some(cmp("score", "<=", json!(1))),
        Some(Filter::Or(vec![
            cmp("group", "==", json!("banana")),
            cmp("nested.level", "==", json!(0)),
        ])),
    ];
    for order in &orders {
        for filter in &filters {
            let q = query("sorted", filter.clone(), order.clone(), 1000);
            agrees(&*store, "a", &stored, &q, 7).await;
        }
    }
    // A limit takes the first of the order.
    let q = query("sorted", None, vec![desc("rank"), asc("group")], 5);
    agrees(&*store, "a", &stored, &q, 2).await;
    let q = query("sorted", None, vec![asc("rank")], 0);
    assert!(store.query_documents("a", q).await.unwrap().is_empty());
    // A cursor from outside the collection's values starts where it falls.
    let q = Query {
        after: Some(Cursor {
            values: vec![json!(4.5)],
            id: "zzz".into(),
        }),
        ..query("sorted", None, vec![asc("rank")], 1000)
    };
    let got = store.query_documents("a", q.clone()).await.unwrap();
    let expected: Vec<&str> = reference(&stored, &q)
        .iter()
        .filter(|d| d.body["rank"].as_f64().unwrap() > 4.5)
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(ids(&got), expected);
    // A cursor of the wrong shape is refused.
    let q = Query {
        after: Some(Cursor {
            values: Vec::new(),
            id: "doc-01".into(),
        }),
        ..query("sorted", None, vec![asc("rank")], 10)
    };
    assert!(store.query_documents("a", q).await.is_err());
}

/// A field of many kinds sorts in an order of the backend's own across
/// kinds, and of the reference's within each; pages through it meet every
/// document once.
pub async fn sorting_across_kinds_pages_each_document_once(f: &dyn Fixture) {
    let store = f.open().await;
    let values = [
        json!(null),
        json!(null),
        json!(true),
        json!(false),
        json!(3),
        json!(-1.5),
        json!(3.0),
        json!(10),
        json!("b"),
        json!("a"),
        json!("ab"),
        json!([1, 2]),
        json!([]),
        json!({"x": 1}),
        json!({}),
        json!(0),
    ];
    let mut docs: Vec<(String, Value)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("k{:02}", (i * 5) % 16), json!({ "k": v })))
        .collect();
    docs.push(("none".into(), json!({"other": 1})));
    let stored = load(&*store, "a", "kinds", &docs).await;
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        _ => 4,
    };
    for descending in [false, true] {
        for page in [1, 3, 100] {
            let mut q = query(
                "kinds",
                None,
                vec![Order {
                    field: path("k"),
                    descending,
                }],
                page,
            );
            let mut seen: Vec<Document> = Vec::new();
            loop {
                let got = store.query_documents("a", q.clone()).await.unwrap();
                let Some(last) = got.last() else { break };
                q.after = Some(q.cursor_after(last));
                seen.extend(got);
                assert!(seen.len() <= stored.len());
            }
            let mut met: Vec<&str> = ids(&seen);
            met.sort();
            let mut all: Vec<&str> = stored
                .iter()
                .filter(|d| d.id != "none")
                .map(|d| d.id.as_str())
                .collect();
            all.sort();
            assert_eq!(
                met, all,
                "each once, descending {descending}, pages of {page}"
            );
            // Within a kind that orders, as the reference.
            for kind in 0..4 {
                let of_kind: Vec<&Document> =
                    seen.iter().filter(|d| rank(&d.body["k"]) == kind).collect();
                let mut expected = of_kind.clone();
                expected.sort_by(|a, b| q.compare(a, b));
                let of_kind: Vec<&str> = of_kind.iter().map(|d| d.id.as_str()).collect();
                let expected: Vec<&str> = expected.iter().map(|d| d.id.as_str()).collect();
                assert_eq!(of_kind, expected, "kind {kind}, descending {descending}");
            }
        }
    }
}

/// A small, fixed pseudo-random generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

fn random_document(rng: &mut Rng) -> Value {
    let mut d = serde_json::Map::new();
    let words = ["apple", "banana", "cherry", "date", "fig", "grape", "kiwi"];
    if rng.below(10) > 0 {
        let n = rng.below(21) as i64 - 5;
        d.insert(
            "n".into(),
            if rng.below(4) == 0 {
                json!(n as f64 + 0.5)
            } else {
                json!(n)
            },
        );
    }
    if rng.below(8) > 0 {
        d.insert("s".into(), json!(rng.pick(&words)));
    }
    let mixed = [
        json!(1),
        json!(1.0),
        json!(2),
        json!("1"),
        json!("apple"),
        json!(true),
        json!(false),
        json!(null),
        json!([1, "apple"]),
        json!({"n": 1}),
        json!(0),
        json!(-2.5),
    ];
    if rng.below(6) > 0 {
        d.insert("m".into(), rng.pick(&mixed));
    }
    let elements = [
        json!("red"),
        json!("green"),
        json!("blue"),
        json!(1),
        json!(2),
        json!(true),
        json!(null),
    ];
    match rng.below(6) {
        0 => {}
        1 => {
            d.insert("tags".into(), json!("red"));
        }
        2 => {
            d.insert("tags".into(), json!([["red"], "blue"]));
        }
        _ => {
            let items: Vec<Value> = (0..rng.below(4)).map(|_| rng.pick(&elements)).collect();
            d.insert("tags".into(), Value::Array(items));
        }
    }
    match rng.below(5) {
        0 => {}
        1 => {
            d.insert("addr".into(), json!("nowhere"));
        }
        _ => {
            d.insert(
                "addr".into(),
                json!({"city": rng.pick(&["lyon", "nice", "paris"]), "zip": rng.below(5)}),
            );
        }
    }
    if rng.below(3) > 0 {
        d.insert(
            "b".into(),
            rng.pick(&[json!(true), json!(false), json!(1), json!(0)]),
        );
    }
    Value::Object(d)
}

fn random_leaf(rng: &mut Rng) -> Filter {
    let numbers = [
        json!(-3),
        json!(0),
        json!(1),
        json!(1.0),
        json!(2.5),
        json!(7),
    ];
    let words = [
        json!("apple"),
        json!("banana"),
        json!("cherry"),
        json!("fig"),
        json!("zzz"),
    ];
    let scalars = [
        json!(1),
        json!(1.0),
        json!("1"),
        json!("apple"),
        json!(true),
        json!(false),
        json!(null),
        json!(0),
        json!(2),
    ];
    match rng.below(14) {
        0 => cmp(
            "n",
            rng.pick(&["==", "!=", "<", "<=", ">", ">="]),
            rng.pick(&numbers),
        ),
        1 => cmp(
            "s",
            rng.pick(&["==", "!=", "<", "<=", ">", ">="]),
            rng.pick(&words),
        ),
        2 => cmp("m", rng.pick(&["==", "!="]), rng.pick(&scalars)),
        3 => cmp(
            "m",
            rng.pick(&["<", ">="]),
            rng.pick(&[json!(1), json!("apple"), json!(0)]),
        ),
        4 => is_in(
            "m",
            vec![rng.pick(&scalars), rng.pick(&scalars), rng.pick(&scalars)],
        ),
        5 => is_in("s", vec![rng.pick(&words), rng.pick(&words)]),
        6 => contains(
            "tags",
            rng.pick(&[
                json!("red"),
                json!("blue"),
                json!(1),
                json!(true),
                json!(null),
                json!(1.0),
            ]),
        ),
        7 => exists(
            rng.pick(&["n", "m", "tags", "addr.city", "b"]),
            rng.below(2) == 0,
        ),
        8 => cmp(
            "addr.city",
            rng.pick(&["==", "!=", ">"]),
            json!(rng.pick(&["lyon", "paris", "nice"])),
        ),
        9 => cmp(
            "addr.zip",
            rng.pick(&["<", ">=", "=="]),
            json!(rng.below(5)),
        ),
        10 => cmp(
            "b",
            rng.pick(&["==", "!="]),
            rng.pick(&[json!(true), json!(1), json!(false), json!(0)]),
        ),
        11 => cmp("m.n", "==", json!(1)),
        12 => contains("m", rng.pick(&[json!(1), json!("apple")])),
        _ => is_in("n", vec![rng.pick(&numbers), rng.pick(&numbers)]),
    }
}

fn random_filter(rng: &mut Rng, depth: u32) -> Filter {
    if depth == 0 || rng.below(3) == 0 {
        return random_leaf(rng);
    }
    let parts = (0..2 + rng.below(2))
        .map(|_| random_filter(rng, depth - 1))
        .collect();
    if rng.below(2) == 0 {
        Filter::And(parts)
    } else {
        Filter::Or(parts)
    }
}

/// Many pseudo-random queries over pseudo-random documents: the store
/// answers each as the reference does, with and without indexes, whole and
/// in pages of 7.
pub async fn random_queries_agree_with_the_reference(f: &dyn Fixture) {
    let store = f.open().await;
    let mut rng = Rng(42);
    let docs: Vec<(String, Value)> = (0..60)
        .map(|i| (format!("d{:03}", (i * 37) % 100), random_document(&mut rng)))
        .collect();
    let stored = load(&*store, "a", "random", &docs).await;
    let orders = [
        vec![],
        vec![asc("n")],
        vec![desc("n")],
        vec![asc("s"), desc("n")],
        vec![desc("s"), asc("addr.city")],
        vec![asc("addr.city"), asc("addr.zip"), desc("n")],
        vec![desc("addr.zip")],
    ];
    let queries: Vec<Query> = (0..120)
        .map(|i| {
            let filter = (i % 10 != 0).then(|| random_filter(&mut rng, 2));
            let order = rng.pick(&orders);
            query("random", filter, order, [1000, 5, 1][i % 3])
        })
        .collect();
    for (i, q) in queries.iter().enumerate() {
        agrees(&*store, "a", &stored, q, if i % 4 == 0 { 7 } else { 1000 }).await;
    }
    store
        .set_indexes(
            "a",
            "random",
            vec![
                IndexSpec {
                    fields: vec![path("n")],
                    multi: false,
                },
                IndexSpec {
                    fields: vec![path("s"), path("n")],
                    multi: false,
                },
                IndexSpec {
                    fields: vec![path("addr.city"), path("addr.zip")],
                    multi: false,
                },
                IndexSpec {
                    fields: vec![path("m")],
                    multi: false,
                },
                IndexSpec {
                    fields: vec![path("tags")],
                    multi: true,
                },
            ],
        )
        .await
        .unwrap();
    for (i, q) in queries.iter().enumerate() {
        agrees(&*store, "a", &stored, q, if i % 4 == 1 { 7 } else { 1000 }).await;
    }
}

fn measure(name: &str, op: MeasureOp, field: Option<&str>) -> Measure {
    Measure {
        name: name.into(),
        op,
        field: field.map(path),
    }
}

fn values(group: &Group) -> Value {
    Value::Object(group.values.clone())
}

/// Counts, sums, least, greatest and mean values, in one group or grouped
/// by a field; only numbers are summed; integers sum to integers.
pub async fn aggregations_count_sum_and_average_numbers(f: &dyn Fixture) {
    let store = f.open().await;
    let docs: Vec<(String, Value)> = [
        (
            "s1",
            json!({"region": "east", "units": 3, "price": 2.5, "note": "x"}),
        ),
        ("s2", json!({"region": "west", "units": 5, "price": 1.25})),
        (
            "s3",
            json!({"region": "east", "units": 10, "price": "free"}),
        ),
        ("s4", json!({"region": "north", "units": -2, "price": 2.25})),
        ("s5", json!({"units": 7, "price": null})),
        (
            "s6",
            json!({"region": null, "units": "many", "price": 0.25}),
        ),
        ("s7", json!({"region": "west", "units": 4.5})),
        (
            "s8",
            json!({"region": "east", "units": 9_007_199_254_740_993_i64}),
        ),
    ]
    .into_iter()
    .map(|(id, v)| (id.to_owned(), v))
    .collect();
    load(&*store, "a", "sales", &docs).await;
    let all = vec![
        measure("n", MeasureOp::Count, None),
        measure("priced", MeasureOp::Count, Some("price")),
        measure("units", MeasureOp::Sum, Some("units")),
        measure("low", MeasureOp::Min, Some("units")),
        measure("high", MeasureOp::Max, Some("units")),
        measure("mean", MeasureOp::Avg, Some("price")),
        measure("revenue", MeasureOp::Sum, Some("price")),
        measure("noted", MeasureOp::Count, Some("note")),
        measure("nothing", MeasureOp::Sum, Some("missing")),
        measure("none", MeasureOp::Min, Some("missing")),
    ];
    let aggregate = |filter: Option<Filter>, group_by: Option<&str>, measures: Vec<Measure>| {
        let store = store.clone();
        let a = Aggregation {
            collection: "sales".into(),
            filter,
            group_by: group_by.map(path),
            measures,
        };
        async move { store.aggregate_documents("a", a).await.unwrap() }
    };

    let integers = Some(Filter::And(vec![
        cmp("units", "<", json!(100)),
        cmp("units", ">", json!(-100)),
    ]));
    let one = aggregate(integers.clone(), None, all.clone()).await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].key, None);
    assert_eq!(
        values(&one[0]),
        json!({
            "n": 6, "priced": 5, "units": 27.5, "low": -2, "high": 10,
            "mean": 2.0, "revenue": 6.0, "noted": 1, "nothing": 0, "none": null,
        })
    );
    let whole = Some(Filter::And(vec![
        cmp("units", "<", json!(100)),
        cmp("units", "!=", json!(4.5)),
    ]));
    let sums = aggregate(
        whole,
        None,
        vec![
            measure("units", MeasureOp::Sum, Some("units")),
            measure("mean", MeasureOp::Avg, Some("units")),
        ],
    )
    .await;
    assert_eq!(
        sums[0].values["units"],
        json!(23),
        "integers sum to an integer"
    );
    assert!(sums[0].values["units"].is_i64());
    assert_eq!(sums[0].values["mean"], json!(4.6));
    // Nothing selected: still one group.
    let empty = aggregate(Some(cmp("region", "==", json!("south"))), None, all.clone()).await;
    assert_eq!(
        empty,
        vec![Group {
            key: None,
            values: body(json!({
                "n": 0, "priced": 0, "units": 0, "low": null, "high": null,
                "mean": null, "revenue": 0, "noted": 0, "nothing": 0, "none": null,
            })),
        }]
    );
    // Integers sum exactly, past what a float holds.
    let big = aggregate(
        Some(cmp("region", "==", json!("east"))),
        None,
        vec![
            measure("units", MeasureOp::Sum, Some("units")),
            measure("high", MeasureOp::Max, Some("units")),
        ],
    )
    .await;
    assert_eq!(big[0].values["high"], json!(9_007_199_254_740_993_i64));
    assert_eq!(big[0].values["units"], json!(9_007_199_254_741_006_i64));
    // A sum past what 64 bits hold is a float.
    write(
        &*store,
        "a",
        vec![
            create("huge", "a", json!({"v": i64::MAX})),
            create("huge", "b", json!({"v": 1})),
            create("huge", "c", json!({"v": i64::MIN})),
        ],
    )
    .await
    .unwrap();
    let huge = |filter: Filter| {
        let store = store.clone();
        async move {
            store
                .aggregate_documents(
                    "a",
                    Aggregation {
                        collection: "huge".into(),
                        filter: Some(filter),
                        group_by: None,
                        measures: vec![measure("v", MeasureOp::Sum, Some("v"))],
                    },
                )
                .await
                .unwrap()[0]
                .values["v"]
                .clone()
        }
    };
    assert_eq!(
        huge(cmp("v", ">", json!(0))).await,
        json!(9.223_372_036_854_776e18)
    );
    assert_eq!(huge(exists("v", true)).await, json!(0));
    assert_eq!(huge(cmp("v", "<", json!(1))).await, json!(i64::MIN));

    // Grouped: by key, documents without it (or with null) keyed null.
    let grouped = aggregate(
        integers,
        Some("region"),
        vec![
            measure("n", MeasureOp::Count, None),
            measure("units", MeasureOp::Sum, Some("units")),
            measure("mean", MeasureOp::Avg, Some("units")),
        ],
    )
    .await;
    let by_key: Vec<(Option<Value>, Value)> =
        grouped.iter().map(|g| (g.key.clone(), values(g))).collect();
    assert_eq!(
        by_key,
        vec![
            (Some(json!(null)), json!({"n": 1, "units": 7, "mean": 7.0})),
            (
                Some(json!("east")),
                json!({"n": 2, "units": 13, "mean": 6.5})
            ),
            (
                Some(json!("north")),
                json!({"n": 1, "units": -2, "mean": -2.0})
            ),
            (
                Some(json!("west")),
                json!({"n": 2, "units": 9.5, "mean": 4.75})
            ),
        ]
    );
    // A document whose key is null and one without it share a group.
    let nulls = aggregate(
        Some(exists("region", false)),
        Some("region"),
        vec![measure("n", MeasureOp::Count, None)],
    )
    .await;
    assert_eq!(nulls.len(), 1);
    assert_eq!(nulls[0].key, Some(json!(null)));
    let with_null = aggregate(
        Some(Filter::Or(vec![
            exists("region", false),
            cmp("region", "==", json!(null)),
        ])),
        Some("region"),
        vec![measure("n", MeasureOp::Count, None)],
    )
    .await;
    assert_eq!(with_null.len(), 1);
    assert_eq!(with_null[0].values["n"], json!(2));
    // Grouped by numbers: 1 and 1.0 are one key; by value.
    write(
        &*store,
        "a",
        vec![
            create("scores", "a", json!({"k": 1, "v": 1})),
            create("scores", "b", json!({"k": 1.0, "v": 2})),
            create("scores", "c", json!({"k": 2, "v": 3})),
            create("scores", "d", json!({"k": -1, "v": 4})),
            create("scores", "e", json!({"k": 10, "v": 5})),
        ],
    )
    .await
    .unwrap();
    let groups = store
        .aggregate_documents(
            "a",
            Aggregation {
                collection: "scores".into(),
                filter: None,
                group_by: Some(path("k")),
                measures: vec![measure("v", MeasureOp::Sum, Some("v"))],
            },
        )
        .await
        .unwrap();
    let keys: Vec<Value> = groups.iter().map(|g| g.key.clone().unwrap()).collect();
    assert_eq!(groups.len(), 4);
    for (key, expected) in keys.iter().zip([json!(-1), json!(1), json!(2), json!(10)]) {
        assert!(json_eq(key, &expected), "{key} is {expected}");
    }
    let sums: Vec<&Value> = groups.iter().map(|g| &g.values["v"]).collect();
    assert_eq!(sums, [&json!(4), &json!(3), &json!(3), &json!(5)]);
    // No measures at all: the groups alone.
    let bare = store
        .aggregate_documents(
            "a",
            Aggregation {
                collection: "scores".into(),
                filter: None,
                group_by: None,
                measures: Vec::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        bare,
        vec![Group {
            key: None,
            values: Body::new()
        }]
    );
}

/// Create, set, update and delete, with each operator of an update;
/// versions count writes; created_ms is kept, updated_ms stamped; a later
/// write of a batch sees an earlier one.
pub async fn every_write_and_update_operator_applies(f: &dyn Fixture) {
    let store = f.open().await;
    let changes = write_at(
        &*store,
        "a",
        10,
        vec![create(
            "users",
            "u1",
            json!({"name": "ann", "age": 30, "tags": ["a"]}),
        )],
    )
    .await
    .unwrap();
    let created = Document {
        collection: "users".into(),
        id: "u1".into(),
        version: 1,
        body: body(json!({"name": "ann", "age": 30, "tags": ["a"]})),
        created_ms: 10,
        updated_ms: 10,
    };
    assert_eq!(
        changes,
        vec![Change {
            collection: "users".into(),
            id: "u1".into(),
            before: None,
            after: Some(created.clone()),
        }]
    );
    assert_eq!(
        store.get_document("a", "users", "u1").await.unwrap(),
        Some(created.clone())
    );

    // Every operator, in one update: set, unset, inc, push, pull.
    let all = Update {
        set: vec![
            (path("address.city"), json!("paris")),
            (path("name"), json!("anne")),
            (path("score"), json!(1.5)),
        ],
        unset: vec![path("tags"), path("nothing.there")],
        inc: vec![
            (path("age"), 1.into()),
            (path("visits"), 2.into()),
            (path("score"), serde_json::Number::from_f64(0.25).unwrap()),
        ],
        push: vec![(path("log"), vec![json!("x"), json!(1)])],
        pull: vec![(path("log"), vec![json!(1.0)])],
    };
    let changes = write_at(&*store, "a", 20, vec![update("users", "u1", all)])
        .await
        .unwrap();
    let updated = Document {
        version: 2,
        body: body(json!({
            "name": "anne", "age": 31, "address": {"city": "paris"},
            "score": 1.75, "visits": 2, "log": ["x"],
        })),
        updated_ms: 20,
        ..created.clone()
    };
    assert_eq!(changes[0].before, Some(created.clone()));
    assert_eq!(changes[0].after, Some(updated.clone()));
    let stored = store
        .get_document("a", "users", "u1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, updated);
    assert!(stored.body["age"].is_i64(), "an integer stays one");
    assert!(stored.body["score"].is_f64());

    // Set replaces the fields, keeps created_ms; a later write sees the
    // earlier in one batch.
    let changes = write_at(
        &*store,
        "a",
        30,
        vec![
            set("users", "u1", json!({"name": "bob"})),
            update(
                "users",
                "u1",
                Update {
                    inc: vec![(path("n"), 1.into())],
                    ..Update::default()
                },
            ),
            set(
                "users",
                "u2",
                json!({"name": "cy", "f": 1.0, "big": 1e16, "small": 1e-7}),
            ),
            delete("users", "nope"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        changes.len(),
        3,
        "deleting what is not there changes nothing"
    );
    assert_eq!(changes[0].after.as_ref().unwrap().version, 3);
    assert_eq!(changes[1].before, changes[0].after);
    let u1 = store
        .get_document("a", "users", "u1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((u1.version, u1.created_ms, u1.updated_ms), (4, 10, 30));
    assert_eq!(Value::Object(u1.body), json!({"name": "bob", "n": 1}));
    let u2 = store
        .get_document("a", "users", "u2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((u2.version, u2.created_ms), (1, 30));
    assert_eq!(
        Value::Object(u2.body.clone()),
        json!({"name": "cy", "f": 1.0, "big": 1e16, "small": 1e-7})
    );
    assert!(
        u2.body["f"].is_f64() && u2.body["big"].is_f64(),
        "floats stay floats"
    );

    // Delete: the change carries what was there.
    let changes = write_at(&*store, "a", 40, vec![delete("users", "u2")])
        .await
        .unwrap();
    assert_eq!(changes[0].before, Some(u2));
    assert_eq!(changes[0].after, None);
    assert_eq!(store.get_document("a", "users", "u2").await.unwrap(), None);
    // Created again: version 1 again.
    let changes = write_at(&*store, "a", 50, vec![create("users", "u2", json!({}))])
        .await
        .unwrap();
    assert_eq!(changes[0].after.as_ref().unwrap().version, 1);

    // Errors, each committing nothing of its batch.
    let before = store.get_document("a", "users", "u1").await.unwrap();
    let cases = vec![
        (
            create("users", "u1", json!({})),
            WriteError::Exists {
                collection: "users".into(),
                id: "u1".into(),
            },
        ),
        (
            update("users", "ghost", Update::default()),
            WriteError::Missing {
                collection: "users".into(),
                id: "ghost".into(),
            },
        ),
    ];
    for (bad, expected) in cases {
        let got = write(
            &*store,
            "a",
            vec![set("users", "u1", json!({"changed": true})), bad],
        )
        .await;
        assert_eq!(got, Err(expected));
    }
    let invalid = [
        Update {
            inc: vec![(path("name"), 1.into())],
            ..Update::default()
        },
        Update {
            push: vec![(path("name"), vec![json!(1)])],
            ..Update::default()
        },
        Update {
            pull: vec![(path("name"), vec![json!(1)])],
            ..Update::default()
        },
        Update {
            set: vec![(path("name.first"), json!("x"))],
            ..Update::default()
        },
        Update {
            inc: vec![(path("n"), i64::MAX.into())],
            ..Update::default()
        },
        Update {
            set: vec![(path("bad"), json!({"$where": 1}))],
            ..Update::default()
        },
        Update {
            set: vec![(path("nul"), json!("a\u{0}b"))],
            ..Update::default()
        },
    ];
    for u in invalid {
        let got = write(
            &*store,
            "a",
            vec![
                create("users", "u9", json!({})),
                update("users", "u1", u.clone()),
            ],
        )
        .await;
        assert!(
            matches!(&got, Err(WriteError::Invalid { collection, id, .. }) if collection == "users" && id == "u1"),
            "{u:?}: {got:?}"
        );
    }
    let refused = write(&*store, "a", vec![create("users", "u9", json!({"a.b": 1}))]).await;
    assert!(
        matches!(refused, Err(WriteError::Invalid { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store.get_document("a", "users", "u1").await.unwrap(),
        before
    );
    assert_eq!(store.get_document("a", "users", "u9").await.unwrap(), None);

    // get_documents: in the order asked, missing ones None.
    let got = store
        .get_documents(
            "a",
            vec![
                ("users".into(), "u2".into()),
                ("users".into(), "nope".into()),
                ("users".into(), "u1".into()),
                ("other".into(), "u1".into()),
                ("users".into(), "u2".into()),
            ],
        )
        .await
        .unwrap();
    let got: Vec<Option<&str>> = got
        .iter()
        .map(|d| d.as_ref().map(|d| d.id.as_str()))
        .collect();
    assert_eq!(got, [Some("u2"), None, Some("u1"), None, Some("u2")]);
    assert_eq!(store.count_documents("a", "users", 100).await.unwrap(), 2);
    assert_eq!(store.count_documents("a", "users", 1).await.unwrap(), 1);
    assert_eq!(store.count_documents("a", "nope", 100).await.unwrap(), 0);
    assert_eq!(store.count_documents("b", "users", 100).await.unwrap(), 0);
}

/// `if_version` applies a write only at that version (0: only if absent).
pub async fn if_version_guards_each_write(f: &dyn Fixture) {
    let store = f.open().await;
    write(&*store, "a", vec![create("c", "x", json!({"n": 1}))])
        .await
        .unwrap();
    let conflict = |id: &str, expected: i64, found: Option<i64>| WriteError::Conflict {
        collection: "c".into(),
        id: id.into(),
        expected,
        found,
    };
    assert_eq!(
        write(&*store, "a", vec![if_version(set("c", "x", json!({})), 2)]).await,
        Err(conflict("x", 2, Some(1)))
    );
    assert_eq!(
        write(&*store, "a", vec![if_version(set("c", "x", json!({})), 0)]).await,
        Err(conflict("x", 0, Some(1)))
    );
    assert_eq!(
        write(&*store, "a", vec![if_version(delete("c", "y"), 1)]).await,
        Err(conflict("y", 1, None))
    );
    let conflicting = write(&*store, "a", vec![if_version(set("c", "x", json!({})), 2)])
        .await
        .unwrap_err();
    assert!(
        conflicting.to_string().contains("read it again"),
        "{conflicting}"
    );
    // The version it is at applies, and moves on.
    write(
        &*store,
        "a",
        vec![
            if_version(set("c", "x", json!({"n": 2})), 1),
            if_version(set("c", "x", json!({"n": 3})), 2),
            if_version(set("c", "y", json!({"n": 1})), 0),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .get_document("a", "c", "x")
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
    // A failed guard in a batch: nothing of it.
    assert_eq!(
        write(
            &*store,
            "a",
            vec![
                if_version(delete("c", "x"), 3),
                if_version(set("c", "y", json!({})), 7),
            ],
        )
        .await,
        Err(conflict("y", 7, Some(1)))
    );
    assert!(store.get_document("a", "c", "x").await.unwrap().is_some());
    // Delete with the right version; of a missing one with 0: nothing.
    let changes = write(
        &*store,
        "a",
        vec![
            if_version(delete("c", "x"), 3),
            if_version(delete("c", "z"), 0),
        ],
    )
    .await
    .unwrap();
    assert_eq!(changes.len(), 1);
}

/// A check that answers with a verdict given, after asking for documents
/// `need` (once), and keeps what it was shown.
struct Scripted {
    need: Vec<(String, String)>,
    then: Verdict,
    seen: Mutex<Vec<(Vec<Change>, Fetched)>>,
}

impl Scripted {
    fn new(need: Vec<(String, String)>, then: Verdict) -> Arc<Scripted> {
        Arc::new(Scripted {
            need,
            then,
            seen: Mutex::new(Vec::new()),
        })
    }
}

impl WriteCheck for Scripted {
    fn check(&self, app: &str, changes: &[Change], fetched: &Fetched) -> Verdict {
        assert_eq!(app, "a");
        let mut seen = self.seen.lock().unwrap();
        seen.push((changes.to_vec(), fetched.clone()));
        if self.need.iter().any(|key| !fetched.contains_key(key)) {
            Verdict::Need(self.need.clone())
        } else {
            self.then.clone()
        }
    }
}

fn event(request_id: &str, collection: &str) -> NewEvent {
    NewEvent {
        app: "a".into(),
        function: "on-change".into(),
        payload: format!("{{\"request\":\"{request_id}\"}}").into_bytes(),
        request_id: request_id.into(),
        source: Source::Database(collection.into()),
        created_ms: 1,
        not_before_ms: 0,
        trace: None,
    }
}

/// A check sees the changes before anything is written: one that refuses
/// leaves no document, change record or event behind; one that asks for
/// documents gets them as they were before the write; one that never
/// decides is refused.
pub async fn a_write_s_check_decides_before_anything_commits(f: &dyn Fixture) {
    let store = f.open().await;
    write(
        &*store,
        "a",
        vec![create("users", "u1", json!({"role": "admin"}))],
    )
    .await
    .unwrap();
    let last = store.last_document_change().await.unwrap();

    let refuse = Scripted::new(Vec::new(), Verdict::Refuse("not allowed".into()));
    let got = store
        .write_documents(
            "a",
            vec![
                create("posts", "p1", json!({"by": "u1"})),
                set("users", "u1", json!({"role": "none"})),
            ],
            200,
            refuse.clone(),
        )
        .await
        .unwrap();
    assert_eq!(got, Err(WriteError::Refused("not allowed".into())));
    let seen = refuse.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0.len(), 2, "shown every change");
    assert_eq!(
        seen[0].0[1].before.as_ref().unwrap().body["role"],
        json!("admin")
    );
    assert_eq!(store.get_document("a", "posts", "p1").await.unwrap(), None);
    assert_eq!(
        store
            .get_document("a", "users", "u1")
            .await
            .unwrap()
            .unwrap()
            .body["role"],
        json!("admin")
    );
    assert_eq!(store.last_document_change().await.unwrap(), last);
    assert!(store.document_changes(last, 10).await.unwrap().is_empty());
    assert!(store.claim_events(10, 10, 1000).await.unwrap().is_empty());

    // Asks for documents: given them as before the write, None for one
    // that is not there; then commits with an event.
    let need = vec![
        ("users".to_owned(), "u1".to_owned()),
        ("users".to_owned(), "ghost".to_owned()),
    ];
    let asks = Scripted::new(need, Verdict::Commit(vec![event("r1", "posts")]));
    let changes = store
        .write_documents(
            "a",
            vec![
                create("posts", "p1", json!({"by": "u1"})),
                update(
                    "users",
                    "u1",
                    Update {
                        set: vec![(path("posts"), json!(1))],
                        ..Update::default()
                    },
                ),
            ],
            300,
            asks.clone(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changes.len(), 2);
    let seen = asks.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "asked once more");
    assert!(seen[0].1.is_empty());
    let fetched = &seen[1].1;
    let u1 = fetched[&("users".to_owned(), "u1".to_owned())]
        .as_ref()
        .unwrap();
    assert_eq!(Value::Object(u1.body.clone()), json!({"role": "admin"}));
    assert_eq!(u1.version, 1);
    assert_eq!(fetched[&("users".to_owned(), "ghost".to_owned())], None);
    assert!(
        store
            .get_document("a", "posts", "p1")
            .await
            .unwrap()
            .is_some()
    );

    // Never decides: refused, saying so.
    let endless = Arc::new(Endless(Mutex::new(0)));
    let got = store
        .write_documents(
            "a",
            vec![create("posts", "p2", json!({}))],
            400,
            endless.clone(),
        )
        .await
        .unwrap();
    match got {
        Err(WriteError::Refused(why)) => {
            assert!(why.contains(&MAX_CHECK_ROUNDS.to_string()), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*endless.0.lock().unwrap(), MAX_CHECK_ROUNDS + 1);
    assert_eq!(store.get_document("a", "posts", "p2").await.unwrap(), None);
}

/// Asks for another document every time.
struct Endless(Mutex<usize>);

impl WriteCheck for Endless {
    fn check(&self, _: &str, _: &[Change], _: &Fetched) -> Verdict {
        let mut asked = self.0.lock().unwrap();
        *asked += 1;
        Verdict::Need(vec![("users".into(), format!("u{asked}"))])
    }
}

/// The events a check gives commit with the changes, once per request id
/// while queued.
pub async fn events_commit_with_the_changes(f: &dyn Fixture) {
    let store = f.open().await;
    let commit = |events: Vec<NewEvent>| Scripted::new(Vec::new(), Verdict::Commit(events));
    store
        .write_documents(
            "a",
            vec![create("orders", "o1", json!({"total": 5}))],
            100,
            commit(vec![event("r1", "orders"), event("r2", "orders")]),
        )
        .await
        .unwrap()
        .unwrap();
    // The same request again, with another write: the write commits, the
    // event is not queued twice.
    store
        .write_documents(
            "a",
            vec![create("orders", "o2", json!({"total": 6}))],
            100,
            commit(vec![event("r2", "orders"), event("r3", "orders")]),
        )
        .await
        .unwrap()
        .unwrap();
    // A write that fails queues nothing.
    let failed = store
        .write_documents(
            "a",
            vec![create("orders", "o1", json!({}))],
            100,
            commit(vec![event("r4", "orders")]),
        )
        .await
        .unwrap();
    assert!(matches!(failed, Err(WriteError::Exists { .. })));
    let claimed = store.claim_events(10, 10, 1_000).await.unwrap();
    let requests: Vec<&str> = claimed.iter().map(|e| e.request_id.as_str()).collect();
    assert_eq!(requests, ["r1", "r2", "r3"]);
    assert_eq!(claimed[0].source, Source::Database("orders".into()));
    assert_eq!(claimed[0].payload, b"{\"request\":\"r1\"}");
    assert_eq!(store.count_documents("a", "orders", 10).await.unwrap(), 2);
}

/// Creates of one id racing: one wins, the others find it there.
pub async fn racing_creates_of_one_id_have_one_winner(f: &dyn Fixture) {
    let store = f.open().await;
    let racers: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_documents(
                        "a",
                        vec![
                            create("locks", "the-one", json!({ "holder": i })),
                            create("locks", &format!("mine-{i}"), json!({})),
                        ],
                        100,
                        Arc::new(AllowAll),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        match racer.await.unwrap() {
            Ok(_) => winners.push(i),
            Err(WriteError::Exists { collection, id }) => {
                assert_eq!((collection.as_str(), id.as_str()), ("locks", "the-one"));
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let held = store
        .get_document("a", "locks", "the-one")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.body["holder"], json!(winners[0]));
    assert_eq!(held.version, 1);
    // The losers' other writes went with them.
    assert_eq!(store.count_documents("a", "locks", 100).await.unwrap(), 2);
}

/// Fifty writers incrementing one counter at once: every increment
/// applies, each a version.
pub async fn concurrent_increments_all_apply(f: &dyn Fixture) {
    let store = f.open().await;
    write(
        &*store,
        "a",
        vec![create("counters", "hits", json!({"n": 0}))],
    )
    .await
    .unwrap();
    let inc = || Update {
        inc: vec![(path("n"), 1.into())],
        ..Update::default()
    };
    let writers: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let u = inc();
            tokio::spawn(async move {
                store
                    .write_documents(
                        "a",
                        vec![update("counters", "hits", u)],
                        100,
                        Arc::new(AllowAll),
                    )
                    .await
                    .unwrap()
                    .unwrap()
            })
        })
        .collect();
    let mut versions = BTreeSet::new();
    for w in writers {
        let changes = w.await.unwrap();
        versions.insert(changes[0].after.as_ref().unwrap().version);
    }
    assert_eq!(
        versions,
        (2..=51).collect::<BTreeSet<i64>>(),
        "each its own version"
    );
    let counter = store
        .get_document("a", "counters", "hits")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (counter.body["n"].clone(), counter.version),
        (json!(50), 51)
    );
}

/// Every committed change is recorded, in order: what it left (or that
/// it deleted), with seq increasing; the records are read in pages and
/// trimmed by age.
pub async fn change_records_follow_commits_in_order(f: &dyn Fixture) {
    let store = f.open().await;
    assert_eq!(store.last_document_change().await.unwrap(), 0);
    assert!(store.document_changes(0, 10).await.unwrap().is_empty());
    write_at(
        &*store,
        "a",
        1_000,
        vec![
            create("c", "x", json!({"n": 1})),
            create("c", "y", json!({"n": 2})),
        ],
    )
    .await
    .unwrap();
    write_at(
        &*store,
        "b",
        2_000,
        vec![update(
            "c",
            "x",
            Update {
                set: vec![(path("n"), json!(1))],
                ..Update::default()
            },
        )],
    )
    .await
    .unwrap_err();
    write_at(
        &*store,
        "a",
        2_000,
        vec![
            update(
                "c",
                "x",
                Update {
                    inc: vec![(path("n"), 10.into())],
                    ..Update::default()
                },
            ),
            delete("d", "none"),
        ],
    )
    .await
    .unwrap();
    write_at(
        &*store,
        "b",
        3_000,
        vec![create("c", "x", json!({"other": true}))],
    )
    .await
    .unwrap();
    write_at(&*store, "a", 4_000, vec![delete("c", "y")])
        .await
        .unwrap();

    let records = store.document_changes(0, 100).await.unwrap();
    let summary: Vec<(&str, &str, i64, Option<Value>, i64)> = records
        .iter()
        .map(|r| {
            (
                r.app.as_str(),
                r.id.as_str(),
                r.version,
                r.body.clone().map(Value::Object),
                r.at_ms,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a", "x", 1, Some(json!({"n": 1})), 1_000),
            ("a", "y", 1, Some(json!({"n": 2})), 1_000),
            ("a", "x", 2, Some(json!({"n": 11})), 2_000),
            ("b", "x", 1, Some(json!({"other": true})), 3_000),
            ("a", "y", 1, None, 4_000),
        ]
    );
    assert!(records.iter().all(|r| r.collection == "c"));
    assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
    let last = records.last().unwrap().seq;
    assert_eq!(store.last_document_change().await.unwrap(), last);
    // In pages.
    let first = store.document_changes(0, 2).await.unwrap();
    assert_eq!(first, records[..2]);
    let rest = store.document_changes(first[1].seq, 100).await.unwrap();
    assert_eq!(rest, records[2..]);
    assert!(store.document_changes(last, 100).await.unwrap().is_empty());
    // Trimmed by age; the last seq stays what it was.
    assert_eq!(store.trim_document_changes(2_000).await.unwrap(), 2);
    assert_eq!(store.document_changes(0, 100).await.unwrap(), records[2..]);
    assert_eq!(store.trim_document_changes(10_000).await.unwrap(), 3);
    assert!(store.document_changes(0, 100).await.unwrap().is_empty());
    assert_eq!(store.last_document_change().await.unwrap(), last);
    // And seq goes on after it.
    write_at(&*store, "a", 5_000, vec![create("c", "z", json!({}))])
        .await
        .unwrap();
    let next = store.document_changes(0, 100).await.unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].seq > last);
}

fn spec(fields: &[&str], multi: bool) -> IndexSpec {
    IndexSpec {
        fields: fields.iter().map(|f| path(f)).collect(),
        multi,
    }
}

/// Indexes are made as declared, listed per collection, and dropped when
/// no longer declared; a spec that cannot be is refused.
pub async fn indexes_are_set_listed_and_dropped(f: &dyn Fixture) {
    let store = f.open().await;
    let docs: Vec<(String, Value)> = (0..20)
        .map(|i| {
            (
                format!("p{i:02}"),
                json!({"city": if i % 2 == 0 { "lyon" } else { "paris" }, "age": i, "tags": [i % 3]}),
            )
        })
        .collect();
    let stored = load(&*store, "a", "people", &docs).await;
    let by_city = spec(&["city", "age"], false);
    let by_age = spec(&["age"], false);
    let tags = spec(&["tags"], true);
    store
        .set_indexes(
            "a",
            "people",
            vec![by_city.clone(), tags.clone(), by_city.clone()],
        )
        .await
        .unwrap();
    store
        .set_indexes("a", "pets", vec![by_age.clone()])
        .await
        .unwrap();
    store
        .set_indexes("b", "people", vec![by_age.clone()])
        .await
        .unwrap();
    let listed = store.list_indexes("a").await.unwrap();
    let listed: Vec<(&str, &str, Vec<IndexSpec>)> = listed
        .iter()
        .map(|c| (c.app.as_str(), c.collection.as_str(), c.indexes.clone()))
        .collect();
    let mut both = vec![by_city.clone(), tags.clone()];
    both.sort();
    assert_eq!(
        listed,
        vec![("a", "people", both), ("a", "pets", vec![by_age.clone()]),]
    );
    let q = query(
        "people",
        Some(Filter::And(vec![
            cmp("city", "==", json!("paris")),
            cmp("age", ">", json!(5)),
            contains("tags", json!(1)),
        ])),
        vec![desc("age")],
        100,
    );
    agrees(&*store, "a", &stored, &q, 3).await;
    // Declared again, one gone and one new.
    store
        .set_indexes("a", "people", vec![tags.clone(), by_age.clone()])
        .await
        .unwrap();
    let mut now = vec![tags.clone(), by_age.clone()];
    now.sort();
    assert_eq!(store.list_indexes("a").await.unwrap()[0].indexes, now);
    agrees(&*store, "a", &stored, &q, 3).await;
    // Setting the same again changes nothing.
    store
        .set_indexes("a", "people", vec![by_age.clone(), tags.clone()])
        .await
        .unwrap();
    assert_eq!(store.list_indexes("a").await.unwrap()[0].indexes, now);
    // None declared: none left.
    store.set_indexes("a", "people", Vec::new()).await.unwrap();
    let left: Vec<String> = store
        .list_indexes("a")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.collection)
        .collect();
    assert_eq!(left, ["pets"]);
    agrees(&*store, "a", &stored, &q, 3).await;
    // Specs that cannot be.
    for bad in [
        spec(&[], false),
        spec(&["a", "b"], true),
        spec(&["a", "a"], false),
    ] {
        assert!(
            store
                .set_indexes("a", "people", vec![bad.clone()])
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(store.list_indexes("b").await.unwrap()[0].indexes, [by_age]);
}

/// Deleting a collection takes its documents and indexes and queues no
/// events; the app's other collections stay. Collections are listed with
/// their documents and bytes.
pub async fn a_collection_is_listed_and_deleted_whole(f: &dyn Fixture) {
    let store = f.open().await;
    for (collection, n, size) in [("logs", 5, 200), ("users", 3, 10), ("Zeta", 1, 1)] {
        let writes = (0..n)
            .map(|i| {
                create(
                    collection,
                    &format!("{i}"),
                    json!({"text": "x".repeat(size), "i": i}),
                )
            })
            .collect();
        write(&*store, "a", writes).await.unwrap();
    }
    write(&*store, "b", vec![create("logs", "1", json!({}))])
        .await
        .unwrap();
    store
        .set_indexes(
            "a",
            "logs",
            vec![spec(&["i"], false), spec(&["text"], true)],
        )
        .await
        .unwrap();
    store
        .set_indexes("a", "users", vec![spec(&["i"], false)])
        .await
        .unwrap();
    let usage = store.list_collections("a").await.unwrap();
    let names: Vec<(&str, u64)> = usage
        .iter()
        .map(|c| (c.collection.as_str(), c.documents))
        .collect();
    assert_eq!(
        names,
        [("Zeta", 1), ("logs", 5), ("users", 3)],
        "by name, as bytes"
    );
    assert!(usage[1].bytes >= 5 * 200, "{usage:?}");
    assert!(usage[1].bytes > usage[2].bytes && usage[2].bytes > usage[0].bytes);
    assert!(usage[0].bytes > 0);

    assert_eq!(store.delete_collection("a", "logs").await.unwrap(), 5);
    assert_eq!(store.delete_collection("a", "logs").await.unwrap(), 0);
    assert_eq!(store.count_documents("a", "logs", 100).await.unwrap(), 0);
    let names: Vec<String> = store
        .list_collections("a")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.collection)
        .collect();
    assert_eq!(names, ["Zeta", "users"]);
    let indexed: Vec<String> = store
        .list_indexes("a")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.collection)
        .collect();
    assert_eq!(indexed, ["users"]);
    assert_eq!(store.count_documents("b", "logs", 100).await.unwrap(), 1);
    assert!(store.claim_events(10, 10, 1_000).await.unwrap().is_empty());
    // Made again: nothing of the old one shows through.
    write(
        &*store,
        "a",
        vec![create("logs", "new", json!({"text": ["x"], "i": 1}))],
    )
    .await
    .unwrap();
    store
        .set_indexes("a", "logs", vec![spec(&["text"], true)])
        .await
        .unwrap();
    let found = store
        .query_documents(
            "a",
            query("logs", Some(contains("text", json!("x"))), Vec::new(), 10),
        )
        .await
        .unwrap();
    assert_eq!(ids(&found), ["new"]);
}

/// Deleting an app takes its documents, indexes and change records; other
/// apps keep theirs.
pub async fn deleting_an_app_removes_its_documents(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .activate(super::apps::version("a", 128))
        .await
        .unwrap();
    for app in ["a", "b"] {
        write(
            &*store,
            app,
            vec![
                create("users", "u1", json!({"tags": ["x"], "n": 1})),
                create("posts", "p1", json!({})),
            ],
        )
        .await
        .unwrap();
        store
            .set_indexes(
                app,
                "users",
                vec![spec(&["n"], false), spec(&["tags"], true)],
            )
            .await
            .unwrap();
    }
    assert!(store.delete_app("a").await.unwrap());
    assert!(store.list_collections("a").await.unwrap().is_empty());
    assert!(store.list_indexes("a").await.unwrap().is_empty());
    assert_eq!(store.get_document("a", "users", "u1").await.unwrap(), None);
    let records = store.document_changes(0, 100).await.unwrap();
    assert!(records.iter().all(|r| r.app == "b"), "{records:?}");
    assert_eq!(records.len(), 2);
    assert_eq!(store.list_collections("b").await.unwrap().len(), 2);
    assert_eq!(store.list_indexes("b").await.unwrap()[0].indexes.len(), 2);
    // An app without a record is no app, but its documents go too.
    assert!(!store.delete_app("b").await.unwrap());
    assert!(store.list_collections("b").await.unwrap().is_empty());
    // The same names again start afresh.
    write(
        &*store,
        "a",
        vec![create("users", "u1", json!({"tags": ["y"]}))],
    )
    .await
    .unwrap();
    store
        .set_indexes("a", "users", vec![spec(&["tags"], true)])
        .await
        .unwrap();
    let found = store
        .query_documents(
            "a",
            query("users", Some(contains("tags", json!("x"))), Vec::new(), 10),
        )
        .await
        .unwrap();
    assert!(found.is_empty());
}

/// Documents, indexes and change records survive a reopen.
pub async fn documents_survive_a_reopen(f: &dyn Fixture) {
    let store = f.open().await;
    write(
        &*store,
        "a",
        vec![
            create(
                "users",
                "u1",
                json!({"name": "ann", "tags": ["x"], "f": 2.0}),
            ),
            create("users", "u2", json!({"name": "bob", "tags": []})),
        ],
    )
    .await
    .unwrap();
    let indexes = vec![spec(&["tags"], true), spec(&["name"], false)];
    store
        .set_indexes("a", "users", indexes.clone())
        .await
        .unwrap();
    let before = store
        .query_documents("a", query("users", None, vec![asc("name")], 10))
        .await
        .unwrap();
    let last = store.last_document_change().await.unwrap();
    drop(store);

    let store = f.open().await;
    let after = store
        .query_documents("a", query("users", None, vec![asc("name")], 10))
        .await
        .unwrap();
    assert_eq!(after, before);
    assert!(after[0].body["f"].is_f64());
    let mut sorted = indexes;
    sorted.sort();
    assert_eq!(store.list_indexes("a").await.unwrap()[0].indexes, sorted);
    assert_eq!(store.last_document_change().await.unwrap(), last);
    let tagged = store
        .query_documents(
            "a",
            query("users", Some(contains("tags", json!("x"))), Vec::new(), 10),
        )
        .await
        .unwrap();
    assert_eq!(ids(&tagged), ["u1"]);
    write(
        &*store,
        "a",
        vec![update(
            "users",
            "u2",
            Update {
                push: vec![(path("tags"), vec![json!("x")])],
                ..Update::default()
            },
        )],
    )
    .await
    .unwrap();
    let tagged = store
        .query_documents(
            "a",
            query("users", Some(contains("tags", json!("x"))), Vec::new(), 10),
        )
        .await
        .unwrap();
    assert_eq!(ids(&tagged), ["u1", "u2"]);
    assert!(store.last_document_change().await.unwrap() > last);
}

/// The documents and indexes a store moving elsewhere takes, for the
/// transfer case: what it wrote.
pub(crate) async fn fill_for_transfer(store: &dyn Store) -> BTreeMap<String, Vec<IndexSpec>> {
    write(
        store,
        "a",
        vec![
            create(
                "users",
                "u1",
                json!({"name": "ann", "tags": ["x", 1], "f": 1.5}),
            ),
            create("users", "u2", json!({"name": "bob", "tags": ["y"]})),
            create("posts", "p1", json!({"by": "u1", "at": {"day": 3}})),
        ],
    )
    .await
    .unwrap();
    let users = vec![spec(&["name"], false), spec(&["tags"], true)];
    store
        .set_indexes("a", "users", users.clone())
        .await
        .unwrap();
    let posts = vec![spec(&["by", "at.day"], false)];
    store
        .set_indexes("a", "posts", posts.clone())
        .await
        .unwrap();
    BTreeMap::from([("posts".to_owned(), posts), ("users".to_owned(), users)])
}

/// After the move: the documents are there, their indexes built.
pub(crate) async fn check_transferred(store: &dyn Store) {
    let tagged = store
        .query_documents(
            "a",
            query("users", Some(contains("tags", json!("x"))), Vec::new(), 10),
        )
        .await
        .unwrap();
    assert_eq!(ids(&tagged), ["u1"]);
    assert_eq!(tagged[0].body["f"], json!(1.5));
    let by = store
        .query_documents(
            "a",
            query(
                "posts",
                Some(cmp("by", "==", json!("u1"))),
                vec![asc("at.day")],
                10,
            ),
        )
        .await
        .unwrap();
    assert_eq!(ids(&by), ["p1"]);
    // And writes go on there.
    write(
        store,
        "a",
        vec![update(
            "users",
            "u2",
            Update {
                push: vec![(path("tags"), vec![json!("x")])],
                ..Update::default()
            },
        )],
    )
    .await
    .unwrap();
    let tagged = store
        .query_documents(
            "a",
            query("users", Some(contains("tags", json!("x"))), Vec::new(), 10),
        )
        .await
        .unwrap();
    assert_eq!(ids(&tagged), ["u1", "u2"]);
}
