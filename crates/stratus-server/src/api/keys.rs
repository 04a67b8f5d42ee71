//! App keys: what callers of an app's `auth: key` routes present.
//!
//! A key is shown once, when it is created; the store keeps its SHA-256.
//! Its form is `sk_ID_SECRET`, so a key at hand names its own id for
//! `stratus keys rm`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use stratus_store::KeyRecord;

use super::ApiError;
use crate::AppState;
use crate::deploy::status_for_missing_app;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// What the key is for, to tell keys apart in listings.
    #[serde(default)]
    name: Option<String>,
}

fn random_hex(bytes: usize) -> Result<String, ApiError> {
    crate::token::random_hex(bytes).map_err(|e| ApiError::internal("no randomness for a key", e))
}

fn public(key: &KeyRecord) -> serde_json::Value {
    json!({ "id": key.id, "app": key.app, "name": key.name, "created_ms": key.created_ms })
}

pub(crate) async fn require_app(state: &AppState, app: &str) -> Result<(), ApiError> {
    match state.store.get_app(app).await? {
        Some(_) => Ok(()),
        None => Err(status_for_missing_app(app)),
    }
}

pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateKey = if body.iter().all(u8::is_ascii_whitespace) {
        CreateKey::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::bad_request(
                "invalid_request",
                format!("send {{\"name\": \"...\"}} or nothing: {err}"),
            )
        })?
    };
    let name = request.name.unwrap_or_default();
    if name.len() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a key's name is at most 200 characters, without control characters",
        ));
    }
    let _serial = state.deploy_lock.lock().await;
    require_app(&state, &app).await?;
    let id = random_hex(4)?;
    let key = format!("sk_{id}_{}", random_hex(24)?);
    let record = KeyRecord {
        id,
        app: app.clone(),
        name,
        sha256: stratus_archive::sha256_hex(key.as_bytes()),
        created_ms: crate::now_ms(),
    };
    state.store.create_key(record.clone()).await?;
    let keys = state.store.list_keys(Some(&app)).await?;
    state.directory.set_keys(&app, &keys);
    let mut body = public(&record);
    body["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    require_app(&state, &app).await?;
    let keys = state.store.list_keys(Some(&app)).await?;
    let keys: Vec<_> = keys.iter().map(public).collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    // A whole key names its id.
    let id = id
        .strip_prefix("sk_")
        .and_then(|rest| rest.split('_').next())
        .unwrap_or(&id)
        .to_owned();
    let _serial = state.deploy_lock.lock().await;
    if !state.store.delete_key(&app, &id).await? {
        return Err(ApiError::not_found(format!(
            "app {app:?} has no key {id:?}; `stratus keys ls {app}` lists them"
        )));
    }
    let keys = state.store.list_keys(Some(&app)).await?;
    state.directory.set_keys(&app, &keys);
    Ok(Json(json!({ "app": app, "id": id, "removed": true })).into_response())
}
