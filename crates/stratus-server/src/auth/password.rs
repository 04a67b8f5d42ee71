//! Passwords, hashed with argon2id (its default cost: 19 MiB, two passes)
//! on the blocking pool, so that a sign-in does not hold up other
//! requests. Only the PHC string (`$argon2id$v=19$...`) is stored.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::api::ApiError;

/// The shortest and longest password taken.
pub(crate) const MIN_LEN: usize = 8;
pub(crate) const MAX_LEN: usize = 1024;

/// What is wrong with a new password, if anything.
pub(crate) fn problem(password: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_LEN {
        Some(format!("a password has at least {MIN_LEN} characters"))
    } else if password.len() > MAX_LEN {
        Some(format!("a password has at most {MAX_LEN} bytes"))
    } else {
        None
    }
}

/// Hashes at once: each holds 19 MiB and a core for tens of
/// milliseconds, so a flood of sign-ins waits its turn here instead of
/// taking the blocking pool and the memory.
static HASHING: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
});

pub(crate) async fn hash(password: String) -> Result<String, ApiError> {
    let _turn = HASHING.acquire().await.expect("the semaphore stays open");
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).expect("the system has randomness");
        let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|err| ApiError::internal("hashing a password failed", err))?
    .map_err(|err| ApiError::internal("hashing a password failed", err))
}

/// Whether `password` is the one `hash` was made of. With no hash (no
/// such user) a dummy is checked, so that the answer takes as long.
pub(crate) async fn verify(password: String, hash: Option<String>) -> bool {
    let _turn = HASHING.acquire().await.expect("the semaphore stays open");
    tokio::task::spawn_blocking(move || {
        let dummy = "$argon2id$v=19$m=19456,t=2,p=1$c3RyYXR1c2R1bW15c2FsdA$3c2wiiN4lBQzBodEb7Xm8WGYDTNQRpRCYzOTmWk4qr8";
        let (hash, real) = match &hash {
            Some(hash) => (hash.as_str(), true),
            None => (dummy, false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let ok = argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && real
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_hash_only() {
        let hash = hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify("correct horse".into(), Some(hash.clone())).await);
        assert!(!verify("wrong horse!".into(), Some(hash)).await);
        assert!(!verify("correct horse".into(), None).await);
        assert!(problem("short").is_some());
        assert!(problem("long enough").is_none());
    }
}
