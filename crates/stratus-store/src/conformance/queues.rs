use super::Fixture;
use crate::{
    FollowUp, MessageSettlement, NewEvent, NewMessage, QueueCounts, Settlement, Source, Write,
};

fn message(queue: &str, body: &str, visible_ms: i64) -> NewMessage {
    NewMessage {
        app: "a".into(),
        queue: queue.into(),
        body: body.as_bytes().to_vec(),
        message_id: format!("m-{body}"),
        source: "send".into(),
        sent_ms: 1,
        visible_ms,
        trace: Some(format!("trace-of-{body}")),
    }
}

fn bodies(messages: &[crate::MessageRecord]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(m.body.clone()).unwrap())
        .collect()
}

pub async fn messages_are_received_in_batches_hidden_and_settled(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .send_messages(vec![
            message("q", "1", 10),
            message("q", "2", 10),
            message("q", "3", 10),
            message("other", "x", 10),
            message("q", "later", 1000),
        ])
        .await
        .unwrap();
    assert_eq!(store.next_visible_ms("a", "q").await.unwrap(), Some(10));

    // Nothing is visible before its time; a batch takes the oldest.
    assert!(
        store
            .receive_messages("a", "q", 5, 10, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let batch = store.receive_messages("a", "q", 10, 2, 100).await.unwrap();
    assert_eq!(bodies(&batch), ["1", "2"]);
    assert_eq!(batch[1].trace.as_deref(), Some("trace-of-2"));
    assert!(batch.iter().all(|m| m.receives == 1 && m.visible_ms == 110));
    // Received messages are hidden from other receivers.
    let rest = store.receive_messages("a", "q", 20, 10, 100).await.unwrap();
    assert_eq!(bodies(&rest), ["3"]);
    assert_eq!(
        store.count_messages(Some("a"), 20).await.unwrap(),
        vec![
            QueueCounts {
                app: "a".into(),
                queue: "other".into(),
                queued: 1,
                in_flight: 0,
                oldest_sent_ms: Some(1),
            },
            QueueCounts {
                app: "a".into(),
                queue: "q".into(),
                queued: 1,
                in_flight: 3,
                oldest_sent_ms: Some(1),
            },
        ]
    );

    // One handled, one failed (back after a pause), one failed for good.
    let applied = store
        .settle_messages(vec![
            MessageSettlement::Done {
                id: batch[0].id,
                receives: 1,
            },
            MessageSettlement::Retry {
                id: batch[1].id,
                receives: 1,
                visible_ms: 500,
                error: "boom".into(),
            },
            MessageSettlement::Dead {
                id: rest[0].id,
                receives: 1,
                function: "consumer".into(),
                failed_ms: 30,
                error: "bad message".into(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(applied, 3);
    // A stale settlement (an earlier receipt) is ignored.
    let stale = store
        .settle_messages(vec![MessageSettlement::Done {
            id: batch[1].id,
            receives: 0,
        }])
        .await
        .unwrap();
    assert_eq!(stale, 0);

    assert!(
        store
            .receive_messages("a", "q", 499, 10, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .receive_messages("a", "q", 500, 10, 100)
        .await
        .unwrap();
    assert_eq!(bodies(&again), ["2"]);
    assert_eq!(again[0].receives, 2);
    assert_eq!(again[0].last_error.as_deref(), Some("boom"));
    assert_eq!(again[0].message_id, "m-2");

    // The dead message is a dead letter of its consumer; a redrive sends it
    // back to the queue, not to the function.
    let dead = store
        .list_dead_letters("a", Some("consumer"), None, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].source, Source::Queue("q".into()));
    assert_eq!(dead[0].request_id, "m-3");
    assert_eq!(
        store
            .redrive_dead_letters("a", None, None, 550)
            .await
            .unwrap(),
        1
    );
    let redriven = store
        .receive_messages("a", "q", 550, 10, 100)
        .await
        .unwrap();
    assert_eq!(bodies(&redriven), ["3"]);
    assert_eq!(redriven[0].message_id, "m-3");
    assert!(store.claim_events(600, 10, 100).await.unwrap().is_empty());

    // Deleting the app deletes its messages.
    assert!(!store.delete_app("a").await.unwrap());
    assert_eq!(store.next_visible_ms("a", "q").await.unwrap(), None);
}

pub async fn a_destination_can_be_a_queue(f: &dyn Fixture) {
    let store = f.open().await;
    let ids = store
        .enqueue_events(vec![NewEvent {
            app: "a".into(),
            function: "f".into(),
            payload: b"{}".to_vec(),
            request_id: "r1".into(),
            source: "invoke".into(),
            created_ms: 1,
            not_before_ms: 1,
            trace: None,
        }])
        .await
        .unwrap();
    let event = store.claim_events(1, 1, 100).await.unwrap().remove(0);
    assert_eq!(event.id, ids[0]);
    store
        .settle_events(vec![Settlement::Done {
            id: event.id,
            attempt: event.attempts,
            then: vec![FollowUp::Message(message("results", "done", 2))],
        }])
        .await
        .unwrap();
    let got = store
        .receive_messages("a", "results", 2, 10, 100)
        .await
        .unwrap();
    assert_eq!(bodies(&got), ["done"]);
}

pub async fn a_schedule_slot_fires_once(f: &dyn Fixture) {
    let store = f.open().await;
    let event = |slot: i64| NewEvent {
        app: "a".into(),
        function: "cron".into(),
        payload: b"{}".to_vec(),
        request_id: format!("slot-{slot}"),
        source: "schedule".into(),
        created_ms: slot,
        not_before_ms: slot,
        trace: None,
    };
    assert_eq!(
        store.last_schedule_slot("a", "cron", "k").await.unwrap(),
        None
    );
    assert!(
        store
            .fire_schedule("a", "cron", "k", 60, Some(event(60)))
            .await
            .unwrap()
    );
    // A second node, or a restart, firing the same slot loses, as does an
    // older slot.
    assert!(
        !store
            .fire_schedule("a", "cron", "k", 60, Some(event(60)))
            .await
            .unwrap()
    );
    assert!(
        !store
            .fire_schedule("a", "cron", "k", 0, Some(event(0)))
            .await
            .unwrap()
    );
    // Another schedule of the function is its own series.
    assert!(
        store
            .fire_schedule("a", "cron", "other", 60, None)
            .await
            .unwrap()
    );
    // A skipped slot is recorded without an event.
    assert!(
        store
            .fire_schedule("a", "cron", "k", 120, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.last_schedule_slot("a", "cron", "k").await.unwrap(),
        Some(120)
    );
    let fired = store.claim_events(1000, 10, 100).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].request_id, "slot-60");
}

/// Writes of several concerns commit together, each with its id.
pub async fn a_unit_of_work_commits_events_and_messages_together(f: &dyn Fixture) {
    let store = f.open().await;
    let event = NewEvent {
        app: "a".into(),
        function: "f".into(),
        payload: b"{}".to_vec(),
        request_id: "r1".into(),
        source: Source::Invoke,
        created_ms: 1,
        not_before_ms: 0,
        trace: None,
    };
    let ids = store
        .commit(vec![
            Write::Event(event.clone()),
            Write::Message(message("q", "one", 0)),
            // Idempotent by request id, as enqueueing is.
            Write::Event(event),
        ])
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], ids[2]);
    let claimed = store.claim_events(10, 10, 100).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, ids[0]);
    let received = store.receive_messages("a", "q", 10, 10, 100).await.unwrap();
    assert_eq!(bodies(&received), ["one"]);
    assert_eq!(received[0].id, ids[1]);
    assert!(store.commit(Vec::new()).await.unwrap().is_empty());
}
