//! Layers (installed dependencies, kept by cache key and shared by every
//! app whose build has that key) and the code directories instances run:
//! a package's code with a layer linked in at its place. Both are made
//! whole under a temporary name and renamed, so a crash leaves only
//! partial directories, which the next start removes.

use std::io;
use std::path::{Path, PathBuf};

const LAYERS_DIR: &str = "layers";
const BUILT_DIR: &str = "built";
const PARTIAL: &str = ".partial-";

pub(crate) fn layer_dir(data_dir: &Path, key: &str) -> PathBuf {
    data_dir.join(LAYERS_DIR).join(key)
}

/// The code directory of `package` with layer `layer`.
pub(crate) fn built_dir(data_dir: &Path, package: &str, layer: &str) -> PathBuf {
    data_dir.join(BUILT_DIR).join(format!("{package}-{layer}"))
}

/// Where a new layer or built directory is made before it is renamed.
pub(crate) fn partial_path(dest: &Path) -> PathBuf {
    let mut salt = [0u8; 4];
    let _ = getrandom::fill(&mut salt);
    let name = format!(
        "{PARTIAL}{}-{}",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        super::plan::hex(&salt)
    );
    dest.with_file_name(name)
}

/// Renames the finished `partial` to `dest`; another that got there first
/// wins, and `partial` goes.
pub(crate) fn publish(partial: &Path, dest: &Path) -> io::Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(partial, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(partial);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Makes `dest`: the tree of `code`, and `layer`'s at `layer_at` inside
/// it, hard-linked (no file is copied), whole or not at all.
pub(crate) fn assemble(code: &Path, layer: &Path, layer_at: &str, dest: &Path) -> io::Result<()> {
    if dest.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let partial = partial_path(dest);
    let made = (|| {
        link_tree(code, &partial)?;
        if layer_at.is_empty() {
            // A build's outputs, over the code.
            return overlay(layer, &partial);
        }
        let at = partial.join(layer_at);
        if at.exists() {
            return Err(io::Error::other(format!(
                "the code already has {layer_at}, where its dependencies go; remove it from the code directory (or add it to .stratusignore)"
            )));
        }
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        link_tree(layer, &at)
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    publish(&partial, dest)
}

/// Recreates `from` at `to` with hard links for files, the same links
/// and the directories' modes.
pub(crate) fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    std::fs::create_dir(to)?;
    std::fs::set_permissions(to, meta.permissions())?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            std::fs::hard_link(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Links the tree of `from` into `to`, replacing what `to` has at the
/// same paths.
fn overlay(from: &Path, to: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        let existing = std::fs::symlink_metadata(&target).ok();
        if kind.is_dir() {
            match existing {
                Some(meta) if meta.is_dir() => overlay(&entry.path(), &target)?,
                Some(_) => {
                    std::fs::remove_file(&target)?;
                    link_tree(&entry.path(), &target)?;
                }
                None => link_tree(&entry.path(), &target)?,
            }
            continue;
        }
        match existing {
            Some(meta) if meta.is_dir() => std::fs::remove_dir_all(&target)?,
            Some(_) => std::fs::remove_file(&target)?,
            None => {}
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::hard_link(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Copies the tree of `from` to `to` (a new directory): files, modes and
/// symbolic links, for a build to write in.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(from)?;
    std::fs::create_dir(to)?;
    let mode = meta.permissions().mode() | 0o700;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
            let mode = std::fs::metadata(&target)?.permissions().mode() | 0o600;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// Removes what a crash left half made.
pub(crate) fn remove_partials(data_dir: &Path) {
    for dir in [LAYERS_DIR, BUILT_DIR] {
        let Ok(entries) = std::fs::read_dir(data_dir.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(PARTIAL) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Removes the built directories that no version in `keep` (package and
/// layer pairs) uses and the layers none of them uses, each only once
/// made or used longer than `grace` ago. Returns how many went.
pub(crate) fn prune(
    data_dir: &Path,
    keep: &std::collections::HashSet<(String, String)>,
    grace: std::time::Duration,
) -> usize {
    let layers_kept: std::collections::HashSet<&str> =
        keep.iter().map(|(_, layer)| layer.as_str()).collect();
    let old = |entry: &std::fs::DirEntry| {
        entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > grace)
    };
    let mut removed = 0;
    for (dir, used) in [
        (
            BUILT_DIR,
            &(|name: &str| {
                name.split_once('-')
                    .is_some_and(|(p, l)| keep.contains(&(p.to_owned(), l.to_owned())))
            }) as &dyn Fn(&str) -> bool,
        ),
        (LAYERS_DIR, &|name: &str| layers_kept.contains(name)),
    ] {
        let Ok(entries) = std::fs::read_dir(data_dir.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A deploy on its way made what it needs within the grace.
            if used(&name) || name.starts_with(PARTIAL) || !old(&entry) {
                continue;
            }
            if std::fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Marks a layer used now, so that pruning spares it for the grace.
pub(crate) fn touch(dir: &Path) {
    if let Ok(file) = std::fs::File::open(dir) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn assembly_links_code_and_layer_without_copying() {
        let root = tempfile::tempdir().unwrap();
        let code = root.path().join("code");
        std::fs::create_dir_all(code.join("pkg")).unwrap();
        std::fs::write(code.join("app.py"), "import dep").unwrap();
        std::fs::write(code.join("pkg/mod.py"), "").unwrap();
        std::os::unix::fs::symlink("app.py", code.join("link.py")).unwrap();
        let layer = layer_dir(root.path(), "k");
        std::fs::create_dir_all(layer.join("dep")).unwrap();
        std::fs::write(layer.join("dep/__init__.py"), "X = 1").unwrap();
        let dest = built_dir(root.path(), "p", "k");
        assemble(&code, &layer, ".stratus/python", &dest).unwrap();
        let linked = dest.join(".stratus/python/dep/__init__.py");
        assert_eq!(std::fs::read_to_string(&linked).unwrap(), "X = 1");
        assert_eq!(
            std::fs::metadata(&linked).unwrap().ino(),
            std::fs::metadata(layer.join("dep/__init__.py"))
                .unwrap()
                .ino()
        );
        assert_eq!(
            std::fs::read_link(dest.join("link.py")).unwrap(),
            Path::new("app.py")
        );
        assert!(dest.join("pkg/mod.py").is_file());
        // Made once: a second call finds it.
        assemble(&code, &layer, ".stratus/python", &dest).unwrap();
    }

    #[test]
    fn code_in_the_layers_place_is_refused_and_nothing_is_left() {
        let root = tempfile::tempdir().unwrap();
        let code = root.path().join("code");
        std::fs::create_dir_all(code.join("node_modules")).unwrap();
        let layer = layer_dir(root.path(), "k");
        std::fs::create_dir_all(&layer).unwrap();
        let dest = built_dir(root.path(), "p", "k");
        let err = assemble(&code, &layer, "node_modules", &dest).unwrap_err();
        assert!(err.to_string().contains("node_modules"), "{err}");
        assert!(!dest.exists());
        let left: Vec<_> = std::fs::read_dir(root.path().join(BUILT_DIR))
            .unwrap()
            .collect();
        assert!(left.is_empty());
    }

    #[test]
    fn pruning_keeps_what_kept_versions_use_and_recent_layers() {
        let root = tempfile::tempdir().unwrap();
        for (p, l) in [("p1", "l1"), ("p2", "l2")] {
            std::fs::create_dir_all(built_dir(root.path(), p, l)).unwrap();
            std::fs::create_dir_all(layer_dir(root.path(), l)).unwrap();
        }
        std::fs::create_dir_all(layer_dir(root.path(), "l3")).unwrap();
        let keep = [("p1".to_owned(), "l1".to_owned())].into_iter().collect();
        assert_eq!(
            prune(root.path(), &keep, std::time::Duration::from_secs(3600)),
            0
        );
        assert!(layer_dir(root.path(), "l2").is_dir(), "within the grace");
        assert_eq!(prune(root.path(), &keep, std::time::Duration::ZERO), 3);
        assert!(!built_dir(root.path(), "p2", "l2").exists());
        assert!(built_dir(root.path(), "p1", "l1").is_dir());
        assert!(layer_dir(root.path(), "l1").is_dir());
        assert!(!layer_dir(root.path(), "l3").exists());
    }
}
