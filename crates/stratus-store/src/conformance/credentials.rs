//! id, listed per app, revoked only by their own app, and removed with it.

use std::sync::Arc;

use super::Fixture;
use crate::Store;
use std::collections::BTreeMap;

use crate::{AwsCredentialRecord, NewVersion};

fn credential(id: &str, app: &str, created_ms: i64) -> AwsCredentialRecord {
    AwsCredentialRecord {
        access_key_id: id.into(),
        app: app.into(),
        name: format!("{id} of {app}"),
        secret: format!("secret-of-{id}"),
        created_ms,
    }
}

async fn create(store: &Arc<dyn Store>, id: &str, app: &str, created_ms: i64) {
    store
        .create_aws_credential(credential(id, app, created_ms))
        .await
        .unwrap();
}

fn version(app: &str) -> NewVersion {
    let text = format!("app: {app}\nfunctions:\n  f:\n    runtime: python3\n    handler: m.h\n");
    NewVersion {
        spec: stratus_manifest::parse("stratus.yaml", &text).unwrap(),
        manifest: text,
        packages: BTreeMap::from([(".".to_owned(), "a".repeat(64))]),
        created_ms: 1,
        source: "upload".into(),
        layers: BTreeMap::new(),
    }
}

fn ids(credentials: &[AwsCredentialRecord]) -> Vec<&str> {
    credentials
        .iter()
        .map(|c| c.access_key_id.as_str())
        .collect()
}

pub async fn credentials_are_kept_with_their_secret_and_listed_per_app(f: &dyn Fixture) {
    let store = f.open().await;
    create(&store, "AKST2", "a", 20).await;
    create(&store, "AKST1", "a", 10).await;
    create(&store, "AKST3", "b", 5).await;

    let found = store.get_aws_credential("AKST1").await.unwrap().unwrap();
    assert_eq!(found, credential("AKST1", "a", 10));
    assert!(store.get_aws_credential("AKST9").await.unwrap().is_none());

    // Oldest first within an app; every app's when none is given.
    let listed = store.list_aws_credentials(Some("a")).await.unwrap();
    assert_eq!(ids(&listed), ["AKST1", "AKST2"]);
    let all = store.list_aws_credentials(None).await.unwrap();
    assert_eq!(ids(&all), ["AKST1", "AKST2", "AKST3"]);

    // An access key id is unique across apps.
    assert!(
        store
            .create_aws_credential(credential("AKST1", "b", 30))
            .await
            .is_err()
    );

    // The Debug form leaves the secret out.
    let debug = format!("{found:?}");
    assert!(
        debug.contains("AKST1") && !debug.contains("secret-of"),
        "{debug}"
    );

    // Credentials survive a reopen.
    drop(store);
    let store = f.open().await;
    assert_eq!(store.list_aws_credentials(None).await.unwrap().len(), 3);
}

pub async fn a_credential_is_revoked_only_by_its_own_app(f: &dyn Fixture) {
    let store = f.open().await;
    create(&store, "AKST1", "a", 1).await;
    assert!(!store.delete_aws_credential("b", "AKST1").await.unwrap());
    assert!(store.get_aws_credential("AKST1").await.unwrap().is_some());
    assert!(store.delete_aws_credential("a", "AKST1").await.unwrap());
    assert!(!store.delete_aws_credential("a", "AKST1").await.unwrap());
    assert!(store.get_aws_credential("AKST1").await.unwrap().is_none());
}

pub async fn deleting_an_app_deletes_its_credentials(f: &dyn Fixture) {
    let store = f.open().await;
    store.activate(version("a")).await.unwrap();
    store.activate(version("b")).await.unwrap();
    create(&store, "AKST1", "a", 1).await;
    create(&store, "AKST2", "b", 1).await;
    assert!(store.delete_app("a").await.unwrap());
    assert!(store.get_aws_credential("AKST1").await.unwrap().is_none());
    assert_eq!(
        ids(&store.list_aws_credentials(None).await.unwrap()),
        ["AKST2"]
    );
}

fn secret(app: &str, name: &str, sealed: &str, updated_ms: i64) -> crate::SecretRecord {
    crate::SecretRecord {
        app: app.into(),
        name: name.into(),
        sealed: sealed.into(),
        updated_ms,
    }
}

/// Secrets are set, replaced, listed per app, deleted one by one and with
/// their app, and kept across reopening.
pub async fn secrets_are_set_replaced_listed_and_deleted(f: &dyn Fixture) {
    let store = f.open().await;
    store.activate(version("a")).await.unwrap();
    store.activate(version("b")).await.unwrap();
    store.put_secret(secret("a", "db", "s1", 1)).await.unwrap();
    store.put_secret(secret("a", "api", "s2", 2)).await.unwrap();
    store.put_secret(secret("b", "db", "s3", 3)).await.unwrap();
    store.put_secret(secret("a", "db", "s4", 4)).await.unwrap();
    assert_eq!(
        store.list_secrets(Some("a")).await.unwrap(),
        [secret("a", "api", "s2", 2), secret("a", "db", "s4", 4)],
        "replaced, by name"
    );
    assert!(!store.delete_secret("b", "api").await.unwrap());
    assert!(store.delete_secret("a", "api").await.unwrap());
    drop(store);
    let store = f.open().await;
    assert_eq!(store.list_secrets(None).await.unwrap().len(), 2);
    assert!(store.delete_app("a").await.unwrap());
    assert_eq!(
        store.list_secrets(None).await.unwrap(),
        [secret("b", "db", "s3", 3)]
    );
}
