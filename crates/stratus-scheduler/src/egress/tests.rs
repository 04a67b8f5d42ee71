//! Egress policies against a fake launcher and a fake resolver, in paused
//! time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use stratus_manifest::{Destination, Egress, Network};
use stratus_sandbox::EgressRule;

use super::{Answer, EgressPolicies, Resolve};
use crate::fake::{FakeLauncher, Program};

#[derive(Default)]
struct FakeResolver {
    answers: Mutex<HashMap<String, Result<Answer, String>>>,
    asked: Mutex<Vec<String>>,
}

impl FakeResolver {
    fn answer(&self, name: &str, ips: &[&str], ttl_secs: u64) {
        let addresses = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        self.answers.lock().unwrap().insert(
            name.to_owned(),
            Ok(Answer {
                addresses,
                ttl: Duration::from_secs(ttl_secs),
            }),
        );
    }

    fn fail(&self, name: &str) {
        self.answers
            .lock()
            .unwrap()
            .insert(name.to_owned(), Err("no name server answered".into()));
    }
}

#[async_trait]
impl Resolve for FakeResolver {
    async fn resolve(&self, name: &str) -> Result<Answer, String> {
        self.asked.lock().unwrap().push(name.to_owned());
        self.answers
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or(Ok(Answer {
                addresses: Vec::new(),
                ttl: Duration::from_secs(30),
            }))
    }
}

fn limited(to: Option<&[&str]>, loopback: bool) -> Network {
    Network::Limited(Egress {
        to: to.map(|to| {
            to.iter()
                .map(|d| {
                    let (host, port) = d.rsplit_once(':').unwrap();
                    Destination {
                        host: host.to_owned(),
                        port: port.parse().unwrap(),
                    }
                })
                .collect()
        }),
        loopback,
    })
}

fn setup() -> (Arc<FakeLauncher>, Arc<FakeResolver>, EgressPolicies) {
    let launcher = FakeLauncher::new(Program::Exit(0), false);
    let resolver = Arc::new(FakeResolver::default());
    let policies = EgressPolicies::new(launcher.clone(), resolver.clone());
    (launcher, resolver, policies)
}

fn set(launcher: &FakeLauncher, policy: u32) -> Vec<String> {
    launcher.egress.lock().unwrap()[&policy]
        .iter()
        .map(SocketAddr::to_string)
        .collect()
}

/// Lets the refresh task run after the clock moved.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn names_are_resolved_at_the_first_start_and_again_when_their_ttl_runs_out() {
    let (launcher, resolver, policies) = setup();
    resolver.answer("api.example.com", &["192.0.2.1", "2001:db8::1"], 30);
    resolver.answer("*.cdn.example.com", &["198.51.100.7"], 300);
    let network = limited(
        Some(&[
            "api.example.com:443",
            "10.0.0.1:5432",
            "*.cdn.example.com:443",
        ]),
        false,
    );
    let rule = policies.rule(&network).await.unwrap();
    assert_eq!(
        rule,
        Some(EgressRule {
            policy: 1,
            listed: true,
            loopback: false
        })
    );
    assert_eq!(
        set(&launcher, 1),
        [
            "10.0.0.1:5432",
            "192.0.2.1:443",
            "198.51.100.7:443",
            "[2001:db8::1]:443"
        ]
    );
    // A second instance of the same rule resolves nothing again.
    assert_eq!(policies.rule(&network).await.unwrap(), rule);
    assert_eq!(resolver.asked.lock().unwrap().len(), 2);

    // The address changes; the fence follows once the TTL has run out.
    resolver.answer("api.example.com", &["192.0.2.2"], 30);
    tokio::time::advance(Duration::from_secs(29)).await;
    settle().await;
    assert!(set(&launcher, 1).contains(&"192.0.2.1:443".to_owned()));
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(
        set(&launcher, 1),
        ["10.0.0.1:5432", "192.0.2.2:443", "198.51.100.7:443"]
    );

    // A name server that stops answering takes nothing away.
    resolver.fail("api.example.com");
    tokio::time::advance(Duration::from_secs(31)).await;
    settle().await;
    assert_eq!(
        set(&launcher, 1),
        ["10.0.0.1:5432", "192.0.2.2:443", "198.51.100.7:443"]
    );
    // A name that no longer exists does.
    resolver.answer("api.example.com", &[], 30);
    tokio::time::advance(Duration::from_secs(31)).await;
    settle().await;
    assert_eq!(set(&launcher, 1), ["10.0.0.1:5432", "198.51.100.7:443"]);
}

#[tokio::test(start_paused = true)]
async fn each_distinct_rule_is_one_policy() {
    let (launcher, resolver, policies) = setup();
    assert_eq!(policies.rule(&Network::Outbound).await.unwrap(), None);
    assert_eq!(policies.rule(&Network::None).await.unwrap(), None);
    let a = policies
        .rule(&limited(Some(&["10.0.0.1:80"]), false))
        .await
        .unwrap()
        .unwrap();
    let b = policies
        .rule(&limited(Some(&["10.0.0.1:80"]), true))
        .await
        .unwrap()
        .unwrap();
    let c = policies.rule(&limited(None, false)).await.unwrap().unwrap();
    assert_eq!((a.policy, a.listed, a.loopback), (1, true, false));
    assert_eq!((b.policy, b.listed, b.loopback), (2, true, true));
    assert_eq!((c.policy, c.listed, c.loopback), (3, false, false));
    assert!(set(&launcher, 3).is_empty());
    // Only literal addresses: nothing to resolve, now or later.
    tokio::time::advance(Duration::from_secs(7200)).await;
    settle().await;
    assert!(resolver.asked.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_host_that_cannot_fence_refuses_the_rule() {
    let (launcher, _resolver, policies) = setup();
    launcher.egress_fence.store(false, Ordering::SeqCst);
    let err = policies
        .rule(&limited(Some(&["10.0.0.1:80"]), false))
        .await
        .unwrap_err();
    assert!(err.contains("cannot narrow"), "{err}");
    // Anywhere needs no fence.
    assert_eq!(policies.rule(&Network::Outbound).await.unwrap(), None);
}
