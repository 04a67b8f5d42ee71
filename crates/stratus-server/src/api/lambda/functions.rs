//! What tools ask Lambda's API before they invoke (the AWS CLI, SAM,
//! Terraform, boto3 scripts): `ListFunctions`, `GetFunction` and
//! `GetFunctionConfiguration`, for the caller's functions (an app's
//! credential sees its own app, the admin token every app). A function's
//! environment is given by its names only, never its values, which may be
//! secrets. Every other operation of Lambda's API is answered in Lambda's
//! error shape, naming what is served.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use stratus_manifest::{FunctionSpec, LogFormat};
use stratus_store::VersionRecord;

use super::{Caller, LambdaError, Target, claim, confirm};
use crate::AppState;

/// Functions in one page of `ListFunctions`, unless `MaxItems` says fewer
/// (Lambda's own default).
const PAGE: usize = 50;
/// The most `MaxItems` may ask for.
const MAX_PAGE: usize = 10_000;

/// Who asks; these operations are GETs, with an empty body to sign.
fn caller(state: &AppState, request: Request) -> Result<Caller, LambdaError> {
    let (parts, _) = request.into_parts();
    confirm(claim(state, &parts)?, &parts, b"")
}

#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    #[serde(rename = "Marker")]
    marker: Option<String>,
    #[serde(rename = "MaxItems")]
    max_items: Option<usize>,
}

/// `GET /2015-03-31/functions/`.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Query(params): Query<ListParams>,
    request: Request,
) -> Response {
    answer(async {
        let caller = caller(&state, request)?;
        let max = params.max_items.unwrap_or(PAGE);
        if !(1..=MAX_PAGE).contains(&max) {
            return Err(LambdaError::invalid_parameter(format!(
                "MaxItems {max} is not between 1 and {MAX_PAGE}"
            )));
        }
        let versions = state.store.active_versions().await.map_err(|e| {
            LambdaError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                e.to_string(),
            )
        })?;
        let mut functions: Vec<(String, Value)> = versions
            .iter()
            .filter(|v| match &caller {
                Caller::Admin => true,
                Caller::App(app) => *app == v.app,
            })
            .flat_map(|v| {
                v.spec
                    .functions
                    .values()
                    .map(|f| (format!("{}.{}", v.app, f.name), configuration(&state, v, f)))
            })
            .collect();
        functions.sort_by(|a, b| a.0.cmp(&b.0));
        let start = match &params.marker {
            Some(marker) => functions.partition_point(|(name, _)| name <= marker),
            None => 0,
        };
        let page: Vec<&(String, Value)> = functions.iter().skip(start).take(max).collect();
        let next = (start + page.len() < functions.len())
            .then(|| page.last().map(|(name, _)| name.clone()))
            .flatten();
        Ok(axum::Json(json!({
            "Functions": page.iter().map(|(_, config)| config).collect::<Vec<_>>(),
            "NextMarker": next,
        }))
        .into_response())
    })
    .await
}

/// `GET /2015-03-31/functions/{name}`.
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    read(&state, &name, request, |config| {
        json!({
            "Configuration": config,
            "Code": { "RepositoryType": "S3" },
            "Tags": {},
        })
    })
    .await
}

/// `GET /2015-03-31/functions/{name}/configuration`.
pub(super) async fn get_configuration(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    read(&state, &name, request, |config| config).await
}

/// The configuration of the function `name` names, as `shape` presents it.
async fn read(
    state: &AppState,
    name: &str,
    request: Request,
    shape: impl FnOnce(Value) -> Value,
) -> Response {
    answer(async {
        let (version, function) = find(state, name, request).await?;
        let config = configuration(state, &version, function_of(&version, &function)?);
        Ok(axum::Json(shape(config)).into_response())
    })
    .await
}

/// Any other operation of Lambda's API (its paths start with a date).
pub(super) async fn unsupported(
    State(state): State<Arc<AppState>>,
    Path((date, rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    let lambda_path = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !lambda_path {
        return super::super::ApiError::not_found(
            "no such admin API endpoint; the README lists them",
        )
        .into_response();
    }
    let method = request.method().clone();
    answer(async {
        caller(&state, request)?;
        Err(LambdaError::new(
            StatusCode::BAD_REQUEST,
            "UnsupportedOperationException",
            format!(
                "{method} /{date}/{rest} is not an operation this server's Lambda API serves; it serves Invoke, ListFunctions, GetFunction and GetFunctionConfiguration"
            ),
        ))
    })
    .await
}

async fn answer(work: impl Future<Output = Result<Response, LambdaError>>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = work.await.unwrap_or_else(IntoResponse::into_response);
    super::invoke::set_header(response.headers_mut(), super::REQUEST_ID, request_id);
    response
}

/// The active version of the function `name` names, when the caller may
/// see it.
async fn find(
    state: &AppState,
    name: &str,
    request: Request,
) -> Result<(VersionRecord, String), LambdaError> {
    let caller = caller(state, request)?;
    let target = Target::parse(name)?;
    caller.may("read", &target.app)?;
    let version = state
        .store
        .active_version(&target.app)
        .await
        .map_err(|e| {
            LambdaError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                e.to_string(),
            )
        })?
        .ok_or_else(|| LambdaError::not_found(format!("function not found: {name}")))?;
    if let Some(qualifier) = &target.qualifier
        && qualifier != "$LATEST"
        && *qualifier != version.version.to_string()
    {
        return Err(LambdaError::not_found(format!(
            "function not found: {name}; the qualifier is $LATEST or the active version, {}",
            version.version
        )));
    }
    Ok((version, target.function))
}

fn function_of<'a>(
    version: &'a VersionRecord,
    name: &str,
) -> Result<&'a FunctionSpec, LambdaError> {
    version.spec.functions.get(name).ok_or_else(|| {
        LambdaError::not_found(format!("function not found: {}.{name}", version.app))
    })
}

/// Lambda's `FunctionConfiguration` of `function`, as of `version`.
fn configuration(state: &AppState, version: &VersionRecord, function: &FunctionSpec) -> Value {
    let name = format!("{}.{}", version.app, function.name);
    let sha = version.packages.get(&function.code);
    let code_sha256 = sha
        .and_then(|hex| crate::hex::decode(hex))
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .unwrap_or_default();
    let code_size = sha
        .and_then(|sha| {
            std::fs::metadata(
                state
                    .config
                    .data_dir
                    .join("packages")
                    .join(format!("{sha}.tar.gz")),
            )
            .ok()
        })
        .map_or(0, |m| m.len());
    let modified =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(version.created_ms.max(0) as u64);
    // Lambda writes `2024-01-31T12:00:00.000+0000`.
    let last_modified = humantime::format_rfc3339_millis(modified)
        .to_string()
        .replace('Z', "+0000");
    let variables: serde_json::Map<String, Value> = function
        .env
        .keys()
        .map(|k| (k.clone(), Value::String(String::new())))
        .collect();
    let (log_format, level) = match function.log_format {
        LogFormat::Text => ("Text", function.log_level.clone()),
        LogFormat::Json => (
            "JSON",
            Some(function.log_level.clone().unwrap_or_else(|| "INFO".into())),
        ),
    };
    json!({
        "FunctionName": name,
        "FunctionArn": state.scheduler.function_arn(&version.app, &function.name),
        "Runtime": function.runtime.to_string(),
        "Role": "arn:aws:iam::000000000000:role/stratus",
        "Handler": function.handler,
        "CodeSize": code_size,
        "Description": "",
        "Timeout": function.timeout.as_secs(),
        "MemorySize": function.memory_mb,
        "LastModified": last_modified,
        "CodeSha256": code_sha256,
        "Version": "$LATEST",
        "Environment": { "Variables": variables },
        "TracingConfig": { "Mode": "PassThrough" },
        "RevisionId": format!("{}-{}", version.app, version.version),
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [if cfg!(target_arch = "aarch64") { "arm64" } else { "x86_64" }],
        "EphemeralStorage": { "Size": state.config.data_plane.tmp_mb },
        "LoggingConfig": {
            "LogFormat": log_format,
            "ApplicationLogLevel": level,
            "LogGroup": format!("/stratus/{}/{}", version.app, function.name),
        },
    })
}
