use std::collections::BTreeMap;

use super::Fixture;
use crate::{
    AwsCredentialRecord, BucketRecord, KeyRecord, MetaKey, NewEvent, NewMessage, NewVersion,
    ObjectRecord, PackageRecord, PartRecord, Settlement, Source, StoreError, UploadRecord,
};

fn version(app: &str) -> NewVersion {
    let text = format!("app: {app}\nfunctions:\n  f:\n    runtime: python3\n    handler: m.h\n");
    NewVersion {
        spec: stratus_manifest::parse("stratus.yaml", &text).unwrap(),
        manifest: text,
        packages: BTreeMap::from([(".".to_owned(), "b".repeat(64))]),
        created_ms: 7,
        source: "git 0123abc the first".into(),
        layers: BTreeMap::new(),
    }
}

fn event(request_id: &str) -> NewEvent {
    NewEvent {
        app: "a".into(),
        function: "f".into(),
        payload: vec![0, 1, 2, 255],
        request_id: request_id.into(),
        source: Source::Destination("g".into()),
        created_ms: 3,
        not_before_ms: 0,
        trace: Some(format!("00-{}-{}-01", "3".repeat(32), "4".repeat(16))),
    }
}

/// Everything but logs moves, ids and identity kept; the target must be
/// empty; ids go on after the moved ones.
pub async fn a_store_moves_into_an_empty_one_whole(f: &dyn Fixture) {
    let store = f.open().await;
    store
        .meta_or_insert(MetaKey::Identity, "the-identity")
        .await
        .unwrap();
    store
        .meta_or_insert(MetaKey::AdminTokenHash, "single-node-token")
        .await
        .unwrap();
    store.activate(version("a")).await.unwrap();
    store.activate(version("a")).await.unwrap();
    store
        .put_package(PackageRecord {
            sha256: "b".repeat(64),
            size: 10,
            unpacked_bytes: 20,
            files: 2,
            created_ms: 5,
        })
        .await
        .unwrap();
    store
        .create_key(KeyRecord {
            id: "k1".into(),
            app: "a".into(),
            name: "web".into(),
            sha256: "c".repeat(64),
            created_ms: 1,
        })
        .await
        .unwrap();
    store
        .create_aws_credential(AwsCredentialRecord {
            access_key_id: "AKST1".into(),
            app: "a".into(),
            name: "ci".into(),
            secret: "sealed".into(),
            created_ms: 1,
        })
        .await
        .unwrap();
    store
        .put_secret(crate::SecretRecord {
            app: "a".into(),
            name: "db".into(),
            sealed: "sealed:x".into(),
            updated_ms: 3,
        })
        .await
        .unwrap();
    store
        .enqueue_events(vec![event("r1"), event("r2"), event("r3")])
        .await
        .unwrap();
    // One in flight, one dead, one queued.
    let claimed = store.claim_events(10, 2, 1000).await.unwrap();
    store
        .settle_events(vec![Settlement::Dead {
            id: claimed[1].id,
            attempt: claimed[1].attempts,
            failed_ms: 11,
            error: "boom".into(),
            then: Vec::new(),
        }])
        .await
        .unwrap();
    store
        .send_messages(vec![NewMessage {
            app: "a".into(),
            queue: "q".into(),
            body: b"m".to_vec(),
            message_id: "m1".into(),
            source: Source::Send,
            sent_ms: 2,
            visible_ms: 0,
            trace: Some("a producer's context".into()),
        }])
        .await
        .unwrap();
    store
        .fire_schedule("a", "f", "rate(1 minute)", 60_000, None)
        .await
        .unwrap();
    store
        .create_bucket(BucketRecord {
            name: "a-photos".into(),
            app: "a".into(),
            declared_as: Some("photos".into()),
            spec: r#"{"public":false}"#.into(),
            created_ms: 4,
        })
        .await
        .unwrap();
    let photo = ObjectRecord {
        bucket: "a-photos".into(),
        key: "2024/é.jpg".into(),
        size: 12,
        etag: format!("\"{}\"", "d".repeat(32)),
        blob: "blobs/1234".into(),
        modified_ms: 6,
        headers: r#"{"content-type":"image/jpeg"}"#.into(),
    };
    store
        .put_object(photo.clone(), Vec::new())
        .await
        .unwrap()
        .unwrap();
    let upload = UploadRecord {
        upload_id: "upload-1".into(),
        bucket: "a-photos".into(),
        key: "2024/big.zip".into(),
        headers: r#"{"content-type":"application/zip"}"#.into(),
        created_ms: 8,
    };
    store.create_upload(upload.clone()).await.unwrap().unwrap();
    let parts: Vec<PartRecord> = (1..=2)
        .map(|number| PartRecord {
            upload_id: "upload-1".into(),
            number,
            size: 5 << 20,
            etag: format!("\"{}\"", "f".repeat(32)),
            blob: format!("blobs/part-{number}"),
            modified_ms: 9,
        })
        .collect();
    for p in &parts {
        store.put_part(p.clone()).await.unwrap().unwrap();
    }

    let indexes = super::documents::fill_for_transfer(&*store).await;
    let (users, sessions) = super::users::fill_for_transfer(&*store).await;

    let dump = store.export().await.unwrap();
    assert_eq!(dump.identity.as_deref(), Some("the-identity"));
    assert_eq!(
        dump.versions.len(),
        2,
        "every version, not only the active one"
    );
    assert_eq!(
        (
            dump.events.len(),
            dump.dead_letters.len(),
            dump.messages.len()
        ),
        (2, 1, 1)
    );
    assert_eq!(dump.schedule_slots.len(), 1);
    assert_eq!(dump.secrets.len(), 1);
    assert_eq!((dump.buckets.len(), dump.objects.len()), (1, 1));
    assert_eq!((dump.uploads.len(), dump.parts.len()), (1, 2));
    assert!(
        dump.summary().ends_with(
            "1 buckets, 1 objects, 1 uploads, 2 parts, 3 documents, 2 users, 3 sessions"
        ),
        "{}",
        dump.summary()
    );
    let documents: Vec<(&str, &str, &str)> = dump
        .documents
        .iter()
        .map(|d| {
            (
                d.app.as_str(),
                d.document.collection.as_str(),
                d.document.id.as_str(),
            )
        })
        .collect();
    assert_eq!(
        documents,
        [
            ("a", "posts", "p1"),
            ("a", "users", "u1"),
            ("a", "users", "u2")
        ]
    );
    let declared: BTreeMap<String, Vec<crate::documents::IndexSpec>> = dump
        .document_indexes
        .iter()
        .map(|c| {
            assert_eq!(c.app, "a");
            let mut sorted = indexes[&c.collection].clone();
            sorted.sort();
            assert_eq!(c.indexes, sorted);
            (c.collection.clone(), c.indexes.clone())
        })
        .collect();
    assert_eq!(declared.len(), 2);
    assert_eq!(dump.users, users);
    assert_eq!(dump.sessions, sessions);

    let other = f.other().await;
    other.import(dump.clone()).await.unwrap();
    assert_eq!(other.export().await.unwrap(), dump, "moved whole");
    assert_eq!(
        other
            .meta_or_insert(MetaKey::Identity, "another")
            .await
            .unwrap(),
        "the-identity"
    );
    // The cluster makes its own admin token.
    assert_eq!(
        other
            .meta_or_insert(MetaKey::AdminTokenHash, "cluster-token")
            .await
            .unwrap(),
        "cluster-token"
    );
    assert_eq!(other.active_version("a").await.unwrap().unwrap().version, 2);
    assert_eq!(
        other.get_bucket("a-photos").await.unwrap(),
        dump.buckets.first().cloned()
    );
    assert_eq!(
        other.get_object("a-photos", "2024/é.jpg").await.unwrap(),
        Some(photo)
    );
    assert_eq!(other.get_upload("upload-1").await.unwrap(), Some(upload));
    assert_eq!(other.list_parts("upload-1", 0, 100).await.unwrap(), parts);
    assert_eq!(
        other.list_indexes("a").await.unwrap(),
        dump.document_indexes
    );
    super::documents::check_transferred(&*other).await;
    super::users::check_transferred(&*other, &users, &sessions).await;
    // And it goes on there.
    assert_eq!(
        other
            .abort_upload("upload-1")
            .await
            .unwrap()
            .map(|mut blobs| {
                blobs.sort();
                blobs
            }),
        Some(vec!["blobs/part-1".to_owned(), "blobs/part-2".to_owned()])
    );

    // Only into an empty store.
    let refused = other.import(dump.clone()).await.unwrap_err();
    assert!(matches!(refused, StoreError::NotEmpty(_)), "{refused}");
    let refused = store.import(dump.clone()).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("migrate into a new, empty database"),
        "{refused}"
    );

    // New ids go on after the moved ones.
    let largest = dump.events.iter().map(|e| e.id).max().unwrap();
    let id = other.enqueue_events(vec![event("r9")]).await.unwrap()[0];
    assert!(id > largest, "{id} after {largest}");
}
