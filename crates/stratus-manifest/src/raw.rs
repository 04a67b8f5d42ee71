//! The manifest as written: serde structs that mirror the YAML, nothing more.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    /// Manifest format version; only 1 exists.
    pub version: Option<u32>,
    pub app: String,
    #[serde(default)]
    pub functions: BTreeMap<String, RawFunction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFunction {
    pub runtime: String,
    pub handler: Option<String>,
    pub code: Option<String>,
    pub memory: Option<u32>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    pub max_instances: Option<u32>,
}

/// An environment value: YAML scalars of any type are taken as their text,
/// so `PORT: 8080` and `DEBUG: true` work as users expect.
#[derive(Debug)]
pub(crate) struct EnvValue(pub String);

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = EnvValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_owned()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<EnvValue, E> {
                Ok(EnvValue(v.to_string()))
            }
        }

        d.deserialize_any(ScalarVisitor)
    }
}
