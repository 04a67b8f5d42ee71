//! The scheduler's settings: the data plane's limits, which are the
//! server's flags (with the `clap` feature), and what the server found
//! out about the host.

use std::path::PathBuf;
use std::time::Duration;

use stratus_manifest::Runtime;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The interpreters the built-in runtimes run on.
    pub languages: Languages,
    /// Reported to functions (`AWS_REGION`) and in their ARNs.
    pub region: String,
    pub limits: Limits,
    /// Variables every instance gets before the Lambda ones (LANG, TZ, ...).
    pub base_env: Vec<(String, String)>,
    /// The server's PATH, for instances without isolation.
    pub host_path: String,
    /// Name servers that resolve egress rules' hosts; `None`: those of
    /// `/etc/resolv.conf`.
    pub name_servers: Option<Vec<std::net::SocketAddr>>,
    /// What each instance is told of the platform's API; `None`: nothing.
    pub platform_api: Option<std::sync::Arc<dyn PlatformApi>>,
    /// Where invocations and proxied requests are counted and timed.
    pub metrics: stratus_metrics::Metrics,
    /// Where invocations' spans go.
    pub tracer: stratus_trace::Tracer,
    /// Where failed invocations' scenes go; `None`: nowhere.
    pub failures: Option<std::sync::Arc<dyn FailureSink>>,
}

/// Takes the scene of each failed invocation (the server keeps them for
/// `stratus failures`). Called on the invocation's path: it must not
/// block.
pub trait FailureSink: Send + Sync + std::fmt::Debug {
    fn failed(&self, scene: Scene);
}

/// What there is to know of a failed invocation where it failed.
#[derive(Debug, Clone)]
pub struct Scene {
    pub app: String,
    pub function: String,
    pub version: u32,
    pub request_id: String,
    /// `error`, `timeout`, `crashed`, `out_of_memory`.
    pub outcome: &'static str,
    pub error: crate::invocation::FunctionError,
    /// The event, as the function received it.
    pub event: bytes::Bytes,
    pub phases: crate::invocation::Phases,
    pub max_memory_mb: Option<u64>,
    pub cold: bool,
    pub instance: String,
    /// The names (not the values) of the variables the function was
    /// given: its manifest's, its secrets' and the platform's.
    pub env_names: Vec<String>,
}

/// The platform's API as instances see it: variables each instance gets
/// of its own (where the API is, and a credential that names the
/// instance), which only the platform can make.
pub trait PlatformApi: Send + Sync + std::fmt::Debug {
    /// The variables of instance `instance` of app `app`.
    fn env(&self, app: &str, instance: &str) -> Vec<(String, String)>;
}

/// The data plane's limits. Each default is written here once, as the
/// server's flag.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", group(id = "data_plane_limits"))]
pub struct Limits {
    /// Callers that may wait for a busy function before it throttles
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 100))]
    pub queue_depth: usize,
    /// Longest a caller waits for a free instance before it is throttled
    #[cfg_attr(feature = "clap", arg(long, default_value = "10s", value_parser = humantime::parse_duration))]
    pub queue_timeout: Duration,
    /// Longest a runtime may take to initialise
    #[cfg_attr(feature = "clap", arg(long, default_value = "10s", value_parser = humantime::parse_duration))]
    pub init_timeout: Duration,
    /// Idle instances stop after this long without work
    #[cfg_attr(feature = "clap", arg(long, default_value = "10m", value_parser = humantime::parse_duration))]
    pub keep_alive: Duration,
    /// An idle function instance is frozen after this long without an
    /// event, so one kept busy is not frozen and thawed between events
    #[cfg_attr(feature = "clap", arg(long, default_value = "20ms", value_parser = humantime::parse_duration))]
    pub freeze_after: Duration,
    /// Largest result a function may return, in bytes
    #[cfg_attr(feature = "clap", arg(long = "max-response", default_value_t = 6 * 1024 * 1024))]
    pub max_response_bytes: usize,
    /// Most instances of one application, all its functions and services
    /// together; nodes that share a store divide it among themselves
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 300))]
    pub app_max_instances: u32,
    /// Size of each instance's private /tmp under isolation, in MiB
    #[cfg_attr(feature = "clap", arg(long = "tmp-size", default_value_t = 512))]
    pub tmp_mb: u32,
    /// Most processes of one instance (a cgroup limit)
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 256))]
    pub pids_max: u32,
    /// Most open files and sockets of each process of an instance
    /// (RLIMIT_NOFILE), well below the server's own
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1024))]
    pub instance_max_files: u32,
    /// Bytes of log lines one instance may write per second (a second's
    /// worth may come at once); lines past it are dropped, and its log
    /// says how many
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 2 * 1024 * 1024))]
    pub instance_log_rate: u64,
    /// Most sandboxes made ahead of demand per runtime and network mode,
    /// runtime started, for cold starts to take; 0 turns this off
    #[cfg_attr(feature = "clap", arg(long = "prestart", default_value_t = 8))]
    pub prestart_max: usize,
    /// Make Python instances by forking a loaded template into each new
    /// sandbox rather than starting an interpreter in it
    #[cfg_attr(feature = "clap", arg(long, default_value_t = true, action = clap::ArgAction::Set))]
    pub templates: bool,
}

/// An interpreter the built-in runtimes run on.
#[derive(Debug, Clone)]
pub struct Interpreter {
    pub executable: PathBuf,
    /// Its installation directory when that lies outside the host's system
    /// directories (a pyenv or nvm install): shared read-only with sandboxes.
    pub prefix: Option<PathBuf>,
}

/// The directory, in a language runtime's, of its interpreter under its
/// usual names.
pub const BIN_DIR: &str = "bin";

/// One interpreter a built-in language runtime runs on, as the server
/// found and installed it.
#[derive(Debug, Clone)]
pub struct Language {
    pub runtime: Runtime,
    /// The version versioned runtime names give (`3.12` of `python3.12`,
    /// `22` of `nodejs22`); `None` when the interpreter could not be asked.
    pub version: Option<String>,
    /// What the interpreter is, to the builds made for it
    /// (`cpython-312 x86_64 3.12.1`, `v22.1.0 x64`).
    pub identity: Option<String>,
    pub interpreter: Interpreter,
    /// The runtime's entry point; its directory holds what else the runtime
    /// gives functions (the Python runtime's packages), and `bin/`, the
    /// interpreter under its usual names (`python3`, `node`), first on the
    /// `PATH` of whatever runs on it.
    pub bootstrap: PathBuf,
}

impl Language {
    /// `python3.12`, `nodejs22`; the bare runtime name when the version is
    /// not known.
    pub fn name(&self) -> String {
        self.runtime.name_at(self.version.as_deref())
    }

    /// The directory of its bootstrap and its own files.
    pub fn dir(&self) -> &std::path::Path {
        self.bootstrap.parent().unwrap_or(std::path::Path::new("/"))
    }
}

/// The language runtimes of a node: for each language, its default
/// interpreter first (the one the unversioned name, `python3` or
/// `nodejs`, runs on), then the other versions.
#[derive(Debug, Clone, Default)]
pub struct Languages(Vec<Language>);

impl Languages {
    /// Keeps the first of each language and version, the defaults first.
    pub fn new(all: Vec<Language>) -> Languages {
        let mut kept: Vec<Language> = Vec::new();
        for language in all {
            let seen = kept.iter().any(|k| {
                k.runtime == language.runtime
                    && k.version.is_some()
                    && k.version == language.version
            });
            if !seen {
                kept.push(language);
            }
        }
        Languages(kept)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Language> {
        self.0.iter()
    }

    /// `runtime`'s interpreters, the default first.
    pub fn of(&self, runtime: Runtime) -> impl Iterator<Item = &Language> {
        self.0.iter().filter(move |l| l.runtime == runtime)
    }

    /// The interpreter `version` of `runtime` names (the default for
    /// `None`), with its place among `runtime`'s.
    pub fn find(&self, runtime: Runtime, version: Option<&str>) -> Option<(u8, &Language)> {
        let mut all = self.of(runtime).enumerate();
        let (index, language) = match version {
            None => all.next()?,
            Some(version) => all.find(|(_, l)| l.version.as_deref() == Some(version))?,
        };
        Some((u8::try_from(index).ok()?, language))
    }

    /// `runtime`'s interpreter at `index` of [`Languages::find`].
    pub fn get(&self, runtime: Runtime, index: u8) -> Option<&Language> {
        self.of(runtime).nth(usize::from(index))
    }

    /// The default interpreter of `runtime`.
    pub fn default_of(&self, runtime: Runtime) -> Option<&Language> {
        self.of(runtime).next()
    }
}

impl Settings {
    /// The Lambda-style ARN of function `qualified` (`app.function`).
    pub fn function_arn(&self, qualified: &str) -> String {
        format!(
            "arn:aws:lambda:{}:000000000000:function:{qualified}",
            self.region
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn language(runtime: Runtime, version: &str, executable: &str) -> Language {
        Language {
            runtime,
            version: Some(version.to_owned()),
            identity: None,
            interpreter: Interpreter {
                executable: PathBuf::from(executable),
                prefix: None,
            },
            bootstrap: PathBuf::from(format!("/data/runtimes/{version}/bootstrap")),
        }
    }

    #[test]
    fn the_default_of_each_language_is_its_first_and_versions_find_their_own() {
        let languages = Languages::new(vec![
            language(Runtime::Python3, "3.11", "/usr/bin/python3.11"),
            language(Runtime::Nodejs, "20", "/usr/bin/node"),
            language(Runtime::Python3, "3.12", "/opt/py312/bin/python3.12"),
            // A second 3.12 is not kept: the first of a version wins.
            language(Runtime::Python3, "3.12", "/usr/bin/python3.12"),
            language(Runtime::Nodejs, "22", "/opt/node22/bin/node"),
        ]);
        let executable = |l: &Language| l.interpreter.executable.display().to_string();
        let (index, python) = languages.find(Runtime::Python3, None).unwrap();
        assert_eq!(
            (index, executable(python)),
            (0, "/usr/bin/python3.11".into())
        );
        let (index, python) = languages.find(Runtime::Python3, Some("3.11")).unwrap();
        assert_eq!(index, 0, "naming the default's version is the default");
        assert_eq!(python.name(), "python3.11");
        let (index, python) = languages.find(Runtime::Python3, Some("3.12")).unwrap();
        assert_eq!(
            (index, executable(python)),
            (1, "/opt/py312/bin/python3.12".into())
        );
        assert_eq!(
            languages
                .get(Runtime::Python3, 1)
                .map(executable)
                .as_deref(),
            Some("/opt/py312/bin/python3.12")
        );
        assert_eq!(languages.of(Runtime::Python3).count(), 2);
        let (index, node) = languages.find(Runtime::Nodejs, Some("22")).unwrap();
        assert_eq!((index, node.name().as_str()), (1, "nodejs22"));
        assert!(languages.find(Runtime::Python3, Some("3.13")).is_none());
        assert!(languages.find(Runtime::Provided, None).is_none());
    }
}
