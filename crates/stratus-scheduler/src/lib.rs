//! The data plane's scheduler: it owns the instance pool of every function
//! version and turns an invocation into a result.
//!
//! An invocation takes a warm instance from the function's [`Pool`], or
//! starts one through the sandbox's [`Launcher`](stratus_sandbox::Launcher)
//! when the pool has room, or waits in a bounded queue, or is throttled.
//! Each instance runs one invocation at a time and talks to the platform
//! through its own Lambda Runtime API listener ([`runtime_api`]). Output
//! lines and one report record per invocation go to the log channel; the
//! scheduler itself never touches the store.

mod instance;
mod invocation;
mod logs;
mod pool;
mod prewarm;
mod process;
mod runtime_api;
mod scheduler;
mod service;

pub use invocation::{
    FunctionError, HTTP_INTEGRATION_CONTENT_TYPE, Invocation, InvokeError, InvokeOutcome, Phases,
    ResponseStream, StreamChunk,
};
pub use logs::LogSender;
pub use pool::{FunctionConfig, Pool, PoolStats};
pub use scheduler::{Interpreter, Scheduler, Settings};
pub use service::{
    CLOSE_WAIT, Lease, Phase, RecentError, Service, ServiceConfig, ServiceError, ServiceStatus,
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
