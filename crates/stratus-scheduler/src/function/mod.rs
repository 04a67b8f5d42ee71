//! Functions: the instance pool of each function version, its instances,
//! and the Lambda Runtime API exchange between an instance and its
//! runtime.
//!
//! Within: `pool` (admission, warm reuse, the wait queue, keep-alive)
//! starts instances through `context`, which keeps every live one in
//! `registry` for shutdown; `instance` (one runtime process and its
//! listener, capped in connections by `capped`) serves `runtime_api`
//! over the state both share in `exchange`.

mod capped;
mod context;
mod exchange;
mod instance;
mod pool;
mod registry;
mod runtime_api;
#[cfg(test)]
mod tests;

pub(crate) use context::Context;
pub use pool::{Pool, PoolStats};
