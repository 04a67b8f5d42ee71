//! A real `stratus server` in a temporary data directory, and the real CLI
//! to drive it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stratus");

pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub admin: String,
    /// The public listener, `http://127.0.0.1:PORT`.
    pub public: String,
    pub token: String,
    /// The arguments `start_with` was given, for `restart`.
    extra: Vec<String>,
}

/// Where the CLI of a test server keeps contexts: beside its data
/// directory, never in the user's home.
pub fn config_dir(data_dir: &Path) -> PathBuf {
    data_dir.with_file_name("config")
}

/// Spawns `stratus server` on `data_dir` with ephemeral listeners, its
/// log (filtered by `rust_log`) written to `log`.
#[allow(dead_code)]
pub fn spawn_logging_to(data_dir: &Path, extra: &[&str], log: &Path, rust_log: &str) -> Child {
    let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    spawn_server_with(
        data_dir,
        &extra,
        Stdio::from(std::fs::File::create(log).unwrap()),
        rust_log,
    )
}

/// Spawns `stratus server` on `data_dir` with ephemeral listeners.
fn spawn_server(data_dir: &Path, extra: &[String], stderr: Stdio) -> Child {
    spawn_server_with(data_dir, extra, stderr, "warn")
}

fn spawn_server_with(data_dir: &Path, extra: &[String], stderr: Stdio, rust_log: &str) -> Child {
    // The Python runtime's own packages (boto3) are installed only where a
    // test asks for them: each server would fetch them anew.
    let packages =
        (!extra.iter().any(|a| a.starts_with("--python-packages"))).then_some("--python-packages=");
    Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(packages)
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", rust_log)
        // What the CLI remembers stays with the test.
        .env("STRATUS_CONFIG_DIR", config_dir(data_dir))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start stratus server")
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_in(tempfile::tempdir().expect("temp dir"), extra)
    }

    /// Starts a server whose data directory is `data` in `dir`.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let data_dir = dir.path().join("data");
        Server::start_at(dir, data_dir, extra)
    }

    /// Starts a server whose data directory is `data_dir`, with `dir` as
    /// its temporary directory.
    pub fn start_at(dir: tempfile::TempDir, data_dir: PathBuf, extra: &[&str]) -> Server {
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        let child = spawn_server(&data_dir, &extra, Stdio::null());
        let server_file = data_dir.join("server.json");
        let started = Instant::now();
        while !server_file.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&server_file).unwrap()).unwrap();
        let token = std::fs::read_to_string(data_dir.join("admin.token")).unwrap();
        Server {
            child: Some(child),
            dir,
            data_dir,
            admin: info["admin"].as_str().unwrap().to_owned(),
            public: info["public"].as_str().unwrap().to_owned(),
            token: token.trim().to_owned(),
            extra,
        }
    }

    /// Starts a new server process on the same data directory, with the
    /// same arguments, after `stop` or `kill` (as an operator would after a
    /// crash), and refreshes `admin`, `public` and `token`. A server killed
    /// with SIGKILL leaves its `server.json` behind, so this waits for the
    /// new server to write its own (a new file: `server.json` is replaced by
    /// a rename). While the old server's processes still hold the data
    /// directory's lock the new one exits; it is started again.
    pub fn restart(&mut self) {
        use std::os::unix::fs::MetadataExt;
        assert!(
            self.child.is_none(),
            "stop or kill the server before restarting it"
        );
        let server_file = self.data_dir.join("server.json");
        let inode = || std::fs::metadata(&server_file).ok().map(|m| m.ino());
        let stale = inode();
        let log_path = self.dir.path().join("restart.log");
        let spawn = |extra: &[String]| {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap();
            spawn_server(&self.data_dir, extra, Stdio::from(log))
        };
        let started = Instant::now();
        let mut child = spawn(&self.extra);
        loop {
            let now = inode();
            if now.is_some() && now != stale {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "the restarted server exited ({status}): {log}"
                );
                std::thread::sleep(Duration::from_millis(200));
                child = spawn(&self.extra);
                continue;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the restarted server did not start: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&server_file).unwrap()).unwrap();
        let token = std::fs::read_to_string(self.data_dir.join("admin.token")).unwrap();
        self.admin = info["admin"].as_str().unwrap().to_owned();
        self.public = info["public"].as_str().unwrap().to_owned();
        self.token = token.trim().to_owned();
        self.child = Some(child);
    }

    /// Runs `stratus ARGS` against this server, from its temp directory.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, "")
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        output_with_stdin(
            Command::new(BIN)
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(args)
                .env("STRATUS_CONFIG_DIR", config_dir(&self.data_dir))
                .current_dir(self.dir.path()),
            stdin,
        )
    }

    /// Runs the CLI and insists that it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "stratus {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI and insists that it fails; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "stratus {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// `stratus invoke --output json`, parsed.
    pub fn invoke(&self, target: &str, data: &str) -> serde_json::Value {
        let out = self.cli(&["invoke", target, "--data", data, "--output", "json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or_else(|_| {
            panic!(
                "invoke {target} printed no JSON: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits for the server to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server gets no chance to clean up.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `command` with `stdin` as its standard input, and collects its output.
pub fn output_with_stdin(command: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A blocking HTTP client with a timeout that no test should reach.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The request id the gateway put on `response`.
pub fn request_id(response: &reqwest::blocking::Response) -> String {
    response
        .headers()
        .get("x-stratus-request-id")
        .expect("every response carries x-stratus-request-id")
        .to_str()
        .unwrap()
        .to_owned()
}

/// `stratus deploy` of `dir`, a directory in the server's temp directory.
pub fn deploy(server: &Server, dir: &str) -> String {
    server.ok(&["deploy", server.path(dir).to_str().unwrap()])
}

/// Writes `files` (path, content) under `dir`; paths ending in `bootstrap` are made executable.
pub fn write_app(dir: &Path, files: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        if path.ends_with("bootstrap") {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// `target/test-deps/NAME`, filled once by `install` (which gets the empty
/// directory) and marked done, so later runs reuse it.
fn test_deps(name: &str, install: impl FnOnce(&Path) -> Command) -> PathBuf {
    // Tests of one binary run in parallel: one installs while the others wait.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/test-deps")
        .join(name);
    let marker = target.join(".installed");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&target);
        std::fs::create_dir_all(&target).unwrap();
        let mut command = install(&target);
        let status = command.status().expect("the installer");
        assert!(status.success(), "{command:?} failed");
        std::fs::write(&marker, "").unwrap();
    }
    target
}

/// Installs `packages` from PyPI once into `target/test-deps/NAME`.
pub fn pip_install(name: &str, packages: &[&str]) -> PathBuf {
    test_deps(name, |target| {
        let mut pip = Command::new(python());
        pip.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(target)
        .args(packages);
        pip
    })
}

/// Installs `packages` from npm once into `target/test-deps/NAME/node_modules`.
pub fn npm_install(name: &str, packages: &[&str]) -> PathBuf {
    test_deps(name, |target| {
        std::fs::write(target.join("package.json"), "{\"private\": true}").unwrap();
        let mut npm = Command::new("npm");
        npm.args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(target)
            .args(packages);
        npm
    })
    .join("node_modules")
}

/// The example binary `name` (`lambda_fixture`, `http_fixture`), built by
/// `cargo test` beside the tests, or built now when missing.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "stratus-cli", "--example", name])
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the {name} example");
    }
    path
}

/// Copies the directory `from` to `to` (`cp -a`).
pub fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// The real Python interpreter (not a version-manager shim).
pub fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A Python 3 of another minor version than `python3`'s, with that
/// version (`3.12`): a version manager's install, or `python3.N` on PATH.
/// The test machines have one (pyenv's); a machine without it cannot run
/// the tests of several versions side by side, and says so.
#[allow(dead_code)]
pub fn other_python() -> (String, PathBuf) {
    let ask = |program: &Path| {
        let out = Command::new(program)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let default = ask(Path::new("python3")).expect("python3");
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| Some(Path::new(&std::env::var_os("HOME")?).join(".pyenv")));
    let mut candidates = Vec::new();
    for minor in (8..=14).rev() {
        let name = format!("python3.{minor}");
        if let Some(root) = &root
            && let Ok(versions) = std::fs::read_dir(root.join("versions"))
        {
            for version in versions.flatten() {
                candidates.push(version.path().join("bin").join(&name));
            }
        }
        candidates.push(Path::new("/usr/bin").join(&name));
        candidates.push(Path::new("/usr/local/bin").join(&name));
    }
    candidates
        .into_iter()
        .filter(|path| path.is_file())
        .find_map(|path| {
            let version = ask(&path)?;
            (version != default).then_some((version, path))
        })
        .unwrap_or_else(|| {
            panic!(
                "no Python 3 but {default} here: install another (apt-get install python3.N, or pyenv install 3.12)"
            )
        })
}

/// Node.js `major` from the npm registry (the `node` package), installed
/// once per target directory.
#[allow(dead_code)]
pub fn registry_node(major: u32) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("node{major}"));
    let node = dir.join("node_modules/node/bin/node");
    let runs = |node: &Path| {
        Command::new(node)
            .arg("--version")
            .output()
            .is_ok_and(|out| {
                String::from_utf8_lossy(&out.stdout).starts_with(&format!("v{major}."))
            })
    };
    if runs(&node) {
        return node;
    }
    let partial = dir.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).unwrap();
    let out = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            &format!("node@{major}"),
        ])
        .current_dir(&partial)
        .output()
        .expect("npm");
    assert!(out.status.success(), "npm install node@{major}: {out:?}");
    // Another test may have installed it meanwhile: either is whole.
    if std::fs::rename(&partial, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    assert!(runs(&node), "node@{major} from npm does not run");
    node
}

/// Lines of a child's output, as they come.
pub fn lines(stdout: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Host pids of the live processes of an instance: those whose environment
/// names it as their log stream (children inherit it), zombies excluded.
pub fn processes_of(instance: &str) -> Vec<u32> {
    processes_with(&format!("AWS_LAMBDA_LOG_STREAM_NAME={instance}"))
}

/// Host pids of the live processes of any instance of `app.function`.
pub fn processes_of_function(qualified: &str) -> Vec<u32> {
    processes_with(&format!("AWS_LAMBDA_FUNCTION_NAME={qualified}"))
}

/// Host pids of the live processes whose environment holds `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let named = environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes());
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if named && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// Calls `check` until it gives a value or `within` passes; then fails
/// with the last reason it gave.
pub fn eventually<T>(within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => panic!("not within {within:?}: {why}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Every record of `stratus logs TARGET ARGS --output json` (at most 10000).
pub fn log_records(server: &Server, target: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["logs", target, "--output", "json", "--limit", "10000"];
    args.extend_from_slice(extra);
    server
        .ok(&args)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A JSON count, or a failure naming what it was.
pub fn count(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (a server's
/// own, not a CA's) and its key, as PEM files in `dir`, made by openssl.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl could not make a certificate");
    (cert, key)
}

/// A TCP listener of the test that records the lines handlers send it.
pub struct Witness {
    pub port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Witness {
    pub fn start() -> Witness {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut line = String::new();
                    let read = std::io::BufRead::read_line(
                        &mut std::io::BufReader::new(stream),
                        &mut line,
                    );
                    if read.is_ok() && line.ends_with('\n') {
                        sink.lock().unwrap().push(line.trim().to_owned());
                    }
                });
            }
        });
        Witness { port, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn distinct(&self) -> std::collections::BTreeSet<String> {
        self.lines().into_iter().collect()
    }
}

/// A port nothing listens on now.
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
