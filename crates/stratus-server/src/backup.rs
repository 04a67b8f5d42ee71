//! A consistent copy of a single node's state, taken while it runs, and
//! its restore into an empty data directory.
//!
//! A backup holds the database (a snapshot as of one moment), the
//! packages and unpacked code, and the files that go with the database:
//! the admin token, the key that seals stored secrets, and the store's
//! identity. The database is copied first: packages are written before
//! any version that names them and never changed, so every package the
//! snapshot names is on disk by then. Logs (`DATA_DIR/logs`) are not
//! part of a backup: they are kept for a while, not kept safe.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{STORE_ID_FILE, TOKEN_FILE, secrets};

const DATABASE: &str = "stratus.db";
/// Directories copied whole.
const TREES: &[&str] = &["packages", "code"];
/// Files copied beside the database, when present.
const FILES: &[&str] = &[TOKEN_FILE, secrets::KEY_FILE, STORE_ID_FILE];

/// What a backup or restore copied.
#[derive(Debug, Default)]
pub struct Copied {
    pub files: u64,
    pub bytes: u64,
}

/// Copies the state of `data_dir` into `to`, a directory that does not
/// exist yet (made mode 0700).
pub fn backup(data_dir: &Path, to: &Path) -> anyhow::Result<Copied> {
    let db = data_dir.join(DATABASE);
    anyhow::ensure!(
        db.is_file(),
        "{} holds no database to back up; give the data directory with --data-dir",
        data_dir.display()
    );
    anyhow::ensure!(
        std::fs::read_dir(to).map_or(true, |mut d| d.next().is_none()),
        "{} is not empty; back up into a new directory",
        to.display()
    );
    create_private(to)?;
    let mut copied = Copied::default();
    stratus_store_sqlite::snapshot(&db, &to.join(DATABASE))
        .with_context(|| format!("cannot copy the database {}", db.display()))?;
    copied.files += 1;
    copied.bytes += std::fs::metadata(to.join(DATABASE))?.len();
    for file in FILES {
        copy_file_if_present(&data_dir.join(file), &to.join(file), &mut copied)?;
    }
    for tree in TREES {
        copy_tree(&data_dir.join(tree), &to.join(tree), &mut copied)?;
    }
    Ok(copied)
}

/// Copies a backup in `from` into `data_dir`, which must hold no state of
/// its own (a new or empty directory).
pub fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<Copied> {
    anyhow::ensure!(
        from.join(DATABASE).is_file(),
        "{} is not a backup: it holds no {DATABASE}",
        from.display()
    );
    if data_dir.exists() {
        let used: Vec<String> = [DATABASE, "packages", "code", STORE_ID_FILE]
            .iter()
            .filter(|name| {
                let path = data_dir.join(name);
                path.is_file() || std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some())
            })
            .map(|name| name.to_string())
            .collect();
        anyhow::ensure!(
            used.is_empty(),
            "{} already holds state ({}); restore into a new or empty data directory",
            data_dir.display(),
            used.join(", ")
        );
    }
    create_private(data_dir)?;
    let mut copied = Copied::default();
    for tree in TREES {
        copy_tree(&from.join(tree), &data_dir.join(tree), &mut copied)?;
    }
    for file in FILES {
        copy_file_if_present(&from.join(file), &data_dir.join(file), &mut copied)?;
    }
    // Last: a restore cut short leaves no database, so it can run again.
    copy_file_if_present(&from.join(DATABASE), &data_dir.join(DATABASE), &mut copied)?;
    Ok(copied)
}

/// Makes `dir` (mode 0700), or makes an existing one private.
fn create_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))
}

fn copy_file_if_present(from: &Path, to: &Path, copied: &mut Copied) -> anyhow::Result<()> {
    match std::fs::copy(from, to) {
        Ok(bytes) => {
            copied.files += 1;
            copied.bytes += bytes;
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot copy {}", from.display())),
    }
}

/// Copies the tree at `from` into `to`, keeping modes and symbolic links;
/// nothing when `from` does not exist. Entries whose names start with
/// `.tmp-` are uploads in progress, left out.
fn copy_tree(from: &Path, to: &Path, copied: &mut Copied) -> anyhow::Result<()> {
    let mut stack: Vec<(PathBuf, PathBuf)> = vec![(from.to_owned(), to.to_owned())];
    while let Some((from, to)) = stack.pop() {
        let entries = match std::fs::read_dir(&from) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", from.display())),
        };
        std::fs::create_dir_all(&to).with_context(|| format!("cannot create {}", to.display()))?;
        std::fs::set_permissions(&to, std::fs::metadata(&from)?.permissions())?;
        for entry in entries {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            let (source, target) = (entry.path(), to.join(entry.file_name()));
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push((source, target));
            } else if kind.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)
                    .with_context(|| format!("cannot copy {}", source.display()))?;
            } else if kind.is_file() {
                copy_file_if_present(&source, &target, copied)?;
            }
        }
    }
    Ok(())
}
