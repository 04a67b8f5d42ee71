//! What the scheduler is told to run: one function or service of one
//! application version.

use std::path::PathBuf;

use stratus_manifest::{FunctionSpec, ServiceSpec};

/// Everything needed to run one function of one application version.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub app: String,
    pub version: u32,
    pub spec: FunctionSpec,
    /// The unpacked code package, read-only.
    pub code_dir: PathBuf,
}

impl FunctionConfig {
    /// The Lambda-style function name, `app.function`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.app, self.spec.name)
    }
}

/// Everything needed to run one service of one application version.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub app: String,
    pub version: u32,
    pub spec: ServiceSpec,
    /// The unpacked code package, read-only.
    pub code_dir: PathBuf,
}
