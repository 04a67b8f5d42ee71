//! The application manifest, `stratus.yaml`.
//!
//! This crate owns the user-facing manifest format (version 1) and turns it
//! into the resolved form, [`AppSpec`], that the rest of the platform works
//! with. Parsing is strict: unknown keys, wrong types and invalid values are
//! reported with the file, line and key, and a hint that says how to fix them.
//! Nothing outside this crate knows the YAML shape.

mod error;
mod locate;
mod raw;
mod resolve;
pub mod schedule;
mod spec;

pub use error::{ManifestError, ManifestErrors};
pub use spec::{
    AppSpec, CatchUp, CloudEventsTrigger, CorsSpec, FunctionSpec, HttpAuth, HttpSpec, Network,
    QueueSpec, QueueTrigger, Readiness, Runtime, SCF_BOOTSTRAP, SCF_PORT, ScheduleTrigger,
    ServiceCommand, ServiceSpec, Trigger, is_valid_name,
};

/// The file name `stratus deploy` looks for in an application directory.
pub const MANIFEST_FILE: &str = "stratus.yaml";
/// The largest environment of one function or service, names and values
/// together. (Lambda's is 4 KiB; this leaves room for certificates and
/// keys passed whole, and keeps every instance's start message small.)
pub const MAX_ENV_BYTES: usize = 64 * 1024;

/// Parses and validates a manifest. `file` names the source in error messages.
pub fn parse(file: &str, text: &str) -> Result<AppSpec, ManifestErrors> {
    let raw: raw::RawManifest = serde_norway::from_str(text)
        .map_err(|err| ManifestErrors::one(error::from_yaml(file, text, &err)))?;
    resolve::resolve(file, text, raw)
}
