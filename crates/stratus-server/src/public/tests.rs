//! The gateway's routing, keys, CORS, limits and errors, through
//! `handle` with a fake backend: no sockets, no processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use stratus_logs::{LogStream, MemoryLogs};
use stratus_scheduler::{
    FunctionError, Invocation, InvokeError, InvokeOutcome, Lease, Phases, Service, ServiceError,
};
use stratus_store::{KeyRecord, VersionRecord};

use super::clients::Clients;
use super::forwarded::REQUEST_ID;
use super::gateway::{Backend, Gateway};
use super::handle::handle;
use super::routes::Directory;
use super::settings::HttpSettings;

const MANIFEST: &str = r#"
app: shop
functions:
  hello:
    runtime: python3
    handler: main.handler
    http: { path: ["/hello/{name}"], methods: [GET, POST] }
  secret:
    runtime: python3
    handler: main.handler
    http: { path: /secret, auth: key }
  open:
    runtime: python3
    handler: main.handler
    http:
      path: /open
      cors: { origins: ["https://app.example"], max_age: 10m }
services:
  web:
    command: [web]
    http: { path: /web/* }
"#;

type Fail = fn() -> ServiceError;
type Answer = Box<dyn Fn(&serde_json::Value) -> Result<InvokeOutcome, InvokeError> + Send + Sync>;

/// Records each invocation and answers it as told.
struct FakeBackend {
    events: Mutex<Vec<(String, serde_json::Value)>>,
    answer: Mutex<Answer>,
    /// What leases of services fail with; `None`: there is no service.
    lease: Mutex<Option<Fail>>,
}

#[async_trait]
impl Backend for FakeBackend {
    async fn invoke(
        &self,
        _app: &str,
        function: &str,
        invocation: Invocation,
    ) -> Result<InvokeOutcome, InvokeError> {
        let event: serde_json::Value = serde_json::from_slice(&invocation.payload).unwrap();
        let answer = (self.answer.lock().unwrap())(&event);
        self.events
            .lock()
            .unwrap()
            .push((function.to_owned(), event));
        answer.map(|mut outcome| {
            outcome.request_id = invocation.request_id;
            outcome
        })
    }

    async fn lease(
        &self,
        _app: &str,
        _name: &str,
    ) -> Option<Result<(Arc<Service>, Lease), ServiceError>> {
        let fail = (*self.lease.lock().unwrap())?;
        Some(Err(fail()))
    }

    fn max_response_bytes(&self) -> usize {
        1024
    }
}

fn outcome(result: Result<serde_json::Value, FunctionError>) -> InvokeOutcome {
    InvokeOutcome {
        request_id: String::new(),
        version: 1,
        instance: "i1".into(),
        cold: false,
        phases: Phases::default(),
        max_memory_mb: None,
        result: result.map(|v| Bytes::from(v.to_string())),
        stream: None,
        logs: Vec::new(),
        memory_mb: 128,
    }
}

struct Setup {
    gateway: Gateway,
    backend: Arc<FakeBackend>,
    logs: Arc<MemoryLogs>,
}

fn setup() -> Setup {
    let directory = Arc::new(Directory::default());
    directory.publish(&VersionRecord {
        app: "shop".into(),
        version: 1,
        spec: stratus_manifest::parse("stratus.yaml", MANIFEST).expect("a valid manifest"),
        manifest: MANIFEST.into(),
        packages: BTreeMap::new(),
        layers: BTreeMap::new(),
        created_ms: 0,
        source: String::new(),
    });
    directory.set_keys(
        "shop",
        &[KeyRecord {
            id: "k1".into(),
            app: "shop".into(),
            name: "ci".into(),
            sha256: stratus_archive::sha256_hex(b"sk_good"),
            created_ms: 0,
        }],
    );
    let backend = Arc::new(FakeBackend {
        events: Mutex::new(Vec::new()),
        answer: Mutex::new(Box::new(|event| {
            Ok(outcome(Ok(serde_json::json!({
                "statusCode": 201,
                "headers": { "x-path": event["rawPath"] },
                "body": "made",
            }))))
        })),
        lease: Mutex::new(None),
    });
    let logs = Arc::new(MemoryLogs::default());
    let gateway = Gateway {
        directory,
        backend: backend.clone(),
        logs: logs.clone(),
        settings: HttpSettings {
            max_url_bytes: 64,
            max_body_bytes: 16,
            ..crate::ServerConfig::new(Default::default()).http
        },
        port: 8080,
        tls: None,
        proxy: Clients::new(),
        bodies: super::BodyBudget::new(1 << 20),
        webhooks: None,
        probes: None,
        objects: None,
        clients: None,
        tracer: stratus_trace::Tracer::off(),
    };
    Setup {
        gateway,
        backend,
        logs,
    }
}

impl Setup {
    fn answer(
        &self,
        answer: impl Fn(&serde_json::Value) -> Result<InvokeOutcome, InvokeError>
        + Send
        + Sync
        + 'static,
    ) {
        *self.backend.answer.lock().unwrap() = Box::new(answer);
    }

    async fn send(&self, request: Request<Body>) -> (Response<Body>, serde_json::Value) {
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let response = handle(&self.gateway, request, peer).await;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, Body::from(bytes)), json)
    }

    async fn get(&self, uri: &str) -> (Response<Body>, serde_json::Value) {
        let request = Request::get(uri)
            .header(header::HOST, "localhost:8080")
            .body(Body::empty());
        self.send(request.unwrap()).await
    }

    fn invoked(&self) -> usize {
        self.backend.events.lock().unwrap().len()
    }
}

/// The gateway's own answer: `status`, and a message containing `says`
/// with the request id of the header.
fn assert_answer(response: &Response<Body>, json: &serde_json::Value, status: u16, says: &str) {
    assert_eq!(response.status().as_u16(), status, "{json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{message:?} does not say {says:?}");
    assert_eq!(
        json["requestId"].as_str(),
        response.headers()[REQUEST_ID].to_str().ok()
    );
}

#[tokio::test]
async fn a_request_is_routed_by_prefix_or_host_to_its_function() {
    let s = setup();
    let (response, _) = s.get("/shop/hello/ada?x=1").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-path"], "/hello/ada");
    assert!(response.headers().contains_key(REQUEST_ID));

    let request = Request::get("/hello/bob")
        .header(header::HOST, "shop.localhost:8080")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-prefix", "/evil")
        .body(Body::empty())
        .unwrap();
    let (response, _) = s.send(request).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let events = s.backend.events.lock().unwrap();
    let (function, event) = &events[0];
    assert_eq!(function, "hello");
    assert_eq!(event["rawQueryString"], "x=1");
    assert_eq!(event["pathParameters"]["name"], "ada");
    assert_eq!(event["headers"]["x-forwarded-prefix"], "/shop");
    assert_eq!(event["headers"]["x-forwarded-for"], "192.0.2.7");
    let (_, event) = &events[1];
    assert_eq!(event["headers"]["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
    assert!(event["headers"].get("x-forwarded-prefix").is_none());
    assert_eq!(event["requestContext"]["domainName"], "shop.localhost");
}

#[tokio::test]
async fn unknown_apps_routes_and_methods_are_answered_by_the_gateway() {
    let s = setup();
    let (response, json) = s.get("/nope/hello/x").await;
    assert_answer(&response, &json, 404, "no application serves this address");
    let (response, json) = s.get("/shop/nothing").await;
    assert_answer(
        &response,
        &json,
        404,
        "no route of app shop matches GET /nothing",
    );
    let request = Request::delete("/shop/hello/x")
        .body(Body::empty())
        .unwrap();
    let (response, json) = s.send(request).await;
    assert_answer(&response, &json, 405, "DELETE is not allowed here");
    assert_eq!(response.headers()[header::ALLOW], "GET, POST");
    assert_eq!(s.invoked(), 0);
}

#[tokio::test]
async fn a_key_route_needs_one_of_the_apps_keys() {
    let s = setup();
    let (response, json) = s.get("/shop/secret").await;
    assert_answer(&response, &json, 401, "needs an app key");
    assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    let request = Request::get("/shop/secret")
        .header("x-stratus-key", "sk_bad")
        .body(Body::empty())
        .unwrap();
    let (response, json) = s.send(request).await;
    assert_answer(&response, &json, 403, "not one of app shop's keys");
    assert_eq!(s.invoked(), 0);
    let request = Request::get("/shop/secret")
        .header(header::AUTHORIZATION, "Bearer sk_good")
        .body(Body::empty())
        .unwrap();
    let (response, _) = s.send(request).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(s.invoked(), 1);
}

#[tokio::test]
async fn cors_preflights_are_answered_and_every_answer_of_the_route_is_decorated() {
    let s = setup();
    let preflight = |origin: &str| {
        Request::options("/shop/open")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .body(Body::empty())
            .unwrap()
    };
    let (response, _) = s.send(preflight("https://app.example")).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
    assert_eq!(response.headers()[header::ACCESS_CONTROL_MAX_AGE], "600");
    let (response, json) = s.send(preflight("https://evil.example")).await;
    assert_answer(&response, &json, 403, "this origin may not call this route");
    assert_eq!(s.invoked(), 0);

    // A failure of the function is still the route's answer.
    s.answer(|_| {
        Ok(outcome(Err(FunctionError::unhandled(
            "ValueError",
            "secret detail",
        ))))
    });
    let request = Request::get("/shop/open")
        .header(header::ORIGIN, "https://app.example")
        .body(Body::empty())
        .unwrap();
    let (response, json) = s.send(request).await;
    assert_answer(&response, &json, 502, "the function failed");
    assert!(!json.to_string().contains("secret detail"));
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example"
    );
}

#[tokio::test]
async fn the_listeners_limits_answer_before_the_function_runs() {
    let s = setup();
    let long = format!("/shop/hello/{}", "x".repeat(64));
    let (response, json) = s.get(&long).await;
    assert_answer(&response, &json, 414, "longer than 64 bytes");
    let request = Request::post("/shop/hello/x")
        .body(Body::from("0123456789abcdefXYZ"))
        .unwrap();
    let (response, json) = s.send(request).await;
    assert_answer(&response, &json, 413, "larger than 16 bytes");
    let request = Request::post("/shop/hello/x")
        .header(header::CONTENT_LENGTH, "1000000")
        .body(Body::from("small"))
        .unwrap();
    let (response, json) = s.send(request).await;
    assert_answer(&response, &json, 413, "larger than 16 bytes");
    assert_eq!(s.invoked(), 0);
}

#[tokio::test]
async fn each_way_an_invocation_fails_has_its_status() {
    let s = setup();
    let cases: Vec<(Answer, u16, &str)> = vec![
        (
            Box::new(|_| {
                Ok(outcome(Err(FunctionError::timeout(
                    "Sandbox.Timedout",
                    "timed out",
                ))))
            }),
            504,
            "did not answer in time",
        ),
        (
            Box::new(|_| {
                Ok(outcome(Err(FunctionError::platform(
                    "Stratus.PlatformError",
                    "bind failed",
                ))))
            }),
            502,
            "the function failed",
        ),
        (
            Box::new(|_| {
                Err(InvokeError::Throttled {
                    retry_after: Duration::from_secs(2),
                    reason: "busy".into(),
                })
            }),
            429,
            "too many requests",
        ),
        (
            Box::new(|_| Err(InvokeError::ShuttingDown)),
            503,
            "shutting down",
        ),
        (
            Box::new(|_| {
                Err(InvokeError::NoSuchFunction {
                    app: "shop".into(),
                    function: "hello".into(),
                })
            }),
            404,
            "does not exist",
        ),
        (
            Box::new(|_| Ok(outcome(Ok(serde_json::json!({ "statusCode": "many" }))))),
            502,
            "not a valid HTTP response",
        ),
        (
            // More fields than an HTTP header map holds: a 502, not a panic.
            Box::new(|_| {
                let headers: serde_json::Map<String, serde_json::Value> = (0..40_000)
                    .map(|i| (format!("x-h{i}"), "v".into()))
                    .collect();
                Ok(outcome(Ok(
                    serde_json::json!({ "statusCode": 200, "headers": headers }),
                )))
            }),
            502,
            "not a valid HTTP response",
        ),
    ];
    for (answer, status, says) in cases {
        *s.backend.answer.lock().unwrap() = answer;
        let (response, json) = s.get("/shop/hello/x").await;
        assert_answer(&response, &json, status, says);
        if status == 429 {
            assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        }
    }
    // Why a result is not a response is in the function's log.
    assert!(
        s.logs
            .all()
            .iter()
            .any(|r| r.stream == LogStream::Platform && r.function == "hello")
    );
}

#[tokio::test]
async fn a_service_that_cannot_take_the_request_is_answered_at_once() {
    let s = setup();
    let cases: [(Fail, u16, &str); 3] = [
        (
            || ServiceError::Throttled("shop/web".into(), Duration::from_secs(1)),
            429,
            "service shop/web is at capacity",
        ),
        (
            || ServiceError::Unavailable {
                service: "shop/web".into(),
                reason: "exited with status 1".into(),
            },
            503,
            "cannot start: exited with status 1; `stratus status`",
        ),
        (
            || ServiceError::Retired,
            503,
            "service web is being replaced",
        ),
    ];
    for (fail, status, says) in cases {
        *s.backend.lease.lock().unwrap() = Some(fail);
        let (response, json) = s.get("/shop/web/page").await;
        assert_answer(&response, &json, status, says);
        if status != 503 || says.contains("cannot start") {
            assert!(response.headers().contains_key(header::RETRY_AFTER));
        }
    }
    let request = Request::get("/web/page")
        .header(header::HOST, "shop.localhost:80@evil")
        .body(Body::empty())
        .unwrap();
    let (response, json) = s.send(request).await;
    assert_answer(&response, &json, 400, "not a valid host");
}
