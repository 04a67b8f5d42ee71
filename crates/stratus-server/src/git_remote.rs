//! Each app's git remote, over smart HTTP on the admin listener:
//! `git http-backend` (the host's git) run as CGI on a bare repository per
//! app (`DATA_DIR/repos/APP.git`, made on first use), behind the admin
//! token (git sends it as the password of Basic auth). Its pre-receive
//! hook deploys a push of `main` (or `master`) with this very binary's
//! `stratus deploy`, so the build's output reaches the pusher as
//! `remote:` lines, and a push whose deploy fails is rejected: the branch
//! keeps its old commit and the active version keeps serving.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use stratus_scheduler::StreamChunk;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::AppState;
use crate::api::ApiError;

/// Where the repositories are, under the data directory.
const REPOS_DIR: &str = "repos";

/// The hook: deploys each push of the deployed branch from an export of
/// the pushed commit, recording it as the version's source.
const PRE_RECEIVE: &str = r#"#!/bin/sh
# Made by stratus: deploys a push of main (or master); a push that does not
# deploy is refused. Its output reaches the pusher as `remote:` lines.
set -u
zero=0000000000000000000000000000000000000000
status=0
while read -r old new ref; do
  case "$ref" in
    refs/heads/main|refs/heads/master) ;;
    *) echo "stratus: $ref is kept, not deployed (a push of main deploys)"; continue ;;
  esac
  [ "$new" = "$zero" ] && continue
  dir=$(mktemp -d) || exit 1
  if git archive "$new" | tar -x -C "$dir"; then
    subject=$(git log -1 --format=%s "$new")
    short=$(echo "$new" | cut -c1-12)
    "$STRATUS_BIN" deploy "$dir" --source "git $short $subject" 2>&1 || status=1
  else
    status=1
  fi
  rm -rf "$dir"
done
if [ "$status" -ne 0 ]; then
  echo "stratus: nothing was deployed, and the push is refused"
fi
exit "$status"
"#;

/// Any request under `/v1/apps/{app}/git/`: handed to `git http-backend`.
pub(crate) async fn serve(
    State(state): State<Arc<AppState>>,
    UrlPath((app, rest)): UrlPath<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    if !stratus_manifest::is_valid_name(&app) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("{app:?} is not an app name"),
        ));
    }
    let root = state.config.data_dir.join(REPOS_DIR);
    ensure_repository(&root, &app).await?;
    let (parts, body) = request.into_parts();
    let header_text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let exe =
        std::env::current_exe().map_err(|e| ApiError::internal("find the stratus binary", e))?;
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &root)
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{app}.git/{rest}"))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header_text(header::CONTENT_TYPE))
        .env(
            "HTTP_CONTENT_ENCODING",
            header_text(header::CONTENT_ENCODING),
        )
        .env(
            "GIT_PROTOCOL",
            header_text(header::HeaderName::from_static("git-protocol")),
        )
        // Authenticated by the admin token: receive-pack is open to it.
        .env("REMOTE_USER", "stratus")
        .env("REMOTE_ADDR", "127.0.0.1")
        // For the hook's `stratus deploy`.
        .env("STRATUS_BIN", exe)
        .env("STRATUS_URL", &state.admin_url)
        .env("STRATUS_TOKEN", &state.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ApiError::internal("run git http-backend (is git installed?)", e))?;
    let mut stdin = child.stdin.take().expect("piped");
    tokio::spawn(async move {
        let mut body = body;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && stdin.write_all(&data).await.is_err()
            {
                return;
            }
        }
    });
    let stderr = child.stderr.take().expect("piped");
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(target: "git", "{line}");
        }
    });
    // The CGI answer: headers, a blank line, the body.
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut response = Response::builder().status(StatusCode::OK);
    loop {
        let mut line = String::new();
        let read = stdout
            .read_line(&mut line)
            .await
            .map_err(|e| ApiError::internal("read git http-backend", e))?;
        let line = line.trim_end();
        if read == 0 || line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().and_then(|c| c.parse().ok());
            response = response.status(code.unwrap_or(500));
        } else if let Ok(value) = HeaderValue::from_str(value) {
            response = response.header(name, value);
        }
    }
    // The rest streams on as git writes it (a push's hook runs a deploy
    // meanwhile); the child is reaped at its end.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let mut child = child;
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            match tokio::io::AsyncReadExt::read(&mut stdout, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send(StreamChunk::Data(buf.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = child.wait().await;
        let _ = tx.send(StreamChunk::End).await;
    });
    response
        .body(Body::new(crate::public::ChannelBody::new(
            bytes::Bytes::new(),
            rx,
        )))
        .map_err(|e| ApiError::internal("answer git", e))
}

/// Makes `APP.git` under `root` with its hook, once.
async fn ensure_repository(root: &Path, app: &str) -> Result<(), ApiError> {
    static MAKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let repo = root.join(format!("{app}.git"));
    if repo.join("hooks").join("pre-receive").is_file() {
        return Ok(());
    }
    let _making = MAKING.lock().await;
    if repo.join("hooks").join("pre-receive").is_file() {
        return Ok(());
    }
    let partial: PathBuf = root.join(format!(".partial-{app}.git"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(root)
        .map_err(|e| ApiError::internal("make the repositories' directory", e))?;
    let made = tokio::process::Command::new("git")
        .args(["init", "--bare", "--quiet", "--initial-branch", "main"])
        .arg(&partial)
        .output()
        .await
        .map_err(|e| ApiError::internal("run git init (is git installed?)", e))?;
    if !made.status.success() {
        return Err(ApiError::internal(
            "git init",
            String::from_utf8_lossy(&made.stderr).into_owned(),
        ));
    }
    let hook = partial.join("hooks").join("pre-receive");
    std::fs::write(&hook, PRE_RECEIVE)
        .and_then(|()| {
            std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        })
        .and_then(|()| std::fs::rename(&partial, &repo))
        .map_err(|e| ApiError::internal("make the app's repository", e))
}
