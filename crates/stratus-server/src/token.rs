//! The admin token: generated at first start, kept readable by the owner only.

use std::path::Path;

use anyhow::Context;

pub(crate) fn load_or_create(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = random_hex(32)
        .map_err(|err| anyhow::anyhow!("no randomness for the admin token: {err}"))?;
    crate::write_private(path, token.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// `bytes` random bytes from the operating system, as lower-case hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The admin token handed to this node in `from` (so that every node of a
/// cluster takes the same one), kept in `path` too for the local CLI.
pub(crate) fn handed(from: &Path, path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(from)
        .with_context(|| format!("cannot read the admin token file {}", from.display()))?;
    let token = token.trim().to_owned();
    anyhow::ensure!(
        token.len() >= 32 && token.bytes().all(|b| b.is_ascii_graphic()),
        "{} holds no usable admin token: give at least 32 printable characters, such as another node's DATA_DIR/admin.token",
        from.display()
    );
    if std::fs::read_to_string(path).ok().as_deref().map(str::trim) != Some(token.as_str()) {
        crate::write_private(path, token.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(token)
}
