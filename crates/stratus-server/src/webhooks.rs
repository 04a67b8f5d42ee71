//! Git push webhooks: a push to a repository deploys the app it holds.
//!
//! Set up through the admin API (`stratus git webhook APP --url URL`),
//! which keeps the repository, the ref and path to deploy and a random
//! secret as the app's secret [`SECRET_NAME`]: sealed like any other,
//! shared by every node, removed with the app, never listed. Served on the
//! public listener (git hosts cannot reach the admin one) at [`PATH`]
//! under the app's prefix or host, and authenticated only by the HMAC of
//! the body that GitHub, Gitea and Forgejo send in `X-Hub-Signature-256`.
//! The deploy runs after the answer (`202`): a host waits seconds at most.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stratus_store::SecretRecord;

use crate::AppState;
use crate::api::ApiError;
use crate::app_secrets;

/// The app secret that holds a webhook; users' secret names cannot start
/// with `_`.
pub(crate) const SECRET_NAME: &str = "_git_webhook";
/// Where the public listener takes pushes, under the app's prefix or host.
pub(crate) const PATH: &str = "/_stratus/webhooks/git";
/// The largest push event read.
pub(crate) const MAX_EVENT_BYTES: usize = 5 * 1024 * 1024;

/// What a webhook deploys, and its secret.
#[derive(Debug, Serialize, Deserialize)]
struct Hook {
    url: String,
    /// The branch or tag deployed; every pushed one, when `None`.
    #[serde(rename = "ref")]
    reference: Option<String>,
    path: Option<String>,
    secret: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HookRequest {
    url: String,
    #[serde(default, rename = "ref")]
    reference: Option<String>,
    #[serde(default)]
    path: Option<String>,
}

/// `PUT /v1/apps/{app}/webhooks/git` `{"url", "ref"?, "path"?}`: makes (or
/// replaces, with a new secret) the app's webhook; answers with the URL to
/// give the git host and the secret, this once.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: HookRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(
            "invalid_request",
            format!("send {{\"url\": URL, \"ref\": BRANCH?, \"path\": DIR?}}: {err}"),
        )
    })?;
    if !stratus_manifest::is_valid_name(&app) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("{app:?} is not an app name"),
        ));
    }
    if request.url.is_empty() || request.url.starts_with('-') {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("{:?} is not a git URL", request.url),
        ));
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| ApiError::internal("make a secret", e))?;
    let hook = Hook {
        url: request.url,
        reference: request.reference.filter(|r| !r.is_empty()),
        path: request.path.filter(|p| !p.is_empty()),
        secret: crate::hex::encode(&secret),
    };
    let value =
        serde_json::to_string(&hook).map_err(|e| ApiError::internal("keep the webhook", e))?;
    let sealed = state
        .sealer
        .seal(&app_secrets::context(&app, SECRET_NAME), &value)
        .map_err(|err| ApiError::internal("seal the webhook's secret", err))?;
    let updated_ms = crate::now_ms();
    state
        .store
        .put_secret(SecretRecord {
            app: app.clone(),
            name: SECRET_NAME.to_owned(),
            sealed,
            updated_ms,
        })
        .await?;
    state.secrets.set(&app, SECRET_NAME, value, updated_ms);
    Ok(Json(json!({
        "app": app,
        "url": format!("{}/{app}{PATH}", state.public_url),
        "secret": hook.secret,
        "repository": hook.url,
        "ref": hook.reference,
        "path": hook.path,
    })))
}

/// `DELETE /v1/apps/{app}/webhooks/git`.
pub(crate) async fn remove(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.delete_secret(&app, SECRET_NAME).await? {
        return Err(ApiError::not_found(format!("app {app} has no git webhook")));
    }
    state.secrets.remove(&app, SECRET_NAME);
    Ok(StatusCode::NO_CONTENT)
}

/// The public listener's side: judges a push to `app`'s webhook and
/// starts its deploy.
pub(crate) struct GitHooks(pub Arc<AppState>);

#[async_trait::async_trait]
impl crate::public::Webhooks for GitHooks {
    async fn git_push(&self, app: &str, headers: &HeaderMap, body: Bytes) -> (StatusCode, Value) {
        let state = &self.0;
        let answer = |status: StatusCode, message: String| (status, json!({ "message": message }));
        let Some(hook) = state
            .secrets
            .values(app)
            .remove(SECRET_NAME)
            .and_then(|v| serde_json::from_str::<Hook>(&v).ok())
        else {
            return answer(
                StatusCode::NOT_FOUND,
                format!("app {app} has no git webhook"),
            );
        };
        let signature = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("sha256="))
            .and_then(crate::hex::decode);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hook.secret.as_bytes());
        let genuine = signature.is_some_and(|s| ring::hmac::verify(&key, &body, &s).is_ok());
        if !genuine {
            return answer(
                StatusCode::UNAUTHORIZED,
                "X-Hub-Signature-256 is missing or is not the HMAC-SHA256 of the body with this webhook's secret".to_owned(),
            );
        }
        let event = headers
            .get("x-github-event")
            .or_else(|| headers.get("x-gitea-event"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("push");
        if event == "ping" {
            return answer(StatusCode::OK, "pong".to_owned());
        }
        if event != "push" {
            return answer(
                StatusCode::ACCEPTED,
                format!("{event} events deploy nothing"),
            );
        }
        let push: Value = match serde_json::from_slice(&body) {
            Ok(push) => push,
            Err(err) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    format!("the push event is not JSON: {err}"),
                );
            }
        };
        let pushed = push["ref"].as_str().unwrap_or_default().to_owned();
        if push["deleted"] == true {
            return answer(
                StatusCode::ACCEPTED,
                format!("{pushed} was deleted: nothing to deploy"),
            );
        }
        let wanted = match &hook.reference {
            Some(r) => [
                r.clone(),
                format!("refs/heads/{r}"),
                format!("refs/tags/{r}"),
            ]
            .contains(&pushed),
            None => !pushed.is_empty(),
        };
        if !wanted {
            return answer(
                StatusCode::ACCEPTED,
                format!(
                    "{pushed:?} is not the webhook's ref ({}): nothing to deploy",
                    hook.reference.as_deref().unwrap_or("any")
                ),
            );
        }
        let source = crate::git::GitSource {
            url: hook.url,
            reference: Some(pushed.clone()),
            path: hook.path,
            app: Some(app.to_owned()),
        };
        let (state, app_name) = (state.clone(), app.to_owned());
        tokio::spawn(async move {
            let sink = crate::build::Sink::new(None);
            match crate::git::deploy(&state, source, &sink).await {
                Ok(done) => {
                    tracing::info!(app = %app_name, version = done.version, changed = done.changed, "deployed a git push");
                    if done.changed {
                        crate::deploy::prune_in_background(state.clone());
                    }
                }
                Err(err) => {
                    tracing::warn!(app = %app_name, error = %err.message, "a git push did not deploy");
                }
            }
        });
        (
            StatusCode::ACCEPTED,
            json!({ "message": format!("deploying {pushed}"), "ref": pushed, "commit": push["after"] }),
        )
    }
}
