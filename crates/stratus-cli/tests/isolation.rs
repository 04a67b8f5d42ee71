//! What tenant code can and cannot reach under `--isolation namespaces`.
//! Each attempt runs inside a function and reports what happened; another
//! app keeps working throughout.
//!
//! Runs in both isolation modes: what tenants reach is the point of this suite.

mod common;

use common::{Server, write_app};

const HOSTILE: &str = r#"import ctypes, os, signal

def attempt(f):
    try:
        return "allowed: " + repr(f())[:120]
    except Exception as e:
        return "refused: " + type(e).__name__ + ": " + str(e)

def status():
    return {l.split(":")[0]: l.split(":")[1].strip() for l in open("/proc/self/status") if ":" in l}

def mount():
    libc = ctypes.CDLL(None, use_errno=True)
    os.makedirs("/tmp/m", exist_ok=True)
    if libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "mounted"

def unshare():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "unshared"

def ptrace():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(0, 0, None, None) != 0:  # PTRACE_TRACEME
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "traced"

def fill_tmp():
    with open("/tmp/fill", "wb") as f:
        for _ in range(64):
            f.write(b"x" * (1 << 20))
            f.flush()
    return "wrote 64 MiB"

def handler(event, context):
    s = status()
    return {
        "uid": s["Uid"].split()[0],
        "cap_eff": s["CapEff"],
        "no_new_privs": s["NoNewPrivs"],
        "pid": os.getpid(),
        "processes": sorted(p for p in os.listdir("/proc") if p.isdigit()),
        "shadow": attempt(lambda: open("/etc/shadow").read()),
        "data_dir": attempt(lambda: os.listdir(os.environ["DATA_DIR"])),
        "token": attempt(lambda: open(os.environ["DATA_DIR"] + "/admin.token").read()),
        "other_code": attempt(lambda: os.listdir(os.environ["OTHER_CODE"])),
        "root_home": attempt(lambda: os.listdir("/root")),
        "home": attempt(lambda: os.listdir("/home")),
        "write_task": attempt(lambda: open("/var/task/x", "w")),
        "write_usr": attempt(lambda: open("/usr/x", "w")),
        "write_etc": attempt(lambda: open("/etc/passwd", "a")),
        "tmp": attempt(lambda: open("/tmp/ok", "w").write("fine")),
        "fill_tmp": attempt(fill_tmp),
        "kill_server": attempt(lambda: os.kill(int(os.environ["SERVER_PID"]), signal.SIGKILL)),
        "mount": attempt(mount),
        "setuid": attempt(lambda: os.setuid(0)),
        "unshare": attempt(unshare),
        "ptrace": attempt(ptrace),
    }
"#;

#[test]
fn namespaced_functions_see_nothing_of_the_host_or_each_other() {
    if std::env::var("STRATUS_ISOLATION").as_deref() == Ok("none") {
        eprintln!(
            "STRATUS_ISOLATION=none: this suite checks namespace isolation and does not apply"
        );
        return;
    }
    let server = Server::start_with(&["--isolation", "namespaces", "--tmp-size", "16"]);
    let victim = server.path("victim");
    write_app(
        &victim,
        &[
            (
                "stratus.yaml",
                "app: victim\nfunctions:\n  f:\n    runtime: nodejs\n    handler: index.handler\n",
            ),
            ("index.js", "exports.handler = async () => 'still here';\n"),
        ],
    );
    server.ok(&["deploy", victim.to_str().unwrap()]);
    assert_eq!(server.invoke("victim/f", "{}")["result"], "still here");
    let victim_code = only_code_dir(&server);

    let hostile = server.path("hostile");
    // `f` takes a prestarted sandbox, made from the loaded Python
    // template; `own` (an interpreter variable in its env) starts its own
    // interpreter from scratch: both paths must hold.
    let env = format!(
        "    env:\n      DATA_DIR: {}\n      OTHER_CODE: {}\n      SERVER_PID: {}\n",
        server.data_dir.display(),
        victim_code.display(),
        server.pid()
    );
    let manifest = format!(
        "app: hostile\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n{env}  own:\n    runtime: python3\n    handler: main.handler\n{env}      PYTHONDONTWRITEBYTECODE: \"1\"\n"
    );
    write_app(
        &hostile,
        &[("stratus.yaml", &manifest), ("main.py", HOSTILE)],
    );
    server.ok(&["deploy", hostile.to_str().unwrap()]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for (function, prestarted) in [("f", true), ("own", false)] {
        let seen = server.invoke(&format!("hostile/{function}"), "{}");
        assert_eq!(seen["phases"]["prestarted"], prestarted, "{seen}");
        assert_eq!(seen["phases"]["from_template"], prestarted, "{seen}");
        assert_hostile_python_contained(&seen);
    }

    // The other app and the server are unharmed.
    assert_eq!(server.invoke("victim/f", "{}")["result"], "still here");
    assert!(
        std::fs::read_dir(server.data_dir.join("code"))
            .unwrap()
            .count()
            >= 2
    );
}

/// A data directory under a parent only root may enter (as `mktemp -d`
/// makes one) is isolated as any other: the default `auto` does not give
/// up on namespaces because the sandbox root is hard to reach.
#[test]
fn a_data_dir_under_a_private_parent_is_isolated_by_default() {
    use std::os::unix::fs::PermissionsExt;
    if std::env::var("STRATUS_ISOLATION").as_deref() == Ok("none") {
        eprintln!("STRATUS_ISOLATION=none: this test checks namespace isolation");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let server = Server::start_in(dir, &["--isolation", "auto"]);
    let app = server.path("hostile");
    let manifest = format!(
        "app: hostile\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    env:\n      DATA_DIR: {}\n      OTHER_CODE: /\n      SERVER_PID: {}\n",
        server.data_dir.display(),
        server.pid()
    );
    write_app(&app, &[("stratus.yaml", &manifest), ("main.py", HOSTILE)]);
    server.ok(&["deploy", app.to_str().unwrap()]);
    let seen = server.invoke("hostile/f", "{}");
    assert_eq!(seen["result"]["uid"], "1000", "{seen}");
    for key in ["shadow", "token", "data_dir", "kill_server"] {
        let outcome = seen["result"][key].as_str().unwrap_or_default();
        assert!(outcome.starts_with("refused"), "{key}: {seen}");
    }
}

/// Isolation that cannot be had stops the server with the reason and the
/// way out, unless the operator asked for `auto`, and the host (here: a
/// server that is not root) cannot have it: then it runs, and says so.
#[test]
fn isolation_that_cannot_be_had_is_refused_or_announced() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        eprintln!("not root: cannot start a server as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = dir.path().join("stratus");
    std::fs::copy(common::BIN, &bin).unwrap();
    let as_nobody = |isolation: &str, data: &str| {
        std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(&bin)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--isolation", isolation, "--data-dir"])
            .arg(dir.path().join(data))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run setpriv (util-linux)")
    };
    let refused = as_nobody("namespaces", "a").wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "--isolation namespaces: cannot isolate tenants here: the server does not run as root"
        ) && stderr.contains("--isolation none"),
        "{stderr}"
    );

    let auto = as_nobody("auto", "b");
    let server_file = dir.path().join("b/server.json");
    let started = std::time::Instant::now();
    while !server_file.exists() && started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        server_file.exists(),
        "auto runs where the host cannot isolate"
    );
    std::process::Command::new("kill")
        .arg(auto.id().to_string())
        .status()
        .unwrap();
    let out = auto.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TENANT ISOLATION IS OFF")
            && stderr.contains("the server does not run as root"),
        "{stderr}"
    );
}

fn assert_hostile_python_contained(seen: &serde_json::Value) {
    let r = &seen["result"];
    assert!(seen["error"].is_null(), "{seen}");
    eprintln!("{}", serde_json::to_string_pretty(r).unwrap());

    assert_eq!(r["uid"], "1000", "an unprivileged user: {r}");
    assert_eq!(r["cap_eff"], "0000000000000000", "no capabilities: {r}");
    assert_eq!(r["no_new_privs"], "1");
    assert_eq!(r["pid"], 2, "its own pid namespace, under its init: {r}");
    assert_eq!(
        r["processes"],
        serde_json::json!(["1", "2"]),
        "no other process than its init is visible: {r}"
    );
    for key in [
        "shadow",
        "data_dir",
        "token",
        "other_code",
        "home",
        "write_task",
        "write_usr",
        "write_etc",
        "kill_server",
        "mount",
        "setuid",
        "unshare",
        "fill_tmp",
    ] {
        let outcome = r[key].as_str().unwrap();
        assert!(
            outcome.starts_with("refused"),
            "{key} must be refused, got: {outcome}"
        );
    }
    assert!(
        r["fill_tmp"].as_str().unwrap().contains("No space left"),
        "{r}"
    );
    assert!(r["tmp"].as_str().unwrap().starts_with("allowed"), "{r}");
    let root_home = r["root_home"].as_str().unwrap();
    assert!(
        root_home.starts_with("refused")
            || !root_home.contains("admin.token") && !root_home.contains(".ssh"),
        "{root_home}"
    );
}

/// The code directory of the one app deployed so far.
fn only_code_dir(server: &Server) -> std::path::PathBuf {
    std::fs::read_dir(server.data_dir.join("code"))
        .unwrap()
        .flatten()
        .find(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .unwrap()
        .path()
}

/// Builds `tests/hostile.c` as a static binary: a custom runtime that
/// attacks its sandbox from native code, with no interpreter in between.
fn build_hostile(to: &std::path::Path) {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile.c");
    let out = std::process::Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(to)
        .arg(source)
        .output()
        .expect("run cc: the static hostile suite needs a C compiler and static libc (libc6-dev)");
    assert!(
        out.status.success(),
        "cc -static failed (static libc is in libc6-dev): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_static_hostile_binary_is_contained() {
    let isolated = std::env::var("STRATUS_ISOLATION").as_deref() != Ok("none");
    let server = Server::start_with(&["--pids-max", "64"]);
    let victim = server.path("victim");
    write_app(
        &victim,
        &[
            (
                "stratus.yaml",
                "app: victim\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", "def handler(e, c):\n    return 'still here'\n"),
        ],
    );
    server.ok(&["deploy", victim.to_str().unwrap()]);
    let victim_code = only_code_dir(&server);
    let hostile = server.path("native");
    std::fs::create_dir_all(&hostile).unwrap();
    build_hostile(&hostile.join("bootstrap"));
    let manifest = format!(
        "app: native\nfunctions:\n  f:\n    runtime: provided\n    memory: 128\n    env:\n      DATA_DIR: {}\n      OTHER_CODE: {}\n      SERVER_PID: {}\n      ADMIN_PORT: {}\n",
        server.data_dir.display(),
        victim_code.display(),
        server.pid(),
        server.admin.rsplit(':').next().unwrap()
    );
    write_app(&hostile, &[("stratus.yaml", &manifest)]);
    server.ok(&["deploy", hostile.to_str().unwrap()]);
    std::thread::sleep(std::time::Duration::from_millis(1000));

    if isolated {
        let seen = server.invoke("native/f", "{}");
        let r = &seen["result"];
        assert!(seen["error"].is_null(), "{seen}");
        eprintln!("{}", serde_json::to_string_pretty(r).unwrap());
        assert_eq!(r["uid"], 1000, "{r}");
        assert_eq!(r["pid"], 2, "under its init: {r}");
        for (key, outcome) in r.as_object().unwrap() {
            if key == "uid" || key == "pid" {
                continue;
            }
            assert!(
                outcome.as_str().unwrap().starts_with("refused"),
                "{key} must be refused, got: {outcome}"
            );
        }
    }

    // Bombs are stopped by the instance's limits, with or without namespaces.
    let forked = server.invoke("native/f", r#"{"bomb":"fork"}"#);
    let stopped = forked["result"]["fork_bomb"].as_str().unwrap_or_default();
    assert!(
        stopped.starts_with("stopped after")
            && stopped.contains("Resource temporarily unavailable"),
        "{forked}"
    );
    let made: u32 = stopped
        .trim_start_matches("stopped after ")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(made < 64, "the pids limit holds: {forked}");
    let exhausted = server.invoke("native/f", r#"{"bomb":"memory"}"#);
    assert_eq!(
        exhausted["error"]["errorMessage"], "out of memory (limit 128 MiB)",
        "{exhausted}"
    );
    assert_eq!(server.invoke("victim/f", "{}")["result"], "still here");
}

/// A handler whose subprocesses leave orphans behind: its init reaps them,
/// so they do not pile up as zombies toward the pids limit.
#[test]
fn a_function_s_orphans_are_reaped() {
    if std::env::var("STRATUS_ISOLATION").as_deref() == Ok("none") {
        eprintln!("STRATUS_ISOLATION=none: orphans go to the host's init");
        return;
    }
    let server = Server::start_with(&["--isolation", "namespaces", "--pids-max", "32"]);
    let app = server.path("orphans");
    write_app(
        &app,
        &[
            (
                "stratus.yaml",
                "app: orphans\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "main.py",
                "import os, subprocess, time\n\ndef zombies():\n    n = 0\n    for p in os.listdir('/proc'):\n        if p.isdigit():\n            try:\n                n += ' Z ' in open('/proc/%s/stat' % p).read()\n            except OSError:\n                pass\n    return n\n\ndef handler(event, context):\n    for _ in range(40):\n        subprocess.run(['/bin/sh', '-c', '/bin/true & exit 0'])\n    time.sleep(0.3)\n    return {'zombies': zombies(), 'pid': os.getpid()}\n",
            ),
        ],
    );
    server.ok(&["deploy", app.to_str().unwrap()]);
    for _ in 0..2 {
        let seen = server.invoke("orphans/f", "{}");
        assert!(seen["error"].is_null(), "{seen}");
        assert_eq!(seen["result"]["zombies"], 0, "{seen}");
    }
}

#[test]
fn network_none_leaves_only_loopback_and_the_runtime_api() {
    if std::env::var("STRATUS_ISOLATION").as_deref() == Ok("none") {
        eprintln!("STRATUS_ISOLATION=none: private networks need namespaces");
        return;
    }
    let server = Server::start_with(&["--isolation", "namespaces"]);
    let admin_port = server.admin.rsplit(':').next().unwrap().to_owned();
    let dir = server.path("offline");
    let manifest = format!(
        "app: offline\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    network: none\n    env:\n      ADMIN_PORT: {admin_port}\n  js:\n    runtime: nodejs\n    handler: index.handler\n    network: none\n"
    );
    write_app(
        &dir,
        &[
            ("stratus.yaml", &manifest),
            (
                "main.py",
                "import os, socket\ndef handler(e, c):\n    try:\n        socket.create_connection(('127.0.0.1', int(os.environ['ADMIN_PORT'])), timeout=2)\n        admin = 'connected'\n    except OSError as err:\n        admin = type(err).__name__\n    return {'admin': admin, 'interfaces': [n for _, n in socket.if_nameindex()], 'api': os.environ['AWS_LAMBDA_RUNTIME_API']}\n",
            ),
            (
                "index.js",
                "exports.handler = async () => 'node offline';\n",
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let r = server.invoke("offline/f", "{}");
    assert!(r["error"].is_null(), "{r}");
    assert_eq!(
        r["result"]["admin"], "ConnectionRefusedError",
        "the admin listener is out of reach: {r}"
    );
    assert_eq!(r["result"]["interfaces"], serde_json::json!(["lo"]));
    assert_eq!(r["result"]["api"], "127.0.0.1:9001");
    // Warm calls and other runtimes work the same way.
    assert_eq!(server.invoke("offline/f", "{}")["cold"], false);
    assert_eq!(server.invoke("offline/js", "{}")["result"], "node offline");
}

const NETWORK_PROBE: &str = r#"import ctypes, os, socket

def connect(host, port, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, port))
        return "connected"
    except OSError as err:
        return type(err).__name__
    finally:
        s.close()

def abstract(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + name)
        return "connected"
    except OSError as err:
        return type(err).__name__
    finally:
        s.close()

def listen(host=None):
    # With no host, a listen with no bind: on every address, at a port
    # the kernel picks.
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if host is not None:
            s.bind((host, 0))
        s.listen(8)
        return "listening on " + s.getsockname()[0]
    except OSError as err:
        return type(err).__name__
    finally:
        s.close()

def handler(event, context):
    own_host, own_port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
    if "other" not in event:
        return {"api": os.environ["AWS_LAMBDA_RUNTIME_API"]}
    other_host, other_port = event["other"].split(":")
    return {
        "own_api": connect(own_host, int(own_port)),
        "other_api": connect(other_host, int(other_port)),
        "admin": connect("127.0.0.1", event["admin"]),
        "admin_mapped": connect("::ffff:127.0.0.1", event["admin"], socket.AF_INET6),
        "host_service": connect("127.0.0.1", event["service"]),
        "public": connect("127.0.0.1", event["public"]),
        "abstract": abstract(event["abstract"]),
        "implicit_listen": listen(),
        "loopback_listen": listen("127.0.0.1"),
    }
"#;

/// `network: outbound` (the default) shares the host's network, fenced:
/// the platform's admin listener and other instances' Runtime APIs are out
/// of reach, anything else is not; a listener on every address at a port
/// the kernel picks is refused, one on loopback is not.
#[test]
fn outbound_reaches_out_but_not_the_platform_or_other_instances() {
    if std::env::var("STRATUS_ISOLATION").as_deref() == Ok("none") {
        eprintln!("STRATUS_ISOLATION=none: the network fence needs namespaces");
        return;
    }
    let server = Server::start_with(&["--isolation", "namespaces"]);
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(server.data_dir.join("server.json")).unwrap(),
    )
    .unwrap();
    let port_of = |url: &str| -> u16 { url.rsplit(':').next().unwrap().parse().unwrap() };
    let (admin, public) = (
        port_of(&server.admin),
        port_of(info["public"].as_str().unwrap()),
    );
    // A service on the host, and an abstract socket of a host process.
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let abstract_name = format!("stratus-test-{}", std::process::id());
    let abstract_addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            &abstract_name,
        )
        .unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&abstract_addr).unwrap();

    let dir = server.path("probe");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: probe\nfunctions:\n  victim:\n    runtime: python3\n    handler: main.handler\n  f:\n    runtime: python3\n    handler: main.handler\n  own:\n    runtime: python3\n    handler: main.handler\n    env:\n      PYTHONDONTWRITEBYTECODE: \"1\"\n",
            ),
            ("main.py", NETWORK_PROBE),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let victim = server.invoke("probe/victim", "{}");
    let victim_api = victim["result"]["api"].as_str().unwrap().to_owned();
    assert!(victim_api.starts_with("127.90.0.1:"), "{victim}");
    let event = serde_json::json!({
        "other": victim_api,
        "admin": admin,
        "public": public,
        "service": service.local_addr().unwrap().port(),
        "abstract": abstract_name,
    })
    .to_string();
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (function, prestarted) in [("f", true), ("own", false)] {
        let r = server.invoke(&format!("probe/{function}"), &event);
        assert_eq!(r["phases"]["prestarted"], prestarted, "{r}");
        let seen = &r["result"];
        for (what, expected) in [
            ("own_api", "connected"),
            ("other_api", "PermissionError"),
            ("admin", "PermissionError"),
            ("admin_mapped", "PermissionError"),
            ("host_service", "connected"),
            ("public", "connected"),
            ("abstract", "PermissionError"),
            ("implicit_listen", "PermissionError"),
            ("loopback_listen", "listening on 127.0.0.1"),
        ] {
            assert_eq!(seen[what], expected, "{function}: {what}: {r}");
        }
    }
    // The victim still has its Runtime API, and is still the warm instance.
    let again = server.invoke("probe/victim", "{}");
    assert_eq!(again["cold"], false, "{again}");
    assert_eq!(again["result"]["api"], victim_api.as_str());
}

/// Without namespaces, Landlock (ABI 6 and later) still keeps tenant code
/// from signalling anything outside its instance: not the server, not
/// the launcher. Its own children it may signal as usual.
#[test]
fn without_namespaces_tenants_cannot_signal_the_platform() {
    let server = Server::start_with(&["--isolation", "none"]);
    let dir = server.path("signals");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: signals\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n",
            ),
            (
                "main.py",
                r#"import ctypes, os, signal, subprocess

def attempt(pid):
    try:
        os.kill(pid, 0)
        return "allowed"
    except OSError as err:
        return type(err).__name__

def handler(event, context):
    abi = ctypes.CDLL(None, use_errno=True).syscall(444, None, 0, 1)
    child = subprocess.Popen(["sleep", "30"])
    own_child = attempt(child.pid)
    child.kill()
    child.wait()
    return {
        "abi": abi,
        "server": attempt(event["server"]),
        "launcher": attempt(os.getppid()),
        "own_child": own_child,
    }
"#,
            ),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let r = server.invoke(
        "signals/f",
        &serde_json::json!({ "server": server.pid() }).to_string(),
    );
    // Forked from the loaded template, and held to the same rules.
    assert_eq!(r["phases"]["from_template"], true, "{r}");
    let seen = &r["result"];
    assert_eq!(seen["own_child"], "allowed", "{r}");
    if seen["abi"].as_i64().unwrap_or(0) < 6 {
        eprintln!("Landlock ABI {} cannot scope signals: {r}", seen["abi"]);
        return;
    }
    assert_eq!(seen["server"], "PermissionError", "{r}");
    assert_eq!(seen["launcher"], "PermissionError", "{r}");
}

/// Connects (or, for `udp`, sends a datagram) to each target of the
/// event, and to the platform API when it was given one; says what
/// happened.
const EGRESS_PROBE: &str = r#"import os, socket

def attempt(kind, host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        if kind == "udp":
            s.sendto(b"x", (host, port))
            return "sent"
        s.connect((host, port))
        return "connected"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()

def probe(targets):
    seen = {k: attempt(*v) for k, v in targets.items()}
    if "STRATUS_API_URL" in os.environ:
        host, port = os.environ["STRATUS_API_URL"].split("//")[1].rsplit(":", 1)
        seen["platform_api"] = attempt("tcp", host, int(port))
    return seen

def handler(event, context):
    return probe(event["targets"])
"#;

/// The same probe as a service: `GET /?targets=JSON`.
const EGRESS_SERVICE: &str = r#"import http.server, json, os, urllib.parse
from main import probe

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        body = json.dumps(probe(json.loads(query["targets"][0]))).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A network namespace of the test's own, joined to the host by a veth
/// pair, with a TCP server on ports 8000 and 8001 of each of its
/// addresses; removed on drop.
struct RemoteHosts {
    netns: String,
    host: String,
    subnet: String,
    server: std::process::Child,
}

impl RemoteHosts {
    fn start() -> RemoteHosts {
        let id = std::process::id();
        let (netns, veth, peer) = (
            format!("stratus-egress-{id}"),
            format!("segh{}", id % 100_000),
            format!("segn{}", id % 100_000),
        );
        let subnet = format!("10.213.{}", id % 250);
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &netns])
            .output();
        ip(&["netns", "add", &netns]);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &netns]);
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &format!("{subnet}.2/24"), "dev", &peer]);
        inside(&["addr", "add", &format!("{subnet}.3/24"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &netns, &common::python(), "-c"])
            .arg(
                "import socket, threading\n\
                 def serve(port):\n    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    s.bind(('0.0.0.0', port)); s.listen(64)\n    while True: s.accept()[0].close()\n\
                 for p in (8000, 8001): threading.Thread(target=serve, args=(p,), daemon=True).start()\n\
                 print('ready', flush=True)\nthreading.Event().wait()\n",
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut hosts = RemoteHosts {
            netns,
            host: veth,
            subnet,
            server,
        };
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(hosts.server.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        hosts
    }

    fn addr(&self, n: u8) -> String {
        format!("{}.{n}", self.subnet)
    }
}

impl Drop for RemoteHosts {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        for args in [
            vec!["link", "del", &self.host],
            vec!["netns", "del", &self.netns],
        ] {
            let _ = std::process::Command::new("ip").args(args).output();
        }
    }
}

/// A name server for one name, `remote.egress.test`, whose A record
/// (TTL 1 s) is whatever `answer` holds; every other name does not exist.
fn name_server(answer: std::sync::Arc<std::sync::Mutex<std::net::Ipv4Addr>>) -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            let query = &buf[..len];
            if len < 17 {
                continue;
            }
            // The question: its name, then type and class.
            let mut at = 12;
            let mut labels = Vec::new();
            while at < len && query[at] != 0 {
                let l = query[at] as usize;
                labels.push(String::from_utf8_lossy(&query[at + 1..at + 1 + l]).into_owned());
                at += 1 + l;
            }
            let end = at + 5;
            let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
            let known = labels.join(".") == "remote.egress.test";
            let mut reply = query[..end].to_vec();
            reply[2] = 0x81;
            reply[3] = if known { 0x80 } else { 0x83 };
            reply[6..12].fill(0);
            if known && qtype == 1 {
                reply[7] = 1;
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
                reply.extend_from_slice(&answer.lock().unwrap().octets());
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    port
}

/// `network: { outbound: [...], loopback: ... }` narrows where a function
/// or a service may connect, by TCP and UDP, to destinations named by
/// address or by a host name, which is resolved again as its TTL runs
/// out; the platform's own endpoints stay reachable. Without the fence
/// such an instance does not start, rather than reach everywhere.
#[test]
fn egress_rules_narrow_where_instances_connect() {
    let none = std::env::var("STRATUS_ISOLATION").as_deref() == Ok("none");
    let remote = RemoteHosts::start();
    let answer = std::sync::Arc::new(std::sync::Mutex::new(
        remote.addr(2).parse::<std::net::Ipv4Addr>().unwrap(),
    ));
    let dns = name_server(answer.clone());
    let isolation = if none { "none" } else { "namespaces" };
    let server = Server::start_with(&[
        "--isolation",
        isolation,
        "--resolver",
        &format!("127.0.0.1:{dns}"),
    ]);
    let listed_loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_loopback = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (l1, l2) = (
        listed_loopback.local_addr().unwrap().port(),
        other_loopback.local_addr().unwrap().port(),
    );
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(server.data_dir.join("server.json")).unwrap(),
    )
    .unwrap();
    let public: u16 = info["public"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (two, three) = (remote.addr(2), remote.addr(3));
    let listed = format!(
        "{{ outbound: [\"remote.egress.test:8000\", \"{three}:8001\", \"127.0.0.1:{l1}\"] }}"
    );
    let dir = server.path("egress");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                &format!(
                    "app: egress\nfunctions:\n  open:\n    runtime: python3\n    handler: main.handler\n  listed:\n    runtime: python3\n    handler: main.handler\n    network: {listed}\n  noloop:\n    runtime: python3\n    handler: main.handler\n    network: {{ loopback: false }}\nservices:\n  web:\n    command: [python3, web.py]\n    http: {{ path: /probe }}\n    network: {listed}\n"
                ),
            ),
            ("main.py", EGRESS_PROBE),
            ("web.py", EGRESS_SERVICE),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let targets = |list: &[(&str, &str, &str, u16)]| {
        let map: serde_json::Map<String, serde_json::Value> = list
            .iter()
            .map(|(k, kind, host, port)| ((*k).to_owned(), serde_json::json!([kind, host, port])))
            .collect();
        serde_json::json!({ "targets": map }).to_string()
    };
    let all = targets(&[
        ("name_8000", "tcp", &two, 8000),
        ("name_8001", "tcp", &two, 8001),
        ("three_8001", "tcp", &three, 8001),
        ("three_8000", "tcp", &three, 8000),
        ("loopback_listed", "tcp", "127.0.0.1", l1),
        ("loopback_other", "tcp", "127.0.0.1", l2),
        ("loopback_v6", "tcp", "::1", l2),
        ("public", "tcp", "127.0.0.1", public),
        ("udp_listed", "udp", &three, 8001),
        ("udp_other", "udp", &three, 9999),
    ]);
    let open = server.invoke("egress/open", &all);
    for what in [
        "name_8000",
        "name_8001",
        "three_8000",
        "loopback_other",
        "public",
        "platform_api",
    ] {
        assert_eq!(open["result"][what], "connected", "open: {what}: {open}");
    }
    assert_eq!(open["result"]["udp_other"], "sent", "{open}");

    if none {
        // Nothing here can narrow the network: the instance does not start.
        let out = server.cli(&["invoke", "egress/listed", "--data", &all]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("cannot narrow"), "{said}");
        return;
    }

    let listed = server.invoke("egress/listed", &all);
    let noloop = server.invoke("egress/noloop", &all);
    let service = common::client()
        .get(format!("{}/egress/probe", server.public))
        .query(&[(
            "targets",
            serde_json::from_str::<serde_json::Value>(&all).unwrap()["targets"].to_string(),
        )])
        .send()
        .unwrap();
    assert_eq!(service.status(), 200);
    let service: serde_json::Value = service.json().unwrap();
    for (what, from_list, without_loopback) in [
        ("name_8000", "connected", "connected"),
        ("name_8001", "PermissionError", "connected"),
        ("three_8001", "connected", "connected"),
        ("three_8000", "PermissionError", "connected"),
        ("loopback_listed", "connected", "PermissionError"),
        ("loopback_other", "PermissionError", "PermissionError"),
        ("loopback_v6", "PermissionError", "PermissionError"),
        ("public", "connected", "connected"),
        ("platform_api", "connected", "connected"),
        ("udp_listed", "sent", "sent"),
        ("udp_other", "PermissionError", "sent"),
    ] {
        assert_eq!(
            listed["result"][what], from_list,
            "listed: {what}: {listed}"
        );
        // Services are not given the platform API.
        if what != "platform_api" {
            assert_eq!(service[what], from_list, "service: {what}: {service}");
        }
        assert_eq!(
            noloop["result"][what], without_loopback,
            "noloop: {what}: {noloop}"
        );
    }

    // The name moves to the other address: once its TTL has run out, the
    // fence follows it, for the warm instance too.
    *answer.lock().unwrap() = three.parse().unwrap();
    let moved = targets(&[("old", "tcp", &two, 8000), ("new", "tcp", &three, 8000)]);
    common::eventually(std::time::Duration::from_secs(15), || {
        let r = server.invoke("egress/listed", &moved);
        match (r["result"]["old"].as_str(), r["result"]["new"].as_str()) {
            (Some("PermissionError"), Some("connected")) => Ok(()),
            _ => Err(format!("not followed yet: {r}")),
        }
    });
}
