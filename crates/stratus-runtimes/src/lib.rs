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

/// The SDK Python functions import (`from stratus import db, files`).
pub const PYTHON_SDK: &str = include_str!("../python/stratus.py");
/// The SDK Node.js functions require (`require('stratus')`).
pub const NODE_SDK: &str = include_str!("../node/stratus.js");

/// Writes the Python runtime into `dir`, replacing files whose content
/// differs; returns its entry point. The SDK goes in `sdk/`, which the
/// bootstrap puts on `sys.path` after a function's own modules.
pub fn install_python(dir: &Path) -> io::Result<PathBuf> {
    write_if_changed(&dir.join("sdk"), "stratus.py", PYTHON_SDK)?;
    write_if_changed(dir, "bootstrap.py", PYTHON_BOOTSTRAP)
}

/// Writes the Node.js runtime into `dir`, as [`install_python`] does; the
/// SDK is the package `node_modules/stratus`, which the bootstrap adds to
/// where `require` looks.
pub fn install_node(dir: &Path) -> io::Result<PathBuf> {
    write_if_changed(&dir.join("node_modules/stratus"), "index.js", NODE_SDK)?;
    write_if_changed(dir, "bootstrap.js", NODE_BOOTSTRAP)
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
