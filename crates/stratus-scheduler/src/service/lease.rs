//! A request's hold on one service instance, and the demand it counts
//! toward.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::instance::{Phase, ServiceInstance};

/// Requests waiting for a service's capacity, and the wake-up they wait on.
#[derive(Default)]
pub(crate) struct Demand {
    /// Capacity changed: an instance became ready or died, a lease ended.
    pub changed: Notify,
    /// Requests waiting for capacity; changed with the service's state
    /// locked.
    pub waiting: AtomicUsize,
}

/// A request's hold on one instance; dropping it frees the slot.
pub struct Lease {
    pub(crate) demand: Arc<Demand>,
    pub(crate) instance: Arc<ServiceInstance>,
}

impl Lease {
    pub fn addr(&self) -> SocketAddr {
        self.instance.addr
    }

    pub fn instance_id(&self) -> &str {
        &self.instance.id
    }

    /// Completes when long-lived requests on the instance must end: its
    /// drain began and the grace it was given is over (or it died).
    pub fn ending(&self) -> impl Future<Output = ()> + Send + 'static {
        let instance = self.instance.clone();
        async move {
            let mut rx = instance.subscribe();
            let phase = rx
                .wait_for(|p| matches!(p, Phase::Draining | Phase::Dead))
                .await
                .map(|p| *p);
            if phase.is_ok_and(|p| p == Phase::Draining)
                && let Some(until) = instance.drain_until()
            {
                tokio::time::sleep_until(until.into()).await;
            }
        }
    }

    /// Completes when the instance has died.
    pub fn died(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.instance.subscribe();
        async move {
            let _ = rx.wait_for(|p| *p == Phase::Dead).await;
        }
    }

    pub fn is_dead(&self) -> bool {
        self.instance.phase() == Phase::Dead
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.instance.touch();
        self.instance.in_flight.fetch_sub(1, Ordering::SeqCst);
        // Waking is for requests in the queue and for a drain waiting for
        // the instance to be idle; most releases have neither.
        if self.demand.waiting.load(Ordering::SeqCst) > 0
            || self.instance.phase() == Phase::Draining
        {
            self.demand.changed.notify_waiters();
        }
    }
}
