//! Packages, deploys and application listings.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
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
        Ok(true) if on_disk => {
            // Spared by pruning while the deploy that asked is on its way.
            deploy::touch(&state.config.data_dir, &sha256);
            StatusCode::OK
        }
        Ok(_) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `POST /v1/apps/{app}/deploy`; with `Accept: application/x-ndjson`,
/// the build's progress streams before the outcome (`api/progress.rs`).
pub(crate) async fn deploy(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: DeployRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(
            "invalid_request",
            format!("the deploy request is not valid: {err}"),
        )
    })?;
    Ok(super::progress::answer(&headers, move |sink| async move {
        let response = deploy::deploy(&state, &app, request, &sink).await?;
        if response.changed {
            deploy::prune_in_background(state.clone());
        }
        Ok(response)
    })
    .await)
}

/// `POST /v1/deploy/git`: `{"url", "ref"?, "path"?}`; the app is the one
/// the repository's manifest names.
pub(crate) async fn deploy_git(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let source: crate::git::GitSource = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(
            "invalid_request",
            format!("send {{\"url\": URL, \"ref\": REF?, \"path\": DIR?}}: {err}"),
        )
    })?;
    Ok(super::progress::answer(&headers, move |sink| async move {
        let response = crate::git::deploy(&state, source, &sink).await?;
        if response.changed {
            deploy::prune_in_background(state.clone());
        }
        Ok(response)
    })
    .await)
}

/// A page of the app listing: `limit` apps (default 100, at most 1000)
/// by name, after the app `after`; `next` names the last one when more
/// may follow.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Page {
    limit: Option<usize>,
    after: Option<String>,
}

const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;

pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(page): axum::extract::Query<Page>,
) -> Result<Response, ApiError> {
    let limit = page.limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit is from 1 to {PAGE_MAX}"),
        ));
    }
    let mut versions = state.store.active_versions().await?;
    versions.sort_by(|a, b| a.app.cmp(&b.app));
    let start = match &page.after {
        Some(after) => versions.partition_point(|v| v.app <= *after),
        None => 0,
    };
    let page: Vec<_> = versions.iter().skip(start).take(limit).collect();
    let next = (start + page.len() < versions.len())
        .then(|| page.last().map(|v| v.app.clone()))
        .flatten();
    let apps: Vec<_> = page.iter().map(|v| describe(&state, v)).collect();
    Ok(Json(json!({ "apps": apps, "next": next })).into_response())
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

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct RemoveParams {
    /// Remove the app's buckets with their objects too.
    #[serde(default)]
    force: bool,
}

pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    axum::extract::Query(params): axum::extract::Query<RemoveParams>,
) -> Result<Response, ApiError> {
    let _serial = state.deploy_lock.lock().await;
    crate::db::check_removal(&state, &app, params.force).await?;
    crate::s3::declared::remove_all(&state, &app, params.force).await?;
    if !state.store.delete_app(&app).await? {
        return Err(deploy::status_for_missing_app(&app));
    }
    crate::cluster::unpublish(&state, &app);
    tracing::info!(app, "removed");
    Ok(Json(json!({ "app": app, "removed": true })).into_response())
}

fn describe(state: &AppState, version: &stratus_store::VersionRecord) -> serde_json::Value {
    let pools: std::collections::HashMap<String, _> = state
        .scheduler
        .app_pools(&version.app)
        .into_iter()
        .map(|p| (p.config.spec.name.clone(), p))
        .collect();
    let functions: Vec<_> = version
        .spec
        .functions
        .values()
        .map(|f| {
            let stats = pools.get(&f.name).map(|p| p.stats()).unwrap_or_default();
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
    let live: std::collections::HashMap<String, _> = state
        .scheduler
        .app_services(&version.app)
        .into_iter()
        .map(|l| (l.config.spec.name.clone(), l))
        .collect();
    let services: Vec<_> = version
        .spec
        .services
        .values()
        .map(|s| {
            let status = live.get(&s.name).map(|l| l.status());
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

/// Where a version came from, for people.
fn source(version: &stratus_store::VersionRecord) -> String {
    match version.source.is_empty() {
        // Recorded before versions kept their source.
        true => deploy::upload_source(&version.packages),
        false => version.source.clone(),
    }
}

pub(crate) async fn versions(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let Some(active) = state.store.active_version(&app).await? else {
        return Err(deploy::status_for_missing_app(&app));
    };
    let versions: Vec<_> = state
        .store
        .list_versions(&app)
        .await?
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "active": v.version == active.version,
                "created_ms": v.created_ms,
                "source": source(v),
                "packages": v.packages,
                "functions": v.spec.functions.keys().collect::<Vec<_>>(),
                "services": v.spec.services.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "app": app, "active": active.version, "versions": versions })).into_response())
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    /// The version to make active; default: the one before the active one.
    #[serde(default)]
    version: Option<u32>,
}

pub(crate) async fn rollback(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: Rollback = if body.iter().all(u8::is_ascii_whitespace) {
        Rollback::default()
    } else {
        serde_json::from_slice(&body).map_err(|err| {
            ApiError::bad_request(
                "invalid_request",
                format!(
                    "send {{\"version\": N}} or nothing (the version before the active one): {err}"
                ),
            )
        })?
    };
    let version = deploy::rollback(&state, &app, request.version).await?;
    Ok(Json(json!({
        "app": app,
        "version": version.version,
        "source": source(&version),
    }))
    .into_response())
}
