//! Objects: bucket names unique across apps, objects put, replaced,
//! listed in the byte order of their keys and deleted together with the
//! events they cause, buckets deleted only when empty (unless forced),
//! usage per app, and all of it removed with the app. Multipart uploads:
//! started only into a bucket, their parts kept and replaced, listed,
//! completed into an object (with its events) or aborted once, and gone
//! with their bucket or app.

use super::Fixture;
use super::apps::version;
use crate::{
    BucketCreated, BucketDeleted, BucketRecord, Completed, NewEvent, NoSuchBucket, NoSuchUpload,
    ObjectRecord, PartRecord, UploadRecord,
};

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

fn upload(upload_id: &str, bucket: &str, key: &str) -> UploadRecord {
    UploadRecord {
        upload_id: upload_id.into(),
        bucket: bucket.into(),
        key: key.into(),
        headers: r#"{"content-type":"application/zip","x-amz-meta-by":"test"}"#.into(),
        created_ms: 20,
    }
}

fn part(upload_id: &str, number: u32, size: u64) -> PartRecord {
    PartRecord {
        upload_id: upload_id.into(),
        number,
        size,
        etag: format!("\"{size:032x}\""),
        blob: format!("part-{upload_id}-{number}-{size}"),
        modified_ms: 30 + size as i64,
    }
}

fn numbers(parts: &[PartRecord]) -> Vec<u32> {
    parts.iter().map(|p| p.number).collect()
}

fn ids(uploads: &[UploadRecord]) -> Vec<&str> {
    uploads.iter().map(|u| u.upload_id.as_str()).collect()
}

/// `blobs`, sorted: the store promises no order.
fn sorted(mut blobs: Vec<String>) -> Vec<String> {
    blobs.sort();
    blobs
}

fn blobs_of<'a>(
    objects: impl IntoIterator<Item = &'a ObjectRecord>,
    parts: impl IntoIterator<Item = &'a PartRecord>,
) -> Vec<String> {
    sorted(
        objects
            .into_iter()
            .map(|o| o.blob.clone())
            .chain(parts.into_iter().map(|p| p.blob.clone()))
            .collect(),
    )
}

pub async fn an_upload_keeps_its_parts_until_it_is_aborted(f: &dyn Fixture) {
    let store = f.open().await;
    // No bucket, no upload.
    assert_eq!(
        store
            .create_upload(upload("u1", "photos", "big.zip"))
            .await
            .unwrap(),
        Err(NoSuchBucket)
    );
    assert_eq!(store.get_upload("u1").await.unwrap(), None);

    store
        .create_bucket(bucket("photos", "a", None, "{}"))
        .await
        .unwrap();
    for u in [
        upload("u1", "photos", "big.zip"),
        upload("u2", "photos", "big.zip"),
    ] {
        assert_eq!(store.create_upload(u).await.unwrap(), Ok(()));
    }
    assert_eq!(
        store.get_upload("u1").await.unwrap(),
        Some(upload("u1", "photos", "big.zip"))
    );
    assert_eq!(store.get_upload("nope").await.unwrap(), None);

    // Parts by number, not by text: 10 after 9, 10,000 last.
    for (number, size) in [(2, 2), (10, 10), (1, 1), (9, 9), (10_000, 7), (3, 3)] {
        assert_eq!(
            store.put_part(part("u1", number, size)).await.unwrap(),
            Ok(None),
            "part {number} is new"
        );
    }
    store.put_part(part("u2", 1, 50)).await.unwrap().unwrap();
    // A part of the same number replaces the one before: it comes back,
    // its blob to remove.
    assert_eq!(
        store.put_part(part("u1", 2, 200)).await.unwrap(),
        Ok(Some(part("u1", 2, 2)))
    );
    assert_eq!(
        store.put_part(part("u1", 2, 201)).await.unwrap(),
        Ok(Some(part("u1", 2, 200)))
    );
    // Of no upload: refused, nothing kept.
    assert_eq!(
        store.put_part(part("nope", 1, 1)).await.unwrap(),
        Err(NoSuchUpload)
    );
    assert!(store.list_parts("nope", 0, 100).await.unwrap().is_empty());

    let all = store.list_parts("u1", 0, 100).await.unwrap();
    assert_eq!(numbers(&all), [1, 2, 3, 9, 10, 10_000]);
    assert_eq!(all[1], part("u1", 2, 201), "whole records, as replaced");
    assert_eq!(
        store.list_parts("u2", 0, 100).await.unwrap(),
        [part("u2", 1, 50)],
        "each upload its own parts"
    );

    // `after` is exclusive and need not be a part; `limit` bounds them.
    assert_eq!(
        numbers(&store.list_parts("u1", 2, 100).await.unwrap()),
        [3, 9, 10, 10_000]
    );
    assert_eq!(
        numbers(&store.list_parts("u1", 4, 2).await.unwrap()),
        [9, 10]
    );
    assert!(
        store
            .list_parts("u1", 10_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_parts("u1", 0, 0).await.unwrap().is_empty());
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_parts("u1", after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.number;
        paged.extend(page);
    }
    assert_eq!(paged, all);

    // Reopened: still there.
    let store = f.open().await;
    assert_eq!(store.list_parts("u1", 0, 100).await.unwrap(), all);
    assert_eq!(
        store.get_upload("u2").await.unwrap(),
        Some(upload("u2", "photos", "big.zip"))
    );

    // Aborted: the blobs of its parts as they are now, once.
    assert_eq!(
        store.abort_upload("u1").await.unwrap().map(sorted),
        Some(blobs_of([], &all))
    );
    assert_eq!(store.abort_upload("u1").await.unwrap(), None);
    assert_eq!(store.abort_upload("nope").await.unwrap(), None);
    assert_eq!(store.get_upload("u1").await.unwrap(), None);
    assert!(store.list_parts("u1", 0, 100).await.unwrap().is_empty());
    assert_eq!(
        store.put_part(part("u1", 4, 4)).await.unwrap(),
        Err(NoSuchUpload),
        "no part of an aborted upload"
    );
    assert!(store.list_parts("u1", 0, 100).await.unwrap().is_empty());
    // Nor its completion: no object, no event.
    assert_eq!(
        store
            .complete_upload("u1", object("photos", "big.zip", 9), vec![event("late")])
            .await
            .unwrap(),
        Err(NoSuchUpload)
    );
    assert_eq!(store.get_object("photos", "big.zip").await.unwrap(), None);
    assert!(store.count_events(None, 0).await.unwrap().is_empty());

    // The other upload is untouched; an upload without parts aborts too.
    assert_eq!(
        store.list_parts("u2", 0, 100).await.unwrap(),
        [part("u2", 1, 50)]
    );
    store
        .create_upload(upload("u3", "photos", "empty"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.abort_upload("u3").await.unwrap(), Some(Vec::new()));

    // Reopened: still gone.
    let store = f.open().await;
    assert_eq!(store.get_upload("u1").await.unwrap(), None);
    assert_eq!(store.get_upload("u3").await.unwrap(), None);
    assert!(store.list_parts("u1", 0, 100).await.unwrap().is_empty());
}

pub async fn uploads_are_listed_by_key_then_id_in_byte_order(f: &dyn Fixture) {
    let store = f.open().await;
    for name in ["photos", "other"] {
        store
            .create_bucket(bucket(name, "a", None, "{}"))
            .await
            .unwrap();
    }
    // Started out of order; ids order as bytes too (upper case first).
    for (id, key) in [
        ("u8", "é"),
        ("u3", "a%b"),
        ("u5", "ab"),
        ("u2", "a/x"),
        ("u1", "a%b"),
        ("u9", "a_c"),
        ("U0", "a%b"),
        ("u4", "z"),
        ("u6", "\u{10FFFF}"),
    ] {
        store
            .create_upload(upload(id, "photos", key))
            .await
            .unwrap()
            .unwrap();
    }
    store
        .create_upload(upload("o1", "other", "a%b"))
        .await
        .unwrap()
        .unwrap();

    let list =
        |prefix: &'static str, after: Option<(&'static str, Option<&'static str>)>, limit| {
            let store = store.clone();
            async move {
                store
                    .list_uploads("photos", prefix, after, limit)
                    .await
                    .unwrap()
            }
        };
    let all = list("", None, 100).await;
    assert_eq!(
        ids(&all),
        ["U0", "u1", "u3", "u2", "u9", "u5", "u4", "u8", "u6"]
    );
    assert!(
        all.contains(&upload("u2", "photos", "a/x")),
        "whole records"
    );

    // A prefix is matched literally: `%` and `_` are no wildcards.
    assert_eq!(ids(&list("a%", None, 100).await), ["U0", "u1", "u3"]);
    assert_eq!(ids(&list("a_", None, 100).await), ["u9"]);
    assert_eq!(ids(&list("a/", None, 100).await), ["u2"]);
    assert_eq!(
        ids(&list("a", None, 100).await),
        ["U0", "u1", "u3", "u2", "u9", "u5"]
    );
    assert_eq!(ids(&list("é", None, 100).await), ["u8"]);
    assert_eq!(ids(&list("\u{10FFFF}", None, 100).await), ["u6"]);
    assert!(list("nothing", None, 100).await.is_empty());

    // After a key and an id: past that upload, the rest of its key next.
    assert_eq!(
        ids(&list("", Some(("a%b", Some("U0"))), 100).await),
        ["u1", "u3", "u2", "u9", "u5", "u4", "u8", "u6"]
    );
    assert_eq!(
        ids(&list("", Some(("a%b", Some("u1"))), 100).await),
        ["u3", "u2", "u9", "u5", "u4", "u8", "u6"]
    );
    // An id that is none of the key's still places it.
    assert_eq!(
        ids(&list("", Some(("a%b", Some("u2"))), 100).await),
        ["u3", "u2", "u9", "u5", "u4", "u8", "u6"]
    );
    // After a key alone: past every upload of it.
    assert_eq!(
        ids(&list("", Some(("a%b", None)), 100).await),
        ["u2", "u9", "u5", "u4", "u8", "u6"]
    );
    // A key that has no upload, with an id or without.
    assert_eq!(
        ids(&list("", Some(("a0", None)), 100).await),
        ["u9", "u5", "u4", "u8", "u6"]
    );
    assert_eq!(
        ids(&list("", Some(("a0", Some("zzz"))), 100).await),
        ["u9", "u5", "u4", "u8", "u6"]
    );
    assert_eq!(
        ids(&list("a%", Some(("a%b", Some("u1"))), 100).await),
        ["u3"]
    );
    assert!(list("a%", Some(("a%b", None)), 100).await.is_empty());
    assert!(list("", Some(("\u{10FFFF}", None)), 100).await.is_empty());

    // `limit` bounds them; pages follow each other with `after`.
    assert_eq!(ids(&list("", None, 2).await), ["U0", "u1"]);
    assert!(list("", None, 0).await.is_empty());
    let mut paged = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let page = store
            .list_uploads(
                "photos",
                "",
                after
                    .as_ref()
                    .map(|(k, id)| (k.as_str(), Some(id.as_str()))),
                2,
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.key.clone(), last.upload_id.clone()));
        paged.extend(page);
    }
    assert_eq!(paged, all);

    // Each bucket its own.
    assert_eq!(
        ids(&store.list_uploads("other", "", None, 100).await.unwrap()),
        ["o1"]
    );
    assert!(
        store
            .list_uploads("nope", "", None, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Aborted and completed uploads are no longer listed.
    store.abort_upload("u1").await.unwrap().unwrap();
    store
        .complete_upload("u3", object("photos", "a%b", 1), Vec::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&list("a%", None, 100).await), ["U0"]);

    // Reopened: still there.
    let store = f.open().await;
    assert_eq!(
        ids(&store.list_uploads("photos", "", None, 100).await.unwrap()),
        ["U0", "u2", "u9", "u5", "u4", "u8", "u6"]
    );
}

pub async fn completing_an_upload_replaces_its_object_and_queues_its_events(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .create_bucket(bucket("photos", "a", None, "{}"))
        .await
        .unwrap();
    let old = object("photos", "big.zip", 3);
    store
        .put_object(old.clone(), Vec::new())
        .await
        .unwrap()
        .unwrap();
    store
        .create_upload(upload("u1", "photos", "big.zip"))
        .await
        .unwrap()
        .unwrap();
    store
        .create_upload(upload("u2", "photos", "big.zip"))
        .await
        .unwrap()
        .unwrap();
    for p in [part("u1", 1, 5), part("u1", 2, 6), part("u1", 3, 1)] {
        store.put_part(p).await.unwrap().unwrap();
    }
    // Replaced: its blob came back then, and is not the upload's any more.
    store.put_part(part("u1", 2, 7)).await.unwrap().unwrap();
    store.put_part(part("u2", 1, 8)).await.unwrap().unwrap();
    let parts = store.list_parts("u1", 0, 100).await.unwrap();

    let whole = ObjectRecord {
        etag: format!("\"{}-3\"", "e".repeat(32)),
        ..object("photos", "big.zip", 13)
    };
    let Completed {
        replaced,
        part_blobs,
    } = store
        .complete_upload("u1", whole.clone(), vec![event("done-1"), event("done-2")])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        replaced,
        Some(old),
        "the object replaced, its blob to remove"
    );
    assert_eq!(
        sorted(part_blobs),
        blobs_of([], &parts),
        "every part's blob"
    );
    assert_eq!(
        store.get_object("photos", "big.zip").await.unwrap(),
        Some(whole.clone())
    );
    // The upload is forgotten, its parts with it.
    assert_eq!(store.get_upload("u1").await.unwrap(), None);
    assert!(store.list_parts("u1", 0, 100).await.unwrap().is_empty());
    assert_eq!(
        store.put_part(part("u1", 4, 4)).await.unwrap(),
        Err(NoSuchUpload)
    );
    // Its events were queued with it.
    let claimed = store.claim_events(10, 10, 1_000).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|e| (e.function.as_str(), e.request_id.as_str()))
            .collect::<Vec<_>>(),
        [("on-upload", "done-1"), ("on-upload", "done-2")]
    );
    assert_eq!(claimed[0].payload, br#"{"request":"done-1"}"#);

    // Once: completed again, it is no upload; nothing changes, nothing is
    // queued.
    assert_eq!(
        store
            .complete_upload("u1", object("photos", "big.zip", 99), vec![event("again")])
            .await
            .unwrap(),
        Err(NoSuchUpload)
    );
    assert_eq!(
        store.get_object("photos", "big.zip").await.unwrap(),
        Some(whole.clone())
    );
    assert_eq!(store.abort_upload("u1").await.unwrap(), None);
    assert_eq!(
        store
            .complete_upload("nope", object("photos", "nope", 1), vec![event("nope")])
            .await
            .unwrap(),
        Err(NoSuchUpload)
    );
    assert_eq!(store.get_object("photos", "nope").await.unwrap(), None);
    let counts = store.count_events(Some("a"), 10).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        (counts[0].queued, counts[0].in_flight, counts[0].dead),
        (0, 2, 0)
    );

    // The other upload of the key is still in progress, and completes
    // over the object the first made.
    assert_eq!(
        store.get_upload("u2").await.unwrap(),
        Some(upload("u2", "photos", "big.zip"))
    );
    let second = object("photos", "big.zip", 8);
    assert_eq!(
        store
            .complete_upload("u2", second.clone(), Vec::new())
            .await
            .unwrap(),
        Ok(Completed {
            replaced: Some(whole),
            part_blobs: vec![part("u2", 1, 8).blob],
        })
    );

    // A new key: nothing replaced.
    store
        .create_upload(upload("u3", "photos", "new.zip"))
        .await
        .unwrap()
        .unwrap();
    store.put_part(part("u3", 1, 2)).await.unwrap().unwrap();
    assert_eq!(
        store
            .complete_upload("u3", object("photos", "new.zip", 2), vec![event("new")])
            .await
            .unwrap(),
        Ok(Completed {
            replaced: None,
            part_blobs: vec![part("u3", 1, 2).blob],
        })
    );
    assert_eq!(store.claim_events(10, 10, 1_000).await.unwrap().len(), 1);

    // Reopened: as completed.
    let store = f.open().await;
    assert_eq!(
        store.list_objects("photos", "", None, 100).await.unwrap(),
        [second, object("photos", "new.zip", 2)]
    );
    assert!(
        store
            .list_uploads("photos", "", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_bucket_takes_its_uploads_with_it(f: &dyn Fixture) {
    let store = f.open().await;
    for name in ["uploading", "full", "other"] {
        store
            .create_bucket(bucket(name, "a", None, "{}"))
            .await
            .unwrap();
    }
    // No object, only uploads: no more than empty, so it is deleted, and
    // its uploads with it (their parts' blobs to remove).
    for u in [
        upload("u1", "uploading", "k"),
        upload("u2", "uploading", "k"),
        upload("u3", "full", "k"),
        upload("u4", "other", "k"),
    ] {
        store.create_upload(u).await.unwrap().unwrap();
    }
    let u1 = [part("u1", 1, 1), part("u1", 2, 2)];
    let u3 = [part("u3", 1, 3)];
    for p in u1.iter().chain(&u3).chain([&part("u4", 1, 4)]) {
        store.put_part(p.clone()).await.unwrap().unwrap();
    }
    let BucketDeleted::Deleted(blobs) = store.delete_bucket("uploading", false).await.unwrap()
    else {
        panic!("a bucket with no object is deleted");
    };
    assert_eq!(sorted(blobs), blobs_of([], &u1));
    assert_eq!(store.get_bucket("uploading").await.unwrap(), None);
    for id in ["u1", "u2"] {
        assert_eq!(store.get_upload(id).await.unwrap(), None);
        assert!(store.list_parts(id, 0, 100).await.unwrap().is_empty());
    }
    assert_eq!(
        store.put_part(part("u1", 3, 3)).await.unwrap(),
        Err(NoSuchUpload)
    );
    assert_eq!(
        store
            .complete_upload("u2", object("uploading", "k", 1), vec![event("gone")])
            .await
            .unwrap(),
        Err(NoSuchUpload)
    );
    assert_eq!(store.get_object("uploading", "k").await.unwrap(), None);
    assert!(store.count_events(None, 0).await.unwrap().is_empty());

    // Objects and uploads: the objects count, not the uploads; nothing
    // is done.
    let objects = [object("full", "a", 1), object("full", "b", 2)];
    for o in &objects {
        store
            .put_object(o.clone(), Vec::new())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        store.delete_bucket("full", false).await.unwrap(),
        BucketDeleted::NotEmpty(2)
    );
    assert!(store.get_upload("u3").await.unwrap().is_some());
    assert_eq!(store.list_parts("u3", 0, 100).await.unwrap(), u3);
    // Forced: the objects' blobs and the parts'.
    let BucketDeleted::Deleted(blobs) = store.delete_bucket("full", true).await.unwrap() else {
        panic!("a forced delete deletes");
    };
    assert_eq!(sorted(blobs), blobs_of(&objects, &u3));
    assert_eq!(store.get_upload("u3").await.unwrap(), None);
    assert!(store.list_parts("u3", 0, 100).await.unwrap().is_empty());

    // Another bucket's uploads are untouched.
    assert_eq!(
        store.list_uploads("other", "", None, 100).await.unwrap(),
        [upload("u4", "other", "k")]
    );
    assert_eq!(
        store.list_parts("u4", 0, 100).await.unwrap(),
        [part("u4", 1, 4)]
    );

    // A new bucket of the name starts with no uploads; one started into
    // it is its own.
    store
        .create_bucket(bucket("uploading", "b", None, "{}"))
        .await
        .unwrap();
    assert!(
        store
            .list_uploads("uploading", "", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .create_upload(upload("u5", "uploading", "k"))
        .await
        .unwrap()
        .unwrap();

    // Reopened: still gone.
    let store = f.open().await;
    assert_eq!(store.get_upload("u1").await.unwrap(), None);
    assert_eq!(store.get_upload("u3").await.unwrap(), None);
    assert_eq!(
        ids(&store
            .list_uploads("uploading", "", None, 100)
            .await
            .unwrap()),
        ["u5"]
    );
}

pub async fn deleting_an_app_removes_its_uploads(f: &dyn Fixture) {
    let store = f.open().await;
    store.activate(version("a", 128)).await.unwrap();
    store.activate(version("b", 128)).await.unwrap();
    for (name, app, id) in [
        ("a-files", "a", "ua"),
        ("a-more", "a", "um"),
        ("b-files", "b", "ub"),
    ] {
        store
            .create_bucket(bucket(name, app, None, "{}"))
            .await
            .unwrap();
        store
            .create_upload(upload(id, name, "k"))
            .await
            .unwrap()
            .unwrap();
        store.put_part(part(id, 1, 1)).await.unwrap().unwrap();
    }

    assert!(store.delete_app("a").await.unwrap());
    for id in ["ua", "um"] {
        assert_eq!(store.get_upload(id).await.unwrap(), None);
        assert!(store.list_parts(id, 0, 100).await.unwrap().is_empty());
        assert_eq!(
            store.put_part(part(id, 2, 2)).await.unwrap(),
            Err(NoSuchUpload)
        );
    }
    // The other app's are untouched.
    assert_eq!(
        store.get_upload("ub").await.unwrap(),
        Some(upload("ub", "b-files", "k"))
    );
    assert_eq!(
        store.list_parts("ub", 0, 100).await.unwrap(),
        [part("ub", 1, 1)]
    );

    // Reopened: still gone; a new bucket of the name has no uploads.
    let store = f.open().await;
    assert_eq!(store.get_upload("ua").await.unwrap(), None);
    store
        .create_bucket(bucket("a-files", "b", None, "{}"))
        .await
        .unwrap();
    assert!(
        store
            .list_uploads("a-files", "", None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Completions, aborts, parts and deletions of the bucket racing each
/// other: each upload ends once, and every blob is handed to exactly one
/// caller to remove.
pub async fn racing_writers_settle_each_upload_once(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .create_bucket(bucket("race", "a", None, "{}"))
        .await
        .unwrap();
    for i in 0..20 {
        let id = format!("r{i}");
        store
            .create_upload(upload(&id, "race", "k"))
            .await
            .unwrap()
            .unwrap();
        store.put_part(part(&id, 1, 1)).await.unwrap().unwrap();
        let complete = tokio::spawn({
            let (store, id) = (store.clone(), id.clone());
            async move {
                store
                    .complete_upload(&id, object("race", "k", 2), Vec::new())
                    .await
                    .unwrap()
            }
        });
        let abort = tokio::spawn({
            let (store, id) = (store.clone(), id.clone());
            async move { store.abort_upload(&id).await.unwrap() }
        });
        let put = tokio::spawn({
            let (store, id) = (store.clone(), id.clone());
            async move { store.put_part(part(&id, 2, 2)).await.unwrap() }
        });
        let (complete, abort, put) = (
            complete.await.unwrap(),
            abort.await.unwrap(),
            put.await.unwrap(),
        );
        let mut expected = vec![part(&id, 1, 1).blob];
        if put.is_ok() {
            assert_eq!(put, Ok(None));
            expected.push(part(&id, 2, 2).blob);
        }
        let blobs = match (complete, abort) {
            (Ok(completed), None) => completed.part_blobs,
            (Err(NoSuchUpload), Some(blobs)) => blobs,
            other => panic!("one of completion and abort wins: {other:?}"),
        };
        assert_eq!(sorted(blobs), expected, "a part put is handed back");
        assert_eq!(store.get_upload(&id).await.unwrap(), None);
        assert!(store.list_parts(&id, 0, 100).await.unwrap().is_empty());
    }

    for i in 0..20 {
        let name = format!("race-{i}");
        let force = i % 2 == 0;
        store
            .create_bucket(bucket(&name, "a", None, "{}"))
            .await
            .unwrap();
        let id = format!("d{i}");
        store
            .create_upload(upload(&id, &name, "k"))
            .await
            .unwrap()
            .unwrap();
        store.put_part(part(&id, 1, 1)).await.unwrap().unwrap();
        let whole = object(&name, "k", 2);
        let complete = tokio::spawn({
            let (store, id, whole) = (store.clone(), id.clone(), whole.clone());
            async move { store.complete_upload(&id, whole, Vec::new()).await.unwrap() }
        });
        let delete = tokio::spawn({
            let (store, name) = (store.clone(), name.clone());
            async move { store.delete_bucket(&name, force).await.unwrap() }
        });
        let (complete, delete) = (complete.await.unwrap(), delete.await.unwrap());
        let part_blob = part(&id, 1, 1).blob;
        match (complete, delete) {
            // Completed first: its object is the bucket's, which a
            // forced delete then deletes and an unforced one does not.
            (Ok(completed), deleted) => {
                assert_eq!(completed.part_blobs, [part_blob]);
                if force {
                    assert_eq!(deleted, BucketDeleted::Deleted(vec![whole.blob]));
                } else {
                    assert_eq!(deleted, BucketDeleted::NotEmpty(1));
                    assert_eq!(store.get_object(&name, "k").await.unwrap(), Some(whole));
                }
            }
            // Deleted first: the upload went with the bucket.
            (Err(NoSuchUpload), deleted) => {
                assert_eq!(deleted, BucketDeleted::Deleted(vec![part_blob]));
                assert_eq!(store.get_object(&name, "k").await.unwrap(), None);
            }
        }
        assert_eq!(store.get_upload(&id).await.unwrap(), None);
        assert!(store.list_parts(&id, 0, 100).await.unwrap().is_empty());
    }
}
