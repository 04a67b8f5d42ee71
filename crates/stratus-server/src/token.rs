//! The admin token and the platform secret: one each per store, so that
//! every node that shares a store takes the same.
//!
//! The store keeps only the admin token's SHA-256. The first node to start
//! on a store creates the token and writes it to its data directory
//! (readable by the owner only); any other node is handed it with
//! `--admin-token-file` (or finds it in its data directory from an earlier
//! start), and refuses to start with a token the store does not know.

use std::path::Path;

use anyhow::Context;
use stratus_store::{Meta, MetaKey};

/// The admin token of `store`, kept in `path` for the local CLI: the one
/// in `handed` if given, else the one in `path`, else (on a store that has
/// none yet) a new one.
pub(crate) async fn admin_token(
    store: &dyn Meta,
    handed: Option<&Path>,
    path: &Path,
) -> anyhow::Result<String> {
    let known = match handed {
        Some(from) => Some(read_handed(from)?),
        None => read_kept(path)?,
    };
    let (token, made) = match known {
        Some(token) => (token, false),
        None => (
            random_hex(32)
                .map_err(|err| anyhow::anyhow!("no randomness for the admin token: {err}"))?,
            true,
        ),
    };
    let hash = stratus_archive::sha256_hex(token.as_bytes());
    let kept = store
        .meta_or_insert(MetaKey::AdminTokenHash, &hash)
        .await
        .context("cannot read the store's admin token")?;
    if kept != hash {
        let fix = "give this node the store's admin token with --admin-token-file FILE (the DATA_DIR/admin.token of the node that started on this store first)";
        match (handed, made) {
            (Some(from), _) => anyhow::bail!(
                "{} holds another admin token than the store's: {fix}",
                from.display()
            ),
            (None, true) => {
                anyhow::bail!("the store already has an admin token, made by another node: {fix}")
            }
            (None, false) => anyhow::bail!(
                "this data directory's admin token ({}) is not the store's: {fix}",
                path.display()
            ),
        }
    }
    if std::fs::read_to_string(path).ok().as_deref().map(str::trim) != Some(token.as_str()) {
        crate::write_private(path, token.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(token)
}

/// The secret the tokens of instances are derived from: the store's, made
/// by the first node that asks.
pub(crate) async fn platform_secret(store: &dyn Meta) -> anyhow::Result<String> {
    let candidate = random_hex(32)
        .map_err(|err| anyhow::anyhow!("no randomness for the platform secret: {err}"))?;
    store
        .meta_or_insert(MetaKey::PlatformSecret, &candidate)
        .await
        .context("cannot read the store's platform secret")
}

/// The token kept in the data directory, if there is one.
fn read_kept(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => Ok(Some(token.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The token handed to this node in `from`.
fn read_handed(from: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(from)
        .with_context(|| format!("cannot read the admin token file {}", from.display()))?;
    let token = token.trim().to_owned();
    anyhow::ensure!(
        token.len() >= 32 && token.bytes().all(|b| b.is_ascii_graphic()),
        "{} holds no usable admin token: give at least 32 printable characters, such as another node's DATA_DIR/admin.token",
        from.display()
    );
    Ok(token)
}

/// `bytes` random bytes from the operating system, as lower-case hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
