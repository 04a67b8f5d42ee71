//! The init of `ProcessSpec::init`, for real: a launcher under namespaces
//! makes processes as the scheduler makes services (`/bin/sh -c 'exec
//! "$0" "$@"' ...`, started on activation), with and without the init,
//! and this process signals them as the server does and looks in `/proc`
//! at what runs and what is left.
//!
//! Needs what the server's isolation needs (root for the cgroups, user
//! and pid namespaces); with `STRATUS_ISOLATION=none` only the half
//! without namespaces runs. Its own `main`: the launchers are forked while
//! the process is still single-threaded.
#![allow(unsafe_code)] // waitpid, to reap the launchers at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stratus_sandbox::{
    Activation, ExitStatus, Isolation, IsolationRequest, LauncherClient, Mount, ProcessSpec, Start,
    launcher,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

/// How the scheduler runs a service's command.
const EXEC: &str = r#"exec "$0" "$@""#;

/// Handles every signal the init forwards: writes its number, and ends
/// with status 0 on SIGTERM. With `os.write`: `print` in a handler that
/// interrupts another's `print` fails as a reentrant call.
const HANDLER: &str = r#"
import os, signal, sys, time
sys.stderr = sys.stdout
def on(sig, frame):
    os.write(1, b"%d\n" % sig)
    if sig == signal.SIGTERM:
        sys.exit(0)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
          signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, on)
print("ready", flush=True)
while True:
    time.sleep(60)
"#;

/// Leaves an orphan that lives for two seconds: the inner shell exits at
/// once, and its background `sleep` goes to the namespace's first process.
const ORPHAN: &str = r#"sh -c "sleep 2 & exit 0"; echo ready; exec sleep 30"#;

/// Processes in every relation to the program: a child in its group, one
/// in a session of its own, one that ignores SIGTERM.
const FAMILY: &str =
    r#"sleep 30 & setsid sleep 30 & (trap "" TERM; exec sleep 30) & echo ready; exec sleep 30"#;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The real Python, and the directory to show in the sandbox for it.
struct Python {
    executable: String,
    prefix: PathBuf,
}

fn python() -> Python {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print(sys.executable); print(sys.base_prefix)",
        ])
        .output()
        .expect("python3 runs");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    Python {
        executable: lines.next().unwrap().to_owned(),
        prefix: lines.next().unwrap().into(),
    }
}

struct Setup {
    code: PathBuf,
    python: Python,
}

impl Setup {
    /// A service's process: `/bin/sh` with `args`, started on activation.
    fn spec(&self, args: &[&str], init: bool) -> ProcessSpec {
        // /usr is in every sandbox already.
        let mounts = (!self.python.prefix.starts_with("/usr"))
            .then(|| Mount {
                host: self.python.prefix.clone(),
                sandbox: self.python.prefix.clone(),
                writable: false,
            })
            .into_iter()
            .collect();
        ProcessSpec {
            program: "/bin/sh".into(),
            args: std::iter::once("-c")
                .chain(args.iter().copied())
                .map(str::to_owned)
                .collect(),
            cwd: "/".into(),
            env: vec![("PATH".to_owned(), PATH.to_owned())],
            mounts,
            task_root: "/var/task".into(),
            code: Some(self.code.clone()),
            start: Start::OnActivation,
            tmp_mb: 16,
            pids_max: 32,
            max_files: 1024,
            private_network: false,
            memory_mb: 128,
            init,
            template: false,
            unprivileged: false,
        }
    }

    /// The command `argv`, as the scheduler runs a service's.
    fn service(&self, argv: &[&str], init: bool) -> ProcessSpec {
        let mut args = vec![EXEC];
        args.extend(argv);
        self.spec(&args, init)
    }

    fn activation(&self, spec: &ProcessSpec) -> Activation {
        Activation {
            code: self.code.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            program: spec.program.clone(),
            memory_mb: spec.memory_mb,
            args: None,
            runtime_api_port: None,
            service_addr: None,
            egress: None,
        }
    }
}

/// A running process, as the server holds it.
struct Instance {
    pid: u32,
    stdout: BufReader<pipe::Receiver>,
    _stderr: pipe::Receiver,
    exited: oneshot::Receiver<ExitStatus>,
}

impl Instance {
    async fn line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), self.stdout.read_line(&mut line))
            .await
            .unwrap_or_else(|_| panic!("no line in 30s: {:?}", tree(self.pid)))
            .unwrap();
        line.trim_end().to_owned()
    }

    /// How it ended, if it did within `within`.
    async fn ended(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, &mut self.exited)
            .await
            .ok()
            .map(|s| s.expect("the launcher reports the exit"))
    }
}

/// Makes the process and, when it starts on activation, activates it.
async fn start(client: &LauncherClient, setup: &Setup, spec: &ProcessSpec) -> Instance {
    let spawned = client.spawn(spec).await.unwrap();
    if spec.start == Start::OnActivation {
        client
            .activate(spawned.pid, &setup.activation(spec))
            .await
            .unwrap();
    }
    Instance {
        pid: spawned.pid,
        stdout: BufReader::new(spawned.stdout),
        _stderr: spawned.stderr,
        exited: spawned.exited,
    }
}

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    name: String,
    state: char,
    pgrp: u32,
}

fn stat(pid: u32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    Some(Proc {
        pid,
        name: text[open + 1..close].to_owned(),
        state: rest.first()?.chars().next()?,
        pgrp: rest.get(2)?.parse().ok()?,
    })
}

/// `pid` and every process under it, in host pids: `pid` first, then its
/// children as they were born (or reparented), then theirs.
fn tree(pid: u32) -> Vec<Proc> {
    let mut found = Vec::new();
    let mut queue = std::collections::VecDeque::from([pid]);
    while let Some(pid) = queue.pop_front() {
        let Some(proc) = stat(pid) else { continue };
        found.push(proc);
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter();
        for task in tasks.flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            queue.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    found
}

fn names(procs: &[Proc]) -> Vec<&str> {
    procs.iter().map(|p| p.name.as_str()).collect()
}

/// Waits up to `within` for `f` to give something.
async fn until<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = f() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for the init at `pid` to run `count` processes under it, all of
/// them `program` (when they have exec'd it); returns the tree, the init
/// first and the program second.
async fn running(pid: u32, count: usize, program: &str) -> Vec<Proc> {
    until(Duration::from_secs(10), || {
        let procs = tree(pid);
        (procs.len() == count + 1 && procs[1..].iter().all(|p| p.name == program)).then_some(procs)
    })
    .await
    .unwrap_or_else(|| panic!("{program} under the init at {pid}: {:?}", tree(pid)))
}

fn gone(procs: &[Proc]) -> bool {
    procs
        .iter()
        .all(|p| !Path::new(&format!("/proc/{}", p.pid)).exists())
}

fn signalled(signal: i32) -> ExitStatus {
    ExitStatus {
        code: None,
        signal: Some(signal),
        oom_killed: false,
    }
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus {
        code: Some(code),
        signal: None,
        oom_killed: false,
    }
}

async fn namespaced(client: &LauncherClient, setup: &Setup) {
    println!("limits: {}", client.limits());

    // Without the init, the program is the namespace's first process, and
    // a SIGTERM from outside is lost on one without a handler.
    let mut instance = start(client, setup, &setup.service(&["sleep", "30"], false)).await;
    until(Duration::from_secs(10), || {
        (stat(instance.pid)?.name == "sleep").then_some(())
    })
    .await
    .expect("sleep runs");
    stratus_sandbox::terminate_group(instance.pid);
    assert_eq!(instance.ended(Duration::from_secs(1)).await, None);
    stratus_sandbox::kill_group(instance.pid);
    let status = instance.ended(Duration::from_secs(5)).await;
    assert_eq!(status, Some(signalled(libc::SIGKILL)));
    println!("without init: SIGTERM ignored, SIGKILL needed");

    // With it, the same program dies of the SIGTERM at once.
    let mut instance = start(client, setup, &setup.service(&["sleep", "30"], true)).await;
    let procs = running(instance.pid, 1, "sleep").await;
    let (init, program) = (&procs[0], &procs[1]);
    assert_ne!(init.name, "sleep");
    // The program leads a group of its own; the init leads the one the
    // server signals.
    assert_eq!(init.pgrp, init.pid, "{procs:?}");
    assert_eq!(program.pgrp, program.pid, "{procs:?}");
    // The init keeps nothing of the launcher's: only the status pipe.
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", init.pid))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_link(e.path()).unwrap())
        .collect();
    assert_eq!(fds.len(), 1, "the init's descriptors: {fds:?}");
    assert!(fds[0].to_string_lossy().starts_with("pipe:"), "{fds:?}");
    let since = Instant::now();
    stratus_sandbox::terminate_group(instance.pid);
    let status = instance.ended(Duration::from_secs(2)).await;
    println!("with init: SIGTERM ends sleep in {:?}", since.elapsed());
    assert_eq!(status, Some(signalled(libc::SIGTERM)));
    assert!(gone(&procs));

    // Every forwarded signal reaches a program that handles it, once; on
    // SIGTERM it ends with 0, and that is the status.
    let python = setup.python.executable.as_str();
    let spec = setup.service(&[python, "-c", HANDLER], true);
    let mut instance = start(client, setup, &spec).await;
    assert_eq!(instance.line().await, "ready");
    for signal in [
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        stratus_sandbox::signal_group(instance.pid, signal);
        assert_eq!(instance.line().await, signal.to_string());
    }
    stratus_sandbox::terminate_group(instance.pid);
    assert_eq!(instance.line().await, libc::SIGTERM.to_string());
    let mut rest = String::new();
    instance.stdout.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "", "a signal came twice");
    let status = instance.ended(Duration::from_secs(2)).await;
    assert_eq!(status, Some(exited(0)));
    println!("with init: forwarded INT HUP QUIT USR1 USR2 TERM once each, status 0");

    // The program's status is the process's: an exit code, or the signal
    // that ended it, not the 128 + signal the init exits with.
    for (script, want) in [
        ("exit 3", exited(3)),
        ("kill -USR1 $$", signalled(libc::SIGUSR1)),
    ] {
        let mut instance = start(client, setup, &setup.spec(&[script], true)).await;
        let status = instance.ended(Duration::from_secs(5)).await;
        assert_eq!(status, Some(want), "{script}");
    }
    // And a program that cannot start fails its activation, as without:
    // its exec fails in the init's child, which says so.
    let spec = setup.spec(&["true"], true);
    let spawned = client.spawn(&spec).await.unwrap();
    let activation = Activation {
        program: "/no/such/program".into(),
        ..setup.activation(&spec)
    };
    let err = client
        .activate(spawned.pid, &activation)
        .await
        .unwrap_err()
        .to_string();
    println!("with init, a missing program: {err}");
    assert!(err.contains("execute"), "{err}");
    let status = tokio::time::timeout(Duration::from_secs(5), spawned.exited)
        .await
        .unwrap()
        .unwrap();
    // Its 127, unless the launcher's kill on failure beat the init to it.
    assert!(
        status == exited(127) || status == signalled(libc::SIGKILL),
        "{status:?}"
    );

    // Orphans: the init reaps them; without it they stay zombies.
    let mut instance = start(client, setup, &setup.spec(&[ORPHAN], true)).await;
    assert_eq!(instance.line().await, "ready");
    let procs = running(instance.pid, 2, "sleep").await;
    println!("with init, an orphan: {:?}", names(&procs));
    let reaped = until(Duration::from_secs(5), || {
        let procs = tree(instance.pid);
        (procs.len() == 2).then_some(procs)
    })
    .await
    .unwrap_or_else(|| panic!("the orphan is not reaped: {:?}", tree(instance.pid)));
    assert!(reaped.iter().all(|p| p.state != 'Z'), "{reaped:?}");
    assert!(
        tree(instance.pid).iter().all(|p| p.state != 'Z'),
        "{:?}",
        tree(instance.pid)
    );
    println!("with init, the orphan reaped: {:?}", names(&reaped));
    stratus_sandbox::kill_group(instance.pid);
    instance.ended(Duration::from_secs(5)).await.unwrap();

    let mut instance = start(client, setup, &setup.spec(&[ORPHAN], false)).await;
    assert_eq!(instance.line().await, "ready");
    let zombie = until(Duration::from_secs(5), || {
        tree(instance.pid).into_iter().find(|p| p.state == 'Z')
    })
    .await
    .expect("without init the orphan stays a zombie");
    println!("without init, a zombie: {zombie:?}");
    stratus_sandbox::kill_group(instance.pid);
    instance.ended(Duration::from_secs(5)).await.unwrap();

    // The program's end is the namespace's, whatever else runs there:
    // after a SIGTERM, and after a SIGKILL of the group.
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut instance = start(client, setup, &setup.spec(&[FAMILY], true)).await;
        assert_eq!(instance.line().await, "ready");
        let procs = running(instance.pid, 4, "sleep").await;
        assert!(
            procs
                .iter()
                .any(|p| p.pgrp != procs[1].pgrp && p.pid != procs[0].pid),
            "one in a group of its own: {procs:?}"
        );
        stratus_sandbox::signal_group(instance.pid, signal);
        let status = instance.ended(Duration::from_secs(2)).await;
        assert_eq!(status, Some(signalled(signal)));
        assert!(
            until(Duration::from_secs(2), || gone(&procs).then_some(()))
                .await
                .is_some(),
            "left after signal {signal}: {procs:?}"
        );
        println!(
            "with init, signal {signal}: all of {:?} gone",
            names(&procs)
        );
    }

    // A process that gets its activation on descriptor 3 at once gets it
    // under the init too.
    let mut spec = setup.spec(&["read line <&3; echo \"$line\""], true);
    spec.start = Start::Now;
    let mut instance = start(client, setup, &spec).await;
    client
        .activate(instance.pid, &setup.activation(&spec))
        .await
        .unwrap();
    let line = instance.line().await;
    assert!(line.contains("\"program\":\"/bin/sh\""), "{line}");
    let status = instance.ended(Duration::from_secs(5)).await;
    assert_eq!(status, Some(exited(0)));

    // A program killed at its memory limit is reported so.
    if client.limits().contains("memory") {
        let mut spec = setup.service(&[python, "-c", "b = b'x' * (512 << 20)"], true);
        spec.memory_mb = 64;
        let mut instance = start(client, setup, &spec).await;
        let status = instance.ended(Duration::from_secs(30)).await.unwrap();
        println!("with init, over its memory: {status}");
        assert!(status.oom_killed, "{status:?}");
        assert_eq!(status.signal, Some(libc::SIGKILL), "{status:?}");
    } else {
        println!("no memory limits here: the OOM report is not checked");
    }
}

/// Without namespaces the program leads its group itself: `init` changes
/// nothing.
async fn plain(client: &LauncherClient, setup: &Setup) {
    let mut instance = start(client, setup, &setup.service(&["sleep", "30"], true)).await;
    until(Duration::from_secs(10), || {
        (stat(instance.pid)?.name == "sleep").then_some(())
    })
    .await
    .expect("sleep runs, as the process itself");
    assert_eq!(tree(instance.pid).len(), 1);
    stratus_sandbox::terminate_group(instance.pid);
    let status = instance.ended(Duration::from_secs(2)).await;
    assert_eq!(status, Some(signalled(libc::SIGTERM)));
    println!("without namespaces, init changes nothing: SIGTERM ends sleep");
}

fn main() {
    let namespaces = std::env::var("STRATUS_ISOLATION").as_deref() != Ok("none");
    let state = std::env::temp_dir().join(format!("stratus-init-{}", std::process::id()));
    let setup = Setup {
        code: state.join("code"),
        python: python(),
    };
    std::fs::create_dir_all(&setup.code).unwrap();
    // Both forked now, while this process has one thread.
    let namespaced_launcher = namespaces.then(|| {
        launcher::start(
            IsolationRequest::Exactly(Isolation::Namespaces),
            &state.join("namespaces"),
        )
        .unwrap()
    });
    let plain_launcher = launcher::start(
        IsolationRequest::Exactly(Isolation::None),
        &state.join("none"),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Left running when the launchers go, as the server leaves instances.
    let left = runtime.block_on(async {
        let mut left = Vec::new();
        if let Some(handle) = namespaced_launcher {
            let client = LauncherClient::connect(handle).unwrap();
            assert_eq!(
                client.isolation(),
                Isolation::Namespaces,
                "{}",
                client.reason()
            );
            namespaced(&client, &setup).await;
            let mut instance = start(&client, &setup, &setup.spec(&[FAMILY], true)).await;
            assert_eq!(instance.line().await, "ready");
            left = running(instance.pid, 4, "sleep").await;
        } else {
            eprintln!("STRATUS_ISOLATION=none: checking without namespaces only");
        }
        let client = LauncherClient::connect(plain_launcher).unwrap();
        plain(&client, &setup).await;
        left
    });
    // Closing the launchers' sockets ends them, and their instances.
    drop(runtime);
    // SAFETY: waitpid writes nothing; the launchers are our only children.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } > 0 {}
    assert!(gone(&left), "left after the launcher: {left:?}");
    if !left.is_empty() {
        println!("the launcher's end took all of {:?}", names(&left));
    }
    let _ = std::fs::remove_dir_all(&state);
    println!("init: ok");
}
