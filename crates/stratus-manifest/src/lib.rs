//! The application manifest, `stratus.yaml`.
//!
//! This crate owns the user-facing manifest format (version 1) and turns it
//! into the resolved form, [`AppSpec`], that the rest of the platform works
//! with. Parsing is strict: unknown keys, wrong types and invalid values are
//! reported with the file, line and key, and a hint that says how to fix them.
//! Nothing outside this crate knows the YAML shape.

pub mod alerts;
pub mod buckets;
pub mod collections;
mod error;
mod locate;
mod raw;
mod resolve;
pub mod schedule;
mod spec;

pub use error::{ManifestError, ManifestErrors};
pub use spec::{
    AppSpec, BuildCommand, CatchUp, CloudEventsTrigger, CorsSpec, DEBUG_PORT_ENV, DatabaseTrigger,
    Destination, DocumentChange, Egress, EventFormat, FunctionSpec, HttpAuth, HttpSpec, LOG_LEVELS,
    LogFormat, LogsTrigger, Network, QueueSpec, QueueTrigger, RESERVED_APP_NAMES, Readiness,
    Runtime, SCF_BOOTSTRAP, SCF_PORT, ScheduleTrigger, ServiceCommand, ServiceProtocol,
    ServiceSpec, StorageChange, StorageTrigger, Trigger, is_valid_name,
};

/// The file name `stratus deploy` looks for in an application directory.
pub const MANIFEST_FILE: &str = "stratus.yaml";
/// The longest timeout a function may have.
pub use resolve::{MAX_TIMEOUT, RESERVED_PATH};
/// The largest manifest.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// The deepest nesting of `[` and `{` in a manifest.
pub const MAX_FLOW_DEPTH: usize = 32;

/// Refuses a manifest that is too large or nested too deep to parse.
fn check_shape(file: &str, text: &str) -> Result<(), ManifestErrors> {
    let refuse = |line: Option<usize>, message: String, hint: &str| {
        Err(ManifestErrors::one(ManifestError {
            file: file.to_owned(),
            line,
            key: String::new(),
            message,
            hint: Some(hint.to_owned()),
        }))
    };
    if text.len() > MAX_MANIFEST_BYTES {
        return refuse(
            None,
            format!(
                "the manifest is {} bytes, more than {MAX_MANIFEST_BYTES}",
                text.len()
            ),
            "a manifest declares functions and services; keep data in code directories",
        );
    }
    // Flow collections outside comments. Brackets inside quoted strings
    // count too: a string holding more than the limit of unclosed ones is
    // refused with the rest, which no real manifest needs.
    let (mut depth, mut line) = (0usize, 1usize);
    let (mut comment, mut after_space) = (false, true);
    for c in text.chars() {
        match c {
            '\n' => {
                line += 1;
                comment = false;
            }
            _ if comment => {}
            '#' if after_space => comment = true,
            '[' | '{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return refuse(
                        Some(line),
                        format!("collections are nested more than {MAX_FLOW_DEPTH} deep"),
                        "flatten the structure; no setting needs this depth",
                    );
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        after_space = c.is_whitespace();
    }
    Ok(())
}

/// What a secret's name may be, for people.
pub const SECRET_NAME_RULE: &str =
    "a secret name has 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit";

/// Whether `name` may name a secret of an app.
pub fn valid_secret_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The largest environment of one function or service, names and values
/// together. (Lambda's is 4 KiB; this leaves room for certificates and
/// keys passed whole, and keeps every instance's start message small.)
pub const MAX_ENV_BYTES: usize = 64 * 1024;

/// Parses and validates a manifest. `file` names the source in error messages.
pub fn parse(file: &str, text: &str) -> Result<AppSpec, ManifestErrors> {
    // Bounded before the YAML parser sees it: its time grows faster than
    // the nesting.
    check_shape(file, text)?;
    let raw: raw::RawManifest = serde_norway::from_str(text)
        .map_err(|err| ManifestErrors::one(error::from_yaml(file, text, &err)))?;
    resolve::resolve(file, text, raw)
}
