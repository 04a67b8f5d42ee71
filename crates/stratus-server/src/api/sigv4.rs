//! AWS Signature Version 4 in its header form: does a request carry the
//! signature that the secret of its credential gives?
//!
//! Here is what the Lambda Invoke API needs: `Authorization:
//! AWS4-HMAC-SHA256`, and the rules of every service but S3: the
//! canonical URI is the path as sent (still percent-encoded), with dot
//! and empty segments removed, URI-encoded once more; the payload is
//! hashed, and an `x-amz-content-sha256` header must be that hash (no
//! `UNSIGNED-PAYLOAD`). S3's own rules (its canonical URI, presigned URLs,
//! payloads unsigned or signed chunk by chunk) are in `s3/auth.rs`, on
//! the pieces here. Pure: no I/O, and the time is an argument. The unit
//! tests check it against AWS's published examples.

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::constant_time_eq;

pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far `x-amz-date` may be from the server's clock, either way, as on AWS.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigV4Error {
    /// The `Authorization` or `x-amz-date` header cannot be read.
    #[error("{0}")]
    Malformed(String),
    #[error(
        "signature expired: the request was signed at {signed_at} and the server's time is {now}, more than 15 minutes apart; set the client's clock right"
    )]
    Expired { signed_at: String, now: String },
    /// The credential's scope does not fit the request.
    #[error("{0}")]
    Scope(String),
    #[error(
        "the x-amz-content-sha256 header is not the SHA-256 of the body; sign the body that is sent"
    )]
    BodyHash,
    #[error(
        "the request signature we calculated does not match the signature you provided; check your secret access key and signing method"
    )]
    Mismatch,
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=...,
/// SignedHeaders=..., Signature=...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD`, the first part of the credential's scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case header names, in the order given.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    pub fn parse(header: &str) -> Result<Authorization, SigV4Error> {
        let malformed = |what: &str| {
            SigV4Error::Malformed(format!(
                "the Authorization header is not `{ALGORITHM} Credential=KEY/DATE/REGION/SERVICE/aws4_request, SignedHeaders=..., Signature=...`: {what}"
            ))
        };
        let rest = header
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| malformed("another algorithm"))?;
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (name, value) = part
                .trim()
                .split_once('=')
                .ok_or_else(|| malformed("a part without `=`"))?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => return Err(malformed(&format!("unknown part {name:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(malformed(&format!("{name} twice")));
            }
        }
        let credential = credential.ok_or_else(|| malformed("no Credential"))?;
        let signed_headers = signed_headers.ok_or_else(|| malformed("no SignedHeaders"))?;
        let signature = signature.ok_or_else(|| malformed("no Signature"))?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
            return Err(malformed(
                "the Credential is not KEY/DATE/REGION/SERVICE/aws4_request",
            ));
        };
        if access_key_id.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(malformed("the Credential has no key or no YYYYMMDD date"));
        }
        let signed_headers: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
        if signed_headers
            .iter()
            .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
        {
            return Err(malformed("SignedHeaders is not a list of lower-case names"));
        }
        Ok(Authorization {
            access_key_id: access_key_id.to_owned(),
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_headers,
            signature: signature.to_owned(),
        })
    }

    /// `DATE/REGION/SERVICE/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// What of a request the signature covers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Checks that `request` is signed by `auth` with `secret` for `service`,
/// within 15 minutes of `now`. The signatures are compared in constant time.
pub(crate) fn verify(
    auth: &Authorization,
    request: &SignedRequest<'_>,
    secret: &str,
    service: &str,
    now: SystemTime,
) -> Result<(), SigV4Error> {
    if auth.service != service {
        return Err(SigV4Error::Scope(format!(
            "the credential is scoped to service {:?}; sign for {service:?}",
            auth.service
        )));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(SigV4Error::Malformed(format!(
                "the {required} header must be signed; add it to SignedHeaders"
            )));
        }
    }
    let amz_date = header_value(request.headers, "x-amz-date")
        .ok_or_else(|| SigV4Error::Malformed("the request has no x-amz-date header".into()))?;
    check_time(&amz_date, now)?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigV4Error::Scope(format!(
            "the credential's date {} is not the date of x-amz-date {amz_date}",
            auth.date
        )));
    }
    let canonical = canonical_request(request, &auth.signed_headers)?;
    let expected = signature(
        secret,
        &auth.date,
        &auth.region,
        &auth.service,
        &string_to_sign(&amz_date, &auth.scope(), &canonical),
    );
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigV4Error::Mismatch)
    }
}

/// Refuses an `x-amz-date` (`YYYYMMDDTHHMMSSZ`) more than 15 minutes from `now`.
pub(crate) fn check_time(amz_date: &str, now: SystemTime) -> Result<(), SigV4Error> {
    let signed_at = parse_amz_date(amz_date)?;
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(SigV4Error::Expired {
            signed_at: amz_date.to_owned(),
            now: humantime::format_rfc3339_seconds(now).to_string(),
        });
    }
    Ok(())
}

/// The time of an `x-amz-date` (`YYYYMMDDTHHMMSSZ`).
pub(crate) fn parse_amz_date(amz_date: &str) -> Result<SystemTime, SigV4Error> {
    let b = amz_date.as_bytes();
    let shaped = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    shaped
        .then(|| {
            let d = |r: std::ops::Range<usize>| &amz_date[r];
            let rfc3339 = format!(
                "{}-{}-{}T{}:{}:{}Z",
                d(0..4),
                d(4..6),
                d(6..8),
                d(9..11),
                d(11..13),
                d(13..15)
            );
            humantime::parse_rfc3339(&rfc3339).ok()
        })
        .flatten()
        .ok_or_else(|| {
            SigV4Error::Malformed(format!(
                "x-amz-date {amz_date:?} is not a time of the form 20150830T123600Z"
            ))
        })
}

/// The canonical request: method, URI, query, the signed headers, their
/// names, and the payload's hash, one a line.
pub(crate) fn canonical_request(
    request: &SignedRequest<'_>,
    signed_headers: &[String],
) -> Result<String, SigV4Error> {
    let body_hash = stratus_archive::sha256_hex(request.body);
    if let Some(given) = header_value(request.headers, "x-amz-content-sha256")
        && !constant_time_eq(given.as_bytes(), body_hash.as_bytes())
    {
        return Err(SigV4Error::BodyHash);
    }
    let mut out = format!(
        "{}\n{}\n{}\n",
        request.method,
        canonical_uri(request.path),
        canonical_query(request.query)
    );
    for name in signed_headers {
        let value = header_value(request.headers, name).ok_or_else(|| {
            SigV4Error::Malformed(format!(
                "the signed header {name} is not in the request; sign only the headers that are sent"
            ))
        })?;
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push_str(&format!("\n{}\n{body_hash}", signed_headers.join(";")));
    Ok(out)
}

/// A header's values, each trimmed with inner runs of spaces made one,
/// joined by commas; `None` when it is absent.
pub(crate) fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_ascii_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// The path with `.`, `..` and empty segments resolved (as every service
/// but S3 wants), each segment URI-encoded again.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut out = String::from("/");
    let encoded: Vec<String> = segments.iter().map(|s| uri_encode(s.as_bytes())).collect();
    out.push_str(&encoded.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// Every parameter decoded and encoded again the AWS way, sorted by name,
/// then value.
pub(crate) fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(name)),
                uri_encode(&percent_decode(value)),
            )
        })
        .collect();
    pairs.sort();
    let pairs: Vec<String> = pairs.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
    pairs.join("&")
}

/// Percent-encodes all but the unreserved characters, with upper-case hex.
pub(crate) fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX`; anything else (a `+` too) stands for itself.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit();
        if escaped {
            let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(digit(b[i + 1]) << 4 | digit(b[i + 2]));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        stratus_archive::sha256_hex(canonical_request.as_bytes())
    )
}

/// The key derived from the secret for one day, region and service.
pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// The hex signature of `string_to_sign`.
pub(crate) fn signature(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
    string_to_sign: &str,
) -> String {
    let key = signing_key(secret, date, region, service);
    hex(&hmac(&key, string_to_sign.as_bytes()))
}

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
