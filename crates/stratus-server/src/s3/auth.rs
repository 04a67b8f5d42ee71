//! Who sends an S3 request: Signature Version 4 with S3's rules, in the
//! `Authorization` header or in a presigned URL's query, with an app's AWS
//! credential (`stratus keys create APP --aws`, or the one its functions
//! are given, derived from the platform secret); or nobody.
//!
//! S3's rules beside every other service's: the canonical URI is the path
//! encoded once, as it is, with no segment resolved; the last line of the
//! canonical request is `x-amz-content-sha256` as sent, which may be the
//! body's hash (checked as the body streams in), `UNSIGNED-PAYLOAD`, or
//! one of the `STREAMING-*` values of a body in `aws-chunked` encoding,
//! whose chunks are signed one after another from the request's
//! signature ([`ChunkSigner`]). A presigned URL carries the signature in
//! `X-Amz-*` parameters, signs an unsigned payload, and ends after
//! `X-Amz-Expires` seconds.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, StatusCode};

use super::error::S3Error;
use crate::api::AwsCredentials;
use crate::api::constant_time_eq;
use crate::api::sigv4::{self, ALGORITHM, Authorization, SigV4Error};

/// The hash of nothing, which each signed chunk's string to sign holds.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The longest a presigned URL may last, as on AWS: seven days.
const MAX_EXPIRES: u64 = 7 * 24 * 3600;

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Signed with a credential of this app.
    App(String),
    /// Not signed: only public buckets' objects may be read.
    Anonymous,
}

/// What the signature says of the body.
#[derive(Debug)]
pub(crate) enum Payload {
    /// `UNSIGNED-PAYLOAD`: the body as it comes.
    Unsigned,
    /// The body's hex SHA-256, which it must have.
    Sha256(String),
    /// `aws-chunked`, each chunk signed from the request's signature.
    SignedChunks(ChunkSigner),
    /// `aws-chunked` with unsigned chunks (and a trailer).
    UnsignedChunks,
}

#[derive(Debug)]
pub(crate) struct Verified {
    pub caller: Caller,
    pub payload: Payload,
}

/// Checks each chunk signature of an `aws-chunked` body in turn: the
/// signature of a chunk covers its data's hash and the signature before.
#[derive(Debug)]
pub(crate) struct ChunkSigner {
    key: [u8; 32],
    amz_date: String,
    scope: String,
    previous: String,
}

impl ChunkSigner {
    /// Whether `given` signs the next chunk, whose data hashes to
    /// `sha256_hex`.
    pub(crate) fn chunk(&mut self, sha256_hex: &str, given: &str) -> bool {
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{sha256_hex}",
            self.amz_date, self.scope, self.previous
        );
        self.next(&to_sign, given)
    }

    /// Whether `given` signs the trailing headers, `trailer` as sent
    /// (each `name:value\n`).
    pub(crate) fn trailer(&mut self, trailer: &str, given: &str) -> bool {
        let to_sign = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            self.previous,
            stratus_archive::sha256_hex(trailer.as_bytes())
        );
        self.next(&to_sign, given)
    }

    fn next(&mut self, to_sign: &str, given: &str) -> bool {
        let expected = sigv4::hex(&sigv4::hmac(&self.key, to_sign.as_bytes()));
        let ok = constant_time_eq(expected.as_bytes(), given.as_bytes());
        self.previous = expected;
        ok
    }
}

/// Who sent the request, if its signature holds.
pub(crate) fn authenticate(
    credentials: &AwsCredentials,
    platform_secret: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Verified, S3Error> {
    let given = headers
        .get("authorization")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let presigned = query_param(query, "X-Amz-Algorithm").is_some();
    let (auth, amz_date, payload_line, canonical_query) = match (given, presigned) {
        (Some(_), true) => {
            return Err(S3Error::invalid_argument(
                "a request is signed in its Authorization header or in its query, not both",
            ));
        }
        (Some(header), false) if header.starts_with(ALGORITHM) => {
            let auth = Authorization::parse(&header).map_err(refused)?;
            let amz_date = sigv4::header_value(headers, "x-amz-date").ok_or_else(|| {
                S3Error::access_denied("the request has no x-amz-date header; sign it with one")
            })?;
            sigv4::check_time(&amz_date, now).map_err(refused)?;
            let payload =
                sigv4::header_value(headers, "x-amz-content-sha256").ok_or_else(|| {
                    S3Error::invalid_request(
                        "missing required header for this request: x-amz-content-sha256",
                    )
                })?;
            for required in ["host", "x-amz-content-sha256"] {
                if !auth.signed_headers.iter().any(|h| h == required) {
                    return Err(refused(SigV4Error::Malformed(format!(
                        "the {required} header must be signed; add it to SignedHeaders"
                    ))));
                }
            }
            (auth, amz_date, payload, sigv4::canonical_query(query))
        }
        (Some(_), false) => {
            return Err(S3Error::invalid_argument(
                "only AWS Signature Version 4 (AWS4-HMAC-SHA256) is supported; configure the client for s3v4",
            ));
        }
        (None, true) => presigned_parts(query, now)?,
        (None, false) if query_param(query, "AWSAccessKeyId").is_some() => {
            return Err(S3Error::invalid_argument(
                "presigned URLs of Signature Version 2 are not supported; presign with Signature Version 4 (the AWS CLI: `aws configure set default.s3.signature_version s3v4`)",
            ));
        }
        (None, false) => {
            return Ok(Verified {
                caller: Caller::Anonymous,
                payload: Payload::Unsigned,
            });
        }
    };
    if auth.service != "s3" {
        return Err(refused(SigV4Error::Scope(format!(
            "the credential is scoped to service {:?}; sign for \"s3\"",
            auth.service
        ))));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(refused(SigV4Error::Scope(format!(
            "the credential's date {} is not the date of x-amz-date {amz_date}",
            auth.date
        ))));
    }
    let (app, secret) = credential(credentials, platform_secret, &auth.access_key_id)?;
    let mut canonical = format!("{method}\n{}\n{canonical_query}\n", canonical_uri(path));
    for name in &auth.signed_headers {
        let value = sigv4::header_value(headers, name).ok_or_else(|| {
            refused(SigV4Error::Malformed(format!(
                "the signed header {name} is not in the request; sign only the headers that are sent"
            )))
        })?;
        canonical.push_str(&format!("{name}:{value}\n"));
    }
    canonical.push_str(&format!(
        "\n{}\n{payload_line}",
        auth.signed_headers.join(";")
    ));
    let scope = auth.scope();
    let key = sigv4::signing_key(&secret, &auth.date, &auth.region, &auth.service);
    let to_sign = sigv4::string_to_sign(&amz_date, &scope, &canonical);
    let expected = sigv4::hex(&sigv4::hmac(&key, to_sign.as_bytes()));
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(refused(SigV4Error::Mismatch));
    }
    let payload = match payload_line.as_str() {
        "UNSIGNED-PAYLOAD" => Payload::Unsigned,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" | "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => {
            Payload::SignedChunks(ChunkSigner {
                key,
                amz_date,
                scope,
                previous: expected,
            })
        }
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Payload::UnsignedChunks,
        hash if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Payload::Sha256(hash.to_ascii_lowercase())
        }
        other => {
            return Err(S3Error::invalid_argument(format!(
                "x-amz-content-sha256 {other:?} is neither a SHA-256 nor a payload S3 knows"
            )));
        }
    };
    Ok(Verified {
        caller: Caller::App(app),
        payload,
    })
}

/// The app and secret of access key id `key_id`: a credential made with
/// `stratus keys create APP --aws`, or an app's functions' own.
pub(crate) fn credential(
    credentials: &AwsCredentials,
    platform_secret: &str,
    key_id: &str,
) -> Result<(String, String), S3Error> {
    match credentials.get(key_id) {
        Some(credential) => Ok((credential.app.clone(), credential.secret.clone())),
        None => crate::api::function_credential(platform_secret, key_id).ok_or_else(|| {
            S3Error::new(
                StatusCode::FORBIDDEN,
                "InvalidAccessKeyId",
                "the AWS access key id you provided does not exist in our records; make one with `stratus keys create APP --aws`",
            )
        }),
    }
}

/// A presigned URL's credential, time, payload line and canonical query
/// (every parameter but the signature), once it is checked that it has
/// not expired.
fn presigned_parts(
    query: &str,
    now: SystemTime,
) -> Result<(Authorization, String, String, String), S3Error> {
    let param = |name: &str| {
        query_param(query, name).ok_or_else(|| {
            S3Error::access_denied(format!(
                "the presigned URL has no {name} parameter; presign it again"
            ))
        })
    };
    let algorithm = param("X-Amz-Algorithm")?;
    if algorithm != ALGORITHM {
        return Err(S3Error::invalid_argument(format!(
            "X-Amz-Algorithm {algorithm:?} is not supported; presign with {ALGORITHM}"
        )));
    }
    let auth = Authorization::parse(&format!(
        "{ALGORITHM} Credential={}, SignedHeaders={}, Signature={}",
        param("X-Amz-Credential")?,
        param("X-Amz-SignedHeaders")?,
        param("X-Amz-Signature")?
    ))
    .map_err(refused)?;
    let amz_date = param("X-Amz-Date")?;
    let signed_at = sigv4::parse_amz_date(&amz_date).map_err(refused)?;
    let expires: u64 = param("X-Amz-Expires")?
        .parse()
        .ok()
        .filter(|s| (1..=MAX_EXPIRES).contains(s))
        .ok_or_else(|| {
            S3Error::access_denied(format!(
                "X-Amz-Expires must be a number of seconds from 1 to {MAX_EXPIRES} (seven days)"
            ))
        })?;
    if signed_at > now + Duration::from_secs(15 * 60) {
        return Err(S3Error::access_denied(
            "the presigned URL was signed in the future; set the signer's clock right",
        ));
    }
    if now > signed_at + Duration::from_secs(expires) {
        return Err(S3Error::access_denied("request has expired").on(""));
    }
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some("X-Amz-Signature"))
        .collect();
    Ok((
        auth,
        amz_date,
        "UNSIGNED-PAYLOAD".to_owned(),
        sigv4::canonical_query(&rest.join("&")),
    ))
}

/// A presigned URL's query for `method` on `path` (as it will be sent)
/// at `host`, good for `expires` seconds from `now`, signed with the
/// credential (`key_id`, `secret`) for `region`; the payload is unsigned.
#[allow(clippy::too_many_arguments)]
pub(crate) fn presign(
    (key_id, secret): (&str, &str),
    region: &str,
    method: &str,
    host: &str,
    path: &str,
    expires: u64,
    now: SystemTime,
) -> String {
    let amz_date = amz_date(now);
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let query = format!(
        "X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
        sigv4::uri_encode(format!("{key_id}/{scope}").as_bytes())
    );
    let canonical = format!(
        "{method}\n{}\n{}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD",
        canonical_uri(path),
        sigv4::canonical_query(&query)
    );
    let key = sigv4::signing_key(secret, date, region, "s3");
    let signature = sigv4::hex(&sigv4::hmac(
        &key,
        sigv4::string_to_sign(&amz_date, &scope, &canonical).as_bytes(),
    ));
    format!("{query}&X-Amz-Signature={signature}")
}

/// `YYYYMMDDTHHMMSSZ`.
fn amz_date(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect()
}

/// Signs a request to an S3 service: `method` on `path` (as it will be
/// sent) with `headers` (lower-case names, `host` among them, the
/// payload's `x-amz-content-sha256` too), every one signed; `headers`
/// gains `x-amz-date`. The `x-amz-date` and `Authorization` values.
pub(crate) fn sign(
    (key_id, secret): (&str, &str),
    region: &str,
    method: &str,
    path: &str,
    headers: &mut Vec<(String, String)>,
    now: SystemTime,
) -> (String, String) {
    let amz_date = amz_date(now);
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/s3/aws4_request");
    headers.push(("x-amz-date".to_owned(), amz_date.clone()));
    headers.sort();
    let payload = headers
        .iter()
        .find(|(n, _)| n == "x-amz-content-sha256")
        .map_or("UNSIGNED-PAYLOAD", |(_, v)| v.as_str())
        .to_owned();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let mut canonical = format!("{method}\n{}\n\n", canonical_uri(path));
    for (name, value) in headers.iter() {
        canonical.push_str(&format!("{name}:{}\n", value.trim()));
    }
    canonical.push_str(&format!("\n{signed}\n{payload}"));
    let key = sigv4::signing_key(secret, date, region, "s3");
    let signature = sigv4::hex(&sigv4::hmac(
        &key,
        sigv4::string_to_sign(&amz_date, &scope, &canonical).as_bytes(),
    ));
    (
        amz_date,
        format!(
            "{ALGORITHM} Credential={key_id}/{scope}, SignedHeaders={signed}, Signature={signature}"
        ),
    )
}

/// A query parameter's value, decoded.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (sigv4::percent_decode(n) == name.as_bytes())
            .then(|| String::from_utf8_lossy(&sigv4::percent_decode(v)).into_owned())
    })
}

/// S3's canonical URI: the path decoded and encoded once more, each
/// segment as it is (S3 keys may hold `//` and `.`), `/` kept.
fn canonical_uri(path: &str) -> String {
    let decoded = sigv4::percent_decode(path);
    decoded
        .split(|b| *b == b'/')
        .map(sigv4::uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// A signature that does not hold, as S3 answers it.
fn refused(err: SigV4Error) -> S3Error {
    match err {
        SigV4Error::Malformed(message) | SigV4Error::Scope(message) => S3Error::new(
            StatusCode::BAD_REQUEST,
            "AuthorizationHeaderMalformed",
            message,
        ),
        SigV4Error::Expired { .. } => S3Error::new(
            StatusCode::FORBIDDEN,
            "RequestTimeTooSkewed",
            err.to_string(),
        ),
        SigV4Error::BodyHash => S3Error::new(
            StatusCode::BAD_REQUEST,
            "XAmzContentSHA256Mismatch",
            err.to_string(),
        ),
        SigV4Error::Mismatch => S3Error::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            err.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests;
