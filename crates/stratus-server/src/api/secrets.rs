//! Apps' secrets: `PUT /v1/apps/{app}/secrets/{name}` (the value is the
//! body), `GET /v1/apps/{app}/secrets` (names, times and the variables
//! that use each; never values) and `DELETE /v1/apps/{app}/secrets/{name}`.
//!
//! A secret may be set before its app is first deployed (a deploy that
//! names a secret the app does not have is refused). Setting one again
//! rotates it: the app's active version is put in service anew, so new
//! instances start with the new value while running ones finish.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use stratus_store::SecretRecord;

use super::ApiError;
use crate::AppState;
use crate::app_secrets::{self, MAX_SECRET_BYTES};

fn check_names(app: &str, name: &str) -> Result<(), ApiError> {
    if !stratus_manifest::is_valid_name(app) {
        return Err(ApiError::bad_request(
            "invalid_app",
            format!("{app:?} is not an app name: lower-case letters, digits and '-'"),
        ));
    }
    if !stratus_manifest::valid_secret_name(name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            format!("{name:?}: {}", stratus_manifest::SECRET_NAME_RULE),
        ));
    }
    Ok(())
}

/// The variables of `app`'s active version that name secret `name`.
async fn users(state: &AppState, app: &str, name: &str) -> Result<Vec<String>, ApiError> {
    Ok(match state.store.active_version(app).await? {
        Some(version) => app_secrets::used(&version.spec)
            .into_iter()
            .filter(|(_, secret)| secret == name)
            .map(|(var, _)| var)
            .collect(),
        None => Vec::new(),
    })
}

/// Puts `app`'s active version in service again, if it uses secret `name`:
/// its new instances see the secret as it is now.
async fn republish(state: &AppState, app: &str, name: &str) -> Result<(), ApiError> {
    if let Some(version) = state.store.active_version(app).await?
        && app_secrets::used(&version.spec)
            .iter()
            .any(|(_, secret)| secret == name)
    {
        crate::cluster::publish(state, &version);
    }
    Ok(())
}

pub(crate) async fn set(
    State(state): State<Arc<AppState>>,
    Path((app, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_names(&app, &name)?;
    if body.len() > MAX_SECRET_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "secret_too_large",
            format!(
                "a secret is at most {MAX_SECRET_BYTES} bytes; this one is {}",
                body.len()
            ),
        ));
    }
    let Ok(value) = String::from_utf8(body.to_vec()) else {
        return Err(ApiError::bad_request(
            "invalid_value",
            "a secret goes into an environment variable: send UTF-8 text",
        ));
    };
    if value.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_value",
            "a secret goes into an environment variable, which cannot hold a NUL byte",
        ));
    }
    let sealed = state
        .sealer
        .seal(&app_secrets::context(&app, &name), &value)
        .map_err(|err| ApiError::internal("seal the secret", err))?;
    let updated_ms = crate::now_ms();
    let _serial = state.deploy_lock.lock().await;
    state
        .store
        .put_secret(SecretRecord {
            app: app.clone(),
            name: name.clone(),
            sealed,
            updated_ms,
        })
        .await?;
    state.secrets.set(&app, &name, value, updated_ms);
    republish(&state, &app, &name).await?;
    Ok(Json(json!({ "app": app, "name": name, "updated_ms": updated_ms })).into_response())
}

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let stored = state.store.list_secrets(Some(&app)).await?;
    let used = match state.store.active_version(&app).await? {
        Some(version) => app_secrets::used(&version.spec),
        None => Vec::new(),
    };
    let secrets: Vec<_> = stored
        .iter()
        // The platform's own (a git webhook's), never a user's.
        .filter(|s| s.name != crate::webhooks::SECRET_NAME)
        .map(|s| {
            let vars: Vec<&str> = used
                .iter()
                .filter(|(_, name)| *name == s.name)
                .map(|(var, _)| var.as_str())
                .collect();
            json!({ "name": s.name, "updated_ms": s.updated_ms, "used_by": vars })
        })
        .collect();
    Ok(Json(json!({ "app": app, "secrets": secrets })).into_response())
}

pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Path((app, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let _serial = state.deploy_lock.lock().await;
    let users = users(&state, &app, &name).await?;
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "secret_in_use",
            format!(
                "the active version of {app} names secret {name:?} (env {}); deploy without it first",
                users.join(", ")
            ),
        ));
    }
    if !state.store.delete_secret(&app, &name).await? {
        return Err(ApiError::not_found(format!(
            "app {app:?} has no secret {name:?}; `stratus secret ls {app}` lists them"
        )));
    }
    state.secrets.remove(&app, &name);
    Ok(Json(json!({ "app": app, "name": name, "removed": true })).into_response())
}
