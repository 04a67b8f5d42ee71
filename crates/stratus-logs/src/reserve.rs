//! Space kept in reserve on the data directory's file system: a file of
//! zeros that is removed when the disk fills up, so that trimming logs
//! (which writes to the database before it frees anything) can still run
//! and give space back; it is made again once there is room.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The reserve file and its size.
#[derive(Debug, Clone)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    pub fn new(path: PathBuf, bytes: u64) -> Reserve {
        Reserve { path, bytes }
    }

    /// The reserve's size.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes free on the reserve's file system.
    pub fn free(&self) -> Option<u64> {
        free_bytes(self.path.parent().unwrap_or(Path::new(".")))
    }

    /// Whether the reserve is in place.
    pub fn held(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes)
    }

    /// Removes the reserve, giving its space to whoever needs it; true if
    /// there was one.
    pub fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }

    /// Makes the reserve again, when the file system has room for it and
    /// as much again; true if it is in place.
    pub fn restore(&self) -> bool {
        if self.bytes == 0 || self.held() {
            return true;
        }
        if self
            .free()
            .is_none_or(|free| free < self.bytes.saturating_mul(2))
        {
            return false;
        }
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::File::create(&self.path)?;
            if !allocate(&file, self.bytes) {
                // No fallocate here: the blocks are written.
                let zeros = vec![0u8; 1 << 20];
                let mut left = self.bytes;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    file.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
            }
            file.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&self.path);
            return false;
        }
        true
    }
}

/// Gives `file` `bytes` of blocks without writing them; false where the
/// file system cannot.
#[allow(unsafe_code)] // fallocate: the standard library has no way to ask.
fn allocate(file: &std::fs::File, bytes: u64) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor we own, with plain integers.
    unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) == 0 }
}

/// Bytes free for an unprivileged writer on the file system of `dir`.
#[allow(unsafe_code)] // statvfs: the standard library has no way to ask.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a local struct from a valid C string.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_released_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::new(dir.path().join("reserve"), 1 << 20);
        assert!(!reserve.held());
        assert!(reserve.restore());
        assert!(reserve.held());
        assert!(reserve.release());
        assert!(!reserve.held() && !reserve.release());
    }
}
