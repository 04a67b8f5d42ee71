//! The service fence, for real: two launchers, one under namespaces with
//! the cgroup BPF fence and one without isolation, run Python processes
//! that bind, listen and connect, and this process (outside the
//! launchers' groups, as the gateway is) checks what reaches what.
//!
//! Needs root and a cgroup v2 hierarchy, as the server's own isolation
//! suite does; with `STRATUS_ISOLATION=none` only the unfenced half runs.
//! Its own `main`: the launchers are forked while the process is still
//! single-threaded.
#![allow(unsafe_code)] // waitpid, to reap the launchers at the end.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use stratus_sandbox::{
    Activation, Isolation, IsolationRequest, LauncherClient, Mount, ProcessSpec, Start, launcher,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Binds, listens and connects as its arguments say, prints one line of
/// JSON with what happened, and until it is killed answers every
/// connection to its listeners with a line that says who it is: its name
/// and the listener's address.
const PROBE: &str = r#"
import errno, json, select, socket, sys, time

keep, listening = [], []

def attempt(f):
    try:
        return "ok " + str(f())
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def listen(family, host, port, v6only=None):
    s = socket.socket(family, socket.SOCK_STREAM)
    keep.append(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((host, port))
    s.listen(16)
    listening.append(s)
    return s.getsockname()[0]

def implicit(family):
    # A listen with no bind: every address, at a port the kernel picks.
    s = socket.socket(family, socket.SOCK_STREAM)
    keep.append(s)
    s.listen(16)
    listening.append(s)
    return s.getsockname()[0]

def bind(family, host, port, kind=socket.SOCK_STREAM):
    s = socket.socket(family, kind)
    keep.append(s)
    s.bind((host, port))
    return s.getsockname()[0]

def connect(host, port, family=socket.AF_INET, source=None):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        if source is not None:
            # At port 0; an IPv6 socket dual-stack, so that it may be bound
            # to an IPv4-mapped address.
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((source, 0))
        s.connect((host, port))
    finally:
        s.close()
    return "connected"

A4, A6 = socket.AF_INET, socket.AF_INET6
mode, args = sys.argv[1], sys.argv[2:]
name = mode
if mode == "steps":
    # NAME, then steps: "key,listen,HOST,PORT[,V6ONLY]", "key,bind,HOST,PORT",
    # "key,udp,HOST,PORT" (a UDP socket's bind) or "key,connect,HOST,PORT".
    # An IPv6 listener is dual-stack unless V6ONLY says 1.
    name, seen = args[0], {}
    for step in args[1:]:
        key, what, host, port, *rest = step.split(",")
        family, port = (A6 if ":" in host else A4), int(port)
        if what == "listen":
            v6only = int(rest[0]) if rest else (0 if family == A6 else None)
            seen[key] = attempt(lambda: listen(family, host, port, v6only))
        elif what == "bind":
            seen[key] = attempt(lambda: bind(family, host, port))
        elif what == "udp":
            seen[key] = attempt(lambda: bind(family, host, port, socket.SOCK_DGRAM))
        elif what == "implicit":
            seen[key] = attempt(lambda: implicit(family))
        else:
            seen[key] = attempt(lambda: connect(host, port, family))
elif mode == "service":
    own, other = args[0], args[1]
    p4, plo, p6, p6lo, p6only, pfree = map(int, args[2:])
    seen = {
        "bind4_any": attempt(lambda: listen(A4, "0.0.0.0", p4)),
        "bind4_loopback": attempt(lambda: listen(A4, "127.0.0.1", plo)),
        "bind6_any": attempt(lambda: listen(A6, "::", p6, 0)),
        "bind6_loopback": attempt(lambda: listen(A6, "::1", p6lo, 0)),
        "bind6_v6only": attempt(lambda: listen(A6, "::", p6only, 1)),
        "bind_ephemeral": attempt(lambda: bind(A4, "0.0.0.0", 0)),
        "bind_other": attempt(lambda: bind(A4, other, pfree)),
        "bind_other_mapped": attempt(lambda: bind(A6, "::ffff:" + other, pfree)),
        "self": attempt(lambda: connect(own, p4)),
        "self_mapped": attempt(lambda: connect("::ffff:" + own, p6, A6)),
        "self_other_port": attempt(lambda: connect(own, pfree)),
        "other_service": attempt(lambda: connect(other, p4)),
        "loopback": attempt(lambda: connect("127.0.0.1", p4)),
    }
elif mode == "neighbour":
    service = args[0]
    p4, p6, pfree, pfree6 = map(int, args[1:])
    seen = {
        "service": attempt(lambda: connect(service, p4)),
        "service_mapped": attempt(lambda: connect("::ffff:" + service, p6, A6)),
        "squat": attempt(lambda: bind(A4, service, pfree)),
        "squat_mapped": attempt(lambda: bind(A6, "::ffff:" + service, pfree)),
        "squat_source": attempt(lambda: bind(A4, service, 0)),
        "squat_udp": attempt(lambda: bind(A4, service, pfree, socket.SOCK_DGRAM)),
        "listen_any": attempt(lambda: listen(A4, "0.0.0.0", pfree)),
        "listen_any6": attempt(lambda: listen(A6, "::", pfree6, 0)),
    }
elif mode == "runtime":
    own_api, other_api, admin, admin6, host = map(int, args)
    seen = {
        "own_api": attempt(lambda: connect("127.90.0.1", own_api)),
        "other_api": attempt(lambda: connect("127.90.0.1", other_api)),
        "admin": attempt(lambda: connect("127.0.0.1", admin)),
        "admin_mapped": attempt(lambda: connect("::ffff:127.0.0.1", admin, A6)),
        "admin_v6_loopback": attempt(lambda: connect("::1", admin, A6)),
        "host_service": attempt(lambda: connect("127.0.0.1", host)),
        # The unspecified address is loopback's.
        "admin_any": attempt(lambda: connect("0.0.0.0", admin)),
        "admin_any_mapped": attempt(lambda: connect("::ffff:0.0.0.0", admin, A6)),
        "admin_any6": attempt(lambda: connect("::", admin, A6)),
        "admin_any6_from_mapped": attempt(
            lambda: connect("::", admin, A6, "::ffff:127.0.0.1")),
        "admin_any_from_elsewhere": attempt(lambda: connect("0.0.0.0", admin, A4, "127.0.0.2")),
        "admin6_any6": attempt(lambda: connect("::", admin6, A6)),
        "admin6_any": attempt(lambda: connect("0.0.0.0", admin6)),
        "other_api_any": attempt(lambda: connect("0.0.0.0", other_api, A4, "127.90.0.1")),
        "other_api_any_mapped": attempt(
            lambda: connect("::ffff:0.0.0.0", other_api, A6, "::ffff:127.90.0.1")),
        "host_any": attempt(lambda: connect("0.0.0.0", host)),
        "host_any_mapped": attempt(lambda: connect("::ffff:0.0.0.0", host, A6)),
    }
else:
    p4 = int(args[0])
    seen = {"bind4_any": attempt(lambda: listen(A4, "0.0.0.0", p4))}
print(json.dumps(seen), flush=True)
while not listening:
    time.sleep(600)
while True:
    for s in select.select(listening, [], [])[0]:
        try:
            c = s.accept()[0]
            c.sendall(("%s %s\n" % (name, s.getsockname()[0])).encode())
            c.close()
        except OSError:
            pass
"#;

/// Node's default: `listen(port)` with no host binds `::`.
const NODE_SERVER: &str = r#"
const server = require("http").createServer((req, res) => res.end("hello from node"));
server.listen(Number(process.argv[1]), () => console.log(JSON.stringify(server.address())));
"#;

/// An interpreter, and the directory to show in the sandbox for it.
struct Interpreter {
    executable: PathBuf,
    prefix: PathBuf,
}

/// The real interpreter, wherever it is installed (pyenv puts it under
/// `/root`, which the sandbox shows only when asked).
fn interpreter(name: &str, script: &str) -> Option<Interpreter> {
    let out = std::process::Command::new(name)
        .args([if name == "node" { "-e" } else { "-c" }, script])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    Some(Interpreter {
        executable: lines.next()?.into(),
        prefix: lines.next()?.into(),
    })
}

fn python() -> Interpreter {
    interpreter(
        "python3",
        "import sys; print(sys.executable); print(sys.base_prefix)",
    )
    .expect("python3 runs")
}

fn node() -> Option<Interpreter> {
    interpreter(
        "node",
        "const p = require('path'); console.log(process.execPath); console.log(p.dirname(p.dirname(process.execPath)))",
    )
}

/// A port nothing listens on now, on any address.
fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct TCP ports nothing is bound to now: every socket is held
/// until all are picked, so the kernel cannot hand one out twice.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: [TcpListener; N] = std::array::from_fn(|_| TcpListener::bind("0.0.0.0:0").unwrap());
    held.map(|socket| socket.local_addr().unwrap().port())
}

/// `N` distinct UDP ports nothing is bound to now, on any address.
fn free_udp_ports<const N: usize>() -> [u16; N] {
    let held: [std::net::UdpSocket; N] =
        std::array::from_fn(|_| std::net::UdpSocket::bind("0.0.0.0:0").unwrap());
    held.map(|socket| socket.local_addr().unwrap().port())
}

/// What one connection from outside the fence gets: "connected" or the
/// error's kind.
fn reach(addr: SocketAddr) -> String {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => "connected".to_owned(),
        Err(err) => format!("{:?}", err.kind()),
    }
}

/// What an instance is: the fence's view of it.
#[derive(Clone, Copy, Default)]
struct As {
    service_addr: Option<Ipv4Addr>,
    runtime_api_port: Option<u16>,
}

/// Starts the probe (its `mode` first in `args`) as an instance; returns
/// its pid and what it printed.
async fn probe(
    client: &LauncherClient,
    python: &Interpreter,
    code: &Path,
    who: As,
    args: &[String],
) -> Result<(u32, Value), String> {
    let mut argv = vec!["-c".to_owned(), PROBE.to_owned()];
    argv.extend(args.iter().cloned());
    run(client, python, code, who, argv).await
}

/// Starts `interpreter` with `args` as an instance; returns its pid and
/// the first line it printed, as JSON.
async fn run(
    client: &LauncherClient,
    interpreter: &Interpreter,
    code: &Path,
    who: As,
    args: Vec<String>,
) -> Result<(u32, Value), String> {
    // /usr is in every sandbox already.
    let mounts = (!interpreter.prefix.starts_with("/usr"))
        .then(|| Mount {
            host: interpreter.prefix.clone(),
            sandbox: interpreter.prefix.clone(),
            writable: false,
        })
        .into_iter()
        .collect();
    let spec = ProcessSpec {
        program: interpreter.executable.clone(),
        args,
        cwd: "/".into(),
        env: Vec::new(),
        mounts,
        task_root: "/var/task".into(),
        code: Some(code.to_owned()),
        start: Start::OnActivation,
        tmp_mb: 16,
        pids_max: 32,
        max_files: 1024,
        private_network: false,
        memory_mb: 256,
        init: false,
        template: false,
        unprivileged: false,
    };
    let spawned = client.spawn(&spec).await.map_err(|e| e.to_string())?;
    let activation = Activation {
        code: code.to_owned(),
        env: Vec::new(),
        cwd: "/".into(),
        program: interpreter.executable.clone(),
        memory_mb: 256,
        args: None,
        runtime_api_port: who.runtime_api_port,
        service_addr: who.service_addr,
        egress: None,
    };
    client
        .activate(spawned.pid, &activation)
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    let mut stdout = BufReader::new(spawned.stdout);
    tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
        .await
        .map_err(|_| "the instance said nothing in 30s".to_owned())?
        .map_err(|e| e.to_string())?;
    let seen = serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))?;
    Ok((spawned.pid, seen))
}

fn expect(who: &str, seen: &Value, expected: &[(&str, &str)]) {
    eprintln!("{who}: {seen}");
    for (what, want) in expected {
        assert_eq!(seen[what], *want, "{who}: {what}: {seen}");
    }
}

async fn fenced(
    client: &LauncherClient,
    python: &Interpreter,
    node: Option<&Interpreter>,
    code: &Path,
) {
    println!("network: {}", client.network());
    assert!(client.service_fence(), "{}", client.network());
    // Addresses of this run, apart from any other run's.
    let n = std::process::id() % (stratus_sandbox::SERVICE_ADDRS - 4);
    let (own, other) = (
        stratus_sandbox::service_addr(n),
        stratus_sandbox::service_addr(n + 1),
    );
    let [p4, plo, p6, p6lo, p6only, pfree, pfree6] = free_ports();
    let ports = |ps: &[u16]| ps.iter().map(u16::to_string).collect::<Vec<_>>();
    let mut args = vec!["service".to_owned(), own.to_string(), other.to_string()];
    args.extend(ports(&[p4, plo, p6, p6lo, p6only, pfree]));
    let service = As {
        service_addr: Some(own),
        ..As::default()
    };
    let (service, seen) = probe(client, python, code, service, &args).await.unwrap();
    let at = format!("ok {own}");
    let mapped = format!("ok ::ffff:{own}");
    expect(
        "service",
        &seen,
        &[
            ("bind4_any", &at),
            ("bind4_loopback", &at),
            ("bind6_any", &mapped),
            ("bind6_loopback", &mapped),
            // A mapped address on an IPv6-only socket: the kernel's EINVAL.
            ("bind6_v6only", "EINVAL"),
            ("bind_ephemeral", "ok 0.0.0.0"),
            ("bind_other", "EPERM"),
            ("bind_other_mapped", "EPERM"),
            ("self", "ok connected"),
            ("self_mapped", "ok connected"),
            ("self_other_port", "ECONNREFUSED"),
            ("other_service", "EPERM"),
            ("loopback", "ECONNREFUSED"),
        ],
    );

    // The gateway, outside the launcher's group, reaches it at its
    // address only.
    let v4 = |ip: Ipv4Addr, port| SocketAddr::from((ip, port));
    let v6 = |port| SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    for (addr, want) in [
        (v4(own, p4), "connected"),
        (v4(own, plo), "connected"),
        (v4(own, p6), "connected"),
        (v4(own, p6lo), "connected"),
        (v4(Ipv4Addr::LOCALHOST, p4), "ConnectionRefused"),
        (v4(Ipv4Addr::LOCALHOST, plo), "ConnectionRefused"),
        (v4(Ipv4Addr::LOCALHOST, p6), "ConnectionRefused"),
        (v6(p6), "ConnectionRefused"),
        (v6(p6lo), "ConnectionRefused"),
    ] {
        assert_eq!(reach(addr), want, "the gateway to {addr}");
    }
    for port in [p4, plo, p6, p6lo] {
        assert!(stratus_sandbox::service_listening(SocketAddrV4::new(
            own, port
        )));
    }
    assert!(!stratus_sandbox::service_listening(SocketAddrV4::new(
        Ipv4Addr::LOCALHOST,
        p4
    )));

    // Another instance, not activated as anything (so with no entry in
    // the fence's map), reaches none of it, and cannot take its address;
    // its listeners on every address are on loopback.
    let mut args = vec!["neighbour".to_owned(), own.to_string()];
    args.extend(ports(&[p4, p6, pfree, pfree6]));
    let (neighbour, seen) = probe(client, python, code, As::default(), &args)
        .await
        .unwrap();
    expect(
        "neighbour",
        &seen,
        &[
            ("service", "EPERM"),
            ("service_mapped", "EPERM"),
            ("squat", "EPERM"),
            ("squat_mapped", "EPERM"),
            ("squat_source", "EPERM"),
            ("squat_udp", "EPERM"),
            ("listen_any", "ok 127.0.0.1"),
            ("listen_any6", "ok ::ffff:127.0.0.1"),
        ],
    );
    assert_eq!(listeners(pfree), ["127.0.0.1"]);
    assert_eq!(listeners(pfree6), ["::ffff:127.0.0.1"]);
    // So they do not answer at the service's address...
    assert_eq!(reach(v4(own, pfree)), "ConnectionRefused");
    assert_eq!(reach(v4(own, pfree6)), "ConnectionRefused");
    // ...but a listener of the host's on every address does, on a port the
    // service does not listen on: why readiness checks ask
    // service_listening rather than connect.
    let host_any = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let host_port = host_any.local_addr().unwrap().port();
    assert_eq!(reach(v4(own, host_port)), "connected");
    assert!(!stratus_sandbox::service_listening(SocketAddrV4::new(
        own, host_port
    )));
    drop(host_any);

    // An address outside the service network is the server's mistake.
    let elsewhere = As {
        service_addr: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..As::default()
    };
    let args = ["plain".to_owned(), free_port().to_string()];
    let err = probe(client, python, code, elsewhere, &args)
        .await
        .unwrap_err();
    assert!(err.contains("not in 127.91.0.0/16"), "{err}");
    stratus_sandbox::kill_group(service);
    stratus_sandbox::kill_group(neighbour);

    squatter(client, python, code, stratus_sandbox::service_addr(n + 4)).await;

    // The fence of functions holds as before, for a function and for a
    // service that has a Runtime API too.
    let listen = |ip: Ipv4Addr| TcpListener::bind((ip, 0)).unwrap();
    let (own_api, other_api) = (
        listen(stratus_sandbox::RUNTIME_API_HOST),
        listen(stratus_sandbox::RUNTIME_API_HOST),
    );
    let (admin, host) = (listen(Ipv4Addr::LOCALHOST), listen(Ipv4Addr::LOCALHOST));
    // An admin listener on IPv6 loopback, as the server may have.
    let admin6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    client
        .reserve(&[admin.local_addr().unwrap(), admin6.local_addr().unwrap()])
        .await
        .unwrap();
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    let mut args = vec!["runtime".to_owned()];
    args.extend(ports(&[
        port(&own_api),
        port(&other_api),
        port(&admin),
        port(&admin6),
        port(&host),
    ]));
    let function = As {
        runtime_api_port: Some(port(&own_api)),
        ..As::default()
    };
    let both = As {
        service_addr: Some(stratus_sandbox::service_addr(n + 2)),
        ..function
    };
    for (who, what) in [(function, "function"), (both, "service with a Runtime API")] {
        let (pid, seen) = probe(client, python, code, who, &args).await.unwrap();
        expect(
            what,
            &seen,
            &[
                ("own_api", "ok connected"),
                ("other_api", "EPERM"),
                ("admin", "EPERM"),
                ("admin_mapped", "EPERM"),
                ("admin_v6_loopback", "EPERM"),
                ("host_service", "ok connected"),
                // The unspecified address is loopback: 0.0.0.0 and
                // ::ffff:0.0.0.0 127.0.0.1, `::` ::1 (or ::ffff:127.0.0.1
                // from a socket bound to a mapped address).
                ("admin_any", "EPERM"),
                ("admin_any_mapped", "EPERM"),
                ("admin_any6", "EPERM"),
                ("admin_any6_from_mapped", "EPERM"),
                ("admin6_any6", "EPERM"),
                ("admin6_any", "EPERM"),
                // The kernel would send 0.0.0.0 to the address the socket
                // is bound to; the fence sends it to 127.0.0.1, as it
                // judged it: the admin listener there is refused, and no
                // Runtime API is at 127.0.0.1.
                ("admin_any_from_elsewhere", "EPERM"),
                ("other_api_any", "ECONNREFUSED"),
                ("other_api_any_mapped", "ECONNREFUSED"),
                // Where nothing is reserved, 0.0.0.0 is still loopback.
                ("host_any", "ok connected"),
                ("host_any_mapped", "ok connected"),
            ],
        );
        stratus_sandbox::kill_group(pid);
    }

    // Node's own default, `listen(port)`, binds `::`: the gateway reaches
    // it at the service's address over IPv4, nobody at loopback.
    if let Some(node) = node {
        let (ip, port) = (stratus_sandbox::service_addr(n + 3), free_port());
        let who = As {
            service_addr: Some(ip),
            ..As::default()
        };
        let args = vec!["-e".to_owned(), NODE_SERVER.to_owned(), port.to_string()];
        let (pid, seen) = run(client, node, code, who, args).await.unwrap();
        eprintln!("node: {seen}");
        assert_eq!(seen["address"], format!("::ffff:{ip}"), "{seen}");
        let answer = http_get(v4(ip, port));
        assert!(answer.ends_with("hello from node"), "{answer}");
        assert_eq!(reach(v4(Ipv4Addr::LOCALHOST, port)), "ConnectionRefused");
        assert_eq!(reach(v6(port)), "ConnectionRefused");
        assert!(stratus_sandbox::service_listening(SocketAddrV4::new(
            ip, port
        )));
        stratus_sandbox::kill_group(pid);
    } else {
        eprintln!("no node here: Node's default listen is not checked");
    }
}

/// A function that listens on every address, at the ports a service will
/// want, gets loopback: the service still binds them at its own address,
/// the gateway reaches the service there, and once the service is gone,
/// nobody.
async fn squatter(client: &LauncherClient, python: &Interpreter, code: &Path, ip: Ipv4Addr) {
    let [p4, p6, pmapped, p6only, plo, plo6, papi] = free_ports();
    let [pudp, pudp6, pudp_any, pudp_own] = free_udp_ports();
    let step = |key: &str, what: &str, host: &str, port: u16| format!("{key},{what},{host},{port}");
    // A function: an entry in the fence's map, with no service address.
    let function = As {
        runtime_api_port: Some(papi),
        ..As::default()
    };
    let args = vec![
        "steps".to_owned(),
        "function".to_owned(),
        step("any4", "listen", "0.0.0.0", p4),
        step("any6", "listen", "::", p6),
        step("any_mapped", "listen", "::ffff:0.0.0.0", pmapped),
        step("any6_v6only", "listen", "::", p6only) + ",1",
        step("loopback4", "listen", "127.0.0.1", plo),
        step("loopback6", "listen", "::1", plo6),
        step("ephemeral", "bind", "0.0.0.0", 0),
        step("ephemeral6", "bind", "::", 0),
        // UDP: a fixed port on every address.
        step("udp_any", "udp", "0.0.0.0", pudp),
        step("udp_any6", "udp", "::", pudp6),
        // A listen on every address at a port the kernel picks: with no
        // bind, or after a bind to port 0.
        step("implicit", "implicit", "0.0.0.0", 0),
        step("implicit6", "implicit", "::", 0),
        step("ephemeral_listen", "listen", "0.0.0.0", 0),
        step("ephemeral_listen6", "listen", "::", 0),
        step("loopback_ephemeral_listen", "listen", "127.0.0.1", 0),
        step("self4", "connect", "127.0.0.1", p4),
        step("self6_from_v4", "connect", "127.0.0.1", p6),
        step("self6_from_v6", "connect", "::1", p6),
    ];
    let (squatter, seen) = probe(client, python, code, function, &args).await.unwrap();
    let mapped_loopback = "ok ::ffff:127.0.0.1";
    expect(
        "function on every address",
        &seen,
        &[
            ("any4", "ok 127.0.0.1"),
            // A dual-stack listener on `::` gets IPv4 loopback.
            ("any6", mapped_loopback),
            ("any_mapped", mapped_loopback),
            // An IPv6-only one cannot be there, as for services.
            ("any6_v6only", "EINVAL"),
            ("loopback4", "ok 127.0.0.1"),
            ("loopback6", "ok ::1"),
            ("ephemeral", "ok 0.0.0.0"),
            ("ephemeral6", "ok ::"),
            // Datagram sockets too: no other host reaches them.
            ("udp_any", "ok 127.0.0.1"),
            ("udp_any6", "ok ::ffff:127.0.0.1"),
            ("loopback_ephemeral_listen", "ok 127.0.0.1"),
            ("self4", "ok connected"),
            // The dual-stack listener takes IPv4 from 127.0.0.1, no
            // longer IPv6 to ::1.
            ("self6_from_v4", "ok connected"),
            ("self6_from_v6", "ECONNREFUSED"),
        ],
    );
    // A listen on every address at a port the kernel picks: refused, by
    // the BPF LSM program where the kernel takes it, else by the launcher
    // answering a seccomp notification; where neither can be had, the
    // launcher says so, and such listeners are on every address.
    let implicit: &[(&str, &str)] = if client.listen_fence() {
        &[
            ("implicit", "EPERM"),
            ("implicit6", "EPERM"),
            ("ephemeral_listen", "EPERM"),
            ("ephemeral_listen6", "EPERM"),
        ]
    } else {
        assert!(
            client.network().contains("is not fenced: "),
            "{}",
            client.network()
        );
        &[
            ("implicit", "ok 0.0.0.0"),
            ("implicit6", "ok ::"),
            ("ephemeral_listen", "ok 0.0.0.0"),
            ("ephemeral_listen6", "ok ::"),
        ]
    };
    expect("implicit listeners", &seen, implicit);
    // As the kernel says, and as the host sees it.
    let mapped = "::ffff:127.0.0.1";
    for (port, at) in [
        (p4, "127.0.0.1"),
        (p6, mapped),
        (pmapped, mapped),
        (plo, "127.0.0.1"),
        (plo6, "::1"),
    ] {
        assert_eq!(listeners(port), [at], "port {port}");
    }
    assert_eq!(listeners(p6only), [] as [&str; 0]);
    let v4 = |ip: Ipv4Addr, port| SocketAddr::from((ip, port));
    assert_eq!(hello(v4(Ipv4Addr::LOCALHOST, p4)), "function 127.0.0.1");
    assert_eq!(
        hello(v4(Ipv4Addr::LOCALHOST, p6)),
        format!("function {mapped}")
    );
    assert_eq!(
        reach(SocketAddr::from((Ipv6Addr::LOCALHOST, p6))),
        "ConnectionRefused"
    );
    for port in [p4, p6, pmapped] {
        assert_eq!(reach(v4(ip, port)), "ConnectionRefused", "port {port}");
    }

    // A service then binds the same ports, on every address as it asks,
    // and gets them at its own; the gateway reaches it there, and the
    // function still on loopback.
    let service = As {
        service_addr: Some(ip),
        ..As::default()
    };
    let args = vec![
        "steps".to_owned(),
        "service".to_owned(),
        step("any4", "listen", "0.0.0.0", p4),
        step("any6", "listen", "::", p6),
        step("any_mapped", "listen", "::ffff:0.0.0.0", pmapped),
        step("udp_any", "udp", "0.0.0.0", pudp_any),
        step("udp_own", "udp", &ip.to_string(), pudp_own),
    ];
    let (service, seen) = probe(client, python, code, service, &args).await.unwrap();
    let own_mapped = format!("ok ::ffff:{ip}");
    expect(
        "service after the function",
        &seen,
        &[
            ("any4", &format!("ok {ip}")),
            ("any6", &own_mapped),
            ("any_mapped", &own_mapped),
            // UDP on every address gets loopback, for a service too: the
            // gateway proxies none, and no other host may reach it.
            ("udp_any", "ok 127.0.0.1"),
            ("udp_own", &format!("ok {ip}")),
        ],
    );
    assert_eq!(hello(v4(ip, p4)), format!("service {ip}"));
    assert_eq!(hello(v4(ip, p6)), format!("service ::ffff:{ip}"));
    assert_eq!(hello(v4(ip, pmapped)), format!("service ::ffff:{ip}"));
    assert_eq!(hello(v4(Ipv4Addr::LOCALHOST, p4)), "function 127.0.0.1");
    assert_eq!(
        hello(v4(Ipv4Addr::LOCALHOST, p6)),
        format!("function {mapped}")
    );

    // With the service gone, a connection to its address finds nobody,
    // not the function, which still listens.
    stratus_sandbox::kill_group(service);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while [p4, p6, pmapped]
        .iter()
        .any(|&port| stratus_sandbox::service_listening(SocketAddrV4::new(ip, port)))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the service's listeners outlive it"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for port in [p4, p6, pmapped] {
        assert_eq!(reach(v4(ip, port)), "ConnectionRefused", "port {port}");
    }
    assert_eq!(listeners(p4), ["127.0.0.1"]);
    assert_eq!(listeners(p6), [mapped]);
    assert_eq!(hello(v4(Ipv4Addr::LOCALHOST, p4)), "function 127.0.0.1");
    stratus_sandbox::kill_group(squatter);
}

/// The addresses TCP sockets listen on at `port`, from `/proc/net/tcp`
/// and `/proc/net/tcp6`.
fn listeners(port: u16) -> Vec<String> {
    // Each 32-bit word as it lies in memory, printed as a number.
    let words = |hex: &str| -> Vec<u8> {
        (0..hex.len())
            .step_by(8)
            .flat_map(|i| {
                u32::from_str_radix(&hex[i..i + 8], 16)
                    .unwrap()
                    .to_ne_bytes()
            })
            .collect()
    };
    let mut found = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some((ip, at)) = fields[1].split_once(':') else {
                continue;
            };
            // 0A: TCP_LISTEN.
            if fields[3] != "0A" || u16::from_str_radix(at, 16) != Ok(port) {
                continue;
            }
            let ip = match words(ip).as_slice() {
                &[a, b, c, d] => Ipv4Addr::new(a, b, c, d).to_string(),
                bytes => Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap()).to_string(),
            };
            found.push(ip);
        }
    }
    found
}

/// The line a probe's listener at `addr` answers with, or the error's
/// kind.
fn hello(addr: SocketAddr) -> String {
    use std::io::Read;
    let attempt = || -> std::io::Result<String> {
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer)?;
        Ok(answer.trim_end().to_owned())
    };
    attempt().unwrap_or_else(|err| format!("{:?}", err.kind()))
}

fn http_get(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

/// Without the fence a service still runs, and binds where it asks.
async fn unfenced(client: &LauncherClient, python: &Interpreter, code: &Path) {
    println!("network: {}", client.network());
    assert!(!client.service_fence());
    let port = free_port();
    let who = As {
        service_addr: Some(stratus_sandbox::service_addr(0)),
        ..As::default()
    };
    let args = ["plain".to_owned(), port.to_string()];
    let (pid, seen) = probe(client, python, code, who, &args).await.unwrap();
    expect("unfenced service", &seen, &[("bind4_any", "ok 0.0.0.0")]);
    assert_eq!(
        reach(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
        "connected"
    );
    stratus_sandbox::kill_group(pid);
}

fn main() {
    let with_fence = std::env::var("STRATUS_ISOLATION").as_deref() != Ok("none");
    let (python, node) = (python(), node());
    let state = std::env::temp_dir().join(format!("stratus-service-fence-{}", std::process::id()));
    let code = state.join("code");
    std::fs::create_dir_all(&code).unwrap();
    // Both forked now, while this process has one thread.
    let fenced_launcher = with_fence.then(|| {
        launcher::start(
            IsolationRequest::Exactly(Isolation::Namespaces),
            &state.join("fenced"),
        )
        .unwrap()
    });
    let open_launcher = launcher::start(
        IsolationRequest::Exactly(Isolation::None),
        &state.join("open"),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if let Some(handle) = fenced_launcher {
            let client = LauncherClient::connect(handle).unwrap();
            fenced(&client, &python, node.as_ref(), &code).await;
        } else {
            eprintln!("STRATUS_ISOLATION=none: the fence needs namespaces; checking without it");
        }
        let client = LauncherClient::connect(open_launcher).unwrap();
        unfenced(&client, &python, &code).await;
    });
    // Closing the launchers' sockets ends them; they remove their groups.
    drop(runtime);
    // SAFETY: waitpid writes nothing; the launchers are our only children.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
    let _ = std::fs::remove_dir_all(&state);
    println!("service fence: ok");
}
