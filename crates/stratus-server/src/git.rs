//! Deploys from git: the server fetches one commit of a repository it can
//! reach (`git fetch --depth 1`, with git from the host), packs the app's
//! code directories as an upload would, and deploys them, recording the
//! commit and its subject as the version's source.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::AppState;
use crate::api::ApiError;
use crate::deploy::{self, DeployRequest, DeployResponse};

/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Transports a URL may use (git's `ext::` runs commands: never).
const PROTOCOLS: &str = "http:https:git:ssh:file";

/// What to deploy: a repository, a ref in it, and the directory of the
/// app's `stratus.yaml` within it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GitSource {
    pub url: String,
    /// A branch, tag or commit; default: the repository's HEAD.
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
    /// The app's directory in the repository; default: its root.
    #[serde(default)]
    pub path: Option<String>,
    /// The app the manifest must name (a webhook's); any, when `None`.
    #[serde(skip)]
    pub app: Option<String>,
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn refused(message: String) -> ApiError {
    ApiError::bad_request("invalid_git_source", message)
}

/// Runs git with `args` in `dir`; its stdout, or an error that ends with
/// its last lines of stderr.
async fn git(dir: &Path, args: &[&str], what: &str) -> Result<String, ApiError> {
    let mut command = tokio::process::Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", PROTOCOLS)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = match tokio::time::timeout(FETCH_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::new(
                axum::http::StatusCode::NOT_IMPLEMENTED,
                "git_missing",
                "git is not installed on the server (Debian: apt-get install git)",
            ));
        }
        Ok(Err(err)) => return Err(ApiError::internal("run git", err)),
        Err(_) => {
            return Err(refused(format!(
                "{what} took longer than {FETCH_TIMEOUT:?}; nothing was deployed"
            )));
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(5).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        return Err(refused(format!(
            "{what} failed; nothing was deployed: {}",
            last.join(" / ")
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The app's directory `path` within the checkout at `root`, if it stays
/// inside it.
fn app_dir(root: &Path, path: Option<&str>) -> Result<PathBuf, ApiError> {
    let Some(path) = path.filter(|p| !p.is_empty() && *p != ".") else {
        return Ok(root.to_owned());
    };
    let inside = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(refused(format!(
            "path {path:?} must be a directory inside the repository, without `..`"
        )));
    }
    Ok(root.join(path))
}

/// Fetches, packs and deploys `source`.
pub(crate) async fn deploy(
    state: &AppState,
    source: GitSource,
    sink: &std::sync::Arc<crate::build::Sink>,
) -> Result<DeployResponse, ApiError> {
    if source.url.is_empty() || source.url.starts_with('-') {
        return Err(refused(format!("{:?} is not a git URL", source.url)));
    }
    let reference = source.reference.as_deref().unwrap_or("HEAD");
    if reference.is_empty() || reference.starts_with('-') {
        return Err(refused(format!("{reference:?} is not a git ref")));
    }
    let scratch = Scratch(
        state
            .config
            .data_dir
            .join("git")
            .join(uuid::Uuid::new_v4().to_string()),
    );
    std::fs::create_dir_all(&scratch.0)
        .map_err(|e| ApiError::internal("make a directory to fetch into", e))?;
    let dir = &scratch.0;
    let fetching = format!("fetching {reference} of {}", source.url);
    git(dir, &["init", "-q"], "git init").await?;
    git(
        dir,
        &["fetch", "-q", "--depth", "1", "--", &source.url, reference],
        &fetching,
    )
    .await?;
    git(dir, &["checkout", "-q", "FETCH_HEAD"], "checking out").await?;
    let head = git(dir, &["log", "-1", "--format=%H%n%s"], "reading the commit").await?;
    let mut lines = head.lines();
    let commit = lines.next().unwrap_or_default().to_owned();
    let subject = lines.next().unwrap_or_default().to_owned();

    let app_dir = app_dir(dir, source.path.as_deref())?;
    let manifest_path = app_dir.join(stratus_manifest::MANIFEST_FILE);
    let label = format!(
        "{}@{}:{}",
        source.url,
        &commit[..commit.len().min(12)],
        Path::new(source.path.as_deref().unwrap_or("."))
            .join(stratus_manifest::MANIFEST_FILE)
            .display()
    );
    let manifest = std::fs::read_to_string(&manifest_path).map_err(|_| {
        refused(format!(
            "{label} does not exist; give the app's directory in the repository with `path`"
        ))
    })?;
    let spec = stratus_manifest::parse(&label, &manifest).map_err(|errors| {
        ApiError::bad_request(
            "invalid_manifest",
            format!(
                "{label} has {} problem(s); nothing was deployed",
                errors.0.len()
            ),
        )
        .with_details(errors.0.iter().map(ToString::to_string).collect())
    })?;
    if let Some(app) = &source.app
        && &spec.name != app
    {
        return Err(refused(format!(
            "{label} declares app {:?}, but the webhook is app {app:?}'s; nothing was deployed",
            spec.name
        )));
    }
    let mut packages = std::collections::BTreeMap::new();
    for code in spec.code_dirs() {
        let path = app_dir.join(code);
        // Links may not lead out of the checkout.
        let inside = path
            .canonicalize()
            .ok()
            .zip(dir.canonicalize().ok())
            .is_some_and(|(path, root)| path.starts_with(root));
        if !inside || !path.is_dir() {
            return Err(refused(format!(
                "the code directory {code:?} of {label} is not in the repository"
            )));
        }
        let package = tokio::task::spawn_blocking(move || stratus_archive::pack(&path))
            .await
            .map_err(|e| ApiError::internal("pack the code", e))?
            .map_err(|e| refused(format!("cannot pack {code:?} of {label}: {e}")))?;
        deploy::put_package(state, &package.sha256, package.bytes.into()).await?;
        packages.insert(code.to_owned(), package.sha256);
    }
    deploy::deploy(
        state,
        &spec.name,
        DeployRequest {
            manifest,
            file: Some(label),
            packages,
            source: Some(format!("git {} {subject}", &commit[..commit.len().min(12)])),
            debug: None,
        },
        sink,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_s_directory_stays_inside_the_checkout() {
        let root = Path::new("/x");
        assert_eq!(app_dir(root, None).unwrap(), root);
        assert_eq!(app_dir(root, Some(".")).unwrap(), root);
        assert_eq!(app_dir(root, Some("apps/a")).unwrap(), root.join("apps/a"));
        assert!(app_dir(root, Some("../etc")).is_err());
        assert!(app_dir(root, Some("/etc")).is_err());
        assert!(app_dir(root, Some("a/../../b")).is_err());
    }
}
