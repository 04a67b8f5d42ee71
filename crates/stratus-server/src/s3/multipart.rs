//! Multipart uploads: an object sent in numbered parts (each a blob of
//! its own, written as PutObject writes), put together in the order the
//! completion names them into one blob, which is committed with the
//! object's metadata as the upload ends. The object's ETag is S3's: the
//! MD5 of the parts' MD5s, then `-` and how many parts.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use md5::{Digest, Md5};
use stratus_store::{ObjectRecord, PartRecord, UploadRecord};

use super::auth::Payload;
use super::error::S3Error;
use super::objects::{Stored, check_key, copy_source, write_body};
use super::xml::{self, Xml};
use super::{Call, empty, iso_time, xml_response};

/// Part numbers, as on S3.
const PARTS: std::ops::RangeInclusive<u32> = 1..=10_000;
/// The smallest part but the last, as on S3.
const MIN_PART: u64 = 5 << 20;
/// The largest part, as on S3.
const MAX_PART: u64 = 5 << 30;
/// The largest CompleteMultipartUpload document: 10,000 parts.
const MAX_COMPLETE_BODY: usize = 4 << 20;
/// Parts and uploads listed at most at once.
const MAX_LISTED: u32 = 1000;

fn no_such_upload(upload_id: &str) -> S3Error {
    S3Error::new(
        StatusCode::NOT_FOUND,
        "NoSuchUpload",
        "the specified multipart upload does not exist: it was never started, or it was completed or aborted",
    )
    .on(upload_id)
}

/// The upload a request names, if it is in progress for its bucket and key.
async fn upload(call: &Call<'_>) -> Result<UploadRecord, S3Error> {
    let id = call.param("uploadId").unwrap_or("");
    let upload = call
        .state
        .store
        .get_upload(id)
        .await
        .map_err(S3Error::store)?
        .filter(|u| u.bucket == call.bucket && u.key == call.key)
        .ok_or_else(|| no_such_upload(id))?;
    Ok(upload)
}

/// CreateMultipartUpload: the headers the object will have are taken now.
pub(super) async fn create(
    call: &Call<'_>,
    headers: &HeaderMap,
) -> Result<Response<Body>, S3Error> {
    call.bucket(false).await?;
    check_key(&call.key)?;
    let stored = Stored::from_request(headers)?;
    let upload_id = uuid::Uuid::new_v4().simple().to_string();
    let record = UploadRecord {
        upload_id: upload_id.clone(),
        bucket: call.bucket.clone(),
        key: call.key.clone(),
        headers: stored.to_json()?,
        created_ms: crate::now_ms(),
    };
    call.state
        .store
        .create_upload(record)
        .await
        .map_err(S3Error::store)?
        .map_err(|_| S3Error::no_such_bucket(&call.bucket))?;
    let mut doc = Xml::new("InitiateMultipartUploadResult");
    doc.leaf("Bucket", &call.bucket)
        .leaf("Key", &call.key)
        .leaf("UploadId", &upload_id);
    Ok(xml_response(
        StatusCode::OK,
        doc.end("InitiateMultipartUploadResult"),
    ))
}

fn part_number(call: &Call<'_>) -> Result<u32, S3Error> {
    call.param("partNumber")
        .and_then(|n| n.parse().ok())
        .filter(|n| PARTS.contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument("partNumber must be a whole number from 1 to 10000")
        })
}

/// UploadPart, and UploadPartCopy when the request names a source.
pub(super) async fn upload_part(
    call: &Call<'_>,
    headers: &HeaderMap,
    body: Body,
    payload: Payload,
) -> Result<Response<Body>, S3Error> {
    let bucket = call.bucket(false).await?;
    let number = part_number(call)?;
    let upload = upload(call).await?;
    let limit = bucket.spec.max_object_size.min(MAX_PART);
    let copying = headers.contains_key("x-amz-copy-source");
    let written = if copying {
        let object = copy_source(call, headers).await?;
        let (offset, len) = match headers
            .get("x-amz-copy-source-range")
            .and_then(|v| v.to_str().ok())
        {
            Some(range) => copy_range(range, object.size)?,
            None => (0, object.size),
        };
        if len > limit {
            return Err(super::objects::too_large(len, limit));
        }
        super::objects::copy_bytes(call, &object, offset, len).await?
    } else {
        write_body(call, headers, body, payload, limit).await?
    };
    let etag = format!("\"{}\"", crate::hex::encode(&written.md5));
    let part = PartRecord {
        upload_id: upload.upload_id.clone(),
        number,
        size: written.size,
        etag: etag.clone(),
        blob: written.blob.clone(),
        modified_ms: crate::now_ms(),
    };
    match call.state.store.put_part(part).await {
        Ok(Ok(replaced)) => {
            if let Some(old) = replaced {
                call.state.objects.remove(vec![old.blob]).await;
            }
        }
        Ok(Err(_)) => {
            call.state.objects.remove(vec![written.blob]).await;
            return Err(no_such_upload(&upload.upload_id));
        }
        Err(err) => {
            call.state.objects.remove(vec![written.blob]).await;
            return Err(S3Error::store(err));
        }
    }
    if copying {
        let mut doc = Xml::new("CopyPartResult");
        doc.leaf("LastModified", iso_time(crate::now_ms()))
            .leaf("ETag", &etag);
        return Ok(xml_response(StatusCode::OK, doc.end("CopyPartResult")));
    }
    let mut response = empty(StatusCode::OK);
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// `bytes=A-B` of a copy's source, both within it.
fn copy_range(range: &str, size: u64) -> Result<(u64, u64), S3Error> {
    let invalid = || {
        S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            format!(
                "x-amz-copy-source-range {range} must be bytes=FIRST-LAST within the source's {size} bytes"
            ),
        )
    };
    let (a, b) = range
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(invalid)?;
    let (a, b): (u64, u64) = (
        a.parse().map_err(|_| invalid())?,
        b.parse().map_err(|_| invalid())?,
    );
    if a > b || b >= size {
        return Err(invalid());
    }
    Ok((a, b - a + 1))
}

/// CompleteMultipartUpload: the parts named, in order, become the object.
pub(super) async fn complete(call: &Call<'_>, body: Body) -> Result<Response<Body>, S3Error> {
    let bucket = call.bucket(false).await?;
    let upload = upload(call).await?;
    let bytes = axum::body::to_bytes(body, MAX_COMPLETE_BODY)
        .await
        .map_err(|_| {
            S3Error::malformed_xml(
                "the CompleteMultipartUpload document is too large or incomplete",
            )
        })?;
    let doc = std::str::from_utf8(&bytes)
        .map_err(|_| S3Error::malformed_xml("the CompleteMultipartUpload document is not UTF-8"))?;
    let mut named: Vec<(u32, String)> = Vec::new();
    for part in xml::elements(doc, "Part") {
        let number = xml::texts(part, "PartNumber")
            .and_then(|n| n.into_iter().next())
            .and_then(|n| n.trim().parse::<u32>().ok())
            .ok_or_else(|| S3Error::malformed_xml("a Part without a PartNumber"))?;
        let etag = xml::texts(part, "ETag")
            .and_then(|e| e.into_iter().next())
            .ok_or_else(|| S3Error::malformed_xml("a Part without an ETag"))?;
        named.push((number, etag));
    }
    if named.is_empty() {
        return Err(S3Error::malformed_xml(
            "the CompleteMultipartUpload document names no part",
        ));
    }
    if named.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidPartOrder",
            "the list of parts was not in ascending order; list them by part number",
        ));
    }
    let mut kept: Vec<PartRecord> = Vec::new();
    let mut after = 0;
    loop {
        let page = call
            .state
            .store
            .list_parts(&upload.upload_id, after, MAX_LISTED)
            .await
            .map_err(S3Error::store)?;
        let full = page.len() == MAX_LISTED as usize;
        after = page.last().map_or(after, |p| p.number);
        kept.extend(page);
        if !full {
            break;
        }
    }
    let mut chosen: Vec<&PartRecord> = Vec::with_capacity(named.len());
    for (number, etag) in &named {
        let part = kept
            .iter()
            .find(|p| p.number == *number && p.etag.trim_matches('"') == etag.trim().trim_matches('"'))
            .ok_or_else(|| {
                S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidPart",
                    format!(
                        "part {number} was not uploaded, or its ETag is not {etag}; upload it again or name its ETag"
                    ),
                )
            })?;
        chosen.push(part);
    }
    if let Some(small) = chosen[..chosen.len() - 1]
        .iter()
        .find(|p| p.size < MIN_PART)
    {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "EntityTooSmall",
            format!(
                "part {} is {} bytes; every part but the last must be at least 5 MiB",
                small.number, small.size
            ),
        ));
    }
    let size: u64 = chosen.iter().map(|p| p.size).sum();
    if size > bucket.spec.max_object_size {
        return Err(super::objects::too_large(size, bucket.spec.max_object_size));
    }
    let mut digest = Md5::new();
    for part in &chosen {
        let md5 = crate::hex::decode(part.etag.trim_matches('"'))
            .ok_or_else(|| S3Error::internal("a part's ETag is unreadable", &part.etag))?;
        digest.update(&md5);
    }
    let etag = format!(
        "\"{}-{}\"",
        crate::hex::encode(&digest.finalize()),
        chosen.len()
    );
    let blob = call
        .state
        .objects
        .join(chosen.iter().map(|p| p.blob.clone()).collect())
        .await
        .map_err(|err| S3Error::internal("cannot put the parts together", err))?;
    let object = ObjectRecord {
        bucket: call.bucket.clone(),
        key: call.key.clone(),
        size,
        etag: etag.clone(),
        blob: blob.clone(),
        modified_ms: crate::now_ms(),
        headers: upload.headers.clone(),
    };
    let events = super::notify::events(
        call.state,
        &bucket.record,
        &super::notify::Change {
            how: super::notify::How::CompleteMultipartUpload,
            key: &call.key,
            size_etag: Some((size, &etag)),
        },
    );
    let wake = !events.is_empty();
    match call
        .state
        .store
        .complete_upload(&upload.upload_id, object, events)
        .await
    {
        Ok(Ok(completed)) => {
            if wake {
                call.state.events.wake();
            }
            let mut gone = completed.part_blobs;
            gone.extend(completed.replaced.map(|o| o.blob));
            call.state.objects.remove(gone).await;
        }
        Ok(Err(_)) => {
            call.state.objects.remove(vec![blob]).await;
            return Err(no_such_upload(&upload.upload_id));
        }
        Err(err) => {
            call.state.objects.remove(vec![blob]).await;
            return Err(S3Error::store(err));
        }
    }
    let mut doc = Xml::new("CompleteMultipartUploadResult");
    doc.leaf("Location", format!("/{}/{}", call.bucket, call.key))
        .leaf("Bucket", &call.bucket)
        .leaf("Key", &call.key)
        .leaf("ETag", &etag);
    Ok(xml_response(
        StatusCode::OK,
        doc.end("CompleteMultipartUploadResult"),
    ))
}

/// AbortMultipartUpload: the upload and its parts' bytes go.
pub(super) async fn abort(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    call.bucket(false).await?;
    let upload = upload(call).await?;
    match call
        .state
        .store
        .abort_upload(&upload.upload_id)
        .await
        .map_err(S3Error::store)?
    {
        Some(blobs) => {
            call.state.objects.remove(blobs).await;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        None => Err(no_such_upload(&upload.upload_id)),
    }
}

/// ListParts: an upload's parts by number, after `part-number-marker`.
pub(super) async fn list_parts(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    call.bucket(false).await?;
    let upload = upload(call).await?;
    let marker: u32 = match call.param("part-number-marker") {
        Some(m) => m
            .parse()
            .map_err(|_| S3Error::invalid_argument("part-number-marker must be a whole number"))?,
        None => 0,
    };
    let max: u32 = match call.param("max-parts") {
        Some(m) => m
            .parse::<u32>()
            .map_err(|_| S3Error::invalid_argument("max-parts must be a whole number"))?
            .min(MAX_LISTED),
        None => MAX_LISTED,
    };
    let mut parts = call
        .state
        .store
        .list_parts(&upload.upload_id, marker, max + 1)
        .await
        .map_err(S3Error::store)?;
    let truncated = parts.len() > max as usize;
    parts.truncate(max as usize);
    let app = call.app()?;
    let mut doc = Xml::new("ListPartsResult");
    doc.leaf("Bucket", &call.bucket)
        .leaf("Key", &call.key)
        .leaf("UploadId", &upload.upload_id);
    owners(&mut doc, app);
    doc.leaf("StorageClass", "STANDARD")
        .leaf("PartNumberMarker", marker.to_string())
        .leaf(
            "NextPartNumberMarker",
            parts.last().map_or(marker, |p| p.number).to_string(),
        )
        .leaf("MaxParts", max.to_string())
        .leaf("IsTruncated", truncated.to_string());
    for part in &parts {
        doc.open("Part")
            .leaf("PartNumber", part.number.to_string())
            .leaf("LastModified", iso_time(part.modified_ms))
            .leaf("ETag", &part.etag)
            .leaf("Size", part.size.to_string())
            .close("Part");
    }
    Ok(xml_response(StatusCode::OK, doc.end("ListPartsResult")))
}

/// ListMultipartUploads: a bucket's uploads in progress, by key and id.
pub(super) async fn list_uploads(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    call.bucket(false).await?;
    if call.param("delimiter").is_some_and(|d| !d.is_empty()) {
        return Err(S3Error::not_implemented(
            "ListMultipartUploads with a delimiter",
        ));
    }
    let prefix = call.param("prefix").unwrap_or("");
    let key_marker = call.param("key-marker").filter(|k| !k.is_empty());
    let id_marker = call.param("upload-id-marker").filter(|k| !k.is_empty());
    let max: u32 = match call.param("max-uploads") {
        Some(m) => m
            .parse::<u32>()
            .map_err(|_| S3Error::invalid_argument("max-uploads must be a whole number"))?
            .min(MAX_LISTED),
        None => MAX_LISTED,
    };
    let mut uploads = call
        .state
        .store
        .list_uploads(
            &call.bucket,
            prefix,
            key_marker.map(|k| (k, id_marker)),
            max + 1,
        )
        .await
        .map_err(S3Error::store)?;
    let truncated = uploads.len() > max as usize;
    uploads.truncate(max as usize);
    let app = call.app()?;
    let mut doc = Xml::new("ListMultipartUploadsResult");
    doc.leaf("Bucket", &call.bucket)
        .leaf("KeyMarker", key_marker.unwrap_or(""))
        .leaf("UploadIdMarker", id_marker.unwrap_or(""))
        .leaf("Prefix", prefix)
        .leaf("MaxUploads", max.to_string())
        .leaf("IsTruncated", truncated.to_string());
    if truncated && let Some(last) = uploads.last() {
        doc.leaf("NextKeyMarker", &last.key)
            .leaf("NextUploadIdMarker", &last.upload_id);
    }
    for upload in &uploads {
        doc.open("Upload")
            .leaf("Key", &upload.key)
            .leaf("UploadId", &upload.upload_id);
        owners(&mut doc, app);
        doc.leaf("StorageClass", "STANDARD")
            .leaf("Initiated", iso_time(upload.created_ms))
            .close("Upload");
    }
    Ok(xml_response(
        StatusCode::OK,
        doc.end("ListMultipartUploadsResult"),
    ))
}

/// An upload's initiator and owner: the app.
fn owners(doc: &mut Xml, app: &str) {
    for role in ["Initiator", "Owner"] {
        doc.open(role)
            .leaf("ID", app)
            .leaf("DisplayName", app)
            .close(role);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges_lie_within_the_source() {
        assert_eq!(copy_range("bytes=0-9", 100).unwrap(), (0, 10));
        assert_eq!(copy_range("bytes=90-99", 100).unwrap(), (90, 10));
        assert!(copy_range("bytes=90-100", 100).is_err());
        assert!(copy_range("bytes=9-0", 100).is_err());
        assert!(copy_range("0-9", 100).is_err());
    }
}
