//! A private network for `network: none`: a fresh network namespace with
//! only loopback, in which the Runtime API listens at Lambda's own address,
//! `127.0.0.1:9001`. The listening socket is created inside the namespace
//! and handed to the server, which serves the Runtime API on it from
//! outside; nothing else connects the namespace to the host.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Where the Runtime API listens inside a private network.
pub const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";
const RUNTIME_API_PORT: u16 = 9001;

/// Brings `lo` up. In the child, with `CAP_NET_ADMIN` over its namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket and two ioctls on a zero-initialised ifreq
    // whose name is a NUL-terminated "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(sock);
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        use std::os::fd::AsRawFd;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens the Runtime API's listening socket in the current namespace.
pub(crate) fn listen_runtime_api() -> io::Result<OwnedFd> {
    // SAFETY: socket/setsockopt/bind/listen on a socket we own, with a
    // fully initialised sockaddr_in of the size given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = RUNTIME_API_PORT.to_be();
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        if libc::bind(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
            || libc::listen(fd, 64) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }
}
