//! Validation of the raw manifest and construction of the resolved form.

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::time::Duration;

use crate::error::{ManifestError, ManifestErrors, closest, expected_for};
use crate::locate::line_of;
use crate::raw::{
    EnvValue, RawBuild, RawCommand, RawCors, RawEgress, RawFunction, RawHttp, RawManifest,
    RawNetwork, RawQueue, RawService, RawTrigger,
};
use crate::spec::{
    AppSpec, BuildCommand, CatchUp, CloudEventsTrigger, CorsSpec, DatabaseTrigger, Destination,
    DocumentChange, Egress, EventFormat, FunctionSpec, HttpAuth, HttpSpec, LogFormat, LogsTrigger,
    Network, QueueSpec, QueueTrigger, Readiness, Runtime, ScheduleTrigger, ServiceCommand,
    ServiceProtocol, ServiceSpec, StorageChange, StorageTrigger, Trigger, is_valid_name,
};

pub const DEFAULT_MEMORY_MB: u32 = 128;
pub const MIN_MEMORY_MB: u32 = 64;
pub const MAX_MEMORY_MB: u32 = 10240;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_MAX_INSTANCES: u32 = 100;
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(1);
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(24 * 3600);
pub const MAX_MAX_INSTANCES: u32 = 1000;
/// Most events one function instance may run at once.
pub const MAX_FUNCTION_CONCURRENCY: u32 = 1000;
pub const MAX_RETRIES: u32 = 10;
pub const SERVICE_DEFAULT_MEMORY_MB: u32 = 512;
pub const SERVICE_DEFAULT_CONCURRENCY: u32 = 100;
pub const SERVICE_DEFAULT_MAX_INSTANCES: u32 = 10;
pub const SERVICE_DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
pub const SERVICE_DEFAULT_QUEUE_DEPTH: u32 = 1000;
pub const SERVICE_DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(30);
pub const SERVICE_DEFAULT_READINESS_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_BATCH_SIZE: u32 = 10;
pub const MAX_BATCH_SIZE: u32 = 100;
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(300);
/// How long a `logs` trigger gathers lines, unless given.
pub const DEFAULT_LOGS_WINDOW: Duration = Duration::from_secs(1);
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
pub const MAX_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(4 * 24 * 3600);
pub const MAX_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

const RUNTIMES_HINT: &str = "runtimes are python3, nodejs, provided, or with a version: python3.12, nodejs22 (`stratus runtimes` lists the server's)";

pub(crate) const NAME_HINT: &str =
    "use lowercase letters, digits and '-', starting with a letter, at most 40 characters";

/// Environment variables the platform sets itself; a manifest may not override them.
const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_EXECUTION_ENV",
    "STRATUS_API_URL",
    "STRATUS_API_TOKEN",
    "STRATUS_APP",
    // The app's own AWS credential and where its buckets are (the S3 API).
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL_S3",
];

pub(crate) struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    pub(crate) errors: Vec<ManifestError>,
}

impl Checker<'_> {
    pub(crate) fn error(&mut self, key: String, message: String, hint: Option<String>) {
        self.errors.push(ManifestError {
            file: self.file.to_owned(),
            line: line_of(self.text, &key),
            key,
            message,
            hint,
        });
    }
}

pub(crate) fn resolve(file: &str, text: &str, raw: RawManifest) -> Result<AppSpec, ManifestErrors> {
    let mut c = Checker {
        file,
        text,
        errors: Vec::new(),
    };

    if let Some(version) = raw.version
        && version != 1
    {
        c.error(
            "version".into(),
            format!("manifest version {version} is not supported"),
            Some(
                "this stratus reads manifest version 1; write `version: 1` or leave it out".into(),
            ),
        );
    }
    if !is_valid_name(&raw.app) {
        c.error(
            "app".into(),
            format!("invalid application name {:?}", raw.app),
            Some(NAME_HINT.into()),
        );
    } else if crate::RESERVED_APP_NAMES.contains(&raw.app.as_str()) {
        c.error(
            "app".into(),
            format!("the application name {:?} is reserved", raw.app),
            Some(if raw.app == "s3" {
                "s3.DOMAIN on the public listener is the S3 API's own host; choose another name"
                    .to_owned()
            } else {
                format!(
                    "/{} on the public listener is the node's own (load balancers' probes and metrics); choose another name",
                    raw.app
                )
            }),
        );
    }
    if raw.functions.is_empty() && raw.services.is_empty() {
        c.error(
            "functions".into(),
            "the application declares no functions and no services".into(),
            Some("add one under `functions:`; `stratus init NAME` writes an example".into()),
        );
    }
    for name in raw.services.keys() {
        if raw.functions.contains_key(name) {
            c.error(
                format!("services.{name}"),
                format!("{name} is both a function and a service"),
                Some("functions and services share one set of names; rename one".into()),
            );
        }
    }

    let mut functions = BTreeMap::new();
    for (name, f) in raw.functions {
        if let Some(spec) = resolve_function(&mut c, &name, f) {
            functions.insert(name, spec);
        }
    }
    let mut services = BTreeMap::new();
    for (name, s) in raw.services {
        if let Some(spec) = resolve_service(&mut c, &name, s) {
            services.insert(name, spec);
        }
    }

    let mut queues = BTreeMap::new();
    for (name, q) in raw.queues {
        if let Some(spec) = resolve_queue(&mut c, &name, q.unwrap_or_default()) {
            queues.insert(name, spec);
        }
    }

    check_builds(&mut c, &functions, &services);
    check_routes(&mut c, &functions, &services);
    check_destinations(&mut c, &functions, &queues);
    check_queue_triggers(&mut c, &functions, &queues);
    check_log_triggers(&mut c, &functions, &services);
    let service_names: Vec<&str> = services.keys().map(String::as_str).collect();
    let alerts =
        crate::alerts::resolve_alerts(&mut c, raw.alerts, &functions, &service_names, &queues);
    let buckets = crate::buckets::resolve_buckets(&mut c, &raw.app, raw.buckets);
    check_storage_triggers(&mut c, &functions, &buckets);
    let collections = crate::collections::resolve_collections(&mut c, raw.collections);
    check_database_triggers(&mut c, &functions, &collections);

    if c.errors.is_empty() {
        Ok(AppSpec {
            name: raw.app,
            functions,
            services,
            queues,
            alerts,
            buckets,
            collections,
        })
    } else {
        c.errors.sort_by_key(|e| e.line);
        Err(ManifestErrors(c.errors))
    }
}

fn resolve_function(c: &mut Checker<'_>, name: &str, f: RawFunction) -> Option<FunctionSpec> {
    let key = |field: &str| format!("functions.{name}.{field}");
    let before = c.errors.len();

    if !is_valid_name(name) {
        c.error(
            format!("functions.{name}"),
            format!("invalid function name {name:?}"),
            Some(NAME_HINT.into()),
        );
    }

    let parsed = Runtime::parse_versioned(&f.runtime);
    let runtime = parsed.as_ref().map(|(r, _)| *r);
    let runtime_version = parsed.and_then(|(_, v)| v);
    if runtime.is_none() {
        let names: Vec<&str> = Runtime::ALL.iter().map(|r| r.as_str()).collect();
        let hint = match closest(&f.runtime, &names).or_else(|| alias(&f.runtime)) {
            Some(best) => format!("did you mean `{best}`? {RUNTIMES_HINT}"),
            None => RUNTIMES_HINT.into(),
        };
        c.error(
            key("runtime"),
            format!("unknown runtime {:?}", f.runtime),
            Some(hint),
        );
    }

    let handler = match (runtime, f.handler) {
        (Some(Runtime::Provided), handler) => handler.unwrap_or_else(|| "bootstrap".into()),
        (Some(runtime), Some(handler)) => {
            if !valid_handler(&handler) {
                c.error(
                    key("handler"),
                    format!(
                        "handler {handler:?} is not of the form {}",
                        handler_form(runtime)
                    ),
                    Some(format!(
                        "for example `handler: {}`",
                        handler_example(runtime)
                    )),
                );
            }
            handler
        }
        (Some(runtime), None) => {
            c.error(
                key("handler"),
                format!("a {runtime} function needs a handler"),
                Some(format!("add `handler: {}`", handler_example(runtime))),
            );
            String::new()
        }
        (None, handler) => handler.unwrap_or_default(),
    };

    let code = match normalise_code(f.code.as_deref().unwrap_or(".")) {
        Ok(code) => code,
        Err(message) => {
            c.error(
                key("code"),
                message,
                Some("give a directory inside the application, relative to stratus.yaml, e.g. `code: ./greet`".into()),
            );
            String::new()
        }
    };

    let memory_mb = f.memory.unwrap_or(DEFAULT_MEMORY_MB);
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&memory_mb) {
        c.error(
            key("memory"),
            format!("memory {memory_mb} MiB is out of range"),
            expected_for("memory").map(str::to_owned),
        );
    }

    let timeout = match f.timeout.as_deref().map(humantime::parse_duration) {
        None => DEFAULT_TIMEOUT,
        Some(Ok(t)) if !t.is_zero() && t <= MAX_TIMEOUT => t,
        Some(Ok(t)) => {
            c.error(
                key("timeout"),
                format!("timeout {} is out of range", humantime::format_duration(t)),
                Some("a timeout is more than 0 and at most 15m".into()),
            );
            DEFAULT_TIMEOUT
        }
        Some(Err(err)) => {
            c.error(
                key("timeout"),
                format!(
                    "invalid duration {:?}: {err}",
                    f.timeout.unwrap_or_default()
                ),
                expected_for("timeout").map(str::to_owned),
            );
            DEFAULT_TIMEOUT
        }
    };

    let max_instances = f.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES);
    if !(1..=MAX_MAX_INSTANCES).contains(&max_instances) {
        c.error(
            key("max_instances"),
            format!("max_instances {max_instances} is out of range"),
            expected_for("max_instances").map(str::to_owned),
        );
    }

    let min_instances = f.min_instances.unwrap_or(0);
    if min_instances > max_instances {
        c.error(
            key("min_instances"),
            format!("min_instances {min_instances} is more than max_instances {max_instances}"),
            expected_for("min_instances").map(str::to_owned),
        );
    }

    let concurrency = f.concurrency.unwrap_or(1);
    if !(1..=MAX_FUNCTION_CONCURRENCY).contains(&concurrency) {
        c.error(
            key("concurrency"),
            format!("concurrency {concurrency} is out of range"),
            Some(format!(
                "events in flight per instance, from 1 (the default) to {MAX_FUNCTION_CONCURRENCY}"
            )),
        );
    }

    let keep_alive = match f.keep_alive.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if (MIN_KEEP_ALIVE..=MAX_KEEP_ALIVE).contains(&d) => Some(d),
        Some(Ok(d)) => {
            c.error(
                key("keep_alive"),
                format!(
                    "keep_alive {} is out of range",
                    humantime::format_duration(d)
                ),
                expected_for("keep_alive").map(str::to_owned),
            );
            None
        }
        Some(Err(err)) => {
            c.error(
                key("keep_alive"),
                format!(
                    "invalid duration {:?}: {err}",
                    f.keep_alive.unwrap_or_default()
                ),
                expected_for("keep_alive").map(str::to_owned),
            );
            None
        }
    };

    let network = network(c, &key("network"), f.network, false);

    let mut env = BTreeMap::new();
    let mut secret_env = BTreeMap::new();
    for (var, value) in f.env {
        if !valid_env_name(&var) {
            c.error(
                format!("functions.{name}.env.{var}"),
                format!("invalid environment variable name {var:?}"),
                Some("use letters, digits and '_', not starting with a digit".into()),
            );
        } else if RESERVED_ENV.contains(&var.as_str()) {
            c.error(
                format!("functions.{name}.env.{var}"),
                format!("{var} is set by the platform and cannot be overridden"),
                Some("remove it or choose another name".into()),
            );
        }
        let key = format!("functions.{name}.env.{var}");
        put_env(c, key, var, value, &mut env, &mut secret_env);
    }
    check_env_size(c, &format!("functions.{name}.env"), &env);

    let http = f
        .http
        .map(|raw| resolve_http(c, &format!("functions.{name}"), raw));

    let retries = f.retries.unwrap_or(crate::spec::DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        c.error(
            key("retries"),
            format!("retries {retries} is out of range"),
            Some(format!(
                "further attempts after a failed one, from 0 to {MAX_RETRIES}"
            )),
        );
    }
    let max_event_age = duration(
        c,
        &key("max_event_age"),
        f.max_event_age.as_deref(),
        crate::spec::DEFAULT_MAX_EVENT_AGE,
        (Duration::from_secs(60), crate::spec::DEFAULT_MAX_EVENT_AGE),
    );

    let events = f
        .events
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, raw)| resolve_trigger(c, &format!("functions.{name}.events.{i}"), raw))
        .collect();

    let log_format = match f
        .log_format
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            c.error(
                key("log_format"),
                format!("unknown log format {other:?}"),
                expected_for("log_format").map(str::to_owned),
            );
            LogFormat::Text
        }
    };
    let log_level = f.log_level.map(|l| l.to_ascii_uppercase());
    let build = resolve_build(c, &key("build"), f.build, runtime);
    if let Some(level) = &log_level
        && !crate::spec::LOG_LEVELS.contains(&level.as_str())
    {
        c.error(
            key("log_level"),
            format!("unknown log level {level:?}"),
            expected_for("log_level").map(str::to_owned),
        );
    }

    (c.errors.len() == before).then(|| FunctionSpec {
        name: name.to_owned(),
        runtime: runtime.expect("checked above"),
        runtime_version,
        handler,
        code,
        memory_mb,
        timeout,
        env,
        secret_env,
        max_instances,
        min_instances,
        concurrency,
        keep_alive,
        network,
        http,
        retries,
        max_event_age,
        on_success: f.on_success,
        on_failure: f.on_failure,
        events,
        callable: f.callable.unwrap_or(false),
        log_format,
        log_level,
        build,
    })
}

/// One entry of `events:`: exactly one of `schedule`, `queue` and
/// `cloudevents`, with only the settings of its kind.
fn resolve_trigger(c: &mut Checker<'_>, owner: &str, t: RawTrigger) -> Option<Trigger> {
    let key = |field: &str| format!("{owner}.{field}");
    let kinds = [
        ("schedule", t.schedule.is_some()),
        ("queue", t.queue.is_some()),
        ("cloudevents", t.cloudevents.is_some()),
        ("logs", t.logs.is_some()),
        ("storage", t.storage.is_some()),
        ("database", t.database.is_some()),
    ];
    let given: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
    if given.len() != 1 {
        c.error(
            owner.to_owned(),
            if given.is_empty() {
                "this trigger names no source".to_owned()
            } else {
                format!("this trigger names {} sources", given.join(" and "))
            },
            Some("give each entry of `events:` one of `schedule:`, `queue:`, `cloudevents:`, `logs:`, `storage:` or `database:`; list several entries for several sources".into()),
        );
        return None;
    }
    let stray = |c: &mut Checker<'_>, field: &str, set: bool, kind: &str| {
        if set {
            c.error(
                key(field),
                format!("`{field}` does not apply to a {} trigger", given[0]),
                Some(format!(
                    "`{field}` is a setting of `{kind}` triggers; remove it"
                )),
            );
        }
    };
    let before = c.errors.len();
    if given[0] != "schedule" {
        stray(c, "timezone", t.timezone.is_some(), "schedule");
        stray(c, "catch_up", t.catch_up.is_some(), "schedule");
    }
    if !matches!(given[0], "queue" | "logs") {
        stray(c, "batch_size", t.batch_size.is_some(), "queue");
        stray(c, "batch_window", t.batch_window.is_some(), "queue");
    }
    let format = match (given[0], t.format.as_deref()) {
        (_, None | Some("cloudevents")) => EventFormat::CloudEvents,
        ("schedule", Some("eventbridge")) => EventFormat::EventBridge,
        ("schedule", Some("scf")) => EventFormat::Scf,
        ("queue", Some("sqs")) => EventFormat::Sqs,
        ("storage", Some("s3")) => EventFormat::S3,
        (kind, Some(other)) => {
            c.error(
                key("format"),
                format!("a {kind} trigger has no format {other:?}"),
                expected_for("format").map(str::to_owned),
            );
            EventFormat::CloudEvents
        }
    };
    let trigger = if let Some(expression) = t.schedule {
        let timezone = t.timezone.unwrap_or_else(|| "UTC".to_owned());
        match crate::schedule::Schedule::parse(&expression, &timezone) {
            Ok(_) => {}
            Err(err @ crate::schedule::ScheduleError::Zone(_)) => c.error(
                key("timezone"),
                err.to_string(),
                expected_for("timezone").map(str::to_owned),
            ),
            Err(err) => c.error(
                key("schedule"),
                err.to_string(),
                expected_for("schedule").map(str::to_owned),
            ),
        }
        let catch_up = match t.catch_up.as_deref() {
            None | Some("skip") => CatchUp::Skip,
            Some("once") => CatchUp::Once,
            Some(other) => {
                c.error(
                    key("catch_up"),
                    format!("unknown catch-up policy {other:?}"),
                    expected_for("catch_up").map(str::to_owned),
                );
                CatchUp::Skip
            }
        };
        Trigger::Schedule(ScheduleTrigger {
            expression: expression.trim().to_owned(),
            timezone,
            catch_up,
            format,
        })
    } else if let Some(queue) = t.queue {
        let batch_size = t.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            c.error(
                key("batch_size"),
                format!("batch_size {batch_size} is out of range"),
                expected_for("batch_size").map(str::to_owned),
            );
        }
        let batch_window = duration(
            c,
            &key("batch_window"),
            t.batch_window.as_deref(),
            Duration::ZERO,
            (Duration::ZERO, MAX_BATCH_WINDOW),
        );
        Trigger::Queue(QueueTrigger {
            queue,
            batch_size,
            batch_window,
            format,
        })
    } else if let Some(storage) = t.storage {
        let on = match storage.on.map(|o| o.into_vec()) {
            None => vec![StorageChange::Created, StorageChange::Deleted],
            Some(names) => {
                let mut on = Vec::new();
                for name in names {
                    match name.as_str() {
                        "created" => on.push(StorageChange::Created),
                        "deleted" => on.push(StorageChange::Deleted),
                        other => c.error(
                            key("storage.on"),
                            format!("unknown change {other:?}"),
                            Some("objects are `created` (put, copied or uploaded in parts) or `deleted`".into()),
                        ),
                    }
                }
                if on.is_empty() {
                    c.error(
                        key("storage.on"),
                        "the trigger names no change".into(),
                        Some("give `on: [created]`, `[deleted]` or both".into()),
                    );
                }
                on.dedup();
                on
            }
        };
        Trigger::Storage(StorageTrigger {
            bucket: storage.bucket,
            on,
            prefix: storage.prefix.unwrap_or_default(),
            suffix: storage.suffix.unwrap_or_default(),
            format,
        })
    } else if let Some(database) = t.database {
        let on = match database.on.map(|o| o.into_vec()) {
            None => vec![
                DocumentChange::Created,
                DocumentChange::Updated,
                DocumentChange::Deleted,
            ],
            Some(names) => {
                let mut on = Vec::new();
                for name in names {
                    match name.as_str() {
                        "created" => on.push(DocumentChange::Created),
                        "updated" => on.push(DocumentChange::Updated),
                        "deleted" => on.push(DocumentChange::Deleted),
                        other => c.error(
                            key("database.on"),
                            format!("unknown change {other:?}"),
                            Some("documents are `created`, `updated` or `deleted`".into()),
                        ),
                    }
                }
                if on.is_empty() {
                    c.error(
                        key("database.on"),
                        "the trigger names no change".into(),
                        Some("give `on: [created]`, `[created, updated, deleted]` or another list of them".into()),
                    );
                }
                on.sort_by_key(|change| *change as u8);
                on.dedup();
                on
            }
        };
        Trigger::Database(DatabaseTrigger {
            collection: database.collection,
            on,
        })
    } else if let Some(logs) = t.logs {
        let batch_size = t.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            c.error(
                key("batch_size"),
                format!("batch_size {batch_size} is out of range"),
                expected_for("batch_size").map(str::to_owned),
            );
        }
        if logs.pattern.is_empty() {
            c.error(
                key("logs.pattern"),
                "the pattern is empty".into(),
                Some("give the text the lines contain, such as `ERROR`".into()),
            );
        }
        let batch_window = duration(
            c,
            &key("batch_window"),
            t.batch_window.as_deref(),
            DEFAULT_LOGS_WINDOW,
            (Duration::from_millis(100), MAX_BATCH_WINDOW),
        );
        Trigger::Logs(LogsTrigger {
            pattern: logs.pattern,
            from: logs.from.map(|f| f.into_vec()).unwrap_or_default(),
            batch_size,
            batch_window,
        })
    } else {
        let filters = t.cloudevents.expect("one source is given");
        let types = filters.types.map(|t| t.into_vec()).unwrap_or_default();
        let sources = filters.source.map(|s| s.into_vec()).unwrap_or_default();
        for (field, patterns) in [("type", &types), ("source", &sources)] {
            if patterns
                .iter()
                .any(|p| p.is_empty() || p.trim_end_matches('*').contains('*'))
            {
                c.error(
                    key(&format!("cloudevents.{field}")),
                    format!("invalid {field} filter {patterns:?}"),
                    Some(
                        "give exact values, or a prefix ending in `*` such as `com.example.*`"
                            .into(),
                    ),
                );
            }
        }
        Trigger::CloudEvents(CloudEventsTrigger { types, sources })
    };
    (c.errors.len() == before).then_some(trigger)
}

/// A `logs` trigger reads lines of the app's other functions and
/// services: one of its own would feed itself.
fn check_log_triggers(
    c: &mut Checker<'_>,
    functions: &BTreeMap<String, FunctionSpec>,
    services: &BTreeMap<String, ServiceSpec>,
) {
    for (name, f) in functions {
        for (i, trigger) in f.events.iter().enumerate() {
            let Trigger::Logs(t) = trigger else { continue };
            for source in &t.from {
                let key = format!("functions.{name}.events.{i}.logs.from");
                if source == name {
                    c.error(
                        key,
                        format!("{name} would receive its own lines"),
                        Some("name the other functions and services whose lines it reads".into()),
                    );
                } else if !functions.contains_key(source) && !services.contains_key(source) {
                    let names: Vec<&str> = functions
                        .keys()
                        .chain(services.keys())
                        .map(String::as_str)
                        .filter(|n| n != name)
                        .collect();
                    c.error(
                        key,
                        format!("the app has no function or service {source:?}"),
                        Some(format!("its others: {}", names.join(", "))),
                    );
                }
            }
        }
    }
}

fn resolve_queue(c: &mut Checker<'_>, name: &str, q: RawQueue) -> Option<QueueSpec> {
    let key = |field: &str| format!("queues.{name}.{field}");
    let before = c.errors.len();
    if !is_valid_name(name) {
        c.error(
            format!("queues.{name}"),
            format!("invalid queue name {name:?}"),
            Some(NAME_HINT.into()),
        );
    }
    let visibility_timeout = duration(
        c,
        &key("visibility_timeout"),
        q.visibility_timeout.as_deref(),
        DEFAULT_VISIBILITY_TIMEOUT,
        (Duration::from_secs(1), MAX_VISIBILITY_TIMEOUT),
    );
    let retention = duration(
        c,
        &key("retention"),
        q.retention.as_deref(),
        DEFAULT_RETENTION,
        (Duration::from_secs(60), MAX_RETENTION),
    );
    (c.errors.len() == before).then(|| QueueSpec {
        name: name.to_owned(),
        visibility_timeout,
        retention,
    })
}

/// A `queue` trigger names a declared queue, which has one consumer, and
/// whose visibility timeout covers the consumer's timeout (otherwise a
/// batch still being handled would be delivered a second time).
fn check_queue_triggers(
    c: &mut Checker<'_>,
    functions: &BTreeMap<String, FunctionSpec>,
    queues: &BTreeMap<String, QueueSpec>,
) {
    let mut consumers: BTreeMap<&str, &str> = BTreeMap::new();
    for f in functions.values() {
        for (i, trigger) in f.events.iter().enumerate() {
            let Trigger::Queue(t) = trigger else { continue };
            let key = format!("functions.{}.events.{i}.queue", f.name);
            let Some(queue) = queues.get(&t.queue) else {
                let names: Vec<&str> = queues.keys().map(String::as_str).collect();
                c.error(
                    key,
                    format!("there is no queue {:?} in this app", t.queue),
                    Some(match closest(&t.queue, &names) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => format!(
                            "declare it: `queues: {{ {}: {{ visibility_timeout: 30s }} }}` at the top level",
                            t.queue
                        ),
                    }),
                );
                continue;
            };
            if let Some(other) = consumers.insert(&t.queue, &f.name) {
                c.error(
                    key,
                    format!("queue {} already has a consumer, function {other}", t.queue),
                    Some("a queue has one consumer; declare a queue for each function that should see the messages".into()),
                );
            } else if queue.visibility_timeout < f.timeout {
                c.error(
                    format!("queues.{}.visibility_timeout", t.queue),
                    format!(
                        "the visibility timeout {} is shorter than the timeout {} of its consumer, function {}",
                        humantime::format_duration(queue.visibility_timeout),
                        humantime::format_duration(f.timeout),
                        f.name
                    ),
                    Some("a batch would be delivered again while it is still being handled; raise `visibility_timeout` or lower the function's `timeout`".into()),
                );
            }
        }
    }
}

/// Each storage trigger names a bucket of the app.
fn check_storage_triggers(
    c: &mut Checker<'_>,
    functions: &BTreeMap<String, FunctionSpec>,
    buckets: &BTreeMap<String, crate::buckets::BucketSpec>,
) {
    for f in functions.values() {
        for (i, trigger) in f.events.iter().enumerate() {
            let Trigger::Storage(t) = trigger else {
                continue;
            };
            if !buckets.contains_key(&t.bucket) {
                let names: Vec<&str> = buckets.keys().map(String::as_str).collect();
                c.error(
                    format!("functions.{}.events.{i}.storage.bucket", f.name),
                    format!("there is no bucket {:?} in this app", t.bucket),
                    Some(match closest(&t.bucket, &names) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => format!(
                            "declare it: `buckets: {{ {}: {{}} }}` at the top level (a storage trigger names the bucket as the manifest does, not its S3 name)",
                            t.bucket
                        ),
                    }),
                );
            }
        }
    }
}

/// Each database trigger names a collection of the app.
fn check_database_triggers(
    c: &mut Checker<'_>,
    functions: &BTreeMap<String, FunctionSpec>,
    collections: &BTreeMap<String, crate::collections::CollectionSpec>,
) {
    for f in functions.values() {
        for (i, trigger) in f.events.iter().enumerate() {
            let Trigger::Database(t) = trigger else {
                continue;
            };
            if !collections.contains_key(&t.collection) {
                let names: Vec<&str> = collections.keys().map(String::as_str).collect();
                c.error(
                    format!("functions.{}.events.{i}.database.collection", f.name),
                    format!("there is no collection {:?} in this app", t.collection),
                    Some(match closest(&t.collection, &names) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => format!(
                            "declare it: `collections: {{ {}: {{}} }}` at the top level",
                            t.collection
                        ),
                    }),
                );
            }
        }
    }
}

/// The methods a route may name.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// `http:` of the function or service at `owner` (`functions.NAME`).
fn resolve_http(c: &mut Checker<'_>, owner: &str, raw: RawHttp) -> HttpSpec {
    let key = |field: &str| format!("{owner}.http.{field}");
    let paths = raw.path.map(|p| p.into_vec()).unwrap_or_default();
    if paths.is_empty() {
        c.error(
            key("path"),
            "`http:` needs at least one route".into(),
            Some("add `path: /api/*` (or a list of paths) under `http:`".into()),
        );
    }
    for path in &paths {
        if let Err(err) = stratus_gateway::route::Pattern::parse(path) {
            c.error(
                key("path"),
                err.to_string(),
                expected_for("path").map(str::to_owned),
            );
        }
    }
    let methods = methods(c, &key("methods"), raw.methods.map(|m| m.into_vec()));
    let auth = match raw.auth.as_deref() {
        None | Some("none") => HttpAuth::None,
        Some("key") => HttpAuth::Key,
        Some(other) => {
            c.error(
                key("auth"),
                format!("unknown auth mode {other:?}"),
                expected_for("auth").map(str::to_owned),
            );
            HttpAuth::None
        }
    };
    let cors = raw
        .cors
        .map(|cors| resolve_cors(c, &format!("{owner}.http.cors"), cors));
    let strip_prefix = raw.strip_prefix.unwrap_or(false);
    if strip_prefix {
        for path in &paths {
            let literal = path
                .strip_suffix("/*")
                .filter(|l| !l.is_empty() && !l.contains(['{', '*']));
            if literal.is_none() {
                c.error(
                    key("strip_prefix"),
                    format!("route {path} has no literal part before a trailing `/*` to strip"),
                    Some("strip_prefix needs routes such as `/api/*`; give this one a route of its own without it".into()),
                );
            }
        }
    }
    HttpSpec {
        paths,
        methods,
        auth,
        cors,
        streaming: raw.streaming.unwrap_or(false),
        strip_prefix,
    }
}

/// Upper-cases and checks a method list; `ANY` or `*` (alone) means every method.
fn methods(c: &mut Checker<'_>, key: &str, given: Option<Vec<String>>) -> Vec<String> {
    let given = given.unwrap_or_default();
    if given.len() == 1 && matches!(given[0].as_str(), "ANY" | "any" | "*") {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for method in given {
        let upper = method.to_ascii_uppercase();
        if !METHODS.contains(&upper.as_str()) {
            c.error(
                key.to_owned(),
                format!("unknown HTTP method {method:?}"),
                expected_for("methods").map(str::to_owned),
            );
        } else if !out.contains(&upper) {
            out.push(upper);
        }
    }
    out
}

/// `cors:` at the key path `at`.
pub(crate) fn resolve_cors(c: &mut Checker<'_>, at: &str, raw: RawCors) -> CorsSpec {
    let key = |field: &str| format!("{at}.{field}");
    let origins = raw.origins.map(|o| o.into_vec()).unwrap_or_default();
    if origins.is_empty() {
        c.error(
            key("origins"),
            "CORS needs the origins it allows".into(),
            expected_for("origins").map(str::to_owned),
        );
    }
    for origin in &origins {
        if origin != "*" && !valid_origin(origin) {
            c.error(
                key("origins"),
                format!("{origin:?} is not an origin"),
                expected_for("origins").map(str::to_owned),
            );
        }
    }
    let credentials = raw.credentials.unwrap_or(false);
    if credentials && origins.iter().any(|o| o == "*") {
        c.error(
            key("credentials"),
            "browsers refuse credentials with the origin `*`".into(),
            Some("list the origins that may send credentials, or set `credentials: false`".into()),
        );
    }
    let methods = methods(c, &key("methods"), raw.methods.map(|m| m.into_vec()));
    let mut headers = Vec::new();
    let mut expose_headers = Vec::new();
    for (field, given, out) in [
        ("headers", raw.headers, &mut headers),
        ("expose_headers", raw.expose_headers, &mut expose_headers),
    ] {
        for header in given.map(|h| h.into_vec()).unwrap_or_default() {
            if header.is_empty() || !header.bytes().all(is_token_byte) {
                c.error(
                    key(field),
                    format!("{header:?} is not a header name"),
                    Some("header names are letters, digits and `-`, e.g. `x-request-id`".into()),
                );
            } else {
                out.push(header.to_ascii_lowercase());
            }
        }
    }
    let max_age_secs = match raw.max_age.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) if d <= Duration::from_secs(24 * 3600) => Some(d.as_secs()),
        Some(Ok(_)) => {
            c.error(
                key("max_age"),
                "max_age is longer than 24h, which browsers ignore".into(),
                expected_for("max_age").map(str::to_owned),
            );
            None
        }
        Some(Err(err)) => {
            c.error(
                key("max_age"),
                format!("invalid duration: {err}"),
                expected_for("max_age").map(str::to_owned),
            );
            None
        }
    };
    CorsSpec {
        origins,
        credentials,
        methods,
        headers,
        expose_headers,
        max_age_secs,
    }
}

/// `scheme://host[:port]`, nothing after.
fn valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '@'])
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Routes of different functions and services must not overlap: which
/// one a request reaches would be a guess.
/// The paths the platform keeps for itself on every app's host.
pub const RESERVED_PATH: &str = "/_stratus/";

fn check_routes(
    c: &mut Checker<'_>,
    functions: &BTreeMap<String, FunctionSpec>,
    services: &BTreeMap<String, ServiceSpec>,
) {
    use stratus_gateway::route::{Pattern, Route, RouteError, RouteTable};

    let owners = functions
        .values()
        .filter_map(|f| Some(("function", "functions", &f.name, f.http.as_ref()?)))
        .chain(
            services
                .values()
                .map(|s| ("service", "services", &s.name, &s.http)),
        );
    let mut routes = Vec::new();
    for (kind, section, name, http) in owners {
        let before = routes.len();
        let methods = stratus_gateway::route::methods_from(&http.methods);
        for path in &http.paths {
            if path == RESERVED_PATH.trim_end_matches('/') || path.starts_with(RESERVED_PATH) {
                c.error(
                    format!("{section}.{name}.http.path"),
                    format!("{path} is under {RESERVED_PATH}, which the platform serves on every app's host (its client SDK and API)"),
                    Some("choose a path outside /_stratus/".into()),
                );
                continue;
            }
            if let Ok(pattern) = Pattern::parse(path) {
                routes.push(Route {
                    pattern,
                    methods: methods.clone(),
                    target: format!("of {kind} {name}"),
                });
            }
        }
        // The first owner whose routes overlap an earlier one's is named.
        if let Err(err @ RouteError::Overlap { .. }) = RouteTable::new(routes.clone()) {
            c.error(
                format!("{section}.{name}.http.path"),
                err.to_string(),
                Some("give each route a distinct path or distinct methods".into()),
            );
            routes.truncate(before);
        }
    }
}

/// `on_success` and `on_failure` name another function of the app, or
/// one of its queues.
fn check_destinations(
    c: &mut Checker<'_>,
    functions: &BTreeMap<String, FunctionSpec>,
    queues: &BTreeMap<String, QueueSpec>,
) {
    for f in functions.values() {
        for (field, to) in [("on_success", &f.on_success), ("on_failure", &f.on_failure)] {
            let Some(to) = to else { continue };
            let key = format!("functions.{}.{field}", f.name);
            if *to == f.name {
                c.error(
                    key,
                    format!("function {} cannot be its own destination", f.name),
                    Some("a destination is another function of the app; chaining a function to itself would never end".into()),
                );
            } else if functions.contains_key(to) && queues.contains_key(to) {
                c.error(
                    key,
                    format!("{to:?} is both a function and a queue of this app"),
                    Some("rename the queue or the function so the destination is clear".into()),
                );
            } else if !functions.contains_key(to) && !queues.contains_key(to) {
                let names: Vec<&str> = functions
                    .keys()
                    .chain(queues.keys())
                    .map(String::as_str)
                    .collect();
                c.error(
                    key,
                    format!("there is no function or queue {to:?} in this app"),
                    Some(match closest(to, &names) {
                        Some(best) => format!("did you mean `{best}`?"),
                        None => format!("name one of: {}", names.join(", ")),
                    }),
                );
            }
        }
    }
}

fn resolve_service(c: &mut Checker<'_>, name: &str, s: RawService) -> Option<ServiceSpec> {
    let owner = format!("services.{name}");
    let key = |field: &str| format!("{owner}.{field}");
    let before = c.errors.len();

    if !is_valid_name(name) {
        c.error(
            owner.clone(),
            format!("invalid service name {name:?}"),
            Some(NAME_HINT.into()),
        );
    }
    let code = match normalise_code(s.code.as_deref().unwrap_or(".")) {
        Ok(code) => code,
        Err(message) => {
            c.error(
                key("code"),
                message,
                Some("give a directory inside the application, relative to stratus.yaml, e.g. `code: ./web`".into()),
            );
            String::new()
        }
    };
    let mut runtime_version = None;
    let runtime = match s.runtime.as_deref() {
        None => None,
        Some(name) => match Runtime::parse_versioned(name) {
            Some((r @ (Runtime::Python3 | Runtime::Nodejs), version)) => {
                runtime_version = version;
                Some(r)
            }
            _ => {
                c.error(
                    key("runtime"),
                    format!("unknown service runtime {name:?}"),
                    Some("a service's runtime is python3 or nodejs (or with a version: python3.12, nodejs22): its dependencies are installed and its interpreter is on PATH".into()),
                );
                None
            }
        },
    };
    let build = resolve_build(c, &key("build"), s.build, runtime);
    let command = match s.command {
        None => None,
        Some(RawCommand::Exec(argv)) if argv.is_empty() || argv[0].is_empty() => {
            c.error(
                key("command"),
                "the command is empty".into(),
                Some(
                    "name a program and its arguments, e.g. `command: [\"node\", \"server.js\"]`"
                        .into(),
                ),
            );
            None
        }
        Some(RawCommand::Exec(argv)) => Some(ServiceCommand::Exec(argv)),
        Some(RawCommand::Shell(line)) if line.trim().is_empty() => {
            c.error(
                key("command"),
                "the command is empty".into(),
                Some("name a program and its arguments, e.g. `command: node server.js`".into()),
            );
            None
        }
        Some(RawCommand::Shell(line)) => Some(ServiceCommand::Shell(line)),
    };
    if s.port == Some(0) {
        c.error(
            key("port"),
            "port 0 is not a port".into(),
            Some("leave `port` out to have the platform choose one and pass it as $PORT".into()),
        );
    }
    let http = match s.http {
        Some(raw) => resolve_http(c, &owner, raw),
        None => HttpSpec {
            paths: vec!["/*".to_owned()],
            methods: Vec::new(),
            auth: HttpAuth::None,
            cors: None,
            streaming: false,
            strip_prefix: false,
        },
    };
    if http.streaming {
        c.error(
            key("http.streaming"),
            "a service's responses always stream".into(),
            Some("remove `streaming:`; it applies to functions".into()),
        );
    }
    let readiness = match s.readiness {
        None => Readiness {
            path: None,
            timeout: SERVICE_DEFAULT_READINESS_TIMEOUT,
        },
        Some(r) => {
            if let Some(path) = &r.path
                && (!path.starts_with('/') || path.contains(char::is_whitespace))
            {
                c.error(
                    key("readiness.path"),
                    format!("{path:?} is not a path"),
                    Some("a path starts with `/`, e.g. `path: /healthz`".into()),
                );
            }
            Readiness {
                path: r.path,
                timeout: duration(
                    c,
                    &key("readiness.timeout"),
                    r.timeout.as_deref(),
                    SERVICE_DEFAULT_READINESS_TIMEOUT,
                    (Duration::from_secs(1), Duration::from_secs(600)),
                ),
            }
        }
    };
    let concurrency = s.concurrency.unwrap_or(SERVICE_DEFAULT_CONCURRENCY);
    if !(1..=10_000).contains(&concurrency) {
        c.error(
            key("concurrency"),
            format!("concurrency {concurrency} is out of range"),
            Some("requests in flight per instance, from 1 to 10000".into()),
        );
    }
    let max_instances = s.max_instances.unwrap_or(SERVICE_DEFAULT_MAX_INSTANCES);
    if !(1..=MAX_MAX_INSTANCES).contains(&max_instances) {
        c.error(
            key("max_instances"),
            format!("max_instances {max_instances} is out of range"),
            expected_for("max_instances").map(str::to_owned),
        );
    }
    let min_instances = s.min_instances.unwrap_or(0);
    if min_instances > max_instances {
        c.error(
            key("min_instances"),
            format!("min_instances {min_instances} is more than max_instances {max_instances}"),
            expected_for("min_instances").map(str::to_owned),
        );
    }
    let memory_mb = s.memory.unwrap_or(SERVICE_DEFAULT_MEMORY_MB);
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&memory_mb) {
        c.error(
            key("memory"),
            format!("memory {memory_mb} MiB is out of range"),
            expected_for("memory").map(str::to_owned),
        );
    }
    let queue_depth = s.queue_depth.unwrap_or(SERVICE_DEFAULT_QUEUE_DEPTH);
    if !(1..=100_000).contains(&queue_depth) {
        c.error(
            key("queue_depth"),
            format!("queue_depth {queue_depth} is out of range"),
            Some("requests that may wait for capacity (and for an instance to start), from 1 to 100000".into()),
        );
    }
    let idle_timeout = duration(
        c,
        &key("idle_timeout"),
        s.idle_timeout.as_deref(),
        SERVICE_DEFAULT_IDLE_TIMEOUT,
        (MIN_KEEP_ALIVE, MAX_KEEP_ALIVE),
    );
    let drain_grace = duration(
        c,
        &key("drain_grace"),
        s.drain_grace.as_deref(),
        SERVICE_DEFAULT_DRAIN_GRACE,
        (Duration::ZERO, Duration::from_secs(3600)),
    );
    let mut env = BTreeMap::new();
    let mut secret_env = BTreeMap::new();
    for (var, value) in s.env {
        if !valid_env_name(&var) {
            c.error(
                format!("{owner}.env.{var}"),
                format!("invalid environment variable name {var:?}"),
                Some("use letters, digits and '_', not starting with a digit".into()),
            );
        } else if var == "PORT" {
            c.error(
                format!("{owner}.env.{var}"),
                "PORT is set by the platform".into(),
                Some("set `port:` on the service instead".into()),
            );
        }
        let key = format!("{owner}.env.{var}");
        put_env(c, key, var, value, &mut env, &mut secret_env);
    }
    check_env_size(c, &format!("{owner}.env"), &env);

    let network = network(c, &key("network"), s.network, true);
    let protocol = match s.protocol.as_deref() {
        None | Some("http1") | Some("http/1.1") => ServiceProtocol::Http1,
        Some("h2c") => ServiceProtocol::H2c,
        Some(other) => {
            c.error(
                key("protocol"),
                format!("unknown protocol {other:?}"),
                expected_for("protocol").map(str::to_owned),
            );
            ServiceProtocol::Http1
        }
    };
    if protocol == ServiceProtocol::H2c && readiness.path.is_some() {
        c.error(
            key("readiness.path"),
            "a readiness path is requested over HTTP/1.1, which an h2c service may not speak"
                .into(),
            Some("leave `readiness.path` out: the service is ready when its port accepts connections".into()),
        );
    }
    (c.errors.len() == before).then(|| ServiceSpec {
        name: name.to_owned(),
        code,
        command,
        port: s.port,
        http,
        readiness,
        concurrency,
        min_instances,
        max_instances,
        idle_timeout,
        memory_mb,
        queue_depth,
        drain_grace,
        access_log: s.access_log.unwrap_or(true),
        env,
        secret_env,
        network,
        protocol,
        runtime,
        runtime_version,
        build,
    })
}

/// The functions and services of one code directory build it alike (it is
/// built once), and none of them runs it on a language runtime.
fn check_builds(
    c: &mut Checker<'_>,
    functions: &BTreeMap<String, FunctionSpec>,
    services: &BTreeMap<String, ServiceSpec>,
) {
    let users = functions
        .values()
        .map(|f| {
            let runtime = (f.runtime != Runtime::Provided).then_some(f.runtime);
            (
                format!("functions.{}", f.name),
                &f.code,
                f.build.as_ref(),
                runtime,
            )
        })
        .chain(services.values().map(|s| {
            (
                format!("services.{}", s.name),
                &s.code,
                s.build.as_ref(),
                s.runtime,
            )
        }));
    let users: Vec<_> = users.collect();
    for (key, code, build, _) in &users {
        let Some(build) = build else { continue };
        for (other, other_code, other_build, runtime) in &users {
            if other_code != code || other == key {
                continue;
            }
            if let Some(runtime) = runtime {
                c.error(
                    format!("{key}.build"),
                    format!("code directory {code:?} is built by a command here, and {other} runs it on {runtime}"),
                    Some("give the built code a directory of its own".into()),
                );
            } else if other_build.is_some_and(|b| b != *build) && key < other {
                c.error(
                    format!("{key}.build"),
                    format!("code directory {code:?} is built differently by {other}"),
                    Some("a code directory is built once: give them the same `build:`, or each its own directory".into()),
                );
            }
        }
    }
}

/// `build:` of a function or service; `runtime` is the language runtime
/// it has, if any (which installs dependencies instead).
fn resolve_build(
    c: &mut Checker<'_>,
    key: &str,
    raw: Option<RawBuild>,
    runtime: Option<Runtime>,
) -> Option<BuildCommand> {
    let raw = raw?;
    if let Some(runtime @ (Runtime::Python3 | Runtime::Nodejs)) = runtime {
        c.error(
            key.to_owned(),
            format!("`build:` is for code without a language runtime; {runtime} code has its dependencies installed from its own files"),
            Some(match runtime {
                Runtime::Python3 => "remove `build:` and list the dependencies in requirements.txt (or pyproject.toml with uv.lock)".into(),
                _ => "remove `build:` and list the dependencies in package.json with its lock file".into(),
            }),
        );
        return None;
    }
    let command = raw.command.unwrap_or_default();
    if command.trim().is_empty() {
        c.error(
            format!("{key}.command"),
            "the build has no command".into(),
            Some("name the command that builds the code, e.g. `command: make` or `command: go build -o bootstrap .`".into()),
        );
    }
    let output = raw.output.map(|o| o.into_vec()).unwrap_or_default();
    if output.is_empty() {
        c.error(
            format!("{key}.output"),
            "the build names no output".into(),
            Some("name the files or directories it makes that instances run, e.g. `output: bootstrap`".into()),
        );
    }
    for path in &output {
        let plain = !path.is_empty()
            && Path::new(path)
                .components()
                .all(|part| matches!(part, Component::Normal(_)));
        if !plain {
            c.error(
                format!("{key}.output"),
                format!("{path:?} is not a path inside the code directory"),
                Some("give paths relative to the code directory, without `..` (e.g. `target/release/app`)".into()),
            );
        }
    }
    (!command.trim().is_empty() && !output.is_empty()).then_some(BuildCommand { command, output })
}

/// Most destinations one `network.outbound` list may name.
pub const MAX_DESTINATIONS: usize = 64;

/// `network:` of a function, or of a service (which the gateway must
/// reach, so never `none`).
fn network(c: &mut Checker<'_>, key: &str, raw: Option<RawNetwork>, service: bool) -> Network {
    let rules = match raw {
        None => return Network::Outbound,
        Some(RawNetwork::Mode(mode)) => match mode.as_str() {
            "outbound" => return Network::Outbound,
            "none" if !service => return Network::None,
            "none" => {
                c.error(
                    key.to_owned(),
                    "a service cannot have `network: none`: the gateway reaches it over the host's loopback".into(),
                    Some("leave it out, or narrow where it may connect: `network: { outbound: [HOST:PORT, ...] }`".into()),
                );
                return Network::Outbound;
            }
            other => {
                c.error(
                    key.to_owned(),
                    format!("unknown network mode {other:?}"),
                    expected_for("network").map(str::to_owned),
                );
                return Network::Outbound;
            }
        },
        Some(RawNetwork::Rules(rules)) => rules,
    };
    let RawEgress { outbound, loopback } = rules;
    let to = outbound.map(|list| {
        if list.len() > MAX_DESTINATIONS {
            c.error(
                format!("{key}.outbound"),
                format!("{} destinations; at most {MAX_DESTINATIONS} may be listed", list.len()),
                Some("name fewer hosts, e.g. with a `*.example.com:443` pattern".into()),
            );
        }
        let mut to: Vec<Destination> = list
            .iter()
            .filter_map(|entry| match parse_destination(entry) {
                Ok(dest) => Some(dest),
                Err(message) => {
                    c.error(
                        format!("{key}.outbound"),
                        format!("{entry:?}: {message}"),
                        Some("`HOST:PORT`: an IP address (`[::1]:80` for IPv6), a DNS name, or `*.example.com`, and a port, e.g. `api.example.com:443`".into()),
                    );
                    None
                }
            })
            .collect();
        to.sort();
        to.dedup();
        to
    });
    Network::Limited(Egress {
        to,
        // A list says what is reachable: loopback only when asked for.
        loopback: loopback.unwrap_or(false),
    })
}

/// `HOST:PORT` as [`Destination`] holds it.
fn parse_destination(entry: &str) -> Result<Destination, String> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or("an IPv6 address goes in brackets, then `:` and the port")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        (host.to_owned(), port)
    } else {
        let (host, port) = entry.rsplit_once(':').ok_or("no port: add `:PORT`")?;
        if host.contains(':') {
            return Err("an IPv6 address goes in brackets, e.g. `[2001:db8::1]:443`".into());
        }
        (host.trim_end_matches('.').to_ascii_lowercase(), port)
    };
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("{port:?} is not a port between 1 and 65535")),
        Ok(port) => port,
    };
    if host.parse::<std::net::IpAddr>().is_err() {
        let name = host.strip_prefix("*.").unwrap_or(&host);
        if !is_dns_name(name) {
            return Err(format!("{host:?} is not an IP address or a DNS name"));
        }
    }
    Ok(Destination { host, port })
}

/// Letters, digits and hyphens in labels of 1 to 63 characters, not
/// starting or ending with a hyphen, at most 253 in all.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A duration setting within `range`, or `default` when not given.
pub(crate) fn duration(
    c: &mut Checker<'_>,
    key: &str,
    given: Option<&str>,
    default: Duration,
    (min, max): (Duration, Duration),
) -> Duration {
    let Some(text) = given else { return default };
    match humantime::parse_duration(text) {
        Ok(d) if (min..=max).contains(&d) => d,
        Ok(_) => {
            c.error(
                key.to_owned(),
                format!("{text} is out of range"),
                Some(format!(
                    "give a duration from {} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                )),
            );
            default
        }
        Err(err) => {
            c.error(
                key.to_owned(),
                format!("invalid duration {text:?}: {err}"),
                Some("for example `30s`, `5m` or `1h`".into()),
            );
            default
        }
    }
}

fn alias(runtime: &str) -> Option<&'static str> {
    match runtime.to_ascii_lowercase().as_str() {
        r if r.starts_with("python") => Some("python3"),
        r if r.starts_with("node") => Some("nodejs"),
        r if r.starts_with("provided") || r == "custom" || r == "binary" => Some("provided"),
        _ => None,
    }
}

fn valid_handler(handler: &str) -> bool {
    match handler.rsplit_once('.') {
        Some((module, function)) => {
            !module.is_empty()
                && !function.is_empty()
                && !module.starts_with('/')
                && !module.split('/').any(|part| part == "..")
                && !handler.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

fn handler_form(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Python3 => "`module.function`",
        _ => "`file.export`",
    }
}

fn handler_example(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Python3 => "main.handler",
        _ => "index.handler",
    }
}

/// Refuses an environment larger than [`crate::MAX_ENV_BYTES`] in total.
fn check_env_size(c: &mut Checker<'_>, key: &str, env: &BTreeMap<String, String>) {
    let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > crate::MAX_ENV_BYTES {
        c.error(
            key.to_owned(),
            format!(
                "the environment is {bytes} bytes, more than the limit of {} (names and values together)",
                crate::MAX_ENV_BYTES
            ),
            Some("keep large values in files of the code directory and read them at start".into()),
        );
    }
}

/// Puts `var` in `env`, or (naming a secret) in `secrets`.
fn put_env(
    c: &mut Checker,
    key: String,
    var: String,
    value: EnvValue,
    env: &mut BTreeMap<String, String>,
    secrets: &mut BTreeMap<String, String>,
) {
    match value {
        EnvValue::Text(text) => {
            env.insert(var, text);
        }
        EnvValue::Secret(secret) => {
            if !crate::valid_secret_name(&secret) {
                c.error(
                    key,
                    format!("invalid secret name {secret:?}"),
                    Some(crate::SECRET_NAME_RULE.into()),
                );
            }
            secrets.insert(var, secret);
        }
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Normalises a code path: relative, inside the application, `/`-separated.
fn normalise_code(code: &str) -> Result<String, String> {
    let path = Path::new(code);
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => match part.to_str() {
                Some(part) => parts.push(part),
                None => return Err(format!("code path {code:?} is not valid UTF-8")),
            },
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "code path {code:?} leaves the application directory"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("code path {code:?} is absolute"));
            }
        }
    }
    Ok(if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    })
}
