//! Builds: the dependencies a deploy's code declares (`requirements.txt`,
//! `pyproject.toml` with `uv.lock`, `package.json` with its lock file),
//! installed on the server into layers kept by cache key (`plan.rs`,
//! `layers.rs`), each step in a sandbox of its own (`run.rs`). A code
//! directory with a layer runs from a directory of both, hard-linked.
//!
//! A version records the layer of each built code directory
//! (`VersionRecord::layers`, keyed `DIR@RUNTIME`, `RUNTIME` the name the
//! manifest gives: `python3`, `python3.12`); a node that lacks one
//! (a restart after pruning, another node of a cluster) builds it again
//! from the same inputs.

mod layers;
pub mod local;
mod plan;
mod run;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use stratus_manifest::{AppSpec, Runtime};
use stratus_sandbox::{Isolation, Mount};
use stratus_scheduler::{Language, Languages, Launch};
use stratus_store::{BuildRecord, BuildStatus, VersionRecord};

pub(crate) use layers::built_dir;
use plan::{NODE_LAYER_DIR, PYTHON_LAYER_DIR};
pub(crate) use run::{Progress, Sink};

use crate::api::ApiError;
use crate::config::BuildSettings;
use plan::{Places, Plan, Recipe, Tool, Toolchain};
use run::{Room, Step};

/// Where a step sees the code.
const TASK_ROOT: &str = "/var/task";
/// Where a step sees its working directory and its app's cache.
const WORK: &str = "/build";
const CACHE: &str = "/build-cache";
/// Where a step sees uv when it lies outside the system directories.
const UV_IN_SANDBOX: &str = "/opt/stratus/bin/uv";
/// Where a step sees the runtime directory of the interpreter it builds
/// for, whose `bin/` leads its PATH.
const RUNTIME_IN_SANDBOX: &str = "/var/runtime";
/// Where the packages the Python runtime gives every function are,
/// beside its bootstrap (the runtime reads the same name).
pub(crate) const PLATFORM_DIR: &str = "platform";
/// Names the layer [`PLATFORM_DIR`] was linked from.
const PLATFORM_MARKER: &str = ".stratus-layer";
/// The download cache of the platform's own builds.
const PLATFORM_APP: &str = "_platform";

/// Removes what a crash left of linking in the platform's packages.
fn clear_partials(runtime_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(runtime_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".partial-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The host uid and gid builds run as (`nobody`): their directories are
/// made theirs.
const BUILD_ID: u32 = 65534;

/// Builds code on this node.
pub(crate) struct Builder {
    launcher: Arc<dyn Launch>,
    data_dir: PathBuf,
    settings: BuildSettings,
    tools: Tools,
    /// Whether builds run as the user nobody (see [`builds_as_nobody`]).
    as_nobody: bool,
    /// This node, named in the builds it records.
    node_id: String,
    /// The ids of the builds this server is running now.
    running: std::sync::Mutex<std::collections::HashSet<String>>,
    /// One build of a layer at a time; others wait and find it made.
    building: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Where each Python runtime's own packages are, by its name:
    /// `installing`, `ready`, `none`, or why they are missing.
    python_packages: std::sync::Mutex<BTreeMap<String, String>>,
}

/// What a deploy's build made.
#[derive(Debug, Default)]
pub(crate) struct Built {
    /// The build's id, when there was anything to build.
    pub id: Option<String>,
    /// The layer of each built code directory, by `DIR@RUNTIME`.
    pub layers: BTreeMap<String, String>,
}

/// One code directory's part of a build, for its record.
#[derive(Debug, Serialize)]
struct Part {
    code: String,
    runtime: String,
    step: String,
    layer: String,
    cached: bool,
    duration_ms: u64,
    ok: bool,
}

/// A language runtime as a manifest names it: `python3`, or with a
/// version, `python3.12`.
pub(crate) type Named<'a> = (Runtime, Option<&'a str>);

/// The key of a code directory's layer in [`VersionRecord::layers`].
pub(crate) fn layer_slot(code: &str, runtime: Named<'_>) -> String {
    format!("{code}@{}", runtime.0.name_at(runtime.1))
}

/// The key of what a code directory's `build:` command made.
fn build_slot(code: &str) -> String {
    format!("{code}@build")
}

/// The directory instances of `code` on `runtime` run from: the package's
/// code, with its layer if it has one.
pub(crate) fn code_dir_of(
    data_dir: &Path,
    version: &VersionRecord,
    code: &str,
    runtime: Option<Named<'_>>,
) -> PathBuf {
    let Some(sha) = version.packages.get(code) else {
        return PathBuf::new();
    };
    let layer = runtime
        .and_then(|r| version.layers.get(&layer_slot(code, r)))
        .or_else(|| version.layers.get(&build_slot(code)));
    match layer {
        Some(layer) => built_dir(data_dir, sha, layer),
        None => crate::deploy::code_dir(data_dir, sha),
    }
}

/// Where a built service's dependencies are, for its `PATH` and
/// `PYTHONPATH`.
pub(crate) fn service_deps(
    version: &VersionRecord,
    code: &str,
    runtime: Option<Named<'_>>,
) -> Option<stratus_scheduler::ServiceDeps> {
    let runtime = runtime?;
    version.layers.get(&layer_slot(code, runtime))?;
    Some(match runtime.0 {
        Runtime::Python3 => stratus_scheduler::ServiceDeps {
            bin: Path::new(PYTHON_LAYER_DIR).join("bin"),
            python_path: Some(PYTHON_LAYER_DIR.into()),
        },
        _ => stratus_scheduler::ServiceDeps {
            bin: Path::new(NODE_LAYER_DIR).join(".bin"),
            python_path: None,
        },
    })
}

/// What may need building in `spec`: each code directory with the runtime
/// it runs on (its dependencies), or with its `build:` command. The label
/// names it in the build's output.
fn units(spec: &AppSpec) -> Vec<Unit> {
    let runtimes = runtime_dirs(spec)
        .into_iter()
        .map(|(code, runtime, version)| Unit {
            slot: layer_slot(&code, (runtime, version.as_deref())),
            what: runtime.name_at(version.as_deref()),
            code,
            work: Work::Dependencies(runtime, version),
        });
    let commands = spec.code_builds().into_iter().map(|(code, build)| Unit {
        slot: build_slot(code),
        what: "build".to_owned(),
        code: code.to_owned(),
        work: Work::Command(build.clone()),
    });
    runtimes.chain(commands).collect()
}

struct Unit {
    code: String,
    slot: String,
    what: String,
    work: Work,
}

enum Work {
    /// Of a runtime, at the version named, if any.
    Dependencies(Runtime, Option<String>),
    Command(stratus_manifest::BuildCommand),
}

impl Unit {
    /// The plan of this unit over the unpacked package `sha`.
    fn plan(&self, data_dir: &Path, sha: &str, tools: &Tools) -> Result<Option<Plan>, String> {
        match &self.work {
            Work::Dependencies(runtime, version) => plan::plan(
                &dir_of(data_dir, sha),
                *runtime,
                &tools.toolchain((*runtime, version.as_deref())),
            ),
            Work::Command(build) => Ok(Some(plan::command_plan(sha, build))),
        }
    }

    /// The interpreter it builds for, if it builds for one.
    fn language<'t>(&self, tools: &'t Tools) -> Option<&'t Language> {
        match &self.work {
            Work::Dependencies(runtime, version) => tools.language((*runtime, version.as_deref())),
            Work::Command(_) => None,
        }
    }

    fn label(&self, plan: &Plan) -> String {
        match &plan.command {
            Some(build) => format!("{} (build): {}", self.code, build.command),
            None => format!("{} ({}): {}", self.code, self.what, plan.recipe.describe()),
        }
    }
}

/// The code directories of `spec` that run on a runtime, with it and the
/// version named.
fn runtime_dirs(spec: &AppSpec) -> BTreeSet<(String, Runtime, Option<String>)> {
    let functions = spec
        .functions
        .values()
        .filter(|f| f.runtime != Runtime::Provided)
        .map(|f| (f.code.clone(), f.runtime, f.runtime_version.clone()));
    let services = spec
        .services
        .values()
        .filter_map(|s| Some((s.code.clone(), s.runtime?, s.runtime_version.clone())));
    functions.chain(services).collect()
}

/// uv installed beside `python` (`pip install uv`), else the first on
/// PATH that is the program itself rather than a version manager's shim
/// script, which would not run inside a build's sandbox.
fn find_uv(python: &Path) -> Option<PathBuf> {
    let beside = python.parent().map(|dir| dir.join("uv"));
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("uv"))
                .collect()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .filter_map(|candidate| candidate.canonicalize().ok())
        .find(|candidate| !crate::runtimes::is_script(candidate))
}

/// The build tools found on this machine, and its interpreters.
pub(crate) struct Tools {
    pub languages: Languages,
    pub uv: Option<PathBuf>,
    /// npm's, pnpm's and yarn's scripts.
    pub npm: Option<PathBuf>,
    pub pnpm: Option<PathBuf>,
    pub yarn: Option<PathBuf>,
}

impl Tools {
    /// npm's, pnpm's or yarn's script, for `tool`; `Err` says it is not
    /// installed on `machine`.
    pub fn node_script(&self, tool: Tool, machine: &str) -> Result<&PathBuf, String> {
        let (script, name) = match tool {
            Tool::Pnpm => (&self.pnpm, "pnpm"),
            Tool::Yarn => (&self.yarn, "yarn"),
            _ => (&self.npm, "npm"),
        };
        script
            .as_ref()
            .ok_or_else(|| format!("{name} is not installed on {machine}"))
    }

    /// uv as given, else beside the default Python or on PATH; npm, pnpm
    /// and yarn on PATH.
    pub fn discover(languages: Languages, uv: Option<PathBuf>) -> Tools {
        let uv = uv.or_else(|| {
            let python = languages.default_of(Runtime::Python3)?;
            find_uv(&python.interpreter.executable)
        });
        let script =
            |name: &str| crate::runtimes::find_on_path(name).and_then(|p| p.canonicalize().ok());
        let (npm, pnpm, yarn) = (script("npm"), script("pnpm"), script("yarn"));
        Tools {
            languages,
            uv,
            npm,
            pnpm,
            yarn,
        }
    }

    /// The interpreter `runtime` names, if this machine has it.
    pub fn language(&self, (runtime, version): Named<'_>) -> Option<&Language> {
        Some(self.languages.find(runtime, version)?.1)
    }

    /// What plans for `runtime` are made with: its interpreter, if this
    /// machine has it, and the tools.
    pub fn toolchain(&self, runtime: Named<'_>) -> Toolchain {
        let identity = self.language(runtime).and_then(|l| l.identity.clone());
        let (python, node) = match runtime.0 {
            Runtime::Python3 => (identity, None),
            _ => (None, identity),
        };
        Toolchain {
            python,
            node,
            uv: self.uv.is_some(),
            pnpm: self.pnpm.is_some(),
            yarn: self.yarn.is_some(),
        }
    }
}

/// A build this server runs, in `Builder::running` until dropped (also
/// when the deploy that runs it is cancelled).
struct Running<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<String>>,
    id: String,
}

impl<'a> Running<'a> {
    fn start(set: &'a std::sync::Mutex<std::collections::HashSet<String>>, id: &str) -> Self {
        set.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned());
        Running {
            set,
            id: id.to_owned(),
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Whether builds can run as the user nobody: always in namespaced
/// sandboxes; without them, when the server is root (to hand the build's
/// directories over) and nobody can reach the tools and the data
/// directory.
fn builds_as_nobody(isolation: Isolation, data_dir: &Path, tools: &[&Path]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if isolation == Isolation::Namespaces {
        return root;
    }
    // Every directory on the way searchable by others, and the file itself
    // readable and executable by them.
    let reachable = |path: &Path, file: bool| {
        let Ok(path) = path.canonicalize() else {
            return false;
        };
        let dirs_ok = path
            .ancestors()
            .skip(usize::from(file))
            .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0));
        dirs_ok && (!file || std::fs::metadata(&path).is_ok_and(|m| m.mode() & 0o005 == 0o005))
    };
    root && reachable(data_dir, false) && tools.iter().all(|tool| reachable(tool, true))
}

impl Builder {
    pub async fn new(
        launcher: Arc<dyn Launch>,
        data_dir: &Path,
        settings: BuildSettings,
        languages: Languages,
        node_id: &str,
    ) -> Builder {
        let tools = Tools::discover(languages, settings.uv.clone());
        if tools.uv.is_none() {
            tracing::warn!(
                "uv not found (--uv, or on PATH): Python requirements are installed with pip, which is slower"
            );
        }
        if tools.npm.is_none() {
            tracing::warn!("npm not found on PATH: Node.js dependencies cannot be installed");
        }
        let reached: Vec<&Path> = tools
            .languages
            .iter()
            .map(|l| &l.interpreter.executable)
            .chain(
                [tools.uv.as_ref(), tools.npm.as_ref()]
                    .into_iter()
                    .flatten(),
            )
            .map(PathBuf::as_path)
            .collect();
        let as_nobody = builds_as_nobody(launcher.isolation(), data_dir, &reached);
        if launcher.isolation() == Isolation::None {
            if as_nobody {
                tracing::warn!(
                    "builds run without isolation, as the user nobody, with the build limits"
                );
            } else {
                tracing::warn!(
                    "builds run without isolation and as the server's own user: the server is not root, or the interpreters, build tools or data directory are not reachable by the user nobody"
                );
            }
        }
        layers::remove_partials(data_dir);
        let _ = std::fs::remove_dir_all(data_dir.join("builds").join("work"));
        Builder {
            launcher,
            data_dir: data_dir.to_owned(),
            settings,
            tools,
            as_nobody,
            node_id: node_id.to_owned(),
            running: Default::default(),
            building: Default::default(),
            python_packages: Default::default(),
        }
    }

    /// Builds what `spec` needs from `packages` (by code directory),
    /// recording the build for `stratus builds` and telling `watcher`.
    pub async fn build_app(
        &self,
        store: &dyn stratus_store::Store,
        app: &str,
        spec: &AppSpec,
        packages: &BTreeMap<String, String>,
        sink: &Arc<Sink>,
    ) -> Result<Built, ApiError> {
        let mut plans = Vec::new();
        for unit in units(spec) {
            let Some(sha) = packages.get(&unit.code) else {
                continue;
            };
            match unit.plan(&self.data_dir, sha, &self.tools) {
                Ok(Some(plan)) => plans.push((unit, sha.clone(), plan)),
                Ok(None) => {}
                Err(message) => {
                    return Err(ApiError::bad_request(
                        "build_failed",
                        format!(
                            "code directory {:?} ({}): {message}; nothing was deployed",
                            unit.code, unit.what
                        ),
                    ));
                }
            }
        }
        if plans.is_empty() {
            return Ok(Built::default());
        }
        let started_ms = crate::now_ms();
        let mut record = BuildRecord {
            app: app.to_owned(),
            id: build_id(started_ms),
            started_ms,
            finished_ms: None,
            status: BuildStatus::Running,
            version: None,
            detail: serde_json::json!({ "node": self.node_id }).to_string(),
        };
        store.put_build(record.clone()).await?;
        let _running = Running::start(&self.running, &record.id);
        let mut built = Built {
            id: Some(record.id.clone()),
            layers: BTreeMap::new(),
        };
        let mut parts = Vec::new();
        let mut failure = None;
        for (unit, sha, plan) in &plans {
            let began = Instant::now();
            let label = unit.label(plan);
            let outcome = self
                .layer(
                    app,
                    &dir_of(&self.data_dir, sha),
                    plan,
                    unit.language(&self.tools),
                    &label,
                    sink,
                )
                .await;
            let outcome = match outcome {
                Ok(cached) => self
                    .assemble(sha, plan)
                    .await
                    .map(|()| cached)
                    .map_err(|e| format!("cannot link the dependencies into the code: {e}")),
                Err(e) => Err(e),
            };
            parts.push(Part {
                code: unit.code.clone(),
                runtime: unit.what.clone(),
                step: match &plan.command {
                    Some(build) => build.command.clone(),
                    None => plan.recipe.describe().to_owned(),
                },
                layer: plan.key.clone(),
                cached: *outcome.as_ref().unwrap_or(&false),
                duration_ms: began.elapsed().as_millis() as u64,
                ok: outcome.is_ok(),
            });
            match outcome {
                Ok(_) => {
                    built.layers.insert(unit.slot.clone(), plan.key.clone());
                }
                Err(message) => {
                    failure = Some((label, message));
                    break;
                }
            }
        }
        record.finished_ms = Some(crate::now_ms());
        record.status = match failure {
            None => BuildStatus::Succeeded,
            Some(_) => BuildStatus::Failed,
        };
        record.detail = serde_json::json!({
            "node": self.node_id,
            "parts": parts,
            "error": failure.as_ref().map(|(label, message)| format!("{label}: {message}")),
            "log": sink.text(),
        })
        .to_string();
        store.put_build(record).await?;
        let _ = store.trim_builds(app, self.settings.keep_builds).await;
        if let Some((label, message)) = failure {
            return Err(ApiError::bad_request(
                "build_failed",
                format!(
                    "the build failed at {label}: {message}; nothing was deployed, and the active version keeps serving (stratus builds show {app} {})",
                    built.id.as_deref().unwrap_or("")
                ),
            )
            .with_details(sink.tail(run::FAILURE_LINES)));
        }
        Ok(built)
    }

    /// Whether a build recorded as running was cut short: one of this
    /// node's that it no longer runs (the server stopped or crashed during
    /// it), or another node's running past the longest a build may take.
    pub fn interrupted(&self, build: &BuildRecord) -> bool {
        if build.status != BuildStatus::Running {
            return false;
        }
        let detail: serde_json::Value = serde_json::from_str(&build.detail).unwrap_or_default();
        if detail["node"] == self.node_id.as_str() {
            return !self
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&build.id);
        }
        let longest = self.settings.build_timeout.as_millis() as i64 + 60_000;
        crate::now_ms().saturating_sub(build.started_ms) > longest
    }

    /// The runtimes this node runs, by versioned name, the defaults with
    /// their alias.
    pub fn runtime_names(&self) -> Vec<String> {
        let mut names: Vec<String> = [Runtime::Python3, Runtime::Nodejs]
            .into_iter()
            .flat_map(|r| self.tools.languages.of(r).enumerate())
            .filter(|(_, l)| l.version.is_some())
            .map(|(index, l)| match index {
                0 => format!("{} ({})", l.name(), l.runtime),
                _ => l.name(),
            })
            .collect();
        names.push(Runtime::Provided.to_string());
        names
    }

    /// Refuses an app that names a runtime version this node does not run,
    /// saying which it runs.
    pub fn check_runtime_versions(&self, spec: &AppSpec) -> Result<(), ApiError> {
        let missing: Vec<String> = spec
            .runtime_versions()
            .into_iter()
            .filter(|(_, runtime, version)| {
                self.tools.language((*runtime, Some(version))).is_none()
            })
            .map(|(who, runtime, version)| {
                format!("{who} names {}", runtime.versioned_name(version))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(ApiError::bad_request(
            "unknown_runtime",
            format!(
                "{}, which this server does not run; it runs {} (stratus runtimes; another interpreter is given with `stratus server --runtime NAME=PATH`); nothing was deployed",
                missing.join(", "),
                self.runtime_names().join(", ")
            ),
        ))
    }

    /// Installs the packages the Python runtimes give every function
    /// (`--python-packages`, boto3 by default, as Lambda's runtimes do)
    /// into [`PLATFORM_DIR`] beside each one's bootstrap: built as a layer,
    /// once per interpreter and package list, then linked in whole. The
    /// runtime puts it last on `sys.path`, so a function's own
    /// requirements win. Where it cannot be built (no registry), functions
    /// go without, and the server says so.
    pub async fn provide_python_packages(&self) {
        let pythons: Vec<Language> = self
            .tools
            .languages
            .of(Runtime::Python3)
            .filter(|l| l.identity.is_some())
            .cloned()
            .collect();
        for language in &pythons {
            self.python_state(language, "installing".to_owned());
        }
        for language in &pythons {
            let state = self.install_python_packages(language).await;
            self.python_state(language, state);
        }
    }

    fn python_state(&self, language: &Language, state: String) {
        self.python_packages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(language.name(), state);
    }

    /// [`Builder::provide_python_packages`] for one interpreter; what came
    /// of it.
    async fn install_python_packages(&self, language: &Language) -> String {
        let runtime_dir = language.dir();
        let dest = runtime_dir.join(PLATFORM_DIR);
        clear_partials(runtime_dir);
        let packages: Vec<&str> = self
            .settings
            .python_packages
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .collect();
        if packages.is_empty() {
            let _ = std::fs::remove_dir_all(&dest);
            return "none".to_owned();
        }
        let source = self.data_dir.join("builds").join("python-packages");
        let written = std::fs::create_dir_all(&source).and_then(|()| {
            std::fs::write(source.join("requirements.txt"), packages.join("\n") + "\n")
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot prepare the Python runtime's packages");
            return format!("cannot prepare them: {e}");
        }
        let named = (Runtime::Python3, language.version.as_deref());
        let plan = match plan::plan(&source, Runtime::Python3, &self.tools.toolchain(named)) {
            Ok(Some(plan)) => plan,
            Ok(None) => return "none".to_owned(),
            Err(message) => {
                tracing::warn!(%message, "the Python runtime's packages cannot be built");
                return message;
            }
        };
        let marker = dest.join(PLATFORM_MARKER);
        if std::fs::read_to_string(&marker).ok().as_deref() == Some(plan.key.as_str()) {
            return "ready".to_owned();
        }
        let sink = Sink::new(None);
        let label = format!(
            "the {} runtime's packages ({})",
            language.name(),
            packages.join(", ")
        );
        if let Err(message) = self
            .layer(PLATFORM_APP, &source, &plan, Some(language), &label, &sink)
            .await
        {
            tracing::warn!(
                runtime = %language.name(),
                packages = %packages.join(", "),
                %message,
                last = %sink.tail(3).join(" | "),
                "the Python runtime's packages could not be installed: functions go without them"
            );
            return message;
        }
        let layer = layers::layer_dir(&self.data_dir, &plan.key);
        let key = plan.key.clone();
        let linked = tokio::task::spawn_blocking(move || {
            let partial = layers::partial_path(&dest);
            layers::link_tree(&layer, &partial)?;
            std::fs::write(partial.join(PLATFORM_MARKER), &key)?;
            if dest.exists() {
                std::fs::remove_dir_all(&dest)?;
            }
            std::fs::rename(&partial, &dest)
        })
        .await;
        let failed = match linked {
            Ok(Ok(())) => {
                tracing::info!(
                    runtime = %language.name(),
                    packages = %packages.join(", "),
                    "the Python runtime gives functions these packages"
                );
                return "ready".to_owned();
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %failed, "cannot link in the Python runtime's packages");
        failed
    }

    /// What this node builds for and with, for `GET /v1/runtimes`: each
    /// interpreter, and under `python3` and `nodejs` the defaults.
    pub fn report(&self) -> serde_json::Value {
        let packages = self
            .python_packages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let describe = |l: &Language, default: bool| {
            let mut it = serde_json::json!({
                "name": l.version.as_ref().map(|_| l.name()),
                "runtime": l.runtime,
                "version": l.version,
                "default": default,
                "executable": l.interpreter.executable,
                "identity": l.identity,
            });
            if let Some(state) = packages.get(&l.name()) {
                it["python_packages"] = serde_json::json!(state);
            }
            it
        };
        let all: Vec<serde_json::Value> = [Runtime::Python3, Runtime::Nodejs]
            .into_iter()
            .flat_map(|r| self.tools.languages.of(r).enumerate())
            .map(|(index, l)| describe(l, index == 0))
            .collect();
        let default_state = self
            .tools
            .languages
            .default_of(Runtime::Python3)
            .and_then(|l| packages.get(&l.name()));
        let mut report = serde_json::json!({
            "runtimes": all,
            "python_packages": {
                "packages": self.settings.python_packages,
                "state": default_state,
            },
            "tools": {
                "uv": self.tools.uv,
                "npm": self.tools.npm,
                "pnpm": self.tools.pnpm,
                "yarn": self.tools.yarn,
            },
        });
        for runtime in [Runtime::Python3, Runtime::Nodejs] {
            if let Some(l) = self.tools.languages.default_of(runtime) {
                report[runtime.as_str()] = describe(l, true);
            }
        }
        report
    }

    /// Records that build `id` of `app` made `version`.
    pub async fn mark_deployed(
        &self,
        store: &dyn stratus_store::Store,
        app: &str,
        id: &str,
        version: u32,
    ) {
        if let Ok(Some(mut record)) = store.get_build(app, id).await {
            record.version = Some(version);
            if let Err(e) = store.put_build(record).await {
                tracing::warn!(app, build = id, error = %e, "cannot record the build's version");
            }
        }
    }

    /// Makes sure `version` runs here as it was deployed: the runtime
    /// versions it names are this node's, and every built code directory
    /// is here (a missing layer is built from its package).
    pub async fn ensure(&self, version: &VersionRecord) -> Result<(), String> {
        // A runtime version never changes under a version that names it.
        self.check_runtime_versions(&version.spec)
            .map_err(|e| e.message)?;
        for unit in units(&version.spec) {
            let code = &unit.code;
            let Some(key) = version.layers.get(&unit.slot) else {
                continue;
            };
            let Some(sha) = version.packages.get(code) else {
                continue;
            };
            if built_dir(&self.data_dir, sha, key).is_dir() {
                continue;
            }
            let dir = dir_of(&self.data_dir, sha);
            let plan = unit
                .plan(&self.data_dir, sha, &self.tools)?
                .ok_or_else(|| format!("code directory {code:?} has nothing to build"))?;
            if &plan.key != key {
                return Err(format!(
                    "code directory {code:?} ({}) was built for another interpreter or platform (layer {key}, this node makes {}); give this node the same interpreter",
                    unit.what, plan.key
                ));
            }
            let sink = Sink::new(None);
            let label = unit.label(&plan);
            self.layer(
                &version.app,
                &dir,
                &plan,
                unit.language(&self.tools),
                &label,
                &sink,
            )
            .await
            .map_err(|e| format!("{label}: {e}: {}", sink.tail(5).join(" | ")))?;
            self.assemble(sha, &plan)
                .await
                .map_err(|e| format!("cannot link the dependencies into the code: {e}"))?;
        }
        Ok(())
    }

    /// Removes built directories and layers that no version in `keep`
    /// uses (layers only after `grace`).
    pub fn prune(&self, keep: &[VersionRecord], grace: Duration) -> usize {
        let mut used = std::collections::HashSet::new();
        for version in keep {
            for (slot, layer) in &version.layers {
                let code = slot.rsplit_once('@').map_or(slot.as_str(), |(c, _)| c);
                if let Some(sha) = version.packages.get(code) {
                    used.insert((sha.clone(), layer.clone()));
                }
            }
        }
        layers::prune(&self.data_dir, &used, grace)
    }

    /// Makes `plan`'s layer (with `language`, for a language's
    /// dependencies) unless it is there; `Ok(true)` when it was.
    async fn layer(
        &self,
        app: &str,
        code: &Path,
        plan: &Plan,
        language: Option<&Language>,
        label: &str,
        sink: &Arc<Sink>,
    ) -> Result<bool, String> {
        let dest = layers::layer_dir(&self.data_dir, &plan.key);
        if dest.is_dir() {
            layers::touch(&dest);
            sink.step(format!("{label}: cached (layer {})", &plan.key[..12]));
            return Ok(true);
        }
        let lock = {
            let mut building = self.building.lock().unwrap_or_else(|p| p.into_inner());
            building.entry(plan.key.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        if dest.is_dir() {
            sink.step(format!("{label}: cached (layer {})", &plan.key[..12]));
            return Ok(true);
        }
        sink.step(label.to_owned());
        let work = self
            .data_dir
            .join("builds")
            .join("work")
            .join(layers::partial_path(&dest).file_name().unwrap_or_default());
        let result = self
            .make_layer(app, code, plan, language, &work, &dest, sink)
            .await;
        let _ = std::fs::remove_dir_all(&work);
        self.building
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&plan.key);
        result.map(|()| false)
    }

    #[allow(clippy::too_many_arguments)]
    async fn make_layer(
        &self,
        app: &str,
        code: &Path,
        plan: &Plan,
        language: Option<&Language>,
        work: &Path,
        dest: &Path,
        sink: &Arc<Sink>,
    ) -> Result<(), String> {
        let cache = self.data_dir.join("builds").join("cache").join(app);
        prepare_dirs(work, &cache, code, plan, self.as_nobody)
            .map_err(|e| format!("cannot prepare the build: {e}"))?;
        let isolation = self.launcher.isolation();
        let inside = |host: &Path, sandbox: &str| match isolation {
            Isolation::Namespaces => PathBuf::from(sandbox),
            Isolation::None => host.to_owned(),
        };
        let work_in = inside(work, WORK);
        let cache_in = inside(&cache, CACHE);
        let code_in = inside(code, TASK_ROOT);
        let mut mounts = vec![
            Mount {
                host: work.to_owned(),
                sandbox: WORK.into(),
                writable: true,
            },
            Mount {
                host: cache.clone(),
                sandbox: CACHE.into(),
                writable: true,
            },
        ];
        for prefix in self
            .tools
            .languages
            .iter()
            .filter_map(|l| l.interpreter.prefix.as_ref())
        {
            mounts.push(Mount {
                host: prefix.clone(),
                sandbox: prefix.clone(),
                writable: false,
            });
        }
        if let Some(language) = language {
            mounts.push(Mount {
                host: language.dir().to_owned(),
                sandbox: RUNTIME_IN_SANDBOX.into(),
                writable: false,
            });
        }
        let uv = self.tools.uv.as_ref().map(|uv| {
            if isolation == Isolation::Namespaces && crate::runtimes::outside_system(uv) {
                mounts.push(Mount {
                    host: uv.clone(),
                    sandbox: UV_IN_SANDBOX.into(),
                    writable: false,
                });
                PathBuf::from(UV_IN_SANDBOX)
            } else {
                uv.clone()
            }
        });
        let room = Room {
            isolation,
            code: code.to_owned(),
            mounts,
            memory_mb: self.settings.build_memory_mb,
            timeout: self.settings.build_timeout,
            as_nobody: self.as_nobody,
        };
        let mut env = vec![
            (
                "HOME".to_owned(),
                work_in.join("home").display().to_string(),
            ),
            (
                "TMPDIR".to_owned(),
                work_in.join("tmp").display().to_string(),
            ),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("PATH".to_owned(), self.path(isolation, language)),
            ("UV_PYTHON_DOWNLOADS".to_owned(), "never".to_owned()),
            ("UV_NO_PROGRESS".to_owned(), "1".to_owned()),
            ("PIP_DISABLE_PIP_VERSION_CHECK".to_owned(), "1".to_owned()),
            (
                "npm_config_cache".to_owned(),
                cache_in.join("npm").display().to_string(),
            ),
            ("npm_config_update_notifier".to_owned(), "false".to_owned()),
            ("npm_config_fund".to_owned(), "false".to_owned()),
            ("npm_config_audit".to_owned(), "false".to_owned()),
        ];
        // The host's certificate and proxy settings, for the registries.
        for key in [
            "SSL_CERT_FILE",
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "NO_PROXY",
            "https_proxy",
            "http_proxy",
            "no_proxy",
        ] {
            if let Ok(value) = std::env::var(key) {
                env.push((key.to_owned(), value));
            }
        }
        let missing = || {
            format!(
                "the server has no {} interpreter",
                unit_name(plan, language)
            )
        };
        let interpreter = language
            .filter(|l| l.identity.is_some())
            .map(|l| l.interpreter.executable.clone());
        let python = interpreter
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let (code_at, out, exported, cache_at) = (
            code_in.display().to_string(),
            work_in.join("out").display().to_string(),
            work_in.join("requirements.txt").display().to_string(),
            cache_in.display().to_string(),
        );
        let places = Places {
            code: &code_at,
            target: &out,
            python: &python,
            exported: &exported,
            cache: Some(&cache_at),
        };
        let mut steps = Vec::new();
        for invocation in plan.invocations(uv.is_some(), &places) {
            let (program, mut args, cwd) = match invocation.tool {
                Tool::Uv => (
                    uv.clone().ok_or("uv is not installed on the server")?,
                    Vec::new(),
                    code_in.clone(),
                ),
                Tool::Pip => (
                    interpreter.clone().ok_or_else(missing)?,
                    Vec::new(),
                    code_in.clone(),
                ),
                Tool::Npm | Tool::Pnpm | Tool::Yarn => {
                    let script = self.tools.node_script(invocation.tool, "the server")?;
                    (
                        interpreter.clone().ok_or_else(missing)?,
                        vec![script.display().to_string()],
                        work_in.join("node"),
                    )
                }
                Tool::Shell => (PathBuf::from("/bin/sh"), Vec::new(), work_in.join("src")),
            };
            args.extend(invocation.args);
            steps.push(Step {
                name: invocation.name,
                program,
                args,
                env: env.clone(),
                cwd,
            });
        }
        for step in &steps {
            sink.line(format!(
                "$ {} {}",
                step.program.display(),
                step.args.join(" ")
            ));
            run::run(&self.launcher, &room, step, sink)
                .await
                .map_err(|e| format!("`{}`: {e}", step.name))?;
        }
        if let Some(build) = &plan.command {
            keep_outputs(&work.join("src"), &work.join("out"), build)?;
        }
        let made = match plan.recipe.layer_dir() {
            NODE_LAYER_DIR => work.join("node").join(NODE_LAYER_DIR),
            _ => work.join("out"),
        };
        if !made.is_dir() {
            std::fs::create_dir_all(&made).map_err(|e| e.to_string())?;
        }
        let partial = layers::partial_path(dest);
        dest.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(&made, &partial))
            .and_then(|()| layers::publish(&partial, dest))
            .map_err(|e| format!("cannot keep the layer: {e}"))
    }

    async fn assemble(&self, sha: &str, plan: &Plan) -> std::io::Result<()> {
        let code = dir_of(&self.data_dir, sha);
        let layer = layers::layer_dir(&self.data_dir, &plan.key);
        let dest = built_dir(&self.data_dir, sha, &plan.key);
        let at = plan.recipe.layer_dir();
        tokio::task::spawn_blocking(move || layers::assemble(&code, &layer, at, &dest))
            .await
            .map_err(std::io::Error::other)?
    }

    /// The PATH of a step: the interpreter it builds for under its usual
    /// names (`node` for a native addon's build), then the defaults'
    /// directories.
    fn path(&self, isolation: Isolation, language: Option<&Language>) -> String {
        let own = language.map(|l| match isolation {
            Isolation::Namespaces => Path::new(RUNTIME_IN_SANDBOX).join(stratus_scheduler::BIN_DIR),
            Isolation::None => l.dir().join(stratus_scheduler::BIN_DIR),
        });
        let mut dirs: Vec<String> = own.iter().map(|d| d.display().to_string()).collect();
        dirs.extend(
            [Runtime::Python3, Runtime::Nodejs]
                .into_iter()
                .filter_map(|r| {
                    self.tools
                        .languages
                        .default_of(r)?
                        .interpreter
                        .executable
                        .parent()
                })
                .map(|d| d.display().to_string()),
        );
        dirs.push("/usr/local/bin:/usr/bin:/bin".to_owned());
        if isolation == Isolation::None
            && let Ok(host) = std::env::var("PATH")
        {
            dirs.push(host);
        }
        dirs.join(":")
    }
}

/// What a plan builds for, in errors.
fn unit_name(plan: &Plan, language: Option<&Language>) -> String {
    match language {
        Some(language) => language.name(),
        None => plan.recipe.describe().to_owned(),
    }
}

fn dir_of(data_dir: &Path, sha: &str) -> PathBuf {
    crate::deploy::code_dir(data_dir, sha)
}

/// Makes the build's working directory (with the recipe's inputs where
/// the tool expects them) and its app's cache, owned by the build's user.
fn prepare_dirs(
    work: &Path,
    cache: &Path,
    code: &Path,
    plan: &Plan,
    as_nobody: bool,
) -> std::io::Result<()> {
    for dir in ["home", "tmp", "out", "node"] {
        std::fs::create_dir_all(work.join(dir))?;
    }
    if plan.recipe == Recipe::Command {
        layers::copy_tree(code, &work.join("src"))?;
    }
    if plan.recipe.layer_dir() == NODE_LAYER_DIR {
        for (name, bytes) in &plan.inputs {
            std::fs::write(work.join("node").join(name), bytes)?;
        }
    }
    std::fs::create_dir_all(cache)?;
    if as_nobody {
        chown_tree(work)?;
        std::os::unix::fs::chown(cache, Some(BUILD_ID), Some(BUILD_ID))?;
    }
    Ok(())
}

/// Moves what `build` names from the build's copy of the code `src` to
/// the same places in `out`, the layer.
fn keep_outputs(
    src: &Path,
    out: &Path,
    build: &stratus_manifest::BuildCommand,
) -> Result<(), String> {
    for output in &build.output {
        let made = src.join(output);
        if std::fs::symlink_metadata(&made).is_err() {
            return Err(format!(
                "`{}` did not make {output}, which build.output names",
                build.command
            ));
        }
        let kept = out.join(output);
        kept.parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(&made, &kept))
            .map_err(|e| format!("cannot keep {output}: {e}"))?;
    }
    Ok(())
}

fn chown_tree(dir: &Path) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(BUILD_ID), Some(BUILD_ID))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path())?;
        } else {
            std::os::unix::fs::chown(entry.path(), Some(BUILD_ID), Some(BUILD_ID))?;
        }
    }
    Ok(())
}

/// A build's id: when it started, readable and sortable, and a few
/// random characters.
fn build_id(started_ms: i64) -> String {
    let time = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(started_ms.max(0) as u64),
    )
    .to_string();
    let digits: String = time.chars().filter(char::is_ascii_digit).collect();
    let mut salt = [0u8; 2];
    let _ = getrandom::fill(&mut salt);
    format!("{}-{}-{}", &digits[..8], &digits[8..14], plan::hex(&salt))
}
