//! Egress rules: `network: { outbound: [HOST:PORT, ...], loopback: BOOL }`
//! made into the launcher's egress policies.
//!
//! Each distinct rule is one policy, shared by every function and service
//! that declares it. Its destinations are resolved when its first
//! instance starts: IP addresses as they are, names through [`Resolve`]
//! (`*.example.com` as the zone's wildcard record answers for it), and
//! resolved again when the shortest TTL among them runs out, so that the
//! fence follows addresses as they change. A name that stops resolving
//! keeps its last addresses until it resolves again.

pub mod dns;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stratus_manifest::{Destination, Egress, Network};
use stratus_sandbox::{EgressRule, MAX_EGRESS_POLICY};
use tokio::sync::OnceCell;

use crate::launch::Launch;
pub use dns::{Answer, Resolve, Resolver};

/// The shortest time between two resolutions of a policy's names,
/// whatever their TTLs say.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The longest, whatever their TTLs say.
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// How soon to try again after a name server did not answer.
const RETRY: Duration = Duration::from_secs(30);

/// The egress policies of this node.
pub(crate) struct EgressPolicies {
    launcher: Arc<dyn Launch>,
    resolver: Arc<dyn Resolve>,
    policies: Mutex<HashMap<Egress, Arc<Policy>>>,
}

struct Policy {
    id: u32,
    /// Set once its destinations are in the launcher's map.
    ready: OnceCell<Result<(), String>>,
}

impl EgressPolicies {
    pub fn new(launcher: Arc<dyn Launch>, resolver: Arc<dyn Resolve>) -> EgressPolicies {
        EgressPolicies {
            launcher,
            resolver,
            policies: Mutex::new(HashMap::new()),
        }
    }

    /// The rule an instance with `network` is held to: `None` for
    /// anywhere (or its own network). The first call for a rule resolves
    /// its names and keeps them fresh from then on.
    pub async fn rule(&self, network: &Network) -> Result<Option<EgressRule>, String> {
        let Network::Limited(egress) = network else {
            return Ok(None);
        };
        if !self.launcher.egress_fence() {
            return Err("this host cannot narrow where an instance may connect (no cgroup BPF network fence); remove `network.outbound` and `loopback`, or run the server as root with namespaces and a cgroup v2 hierarchy".to_owned());
        }
        let policy = {
            let mut policies = self.policies.lock().unwrap_or_else(|p| p.into_inner());
            match policies.get(egress) {
                Some(policy) => policy.clone(),
                None => {
                    let id = policies.len() as u32 + 1;
                    if id > MAX_EGRESS_POLICY {
                        return Err(format!(
                            "this node holds {MAX_EGRESS_POLICY} distinct egress rules already"
                        ));
                    }
                    let policy = Arc::new(Policy {
                        id,
                        ready: OnceCell::new(),
                    });
                    policies.insert(egress.clone(), policy.clone());
                    policy
                }
            }
        };
        policy
            .ready
            .get_or_init(|| self.start(policy.id, egress.to.clone().unwrap_or_default()))
            .await
            .clone()?;
        Ok(Some(EgressRule {
            policy: policy.id,
            listed: egress.to.is_some(),
            loopback: egress.loopback,
        }))
    }

    /// Resolves `to` into policy `id` and keeps it fresh.
    async fn start(&self, id: u32, to: Vec<Destination>) -> Result<(), String> {
        let mut names = Names::new(to);
        let next = names.resolve(&*self.resolver).await;
        self.launcher
            .set_egress(id, &names.addresses())
            .await
            .map_err(|e| format!("cannot set the egress policy: {e}"))?;
        if let Some(next) = next {
            let (launcher, resolver) = (self.launcher.clone(), self.resolver.clone());
            let mut at = tokio::time::Instant::now() + next;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep_until(at).await;
                    let before = names.addresses();
                    let next = names.resolve(&*resolver).await.unwrap_or(MAX_REFRESH);
                    at = tokio::time::Instant::now() + next;
                    let after = names.addresses();
                    if after != before
                        && let Err(err) = launcher.set_egress(id, &after).await
                    {
                        tracing::warn!(policy = id, %err, "cannot update an egress policy");
                    }
                }
            });
        }
        Ok(())
    }
}

/// A policy's destinations with what their names last resolved to.
struct Names {
    fixed: BTreeSet<SocketAddr>,
    /// Name, its ports, and its last addresses.
    names: Vec<(String, Vec<u16>, Vec<IpAddr>)>,
}

impl Names {
    fn new(to: Vec<Destination>) -> Names {
        let mut fixed = BTreeSet::new();
        let mut names: Vec<(String, Vec<u16>, Vec<IpAddr>)> = Vec::new();
        for dest in to {
            match dest.host.parse::<IpAddr>() {
                Ok(ip) => {
                    fixed.insert(SocketAddr::new(ip, dest.port));
                }
                Err(_) => match names.iter_mut().find(|(n, _, _)| *n == dest.host) {
                    Some((_, ports, _)) => ports.push(dest.port),
                    None => names.push((dest.host, vec![dest.port], Vec::new())),
                },
            }
        }
        Names { fixed, names }
    }

    /// Resolves every name; returns when to do it again (`None`: there
    /// are no names).
    async fn resolve(&mut self, resolver: &dyn Resolve) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        for (name, _, last) in &mut self.names {
            let ttl = match resolver.resolve(name).await {
                Ok(answer) => {
                    if answer.addresses.is_empty() {
                        tracing::warn!(%name, "an egress rule names a host that has no address; instances cannot reach it");
                    }
                    *last = answer.addresses;
                    answer.ttl
                }
                Err(err) => {
                    tracing::warn!(%name, %err, "cannot resolve a host of an egress rule; its last addresses stay");
                    RETRY
                }
            };
            let ttl = ttl.clamp(MIN_REFRESH, MAX_REFRESH);
            next = Some(next.map_or(ttl, |n| n.min(ttl)));
        }
        next
    }

    fn addresses(&self) -> Vec<SocketAddr> {
        let mut all = self.fixed.clone();
        for (_, ports, ips) in &self.names {
            for ip in ips {
                all.extend(ports.iter().map(|port| SocketAddr::new(*ip, *port)));
            }
        }
        all.into_iter().collect()
    }
}

#[cfg(test)]
mod tests;
