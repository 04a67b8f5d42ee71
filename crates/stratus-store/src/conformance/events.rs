use super::Fixture;
use crate::{EventCounts, FollowUp, NewEvent, Settlement, Source};

fn event(app: &str, function: &str, request_id: &str, not_before_ms: i64) -> NewEvent {
    NewEvent {
        app: app.into(),
        function: function.into(),
        payload: format!("{{\"n\":\"{request_id}\"}}").into_bytes(),
        request_id: request_id.into(),
        source: "invoke".into(),
        created_ms: 1,
        not_before_ms,
        trace: (request_id == "r1").then(|| format!("00-{}-{}-01", "1".repeat(32), "2".repeat(16))),
    }
}

fn counts(app: &str, function: &str, queued: u64, in_flight: u64, dead: u64) -> EventCounts {
    EventCounts {
        app: app.into(),
        function: function.into(),
        queued,
        in_flight,
        dead,
        // Every event here was accepted at 1.
        oldest_queued_ms: (queued > 0).then_some(1),
    }
}

pub async fn delivered_events_leave_the_queue(f: &dyn Fixture) {
    let store = f.open().await;
    assert_eq!(store.next_due_ms().await.unwrap(), None);
    let ids = store
        .enqueue_events(vec![event("a", "f", "r1", 10), event("a", "f", "r2", 10)])
        .await
        .unwrap();
    assert!(ids[0] < ids[1]);
    assert_eq!(store.next_due_ms().await.unwrap(), Some(10));

    let claimed = store.claim_events(10, 10, 1_000).await.unwrap();
    assert_eq!(claimed.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    let first = &claimed[0];
    assert_eq!(
        (first.app.as_str(), first.function.as_str(), &first.source),
        ("a", "f", &Source::Invoke)
    );
    assert_eq!(first.payload, b"{\"n\":\"r1\"}");
    // The producer's trace context travels with the event.
    assert_eq!(
        first.trace,
        Some(format!("00-{}-{}-01", "1".repeat(32), "2".repeat(16)))
    );
    assert_eq!(claimed[1].trace, None);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.lease_until_ms, Some(1_010));
    assert_eq!(
        store.count_events(None, 10).await.unwrap(),
        [counts("a", "f", 0, 2, 0)]
    );

    let settled = store
        .settle_events(claimed.iter().map(Settlement::done).collect())
        .await
        .unwrap();
    assert_eq!(settled, 2);
    assert!(
        store
            .claim_events(i64::MAX / 2, 10, 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_due_ms().await.unwrap(), None);
    assert!(store.count_events(None, 10).await.unwrap().is_empty());

    // Ids are never reused, even once the queue is empty.
    let again = store
        .enqueue_events(vec![event("a", "f", "r3", 10)])
        .await
        .unwrap();
    assert!(again[0] > ids[1]);
}

pub async fn claims_respect_not_before_and_leases(f: &dyn Fixture) {
    let store = f.open().await;
    let ids = store
        .enqueue_events(vec![
            event("a", "f", "late", 50),
            event("a", "f", "early", 10),
            event("a", "g", "middle", 20),
        ])
        .await
        .unwrap();

    assert!(store.claim_events(9, 10, 100).await.unwrap().is_empty());
    // The one due longest goes first.
    let one = store.claim_events(30, 1, 100).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].request_id, "early");
    let rest = store.claim_events(30, 10, 100).await.unwrap();
    assert_eq!(
        rest.iter()
            .map(|e| e.request_id.as_str())
            .collect::<Vec<_>>(),
        ["middle"],
        "a leased event is not claimed again, nor one not yet due"
    );
    assert!(store.claim_events(30, 10, 100).await.unwrap().is_empty());
    // The next wake-up is the undelivered "late" event, before the leases run out.
    assert_eq!(store.next_due_ms().await.unwrap(), Some(50));
    assert_eq!(
        store.count_events(Some("a"), 30).await.unwrap(),
        [counts("a", "f", 1, 1, 0), counts("a", "g", 0, 1, 0)]
    );

    // At 130 both leases have run out (their claimer died): they are claimed
    // again with another attempt, together with "late".
    let late = store.claim_events(60, 10, 100).await.unwrap();
    assert_eq!(late[0].request_id, "late");
    assert_eq!(store.next_due_ms().await.unwrap(), Some(130));
    assert_eq!(
        store.count_events(Some("a"), 130).await.unwrap(),
        [counts("a", "f", 1, 1, 0), counts("a", "g", 1, 0, 0)],
        "a lapsed lease counts as queued"
    );
    let reclaimed = store.claim_events(130, 10, 100).await.unwrap();
    assert_eq!(
        reclaimed
            .iter()
            .map(|e| (e.id, e.attempts))
            .collect::<Vec<_>>(),
        [(ids[1], 2), (ids[2], 2)]
    );

    // The first claimer comes back late: its outcome no longer counts, the
    // current claimer's does.
    let stale = store
        .settle_events(vec![
            Settlement::done(&one[0]),
            Settlement::retry(&rest[0], 0, "late"),
        ])
        .await
        .unwrap();
    assert_eq!(stale, 0);
    assert!(store.claim_events(150, 10, 100).await.unwrap().is_empty());
    let settled = store
        .settle_events(reclaimed.iter().map(Settlement::done).collect())
        .await
        .unwrap();
    assert_eq!(settled, 2);
    // An expired lease nobody took over is still its claimer's to settle.
    assert_eq!(
        store
            .settle_events(vec![Settlement::done(&late[0])])
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.next_due_ms().await.unwrap(), None);
}

pub async fn failed_events_are_retried_then_dead_lettered_and_redriven(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .enqueue_events(vec![event("a", "f", "r1", 0), event("a", "g", "r2", 0)])
        .await
        .unwrap();
    let claimed = store.claim_events(0, 10, 100).await.unwrap();
    store
        .settle_events(vec![
            Settlement::retry(&claimed[0], 500, "timeout"),
            Settlement::retry(&claimed[1], 500, "exit 1"),
        ])
        .await
        .unwrap();
    assert_eq!(store.next_due_ms().await.unwrap(), Some(500));
    assert!(store.claim_events(499, 10, 100).await.unwrap().is_empty());
    let second = store.claim_events(500, 10, 100).await.unwrap();
    assert_eq!(second.len(), 2);
    assert_eq!(second[0].attempts, 2);
    assert_eq!(second[0].last_error.as_deref(), Some("timeout"));

    store
        .settle_events(vec![
            Settlement::dead(&second[0], 600, "timeout again"),
            Settlement::dead(&second[1], 601, "exit 2"),
        ])
        .await
        .unwrap();
    assert_eq!(store.next_due_ms().await.unwrap(), None);
    assert_eq!(
        store.count_events(None, 700).await.unwrap(),
        [counts("a", "f", 0, 0, 1), counts("a", "g", 0, 0, 1)]
    );
    let dead = store.list_dead_letters("a", None, None, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    let d = &dead[0];
    assert_eq!(
        (
            d.event_id,
            d.function.as_str(),
            d.request_id.as_str(),
            d.attempts
        ),
        (second[0].id, "f", "r1", 2)
    );
    assert_eq!((d.failed_ms, d.error.as_str()), (600, "timeout again"));
    assert_eq!(d.payload, second[0].payload);
    assert_eq!(
        store
            .list_dead_letters("a", Some("g"), None, 10)
            .await
            .unwrap()[0]
            .error,
        "exit 2"
    );
    assert_eq!(
        store
            .list_dead_letters("a", None, Some(d.id), 10)
            .await
            .unwrap()
            .len(),
        1,
        "paged after an id"
    );
    assert!(
        store
            .list_dead_letters("b", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get_dead_letter("a", d.id).await.unwrap().as_ref(),
        Some(d)
    );
    assert_eq!(
        store.get_dead_letter("b", d.id).await.unwrap(),
        None,
        "scoped by app"
    );

    // Redriving by id, and only the app's own.
    assert_eq!(
        store
            .redrive_dead_letters("b", None, Some(vec![d.id]), 1_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .redrive_dead_letters("a", Some("f"), Some(vec![d.id, 9_999]), 1_000)
            .await
            .unwrap(),
        1
    );
    let redriven = store.claim_events(1_000, 10, 100).await.unwrap();
    assert_eq!(redriven.len(), 1);
    let r = &redriven[0];
    assert!(r.id > second[1].id, "a redriven event is a new one");
    assert_eq!(
        (r.request_id.as_str(), r.attempts, r.created_ms),
        ("r1", 1, 1_000)
    );
    assert_eq!(r.last_error.as_deref(), Some("timeout again"));
    assert_eq!(r.payload, d.payload);
    store
        .settle_events(vec![Settlement::done(r)])
        .await
        .unwrap();

    // A dead letter whose request was queued again meanwhile merges into it.
    let requeued = store
        .enqueue_events(vec![event("a", "g", "r2", 0)])
        .await
        .unwrap();
    assert_eq!(
        store
            .redrive_dead_letters("a", None, None, 1_000)
            .await
            .unwrap(),
        1
    );
    let merged = store.claim_events(1_000, 10, 100).await.unwrap();
    assert_eq!(merged.iter().map(|e| e.id).collect::<Vec<_>>(), requeued);
    assert!(
        store
            .list_dead_letters("a", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Deleting dead letters.
    store
        .settle_events(vec![Settlement::dead(&merged[0], 2_000, "no")])
        .await
        .unwrap();
    assert_eq!(
        store
            .delete_dead_letters("a", Some("f"), None)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .delete_dead_letters("a", Some("g"), None)
            .await
            .unwrap(),
        1
    );
    assert!(store.count_events(None, 2_000).await.unwrap().is_empty());
}

pub async fn settlements_queue_their_destinations_atomically(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .enqueue_events(vec![event("a", "f", "r1", 0), event("a", "f", "r2", 0)])
        .await
        .unwrap();
    let claimed = store.claim_events(0, 10, 100).await.unwrap();
    let mut success = event("a", "next", "r1", 5);
    success.source = Source::Destination("f".into());
    let failure = event("a", "on-failure", "r2", 5);
    let applied = store
        .settle_events(vec![
            Settlement::Done {
                id: claimed[0].id,
                attempt: 1,
                then: vec![FollowUp::Event(success)],
            },
            Settlement::Dead {
                id: claimed[1].id,
                attempt: 1,
                failed_ms: 5,
                error: "boom".into(),
                then: vec![FollowUp::Event(failure)],
            },
            // Stale: its destination is not queued.
            Settlement::Done {
                id: claimed[0].id,
                attempt: 1,
                then: vec![FollowUp::Event(event("a", "stale", "r1", 5))],
            },
        ])
        .await
        .unwrap();
    assert_eq!(applied, 2);
    let next = store.claim_events(5, 10, 100).await.unwrap();
    assert_eq!(
        next.iter()
            .map(|e| (e.function.as_str(), e.source.to_string()))
            .collect::<Vec<_>>(),
        [
            ("next", "destination:f".to_owned()),
            ("on-failure", "invoke".to_owned())
        ]
    );
}

pub async fn enqueueing_is_idempotent_while_the_event_is_queued(f: &dyn Fixture) {
    let store = f.open().await;
    let first = store
        .enqueue_events(vec![
            event("a", "f", "r1", 0),
            event("a", "f", "r1", 0),
            // The same request id for another function or app is another event.
            event("a", "g", "r1", 0),
            event("b", "f", "r1", 0),
        ])
        .await
        .unwrap();
    assert_eq!(first[0], first[1], "a duplicate within one call");
    assert_eq!(
        first
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
    let mut retried = event("a", "f", "r1", 0);
    retried.payload = b"different".to_vec();
    assert_eq!(
        store.enqueue_events(vec![retried.clone()]).await.unwrap()[0],
        first[0]
    );

    // Still the same event while it is in flight.
    let claimed = store.claim_events(0, 10, 100).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert_eq!(
        claimed[0].payload, b"{\"n\":\"r1\"}",
        "the first payload is kept"
    );
    assert_eq!(
        store.enqueue_events(vec![retried.clone()]).await.unwrap()[0],
        first[0]
    );

    // Once delivered, the same request id is a new event.
    store
        .settle_events(vec![Settlement::done(&claimed[0])])
        .await
        .unwrap();
    let after = store.enqueue_events(vec![retried]).await.unwrap();
    assert!(after[0] > first[3]);
}

pub async fn deleting_an_app_removes_its_events_and_dead_letters(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .enqueue_events(vec![
            event("a", "f", "r1", 0),
            event("a", "f", "r2", 0),
            event("a", "f", "r3", 100),
            event("b", "f", "r1", 100),
        ])
        .await
        .unwrap();
    let claimed = store.claim_events(0, 10, 100).await.unwrap();
    store
        .settle_events(vec![Settlement::dead(&claimed[0], 1, "x")])
        .await
        .unwrap();
    // delete_app reports whether the app existed; its events go either way.
    assert!(!store.delete_app("a").await.unwrap());
    assert_eq!(
        store.count_events(None, 0).await.unwrap(),
        [counts("b", "f", 1, 0, 0)]
    );
    // The claimer of the deleted app's event settles into nothing.
    assert_eq!(
        store
            .settle_events(vec![Settlement::dead(&claimed[1], 1, "x")])
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .list_dead_letters("a", None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn accepted_events_survive_reopening(f: &dyn Fixture) {
    let store = f.open().await;
    let ids = store
        .enqueue_events(
            (0..100)
                .map(|i| event("a", "f", &format!("r{i}"), 0))
                .collect(),
        )
        .await
        .unwrap();
    // One is claimed by a dispatcher that then dies with the server. The
    // connection is never closed, as under `kill -9`: no checkpoint, the
    // WAL is left for the next opener to recover.
    let claimed = store.claim_events(0, 1, 1_000).await.unwrap();
    std::mem::forget(store);

    let store = f.open().await;
    assert_eq!(
        store.claim_events(10, 1_000, 1_000).await.unwrap().len(),
        99
    );
    let lapsed = store.claim_events(1_000, 1_000, 1_000).await.unwrap();
    assert_eq!(lapsed.len(), 1);
    assert_eq!((lapsed[0].id, lapsed[0].attempts), (claimed[0].id, 2));
    assert_eq!(lapsed[0].id, ids[0]);
}

pub async fn a_restarted_node_releases_the_leases_of_its_last_run(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .enqueue_events(vec![event("a", "f", "r1", 0), event("a", "f", "r2", 0)])
        .await
        .unwrap();
    let claimed = store.claim_events(0, 1, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // Leased for a minute: not claimable at 10 ms, until the leases go.
    assert_eq!(store.claim_events(10, 10, 60_000).await.unwrap().len(), 1);
    assert_eq!(store.release_leases(20).await.unwrap(), 2);
    let again = store.claim_events(20, 10, 60_000).await.unwrap();
    assert_eq!(again.len(), 2);
    assert!(
        again
            .iter()
            .any(|e| e.id == claimed[0].id && e.attempts == 2)
    );
}

/// A claimer extends the leases it holds; one a later attempt took is not
/// its to extend.
pub async fn a_claimer_extends_the_leases_it_still_holds(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .enqueue_events(vec![event("a", "f", "r1", 0), event("a", "f", "r2", 0)])
        .await
        .unwrap();
    let claimed = store.claim_events(10, 10, 100).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let (first, second) = (&claimed[0], &claimed[1]);
    // The second's lease lapses and another claimer takes it.
    let extended = store
        .extend_leases(vec![(first.id, first.attempts)], 1_000)
        .await
        .unwrap();
    assert_eq!(extended, 1);
    let again = store.claim_events(200, 10, 10_000).await.unwrap();
    assert_eq!(again.iter().map(|e| e.id).collect::<Vec<_>>(), [second.id]);
    // The first claimer's extension of it is stale now.
    let stale = store
        .extend_leases(
            vec![(first.id, first.attempts), (second.id, second.attempts)],
            2_000,
        )
        .await
        .unwrap();
    assert_eq!(stale, 1);
    assert!(store.claim_events(1_500, 10, 100).await.unwrap().is_empty());
    let lapsed = store.claim_events(2_000, 10, 100).await.unwrap();
    assert_eq!(lapsed.iter().map(|e| e.id).collect::<Vec<_>>(), [first.id]);
}

/// A claimer passes over the events of functions it names busy, however
/// many of theirs are due first, and takes them again once it does not.
pub async fn claims_pass_over_busy_functions(f: &dyn Fixture) {
    let store = f.open().await;
    let mut events: Vec<NewEvent> = (0..20)
        .map(|i| event("a", "slow", &format!("s{i}"), 1))
        .collect();
    events.push(event("a", "fast", "f1", 2));
    events.push(event("b", "slow", "b1", 3));
    store.enqueue_events(events).await.unwrap();
    let claimed = store
        .claim_events_except(10, 5, 1_000, &["a/slow".to_owned()])
        .await
        .unwrap();
    let names: Vec<(&str, &str)> = claimed
        .iter()
        .map(|e| (e.app.as_str(), e.function.as_str()))
        .collect();
    assert_eq!(names, [("a", "fast"), ("b", "slow")]);
    let claimed = store
        .claim_events_except(10, 50, 1_000, &["a/fast".to_owned()])
        .await
        .unwrap();
    assert_eq!(claimed.len(), 20);
    assert!(claimed.iter().all(|e| e.function == "slow" && e.app == "a"));
}
