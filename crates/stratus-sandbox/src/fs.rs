//! The filesystem a namespaced process sees, built in its own mount
//! namespace: a private tmpfs root holding the host's system directories
//! read-only, a minimal `/etc`, a size-limited writable `/tmp`, the
//! requested mounts (code, runtime, interpreter) read-only (over `/tmp`
//! too: an interpreter installed below the host's `/tmp` shows through),
//! fresh `/proc` and `/dev`. Then `pivot_root`, and the old root is gone.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::ProcessSpec;
use crate::spawn::SANDBOX_ID;

/// Host directories shared read-only (or re-created as the same symlink).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Files and directories of `/etc` that programs need; nothing else of it.
const ETC_ENTRIES: &[&str] = &[
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "alternatives",
    "os-release",
    "mime.types",
    "protocols",
    "services",
];

/// Files of `/proc` that tell about the host's kernel: each reads as empty.
const MASKED_PROC: &[&str] = &[
    "kallsyms",
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "latency_stats",
    "sysrq-trigger",
];

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// One bind mount to make, read-only unless `writable`.
struct Bind {
    host: PathBuf,
    target: PathBuf,
    writable: bool,
    /// The source, opened by the launcher while it still has the host's
    /// permissions: the sandbox's own root may not traverse, say, `/root`
    /// to reach an interpreter installed there.
    source: Option<OwnedFd>,
}

pub(crate) struct Plan {
    root: PathBuf,
    links: Vec<(PathBuf, PathBuf)>,
    binds: Vec<Bind>,
    tmp_options: String,
}

impl Plan {
    pub fn new(spec: &ProcessSpec, root: &Path, slot: Option<&Path>) -> Result<Plan, String> {
        let mut links = Vec::new();
        let mut binds = Vec::new();
        for dir in SYSTEM_DIRS {
            let host = Path::new(dir);
            let target = PathBuf::from(&dir[1..]);
            match std::fs::symlink_metadata(host) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(to) = std::fs::read_link(host) {
                        links.push((to, target));
                    }
                }
                Ok(meta) if meta.is_dir() => binds.push(Bind {
                    host: host.to_owned(),
                    target,
                    writable: false,
                    source: None,
                }),
                _ => {}
            }
        }
        for entry in ETC_ENTRIES {
            let host = Path::new("/etc").join(entry);
            if host.exists() {
                binds.push(Bind {
                    target: Path::new("etc").join(entry),
                    host,
                    writable: false,
                    source: None,
                });
            }
        }
        let code = spec.code.as_deref().or(slot).map(|host| crate::Mount {
            host: host.to_owned(),
            sandbox: spec.task_root.clone(),
            writable: false,
        });
        for mount in spec.mounts.iter().chain(&code) {
            if !mount.sandbox.is_absolute()
                || mount.sandbox.components().any(|c| c.as_os_str() == "..")
            {
                return Err(format!(
                    "sandbox path {} must be absolute and plain",
                    mount.sandbox.display()
                ));
            }
            binds.push(Bind {
                host: mount.host.clone(),
                target: mount
                    .sandbox
                    .strip_prefix("/")
                    .unwrap_or(&mount.sandbox)
                    .to_owned(),
                writable: mount.writable,
                source: None,
            });
        }
        for device in DEVICES {
            binds.push(Bind {
                host: Path::new("/dev").join(device),
                target: Path::new("dev").join(device),
                writable: true,
                source: None,
            });
        }
        Ok(Plan {
            root: root.to_owned(),
            links,
            binds,
            tmp_options: format!("mode=1777,size={}m", spec.tmp_mb.max(1)),
        })
    }

    /// Opens every bind source. In the child, after it entered its mount
    /// namespace (a mount from another namespace cannot be bound) and while
    /// it still has the launcher's host ids, so that sources such as an
    /// interpreter under `/root` are reachable.
    pub fn open_sources(&mut self) -> Result<(), (&'static str, io::Error)> {
        for bind in &mut self.binds {
            let path = cpath(&bind.host);
            // SAFETY: open with a valid C string; the result is checked.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err((
                    "open a directory to share with the sandbox",
                    io::Error::last_os_error(),
                ));
            }
            // SAFETY: open returned a fresh descriptor that we now own.
            bind.source = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Ok(())
    }

    /// Mounts the sandbox's root and enters it. In the child, while it
    /// still has the launcher's host ids: the root may lie under a
    /// directory only the host's root can traverse (a data dir made by
    /// `mktemp -d`), which the namespace's own root, an id no host account
    /// has, could not. Everything after this works relative to the root.
    pub fn enter_root(&self) -> Result<(), (&'static str, io::Error)> {
        // Slaves, not private: code attached to the launcher's slot later
        // must still arrive here, while nothing goes back.
        mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_SLAVE,
            None,
        )
        .map_err(|e| ("make mounts private", e))?;
        // Owned by the namespace's root, which builds the view in it.
        mount(
            Some("tmpfs"),
            &self.root,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=0755,uid=0,gid=0,size=4m"),
        )
        .map_err(|e| ("mount the sandbox root", e))?;
        std::env::set_current_dir(&self.root).map_err(|e| ("enter the sandbox root", e))
    }

    /// Builds the view in the root [`Plan::enter_root`] entered, and pivots
    /// into it. In the child, as the namespace's root, before exec.
    pub fn apply(&self) -> Result<(), (&'static str, io::Error)> {
        let root = Path::new(".");
        for dir in ["etc", "proc", "dev", "tmp", "var", ".old-root"] {
            std::fs::create_dir_all(root.join(dir))
                .map_err(|e| ("create the sandbox's directories", e))?;
        }
        for (to, link) in &self.links {
            std::os::unix::fs::symlink(to, link).map_err(|e| ("link a system directory", e))?;
        }
        std::fs::write(
            root.join("etc/passwd"),
            format!("root:x:0:0::/:/bin/false\nsandbox:x:{SANDBOX_ID}:{SANDBOX_ID}::/tmp:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
        )
        .map_err(|e| ("write /etc/passwd", e))?;
        std::fs::write(
            root.join("etc/group"),
            format!("root:x:0:\nsandbox:x:{SANDBOX_ID}:\nnogroup:x:65534:\n"),
        )
        .map_err(|e| ("write /etc/group", e))?;
        mount(
            Some("tmpfs"),
            &root.join("dev"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("mode=0755,size=64k"),
        )
        .map_err(|e| ("mount /dev", e))?;
        for (name, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            std::os::unix::fs::symlink(to, root.join("dev").join(name))
                .map_err(|e| ("link /dev entries", e))?;
        }
        // The private /tmp before the binds, so that a mount below /tmp (an
        // interpreter installed there) shows through it.
        mount(
            Some("tmpfs"),
            &root.join("tmp"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&self.tmp_options),
        )
        .map_err(|e| ("mount /tmp", e))?;
        for bind in &self.binds {
            bind_mount(bind).map_err(|e| ("bind a directory into the sandbox", e))?;
        }
        mount(
            Some("proc"),
            &root.join("proc"),
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
        .map_err(|e| ("mount /proc", e))?;
        // What of the kernel /proc shows to anyone: masked, as container
        // runtimes do.
        for masked in MASKED_PROC {
            let target = root.join("proc").join(masked);
            if target.is_file() {
                mount(Some("dev/null"), &target, None, libc::MS_BIND, None)
                    .map_err(|e| ("mask a file of /proc", e))?;
            }
        }

        let new_root = cpath(root);
        let old_root = cpath(Path::new(".old-root"));
        // SAFETY: pivot_root, chdir and umount2 take valid C strings.
        unsafe {
            if libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), old_root.as_ptr()) != 0 {
                return Err(("pivot into the sandbox root", io::Error::last_os_error()));
            }
            if libc::chdir(c"/".as_ptr()) != 0 {
                return Err(("enter the sandbox root", io::Error::last_os_error()));
            }
            if libc::umount2(c"/.old-root".as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(("detach the host's root", io::Error::last_os_error()));
            }
        }
        let _ = std::fs::remove_dir("/.old-root");
        mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        )
        .map_err(|e| ("make the sandbox root read-only", e))?;
        Ok(())
    }
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(|s| CString::new(s).unwrap_or_default());
    let fstype = fstype.map(|s| CString::new(s).unwrap_or_default());
    let data = data.map(|s| CString::new(s).unwrap_or_default());
    let target = cpath(target);
    // SAFETY: every pointer is a valid C string or NULL.
    let rc = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr() as *const libc::c_void),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bind-mounts `bind.host` at `bind.target`, read-only unless writable,
/// keeping the flags the kernel locks on mounts from a more privileged
/// namespace (a remount that dropped them would be refused).
fn bind_mount(bind: &Bind) -> io::Result<()> {
    let source = match &bind.source {
        Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        None => bind.host.clone(),
    };
    let meta = std::fs::metadata(&source)?;
    if meta.is_dir() {
        std::fs::create_dir_all(&bind.target)?;
    } else {
        if let Some(parent) = bind.target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(&bind.target)?;
    }
    let source = source.to_string_lossy();
    mount(
        Some(&source),
        &bind.target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    if bind.writable {
        return Ok(());
    }
    let target = cpath(&bind.target);
    // SAFETY: statvfs fills a local struct from a valid C string path.
    let locked = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(target.as_ptr(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut flags = 0;
        for (st_flag, ms_flag) in [
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if st.f_flag & st_flag != 0 {
                flags |= ms_flag;
            }
        }
        flags
    };
    mount(
        None,
        &bind.target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | locked,
        None,
    )
}
