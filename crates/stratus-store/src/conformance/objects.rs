//! Objects: bucket names unique across apps, objects put, replaced,
//! listed in the byte order of their keys and deleted together with the
//! events they cause, buckets deleted only when empty (unless forced),
//! usage per app, and all of it removed with the app.

use super::Fixture;
use super::apps::version;
use crate::{BucketCreated, BucketDeleted, BucketRecord, NewEvent, NoSuchBucket, ObjectRecord};

fn bucket(name: &str, app: &str, declared_as: Option<&str>, spec: &str) -> BucketRecord {
    BucketRecord {
        name: name.into(),
        app: app.into(),
        declared_as: declared_as.map(str::to_owned),
        spec: spec.into(),
        created_ms: 5,
    }
}

fn object(bucket: &str, key: &str, size: u64) -> ObjectRecord {
    ObjectRecord {
        bucket: bucket.into(),
        key: key.into(),
        size,
        etag: format!("\"{size:032x}\""),
        blob: format!("blob-{bucket}-{key}-{size}"),
        modified_ms: 10 + size as i64,
        headers: r#"{"content-type":"text/plain","x-amz-meta-by":"test"}"#.into(),
    }
}

/// An event of function `on-upload` of app `a`.
fn event(request_id: &str) -> NewEvent {
    NewEvent {
        app: "a".into(),
        function: "on-upload".into(),
        payload: format!("{{\"request\":\"{request_id}\"}}").into_bytes(),
        request_id: request_id.into(),
        source: "invoke".into(),
        created_ms: 1,
        not_before_ms: 0,
        trace: None,
    }
}

fn keys(objects: &[ObjectRecord]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

pub async fn bucket_names_are_unique_across_apps(f: &dyn Fixture) {
    let store = f.open().await;
    let photos = bucket("photos", "a", Some("photos"), r#"{"public":false}"#);
    assert_eq!(
        store.create_bucket(photos.clone()).await.unwrap(),
        BucketCreated::Created
    );
    // Another app, the same name: the first keeps it.
    assert_eq!(
        store
            .create_bucket(bucket("photos", "b", None, "{}"))
            .await
            .unwrap(),
        BucketCreated::Taken(photos.clone())
    );
    // The same app again: taken too, and unchanged.
    assert_eq!(
        store
            .create_bucket(bucket("photos", "a", None, r#"{"other":1}"#))
            .await
            .unwrap(),
        BucketCreated::Taken(photos.clone())
    );
    let logs = bucket("logs", "a", None, "{}");
    let files = bucket("b-files", "b", Some("files"), "{}");
    for b in [&logs, &files] {
        assert_eq!(
            store.create_bucket(b.clone()).await.unwrap(),
            BucketCreated::Created
        );
    }

    assert_eq!(
        store.get_bucket("photos").await.unwrap(),
        Some(photos.clone())
    );
    assert_eq!(store.get_bucket("nope").await.unwrap(), None);
    assert_eq!(
        store.list_buckets(Some("a")).await.unwrap(),
        [logs.clone(), photos.clone()],
        "by name"
    );
    assert_eq!(
        store.list_buckets(Some("b")).await.unwrap(),
        std::slice::from_ref(&files)
    );
    assert!(store.list_buckets(Some("c")).await.unwrap().is_empty());
    assert_eq!(
        store.list_buckets(None).await.unwrap(),
        [files.clone(), logs.clone(), photos.clone()]
    );

    // An update replaces the settings, not the app or the creation time.
    let changed = BucketRecord {
        app: "b".into(),
        declared_as: None,
        spec: r#"{"public":true}"#.into(),
        created_ms: 99,
        ..photos.clone()
    };
    assert!(store.update_bucket(changed).await.unwrap());
    let updated = BucketRecord {
        declared_as: None,
        spec: r#"{"public":true}"#.into(),
        ..photos.clone()
    };
    assert_eq!(
        store.get_bucket("photos").await.unwrap(),
        Some(updated.clone())
    );
    assert!(
        !store
            .update_bucket(bucket("nope", "a", None, "{}"))
            .await
            .unwrap()
    );
    assert_eq!(store.get_bucket("nope").await.unwrap(), None);

    // Reopened: still there.
    let store = f.open().await;
    assert_eq!(
        store.list_buckets(None).await.unwrap(),
        [files, logs, updated]
    );
}

pub async fn objects_are_put_replaced_and_listed_in_byte_order(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .create_bucket(bucket("photos", "a", None, "{}"))
        .await
        .unwrap();
    store
        .create_bucket(bucket("other", "a", None, "{}"))
        .await
        .unwrap();
    // In the byte order of their keys, which is not the order of any
    // language's collation: upper case first, punctuation by its code,
    // non-ASCII after every ASCII character.
    let sorted = [
        "Zebra",
        "a%b",
        "a/%_x",
        "a/1.jpg",
        "a/2.jpg",
        "a\\d",
        "a_c",
        "ab",
        "z",
        "é",
        "\u{10FFFF}",
    ];
    let mut shuffled = sorted;
    shuffled.reverse();
    shuffled.swap(0, 5);
    for (size, key) in shuffled.iter().enumerate() {
        assert_eq!(
            store
                .put_object(object("photos", key, size as u64), Vec::new())
                .await
                .unwrap(),
            Ok(None),
            "{key} is new"
        );
    }
    store
        .put_object(object("other", "ab", 1), Vec::new())
        .await
        .unwrap()
        .unwrap();

    // Replaced: the object it replaced comes back, its blob to remove.
    let old = store.get_object("photos", "ab").await.unwrap().unwrap();
    let new = object("photos", "ab", 100);
    assert_eq!(
        store.put_object(new.clone(), Vec::new()).await.unwrap(),
        Ok(Some(old))
    );
    assert_eq!(
        store.get_object("photos", "ab").await.unwrap(),
        Some(new.clone())
    );
    assert_eq!(store.get_object("photos", "nope").await.unwrap(), None);
    assert_eq!(store.get_object("nope", "ab").await.unwrap(), None);
    assert_eq!(
        store.get_object("other", "ab").await.unwrap(),
        Some(object("other", "ab", 1))
    );

    let list = |prefix: &'static str, after: Option<&'static str>, limit: u32| {
        let store = store.clone();
        async move {
            store
                .list_objects("photos", prefix, after, limit)
                .await
                .unwrap()
        }
    };
    let all = list("", None, 100).await;
    assert_eq!(keys(&all), sorted);
    assert!(all.contains(&new), "whole records");

    // A prefix is matched literally: `%`, `_` and `\` are no wildcards.
    assert_eq!(
        keys(&list("a/", None, 100).await),
        ["a/%_x", "a/1.jpg", "a/2.jpg"]
    );
    assert_eq!(keys(&list("a%", None, 100).await), ["a%b"]);
    assert_eq!(keys(&list("a_", None, 100).await), ["a_c"]);
    assert_eq!(keys(&list("a/%_", None, 100).await), ["a/%_x"]);
    assert_eq!(keys(&list("a\\", None, 100).await), ["a\\d"]);
    assert_eq!(keys(&list("é", None, 100).await), ["é"]);
    assert_eq!(keys(&list("\u{10FFFF}", None, 100).await), ["\u{10FFFF}"]);
    assert_eq!(keys(&list("ab", None, 100).await), ["ab"]);
    assert!(list("nothing", None, 100).await.is_empty());

    // `after` is exclusive, and need not be a key.
    assert_eq!(
        keys(&list("", Some("a/2.jpg"), 100).await),
        ["a\\d", "a_c", "ab", "z", "é", "\u{10FFFF}"]
    );
    assert_eq!(
        keys(&list("", Some("a0"), 100).await),
        ["a\\d", "a_c", "ab", "z", "é", "\u{10FFFF}"]
    );
    assert_eq!(keys(&list("a/", Some("a/1.jpg"), 100).await), ["a/2.jpg"]);
    assert!(list("a/", Some("a/2.jpg"), 100).await.is_empty());
    assert!(list("", Some("\u{10FFFF}"), 100).await.is_empty());

    // `limit` bounds the rows; pages follow each other with `after`.
    assert_eq!(keys(&list("", None, 2).await), ["Zebra", "a%b"]);
    assert!(list("", None, 0).await.is_empty());
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_objects("photos", "", after.as_deref(), 3)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        paged.extend(page);
    }
    assert_eq!(paged, all);

    // No bucket, no object: nothing stored, no event queued.
    assert_eq!(
        store
            .put_object(object("nope", "k", 1), vec![event("r1")])
            .await
            .unwrap(),
        Err(NoSuchBucket)
    );
    assert_eq!(store.get_object("nope", "k").await.unwrap(), None);
    assert!(
        store
            .list_objects("nope", "", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.count_events(None, 0).await.unwrap().is_empty());

    // Reopened: still there.
    let store = f.open().await;
    assert_eq!(
        store.list_objects("photos", "", None, 100).await.unwrap(),
        all
    );
}

pub async fn objects_and_their_events_commit_together(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .create_bucket(bucket("photos", "a", None, "{}"))
        .await
        .unwrap();
    let first = object("photos", "k", 3);
    assert_eq!(
        store
            .put_object(first.clone(), vec![event("put-1")])
            .await
            .unwrap(),
        Ok(None)
    );
    let claimed = store.claim_events(10, 10, 1_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (
            claimed[0].app.as_str(),
            claimed[0].function.as_str(),
            claimed[0].request_id.as_str()
        ),
        ("a", "on-upload", "put-1")
    );
    assert_eq!(claimed[0].payload, br#"{"request":"put-1"}"#);

    let second = object("photos", "k", 4);
    assert_eq!(
        store
            .put_object(second.clone(), vec![event("put-2")])
            .await
            .unwrap(),
        Ok(Some(first))
    );

    // Deleting what is not there queues nothing.
    assert_eq!(
        store
            .delete_object("photos", "missing", vec![event("delete-missing")])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .delete_object("nope", "k", vec![event("delete-nope")])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .delete_object("photos", "k", vec![event("delete-k")])
            .await
            .unwrap(),
        Some(second)
    );
    assert_eq!(store.get_object("photos", "k").await.unwrap(), None);
    assert_eq!(
        store
            .delete_object("photos", "k", vec![event("delete-k-again")])
            .await
            .unwrap(),
        None
    );

    let claimed = store.claim_events(10, 10, 1_000).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|e| e.request_id.as_str())
            .collect::<Vec<_>>(),
        ["put-2", "delete-k"]
    );
    let counts = store.count_events(Some("a"), 10).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (counts[0].queued, counts[0].in_flight, counts[0].dead),
        (0, 3, 0)
    );

    // Several events of one write, and none at all.
    assert_eq!(
        store
            .put_object(object("photos", "m", 1), vec![event("m-1"), event("m-2")])
            .await
            .unwrap(),
        Ok(None)
    );
    assert_eq!(
        store
            .put_object(object("photos", "n", 1), Vec::new())
            .await
            .unwrap(),
        Ok(None)
    );
    assert_eq!(store.claim_events(10, 10, 1_000).await.unwrap().len(), 2);
}

pub async fn a_bucket_is_deleted_when_empty_or_by_force(f: &dyn Fixture) {
    let store = f.open().await;
    for name in ["photos", "empty"] {
        store
            .create_bucket(bucket(name, "a", None, "{}"))
            .await
            .unwrap();
    }
    let objects = [
        object("photos", "a", 1),
        object("photos", "b", 2),
        object("photos", "c/d", 3),
    ];
    for o in &objects {
        store
            .put_object(o.clone(), Vec::new())
            .await
            .unwrap()
            .unwrap();
    }

    assert_eq!(
        store.delete_bucket("photos", false).await.unwrap(),
        BucketDeleted::NotEmpty(3)
    );
    assert!(store.get_bucket("photos").await.unwrap().is_some());
    assert_eq!(
        store
            .list_objects("photos", "", None, 100)
            .await
            .unwrap()
            .len(),
        3,
        "nothing was deleted"
    );

    assert_eq!(
        store.delete_bucket("nope", false).await.unwrap(),
        BucketDeleted::Missing
    );
    assert_eq!(
        store.delete_bucket("nope", true).await.unwrap(),
        BucketDeleted::Missing
    );
    assert_eq!(
        store.delete_bucket("empty", false).await.unwrap(),
        BucketDeleted::Deleted(Vec::new())
    );
    assert_eq!(store.get_bucket("empty").await.unwrap(), None);

    let BucketDeleted::Deleted(mut blobs) = store.delete_bucket("photos", true).await.unwrap()
    else {
        panic!("a forced delete deletes");
    };
    blobs.sort();
    let mut expected: Vec<String> = objects.iter().map(|o| o.blob.clone()).collect();
    expected.sort();
    assert_eq!(blobs, expected, "the blobs to remove");
    assert_eq!(store.get_bucket("photos").await.unwrap(), None);
    assert_eq!(store.get_object("photos", "a").await.unwrap(), None);
    assert!(
        store
            .list_objects("photos", "", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.object_usage(None).await.unwrap().is_empty());

    // The name is free again, for any app; a new bucket of the name starts
    // empty.
    assert_eq!(
        store
            .create_bucket(bucket("photos", "b", None, "{}"))
            .await
            .unwrap(),
        BucketCreated::Created
    );
    assert!(
        store
            .list_objects("photos", "", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn object_usage_counts_buckets_objects_and_bytes_per_app(f: &dyn Fixture) {
    let store = f.open().await;
    assert!(store.object_usage(None).await.unwrap().is_empty());
    for (name, app) in [("a-one", "a"), ("a-two", "a"), ("b-one", "b")] {
        store
            .create_bucket(bucket(name, app, None, "{}"))
            .await
            .unwrap();
    }
    for o in [
        object("a-one", "x", 10),
        object("a-one", "y", 20),
        object("b-one", "x", 5),
    ] {
        store.put_object(o, Vec::new()).await.unwrap().unwrap();
    }
    let usage = |app: &str, buckets: u64, objects: u64, bytes: u64| crate::ObjectUsage {
        app: app.into(),
        buckets,
        objects,
        bytes,
    };
    assert_eq!(
        store.object_usage(None).await.unwrap(),
        [usage("a", 2, 2, 30), usage("b", 1, 1, 5)]
    );
    assert_eq!(
        store.object_usage(Some("b")).await.unwrap(),
        [usage("b", 1, 1, 5)]
    );
    assert!(store.object_usage(Some("c")).await.unwrap().is_empty());

    // A replaced object counts as it is now; an empty bucket counts too.
    store
        .put_object(object("a-one", "x", 7), Vec::new())
        .await
        .unwrap()
        .unwrap();
    store
        .create_bucket(bucket("c-one", "c", None, "{}"))
        .await
        .unwrap();
    assert_eq!(
        store.object_usage(None).await.unwrap(),
        [
            usage("a", 2, 2, 27),
            usage("b", 1, 1, 5),
            usage("c", 1, 0, 0)
        ]
    );
    store.delete_object("b-one", "x", Vec::new()).await.unwrap();
    assert_eq!(
        store.object_usage(Some("b")).await.unwrap(),
        [usage("b", 1, 0, 0)]
    );
}

pub async fn deleting_an_app_removes_its_buckets_and_objects(f: &dyn Fixture) {
    let store = f.open().await;
    store.activate(version("a", 128)).await.unwrap();
    store.activate(version("b", 128)).await.unwrap();
    for (name, app) in [("a-files", "a"), ("a-more", "a"), ("b-files", "b")] {
        store
            .create_bucket(bucket(name, app, None, "{}"))
            .await
            .unwrap();
        store
            .put_object(object(name, "k", 1), Vec::new())
            .await
            .unwrap()
            .unwrap();
    }

    // Reopened: still there.
    let store = f.open().await;
    assert_eq!(store.list_buckets(None).await.unwrap().len(), 3);
    assert_eq!(
        store.get_object("a-files", "k").await.unwrap(),
        Some(object("a-files", "k", 1))
    );

    assert!(store.delete_app("a").await.unwrap());
    assert!(store.list_buckets(Some("a")).await.unwrap().is_empty());
    assert_eq!(store.get_bucket("a-files").await.unwrap(), None);
    assert_eq!(store.get_object("a-files", "k").await.unwrap(), None);
    assert!(
        store
            .list_objects("a-more", "", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The other app's are untouched.
    assert_eq!(store.list_buckets(Some("b")).await.unwrap().len(), 1);
    assert_eq!(
        store.get_object("b-files", "k").await.unwrap(),
        Some(object("b-files", "k", 1))
    );

    // Reopened: still gone. The names are free again.
    let store = f.open().await;
    assert_eq!(
        store.list_buckets(None).await.unwrap(),
        [bucket("b-files", "b", None, "{}")]
    );
    assert_eq!(store.object_usage(None).await.unwrap().len(), 1);
    assert_eq!(
        store
            .create_bucket(bucket("a-files", "b", None, "{}"))
            .await
            .unwrap(),
        BucketCreated::Created
    );
    assert!(
        store
            .list_objects("a-files", "", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}
