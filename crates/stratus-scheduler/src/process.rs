//! What an instance's process is, in two parts: the sandbox and runtime it
//! starts with, which depend only on its [`Kind`] and can be made ahead of
//! demand, and the [`Activation`] that makes it a given function: code,
//! the Lambda environment and memory.
//!
//! Under namespaces a function sees the Lambda layout: its code at
//! `/var/task`, the runtime at `/var/runtime`, and the interpreter at its
//! host path; without isolation the same process runs on host paths.

use std::path::{Path, PathBuf};

use stratus_manifest::Runtime;
use stratus_sandbox::{ACTIVATION_FD, Activation, Isolation, Mount, ProcessSpec, Start};

use crate::config::{FunctionConfig, ServiceConfig};
use crate::settings::{BIN_DIR, Language, Limits, Settings};

const TASK_ROOT: &str = "/var/task";
const RUNTIME_DIR: &str = "/var/runtime";
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Memory of a process made ahead of demand, until activation sets the
/// function's: room for any runtime to start without reclaim.
const PRESTART_MEMORY_MB: u32 = 512;

/// What a process made ahead of demand can become: any function of this
/// runtime, interpreter and network mode, or any service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Kind {
    pub runtime: Runtime,
    /// Which of the runtime's interpreters (the index `Languages::find`
    /// gives; 0 is the default), [`NOT_INSTALLED`] when this node has none
    /// of its version.
    pub interpreter: u8,
    pub private_network: bool,
    /// A service's sandbox rather than a function's.
    pub service: bool,
}

impl Kind {
    /// Every service's: a sandbox that waits for its program, as a
    /// `provided` function's does.
    pub const SERVICE: Kind = Kind {
        runtime: Runtime::Provided,
        interpreter: 0,
        private_network: false,
        service: true,
    };

    pub fn of(s: &Settings, isolation: Isolation, config: &FunctionConfig) -> Kind {
        let version = config.spec.runtime_version.as_deref();
        Kind {
            runtime: config.spec.runtime,
            interpreter: s
                .languages
                .find(config.spec.runtime, version)
                .map_or(NOT_INSTALLED, |(index, _)| index),
            private_network: isolation == Isolation::Namespaces
                && config.spec.network == stratus_manifest::Network::None,
            service: false,
        }
    }
}

/// [`Kind::interpreter`] of a version this node does not have: its
/// instances fail to start, saying so (deploys of it are refused first).
pub(crate) const NOT_INSTALLED: u8 = u8::MAX;

/// Where things are, as the process sees them.
struct Layout {
    task_root: PathBuf,
    runtime_dir: Option<PathBuf>,
    host_runtime_dir: Option<PathBuf>,
    path: String,
}

/// Where the process runs: a function's sandbox, whose runtime directory
/// is Lambda's `/var/runtime`, or a service's, which sees every runtime
/// at [`SERVICE_RUNTIMES`] (its sandbox is made before it is known which
/// it needs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Function,
    Service,
}

/// Where a service's sandbox sees each language runtime's directory, by
/// its name.
const SERVICE_RUNTIMES: &str = "/var/runtimes";

fn layout(
    s: &Settings,
    isolation: Isolation,
    role: Role,
    language: Option<&Language>,
    code: &Path,
) -> Layout {
    let host_runtime_dir = language
        .filter(|_| role == Role::Function)
        .map(|l| l.dir().to_path_buf());
    // The interpreter it runs on comes first under its usual names
    // (`python3` is the function's Python in its subprocesses too), then
    // the default ones, for services and `provided` functions.
    let base = match isolation {
        Isolation::Namespaces => SYSTEM_PATH,
        Isolation::None => s.host_path.as_str(),
    };
    let own_bin = language.map(|l| match (isolation, role) {
        (Isolation::Namespaces, Role::Function) => Path::new(RUNTIME_DIR).join(BIN_DIR),
        (Isolation::Namespaces, Role::Service) => {
            Path::new(SERVICE_RUNTIMES).join(l.name()).join(BIN_DIR)
        }
        (Isolation::None, _) => l.dir().join(BIN_DIR),
    });
    let mut dirs: Vec<String> = own_bin.iter().map(|d| d.display().to_string()).collect();
    dirs.extend(
        [Runtime::Python3, Runtime::Nodejs]
            .into_iter()
            .filter_map(|r| s.languages.default_of(r)?.interpreter.executable.parent())
            .map(|d| d.display().to_string()),
    );
    dirs.extend(base.split(':').map(str::to_owned));
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| !d.is_empty() && seen.insert(d.clone()));
    let path = dirs.join(":");
    if isolation != Isolation::Namespaces {
        return Layout {
            task_root: code.to_owned(),
            runtime_dir: host_runtime_dir.clone(),
            host_runtime_dir,
            path,
        };
    }
    Layout {
        task_root: PathBuf::from(TASK_ROOT),
        runtime_dir: host_runtime_dir
            .as_ref()
            .map(|_| PathBuf::from(RUNTIME_DIR)),
        host_runtime_dir,
        path,
    }
}

/// The interpreter of `kind`, if it runs on one this node has.
fn language(s: &Settings, kind: Kind) -> Option<&Language> {
    s.languages.get(kind.runtime, kind.interpreter)
}

/// What an instance of `kind` starts without its interpreter: a program
/// whose failure to start says which is missing.
fn missing_interpreter(kind: Kind) -> PathBuf {
    PathBuf::from(format!(
        "/{} is not installed on this node (stratus runtimes)",
        kind.runtime
    ))
}

/// Every interpreter install outside the system directories, shared
/// read-only, so that custom runtimes and services can use them as well
/// as the built-in ones.
fn interpreter_mounts(s: &Settings) -> Vec<Mount> {
    s.languages
        .iter()
        .filter_map(|l| l.interpreter.prefix.clone())
        .map(|prefix| Mount {
            host: prefix.clone(),
            sandbox: prefix,
            writable: false,
        })
        .collect()
}

/// Every language runtime's directory, for a service's sandbox.
fn service_runtime_mounts(s: &Settings) -> Vec<Mount> {
    s.languages
        .iter()
        .filter(|l| !l.bootstrap.as_os_str().is_empty())
        .map(|l| Mount {
            host: l.dir().to_path_buf(),
            sandbox: Path::new(SERVICE_RUNTIMES).join(l.name()),
            writable: false,
        })
        .collect()
}

/// Whether `config` must start its process with its own environment:
/// variables that the interpreter reads only at start (`PYTHONPATH`,
/// `NODE_OPTIONS`, `LD_PRELOAD`, ...) rule out a runtime started ahead,
/// and so do limits above the server's (set when a process is made).
pub(crate) fn needs_own_start(limits: &Limits, config: &FunctionConfig) -> bool {
    let prefixes: &[&str] = match config.spec.runtime {
        Runtime::Python3 => &["PYTHON", "LD_"],
        Runtime::Nodejs => &["NODE_", "UV_", "LD_"],
        Runtime::Provided => &[],
    };
    let own_env = config
        .spec
        .env
        .keys()
        .any(|k| prefixes.iter().any(|p| k.starts_with(p)));
    // A debugger attaches to a runtime started for it.
    let debugged = config
        .spec
        .env
        .contains_key(stratus_manifest::DEBUG_PORT_ENV);
    own_env
        || debugged
        || instance_limits(limits, config) != (limits.pids_max, limits.instance_max_files)
}

/// Processes and threads, and open files: what the built-in runtimes need
/// beyond one per event they run at once.
const EVENT_HEADROOM: u32 = 32;

/// The processes (threads count) and open files an instance of `config`
/// may have: the server's limits, or, for a function whose `concurrency`
/// needs more than they leave room for (a thread and a connection or two
/// per event), those limits plus what its events need.
pub(crate) fn instance_limits(limits: &Limits, config: &FunctionConfig) -> (u32, u32) {
    let n = config.spec.concurrency;
    let fits = n + EVENT_HEADROOM <= limits.pids_max
        && 2 * n + 2 * EVENT_HEADROOM <= limits.instance_max_files;
    if fits || n <= 1 {
        (limits.pids_max, limits.instance_max_files)
    } else {
        (
            limits.pids_max.saturating_add(n),
            limits.instance_max_files.saturating_add(2 * n),
        )
    }
}

/// The process for `kind`. With `config`, for that function alone: its
/// code from the start, and its environment when it needs its own start.
pub(crate) fn spec(
    s: &Settings,
    isolation: Isolation,
    kind: Kind,
    function: Option<(&FunctionConfig, &[(String, String)])>,
    instance_id: &str,
) -> ProcessSpec {
    let code = function.map(|(config, _)| config.code_dir.clone());
    let language = language(s, kind);
    let role = match kind.service {
        true => Role::Service,
        false => Role::Function,
    };
    let l = layout(
        s,
        isolation,
        role,
        language,
        code.as_deref().unwrap_or(Path::new("/")),
    );
    let bootstrap_path = |b: &Path| match &l.runtime_dir {
        Some(dir) => dir.join(b.file_name().unwrap_or_default()),
        None => b.to_path_buf(),
    };
    let (program, args, start) = match (kind.runtime, language) {
        (Runtime::Python3, Some(language)) => (
            language.interpreter.executable.clone(),
            // -S: no site start-up hooks (.pth files), which can cost
            // tens of milliseconds, and none of the host's site-packages:
            // a function has the standard library, its code and its
            // installed dependencies.
            vec![
                "-u".to_owned(),
                "-S".to_owned(),
                bootstrap_path(&language.bootstrap).display().to_string(),
            ],
            Start::Now,
        ),
        (Runtime::Nodejs, Some(language)) => (
            language.interpreter.executable.clone(),
            vec![bootstrap_path(&language.bootstrap).display().to_string()],
            Start::Now,
        ),
        (Runtime::Python3 | Runtime::Nodejs, None) => {
            (missing_interpreter(kind), Vec::new(), Start::Now)
        }
        (Runtime::Provided, _) => (
            l.task_root.join("bootstrap"),
            Vec::new(),
            Start::OnActivation,
        ),
    };

    let mut mounts = Vec::new();
    if isolation == Isolation::Namespaces {
        if let (Some(host), Some(sandbox)) = (&l.host_runtime_dir, &l.runtime_dir) {
            mounts.push(Mount {
                host: host.clone(),
                sandbox: sandbox.clone(),
                writable: false,
            });
        }
        mounts.extend(interpreter_mounts(s));
        if role == Role::Service {
            mounts.extend(service_runtime_mounts(s));
        }
    }
    // A Python runtime that starts with nothing of its function's is
    // forked from a loaded template rather than started afresh; the
    // template starts with the environment every runtime waiting for its
    // function has, never one function's.
    let template = s.limits.templates
        && kind.runtime == Runtime::Python3
        && start == Start::Now
        && function.is_none_or(|(config, _)| !needs_own_start(&s.limits, config));
    let mut env = match function {
        Some((_, env)) if !template => env.to_vec(),
        _ => {
            let mut env = s.base_env.clone();
            env.push(("PATH".to_owned(), l.path.clone()));
            // Names the instance it will be, for whoever looks at processes.
            env.push((
                "AWS_LAMBDA_LOG_STREAM_NAME".to_owned(),
                instance_id.to_owned(),
            ));
            // Tells the runtime it waits for an unknown function: worth
            // loading the modules that functions commonly import.
            env.push(("STRATUS_PRESTARTED".to_owned(), "1".to_owned()));
            env
        }
    };
    if start == Start::Now {
        env.push((
            "STRATUS_ACTIVATION_FD".to_owned(),
            ACTIVATION_FD.to_string(),
        ));
    }
    let (pids_max, max_files) = match function {
        Some((config, _)) => instance_limits(&s.limits, config),
        None => (s.limits.pids_max, s.limits.instance_max_files),
    };
    ProcessSpec {
        program,
        args,
        cwd: if start == Start::Now {
            PathBuf::from("/")
        } else {
            l.task_root.clone()
        },
        env,
        mounts,
        task_root: l.task_root,
        code: code.filter(|_| isolation == Isolation::Namespaces),
        start,
        tmp_mb: s.limits.tmp_mb,
        pids_max,
        max_files,
        private_network: kind.private_network,
        memory_mb: function.map_or(PRESTART_MEMORY_MB, |(c, _)| c.spec.memory_mb),
        // Handlers spawn subprocesses too: their orphans are reaped as a
        // service's are, not left as zombies until the instance ends.
        init: true,
        template,
        unprivileged: false,
    }
}

/// What makes a process of the right kind an instance of `config`. The
/// Runtime API is its address, and its port on the host's network when it
/// listens there.
pub(crate) fn activation(
    s: &Settings,
    isolation: Isolation,
    config: &FunctionConfig,
    (runtime_api, runtime_api_port): (&str, Option<u16>),
    instance_id: &str,
) -> Activation {
    let function = &config.spec;
    let kind = Kind::of(s, isolation, config);
    let l = layout(
        s,
        isolation,
        Role::Function,
        language(s, kind),
        &config.code_dir,
    );
    let mut env = s.base_env.clone();
    env.push(("PATH".to_owned(), l.path.clone()));
    let lambda = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("_HANDLER", function.handler.clone()),
        ("LAMBDA_TASK_ROOT", l.task_root.display().to_string()),
        (
            "LAMBDA_RUNTIME_DIR",
            l.runtime_dir
                .as_ref()
                .unwrap_or(&l.task_root)
                .display()
                .to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_NAME", config.qualified_name()),
        ("AWS_LAMBDA_FUNCTION_VERSION", config.version.to_string()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            function.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/stratus/{}/{}", config.app, function.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", instance_id.to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_EXECUTION_ENV", format!("stratus_{}", function.runtime)),
        ("AWS_REGION", s.region.clone()),
        ("AWS_DEFAULT_REGION", s.region.clone()),
        // The app, for the SDK's calls of the platform API.
        ("STRATUS_APP", config.app.clone()),
    ];
    env.extend(lambda.into_iter().map(|(k, v)| (k.to_owned(), v)));
    // Lambda's advanced logging controls; the function's own env may
    // still say otherwise.
    let level = match (function.log_format, &function.log_level) {
        (_, Some(level)) => Some(level.as_str()),
        (stratus_manifest::LogFormat::Json, None) => Some("INFO"),
        (stratus_manifest::LogFormat::Text, None) => None,
    };
    if function.log_format == stratus_manifest::LogFormat::Json {
        env.push(("AWS_LAMBDA_LOG_FORMAT".to_owned(), "JSON".to_owned()));
    }
    // As Lambda's multi-concurrency environments: the runtime may ask for
    // this many events at once.
    if function.concurrency > 1 {
        env.push((
            "AWS_LAMBDA_MAX_CONCURRENCY".to_owned(),
            function.concurrency.to_string(),
        ));
    }
    if let Some(level) = level {
        env.push(("AWS_LAMBDA_LOG_LEVEL".to_owned(), level.to_owned()));
    }
    env.extend(function.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(config.secrets.0.iter().cloned());
    env.extend(platform_api(s, &config.app, instance_id));
    Activation {
        code: config.code_dir.clone(),
        env,
        cwd: l.task_root.clone(),
        program: l.task_root.join("bootstrap"),
        memory_mb: function.memory_mb,
        args: None,
        runtime_api_port,
        service_addr: None,
        egress: None,
    }
}

/// What instance `instance` of `app` is told of the platform's API
/// (names a manifest may not set).
fn platform_api(s: &Settings, app: &str, instance: &str) -> Vec<(String, String)> {
    s.platform_api
        .as_ref()
        .map(|api| api.env(app, instance))
        .unwrap_or_default()
}

/// The process of one instance of a service: its command under `/bin/sh`
/// (for the `PATH` lookup, or its shell line), in its code directory, with
/// `PORT` and its own environment, and the activation that starts it.
pub(crate) fn service(
    s: &Settings,
    isolation: Isolation,
    config: &ServiceConfig,
    port: u16,
    service_addr: Option<std::net::Ipv4Addr>,
    instance_id: &str,
) -> (ProcessSpec, Activation) {
    let spec = &config.spec;
    // A service that names a runtime has its interpreter first on PATH.
    let language = spec
        .runtime
        .and_then(|r| Some(s.languages.find(r, spec.runtime_version.as_deref())?.1));
    let l = layout(s, isolation, Role::Service, language, &config.code_dir);
    let mut env = s.base_env.clone();
    match &config.deps {
        Some(deps) => {
            let bin = l.task_root.join(&deps.bin);
            env.push(("PATH".to_owned(), format!("{}:{}", bin.display(), l.path)));
            if let Some(packages) = &deps.python_path {
                let packages = l.task_root.join(packages);
                env.push(("PYTHONPATH".to_owned(), packages.display().to_string()));
            }
        }
        None => env.push(("PATH".to_owned(), l.path.clone())),
    }
    env.push(("PORT".to_owned(), port.to_string()));
    env.push(("STRATUS_APP".to_owned(), config.app.clone()));
    env.push(("STRATUS_SERVICE".to_owned(), spec.name.clone()));
    env.push(("STRATUS_VERSION".to_owned(), config.version.to_string()));
    env.push(("STRATUS_INSTANCE".to_owned(), instance_id.to_owned()));
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(config.secrets.0.iter().cloned());
    env.extend(platform_api(s, &config.app, instance_id));
    let mut args = vec!["-c".to_owned()];
    match &spec.command {
        // The whole line, as a script: `migrate && exec gunicorn ...`.
        Some(stratus_manifest::ServiceCommand::Shell(line)) => args.push(line.clone()),
        Some(stratus_manifest::ServiceCommand::Exec(argv)) => {
            // `exec "$0" "$@"`: the shell finds the program on PATH and
            // passes the arguments through untouched.
            args.push("exec \"$0\" \"$@\"".to_owned());
            args.extend(argv.iter().map(|a| expand(a, &env)));
        }
        None => args.push(format!("exec ./{}", stratus_manifest::SCF_BOOTSTRAP)),
    }
    let mut mounts = Vec::new();
    if isolation == Isolation::Namespaces {
        mounts.extend(interpreter_mounts(s));
        mounts.extend(service_runtime_mounts(s));
    }
    let program = PathBuf::from("/bin/sh");
    let process = ProcessSpec {
        program: program.clone(),
        args: args.clone(),
        cwd: l.task_root.clone(),
        env: env.clone(),
        mounts,
        task_root: l.task_root.clone(),
        code: Some(config.code_dir.clone()).filter(|_| isolation == Isolation::Namespaces),
        start: Start::OnActivation,
        tmp_mb: s.limits.tmp_mb,
        pids_max: s.limits.pids_max,
        max_files: s.limits.instance_max_files,
        private_network: false,
        memory_mb: spec.memory_mb,
        // A web app is rarely written to be a namespace's init: with one
        // of ours it gets the SIGTERM a drain sends, and its orphans are
        // reaped.
        init: true,
        template: false,
        unprivileged: false,
    };
    let activation = Activation {
        code: config.code_dir.clone(),
        env,
        cwd: l.task_root,
        program,
        memory_mb: spec.memory_mb,
        // A sandbox made ahead of demand learns them only now.
        args: Some(args),
        runtime_api_port: None,
        service_addr,
        egress: None,
    };
    (process, activation)
}

/// Expands `$NAME` and `${NAME}` from `env`; anything else, and unknown
/// names, stay as written.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        match lookup(name).filter(|_| !name.is_empty()) {
            Some(value) => {
                out.push_str(value);
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn expands_known_variables_only() {
        let env = vec![("PORT".to_owned(), "8080".to_owned())];
        assert_eq!(expand("0.0.0.0:$PORT", &env), "0.0.0.0:8080");
        assert_eq!(expand("${PORT}x", &env), "8080x");
        assert_eq!(expand("$HOME/$PORT$", &env), "$HOME/8080$");
        assert_eq!(expand("${NOPE", &env), "${NOPE");
    }

    #[test]
    fn limits_grow_only_for_more_events_than_they_leave_room_for() {
        let mut limits = crate::fake::settings().limits;
        (limits.pids_max, limits.instance_max_files) = (256, 1024);
        let of = |n: u32| {
            let mut config = crate::fake::function("app", "f", 1);
            config.spec.concurrency = n;
            config
        };
        for n in [1, 4, 200] {
            assert_eq!(super::instance_limits(&limits, &of(n)), (256, 1024), "{n}");
            assert!(!super::needs_own_start(&limits, &of(n)), "{n}");
        }
        assert_eq!(super::instance_limits(&limits, &of(300)), (556, 1624));
        assert_eq!(super::instance_limits(&limits, &of(1000)), (1256, 3024));
        // Made ahead, a process has the server's limits: not enough.
        assert!(super::needs_own_start(&limits, &of(300)));
    }
}
