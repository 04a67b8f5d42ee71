//! Validated unpacking: nothing in an archive is trusted.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use flate2::read::GzDecoder;

use crate::pack::link_stays_inside;
use crate::{ArchiveError, Limits};

/// What an archive unpacked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub files: usize,
    pub bytes: u64,
}

/// Unpacks `archive` into `dest`, which must be an empty directory.
///
/// On error `dest` may hold part of the archive; callers unpack into a
/// temporary directory and rename it into place only on success.
pub fn unpack(archive: &[u8], dest: &Path, limits: Limits) -> Result<Unpacked, ArchiveError> {
    let mut tar = tar::Archive::new(GzDecoder::new(archive));
    let mut seen = HashSet::new();
    let mut links: Vec<String> = Vec::new();
    let mut total = Unpacked { files: 0, bytes: 0 };
    let entries = tar.entries().map_err(ArchiveError::Corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(ArchiveError::Corrupt)?;
        if seen.len() >= limits.max_entries {
            return Err(ArchiveError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let path = checked_path(&raw)?;
        if path.is_empty() {
            continue;
        }
        if !seen.insert(path.clone()) {
            return Err(ArchiveError::Duplicate { path });
        }
        if let Some(link) = links
            .iter()
            .find(|l| path.starts_with(l.as_str()) && path.as_bytes().get(l.len()) == Some(&b'/'))
        {
            return Err(ArchiveError::ThroughLink {
                path,
                link: link.clone(),
            });
        }
        let target = dest.join(&path);
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(ArchiveError::Write)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(ArchiveError::Corrupt)?;
                if total.bytes + size > limits.max_unpacked_bytes {
                    return Err(ArchiveError::TooLarge {
                        limit: limits.max_unpacked_bytes,
                    });
                }
                let executable = entry.header().mode().map_err(ArchiveError::Corrupt)? & 0o111 != 0;
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(ArchiveError::Write)?;
                }
                let mut file = fs::File::create(&target).map_err(ArchiveError::Write)?;
                // Bounded by the declared size: a lying header cannot write more.
                let written = io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(ArchiveError::Corrupt)?;
                total.bytes += written;
                total.files += 1;
                let mode = if executable { 0o755 } else { 0o644 };
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(ArchiveError::Write)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if !link_stays_inside(&path, &link) {
                    return Err(ArchiveError::LinkOutside { path, target: link });
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(ArchiveError::Write)?;
                }
                std::os::unix::fs::symlink(&link, &target).map_err(ArchiveError::Write)?;
                links.push(path);
            }
            tar::EntryType::Link => return Err(ArchiveError::HardLink { path }),
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            _ => {
                return Err(ArchiveError::UnsupportedFile {
                    path,
                    kind: "device, fifo or other special file",
                });
            }
        }
    }
    Ok(total)
}

/// Validates an entry path and returns it normalised (no `.`, no trailing `/`).
fn checked_path(raw: &str) -> Result<String, ArchiveError> {
    let path = Path::new(raw);
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ArchiveError::ParentDir {
                    path: raw.to_owned(),
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::AbsolutePath {
                    path: raw.to_owned(),
                });
            }
        }
    }
    Ok(parts.join("/"))
}
