//! Apps' secrets: set with `stratus secret set`, sealed before they are
//! stored (see `secrets.rs`), kept opened in memory, and put only into the
//! environments of the instances whose manifest names them
//! (`env: { VAR: { secret: NAME } }`). The API lists names and times,
//! never values.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use stratus_store::{SecretRecord, Store};

use crate::secrets::Sealer;

/// Longest secret value, in bytes.
pub(crate) const MAX_SECRET_BYTES: usize = 32 * 1024;

/// What a sealed secret is bound to: its app and name, so that a sealed
/// value moved to another record does not open.
pub(crate) fn context(app: &str, name: &str) -> String {
    format!("secret:{app}/{name}")
}

/// One secret: its value, unless it did not open.
#[derive(Clone)]
struct Opened {
    value: Option<String>,
    updated_ms: i64,
}

/// Every app's secrets, opened.
#[derive(Default)]
pub(crate) struct AppSecrets {
    by_app: RwLock<HashMap<String, BTreeMap<String, Opened>>>,
}

impl AppSecrets {
    /// Opens `stored`; one that does not open is left out, and said so.
    pub fn open(sealer: &Sealer, stored: Vec<SecretRecord>) -> AppSecrets {
        let secrets = AppSecrets::default();
        secrets.replace_all(sealer, stored);
        secrets
    }

    /// Takes the whole table as it is now.
    pub fn replace_all(&self, sealer: &Sealer, stored: Vec<SecretRecord>) {
        let mut by_app: HashMap<String, BTreeMap<String, Opened>> = HashMap::new();
        for record in stored {
            let value = match sealer.open(&context(&record.app, &record.name), &record.sealed) {
                Ok((value, _)) => Some(value),
                Err(err) => {
                    tracing::error!(
                        app = %record.app,
                        secret = %record.name,
                        "{err}; set the secret again, or give this node the key it was sealed with"
                    );
                    None
                }
            };
            by_app.entry(record.app).or_default().insert(
                record.name,
                Opened {
                    value,
                    updated_ms: record.updated_ms,
                },
            );
        }
        *self.write() = by_app;
    }

    /// Takes `app`'s secrets as `stored` (its rows) has them, if they
    /// differ from what this node holds: another node set or deleted one.
    pub fn refresh_app(&self, sealer: &Sealer, app: &str, stored: Vec<SecretRecord>) {
        let mine: BTreeMap<(String, String), i64> = self
            .marks()
            .into_iter()
            .filter(|((owner, _), _)| owner == app)
            .collect();
        if marks_of(&stored) == mine {
            return;
        }
        let fresh = AppSecrets::open(sealer, stored);
        let secrets = fresh.write().remove(app).unwrap_or_default();
        self.write().insert(app.to_owned(), secrets);
    }

    pub fn set(&self, app: &str, name: &str, value: String, updated_ms: i64) {
        self.write().entry(app.to_owned()).or_default().insert(
            name.to_owned(),
            Opened {
                value: Some(value),
                updated_ms,
            },
        );
    }

    pub fn remove(&self, app: &str, name: &str) {
        if let Some(secrets) = self.write().get_mut(app) {
            secrets.remove(name);
        }
    }

    pub fn remove_app(&self, app: &str) {
        self.write().remove(app);
    }

    /// The values of `app`'s secrets, by name.
    pub fn values(&self, app: &str) -> BTreeMap<String, String> {
        self.read()
            .get(app)
            .map(|secrets| {
                secrets
                    .iter()
                    .filter_map(|(name, opened)| Some((name.clone(), opened.value.clone()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When each secret of each app was last set (those that did not open
    /// too): what a node compares to see another node's changes.
    pub fn marks(&self) -> BTreeMap<(String, String), i64> {
        self.read()
            .iter()
            .flat_map(|(app, secrets)| {
                secrets
                    .iter()
                    .map(|(name, opened)| ((app.clone(), name.clone()), opened.updated_ms))
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, BTreeMap<String, Opened>>> {
        self.by_app.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, BTreeMap<String, Opened>>> {
        self.by_app.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The marks of `stored`, as [`AppSecrets::marks`] gives them.
pub(crate) fn marks_of(stored: &[SecretRecord]) -> BTreeMap<(String, String), i64> {
    stored
        .iter()
        .map(|s| ((s.app.clone(), s.name.clone()), s.updated_ms))
        .collect()
}

/// The secrets `spec` names that `app` does not have: `(variable, secret)`.
pub(crate) fn missing(
    secrets: &AppSecrets,
    app: &str,
    spec: &stratus_manifest::AppSpec,
) -> Vec<(String, String)> {
    let have = secrets.values(app);
    used(spec)
        .into_iter()
        .filter(|(_, name)| !have.contains_key(name))
        .collect()
}

/// Every `(variable, secret)` the functions and services of `spec` name.
pub(crate) fn used(spec: &stratus_manifest::AppSpec) -> Vec<(String, String)> {
    spec.functions
        .values()
        .flat_map(|f| f.secret_env.iter())
        .chain(spec.services.values().flat_map(|s| s.secret_env.iter()))
        .map(|(var, name)| (var.clone(), name.clone()))
        .collect()
}

/// Reads and opens every stored secret.
pub(crate) async fn load(store: &dyn Store, sealer: &Sealer) -> anyhow::Result<AppSecrets> {
    use anyhow::Context;
    let stored = store
        .list_secrets(None)
        .await
        .context("cannot read apps' secrets")?;
    Ok(AppSecrets::open(sealer, stored))
}

/// `(variable, value)` for each secret `secret_env` names that `values`
/// holds.
pub(crate) fn resolve(
    secret_env: &BTreeMap<String, String>,
    values: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    secret_env
        .iter()
        .filter_map(|(var, name)| Some((var.clone(), values.get(name)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_open_per_app_and_a_foreign_seal_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::load_or_create(&dir.path().join("k")).unwrap();
        let record = |app: &str, name: &str, value: &str, context_app: &str| SecretRecord {
            app: app.into(),
            name: name.into(),
            sealed: sealer.seal(&context(context_app, name), value).unwrap(),
            updated_ms: 1,
        };
        let secrets = AppSecrets::open(
            &sealer,
            vec![
                record("a", "db", "pw", "a"),
                // Moved from app b's row: does not open.
                record("a", "api", "stolen", "b"),
                record("b", "db", "other", "b"),
            ],
        );
        assert_eq!(
            secrets.values("a"),
            BTreeMap::from([("db".to_owned(), "pw".to_owned())])
        );
        let env = BTreeMap::from([
            ("DB".to_owned(), "db".to_owned()),
            ("API".to_owned(), "api".to_owned()),
        ]);
        assert_eq!(
            resolve(&env, &secrets.values("a")),
            [("DB".to_owned(), "pw".to_owned())]
        );
        secrets.set("a", "db", "new".into(), 2);
        assert_eq!(secrets.values("a")["db"], "new");
        assert_eq!(secrets.marks()[&("a".to_owned(), "db".to_owned())], 2);
        secrets.remove_app("a");
        assert!(secrets.values("a").is_empty());
        assert_eq!(secrets.values("b")["db"], "other");
    }
}
