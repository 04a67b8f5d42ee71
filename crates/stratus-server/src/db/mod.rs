//! Apps' document databases: the API that functions (with their app's
//! credentials) and people (`stratus db`, with the admin token) call, the
//! indexes a deploy builds, and the change triggers a write's transaction
//! queues.
//!
//! Documents live in the platform's store (the [`stratus_store::Documents`]
//! concern), so a change and the events it causes commit together.

pub(crate) mod api;
mod check;
pub(crate) mod client;
mod plan;
pub(crate) mod rules;
pub(crate) mod rules_test;
pub(crate) mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use stratus_manifest::collections::CollectionSpec;
use stratus_manifest::{AppSpec, DatabaseTrigger, Trigger};
use stratus_store::documents::{FieldPath, IndexSpec};

pub(crate) use api::routes;
pub(crate) use check::Trusted;

use crate::AppState;
use crate::api::ApiError;

/// Limits of the document database.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// The largest document, as JSON text, in bytes
    #[arg(long = "document-max-size", default_value_t = 1024 * 1024)]
    pub max_document_bytes: usize,
    /// Collections with at least this many documents refuse queries no
    /// declared index serves (unless the query says `allow_scan`)
    #[arg(long = "db-scan-limit", default_value_t = 1000)]
    pub scan_limit: u64,
    /// The most documents one query returns
    #[arg(long = "db-max-results", default_value_t = 1000)]
    pub max_results: u32,
}

/// Documents a query returns unless it gives a `limit`.
pub(crate) const DEFAULT_LIMIT: u32 = 100;
/// How long a collection's size is taken as known, for deciding whether a
/// query may scan it.
const SIZE_FRESH: Duration = Duration::from_secs(5);

/// What each app's manifest says of its documents, as this node serves
/// it: collections, their indexes and the functions their changes run.
#[derive(Default)]
pub(crate) struct Catalog {
    apps: RwLock<HashMap<String, Arc<AppDb>>>,
    /// Collections' sizes, counted up to the scan limit, and when.
    sizes: Mutex<HashMap<(String, String), (Instant, u64)>>,
}

/// One app's database as its active version declares it.
#[derive(Debug, Default)]
pub(crate) struct AppDb {
    pub collections: BTreeMap<String, Collection>,
    /// Functions with a `database` trigger, and the trigger.
    pub triggers: Vec<(String, DatabaseTrigger)>,
}

/// A declared collection.
#[derive(Debug)]
pub(crate) struct Collection {
    pub indexes: Vec<IndexSpec>,
    pub rules: rules::Rules,
}

impl Catalog {
    /// Serves what `spec` declares for `app`.
    pub fn publish(&self, app: &str, spec: &AppSpec) {
        let collections = spec
            .collections
            .iter()
            .map(|(name, c)| {
                let collection = Collection {
                    indexes: index_specs(c),
                    rules: rules::Rules::of(c),
                };
                (name.clone(), collection)
            })
            .collect();
        let triggers = spec
            .functions
            .values()
            .flat_map(|f| {
                f.events.iter().filter_map(|t| match t {
                    Trigger::Database(t) => Some((f.name.clone(), t.clone())),
                    _ => None,
                })
            })
            .collect();
        self.apps.write().unwrap_or_else(|p| p.into_inner()).insert(
            app.to_owned(),
            Arc::new(AppDb {
                collections,
                triggers,
            }),
        );
    }

    pub fn remove(&self, app: &str) {
        self.apps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(app);
    }

    /// What `app` declares now; `None` for an app this node does not
    /// serve.
    pub fn get(&self, app: &str) -> Option<Arc<AppDb>> {
        self.apps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(app)
            .cloned()
    }

    /// Whether `collection` of `app` holds at least `limit` documents,
    /// counted at most every few seconds.
    async fn at_least(
        &self,
        state: &AppState,
        app: &str,
        collection: &str,
        limit: u64,
    ) -> Result<bool, ApiError> {
        let key = (app.to_owned(), collection.to_owned());
        if let Some((at, size)) = self
            .sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < SIZE_FRESH
        {
            return Ok(*size >= limit);
        }
        let size = state.store.count_documents(app, collection, limit).await?;
        let mut sizes = self.sizes.lock().unwrap_or_else(|p| p.into_inner());
        if sizes.len() > 10_000 {
            sizes.clear();
        }
        sizes.insert(key, (Instant::now(), size));
        Ok(size >= limit)
    }
}

/// The store's form of a collection's declared indexes (checked when the
/// manifest was).
fn index_specs(collection: &CollectionSpec) -> Vec<IndexSpec> {
    collection
        .indexes
        .iter()
        .filter_map(|index| {
            let fields = index
                .fields
                .iter()
                .map(|f| FieldPath::parse(f).ok())
                .collect::<Option<Vec<_>>>()?;
            Some(IndexSpec {
                fields,
                multi: index.multi,
            })
        })
        .collect()
}

/// Builds the indexes `spec` declares for `app` and drops those of
/// collections it no longer declares (their documents stay), before the
/// version that queries them is served.
pub(crate) async fn apply_indexes(
    state: &AppState,
    app: &str,
    spec: &AppSpec,
) -> Result<(), ApiError> {
    for (name, collection) in &spec.collections {
        state
            .store
            .set_indexes(app, name, index_specs(collection))
            .await?;
    }
    for had in state.store.list_indexes(app).await? {
        if !spec.collections.contains_key(&had.collection) && !had.indexes.is_empty() {
            state
                .store
                .set_indexes(app, &had.collection, Vec::new())
                .await?;
        }
    }
    Ok(())
}

/// Refuses to remove an app whose collections hold documents, unless
/// forced (`stratus rm --force`).
pub(crate) async fn check_removal(
    state: &AppState,
    app: &str,
    force: bool,
) -> Result<(), ApiError> {
    if force {
        return Ok(());
    }
    let collections = state.store.list_collections(app).await?;
    let documents: u64 = collections.iter().map(|c| c.documents).sum();
    if documents > 0 {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "app_has_documents",
            format!(
                "app {app} holds {documents} documents in {} collections ({}); `stratus db export` them first if you need them, then `stratus rm {app} --force` deletes them with the app",
                collections.len(),
                collections
                    .iter()
                    .map(|c| c.collection.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(())
}
