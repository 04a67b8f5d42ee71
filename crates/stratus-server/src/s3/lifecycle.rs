//! Lifecycle expiry: objects of a bucket whose `lifecycle:` says they
//! expire (those under its `prefix`, older than `expire_after`) are
//! deleted in the background, every `--lifecycle-interval`, by the node
//! holding the `object-lifecycle` lease (so once in a cluster), with the
//! events their deletion causes, as any deletion.

use std::sync::Arc;

use stratus_manifest::buckets::BucketSpec;

use super::notify::{self, Change, How};
use crate::AppState;

const LEASE: &str = "object-lifecycle";
/// Objects read at once from a bucket.
const PAGE: u32 = 1000;

pub(crate) async fn run(state: Arc<AppState>) {
    let interval = state.config.objects.lifecycle_interval;
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = crate::now_ms();
        let lease_ms = (3 * interval.as_millis() as i64).max(10_000);
        match state
            .store
            .take_lease(LEASE, &state.node_id, now + lease_ms, now)
            .await
        {
            Ok(true) => match expire(&state, now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(objects = n, "lifecycle: expired objects"),
                Err(err) => tracing::warn!(%err, "lifecycle: cannot expire objects now"),
            },
            Ok(false) => {}
            Err(err) => tracing::warn!(%err, "lifecycle: cannot take the lease; not expiring now"),
        }
    }
}

/// Deletes every object due to expire at `now`; how many went.
pub(crate) async fn expire(state: &AppState, now: i64) -> Result<u64, stratus_store::StoreError> {
    let mut expired = 0;
    for bucket in state.store.list_buckets(None).await? {
        let Ok(spec) = serde_json::from_str::<BucketSpec>(&bucket.spec) else {
            continue;
        };
        let Some(lifecycle) = spec.lifecycle else {
            continue;
        };
        let before = now - lifecycle.expire_after.as_millis() as i64;
        let mut after: Option<String> = None;
        loop {
            let page = state
                .store
                .list_objects(&bucket.name, &lifecycle.prefix, after.as_deref(), PAGE)
                .await?;
            let full = page.len() == PAGE as usize;
            after = page.last().map(|o| o.key.clone());
            for object in page.into_iter().filter(|o| o.modified_ms < before) {
                let events = notify::events(
                    state,
                    &bucket,
                    &Change {
                        how: How::Expire,
                        key: &object.key,
                        size_etag: None,
                    },
                );
                let wake = !events.is_empty();
                // Deleted only if it is still this object: one put since
                // is new, and not expired.
                if let Some(current) = state.store.get_object(&bucket.name, &object.key).await?
                    && current.blob == object.blob
                    && let Some(gone) = state
                        .store
                        .delete_object(&bucket.name, &object.key, events)
                        .await?
                {
                    if wake {
                        state.events.wake();
                    }
                    state.objects.remove(vec![gone.blob]).await;
                    expired += 1;
                }
            }
            if !full {
                break;
            }
        }
    }
    Ok(expired)
}
