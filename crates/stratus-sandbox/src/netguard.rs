//! The fence around `network: outbound`: instances that share the host's
//! network may connect anywhere except to the platform itself.
//!
//! Two cgroup BPF programs (`connect4` and `connect6`), attached to the
//! launcher's cgroup v2 group and so in force for every instance below it,
//! refuse with `EPERM`:
//!
//! - a connection to a *reserved* address: the admin listener's, by
//!   address and port, or on every address when it listens on all of them;
//! - a connection to the Runtime API address ([`RUNTIME_API_HOST`]) on any
//!   port but the instance's own. Every outbound instance's Runtime API
//!   listens there, so no instance reaches another's, whenever it was
//!   bound.
//!
//! Only connections made in the host's network namespace are judged: a
//! `network: none` instance has a loopback of its own, where
//! `127.0.0.1:9001` is its Runtime API whatever the host listens on.
//!
//! One hash map holds both: the reserved addresses, and each instance's
//! cgroup id with its own Runtime API port. Tenant code cannot change
//! either: the `bpf` system call is refused in the sandbox.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Where outbound instances' Runtime APIs listen: an address of the
/// loopback network that nothing else uses.
pub const RUNTIME_API_HOST: Ipv4Addr = Ipv4Addr::new(127, 90, 0, 1);

/// How many instances and reserved addresses the map holds.
const MAP_ENTRIES: u32 = 65_536;
/// Marks a reserved address's key; instances' keys are cgroup ids, far
/// below it.
const RESERVED: u64 = 1 << 48;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The loaded programs and their map, while the launcher lives.
pub(crate) struct NetGuard {
    map: OwnedFd,
    _programs: Vec<OwnedFd>,
}

impl NetGuard {
    /// Loads the programs and attaches them to the cgroup v2 group `group`.
    pub fn attach(group: &Path) -> Result<NetGuard, String> {
        let map = bpf_fd(BPF_MAP_CREATE, &{
            let mut attr = Attr::default();
            attr.u32(0, BPF_MAP_TYPE_HASH);
            attr.u32(4, 8); // key: u64
            attr.u32(8, 4); // value: u32
            attr.u32(12, MAP_ENTRIES);
            attr
        })
        .map_err(|e| format!("cannot create a BPF map: {e}"))?;
        let cgroup = std::fs::File::open(group)
            .map_err(|e| format!("cannot open {}: {e}", group.display()))?;
        let netns = netns_cookie();
        let mut programs = Vec::new();
        for (attach_type, insns) in [
            (
                BPF_CGROUP_INET4_CONNECT,
                program(Family::V4, map.as_raw_fd(), netns),
            ),
            (
                BPF_CGROUP_INET6_CONNECT,
                program(Family::V6, map.as_raw_fd(), netns),
            ),
        ] {
            let prog = load(&insns, attach_type)?;
            let mut attr = Attr::default();
            attr.u32(0, cgroup.as_raw_fd() as u32);
            attr.u32(4, prog.as_raw_fd() as u32);
            attr.u32(8, attach_type);
            attr.u32(12, BPF_F_ALLOW_MULTI);
            bpf(BPF_PROG_ATTACH, &attr)
                .map_err(|e| format!("cannot attach a BPF program to {}: {e}", group.display()))?;
            programs.push(prog);
        }
        Ok(NetGuard {
            map,
            _programs: programs,
        })
    }

    /// Refuses connections to a listener of the platform at `addr`.
    pub fn reserve(&self, addr: SocketAddr) -> io::Result<()> {
        let ip = match addr.ip() {
            ip if ip.is_unspecified() => 0,
            IpAddr::V4(ip) => u32::from_ne_bytes(ip.octets()),
            IpAddr::V6(ip) if ip.is_loopback() => u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets()),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => u32::from_ne_bytes(v4.octets()),
                // Other IPv6 addresses are not told apart: refuse the port
                // on every address.
                None => 0,
            },
        };
        let key = RESERVED | (u64::from(ip) << 16) | u64::from(addr.port().to_be());
        self.update(key, 1)
    }

    /// Lets the instance in cgroup `cgroup_id` reach its own Runtime API.
    pub fn admit(&self, cgroup_id: u64, runtime_api_port: u16) -> io::Result<()> {
        self.update(cgroup_id, u32::from(runtime_api_port.to_be()))
    }

    /// Forgets an instance that has ended.
    pub fn forget(&self, cgroup_id: u64) {
        let mut attr = Attr::default();
        attr.u32(0, self.map.as_raw_fd() as u32);
        attr.u64(8, &cgroup_id as *const u64 as u64);
        let _ = bpf(BPF_MAP_DELETE_ELEM, &attr);
    }

    fn update(&self, key: u64, value: u32) -> io::Result<()> {
        let mut attr = Attr::default();
        attr.u32(0, self.map.as_raw_fd() as u32);
        attr.u64(8, &key as *const u64 as u64);
        attr.u64(16, &value as *const u32 as u64);
        bpf(BPF_MAP_UPDATE_ELEM, &attr).map(drop)
    }
}

/// A `union bpf_attr`, zeroed past the fields set.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Default for Attr {
    fn default() -> Attr {
        Attr([0; 128])
    }
}

impl Attr {
    fn u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn u64(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &Attr) -> io::Result<i64> {
    // SAFETY: attr is a live 128-byte buffer; pointers in it point at
    // values that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn bpf_fd(cmd: libc::c_long, attr: &Attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: the call returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn load(insns: &[Insn], attach_type: u32) -> Result<OwnedFd, String> {
    let license = c"Dual MIT/GPL";
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = Attr::default();
    attr.u32(0, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
    attr.u32(4, insns.len() as u32);
    attr.u64(8, insns.as_ptr() as u64);
    attr.u64(16, license.as_ptr() as u64);
    attr.u32(24, 1); // log level
    attr.u32(28, log.len() as u32);
    attr.u64(32, log.as_mut_ptr() as u64);
    attr.u32(68, attach_type);
    bpf_fd(BPF_PROG_LOAD, &attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let log = String::from_utf8_lossy(&log[..end]);
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        format!("the kernel refused the BPF program: {e} {last}")
    })
}

/// One BPF instruction.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used below.
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const MOV32_IMM: u8 = 0xb4;
const LDX_W: u8 = 0x61;
const STX_DW: u8 = 0x7b;
const LSH64_IMM: u8 = 0x67;
const OR64_REG: u8 = 0x4f;
const ADD64_IMM: u8 = 0x07;
const JEQ_IMM: u8 = 0x15;
const JNE_IMM: u8 = 0x55;
const JNE_REG: u8 = 0x5d;
const JA: u8 = 0x05;
const LD_IMM64: u8 = 0x18;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP: i32 = 1;
const HELPER_CURRENT_CGROUP_ID: i32 = 80;
const HELPER_NETNS_COOKIE: i32 = 122;

// Offsets in `struct bpf_sock_addr`.
const USER_IP4: i16 = 4;
const USER_IP6: i16 = 8;
const USER_PORT: i16 = 24;

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// Builds a program with labels resolved at the end.
struct Asm {
    insns: Vec<Insn>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(insn(code, dst, src, off, imm));
    }

    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, label: &'static str) {
        self.fixups.push((self.insns.len(), label));
        self.op(code, dst, src, 0, imm);
    }

    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.insns.len()));
    }

    fn map(&mut self, dst: u8, fd: i32) {
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd);
        self.op(0, 0, 0, 0, 0);
    }

    /// r0 = lookup(map, the u64 in register `key`); clobbers r1–r5.
    fn lookup(&mut self, map_fd: i32, key: u8) {
        self.op(STX_DW, 10, key, -8, 0);
        self.map(1, map_fd);
        self.op(MOV64_REG, 2, 10, 0, 0);
        self.op(ADD64_IMM, 2, 0, 0, -8);
        self.op(CALL, 0, 0, 0, HELPER_MAP_LOOKUP);
    }

    /// Denies when r9, marked as a reserved address's key, is in the map.
    fn deny_if_reserved(&mut self, map_fd: i32) {
        self.op(MOV64_IMM, 1, 0, 0, 1);
        self.op(LSH64_IMM, 1, 0, 0, 48);
        self.op(OR64_REG, 9, 1, 0, 0);
        self.lookup(map_fd, 9);
        self.jump(JNE_IMM, 0, 0, 0, "deny");
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, name) in &self.fixups {
            let target = self
                .labels
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, i)| *i)
                .expect("every label is defined");
            self.insns[*at].off = (target as isize - *at as isize - 1) as i16;
        }
        self.insns
    }
}

/// The cookie of this process's network namespace, where the kernel can
/// say (Linux 5.14+).
fn netns_cookie() -> Option<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a socket we close at once, and getsockopt into a local u64
    // of the size given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        );
        (rc == 0).then_some(cookie)
    }
}

/// The program for one address family: r7 holds the destination IPv4
/// address as the kernel stores it (IPv6 loopback counts as 127.0.0.1,
/// and mapped IPv4 addresses as themselves), r8 the port. With `netns`,
/// connections made in other network namespaces pass unjudged.
fn program(family: Family, map_fd: i32, netns: Option<u64>) -> Vec<Insn> {
    let loopback = u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets()) as i32;
    let runtime_api = u32::from_ne_bytes(RUNTIME_API_HOST.octets()) as i32;
    let mut a = Asm {
        insns: Vec::new(),
        fixups: Vec::new(),
        labels: Vec::new(),
    };
    a.op(MOV64_REG, 6, 1, 0, 0);
    if let Some(cookie) = netns {
        a.op(CALL, 0, 0, 0, HELPER_NETNS_COOKIE);
        a.op(LD_IMM64, 1, 0, 0, cookie as u32 as i32);
        a.op(0, 0, 0, 0, (cookie >> 32) as u32 as i32);
        a.jump(JNE_REG, 0, 1, 0, "allow");
        a.op(MOV64_REG, 1, 6, 0, 0);
    }
    a.op(LDX_W, 8, 6, USER_PORT, 0);
    match family {
        Family::V4 => a.op(LDX_W, 7, 6, USER_IP4, 0),
        Family::V6 => {
            // No IPv4 address stands for a native IPv6 one.
            a.op(MOV32_IMM, 7, 0, 0, -1);
            a.op(LDX_W, 1, 6, USER_IP6, 0);
            a.op(LDX_W, 2, 6, USER_IP6 + 4, 0);
            a.op(OR64_REG, 1, 2, 0, 0);
            a.jump(JNE_IMM, 1, 0, 0, "addressed");
            a.op(LDX_W, 3, 6, USER_IP6 + 8, 0);
            a.op(LDX_W, 4, 6, USER_IP6 + 12, 0);
            // ::1
            a.jump(JNE_IMM, 3, 0, 0, "mapped");
            a.jump(JNE_IMM, 4, 0, 1 << 24, "addressed");
            a.op(MOV32_IMM, 7, 0, 0, loopback);
            a.jump(JA, 0, 0, 0, "addressed");
            // ::ffff:a.b.c.d
            a.label("mapped");
            a.op(
                MOV32_IMM,
                5,
                0,
                0,
                u32::from_ne_bytes([0, 0, 0xff, 0xff]) as i32,
            );
            a.jump(JNE_REG, 3, 5, 0, "addressed");
            a.op(MOV64_REG, 7, 4, 0, 0);
            a.label("addressed");
        }
    }
    // A reserved address and port?
    a.op(MOV64_REG, 9, 7, 0, 0);
    a.op(LSH64_IMM, 9, 0, 0, 16);
    a.op(OR64_REG, 9, 8, 0, 0);
    a.deny_if_reserved(map_fd);
    // A port reserved on every address?
    a.op(MOV64_REG, 9, 8, 0, 0);
    a.deny_if_reserved(map_fd);
    // A Runtime API: only the instance's own.
    a.op(MOV32_IMM, 1, 0, 0, runtime_api);
    a.jump(JNE_REG, 7, 1, 0, "allow");
    a.op(CALL, 0, 0, 0, HELPER_CURRENT_CGROUP_ID);
    a.op(MOV64_REG, 9, 0, 0, 0);
    a.lookup(map_fd, 9);
    a.jump(JEQ_IMM, 0, 0, 0, "deny");
    a.op(LDX_W, 1, 0, 0, 0);
    a.jump(JNE_REG, 1, 8, 0, "deny");
    a.label("allow");
    a.op(MOV64_IMM, 0, 0, 0, 1);
    a.op(EXIT, 0, 0, 0, 0);
    a.label("deny");
    a.op(MOV64_IMM, 0, 0, 0, 0);
    a.op(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// The cgroup id of a cgroup v2 group: its directory's inode number.
pub(crate) fn cgroup_id(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(dir)?.ino())
}
