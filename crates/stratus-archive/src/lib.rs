//! Code packages: the gzip-compressed tar archives that carry a function's
//! code from `stratus deploy` to the server.
//!
//! Packing is deterministic (sorted entries, zero times and owners, normalised
//! modes), so the same tree always yields the same bytes and the same
//! SHA-256, which is the package's identity: an unchanged redeploy uploads
//! and activates nothing. Unpacking trusts nothing: absolute paths, `..`,
//! links out of the tree, devices, duplicate entries and oversized contents
//! are refused before anything is visible at the destination.

mod guard;
mod ignore;
mod pack;
mod unpack;

use std::io;
use std::path::PathBuf;

pub use ignore::IgnoreRules;
pub use pack::{Package, pack};
pub use unpack::{Unpacked, unpack};

/// The file whose gitignore-style patterns are left out of a package.
pub const IGNORE_FILE: &str = ".stratusignore";

/// Bounds on what an archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total size of all files once unpacked.
    pub max_unpacked_bytes: u64,
    /// Number of entries (files, directories and links).
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unpacked_bytes: 250 * 1024 * 1024,
            max_entries: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}; it takes gitignore's patterns")]
    BadIgnore { path: PathBuf, reason: String },
    #[error("{path} is not valid UTF-8; rename it or add it to .stratusignore")]
    NonUtf8Path { path: PathBuf },
    #[error(
        "symlink {path} points outside the code directory ({target}); copy the file in instead"
    )]
    LinkOutside { path: String, target: String },
    #[error("{path} is a {kind}, which a package cannot hold; add it to .stratusignore")]
    UnsupportedFile { path: String, kind: &'static str },
    #[error("the archive is corrupt or not a gzip-compressed tar: {0}")]
    Corrupt(io::Error),
    #[error("archive entry {path:?} has an absolute path; packages hold relative paths only")]
    AbsolutePath { path: String },
    #[error("archive entry {path:?} contains '..'; packages may not write outside their directory")]
    ParentDir { path: String },
    #[error("archive entry {path:?} appears twice")]
    Duplicate { path: String },
    #[error("archive entry {path:?} lies inside the symlink {link:?}")]
    ThroughLink { path: String, link: String },
    #[error("archive entry {path:?} is a hard link, which packages cannot hold")]
    HardLink { path: String },
    #[error("the package unpacks to more than {limit} bytes; make it smaller or raise the limit")]
    TooLarge { limit: u64 },
    #[error("the package has more than {limit} entries; make it smaller or raise the limit")]
    TooManyEntries { limit: usize },
    #[error("writing the unpacked package: {0}")]
    Write(io::Error),
    #[error("{0}; packages need no such header (pack with `stratus deploy`)")]
    Extension(String),
}

/// Lower-case hex SHA-256 of `bytes`, the identity of a package.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    pack::hex(&sha2::Sha256::digest(bytes))
}
