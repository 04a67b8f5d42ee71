//! The store suite every backend runs, on a real PostgreSQL server: each
//! case in a database of its own, created for it and dropped after.
//! `STRATUS_TEST_POSTGRES` names the server (a URL to a database the
//! tests may connect to and create databases from; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use stratus_store::Store;
use stratus_store::conformance::Fixture;
use stratus_store_postgres::PostgresStore;

struct Postgres {
    server: String,
    database: String,
}

fn server() -> String {
    std::env::var("STRATUS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs each of `statements` on its own on the database `server` names.
async fn admin(server: &str, statements: &[&str]) {
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| {
            panic!("cannot reach PostgreSQL at {server} (set STRATUS_TEST_POSTGRES): {err}")
        });
    tokio::spawn(connection);
    for sql in statements {
        client.batch_execute(sql).await.unwrap();
    }
}

impl Postgres {
    async fn new() -> Postgres {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let server = server();
        let database = format!(
            "stratus_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin(
            &server,
            &[
                &format!("DROP DATABASE IF EXISTS {database}"),
                &format!("CREATE DATABASE {database}"),
            ],
        )
        .await;
        Postgres { server, database }
    }

    fn url(&self) -> String {
        self.url_of(&self.database)
    }

    fn url_of(&self, database: &str) -> String {
        match self.server.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{database}"),
            None => panic!("STRATUS_TEST_POSTGRES names no database: {}", self.server),
        }
    }

    /// The other store's database.
    fn other_database(&self) -> String {
        format!("{}_other", self.database)
    }
}

#[async_trait]
impl Fixture for Postgres {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(PostgresStore::connect(&self.url(), 4).await.unwrap())
    }

    async fn other(&self) -> Arc<dyn Store> {
        let other = self.other_database();
        admin(
            &self.server,
            &[
                &format!("DROP DATABASE IF EXISTS {other}"),
                &format!("CREATE DATABASE {other}"),
            ],
        )
        .await;
        Arc::new(
            PostgresStore::connect(&self.url_of(&other), 4)
                .await
                .unwrap(),
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropped inside the test's runtime: the drop runs on a thread of
        // its own.
        let (server, databases) = (
            self.server.clone(),
            [self.database.clone(), self.other_database()],
        );
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    for database in databases {
                        admin(
                            &server,
                            &[&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")],
                        )
                        .await;
                    }
                });
        })
        .join();
    }
}

stratus_store::conformance_suite!(Postgres::new());

/// Nodes starting together migrate once; a node starts against a newer
/// schema that only added to what it knows, and refuses one that changed
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let db = Postgres::new().await;
    let url = db.url();
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url, 2).await.map(|_| ()) })
        })
        .collect();
    for start in starts {
        start.await.unwrap().expect("every node starts");
    }
    admin(&url, &["UPDATE stratus_schema SET version = version + 1"]).await;
    PostgresStore::connect(&url, 2)
        .await
        .expect("a node works against a schema that only added");
    admin(&url, &["UPDATE stratus_schema SET readable_from = version"]).await;
    let newer = PostgresStore::connect(&url, 2).await.unwrap_err();
    assert!(
        matches!(newer, stratus_store::StoreError::NewerSchema { .. }),
        "{newer}"
    );
}

/// An unreachable database is an error that names it, not a hang.
#[tokio::test]
async fn an_unreachable_database_is_refused_with_the_reason() {
    let started = std::time::Instant::now();
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/none", 2)
        .await
        .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        matches!(err, stratus_store::StoreError::Unavailable(_)),
        "{err}"
    );
}

/// Package bytes go in whole and come out whole, in chunks; a second put
/// of the same package changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_are_kept_for_the_nodes_that_share_the_store() {
    use stratus_store::SharedPackages;
    let db = Postgres::new().await;
    let store = PostgresStore::connect(&db.url(), 2).await.unwrap();
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(store.package_bytes("p1").await.unwrap(), None);
    store.put_package_bytes("p1", &big).await.unwrap();
    store.put_package_bytes("p1", &big).await.unwrap();
    store.put_package_bytes("p2", b"small").await.unwrap();
    assert_eq!(
        store.package_bytes("p1").await.unwrap().as_deref(),
        Some(&big[..])
    );
    assert_eq!(
        store.package_bytes("p2").await.unwrap().as_deref(),
        Some(&b"small"[..])
    );
}

/// A node hears of a deploy, a key or a credential made through another
/// at once, and of nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_hear_of_each_other_s_changes() {
    use std::time::Duration;
    use stratus_store::conformance::apps::version;
    use stratus_store::{Apps, Changes, Credentials, Events, KeyRecord};
    let db = Postgres::new().await;
    let url = db.url();
    let (this, other) = (
        PostgresStore::connect(&url, 2).await.unwrap(),
        PostgresStore::connect(&url, 2).await.unwrap(),
    );
    // The first word comes once listening: anything before was missed.
    let mut seen = tokio::time::timeout(Duration::from_secs(5), this.changed_since(0))
        .await
        .expect("listening");
    let quiet = Duration::from_millis(300);
    let word = Duration::from_secs(2);
    assert!(
        tokio::time::timeout(quiet, this.changed_since(seen))
            .await
            .is_err(),
        "word of nothing"
    );
    other.activate(version("a", 128)).await.unwrap();
    seen = tokio::time::timeout(word, this.changed_since(seen))
        .await
        .expect("word of a deploy");
    // Events are no change to follow.
    other
        .enqueue_events(vec![stratus_store::NewEvent {
            app: "a".into(),
            function: "f".into(),
            payload: b"{}".to_vec(),
            request_id: "r".into(),
            source: stratus_store::Source::Invoke,
            created_ms: 1,
            not_before_ms: 1,
            trace: None,
        }])
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(quiet, this.changed_since(seen))
            .await
            .is_err(),
        "word of an event"
    );
    other
        .create_key(KeyRecord {
            id: "k".into(),
            app: "a".into(),
            name: "ci".into(),
            sha256: "c".repeat(64),
            created_ms: 1,
        })
        .await
        .unwrap();
    seen = tokio::time::timeout(word, this.changed_since(seen))
        .await
        .expect("word of a key");
    other.delete_app("a").await.unwrap();
    tokio::time::timeout(word, this.changed_since(seen))
        .await
        .expect("word of a removal");
}
