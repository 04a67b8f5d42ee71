//! Scaling: bursts rise to the cap and are all served, idle instances go
//! after their keep-alive down to `min_instances`, and an application's cap
//! holds across its functions.

mod common;

use std::time::{Duration, Instant};

use common::{Server, write_app};

const SLEEPER: &str = "import time\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return c.log_stream_name\n";

async fn instances(server: &Server, app: &str, function: &str) -> u64 {
    stats(server, app, function).await["instances"]
        .as_u64()
        .unwrap()
}

/// The pool's counts of `function`: instances (started or starting), idle
/// and waiting.
async fn stats(server: &Server, app: &str, function: &str) -> serde_json::Value {
    let body: serde_json::Value = server
        .http()
        .get(format!("{}/v1/apps/{app}", server.admin))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == function)
        .map(|f| f["instances"].clone())
        .unwrap()
}

async fn wait_for(server: &Server, app: &str, function: &str, want: u64, within: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let n = instances(server, app, function).await;
        if n == want || started.elapsed() > within {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn invoke_all(
    server: &Server,
    app: &str,
    function: &str,
    calls: usize,
    body: &str,
) -> Vec<(u16, String)> {
    let url = format!("{}/v1/apps/{app}/functions/{function}/invoke", server.admin);
    let handles: Vec<_> = (0..calls)
        .map(|_| {
            let (http, url, token, body) = (
                server.http(),
                url.clone(),
                server.token.clone(),
                body.to_owned(),
            );
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(token)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_200_is_served_by_instances_up_to_the_cap() {
    let server = Server::start_with(&["--queue-depth", "300", "--queue-timeout", "120s"]);
    let dir = server.path("burst");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: burst\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    max_instances: 40\n",
            ),
            ("main.py", SLEEPER),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let results = invoke_all(&server, "burst", "f", 200, r#"{"sleep": 0.5}"#).await;
    let failed: Vec<_> = results
        .iter()
        .filter(|r| r.0 != 200 || r.1.contains("errorType"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let distinct: std::collections::HashSet<_> = results.iter().map(|r| r.1.clone()).collect();
    assert_eq!(
        distinct.len(),
        40,
        "instances rise to the cap and no further"
    );
    assert_eq!(instances(&server, "burst", "f").await, 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_instances_retire_down_to_min_instances() {
    let server = Server::start();
    let dir = server.path("warm");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: warm\nfunctions:\n  f:\n    runtime: python3\n    handler: main.handler\n    min_instances: 2\n    keep_alive: 2s\n",
            ),
            ("main.py", SLEEPER),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    // Started in the background, before any call: counted at once, idle
    // once their runtimes are up.
    assert_eq!(
        wait_for(&server, "warm", "f", 2, Duration::from_secs(15)).await,
        2
    );
    let started = Instant::now();
    while stats(&server, "warm", "f").await["idle"] != 2 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the min instances never became idle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = server.invoke("warm/f", "{}");
    assert_eq!(
        first["cold"], false,
        "a min instance serves the first call warm: {first}"
    );

    // Long enough that all five overlap even on a loaded machine.
    let results = invoke_all(&server, "warm", "f", 5, r#"{"sleep": 3}"#).await;
    assert!(results.iter().all(|r| r.0 == 200));
    assert_eq!(instances(&server, "warm", "f").await, 5);
    // After the 2 s keep-alive the extra instances go; two stay.
    assert_eq!(
        wait_for(&server, "warm", "f", 2, Duration::from_secs(10)).await,
        2
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        instances(&server, "warm", "f").await,
        2,
        "min_instances holds"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_cap_holds_across_its_functions() {
    let server = Server::start_with(&["--app-max-instances", "3"]);
    let dir = server.path("capped");
    write_app(
        &dir,
        &[
            (
                "stratus.yaml",
                "app: capped\nfunctions:\n  a:\n    runtime: python3\n    handler: main.handler\n  b:\n    runtime: python3\n    handler: main.handler\n",
            ),
            ("main.py", SLEEPER),
        ],
    );
    server.ok(&["deploy", dir.to_str().unwrap()]);
    let busy = tokio::spawn({
        let (http, url, token) = (
            server.http(),
            format!("{}/v1/apps/capped/functions/a/invoke", server.admin),
            server.token.clone(),
        );
        async move {
            let calls = (0..3).map(|_| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                tokio::spawn(async move {
                    http.post(url)
                        .bearer_auth(token)
                        .body(r#"{"sleep": 3}"#)
                        .send()
                        .await
                })
            });
            for call in calls.collect::<Vec<_>>() {
                assert_eq!(call.await.unwrap().unwrap().status(), 200);
            }
        }
    });
    assert_eq!(
        wait_for(&server, "capped", "a", 3, Duration::from_secs(10)).await,
        3
    );
    let refused = server
        .http()
        .post(format!(
            "{}/v1/apps/capped/functions/b/invoke",
            server.admin
        ))
        .bearer_auth(&server.token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("at its cap of 3 instances")
    );
    busy.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_an_idle_instance_of_another_function_gives_way() {
    let server = Server::start_with(&["--app-max-instances", "2"]);
    let dir = server.path("crowded");
    let function =
        |name: &str| format!("  {name}:\n    runtime: python3\n    handler: main.handler\n");
    let manifest = format!(
        "app: crowded\nfunctions:\n{}{}{}",
        function("a"),
        function("b"),
        function("c")
    );
    write_app(&dir, &[("stratus.yaml", &manifest), ("main.py", SLEEPER)]);
    server.ok(&["deploy", dir.to_str().unwrap()]);
    // a and b each leave an idle instance: the application is at its cap,
    // and nothing is busy.
    for name in ["a", "b"] {
        assert_eq!(
            server.invoke(&format!("crowded/{name}"), "{}")["error"],
            serde_json::Value::Null
        );
    }
    assert_eq!(instances(&server, "crowded", "a").await, 1);
    let answer = server.invoke("crowded/c", "{}");
    assert!(answer["error"].is_null(), "c was refused: {answer}");
    assert_eq!(
        instances(&server, "crowded", "a").await,
        0,
        "a's idle instance gave way"
    );
    assert_eq!(instances(&server, "crowded", "b").await, 1);
}
