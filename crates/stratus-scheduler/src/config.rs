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
    /// The values of the variables `spec.secret_env` names.
    pub secrets: SecretEnv,
}

/// Where a built service's dependencies are, relative to its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDeps {
    /// Their programs (`gunicorn`, `node_modules/.bin`): first on `PATH`.
    pub bin: PathBuf,
    /// Python packages: on `PYTHONPATH`.
    pub python_path: Option<PathBuf>,
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
    /// The values of the variables `spec.secret_env` names.
    pub secrets: SecretEnv,
    /// Its installed dependencies, when it was built.
    pub deps: Option<ServiceDeps>,
}

/// Environment variables whose values are secrets: put into the
/// environments of instances, never printed (`Debug` shows the names).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretEnv(pub Vec<(String, String)>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(var, _)| var))
            .finish()
    }
}
