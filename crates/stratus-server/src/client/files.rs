//! Clients' files: `GET`, `HEAD`, `PUT` and `DELETE
//! /_stratus/files/{bucket}/{key}` on the app's host, for buckets the
//! manifest declares, under the bucket's rules: `read` for downloads,
//! `write` for uploads and deletions (no rule: denied), over `auth`,
//! `resource` (`key`, and `size` and `modified_ms` of a stored object)
//! and `request` (`size`, an upload's `Content-Length`; `time`).

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
    let mut resource = json!({ "key": key });
    if method != Method::PUT
        && let Some(object) = state.store.get_object(&bucket.name, &key).await?
    {
        resource["size"] = json!(object.size);
        resource["modified_ms"] = json!(object.modified_ms);
    }
    let size = if method == Method::PUT {
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
    crate::s3::admin::object_of(&state, &caller.app, &bucket, key, request).await
}
