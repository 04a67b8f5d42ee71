//! Nodes that share a store: what one node deploys, removes or keys,
//! every other node takes up. Each node reads the store's active versions,
//! keys and credentials again as soon as the store gives word of a change
//! (and every [`RESYNC_EVERY`] in any case, so that missed word heals
//! itself), and puts in service what changed, taking the packages it was
//! not given from the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use stratus_store::{Shared, SharedPackages, VersionRecord};

use crate::AppState;

/// How often a node reads the store again without word of a change.
const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// How long an event for a function this node does not serve waits
/// before it is claimed again: room for a node to take up a deploy.
pub(crate) const TAKE_UP_PAUSE: Duration = Duration::from_secs(1);
/// How often a node reports itself.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A node not heard from for this long is down.
pub(crate) const DOWN_AFTER_MS: i64 = 10_000;
/// Where a node keeps its id, in its data directory.
const NODE_ID_FILE: &str = "node.id";

/// This node's id: made at its first start, kept in its data directory.
pub(crate) fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let id = crate::token::random_hex(6)
        .map_err(|err| anyhow::anyhow!("no randomness for the node's id: {err}"))?;
    crate::write_private(&path, id.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Reports this node to the store every [`HEARTBEAT_EVERY`] until the
/// server stops; a store that cannot be reached is said once.
pub(crate) async fn heartbeat(state: Arc<AppState>, mut node: stratus_store::NodeRecord) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;
    loop {
        every.tick().await;
        node.heartbeat_ms = crate::now_ms();
        node.instances = instances(&state);
        node.report = report(&state).to_string();
        match state.store.heartbeat(node.clone()).await {
            Ok(()) => {
                failing = false;
                share_app_cap(&state).await;
            }
            Err(err) if !failing => {
                failing = true;
                tracing::warn!(%err, "cannot report this node to the store");
            }
            Err(_) => {}
        }
    }
}

/// Takes this node's share of each app's instance cap: the cap divided
/// among the nodes heard from lately (this one included).
async fn share_app_cap(state: &AppState) {
    let Ok(nodes) = state.store.list_nodes().await else {
        return;
    };
    let now = crate::now_ms();
    let live = nodes.iter().filter(|n| is_live(n, now)).count().max(1);
    state.scheduler.share_app_cap(live as u32);
}

/// What this node runs, per app: `{APP: {"functions": {NAME: [busy,
/// idle, waiting]}, "services": {NAME: [ready, starting, draining,
/// in_flight, waiting]}, "totals": {NAME: [...]}}}`, the last its
/// functions' running totals for alerts (`alerts::node_totals`).
pub(crate) fn report(state: &AppState) -> serde_json::Value {
    let apps = published_apps(state);
    let mut totals = crate::alerts::node_totals(state);
    let mut report = serde_json::Map::new();
    for app in apps {
        let functions: serde_json::Map<String, serde_json::Value> = state
            .scheduler
            .app_pools(&app)
            .iter()
            .map(|pool| {
                let s = pool.stats();
                let busy = s.instances.saturating_sub(s.idle);
                (
                    pool.config.spec.name.clone(),
                    serde_json::json!([busy, s.idle, s.waiting]),
                )
            })
            .collect();
        let services: serde_json::Map<String, serde_json::Value> = state
            .scheduler
            .app_services(&app)
            .iter()
            .map(|service| {
                let s = service.status();
                (
                    s.name.clone(),
                    serde_json::json!([s.ready, s.starting, s.draining, s.in_flight, s.waiting]),
                )
            })
            .collect();
        let totals = totals.remove(&app).unwrap_or_default();
        report.insert(
            app,
            serde_json::json!({ "functions": functions, "services": services, "totals": totals }),
        );
    }
    serde_json::Value::Object(report)
}

/// The apps this node serves.
fn published_apps(state: &AppState) -> Vec<String> {
    state
        .published
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect()
}

/// Whether `node` was heard from lately, at `now_ms`.
pub(crate) fn is_live(node: &stratus_store::NodeRecord, now_ms: i64) -> bool {
    now_ms - node.heartbeat_ms < DOWN_AFTER_MS
}

/// The function instances this node runs.
fn instances(state: &AppState) -> u64 {
    let apps = published_apps(state);
    apps.iter()
        .flat_map(|app| state.scheduler.app_pools(app))
        .map(|pool| pool.stats().instances as u64)
        .sum()
}

/// The version of each app this node serves.
pub(crate) type Published = std::sync::Mutex<HashMap<String, u32>>;

/// Puts `version` in service on this node: its functions first, then the
/// routes that lead to them, then its triggers.
pub(crate) fn publish(state: &AppState, version: &VersionRecord) {
    let secrets = state.secrets.values(&version.app);
    state.scheduler.publish_app(
        &version.app,
        crate::function_configs(&state.config.data_dir, version, &secrets),
        crate::service_configs(&state.config.data_dir, version, &secrets),
    );
    state.directory.publish(version);
    state.databases.publish(&version.app, &version.spec);
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
    state.databases.remove(app);
    state.aws_credentials.remove_app(app);
    state.secrets.remove_app(app);
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
pub(crate) async fn follow(state: Arc<AppState>, shared: Arc<dyn Shared>) {
    let mut failing = false;
    let mut seen = 0;
    loop {
        tokio::select! {
            mark = shared.changed_since(seen) => seen = mark,
            () = tokio::time::sleep(RESYNC_EVERY) => {}
        }
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
    // Secrets first: a version taken up below starts with them.
    let stored = state.store.list_secrets(None).await?;
    let mut rotated = std::collections::BTreeSet::new();
    let before = state.secrets.marks();
    if crate::app_secrets::marks_of(&stored) != before {
        state.secrets.replace_all(&state.sealer, stored);
        let after = state.secrets.marks();
        rotated = before
            .keys()
            .chain(after.keys())
            .filter(|key| before.get(*key) != after.get(*key))
            .map(|(app, _)| app.clone())
            .collect();
    }
    let limits = crate::deploy::unpack_limits(state.config.limits.max_unpacked_bytes);
    for version in &active {
        if published.get(&version.app) == Some(&version.version) {
            if rotated.contains(&version.app) && !crate::app_secrets::used(&version.spec).is_empty()
            {
                publish(state, version);
                tracing::info!(app = version.app, "took up a secret set on another node");
            }
            continue;
        }
        if let Err(err) =
            crate::deploy::ensure_version_code(&state.config.data_dir, limits, shared, version)
                .await
        {
            tracing::warn!(
                app = version.app,
                version = version.version,
                error = err.message,
                "cannot take up a deploy made on another node"
            );
            continue;
        }
        // Dependencies built on another node are built again here.
        if let Err(message) = state.builder.ensure(version).await {
            tracing::warn!(
                app = version.app,
                version = version.version,
                error = message,
                "cannot take up a deploy made on another node: it names a runtime this node does not run, or its dependencies do not build here"
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
        let opened = crate::open_aws_credentials(&*state.store, &state.sealer, stored).await?;
        state.aws_credentials.replace_all(opened);
    }
    Ok(())
}

/// Log retention on a shared log table: the node holding the lease
/// `log-retention` trims; another takes over once it has not renewed it
/// for three trim periods (it died).
pub(crate) struct TrimLease {
    pub store: Arc<dyn stratus_store::Store>,
    pub holder: String,
}

/// How long a node holds the log retention lease after taking it.
const TRIM_LEASE_MS: i64 = 3 * 60_000;

#[async_trait::async_trait]
impl stratus_logs::TrimTurn for TrimLease {
    async fn mine(&self) -> bool {
        let now = crate::now_ms();
        match self
            .store
            .take_lease("log-retention", &self.holder, now + TRIM_LEASE_MS, now)
            .await
        {
            Ok(mine) => mine,
            Err(err) => {
                tracing::warn!(%err, "cannot take the log retention lease; not trimming now");
                false
            }
        }
    }
}
