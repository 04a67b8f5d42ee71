//! The document database's throughput: point reads, indexed queries of 100
//! documents and single-document writes per second, from functions (the
//! document API with a key of the app: what the functions' SDK calls, no
//! rules) and from clients (the app's host, `/_stratus/db`, with a
//! session: rules evaluated on every document), on SQLite and on
//! PostgreSQL, next to a minimal HTTP server of the bench's own doing the
//! same reads and writes on the same database directly, in the same run.
//!
//! Each case runs at 16 keep-alive connections in rounds that alternate
//! between the three paths; it prints each one's median requests/s and p50
//! across rounds, and the client's share of the direct rate (target: point
//! reads at least 50%). Then rule evaluation alone, in process: the
//! collection's read rule over one document (target: at most 20 µs at
//! p50), next to what rules add to a client's 100-document query per
//! document. `STRATUS_BENCH_SECS` (default 2), `STRATUS_BENCH_ROUNDS`
//! (default 3) and `STRATUS_BENCH_STORES` (`sqlite,postgres`) change it;
//! PostgreSQL is `STRATUS_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), in a database of the
//! bench's own. It prints figures only and never asserts on them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use support::{Server, closed_loop, deploy, env_number, percentile};

mod support;

const APP: &str = "docbench";
const CONNECTIONS: usize = 16;
const WARMUP: Duration = Duration::from_millis(500);
/// Documents of the signed-in user (the queries' results), and of others.
const OWN: usize = 1000;
const OTHERS: usize = 9000;
const READ_RULE: &str = "auth != null && doc.owner == auth.uid";

const MANIFEST: &str = r#"app: docbench
functions:
  f:
    runtime: python3
    handler: main.handler
collections:
  items:
    indexes: [ { fields: [owner] } ]
    rules:
      read: "auth != null && doc.owner == auth.uid"
      create: "auth != null && request.doc.owner == auth.uid"
"#;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Read,
    Query,
    Write,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "point read",
            Op::Query => "query (100)",
            Op::Write => "write",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Path3 {
    Direct,
    Function,
    Client,
}

/// What each path needs to send its requests.
#[derive(Clone)]
struct Target {
    direct: SocketAddr,
    admin: SocketAddr,
    public: SocketAddr,
    key: String,
    access: String,
    uid: String,
    ids: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
}

fn request(target: &Target, path: Path3, op: Op) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let n = target.next.fetch_add(1, Ordering::Relaxed);
    let id = &target.ids[n % target.ids.len()];
    let query = json!({ "where": ["owner", "==", target.uid], "limit": 100 }).to_string();
    let doc = json!({ "owner": target.uid, "n": n, "title": "a new item" }).to_string();
    let (method, uri, auth, body) = match (path, op) {
        (Path3::Direct, Op::Read) => ("GET", format!("/get/{id}"), None, String::new()),
        (Path3::Direct, Op::Query) => {
            ("GET", format!("/query/{}", target.uid), None, String::new())
        }
        (Path3::Direct, Op::Write) => ("POST", format!("/write/{n}"), None, doc),
        (Path3::Function, Op::Read) => (
            "GET",
            format!("/v1/apps/{APP}/db/items/{id}"),
            Some(&target.key),
            String::new(),
        ),
        (Path3::Function, Op::Query) => (
            "POST",
            format!("/v1/apps/{APP}/db/items/_query"),
            Some(&target.key),
            query,
        ),
        (Path3::Function, Op::Write) => (
            "POST",
            format!("/v1/apps/{APP}/db/items"),
            Some(&target.key),
            doc,
        ),
        (Path3::Client, Op::Read) => (
            "GET",
            format!("/{APP}/_stratus/db/items/{id}"),
            Some(&target.access),
            String::new(),
        ),
        (Path3::Client, Op::Query) => (
            "POST",
            format!("/{APP}/_stratus/db/items/_query"),
            Some(&target.access),
            query,
        ),
        (Path3::Client, Op::Write) => (
            "POST",
            format!("/{APP}/_stratus/db/items"),
            Some(&target.access),
            doc,
        ),
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    if let Some(token) = auth {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    Ok(builder.body(Full::new(Bytes::from(body)))?)
}

struct Figures {
    rps: f64,
    p50_us: f64,
    errors: usize,
}

async fn load(target: &Target, path: Path3, op: Op, window: Duration) -> anyhow::Result<Figures> {
    let addr = match path {
        Path3::Direct => target.direct,
        Path3::Function => target.admin,
        Path3::Client => target.public,
    };
    let target = target.clone();
    let seen = closed_loop(
        addr,
        CONNECTIONS,
        window,
        move || request(&target, path, op),
        |status, _| status.is_success(),
    )
    .await?;
    Ok(Figures {
        rps: seen.rps(),
        p50_us: percentile(&seen.latencies_ms, 50.0).map_or(f64::NAN, |ms| ms * 1000.0),
        errors: seen.errors,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("not an address: {url}"))
}

/// The bench's own server: the same reads and writes, straight on the
/// database.
mod direct {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response, StatusCode};

    /// Where the documents are.
    pub enum Db {
        Sqlite(Arc<Mutex<rusqlite::Connection>>),
        Postgres(Arc<Vec<Pg>>),
    }

    const APP: &str = super::APP;

    /// A connection to PostgreSQL with the three statements prepared, as
    /// the platform's own are.
    pub struct Pg {
        client: tokio_postgres::Client,
        get: tokio_postgres::Statement,
        query: tokio_postgres::Statement,
        insert: tokio_postgres::Statement,
    }

    impl Pg {
        pub async fn connect(url: &str) -> anyhow::Result<Pg> {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            let get = client
                // The app and collection as parameters, as the platform's
                // point read has them: as literals, they let the planner
                // prefer a declared (partial) index to the primary key.
                .prepare("SELECT body::text FROM documents WHERE app = $1 AND collection = $2 AND id = $3")
                .await?;
            let query = client
                .prepare(&format!("SELECT id, body::text FROM documents WHERE app = '{APP}' AND collection = 'items' AND (body #> '{{owner}}') = $1::text::jsonb LIMIT 100"))
                .await?;
            let insert = client
                .prepare("INSERT INTO documents (app, collection, id, version, body, created_ms, updated_ms) VALUES ('direct', 'items', $1, 1, $2::text::jsonb, 0, 0)")
                .await?;
            Ok(Pg {
                client,
                get,
                query,
                insert,
            })
        }
    }

    async fn answer(
        db: Arc<Db>,
        request: Request<hyper::body::Incoming>,
        next: Arc<std::sync::atomic::AtomicUsize>,
    ) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let (op, arg) = {
            let mut parts = path.trim_start_matches('/').splitn(2, '/');
            (
                parts.next().unwrap_or("").to_owned(),
                parts.next().unwrap_or("").to_owned(),
            )
        };
        let outcome: anyhow::Result<Option<String>> = async move {
            match &*db {
                Db::Sqlite(conn) => {
                    let conn = conn.clone();
                    let body = String::from_utf8_lossy(&body).into_owned();
                    tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
                        let conn = conn.lock().unwrap();
                        use rusqlite::OptionalExtension;
                        Ok(match op.as_str() {
                            "get" => conn
                                .prepare_cached(&format!("SELECT body FROM documents WHERE app = '{APP}' AND collection = 'items' AND id = ?1"))?
                                .query_row([&arg], |r| r.get::<_, String>(0))
                                .optional()?,
                            "query" => {
                                let mut statement = conn.prepare_cached(&format!(
                                    "SELECT id, body FROM documents WHERE app = '{APP}' AND collection = 'items' AND (body ->> '$.\"owner\"') = ?1 LIMIT 100"
                                ))?;
                                let rows: Vec<String> = statement
                                    .query_map([&arg], |r| Ok(format!("{{\"id\":{:?},\"data\":{}}}", r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                                    .collect::<Result<_, _>>()?;
                                Some(format!("[{}]", rows.join(",")))
                            }
                            _ => {
                                conn.prepare_cached(
                                    "INSERT INTO documents (app, collection, id, version, body, created_ms, updated_ms) VALUES ('direct', 'items', ?1, 1, ?2, 0, 0)",
                                )?
                                .execute(rusqlite::params![format!("{arg}-{}", std::process::id()), body])?;
                                Some("{}".to_owned())
                            }
                        })
                    })
                    .await?
                }
                Db::Postgres(clients) => {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let pg = &clients[n % clients.len()];
                    let client = &pg.client;
                    Ok(match op.as_str() {
                        "get" => client
                            .query_opt(&pg.get, &[&APP, &"items", &arg])
                            .await?
                            .map(|row| row.get::<_, String>(0)),
                        "query" => {
                            let owner = serde_json::Value::String(arg.clone()).to_string();
                            let rows = client
                                .query(&pg.query, &[&owner])
                                .await?;
                            let rows: Vec<String> = rows
                                .iter()
                                .map(|r| format!("{{\"id\":{:?},\"data\":{}}}", r.get::<_, String>(0), r.get::<_, String>(1)))
                                .collect();
                            Some(format!("[{}]", rows.join(",")))
                        }
                        _ => {
                            let body = String::from_utf8_lossy(&body).into_owned();
                            client
                                .execute(
                                    &pg.insert,
                                    &[&format!("{arg}-{}", std::process::id()), &body],
                                )
                                .await?;
                            Some("{}".to_owned())
                        }
                    })
                }
            }
        }
        .await;
        let (status, text) = match outcome {
            Ok(Some(text)) => (StatusCode::OK, text),
            Ok(None) => (StatusCode::NOT_FOUND, "{}".to_owned()),
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        response
    }

    /// Serves `db` on a free port until the runtime stops.
    pub async fn serve(db: Db) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let db = Arc::new(db);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (db, next) = (db.clone(), next.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (db, next) = (db.clone(), next.clone());
                        async move { Ok::<_, Infallible>(answer(db, request, next).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(addr)
    }
}

fn write_app(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("stratus.yaml"), MANIFEST)?;
    std::fs::write(
        dir.join("main.py"),
        "def handler(event, context):\n    return 1\n",
    )?;
    Ok(())
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client")
}

/// Deploys the app, makes a key and a session, and fills the collection.
fn prepare(
    server: &Server,
    data_dir: &Path,
    app_dir: &Path,
) -> anyhow::Result<(String, String, String, Vec<String>)> {
    deploy(app_dir, data_dir)?;
    let key: Value = http()
        .post(format!("{}/v1/apps/{APP}/keys", server.admin))
        .bearer_auth(&server.token)
        .json(&json!({ "name": "bench" }))
        .send()?
        .json()?;
    let key = key["key"].as_str().context("no key")?.to_owned();
    let session: Value = http()
        .post(format!(
            "{}/{APP}/_stratus/auth/anonymous",
            server.public.trim_end_matches('/')
        ))
        .send()?
        .json()?;
    let access = session["access_token"]
        .as_str()
        .context("no session")?
        .to_owned();
    let uid = session["user"]["uid"]
        .as_str()
        .context("no uid")?
        .to_owned();
    let mut ids = Vec::new();
    let all: Vec<(String, Value)> = (0..OWN + OTHERS)
        .map(|i| {
            let owner = if i % 10 == 0 && ids.len() < OWN { uid.clone() } else { format!("someone-{}", i % 97) };
            let id = format!("item-{i:06}");
            if owner == uid {
                ids.push(id.clone());
            }
            (id, json!({ "owner": owner, "title": format!("item {i}"), "n": i, "tags": ["a", "b"], "done": i % 3 == 0 }))
        })
        .collect();
    for chunk in all.chunks(500) {
        let writes: Vec<Value> = chunk
            .iter()
            .map(|(id, data)| json!({ "op": "set", "collection": "items", "id": id, "data": data }))
            .collect();
        let response = http()
            .post(format!(
                "{}/v1/apps/{APP}/db/_transaction?triggers=false",
                server.admin
            ))
            .bearer_auth(&server.token)
            .json(&json!({ "writes": writes }))
            .send()?;
        if !response.status().is_success() {
            bail!("filling the collection failed: {}", response.text()?);
        }
    }
    Ok((key, access, uid, ids))
}

/// The read rule over one document, in process: p50 and p99 in µs.
fn rule_speed() -> anyhow::Result<(f64, f64)> {
    let rule = stratus_rules::Rule::parse(READ_RULE, stratus_rules::COLLECTION_ROOTS)?;
    let auth = json!({ "uid": "anon-123", "provider": "anonymous", "email": null, "claims": {} });
    let doc = json!({ "owner": "anon-123", "title": "item 1", "n": 1, "tags": ["a", "b"], "done": false });
    let env = stratus_rules::Env {
        auth: Some(&auth),
        doc: Some(&doc),
        request: stratus_rules::Request {
            doc: None,
            time: 0,
            size: None,
            id: Some("item-000001"),
        },
        resource: None,
    };
    let mut times = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let started = Instant::now();
        let verdict = rule.evaluate(&env, &stratus_rules::NoLookup);
        times.push(started.elapsed().as_secs_f64() * 1e6);
        assert!(verdict.is_allow());
    }
    times.sort_by(f64::total_cmp);
    Ok((
        percentile(&times, 50.0).unwrap_or(f64::NAN),
        percentile(&times, 99.0).unwrap_or(f64::NAN),
    ))
}

fn run() -> anyhow::Result<()> {
    let secs = env_number("STRATUS_BENCH_SECS", 2.0, |s: &f64| {
        s.is_finite() && *s > 0.0 && *s <= 600.0
    })
    .context("STRATUS_BENCH_SECS: give seconds, at most 600")?;
    let rounds = env_number("STRATUS_BENCH_ROUNDS", 3usize, |r| (1..=100).contains(r))
        .context("STRATUS_BENCH_ROUNDS: give 1 to 100")?;
    let stores =
        std::env::var("STRATUS_BENCH_STORES").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    let window = Duration::from_secs_f64(secs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let tmp = tempfile::Builder::new()
        .prefix("stratus-documents-bench-")
        .tempdir()?;
    let app_dir = tmp.path().join("app");
    write_app(&app_dir)?;

    let (rule_p50, rule_p99) = rule_speed()?;
    println!(
        "documents: {rounds} rounds of {secs} s per case at {CONNECTIONS} connections, alternating direct, function and client"
    );
    println!(
        "{:<9} {:<12} {:>11} {:>11} {:>11} {:>9} {:>10} {:>10} {:>10}",
        "store",
        "op",
        "direct /s",
        "function /s",
        "client /s",
        "client %",
        "direct p50",
        "fn p50",
        "client p50"
    );
    for store in stores.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let data_dir = tmp.path().join(store);
        let (extra, postgres) = match store {
            "sqlite" => (Vec::new(), None),
            "postgres" => {
                let server = std::env::var("STRATUS_TEST_POSTGRES")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
                let name = format!("stratus_docbench_{}", std::process::id());
                let url = {
                    let (base, _) = server.rsplit_once('/').context("a database in the URL")?;
                    format!("{base}/{name}")
                };
                runtime.block_on(async {
                    let (client, connection) =
                        tokio_postgres::connect(&server, tokio_postgres::NoTls).await?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                        .await?;
                    client
                        .batch_execute(&format!("CREATE DATABASE {name}"))
                        .await?;
                    anyhow::Ok(())
                })?;
                (
                    vec!["--store".to_owned(), url.clone()],
                    Some((server, name, url)),
                )
            }
            other => bail!("STRATUS_BENCH_STORES: unknown store {other:?} (sqlite, postgres)"),
        };
        let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
        args.extend(["--session-ttl", "2h"]);
        let server = Server::start(&data_dir, &tmp.path().join(format!("{store}.log")), &args)?;
        let (key, access, uid, ids) = prepare(&server, &data_dir, &app_dir)?;
        // The direct server runs apart from the load, on two threads of
        // its own, as the platform's server does in its own process.
        let direct_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let direct_db = match &postgres {
            None => {
                let conn = rusqlite::Connection::open(data_dir.join("stratus.db"))?;
                conn.busy_timeout(Duration::from_secs(5))?;
                direct::Db::Sqlite(Arc::new(std::sync::Mutex::new(conn)))
            }
            Some((_, _, url)) => {
                let clients = direct_runtime.block_on(async {
                    // As many connections as the platform's store pool.
                    let mut clients = Vec::new();
                    for _ in 0..stratus_store_postgres::DEFAULT_POOL_SIZE {
                        clients.push(direct::Pg::connect(url).await?);
                    }
                    anyhow::Ok(clients)
                })?;
                direct::Db::Postgres(Arc::new(clients))
            }
        };
        let direct = direct_runtime.block_on(direct::serve(direct_db))?;
        let target = Target {
            direct,
            admin: addr_of(&server.admin)?,
            public: addr_of(&server.public)?,
            key,
            access,
            uid,
            ids: Arc::new(ids),
            next: Arc::new(AtomicUsize::new(0)),
        };
        for op in [Op::Read, Op::Query, Op::Write] {
            let paths = [Path3::Direct, Path3::Function, Path3::Client];
            let mut figures: [Vec<Figures>; 3] = [Vec::new(), Vec::new(), Vec::new()];
            for round in 0..rounds {
                for k in 0..3 {
                    let side = (round + k) % 3;
                    runtime.block_on(load(&target, paths[side], op, WARMUP))?;
                    figures[side].push(runtime.block_on(load(&target, paths[side], op, window))?);
                }
            }
            let errors: usize = figures.iter().flatten().map(|f| f.errors).sum();
            let rps = |side: usize| median(figures[side].iter().map(|f| f.rps).collect());
            let p50 = |side: usize| median(figures[side].iter().map(|f| f.p50_us).collect());
            println!(
                "{:<9} {:<12} {:>11.0} {:>11.0} {:>11.0} {:>8.0}% {:>8.0}µs {:>8.0}µs {:>8.0}µs{}",
                store,
                op.name(),
                rps(0),
                rps(1),
                rps(2),
                100.0 * rps(2) / rps(0),
                p50(0),
                p50(1),
                p50(2),
                if errors > 0 {
                    format!("  ({errors} errors)")
                } else {
                    String::new()
                }
            );
            if op == Op::Query {
                let per_doc = (p50(2) - p50(1)) / 100.0;
                println!(
                    "{:<9} {:<12} rules and sessions add {per_doc:.1} µs per document to a client's query at p50 (client p50 less function p50, over 100)",
                    "", ""
                );
            }
        }
        drop(server);
        drop(direct_runtime);
        if let Some((server, name, _)) = postgres {
            let _ = runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&server, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            });
        }
    }
    println!(
        "rule evaluation in process ({READ_RULE:?} over one document): p50 {rule_p50:.2} µs, p99 {rule_p99:.2} µs (target: at most 20 µs at p50)"
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("documents bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
