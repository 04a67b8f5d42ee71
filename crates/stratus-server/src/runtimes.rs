//! Finding the interpreters the built-in runtimes run on, once at start.

use std::path::{Path, PathBuf};

use stratus_scheduler::Interpreter;

use crate::config::env;

/// The real Python and Node.js executables. Version-manager shims (pyenv)
/// add tens of milliseconds to every start, so Python is asked for
/// `sys.executable` once here.
pub(crate) async fn locate_interpreters() -> (Interpreter, Interpreter) {
    let python = std::env::var_os(env::PYTHON).map(PathBuf::from);
    let python = ask_python(python.as_deref().unwrap_or(Path::new("python3")))
        .await
        .unwrap_or_else(|| {
            tracing::warn!(
                "python3 not found on PATH; python3 functions will fail to start (set {})",
                env::PYTHON
            );
            Interpreter {
                executable: PathBuf::from("python3"),
                prefix: None,
            }
        });
    let node = std::env::var_os(env::NODE)
        .map(PathBuf::from)
        .or_else(|| find_on_path("node"))
        .and_then(|path| path.canonicalize().ok());
    let node = match node {
        Some(executable) => Interpreter {
            prefix: outside_system(&executable).then(|| {
                // bin/node in an install directory such as ~/.nvm/versions/node/vX.
                executable
                    .parent()
                    .and_then(Path::parent)
                    .unwrap_or(Path::new("/"))
                    .to_path_buf()
            }),
            executable,
        },
        None => {
            tracing::warn!(
                "node not found on PATH; nodejs functions will fail to start (set {})",
                env::NODE
            );
            Interpreter {
                executable: PathBuf::from("node"),
                prefix: None,
            }
        }
    };
    tracing::info!(python = %python.executable.display(), node = %node.executable.display(), "runtimes");
    (python, node)
}

/// Asks a Python for its real executable and installation directory.
async fn ask_python(python: &Path) -> Option<Interpreter> {
    let out = tokio::process::Command::new(python)
        .args([
            "-c",
            "import sys; print(sys.executable); print(sys.base_prefix)",
        ])
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let executable = PathBuf::from(lines.next()?.trim());
    let prefix = PathBuf::from(lines.next()?.trim());
    Some(Interpreter {
        prefix: outside_system(&executable).then_some(prefix),
        executable,
    })
}

/// Whether a path lies outside the directories every sandbox shares.
fn outside_system(path: &Path) -> bool {
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
