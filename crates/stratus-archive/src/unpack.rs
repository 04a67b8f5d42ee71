//! Validated unpacking: nothing in an archive is trusted.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use flate2::read::GzDecoder;

use crate::guard::{Guard, Refused, refusal};
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
    // Headers and padding take at most two blocks an entry, beyond the
    // files' own bytes.
    let stream_limit = limits
        .max_unpacked_bytes
        .saturating_add(1024 * limits.max_entries as u64)
        .saturating_add(1024 * 1024);
    let mut tar = tar::Archive::new(Guard::new(GzDecoder::new(archive), stream_limit));
    let corrupt = |err: io::Error| match refusal(&err) {
        Some(Refused::Decompressed { .. }) => ArchiveError::TooLarge {
            limit: limits.max_unpacked_bytes,
        },
        Some(refused @ Refused::Extension { .. }) => ArchiveError::Extension(refused.to_string()),
        None => ArchiveError::Corrupt(err),
    };
    let mut seen = HashSet::new();
    let mut links: Vec<String> = Vec::new();
    let mut total = Unpacked { files: 0, bytes: 0 };
    let entries = tar.entries().map_err(corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
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
                let written = copy(&mut (&mut entry).take(size), &mut file, corrupt)?;
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

/// Copies `from` into `to`: a failure to read is the archive's
/// (`on_read`), a failure to write the destination's (a full disk).
fn copy(
    from: &mut impl Read,
    to: &mut impl io::Write,
    on_read: impl Fn(io::Error) -> ArchiveError,
) -> Result<u64, ArchiveError> {
    let mut buf = [0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(on_read(err)),
        };
        to.write_all(&buf[..n]).map_err(ArchiveError::Write)?;
        total += n as u64;
    }
}
