//! Secrets the server must be able to read back (AWS secret keys, which
//! Signature Version 4 needs as they are), kept at rest sealed with
//! ChaCha20-Poly1305 under a key of the data directory's own: `secrets.key`,
//! 32 random bytes readable by the owner only. A copy of the database alone
//! reveals no secret; a backup must hold the key file with it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use base64::Engine;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "secrets.key";
/// What a sealed secret starts with; anything else was stored in the clear
/// by an earlier version and is sealed at start.
const SEALED: &str = "sealed:v1:";
const KEY_LEN: usize = 32;

pub(crate) struct Sealer {
    key: LessSafeKey,
}

/// A sealed secret that does not open: the key file is not the one it was
/// sealed with, or the stored value was changed.
#[derive(Debug, thiserror::Error)]
#[error(
    "a stored secret cannot be opened with {KEY_FILE}: the key file was replaced or the database altered"
)]
pub(crate) struct Unreadable;

impl Sealer {
    /// Reads the key in `path`, or makes one (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Sealer> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                getrandom::fill(&mut key)
                    .map_err(|err| anyhow::anyhow!("no randomness for {KEY_FILE}: {err}"))?;
                let mut file = match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                {
                    Ok(file) => file,
                    // Another node given the same file made it first.
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Sealer::load_or_create(path);
                    }
                    Err(err) => {
                        return Err(err)
                            .with_context(|| format!("cannot create {}", path.display()));
                    }
                };
                file.write_all(&key)
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                key.to_vec()
            }
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        anyhow::ensure!(
            bytes.len() == KEY_LEN,
            "{} holds {} bytes, not a key of {KEY_LEN}: restore it from a backup of this data directory",
            path.display(),
            bytes.len()
        );
        Ok(Sealer::new(&bytes))
    }

    fn new(key: &[u8]) -> Sealer {
        let key = UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key");
        Sealer {
            key: LessSafeKey::new(key),
        }
    }

    /// Seals `secret`, bound to `context` (the record it belongs to, so a
    /// sealed value moved to another record does not open).
    pub fn seal(&self, context: &str, secret: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|err| anyhow::anyhow!("no randomness: {err}"))?;
        let mut sealed = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| anyhow::anyhow!("cannot seal a secret"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        ))
    }

    /// The secret `stored` holds, and whether it was stored in the clear.
    pub fn open(&self, context: &str, stored: &str) -> Result<(String, bool), Unreadable> {
        let Some(encoded) = stored.strip_prefix(SEALED) else {
            return Ok((stored.to_owned(), true));
        };
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| Unreadable)?;
        if bytes.len() < NONCE_LEN {
            return Err(Unreadable);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unreadable)?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| Unreadable)?;
        let secret = String::from_utf8(plain.to_vec()).map_err(|_| Unreadable)?;
        Ok((secret, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_context() {
        let sealer = Sealer::new(&[7; KEY_LEN]);
        let sealed = sealer.seal("AKST1", "s3cret").unwrap();
        assert!(sealed.starts_with(SEALED) && !sealed.contains("s3cret"));
        assert_eq!(
            sealer.open("AKST1", &sealed).unwrap(),
            ("s3cret".to_owned(), false)
        );
        assert!(
            sealer.open("AKST2", &sealed).is_err(),
            "bound to its record"
        );
        assert!(Sealer::new(&[8; KEY_LEN]).open("AKST1", &sealed).is_err());
        let mut altered = sealed.clone();
        let last = altered.pop().unwrap();
        altered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(sealer.open("AKST1", &altered).is_err());
        assert_ne!(
            sealer.seal("AKST1", "s3cret").unwrap(),
            sealed,
            "fresh nonces"
        );
        assert_eq!(
            sealer.open("AKST1", "legacy").unwrap(),
            ("legacy".to_owned(), true)
        );
    }

    #[test]
    fn the_key_file_is_made_once_owner_only_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let sealed = Sealer::load_or_create(&path)
            .unwrap()
            .seal("a", "b")
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Sealer::load_or_create(&path).unwrap();
        assert_eq!(again.open("a", &sealed).unwrap().0, "b");
        std::fs::write(&path, b"short").unwrap();
        let err = Sealer::load_or_create(&path).err().unwrap().to_string();
        assert!(err.contains("restore it from a backup"), "{err}");
    }
}
