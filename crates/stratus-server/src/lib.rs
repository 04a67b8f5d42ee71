//! The stratus server: the control plane and the process around the data
//! plane.
//!
//! [`run`] opens the store, publishes every deployed application to the
//! scheduler, serves the admin API (`/v1`, bearer-token protected) and the
//! public listener, and on shutdown refuses new work, lets invocations in
//! flight finish within a bound and stops every instance. Deploys go
//! through [`deploy`]: validate, unpack, record the version, then swap it
//! into the scheduler's snapshot.

mod alerts;
mod api;
mod app_secrets;
mod auth;
pub mod backup;
mod build;
mod client;
mod cluster;
pub mod config;
mod db;
mod deploy;
mod events;
mod failures;
mod git;
mod git_remote;
mod hex;
mod listener;
pub mod migrate;
mod observe;
mod profile;
mod public;
mod quotas;
mod runtimes;
mod s3;
pub mod samples;
mod secrets;
mod token;
mod traces;
mod triggers;
mod webhooks;

pub(crate) use stratus_scheduler::now_ms;

/// How long a platform API connection may stay open with no request.
const PLATFORM_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use stratus_logs::{
    BatchedLogs, LogTable, Logs, Retention, SegmentLimits, SegmentLogs, StoreTable,
};
use stratus_sandbox::{Isolation, LauncherClient};
use stratus_scheduler::{FunctionConfig, Scheduler, SecretEnv, ServiceConfig, Settings};
use stratus_store::{MetaKey, Store, VersionRecord};
use stratus_store_postgres::PostgresStore;
use stratus_store_sqlite::SqliteStore;
use tokio::net::TcpListener;

pub use auth::AuthSettings;
pub use build::local::LocalBuilder;
pub use config::{Limits, ServerConfig};
pub use db::DatabaseSettings;
pub use db::rules_test::{CaseOutcome, run_rule_cases};
pub use public::{HttpSettings, TlsFiles};
pub use quotas::QuotaSettings;
pub use runtimes::RuntimeFlag;
pub use s3::ObjectSettings;
pub use secrets::KEY_FILE as SECRETS_KEY_FILE;

/// Addresses the server is reachable at, as written to `server.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    pub public: String,
    pub admin: String,
}

pub const SERVER_FILE: &str = "server.json";
/// Log records that may wait for the writer before new ones are dropped.
const LOG_BUFFER: usize = 64 * 1024;
pub const TOKEN_FILE: &str = "admin.token";
/// Where log records are kept, in segment files (see `stratus_logs`).
pub const LOGS_DIR: &str = "logs";

/// Shared by the admin API handlers.
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub scheduler: Arc<Scheduler>,
    pub config: ServerConfig,
    pub token: String,
    /// What the tokens of instances are derived from.
    pub platform_secret: String,
    pub deploy_lock: tokio::sync::Mutex<()>,
    /// Routes and keys of the public listener.
    pub directory: Arc<public::Directory>,
    /// The public listener's URL, for the routes a deploy reports.
    pub public_url: String,
    /// The admin listener's URL, for what the server runs that calls it
    /// back (a git push's hook).
    pub admin_url: String,
    /// Every log line and record, to store and to read.
    pub logs: Arc<dyn Logs>,
    /// Asynchronous invocations.
    pub events: Arc<events::Events>,
    /// AWS credentials, for Lambda's Invoke API.
    pub aws_credentials: api::AwsCredentials,
    /// Apps' secrets, opened, for the environments of instances.
    pub secrets: app_secrets::AppSecrets,
    /// Seals secrets before they are stored.
    pub(crate) sealer: secrets::Sealer,
    /// The version of each app this node serves.
    pub published: cluster::Published,
    /// Builds dependencies of deployed code.
    pub(crate) builder: Arc<build::Builder>,
    /// Package bytes in a store that nodes share; none on SQLite.
    pub shared_packages: Option<Arc<dyn stratus_store::Shared>>,
    /// This node's id among the nodes that use the store.
    pub node_id: String,
    /// What each app may hold queued.
    pub(crate) quotas: Arc<quotas::Quotas>,
    /// Schedules, queues and the other sources of events.
    pub triggers: triggers::Triggers,
    /// One metrics scrape at a time.
    pub scrapes: tokio::sync::Mutex<()>,
    /// The spans this node recorded.
    pub(crate) kept: Arc<traces::Kept>,
    /// The bytes of apps' objects (the S3 API).
    pub(crate) objects: Arc<s3::Blobs>,
    /// What apps declare of their document databases.
    pub(crate) databases: db::Catalog,
    /// Apps' end users, as this node knows them.
    pub(crate) sessions: auth::Sessions,
    /// Watches of queries, fed by the store's change records.
    pub(crate) watches: Arc<client::watch::Hub>,
}

/// Binds both listeners from `config`.
pub async fn bind(config: &ServerConfig) -> anyhow::Result<(TcpListener, TcpListener)> {
    let public = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "cannot listen on {}; choose another with --listen (port 0 picks a free one)",
            config.listen
        )
    })?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; choose another with --admin-listen (port 0 picks a free one)",
                config.admin_listen
            )
        })?;
    Ok((public, admin))
}

/// Runs the server on already bound listeners until `shutdown` completes.
/// `ready` receives the addresses once everything is serving.
pub async fn run(
    config: ServerConfig,
    launcher: LauncherClient,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<ServerInfo>>,
) -> anyhow::Result<()> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve data directory {}", data_dir.display()))?;
    // It holds the admin token, keys and tenants' code: the owner's only.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (mode 0700)", data_dir.display()))?;
    let config = ServerConfig {
        data_dir: data_dir.clone(),
        ..config
    };
    // One server per data directory: the lock is held until this returns.
    let _lock = lock_data_dir(&data_dir)?;
    for sub in ["packages", "code", "runtimes"] {
        std::fs::create_dir_all(data_dir.join(sub))
            .with_context(|| format!("cannot create {sub} under the data directory"))?;
    }
    // What git deploys that a stop cut short fetched.
    let _ = std::fs::remove_dir_all(data_dir.join("git"));
    let removed = deploy::remove_partial_uploads(&data_dir)
        .context("cannot remove what interrupted uploads left in the data directory")?;
    if removed > 0 {
        tracing::info!(removed, "removed what interrupted uploads left behind");
    }
    // On a disk too full to start, the reserve makes room.
    let reserve = stratus_logs::Reserve::new(data_dir.join(RESERVE_FILE), config.disk_reserve);
    let free = stratus_logs::free_bytes(&data_dir);
    if free.is_some_and(|free| free < config.disk_reserve.max(MIN_FREE_AT_START)) {
        let released = reserve.release();
        tracing::warn!(
            free = free.unwrap_or(0),
            released,
            "DEGRADED: the data directory's disk is (nearly) full; logs are trimmed to make room, and deploys and other writes may fail until there is room"
        );
    }
    let (store, shared, shared_packages) = open_store(&config, &data_dir).await?;
    check_store_identity(&*store, &shared, &data_dir, config.accept_empty_store).await?;
    let token = token::admin_token(
        &*store,
        config.admin_token_file.as_deref(),
        &data_dir.join(TOKEN_FILE),
    )
    .await?;
    let platform_secret = token::platform_secret(&*store).await?;

    let launcher = Arc::new(launcher);
    // Before any instance starts: none may reach the admin listener.
    let admin_addr = admin.local_addr().context("the admin listener")?;
    launcher
        .reserve(&[admin_addr])
        .await
        .context("cannot fence the admin listener off from instances")?;
    tracing::info!(limits = launcher.limits(), "resource limits");
    tracing::info!(
        network = launcher.network(),
        landlock = launcher.landlock(),
        "tenant fences"
    );
    if !launcher.can_freeze() {
        tracing::warn!(
            "idle function instances keep running between events: no cgroup v2 hierarchy to freeze them in"
        );
    }
    match launcher.isolation() {
        Isolation::Namespaces => tracing::info!(
            isolation = "namespaces",
            reason = launcher.reason(),
            "tenant isolation"
        ),
        Isolation::None => tracing::warn!(
            isolation = "none",
            reason = launcher.reason(),
            "TENANT ISOLATION IS OFF: functions run as plain processes that share this host's users, files and network; run only code you trust"
        ),
    }
    let found = runtimes::find_interpreters(&config.runtimes).await?;
    let languages = runtimes::install(&data_dir.join("runtimes"), found)?;

    let node_id = cluster::node_id(&data_dir)?;
    let retention = Retention {
        max_age: config.log_retention,
        max_bytes: config.log_max_bytes,
        max_bytes_per_app: config.log_max_bytes_per_app,
    };
    // A store that several nodes share keeps their logs too, so that every
    // node reads every node's lines; one node keeps them in segment files.
    let log_table: Arc<dyn LogTable> = match &shared {
        StoreKind::Postgres(_) => Arc::new(StoreTable(store.clone())),
        StoreKind::Sqlite(_) => {
            let segments = SegmentLogs::open(
                &data_dir.join(LOGS_DIR),
                SegmentLimits::for_retention(&retention),
            )
            .context("cannot open the log segments")?;
            segments
                .take_over(store.clone())
                .await
                .context("cannot move the database's log records into log segments")?;
            Arc::new(segments)
        }
    };
    let store_logs = BatchedLogs::start(
        log_table,
        stratus_logs::Buffer {
            records: LOG_BUFFER,
            bytes: config.log_buffer_bytes,
        },
        retention,
        (config.disk_reserve > 0).then_some(reserve),
        match &shared {
            // Nodes sharing the log table take turns to trim it.
            StoreKind::Postgres(_) => Some(Arc::new(cluster::TrimLease {
                store: store.clone(),
                holder: node_id.clone(),
            }) as Arc<dyn stratus_logs::TrimTurn>),
            StoreKind::Sqlite(_) => None,
        },
    );
    let logs: Arc<dyn Logs> = store_logs.clone();
    // Instances reach the platform API on a listener of its own.
    let platform = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot listen for the platform API on 127.0.0.1")?;
    // Instances reach the S3 API on a listener of their own too.
    let s3_instances = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot listen for instances' S3 API on 127.0.0.1")?;
    let s3_listener = match config.objects.s3_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr}; choose another with --s3-listen")
        })?),
        None => None,
    };
    let objects_dir = config
        .objects
        .objects_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("objects"));
    let remote_objects = config
        .objects
        .objects_s3
        .as_deref()
        .map(s3::Remote::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let objects = Arc::new(
        s3::Blobs::open(objects_dir.clone(), remote_objects).with_context(|| {
            format!(
                "cannot keep objects in {}; choose another directory with --objects-dir",
                objects_dir.display()
            )
        })?,
    );
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr}; choose another with --metrics-listen")
        })?),
        None => None,
    };
    let (failure_keeper, failure_scenes) = failures::keeper();
    let metrics = observe::metrics_for(config.metrics);
    let otlp = config
        .otlp_endpoint
        .as_deref()
        .map(traces::otlp_endpoint)
        .transpose()?;
    let (tracer, spans) = if config.traces {
        let (collector, spans) = traces::collector(metrics.clone());
        (stratus_trace::Tracer::new(collector), Some(spans))
    } else {
        if otlp.is_some() {
            anyhow::bail!(
                "--otlp-endpoint exports spans, which --traces false stops recording; drop one of them"
            );
        }
        (stratus_trace::Tracer::off(), None)
    };
    let settings = Settings {
        languages: languages.clone(),
        region: config.region.clone(),
        limits: config.data_plane.clone(),
        base_env: runtimes::base_env(),
        host_path: std::env::var("PATH")
            .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
        name_servers: (!config.resolvers.is_empty()).then(|| config.resolvers.clone()),
        platform_api: Some(Arc::new(api::InstanceApi {
            url: url(platform.local_addr()?),
            secret: platform_secret.clone(),
            s3_url: url(s3_instances.local_addr()?),
        })),
        metrics: metrics.clone(),
        tracer,
        failures: Some(failure_keeper),
    };
    let scheduler = Scheduler::new(settings, launcher.clone(), logs.clone());

    let directory = Arc::new(public::Directory::default());
    // Reachable whatever an instance's egress rule says: the platform
    // API, the public listener, and the name servers instances resolve
    // names with.
    let endpoints: Vec<std::net::SocketAddr> = [
        platform.local_addr()?,
        public.local_addr()?,
        s3_instances.local_addr()?,
    ]
    .into_iter()
    .map(|addr| match addr.ip().is_unspecified() {
        true => (std::net::Ipv4Addr::LOCALHOST, addr.port()).into(),
        false => addr,
    })
    .chain(stratus_scheduler::egress::dns::system_name_servers())
    .collect();
    launcher
        .platform_endpoints(&endpoints)
        .await
        .context("cannot let instances reach the platform's endpoints")?;
    let deployed = store
        .active_versions()
        .await
        .context("cannot read deployed applications")?;
    let mut deployed = deployed;
    if let Some(shared) = &shared_packages {
        // A node that was not given a package takes it from the store; an
        // app whose packages cannot be had is left out (and said so).
        let limits = deploy::unpack_limits(config.limits.max_unpacked_bytes);
        let mut ready = Vec::with_capacity(deployed.len());
        for version in deployed {
            match deploy::ensure_version_code(&data_dir, limits, &**shared, &version).await {
                Ok(()) => ready.push(version),
                Err(err) => tracing::error!(
                    app = version.app,
                    error = err.message,
                    "cannot serve an app: a package of it is missing"
                ),
            }
        }
        deployed = ready;
    }
    let builder = Arc::new(
        build::Builder::new(
            launcher.clone(),
            &data_dir,
            config.builds.clone(),
            languages,
            &node_id,
        )
        .await,
    );
    {
        let builder = builder.clone();
        tokio::spawn(async move { builder.provide_python_packages().await });
    }
    // Built code directories pruned or never made here (another node's
    // deploy) are made again from their packages.
    let mut servable = Vec::with_capacity(deployed.len());
    for version in deployed {
        match builder.ensure(&version).await {
            Ok(()) => servable.push(version),
            Err(error) => tracing::error!(
                app = version.app,
                error,
                "cannot serve an app: it names a runtime this server does not run, or its dependencies cannot be built here"
            ),
        }
    }
    let deployed = servable;
    let sealer = secrets::Sealer::load_or_create(
        &config
            .secrets_key_file
            .clone()
            .unwrap_or_else(|| data_dir.join(secrets::KEY_FILE)),
    )?;
    let app_secrets = app_secrets::load(&*store, &sealer).await?;
    for version in &deployed {
        let values = app_secrets.values(&version.app);
        scheduler.publish_app(
            &version.app,
            function_configs(&data_dir, version, &values),
            service_configs(&data_dir, version, &values),
        );
        directory.publish(version);
    }
    directory.load_keys(
        &store
            .list_keys(None)
            .await
            .context("cannot read app keys")?,
    );

    let tls = config
        .http
        .tls()
        .as_ref()
        .map(TlsFiles::load)
        .transpose()
        .context("cannot serve HTTPS; fix --tls-cert and --tls-key or leave them out")?;
    let admin_tls = config
        .http
        .admin_tls()
        .as_ref()
        .map(TlsFiles::load)
        .transpose()
        .context(
            "cannot serve the admin API over HTTPS; fix --admin-tls-cert and --admin-tls-key or leave them out",
        )?;
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let info = ServerInfo {
        public: match tls {
            Some(_) => format!("https://{public_addr}"),
            None => url(public_addr),
        },
        admin: match admin_tls {
            Some(_) => format!("https://{admin_addr}"),
            None => url(admin_addr),
        },
    };
    write_server_file(&data_dir, &info)?;
    tracing::info!(public = %info.public, admin = %info.admin, data_dir = %data_dir.display(), "stratus is serving");

    let events = events::Events::new(
        store.clone(),
        scheduler.clone(),
        logs.clone(),
        shared_packages.is_some(),
    );
    let events_task = tokio::spawn(events.clone().run());
    let failures_task = tokio::spawn(failures::keep(
        store.clone(),
        logs.clone(),
        failures::Retention {
            max_age: config.failure_retention,
            per_function: config.failures_kept,
            max_event_bytes: config.failure_max_event_bytes,
        },
        failure_scenes,
    ));
    let kept = Arc::new(traces::Kept::new(
        config.trace_buffer,
        config.trace_retention,
    ));
    let traces_task = spans.map(|spans| {
        tokio::spawn(traces::keep(
            kept.clone(),
            spans,
            traces::Settings {
                otlp,
                node: node_id.clone(),
            },
            metrics.clone(),
        ))
    });
    let quotas = quotas::Quotas::new(config.quotas.clone());
    quotas.refresh(&*store).await;
    let quotas_task = quotas.start(store.clone());
    let stored_credentials = store
        .list_aws_credentials(None)
        .await
        .context("cannot read AWS credentials")?;
    let aws_credentials =
        api::AwsCredentials::new(open_aws_credentials(&*store, &sealer, stored_credentials).await?);
    let wake_events = events.clone();
    let triggers = triggers::Triggers::new(
        triggers::schedule::Schedules::new(
            store.clone(),
            Arc::new(triggers::SystemClock),
            Arc::new(move || wake_events.wake()),
            config.region.clone(),
            scheduler.metrics().clone(),
            scheduler.tracer().clone(),
        ),
        triggers::queue::Queues::new(
            store.clone(),
            scheduler.clone(),
            logs.clone(),
            config.region.clone(),
        ),
        triggers::logs::LogTriggers::new(
            store.clone(),
            logs.clone(),
            {
                let events = events.clone();
                Arc::new(move || events.wake())
            },
            node_id.clone(),
        ),
    );
    for version in &deployed {
        triggers.reconcile(&version.app, Some(&version.spec));
    }
    let databases = db::Catalog::default();
    for version in &deployed {
        databases.publish(&version.app, &version.spec);
    }
    let state = Arc::new(AppState {
        triggers,
        aws_credentials,
        secrets: app_secrets,
        sealer,
        quotas: quotas.clone(),
        events: events.clone(),
        store,
        scheduler: scheduler.clone(),
        config: config.clone(),
        token,
        platform_secret,
        deploy_lock: tokio::sync::Mutex::new(()),
        published: std::sync::Mutex::new(
            deployed
                .iter()
                .map(|v| (v.app.clone(), v.version))
                .collect(),
        ),
        shared_packages: shared_packages.clone(),
        builder,
        node_id,
        directory: directory.clone(),
        public_url: info.public.clone(),
        admin_url: info.admin.clone(),
        logs: logs.clone(),
        scrapes: tokio::sync::Mutex::new(()),
        kept,
        objects,
        databases,
        sessions: auth::Sessions::default(),
        watches: Arc::new(client::watch::Hub::default()),
    });
    let gateway = Arc::new(public::Gateway {
        directory,
        backend: scheduler.clone(),
        logs,
        settings: config.http.clone(),
        port: public_addr.port(),
        tls,
        proxy: public::Clients::new(),
        bodies: public::BodyBudget::new(config.http.max_buffered_body_bytes),
        webhooks: Some(Arc::new(webhooks::GitHooks(state.clone()))),
        probes: Some(Arc::new(crate::observe::Probes(state.clone()))),
        tracer: scheduler.tracer().clone(),
        objects: Some(Arc::new(s3::Api(state.clone()))),
        clients: Some(Arc::new(client::Api::new(state.clone()))),
    });
    // What earlier runs left of versions no longer kept.
    deploy::prune_in_background(state.clone());
    let heartbeat_task = tokio::spawn(cluster::heartbeat(
        state.clone(),
        stratus_store::NodeRecord {
            id: state.node_id.clone(),
            admin_url: info.admin.clone(),
            public_url: info.public.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: now_ms(),
            heartbeat_ms: 0,
            instances: 0,
            report: String::new(),
        },
    ));
    let alerts_task = tokio::spawn(alerts::run(state.clone()));
    let lifecycle_task = tokio::spawn(s3::lifecycle::run(state.clone()));
    let watches_task = tokio::spawn(state.watches.clone().follow(state.clone()));
    let sessions_task = tokio::spawn(auth::keep(state.clone()));
    // Nodes that share the store take up each other's deploys.
    let follow_task =
        shared_packages.map(|shared| tokio::spawn(cluster::follow(state.clone(), shared)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin_server = listener::serve(
        "admin",
        admin,
        config.http.limits(config.limits.admin_max_connections),
        admin_tls,
        stopped(stop_rx.clone()),
        api::admin_connections(api::router(state.clone())),
    );
    let public_server = public::serve(gateway, public, stopped(stop_rx.clone()));
    let platform_server = listener::serve(
        "platform",
        platform,
        listener::Limits {
            // Instances share the host's loopback address: the cap per app
            // stands in for the cap per address.
            per_address: 0,
            // An idle instance's kept connection gives its place in the
            // app's share back soon (as Node's own client closes its idle
            // ones after 4 s).
            idle_timeout: config.http.idle_timeout.min(PLATFORM_IDLE),
            ..config.http.limits(config.limits.platform_max_connections)
        },
        None,
        stopped(stop_rx.clone()),
        api::platform_connections(
            api::platform_router(state.clone()),
            api::ConnectionCaps {
                per_app: config.limits.platform_max_connections_per_app,
                per_instance: config.limits.platform_max_connections_per_instance,
            },
        ),
    );
    let metrics_server = metrics_listener.map(|metrics| {
        listener::serve(
            "metrics",
            metrics,
            config.http.limits(config.limits.admin_max_connections),
            None,
            stopped(stop_rx.clone()),
            api::admin_connections(observe::router(state.clone())),
        )
    });
    let s3_server = s3_listener.map(|listener| {
        listener::serve(
            "s3",
            listener,
            config.http.limits(config.http.max_connections),
            None,
            stopped(stop_rx.clone()),
            api::admin_connections(s3::router(state.clone())),
        )
    });
    let s3_instances_server = listener::serve(
        "instances' s3",
        s3_instances,
        listener::Limits {
            // Instances share the host's loopback address.
            per_address: 0,
            ..config.http.limits(config.limits.platform_max_connections)
        },
        None,
        stopped(stop_rx.clone()),
        api::admin_connections(s3::router(state.clone())),
    );
    let admin_task = tokio::spawn(async move {
        let metrics = async {
            if let Some(server) = metrics_server {
                let _ = server.await;
            }
        };
        let s3 = async {
            if let Some(server) = s3_server {
                let _ = server.await;
            }
        };
        let _ = tokio::join!(
            admin_server,
            platform_server,
            metrics,
            s3,
            s3_instances_server
        );
    });
    let public_task = tokio::spawn(public_server);
    if let Some(ready) = ready {
        let _ = ready.send(info);
    }

    shutdown.await;
    tracing::info!("shutting down: refusing new work, finishing invocations in flight");
    let _ = stop_tx.send(true);
    events.stop();
    state.triggers.stop();
    scheduler.shutdown(config.shutdown_grace).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), events_task).await;
    let drain = async {
        let _ = admin_task.await;
        let _ = public_task.await;
    };
    if tokio::time::timeout(std::time::Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after shutdown; closing them");
    }
    quotas_task.abort();
    failures_task.abort();
    if let Some(task) = traces_task {
        task.abort();
    }
    if let Some(task) = follow_task {
        task.abort();
    }
    heartbeat_task.abort();
    alerts_task.abort();
    lifecycle_task.abort();
    watches_task.abort();
    sessions_task.abort();
    store_logs.stop().await;
    let _ = std::fs::remove_file(data_dir.join(SERVER_FILE));
    tracing::info!("stopped");
    Ok(())
}

/// The scheduler's view of a stored version's services, with the values
/// of the app's secrets they name.
pub(crate) fn service_configs(
    data_dir: &Path,
    version: &VersionRecord,
    secrets: &BTreeMap<String, String>,
) -> Vec<ServiceConfig> {
    version
        .spec
        .services
        .values()
        .map(|spec| {
            let named = spec.runtime.map(|r| (r, spec.runtime_version.as_deref()));
            ServiceConfig {
                app: version.app.clone(),
                version: version.version,
                code_dir: build::code_dir_of(data_dir, version, &spec.code, named),
                deps: build::service_deps(version, &spec.code, named),
                secrets: SecretEnv(app_secrets::resolve(&spec.secret_env, secrets)),
                spec: spec.clone(),
            }
        })
        .collect()
}

/// The scheduler's view of a stored version's functions, with the values
/// of the app's secrets they name.
pub(crate) fn function_configs(
    data_dir: &Path,
    version: &VersionRecord,
    secrets: &BTreeMap<String, String>,
) -> Vec<FunctionConfig> {
    version
        .spec
        .functions
        .values()
        .map(|spec| FunctionConfig {
            app: version.app.clone(),
            version: version.version,
            code_dir: build::code_dir_of(
                data_dir,
                version,
                &spec.code,
                Some((spec.runtime, spec.runtime_version.as_deref())),
            ),
            secrets: SecretEnv(app_secrets::resolve(&spec.secret_env, secrets)),
            spec: spec.clone(),
        })
        .collect()
}

fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("server.lock");
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another stratus server is already using {}; stop it or choose another --data-dir",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn write_server_file(data_dir: &Path, info: &ServerInfo) -> anyhow::Result<()> {
    let path = data_dir.join(SERVER_FILE);
    let tmp = data_dir.join(".server.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The stored AWS credentials with their secrets opened. Secrets an
/// earlier version stored in the clear are sealed now; one that does not
/// open is left stored, unusable, and said so.
async fn open_aws_credentials(
    store: &dyn Store,
    sealer: &secrets::Sealer,
    stored: Vec<stratus_store::AwsCredentialRecord>,
) -> anyhow::Result<Vec<stratus_store::AwsCredentialRecord>> {
    let mut opened = Vec::with_capacity(stored.len());
    for mut credential in stored {
        match sealer.open(&credential.access_key_id, &credential.secret) {
            Ok((secret, in_the_clear)) => {
                if in_the_clear {
                    let sealed = sealer.seal(&credential.access_key_id, &secret)?;
                    store
                        .set_aws_secret(&credential.access_key_id, &sealed)
                        .await
                        .context("cannot seal a stored AWS secret")?;
                }
                credential.secret = secret;
                opened.push(credential);
            }
            Err(err) => tracing::error!(
                access_key_id = %credential.access_key_id,
                app = %credential.app,
                "{err}; this credential cannot sign requests until the original {} is back, or it is replaced",
                secrets::KEY_FILE
            ),
        }
    }
    Ok(opened)
}

/// The file that holds the disk space kept in reserve.
pub const RESERVE_FILE: &str = "reserve";
/// Below this much free space at start, the reserve is given up.
const MIN_FREE_AT_START: u64 = 16 * 1024 * 1024;

/// The file in the data directory that names the store it was used with.
pub const STORE_ID_FILE: &str = "store.id";

/// Refuses to start on a store that is not the one this data directory was
/// used with: emptied (a zero-length file), removed (made anew) or
/// replaced by another. `accept_empty` takes the store as it is, and the
/// data directory remembers it from then on.
/// Which store a node keeps its state in, and where.
pub(crate) enum StoreKind {
    /// The embedded default: a SQLite file in the data directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its URL, that several nodes may share.
    Postgres(String),
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKind::Sqlite(path) => write!(f, "the database {}", path.display()),
            StoreKind::Postgres(url) => write!(f, "the PostgreSQL database {}", redact(url)),
        }
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            match user.split_once(':') {
                Some((name, _)) => format!("{}{name}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Opens the store `--store` names, or SQLite in the data directory.
async fn open_store(
    config: &ServerConfig,
    data_dir: &Path,
) -> anyhow::Result<(
    Arc<dyn Store>,
    StoreKind,
    Option<Arc<dyn stratus_store::Shared>>,
)> {
    match config.store.as_deref() {
        None => {
            let path = data_dir.join("stratus.db");
            let store = SqliteStore::open(&path)
                .context("cannot open the database in the data directory")?;
            Ok((Arc::new(store), StoreKind::Sqlite(path), None))
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let kind = StoreKind::Postgres(url.to_owned());
            let store = PostgresStore::connect(url, config.store_pool_size)
                .await
                .with_context(|| format!("cannot open {kind}"))?;
            tracing::info!(store = %kind, "platform state is kept in PostgreSQL");
            let store = Arc::new(store);
            Ok((store.clone(), kind, Some(store)))
        }
        Some(other) => anyhow::bail!(
            "--store {other:?} is not a store this server knows: give postgres://USER@HOST/DB, or leave it out for SQLite in the data directory"
        ),
    }
}

async fn check_store_identity(
    store: &dyn Store,
    kind: &StoreKind,
    data_dir: &Path,
    accept: bool,
) -> anyhow::Result<()> {
    let path = data_dir.join(STORE_ID_FILE);
    let candidate = token::random_hex(16)
        .map_err(|err| anyhow::anyhow!("no randomness for the store's identity: {err}"))?;
    let identity = store
        .meta_or_insert(MetaKey::Identity, &candidate)
        .await
        .context("cannot read the store's identity")?;
    let fresh = identity == candidate;
    let remembered = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_owned()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    match remembered {
        Some(remembered) if remembered == identity => return Ok(()),
        Some(_) if !accept => {
            let what = if fresh {
                "is new and empty, but this data directory was used with another one: the database was removed, emptied or replaced"
            } else {
                "is not the one this data directory was used with: the database was replaced"
            };
            anyhow::bail!(
                "{kind} {what}. Put the right database back (or `stratus restore` a backup) and start again; or start with --accept-empty-store to go on with this database, and lose what the other held"
            );
        }
        Some(_) => tracing::warn!(
            "--accept-empty-store: going on with a database this data directory was not used with"
        ),
        None => {}
    }
    write_private(&path, identity.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file and a
/// rename, so the file is whole or absent.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
