//! Nodes that share a store: what one node deploys, removes or keys,
//! every other node takes up. Each node follows the store's active
//! versions and keys (every [`FOLLOW_EVERY`]) and puts in service what
//! changed, taking the packages it was not given from the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use stratus_store::{SharedPackages, VersionRecord};

use crate::AppState;

/// How often a node looks for changes other nodes made.
pub(crate) const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// The version of each app this node serves.
pub(crate) type Published = std::sync::Mutex<HashMap<String, u32>>;

/// Puts `version` in service on this node: its functions first, then the
/// routes that lead to them, then its triggers.
pub(crate) fn publish(state: &AppState, version: &VersionRecord) {
    state.scheduler.publish_app(
        &version.app,
        crate::function_configs(&state.config.data_dir, version),
        crate::service_configs(&state.config.data_dir, version),
    );
    state.directory.publish(version);
    state.triggers.reconcile(&version.app, Some(&version.spec));
    state
        .published
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(version.app.clone(), version.version);
}

/// Takes `app` out of service on this node.
pub(crate) fn unpublish(state: &AppState, app: &str) {
    state.directory.remove(app);
    state.aws_credentials.remove_app(app);
    state.scheduler.remove_app(app);
    state.triggers.reconcile(app, None);
    state
        .published
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(app);
}

/// Follows the shared store until the server stops. A store that cannot
/// be reached is said once; what is deployed keeps running meanwhile.
pub(crate) async fn follow(state: Arc<AppState>, shared: Arc<dyn SharedPackages>) {
    let mut every = tokio::time::interval(FOLLOW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    loop {
        every.tick().await;
        match catch_up(&state, &*shared).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the shared store answers again; following its changes");
            }
            Ok(()) => {}
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(%err, "cannot read the shared store; what is deployed keeps running");
            }
            Err(_) => {}
        }
    }
}

/// Publishes what the store has and this node does not, and unpublishes
/// what it no longer has.
async fn catch_up(state: &AppState, shared: &dyn SharedPackages) -> anyhow::Result<()> {
    // Under the deploy lock, read after taking it: a deploy of this node
    // is either wholly before or wholly after.
    let _serial = state.deploy_lock.lock().await;
    let active = state.store.active_versions().await?;
    let keys = state.store.list_keys(None).await?;
    let published = state
        .published
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let limits = crate::deploy::unpack_limits(state.config.limits.max_unpacked_bytes);
    for version in &active {
        if published.get(&version.app) == Some(&version.version) {
            continue;
        }
        let mut missing = None;
        for sha256 in version.packages.values() {
            if let Err(err) =
                crate::deploy::ensure_code(&state.config.data_dir, limits, shared, sha256).await
            {
                missing = Some(err);
                break;
            }
        }
        if let Some(err) = missing {
            tracing::warn!(
                app = version.app,
                version = version.version,
                error = err.message,
                "cannot take up a deploy made on another node"
            );
            continue;
        }
        publish(state, version);
        tracing::info!(
            app = version.app,
            version = version.version,
            "took up a deploy made on another node"
        );
    }
    let live: HashSet<&str> = active.iter().map(|v| v.app.as_str()).collect();
    for app in published.keys().filter(|app| !live.contains(app.as_str())) {
        unpublish(state, app);
        tracing::info!(app, "took up a removal made on another node");
    }
    state.directory.load_keys(&keys);
    // AWS credentials: opened again only when the set changed.
    let stored = state.store.list_aws_credentials(None).await?;
    let ids: std::collections::BTreeSet<String> =
        stored.iter().map(|c| c.access_key_id.clone()).collect();
    if ids != state.aws_credentials.ids() {
        let opened = crate::open_aws_credentials(&*state.store, &state.sealer).await?;
        state.aws_credentials.replace_all(opened);
    }
    Ok(())
}
