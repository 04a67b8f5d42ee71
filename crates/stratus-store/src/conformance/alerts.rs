//! Alerts: states put and replaced, listed by name, their changes kept
//! newest first and trimmed, states of alerts no longer declared
//! forgotten, and all of it removed with the app.

use super::Fixture;
use super::apps::version;
use crate::{AlertChange, AlertRecord};

fn state(app: &str, name: &str, state: &str, at: i64) -> AlertRecord {
    AlertRecord {
        app: app.into(),
        name: name.into(),
        state: state.into(),
        since_ms: at,
        evaluated_ms: at + 5,
        detail: format!(r#"{{"value":{at}}}"#),
    }
}

fn change(app: &str, name: &str, to: &str, at: i64) -> AlertChange {
    AlertChange {
        app: app.into(),
        name: name.into(),
        at_ms: at,
        from: "ok".into(),
        to: to.into(),
        detail: "{}".into(),
    }
}

pub async fn alert_states_and_changes_are_kept_trimmed_and_removed_with_their_app(f: &dyn Fixture) {
    let store = f.open().await;
    store.activate(version("a", 128)).await.unwrap();
    store.activate(version("b", 128)).await.unwrap();
    assert!(store.list_alerts("a").await.unwrap().is_empty());
    store
        .put_alerts(
            vec![
                state("a", "slow", "ok", 10),
                state("a", "errors", "pending", 10),
                state("b", "errors", "ok", 10),
            ],
            vec![change("a", "errors", "pending", 10)],
        )
        .await
        .unwrap();
    // A later evaluation replaces the state and adds to the history.
    store
        .put_alerts(
            vec![state("a", "errors", "firing", 20)],
            vec![
                change("a", "errors", "firing", 20),
                change("b", "errors", "firing", 20),
            ],
        )
        .await
        .unwrap();
    let states = store.list_alerts("a").await.unwrap();
    assert_eq!(
        states,
        [
            state("a", "errors", "firing", 20),
            state("a", "slow", "ok", 10)
        ]
    );
    let history = store.alert_history("a", 10).await.unwrap();
    assert_eq!(
        history,
        [
            change("a", "errors", "firing", 20),
            change("a", "errors", "pending", 10)
        ]
    );
    assert_eq!(store.alert_history("a", 1).await.unwrap().len(), 1);

    // Reopened: still there.
    let store = f.open().await;
    assert_eq!(store.list_alerts("b").await.unwrap().len(), 1);

    // `slow` is no longer declared; one change is kept.
    assert_eq!(
        store
            .trim_alerts("a", &["errors".to_owned()], 1)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store.list_alerts("a").await.unwrap(),
        [state("a", "errors", "firing", 20)]
    );
    assert_eq!(
        store.alert_history("a", 10).await.unwrap(),
        [change("a", "errors", "firing", 20)]
    );

    store.delete_app("a").await.unwrap();
    assert!(store.list_alerts("a").await.unwrap().is_empty());
    assert!(store.alert_history("a", 10).await.unwrap().is_empty());
    assert_eq!(store.list_alerts("b").await.unwrap().len(), 1);
    assert_eq!(store.alert_history("b", 10).await.unwrap().len(), 1);
}
