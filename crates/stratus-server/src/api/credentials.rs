//! Every app's AWS credentials, in memory, by access key id.
//!
//! The Lambda Invoke API finds a caller's secret here, never in the store:
//! the invocation path does not wait on the store. The table is loaded at
//! start, and the keys API changes it after each change to the store,
//! under the deploy lock, as `Directory` does for app keys.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use stratus_store::AwsCredentialRecord;

pub(crate) struct AwsCredentials {
    by_id: RwLock<HashMap<String, Arc<AwsCredentialRecord>>>,
}

impl AwsCredentials {
    pub fn new(credentials: Vec<AwsCredentialRecord>) -> AwsCredentials {
        let by_id = credentials
            .into_iter()
            .map(|c| (c.access_key_id.clone(), Arc::new(c)))
            .collect();
        AwsCredentials {
            by_id: RwLock::new(by_id),
        }
    }

    pub fn get(&self, access_key_id: &str) -> Option<Arc<AwsCredentialRecord>> {
        self.read().get(access_key_id).cloned()
    }

    pub fn insert(&self, credential: AwsCredentialRecord) {
        self.write()
            .insert(credential.access_key_id.clone(), Arc::new(credential));
    }

    pub fn remove(&self, access_key_id: &str) {
        self.write().remove(access_key_id);
    }

    /// Takes the whole table as it is now (from a store other nodes
    /// change).
    pub fn replace_all(&self, credentials: Vec<AwsCredentialRecord>) {
        *self.write() = credentials
            .into_iter()
            .map(|c| (c.access_key_id.clone(), Arc::new(c)))
            .collect();
    }

    /// The access key ids it holds.
    pub fn ids(&self) -> std::collections::BTreeSet<String> {
        self.read().keys().cloned().collect()
    }

    /// Forgets the credentials of a removed app.
    pub fn remove_app(&self, app: &str) {
        self.write().retain(|_, c| c.app != app);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<AwsCredentialRecord>>> {
        self.by_id.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<AwsCredentialRecord>>> {
        self.by_id.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(id: &str, app: &str) -> AwsCredentialRecord {
        AwsCredentialRecord {
            access_key_id: id.into(),
            app: app.into(),
            name: String::new(),
            secret: "s".into(),
            created_ms: 0,
        }
    }

    #[test]
    fn credentials_come_and_go_with_their_app() {
        let table = AwsCredentials::new(vec![credential("A1", "a"), credential("B1", "b")]);
        table.insert(credential("A2", "a"));
        assert_eq!(table.get("A2").unwrap().app, "a");
        table.remove("A2");
        assert!(table.get("A2").is_none());
        table.remove_app("a");
        assert!(table.get("A1").is_none());
        assert_eq!(table.get("B1").unwrap().app, "b");
    }
}
