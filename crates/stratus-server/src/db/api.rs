//! `/v1/apps/{app}/db/...`: the document API on the admin listener (the
//! admin token, or a key of the app) and on the platform API (functions'
//! own tokens). Both act for the app with full access: no rules.
//!
//! - `GET  db`: the app's collections, counted.
//! - `POST db/_transaction`: `{"writes": [...]}`, all or none.
//! - `POST db/_get`: `{"refs": [[COLLECTION, ID], ...]}`, as of one moment.
//! - `GET  db/{c}?limit=&after=`: a page of documents by id.
//! - `POST db/{c}`: creates a document with a new id.
//! - `DELETE db/{c}`: deletes the collection's documents.
//! - `POST db/{c}/_query`: `{"where", "order_by", "limit", "after",
//!   "select", "allow_scan"}`.
//! - `POST db/{c}/_aggregate`: `{"where", "group_by", "measures"}`;
//!   `POST db/{c}/_count`: `{"where"}`.
//! - `GET|PUT|PATCH|DELETE db/{c}/{id}` (`?if_version=N` on PUT and
//!   DELETE, `"if_version"` in PATCH's body).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use stratus_store::documents::{Change, DocOp, DocWrite, Query as DocQuery, WriteError};

use super::{AppDb, DEFAULT_LIMIT, Trusted, plan, wire};
use crate::AppState;
use crate::api::ApiError;

impl From<wire::Invalid> for ApiError {
    fn from(invalid: wire::Invalid) -> ApiError {
        ApiError::bad_request("invalid_request", invalid.0)
    }
}

/// Why a write committed nothing, as HTTP.
pub(crate) fn write_error(err: WriteError) -> ApiError {
    let message = err.to_string();
    match err {
        WriteError::Exists { .. } => {
            ApiError::new(StatusCode::CONFLICT, "document_exists", message)
        }
        WriteError::Missing { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_document", message)
        }
        WriteError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, "version_conflict", message)
        }
        WriteError::Invalid { .. } => ApiError::bad_request("invalid_update", message),
        WriteError::Refused(_) => ApiError::new(StatusCode::FORBIDDEN, "refused", message),
    }
}

/// The document API's routes, for the admin listener and the platform
/// API alike.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    let base = "/v1/apps/{app}/db";
    Router::new()
        .route(base, get(collections))
        .route(&format!("{base}/_transaction"), post(transaction))
        .route(&format!("{base}/_get"), post(get_many))
        .route(
            &format!("{base}/{{collection}}"),
            get(list).post(create).delete(drop_collection),
        )
        .route(&format!("{base}/{{collection}}/_query"), post(query))
        .route(
            &format!("{base}/{{collection}}/_aggregate"),
            post(aggregate),
        )
        .route(&format!("{base}/{{collection}}/_count"), post(count))
        .route(
            &format!("{base}/{{collection}}/{{id}}"),
            get(get_one).put(set).patch(update).delete(delete),
        )
}

/// The app's database as this node serves it; 404 for an app it does not
/// know.
fn app_db(state: &AppState, app: &str) -> Result<Arc<AppDb>, ApiError> {
    state.databases.get(app).ok_or_else(|| {
        ApiError::not_found(format!(
            "there is no app {app}; `stratus apps` lists the apps"
        ))
    })
}

/// The largest request body: room for a transaction of documents, and
/// for one document over the limit to be read and refused by its size.
fn body_limit(state: &AppState) -> usize {
    (state.config.database.max_document_bytes * 2).max(16 << 20) + (64 << 10)
}

/// A request's JSON body.
pub(crate) async fn read_json(state: &AppState, body: Body) -> Result<Value, ApiError> {
    let limit = body_limit(state);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "the request is larger than {limit} bytes; a document may have at most {} (--document-max-size)",
                state.config.database.max_document_bytes
            ),
        )
    })?;
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|err| {
        ApiError::bad_request("invalid_json", format!("the request is not JSON: {err}"))
    })
}

/// Refuses documents over the size limit before their transaction starts
/// (an update is checked in it); the limit.
pub(crate) fn check_sizes(state: &AppState, writes: &[DocWrite]) -> Result<usize, ApiError> {
    let max = state.config.database.max_document_bytes;
    for w in writes {
        if let DocOp::Create(body) | DocOp::Set(body) = &w.op {
            let size = super::check::json_size(body);
            if size > max {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "document_too_large",
                    super::check::too_large(&w.collection, &w.id, size, max),
                ));
            }
        }
    }
    Ok(max)
}

/// Commits writes as the app itself: limits and triggers, no rules.
pub(crate) async fn commit(
    state: &AppState,
    app: &str,
    db: Arc<AppDb>,
    writes: Vec<DocWrite>,
    fire: bool,
) -> Result<Vec<Change>, ApiError> {
    let max = check_sizes(state, &writes)?;
    let check = Arc::new(Trusted {
        db,
        max_document_bytes: max,
        fire,
    });
    let changes = state
        .store
        .write_documents(app, writes, crate::now_ms(), check)
        .await?
        .map_err(write_error)?;
    if fire {
        state.events.wake();
    }
    state.watches.wake();
    Ok(changes)
}

async fn collections(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let stored = state.store.list_collections(&app).await?;
    let mut out: Vec<Value> = stored
        .iter()
        .map(|c| {
            json!({
                "name": c.collection,
                "documents": c.documents,
                "bytes": c.bytes,
                "declared": db.collections.contains_key(&c.collection),
            })
        })
        .collect();
    for name in db.collections.keys() {
        if !stored.iter().any(|c| &c.collection == name) {
            out.push(json!({ "name": name, "documents": 0, "bytes": 0, "declared": true }));
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({ "app": app, "collections": out })).into_response())
}

#[derive(Debug, Deserialize)]
struct TransactionParams {
    /// Whether the writes fire change triggers (an import may not).
    #[serde(default = "yes")]
    triggers: bool,
}

fn yes() -> bool {
    true
}

async fn transaction(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    Query(params): Query<TransactionParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let request = read_json(&state, body).await?;
    let writes = wire::writes(&request)?;
    let changes = commit(&state, &app, db, writes, params.triggers).await?;
    Ok(Json(json!({ "changes": changes.iter().map(change).collect::<Vec<_>>() })).into_response())
}

/// The JSON form of a change: the document as it is now, or its
/// deletion.
pub(crate) fn change(change: &Change) -> Value {
    match &change.after {
        Some(doc) => {
            json!({ "collection": change.collection, "id": change.id, "document": wire::document(doc) })
        }
        None => json!({ "collection": change.collection, "id": change.id, "deleted": true }),
    }
}

async fn get_many(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    app_db(&state, &app)?;
    let request = read_json(&state, body).await?;
    let refs = refs(&request["refs"])?;
    let docs = state.store.get_documents(&app, refs).await?;
    Ok(Json(json!({
        "documents": docs.iter().map(|d| d.as_ref().map(wire::document)).collect::<Vec<_>>()
    }))
    .into_response())
}

/// Documents one `_get` reads at most.
const MAX_REFS: usize = 500;

pub(crate) fn refs(value: &Value) -> Result<Vec<(String, String)>, ApiError> {
    let Some(items) = value.as_array() else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "`refs` is a list of [COLLECTION, ID]",
        ));
    };
    if items.len() > MAX_REFS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("one read takes at most {MAX_REFS} documents"),
        ));
    }
    items
        .iter()
        .map(|item| match item.as_array().map(Vec::as_slice) {
            Some([Value::String(c), Value::String(id)]) => {
                Ok((wire::collection(c)?, wire::id(id)?))
            }
            _ => Err(ApiError::bad_request(
                "invalid_request",
                format!("cannot read {item} as [COLLECTION, ID]"),
            )),
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<u32>,
    after: Option<String>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    Path((app, collection)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let request = json!({ "limit": params.limit, "after": params.after });
    let answer = run_query(&state, &app, &db, &wire::collection(&collection)?, &request).await?;
    Ok(Json(answer).into_response())
}

async fn query(
    State(state): State<Arc<AppState>>,
    Path((app, collection)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let request = read_json(&state, body).await?;
    let answer = run_query(&state, &app, &db, &wire::collection(&collection)?, &request).await?;
    Ok(Json(answer).into_response())
}

/// A query as JSON asks it, and its page.
pub(crate) async fn run_query(
    state: &AppState,
    app: &str,
    db: &AppDb,
    collection: &str,
    request: &Value,
) -> Result<Value, ApiError> {
    let query = read_query(state, collection, request)?;
    let select = wire::select(&request["select"])?;
    let allow_scan = request["allow_scan"].as_bool().unwrap_or(false);
    if !allow_scan {
        require_index(
            state,
            app,
            db,
            collection,
            query.filter.as_ref(),
            &query.order,
        )
        .await?;
    }
    let limit = query.limit as usize;
    let docs = state.store.query_documents(app, query.clone()).await?;
    let next = (docs.len() == limit)
        .then(|| {
            docs.last()
                .map(|last| wire::cursor_token(&query.cursor_after(last)))
        })
        .flatten();
    Ok(json!({
        "documents": docs.iter().map(|d| wire::projected(d, select.as_deref())).collect::<Vec<_>>(),
        "next": next,
    }))
}

/// A query's filter, order and page, read from its JSON.
pub(crate) fn read_query(
    state: &AppState,
    collection: &str,
    request: &Value,
) -> Result<DocQuery, ApiError> {
    if !request.is_object() && !request.is_null() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "a query is a JSON object: {\"where\", \"order_by\", \"limit\", \"after\", \"select\"}",
        ));
    }
    let max = state.config.database.max_results;
    let limit = match &request["limit"] {
        Value::Null => DEFAULT_LIMIT.min(max),
        value => value
            .as_u64()
            .filter(|n| (1..=u64::from(max)).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    format!("`limit` is a number from 1 to {max} (--db-max-results)"),
                )
            })? as u32,
    };
    let filter = wire::filter(&request["where"])?;
    let order = wire::order(&request["order_by"])?;
    let after = match &request["after"] {
        Value::Null => None,
        Value::String(token) => Some(wire::cursor(token, &order)?),
        other => {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("`after` is the `next` token of the page before, not {other}"),
            ));
        }
    };
    Ok(DocQuery {
        collection: collection.to_owned(),
        filter,
        order,
        after,
        limit,
    })
}

/// Refuses a query no declared index serves, on a collection large enough
/// for a scan to matter.
pub(crate) async fn require_index(
    state: &AppState,
    app: &str,
    db: &AppDb,
    collection: &str,
    filter: Option<&stratus_store::documents::Filter>,
    order: &[stratus_store::documents::Order],
) -> Result<(), ApiError> {
    let indexes = db
        .collections
        .get(collection)
        .map_or(&[][..], |c| c.indexes.as_slice());
    let Some(index) = plan::needed(filter, order, indexes) else {
        return Ok(());
    };
    let limit = state.config.database.scan_limit;
    if !state
        .databases
        .at_least(state, app, collection, limit)
        .await?
    {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "index_needed",
        format!(
            "collection {collection} holds {limit} documents or more, and no index it declares serves this query: it would read them all. Declare the index in stratus.yaml (`collections: {{ {collection}: {{ indexes: [ {index} ] }} }}`) and deploy, or pass `allow_scan: true` to scan anyway"
        ),
    ))
}

async fn aggregate(
    State(state): State<Arc<AppState>>,
    Path((app, collection)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let request = read_json(&state, body).await?;
    let aggregation = wire::aggregation(wire::collection(&collection)?, &request)?;
    let groups = run_aggregation(&state, &app, &db, aggregation, allow_scan(&request)).await?;
    Ok(Json(json!({ "groups": wire::groups(&groups) })).into_response())
}

async fn count(
    State(state): State<Arc<AppState>>,
    Path((app, collection)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let request = read_json(&state, body).await?;
    let aggregation = counting(wire::collection(&collection)?, &request)?;
    let groups = run_aggregation(&state, &app, &db, aggregation, allow_scan(&request)).await?;
    Ok(Json(json!({ "count": count_of(&groups) })).into_response())
}

fn allow_scan(request: &Value) -> bool {
    request["allow_scan"].as_bool().unwrap_or(false)
}

/// The aggregation that counts what a request's `where` selects.
pub(crate) fn counting(
    collection: String,
    request: &Value,
) -> Result<stratus_store::documents::Aggregation, ApiError> {
    Ok(wire::aggregation(
        collection,
        &json!({ "where": request["where"] }),
    )?)
}

/// The count a counting aggregation answered.
pub(crate) fn count_of(groups: &[stratus_store::documents::Group]) -> Value {
    groups
        .first()
        .and_then(|g| g.values.get("count"))
        .cloned()
        .unwrap_or(json!(0))
}

/// Runs an aggregation, refused as a query is when it would scan a large
/// collection (unless `allow_scan`).
pub(crate) async fn run_aggregation(
    state: &AppState,
    app: &str,
    db: &AppDb,
    aggregation: stratus_store::documents::Aggregation,
    allow_scan: bool,
) -> Result<Vec<stratus_store::documents::Group>, ApiError> {
    if !allow_scan {
        require_index(
            state,
            app,
            db,
            &aggregation.collection,
            aggregation.filter.as_ref(),
            &[],
        )
        .await?;
    }
    Ok(state.store.aggregate_documents(app, aggregation).await?)
}

async fn create(
    State(state): State<Arc<AppState>>,
    Path((app, collection)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let request = read_json(&state, body).await?;
    let write = DocWrite {
        collection: wire::collection(&collection)?,
        id: wire::new_id(),
        op: DocOp::Create(wire::body(request)?),
        if_version: None,
    };
    let changes = commit(&state, &app, db, vec![write], true).await?;
    Ok((StatusCode::CREATED, Json(written(&changes))).into_response())
}

/// The document a one-write request left.
pub(crate) fn written(changes: &[Change]) -> Value {
    changes
        .last()
        .and_then(|c| c.after.as_ref())
        .map_or(Value::Null, wire::document)
}

async fn drop_collection(
    State(state): State<Arc<AppState>>,
    Path((app, collection)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    app_db(&state, &app)?;
    let collection = wire::collection(&collection)?;
    let deleted = state.store.delete_collection(&app, &collection).await?;
    tracing::info!(app, collection, deleted, "collection emptied");
    Ok(Json(json!({ "collection": collection, "deleted": deleted })).into_response())
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    Path((app, collection, id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    app_db(&state, &app)?;
    let (collection, id) = (wire::collection(&collection)?, wire::id(&id)?);
    match state.store.get_document(&app, &collection, &id).await? {
        Some(doc) => Ok(Json(wire::document(&doc)).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_document",
            format!("there is no document {collection}/{id}"),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct VersionParams {
    if_version: Option<i64>,
}

async fn set(
    State(state): State<Arc<AppState>>,
    Path((app, collection, id)): Path<(String, String, String)>,
    Query(params): Query<VersionParams>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let request = read_json(&state, body).await?;
    let write = DocWrite {
        collection: wire::collection(&collection)?,
        id: wire::id(&id)?,
        op: DocOp::Set(wire::body(request)?),
        if_version: params.if_version,
    };
    let changes = commit(&state, &app, db, vec![write], true).await?;
    Ok(Json(written(&changes)).into_response())
}

async fn update(
    State(state): State<Arc<AppState>>,
    Path((app, collection, id)): Path<(String, String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let request = read_json(&state, body).await?;
    let write = DocWrite {
        collection: wire::collection(&collection)?,
        id: wire::id(&id)?,
        op: DocOp::Update(wire::update(&request)?),
        if_version: wire::if_version(&request["if_version"])?,
    };
    let changes = commit(&state, &app, db, vec![write], true).await?;
    Ok(Json(written(&changes)).into_response())
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Path((app, collection, id)): Path<(String, String, String)>,
    Query(params): Query<VersionParams>,
) -> Result<Response, ApiError> {
    let db = app_db(&state, &app)?;
    let write = DocWrite {
        collection: wire::collection(&collection)?,
        id: wire::id(&id)?,
        op: DocOp::Delete,
        if_version: params.if_version,
    };
    let changes = commit(&state, &app, db, vec![write], true).await?;
    Ok(Json(json!({ "deleted": !changes.is_empty() })).into_response())
}
