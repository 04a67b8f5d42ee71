//! Deterministic packing of a code directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::{ArchiveError, IGNORE_FILE, IgnoreRules};

/// A packed code directory.
#[derive(Debug, Clone)]
pub struct Package {
    /// The gzip-compressed tar archive.
    pub bytes: Vec<u8>,
    /// Lower-case hex SHA-256 of `bytes`: the package's identity.
    pub sha256: String,
    pub files: usize,
    pub unpacked_bytes: u64,
}

/// Packs `dir` into a deterministic archive, leaving out `.git` and whatever
/// `.stratusignore` in `dir` names.
pub fn pack(dir: &Path) -> Result<Package, ArchiveError> {
    let rules = match fs::read_to_string(dir.join(IGNORE_FILE)) {
        Ok(text) => IgnoreRules::parse(&text).map_err(|reason| ArchiveError::BadIgnore {
            path: dir.join(IGNORE_FILE),
            reason,
        })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => IgnoreRules::default(),
        Err(source) => {
            return Err(ArchiveError::Read {
                path: dir.join(IGNORE_FILE),
                source,
            });
        }
    };
    let mut entries = Vec::new();
    walk(dir, "", &rules, &mut entries)?;

    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut files = 0;
    let mut unpacked_bytes = 0;
    for entry in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let io_err = |source| ArchiveError::Read {
            path: entry.source.clone(),
            source,
        };
        match &entry.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, &entry.path, std::io::empty())
                    .map_err(io_err)?;
            }
            Kind::File { executable } => {
                let data = fs::read(&entry.source).map_err(io_err)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, &entry.path, data.as_slice())
                    .map_err(io_err)?;
                files += 1;
                unpacked_bytes += data.len() as u64;
            }
            Kind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, &entry.path, target)
                    .map_err(io_err)?;
            }
        }
    }
    let encoder = builder.into_inner().map_err(|source| ArchiveError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut bytes = encoder.finish().map_err(|source| ArchiveError::Read {
        path: dir.to_owned(),
        source,
    })?;
    bytes.flush().ok();
    let sha256 = hex(&Sha256::digest(&bytes));
    Ok(Package {
        bytes,
        sha256,
        files,
        unpacked_bytes,
    })
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Entry {
    path: String,
    source: PathBuf,
    kind: Kind,
}

enum Kind {
    Dir,
    File { executable: bool },
    Symlink { target: String },
}

fn walk(
    dir: &Path,
    prefix: &str,
    rules: &IgnoreRules,
    out: &mut Vec<Entry>,
) -> Result<(), ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let source = child.path();
        let Some(name) = child.file_name().to_str().map(str::to_owned) else {
            return Err(ArchiveError::NonUtf8Path { path: source });
        };
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&source).map_err(|source_err| ArchiveError::Read {
            path: source.clone(),
            source: source_err,
        })?;
        let file_type = meta.file_type();
        if name == ".git" || rules.is_ignored(&path, file_type.is_dir()) {
            continue;
        }
        if file_type.is_dir() {
            out.push(Entry {
                path: path.clone(),
                source: source.clone(),
                kind: Kind::Dir,
            });
            walk(&source, &path, rules, out)?;
        } else if file_type.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            out.push(Entry {
                path,
                source,
                kind: Kind::File { executable },
            });
        } else if file_type.is_symlink() {
            let target = fs::read_link(&source).map_err(|err| ArchiveError::Read {
                path: source.clone(),
                source: err,
            })?;
            let target = target.to_str().ok_or_else(|| ArchiveError::NonUtf8Path {
                path: source.clone(),
            })?;
            if !link_stays_inside(&path, target) {
                return Err(ArchiveError::LinkOutside {
                    path,
                    target: target.to_owned(),
                });
            }
            out.push(Entry {
                path,
                source,
                kind: Kind::Symlink {
                    target: target.to_owned(),
                },
            });
        } else {
            return Err(ArchiveError::UnsupportedFile {
                path,
                kind: "special file (socket, fifo or device)",
            });
        }
    }
    Ok(())
}

/// Whether a relative symlink at `path` with `target` resolves, lexically,
/// to a place inside the package root.
///
/// `..` may only lead the target. After a normal component it steps back out
/// of that component, and if that is itself a symlink the lexical depth no
/// longer says where the target ends up: with `a/up -> ..`, the target
/// `a/up/..` looks like the root but is its parent.
pub(crate) fn link_stays_inside(path: &str, target: &str) -> bool {
    let target = Path::new(target);
    if target.is_absolute() {
        return false;
    }
    // Depth of the link's parent directory below the root.
    let mut depth = path.split('/').count() as i64 - 1;
    let mut descended = false;
    for component in target.components() {
        match component {
            Component::Normal(_) => {
                depth += 1;
                descended = true;
            }
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 || descended {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}
