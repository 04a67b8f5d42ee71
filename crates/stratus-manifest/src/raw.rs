//! The manifest as written: serde structs that mirror the YAML, nothing more.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    /// Manifest format version; only 1 exists.
    pub version: Option<u32>,
    pub app: String,
    #[serde(default, deserialize_with = "unique_keys")]
    pub functions: BTreeMap<String, RawFunction>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub services: BTreeMap<String, RawService>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub queues: BTreeMap<String, Option<RawQueue>>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub alerts: BTreeMap<String, RawAlert>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub buckets: BTreeMap<String, Option<RawBucket>>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub collections: BTreeMap<String, Option<RawCollection>>,
}

/// One of the app's collections of documents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCollection {
    #[serde(default)]
    pub indexes: Vec<RawIndex>,
    pub rules: Option<RawRules>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIndex {
    pub fields: OneOrMany,
    pub multi: Option<bool>,
}

/// A collection's security rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRules {
    pub read: Option<String>,
    pub write: Option<String>,
    pub create: Option<String>,
    pub update: Option<String>,
    pub delete: Option<String>,
}

/// A bucket's security rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBucketRules {
    pub read: Option<String>,
    pub write: Option<String>,
}

/// One of the app's buckets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBucket {
    pub name: Option<String>,
    pub public_read: Option<bool>,
    pub cors: Option<RawCors>,
    pub lifecycle: Option<RawLifecycle>,
    pub max_object_size: Option<String>,
    pub rules: Option<RawBucketRules>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLifecycle {
    pub expire_after: String,
    pub prefix: Option<String>,
}

/// One of the app's alerts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlert {
    pub metric: Option<String>,
    pub function: Option<String>,
    pub queue: Option<String>,
    pub logs: Option<RawLogMatch>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub window: Option<String>,
    #[serde(rename = "for")]
    pub hold: Option<String>,
    #[serde(default)]
    pub actions: Vec<RawAlertAction>,
}

/// Log lines that contain a pattern, of some of the app's functions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLogMatch {
    pub pattern: String,
    pub from: Option<OneOrMany>,
}

/// One thing an alert does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlertAction {
    pub invoke: Option<String>,
    pub webhook: Option<RawWebhook>,
    pub queue: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub url: String,
    pub secret: String,
}

/// A named queue of the app.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawQueue {
    pub visibility_timeout: Option<String>,
    pub retention: Option<String>,
}

/// One entry of a function's `events:`: what runs it besides invocations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrigger {
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub catch_up: Option<String>,
    pub queue: Option<String>,
    pub batch_size: Option<u32>,
    pub batch_window: Option<String>,
    pub cloudevents: Option<RawCloudEvents>,
    pub logs: Option<RawLogMatch>,
    pub storage: Option<RawStorage>,
    pub database: Option<RawDatabase>,
    pub format: Option<String>,
}

/// Changes to documents of one of the app's collections.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    pub collection: String,
    pub on: Option<OneOrMany>,
}

/// Changes to objects of one of the app's buckets.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    pub bucket: String,
    pub on: Option<OneOrMany>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

/// Which ingested CloudEvents reach a function.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCloudEvents {
    #[serde(rename = "type")]
    pub types: Option<OneOrMany>,
    pub source: Option<OneOrMany>,
}

/// A long-running web app: an ordinary server process behind the gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub code: Option<String>,
    pub runtime: Option<String>,
    pub build: Option<RawBuild>,
    pub command: Option<RawCommand>,
    pub port: Option<u16>,
    pub http: Option<RawHttp>,
    pub readiness: Option<RawReadiness>,
    pub concurrency: Option<u32>,
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    pub idle_timeout: Option<String>,
    pub memory: Option<u32>,
    pub queue_depth: Option<u32>,
    pub drain_grace: Option<String>,
    pub access_log: Option<bool>,
    pub protocol: Option<String>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub env: BTreeMap<String, EnvValue>,
    pub network: Option<RawNetwork>,
}

/// `network: outbound | none | { outbound: [HOST:PORT, ...], loopback: BOOL }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawNetwork {
    Mode(String),
    Rules(RawEgress),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEgress {
    pub outbound: Option<Vec<String>>,
    pub loopback: Option<bool>,
}

/// `command: [argv...]`, or one string for the shell.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawCommand {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReadiness {
    pub path: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFunction {
    pub runtime: String,
    pub handler: Option<String>,
    pub code: Option<String>,
    pub memory: Option<u32>,
    pub timeout: Option<String>,
    #[serde(default, deserialize_with = "unique_keys")]
    pub env: BTreeMap<String, EnvValue>,
    pub max_instances: Option<u32>,
    pub min_instances: Option<u32>,
    pub concurrency: Option<u32>,
    pub keep_alive: Option<String>,
    pub network: Option<RawNetwork>,
    pub http: Option<RawHttp>,
    pub retries: Option<u32>,
    pub max_event_age: Option<String>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub events: Option<Vec<RawTrigger>>,
    pub callable: Option<bool>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub build: Option<RawBuild>,
}

/// `build: { command: make, output: [bootstrap] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub command: Option<String>,
    pub output: Option<OneOrMany>,
}

/// `http:` on a function: the routes that reach it on the public listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub path: Option<OneOrMany>,
    pub methods: Option<OneOrMany>,
    pub auth: Option<String>,
    pub cors: Option<RawCors>,
    pub streaming: Option<bool>,
    pub strip_prefix: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    pub origins: Option<OneOrMany>,
    pub credentials: Option<bool>,
    pub methods: Option<OneOrMany>,
    pub headers: Option<OneOrMany>,
    pub expose_headers: Option<OneOrMany>,
    pub max_age: Option<String>,
}

/// A string or a list of strings: `path: /a` and `path: [/a, /b]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// An environment value: YAML scalars of any type are taken as their text,
/// so `PORT: 8080` and `DEBUG: true` work as users expect; `{ secret: NAME }`
/// names a secret of the app, set apart with `stratus secret set`.
#[derive(Debug)]
pub(crate) enum EnvValue {
    Text(String),
    Secret(String),
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = EnvValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean, or { secret: NAME }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue::Text(v.to_string()))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<EnvValue, A::Error> {
                let mut secret = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "secret" if secret.is_none() => secret = Some(map.next_value::<String>()?),
                        "secret" => return Err(de::Error::duplicate_field("secret")),
                        other => return Err(de::Error::unknown_field(other, &["secret"])),
                    }
                }
                secret
                    .map(EnvValue::Secret)
                    .ok_or_else(|| de::Error::missing_field("secret"))
            }
        }

        d.deserialize_any(ScalarVisitor)
    }
}

/// A map that refuses a key given twice, where serde's own map impl would keep
/// the last value and silently drop the first function or variable.
fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueVisitor<V>(PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueVisitor<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    d.deserialize_map(UniqueVisitor(PhantomData))
}
