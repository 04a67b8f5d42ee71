//! Lambda's Invoke API on the admin listener,
//! `POST /2015-03-31/functions/{FunctionName}/invocations`, so that AWS
//! SDKs and the AWS CLI invoke functions with only an `endpoint_url`.
//!
//! `FunctionName` is `APP.FN` or its ARN,
//! `arn:aws:lambda:REGION:ACCOUNT:function:APP.FN`, either with an optional
//! `:QUALIFIER`; the qualifier (there or in the `Qualifier` parameter) is
//! `$LATEST` or the active version's number. Callers sign requests with
//! Signature Version 4 (`sigv4.rs`), with an AWS credential of the
//! function's app (`stratus keys create APP --aws`), any region, service
//! `lambda`; the admin token as a bearer token is accepted too. This route
//! is outside the bearer-token middleware of `/v1`. Errors are Lambda's: a
//! JSON body `{"Type", "message"}` and the exception's name in
//! `x-amzn-ErrorType`, which is what the SDKs read the error code from.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use stratus_store::AwsCredentialRecord;

use super::invoke::{self, header, set_header};
use super::sigv4::{self, Authorization, SigV4Error, SignedRequest};
use super::{ApiError, constant_time_eq};
use crate::AppState;

const REQUEST_ID: &str = "x-amzn-requestid";

mod functions;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .route("/2015-03-31/functions", get(functions::list))
        .route("/2015-03-31/functions/", get(functions::list))
        .route("/2015-03-31/functions/{function}", get(functions::get))
        .route(
            "/2015-03-31/functions/{function}/configuration",
            get(functions::get_configuration),
        )
        // Lambda's other operations, by their dated paths.
        .route("/{date}/{*rest}", any(functions::unsupported))
}

/// An error in Lambda's shape: a status, the exception's name and a message.
#[derive(Debug)]
struct LambdaError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl LambdaError {
    fn new(
        status: StatusCode,
        error_type: &'static str,
        message: impl Into<String>,
    ) -> LambdaError {
        LambdaError {
            status,
            error_type,
            message: message.into(),
            retry_after: None,
        }
    }

    fn not_found(message: impl Into<String>) -> LambdaError {
        LambdaError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    fn invalid_parameter(message: impl Into<String>) -> LambdaError {
        LambdaError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }
}

/// The errors the invocation shares with the `/v1` API, by their status.
impl From<ApiError> for LambdaError {
    fn from(err: ApiError) -> LambdaError {
        let error_type = match err.status {
            StatusCode::NOT_FOUND => "ResourceNotFoundException",
            StatusCode::PAYLOAD_TOO_LARGE => "RequestTooLargeException",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequestsException",
            StatusCode::BAD_REQUEST => "InvalidRequestContentException",
            _ => "ServiceException",
        };
        LambdaError {
            status: err.status,
            error_type,
            message: err.message,
            retry_after: err.retry_after,
        }
    }
}

impl From<SigV4Error> for LambdaError {
    fn from(err: SigV4Error) -> LambdaError {
        let (status, error_type) = match err {
            SigV4Error::Malformed(_) => (StatusCode::BAD_REQUEST, "IncompleteSignatureException"),
            _ => (StatusCode::FORBIDDEN, "InvalidSignatureException"),
        };
        LambdaError::new(status, error_type, err.to_string())
    }
}

impl IntoResponse for LambdaError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let body = json!({ "Type": kind, "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        set_header(headers, "x-amzn-errortype", self.error_type.to_owned());
        if let Some(secs) = self.retry_after {
            set_header(headers, "retry-after", secs.to_string());
        }
        response
    }
}

/// The function a `FunctionName` names.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    app: String,
    function: String,
    qualifier: Option<String>,
}

impl Target {
    fn parse(name: &str) -> Result<Target, LambdaError> {
        let unknown = || {
            LambdaError::not_found(format!(
                "function not found: {name}; name a function APP.FN or by its ARN, arn:aws:lambda:REGION:ACCOUNT:function:APP.FN"
            ))
        };
        let unqualified = match name.strip_prefix("arn:") {
            Some(arn) => match arn.splitn(5, ':').collect::<Vec<_>>()[..] {
                [_partition, "lambda", _region, _account, rest] => {
                    rest.strip_prefix("function:").ok_or_else(unknown)?
                }
                _ => return Err(unknown()),
            },
            None => name,
        };
        let (qualified, qualifier) = match unqualified.split_once(':') {
            Some((qualified, qualifier)) => (qualified, Some(qualifier.to_owned())),
            None => (unqualified, None),
        };
        match qualified.split_once('.') {
            Some((app, function)) if !app.is_empty() && !function.is_empty() => Ok(Target {
                app: app.to_owned(),
                function: function.to_owned(),
                qualifier,
            }),
            _ => Err(unknown()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
}

/// Who signed a request.
enum Caller {
    Admin,
    /// The holder of a credential of this app.
    App(String),
}

impl Caller {
    /// Refuses `doing` (`invoke`, `read`) to the functions of another app
    /// than the credential's.
    fn may(&self, doing: &str, app: &str) -> Result<(), LambdaError> {
        match self {
            Caller::App(own) if own != app => Err(LambdaError::new(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                format!(
                    "the credential is app {own:?}'s and may not {doing} functions of app {app:?}"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// The credential a request names, before its signature is checked
/// (which needs the body).
enum Claim {
    Admin,
    Signed(Authorization, Arc<AwsCredentialRecord>),
}

fn claim(state: &AppState, parts: &Parts) -> Result<Claim, LambdaError> {
    let unrecognized = |message: &str| {
        LambdaError::new(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            message,
        )
    };
    let Some(given) = header(&parts.headers, "authorization") else {
        return Err(LambdaError::new(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "the request is not signed; sign it with Signature Version 4 using a credential from `stratus keys create APP --aws`",
        ));
    };
    if let Some(token) = given.strip_prefix("Bearer ") {
        if constant_time_eq(token.as_bytes(), state.token.as_bytes()) {
            return Ok(Claim::Admin);
        }
        return Err(unrecognized("the bearer token is not the admin token"));
    }
    let auth = Authorization::parse(&given)?;
    match state.aws_credentials.get(&auth.access_key_id) {
        Some(credential) => Ok(Claim::Signed(auth, credential)),
        None => Err(unrecognized(
            "the security token included in the request is invalid: no app has this access key id",
        )),
    }
}

fn confirm(claim: Claim, parts: &Parts, body: &[u8]) -> Result<Caller, LambdaError> {
    let (auth, credential) = match claim {
        Claim::Admin => return Ok(Caller::Admin),
        Claim::Signed(auth, credential) => (auth, credential),
    };
    let request = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body,
    };
    sigv4::verify(
        &auth,
        &request,
        &credential.secret,
        "lambda",
        SystemTime::now(),
    )?;
    Ok(Caller::App(credential.app.clone()))
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(function_name): Path<String>,
    request: Request,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = serve(&state, &function_name, request, &request_id)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    if !response.headers().contains_key(REQUEST_ID) {
        set_header(response.headers_mut(), REQUEST_ID, request_id);
    }
    response
}

async fn serve(
    state: &AppState,
    function_name: &str,
    request: Request,
    request_id: &str,
) -> Result<Response, LambdaError> {
    let (parts, body) = request.into_parts();
    let claim = claim(state, &parts)?;
    let body = invoke::read_body(state, body).await?;
    let caller = confirm(claim, &parts, &body)?;
    let target = Target::parse(function_name)?;
    caller.may("invoke", &target.app)?;
    let params = Query::<Params>::try_from_uri(&parts.uri)
        .map_err(|e| LambdaError::invalid_parameter(e.body_text()))?;
    check_version(state, &target, params.0.qualifier)?;

    let invocation_type = header(&parts.headers, "x-amz-invocation-type");
    match invocation_type.as_deref().unwrap_or("RequestResponse") {
        "RequestResponse" => {}
        "Event" => {
            let payload = invoke::json_payload(body)?;
            let request_id = invoke::enqueue(
                state,
                &target.app,
                &target.function,
                payload,
                &parts.headers,
            )
            .await?;
            let mut response = StatusCode::ACCEPTED.into_response();
            set_header(response.headers_mut(), REQUEST_ID, request_id);
            return Ok(response);
        }
        "DryRun" => return Ok(StatusCode::NO_CONTENT.into_response()),
        other => {
            return Err(LambdaError::invalid_parameter(format!(
                "X-Amz-Invocation-Type {other:?} is none of RequestResponse, Event and DryRun"
            )));
        }
    }
    let want_logs = match header(&parts.headers, "x-amz-log-type").as_deref() {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(LambdaError::invalid_parameter(format!(
                "X-Amz-Log-Type {other:?} is neither None nor Tail"
            )));
        }
    };
    invoke_sync(state, &target, body, &parts, want_logs, request_id).await
}

/// Checks that the function exists and that the qualifier is `$LATEST`,
/// the active version's number, or absent. (A deploy may still come
/// before the invocation; `X-Amz-Executed-Version` says what ran.)
fn check_version(
    state: &AppState,
    target: &Target,
    parameter: Option<String>,
) -> Result<(), LambdaError> {
    let qualifier = match (&target.qualifier, parameter) {
        (Some(named), Some(given)) if *named != given => {
            return Err(LambdaError::invalid_parameter(format!(
                "the qualifier in the function name ({named}) is not the Qualifier parameter ({given})"
            )));
        }
        (named, given) => given.or_else(|| named.clone()),
    };
    let Some(pool) = state.scheduler.pool(&target.app, &target.function) else {
        return Err(LambdaError::not_found(format!(
            "function not found: {}",
            state.scheduler.function_arn(&target.app, &target.function)
        )));
    };
    let active = pool.config.version;
    match qualifier.as_deref() {
        None | Some("$LATEST") => Ok(()),
        Some(q) if q == active.to_string() => Ok(()),
        Some(q) => Err(LambdaError::not_found(format!(
            "function not found: {}:{q}; the qualifier is $LATEST or the active version, {active}",
            state.scheduler.function_arn(&target.app, &target.function)
        ))),
    }
}

async fn invoke_sync(
    state: &AppState,
    target: &Target,
    body: Bytes,
    parts: &Parts,
    want_logs: bool,
    request_id: &str,
) -> Result<Response, LambdaError> {
    let payload = invoke::json_payload(body)?;
    let mut invocation = invoke::invocation(payload, &parts.headers, want_logs);
    invocation.request_id = request_id.to_owned();
    let mut outcome = state
        .scheduler
        .invoke(&target.app, &target.function, invocation)
        .await
        .map_err(|e| LambdaError::from(invoke::invoke_error(e)))?;
    let mut response = invoke::outcome_response(&mut outcome);
    let headers = response.headers_mut();
    set_header(headers, REQUEST_ID, outcome.request_id.clone());
    set_header(
        headers,
        "x-amz-executed-version",
        outcome.version.to_string(),
    );
    if let Err(error) = &outcome.result {
        set_header(headers, "x-amz-function-error", error.kind.to_owned());
    }
    if want_logs {
        set_header(headers, "x-amz-log-result", invoke::log_tail(&outcome));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_are_read_as_lambda_reads_them() {
        let target = |app: &str, function: &str, qualifier: Option<&str>| Target {
            app: app.into(),
            function: function.into(),
            qualifier: qualifier.map(str::to_owned),
        };
        for (name, expected) in [
            ("demo.hello", target("demo", "hello", None)),
            ("demo.hello:7", target("demo", "hello", Some("7"))),
            (
                "demo.hello:$LATEST",
                target("demo", "hello", Some("$LATEST")),
            ),
            (
                "arn:aws:lambda:us-east-1:000000000000:function:demo.hello",
                target("demo", "hello", None),
            ),
            (
                "arn:aws:lambda:eu-west-3:123456789012:function:demo.hello:3",
                target("demo", "hello", Some("3")),
            ),
        ] {
            assert_eq!(Target::parse(name).unwrap(), expected, "{name}");
        }
        for name in [
            "hello",
            "demo.",
            ".hello",
            "arn:aws:s3:::bucket",
            "arn:aws:lambda:us-east-1:000000000000:layer:demo.hello",
        ] {
            let err = Target::parse(name).unwrap_err();
            assert_eq!(err.error_type, "ResourceNotFoundException", "{name}");
        }
    }
}
