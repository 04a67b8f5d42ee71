//! Payload format 2.0: an HTTP request as the event an HTTP function gets,
//! and the function's result as the HTTP response, as API Gateway HTTP
//! APIs and Lambda function URLs define them, so that existing handlers
//! and adapters (`lambda_http`, `mangum`, `serverless-http`) work as they
//! are.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::header::{
    CONTENT_TYPE, COOKIE, HeaderMap, HeaderName, HeaderValue, SET_COOKIE, USER_AGENT,
};
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

/// What the gateway knows of one request, once routed.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a> {
    pub method: &'a Method,
    /// The path as the client sent it, percent-encoded, without the app's
    /// prefix.
    pub raw_path: &'a str,
    /// The query string as sent, without `?`.
    pub raw_query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'a str,
    pub source_ip: &'a str,
    /// The host the request was addressed to, without a port.
    pub domain_name: &'a str,
    /// The app: API Gateway's API id.
    pub api_id: &'a str,
    pub request_id: &'a str,
    pub route_key: &'a str,
    pub path_parameters: &'a [(String, String)],
    pub time: SystemTime,
}

/// The event for `request`.
pub fn event(request: &HttpRequest<'_>) -> Value {
    let mut headers: Map<String, Value> = Map::new();
    let mut cookies: Vec<Value> = Vec::new();
    for (name, value) in request.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        if name == COOKIE {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| Value::String(c.to_owned())),
            );
            continue;
        }
        match headers.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value.into_owned()));
            }
        }
    }
    let since_epoch = request.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let user_agent = request
        .headers
        .get(USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": request.route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": request.api_id,
            "domainName": request.domain_name,
            "domainPrefix": request.domain_name.split('.').next().unwrap_or_default(),
            "http": {
                "method": request.method.as_str(),
                "path": request.raw_path,
                "protocol": request.protocol,
                "sourceIp": request.source_ip,
                "userAgent": user_agent,
            },
            "requestId": request.request_id,
            "routeKey": request.route_key,
            "stage": "$default",
            "time": clf_time(since_epoch.as_secs()),
            "timeEpoch": since_epoch.as_millis() as u64,
        },
        "isBase64Encoded": false,
    });
    let fields = event.as_object_mut().expect("an object");
    if !cookies.is_empty() {
        fields.insert("cookies".into(), Value::Array(cookies));
    }
    if let Some(query) = query_parameters(request.raw_query) {
        fields.insert("queryStringParameters".into(), Value::Object(query));
    }
    if !request.path_parameters.is_empty() {
        let params = request
            .path_parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        fields.insert("pathParameters".into(), Value::Object(params));
    }
    if !request.body.is_empty() {
        let content_type = request
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let (body, base64) = match std::str::from_utf8(request.body) {
            Ok(text) if content_type.is_none_or(is_text) => (text.to_owned(), false),
            _ => (BASE64.encode(request.body), true),
        };
        fields.insert("body".into(), Value::String(body));
        fields.insert("isBase64Encoded".into(), Value::Bool(base64));
    }
    event
}

/// Query parameters, decoded, repeated keys' values joined with commas;
/// `None` when there are none. `+` stays `+`: only form bodies mean a
/// space by it.
fn query_parameters(raw: &str) -> Option<Map<String, Value>> {
    let mut params: Map<String, Value> = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(key), decode(value));
        match params.get_mut(&key) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => {
                params.insert(key, Value::String(value));
            }
        }
    }
    (!params.is_empty()).then_some(params)
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Whether a body of this content type travels as text.
fn is_text(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
                | "application/x-ndjson"
        )
}

/// `12/Mar/2020:19:03:58 +0000`, as API Gateway writes `requestContext.time`.
fn clf_time(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The HTTP response a function's result stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a result is not a response; for the logs, never for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed HTTP function result: {0}")]
pub struct Malformed(pub String);

/// Most header fields (headers and cookies together) a result may set.
pub const MAX_RESPONSE_FIELDS: usize = 1024;

/// Headers the gateway sets itself: a function's are dropped.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Maps a function's result (the JSON its runtime posted) to a response.
///
/// A JSON object with `statusCode` is a response: `statusCode` (200–599),
/// `headers` (values strings, numbers or booleans), `cookies` (each its
/// own `Set-Cookie`), `body` (a string) and `isBase64Encoded`. Any other
/// JSON value is the body of a `200` with `content-type: application/json`,
/// exactly as the function returned it — a string result keeps its quotes,
/// so the body is the JSON the content type announces.
pub fn response(result: &[u8]) -> Result<HttpResponse, Malformed> {
    let value: Value = serde_json::from_slice(result)
        .map_err(|e| Malformed(format!("the result is not JSON: {e}")))?;
    let Some(fields) = value.as_object().filter(|o| o.contains_key("statusCode")) else {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(HttpResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::copy_from_slice(result.trim_ascii()),
        });
    };
    let status = fields["statusCode"]
        .as_u64()
        .filter(|s| (200..=599).contains(s))
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .ok_or_else(|| {
            Malformed(format!(
                "statusCode must be a number from 200 to 599 (interim 1xx responses cannot be returned), not {}",
                fields["statusCode"]
            ))
        })?;
    let mut headers = HeaderMap::new();
    match fields.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (name, value) in given {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    other => {
                        return Err(Malformed(format!(
                            "header {name:?} must be a string, not {other}"
                        )));
                    }
                };
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| Malformed(format!("{name:?} is not a header name")))?;
                if HOP_BY_HOP.contains(&name.as_str()) {
                    continue;
                }
                let value = HeaderValue::from_str(&value).map_err(|_| {
                    Malformed(format!("header {name}: {value:?} is not a header value"))
                })?;
                append(&mut headers, name, value)?;
            }
        }
        Some(other) => return Err(Malformed(format!("headers must be an object, not {other}"))),
    }
    match fields.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cookies)) => {
            for cookie in cookies {
                let value = cookie
                    .as_str()
                    .and_then(|c| HeaderValue::from_str(c).ok())
                    .ok_or_else(|| Malformed(format!("{cookie} is not a cookie")))?;
                append(&mut headers, SET_COOKIE, value)?;
            }
        }
        Some(other) => return Err(Malformed(format!("cookies must be a list, not {other}"))),
    }
    let base64 = match fields.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Malformed(format!(
                "isBase64Encoded must be true or false, not {other}"
            )));
        }
    };
    let body = match fields.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(body)) if base64 => {
            BASE64.decode(body).map(Bytes::from).map_err(|e| {
                Malformed(format!(
                    "body is not base64 ({e}) but isBase64Encoded is true"
                ))
            })?
        }
        Some(Value::String(body)) => Bytes::from(body.clone()),
        Some(other) => {
            return Err(Malformed(format!(
                "body must be a string (serialize it first: JSON.stringify, json.dumps), not {}",
                kind(other)
            )));
        }
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Adds a field to a result's headers, within [`MAX_RESPONSE_FIELDS`].
fn append(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) -> Result<(), Malformed> {
    if headers.len() >= MAX_RESPONSE_FIELDS {
        return Err(Malformed(format!(
            "the result sets more than {MAX_RESPONSE_FIELDS} headers and cookies"
        )));
    }
    headers
        .try_append(name, value)
        .map(drop)
        .map_err(|_| Malformed("the result sets too many headers".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_headers_or_cookies_are_malformed_not_a_panic() {
        let headers: serde_json::Map<String, Value> = (0..40_000)
            .map(|i| (format!("x-h{i}"), Value::from("v")))
            .collect();
        let result = serde_json::json!({ "statusCode": 200, "headers": headers });
        let error = response(result.to_string().as_bytes()).unwrap_err();
        assert!(error.0.contains("more than 1024 headers"), "{error}");
        let cookies: Vec<Value> = (0..40_000)
            .map(|i| Value::from(format!("c{i}=1")))
            .collect();
        let result = serde_json::json!({ "statusCode": 200, "cookies": cookies });
        let error = response(result.to_string().as_bytes()).unwrap_err();
        assert!(error.0.contains("more than 1024 headers"), "{error}");
        let ok: serde_json::Map<String, Value> = (0..MAX_RESPONSE_FIELDS)
            .map(|i| (format!("x-h{i}"), Value::from("v")))
            .collect();
        let result = serde_json::json!({ "statusCode": 200, "headers": ok });
        assert_eq!(
            response(result.to_string().as_bytes())
                .unwrap()
                .headers
                .len(),
            1024
        );
    }

    #[test]
    fn request_times_read_as_api_gateway_writes_them() {
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(clf_time(1_584_039_838), "12/Mar/2020:19:03:58 +0000");
        assert_eq!(clf_time(1_709_164_800), "29/Feb/2024:00:00:00 +0000");
    }
}
