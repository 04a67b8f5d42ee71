//! The resolved form of a manifest: validated, defaults applied, no YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A validated application: what `stratus deploy` ships and the server runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    pub functions: BTreeMap<String, FunctionSpec>,
    /// Long-running web apps behind the gateway.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSpec>,
    /// Named queues: functions consume them through `queue` triggers.
    #[serde(default)]
    pub queues: BTreeMap<String, QueueSpec>,
    /// Conditions on metrics or log lines, and what to do about them.
    #[serde(default)]
    pub alerts: BTreeMap<String, crate::alerts::AlertSpec>,
    /// File storage, served over the S3 API.
    #[serde(default)]
    pub buckets: BTreeMap<String, crate::buckets::BucketSpec>,
    /// The document database's collections, their indexes and rules.
    #[serde(default)]
    pub collections: BTreeMap<String, crate::collections::CollectionSpec>,
}

/// A queue the app declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    pub name: String,
    /// How long a received batch stays hidden from other receivers before
    /// its messages may be delivered again.
    #[serde(with = "millis")]
    pub visibility_timeout: Duration,
    /// How long a message waits for a successful delivery before it moves
    /// to the dead letters.
    #[serde(with = "millis")]
    pub retention: Duration,
}

/// What runs a function besides invocations: one entry of its `events:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Trigger {
    /// A cron expression or a rate, in a time zone.
    Schedule(ScheduleTrigger),
    /// Batches of messages from one of the app's queues.
    Queue(QueueTrigger),
    /// CloudEvents posted to the app's ingest endpoint, by type and source.
    CloudEvents(CloudEventsTrigger),
    /// Log lines of the app's other functions and services that contain a
    /// pattern, in batches.
    Logs(LogsTrigger),
    /// Objects created in or deleted from one of the app's buckets.
    Storage(StorageTrigger),
    /// Documents created, updated or deleted in one of the app's
    /// collections.
    Database(DatabaseTrigger),
}

/// Changes to documents of a collection that reach a function, each as an
/// event with the document before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseTrigger {
    /// The collection's name under `collections:`.
    pub collection: String,
    pub on: Vec<DocumentChange>,
}

/// What happened to a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentChange {
    Created,
    Updated,
    Deleted,
}

impl DocumentChange {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentChange::Created => "created",
            DocumentChange::Updated => "updated",
            DocumentChange::Deleted => "deleted",
        }
    }
}

/// Changes to objects of a bucket that reach a function, each as an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageTrigger {
    /// The bucket's name under `buckets:`.
    pub bucket: String,
    pub on: Vec<StorageChange>,
    /// Only keys that start with this and end with `suffix`.
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub suffix: String,
    /// The event's shape.
    #[serde(default)]
    pub format: EventFormat,
}

impl StorageTrigger {
    /// Whether a `change` of `key` reaches the function.
    pub fn matches(&self, change: StorageChange, key: &str) -> bool {
        self.on.contains(&change) && key.starts_with(&self.prefix) && key.ends_with(&self.suffix)
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageChange {
    /// Put, copied or completed from parts, new or replacing another.
    Created,
    Deleted,
}

impl StorageChange {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageChange::Created => "created",
            StorageChange::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsTrigger {
    pub pattern: String,
    /// The functions and services whose lines count; empty: all but the
    /// function itself.
    pub from: Vec<String>,
    /// Most lines in one invocation.
    pub batch_size: u32,
    /// How long to gather lines before delivering them.
    #[serde(with = "millis")]
    pub batch_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleTrigger {
    /// Five cron fields, an `@daily`-style macro, or `rate(N unit)`.
    pub expression: String,
    /// An IANA time zone; cron fields are local times there.
    pub timezone: String,
    pub catch_up: CatchUp,
    /// The event's shape.
    #[serde(default)]
    pub format: EventFormat,
}

/// The shape of the events a trigger delivers: CloudEvents, or what other
/// platforms' handlers expect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    #[default]
    CloudEvents,
    /// Queue batches as SQS records (`messageId`, `body`, `attributes`).
    Sqs,
    /// Schedules as EventBridge's "Scheduled Event".
    EventBridge,
    /// Schedules as Tencent SCF's timer event.
    Scf,
    /// Storage changes as S3 event notifications (`Records`).
    S3,
}

impl ScheduleTrigger {
    /// The parsed schedule; validated when the manifest was.
    pub fn schedule(&self) -> Result<crate::schedule::Schedule, crate::schedule::ScheduleError> {
        crate::schedule::Schedule::parse(&self.expression, &self.timezone)
    }

    /// What identifies the schedule's slots across deploys: changing the
    /// expression or zone starts a new series.
    pub fn key(&self) -> String {
        format!("{}@{}", self.expression, self.timezone)
    }
}

/// What a schedule does about slots that passed while no node ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Missed slots are not run.
    #[default]
    Skip,
    /// The latest missed slot runs once.
    Once,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTrigger {
    pub queue: String,
    /// Most messages in one invocation.
    pub batch_size: u32,
    /// How long to gather a batch before delivering a smaller one.
    #[serde(with = "millis")]
    pub batch_window: Duration,
    /// The batch's shape.
    #[serde(default)]
    pub format: EventFormat,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudEventsTrigger {
    /// Event types that match (`*` at the end matches a prefix); empty for any.
    pub types: Vec<String>,
    /// Sources that match, likewise.
    pub sources: Vec<String>,
}

impl CloudEventsTrigger {
    /// Whether an event of `kind` from `source` reaches the function.
    pub fn matches(&self, kind: &str, source: &str) -> bool {
        fn any(patterns: &[String], value: &str) -> bool {
            patterns.is_empty()
                || patterns.iter().any(|p| match p.strip_suffix('*') {
                    Some(prefix) => value.starts_with(prefix),
                    None => p == value,
                })
        }
        any(&self.types, kind) && any(&self.sources, source)
    }
}

/// One service: an ordinary web server process (Flask, Express, any
/// binary that listens on a port) that the gateway proxies to, scaled by
/// the requests in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// Code directory relative to the manifest, normalised.
    pub code: String,
    /// What to run; `None` runs `./scf_bootstrap` (SCF web functions).
    pub command: Option<ServiceCommand>,
    /// The port the app listens on; `None` lets the platform choose and
    /// pass it as `$PORT`.
    pub port: Option<u16>,
    pub http: HttpSpec,
    pub readiness: Readiness,
    /// Requests in flight per instance before another starts.
    pub concurrency: u32,
    pub min_instances: u32,
    pub max_instances: u32,
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    pub memory_mb: u32,
    /// Requests that may wait for capacity before 429.
    pub queue_depth: u32,
    /// How long WebSockets and long requests may go on once their instance
    /// is draining.
    #[serde(with = "millis")]
    pub drain_grace: Duration,
    /// A log record for every proxied request.
    #[serde(default = "yes")]
    pub access_log: bool,
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets of the app (by
    /// name), filled in only as an instance starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// What it may connect to: [`Network::Outbound`] or narrower, never
    /// [`Network::None`] (the gateway must reach it).
    #[serde(default)]
    pub network: Network,
    /// How the gateway speaks to it.
    #[serde(default)]
    pub protocol: ServiceProtocol,
    /// The runtime whose dependencies (`requirements.txt`, `package.json`)
    /// are installed for it, and whose interpreter is on its `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    /// The version `runtime:` names, as a function's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// The command that makes what it runs, when it has no runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildCommand>,
}

/// `build:`: a command that makes what a code directory without a
/// language runtime runs (`make`, `go build`, `cargo build --release`),
/// run on the server at deploy in a writable copy of the code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuildCommand {
    /// Run with `/bin/sh -c` in the copy of the code directory.
    pub command: String,
    /// Files and directories the build makes, relative to the code
    /// directory: kept, and laid over the code that instances see.
    pub output: Vec<String>,
}

/// How the gateway speaks to a service's instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    /// HTTP/1.1, and HTTP/2 (h2c) for gRPC requests.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c) for every request; WebSocket
    /// upgrades stay HTTP/1.1.
    H2c,
}

fn yes() -> bool {
    true
}

/// The port of an SCF web function's `scf_bootstrap`.
pub const SCF_PORT: u16 = 9000;

/// The variable that tells the built-in runtimes to let a debugger attach
/// on this port of 127.0.0.1 (`stratus dev --debug`): Node.js's inspector,
/// or debugpy in Python.
pub const DEBUG_PORT_ENV: &str = "STRATUS_DEBUG_PORT";
/// The program a service runs when it names none.
pub const SCF_BOOTSTRAP: &str = "scf_bootstrap";

/// A service's program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceCommand {
    /// A program and its arguments, found on `PATH`; `$VAR` and `${VAR}`
    /// of the service's environment are expanded in the arguments.
    Exec(Vec<String>),
    /// A line for `/bin/sh -c`.
    Shell(String),
}

/// When a new instance may take requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// An HTTP path that answers 2xx or 3xx when ready; `None`: the port
    /// accepts connections.
    pub path: Option<String>,
    #[serde(with = "millis")]
    pub timeout: Duration,
}

/// One function of an application, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    pub runtime: Runtime,
    /// The version `runtime:` names (`3.12` of `python3.12`, `22` of
    /// `nodejs22`); the server's own when it names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// `module.function` for python3, `file.export` for nodejs, free for provided.
    pub handler: String,
    /// Code directory relative to the manifest, normalised (`.` for the manifest's own).
    pub code: String,
    pub memory_mb: u32,
    #[serde(with = "millis")]
    pub timeout: Duration,
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets of the app (by
    /// name), filled in only as an instance starts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Most instances that may run at once; callers beyond wait in a bounded queue.
    pub max_instances: u32,
    /// Instances kept warm even when idle.
    #[serde(default)]
    pub min_instances: u32,
    /// Most events one instance runs at once before the function scales
    /// out (Node.js: async handlers; Python: `async def` on one event
    /// loop, plain handlers on threads).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// How long an idle instance lives; the server's default when unset.
    #[serde(default, with = "opt_millis")]
    pub keep_alive: Option<Duration>,
    #[serde(default)]
    pub network: Network,
    /// Routes on the public listener, for an HTTP function.
    #[serde(default)]
    pub http: Option<HttpSpec>,
    /// Further attempts at an event after a failed one.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// An event older than this is not attempted again.
    #[serde(default = "default_max_event_age", with = "millis")]
    pub max_event_age: Duration,
    /// The function or queue that receives a record of each asynchronous
    /// event this one handled successfully.
    #[serde(default)]
    pub on_success: Option<String>,
    /// The function or queue that receives a record of each asynchronous
    /// event this one failed for good.
    #[serde(default)]
    pub on_failure: Option<String>,
    /// What runs it besides invocations.
    #[serde(default)]
    pub events: Vec<Trigger>,
    /// Whether clients signed in to the app (pages, mini-programs) may
    /// call it, at `/_stratus/call/NAME` on the app's host; it then gets
    /// the caller's verified `auth` in its context.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub callable: bool,
    /// How the runtime writes log records (`logging` in Python, `console`
    /// in Node.js), as Lambda's advanced logging controls.
    #[serde(default)]
    pub log_format: LogFormat,
    /// The least level of record the runtime writes: `TRACE`, `DEBUG`,
    /// `INFO`, `WARN`, `ERROR` or `FATAL`; `None`: the runtime's own
    /// default (`INFO` with the JSON format).
    #[serde(default)]
    pub log_level: Option<String>,
    /// The command that makes what a `provided` function runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildCommand>,
}

/// How a runtime writes log records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines of text, as the runtime writes them.
    #[default]
    Text,
    /// One JSON object per record, with its level and request id.
    Json,
}

/// The levels `log_level` takes, least first.
pub const LOG_LEVELS: &[&str] = &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// Attempts after the first, for an event whose function failed.
pub const DEFAULT_RETRIES: u32 = 2;
/// How long an event may wait for a successful attempt.
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(6 * 3600);

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

fn default_concurrency() -> u32 {
    1
}

fn default_max_event_age() -> Duration {
    DEFAULT_MAX_EVENT_AGE
}

/// How an HTTP function is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpSpec {
    /// Route patterns: exact paths, `{param}` segments, a trailing `*`.
    pub paths: Vec<String>,
    /// Upper-case method names; empty for any method.
    pub methods: Vec<String>,
    pub auth: HttpAuth,
    pub cors: Option<CorsSpec>,
    /// The function streams its response (Lambda's response streaming mode).
    #[serde(default)]
    pub streaming: bool,
    /// Each route's literal part before its trailing `/*` is removed from
    /// the path the target sees (after an app's `/APP` prefix), and named
    /// in `X-Forwarded-Prefix`.
    #[serde(default)]
    pub strip_prefix: bool,
}

impl HttpSpec {
    /// `GET,POST`, or `ANY` for a route that takes every method.
    pub fn methods_label(&self) -> String {
        if self.methods.is_empty() {
            "ANY".to_owned()
        } else {
            self.methods.join(",")
        }
    }
}

/// Who may call an HTTP function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuth {
    /// Anyone who can reach the public listener.
    #[default]
    None,
    /// Callers that present one of the app's keys.
    Key,
}

/// Cross-origin access from browsers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsSpec {
    /// Allowed origins (`https://example.com`), or `*` for any.
    pub origins: Vec<String>,
    pub credentials: bool,
    /// Methods a preflight allows; empty for the route's own.
    pub methods: Vec<String>,
    /// Request headers a preflight allows; empty to allow those asked for.
    pub headers: Vec<String>,
    /// Response headers scripts may read.
    pub expose_headers: Vec<String>,
    /// How long browsers may cache a preflight, in seconds.
    pub max_age_secs: Option<u64>,
}

/// What a function or service may reach over the network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Connections out, through the host's network, to anywhere but the
    /// platform's own listeners and other instances: the host's loopback
    /// services included.
    #[default]
    Outbound,
    /// Loopback and the Runtime API only.
    None,
    /// Connections out through the host's network, narrowed.
    Limited(Egress),
}

/// Where an instance with [`Network::Limited`] may connect. The
/// platform's own endpoints it is given (the platform API, the public
/// listener) and the host's name servers stay reachable whatever this
/// says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Egress {
    /// Only these destinations; `None`: anywhere (but loopback, unless
    /// `loopback`).
    pub to: Option<Vec<Destination>>,
    /// Anywhere on loopback (127.0.0.0/8 and `::1`) as well.
    pub loopback: bool,
}

/// One allowed destination: `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Destination {
    /// An IP address, a DNS name, or `*.` and a DNS name: lower case,
    /// without brackets or a final dot.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl AppSpec {
    /// The distinct code directories of the application, in a stable order.
    pub fn code_dirs(&self) -> Vec<&str> {
        let mut dirs: Vec<&str> = self
            .functions
            .values()
            .map(|f| f.code.as_str())
            .chain(self.services.values().map(|s| s.code.as_str()))
            .collect();
        dirs.sort_unstable();
        dirs.dedup();
        dirs
    }

    /// Each runtime version the app names, with the function or service
    /// that names it: `(functions.f, Python3, 3.12)`.
    pub fn runtime_versions(&self) -> Vec<(String, Runtime, &str)> {
        let functions = self.functions.values().filter_map(|f| {
            Some((
                format!("function {}", f.name),
                f.runtime,
                f.runtime_version.as_deref()?,
            ))
        });
        let services = self.services.values().filter_map(|s| {
            Some((
                format!("service {}", s.name),
                s.runtime?,
                s.runtime_version.as_deref()?,
            ))
        });
        functions.chain(services).collect()
    }

    /// The build command of each code directory that has one.
    pub fn code_builds(&self) -> BTreeMap<&str, &BuildCommand> {
        let functions = self
            .functions
            .values()
            .filter_map(|f| Some((f.code.as_str(), f.build.as_ref()?)));
        let services = self
            .services
            .values()
            .filter_map(|s| Some((s.code.as_str(), s.build.as_ref()?)));
        functions.chain(services).collect()
    }
}

/// The language runtime a function runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Python3,
    Nodejs,
    /// Any executable named `bootstrap` that speaks the Lambda Runtime API.
    Provided,
}

impl Runtime {
    pub const ALL: [Runtime; 3] = [Runtime::Python3, Runtime::Nodejs, Runtime::Provided];

    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python3 => "python3",
            Runtime::Nodejs => "nodejs",
            Runtime::Provided => "provided",
        }
    }

    pub fn from_name(name: &str) -> Option<Runtime> {
        Runtime::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// A runtime name with its version, if it names one: `python3.12` is
    /// (`Python3`, `3.12`), `nodejs22` or Lambda's `nodejs22.x` (`Nodejs`,
    /// `22`); `python3`,
    /// `nodejs` and `provided` (also Lambda's `provided.al2` and
    /// `provided.al2023`) name none: whichever the server has.
    pub fn parse_versioned(name: &str) -> Option<(Runtime, Option<String>)> {
        if let Some(runtime) = Runtime::from_name(name) {
            return Some((runtime, None));
        }
        if matches!(name, "provided.al2" | "provided.al2023") {
            return Some((Runtime::Provided, None));
        }
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
        if let Some(minor) = name.strip_prefix("python3.")
            && digits(minor)
        {
            return Some((Runtime::Python3, Some(format!("3.{minor}"))));
        }
        if let Some(major) = name.strip_prefix("nodejs")
            && let major = major.strip_suffix(".x").unwrap_or(major)
            && digits(major)
        {
            return Some((Runtime::Nodejs, Some(major.to_owned())));
        }
        None
    }

    /// The name of this runtime at `version` if one is given
    /// (`python3.12`), else its own (`python3`).
    pub fn name_at(self, version: Option<&str>) -> String {
        match version {
            Some(version) => self.versioned_name(version),
            None => self.to_string(),
        }
    }

    /// The versioned name of this runtime at `version`: `python3.12`.
    pub fn versioned_name(self, version: &str) -> String {
        match self {
            Runtime::Python3 => format!("python{version}"),
            Runtime::Nodejs => format!("nodejs{version}"),
            Runtime::Provided => "provided".to_owned(),
        }
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Application names the node's own paths and hosts take (`/healthz`,
/// `/readyz`, `/metrics`, and `s3.DOMAIN` for the S3 API): an app of one
/// of these names could not be reached.
pub const RESERVED_APP_NAMES: [&str; 4] = ["healthz", "readyz", "metrics", "s3"];

/// Application and function names: `[a-z][a-z0-9-]{0,39}`.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 40
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|v| v.map(Duration::from_millis))
    }
}

pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
