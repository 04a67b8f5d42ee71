//! The addresses of fenced service instances.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// The addresses of live service instances: two never share one, also
/// once the counter has gone round the network.
#[derive(Default)]
pub(crate) struct Addresses {
    next: AtomicU32,
    taken: Mutex<HashSet<Ipv4Addr>>,
}

impl Addresses {
    pub fn take(&self) -> Ipv4Addr {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let ip = stratus_sandbox::service_addr(self.next.fetch_add(1, Ordering::Relaxed));
            if taken.insert(ip) {
                return ip;
            }
        }
    }

    pub fn release(&self, ip: Ipv4Addr) {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}
