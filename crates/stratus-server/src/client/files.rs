//! Clients' files: `GET`, `HEAD`, `PUT` and `DELETE
//! /_stratus/files/{bucket}/{key}` on the app's host, for buckets the
//! manifest declares, under the bucket's rules: `read` for downloads,
//! `write` for uploads and deletions (no rule: denied), over `auth`,
//! `resource` (`key`, and the stored object's `size` — null when there is
//! none — and `modified_ms`) and `request` (`size`: an upload's
//! `Content-Length`, 0 for a deletion; `time`). What clients uploaded is
//! served so that it cannot run on the app's origin ([`defuse`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, Response, StatusCode, header};
use axum::routing::any;
use serde_json::json;
use stratus_manifest::buckets::BucketSpec;
use stratus_manifest::collections::BUCKET_RULE_ROOTS;
use stratus_rules::{Env, Request as RuleRequest, Rule, Verdict};

use super::Caller;
use crate::AppState;
use crate::api::ApiError;
use crate::db::client::decide;
use crate::db::rules::{Denied, Fetches, Outcome};

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/_stratus/files/{bucket}/{*key}", any(object))
}

async fn object(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((name, key)): Path<(String, String)>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let bucket = crate::s3::admin::app_bucket(&state, &caller.app, &name).await?;
    if bucket.declared_as.as_deref() != Some(name.as_str()) {
        return Err(ApiError::not_found(format!(
            "app {} declares no bucket {name:?}; clients reach buckets by their names in the manifest",
            caller.app
        )));
    }
    let spec: BucketSpec = serde_json::from_str(&bucket.spec)
        .map_err(|err| ApiError::internal("a bucket's settings are unreadable", err))?;
    let method = request.method().clone();
    let (op, source) = match method {
        Method::GET | Method::HEAD => ("read", spec.rules.read.as_deref()),
        Method::PUT | Method::DELETE => ("write", spec.rules.write.as_deref()),
        _ => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "a file takes GET, HEAD, PUT and DELETE",
            ));
        }
    };
    let Some(source) = source else {
        return Err(crate::db::client::denied(Denied(format!(
            "bucket {name} has no `{op}` rule, so clients may not {op} its files"
        ))));
    };
    let rule = Rule::parse(source, BUCKET_RULE_ROOTS)
        .map_err(|err| ApiError::internal("a deployed bucket rule does not parse", err))?;
    // The stored object, if any (for an upload: the one it would replace,
    // so that a rule can refuse overwriting with `resource.size == null`).
    let mut resource = json!({ "key": key, "size": null });
    if let Some(object) = state.store.get_object(&bucket.name, &key).await? {
        resource["size"] = json!(object.size);
        resource["modified_ms"] = json!(object.modified_ms);
    }
    let size = if method == Method::DELETE {
        Some(0)
    } else if method == Method::PUT {
        let length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        Some(length.ok_or_else(|| {
            ApiError::new(
                StatusCode::LENGTH_REQUIRED,
                "length_required",
                "an upload gives its size in Content-Length, for the bucket's rule to judge",
            )
        })?)
    } else {
        None
    };
    let auth = caller.auth_json();
    let now = crate::now_ms();
    let mut fetched = Fetches::default();
    decide(&state, &caller.app, &mut fetched, |f| {
        let env = Env {
            auth: auth.as_ref(),
            doc: None,
            request: RuleRequest {
                doc: None,
                time: now,
                size,
                id: None,
            },
            resource: Some(&resource),
        };
        match rule.evaluate(&env, f) {
            Verdict::Allow => Outcome::Allowed,
            Verdict::Deny(why) => Outcome::Denied(Denied(format!(
                "the {op} rule of bucket {name} denies this: {why}"
            ))),
            Verdict::Need(path) => Outcome::Need(path),
        }
    })
    .await?;
    let mut response =
        crate::s3::admin::object_of(&state, &caller.app, &bucket, key, request).await?;
    if matches!(method, Method::GET | Method::HEAD) {
        defuse(response.headers_mut());
    }
    Ok(response)
}

/// Types a browser shows in place without running anything.
const INLINE_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "text/plain",
    "application/pdf",
    "application/json",
    "audio/mpeg",
    "audio/ogg",
    "video/mp4",
    "video/webm",
];

/// What a client uploaded is served from the app's own origin: it must
/// not run there (an HTML or SVG file with a script would read the
/// sessions the page keeps). Its type is taken as it is, nothing in it may
/// load or run, and anything but a plain image, text or media type is a
/// download.
fn defuse(headers: &mut axum::http::HeaderMap) {
    use axum::http::HeaderValue;
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    let inline = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|t| INLINE_TYPES.contains(&t.as_str()));
    if !inline {
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
}
