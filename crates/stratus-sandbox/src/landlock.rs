//! Landlock, where the kernel has it: a second, unprivileged fence around
//! tenant code that holds even if a mount were changed under it.
//!
//! In a sandbox, files may be read and executed anywhere in its view but
//! written, created, removed or truncated only below `/tmp` (and written
//! below `/dev`, whose few devices are all harmless). With ABI 6 (Linux
//! 6.12) and later, and in every isolation mode, the process may neither
//! connect to abstract Unix sockets nor send signals outside its own
//! instance: not to the server, the launcher or other tenants.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const CREATE_RULESET_VERSION: libc::c_uint = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
/// Every right of ABI 1: removing and making entries of each kind.
const FS_ABI1: u64 = (1 << 13) - 1;
const FS_REFER: u64 = 1 << 13;
const FS_TRUNCATE: u64 = 1 << 14;
const FS_IOCTL_DEV: u64 = 1 << 15;

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI the kernel offers; 0 without Landlock. Asked once, in
/// the launcher, so that forked children only read it.
pub(crate) fn abi() -> u32 {
    static ABI: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *ABI.get_or_init(|| {
        // SAFETY: the version query takes no attribute and writes nothing.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                CREATE_RULESET_VERSION,
            )
        };
        u32::try_from(v).unwrap_or(0)
    })
}

/// What Landlock enforces at `abi`, for start-up messages.
pub(crate) fn summary(filesystem: bool) -> String {
    let abi = abi();
    if abi == 0 {
        return "landlock: unavailable (the kernel has no Landlock)".to_owned();
    }
    let mut parts = Vec::new();
    if filesystem {
        parts.push("writes only below /tmp");
    }
    if abi >= 6 {
        parts.push("no signals or abstract sockets past the instance");
    }
    if parts.is_empty() {
        return format!("landlock: ABI {abi} has nothing to add without namespaces");
    }
    format!("landlock ABI {abi}: {}", parts.join(", "))
}

/// In the child, with `no_new_privs` set: restricts this process and all
/// it starts. `filesystem` adds the file rules, meant for a sandbox's own
/// view. Does nothing where the kernel lacks Landlock.
pub(crate) fn restrict(filesystem: bool) -> io::Result<()> {
    let abi = abi();
    if abi == 0 {
        return Ok(());
    }
    let mut fs_rights = FS_ABI1;
    if abi >= 2 {
        fs_rights |= FS_REFER;
    }
    if abi >= 3 {
        fs_rights |= FS_TRUNCATE;
    }
    if abi >= 5 {
        fs_rights |= FS_IOCTL_DEV;
    }
    let attr = RulesetAttr {
        handled_access_fs: if filesystem { fs_rights } else { 0 },
        handled_access_net: 0,
        scoped: if abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    };
    if attr.handled_access_fs == 0 && attr.scoped == 0 {
        return Ok(());
    }
    // Older kernels know a shorter attribute; the fields past it are zero.
    let size = match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    // SAFETY: attr is a live, initialised struct of at least `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh descriptor that we now own.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if filesystem {
        let read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR;
        let device = FS_READ_FILE | FS_WRITE_FILE | (fs_rights & (FS_TRUNCATE | FS_IOCTL_DEV));
        for (path, rights) in [(c"/", read), (c"/tmp", fs_rights), (c"/dev", device)] {
            allow(&ruleset, path, rights)?;
        }
    }
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Allows `rights` below `path`.
fn allow(ruleset: &OwnedFd, path: &std::ffi::CStr, rights: u64) -> io::Result<()> {
    // SAFETY: opens a NUL-terminated path for reference only.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open returned a fresh descriptor that we now own.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    let rule = PathBeneathAttr {
        allowed_access: rights,
        parent_fd: dir.as_raw_fd(),
    };
    // SAFETY: rule is a live, initialised struct for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &rule as *const PathBeneathAttr,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
