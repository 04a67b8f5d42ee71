//! Packages, deploys and application listings.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::ApiError;
use crate::AppState;
use crate::deploy::{self, DeployRequest};

pub(crate) async fn put_package(
    State(state): State<Arc<AppState>>,
    Path(sha256): Path<String>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let limit = state.config.limits.max_package_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "package_too_large",
            format!("the package is larger than {limit} bytes compressed; add large files to .stratusignore"),
        )
    })?;
    let record = deploy::put_package(&state, &sha256, bytes).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

pub(crate) async fn head_package(
    State(state): State<Arc<AppState>>,
    Path(sha256): Path<String>,
) -> StatusCode {
    let on_disk =
        deploy::is_sha256(&sha256) && deploy::code_dir(&state.config.data_dir, &sha256).is_dir();
    match state.store.has_package(&sha256).await {
        Ok(true) if on_disk => StatusCode::OK,
        Ok(_) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) async fn deploy(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: DeployRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(
            "invalid_request",
            format!("the deploy request is not valid: {err}"),
        )
    })?;
    let response = deploy::deploy(&state, &app, request).await?;
    Ok(Json(response).into_response())
}

pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let mut apps = Vec::new();
    for version in state.store.active_versions().await? {
        apps.push(describe(&state, &version));
    }
    Ok(Json(json!({ "apps": apps })).into_response())
}

pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    match state.store.active_version(&app).await? {
        Some(version) => Ok(Json(describe(&state, &version)).into_response()),
        None => Err(deploy::status_for_missing_app(&app)),
    }
}

pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let _serial = state.deploy_lock.lock().await;
    if !state.store.delete_app(&app).await? {
        return Err(deploy::status_for_missing_app(&app));
    }
    state.directory.remove(&app);
    state.aws_credentials.remove_app(&app);
    state.scheduler.remove_app(&app);
    state.triggers.reconcile(&app, None);
    tracing::info!(app, "removed");
    Ok(Json(json!({ "app": app, "removed": true })).into_response())
}

fn describe(state: &AppState, version: &stratus_store::VersionRecord) -> serde_json::Value {
    let pools = state.scheduler.app_pools(&version.app);
    let functions: Vec<_> = version
        .spec
        .functions
        .values()
        .map(|f| {
            let stats = pools
                .iter()
                .find(|p| p.config.spec.name == f.name)
                .map(|p| p.stats())
                .unwrap_or_default();
            let routes: Vec<String> = f
                .http
                .iter()
                .flat_map(|http| {
                    let methods = http.methods_label();
                    http.paths
                        .iter()
                        .map(move |path| format!("{methods} /{}{path}", version.app))
                })
                .collect();
            json!({
                "name": f.name,
                "runtime": f.runtime,
                "routes": routes,
                "auth": f.http.as_ref().map(|h| h.auth),
                "handler": f.handler,
                "memory_mb": f.memory_mb,
                "timeout_ms": f.timeout.as_millis() as u64,
                "max_instances": f.max_instances,
                "instances": stats,
            })
        })
        .collect();
    let live = state.scheduler.app_services(&version.app);
    let services: Vec<_> = version
        .spec
        .services
        .values()
        .map(|s| {
            let status = live
                .iter()
                .find(|l| l.config.spec.name == s.name)
                .map(|l| l.status());
            let methods = s.http.methods_label();
            let routes: Vec<String> = s
                .http
                .paths
                .iter()
                .map(|path| format!("{methods} /{}{path}", version.app))
                .collect();
            json!({
                "name": s.name,
                "routes": routes,
                "auth": s.http.auth,
                "memory_mb": s.memory_mb,
                "concurrency": s.concurrency,
                "min_instances": s.min_instances,
                "max_instances": s.max_instances,
                "instances": status.map_or(0, |st| st.ready + st.starting + st.draining),
            })
        })
        .collect();
    json!({
        "name": version.app,
        "version": version.version,
        "deployed_ms": version.created_ms,
        "functions": functions,
        "services": services,
    })
}
