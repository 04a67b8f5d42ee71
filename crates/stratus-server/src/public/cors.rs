//! CORS for routes that declare `cors:`: preflights are answered by the
//! gateway without invoking the function, and actual responses get the
//! `Access-Control-*` headers, replacing any the function set.

use axum::http::{HeaderMap, HeaderValue, Method, header};
use stratus_manifest::CorsSpec;

/// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
fn allow_origin(cors: &CorsSpec, origin: &HeaderValue) -> Option<HeaderValue> {
    let given = origin.to_str().ok()?;
    if cors.origins.iter().any(|o| o == "*") && !cors.credentials {
        return Some(HeaderValue::from_static("*"));
    }
    cors.origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(given))
        .then(|| origin.clone())
}

/// Adds CORS headers to an actual response when its request came with an
/// allowed `Origin`.
pub(crate) fn decorate(cors: &CorsSpec, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::ACCESS_CONTROL_MAX_AGE,
    ] {
        headers.remove(name);
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(allowed) = origin.and_then(|o| allow_origin(cors, o)) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    if cors.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty()
        && let Ok(value) = HeaderValue::from_str(&cors.expose_headers.join(", "))
    {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
    }
}

/// Why a preflight is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    Origin,
    Method,
    Headers(String),
}

/// The headers of a successful preflight for a route taking
/// `route_methods` (every method when `None`).
pub(crate) fn preflight(
    cors: &CorsSpec,
    origin: &HeaderValue,
    requested: &Method,
    request_headers: Option<&HeaderValue>,
    route_methods: Option<&[Method]>,
) -> Result<HeaderMap, Refused> {
    let allowed = allow_origin(cors, origin).ok_or(Refused::Origin)?;
    let methods: Vec<String> = if !cors.methods.is_empty() {
        cors.methods.clone()
    } else if let Some(methods) = route_methods {
        methods.iter().map(|m| m.to_string()).collect()
    } else {
        vec![requested.to_string()]
    };
    // HEAD goes wherever GET does.
    let allowed_method = |m: &String| {
        m == requested.as_str() || (*requested == Method::HEAD && m == Method::GET.as_str())
    };
    if !methods.iter().any(allowed_method) {
        return Err(Refused::Method);
    }
    let asked: Vec<String> = request_headers
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !cors.headers.is_empty()
        && let Some(missing) = asked.iter().find(|h| !cors.headers.contains(h))
    {
        return Err(Refused::Headers(missing.clone()));
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    let mut set = |name, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(header::ACCESS_CONTROL_ALLOW_METHODS, methods.join(", "));
    let allow_headers = if cors.headers.is_empty() {
        asked
    } else {
        cors.headers.clone()
    };
    if !allow_headers.is_empty() {
        set(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            allow_headers.join(", "),
        );
    }
    if let Some(secs) = cors.max_age_secs {
        set(header::ACCESS_CONTROL_MAX_AGE, secs.to_string());
    }
    if cors.credentials {
        set(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true".to_owned());
    }
    set(
        header::VARY,
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers".to_owned(),
    );
    Ok(headers)
}
