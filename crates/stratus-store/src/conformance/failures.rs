//! Failures: put (replacing by id), listed newest first per app or
//! function, got by id alone, trimmed by age and per function, and removed
//! with their app.

use super::Fixture;
use super::apps::version;
use crate::FailureRecord;

fn failure(app: &str, function: &str, id: &str, at_ms: i64) -> FailureRecord {
    FailureRecord {
        id: id.into(),
        app: app.into(),
        function: function.into(),
        version: 2,
        request_id: format!("req-{id}"),
        at_ms,
        outcome: "error".into(),
        error_type: "ValueError".into(),
        event: format!(r#"{{"n":"{id}"}}"#).into_bytes(),
        scene: format!(r#"{{"failure":"{id}"}}"#),
    }
}

fn ids(failures: &[FailureRecord]) -> Vec<&str> {
    failures.iter().map(|f| f.id.as_str()).collect()
}

pub async fn failures_are_kept_listed_trimmed_and_removed_with_their_app(f: &dyn Fixture) {
    let store = f.open().await;
    store.activate(version("a", 128)).await.unwrap();
    store.activate(version("b", 128)).await.unwrap();
    assert!(store.list_failures("a", None, 10).await.unwrap().is_empty());
    for (function, id, at) in [
        ("f", "0001", 10),
        ("f", "0002", 20),
        ("g", "0003", 30),
        ("f", "0004", 40),
    ] {
        store
            .put_failure(failure("a", function, id, at))
            .await
            .unwrap();
    }
    store
        .put_failure(failure("b", "f", "0005", 50))
        .await
        .unwrap();
    // A put with the same id replaces.
    let mut replaced = failure("a", "f", "0004", 40);
    replaced.scene = r#"{"failure":"again"}"#.into();
    store.put_failure(replaced.clone()).await.unwrap();

    assert_eq!(
        ids(&store.list_failures("a", None, 10).await.unwrap()),
        ["0004", "0003", "0002", "0001"]
    );
    assert_eq!(
        ids(&store.list_failures("a", Some("f"), 2).await.unwrap()),
        ["0004", "0002"]
    );
    assert_eq!(store.get_failure("0004").await.unwrap(), Some(replaced));
    assert_eq!(
        store.get_failure("0005").await.unwrap(),
        Some(failure("b", "f", "0005", 50)),
        "got by id, whichever app"
    );
    assert_eq!(store.get_failure("none").await.unwrap(), None);

    // Per function, the newest one of `f` is kept; and nothing older than 25.
    assert_eq!(store.trim_failures("a", 1, 25).await.unwrap(), 2);
    assert_eq!(
        ids(&store.list_failures("a", None, 10).await.unwrap()),
        ["0004", "0003"]
    );
    assert_eq!(store.trim_failures("a", 10, 35).await.unwrap(), 1);
    assert_eq!(
        ids(&store.list_failures("a", None, 10).await.unwrap()),
        ["0004"]
    );
    assert_eq!(store.list_failures("b", None, 10).await.unwrap().len(), 1);

    assert!(store.delete_app("a").await.unwrap());
    assert!(store.list_failures("a", None, 10).await.unwrap().is_empty());
    assert_eq!(store.get_failure("0004").await.unwrap(), None);
}
