//! The last errors of a function or service, for `stratus status`.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Errors kept.
const MAX_ERRORS: usize = 10;

/// An error of a function or service, as `stratus status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecentError {
    pub ts_ms: i64,
    pub instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub message: String,
}

/// The last few errors, oldest first.
#[derive(Debug, Default)]
pub(crate) struct RecentErrors(Mutex<VecDeque<RecentError>>);

impl RecentErrors {
    pub fn push(&self, instance: &str, request_id: Option<&str>, message: String) {
        let mut errors = self.lock();
        errors.push_back(RecentError {
            ts_ms: crate::clock::now_ms(),
            instance: instance.to_owned(),
            request_id: request_id.map(str::to_owned),
            message,
        });
        while errors.len() > MAX_ERRORS {
            errors.pop_front();
        }
    }

    pub fn list(&self) -> Vec<RecentError> {
        self.lock().iter().cloned().collect()
    }

    pub fn last(&self) -> Option<String> {
        self.lock().back().map(|e| e.message.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<RecentError>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
