//! What a code directory needs built, read from its own files: the
//! dependency manifest and lock file of its language, and the recipe that
//! installs them into a layer. Pure but for reading those files.

use std::path::Path;

use sha2::{Digest, Sha256};
use stratus_manifest::{BuildCommand, Runtime};

/// Where a layer's contents go in the code directory an instance sees.
pub(crate) const PYTHON_LAYER_DIR: &str = ".stratus/python";
pub(crate) const NODE_LAYER_DIR: &str = "node_modules";

/// Larger manifests and lock files are refused rather than read.
const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// How dependencies are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recipe {
    /// `uv pip install -r FILE` (`requirements.txt`, or `pyproject.toml`'s
    /// dependencies), or pip's equivalent where uv is missing.
    PythonRequirements { file: &'static str, uv: bool },
    /// `uv export --frozen` of `uv.lock`, then installed as above.
    UvLock,
    /// `npm ci --omit=dev` with a lock file, `npm install --omit=dev`
    /// without one.
    Npm { ci: bool },
    /// `pnpm install --frozen-lockfile --prod`.
    Pnpm,
    /// `yarn install --frozen-lockfile --production`.
    Yarn,
    /// The manifest's `build.command`, in a writable copy of the code; its
    /// `build.output` laid over the code.
    Command,
}

impl Recipe {
    pub fn describe(self) -> &'static str {
        match self {
            Recipe::PythonRequirements { uv: true, .. } => "install Python requirements with uv",
            Recipe::PythonRequirements { uv: false, .. } => "install Python requirements with pip",
            Recipe::UvLock => "install uv.lock with uv",
            Recipe::Npm { ci: true } => "npm ci --omit=dev",
            Recipe::Npm { ci: false } => "npm install --omit=dev",
            Recipe::Pnpm => "pnpm install --frozen-lockfile --prod",
            Recipe::Yarn => "yarn install --frozen-lockfile --production",
            Recipe::Command => "build command",
        }
    }

    /// The layer's place in the code directory.
    pub fn layer_dir(self) -> &'static str {
        match self {
            Recipe::PythonRequirements { .. } | Recipe::UvLock => PYTHON_LAYER_DIR,
            Recipe::Npm { .. } | Recipe::Pnpm | Recipe::Yarn => NODE_LAYER_DIR,
            Recipe::Command => "",
        }
    }
}

/// The program a recipe's command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Uv,
    /// `python -m pip`.
    Pip,
    /// npm's, pnpm's and yarn's scripts, run with `node`.
    Npm,
    Pnpm,
    Yarn,
    /// `/bin/sh -c COMMAND`.
    Shell,
}

/// Where a recipe's commands read and write, as they see it.
pub(crate) struct Places<'a> {
    /// The code directory.
    pub code: &'a str,
    /// Where Python packages go.
    pub target: &'a str,
    /// The Python interpreter packages are installed for.
    pub python: &'a str,
    /// Where `uv export` writes `uv.lock`'s requirements.
    pub exported: &'a str,
    /// A download cache of the build's own, if any.
    pub cache: Option<&'a str>,
}

/// One command of a recipe: its name for errors, program and arguments.
pub(crate) struct Invocation {
    pub name: String,
    pub tool: Tool,
    pub args: Vec<String>,
}

impl Plan {
    /// The commands that make this plan's layer, in order; `uv` says
    /// whether uv is there (pip installs Python requirements without it).
    /// Node.js tools run in the directory holding the manifest and lock
    /// file, where `node_modules` is made.
    pub fn invocations(&self, uv: bool, at: &Places<'_>) -> Vec<Invocation> {
        let strings = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let install = |requirements: &str| {
            if uv {
                let mut args = strings(&[
                    "pip", "install", "--target", at.target, "--python", at.python,
                ]);
                if let Some(cache) = at.cache {
                    // Copies, not links into the cache, which later builds
                    // may write.
                    args.extend(strings(&[
                        "--cache-dir",
                        &format!("{cache}/uv"),
                        "--link-mode",
                        "copy",
                    ]));
                }
                // Instances cannot write `__pycache__` into their read-only
                // code: without this every cold start compiles every
                // module it imports (as pip does by default).
                args.extend(strings(&["--compile-bytecode", "-r", requirements]));
                Invocation {
                    name: "uv pip install".into(),
                    tool: Tool::Uv,
                    args,
                }
            } else {
                let mut args =
                    strings(&["-m", "pip", "install", "--no-input", "--target", at.target]);
                if let Some(cache) = at.cache {
                    args.extend(strings(&["--cache-dir", &format!("{cache}/pip")]));
                }
                args.extend(strings(&["-r", requirements]));
                Invocation {
                    name: "pip install".into(),
                    tool: Tool::Pip,
                    args,
                }
            }
        };
        let node = |tool: Tool, name: &str, args: &[&str]| Invocation {
            name: format!("{name} {}", args[0]),
            tool,
            args: strings(args),
        };
        match self.recipe {
            Recipe::PythonRequirements { file, .. } => {
                vec![install(&format!("{}/{file}", at.code))]
            }
            Recipe::UvLock => vec![
                Invocation {
                    name: "uv export".into(),
                    tool: Tool::Uv,
                    args: strings(&[
                        "export",
                        "--frozen",
                        "--no-dev",
                        "--no-emit-project",
                        "--no-hashes",
                        "--project",
                        at.code,
                        "-o",
                        at.exported,
                    ]),
                },
                install(at.exported),
            ],
            Recipe::Npm { ci: true } => vec![node(Tool::Npm, "npm", &["ci", "--omit=dev"])],
            Recipe::Npm { ci: false } => vec![node(
                Tool::Npm,
                "npm",
                &["install", "--omit=dev", "--no-package-lock"],
            )],
            Recipe::Pnpm => vec![node(
                Tool::Pnpm,
                "pnpm",
                &["install", "--frozen-lockfile", "--prod"],
            )],
            Recipe::Yarn => vec![node(
                Tool::Yarn,
                "yarn",
                &["install", "--frozen-lockfile", "--production"],
            )],
            Recipe::Command => self
                .command
                .iter()
                .map(|build| Invocation {
                    name: build.command.clone(),
                    tool: Tool::Shell,
                    args: vec!["-c".into(), build.command.clone()],
                })
                .collect(),
        }
    }
}

/// The tools and interpreters this node builds with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Toolchain {
    /// What the Python interpreter is (`cpython-311 x86_64 3.11.7`); a
    /// layer is made for one.
    pub python: Option<String>,
    /// What Node.js is (`v20.20.2 x64`).
    pub node: Option<String>,
    pub uv: bool,
    pub pnpm: bool,
    pub yarn: bool,
}

/// A layer to make for one code directory and runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub recipe: Recipe,
    /// The files the recipe reads, by name, copied into the build's
    /// working directory.
    pub inputs: Vec<(&'static str, Vec<u8>)>,
    /// The layer's cache key: recipe, interpreter, platform and inputs.
    pub key: String,
    /// What [`Recipe::Command`] runs and keeps.
    pub command: Option<BuildCommand>,
}

/// The plan of a `build:` command over the package `sha`: its key is made
/// of the package (the whole code is its input), the command, its outputs
/// and the platform.
pub(crate) fn command_plan(sha: &str, build: &BuildCommand) -> Plan {
    let mut hash = Sha256::new();
    hash.update(b"stratus-build 1\n");
    hash.update(format!("{sha}\n{}\n", std::env::consts::ARCH));
    hash.update(format!("{} {}\n", build.command.len(), build.command));
    for output in &build.output {
        hash.update(format!("{} {output}\n", output.len()));
    }
    Plan {
        recipe: Recipe::Command,
        inputs: Vec::new(),
        key: hex(&hash.finalize()),
        command: Some(build.clone()),
    }
}

/// The layer `code` (an unpacked package) needs to run on `runtime`, if
/// any; `Err` says why it cannot be built here, and what to do.
pub(crate) fn plan(
    code: &Path,
    runtime: Runtime,
    tools: &Toolchain,
) -> Result<Option<Plan>, String> {
    let (recipe, inputs) = match runtime {
        Runtime::Python3 => match python(code, tools)? {
            Some(found) => found,
            None => return Ok(None),
        },
        Runtime::Nodejs => match node(code, tools)? {
            Some(found) => found,
            None => return Ok(None),
        },
        Runtime::Provided => return Ok(None),
    };
    let interpreter = match runtime {
        Runtime::Python3 => tools.python.as_deref(),
        _ => tools.node.as_deref(),
    }
    .ok_or_else(|| format!("the server has no {runtime} interpreter to build for"))?;
    let mut hash = Sha256::new();
    hash.update(b"stratus-layer 1\n");
    hash.update(format!(
        "{recipe:?}\n{interpreter}\n{}\n",
        std::env::consts::ARCH
    ));
    for (name, bytes) in &inputs {
        hash.update(format!("{name} {}\n", bytes.len()));
        hash.update(bytes);
    }
    Ok(Some(Plan {
        recipe,
        inputs,
        key: hex(&hash.finalize()),
        command: None,
    }))
}

type Found = (Recipe, Vec<(&'static str, Vec<u8>)>);

fn python(code: &Path, tools: &Toolchain) -> Result<Option<Found>, String> {
    if code.join(PYTHON_LAYER_DIR).is_dir() {
        // Installed before upload (`stratus deploy --build local`): what
        // was uploaded is what runs.
        return Ok(None);
    }
    if let Some(requirements) = read(code, "requirements.txt")? {
        let meaningful = String::from_utf8_lossy(&requirements)
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if !meaningful {
            return Ok(None);
        }
        return Ok(Some((
            Recipe::PythonRequirements {
                file: "requirements.txt",
                uv: tools.uv,
            },
            vec![("requirements.txt", requirements)],
        )));
    }
    let Some(pyproject) = read(code, "pyproject.toml")? else {
        return Ok(None);
    };
    if let Some(lock) = read(code, "uv.lock")? {
        if !tools.uv {
            return Err(
                "uv.lock needs uv, which this server lacks: install uv (pip install uv) and restart the server with --uv, or add a requirements.txt".to_owned(),
            );
        }
        return Ok(Some((
            Recipe::UvLock,
            vec![("pyproject.toml", pyproject), ("uv.lock", lock)],
        )));
    }
    for (lock, tool) in [("poetry.lock", "poetry"), ("pdm.lock", "pdm")] {
        if code.join(lock).is_file() {
            return Err(format!(
                "{lock} is not installed by this server: export it ({tool} export -o requirements.txt) and deploy the requirements.txt beside it"
            ));
        }
    }
    let text = String::from_utf8_lossy(&pyproject);
    let declares = text.contains("[project]") && text.contains("dependencies");
    if !declares {
        return Ok(None);
    }
    if !tools.uv {
        return Err(
            "pyproject.toml's dependencies are installed with uv, which this server lacks: install uv, or add a requirements.txt".to_owned(),
        );
    }
    Ok(Some((
        Recipe::PythonRequirements {
            file: "pyproject.toml",
            uv: true,
        },
        vec![("pyproject.toml", pyproject)],
    )))
}

fn node(code: &Path, tools: &Toolchain) -> Result<Option<Found>, String> {
    if code.join(NODE_LAYER_DIR).exists() {
        // Vendored: what was uploaded is what runs.
        return Ok(None);
    }
    let Some(package) = read(code, "package.json")? else {
        return Ok(None);
    };
    for lock in ["package-lock.json", "npm-shrinkwrap.json"] {
        if let Some(bytes) = read(code, lock)? {
            return Ok(Some((
                Recipe::Npm { ci: true },
                vec![("package.json", package), (lock, bytes)],
            )));
        }
    }
    if let Some(bytes) = read(code, "pnpm-lock.yaml")? {
        if !tools.pnpm {
            return Err("pnpm-lock.yaml needs pnpm, which this server lacks: install it (npm install -g pnpm), or deploy a package-lock.json".to_owned());
        }
        return Ok(Some((
            Recipe::Pnpm,
            vec![("package.json", package), ("pnpm-lock.yaml", bytes)],
        )));
    }
    if let Some(bytes) = read(code, "yarn.lock")? {
        if !tools.yarn {
            return Err("yarn.lock needs yarn, which this server lacks: install it (npm install -g yarn), or deploy a package-lock.json".to_owned());
        }
        return Ok(Some((
            Recipe::Yarn,
            vec![("package.json", package), ("yarn.lock", bytes)],
        )));
    }
    let parsed: serde_json::Value = serde_json::from_slice(&package)
        .map_err(|e| format!("package.json is not valid JSON: {e}"))?;
    let has_dependencies = parsed
        .get("dependencies")
        .and_then(|d| d.as_object())
        .is_some_and(|d| !d.is_empty());
    if !has_dependencies {
        return Ok(None);
    }
    Ok(Some((
        Recipe::Npm { ci: false },
        vec![("package.json", package)],
    )))
}

/// A regular file of `code`, if there is one.
fn read(code: &Path, name: &str) -> Result<Option<Vec<u8>>, String> {
    let path = code.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => {
            if meta.len() > MAX_INPUT_BYTES {
                return Err(format!(
                    "{name} is {} bytes, more than the {MAX_INPUT_BYTES} a build reads",
                    meta.len()
                ));
            }
            std::fs::read(&path)
                .map(Some)
                .map_err(|e| format!("cannot read {name}: {e}"))
        }
        Ok(_) => Err(format!("{name} must be a regular file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {name}: {e}")),
    }
}

pub(crate) use crate::hex::encode as hex;

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Toolchain {
        Toolchain {
            python: Some("cpython-311 x86_64 3.11.7".into()),
            node: Some("v20.20.2 x64".into()),
            uv: true,
            pnpm: false,
            yarn: false,
        }
    }

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn requirements_make_a_layer_keyed_by_their_content_and_the_interpreter() {
        let a = dir(&[
            ("requirements.txt", "fastapi\nmangum\n"),
            ("app.py", "x = 1"),
        ]);
        let b = dir(&[
            ("requirements.txt", "fastapi\nmangum\n"),
            ("app.py", "x = 2"),
        ]);
        let c = dir(&[("requirements.txt", "fastapi\n")]);
        let pa = plan(a.path(), Runtime::Python3, &tools()).unwrap().unwrap();
        let pb = plan(b.path(), Runtime::Python3, &tools()).unwrap().unwrap();
        let pc = plan(c.path(), Runtime::Python3, &tools()).unwrap().unwrap();
        assert_eq!(pa.key, pb.key, "code alone does not change the layer");
        assert_ne!(pa.key, pc.key);
        let other = Toolchain {
            python: Some("cpython-312 x86_64 3.12.1".into()),
            ..tools()
        };
        let pd = plan(a.path(), Runtime::Python3, &other).unwrap().unwrap();
        assert_ne!(pa.key, pd.key, "another interpreter, another layer");
        assert_eq!(
            pa.recipe,
            Recipe::PythonRequirements {
                file: "requirements.txt",
                uv: true
            }
        );
    }

    #[test]
    fn nothing_to_build_without_dependencies() {
        let empty = dir(&[("requirements.txt", "# none\n\n"), ("package.json", "{}")]);
        assert_eq!(
            plan(empty.path(), Runtime::Python3, &tools()).unwrap(),
            None
        );
        assert_eq!(plan(empty.path(), Runtime::Nodejs, &tools()).unwrap(), None);
        assert_eq!(
            plan(empty.path(), Runtime::Provided, &tools()).unwrap(),
            None
        );
        let tooling = dir(&[("pyproject.toml", "[tool.ruff]\nline-length = 100\n")]);
        assert_eq!(
            plan(tooling.path(), Runtime::Python3, &tools()).unwrap(),
            None
        );
        let vendored = dir(&[
            ("package.json", r#"{"dependencies":{"a":"1"}}"#),
            ("package-lock.json", "{}"),
            ("node_modules/a/index.js", ""),
        ]);
        assert_eq!(
            plan(vendored.path(), Runtime::Nodejs, &tools()).unwrap(),
            None
        );
    }

    #[test]
    fn node_lock_files_choose_the_tool() {
        let npm = dir(&[
            ("package.json", r#"{"dependencies":{"a":"1"}}"#),
            ("package-lock.json", "{}"),
        ]);
        let p = plan(npm.path(), Runtime::Nodejs, &tools())
            .unwrap()
            .unwrap();
        assert_eq!(p.recipe, Recipe::Npm { ci: true });
        let loose = dir(&[("package.json", r#"{"dependencies":{"a":"1"}}"#)]);
        let p = plan(loose.path(), Runtime::Nodejs, &tools())
            .unwrap()
            .unwrap();
        assert_eq!(p.recipe, Recipe::Npm { ci: false });
        let yarn = dir(&[("package.json", "{}"), ("yarn.lock", "")]);
        let err = plan(yarn.path(), Runtime::Nodejs, &tools()).unwrap_err();
        assert!(err.contains("needs yarn"), "{err}");
    }

    #[test]
    fn locks_other_tools_write_are_refused_with_what_to_do() {
        let poetry = dir(&[
            ("pyproject.toml", "[project]\ndependencies=[]"),
            ("poetry.lock", ""),
        ]);
        let err = plan(poetry.path(), Runtime::Python3, &tools()).unwrap_err();
        assert!(err.contains("poetry export"), "{err}");
        let uv = dir(&[("pyproject.toml", "[project]\n"), ("uv.lock", "")]);
        let no_uv = Toolchain {
            uv: false,
            ..tools()
        };
        let err = plan(uv.path(), Runtime::Python3, &no_uv).unwrap_err();
        assert!(err.contains("needs uv"), "{err}");
        let p = plan(uv.path(), Runtime::Python3, &tools())
            .unwrap()
            .unwrap();
        assert_eq!(p.recipe, Recipe::UvLock);
    }
}
