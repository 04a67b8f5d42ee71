//! The document API for clients, on each app's host under
//! `/_stratus/db/...`: the same requests and answers as the admin API's
//! (`db::api`), as the signed-in user (or no one), under the collections'
//! security rules.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use stratus_store::documents::{Change, DocOp, DocWrite, Document, WriteError};

use super::rules::{self, ClientCheck, Denied, Fetches, Outcome, Read};
use super::{AppDb, api, wire};
use crate::AppState;
use crate::api::ApiError;
use crate::client::Caller;

/// Rounds of `get()` lookups one check may take.
const MAX_ROUNDS: usize = stratus_rules::MAX_LOOKUPS + 1;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    let base = "/_stratus/db";
    Router::new()
        .route(&format!("{base}/_transaction"), post(transaction))
        .route(&format!("{base}/_get"), post(get_many))
        .route(&format!("{base}/{{collection}}"), post(create))
        .route(&format!("{base}/{{collection}}/_query"), post(query))
        .route(&format!("{base}/{{collection}}/_count"), post(count))
        .route(
            &format!("{base}/{{collection}}/{{id}}"),
            get(get_one).put(set).patch(update).delete(delete),
        )
}

pub(crate) fn denied(Denied(why): Denied) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "denied", why)
}

/// The app's database, for a caller of its host.
fn app_db(state: &AppState, caller: &Caller) -> Result<Arc<AppDb>, ApiError> {
    state
        .databases
        .get(&caller.app)
        .ok_or_else(|| ApiError::not_found(format!("there is no app {}", caller.app)))
}

/// Fetches what a rule asked for, into `fetched`.
async fn fetch(
    state: &AppState,
    app: &str,
    path: String,
    fetched: &mut Fetches,
) -> Result<(), ApiError> {
    let doc = match rules::split_path(&path) {
        Some((collection, id)) => state
            .store
            .get_document(app, &collection, &id)
            .await?
            .map(|d| Value::Object(d.body)),
        None => None,
    };
    fetched.0.insert(path, doc);
    Ok(())
}

/// Runs `check` until it needs nothing more; its refusal as a 403.
pub(crate) async fn decide(
    state: &AppState,
    app: &str,
    fetched: &mut Fetches,
    mut check: impl FnMut(&Fetches) -> Outcome,
) -> Result<(), ApiError> {
    for _ in 0..MAX_ROUNDS {
        match check(fetched) {
            Outcome::Allowed => return Ok(()),
            Outcome::Denied(why) => return Err(denied(why)),
            Outcome::Need(path) => fetch(state, app, path, fetched).await?,
        }
    }
    Err(denied(Denied(format!(
        "the rule reads more than {} other documents",
        stratus_rules::MAX_LOOKUPS
    ))))
}

/// Checks that the caller may read each of `docs`, and gives them as
/// JSON (fields as `select` keeps them).
pub(crate) async fn readable(
    state: &AppState,
    db: &AppDb,
    caller: &Caller,
    collection: &str,
    docs: Vec<Document>,
    fetched: &mut Fetches,
    select: Option<&[stratus_store::documents::FieldPath]>,
) -> Result<Vec<Value>, ApiError> {
    let auth = caller.auth_json();
    let now = crate::now_ms();
    let mut out = Vec::with_capacity(docs.len());
    for mut doc in docs {
        let body = Value::Object(std::mem::take(&mut doc.body));
        decide(state, &caller.app, fetched, |f| {
            let read = Read {
                collection,
                id: &doc.id,
                doc: Some(&body),
                explain: false,
            };
            rules::check_read(db, read, auth.as_ref(), now, f)
        })
        .await?;
        let Value::Object(body) = body else {
            unreachable!("made an object above")
        };
        doc.body = body;
        out.push(wire::projected(&doc, select));
    }
    Ok(out)
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &caller)?;
    let (collection, id) = (wire::collection(&collection)?, wire::id(&id)?);
    let doc = state
        .store
        .get_document(&caller.app, &collection, &id)
        .await?;
    let mut fetched = Fetches::default();
    match doc {
        Some(doc) => {
            let mut docs = readable(
                &state,
                &db,
                &caller,
                &collection,
                vec![doc],
                &mut fetched,
                None,
            )
            .await?;
            Ok(Json(docs.remove(0)).into_response())
        }
        None => {
            // Whether it exists is the rule's to tell.
            let auth = caller.auth_json();
            let now = crate::now_ms();
            decide(&state, &caller.app, &mut fetched, |f| {
                let read = Read {
                    collection: &collection,
                    id: &id,
                    doc: None,
                    explain: false,
                };
                rules::check_read(&db, read, auth.as_ref(), now, f)
            })
            .await?;
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_document",
                format!("there is no document {collection}/{id}"),
            ))
        }
    }
}

async fn get_many(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &caller)?;
    let request = api::read_json(&state, body).await?;
    let refs = api::refs(&request["refs"])?;
    let docs = state.store.get_documents(&caller.app, refs.clone()).await?;
    let mut fetched = Fetches::default();
    let mut out = Vec::with_capacity(docs.len());
    for ((collection, id), doc) in refs.iter().zip(docs) {
        match doc {
            Some(doc) => out.extend(
                readable(
                    &state,
                    &db,
                    &caller,
                    collection,
                    vec![doc],
                    &mut fetched,
                    None,
                )
                .await?,
            ),
            None => {
                let auth = caller.auth_json();
                let now = crate::now_ms();
                decide(&state, &caller.app, &mut fetched, |f| {
                    let read = Read {
                        collection,
                        id,
                        doc: None,
                        explain: false,
                    };
                    rules::check_read(&db, read, auth.as_ref(), now, f)
                })
                .await?;
                out.push(Value::Null);
            }
        }
    }
    Ok(Json(json!({ "documents": out })).into_response())
}

async fn query(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(collection): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &caller)?;
    let request = api::read_json(&state, body).await?;
    let collection = wire::collection(&collection)?;
    let answer = run_query(&state, &db, &caller, &collection, &request).await?;
    Ok(Json(answer).into_response())
}

/// A client's query: allowed when its filters imply the read rule; its
/// documents checked one by one.
pub(crate) async fn run_query(
    state: &AppState,
    db: &AppDb,
    caller: &Caller,
    collection: &str,
    request: &Value,
) -> Result<Value, ApiError> {
    let query = api::read_query(state, collection, request)?;
    let select = wire::select(&request["select"])?;
    let auth = caller.auth_json();
    let now = crate::now_ms();
    let mut fetched = Fetches::default();
    decide(state, &caller.app, &mut fetched, |f| {
        rules::check_query(db, collection, query.filter.as_ref(), auth.as_ref(), now, f)
    })
    .await?;
    // Clients never scan: a query needs its index once the collection is
    // large.
    api::require_index(
        state,
        &caller.app,
        db,
        collection,
        query.filter.as_ref(),
        &query.order,
    )
    .await?;
    let limit = query.limit as usize;
    let docs = state
        .store
        .query_documents(&caller.app, query.clone())
        .await?;
    let next = (docs.len() == limit)
        .then(|| {
            docs.last()
                .map(|last| wire::cursor_token(&query.cursor_after(last)))
        })
        .flatten();
    let documents = readable(
        state,
        db,
        caller,
        collection,
        docs,
        &mut fetched,
        select.as_deref(),
    )
    .await?;
    Ok(json!({ "documents": documents, "next": next }))
}

async fn count(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(collection): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &caller)?;
    let request = api::read_json(&state, body).await?;
    let collection = wire::collection(&collection)?;
    let aggregation = api::counting(collection.clone(), &request)?;
    let auth = caller.auth_json();
    let now = crate::now_ms();
    let mut fetched = Fetches::default();
    decide(&state, &caller.app, &mut fetched, |f| {
        rules::check_query(
            &db,
            &collection,
            aggregation.filter.as_ref(),
            auth.as_ref(),
            now,
            f,
        )
    })
    .await?;
    let groups = api::run_aggregation(&state, &caller.app, &db, aggregation, false).await?;
    Ok(Json(json!({ "count": api::count_of(&groups) })).into_response())
}

/// Commits a client's writes under the rules.
pub(crate) async fn commit(
    state: &AppState,
    db: Arc<AppDb>,
    caller: &Caller,
    writes: Vec<DocWrite>,
) -> Result<Vec<Change>, ApiError> {
    let max = api::check_sizes(state, &writes)?;
    let now = crate::now_ms();
    let auth = caller.auth_json();
    // Nothing reaches the store for a collection closed to this write,
    // and deleting what is not there is still the delete rule's call.
    for w in &writes {
        rules::require_rule(&db, &w.collection, &w.op).map_err(denied)?;
        if matches!(w.op, DocOp::Delete)
            && state
                .store
                .get_document(&caller.app, &w.collection, &w.id)
                .await?
                .is_none()
        {
            let mut fetched = Fetches::default();
            decide(state, &caller.app, &mut fetched, |f| {
                rules::check_delete_of_nothing(&db, &w.collection, &w.id, auth.as_ref(), now, f)
            })
            .await?;
        }
    }
    let check = Arc::new(ClientCheck {
        db: db.clone(),
        auth: auth.clone(),
        now_ms: now,
        max_document_bytes: max,
        explain: false,
    });
    let refused = match state
        .store
        .write_documents(&caller.app, writes.clone(), now, check)
        .await?
    {
        Ok(changes) => {
            state.events.wake();
            state.watches.wake();
            return Ok(changes);
        }
        Err(err) => err,
    };
    Err(refusal(state, &db, caller, &writes, refused).await?)
}

/// A write the store refused, as the client may learn it: a refusal by
/// the rules as it is; why the store refused (the document exists, is
/// missing, is at another version, holds another type) only when the
/// client may read the document, and otherwise as its rule's denial, so
/// that nothing of a document the client may not read comes back.
async fn refusal(
    state: &AppState,
    db: &AppDb,
    caller: &Caller,
    writes: &[DocWrite],
    err: WriteError,
) -> Result<ApiError, ApiError> {
    let (collection, id) = match &err {
        WriteError::Refused(why) => return Ok(denied(Denied(why.clone()))),
        WriteError::Exists { collection, id }
        | WriteError::Missing { collection, id }
        | WriteError::Conflict { collection, id, .. }
        | WriteError::Invalid { collection, id, .. } => (collection.clone(), id.clone()),
    };
    let op = writes
        .iter()
        .find(|w| w.collection == collection && w.id == id)
        .map_or("write", |w| match w.op {
            DocOp::Create(_) => "create",
            DocOp::Set(_) | DocOp::Update(_) => "update",
            DocOp::Delete => "delete",
        });
    let stored = state
        .store
        .get_document(&caller.app, &collection, &id)
        .await?
        .map(|d| Value::Object(d.body));
    let auth = caller.auth_json();
    let now = crate::now_ms();
    let mut fetched = Fetches::default();
    let readable = decide(state, &caller.app, &mut fetched, |f| {
        let read = Read {
            collection: &collection,
            id: &id,
            doc: stored.as_ref(),
            explain: false,
        };
        rules::check_read(db, read, auth.as_ref(), now, f)
    })
    .await;
    Ok(match readable {
        Ok(()) => api::write_error(err),
        Err(_) => denied(Denied(format!("the {op} rule of {collection} denies this"))),
    })
}

async fn transaction(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &caller)?;
    let request = api::read_json(&state, body).await?;
    let writes = wire::writes(&request)?;
    let changes = commit(&state, db, &caller, writes).await?;
    Ok(
        Json(json!({ "changes": changes.iter().map(api::change).collect::<Vec<_>>() }))
            .into_response(),
    )
}

async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(collection): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &caller)?;
    let request = api::read_json(&state, body).await?;
    let write = DocWrite {
        collection: wire::collection(&collection)?,
        id: wire::new_id(),
        op: DocOp::Create(wire::body(request)?),
        if_version: None,
    };
    let changes = commit(&state, db, &caller, vec![write]).await?;
    Ok((StatusCode::CREATED, Json(api::written(&changes))).into_response())
}

#[derive(Debug, Deserialize)]
struct VersionParams {
    if_version: Option<i64>,
}

async fn set(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((collection, id)): Path<(String, String)>,
    Query(params): Query<VersionParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &caller)?;
    let request = api::read_json(&state, body).await?;
    let write = DocWrite {
        collection: wire::collection(&collection)?,
        id: wire::id(&id)?,
        op: DocOp::Set(wire::body(request)?),
        if_version: params.if_version,
    };
    let changes = commit(&state, db, &caller, vec![write]).await?;
    Ok(Json(api::written(&changes)).into_response())
}

async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((collection, id)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &caller)?;
    let request = api::read_json(&state, body).await?;
    let write = DocWrite {
        collection: wire::collection(&collection)?,
        id: wire::id(&id)?,
        op: DocOp::Update(wire::update(&request)?),
        if_version: wire::if_version(&request["if_version"])?,
    };
    let changes = commit(&state, db, &caller, vec![write]).await?;
    Ok(Json(api::written(&changes)).into_response())
}

async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((collection, id)): Path<(String, String)>,
    Query(params): Query<VersionParams>,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &caller)?;
    let write = DocWrite {
        collection: wire::collection(&collection)?,
        id: wire::id(&id)?,
        op: DocOp::Delete,
        if_version: params.if_version,
    };
    let changes = commit(&state, db, &caller, vec![write]).await?;
    Ok(Json(json!({ "deleted": !changes.is_empty() })).into_response())
}
