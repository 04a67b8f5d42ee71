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
//!   bound;
//! - a connection to the service network ([`SERVICE_NET`]) but to the
//!   instance's own service address.
//!
//! A connection to the unspecified address is judged as one to
//! `127.0.0.1`, for every rule above. The kernel sends `::` to `::1` (or
//! to `::ffff:127.0.0.1` from a socket bound to an IPv4-mapped address),
//! and `::1` counts as `127.0.0.1`, as it does when an address is
//! reserved. It sends `0.0.0.0` and `::ffff:0.0.0.0` to the address the
//! socket is bound to, and to `127.0.0.1` only when it is bound to none:
//! so the programs also rewrite them to `127.0.0.1` (`::ffff:127.0.0.1`),
//! where they judged them. Otherwise a socket bound to
//! [`RUNTIME_API_HOST`] at port 0 would reach every instance's Runtime API
//! at `0.0.0.0`.
//!
//! Two more (`bind4` and `bind6`) fence services, instances that listen:
//! every bind a service makes to a port with a stream (TCP) socket is
//! moved to its own address in [`SERVICE_NET`], whatever address it asked
//! for, so only processes outside the launcher's group (the gateway)
//! reach it, and no other host does: the address is loopback's. An IPv6
//! bind becomes a bind to the IPv4-mapped form of that address, so a
//! dual-stack listener (Node's default, `::`) still takes the gateway's
//! IPv4 connections. A bind to port 0 (a client's source port) is left
//! where it asked: moved to loopback, it could not reach out. No
//! instance binds an address of [`SERVICE_NET`] but its own, so none can
//! listen where the gateway expects a service.
//!
//! Nor on every address: a listener on `0.0.0.0:P` (or a dual-stack one
//! on `[::]:P`) would make a service's bind of its address at port `P`
//! fail with `EADDRINUSE`, and whenever the service's own listener is
//! gone (a crash, a restart), take the connections the gateway makes to
//! it. So an instance that is not a service (a function, or a process not
//! yet activated, which has no entry) that binds a port on every address
//! (`0.0.0.0`, `::` or `::ffff:0.0.0.0`) gets loopback instead:
//! `127.0.0.1`, or for an IPv6 socket `::ffff:127.0.0.1`, like services,
//! so that a dual-stack listener still takes IPv4 connections from
//! `127.0.0.1` (it no longer takes IPv6 ones, to `::1`; an IPv6-only
//! socket fails with `EINVAL`, which `::1` would have spared it, but a
//! dual-stack one would then lose IPv4, and the program cannot tell the
//! two apart). Its binds to other addresses, and to port 0, stay where
//! they asked.
//!
//! Datagram (UDP) sockets bound to a fixed port on every address, a
//! service's as well as a function's, are moved to loopback
//! (`127.0.0.1`, or `::ffff:127.0.0.1` for an IPv6 socket), so that no
//! other host reaches them; the gateway proxies no UDP. Binds to port 0
//! (a client's) and to a given address stay where they asked. Nobody
//! binds another's address of [`SERVICE_NET`], with any socket. What the
//! bind hooks do not see are implicit binds: `listen` on a socket never
//! bound, or bound to port 0, listens on every address at a port the
//! kernel picks. A BPF LSM program on `socket_listen` ([`listen`]) refuses
//! those where the kernel takes it; elsewhere the launcher judges each
//! listen ([`crate::listen`]).
//!
//! Only connections and binds made in the host's network namespace are
//! judged: a `network: none` instance has a loopback of its own, where
//! `127.0.0.1:9001` is its Runtime API whatever the host listens on.
//!
//! One hash map holds it all: the reserved addresses, and each instance's
//! cgroup id with its own Runtime API port and service address. Tenant
//! code cannot change either: the `bpf` system call is refused in the
//! sandbox.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Where outbound instances' Runtime APIs listen: an address of the
/// loopback network that nothing else uses.
pub const RUNTIME_API_HOST: Ipv4Addr = Ipv4Addr::new(127, 90, 0, 1);

/// Where services listen when the fence is in force: one address of this
/// loopback network per instance, `/16` ([`SERVICE_PREFIX`]).
pub const SERVICE_NET: Ipv4Addr = Ipv4Addr::new(127, 91, 0, 0);
/// The length of [`SERVICE_NET`]'s prefix.
pub const SERVICE_PREFIX: u8 = 16;
/// How many addresses [`service_addr`] hands out before it comes round
/// again: 256 blocks of 254 (no `.0` or `.255`, which read as network and
/// broadcast addresses to people and some programs).
pub const SERVICE_ADDRS: u32 = 256 * 254;

/// The `n`th service address, taken modulo [`SERVICE_ADDRS`]:
/// `127.91.0.1`, `127.91.0.2`, ..., `127.91.0.254`, `127.91.1.1`, ...
///
/// Two live instances must never share one: each could reach the other,
/// and, listening on the same port with `SO_REUSEPORT` (tenants share a
/// host uid), share its connections. A counter that comes round must skip
/// addresses still held.
pub fn service_addr(n: u32) -> Ipv4Addr {
    let n = n % SERVICE_ADDRS;
    let [a, b, _, _] = SERVICE_NET.octets();
    Ipv4Addr::new(a, b, (n / 254) as u8, (n % 254 + 1) as u8)
}

/// Whether a TCP socket listens at exactly `addr` in this network
/// namespace (an IPv4 socket, or an IPv6 one bound to the IPv4-mapped
/// address), as `/proc/net/tcp` and `/proc/net/tcp6` say.
///
/// Under the fence only the service that owns an address of
/// [`SERVICE_NET`] can listen there, and a connection goes to the most
/// specific listener. But with no listener at `addr`, a connection to it
/// reaches any listener on `0.0.0.0` or `::` at that port: any process's
/// of the host's outside the fence, and a tenant's on a port the kernel
/// picked (a bind to port 0, or `listen` with no bind), which the fence
/// leaves on every address. A readiness check that only connects could
/// take it for the service. Check this first.
pub fn service_listening(addr: SocketAddrV4) -> bool {
    let (ip, port) = (u32::from_ne_bytes(addr.ip().octets()), addr.port());
    // The kernel prints each 32-bit word of the address as it lies in
    // memory, then the port as a number.
    let v4 = format!("{ip:08X}:{port:04X}");
    let v6 = format!("0000000000000000{MAPPED:08X}{ip:08X}:{port:04X}");
    [("/proc/net/tcp", v4), ("/proc/net/tcp6", v6)]
        .iter()
        .any(|(file, local)| {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .any(|line| {
                    let mut fields = line.split_whitespace().skip(1);
                    let (Some(at), Some(_remote), Some(state)) =
                        (fields.next(), fields.next(), fields.next())
                    else {
                        return false;
                    };
                    // 0A: TCP_LISTEN.
                    at == local && state == "0A"
                })
        })
}

/// How many instances and reserved addresses the map holds.
const MAP_ENTRIES: u32 = 65_536;
/// How many destinations the egress map holds, every policy's and the
/// platform's together.
pub const MAX_EGRESS_DESTINATIONS: u32 = 65_536;
/// The largest egress policy number: it shares a word with two flags.
pub const MAX_EGRESS_POLICY: u32 = (1 << 24) - 1;
/// In [`Entry::egress`]: only the policy's destinations (and the
/// platform's) are reachable.
const EGRESS_LISTED: u32 = 1 << 31;
/// In [`Entry::egress`]: anywhere on loopback is reachable.
const EGRESS_LOOPBACK: u32 = 1 << 30;
/// Marks a reserved address's key; instances' keys are cgroup ids, far
/// below it.
const RESERVED: u64 = 1 << 48;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_INET4_BIND: u32 = 8;
const BPF_CGROUP_INET6_BIND: u32 = 9;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET6_CONNECT: u32 = 11;
const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_PROG_TYPE_LSM: u32 = 29;
const BPF_LSM_CGROUP: u32 = 43;

/// The loaded programs and their maps, while the launcher lives.
pub(crate) struct NetGuard {
    map: OwnedFd,
    /// Egress destinations: [`AllowKey`]s, of policies and (policy 0) of
    /// the platform.
    allow: OwnedFd,
    /// What `allow` holds, by policy, to replace a policy's set.
    allowed: std::cell::RefCell<std::collections::HashMap<u32, HashSet<AllowKey>>>,
    _programs: Vec<OwnedFd>,
    /// Whether `bind4` and `bind6` are in force, or why not.
    services: Result<(), String>,
    /// Whether `sendmsg4` and `sendmsg6` are in force, so that egress
    /// rules hold for datagrams too, or why not.
    egress: Result<(), String>,
    /// Whether `listen` on every address is refused, or why not.
    listen: Result<(), String>,
}

/// A key of the egress map: a policy's destination.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct AllowKey {
    /// 0: the platform's, reachable under every policy.
    policy: u32,
    /// As `user_port` holds it.
    port: u32,
    /// The IPv6 address, IPv4 ones in their mapped form (`::ffff:a.b.c.d`),
    /// as the kernel stores it.
    addr: [u8; 16],
}

impl AllowKey {
    fn new(policy: u32, addr: SocketAddr) -> AllowKey {
        let ip = match addr.ip() {
            IpAddr::V4(ip) => ip.to_ipv6_mapped(),
            // As the programs judge it: `::1` as 127.0.0.1, mapped
            // addresses as themselves.
            IpAddr::V6(ip) if ip.is_loopback() => Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
            IpAddr::V6(ip) => ip,
        };
        AllowKey {
            policy,
            port: u32::from(addr.port().to_be()),
            addr: ip.octets(),
        }
    }
}

/// A map value: what one instance may reach, or (any value) a reserved
/// address. Both fields as the programs compare them, in network order.
#[repr(C)]
struct Entry {
    /// The port of its Runtime API at [`RUNTIME_API_HOST`], in the low 16
    /// bits as `user_port` holds it; 0: none.
    runtime_api_port: u32,
    /// Its service address; 0: not a service.
    service_ip: u32,
    /// Its egress policy with [`EGRESS_LISTED`] and [`EGRESS_LOOPBACK`];
    /// 0: anywhere.
    egress: u32,
}

impl NetGuard {
    /// Loads the programs and attaches them to the cgroup v2 group `group`.
    /// The connect programs must take; the bind programs may not, and then
    /// services are unfenced ([`NetGuard::services`]).
    pub fn attach(group: &Path) -> Result<NetGuard, String> {
        let map = bpf_fd(BPF_MAP_CREATE, &{
            let mut attr = Attr::default();
            attr.u32(0, BPF_MAP_TYPE_HASH);
            attr.u32(4, 8); // key: u64
            attr.u32(8, std::mem::size_of::<Entry>() as u32);
            attr.u32(12, MAP_ENTRIES);
            attr
        })
        .map_err(|e| format!("cannot create a BPF map: {e}"))?;
        let allow = bpf_fd(BPF_MAP_CREATE, &{
            let mut attr = Attr::default();
            attr.u32(0, BPF_MAP_TYPE_HASH);
            attr.u32(4, std::mem::size_of::<AllowKey>() as u32);
            attr.u32(8, 4);
            attr.u32(12, MAX_EGRESS_DESTINATIONS);
            attr
        })
        .map_err(|e| format!("cannot create a BPF map: {e}"))?;
        let cgroup = std::fs::File::open(group)
            .map_err(|e| format!("cannot open {}: {e}", group.display()))?;
        let netns = netns_cookie();
        let maps = (map.as_raw_fd(), allow.as_raw_fd());
        let map_fd = maps.0;
        let mut programs = Vec::new();
        for (attach_type, insns) in [
            (BPF_CGROUP_INET4_CONNECT, connect(Family::V4, maps, netns)),
            (BPF_CGROUP_INET6_CONNECT, connect(Family::V6, maps, netns)),
        ] {
            let prog = load(&insns, attach_type)?;
            attach(&cgroup, &prog, attach_type)
                .map_err(|e| format!("cannot attach a BPF program to {}: {e}", group.display()))?;
            programs.push(prog);
        }
        // Both or neither: a service fenced on one family only would be
        // reachable on the other.
        let services = (|| {
            let bind4 = load(&bind(Family::V4, map_fd, netns), BPF_CGROUP_INET4_BIND)?;
            let bind6 = load(&bind(Family::V6, map_fd, netns), BPF_CGROUP_INET6_BIND)?;
            attach(&cgroup, &bind4, BPF_CGROUP_INET4_BIND)
                .map_err(|e| format!("cannot attach a BPF program: {e}"))?;
            if let Err(e) = attach(&cgroup, &bind6, BPF_CGROUP_INET6_BIND) {
                detach(&cgroup, &bind4, BPF_CGROUP_INET4_BIND);
                return Err(format!("cannot attach a BPF program: {e}"));
            }
            programs.extend([bind4, bind6]);
            Ok(())
        })();
        // Datagrams sent without a connect are judged as connections are.
        let egress = (|| {
            let send4 = load(&connect(Family::V4, maps, netns), BPF_CGROUP_UDP4_SENDMSG)?;
            let send6 = load(&connect(Family::V6, maps, netns), BPF_CGROUP_UDP6_SENDMSG)?;
            attach(&cgroup, &send4, BPF_CGROUP_UDP4_SENDMSG)
                .map_err(|e| format!("cannot attach a BPF program: {e}"))?;
            if let Err(e) = attach(&cgroup, &send6, BPF_CGROUP_UDP6_SENDMSG) {
                detach(&cgroup, &send4, BPF_CGROUP_UDP4_SENDMSG);
                return Err(format!("cannot attach a BPF program: {e}"));
            }
            programs.extend([send4, send6]);
            Ok(())
        })();
        // Only where binds on every address are moved: otherwise every
        // listener there would be refused.
        let listen = match &services {
            Err(_) => Err("binds are not fenced".to_owned()),
            Ok(()) => {
                (|| {
                    let cookie = netns
                        .ok_or("the kernel does not say which network namespace a socket is in")?;
                    let btf = crate::btf::Btf::vmlinux()
                        .map_err(|e| format!("cannot read the kernel's BTF: {e}"))?;
                    let (insns, hook) = listen(&btf, cookie)?;
                    let prog = load_as(BPF_PROG_TYPE_LSM, &insns, BPF_LSM_CGROUP, hook)
                        .map_err(|e| format!("{e} (a BPF LSM program, attached by BTF)"))?;
                    attach(&cgroup, &prog, BPF_LSM_CGROUP).map_err(|e| {
                    format!("cannot attach a BPF LSM program (is `bpf` among the kernel's LSMs?): {e}")
                })?;
                    programs.push(prog);
                    Ok(())
                })()
            }
        };
        Ok(NetGuard {
            map,
            allow,
            allowed: Default::default(),
            _programs: programs,
            services,
            egress,
            listen,
        })
    }

    /// Whether a `listen` on every address (a socket never bound, or bound
    /// to port 0) is refused, or why not.
    pub fn listen(&self) -> Result<(), &str> {
        self.listen.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Whether egress rules hold, or why not.
    pub fn egress(&self) -> Result<(), &str> {
        self.egress.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Makes `addresses` the destinations of egress policy `policy` (0: the
    /// platform's, which every policy reaches).
    pub fn set_egress(&self, policy: u32, addresses: &[SocketAddr]) -> io::Result<()> {
        let new: HashSet<AllowKey> = addresses
            .iter()
            .map(|addr| AllowKey::new(policy, *addr))
            .collect();
        let mut allowed = self.allowed.borrow_mut();
        let old = allowed.entry(policy).or_default();
        let added: Vec<AllowKey> = new.difference(old).copied().collect();
        for key in added {
            map_update(&self.allow, &key, &1u32)?;
            old.insert(key);
        }
        let gone: Vec<AllowKey> = old.difference(&new).copied().collect();
        for key in gone {
            map_delete(&self.allow, &key);
            old.remove(&key);
        }
        Ok(())
    }

    /// Whether services' binds are moved to their own addresses, or why
    /// not.
    pub fn services(&self) -> Result<(), &str> {
        self.services.as_ref().map(|_| ()).map_err(String::as_str)
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
        self.update(
            key,
            &Entry {
                runtime_api_port: 1,
                service_ip: 0,
                egress: 0,
            },
        )
    }

    /// Lets the instance in cgroup `cgroup_id` reach its own Runtime API,
    /// makes it a service that listens at `service` (which must be in
    /// [`SERVICE_NET`]), and holds it to `egress`.
    pub fn admit(
        &self,
        cgroup_id: u64,
        runtime_api_port: Option<u16>,
        service: Option<Ipv4Addr>,
        egress: Option<crate::EgressRule>,
    ) -> io::Result<()> {
        let egress = match egress {
            None => 0,
            Some(rule) if rule.policy == 0 || rule.policy > MAX_EGRESS_POLICY => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "egress policy {} is not between 1 and {MAX_EGRESS_POLICY}",
                        rule.policy
                    ),
                ));
            }
            Some(rule) => {
                if let Err(reason) = self.egress() {
                    return Err(io::Error::other(format!(
                        "egress rules cannot be enforced here: {reason}"
                    )));
                }
                rule.policy
                    | if rule.listed { EGRESS_LISTED } else { 0 }
                    | if rule.loopback { EGRESS_LOOPBACK } else { 0 }
            }
        };
        if let Some(ip) = service
            && !in_service_net(ip)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the service address {ip} is not in {SERVICE_NET}/{SERVICE_PREFIX}"),
            ));
        }
        self.update(
            cgroup_id,
            &Entry {
                runtime_api_port: runtime_api_port.map_or(0, |p| u32::from(p.to_be())),
                service_ip: service.map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
                egress,
            },
        )
    }

    /// Forgets an instance that has ended.
    pub fn forget(&self, cgroup_id: u64) {
        map_delete(&self.map, &cgroup_id);
    }

    fn update(&self, key: u64, value: &Entry) -> io::Result<()> {
        map_update(&self.map, &key, value)
    }
}

/// Sets `key` to `value` in `map`; both must be of the map's sizes.
fn map_update<K, V>(map: &OwnedFd, key: &K, value: &V) -> io::Result<()> {
    let mut attr = Attr::default();
    attr.u32(0, map.as_raw_fd() as u32);
    attr.u64(8, key as *const K as u64);
    attr.u64(16, value as *const V as u64);
    bpf(BPF_MAP_UPDATE_ELEM, &attr).map(drop)
}

/// Removes `key` from `map`, if it is there.
fn map_delete<K>(map: &OwnedFd, key: &K) {
    let mut attr = Attr::default();
    attr.u32(0, map.as_raw_fd() as u32);
    attr.u64(8, key as *const K as u64);
    let _ = bpf(BPF_MAP_DELETE_ELEM, &attr);
}

fn in_service_net(ip: Ipv4Addr) -> bool {
    u32::from(ip) >> (32 - SERVICE_PREFIX) == u32::from(SERVICE_NET) >> (32 - SERVICE_PREFIX)
}

fn attach(cgroup: &std::fs::File, prog: &OwnedFd, attach_type: u32) -> io::Result<()> {
    let mut attr = Attr::default();
    attr.u32(0, cgroup.as_raw_fd() as u32);
    attr.u32(4, prog.as_raw_fd() as u32);
    attr.u32(8, attach_type);
    attr.u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &attr).map(drop)
}

/// Undoes [`attach`]: a program stays attached to its group for as long
/// as the group lives, whoever holds its descriptor.
fn detach(cgroup: &std::fs::File, prog: &OwnedFd, attach_type: u32) {
    let mut attr = Attr::default();
    attr.u32(0, cgroup.as_raw_fd() as u32);
    attr.u32(4, prog.as_raw_fd() as u32);
    attr.u32(8, attach_type);
    let _ = bpf(BPF_PROG_DETACH, &attr);
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
    load_as(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, insns, attach_type, 0)
}

/// Loads a program of `prog_type`; `btf_id`: the kernel function it
/// attaches to, for LSM programs.
fn load_as(
    prog_type: u32,
    insns: &[Insn],
    attach_type: u32,
    btf_id: u32,
) -> Result<OwnedFd, String> {
    let license = c"Dual MIT/GPL";
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = Attr::default();
    attr.u32(0, prog_type);
    attr.u32(4, insns.len() as u32);
    attr.u64(8, insns.as_ptr() as u64);
    attr.u64(16, license.as_ptr() as u64);
    attr.u32(24, 1); // log level
    attr.u32(28, log.len() as u32);
    attr.u64(32, log.as_mut_ptr() as u64);
    attr.u32(68, attach_type);
    attr.u32(108, btf_id);
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
const LDX_H: u8 = 0x69;
const LDX_DW: u8 = 0x79;
const STX_W: u8 = 0x63;
const STX_DW: u8 = 0x7b;
const LSH64_IMM: u8 = 0x67;
const OR64_REG: u8 = 0x4f;
const ADD64_IMM: u8 = 0x07;
const AND32_IMM: u8 = 0x54;
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
const SOCK_TYPE: i16 = 32;

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
        self.lookup_at(map_fd, -8);
    }

    /// r0 = lookup(map, the key on the stack at `offset`); clobbers r1–r5.
    fn lookup_at(&mut self, map_fd: i32, offset: i32) {
        self.map(1, map_fd);
        self.op(MOV64_REG, 2, 10, 0, 0);
        self.op(ADD64_IMM, 2, 0, 0, offset);
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

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::new(),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Starts a program: r6 holds the context, r8 the port, r7 the IPv4
    /// address as the kernel stores it (IPv6 loopback counts as 127.0.0.1,
    /// the unspecified address `::` as 0.0.0.0, mapped IPv4 addresses as
    /// themselves, and other IPv6 addresses as 255.255.255.255, which is
    /// neither reserved nor a Runtime API's nor a service's). With
    /// `netns`, sockets of other network namespaces pass unjudged.
    fn prologue(&mut self, family: Family, netns: Option<u64>) {
        let loopback = u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets()) as i32;
        self.op(MOV64_REG, 6, 1, 0, 0);
        if let Some(cookie) = netns {
            self.op(CALL, 0, 0, 0, HELPER_NETNS_COOKIE);
            self.op(LD_IMM64, 1, 0, 0, cookie as u32 as i32);
            self.op(0, 0, 0, 0, (cookie >> 32) as u32 as i32);
            self.jump(JNE_REG, 0, 1, 0, "allow");
            self.op(MOV64_REG, 1, 6, 0, 0);
        }
        self.op(LDX_W, 8, 6, USER_PORT, 0);
        match family {
            Family::V4 => self.op(LDX_W, 7, 6, USER_IP4, 0),
            Family::V6 => {
                // No IPv4 address stands for a native IPv6 one.
                self.op(MOV32_IMM, 7, 0, 0, -1);
                self.op(LDX_W, 1, 6, USER_IP6, 0);
                self.op(LDX_W, 2, 6, USER_IP6 + 4, 0);
                self.op(OR64_REG, 1, 2, 0, 0);
                self.jump(JNE_IMM, 1, 0, 0, "addressed");
                self.op(LDX_W, 3, 6, USER_IP6 + 8, 0);
                self.op(LDX_W, 4, 6, USER_IP6 + 12, 0);
                self.jump(JNE_IMM, 3, 0, 0, "mapped");
                // ::
                self.jump(JNE_IMM, 4, 0, 0, "specified");
                self.op(MOV32_IMM, 7, 0, 0, 0);
                self.jump(JA, 0, 0, 0, "addressed");
                // ::1
                self.label("specified");
                self.jump(JNE_IMM, 4, 0, 1 << 24, "addressed");
                self.op(MOV32_IMM, 7, 0, 0, loopback);
                self.jump(JA, 0, 0, 0, "addressed");
                // ::ffff:a.b.c.d
                self.label("mapped");
                self.op(MOV32_IMM, 5, 0, 0, MAPPED as i32);
                self.jump(JNE_REG, 3, 5, 0, "addressed");
                self.op(MOV64_REG, 7, 4, 0, 0);
                self.label("addressed");
            }
        }
    }

    /// r9 = the current instance's service address, 0 when it is none;
    /// clobbers r0–r5.
    fn own_service_ip(&mut self, map_fd: i32) {
        self.op(CALL, 0, 0, 0, HELPER_CURRENT_CGROUP_ID);
        self.op(MOV64_REG, 9, 0, 0, 0);
        self.lookup(map_fd, 9);
        self.op(MOV64_IMM, 9, 0, 0, 0);
        self.jump(JEQ_IMM, 0, 0, 0, "looked up");
        self.op(LDX_W, 9, 0, 4, 0);
        self.label("looked up");
    }

    /// Jumps to `label` unless r7 is in [`SERVICE_NET`]; clobbers r1.
    fn unless_service_net(&mut self, label: &'static str) {
        let mask = u32::from_ne_bytes([255, 255, 0, 0]) as i32;
        let net = u32::from_ne_bytes(SERVICE_NET.octets()) as i32;
        self.op(MOV64_REG, 1, 7, 0, 0);
        self.op(AND32_IMM, 1, 0, 0, mask);
        self.jump(JNE_IMM, 1, 0, net, label);
    }

    /// The verdicts every program ends with.
    fn verdicts(&mut self) {
        self.label("allow");
        self.op(MOV64_IMM, 0, 0, 0, 1);
        self.op(EXIT, 0, 0, 0, 0);
        self.label("deny");
        self.op(MOV64_IMM, 0, 0, 0, 0);
        self.op(EXIT, 0, 0, 0, 0);
    }
}

/// The first 32 bits of `::ffff:0:0/96` past its 64 zero bits, as the
/// kernel stores them.
const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// The connect program for one address family, also judging datagrams
/// sent without a connect (`sendmsg`). `maps`: the instances' map and the
/// egress map.
fn connect(family: Family, (map_fd, allow_fd): (i32, i32), netns: Option<u64>) -> Vec<Insn> {
    let runtime_api = u32::from_ne_bytes(RUNTIME_API_HOST.octets()) as i32;
    let loopback = u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets()) as i32;
    let mut a = Asm::new();
    a.prologue(family, netns);
    // The unspecified address (0.0.0.0, `::`, `::ffff:0.0.0.0`) is
    // loopback's, judged as 127.0.0.1 like `::1`.
    a.jump(JNE_IMM, 7, 0, 0, "destination");
    a.op(MOV32_IMM, 7, 0, 0, loopback);
    // And 127.0.0.1 it is: the kernel would send 0.0.0.0 to the address
    // the socket is bound to, which could be the Runtime API's. `::` it
    // sends to loopback itself.
    match family {
        Family::V4 => a.op(STX_W, 6, 7, USER_IP4, 0),
        Family::V6 => {
            a.op(LDX_W, 1, 6, USER_IP6 + 8, 0);
            a.op(MOV32_IMM, 2, 0, 0, MAPPED as i32);
            a.jump(JNE_REG, 1, 2, 0, "destination");
            a.op(STX_W, 6, 7, USER_IP6 + 12, 0);
        }
    }
    a.label("destination");
    // A reserved address and port?
    a.op(MOV64_REG, 9, 7, 0, 0);
    a.op(LSH64_IMM, 9, 0, 0, 16);
    a.op(OR64_REG, 9, 8, 0, 0);
    a.deny_if_reserved(map_fd);
    // A port reserved on every address?
    a.op(MOV64_REG, 9, 8, 0, 0);
    a.deny_if_reserved(map_fd);
    // A service: only the instance's own address, so that a service may
    // check on itself.
    a.unless_service_net("not a service");
    a.own_service_ip(map_fd);
    a.jump(JNE_REG, 7, 9, 0, "deny");
    a.jump(JA, 0, 0, 0, "allow");
    a.label("not a service");
    // A Runtime API: only the instance's own.
    a.op(MOV32_IMM, 1, 0, 0, runtime_api);
    a.jump(JNE_REG, 7, 1, 0, "egress");
    a.op(CALL, 0, 0, 0, HELPER_CURRENT_CGROUP_ID);
    a.op(MOV64_REG, 9, 0, 0, 0);
    a.lookup(map_fd, 9);
    a.jump(JEQ_IMM, 0, 0, 0, "deny");
    a.op(LDX_W, 1, 0, 0, 0);
    a.jump(JNE_REG, 1, 8, 0, "deny");
    a.jump(JA, 0, 0, 0, "allow");
    // Anywhere else: as the instance's egress rule says.
    a.label("egress");
    a.op(CALL, 0, 0, 0, HELPER_CURRENT_CGROUP_ID);
    a.op(MOV64_REG, 9, 0, 0, 0);
    a.lookup(map_fd, 9);
    a.jump(JEQ_IMM, 0, 0, 0, "allow");
    a.op(LDX_W, 9, 0, 8, 0);
    a.jump(JEQ_IMM, 9, 0, 0, "allow");
    // Loopback (127.0.0.0/8, `::1` as 127.0.0.1): all of it, or only what
    // is listed.
    a.op(MOV64_REG, 1, 7, 0, 0);
    a.op(AND32_IMM, 1, 0, 0, 0xff);
    a.jump(JNE_IMM, 1, 0, 127, "remote");
    a.op(MOV64_REG, 1, 9, 0, 0);
    a.op(AND32_IMM, 1, 0, 0, EGRESS_LOOPBACK as i32);
    a.jump(JNE_IMM, 1, 0, 0, "allow");
    a.jump(JA, 0, 0, 0, "listed");
    // Elsewhere: anywhere, or only what is listed.
    a.label("remote");
    a.op(MOV64_REG, 1, 9, 0, 0);
    a.op(AND32_IMM, 1, 0, 0, EGRESS_LISTED as i32);
    a.jump(JEQ_IMM, 1, 0, 0, "allow");
    // The key (policy, port, address) at fp-40.
    a.label("listed");
    a.op(MOV64_REG, 1, 9, 0, 0);
    a.op(AND32_IMM, 1, 0, 0, MAX_EGRESS_POLICY as i32);
    a.op(STX_W, 10, 1, ALLOW_KEY, 0);
    a.op(STX_W, 10, 8, ALLOW_KEY + 4, 0);
    if let Family::V6 = family {
        // A native IPv6 address (r7 all ones) as it is.
        a.op(MOV32_IMM, 1, 0, 0, -1);
        a.jump(JNE_REG, 7, 1, 0, "v4");
        for word in 0..4 {
            a.op(LDX_W, 1, 6, USER_IP6 + 4 * word, 0);
            a.op(STX_W, 10, 1, ALLOW_KEY + 8 + 4 * word, 0);
        }
        a.jump(JA, 0, 0, 0, "keyed");
    }
    // An IPv4 address (or `::1`, or a mapped one) in its mapped form.
    a.label("v4");
    a.op(MOV64_IMM, 1, 0, 0, 0);
    a.op(STX_W, 10, 1, ALLOW_KEY + 8, 0);
    a.op(STX_W, 10, 1, ALLOW_KEY + 12, 0);
    a.op(MOV32_IMM, 1, 0, 0, MAPPED as i32);
    a.op(STX_W, 10, 1, ALLOW_KEY + 16, 0);
    a.op(STX_W, 10, 7, ALLOW_KEY + 20, 0);
    a.label("keyed");
    a.lookup_at(allow_fd, ALLOW_KEY.into());
    a.jump(JNE_IMM, 0, 0, 0, "allow");
    // The platform's endpoints: policy 0.
    a.op(MOV64_IMM, 1, 0, 0, 0);
    a.op(STX_W, 10, 1, ALLOW_KEY, 0);
    a.lookup_at(allow_fd, ALLOW_KEY.into());
    a.jump(JNE_IMM, 0, 0, 0, "allow");
    a.jump(JA, 0, 0, 0, "deny");
    a.verdicts();
    a.finish()
}

/// Where the connect program builds an [`AllowKey`] on its stack.
const ALLOW_KEY: i16 = -40;

/// The bind program for one address family: a service's bind of a
/// stream socket to a port goes to its own address; anyone else's to a
/// port on every address goes to loopback; nobody binds another's service
/// address, with any socket.
fn bind(family: Family, map_fd: i32, netns: Option<u64>) -> Vec<Insn> {
    let loopback = u32::from_ne_bytes(Ipv4Addr::LOCALHOST.octets()) as i32;
    let mut a = Asm::new();
    a.prologue(family, netns);
    a.own_service_ip(map_fd);
    // In the service network only its own address, for a service; none
    // for anyone else (r9 is 0, r7 is not).
    a.unless_service_net("elsewhere");
    a.jump(JNE_REG, 7, 9, 0, "deny");
    a.label("elsewhere");
    // Datagram sockets have rules of their own; any but stream and
    // datagram ones stay where they asked.
    a.op(LDX_W, 1, 6, SOCK_TYPE, 0);
    a.jump(JEQ_IMM, 1, 0, libc::SOCK_DGRAM, "datagram");
    a.jump(JNE_IMM, 1, 0, libc::SOCK_STREAM, "allow");
    // Port 0: a client's source port, left where it asked.
    a.jump(JEQ_IMM, 8, 0, 0, "allow");
    a.jump(JNE_IMM, 9, 0, 0, "move");
    // Not a service (with or without an entry): every address (0.0.0.0,
    // `::`, `::ffff:0.0.0.0`) becomes loopback, where no connection meant
    // for a service's address lands; other addresses stay.
    a.jump(JNE_IMM, 7, 0, 0, "allow");
    a.op(MOV32_IMM, 9, 0, 0, loopback);
    a.jump(JA, 0, 0, 0, "move");
    // A datagram socket on a fixed port on every address, a service's as
    // well as a function's, gets loopback: no other host reaches it. Port
    // 0 (a client's) and any other address stay.
    a.label("datagram");
    a.jump(JEQ_IMM, 8, 0, 0, "allow");
    a.jump(JNE_IMM, 7, 0, 0, "allow");
    a.op(MOV32_IMM, 9, 0, 0, loopback);
    // r9: where the bind goes.
    a.label("move");
    match family {
        Family::V4 => a.op(STX_W, 6, 9, USER_IP4, 0),
        Family::V6 => {
            // ::ffff:a.b.c.d, which a socket that is not IPv6-only binds
            // as a.b.c.d: a listener on `::` that becomes ::1 would no
            // longer take IPv4 connections, to 127.0.0.1 or a service's
            // address.
            a.op(MOV64_IMM, 1, 0, 0, 0);
            a.op(STX_W, 6, 1, USER_IP6, 0);
            a.op(STX_W, 6, 1, USER_IP6 + 4, 0);
            a.op(MOV32_IMM, 1, 0, 0, MAPPED as i32);
            a.op(STX_W, 6, 1, USER_IP6 + 8, 0);
            a.op(STX_W, 6, 9, USER_IP6 + 12, 0);
        }
    }
    a.verdicts();
    a.finish()
}

/// The BPF LSM program on `socket_listen`, and the hook's BTF id: in the
/// host's network namespace, a TCP socket that would listen on every
/// address is refused (`EPERM`). Binds on every address at a fixed port
/// were moved already ([`bind`]); what is left there at `listen` is a
/// socket never bound, or bound to port 0, which the kernel gives a port
/// on every address that no bind hook sees.
fn listen(btf: &crate::btf::Btf, netns: u64) -> Result<(Vec<Insn>, u32), String> {
    use crate::btf::{KIND_FUNC, KIND_STRUCT};
    let missing = |what: &str| format!("the kernel's BTF has no {what}");
    let hook = btf
        .find(KIND_FUNC, "bpf_lsm_socket_listen")
        .ok_or_else(|| missing("socket_listen LSM hook"))?;
    let strukt = |name: &str| {
        btf.find(KIND_STRUCT, name)
            .ok_or_else(|| missing(&format!("struct {name}")))
    };
    let field = |id: u32, name: &str| {
        btf.offset(id, name)
            .map(|o| o as i16)
            .ok_or_else(|| missing(&format!("field {name}")))
    };
    let (socket, sock, common, net) = (
        strukt("socket")?,
        strukt("sock")?,
        strukt("sock_common")?,
        strukt("net")?,
    );
    let at_common = field(sock, "__sk_common")?;
    let off_sk = field(socket, "sk")?;
    // `possible_net_t skc_net`: a struct whose one field is the pointer.
    let off_net = at_common + field(common, "skc_net")?;
    let off_family = at_common + field(common, "skc_family")?;
    let off_saddr = at_common + field(common, "skc_rcv_saddr")?;
    let off_cookie = field(net, "net_cookie")?;
    let mut a = Asm::new();
    a.op(MOV64_REG, 6, 1, 0, 0);
    a.op(LDX_DW, 1, 6, 0, 0); // struct socket *
    a.op(LDX_DW, 2, 1, off_sk, 0); // struct sock *
    a.jump(JEQ_IMM, 2, 0, 0, "allow");
    a.op(LDX_DW, 3, 2, off_net, 0); // struct net *
    a.jump(JEQ_IMM, 3, 0, 0, "allow");
    a.op(LDX_DW, 4, 3, off_cookie, 0);
    a.op(LD_IMM64, 5, 0, 0, netns as u32 as i32);
    a.op(0, 0, 0, 0, (netns >> 32) as u32 as i32);
    a.jump(JNE_REG, 4, 5, 0, "allow");
    a.op(LDX_H, 4, 2, off_family, 0);
    a.jump(JEQ_IMM, 4, 0, libc::AF_INET, "judge");
    a.jump(JNE_IMM, 4, 0, libc::AF_INET6, "allow");
    // Every address: 0.0.0.0, and for IPv6 sockets `::` (whose IPv4
    // address is 0.0.0.0; one bound to another IPv6 address has
    // 127.0.0.6 there).
    a.label("judge");
    a.op(LDX_W, 4, 2, off_saddr, 0);
    a.jump(JNE_IMM, 4, 0, 0, "allow");
    a.verdicts();
    Ok((a.finish(), hook))
}

/// The cgroup id of a cgroup v2 group: its directory's inode number.
pub(crate) fn cgroup_id(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(dir)?.ino())
}
