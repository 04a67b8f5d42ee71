//! Objects: put (streamed to a file, then committed), get and head (with
//! ranges and conditions), copy, delete one or many, and list.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use base64::Engine;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use stratus_store::ObjectRecord;

use super::auth::Payload;
use super::blobs::BlobWriter;
use super::chunked::Dechunker;
use super::error::S3Error;
use super::notify::{self, Change, How};
use super::xml::{self, Xml};
use super::{Bucket, Call, MAX_KEYS, empty, http_date, iso_time, parse_http_date, xml_response};
use crate::api::sigv4;

/// The headers an object keeps and is served with.
const KEPT_HEADERS: [HeaderName; 5] = [
    header::CACHE_CONTROL,
    header::CONTENT_DISPOSITION,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::EXPIRES,
];
/// What an object is served as when it was given no Content-Type.
const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";
/// The most user metadata an object has, as on S3: 2 KiB.
const MAX_METADATA: usize = 2048;
/// The largest DeleteObjects request: 1000 keys of 1024 bytes and more.
const MAX_DELETE_BODY: usize = 2 << 20;

/// The headers of an object, as the store keeps them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) content_type: Option<String>,
    /// Cache-Control, Content-Disposition and the rest, by lower-case name.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// `x-amz-meta-*`, by the lower-case name after the prefix.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl Stored {
    pub(super) fn from_request(headers: &HeaderMap) -> Result<Stored, S3Error> {
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        let mut stored = Stored {
            content_type: headers.get(header::CONTENT_TYPE).map(text),
            ..Stored::default()
        };
        for name in &KEPT_HEADERS {
            if let Some(value) = headers.get(name) {
                let mut value = text(value);
                if *name == header::CONTENT_ENCODING {
                    // aws-chunked is how the body came, not what it is.
                    value = value
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.eq_ignore_ascii_case("aws-chunked") && !e.is_empty())
                        .collect::<Vec<_>>()
                        .join(",");
                    if value.is_empty() {
                        continue;
                    }
                }
                stored.headers.insert(name.as_str().to_owned(), value);
            }
        }
        let mut size = 0;
        for (name, value) in headers {
            if let Some(meta) = name.as_str().strip_prefix("x-amz-meta-") {
                let value = text(value);
                size += meta.len() + value.len();
                stored.metadata.insert(meta.to_owned(), value);
            }
        }
        if size > MAX_METADATA {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "MetadataTooLarge",
                format!("the user metadata is {size} bytes, more than {MAX_METADATA}"),
            ));
        }
        Ok(stored)
    }

    /// The headers an HTML form's fields give an object.
    pub(super) fn from_fields(fields: &BTreeMap<String, String>) -> Stored {
        let mut stored = Stored {
            content_type: fields.get("content-type").cloned(),
            ..Stored::default()
        };
        for name in &KEPT_HEADERS {
            if let Some(value) = fields.get(name.as_str()) {
                stored
                    .headers
                    .insert(name.as_str().to_owned(), value.clone());
            }
        }
        for (name, value) in fields {
            if let Some(meta) = name.strip_prefix("x-amz-meta-") {
                stored.metadata.insert(meta.to_owned(), value.clone());
            }
        }
        stored
    }

    pub(super) fn to_json(&self) -> Result<String, S3Error> {
        serde_json::to_string(self)
            .map_err(|err| S3Error::internal("cannot write an object's headers", err))
    }

    fn put_into(&self, headers: &mut HeaderMap) {
        let content_type = self.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE);
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        for (name, value) in &self.metadata {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(format!("x-amz-meta-{name}").as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
    }
}

fn stored_of(object: &ObjectRecord) -> Stored {
    serde_json::from_str(&object.headers).unwrap_or_default()
}

/// PutObject: the body streamed to a new file, checked against its size
/// limit and digests, made durable, then committed with its metadata.
pub(super) async fn put(
    call: &Call<'_>,
    headers: &HeaderMap,
    body: Body,
    payload: Payload,
) -> Result<Response<Body>, S3Error> {
    let bucket = call.bucket(false).await?;
    check_key(&call.key)?;
    let limit = bucket.spec.max_object_size;
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*")
        && get_record(call).await?.is_some()
    {
        return Err(precondition_failed());
    }
    let stored = Stored::from_request(headers)?;
    let written = write_body(call, headers, body, payload, limit).await?;
    let etag = format!("\"{}\"", crate::hex::encode(&written.md5));
    commit_object(
        call,
        &bucket,
        How::Put,
        written.blob,
        written.size,
        etag.clone(),
        &stored,
    )
    .await?;
    let mut response = empty(StatusCode::OK);
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// A request's body written to a new blob, decoded from aws-chunked when
/// it is, at most `limit` bytes, and checked against the digests and
/// the length the request gives; the blob is removed if a check fails.
pub(super) async fn write_body(
    call: &Call<'_>,
    headers: &HeaderMap,
    body: Body,
    payload: Payload,
    limit: u64,
) -> Result<super::blobs::Written, S3Error> {
    let declared = header_u64(headers, "x-amz-decoded-content-length")
        .or_else(|| header_u64(headers, header::CONTENT_LENGTH.as_str()));
    if let Some(size) = declared
        && size > limit
    {
        return Err(too_large(size, limit));
    }
    let chunked = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|e| e.split(',').any(|e| e.trim() == "aws-chunked"));
    let (dechunker, sha256) = match payload {
        Payload::SignedChunks(signer) => (Some(Dechunker::new(Some(signer))), None),
        Payload::UnsignedChunks => (Some(Dechunker::new(None)), None),
        Payload::Sha256(hash) if chunked => (Some(Dechunker::new(None)), Some(hash)),
        Payload::Sha256(hash) => (None, Some(hash)),
        Payload::Unsigned if chunked => (Some(Dechunker::new(None)), None),
        Payload::Unsigned => (None, None),
    };
    let mut writer = call
        .state
        .objects
        .create(sha256.is_some())
        .await
        .map_err(|err| S3Error::internal("cannot make the object's file", err))?;
    receive(body, dechunker, &mut writer, limit).await?;
    let written = writer
        .commit()
        .await
        .map_err(|err| S3Error::internal("cannot keep the object's bytes", err))?;
    let problem = check_written(headers, &written, sha256.as_deref());
    if let Some(err) = problem {
        call.state.objects.remove(vec![written.blob]).await;
        return Err(err);
    }
    Ok(written)
}

/// What is wrong with a body as written, by the digests and the length
/// its request gives.
fn check_written(
    headers: &HeaderMap,
    written: &super::blobs::Written,
    sha256: Option<&str>,
) -> Option<S3Error> {
    if let Some(expected) = sha256
        && written.sha256.as_deref() != Some(expected)
    {
        return Some(S3Error::new(
            StatusCode::BAD_REQUEST,
            "XAmzContentSHA256Mismatch",
            "the provided x-amz-content-sha256 header does not match what was computed",
        ));
    }
    if let Some(md5) = headers.get("content-md5") {
        let given = base64::engine::general_purpose::STANDARD
            .decode(md5.as_bytes())
            .ok()
            .filter(|d| d.len() == 16);
        match given {
            None => {
                return Some(S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidDigest",
                    "the Content-MD5 you specified is not valid",
                ));
            }
            Some(given) if given != written.md5 => {
                return Some(S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "BadDigest",
                    "the Content-MD5 you specified did not match what was received",
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(declared) = header_u64(headers, "x-amz-decoded-content-length")
        && declared != written.size
    {
        return Some(S3Error::new(
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
            format!(
                "x-amz-decoded-content-length is {declared} but the body decoded to {} bytes",
                written.size
            ),
        ));
    }
    None
}

/// Streams `body` (decoded from aws-chunked when `dechunker`) into
/// `writer`, refusing more than `limit` bytes.
async fn receive(
    mut body: Body,
    mut dechunker: Option<Dechunker>,
    writer: &mut BlobWriter,
    limit: u64,
) -> Result<(), S3Error> {
    let write_failed = |err| S3Error::internal("cannot write the object's bytes", err);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            S3Error::new(
                StatusCode::BAD_REQUEST,
                "IncompleteBody",
                format!("the body could not be read whole: {err}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let pieces = match &mut dechunker {
            Some(d) => d.feed(data)?,
            None => vec![data],
        };
        for piece in pieces {
            if writer.size() + piece.len() as u64 > limit {
                return Err(too_large(writer.size() + piece.len() as u64, limit));
            }
            writer.write(&piece).await.map_err(write_failed)?;
        }
    }
    if let Some(d) = &dechunker {
        d.finish()?;
    }
    Ok(())
}

/// Commits an object written to `blob` with the events it causes; the
/// object it replaced loses its bytes, and a bucket gone meanwhile takes
/// this object's with it.
pub(super) async fn commit_object(
    call: &Call<'_>,
    bucket: &Bucket,
    how: How,
    blob: String,
    size: u64,
    etag: String,
    stored: &Stored,
) -> Result<ObjectRecord, S3Error> {
    let record = ObjectRecord {
        bucket: call.bucket.clone(),
        key: call.key.clone(),
        size,
        etag,
        blob: blob.clone(),
        modified_ms: crate::now_ms(),
        headers: stored.to_json()?,
    };
    let events = notify::events(
        call.state,
        &bucket.record,
        &Change {
            how,
            key: &record.key,
            size_etag: Some((record.size, &record.etag)),
        },
    );
    let wake = !events.is_empty();
    match call.state.store.put_object(record.clone(), events).await {
        Ok(Ok(replaced)) => {
            if wake {
                call.state.events.wake();
            }
            if let Some(old) = replaced {
                call.state.objects.remove(vec![old.blob]).await;
            }
            Ok(record)
        }
        Ok(Err(_)) => {
            call.state.objects.remove(vec![blob]).await;
            Err(S3Error::no_such_bucket(&call.bucket))
        }
        Err(err) => {
            call.state.objects.remove(vec![blob]).await;
            Err(S3Error::store(err))
        }
    }
}

async fn get_record(call: &Call<'_>) -> Result<Option<ObjectRecord>, S3Error> {
    call.state
        .store
        .get_object(&call.bucket, &call.key)
        .await
        .map_err(S3Error::store)
}

/// GetObject and HeadObject, with a byte range and conditions.
pub(super) async fn get(
    call: &Call<'_>,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response<Body>, S3Error> {
    call.bucket(true).await?;
    let object = get_record(call)
        .await?
        .ok_or_else(|| S3Error::no_such_key(&call.key))?;
    if let Some(status) = unmet(headers, &object) {
        let mut response = empty(status);
        if status == StatusCode::NOT_MODIFIED {
            validators(response.headers_mut(), &object);
            return Ok(response);
        }
        return Err(precondition_failed());
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(range) => parse_range(range, object.size)?,
        None => None,
    };
    let (status, offset, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, object.size),
    };
    let body = if head || len == 0 {
        Body::empty()
    } else {
        Body::new(
            call.state
                .objects
                .read(&object.blob, offset, len)
                .await
                .map_err(|err| S3Error::internal("cannot read the object's bytes", err))?,
        )
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    stored_of(&object).put_into(out);
    validators(out, &object);
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!(
            "bytes {offset}-{}/{}",
            offset + len - 1,
            object.size
        ))
    {
        out.insert(header::CONTENT_RANGE, value);
    }
    // A presigned GET may choose the headers of its answer.
    for (param, name) in [
        ("response-content-type", header::CONTENT_TYPE),
        ("response-content-disposition", header::CONTENT_DISPOSITION),
        ("response-cache-control", header::CACHE_CONTROL),
        ("response-content-encoding", header::CONTENT_ENCODING),
        ("response-content-language", header::CONTENT_LANGUAGE),
        ("response-expires", header::EXPIRES),
    ] {
        if let Some(value) = call.param(param)
            && let Ok(value) = HeaderValue::from_str(value)
        {
            out.insert(name, value);
        }
    }
    Ok(response)
}

fn validators(out: &mut HeaderMap, object: &ObjectRecord) {
    if let Ok(etag) = HeaderValue::from_str(&object.etag) {
        out.insert(header::ETAG, etag);
    }
    if let Ok(modified) = HeaderValue::from_str(&http_date(object.modified_ms)) {
        out.insert(header::LAST_MODIFIED, modified);
    }
}

/// The status a condition of the request gives when it does not hold:
/// 412 for If-Match and If-Unmodified-Since, 304 for If-None-Match and
/// If-Modified-Since; with S3's precedence between them.
fn unmet(headers: &HeaderMap, object: &ObjectRecord) -> Option<StatusCode> {
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let matches = |list: &str| {
        list.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_matches('"') == object.etag.trim_matches('"'))
    };
    // Whole seconds, as HTTP dates are.
    let modified_s = object.modified_ms / 1000;
    let if_match = text(header::IF_MATCH);
    if let Some(list) = if_match
        && !matches(list)
    {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    if if_match.is_none()
        && let Some(since) = text(header::IF_UNMODIFIED_SINCE).and_then(parse_http_date)
        && modified_s > since / 1000
    {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    let if_none_match = text(header::IF_NONE_MATCH);
    if let Some(list) = if_none_match
        && matches(list)
    {
        return Some(StatusCode::NOT_MODIFIED);
    }
    if if_none_match.is_none()
        && let Some(since) = text(header::IF_MODIFIED_SINCE).and_then(parse_http_date)
        && modified_s <= since / 1000
    {
        return Some(StatusCode::NOT_MODIFIED);
    }
    None
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` of an object of `size` bytes, as
/// first and last byte; `None` for a range S3 ignores (not bytes, or
/// several ranges).
fn parse_range(range: &str, size: u64) -> Result<Option<(u64, u64)>, S3Error> {
    let Some(spec) = range.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || {
        S3Error::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            format!("the requested range {range} is not satisfiable for an object of {size} bytes"),
        )
    };
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| unsatisfiable())?;
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (
            a.parse().map_err(|_| unsatisfiable())?,
            size.saturating_sub(1),
        ),
        (a, b) => {
            let (a, b): (u64, u64) = (
                a.parse().map_err(|_| unsatisfiable())?,
                b.parse().map_err(|_| unsatisfiable())?,
            );
            if b < a {
                return Ok(None);
            }
            (a, b.min(size.saturating_sub(1)))
        }
    };
    if start >= size {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

/// DeleteObject: gone (or never there: S3 answers 204 either way).
pub(super) async fn delete(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    let bucket = call.bucket(false).await?;
    delete_one(call, &bucket, &call.key).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Deletes an object with the events its deletion causes (none when it
/// was not there).
async fn delete_one(call: &Call<'_>, bucket: &Bucket, key: &str) -> Result<(), S3Error> {
    let events = notify::events(
        call.state,
        &bucket.record,
        &Change {
            how: How::Delete,
            key,
            size_etag: None,
        },
    );
    let wake = !events.is_empty();
    let deleted = call
        .state
        .store
        .delete_object(&call.bucket, key, events)
        .await
        .map_err(S3Error::store)?;
    if let Some(object) = deleted {
        if wake {
            call.state.events.wake();
        }
        call.state.objects.remove(vec![object.blob]).await;
    }
    Ok(())
}

/// DeleteObjects: up to 1000 keys named in a `Delete` document.
pub(super) async fn delete_many(call: &Call<'_>, body: Body) -> Result<Response<Body>, S3Error> {
    let bucket = call.bucket(false).await?;
    let bytes = axum::body::to_bytes(body, MAX_DELETE_BODY)
        .await
        .map_err(|_| S3Error::malformed_xml("the Delete document is too large or incomplete"))?;
    let doc = std::str::from_utf8(&bytes)
        .map_err(|_| S3Error::malformed_xml("the Delete document is not UTF-8"))?;
    let mut keys = Vec::new();
    for object in xml::elements(doc, "Object") {
        let key = xml::texts(object, "Key")
            .and_then(|k| k.into_iter().next())
            .ok_or_else(|| S3Error::malformed_xml("an Object without a readable Key"))?;
        keys.push(key);
    }
    if keys.is_empty() || keys.len() > MAX_KEYS as usize {
        return Err(S3Error::malformed_xml(format!(
            "a Delete document names 1 to {MAX_KEYS} objects"
        )));
    }
    let quiet = xml::texts(doc, "Quiet").is_some_and(|q| q.first().is_some_and(|q| q == "true"));
    let mut out = Xml::new("DeleteResult");
    for key in keys {
        match delete_one(call, &bucket, &key).await {
            Ok(()) if quiet => {}
            Ok(()) => {
                out.open("Deleted").leaf("Key", &key).close("Deleted");
            }
            Err(err) => {
                out.open("Error")
                    .leaf("Key", &key)
                    .leaf("Code", err.code)
                    .leaf("Message", &err.message)
                    .close("Error");
            }
        }
    }
    Ok(xml_response(StatusCode::OK, out.end("DeleteResult")))
}

/// CopyObject: the source's bytes into a new file of the target, with
/// the source's headers or (`x-amz-metadata-directive: REPLACE`) the
/// request's.
pub(super) async fn copy(call: &Call<'_>, headers: &HeaderMap) -> Result<Response<Body>, S3Error> {
    let target = call.bucket(false).await?;
    check_key(&call.key)?;
    let object = copy_source(call, headers).await?;
    if object.size > target.spec.max_object_size {
        return Err(too_large(object.size, target.spec.max_object_size));
    }
    let replace = headers
        .get("x-amz-metadata-directive")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"REPLACE"));
    if !replace && object.bucket == call.bucket && object.key == call.key {
        return Err(S3Error::invalid_request(
            "this copy request is illegal because it is trying to copy an object to itself without changing the object's metadata",
        ));
    }
    let stored = if replace {
        Stored::from_request(headers)?
    } else {
        stored_of(&object)
    };
    let written = copy_bytes(call, &object, 0, object.size).await?;
    let record = commit_object(
        call,
        &target,
        How::Copy,
        written.blob,
        written.size,
        object.etag.clone(),
        &stored,
    )
    .await?;
    let mut doc = Xml::new("CopyObjectResult");
    doc.leaf("LastModified", iso_time(record.modified_ms))
        .leaf("ETag", &record.etag);
    Ok(xml_response(StatusCode::OK, doc.end("CopyObjectResult")))
}

/// The object `x-amz-copy-source` names (`BUCKET/KEY`, URL-encoded), if
/// the caller may read it.
pub(super) async fn copy_source(
    call: &Call<'_>,
    headers: &HeaderMap,
) -> Result<ObjectRecord, S3Error> {
    let source = headers
        .get("x-amz-copy-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let source = source.split('?').next().unwrap_or(source);
    let source = String::from_utf8(sigv4::percent_decode(source))
        .map_err(|_| S3Error::invalid_argument("x-amz-copy-source is not UTF-8 once decoded"))?;
    let (source_bucket, source_key) = source
        .trim_start_matches('/')
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .ok_or_else(|| {
            S3Error::invalid_argument("x-amz-copy-source must be BUCKET/KEY, URL-encoded")
        })?;
    let from = Call {
        state: call.state,
        caller: call.caller.clone(),
        bucket: source_bucket.to_owned(),
        key: source_key.to_owned(),
        params: BTreeMap::new(),
    };
    from.bucket(true).await?;
    get_record(&from)
        .await?
        .ok_or_else(|| S3Error::no_such_key(source_key))
}

/// `len` bytes of `object` from `offset`, in a new blob.
pub(super) async fn copy_bytes(
    call: &Call<'_>,
    object: &ObjectRecord,
    offset: u64,
    len: u64,
) -> Result<super::blobs::Written, S3Error> {
    let mut writer = call
        .state
        .objects
        .create(false)
        .await
        .map_err(|err| S3Error::internal("cannot make the object's file", err))?;
    let source = call
        .state
        .objects
        .read(&object.blob, offset, len)
        .await
        .map_err(|err| S3Error::internal("cannot read the source object", err))?;
    receive(Body::new(source), None, &mut writer, len).await?;
    writer
        .commit()
        .await
        .map_err(|err| S3Error::internal("cannot keep the object's bytes", err))
}

/// ListObjectsV2 (`list-type=2`) and ListObjects: keys under a prefix in
/// byte order, after a point, rolled up at a delimiter into common
/// prefixes.
pub(super) async fn list(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    call.bucket(false).await?;
    let v2 = call.param("list-type") == Some("2");
    let prefix = call.param("prefix").unwrap_or("").to_owned();
    let delimiter = call
        .param("delimiter")
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    let max_keys = match call.param("max-keys") {
        None => MAX_KEYS,
        Some(n) => n
            .parse::<u32>()
            .map_err(|_| S3Error::invalid_argument("max-keys must be a whole number"))?
            .min(MAX_KEYS),
    };
    let url = call.param("encoding-type") == Some("url");
    let token = call.param("continuation-token");
    let start = if v2 {
        match token {
            Some(token) => Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        S3Error::invalid_argument(
                            "the continuation token is not one this server gave",
                        )
                    })?,
            ),
            None => call.param("start-after").map(str::to_owned),
        }
    } else {
        call.param("marker").map(str::to_owned)
    };
    // A marker that is a common prefix (a NextMarker this server gave)
    // goes on past every key under it.
    let mut after = match (&start, delimiter.as_deref()) {
        (Some(marker), Some(d)) if !v2 && marker.ends_with(d) => {
            Some(format!("{marker}\u{10FFFF}"))
        }
        _ => start.clone(),
    };
    let mut contents: Vec<ObjectRecord> = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut truncated = false;
    // The point after the last entry listed, to go on from.
    let mut next: Option<String> = None;
    // Until an entry beyond `max_keys` shows there are more, or none is
    // left.
    'pages: loop {
        let page = call
            .state
            .store
            .list_objects(&call.bucket, &prefix, after.as_deref(), MAX_KEYS + 1)
            .await
            .map_err(S3Error::store)?;
        let full = page.len() > MAX_KEYS as usize;
        for object in page.into_iter().take(MAX_KEYS as usize) {
            if contents.len() + prefixes.len() >= max_keys as usize {
                truncated = max_keys > 0;
                break 'pages;
            }
            let rolled = delimiter.as_deref().and_then(|d| {
                object.key[prefix.len()..]
                    .find(d)
                    .map(|i| object.key[..prefix.len() + i + d.len()].to_owned())
            });
            match rolled {
                Some(common) => {
                    // Past every key under this common prefix at once.
                    let past = format!("{common}\u{10FFFF}");
                    prefixes.push(common);
                    next = Some(past.clone());
                    after = Some(past);
                    continue 'pages;
                }
                None => {
                    next = Some(object.key.clone());
                    after = Some(object.key.clone());
                    contents.push(object);
                }
            }
        }
        if !full {
            break;
        }
    }
    let encode = |text: &str| -> String {
        if url {
            text.split('/')
                .map(|s| sigv4::uri_encode(s.as_bytes()))
                .collect::<Vec<_>>()
                .join("/")
        } else {
            text.to_owned()
        }
    };
    let mut doc = Xml::new("ListBucketResult");
    doc.leaf("Name", &call.bucket)
        .leaf("Prefix", encode(&prefix))
        .leaf("MaxKeys", max_keys.to_string());
    if let Some(d) = &delimiter {
        doc.leaf("Delimiter", encode(d));
    }
    if url {
        doc.leaf("EncodingType", "url");
    }
    doc.leaf("IsTruncated", truncated.to_string());
    if v2 {
        doc.leaf("KeyCount", (contents.len() + prefixes.len()).to_string());
        if let Some(token) = token {
            doc.leaf("ContinuationToken", token);
        }
        if let Some(start_after) = call.param("start-after") {
            doc.leaf("StartAfter", encode(start_after));
        }
        if truncated && let Some(next) = &next {
            doc.leaf(
                "NextContinuationToken",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(next),
            );
        }
    } else {
        doc.leaf("Marker", encode(start.as_deref().unwrap_or("")));
        if truncated
            && delimiter.is_some()
            && let Some(next) = &next
        {
            doc.leaf("NextMarker", encode(next.trim_end_matches('\u{10FFFF}')));
        }
    }
    for object in &contents {
        doc.open("Contents")
            .leaf("Key", encode(&object.key))
            .leaf("LastModified", iso_time(object.modified_ms))
            .leaf("ETag", &object.etag)
            .leaf("Size", object.size.to_string())
            .leaf("StorageClass", "STANDARD")
            .close("Contents");
    }
    for common in &prefixes {
        doc.open("CommonPrefixes")
            .leaf("Prefix", encode(common))
            .close("CommonPrefixes");
    }
    Ok(xml_response(StatusCode::OK, doc.end("ListBucketResult")))
}

pub(super) fn check_key(key: &str) -> Result<(), S3Error> {
    if key.len() > 1024 {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "KeyTooLongError",
            format!("the key is {} bytes, more than 1024", key.len()),
        ));
    }
    Ok(())
}

pub(super) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

pub(super) fn too_large(size: u64, limit: u64) -> S3Error {
    S3Error::new(
        StatusCode::BAD_REQUEST,
        "EntityTooLarge",
        format!(
            "the object is {size} bytes or more, above the bucket's max_object_size of {limit}"
        ),
    )
}

fn precondition_failed() -> S3Error {
    S3Error::new(
        StatusCode::PRECONDITION_FAILED,
        "PreconditionFailed",
        "at least one of the preconditions you specified did not hold",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_s3_reads_them() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-500", 100).unwrap(), Some((0, 99)));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some((50, 99)));
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(
            parse_range("bytes=100-", 100).unwrap_err().code,
            "InvalidRange"
        );
        assert_eq!(
            parse_range("bytes=-0", 100).unwrap_err().code,
            "InvalidRange"
        );
    }

    #[test]
    fn conditions_take_s3_s_precedence() {
        let object = ObjectRecord {
            bucket: "b".into(),
            key: "k".into(),
            size: 1,
            etag: "\"abc\"".into(),
            blob: "x".into(),
            modified_ms: 784_111_777_000,
            headers: "{}".into(),
        };
        let h = |pairs: &[(HeaderName, &str)]| {
            let mut map = HeaderMap::new();
            for (n, v) in pairs {
                map.insert(n.clone(), HeaderValue::from_str(v).unwrap());
            }
            map
        };
        assert_eq!(unmet(&h(&[(header::IF_MATCH, "\"abc\"")]), &object), None);
        assert_eq!(
            unmet(&h(&[(header::IF_MATCH, "\"nope\"")]), &object),
            Some(StatusCode::PRECONDITION_FAILED)
        );
        assert_eq!(
            unmet(&h(&[(header::IF_NONE_MATCH, "\"abc\"")]), &object),
            Some(StatusCode::NOT_MODIFIED)
        );
        let later = "Mon, 07 Nov 1994 08:49:37 GMT";
        let earlier = "Sat, 05 Nov 1994 08:49:37 GMT";
        assert_eq!(
            unmet(&h(&[(header::IF_MODIFIED_SINCE, later)]), &object),
            Some(StatusCode::NOT_MODIFIED)
        );
        assert_eq!(
            unmet(&h(&[(header::IF_MODIFIED_SINCE, earlier)]), &object),
            None
        );
        // If-Match holds: If-Unmodified-Since is not asked.
        assert_eq!(
            unmet(
                &h(&[
                    (header::IF_MATCH, "\"abc\""),
                    (header::IF_UNMODIFIED_SINCE, earlier)
                ]),
                &object
            ),
            None
        );
        assert_eq!(
            unmet(&h(&[(header::IF_UNMODIFIED_SINCE, earlier)]), &object),
            Some(StatusCode::PRECONDITION_FAILED)
        );
    }
}
