//! The data plane's scheduler: it owns the instance pool of every function
//! version and the instances of every service, and turns an invocation
//! into a result.
//!
//! An invocation takes a warm instance from the function's [`Pool`], or
//! starts one through the [`Launch`] seam when the pool has room, or
//! waits in a bounded queue, or is throttled. Each instance runs one
//! invocation at a time and talks to the platform through its own Lambda
//! Runtime API listener. A request for a [`Service`] takes a [`Lease`] on
//! one of its instances. Output lines and one report record per
//! invocation go to the [`Logs`](stratus_logs::Logs) seam; the scheduler
//! itself never touches the store.
//!
//! The modules form layers, each using only those below it:
//! `scheduler` → `function`, `service` → `sandboxed` → `prewarm`,
//! `process`, `output` → `launch`, `capacity`, `recent`, `config`,
//! `settings`, `invocation` (the leaves).

mod capacity;
mod clock;
mod config;
pub mod egress;
#[cfg(test)]
mod fake;
mod function;
mod ids;
mod invocation;
mod launch;
mod output;
mod prewarm;
mod process;
mod recent;
mod sandboxed;
mod scheduler;
mod service;
mod settings;

pub use clock::now_ms;
pub use config::{FunctionConfig, SecretEnv, ServiceConfig, ServiceDeps};
pub use function::{Pool, PoolStats};
pub use invocation::{
    ErrorClass, FunctionError, HTTP_INTEGRATION_CONTENT_TYPE, Invocation, InvokeError,
    InvokeOutcome, Phases, ResponseStream, StreamChunk, Trace,
};
pub use launch::{Launch, Signal};
pub use recent::RecentError;
pub use scheduler::Scheduler;
pub use service::{
    CLOSE_WAIT, Lease, Phase, Service, ServiceError, ServiceInstance, ServiceStatus,
};
pub use settings::{
    BIN_DIR, FailureSink, Interpreter, Language, Languages, Limits, PlatformApi, Scene, Settings,
};
