//! Browser uploads: an HTML form (`multipart/form-data`) POSTed to the
//! bucket, as S3 takes it. The form carries a policy (base64 JSON: when it
//! expires and the conditions every field must meet) signed with an app's
//! credential, which a server of the app's made ahead (boto3's
//! `generate_presigned_post`); the page itself holds no credential. The
//! fields come first and are checked against the policy before the file,
//! the last field, is streamed into its blob.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::Value;

use super::auth::{self, Caller};
use super::error::S3Error;
use super::notify::How;
use super::objects::{Stored, commit_object};
use super::xml::Xml;
use super::{Call, empty, xml_response};
use crate::api::sigv4;

/// The longest a field other than the file may be, and all of a part's
/// headers.
const MAX_FIELD: usize = 64 * 1024;
/// Fields a form may have before its file.
const MAX_FIELDS: usize = 100;

fn invalid(message: impl Into<String>) -> S3Error {
    S3Error::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
}

fn refused(message: impl Into<String>) -> S3Error {
    S3Error::access_denied(message)
}

/// A form's body, read part by part.
struct Form {
    body: Body,
    buf: BytesMut,
    /// `\r\n--BOUNDARY`.
    delimiter: Vec<u8>,
    done: bool,
}

impl Form {
    async fn more(&mut self) -> Result<bool, S3Error> {
        if self.done {
            return Ok(false);
        }
        match self.body.frame().await {
            None => {
                self.done = true;
                Ok(false)
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.buf.extend_from_slice(&data);
                }
                Ok(true)
            }
            Some(Err(err)) => Err(invalid(format!("the form could not be read whole: {err}"))),
        }
    }

    /// Reads until `needle` is in the buffer, at most `limit` bytes ahead;
    /// its position.
    async fn find(&mut self, needle: &[u8], limit: usize) -> Result<usize, S3Error> {
        loop {
            if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
                return Ok(at);
            }
            if self.buf.len() > limit + needle.len() {
                return Err(invalid("a form field is too long"));
            }
            if !self.more().await? {
                return Err(invalid("the form ended early"));
            }
        }
    }

    /// The headers of the next part (`None` at the end of the form), the
    /// buffer left at its content.
    async fn part(&mut self) -> Result<Option<Part>, S3Error> {
        // After a delimiter: `--` ends the form, CRLF starts a part.
        while self.buf.len() < 2 {
            if !self.more().await? {
                return Ok(None);
            }
        }
        if self.buf.starts_with(b"--") {
            return Ok(None);
        }
        let end = self.find(b"\r\n\r\n", MAX_FIELD).await?;
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.advance(end + 4);
        let mut part = Part::default();
        for line in head.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("content-disposition") {
                for param in value.split(';').skip(1) {
                    let Some((k, v)) = param.trim().split_once('=') else {
                        continue;
                    };
                    let v = v.trim().trim_matches('"').to_owned();
                    match k.trim() {
                        "name" => part.name = v,
                        "filename" => part.filename = Some(v),
                        _ => {}
                    }
                }
            } else if name.trim().eq_ignore_ascii_case("content-type") {
                part.content_type = Some(value.trim().to_owned());
            }
        }
        Ok(Some(part))
    }

    /// The rest of a small part's content.
    async fn value(&mut self) -> Result<String, S3Error> {
        let delimiter = self.delimiter.clone();
        let end = self.find(&delimiter, MAX_FIELD).await?;
        let value = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.advance(end + delimiter.len());
        Ok(value)
    }

    /// The next piece of the file part, `None` once it ended.
    async fn file_piece(&mut self) -> Result<Option<Bytes>, S3Error> {
        let d = self.delimiter.len();
        loop {
            if let Some(at) = self
                .buf
                .windows(d)
                .position(|w| w == self.delimiter.as_slice())
            {
                if at == 0 {
                    self.buf.advance(d);
                    return Ok(None);
                }
                return Ok(Some(self.buf.split_to(at).freeze()));
            }
            // Keep what may be the start of the delimiter.
            if self.buf.len() >= d {
                let safe = self.buf.len() - (d - 1);
                return Ok(Some(self.buf.split_to(safe).freeze()));
            }
            if !self.more().await? {
                return Err(invalid("the form ended inside its file"));
            }
        }
    }
}

#[derive(Debug, Default)]
struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
}

/// PostObject: the form's fields, its policy checked, then its file.
pub(super) async fn upload(
    call: &Call<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, S3Error> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| {
            ct.split(';')
                .find_map(|p| p.trim().strip_prefix("boundary="))
                .map(|b| b.trim_matches('"').to_owned())
        })
        .ok_or_else(|| invalid("a POST upload is multipart/form-data with a boundary"))?;
    let mut form = Form {
        body,
        buf: BytesMut::new(),
        delimiter: format!("\r\n--{boundary}").into_bytes(),
        done: false,
    };
    // The first boundary has no CRLF before it.
    let first = format!("--{boundary}\r\n");
    let at = form.find(first.as_bytes(), MAX_FIELD).await?;
    form.buf.advance(at + first.len() - 2);
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let file = loop {
        let Some(part) = form.part().await? else {
            return Err(invalid("the form has no `file` field; it comes last"));
        };
        if part.name == "file" {
            break part;
        }
        if fields.len() == MAX_FIELDS {
            return Err(invalid("the form has too many fields"));
        }
        let value = form.value().await?;
        fields.insert(part.name.to_ascii_lowercase(), value);
    };
    let filename = file.filename.clone().unwrap_or_default();
    if let Some(key) = fields.get_mut("key") {
        *key = key.replace("${filename}", &filename);
    }
    let key = fields
        .get("key")
        .cloned()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| invalid("the form has no `key` field"))?;
    let (app, (min, max)) = check_policy(call, &fields)?;
    let object = Call {
        state: call.state,
        caller: Caller::App(app),
        bucket: call.bucket.clone(),
        key: key.clone(),
        params: BTreeMap::new(),
    };
    let bucket = object.bucket(false).await?;
    super::objects::check_key(&key)?;
    let limit = bucket.spec.max_object_size.min(max);
    let mut writer = call
        .state
        .objects
        .create(false)
        .await
        .map_err(|err| S3Error::internal("cannot make the object's file", err))?;
    while let Some(piece) = form.file_piece().await? {
        if writer.size() + piece.len() as u64 > limit {
            return Err(S3Error::new(
                StatusCode::BAD_REQUEST,
                "EntityTooLarge",
                format!("your proposed upload exceeds the maximum allowed size, {limit} bytes"),
            ));
        }
        writer
            .write(&piece)
            .await
            .map_err(|err| S3Error::internal("cannot write the object's bytes", err))?;
    }
    if writer.size() < min {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "EntityTooSmall",
            format!("your proposed upload is smaller than the minimum allowed size, {min} bytes"),
        ));
    }
    let written = writer
        .commit()
        .await
        .map_err(|err| S3Error::internal("cannot keep the object's bytes", err))?;
    let mut stored = Stored::from_fields(&fields);
    if stored.content_type.is_none() {
        stored.content_type = file.content_type;
    }
    let etag = format!("\"{}\"", crate::hex::encode(&written.md5));
    commit_object(
        &object,
        &bucket,
        How::Post,
        written.blob,
        written.size,
        etag.clone(),
        &stored,
    )
    .await?;
    let location = format!("/{}/{}", call.bucket, key);
    if let Some(redirect) = fields
        .get("success_action_redirect")
        .filter(|r| !r.is_empty())
    {
        let sep = if redirect.contains('?') { '&' } else { '?' };
        let target = format!(
            "{redirect}{sep}bucket={}&key={}&etag={}",
            sigv4::uri_encode(call.bucket.as_bytes()),
            sigv4::uri_encode(key.as_bytes()),
            sigv4::uri_encode(etag.as_bytes())
        );
        let mut response = empty(StatusCode::SEE_OTHER);
        if let Ok(value) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        return Ok(response);
    }
    let mut response = match fields.get("success_action_status").map(String::as_str) {
        Some("201") => {
            let mut doc = Xml::new("PostResponse");
            doc.leaf("Location", &location)
                .leaf("Bucket", &call.bucket)
                .leaf("Key", &key)
                .leaf("ETag", &etag);
            xml_response(StatusCode::CREATED, doc.end("PostResponse"))
        }
        Some("200") => empty(StatusCode::OK),
        _ => empty(StatusCode::NO_CONTENT),
    };
    for (name, value) in [(header::ETAG, etag), (header::LOCATION, location)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// Checks the form's policy: signed by a credential, not expired, and
/// every field meeting its conditions, with every field but a few named
/// by one. The credential's app, and the sizes `content-length-range`
/// allows (any when it is not given).
fn check_policy(
    call: &Call<'_>,
    fields: &BTreeMap<String, String>,
) -> Result<(String, (u64, u64)), S3Error> {
    let field = |name: &str| {
        fields.get(name).ok_or_else(|| {
            refused(format!(
                "the form has no `{name}` field; presign the upload again"
            ))
        })
    };
    let encoded = field("policy")?;
    if field("x-amz-algorithm")? != sigv4::ALGORITHM {
        return Err(invalid(format!(
            "x-amz-algorithm must be {}",
            sigv4::ALGORITHM
        )));
    }
    let credential = field("x-amz-credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, "s3", "aws4_request"] = scope[..] else {
        return Err(invalid(
            "x-amz-credential is not KEY/DATE/REGION/s3/aws4_request",
        ));
    };
    let (app, secret) = auth::credential(
        &call.state.aws_credentials,
        &call.state.platform_secret,
        key_id,
    )?;
    let key = sigv4::signing_key(&secret, date, region, "s3");
    let expected = sigv4::hex(&sigv4::hmac(&key, encoded.as_bytes()));
    if !crate::api::constant_time_eq(expected.as_bytes(), field("x-amz-signature")?.as_bytes()) {
        return Err(S3Error::new(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "the policy's signature does not match; presign the upload again",
        ));
    }
    let policy: Value = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| invalid("the policy is not base64 JSON"))?;
    let expires = policy["expiration"]
        .as_str()
        .and_then(|e| humantime::parse_rfc3339_weak(e.trim_end_matches('Z')).ok())
        .ok_or_else(|| invalid("the policy has no `expiration` time"))?;
    if SystemTime::now() > expires {
        return Err(refused("invalid according to policy: policy expired"));
    }
    let conditions = policy["conditions"]
        .as_array()
        .ok_or_else(|| invalid("the policy has no `conditions`"))?;
    let value_of = |name: &str| -> String {
        if name == "bucket" {
            call.bucket.clone()
        } else {
            fields.get(name).cloned().unwrap_or_default()
        }
    };
    let mut covered: Vec<String> = Vec::new();
    let mut range = (0, u64::MAX);
    for condition in conditions {
        let (name, holds) = match condition {
            Value::Object(map) if map.len() == 1 => {
                let (name, want) = map.iter().next().expect("one entry");
                let name = name.to_ascii_lowercase();
                let holds = Some(value_of(&name).as_str()) == want.as_str();
                (name, holds)
            }
            Value::Array(items) => match items.as_slice() {
                [op, target, want] if op == "eq" || op == "starts-with" => {
                    let name = target
                        .as_str()
                        .and_then(|t| t.strip_prefix('$'))
                        .ok_or_else(|| invalid("a policy condition names no `$field`"))?
                        .to_ascii_lowercase();
                    let want = want.as_str().unwrap_or_default();
                    let got = value_of(&name);
                    let holds = if op == "eq" {
                        got == want
                    } else if name == "content-type" {
                        got.split(',').all(|t| t.trim().starts_with(want))
                    } else {
                        got.starts_with(want)
                    };
                    (name, holds)
                }
                [op, min, max] if op == "content-length-range" => {
                    range = (min.as_u64().unwrap_or(0), max.as_u64().unwrap_or(u64::MAX));
                    continue;
                }
                _ => {
                    return Err(invalid(format!(
                        "a policy condition S3 does not know: {condition}"
                    )));
                }
            },
            _ => {
                return Err(invalid(format!(
                    "a policy condition S3 does not know: {condition}"
                )));
            }
        };
        if !holds {
            return Err(refused(format!(
                "invalid according to policy: policy condition failed: {condition}"
            )));
        }
        covered.push(name);
    }
    let exempt = |name: &str| {
        matches!(name, "policy" | "x-amz-signature" | "file") || name.starts_with("x-ignore-")
    };
    if let Some(extra) = fields.keys().find(|f| !exempt(f) && !covered.contains(f)) {
        return Err(refused(format!(
            "invalid according to policy: extra input fields: {extra}"
        )));
    }
    Ok((app, range))
}
