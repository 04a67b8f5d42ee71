//! `stratus migrate`: a single node's state moved from SQLite into a
//! PostgreSQL store.

use std::path::Path;

use anyhow::Context;
use stratus_store::{Dump, StoreError, Transfer};

use crate::secrets::{KEY_FILE, Sealer};
use stratus_store_postgres::PostgresStore;
use stratus_store_sqlite::SqliteStore;

/// What a migration moved, for people.
#[derive(Debug)]
pub struct Moved {
    pub summary: String,
}

/// Copies everything the SQLite store of `data_dir` holds but logs into
/// the empty PostgreSQL database at `to`, in one transaction. The data
/// directory must not be in use by a server. With `key_file` (the
/// cluster's `--secrets-key-file`, made if it does not exist) stored
/// secrets are sealed anew with that key; without it they stay sealed
/// with the data directory's own `secrets.key`, which the nodes must then
/// be given.
pub async fn migrate(data_dir: &Path, to: &str, key_file: Option<&Path>) -> anyhow::Result<Moved> {
    let db = data_dir.join("stratus.db");
    anyhow::ensure!(
        db.is_file(),
        "{} holds no database to migrate; give the data directory with --from",
        data_dir.display()
    );
    let _lock = crate::lock_data_dir(data_dir)?;
    let from = SqliteStore::open(&db).with_context(|| format!("cannot open {}", db.display()))?;
    let target = crate::StoreKind::Postgres(to.to_owned()).to_string();
    let into = PostgresStore::connect(to, 2)
        .await
        .with_context(|| format!("cannot open {target}"))?;
    let mut dump = from
        .export()
        .await
        .with_context(|| format!("cannot read {}", db.display()))?;
    if let Some(key_file) = key_file {
        reseal(&mut dump, &data_dir.join(KEY_FILE), key_file)?;
    }
    let summary = dump.summary();
    match into.import(dump).await {
        Ok(()) => Ok(Moved { summary }),
        Err(err @ StoreError::NotEmpty(_)) => {
            Err(err).with_context(|| format!("{target} is not a new database; nothing was copied"))
        }
        Err(err) => {
            Err(err).with_context(|| format!("cannot write into {target}; nothing was copied"))
        }
    }
}

/// Seals the secrets of `dump`, sealed with the key in `from` (or stored
/// in the clear by an old version), with the key in `to`.
fn reseal(dump: &mut Dump, from: &Path, to: &Path) -> anyhow::Result<()> {
    if dump.aws_credentials.is_empty() && dump.secrets.is_empty() {
        return Ok(());
    }
    anyhow::ensure!(
        from.is_file(),
        "{} is missing: the stored secrets cannot be opened to seal them with {}",
        from.display(),
        to.display()
    );
    let (old, new) = (Sealer::load_or_create(from)?, Sealer::load_or_create(to)?);
    for credential in &mut dump.aws_credentials {
        let (secret, _) = old
            .open(&credential.access_key_id, &credential.secret)
            .map_err(|err| {
                anyhow::anyhow!(
                    "the secret of AWS credential {}: {err}; nothing was copied",
                    credential.access_key_id
                )
            })?;
        credential.secret = new.seal(&credential.access_key_id, &secret)?;
    }
    for stored in &mut dump.secrets {
        let context = crate::app_secrets::context(&stored.app, &stored.name);
        let (secret, _) = old.open(&context, &stored.sealed).map_err(|err| {
            anyhow::anyhow!(
                "secret {} of app {}: {err}; nothing was copied",
                stored.name,
                stored.app
            )
        })?;
        stored.sealed = new.seal(&context, &secret)?;
    }
    Ok(())
}
