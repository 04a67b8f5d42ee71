//! Spans: put (a span recorded twice stays once), read by trace in start
//! order, found by request id, trimmed by age, and removed with their app.

use super::Fixture;
use super::apps::version;
use crate::SpanRecord;

fn span(app: &str, trace: &str, id: &str, parent: Option<&str>, start_ns: i64) -> SpanRecord {
    SpanRecord {
        trace_id: trace.repeat(32 / trace.len()),
        span_id: id.repeat(16 / id.len()),
        parent_id: parent.map(|p| p.repeat(16 / p.len())),
        app: app.into(),
        name: format!("{app}/{id}"),
        kind: "server".into(),
        start_ns,
        end_ns: start_ns + 1_000,
        error: (id == "e").then(|| "ValueError: no".to_owned()),
        request_id: Some(format!("req-{id}")),
        detail: format!(r#"{{"span":"{id}"}}"#),
    }
}

fn ids(spans: &[SpanRecord]) -> Vec<&str> {
    spans.iter().map(|s| &s.span_id[..1]).collect()
}

pub async fn spans_are_kept_by_trace_found_by_request_and_trimmed(f: &dyn Fixture) {
    let store = f.open().await;
    store.activate(version("a", 128)).await.unwrap();
    store.activate(version("b", 128)).await.unwrap();
    assert!(
        store
            .trace_spans(&"1".repeat(32), 10)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .put_spans(vec![
            span("a", "1", "c", Some("b"), 3_000_000_000),
            span("a", "1", "b", None, 1_000_000_000),
            span("a", "1", "e", Some("b"), 2_000_000_000),
            span("b", "2", "d", None, 5_000_000_000),
        ])
        .await
        .unwrap();
    // Recorded again (an export retried): kept once, as first recorded.
    let mut again = span("a", "1", "b", None, 1_000_000_000);
    again.name = "changed".into();
    store.put_spans(vec![again]).await.unwrap();
    store.put_spans(Vec::new()).await.unwrap();

    let trace = store.trace_spans(&"1".repeat(32), 10).await.unwrap();
    assert_eq!(ids(&trace), ["b", "e", "c"]);
    assert_eq!(trace[0], span("a", "1", "b", None, 1_000_000_000));
    assert_eq!(trace[1].error.as_deref(), Some("ValueError: no"));
    assert_eq!(trace[2].parent_id.as_deref(), Some(&*"b".repeat(16)));
    assert_eq!(
        ids(&store.trace_spans(&"1".repeat(32), 2).await.unwrap()),
        ["b", "e"]
    );

    assert_eq!(
        store.trace_of_request("req-c").await.unwrap(),
        Some("1".repeat(32))
    );
    assert_eq!(store.trace_of_request("req-none").await.unwrap(), None);

    // Reopened: still there.
    let store = f.open().await;
    assert_eq!(
        store.trace_spans(&"2".repeat(32), 10).await.unwrap().len(),
        1
    );

    assert_eq!(store.trim_spans(2_500_000_000).await.unwrap(), 2);
    assert_eq!(
        ids(&store.trace_spans(&"1".repeat(32), 10).await.unwrap()),
        ["c"]
    );

    store.delete_app("a").await.unwrap();
    assert!(
        store
            .trace_spans(&"1".repeat(32), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.trace_spans(&"2".repeat(32), 10).await.unwrap().len(),
        1
    );
}
