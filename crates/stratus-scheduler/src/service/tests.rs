//! The service queue, scale-out, drain and backoff, on the fake launcher.

use std::sync::Arc;
use std::time::Duration;

use crate::fake::{self, FakeLauncher, Program};
use crate::{Scheduler, Service, ServiceError};

fn publish(scheduler: &Scheduler, config: crate::ServiceConfig) -> Arc<Service> {
    let name = config.spec.name.clone();
    scheduler.publish_app("app", vec![], vec![config]);
    scheduler.service("app", &name).unwrap()
}

fn serving() -> Program {
    Program::Service {
        after: Duration::from_millis(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_scale_instances_out_by_concurrency_and_the_queue_is_bounded() {
    let launcher = FakeLauncher::new(serving(), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    let service = publish(&scheduler, fake::service("app", "web", 1, 2));

    let a = service.acquire().await.unwrap();
    let b = service.acquire().await.unwrap();
    assert_ne!(a.instance_id(), b.instance_id(), "one request per instance");
    assert_eq!(service.status().ready, 2);
    // Both instances are busy and there may be no third: four wait...
    // (each gives its lease back as soon as it has it, for the next).
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.acquire().await.map(drop) })
        })
        .collect();
    assert!(fake::eventually(Duration::from_secs(5), || service.status().waiting == 4).await);
    // ...and the fifth is turned away at once.
    assert!(matches!(
        service.acquire().await,
        Err(ServiceError::Throttled(..))
    ));
    // Each lease given back goes to one waiter.
    drop(a);
    drop(b);
    let mut served = 0;
    for waiter in waiters {
        waiter.await.unwrap().expect("a lease");
        served += 1;
    }
    assert_eq!(served, 4);
    assert_eq!(launcher.counts.spawns(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_given_back_always_wakes_a_waiter() {
    // One instance, one request at a time, many callers releasing and
    // taking at once: a lost wake-up would leave a caller waiting until
    // the queue timeout and get it throttled.
    let launcher = FakeLauncher::new(serving(), false);
    let mut settings = fake::settings();
    settings.limits.queue_timeout = Duration::from_secs(10);
    let (scheduler, _) = fake::scheduler(settings, &launcher);
    let mut config = fake::service("app", "web", 1, 1);
    config.spec.queue_depth = 64;
    let service = publish(&scheduler, config);
    drop(service.acquire().await.unwrap());

    let started = tokio::time::Instant::now();
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                for _ in 0..200 {
                    let lease = service.acquire().await?;
                    tokio::task::yield_now().await;
                    drop(lease);
                }
                Ok::<_, ServiceError>(())
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap().expect("every acquire succeeds");
    }
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "a caller waited for the timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(launcher.counts.spawns(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_version_drains_only_once_its_leases_are_given_back() {
    let launcher = FakeLauncher::new(serving(), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    let service = publish(&scheduler, fake::service("app", "web", 4, 1));
    let lease = service.acquire().await.unwrap();
    let ending = lease.ending();

    // A new version replaces it: the old one drains.
    scheduler.publish_app("app", vec![], vec![fake::service("app", "web", 4, 1)]);
    assert!(matches!(
        service.acquire().await,
        Err(ServiceError::Retired)
    ));
    assert_eq!(service.status().draining, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(launcher.counts.terminates(), 0, "stopped under a lease");
    // The grace for long-lived requests (200 ms) ends their lease's wait.
    tokio::time::timeout(Duration::from_secs(5), ending)
        .await
        .expect("told to end within the drain grace");
    drop(lease);
    assert!(fake::eventually(Duration::from_secs(5), || launcher.counts.terminates() == 1).await);
    assert!(fake::eventually(Duration::from_secs(5), || !service.has_instances()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_keeps_failing_backs_off_and_answers_at_once() {
    let launcher = FakeLauncher::new(Program::Exit(3), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    let service = publish(&scheduler, fake::service("app", "web", 1, 1));

    let started = tokio::time::Instant::now();
    match service.acquire().await {
        Err(ServiceError::Unavailable { reason, .. }) => {
            assert_eq!(reason, "exited with status 3 before it was ready")
        }
        Err(other) => panic!("expected unavailable, got {other:?}"),
        Ok(_) => panic!("expected unavailable, got a lease"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let status = service.status();
    assert!(status.backoff_ms.is_some(), "{status:?}");
    assert_eq!(status.errors.len(), 1);
    // While it backs off, nothing else starts.
    assert!(service.acquire().await.is_err());
    assert_eq!(launcher.counts.spawns(), 1);

    // Fixed, it serves once the backoff (500 ms at first) is over.
    launcher.set_program(serving());
    tokio::time::sleep(Duration::from_millis(600)).await;
    let lease = service.acquire().await.expect("a lease after the backoff");
    assert!(!lease.is_dead());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_retire_down_to_min_instances() {
    let launcher = FakeLauncher::new(serving(), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    let mut config = fake::service("app", "web", 1, 3);
    config.spec.min_instances = 1;
    config.spec.idle_timeout = Duration::from_millis(200);
    let service = publish(&scheduler, config);
    assert!(fake::eventually(Duration::from_secs(5), || service.status().ready == 1).await);
    let leases = [
        service.acquire().await.unwrap(),
        service.acquire().await.unwrap(),
        service.acquire().await.unwrap(),
    ];
    assert_eq!(service.status().ready, 3);
    drop(leases);
    assert!(
        fake::eventually(Duration::from_secs(5), || {
            let s = service.status();
            s.ready == 1 && s.draining == 0 && s.instance_list.len() == 1
        })
        .await,
        "{:?}",
        service.status()
    );
    assert!(fake::eventually(Duration::from_secs(5), || launcher.live() == 1).await);
}
