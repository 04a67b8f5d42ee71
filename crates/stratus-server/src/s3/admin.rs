//! Buckets and objects on the admin API, for `stratus files` and `stratus
//! bucket`: the same operations the S3 API does (limits, triggers and
//! all), acting for the app with the admin token, in JSON. A bucket is
//! named as its manifest does or by its S3 name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use stratus_store::{BucketDeleted, BucketRecord};

use super::auth::{Caller, Payload};
use super::error::S3Error;
use super::{Call, objects};
use crate::AppState;
use crate::api::ApiError;

/// The longest a presigned URL lasts, as on S3: seven days.
const MAX_EXPIRES: Duration = Duration::from_secs(7 * 24 * 3600);
/// Objects listed at most at once.
const MAX_LISTED: u32 = 1000;

impl From<S3Error> for ApiError {
    fn from(err: S3Error) -> ApiError {
        ApiError::new(err.status, err.code, err.message)
    }
}

/// `app`'s bucket `name`: the one its manifest calls so, or the one of
/// that S3 name.
pub(crate) async fn app_bucket(
    state: &AppState,
    app: &str,
    name: &str,
) -> Result<BucketRecord, ApiError> {
    let buckets = state.store.list_buckets(Some(app)).await?;
    let names = || {
        buckets
            .iter()
            .map(|b| b.declared_as.as_deref().unwrap_or(&b.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    buckets
        .iter()
        .find(|b| b.declared_as.as_deref() == Some(name))
        .or_else(|| buckets.iter().find(|b| b.name == name))
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "app {app} has no bucket {name:?}; its buckets: {}",
                if buckets.is_empty() {
                    "none".to_owned()
                } else {
                    names()
                }
            ))
        })
}

fn call<'a>(state: &'a AppState, app: &str, bucket: &BucketRecord, key: String) -> Call<'a> {
    Call {
        state,
        caller: Caller::App(app.to_owned()),
        bucket: bucket.name.clone(),
        key,
        params: BTreeMap::new(),
    }
}

/// `GET /v1/apps/{app}/buckets`: the app's buckets, and what they hold.
pub(crate) async fn list_buckets(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    let buckets = state.store.list_buckets(Some(&app)).await?;
    let usage = state.store.object_usage(Some(&app)).await?;
    let usage = usage.first();
    Ok(Json(json!({
        "app": app,
        "buckets": buckets.iter().map(|b| {
            let spec: serde_json::Value = serde_json::from_str(&b.spec).unwrap_or_default();
            json!({
                "name": b.declared_as.as_deref().unwrap_or(&b.name),
                "s3_name": b.name,
                "declared": b.declared_as.is_some(),
                "public_read": spec["public_read"],
                "max_object_size": spec["max_object_size"],
                "created_ms": b.created_ms,
            })
        }).collect::<Vec<_>>(),
        "objects": usage.map_or(0, |u| u.objects),
        "bytes": usage.map_or(0, |u| u.bytes),
    }))
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RemoveParams {
    #[serde(default)]
    force: bool,
}

/// `DELETE /v1/apps/{app}/buckets/{bucket}?force=true`: a bucket, with its
/// objects when forced. A bucket the manifest still declares comes back
/// empty at the next deploy.
pub(crate) async fn remove_bucket(
    State(state): State<Arc<AppState>>,
    Path((app, name)): Path<(String, String)>,
    Query(params): Query<RemoveParams>,
) -> Result<Response, ApiError> {
    let bucket = app_bucket(&state, &app, &name).await?;
    match state
        .store
        .delete_bucket(&bucket.name, params.force)
        .await?
    {
        BucketDeleted::Deleted(blobs) => {
            let files = blobs.len();
            state.objects.remove(blobs).await;
            Ok(
                Json(json!({ "bucket": bucket.name, "removed": true, "files": files }))
                    .into_response(),
            )
        }
        BucketDeleted::NotEmpty(n) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "bucket_not_empty",
            format!(
                "bucket {name} holds {n}{} objects; remove it with them with `stratus bucket rm {app} {name} --force`",
                if n >= 1000 { " or more" } else { "" }
            ),
        )),
        BucketDeleted::Missing => Err(ApiError::not_found(format!(
            "app {app} has no bucket {name:?}"
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/apps/{app}/buckets/{bucket}/objects?prefix=&after=&limit=`.
pub(crate) async fn list_objects(
    State(state): State<Arc<AppState>>,
    Path((app, name)): Path<(String, String)>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let bucket = app_bucket(&state, &app, &name).await?;
    let limit = params.limit.unwrap_or(MAX_LISTED).clamp(1, MAX_LISTED);
    let mut objects = state
        .store
        .list_objects(
            &bucket.name,
            &params.prefix,
            params.after.as_deref(),
            limit + 1,
        )
        .await?;
    let next = (objects.len() > limit as usize).then(|| objects[limit as usize - 1].key.clone());
    objects.truncate(limit as usize);
    Ok(Json(json!({
        "bucket": bucket.name,
        "objects": objects.iter().map(|o| json!({
            "key": o.key, "size": o.size, "etag": o.etag, "modified_ms": o.modified_ms,
        })).collect::<Vec<_>>(),
        "next": next,
    }))
    .into_response())
}

/// `PUT`, `GET`, `HEAD` and `DELETE /v1/apps/{app}/buckets/{bucket}/objects/{key}`:
/// the body streamed in or out, as the S3 API does it.
pub(crate) async fn object(
    State(state): State<Arc<AppState>>,
    Path((app, name, key)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let bucket = app_bucket(&state, &app, &name).await?;
    object_of(&state, &app, &bucket, key, request).await
}

/// Answers `request` (PUT, GET, HEAD or DELETE) for object `key` of
/// `app`'s `bucket`, as the app.
pub(crate) async fn object_of(
    state: &AppState,
    app: &str,
    bucket: &BucketRecord,
    key: String,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let call = call(state, app, bucket, key);
    let (parts, body) = request.into_parts();
    let answer = match parts.method {
        Method::PUT => objects::put(&call, &parts.headers, body, Payload::Unsigned).await,
        Method::GET => objects::get(&call, &parts.headers, false).await,
        Method::HEAD => objects::get(&call, &parts.headers, true).await,
        Method::DELETE => objects::delete(&call).await,
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "an object takes PUT, GET, HEAD and DELETE",
            ));
        }
    };
    Ok(answer?)
}

#[derive(Debug, Deserialize)]
pub(crate) struct PresignRequest {
    key: String,
    /// GET (the default) or PUT.
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    expires_secs: Option<u64>,
}

/// `POST /v1/apps/{app}/buckets/{bucket}/presign`: a URL that reads (or
/// writes) one object without a credential until it expires, signed with
/// the app's functions' credential, on the S3 API's public address.
pub(crate) async fn presign(
    State(state): State<Arc<AppState>>,
    Path((app, name)): Path<(String, String)>,
    Json(request): Json<PresignRequest>,
) -> Result<Response, ApiError> {
    let bucket = app_bucket(&state, &app, &name).await?;
    let method = request
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "PUT") {
        return Err(ApiError::bad_request(
            "invalid_method",
            "a presigned URL reads (GET) or writes (PUT) an object",
        ));
    }
    let expires = request.expires_secs.unwrap_or(3600);
    if !(1..=MAX_EXPIRES.as_secs()).contains(&expires) {
        return Err(ApiError::bad_request(
            "invalid_expiry",
            "a presigned URL lasts 1 second to 7 days",
        ));
    }
    let (base, host) = public_endpoint(&state);
    let path = format!(
        "/{}/{}",
        bucket.name,
        request
            .key
            .split('/')
            .map(|s| crate::api::sigv4::uri_encode(s.as_bytes()))
            .collect::<Vec<_>>()
            .join("/")
    );
    let key_id = crate::api::function_key(&app);
    let (_, secret) = crate::api::function_credential(&state.platform_secret, &key_id)
        .ok_or_else(|| ApiError::internal("no credential for the app", &app))?;
    let query = super::auth::presign(
        (&key_id, &secret),
        &state.config.region,
        &method,
        &host,
        &path,
        expires,
        SystemTime::now(),
    );
    Ok(Json(json!({
        "url": format!("{base}{path}?{query}"),
        "method": method,
        "expires_secs": expires,
    }))
    .into_response())
}

/// Where clients reach the S3 API: `--s3-listen` when given, else
/// `s3.DOMAIN` on the public listener; as a base URL and its host.
fn public_endpoint(state: &AppState) -> (String, String) {
    if let Some(addr) = state.config.objects.s3_listen {
        let addr = if addr.ip().is_unspecified() {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        } else {
            addr
        };
        return (format!("http://{addr}"), addr.to_string());
    }
    let public = &state.public_url;
    let (scheme, rest) = public.split_once("://").unwrap_or(("http", public));
    let port = rest.rsplit_once(':').map(|(_, p)| p.trim_end_matches('/'));
    let host = match port {
        Some(port) => format!("s3.{}:{port}", state.config.http.domain),
        None => format!("s3.{}", state.config.http.domain),
    };
    (format!("{scheme}://{host}"), host)
}
