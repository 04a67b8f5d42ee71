//! Golden tests of the payload format 2.0 mapping. Each case in
//! `tests/golden/*.json` holds its input and the expected output side by
//! side; a failing case prints both.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::Value;
use stratus_gateway::payload::{self, HttpRequest};

fn cases(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(!cases.is_empty(), "{path} has no cases");
    cases
}

fn pairs(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_owned(),
                        p[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn body(value: &Value) -> Vec<u8> {
    match (value.get("body"), value.get("body_base64")) {
        (Some(Value::String(text)), _) => text.as_bytes().to_vec(),
        (_, Some(Value::String(b64))) => BASE64.decode(b64).unwrap(),
        _ => Vec::new(),
    }
}

#[test]
fn requests_become_events() {
    for case in cases("events.json") {
        let r = &case["request"];
        let mut headers = HeaderMap::new();
        for (name, value) in pairs(&r["headers"]) {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        let method: Method = r["method"].as_str().unwrap().parse().unwrap();
        let body = body(r);
        let params = pairs(&r["path_parameters"]);
        let request = HttpRequest {
            method: &method,
            raw_path: r["path"].as_str().unwrap(),
            raw_query: r["query"].as_str().unwrap_or_default(),
            headers: &headers,
            body: &body,
            protocol: "HTTP/1.1",
            source_ip: "192.0.2.1",
            domain_name: "shop.localhost",
            api_id: "shop",
            request_id: "req-1",
            route_key: r["route_key"].as_str().unwrap(),
            path_parameters: &params,
            time: UNIX_EPOCH + Duration::from_millis(r["time_ms"].as_u64().unwrap()),
        };
        let got = payload::event(&request);
        assert_eq!(
            got,
            case["event"],
            "case {:?}\n got:      {}\n expected: {}",
            case["name"],
            serde_json::to_string_pretty(&got).unwrap(),
            serde_json::to_string_pretty(&case["event"]).unwrap()
        );
    }
}

#[test]
fn results_become_responses() {
    for case in cases("responses.json") {
        let raw = match &case["result_raw"] {
            Value::String(raw) => raw.clone(),
            _ => serde_json::to_string(&case["result"]).unwrap(),
        };
        let got = payload::response(raw.as_bytes());
        let name = &case["name"];
        if let Some(reason) = case["malformed"].as_str() {
            let err = got.expect_err(&format!("case {name:?} must be malformed"));
            assert!(err.to_string().contains(reason), "case {name:?}: {err}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("case {name:?}: {e}"));
        let expected = &case["response"];
        assert_eq!(
            got.status.as_u16() as u64,
            expected["status"].as_u64().unwrap(),
            "case {name:?}"
        );
        let mut headers: Vec<(String, String)> = got
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let mut want = pairs(&expected["headers"]);
        headers.sort();
        want.sort();
        assert_eq!(headers, want, "case {name:?}: headers");
        assert_eq!(got.body.to_vec(), body(expected), "case {name:?}: body");
    }
}
