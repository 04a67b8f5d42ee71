//! Realtime watches of queries: `GET /_stratus/watch` (a WebSocket, the
//! access token in `?access_token=`), over which a client subscribes to
//! queries and gets each one's documents, then its changes as they
//! commit, through whichever node of a cluster they were made.
//!
//! Client to server, one JSON object per text message:
//! - `{"op": "subscribe", "id": ID, "collection", "where", "order_by",
//!   "limit"}`; `{"op": "unsubscribe", "id": ID}`.
//!
//! Server to client:
//! - `{"id", "type": "snapshot", "documents": [...]}`: the query's
//!   documents now (again after a gap, such as a slow reader's).
//! - `{"id", "type": "change", "change": "added" | "modified" | "removed",
//!   "document": {...}}` (a removed one as `{"id"}` only).
//! - `{"id", "type": "error", "error": {"code", "message"}}`.
//!
//! Changes come from the store's change records ([`Hub`]): each node
//! follows them, woken at once by its own commits and every
//! [`POLL`] for other nodes'. A subscription is allowed when its filters
//! imply the collection's read rule, and each document it sends is
//! checked against that rule too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde_json::{Value, json};
use stratus_store::documents::{ChangeRecord, Document, Query};
use tokio::sync::{Notify, broadcast};

use super::Caller;
use crate::AppState;
use crate::api::ApiError;
use crate::db::rules::{self, Fetches};

/// How often a node reads the change records for other nodes' changes.
const POLL: Duration = Duration::from_millis(150);
/// Changes a slow watcher may fall behind by before it gets a new
/// snapshot instead.
const BACKLOG: usize = 4096;
/// How long change records are kept.
const KEEP_CHANGES: Duration = Duration::from_secs(600);
/// Subscriptions one connection may hold.
const MAX_SUBSCRIPTIONS: usize = 100;

/// The committed changes of every app, as they come, for the watches this
/// node serves.
pub(crate) struct Hub {
    changes: broadcast::Sender<Arc<ChangeRecord>>,
    wake: Notify,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            changes: broadcast::channel(BACKLOG).0,
            wake: Notify::new(),
        }
    }
}

impl Hub {
    /// Says that this node committed changes: read them now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Follows the store's change records until the server stops, and
    /// trims the old ones.
    pub async fn follow(self: Arc<Self>, state: Arc<AppState>) {
        let mut seen = loop {
            match state.store.last_document_change().await {
                Ok(seq) => break seq,
                Err(err) => {
                    tracing::warn!(%err, "cannot read where the document changes end; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut trimmed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            loop {
                match state.store.document_changes(seen, 500).await {
                    Ok(changes) => {
                        let full = changes.len() == 500;
                        for change in changes {
                            seen = change.seq;
                            // Nobody watching is no error.
                            let _ = self.changes.send(Arc::new(change));
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(err) => {
                        tracing::debug!(%err, "reading document changes failed; trying again");
                        break;
                    }
                }
            }
            if trimmed.elapsed() > Duration::from_secs(60) {
                trimmed = tokio::time::Instant::now();
                let before = crate::now_ms() - KEEP_CHANGES.as_millis() as i64;
                if let Err(err) = state.store.trim_document_changes(before).await {
                    tracing::debug!(%err, "trimming document changes failed");
                }
            }
        }
    }
}

pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if state.databases.get(&caller.app).is_none() {
        return Err(ApiError::not_found(format!(
            "there is no app {}",
            caller.app
        )));
    }
    Ok(ws
        .max_message_size(64 << 10)
        .on_upgrade(move |socket| session(state, caller, socket)))
}

/// One subscription: its query, and the documents the client has, by id
/// with their versions.
struct Subscription {
    collection: String,
    query: Query,
    known: HashMap<String, i64>,
}

async fn session(state: Arc<AppState>, caller: Caller, mut socket: WebSocket) {
    let mut changes = state.watches.changes.subscribe();
    let mut subscriptions: HashMap<String, Subscription> = HashMap::new();
    loop {
        tokio::select! {
            message = socket.recv() => {
                let Some(Ok(message)) = message else { return };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(_) => return,
                    _ => continue,
                };
                let replies = handle(&state, &caller, &mut subscriptions, text.as_str()).await;
                for reply in replies {
                    if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
            change = changes.recv() => {
                let replies = match change {
                    Ok(change) => changed(&state, &caller, &mut subscriptions, &change).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => resnapshot(&state, &caller, &mut subscriptions).await,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for reply in replies {
                    if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn error(id: &Value, err: ApiError) -> Value {
    json!({ "id": id, "type": "error", "error": { "code": err.code, "message": err.message } })
}

async fn handle(
    state: &AppState,
    caller: &Caller,
    subscriptions: &mut HashMap<String, Subscription>,
    text: &str,
) -> Vec<Value> {
    let Ok(request) = serde_json::from_str::<Value>(text) else {
        return vec![error(
            &Value::Null,
            ApiError::bad_request("invalid_json", "a message is one JSON object"),
        )];
    };
    let id = request["id"].clone();
    let Some(key) = id
        .as_str()
        .map(str::to_owned)
        .or_else(|| id.as_i64().map(|n| n.to_string()))
    else {
        return vec![error(
            &id,
            ApiError::bad_request("invalid_request", "a message names its subscription's `id`"),
        )];
    };
    match request["op"].as_str() {
        Some("unsubscribe") => {
            subscriptions.remove(&key);
            Vec::new()
        }
        Some("subscribe") => {
            if subscriptions.len() >= MAX_SUBSCRIPTIONS && !subscriptions.contains_key(&key) {
                return vec![error(
                    &id,
                    ApiError::bad_request(
                        "too_many_subscriptions",
                        format!("one connection holds at most {MAX_SUBSCRIPTIONS} subscriptions"),
                    ),
                )];
            }
            match subscribe(state, caller, &request).await {
                Ok((subscription, documents)) => {
                    subscriptions.insert(key, subscription);
                    vec![json!({ "id": id, "type": "snapshot", "documents": documents })]
                }
                Err(err) => vec![error(&id, err)],
            }
        }
        _ => vec![error(
            &id,
            ApiError::bad_request(
                "invalid_request",
                "`op` is \"subscribe\" or \"unsubscribe\"",
            ),
        )],
    }
}

/// Checks and runs a subscription's query: the subscription and its
/// first documents.
async fn subscribe(
    state: &AppState,
    caller: &Caller,
    request: &Value,
) -> Result<(Subscription, Vec<Value>), ApiError> {
    let db = state
        .databases
        .get(&caller.app)
        .ok_or_else(|| ApiError::not_found(format!("there is no app {}", caller.app)))?;
    let collection =
        crate::db::wire::collection(request["collection"].as_str().unwrap_or_default())?;
    let answer = crate::db::client::run_query(state, &db, caller, &collection, request).await?;
    let query = crate::db::api::read_query(state, &collection, request)?;
    let documents = answer["documents"].as_array().cloned().unwrap_or_default();
    let known = documents
        .iter()
        .filter_map(|d| Some((d["id"].as_str()?.to_owned(), d["version"].as_i64()?)))
        .collect();
    Ok((
        Subscription {
            collection,
            query,
            known,
        },
        documents,
    ))
}

/// What one committed change means to each subscription.
async fn changed(
    state: &AppState,
    caller: &Caller,
    subscriptions: &mut HashMap<String, Subscription>,
    change: &ChangeRecord,
) -> Vec<Value> {
    if change.app != caller.app || subscriptions.is_empty() {
        return Vec::new();
    }
    let Some(db) = state.databases.get(&caller.app) else {
        return Vec::new();
    };
    let auth = caller.auth_json();
    let mut replies = Vec::new();
    let mut stale = Vec::new();
    for (key, sub) in subscriptions.iter_mut() {
        if sub.collection != change.collection {
            continue;
        }
        let had = sub.known.get(&change.id).copied();
        // What the client has already (its snapshot was newer); a deletion
        // keeps the version the document had.
        if change.body.is_some() && had.is_some_and(|v| v >= change.version) {
            continue;
        }
        let visible = match &change.body {
            Some(body) if sub.query.selects(body) => {
                let doc = Value::Object(body.clone());
                let mut fetched = Fetches::default();
                crate::db::client::decide(state, &caller.app, &mut fetched, |f| {
                    rules::check_read(
                        &db,
                        &sub.collection,
                        auth.as_ref(),
                        Some(&doc),
                        crate::now_ms(),
                        f,
                    )
                })
                .await
                .is_ok()
            }
            _ => false,
        };
        if visible {
            let body = change.body.clone().unwrap_or_default();
            let doc = Document {
                collection: change.collection.clone(),
                id: change.id.clone(),
                version: change.version,
                body,
                created_ms: 0,
                updated_ms: change.at_ms,
            };
            let mut document = crate::db::wire::document(&doc);
            document.as_object_mut().map(|d| d.remove("created_ms"));
            sub.known.insert(change.id.clone(), change.version);
            replies.push(json!({
                "id": key,
                "type": "change",
                "change": if had.is_some() { "modified" } else { "added" },
                "document": document,
            }));
        } else if had.is_some() {
            sub.known.remove(&change.id);
            if sub.query.limit as usize <= sub.known.len() + 1 {
                // A page lost a document: the next one moves up.
                stale.push(key.clone());
            } else {
                replies.push(json!({
                    "id": key,
                    "type": "change",
                    "change": "removed",
                    "document": { "id": change.id },
                }));
            }
        }
    }
    for key in stale {
        replies.extend(resnapshot_one(state, caller, subscriptions, &key).await);
    }
    replies
}

async fn resnapshot(
    state: &AppState,
    caller: &Caller,
    subscriptions: &mut HashMap<String, Subscription>,
) -> Vec<Value> {
    let keys: Vec<String> = subscriptions.keys().cloned().collect();
    let mut replies = Vec::new();
    for key in keys {
        replies.extend(resnapshot_one(state, caller, subscriptions, &key).await);
    }
    replies
}

/// Runs a subscription's query again and sends its documents whole.
async fn resnapshot_one(
    state: &AppState,
    caller: &Caller,
    subscriptions: &mut HashMap<String, Subscription>,
    key: &str,
) -> Vec<Value> {
    let Some(sub) = subscriptions.get_mut(key) else {
        return Vec::new();
    };
    let Some(db) = state.databases.get(&caller.app) else {
        return Vec::new();
    };
    let mut query = sub.query.clone();
    query.after = None;
    let docs = match state.store.query_documents(&caller.app, query).await {
        Ok(docs) => docs,
        Err(err) => return vec![error(&json!(key), err.into())],
    };
    let mut fetched = Fetches::default();
    match crate::db::client::readable(
        state,
        &db,
        caller,
        &sub.collection,
        docs,
        &mut fetched,
        None,
    )
    .await
    {
        Ok(documents) => {
            sub.known = documents
                .iter()
                .filter_map(|d| Some((d["id"].as_str()?.to_owned(), d["version"].as_i64()?)))
                .collect();
            vec![json!({ "id": key, "type": "snapshot", "documents": documents })]
        }
        Err(err) => vec![error(&json!(key), err)],
    }
}
