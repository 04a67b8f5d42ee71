//! Code attached to a sandbox after it was made.
//!
//! A sandbox made ahead of demand does not know its function yet. Its task
//! root is bound from a *slot*: a directory of the launcher's that is a
//! mount point of its own, shared, so that a mount made on it later shows
//! up inside the sandbox too (as a slave copy: the sandbox can neither
//! change it nor send mounts back). On activation the launcher clones the
//! function's code into a detached mount, makes it read-only, and moves it
//! onto the slot; the kernel carries it into the sandbox with its flags.
//!
//! The launcher runs in a mount namespace of its own, every mount private,
//! so slots never appear in the host's mount table and vanish with it.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Moves the launcher into a mount namespace of its own with every mount
/// private. In the launcher, before it makes any sandbox.
pub(crate) fn private_mounts() -> io::Result<()> {
    // SAFETY: unshare and mount with valid arguments; the launcher is
    // single-threaded.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS) as libc::c_long)?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) as libc::c_long)?;
    }
    Ok(())
}

/// Whether the kernel has the mount API that [`attach`] needs (5.12+).
pub(crate) fn supported() -> bool {
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on an invalid descriptor only reports an error:
    // EBADF where the call exists, ENOSYS where it does not.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    !(rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS))
}

/// The slots of one launcher, under one directory.
pub(crate) struct Slots {
    dir: PathBuf,
}

impl Slots {
    /// Uses `dir`, clearing what an earlier launcher left there (its
    /// mounts died with its namespace; only empty directories remain).
    pub fn new(dir: PathBuf) -> io::Result<Slots> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let _ = std::fs::remove_dir(entry.path());
        }
        Ok(Slots { dir })
    }

    /// Makes an empty shared mount point named `name`.
    pub fn create(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::create_dir(&path)?;
        let c = cpath(&path)?;
        // SAFETY: mount with valid C strings or NULL.
        let made = unsafe {
            check(libc::mount(
                c.as_ptr(),
                c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) as libc::c_long)
            .and_then(|_| {
                check(libc::mount(
                    std::ptr::null(),
                    c.as_ptr(),
                    std::ptr::null(),
                    libc::MS_SHARED,
                    std::ptr::null(),
                ) as libc::c_long)
            })
        };
        if let Err(err) = made {
            release(&path);
            return Err(err);
        }
        Ok(path)
    }
}

/// Unmounts a slot and whatever was attached to it, and removes it.
pub(crate) fn release(slot: &Path) {
    let Ok(c) = cpath(slot) else { return };
    // The code on top, then the slot's own mount; a detach takes the
    // sandbox's copies with it once the sandbox is gone.
    for _ in 0..4 {
        // SAFETY: umount2 with a valid C string.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            break;
        }
    }
    let _ = std::fs::remove_dir(slot);
}

/// Shows `code` read-only at `slot`, and so in the sandbox bound from it.
pub(crate) fn attach(code: &Path, slot: &Path) -> io::Result<()> {
    let code = cpath(code)?;
    let slot = cpath(slot)?;
    // SAFETY: open_tree, mount_setattr and move_mount with valid C strings,
    // a fully initialised mount_attr of the size given, and a descriptor
    // that we own.
    unsafe {
        let fd = check(libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            code.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        ))?;
        let tree = OwnedFd::from_raw_fd(fd as i32);
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        use std::os::fd::AsRawFd;
        check(libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ))?;
        check(libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            slot.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        ))?;
    }
    Ok(())
}
