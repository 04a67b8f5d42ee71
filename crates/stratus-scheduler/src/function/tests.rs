//! The pools' admission, hand-off, keep-alive and logs, on the fake
//! launcher.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stratus_logs::LogStream;
use tokio::sync::Semaphore;

use crate::fake::{self, FakeLauncher, Program, Reply};
use crate::{Invocation, InvokeError, Launch, Scheduler};

fn invoke(
    scheduler: &Arc<Scheduler>,
    function: &str,
    payload: &str,
) -> tokio::task::JoinHandle<Result<crate::InvokeOutcome, InvokeError>> {
    let scheduler = scheduler.clone();
    let (function, payload) = (function.to_owned(), payload.to_owned());
    tokio::spawn(async move {
        scheduler
            .invoke("app", &function, Invocation::new(Bytes::from(payload)))
            .await
    })
}

/// Waits until `n` processes have been handed their function.
async fn activated(launcher: &FakeLauncher, n: usize) {
    assert!(
        fake::eventually(Duration::from_secs(5), || {
            launcher.counts.activations() == n
        })
        .await
    );
}

fn waiting(scheduler: &Scheduler, function: &str) -> u32 {
    scheduler.pool("app", function).unwrap().stats().waiting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_beyond_the_instances_wait_and_beyond_the_queue_are_throttled() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::gated(gate.clone())), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 2)], vec![]);

    let calls: Vec<_> = (0..6)
        .map(|i| invoke(&scheduler, "f", &i.to_string()))
        .collect();
    assert!(fake::eventually(Duration::from_secs(5), || waiting(&scheduler, "f") == 4).await);
    assert_eq!(scheduler.pool("app", "f").unwrap().stats().instances, 2);
    // The queue (depth 4) is full: the next caller is turned away at once.
    match invoke(&scheduler, "f", "x").await.unwrap() {
        Err(InvokeError::Throttled { reason, .. }) => {
            assert!(reason.contains("4 callers are already waiting"), "{reason}")
        }
        other => panic!("expected a throttle, got {other:?}"),
    }
    gate.add_permits(6);
    for (i, call) in calls.into_iter().enumerate() {
        let outcome = call.await.unwrap().expect("invoked");
        assert_eq!(outcome.result.unwrap(), i.to_string().as_bytes());
    }
    // Two instances served all six, warm after their first.
    assert_eq!(launcher.counts.spawns(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waits_no_longer_than_the_queue_timeout() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::gated(gate.clone())), false);
    let mut settings = fake::settings();
    settings.limits.queue_timeout = Duration::from_millis(300);
    let (scheduler, _) = fake::scheduler(settings, &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 1)], vec![]);

    let busy = invoke(&scheduler, "f", "1");
    activated(&launcher, 1).await;
    let started = tokio::time::Instant::now();
    match invoke(&scheduler, "f", "2").await.unwrap() {
        Err(InvokeError::Throttled { reason, .. }) => {
            assert!(reason.contains("became free within 0.30 s"), "{reason}")
        }
        other => panic!("expected a throttle, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    gate.add_permits(1);
    busy.await.unwrap().unwrap().result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_of_an_instance_that_dies_goes_to_the_next_waiter() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::gated(gate.clone())), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 1)], vec![]);

    let first = invoke(&scheduler, "f", "1");
    activated(&launcher, 1).await;
    let second = invoke(&scheduler, "f", "2");
    assert!(fake::eventually(Duration::from_secs(5), || waiting(&scheduler, "f") == 1).await);
    let pids = launcher.pids();
    assert_eq!(pids.len(), 1);
    launcher.signal(pids[0], crate::Signal::Kill);

    let failed = first.await.unwrap().expect("reached the function");
    let error = failed.result.unwrap_err();
    assert_eq!(error.error_type, "Runtime.ExitError", "{error:?}");
    // The waiter got the freed slot and started an instance of its own.
    gate.add_permits(1);
    let outcome = second.await.unwrap().expect("invoked");
    assert_eq!(outcome.result.unwrap(), "2".as_bytes());
    assert!(outcome.cold);
    assert_eq!(launcher.counts.spawns(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_cap_holds_across_its_functions() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::gated(gate.clone())), false);
    let mut settings = fake::settings();
    settings.limits.app_max_instances = 1;
    let (scheduler, _) = fake::scheduler(settings, &launcher);
    scheduler.publish_app(
        "app",
        vec![fake::function("app", "f", 5), fake::function("app", "g", 5)],
        vec![],
    );
    let busy = invoke(&scheduler, "f", "1");
    activated(&launcher, 1).await;
    match invoke(&scheduler, "g", "2").await.unwrap() {
        Err(InvokeError::Throttled { reason, .. }) => {
            assert!(reason.contains("at its cap of 1 instances"), "{reason}")
        }
        other => panic!("expected a throttle, got {other:?}"),
    }
    gate.add_permits(1);
    busy.await.unwrap().unwrap().result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_stop_after_their_keep_alive_down_to_min_instances() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::gated(gate.clone())), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    let mut config = fake::function("app", "f", 5);
    config.spec.min_instances = 1;
    config.spec.keep_alive = Some(Duration::from_millis(200));
    scheduler.publish_app("app", vec![config], vec![]);
    let instances = || scheduler.pool("app", "f").unwrap().stats().instances;
    // min_instances starts one without a caller; it is idle once up.
    let idle = || scheduler.pool("app", "f").unwrap().stats().idle;
    assert!(fake::eventually(Duration::from_secs(5), || idle() == 1).await);
    assert_eq!(launcher.live(), 1);

    let calls: Vec<_> = (0..3)
        .map(|i| invoke(&scheduler, "f", &i.to_string()))
        .collect();
    assert!(fake::eventually(Duration::from_secs(5), || instances() == 3).await);
    gate.add_permits(3);
    for call in calls {
        call.await.unwrap().unwrap().result.unwrap();
    }
    assert_eq!(scheduler.pool("app", "f").unwrap().stats().idle, 3);
    // Past the keep-alive, the upkeep stops two and keeps the minimum.
    assert!(fake::eventually(Duration::from_secs(5), || instances() == 1).await);
    assert!(fake::eventually(Duration::from_secs(5), || launcher.live() == 1).await);
    assert_eq!(launcher.counts.kills(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_stored_under_its_request_before_the_report() {
    let launcher = FakeLauncher::new(Program::Function(fake::echo()), false);
    let (scheduler, logs) = fake::scheduler(fake::settings(), &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 1)], vec![]);
    let outcome = invoke(&scheduler, "f", "hello").await.unwrap().unwrap();
    let records = logs.all();
    let line = records
        .iter()
        .position(|r| r.stream == LogStream::Stdout && r.message == "handling hello")
        .expect("the handler's line");
    let report = records
        .iter()
        .position(|r| r.stream == LogStream::Report)
        .expect("a report");
    assert!(line < report, "{records:?}");
    assert_eq!(
        records[line].request_id.as_deref(),
        Some(outcome.request_id.as_str())
    );
    assert_eq!(
        records[report].request_id.as_deref(),
        Some(outcome.request_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_invocation_is_classed_as_a_timeout_and_its_instance_goes() {
    let launcher = FakeLauncher::new(
        Program::Function(fake::gated(Arc::new(Semaphore::new(0)))),
        false,
    );
    let (scheduler, logs) = fake::scheduler(fake::settings(), &launcher);
    let mut config = fake::function("app", "f", 1);
    config.spec.timeout = Duration::from_millis(200);
    scheduler.publish_app("app", vec![config], vec![]);
    let outcome = invoke(&scheduler, "f", "1").await.unwrap().unwrap();
    let error = outcome.result.unwrap_err();
    assert_eq!(error.class, crate::ErrorClass::Timeout);
    assert_eq!(error.error_type, "Sandbox.Timedout");
    assert!(fake::eventually(Duration::from_secs(5), || launcher.live() == 0).await);
    assert!(
        logs.all()
            .iter()
            .any(|r| r.stream == LogStream::Platform && r.message.starts_with("Sandbox.Timedout"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_exits_between_events_is_replaced_for_the_next() {
    // A one-shot runtime: answers, then its next event finds it gone.
    let launcher = FakeLauncher::new(Program::Function(fake::always(Reply::Exit(0))), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 1)], vec![]);
    let outcome = invoke(&scheduler, "f", "1").await.unwrap().unwrap();
    let error = outcome.result.unwrap_err();
    assert_eq!(error.error_type, "Runtime.ExitError");
    launcher.set_program(Program::Function(fake::echo()));
    let outcome = invoke(&scheduler, "f", "2").await.unwrap().unwrap();
    assert_eq!(outcome.result.unwrap(), "2".as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_invocations_in_flight_finish_then_stops_every_instance() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::gated(gate.clone())), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 2)], vec![]);
    let busy = invoke(&scheduler, "f", "1");
    activated(&launcher, 1).await;
    let stopping = {
        let scheduler = scheduler.clone();
        tokio::spawn(async move { scheduler.shutdown(Duration::from_secs(5)).await })
    };
    assert!(fake::eventually(Duration::from_secs(1), || scheduler.is_shutting_down()).await);
    assert!(matches!(
        invoke(&scheduler, "f", "2").await.unwrap(),
        Err(InvokeError::ShuttingDown)
    ));
    gate.add_permits(1);
    busy.await.unwrap().unwrap().result.unwrap();
    stopping.await.unwrap();
    assert_eq!(launcher.live(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_is_the_functions_and_its_instance_stays_warm() {
    let launcher = FakeLauncher::new(
        Program::Function(fake::always(Reply::Error("ValueError"))),
        false,
    );
    let (scheduler, logs) = fake::scheduler(fake::settings(), &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 1)], vec![]);
    for _ in 0..2 {
        let outcome = invoke(&scheduler, "f", "1").await.unwrap().unwrap();
        let error = outcome.result.unwrap_err();
        assert_eq!(error.error_type, "ValueError");
        assert_eq!(error.class, crate::ErrorClass::Function);
    }
    assert_eq!(launcher.counts.spawns(), 1);
    let pool = scheduler.pool("app", "f").unwrap();
    assert_eq!(pool.recent_errors().len(), 2);
    let report = logs
        .all()
        .into_iter()
        .find(|r| r.stream == LogStream::Report)
        .unwrap();
    assert!(
        report.message.contains("Status: error (ValueError)"),
        "{}",
        report.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_of_other_functions_give_way_at_the_application_cap() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::echo()), false);
    let mut settings = fake::settings();
    settings.limits.app_max_instances = 2;
    let (scheduler, _) = fake::scheduler(settings, &launcher);
    let functions = ["f", "g", "h"].map(|name| fake::function("app", name, 5));
    scheduler.publish_app("app", functions.to_vec(), vec![]);
    // f and g each leave an idle instance: the application is at its cap.
    invoke(&scheduler, "f", "1").await.unwrap().unwrap();
    invoke(&scheduler, "g", "2").await.unwrap().unwrap();
    assert_eq!(launcher.live(), 2);

    // h starts in the place of the longest idle, f's.
    let outcome = invoke(&scheduler, "h", "3").await.unwrap().unwrap();
    assert_eq!(outcome.result.unwrap(), "3".as_bytes());
    assert!(outcome.cold);
    assert_eq!(launcher.counts.kills(), 1);
    assert_eq!(scheduler.pool("app", "f").unwrap().stats().instances, 0);
    assert_eq!(scheduler.pool("app", "g").unwrap().stats().instances, 1);

    // When every instance is busy, the cap is named as the reason.
    launcher.set_program(Program::Function(fake::gated(gate.clone())));
    let busy = [invoke(&scheduler, "f", "4"), invoke(&scheduler, "f", "5")];
    assert!(
        fake::eventually(Duration::from_secs(5), || {
            let f = scheduler.pool("app", "f").unwrap().stats();
            f.instances == 2 && f.idle == 0
        })
        .await
    );
    match invoke(&scheduler, "g", "6").await.unwrap() {
        Err(InvokeError::Throttled { reason, .. }) => {
            assert!(
                reason.contains("at its cap of 2 instances, all of them busy"),
                "{reason}"
            )
        }
        other => panic!("expected a throttle, got {other:?}"),
    }
    gate.add_permits(2);
    for call in busy {
        call.await.unwrap().unwrap().result.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_kept_for_min_instances_do_not_give_way() {
    let launcher = FakeLauncher::new(Program::Function(fake::echo()), false);
    let mut settings = fake::settings();
    settings.limits.app_max_instances = 1;
    let (scheduler, _) = fake::scheduler(settings, &launcher);
    let mut kept = fake::function("app", "kept", 5);
    kept.spec.min_instances = 1;
    scheduler.publish_app("app", vec![kept, fake::function("app", "other", 5)], vec![]);
    assert!(fake::eventually(Duration::from_secs(5), || launcher.live() == 1).await);
    match invoke(&scheduler, "other", "1").await.unwrap() {
        Err(InvokeError::Throttled { reason, .. }) => {
            assert!(reason.contains("at its cap of 1 instances"), "{reason}")
        }
        other => panic!("expected a throttle, got {other:?}"),
    }
    assert_eq!(launcher.counts.kills(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_is_frozen_until_its_next_event() {
    let launcher = FakeLauncher::new(Program::Function(fake::echo()), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 2)], vec![]);
    for i in 0..3 {
        let outcome = invoke(&scheduler, "f", &i.to_string())
            .await
            .unwrap()
            .expect("invoked");
        // A frozen runtime that was given the event would fail it.
        assert_eq!(outcome.result.unwrap(), i.to_string().as_bytes());
        // Frozen once idle for `freeze_after` (1 ms here).
        assert!(
            fake::eventually(Duration::from_secs(5), || launcher.frozen()
                == launcher.pids())
            .await,
            "idle, so frozen"
        );
    }
    assert_eq!(launcher.counts.spawns(), 1);
}

/// A function of `concurrency` events per instance.
fn concurrent(name: &str, max_instances: u32, concurrency: u32) -> crate::FunctionConfig {
    let mut config = fake::function("app", name, max_instances);
    config.spec.concurrency = concurrency;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_takes_up_to_its_concurrency_before_the_function_scales_out() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::gated(gate.clone())), false);
    let (scheduler, logs) = fake::scheduler(fake::settings(), &launcher);
    scheduler.publish_app("app", vec![concurrent("f", 2, 3)], vec![]);

    // A burst on a cold function: the first caller starts an instance and
    // the next two wait for its room rather than start their own.
    let first: Vec<_> = (0..3)
        .map(|i| invoke(&scheduler, "f", &i.to_string()))
        .collect();
    assert!(
        fake::eventually(Duration::from_secs(5), || {
            logs.all()
                .iter()
                .filter(|r| r.message.starts_with("handling "))
                .count()
                == 3
        })
        .await
    );
    assert_eq!(launcher.counts.spawns(), 1);
    // Three more run on a second instance; the seventh waits.
    let second: Vec<_> = (3..6)
        .map(|i| invoke(&scheduler, "f", &i.to_string()))
        .collect();
    let seventh = invoke(&scheduler, "f", "6");
    assert!(fake::eventually(Duration::from_secs(5), || waiting(&scheduler, "f") == 1).await);
    let stats = scheduler.pool("app", "f").unwrap().stats();
    assert_eq!((stats.instances, stats.idle), (2, 0));
    assert_eq!(launcher.counts.spawns(), 2);

    gate.add_permits(7);
    let mut instances = std::collections::HashMap::<String, u32>::new();
    for (i, call) in first.into_iter().chain(second).chain([seventh]).enumerate() {
        let outcome = call.await.unwrap().expect("invoked");
        assert_eq!(outcome.result.unwrap(), i.to_string().as_bytes());
        *instances.entry(outcome.instance).or_default() += 1;
    }
    assert_eq!(instances.len(), 2, "{instances:?}");
    assert_eq!(launcher.counts.spawns(), 2);

    // Each line went to its own request, though three ran at once: the
    // runtime marks them, and the mark is gone from the log.
    let records = logs.all();
    let handling: Vec<_> = records
        .iter()
        .filter(|r| r.message.starts_with("handling "))
        .collect();
    assert_eq!(handling.len(), 7);
    for line in handling {
        let request = line.request_id.as_deref().expect("tagged");
        let report = records
            .iter()
            .find(|r| r.stream == LogStream::Report && r.request_id.as_deref() == Some(request))
            .expect("a report for each request");
        assert_eq!(report.instance, line.instance);
    }
    // Once all are done, both instances are idle.
    assert!(
        fake::eventually(Duration::from_secs(5), || {
            scheduler.pool("app", "f").unwrap().stats().idle == 2
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_with_several_events_gives_its_slot_back_once() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::gated(gate.clone())), false);
    let (scheduler, _) = fake::scheduler(fake::settings(), &launcher);
    scheduler.publish_app("app", vec![concurrent("f", 1, 4)], vec![]);

    let calls: Vec<_> = (0..3)
        .map(|i| invoke(&scheduler, "f", &i.to_string()))
        .collect();
    activated(&launcher, 1).await;
    let pids = launcher.pids();
    assert!(
        fake::eventually(Duration::from_secs(5), || {
            scheduler.pool("app", "f").unwrap().stats().instances == 1
        })
        .await
    );
    launcher.signal(pids[0], crate::Signal::Kill);
    for call in calls {
        let outcome = call.await.unwrap().expect("reached the function");
        assert!(outcome.result.is_err());
    }
    assert!(
        fake::eventually(Duration::from_secs(5), || {
            scheduler.pool("app", "f").unwrap().stats().instances == 0
        })
        .await
    );
    // The function still scales to its one instance, and runs four at once.
    let calls: Vec<_> = (0..4)
        .map(|i| invoke(&scheduler, "f", &i.to_string()))
        .collect();
    // The killed process's three handlers wait at the gate until their
    // aborted task is dropped, which a busy runtime may put off: permits
    // for them too, so that they cannot starve the new events.
    gate.add_permits(4 + 3);
    for call in calls {
        call.await.unwrap().expect("invoked").result.unwrap();
    }
    assert_eq!(launcher.counts.spawns(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_frozen_only_once_idle_for_freeze_after() {
    let launcher = FakeLauncher::new(Program::Function(fake::echo()), false);
    let mut settings = fake::settings();
    settings.limits.freeze_after = Duration::from_millis(300);
    let (scheduler, _) = fake::scheduler(settings, &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 1)], vec![]);
    for i in 0..5 {
        let outcome = invoke(&scheduler, "f", &i.to_string()).await.unwrap();
        assert_eq!(
            outcome.expect("invoked").result.unwrap(),
            i.to_string().as_bytes()
        );
        // Back to back: never idle long enough to be frozen.
        assert!(launcher.frozen().is_empty());
    }
    assert!(
        fake::eventually(Duration::from_secs(5), || launcher.frozen()
            == launcher.pids())
        .await,
        "idle past freeze_after, so frozen"
    );
    // The next event thaws it.
    let outcome = invoke(&scheduler, "f", "again").await.unwrap();
    assert_eq!(
        outcome.expect("invoked").result.unwrap(),
        "again".as_bytes()
    );
    assert_eq!(launcher.counts.spawns(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_asks_for_fewer_events_than_its_concurrency_is_told_so() {
    let gate = Arc::new(Semaphore::new(0));
    let launcher = FakeLauncher::new(Program::Function(fake::gated(gate.clone())), false);
    let mut settings = fake::settings();
    settings.limits.init_timeout = Duration::from_millis(500);
    let (scheduler, _) = fake::scheduler(settings, &launcher);
    let mut config = concurrent("f", 1, 2);
    config.spec.env.insert("FAKE_LOOPS".into(), "1".into());
    scheduler.publish_app("app", vec![config], vec![]);

    let first = invoke(&scheduler, "f", "1");
    activated(&launcher, 1).await;
    // The one loop is busy with the first: nobody asks for the second.
    let second = invoke(&scheduler, "f", "2")
        .await
        .unwrap()
        .expect("reached");
    let error = second.result.unwrap_err();
    assert_eq!(error.error_type, "Runtime.EventNotTaken", "{error:?}");
    assert!(
        error
            .message
            .contains("with `concurrency: 2` it must ask for up to 2 events at once"),
        "{error:?}"
    );
    // The instance was stopped: the first event fails with it.
    gate.add_permits(1);
    let first = first.await.unwrap().expect("reached");
    assert!(first.result.is_err());
}

/// Keeps the spans it is given.
#[derive(Debug, Default)]
struct Spans(std::sync::Mutex<Vec<stratus_trace::Span>>);

impl stratus_trace::Sink for Spans {
    fn record(&self, spans: Vec<stratus_trace::Span>) {
        self.0.lock().unwrap().extend(spans);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_are_spans_under_their_caller_with_the_handler_s_span_inside() {
    let spans = Arc::new(Spans::default());
    let mut settings = fake::settings();
    settings.tracer = stratus_trace::Tracer::new(spans.clone());
    let launcher = FakeLauncher::new(Program::Function(fake::echo()), false);
    let (scheduler, _) = fake::scheduler(settings, &launcher);
    scheduler.publish_app("app", vec![fake::function("app", "f", 1)], vec![]);

    let caller = stratus_trace::Context::root();
    for _ in 0..2 {
        let mut invocation = Invocation::new(Bytes::from_static(b"{}"));
        invocation.trace = crate::Trace::under(Some(caller));
        let handler = invocation.trace.handler;
        let request_id = invocation.request_id.clone();
        let outcome = scheduler.invoke("app", "f", invocation).await.unwrap();
        assert!(outcome.result.is_ok());

        let recorded = std::mem::take(&mut *spans.0.lock().unwrap());
        let root = recorded
            .iter()
            .find(|s| s.name == "f")
            .expect("the invocation's span");
        assert_eq!(root.context.trace_id, caller.trace_id);
        assert_eq!(root.parent, Some(caller.span_id));
        assert_eq!(root.request_id.as_deref(), Some(request_id.as_str()));
        assert!(
            root.attributes
                .contains(&("faas.coldstart", stratus_trace::Value::Bool(outcome.cold)))
        );
        // The function was given the handler's span as its parent.
        let inside = recorded.iter().find(|s| s.name == "handler").unwrap();
        assert_eq!(inside.context, handler);
        // Every phase is inside the invocation, in its time.
        for span in &recorded {
            assert_eq!(span.context.trace_id, caller.trace_id);
            if span.name != "f" {
                assert_eq!(span.parent, Some(root.context.span_id), "{}", span.name);
                assert!(
                    span.start_ns >= root.start_ns && span.end_ns <= root.end_ns,
                    "{}",
                    span.name
                );
            }
        }
        let sandbox = recorded.iter().any(|s| s.name == "sandbox");
        assert_eq!(sandbox, outcome.cold);
    }

    // An unsampled caller's trace is passed on, not recorded.
    let mut invocation = Invocation::new(Bytes::from_static(b"{}"));
    invocation.trace = crate::Trace::under(Some(stratus_trace::Context {
        sampled: false,
        ..caller
    }));
    scheduler.invoke("app", "f", invocation).await.unwrap();
    assert!(spans.0.lock().unwrap().is_empty());
}
