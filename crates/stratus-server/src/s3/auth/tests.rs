//! S3's Signature Version 4 against the examples of AWS's S3 signing
//! documentation (header form, presigned URL, chunked upload), signed
//! with its example credential at 20130524T000000Z.

use axum::http::{HeaderName, HeaderValue};

use super::*;
use stratus_store::AwsCredentialRecord;

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn credentials() -> AwsCredentials {
    AwsCredentials::new(vec![AwsCredentialRecord {
        access_key_id: KEY_ID.into(),
        app: "shop".into(),
        name: "example".into(),
        secret: SECRET.into(),
        created_ms: 0,
    }])
}

fn at() -> SystemTime {
    humantime::parse_rfc3339("2013-05-24T00:00:00Z").unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn authorization(signed: &str, signature: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={KEY_ID}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed},Signature={signature}"
    )
}

#[test]
fn a_ranged_get_signed_in_its_header() {
    let signature = "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41";
    let request = |signature: &str| {
        headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                &authorization("host;range;x-amz-content-sha256;x-amz-date", signature),
            ),
        ])
    };
    let verified = authenticate(
        &credentials(),
        "platform",
        "GET",
        "/test.txt",
        "",
        &request(signature),
        at(),
    )
    .unwrap();
    assert_eq!(verified.caller, Caller::App("shop".into()));
    assert!(matches!(verified.payload, Payload::Sha256(ref h) if h == EMPTY));
    let wrong = signature.replace('f', "e");
    let err = authenticate(
        &credentials(),
        "platform",
        "GET",
        "/test.txt",
        "",
        &request(&wrong),
        at(),
    )
    .unwrap_err();
    assert_eq!(err.code, "SignatureDoesNotMatch");
    let late = at() + Duration::from_secs(3600);
    let err = authenticate(
        &credentials(),
        "platform",
        "GET",
        "/test.txt",
        "",
        &request(signature),
        late,
    )
    .unwrap_err();
    assert_eq!(err.code, "RequestTimeTooSkewed");
}

#[test]
fn a_put_of_a_key_with_a_dollar_sign() {
    let map = headers(&[
        ("host", "examplebucket.s3.amazonaws.com"),
        ("date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        (
            "x-amz-content-sha256",
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
        ),
        (
            "authorization",
            &authorization(
                "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
            ),
        ),
    ]);
    authenticate(
        &credentials(),
        "platform",
        "PUT",
        "/test%24file.text",
        "",
        &map,
        at(),
    )
    .unwrap();
}

#[test]
fn a_listing_with_a_query() {
    let map = headers(&[
        ("host", "examplebucket.s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-content-sha256", EMPTY),
        (
            "authorization",
            &authorization(
                "host;x-amz-content-sha256;x-amz-date",
                "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
            ),
        ),
    ]);
    authenticate(
        &credentials(),
        "platform",
        "GET",
        "/",
        "max-keys=2&prefix=J",
        &map,
        at(),
    )
    .unwrap();
}

#[test]
fn a_presigned_get_holds_until_it_expires() {
    let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    let map = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
    let verified = authenticate(
        &credentials(),
        "platform",
        "GET",
        "/test.txt",
        query,
        &map,
        at(),
    )
    .unwrap();
    assert_eq!(verified.caller, Caller::App("shop".into()));
    assert!(matches!(verified.payload, Payload::Unsigned));
    let later = at() + Duration::from_secs(86400 + 1);
    let err = authenticate(
        &credentials(),
        "platform",
        "GET",
        "/test.txt",
        query,
        &map,
        later,
    )
    .unwrap_err();
    assert_eq!(err.message, "request has expired");
    let other = authenticate(
        &credentials(),
        "platform",
        "GET",
        "/other.txt",
        query,
        &map,
        at(),
    )
    .unwrap_err();
    assert_eq!(other.code, "SignatureDoesNotMatch");
}

#[test]
fn a_chunked_upload_signs_each_chunk_after_the_one_before() {
    let map = headers(&[
        ("host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("content-length", "66824"),
        (
            "authorization",
            &authorization(
                "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
                "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
            ),
        ),
    ]);
    let verified = authenticate(
        &credentials(),
        "platform",
        "PUT",
        "/examplebucket/chunkObject.txt",
        "",
        &map,
        at(),
    )
    .unwrap();
    let Payload::SignedChunks(mut signer) = verified.payload else {
        panic!("{:?}", verified.payload)
    };
    let hash = |n: usize| stratus_archive::sha256_hex(&vec![b'a'; n]);
    assert!(signer.chunk(
        &hash(65536),
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
    ));
    assert!(signer.chunk(
        &hash(1024),
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
    ));
    assert!(signer.chunk(
        EMPTY,
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"
    ));
}

#[test]
fn an_unsigned_request_is_anonymous_and_other_schemes_are_refused() {
    let none = authenticate(
        &credentials(),
        "platform",
        "GET",
        "/b/k",
        "",
        &HeaderMap::new(),
        at(),
    )
    .unwrap();
    assert_eq!(none.caller, Caller::Anonymous);
    let v2 = headers(&[(
        "authorization",
        "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
    )]);
    let err = authenticate(&credentials(), "platform", "GET", "/b/k", "", &v2, at()).unwrap_err();
    assert_eq!(err.code, "InvalidArgument");
    let v2_url = "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=x&Expires=1";
    let err = authenticate(
        &credentials(),
        "platform",
        "GET",
        "/b/k",
        v2_url,
        &HeaderMap::new(),
        at(),
    )
    .unwrap_err();
    assert!(
        err.message.contains("Signature Version 4"),
        "{}",
        err.message
    );
}

#[test]
fn a_url_presigned_here_is_aws_s_and_holds() {
    let query = presign(
        (KEY_ID, SECRET),
        "us-east-1",
        "GET",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        86400,
        at(),
    );
    assert!(
        query.ends_with(
            "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        ),
        "{query}"
    );
    let map = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
    authenticate(
        &credentials(),
        "platform",
        "GET",
        "/test.txt",
        &query,
        &map,
        at(),
    )
    .unwrap();
}

#[test]
fn a_request_signed_here_is_aws_s_and_holds() {
    let mut signed = vec![
        (
            "host".to_owned(),
            "examplebucket.s3.amazonaws.com".to_owned(),
        ),
        ("range".to_owned(), "bytes=0-9".to_owned()),
        ("x-amz-content-sha256".to_owned(), EMPTY.to_owned()),
    ];
    let (amz_date, authorization) = sign(
        (KEY_ID, SECRET),
        "us-east-1",
        "GET",
        "/test.txt",
        &mut signed,
        at(),
    );
    assert_eq!(amz_date, "20130524T000000Z");
    assert!(
        authorization.ends_with(
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        ),
        "{authorization}"
    );
    let map = headers(
        &signed
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .chain([("authorization", authorization.as_str())])
            .collect::<Vec<_>>(),
    );
    authenticate(
        &credentials(),
        "platform",
        "GET",
        "/test.txt",
        "",
        &map,
        at(),
    )
    .unwrap();
}
