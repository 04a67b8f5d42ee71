//! Finding the interpreters the built-in runtimes run on, once at start.

use std::path::PathBuf;

use crate::config::env;

/// The real Python and Node.js executables. Version-manager shims (pyenv)
/// add tens of milliseconds to every start, so Python is asked for
/// `sys.executable` once here.
pub(crate) async fn locate_interpreters() -> (PathBuf, PathBuf) {
    let python = match std::env::var_os(env::PYTHON) {
        Some(path) => PathBuf::from(path),
        None => {
            let output = tokio::process::Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .await;
            match output {
                Ok(out) if out.status.success() => {
                    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
                }
                _ => {
                    tracing::warn!(
                        "python3 not found on PATH; python3 functions will fail to start (set {})",
                        env::PYTHON
                    );
                    PathBuf::from("python3")
                }
            }
        }
    };
    let node = match std::env::var_os(env::NODE) {
        Some(path) => PathBuf::from(path),
        None => find_on_path("node").unwrap_or_else(|| {
            tracing::warn!(
                "node not found on PATH; nodejs functions will fail to start (set {})",
                env::NODE
            );
            PathBuf::from("node")
        }),
    };
    tracing::info!(python = %python.display(), node = %node.display(), "runtimes");
    (python, node)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The part of the server's environment instances inherit.
pub(crate) fn base_env() -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_owned(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("TZ".to_owned(), ":UTC".to_owned()),
        ("HOME".to_owned(), "/tmp".to_owned()),
    ];
    for name in ["PYENV_ROOT", "SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Ok(value) = std::env::var(name) {
            env.push((name.to_owned(), value));
        }
    }
    env
}
