//! `stratus migrate`: a single node's state moved from SQLite into a
//! PostgreSQL store.

use std::path::Path;

use anyhow::Context;
use stratus_store::{StoreError, Transfer};
use stratus_store_postgres::PostgresStore;
use stratus_store_sqlite::SqliteStore;

/// What a migration moved, for people.
#[derive(Debug)]
pub struct Moved {
    pub summary: String,
}

/// Copies everything the SQLite store of `data_dir` holds but logs into
/// the empty PostgreSQL database at `to`, in one transaction. The data
/// directory must not be in use by a server.
pub async fn migrate(data_dir: &Path, to: &str) -> anyhow::Result<Moved> {
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
    let dump = from
        .export()
        .await
        .with_context(|| format!("cannot read {}", db.display()))?;
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
