//! Instance ids.

/// A fresh instance id: 12 hex digits.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}
