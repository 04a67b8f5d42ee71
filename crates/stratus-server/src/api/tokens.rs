//! The credential each instance is given for the platform API
//! (`STRATUS_API_TOKEN`): `st_INSTANCE.MAC`, where MAC is an HMAC of the
//! app's and the instance's names keyed by the store's platform secret
//! (the same on every node that shares the store). It is never stored,
//! acts for its own app only, and
//! names its instance, so that the platform API can hold each instance to
//! its share of connections.

use hmac::Mac;

/// The token of instance `instance` of `app`.
pub(crate) fn instance_token(secret: &str, app: &str, instance: &str) -> String {
    format!("st_{instance}.{}", mac(secret, app, instance))
}

/// The instance a token says it belongs to, unchecked: for counting only
/// once the token has been accepted.
pub(crate) fn named_instance(token: &str) -> Option<&str> {
    let (instance, _) = token.strip_prefix("st_")?.rsplit_once('.')?;
    Some(instance)
}

/// Whether `given` is the token of an instance of `app`.
pub(crate) fn is_instance_token(secret: &str, app: &str, given: &str) -> bool {
    named_instance(given).is_some_and(|instance| {
        super::constant_time_eq(
            given.as_bytes(),
            instance_token(secret, app, instance).as_bytes(),
        )
    })
}

fn mac(secret: &str, app: &str, instance: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"stratus instance token\n");
    mac.update(app.as_bytes());
    mac.update(b"\n");
    mac.update(instance.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What instances are told of the platform API: its address
/// (`STRATUS_API_URL`) and their own token (`STRATUS_API_TOKEN`).
#[derive(Debug, Clone)]
pub(crate) struct InstanceApi {
    pub url: String,
    pub secret: String,
}

impl stratus_scheduler::PlatformApi for InstanceApi {
    fn env(&self, app: &str, instance: &str) -> Vec<(String, String)> {
        vec![
            ("STRATUS_API_URL".to_owned(), self.url.clone()),
            (
                "STRATUS_API_TOKEN".to_owned(),
                instance_token(&self.secret, app, instance),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_acts_for_its_own_app_and_names_its_instance() {
        let token = instance_token("admin", "shop", "0123456789ab");
        assert_eq!(named_instance(&token), Some("0123456789ab"));
        assert!(is_instance_token("admin", "shop", &token));
        assert!(!is_instance_token("admin", "other", &token));
        assert!(!is_instance_token("another admin", "shop", &token));
        // Another instance's name with this MAC is no token.
        let forged = token.replacen("0123456789ab", "ba9876543210", 1);
        assert!(!is_instance_token("admin", "shop", &forged));
        assert_eq!(named_instance("st_nodot"), None);
        assert!(!is_instance_token("admin", "shop", ""));
    }
}
