//! The public listener's view of deployed applications: each app's route
//! table and keys, held as immutable snapshots that a deploy replaces
//! whole, so a request in flight keeps the table it was routed by.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock};

use stratus_gateway::route::{Pattern, Route, RouteTable};
use stratus_manifest::{CorsSpec, HttpAuth};
use stratus_store::{KeyRecord, VersionRecord};

/// Where a route leads.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The function's or the service's name.
    pub function: String,
    pub kind: TargetKind,
    pub auth: HttpAuth,
    pub cors: Option<CorsSpec>,
    pub streaming: bool,
    /// With `strip_prefix`, the route's literal part before `/*`, which
    /// the target does not see.
    pub strip: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    /// Invoked with a payload format 2.0 event.
    Function,
    /// Proxied to one of its instances.
    Service,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TargetKind::Function => write!(f, "of function {}", self.function),
            TargetKind::Service => write!(f, "of service {}", self.function),
        }
    }
}

/// One application's routes, as of one version.
#[derive(Debug)]
pub(crate) struct AppRoutes {
    pub table: RouteTable<Arc<Target>>,
}

type Snapshot<T> = RwLock<Arc<HashMap<String, T>>>;

/// Every application's routes and key hashes.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    routes: Snapshot<Arc<AppRoutes>>,
    keys: Snapshot<Arc<HashSet<String>>>,
}

impl Directory {
    pub fn app(&self, app: &str) -> Option<Arc<AppRoutes>> {
        read(&self.routes).get(app).cloned()
    }

    /// Whether `app` has a key whose SHA-256 is `sha256`.
    pub fn has_key(&self, app: &str, sha256: &str) -> bool {
        read(&self.keys)
            .get(app)
            .is_some_and(|keys| keys.contains(sha256))
    }

    /// Replaces `version.app`'s routes with those of `version`.
    pub fn publish(&self, version: &VersionRecord) {
        let mut routes = Vec::new();
        let owners = version
            .spec
            .functions
            .values()
            .filter_map(|f| Some((&f.name, TargetKind::Function, f.http.as_ref()?)))
            .chain(
                version
                    .spec
                    .services
                    .values()
                    .map(|s| (&s.name, TargetKind::Service, &s.http)),
            );
        for (name, kind, http) in owners {
            let methods = stratus_gateway::route::methods_from(&http.methods);
            let target = Arc::new(Target {
                function: name.clone(),
                kind,
                auth: http.auth,
                cors: http.cors.clone(),
                streaming: http.streaming,
                strip: None,
            });
            for path in &http.paths {
                // Each route strips its own literal part.
                let target = match path.strip_suffix("/*").filter(|_| http.strip_prefix) {
                    Some(literal) => Arc::new(Target {
                        strip: Some(literal.to_owned()),
                        ..(*target).clone()
                    }),
                    None => target.clone(),
                };
                match Pattern::parse(path) {
                    Ok(pattern) => routes.push(Route {
                        pattern,
                        methods: methods.clone(),
                        target,
                    }),
                    Err(err) => {
                        tracing::error!(app = %version.app, %err, "stored route is invalid")
                    }
                }
            }
        }
        let table = RouteTable::new(routes).unwrap_or_else(|err| {
            // Manifests are checked on deploy; only a stored version from an
            // older, laxer stratus can get here.
            tracing::error!(app = %version.app, %err, "routes refused; the app has no HTTP routes until it is redeployed");
            RouteTable::default()
        });
        let app = Arc::new(AppRoutes { table });
        update(&self.routes, |map| {
            map.insert(version.app.clone(), app);
        });
    }

    /// Replaces `app`'s keys.
    pub fn set_keys(&self, app: &str, keys: &[KeyRecord]) {
        let set: HashSet<String> = keys.iter().map(|k| k.sha256.clone()).collect();
        update(&self.keys, |map| {
            map.insert(app.to_owned(), Arc::new(set));
        });
    }

    /// Takes every app's keys as they are now (at start-up, and from a
    /// store other nodes change): an app left out has none.
    pub fn load_keys(&self, keys: &[KeyRecord]) {
        let mut by_app: HashMap<String, HashSet<String>> = HashMap::new();
        for key in keys {
            by_app
                .entry(key.app.clone())
                .or_default()
                .insert(key.sha256.clone());
        }
        update(&self.keys, |map| {
            *map = by_app
                .into_iter()
                .map(|(app, set)| (app, Arc::new(set)))
                .collect();
        });
    }

    pub fn remove(&self, app: &str) {
        update(&self.routes, |map| {
            map.remove(app);
        });
        update(&self.keys, |map| {
            map.remove(app);
        });
    }
}

fn read<T>(snapshot: &Snapshot<T>) -> Arc<HashMap<String, T>> {
    snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Copies the map, changes the copy and swaps it in: readers never wait
/// on a writer and never see a half-made change.
fn update<T: Clone>(snapshot: &Snapshot<T>, change: impl FnOnce(&mut HashMap<String, T>)) {
    let mut guard = snapshot.write().unwrap_or_else(|p| p.into_inner());
    let mut next = HashMap::clone(&guard);
    change(&mut next);
    *guard = Arc::new(next);
}
