//! The credential each instance is given for the platform API
//! (`STRATUS_API_TOKEN`): `st_INSTANCE.MAC`, where MAC is an HMAC of the
//! app's and the instance's names keyed by the store's platform secret
//! (the same on every node that shares the store). It is never stored,
//! acts for its own app only, and
//! names its instance, so that the platform API can hold each instance to
//! its share of connections.
//!
//! Instances also get an AWS credential of their app for the S3 API
//! (`AWS_ACCESS_KEY_ID` `STFN_APP`, its secret an HMAC of the app's name
//! under the same secret), with `AWS_ENDPOINT_URL_S3`, so that the AWS
//! SDKs and CLI reach the app's buckets with no configuration. Like the
//! token, it is derived, never stored, and acts for its own app only.

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
    keyed(secret, &["stratus instance token", app, instance])
}

/// HMAC-SHA256 under `secret` of `parts`, one a line, in hex.
pub(crate) fn keyed(secret: &str, parts: &[&str]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(parts.join("\n").as_bytes());
    crate::hex::encode(&mac.finalize().into_bytes())
}

/// The access key id of the AWS credential of `app`'s functions.
const FUNCTION_KEY_PREFIX: &str = "STFN_";

pub(crate) fn function_key(app: &str) -> String {
    format!("{FUNCTION_KEY_PREFIX}{app}")
}

/// The app and secret of a function credential's access key id.
pub(crate) fn function_credential(secret: &str, access_key_id: &str) -> Option<(String, String)> {
    let app = access_key_id.strip_prefix(FUNCTION_KEY_PREFIX)?;
    stratus_manifest::is_valid_name(app).then(|| (app.to_owned(), function_secret(secret, app)))
}

fn function_secret(secret: &str, app: &str) -> String {
    keyed(secret, &["stratus function aws credential", app])[..40].to_owned()
}

/// What instances are told of the platform API: its address
/// (`STRATUS_API_URL`) and their own token (`STRATUS_API_TOKEN`).
#[derive(Debug, Clone)]
pub(crate) struct InstanceApi {
    pub url: String,
    pub secret: String,
    /// The S3 API's address for instances.
    pub s3_url: String,
}

impl stratus_scheduler::PlatformApi for InstanceApi {
    fn env(&self, app: &str, instance: &str) -> Vec<(String, String)> {
        vec![
            ("STRATUS_API_URL".to_owned(), self.url.clone()),
            (
                "STRATUS_API_TOKEN".to_owned(),
                instance_token(&self.secret, app, instance),
            ),
            ("AWS_ENDPOINT_URL_S3".to_owned(), self.s3_url.clone()),
            ("AWS_ACCESS_KEY_ID".to_owned(), function_key(app)),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                function_secret(&self.secret, app),
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

    #[test]
    fn a_function_credential_is_its_app_s_and_derived_from_the_secret() {
        let (app, secret) = function_credential("admin", &function_key("shop")).unwrap();
        assert_eq!(app, "shop");
        assert_eq!(secret.len(), 40);
        assert_eq!(secret, function_secret("admin", "shop"));
        assert_ne!(secret, function_secret("admin", "other"));
        assert_ne!(secret, function_secret("another admin", "shop"));
        assert_eq!(function_credential("admin", "AKSTABCDEFGHIJKLMNOP"), None);
        assert_eq!(function_credential("admin", "STFN_Not/An/App"), None);
    }
}
