//! Every way the public listener answers a request itself, typed once and
//! mapped to HTTP in one place: [`GatewayError::into_response`].
//!
//! Messages say what happened and what to do; none carries a function's
//! own error text or a platform internal (those go to the logs, under the
//! request id every answer carries).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use stratus_scheduler::{ErrorClass, InvokeError};

use super::cors::Refused;

/// Why the gateway answers instead of a function or service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GatewayError {
    UrlTooLong {
        limit: usize,
    },
    HeadersTooLarge {
        limit: usize,
    },
    /// No app at this host or under this prefix.
    NoApp {
        domain: String,
    },
    NoRoute {
        app: String,
        method: Method,
        path: String,
    },
    MethodNotAllowed {
        method: Method,
        allowed: Vec<Method>,
    },
    /// A preflight the route's CORS rules refuse.
    CorsRefused {
        refused: Refused,
        requested: Method,
    },
    KeyMissing,
    KeyRejected {
        app: String,
    },
    BadHost,
    BadPath,
    BodyTooLarge {
        limit: usize,
    },
    /// The client did not send its body in time.
    BodyTimeout {
        limit: Duration,
    },
    /// The client's body stopped arriving while it was being forwarded.
    BodyStalled {
        limit: Duration,
    },
    BodyUnreadable(String),
    /// Request bodies being buffered already take the whole budget.
    BodiesOverBudget {
        budget: usize,
    },
    /// The scheduler could not run the function.
    Invoke(InvokeError),
    /// The function ran and failed (or did not answer in time).
    FunctionFailed(ErrorClass),
    /// The function's result is not an HTTP response; its logs say why.
    Malformed {
        streamed: bool,
    },
    ServiceBusy {
        service: String,
        retry_after: Duration,
    },
    /// The service cannot start; `reason` is its last failure.
    ServiceUnavailable {
        message: String,
    },
    /// The version a request waited for kept being replaced.
    ServiceReplaced {
        service: String,
    },
    /// The service instance did not answer.
    Upstream(String),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            UrlTooLong { .. } => StatusCode::URI_TOO_LONG,
            HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            NoApp { .. } | NoRoute { .. } => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            CorsRefused { .. } | KeyRejected { .. } => StatusCode::FORBIDDEN,
            KeyMissing => StatusCode::UNAUTHORIZED,
            BadHost | BadPath | BodyUnreadable(_) => StatusCode::BAD_REQUEST,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyTimeout { .. } | BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            Invoke(InvokeError::NoSuchFunction { .. }) => StatusCode::NOT_FOUND,
            Invoke(InvokeError::Throttled { .. }) | ServiceBusy { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Invoke(InvokeError::ShuttingDown)
            | BodiesOverBudget { .. }
            | ServiceUnavailable { .. }
            | ServiceReplaced { .. } => StatusCode::SERVICE_UNAVAILABLE,
            FunctionFailed(ErrorClass::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            FunctionFailed(_) | Malformed { .. } | Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn message(&self) -> String {
        use GatewayError::*;
        match self {
            UrlTooLong { limit } => {
                format!("the path and query are longer than {limit} bytes")
            }
            HeadersTooLarge { limit } => format!(
                "the request line and headers are larger than {limit} bytes (--max-header-bytes)"
            ),
            NoApp { domain } => format!(
                "no application serves this address; an app is reached at http://APP.{domain}/ or under /APP/"
            ),
            NoRoute { app, method, path } => {
                format!("no route of app {app} matches {method} {path}")
            }
            MethodNotAllowed { method, allowed } => {
                format!("{method} is not allowed here; use {}", allow_list(allowed))
            }
            CorsRefused { refused, requested } => match refused {
                Refused::Origin => "this origin may not call this route".to_owned(),
                Refused::Method => {
                    format!("cross-origin {requested} requests are not allowed here")
                }
                Refused::Headers(name) => {
                    format!("the request header {name} is not allowed cross-origin here")
                }
            },
            KeyMissing => "this route needs an app key: send it in x-stratus-key or as Authorization: Bearer KEY (`stratus keys create APP` makes one)".to_owned(),
            KeyRejected { app } => format!(
                "the key is not one of app {app}'s keys; `stratus keys ls {app}` lists them"
            ),
            BadHost => "the Host header is not a valid host".to_owned(),
            BadPath => "the request path is not valid".to_owned(),
            BodyTooLarge { limit } => format!("the request body is larger than {limit} bytes"),
            BodyTimeout { limit } => format!(
                "the request body did not arrive within {} s",
                limit.as_secs_f64()
            ),
            BodyStalled { limit } => {
                format!("the request body stalled for {} s", limit.as_secs())
            }
            BodyUnreadable(err) => format!("the request body could not be read: {err}"),
            BodiesOverBudget { budget } => format!(
                "the server is buffering {budget} bytes of request bodies, the most it may (--max-buffered-bodies); retry shortly"
            ),
            // Only a deploy racing the request gets here.
            Invoke(err @ InvokeError::NoSuchFunction { .. }) => err.to_string(),
            // The reason names the function or its application's cap.
            Invoke(InvokeError::Throttled { reason, .. }) => {
                format!("too many requests: {reason}; retry later")
            }
            Invoke(InvokeError::ShuttingDown) => {
                "the server is shutting down; retry shortly".to_owned()
            }
            FunctionFailed(ErrorClass::Timeout) => {
                "the function did not answer in time".to_owned()
            }
            FunctionFailed(_) => {
                "the function failed; its logs have the details under this request id".to_owned()
            }
            Malformed { streamed: false } => "the function's result is not a valid HTTP response; its logs say why under this request id".to_owned(),
            Malformed { streamed: true } => "the function's streamed response is not valid; its logs say why under this request id".to_owned(),
            ServiceBusy { service, .. } => format!("service {service} is at capacity; retry later"),
            ServiceUnavailable { message } => message.clone(),
            ServiceReplaced { service } => format!("service {service} is being replaced; retry"),
            Upstream(message) => message.clone(),
        }
    }

    /// The answer: a short JSON body with the message and the request id.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let mut response = reply(self.status(), request_id, self.message());
        let headers = response.headers_mut();
        match &self {
            GatewayError::MethodNotAllowed { allowed, .. } => {
                if let Ok(value) = HeaderValue::from_str(&allow_list(allowed)) {
                    headers.insert(header::ALLOW, value);
                }
            }
            GatewayError::KeyMissing => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"stratus\""),
                );
            }
            GatewayError::Invoke(InvokeError::Throttled { retry_after, .. })
            | GatewayError::ServiceBusy { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
            }
            GatewayError::ServiceUnavailable { .. } | GatewayError::BodiesOverBudget { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

fn allow_list(methods: &[Method]) -> String {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.join(", ")
}

/// A short JSON answer from the gateway itself.
fn reply(status: StatusCode, request_id: &str, message: String) -> Response<Body> {
    let body = serde_json::json!({ "message": message, "requestId": request_id });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_a_504_and_any_other_failure_a_502() {
        assert_eq!(
            GatewayError::FunctionFailed(ErrorClass::Timeout).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        for class in [ErrorClass::Function, ErrorClass::Platform] {
            assert_eq!(
                GatewayError::FunctionFailed(class).status(),
                StatusCode::BAD_GATEWAY
            );
        }
    }

    #[test]
    fn throttles_say_when_to_retry() {
        let response = GatewayError::ServiceBusy {
            service: "app/web".into(),
            retry_after: Duration::from_millis(1500),
        }
        .into_response("r1");
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let response = GatewayError::Invoke(InvokeError::Throttled {
            retry_after: Duration::from_secs(3),
            reason: "busy".into(),
        })
        .into_response("r1");
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }
}
