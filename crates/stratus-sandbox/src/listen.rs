//! The listen fence where the kernel takes no BPF LSM program: a seccomp
//! user notification.
//!
//! An instance on the host's network runs under a filter that hands each
//! of its `listen` calls to the launcher ([`seccomp::program`] with
//! `listen_notify`). The launcher takes the socket out of the caller's
//! descriptor table (`pidfd_getfd`), reads where it is bound, and either
//! refuses the call (`EPERM`) or makes it itself, on that very socket, and
//! answers with its result. The program never runs `listen` on its own,
//! so no other thread of it can swap the descriptor between the check and
//! the call: what is judged is what listens.
//!
//! What is refused is what the BPF LSM program refuses
//! ([`crate::netguard`]): a socket on every address (`0.0.0.0`, `::` or
//! `::ffff:0.0.0.0`), which at `listen` can only be one never bound, or
//! bound to port 0, since the bind hooks move binds on every address at a
//! fixed port. The kernel would give it a port on every address that no
//! bind hook sees.
//!
//! [`seccomp::program`]: crate::seccomp::program

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Whether this kernel can hand `listen` calls to the launcher, or why not.
pub(crate) fn supported() -> Result<(), String> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: sizes is a valid struct for the kernel to fill.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if rc != 0 {
        return Err(format!(
            "the kernel has no seccomp user notification: {}",
            io::Error::last_os_error()
        ));
    }
    if usize::from(sizes.seccomp_notif) != std::mem::size_of::<libc::seccomp_notif>()
        || usize::from(sizes.seccomp_notif_resp) != std::mem::size_of::<libc::seccomp_notif_resp>()
    {
        return Err("the kernel's seccomp notifications are not the size this build knows".into());
    }
    // SAFETY: with an invalid descriptor the call only reports an error.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0) };
    if rc < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        return Err("the kernel has no pidfd_getfd".into());
    }
    Ok(())
}

/// Where a socket is bound, as far as the fence cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    /// Not an Internet socket.
    Other,
}

/// Whether a socket bound at `local` may listen.
pub(crate) fn allowed(local: Local) -> bool {
    match local {
        Local::V4(ip) => !ip.is_unspecified(),
        Local::V6(ip) => !ip.is_unspecified() && ip.to_ipv4_mapped() != Some(Ipv4Addr::UNSPECIFIED),
        Local::Other => true,
    }
}

/// Where the socket `fd` is bound.
fn local(fd: RawFd) -> io::Result<Local> {
    // SAFETY: storage is large enough for any socket address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len are valid for getsockname to fill.
    let rc = unsafe {
        libc::getsockname(
            fd,
            &mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in for this family.
            let sin = unsafe { &*(&storage as *const _ as *const libc::sockaddr_in) };
            Local::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel filled a sockaddr_in6 for this family.
            let sin6 = unsafe { &*(&storage as *const _ as *const libc::sockaddr_in6) };
            Local::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
        }
        _ => Local::Other,
    })
}

/// Answers one `listen` waiting on the notification descriptor
/// `listener`. A caller that died in the meantime, or a notification
/// already gone, is no error: there is nobody left to answer.
pub(crate) fn answer(listener: &OwnedFd) -> io::Result<()> {
    // SAFETY: the kernel wants the struct zeroed; it is plain data.
    let mut request: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: request is a valid seccomp_notif for the kernel to fill.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut request as *mut libc::seccomp_notif,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT | libc::EINTR) => Ok(()),
            _ => Err(err),
        };
    }
    let outcome = judge(listener, &request);
    let (val, error) = match outcome {
        Ok(val) => (val, 0),
        Err(errno) => (0, -errno),
    };
    let mut response = libc::seccomp_notif_resp {
        id: request.id,
        val,
        error,
        flags: 0,
    };
    // SAFETY: response is a valid seccomp_notif_resp.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut response as *mut libc::seccomp_notif_resp,
        )
    };
    if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT) {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The process (thread group) that thread `tid` belongs to. `pidfd_open`
/// takes only a process's id; the notification names the thread that
/// called. Checked against the notification after the pidfd is open, as
/// the pid is.
fn thread_group_of(tid: u32) -> Option<libc::pid_t> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|tgid| tgid.trim().parse().ok())
}

/// The result of the `listen` call `request`: its return value, or the
/// errno it fails with.
fn judge(listener: &OwnedFd, request: &libc::seccomp_notif) -> Result<i64, i32> {
    let errno = |e: io::Error| e.raw_os_error().unwrap_or(libc::EPERM);
    if request.data.nr != libc::SYS_listen as i32 {
        return Err(libc::ENOSYS);
    }
    // The caller may be any thread of its process (a runtime's inspector,
    // a Go program's scheduler): the pidfd is its process's, which shares
    // its descriptor table.
    let process = thread_group_of(request.pid).unwrap_or(request.pid as libc::pid_t);
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, process, 0) };
    if pidfd < 0 {
        return Err(errno(io::Error::last_os_error()));
    }
    // SAFETY: pidfd_open returned a fresh descriptor that we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // The pid names the caller only while its notification is pending: a
    // pid reused after it died would be another process.
    let mut id = request.id;
    // SAFETY: id is a valid u64.
    if unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &mut id as *mut u64,
        )
    } != 0
    {
        return Err(libc::ESRCH);
    }
    let target = request.data.args[0] as i32;
    // SAFETY: pidfd_getfd copies a descriptor of the caller's; flags 0.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    if fd < 0 {
        return Err(errno(io::Error::last_os_error()));
    }
    // SAFETY: pidfd_getfd returned a fresh descriptor that we now own.
    let socket = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    if !allowed(local(socket.as_raw_fd()).map_err(errno)?) {
        return Err(libc::EPERM);
    }
    let backlog = request.data.args[1] as i32;
    // SAFETY: listen on a descriptor we own, which shares the caller's
    // socket.
    if unsafe { libc::listen(socket.as_raw_fd(), backlog) } != 0 {
        return Err(errno(io::Error::last_os_error()));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sockets_on_every_address_are_refused() {
        assert!(!allowed(Local::V4(Ipv4Addr::UNSPECIFIED)));
        assert!(!allowed(Local::V6(Ipv6Addr::UNSPECIFIED)));
        assert!(!allowed(Local::V6(Ipv4Addr::UNSPECIFIED.to_ipv6_mapped())));
        assert!(allowed(Local::V4(Ipv4Addr::LOCALHOST)));
        assert!(allowed(Local::V4(Ipv4Addr::new(127, 91, 0, 1))));
        assert!(allowed(Local::V6(Ipv6Addr::LOCALHOST)));
        assert!(allowed(Local::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())));
        assert!(allowed(Local::Other));
    }
}
