//! Where the CLI keeps what `stratus login` learned: named contexts, each a
//! server's admin URL with its token (and a certificate to trust), the
//! current one, and the data directory of the last local server started.
//! One JSON file in the user's config directory (`STRATUS_CONFIG_DIR`, else
//! `$XDG_CONFIG_HOME/stratus`, else `~/.config/stratus`), mode 0600 in a
//! directory of mode 0700: it holds tokens.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file's name in the config directory.
const FILE: &str = "contexts.json";

/// One server the CLI may talk to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Context {
    pub server: String,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Contexts {
    #[serde(default)]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
    /// The data directory of the last local server started.
    #[serde(default)]
    pub local: Option<PathBuf>,
}

/// The config directory, if one can be named.
pub fn dir() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("STRATUS_CONFIG_DIR")
        .or_else(|| from("XDG_CONFIG_HOME").map(|d| d.join("stratus")))
        .or_else(|| from("HOME").map(|h| h.join(".config").join("stratus")))
}

impl Contexts {
    /// The saved contexts; none when there is no file yet.
    pub fn load() -> anyhow::Result<Contexts> {
        let Some(dir) = dir() else {
            return Ok(Contexts::default());
        };
        let path = dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid; fix or remove it", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Contexts::default()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the contexts: a new file, 0600, renamed over the old one.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let dir = dir().context("no config directory: set HOME or STRATUS_CONFIG_DIR")?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join(FILE);
        let tmp = dir.join(format!(".{FILE}.{}", std::process::id()));
        write_private(&tmp, &serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// The current context, if any.
    pub fn current(&self) -> Option<&Context> {
        self.current
            .as_ref()
            .and_then(|name| self.contexts.get(name))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// Notes `data_dir` as the last local server's, so that the CLI finds it
/// from any directory. A failure only costs that convenience.
pub fn remember_local(data_dir: &Path) {
    let Ok(absolute) = std::path::absolute(data_dir) else {
        return;
    };
    let saved = Contexts::load().and_then(|mut contexts| {
        if contexts.local.as_deref() == Some(absolute.as_path()) {
            return Ok(());
        }
        contexts.local = Some(absolute);
        contexts.save().map(drop)
    });
    if let Err(err) = saved {
        tracing::debug!(%err, "cannot remember the local server");
    }
}
