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
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{Value, json};
use stratus_store::documents::{ChangeRecord, Document, Query};
use tokio::sync::{Notify, broadcast};

use super::{Caller, Peer};
use crate::AppState;
use crate::api::ApiError;
use crate::db::rules::{self, Fetches};

/// How often a node reads the change records for other nodes' changes.
const POLL: Duration = Duration::from_millis(150);
/// Changes a slow watcher may fall behind by before it gets a new
/// snapshot instead.
const BACKLOG: usize = 1024;
/// How long one message to a watcher may take to send: a client that
/// stops reading is let go.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a watcher's session is checked again (revoked, expired).
const RECHECK: Duration = Duration::from_secs(10);
/// Watches one client address may hold open at once.
const MAX_PER_ADDRESS: usize = 256;
/// How long change records are kept.
const KEEP_CHANGES: Duration = Duration::from_secs(600);
/// Subscriptions one connection may hold.
const MAX_SUBSCRIPTIONS: usize = 100;

/// The committed changes of every app, as they come, for the watches this
/// node serves.
pub(crate) struct Hub {
    changes: broadcast::Sender<Arc<ChangeRecord>>,
    wake: Notify,
    /// Open watches by client address.
    open: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            changes: broadcast::channel(BACKLOG).0,
            wake: Notify::new(),
            open: Default::default(),
        }
    }
}

/// A watch counted against its address while it is open.
struct Opened {
    hub: Arc<Hub>,
    peer: IpAddr,
}

impl Drop for Opened {
    fn drop(&mut self) {
        let mut open = self.hub.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.peer);
            }
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
        let start = loop {
            match state.store.last_document_change().await {
                Ok(seq) => break seq,
                Err(err) => {
                    tracing::warn!(%err, "cannot read where the document changes end; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let mut cursor = Cursor::new(start);
        let mut trimmed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            let mut after = cursor.low();
            loop {
                match state.store.document_changes(after, 500).await {
                    Ok(changes) => {
                        let full = changes.len() == 500;
                        for change in changes {
                            after = change.seq;
                            if cursor.take(change.seq) {
                                // Nobody watching is no error.
                                let _ = self.changes.send(Arc::new(change));
                            }
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
            cursor.settle(std::time::Instant::now(), GAP_WAIT);
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

/// How long a follower waits for a change record whose `seq` it has not
/// seen while it has seen higher ones: a write still committing (on
/// PostgreSQL records may commit out of `seq` order), or one rolled back,
/// which leaves its `seq` unused.
const GAP_WAIT: Duration = Duration::from_secs(5);
/// The most `seq`s a follower keeps track of above the ones it is done with.
const MAX_TRACKED: usize = 100_000;

/// Where a follower of change records is: done with every `seq` up to
/// `low`; above it, the ones it delivered, and since when each missing one
/// below the highest delivered has been missing.
#[derive(Debug)]
pub(crate) struct Cursor {
    low: i64,
    delivered: std::collections::BTreeSet<i64>,
    missing: std::collections::BTreeMap<i64, std::time::Instant>,
}

impl Cursor {
    pub fn new(low: i64) -> Cursor {
        Cursor {
            low,
            delivered: Default::default(),
            missing: Default::default(),
        }
    }

    /// Where the next read starts.
    pub fn low(&self) -> i64 {
        self.low
    }

    /// Whether change `seq` is new to this follower (then it is counted
    /// as delivered).
    pub fn take(&mut self, seq: i64) -> bool {
        if seq <= self.low || !self.delivered.insert(seq) {
            return false;
        }
        self.missing.remove(&seq);
        true
    }

    /// After a read at `now`: notes the `seq`s missing below the highest
    /// delivered, and moves past what was delivered and past what has
    /// been missing for `wait`.
    pub fn settle(&mut self, now: std::time::Instant, wait: Duration) {
        let Some(&high) = self.delivered.last() else {
            return;
        };
        if (high - self.low) as usize > MAX_TRACKED {
            // Far behind (a burst while this node was away): go on from
            // what was read.
            self.low = high;
            self.delivered.clear();
            self.missing.clear();
            return;
        }
        for seq in self.low + 1..high {
            if !self.delivered.contains(&seq) {
                self.missing.entry(seq).or_insert(now);
            }
        }
        loop {
            let next = self.low + 1;
            if self.delivered.remove(&next) {
                self.low = next;
            } else if self
                .missing
                .get(&next)
                .is_some_and(|since| now.duration_since(*since) >= wait)
            {
                self.missing.remove(&next);
                self.low = next;
            } else {
                break;
            }
        }
    }
}

pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Extension(Peer(peer)): Extension<Peer>,
    headers: axum::http::HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if state.databases.get(&caller.app).is_none() {
        return Err(ApiError::not_found(format!(
            "there is no app {}",
            caller.app
        )));
    }
    let token = super::token_of(&headers, query.as_deref());
    let opened = {
        let hub = state.watches.clone();
        let mut open = hub.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(peer).or_insert(0);
        if *n >= MAX_PER_ADDRESS {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_watches",
                format!(
                    "this address holds {MAX_PER_ADDRESS} watches open; close some (one connection takes many subscriptions)"
                ),
            ));
        }
        *n += 1;
        drop(open);
        Opened { hub, peer }
    };
    Ok(ws
        .max_message_size(64 << 10)
        .on_upgrade(move |socket| session(state, caller, token, socket, opened)))
}

/// One subscription: its query, and the documents the client has, by id
/// with their versions.
struct Subscription {
    collection: String,
    query: Query,
    known: HashMap<String, i64>,
}

/// Sends a message, or gives up on a client that does not read.
async fn send(socket: &mut WebSocket, message: &Value) -> bool {
    let message = Message::Text(message.to_string().into());
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

async fn session(
    state: Arc<AppState>,
    mut caller: Caller,
    token: Option<String>,
    mut socket: WebSocket,
    _opened: Opened,
) {
    let mut changes = state.watches.changes.subscribe();
    let mut subscriptions: HashMap<String, Subscription> = HashMap::new();
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    loop {
        tokio::select! {
            _ = recheck.tick(), if token.is_some() => {
                // A session revoked, expired or of a deleted user ends the
                // watch; the SDK opens it again with a fresh token.
                let token = token.as_deref().unwrap_or_default();
                match state.sessions.verify(&state, &caller.app, token).await {
                    Ok(auth) => caller.auth = Some(auth),
                    Err(err) => {
                        let _ = send(&mut socket, &error(&Value::Null, err)).await;
                        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(None))).await;
                        return;
                    }
                }
            }
            message = socket.recv() => {
                let Some(Ok(message)) = message else { return };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(_) => return,
                    _ => continue,
                };
                let replies = handle(&state, &caller, &mut subscriptions, text.as_str()).await;
                for reply in replies {
                    if !send(&mut socket, &reply).await {
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
                    if !send(&mut socket, &reply).await {
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
                    let read = rules::Read {
                        collection: &sub.collection,
                        id: &change.id,
                        doc: Some(&doc),
                        explain: false,
                    };
                    rules::check_read(&db, read, auth.as_ref(), crate::now_ms(), f)
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
            if sub.known.len() > 2 * sub.query.limit as usize {
                // Past its page: the client keeps the first `limit`; the
                // server starts over from the query's page.
                stale.push(key.clone());
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_cursor_delivers_each_change_once_and_waits_for_gaps() {
        let start = Instant::now();
        let wait = Duration::from_secs(5);
        let mut cursor = Cursor::new(10);
        assert!(!cursor.take(9), "before the start");
        assert!(cursor.take(11));
        assert!(!cursor.take(11), "once");
        // 12 is still committing; 13 and 14 are read.
        assert!(cursor.take(13));
        assert!(cursor.take(14));
        cursor.settle(start, wait);
        assert_eq!(cursor.low(), 11);
        // Read again from 11: 13 and 14 come again and are not delivered
        // again; 12 commits late and is.
        assert!(!cursor.take(13));
        assert!(cursor.take(12));
        cursor.settle(start + Duration::from_secs(1), wait);
        assert_eq!(cursor.low(), 14);
    }

    #[test]
    fn a_cursor_moves_past_a_seq_that_never_comes() {
        let start = Instant::now();
        let wait = Duration::from_secs(5);
        let mut cursor = Cursor::new(0);
        assert!(cursor.take(1));
        assert!(cursor.take(3));
        cursor.settle(start, wait);
        assert_eq!(cursor.low(), 1);
        cursor.settle(start + Duration::from_secs(4), wait);
        assert_eq!(cursor.low(), 1, "2 may still commit");
        cursor.settle(start + Duration::from_secs(5), wait);
        assert_eq!(cursor.low(), 3, "2 was rolled back");
        assert!(!cursor.take(2), "too late: it is taken as gone");
    }
}
