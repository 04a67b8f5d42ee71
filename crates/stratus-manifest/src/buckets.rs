//! `buckets:`: the app's file storage, served over the S3 API.
//!
//! ```yaml
//! buckets:
//!   uploads:
//!     name: acme-uploads          # the S3 name; APP-BUCKET unless given
//!     public_read: false
//!     cors: { origins: ["https://app.example.com"], methods: [GET, PUT] }
//!     lifecycle: { expire_after: 30d, prefix: tmp/ }
//!     max_object_size: 5GiB
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::raw::RawBucket;
use crate::resolve::{Checker, duration};
use crate::spec::CorsSpec;

/// The largest object a bucket takes unless its manifest says.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 5 << 30;
/// The largest `max_object_size`: S3's own limit.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// The longest S3 bucket name.
pub const MAX_BUCKET_NAME: usize = 63;
/// The shortest and longest `expire_after`.
const EXPIRY: (Duration, Duration) = (
    Duration::from_secs(1),
    Duration::from_secs(100 * 365 * 24 * 3600),
);

/// One bucket an app declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSpec {
    /// Its name in the manifest, by which functions' triggers name it.
    pub name: String,
    /// Its name on the S3 API, unique across the platform.
    pub s3_name: String,
    /// Whether anyone may read its objects without signing.
    #[serde(default)]
    pub public_read: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    pub max_object_size: u64,
    /// What clients signed in to the app may read and write.
    #[serde(default)]
    pub rules: BucketRules,
}

/// The expressions that allow a client's downloads (`read`) and uploads
/// and deletions (`write`) of a bucket's objects; `None`: deny.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRules {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<String>,
}

/// Objects that expire: those under `prefix` (every one when empty),
/// once they are older than `expire_after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    #[serde(with = "crate::spec::millis")]
    pub expire_after: Duration,
    #[serde(default)]
    pub prefix: String,
}

/// Why `name` is not a valid S3 bucket name, if it is not: 3 to 63
/// lower-case letters, digits, `.` and `-`, starting and ending with a
/// letter or digit, no `..`, not an IP address, none of the prefixes and
/// suffixes S3 keeps for itself.
pub fn bucket_name_problem(name: &str) -> Option<String> {
    if !(3..=MAX_BUCKET_NAME).contains(&name.len()) {
        return Some(format!(
            "{name:?} is {} characters; a bucket name has 3 to {MAX_BUCKET_NAME}",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Some(format!(
            "{name:?} has characters other than lower-case letters, digits, `.` and `-`"
        ));
    }
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !edge(name.bytes().next()) || !edge(name.bytes().last()) {
        return Some(format!(
            "{name:?} must start and end with a letter or a digit"
        ));
    }
    if name.contains("..") {
        return Some(format!("{name:?} has two dots in a row"));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some(format!("{name:?} is an IP address"));
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Some(format!(
                "{name:?} starts with {prefix:?}, which S3 reserves"
            ));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3"] {
        if name.ends_with(suffix) {
            return Some(format!("{name:?} ends with {suffix:?}, which S3 reserves"));
        }
    }
    None
}

/// `5GiB`, `100MB`, `512KiB`, `1024` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => return Err(format!("unknown unit {other:?}")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

pub(crate) fn resolve_buckets(
    c: &mut Checker<'_>,
    app: &str,
    raw: BTreeMap<String, Option<RawBucket>>,
) -> BTreeMap<String, BucketSpec> {
    let mut buckets = BTreeMap::new();
    let mut s3_names: BTreeMap<String, String> = BTreeMap::new();
    for (name, b) in raw {
        let Some(spec) = resolve_bucket(c, app, &name, b.unwrap_or_default()) else {
            continue;
        };
        if let Some(other) = s3_names.insert(spec.s3_name.clone(), name.clone()) {
            c.error(
                format!("buckets.{name}.name"),
                format!(
                    "buckets {other} and {name} have the same S3 name {:?}",
                    spec.s3_name
                ),
                Some("give each bucket a name of its own".into()),
            );
        }
        buckets.insert(name, spec);
    }
    buckets
}

fn resolve_bucket(c: &mut Checker<'_>, app: &str, name: &str, b: RawBucket) -> Option<BucketSpec> {
    let key = |field: &str| format!("buckets.{name}.{field}");
    let before = c.errors.len();
    if !crate::is_valid_name(name) {
        c.error(
            format!("buckets.{name}"),
            format!("invalid bucket name {name:?}"),
            Some(crate::resolve::NAME_HINT.into()),
        );
    }
    let s3_name = b.name.clone().unwrap_or_else(|| format!("{app}-{name}"));
    if let Some(problem) = bucket_name_problem(&s3_name) {
        let hint = if b.name.is_some() {
            "S3 bucket names are 3 to 63 lower-case letters, digits, `.` and `-`".to_owned()
        } else {
            format!(
                "the S3 name is APP-BUCKET unless `name:` gives one; give a shorter `buckets.{name}.name`"
            )
        };
        c.error(key("name"), problem, Some(hint));
    }
    let cors = b
        .cors
        .map(|cors| crate::resolve::resolve_cors(c, &format!("buckets.{name}.cors"), cors));
    let lifecycle = b.lifecycle.map(|l| Lifecycle {
        expire_after: duration(
            c,
            &key("lifecycle.expire_after"),
            Some(l.expire_after.as_str()),
            EXPIRY.0,
            EXPIRY,
        ),
        prefix: l.prefix.unwrap_or_default(),
    });
    let max_object_size = match b.max_object_size.as_deref().map(parse_size) {
        None => DEFAULT_MAX_OBJECT_SIZE,
        Some(Ok(size)) if (1..=MAX_OBJECT_SIZE).contains(&size) => size,
        Some(Ok(_)) => {
            c.error(
                key("max_object_size"),
                "out of range".into(),
                Some("give a size from 1 byte to 5TiB, such as `100MiB` or `5GiB`".into()),
            );
            DEFAULT_MAX_OBJECT_SIZE
        }
        Some(Err(err)) => {
            c.error(
                key("max_object_size"),
                err,
                Some(
                    "give a size such as `100MiB` or `5GiB` (KB, MB, GB and TB are powers of 1000)"
                        .into(),
                ),
            );
            DEFAULT_MAX_OBJECT_SIZE
        }
    };
    let rules = crate::collections::resolve_bucket_rules(c, &key("rules"), b.rules);
    (c.errors.len() == before).then(|| BucketSpec {
        name: name.to_owned(),
        s3_name,
        public_read: b.public_read.unwrap_or(false),
        cors,
        lifecycle,
        max_object_size,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-app-uploads", "a.b.c", "0-9", &"a".repeat(63)] {
            assert_eq!(bucket_name_problem(good), None, "{good}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Upper",
            "under_score",
            "-dash",
            "dot.",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "data-s3alias",
        ] {
            assert!(bucket_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("5GiB"), Ok(5 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("2 KiB"), Ok(2048));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
