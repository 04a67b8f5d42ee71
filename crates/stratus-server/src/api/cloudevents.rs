//! `POST /v1/apps/{app}/cloudevents`: the app's ingest endpoint for
//! CloudEvents 1.0 over HTTP, in binary mode (attributes in `ce-*`
//! headers, the body is the data), structured mode (`Content-Type:
//! application/cloudevents+json`) and batched mode
//! (`application/cloudevents-batch+json`).
//!
//! Each event goes, through the durable event queue, to every function of
//! the app whose `cloudevents` trigger matches its type and source, in the
//! structured JSON form. The request id of a delivery is derived from the
//! event's `source` and `id`, which CloudEvents makes unique: a producer
//! that sends an event again while it is queued does not queue it twice.
//! An event no function subscribes to is refused (404), not dropped.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use stratus_manifest::Trigger;

use super::ApiError;
use super::keys::require_app;
use crate::AppState;

/// Largest request: a batch of events, or one event's data.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest event, as for asynchronous invocations.
const MAX_EVENT_BYTES: usize = 256 * 1024;

pub(crate) async fn ingest(
    State(state): State<Arc<AppState>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("a request is at most {MAX_BODY_BYTES} bytes"),
            )
        })?;
    require_app(&state, &app).await?;
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let events = match media.as_str() {
        "application/cloudevents+json" => vec![structured(&body)?],
        "application/cloudevents-batch+json" => batch(&body)?,
        _ => vec![binary(&headers, &content_type, &body)?],
    };

    // Every event is checked and routed before any is queued.
    let functions: Vec<(String, stratus_manifest::CloudEventsTrigger)> = state
        .scheduler
        .app_pools(&app)
        .iter()
        .flat_map(|pool| {
            let spec = &pool.config.spec;
            spec.events.iter().filter_map(|t| match t {
                Trigger::CloudEvents(t) => Some((spec.name.clone(), t.clone())),
                _ => None,
            })
        })
        .collect();
    let mut routed = Vec::new();
    for event in &events {
        let (kind, source) = (text(event, "type"), text(event, "source"));
        let mut to: Vec<String> = functions
            .iter()
            .filter(|(_, t)| t.matches(kind, source))
            .map(|(f, _)| f.clone())
            .collect();
        to.dedup();
        if to.is_empty() {
            return Err(ApiError::not_found(format!(
                "no function of app {app:?} takes CloudEvents of type {kind:?} from {source:?}; add `events: [{{ cloudevents: {{ type: {kind} }} }}]` to a function and deploy"
            )));
        }
        let payload = Value::Object(event.clone()).to_string();
        if payload.len() > MAX_EVENT_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "event_too_large",
                format!(
                    "event {:?} is larger than {MAX_EVENT_BYTES} bytes; pass a reference to the data",
                    text(event, "id")
                ),
            ));
        }
        routed.push((event, to, payload));
    }

    let (count, bytes) = routed.iter().fold((0, 0), |(n, b), (_, to, payload)| {
        (n + to.len() as u64, b + (to.len() * payload.len()) as u64)
    });
    state
        .quotas
        .admit(&app, crate::quotas::Kind::Events, count, bytes)?;
    let mut accepted = Vec::new();
    let request_trace = crate::traces::parent_of(&headers);
    for (event, to, payload) in routed {
        let request_id = request_id(text(event, "source"), text(event, "id"));
        // The distributed tracing extension's `traceparent`, else the
        // request's.
        let parent =
            stratus_trace::Context::from_traceparent(text(event, "traceparent")).or(request_trace);
        for function in &to {
            state
                .events
                .enqueue_as(
                    &app,
                    function,
                    Bytes::from(payload.clone()),
                    stratus_store::Source::CloudEvents,
                    request_id.clone(),
                    parent,
                )
                .await?;
        }
        accepted.push(json!({
            "id": text(event, "id"),
            "request_id": request_id,
            "functions": to,
        }));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": accepted }))).into_response())
}

fn text<'a>(event: &'a Map<String, Value>, name: &str) -> &'a str {
    event.get(name).and_then(Value::as_str).unwrap_or("")
}

/// A request id for the event `id` of `source`: the same for the same
/// event, in the form of a UUID.
fn request_id(source: &str, id: &str) -> String {
    let hash = stratus_archive::sha256_hex(format!("{source}\n{id}").as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &hash[0..8],
        &hash[8..12],
        &hash[12..16],
        &hash[16..20],
        &hash[20..32]
    )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_cloudevent", message)
}

/// Checks the attributes CloudEvents 1.0 requires, and the names of the
/// others (lower-case letters and digits).
fn validate(event: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match event.get("specversion").and_then(Value::as_str) {
        Some("1.0") => {}
        Some(other) => {
            return Err(invalid(format!(
                "specversion {other:?} is not supported; send CloudEvents 1.0"
            )));
        }
        None => return Err(invalid("the event has no specversion; send \"1.0\"")),
    }
    for required in ["id", "source", "type"] {
        if event
            .get(required)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(invalid(format!(
                "the event has no {required}; CloudEvents requires id, source, type and specversion"
            )));
        }
    }
    if let Some(name) = event.keys().find(|name| {
        name.as_str() != "data_base64"
            && !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }) {
        return Err(invalid(format!(
            "attribute name {name:?} is not valid: CloudEvents attribute names are lower-case letters and digits"
        )));
    }
    if let Some(time) = event.get("time")
        && time
            .as_str()
            .is_none_or(|t| humantime::parse_rfc3339_weak(t).is_err())
    {
        return Err(invalid(format!("time {time} is not an RFC 3339 timestamp")));
    }
    Ok(event)
}

fn structured(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(event)) => validate(event),
        Ok(_) => Err(invalid("a structured-mode event is a JSON object")),
        Err(err) => Err(invalid(format!("the event is not valid JSON: {err}"))),
    }
}

fn batch(body: &[u8]) -> Result<Vec<Map<String, Value>>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(events)) => events
            .into_iter()
            .map(|event| match event {
                Value::Object(event) => validate(event),
                _ => Err(invalid("each event of a batch is a JSON object")),
            })
            .collect(),
        Ok(_) => Err(invalid("a batch is a JSON array of events")),
        Err(err) => Err(invalid(format!("the batch is not valid JSON: {err}"))),
    }
}

/// Binary mode: `ce-NAME` headers are the attributes, the body the data.
fn binary(
    headers: &HeaderMap,
    content_type: &str,
    body: &Bytes,
) -> Result<Map<String, Value>, ApiError> {
    let mut event = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value
            .to_str()
            .map_err(|_| invalid(format!("header {name} is not text")))?;
        // Header values are percent-encoded where needed.
        let value = percent_decode(value)
            .ok_or_else(|| invalid(format!("header {name} has a malformed percent-encoding")))?;
        event.insert(attribute.to_owned(), json!(value));
    }
    if event.is_empty() {
        return Err(invalid(
            "no CloudEvent in the request: send ce-specversion, ce-id, ce-source and ce-type headers (binary mode), or Content-Type: application/cloudevents+json (structured mode)",
        ));
    }
    if !body.is_empty() {
        if !content_type.is_empty() {
            event.insert("datacontenttype".into(), json!(content_type));
        }
        let media = content_type.split(';').next().unwrap_or("").trim();
        let is_json = media.is_empty() || media == "application/json" || media.ends_with("+json");
        let data = if is_json {
            serde_json::from_slice::<Value>(body).map_err(|err| {
                invalid(format!(
                    "the data is not valid JSON ({err}), yet its Content-Type says JSON"
                ))
            })?
        } else if let Ok(text) = std::str::from_utf8(body) {
            json!(text)
        } else {
            use base64::Engine;
            event.insert(
                "data_base64".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(body)),
            );
            return validate(event);
        };
        event.insert("data".into(), data);
    }
    validate(event)
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_follow_source_and_id() {
        let a = request_id("/orders", "1");
        assert_eq!(a, request_id("/orders", "1"));
        assert_ne!(a, request_id("/orders", "2"));
        assert_ne!(a, request_id("/refunds", "1"));
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn binary_mode_reads_headers_and_data() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "A234-1234"),
            ("ce-source", "/mycontext"),
            ("ce-type", "com.example.someevent"),
            ("ce-subject", "caf%C3%A9"),
            ("ce-comexampleextension1", "value"),
        ] {
            headers.insert(k, v.parse().unwrap());
        }
        let event = binary(
            &headers,
            "application/json",
            &Bytes::from_static(b"{\"n\":1}"),
        )
        .unwrap();
        assert_eq!(event["subject"], "café");
        assert_eq!(event["data"]["n"], 1);
        assert_eq!(event["comexampleextension1"], "value");
        assert_eq!(event["datacontenttype"], "application/json");

        headers.remove("ce-type");
        let err = binary(&headers, "", &Bytes::new()).unwrap_err();
        assert!(err.message.contains("no type"), "{}", err.message);
    }

    #[test]
    fn structured_mode_is_validated() {
        assert!(structured(br#"{"specversion":"1.0","id":"1","source":"s","type":"t"}"#).is_ok());
        let err =
            structured(br#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#).unwrap_err();
        assert!(err.message.contains("0.3"));
        let err =
            structured(br#"{"specversion":"1.0","id":"1","source":"s","type":"t","Bad-Name":1}"#)
                .unwrap_err();
        assert!(err.message.contains("Bad-Name"));
        let err =
            structured(br#"{"specversion":"1.0","id":"1","source":"s","type":"t","time":"noon"}"#)
                .unwrap_err();
        assert!(err.message.contains("RFC 3339"));
    }
}
