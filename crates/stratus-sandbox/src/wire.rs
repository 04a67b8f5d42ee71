//! The launcher protocol: JSON messages over a `SOCK_SEQPACKET` socket pair,
//! with the output pipes of a new process passed as `SCM_RIGHTS`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use crate::{Activation, ExitStatus, Isolation, ProcessSpec};

/// Largest message; a spec with a large environment fits.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Spawn {
        id: u64,
        spec: ProcessSpec,
    },
    Activate {
        id: u64,
        pid: u32,
        activation: Activation,
    },
    /// Listeners of the platform that outbound instances may not reach.
    Reserve {
        id: u64,
        addresses: Vec<std::net::SocketAddr>,
    },
    /// Endpoints of the platform that every instance may reach, whatever
    /// its egress rule; replaces the earlier set.
    Platform {
        id: u64,
        addresses: Vec<std::net::SocketAddr>,
    },
    /// The destinations of an egress policy; replaces the earlier set.
    Egress {
        id: u64,
        policy: u32,
        addresses: Vec<std::net::SocketAddr>,
    },
}

/// What a made process reads on activation.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ActivationMessage {
    pub env: Vec<(String, String)>,
    pub cwd: std::path::PathBuf,
    pub program: std::path::PathBuf,
    #[serde(default)]
    pub args: Option<Vec<String>>,
}

/// What the launcher runs with.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Facts {
    pub isolation: Isolation,
    /// Why this isolation.
    pub reason: String,
    /// Which resource limits are enforced.
    pub limits: String,
    /// Whether code can be attached to a sandbox made without it.
    pub prestart: bool,
    /// What fences the network of instances that share the host's.
    pub network: String,
    /// Whether services' binds are moved to their service addresses.
    #[serde(default)]
    pub service_fence: bool,
    /// Whether instances' connections can be narrowed to egress rules.
    #[serde(default)]
    pub egress_fence: bool,
    /// Whether a listen on every address at a port the kernel picks is
    /// refused.
    #[serde(default)]
    pub listen_fence: bool,
    /// What Landlock adds.
    pub landlock: String,
    /// Whether instances have a v2 group to be frozen in.
    #[serde(default)]
    pub freezer: bool,
}

/// Why the launcher will not run with the isolation asked for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Refusal {
    /// `--isolation` as given.
    pub requested: String,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Sent once, first: what the launcher runs with.
    Ready(Facts),
    /// Sent instead of `Ready`, and the launcher exits.
    Refused(Refusal),
    /// Carries the stdout and stderr read ends.
    Spawned {
        id: u64,
        pid: u32,
        /// The instance's `cgroup.freeze`, where it has one.
        #[serde(default)]
        freezer: Option<std::path::PathBuf>,
        /// Made from a template rather than started afresh.
        #[serde(default)]
        from_template: bool,
    },
    /// An activation or reservation took effect.
    Done {
        id: u64,
    },
    Failed {
        id: u64,
        error: String,
    },
    Exited {
        pid: u32,
        status: ExitStatus,
    },
}

/// Sends one message with optional file descriptors.
pub(crate) fn send(sock: RawFd, message: &impl Serialize, fds: &[RawFd]) -> io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; if fds.is_empty() { 0 } else { space }];
    // SAFETY: msghdr is plain data; zeroed is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is CMSG_SPACE(fd_bytes) long, so the
        // first header and its data fit in it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one message and the file descriptors that came with it.
/// `Ok(None)` means the peer closed the socket.
pub(crate) fn recv<T: for<'de> Deserialize<'de>>(
    sock: RawFd,
    flags: i32,
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    // One buffer per thread, made once: zeroing a fresh megabyte for every
    // message cost the launcher a copy of each of its pages, which it
    // shares copy-on-write with every sandbox holder it forked.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_MESSAGE]);
    }
    BUF.with_borrow_mut(|buf| recv_into(buf, sock, flags))
}

fn recv_into<T: for<'de> Deserialize<'de>>(
    buf: &mut [u8],
    sock: RawFd,
    flags: i32,
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u8; 128];
    // SAFETY: msghdr is plain data; zeroed is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.len() as _;
    let n = loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(sock, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg; CMSG_* walk the control buffer it wrote.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if n == 0 {
        return Ok(None);
    }
    let message = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
    Ok(Some((message, fds)))
}
