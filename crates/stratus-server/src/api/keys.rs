//! App keys: what callers of an app's `auth: key` routes present.
//!
//! A key is shown once, when it is created; the store keeps its SHA-256.
//! Its form is `sk_ID_SECRET`, so a key at hand names its own id for
//! `stratus keys rm`.
//!
//! The same endpoints manage an app's AWS credentials (`"aws": true`), for
//! Lambda's Invoke API (`lambda.rs`): an access key id `AKST` + 16
//! characters and a secret of 40, also shown once. The store keeps that
//! secret, as Signature Version 4 needs it to verify.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use stratus_store::{AwsCredentialRecord, KeyRecord};

use super::ApiError;
use crate::AppState;
use crate::deploy::status_for_missing_app;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// What the key is for, to tell keys apart in listings.
    #[serde(default)]
    name: Option<String>,
    /// An AWS credential (access key id and secret) instead of a key.
    #[serde(default)]
    aws: bool,
}

/// Prefix of the access key ids of AWS credentials, as `AKIA` is on AWS.
const ACCESS_KEY_PREFIX: &str = "AKST";

fn random_hex(bytes: usize) -> Result<String, ApiError> {
    crate::token::random_hex(bytes).map_err(|e| ApiError::internal("no randomness for a key", e))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::internal("no randomness for a credential", e))?;
    Ok(bytes)
}

fn public(key: &KeyRecord) -> serde_json::Value {
    json!({ "kind": "key", "id": key.id, "app": key.app, "name": key.name, "created_ms": key.created_ms })
}

fn public_aws(c: &AwsCredentialRecord) -> serde_json::Value {
    json!({
        "kind": "aws",
        "id": c.access_key_id,
        "access_key_id": c.access_key_id,
        "app": c.app,
        "name": c.name,
        "created_ms": c.created_ms,
    })
}

/// A new AWS credential: an access key id of 20 characters, `AKST` and 16
/// of the base32 alphabet (upper-case letters and 2-7, as AWS's), and a
/// secret of 30 random bytes in base64, 40 characters.
fn new_aws_credential(app: &str, name: String) -> Result<AwsCredentialRecord, ApiError> {
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = random_bytes::<16>()?
        .iter()
        .map(|b| BASE32[usize::from(b & 31)] as char)
        .collect();
    Ok(AwsCredentialRecord {
        access_key_id: format!("{ACCESS_KEY_PREFIX}{id}"),
        app: app.to_owned(),
        name,
        secret: base64::engine::general_purpose::STANDARD.encode(random_bytes::<30>()?),
        created_ms: crate::now_ms(),
    })
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
                format!(
                    "send {{\"name\": \"...\", \"aws\": true}} (both optional) or nothing: {err}"
                ),
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
    if request.aws {
        let credential = new_aws_credential(&app, name)?;
        let sealed = state
            .sealer
            .seal(&credential.access_key_id, &credential.secret)
            .map_err(|err| ApiError::internal("seal the secret", err))?;
        state
            .store
            .create_aws_credential(AwsCredentialRecord {
                secret: sealed,
                ..credential.clone()
            })
            .await?;
        let mut body = public_aws(&credential);
        body["secret_access_key"] = json!(credential.secret);
        state.aws_credentials.insert(credential);
        return Ok((StatusCode::CREATED, Json(body)).into_response());
    }
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
    let credentials = state.store.list_aws_credentials(Some(&app)).await?;
    let mut listed: Vec<(i64, serde_json::Value)> = keys
        .iter()
        .map(|k| (k.created_ms, public(k)))
        .chain(credentials.iter().map(|c| (c.created_ms, public_aws(c))))
        .collect();
    listed.sort_by_key(|(created_ms, _)| *created_ms);
    let keys: Vec<_> = listed.into_iter().map(|(_, key)| key).collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Path((app, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if id.starts_with(ACCESS_KEY_PREFIX) {
        let _serial = state.deploy_lock.lock().await;
        if !state.store.delete_aws_credential(&app, &id).await? {
            return Err(ApiError::not_found(format!(
                "app {app:?} has no AWS credential {id:?}; `stratus keys ls {app}` lists them"
            )));
        }
        state.aws_credentials.remove(&id);
        return Ok(Json(json!({ "app": app, "id": id, "removed": true })).into_response());
    }
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
