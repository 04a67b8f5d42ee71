//! Signature Version 4 against AWS's own published values: the IAM
//! `ListUsers` example of the signing documentation and cases of the
//! Signature Version 4 test suite (`get-vanilla` and its neighbours), all
//! signed with the documentation's example secret at 20150830T123600Z.

use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const AMZ_DATE: &str = "20150830T123600Z";
/// `AMZ_DATE` as a time.
fn signed_at() -> SystemTime {
    humantime::parse_rfc3339("2015-08-30T12:36:00Z").unwrap()
}

/// One published case: a request, and the signature AWS gives for it.
struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: &'static str,
    host: &'static str,
    /// Headers besides `host` and `x-amz-date`, all signed.
    extra: &'static [(&'static str, &'static str)],
    service: &'static str,
    /// SHA-256 of the canonical request, where the source gives it.
    canonical_sha256: Option<&'static str>,
    signature: &'static str,
}

const GET_VANILLA: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

fn suite(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: &'static str,
    signature: &'static str,
) -> Case {
    Case {
        name,
        method,
        path,
        query,
        host: "example.amazonaws.com",
        extra: &[],
        service: "service",
        canonical_sha256: None,
        signature,
    }
}

fn list_users() -> Case {
    Case {
        name: "IAM ListUsers (signing documentation)",
        method: "GET",
        path: "/",
        query: "Action=ListUsers&Version=2010-05-08",
        host: "iam.amazonaws.com",
        extra: &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        service: "iam",
        canonical_sha256: Some("f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"),
        signature: "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
    }
}

fn cases() -> Vec<Case> {
    let mut vanilla = suite("get-vanilla", "GET", "/", "", GET_VANILLA);
    vanilla.canonical_sha256 =
        Some("bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");
    vec![
        list_users(),
        vanilla,
        suite(
            "get-vanilla-query-order-key-case",
            "GET",
            "/",
            "Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        suite(
            "post-vanilla",
            "POST",
            "/",
            "",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        // The normalize-path cases whose canonical URI is `/`, as get-vanilla's.
        suite("get-slash", "GET", "//", "", GET_VANILLA),
        suite("get-slash-dot-slash", "GET", "/./", "", GET_VANILLA),
        suite("get-relative", "GET", "/example/..", "", GET_VANILLA),
        suite(
            "get-relative-relative",
            "GET",
            "/example1/example2/../..",
            "",
            GET_VANILLA,
        ),
    ]
}

impl Case {
    fn signed_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = ["host", "x-amz-date"]
            .into_iter()
            .chain(self.extra.iter().map(|(n, _)| *n))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static(self.host));
        headers.insert("x-amz-date", HeaderValue::from_static(AMZ_DATE));
        for (name, value) in self.extra {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    fn request<'a>(&'a self, headers: &'a HeaderMap, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            method: self.method,
            path: self.path,
            query: self.query,
            headers,
            body,
        }
    }

    fn authorization(&self, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/{}/aws4_request, SignedHeaders={}, Signature={signature}",
            self.service,
            self.signed_headers().join(";")
        )
    }
}

/// Verifies `case` with `headers` and `body` as sent, at `now`.
fn verify_case(
    case: &Case,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
    now: SystemTime,
) -> Result<(), SigV4Error> {
    let auth = Authorization::parse(&case.authorization(case.signature))?;
    let request = case.request(headers, body);
    verify(&auth, &request, secret, case.service, now)
}

#[test]
fn published_examples_verify() {
    for case in cases() {
        let headers = case.headers();
        let request = case.request(&headers, b"");
        let canonical = canonical_request(&request, &case.signed_headers()).unwrap();
        if let Some(expected) = case.canonical_sha256 {
            assert_eq!(
                stratus_archive::sha256_hex(canonical.as_bytes()),
                expected,
                "{}: canonical request\n{canonical}",
                case.name
            );
        }
        let scope = format!("20150830/us-east-1/{}/aws4_request", case.service);
        let computed = signature(
            SECRET,
            "20150830",
            "us-east-1",
            case.service,
            &string_to_sign(AMZ_DATE, &scope, &canonical),
        );
        assert_eq!(computed, case.signature, "{}", case.name);
        verify_case(&case, &headers, b"", SECRET, signed_at())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
}

#[test]
fn the_signing_key_is_the_documented_one() {
    assert_eq!(
        hex(&signing_key(SECRET, "20150830", "us-east-1", "iam")),
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    );
}

#[test]
fn the_documented_header_parses() {
    let auth = Authorization::parse(&list_users().authorization(list_users().signature)).unwrap();
    assert_eq!(
        auth,
        Authorization {
            access_key_id: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "iam".into(),
            signed_headers: vec!["content-type".into(), "host".into(), "x-amz-date".into()],
            signature: list_users().signature.into(),
        }
    );
    assert_eq!(auth.scope(), "20150830/us-east-1/iam/aws4_request");
}

#[test]
fn malformed_headers_are_refused() {
    let good = "Credential=AKID/20150830/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";
    for header in [
        "Bearer token".to_owned(),
        format!("AWS4-HMAC-SHA1 {good}"),
        format!("AWS4-HMAC-SHA256{good}"),
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request, Signature=abc"
            .to_owned(),
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request, SignedHeaders=host"
            .to_owned(),
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda, SignedHeaders=host, Signature=a"
            .to_owned(),
        "AWS4-HMAC-SHA256 Credential=AKID/2015083/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=a"
            .to_owned(),
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request, SignedHeaders=Host, Signature=a"
            .to_owned(),
        format!("AWS4-HMAC-SHA256 {good}, Signature=def"),
        format!("AWS4-HMAC-SHA256 {good}, Extra=1"),
    ] {
        assert!(
            matches!(Authorization::parse(&header), Err(SigV4Error::Malformed(_))),
            "{header:?} should be refused"
        );
    }
}

#[test]
fn a_wrong_secret_or_signature_does_not_verify() {
    let case = list_users();
    let headers = case.headers();
    assert_eq!(
        verify_case(&case, &headers, b"", "not the secret", signed_at()),
        Err(SigV4Error::Mismatch)
    );
    let mut tampered = list_users();
    tampered.signature = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d8";
    assert_eq!(
        verify_case(&tampered, &headers, b"", SECRET, signed_at()),
        Err(SigV4Error::Mismatch)
    );
}

#[test]
fn a_changed_request_does_not_verify() {
    let case = list_users();
    let now = signed_at();
    // Another body, another signed header value, another query, another path.
    assert_eq!(
        verify_case(&case, &case.headers(), b"{}", SECRET, now),
        Err(SigV4Error::Mismatch)
    );
    let mut headers = case.headers();
    headers.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(
        verify_case(&case, &headers, b"", SECRET, now),
        Err(SigV4Error::Mismatch)
    );
    let mut query = list_users();
    query.query = "Action=ListUsers&Version=2010-05-09";
    assert_eq!(
        verify_case(&query, &case.headers(), b"", SECRET, now),
        Err(SigV4Error::Mismatch)
    );
    let mut path = list_users();
    path.path = "/other";
    assert_eq!(
        verify_case(&path, &case.headers(), b"", SECRET, now),
        Err(SigV4Error::Mismatch)
    );
    // Headers that are not signed may change.
    let mut headers = case.headers();
    headers.insert("user-agent", HeaderValue::from_static("anything"));
    assert_eq!(verify_case(&case, &headers, b"", SECRET, now), Ok(()));
}

#[test]
fn the_signed_headers_and_the_body_hash_must_be_those_sent() {
    let case = list_users();
    let now = signed_at();
    let mut headers = case.headers();
    headers.remove("content-type");
    assert!(matches!(
        verify_case(&case, &headers, b"", SECRET, now),
        Err(SigV4Error::Malformed(_))
    ));
    let mut headers = case.headers();
    headers.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    assert_eq!(
        verify_case(&case, &headers, b"", SECRET, now),
        Err(SigV4Error::BodyHash)
    );
}

#[test]
fn the_time_must_be_within_15_minutes() {
    let case = list_users();
    let headers = case.headers();
    let minutes = |m: u64| Duration::from_secs(m * 60);
    for now in [signed_at() + minutes(14), signed_at() - minutes(14)] {
        assert_eq!(verify_case(&case, &headers, b"", SECRET, now), Ok(()));
    }
    for now in [signed_at() + minutes(16), signed_at() - minutes(16)] {
        assert!(matches!(
            verify_case(&case, &headers, b"", SECRET, now),
            Err(SigV4Error::Expired { .. })
        ));
    }
    let mut headers = case.headers();
    headers.insert(
        "x-amz-date",
        HeaderValue::from_static("2015-08-30T12:36:00Z"),
    );
    assert!(matches!(
        verify_case(&case, &headers, b"", SECRET, signed_at()),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn the_service_and_the_date_must_be_the_scope() {
    let case = list_users();
    let auth = Authorization::parse(&case.authorization(case.signature)).unwrap();
    let headers = case.headers();
    let request = case.request(&headers, b"");
    assert!(matches!(
        verify(&auth, &request, SECRET, "lambda", signed_at()),
        Err(SigV4Error::Scope(_))
    ));
    let mut next_day = auth.clone();
    next_day.date = "20150831".into();
    assert!(matches!(
        verify(&next_day, &request, SECRET, "iam", signed_at()),
        Err(SigV4Error::Scope(_))
    ));
}

/// Each case: input, canonical form.
fn check(f: fn(&str) -> String, cases: &[(&str, &str)]) {
    for (input, expected) in cases {
        assert_eq!(f(input), *expected, "input {input:?}");
    }
}

#[test]
fn paths_are_normalized_and_encoded_once_more() {
    check(
        canonical_uri,
        &[
            ("/", "/"),
            ("", "/"),
            ("/a/b/", "/a/b/"),
            ("//a//b", "/a/b"),
            ("/a/./b/../c", "/a/c"),
            ("/..", "/"),
            ("/a b~-_.", "/a%20b~-_."),
            // What boto3 sends for an ARN: its colons escaped once, then again.
            (
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ademo.f/invocations",
                "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-east-1%253A000000000000%253Afunction%253Ademo.f/invocations",
            ),
        ],
    );
}

#[test]
fn queries_are_decoded_encoded_and_sorted() {
    check(
        canonical_query,
        &[
            ("", ""),
            ("b=2&a=1", "a=1&b=2"),
            ("a=2&a=1", "a=1&a=2"),
            ("Qualifier=%24LATEST", "Qualifier=%24LATEST"),
            ("Qualifier=$LATEST", "Qualifier=%24LATEST"),
            ("flag&x=a+b", "flag=&x=a%2Bb"),
            ("k=%7e%2f%zz%4", "k=~%2F%25zz%254"),
        ],
    );
}
