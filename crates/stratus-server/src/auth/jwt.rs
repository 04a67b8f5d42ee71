//! JSON Web Tokens signed with HMAC-SHA256 (RFC 7519, `alg: HS256`): the
//! access tokens of end users' sessions and the tickets apps' functions
//! mint for custom sign-in. Only HS256 is accepted, whatever a token's
//! header claims, so a token cannot pick a weaker check (`none`).

use base64::Engine;
use hmac::Mac;
use serde_json::{Map, Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How far clocks may disagree, in seconds, for `exp`.
const LEEWAY_SECS: i64 = 30;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("the token is not a JWT (three base64url parts separated by dots)")]
    Malformed,
    #[error("the token is not signed with HS256 by this platform for this app")]
    BadSignature,
    #[error("the token expired; refresh the session (or sign in again)")]
    Expired,
    #[error("the token is for {0}, not for this app")]
    WrongAudience(String),
    #[error("the token is not {0}")]
    WrongKind(&'static str),
}

fn mac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Signs `claims` with `key`.
pub(crate) fn sign(key: &[u8], claims: &Map<String, Value>) -> String {
    let header = B64.encode(json!({ "alg": "HS256", "typ": "JWT" }).to_string());
    let payload = B64.encode(Value::Object(claims.clone()).to_string());
    let signed = format!("{header}.{payload}");
    let signature = B64.encode(mac(key, signed.as_bytes()));
    format!("{signed}.{signature}")
}

/// The claims of `token` if `key` signed it with HS256, its `aud` is
/// `audience`, its `typ` is `kind` and it has not expired at `now_secs`.
pub(crate) fn verify(
    key: &[u8],
    token: &str,
    audience: &str,
    kind: &'static str,
    now_secs: i64,
) -> Result<Map<String, Value>, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Value = B64
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(TokenError::Malformed)?;
    if header["alg"] != "HS256" {
        return Err(TokenError::BadSignature);
    }
    let given = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
    let expected = mac(key, format!("{}.{payload}", token_head(token)).as_bytes());
    if !crate::api::constant_time_eq(&given, &expected) {
        return Err(TokenError::BadSignature);
    }
    let claims: Map<String, Value> = B64
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.get("iss").and_then(Value::as_str) != Some("stratus") {
        return Err(TokenError::BadSignature);
    }
    match claims.get("aud").and_then(Value::as_str) {
        Some(aud) if aud == audience => {}
        Some(other) => return Err(TokenError::WrongAudience(format!("app {other}"))),
        None => return Err(TokenError::WrongAudience("no app".into())),
    }
    if claims.get("typ").and_then(Value::as_str) != Some(kind) {
        return Err(TokenError::WrongKind(match kind {
            "access" => "an access token",
            _ => "a sign-in ticket",
        }));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(TokenError::Malformed)?;
    let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(exp);
    // A tenth of the token's life, up to the most clocks may disagree.
    let leeway = ((exp - iat) / 10).clamp(0, LEEWAY_SECS);
    if now_secs > exp + leeway {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// The header part of a token.
fn token_head(token: &str) -> &str {
    token.split('.').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(aud: &str, typ: &str, exp: i64) -> Map<String, Value> {
        json!({ "iss": "stratus", "aud": aud, "typ": typ, "sub": "u1", "iat": exp - 1000, "exp": exp })
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_token_verifies_with_its_key_audience_kind_and_time() {
        let token = sign(b"key", &claims("shop", "access", 1000));
        assert_eq!(
            verify(b"key", &token, "shop", "access", 900).unwrap()["sub"],
            "u1"
        );
        assert_eq!(
            verify(b"other", &token, "shop", "access", 900),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verify(b"key", &token, "blog", "access", 900),
            Err(TokenError::WrongAudience(_))
        ));
        assert!(matches!(
            verify(b"key", &token, "shop", "ticket", 900),
            Err(TokenError::WrongKind(_))
        ));
        assert_eq!(
            verify(b"key", &token, "shop", "access", 1031),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(b"key", "a.b", "shop", "access", 0),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn a_forged_token_is_refused() {
        let token = sign(b"key", &claims("shop", "access", 1000));
        let mut parts: Vec<&str> = token.split('.').collect();
        // Another payload under the same signature.
        let forged_payload =
            B64.encode(Value::Object(claims("shop", "access", 99_999)).to_string());
        parts[1] = &forged_payload;
        assert_eq!(
            verify(b"key", &parts.join("."), "shop", "access", 900),
            Err(TokenError::BadSignature)
        );
        // `alg: none`, unsigned.
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(Value::Object(claims("shop", "access", 1000)).to_string())
        );
        assert_eq!(
            verify(b"key", &none, "shop", "access", 900),
            Err(TokenError::BadSignature)
        );
    }
}
