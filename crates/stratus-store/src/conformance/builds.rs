//! Builds: put (replacing by app and id), listed newest first, got by id
//! within their app, trimmed to the newest, and removed with their app.

use super::Fixture;
use super::apps::version;
use crate::{BuildRecord, BuildStatus};

fn build(app: &str, id: &str, status: BuildStatus) -> BuildRecord {
    let finished = status != BuildStatus::Running;
    BuildRecord {
        app: app.into(),
        id: id.into(),
        started_ms: 10,
        finished_ms: finished.then_some(20),
        status,
        version: (status == BuildStatus::Succeeded).then_some(3),
        detail: format!(r#"{{"build":"{id}","steps":[]}}"#),
    }
}

fn ids(builds: &[BuildRecord]) -> Vec<&str> {
    builds.iter().map(|b| b.id.as_str()).collect()
}

/// Builds are put and replaced by app and id, listed newest (latest start,
/// then greatest id byte by byte) first up to a limit, got by id only within their app,
/// kept across reopening, trimmed to the newest, and removed with their
/// app.
pub async fn builds_are_put_replaced_listed_trimmed_and_removed_with_their_app(f: &dyn Fixture) {
    let store = f.open().await;
    store.activate(version("a", 128)).await.unwrap();
    store.activate(version("b", 128)).await.unwrap();
    assert!(store.list_builds("a", 10).await.unwrap().is_empty());
    for id in ["0002", "0001", "0004", "0003"] {
        store
            .put_build(build("a", id, BuildStatus::Running))
            .await
            .unwrap();
    }
    store
        .put_build(build("b", "0009", BuildStatus::Failed))
        .await
        .unwrap();
    let done = build("a", "0003", BuildStatus::Succeeded);
    store.put_build(done.clone()).await.unwrap();

    assert_eq!(
        ids(&store.list_builds("a", 10).await.unwrap()),
        ["0004", "0003", "0002", "0001"]
    );
    assert_eq!(
        store.list_builds("a", 2).await.unwrap(),
        [build("a", "0004", BuildStatus::Running), done.clone()],
        "the newest, replaced by id"
    );
    assert_eq!(store.get_build("a", "0003").await.unwrap(), Some(done));
    assert_eq!(store.get_build("a", "0009").await.unwrap(), None);
    assert_eq!(
        store.get_build("b", "0009").await.unwrap(),
        Some(build("b", "0009", BuildStatus::Failed))
    );
    // Greatest as bytes compare (`b` after `C`), whatever the database's
    // collation.
    store
        .put_build(build("a", "0004b", BuildStatus::Failed))
        .await
        .unwrap();
    store
        .put_build(build("a", "0004C", BuildStatus::Failed))
        .await
        .unwrap();
    assert_eq!(
        ids(&store.list_builds("a", 3).await.unwrap()),
        ["0004b", "0004C", "0004"]
    );
    drop(store);

    let store = f.open().await;
    assert_eq!(store.trim_builds("a", 2).await.unwrap(), 4);
    assert_eq!(
        ids(&store.list_builds("a", 10).await.unwrap()),
        ["0004b", "0004C"]
    );
    assert_eq!(store.trim_builds("a", 2).await.unwrap(), 0);
    assert_eq!(store.list_builds("b", 10).await.unwrap().len(), 1);

    assert!(store.delete_app("a").await.unwrap());
    assert!(store.list_builds("a", 10).await.unwrap().is_empty());
    assert!(store.get_build("a", "0004b").await.unwrap().is_none());
    assert_eq!(
        ids(&store.list_builds("b", 10).await.unwrap()),
        ["0009"],
        "another app's builds stay"
    );
    // Started later, listed first, whatever its id: ids tell the start only
    // to the second.
    let later = BuildRecord {
        started_ms: 30,
        ..build("b", "0001", BuildStatus::Running)
    };
    store.put_build(later).await.unwrap();
    assert_eq!(
        ids(&store.list_builds("b", 10).await.unwrap()),
        ["0001", "0009"]
    );
    assert_eq!(store.trim_builds("b", 1).await.unwrap(), 1);
    assert_eq!(ids(&store.list_builds("b", 10).await.unwrap()), ["0001"]);
}
