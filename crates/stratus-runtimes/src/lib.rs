//! The built-in language runtimes.
//!
//! `python/bootstrap.py` and `node/bootstrap.js` are small programs that
//! speak the Lambda Runtime API, load the user's handler and call it with a
//! Lambda-compatible context. They ship inside the stratus binary and are
//! written to the data directory at start, so no pip or npm runs at run time.

use std::io;
use std::path::{Path, PathBuf};

/// The Python runtime's entry point.
pub const PYTHON_BOOTSTRAP: &str = include_str!("../python/bootstrap.py");
/// The Node.js runtime's entry point.
pub const NODE_BOOTSTRAP: &str = include_str!("../node/bootstrap.js");

/// Where the runtimes were installed.
#[derive(Debug, Clone)]
pub struct InstalledRuntimes {
    pub python_bootstrap: PathBuf,
    pub node_bootstrap: PathBuf,
}

/// Writes the runtimes under `dir`, replacing files whose content differs.
pub fn install(dir: &Path) -> io::Result<InstalledRuntimes> {
    let python_bootstrap = write_if_changed(&dir.join("python"), "bootstrap.py", PYTHON_BOOTSTRAP)?;
    let node_bootstrap = write_if_changed(&dir.join("node"), "bootstrap.js", NODE_BOOTSTRAP)?;
    Ok(InstalledRuntimes {
        python_bootstrap,
        node_bootstrap,
    })
}

fn write_if_changed(dir: &Path, name: &str, content: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(content) {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}
