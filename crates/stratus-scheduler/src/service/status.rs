//! A service's state as `stratus status` shows it.

use std::net::SocketAddr;

use serde::Serialize;

use super::instance::Phase;
use crate::recent::RecentError;

/// A service's state for `stratus status`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub version: u32,
    pub ready: usize,
    pub starting: usize,
    pub draining: usize,
    pub in_flight: usize,
    pub waiting: usize,
    pub restarts: u32,
    pub min_instances: u32,
    pub max_instances: u32,
    /// Milliseconds until the next start is allowed, when backing off.
    pub backoff_ms: Option<u64>,
    pub errors: Vec<RecentError>,
    pub instance_list: Vec<InstanceStatus>,
}

/// One instance of a service, for `stratus status`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub phase: Phase,
    /// Where the gateway reaches it.
    pub addr: SocketAddr,
    pub in_flight: usize,
}
