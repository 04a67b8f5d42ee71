//! The buckets an app's manifest declares, made and kept as its deploys
//! say: a deploy creates the buckets it declares and updates their
//! settings; it refuses a name another app owns, naming the owner; a
//! bucket it declared before and no longer does goes if it is empty, and
//! a non-empty one stops the deploy, which says how to remove it. Buckets
//! made through the S3 API are never touched.

use stratus_manifest::AppSpec;
use stratus_store::{BucketCreated, BucketDeleted, BucketRecord};

use crate::AppState;
use crate::api::ApiError;

/// What a deploy does to its app's buckets once its version is active.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    create: Vec<BucketRecord>,
    update: Vec<BucketRecord>,
    remove: Vec<String>,
}

/// The changes `spec` makes to `app`'s buckets, or why it cannot.
pub(crate) async fn plan(state: &AppState, app: &str, spec: &AppSpec) -> Result<Plan, ApiError> {
    let owned = state.store.list_buckets(Some(app)).await?;
    let now = crate::now_ms();
    let mut plan = Plan::default();
    let mut problems = Vec::new();
    for bucket in spec.buckets.values() {
        let record = BucketRecord {
            name: bucket.s3_name.clone(),
            app: app.to_owned(),
            declared_as: Some(bucket.name.clone()),
            spec: serde_json::to_string(bucket)
                .map_err(|e| ApiError::internal("cannot write a bucket's settings", e))?,
            created_ms: now,
        };
        if owned.iter().any(|b| b.name == bucket.s3_name) {
            plan.update.push(record);
        } else if let Some(other) = state.store.get_bucket(&bucket.s3_name).await? {
            problems.push(format!(
                "bucket {}: the S3 name {} belongs to app {}; give `buckets.{}.name` another name",
                bucket.name, bucket.s3_name, other.app, bucket.name
            ));
        } else {
            plan.create.push(record);
        }
    }
    for bucket in &owned {
        let Some(declared) = &bucket.declared_as else {
            continue;
        };
        if spec.buckets.values().any(|b| b.s3_name == bucket.name) {
            continue;
        }
        let holds = state.store.list_objects(&bucket.name, "", None, 1).await?;
        if holds.is_empty() {
            plan.remove.push(bucket.name.clone());
        } else {
            problems.push(format!(
                "bucket {declared} ({}) holds objects and the manifest no longer declares it; declare it again, or delete it and its objects with `stratus bucket rm {app} {declared} --force`",
                bucket.name
            ));
        }
    }
    let quota = state.config.objects.bucket_quota;
    let count = owned.len() + plan.create.len() - plan.remove.len();
    if count > quota {
        problems.push(format!(
            "the app would have {count} buckets, more than its quota of {quota} (--bucket-quota)"
        ));
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(ApiError::bad_request(
            "invalid_buckets",
            "the manifest's buckets cannot be made as declared; nothing was deployed",
        )
        .with_details(problems))
    }
}

/// Makes the changes of `plan`. Another app taking a name meanwhile, or an
/// object arriving in a bucket to remove, is logged and left as it is.
pub(crate) async fn apply(state: &AppState, plan: Plan) -> Result<(), ApiError> {
    for record in plan.create {
        let name = record.name.clone();
        if let BucketCreated::Taken(other) = state.store.create_bucket(record.clone()).await? {
            if other.app == record.app {
                state.store.update_bucket(record).await?;
            } else {
                tracing::warn!(bucket = %name, owner = %other.app, "a declared bucket's name was taken meanwhile");
            }
        }
    }
    for record in plan.update {
        state.store.update_bucket(record).await?;
    }
    for name in plan.remove {
        match state.store.delete_bucket(&name, false).await? {
            BucketDeleted::Deleted(blobs) => state.objects.remove(blobs).await,
            BucketDeleted::NotEmpty(_) => {
                tracing::warn!(bucket = %name, "a bucket no longer declared got objects meanwhile; kept")
            }
            BucketDeleted::Missing => {}
        }
    }
    Ok(())
}

/// Deletes every bucket of `app`, for the app's removal: refused, with
/// nothing deleted, while one holds objects, unless `force`, which
/// deletes them with their objects.
pub(crate) async fn remove_all(state: &AppState, app: &str, force: bool) -> Result<(), ApiError> {
    let buckets = state.store.list_buckets(Some(app)).await?;
    if !force {
        let mut holding = Vec::new();
        for bucket in &buckets {
            if !state
                .store
                .list_objects(&bucket.name, "", None, 1)
                .await?
                .is_empty()
            {
                holding.push(bucket.name.clone());
            }
        }
        if !holding.is_empty() {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "buckets_not_empty",
                format!(
                    "the buckets of {app} hold objects ({}); remove the app with its buckets and their objects with `stratus rm {app} --force`",
                    holding.join(", ")
                ),
            ));
        }
    }
    for bucket in buckets {
        if let BucketDeleted::Deleted(blobs) = state.store.delete_bucket(&bucket.name, true).await?
        {
            state.objects.remove(blobs).await;
        }
    }
    Ok(())
}
