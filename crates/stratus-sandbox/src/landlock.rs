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

/// What [`restrict`] applies, worked out in the launcher: the ruleset's
/// attribute as this kernel's ABI knows it, and the rights below each
/// path. A process made from a template applies the same plan itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Plan {
    pub handled_fs: u64,
    pub handled_net: u64,
    pub scoped: u64,
    /// How many bytes of the attribute this ABI reads.
    pub size: usize,
    pub rules: Vec<(String, u64)>,
}

impl Plan {
    /// Lets the process write below `path` too (a writable mount of its
    /// view), where the plan has file rules.
    pub(crate) fn allow_writes(&mut self, path: &std::path::Path) {
        if self.handled_fs != 0 {
            self.rules
                .push((path.display().to_string(), self.handled_fs));
        }
    }
}

/// The plan for a process: `filesystem` adds the file rules, meant for a
/// sandbox's own view; `signals` keeps it from signalling outside its
/// own domain (only an init that must signal a program made elsewhere
/// goes without). `None` where there is nothing to enforce.
pub(crate) fn plan(filesystem: bool, signals: bool) -> Option<Plan> {
    let abi = abi();
    if abi == 0 {
        return None;
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
    let mut scoped = 0;
    if abi >= 6 {
        scoped |= SCOPE_ABSTRACT_UNIX_SOCKET;
        if signals {
            scoped |= SCOPE_SIGNAL;
        }
    }
    let handled_fs = if filesystem { fs_rights } else { 0 };
    if handled_fs == 0 && scoped == 0 {
        return None;
    }
    let mut rules = Vec::new();
    if filesystem {
        let read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR;
        let device = FS_READ_FILE | FS_WRITE_FILE | (fs_rights & (FS_TRUNCATE | FS_IOCTL_DEV));
        rules = vec![
            ("/".to_owned(), read),
            ("/tmp".to_owned(), fs_rights),
            ("/dev".to_owned(), device),
        ];
    }
    Some(Plan {
        handled_fs,
        handled_net: 0,
        scoped,
        // Older kernels know a shorter attribute; the fields past it are zero.
        size: match abi {
            1..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        },
        rules,
    })
}

/// In the child, with `no_new_privs` set: restricts this process and all
/// it starts, as [`plan`] says. Does nothing where the kernel lacks
/// Landlock.
pub(crate) fn restrict(filesystem: bool) -> io::Result<()> {
    restrict_as(plan(filesystem, true))
}

/// Applies a plan made with [`plan`].
pub(crate) fn restrict_as(plan: Option<Plan>) -> io::Result<()> {
    let Some(plan) = plan else {
        return Ok(());
    };
    let attr = RulesetAttr {
        handled_access_fs: plan.handled_fs,
        handled_access_net: plan.handled_net,
        scoped: plan.scoped,
    };
    // SAFETY: attr is a live, initialised struct of at least `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            plan.size.min(std::mem::size_of::<RulesetAttr>()),
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh descriptor that we now own.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    for (path, rights) in &plan.rules {
        let path = std::ffi::CString::new(path.as_str()).map_err(io::Error::other)?;
        allow(&ruleset, &path, *rights)?;
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
