//! Sample events of each trigger's shape, for `stratus event`: made by the
//! code that makes the real ones, so that a handler tried with a sample
//! meets the same fields in production.

use std::time::SystemTime;

use anyhow::Context;
use serde_json::Value;
use stratus_manifest::{EventFormat, Trigger};
use stratus_store::{MessageRecord, Source};

/// The region samples name, as the server's default does.
const REGION: &str = "local";

/// The event an HTTP function gets for `METHOD PATH?QUERY` with `headers`
/// and `body`, routed as `/{proxy+}` of `app`.
pub fn http(
    app: &str,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> anyhow::Result<Value> {
    let method: axum::http::Method = method
        .to_ascii_uppercase()
        .parse()
        .with_context(|| format!("{method:?} is not an HTTP method"))?;
    anyhow::ensure!(
        target.starts_with('/'),
        "{target:?}: give a path that starts with /, with a query if any (/users/7?full=1)"
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut map = axum::http::HeaderMap::new();
    for (name, value) in headers {
        let name: axum::http::HeaderName = name
            .parse()
            .with_context(|| format!("{name:?} is not a header name"))?;
        let value: axum::http::HeaderValue = value
            .parse()
            .with_context(|| format!("the value of {name} is not a header value"))?;
        map.append(name, value);
    }
    let domain = format!("{app}.localhost");
    let route_key = format!("{method} {path}");
    let request_id = uuid::Uuid::new_v4().to_string();
    Ok(stratus_gateway::payload::event(
        &stratus_gateway::payload::HttpRequest {
            method: &method,
            raw_path: path,
            raw_query: query,
            headers: &map,
            body,
            protocol: "HTTP/1.1",
            source_ip: "127.0.0.1",
            domain_name: &domain,
            api_id: app,
            request_id: &request_id,
            route_key: &route_key,
            path_parameters: &[],
            time: SystemTime::now(),
        },
    ))
}

/// The batch a consumer of queue `queue` of `app` gets for `bodies`, in
/// `format` (`cloudevents` or `sqs`).
pub fn queue(app: &str, queue: &str, bodies: &[Vec<u8>], format: &str) -> anyhow::Result<Value> {
    let format = match format {
        "cloudevents" => EventFormat::CloudEvents,
        "sqs" => EventFormat::Sqs,
        other => anyhow::bail!("a queue trigger has no format {other:?}: cloudevents or sqs"),
    };
    let now = crate::now_ms();
    let batch: Vec<MessageRecord> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| MessageRecord {
            id: i as i64 + 1,
            app: app.to_owned(),
            queue: queue.to_owned(),
            body: body.clone(),
            message_id: uuid::Uuid::new_v4().to_string(),
            source: Source::Send,
            receives: 1,
            sent_ms: now,
            visible_ms: now,
            last_error: None,
            trace: None,
        })
        .collect();
    Ok(crate::triggers::queue::batch_event(
        &batch,
        format,
        (REGION, app, queue),
    ))
}

/// The event schedule `expression` of function `function` of `app` fires
/// now, in `format` (`cloudevents`, `eventbridge` or `scf`).
pub fn schedule(
    app: &str,
    function: &str,
    expression: &str,
    format: &str,
) -> anyhow::Result<Value> {
    // Through the manifest's own checks, so a sample's schedule is one a
    // deploy would take.
    let manifest = format!(
        "app: {app}\nfunctions:\n  {function}:\n    runtime: python3\n    handler: main.handler\n    events:\n      - schedule: {}\n        format: {format}\n",
        serde_json::to_string(expression)?
    );
    let spec = stratus_manifest::parse("stratus.yaml", &manifest)
        .map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let Some(Trigger::Schedule(schedule)) =
        spec.functions.get(function).and_then(|f| f.events.first())
    else {
        anyhow::bail!("no schedule in {manifest}");
    };
    let id = uuid::Uuid::new_v4().to_string();
    Ok(crate::triggers::schedule::event(
        schedule,
        &id,
        crate::now_ms(),
        false,
        (REGION, app, function),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_have_the_shapes_functions_get() {
        let event = http(
            "shop",
            "post",
            "/orders/7?full=1",
            &[("content-type".into(), "application/json".into())],
            br#"{"n":1}"#,
        )
        .unwrap();
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["rawPath"], "/orders/7");
        assert_eq!(event["queryStringParameters"]["full"], "1");
        assert_eq!(event["requestContext"]["http"]["method"], "POST");
        assert_eq!(event["body"], r#"{"n":1}"#);
        assert!(http("shop", "GET", "orders", &[], b"").is_err());

        let batch = queue(
            "shop",
            "work",
            &[b"a".to_vec(), b"{\"n\":2}".to_vec()],
            "sqs",
        )
        .unwrap();
        assert_eq!(batch["Records"].as_array().unwrap().len(), 2);
        assert_eq!(batch["Records"][0]["body"], "a");
        let batch = queue("shop", "work", &[b"{\"n\":2}".to_vec()], "cloudevents").unwrap();
        assert_eq!(batch["Records"][0]["data"]["n"], 2);
        assert!(queue("shop", "work", &[], "scf").is_err());

        let fired = schedule("shop", "tick", "rate(5 minutes)", "eventbridge").unwrap();
        assert_eq!(fired["detail-type"], "Scheduled Event");
        let fired = schedule("shop", "tick", "0 3 * * *", "cloudevents").unwrap();
        assert_eq!(fired["data"]["schedule"], "0 3 * * *");
        let wrong = schedule("shop", "tick", "every day", "cloudevents").unwrap_err();
        assert!(wrong.to_string().contains("schedule"), "{wrong}");
    }
}
