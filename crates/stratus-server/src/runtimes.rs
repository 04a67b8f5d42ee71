//! Finding the interpreters the built-in runtimes run on, once at start,
//! and installing a runtime for each.
//!
//! Each language has a default interpreter, which the unversioned runtime
//! name (`python3`, `nodejs`) runs on: `--runtime python3=PATH`, else
//! `STRATUS_PYTHON`, else `python3` on PATH (likewise for Node.js). Other
//! versions are named with `--runtime python3.12=PATH` or found on PATH
//! (`python3.12`). Each interpreter gets its own runtime directory,
//! `DATA/runtimes/NAME` (`python3.12`): the bootstrap, the Python
//! runtime's packages, and `bin/` with the interpreter under its usual
//! names.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use stratus_manifest::Runtime;
use stratus_scheduler::{Interpreter, Language, Languages};

use crate::config::env;

/// An interpreter named on the command line: `python3.12=/usr/bin/python3.12`,
/// or a language's default, `python3=/opt/py/bin/python3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFlag {
    pub runtime: Runtime,
    pub version: Option<String>,
    pub path: PathBuf,
}

impl std::str::FromStr for RuntimeFlag {
    type Err = String;

    fn from_str(s: &str) -> Result<RuntimeFlag, String> {
        let (name, path) = s.split_once('=').ok_or_else(|| {
            format!("expected NAME=PATH (python3.12=/usr/bin/python3.12), not {s:?}")
        })?;
        let (runtime, version) = Runtime::parse_versioned(name)
            .filter(|(r, _)| *r != Runtime::Provided)
            .ok_or_else(|| {
                format!(
                    "{name:?} is not a language runtime: python3, nodejs, or with a version (python3.12, nodejs22)"
                )
            })?;
        if path.is_empty() {
            return Err(format!("{name}= names no interpreter"));
        }
        Ok(RuntimeFlag {
            runtime,
            version,
            path: PathBuf::from(path),
        })
    }
}

/// Minor versions of Python 3 looked for on PATH as `python3.N`.
const DISCOVERED_PYTHONS: std::ops::RangeInclusive<u32> = 8..=14;

/// The interpreters of this machine, the default of each language first.
/// A `--runtime` interpreter that is missing, or of another version than
/// its name says, is an error; a missing default is a warning (functions
/// on it fail to start).
pub(crate) async fn find_interpreters(named: &[RuntimeFlag]) -> anyhow::Result<Vec<Language>> {
    let named_default = |runtime| {
        named
            .iter()
            .find(|f| f.runtime == runtime && f.version.is_none())
    };
    let python = match named_default(Runtime::Python3) {
        Some(flag) => Some(flag.path.clone()),
        None => std::env::var_os(env::PYTHON).map(PathBuf::from),
    };
    let node = match named_default(Runtime::Nodejs) {
        Some(flag) => Some(flag.path.clone()),
        None => std::env::var_os(env::NODE)
            .map(PathBuf::from)
            .or_else(|| find_on_path("node")),
    };
    let (python_default, node_default) = tokio::join!(
        ask(
            Runtime::Python3,
            python.as_deref().unwrap_or(Path::new("python3"))
        ),
        async {
            match &node {
                Some(node) => ask(Runtime::Nodejs, node).await,
                None => None,
            }
        }
    );
    let mut found = Vec::new();
    for (runtime, default, variable) in [
        (Runtime::Python3, python_default, env::PYTHON),
        (Runtime::Nodejs, node_default, env::NODE),
    ] {
        match default {
            Some(language) => found.push(language),
            None => {
                if let Some(flag) = named_default(runtime) {
                    bail!(
                        "--runtime {runtime}={}: not an interpreter of {runtime} that runs here",
                        flag.path.display()
                    );
                }
                tracing::warn!(
                    "no {runtime} interpreter runs here ({variable}, or on PATH); {runtime} functions will fail to start (set {variable} or --runtime {runtime}=PATH)"
                );
                found.push(unknown(runtime));
            }
        }
    }
    for flag in named.iter().filter(|f| f.version.is_some()) {
        let name = flag
            .runtime
            .versioned_name(flag.version.as_deref().unwrap_or_default());
        let Some(language) = ask(flag.runtime, &flag.path).await else {
            bail!(
                "--runtime {name}={}: not an interpreter that runs here",
                flag.path.display()
            );
        };
        if language.version != flag.version {
            bail!(
                "--runtime {name}={}: that interpreter is {}, not {name}",
                flag.path.display(),
                language.name()
            );
        }
        // Named, it replaces what was found of its version, the default too.
        match found
            .iter_mut()
            .find(|l| l.runtime == language.runtime && l.version == language.version)
        {
            Some(known) => *known = language,
            None => found.push(language),
        }
    }
    for minor in DISCOVERED_PYTHONS {
        let version = format!("3.{minor}");
        if found
            .iter()
            .any(|l| l.runtime == Runtime::Python3 && l.version.as_deref() == Some(&version))
        {
            continue;
        }
        // Version managers' shims are scripts that run some other Python.
        let Some(path) = find_on_path(&format!("python{version}")).filter(|p| !is_script(p)) else {
            continue;
        };
        if let Some(language) = ask(Runtime::Python3, &path).await
            && language.version.as_deref() == Some(&version)
        {
            found.push(language);
        }
    }
    for language in &found {
        tracing::info!(
            runtime = %language.name(),
            executable = %language.interpreter.executable.display(),
            "interpreter"
        );
    }
    Ok(found)
}

/// Installs a runtime for each of `found` under `dir` (its bootstrap, and
/// `bin/` with the interpreter under its usual names), and removes what
/// earlier layouts left there.
pub(crate) fn install(dir: &Path, found: Vec<Language>) -> anyhow::Result<Languages> {
    for old in ["python", "node"] {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    let mut languages = Vec::new();
    for mut language in found {
        let home = dir.join(language.name());
        let bootstrap = match language.runtime {
            Runtime::Python3 => stratus_runtimes::install_python(&home),
            _ => stratus_runtimes::install_node(&home),
        };
        language.bootstrap =
            bootstrap.with_context(|| format!("cannot install the {} runtime", language.name()))?;
        link_names(&home.join(stratus_scheduler::BIN_DIR), &language)
            .with_context(|| format!("cannot link the {} interpreter", language.name()))?;
        languages.push(language);
    }
    Ok(Languages::new(languages))
}

/// `bin/python`, `bin/python3` and `bin/python3.12` (or `bin/node`): links
/// to the interpreter.
fn link_names(bin: &Path, language: &Language) -> std::io::Result<()> {
    std::fs::create_dir_all(bin)?;
    let names = match (language.runtime, &language.version) {
        (Runtime::Python3, Some(version)) => {
            vec![
                "python".to_owned(),
                "python3".to_owned(),
                format!("python{version}"),
            ]
        }
        (Runtime::Python3, None) => vec!["python".to_owned(), "python3".to_owned()],
        _ => vec!["node".to_owned()],
    };
    let target = &language.interpreter.executable;
    for name in names {
        let link = bin.join(&name);
        if std::fs::read_link(&link).ok().as_ref() == Some(target) {
            continue;
        }
        let fresh = bin.join(format!(".{name}.new"));
        let _ = std::fs::remove_file(&fresh);
        std::os::unix::fs::symlink(target, &fresh)?;
        std::fs::rename(&fresh, &link)?;
    }
    Ok(())
}

/// A runtime whose interpreter was not found.
fn unknown(runtime: Runtime) -> Language {
    let program = match runtime {
        Runtime::Python3 => "python3",
        _ => "node",
    };
    Language {
        runtime,
        version: None,
        identity: None,
        interpreter: Interpreter {
            executable: PathBuf::from(program),
            prefix: None,
        },
        bootstrap: PathBuf::new(),
    }
}

/// Asks an interpreter for its real executable (version-manager shims add
/// tens of milliseconds to every start), its installation directory and
/// what it is.
async fn ask(runtime: Runtime, program: &Path) -> Option<Language> {
    let script: &[&str] = match runtime {
        Runtime::Python3 => &[
            "-c",
            "import sys, platform; print(sys.executable); print(sys.base_prefix); print(sys.implementation.cache_tag, platform.machine(), platform.python_version())",
        ],
        _ => &[
            "-p",
            "process.execPath + '\\n\\n' + process.version + ' ' + process.arch",
        ],
    };
    let out = tokio::process::Command::new(program)
        .args(script)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(str::trim);
    let executable = PathBuf::from(lines.next()?).canonicalize().ok()?;
    let base_prefix = lines.next()?;
    let identity = lines.next().filter(|l| !l.is_empty())?.to_owned();
    let prefix = outside_system(&executable).then(|| match runtime {
        Runtime::Python3 => PathBuf::from(base_prefix),
        // bin/node in an install directory such as ~/.nvm/versions/node/vX.
        _ => executable
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"))
            .to_path_buf(),
    });
    Some(Language {
        runtime,
        version: version_of(runtime, &identity),
        identity: Some(identity),
        interpreter: Interpreter { executable, prefix },
        bootstrap: PathBuf::new(),
    })
}

/// The version runtime names give, from an interpreter's identity:
/// `3.11` of `cpython-311 x86_64 3.11.7`, `20` of `v20.20.2 x64`.
fn version_of(runtime: Runtime, identity: &str) -> Option<String> {
    match runtime {
        Runtime::Python3 => {
            let full = identity.split(' ').nth(2)?;
            let mut parts = full.split('.');
            Some(format!("{}.{}", parts.next()?, parts.next()?))
        }
        _ => Some(identity.strip_prefix('v')?.split('.').next()?.to_owned()),
    }
}

/// Whether a file is a script (`#!`) rather than a program.
pub(crate) fn is_script(path: &Path) -> bool {
    let mut head = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| &head == b"#!")
}

/// Whether a path lies outside the directories every sandbox shares.
pub(crate) fn outside_system(path: &Path) -> bool {
    !["/usr", "/bin", "/sbin", "/lib", "/lib64"]
        .iter()
        .any(|dir| path.starts_with(dir))
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The part of the server's environment instances inherit, besides PATH.
pub(crate) fn base_env() -> Vec<(String, String)> {
    vec![
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("TZ".to_owned(), ":UTC".to_owned()),
        ("HOME".to_owned(), "/tmp".to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_flags_name_a_language_and_maybe_its_version() {
        let flag: RuntimeFlag = "python3.12=/usr/bin/python3.12".parse().unwrap();
        assert_eq!(flag.runtime, Runtime::Python3);
        assert_eq!(flag.version.as_deref(), Some("3.12"));
        let flag: RuntimeFlag = "nodejs22.x=/opt/node/bin/node".parse().unwrap();
        assert_eq!(
            (flag.runtime, flag.version.as_deref()),
            (Runtime::Nodejs, Some("22"))
        );
        let flag: RuntimeFlag = "python3=/opt/py/bin/python3".parse().unwrap();
        assert_eq!(flag.version, None);
        for bad in ["python3.12", "provided=/x", "ruby3=/x", "python3.12="] {
            assert!(bad.parse::<RuntimeFlag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_come_from_identities() {
        assert_eq!(
            version_of(Runtime::Python3, "cpython-312 x86_64 3.12.1").as_deref(),
            Some("3.12")
        );
        assert_eq!(
            version_of(Runtime::Nodejs, "v22.3.0 x64").as_deref(),
            Some("22")
        );
    }
}
