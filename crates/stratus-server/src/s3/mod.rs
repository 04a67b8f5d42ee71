//! The S3 API: every app's buckets and objects, for every S3 client and
//! SDK unchanged. Served on the public listener at `s3.DOMAIN` (path
//! style) and `BUCKET.s3.DOMAIN` (virtual-host style), and on
//! `--s3-listen` when given, where every request is S3's.
//!
//! A request is authenticated first (`auth.rs`: Signature Version 4 with
//! an app's AWS credential, or nobody), then routed by method, bucket,
//! key and sub-resource to one operation. Buckets and object metadata are
//! in the store (`stratus_store::Objects`); object bytes are files
//! (`blobs.rs`), streamed in and out, never held whole. An object is
//! written to its file, made durable, and only then committed to the
//! store: the store never names bytes that are not there.

pub(crate) mod admin;
mod auth;
mod blobs;
mod chunked;
pub(crate) mod declared;
mod error;
pub(crate) mod lifecycle;
mod multipart;
mod notify;
mod objects;
mod post;
mod remote;
mod xml;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use stratus_manifest::buckets::{BucketSpec, DEFAULT_MAX_OBJECT_SIZE, bucket_name_problem};
use stratus_store::{BucketCreated, BucketDeleted, BucketRecord};

use auth::Caller;
pub(crate) use blobs::Blobs;
use error::S3Error;
pub(crate) use remote::Remote;
use xml::Xml;

use crate::AppState;
use crate::api::sigv4;

/// The region S3 clients are told their buckets are in.
pub(crate) const REGION: &str = "us-east-1";
/// The most keys a listing returns at once, as on S3.
const MAX_KEYS: u32 = 1000;

/// Where object bytes are kept, and where the S3 API is served besides
/// `s3.DOMAIN`.
#[derive(Debug, Clone, clap::Args)]
pub struct ObjectSettings {
    /// Also serve the S3 API on this address, every request as S3's (path
    /// style; virtual-host style for hosts BUCKET.s3.DOMAIN), for clients
    /// that cannot resolve s3.DOMAIN
    #[arg(long, value_name = "ADDR:PORT")]
    pub s3_listen: Option<std::net::SocketAddr>,
    /// Where object bytes are kept (a directory every node mounts, for
    /// nodes sharing a store); default: DATA_DIR/objects
    #[arg(long, value_name = "DIR")]
    pub objects_dir: Option<std::path::PathBuf>,
    /// Keep object bytes in this S3-compatible service instead of
    /// --objects-dir (http[s]://KEY:SECRET@HOST[:PORT]/BUCKET[/PREFIX],
    /// ?region=R; the credential may come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY instead): the platform fronts it with its own
    /// API and triggers
    #[arg(
        long,
        value_name = "URL",
        env = "STRATUS_OBJECTS_S3",
        hide_env_values = true
    )]
    pub objects_s3: Option<String>,
    /// The most buckets an app may have, declared or made through the S3
    /// API
    #[arg(long, default_value_t = 100)]
    pub bucket_quota: usize,
    /// How often objects that buckets' `lifecycle:` expires are deleted
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub lifecycle_interval: std::time::Duration,
}

/// Whether `host` addresses the S3 API under `domain`: `Some(None)` for
/// `s3.DOMAIN`, `Some(Some(bucket))` for `BUCKET.s3.DOMAIN`.
pub(crate) fn addressed(host: &str, domain: &str) -> Option<Option<String>> {
    let endpoint = format!("s3.{domain}");
    if host == endpoint {
        return Some(None);
    }
    let bucket = host.strip_suffix(&endpoint)?.strip_suffix('.')?;
    (!bucket.is_empty()).then(|| Some(bucket.to_owned()))
}

/// The S3 API as the public listener's gateway reaches it.
pub(crate) struct Api(pub Arc<AppState>);

#[async_trait::async_trait]
impl crate::public::ObjectApi for Api {
    async fn serve(&self, request: Request<Body>, bucket: Option<String>) -> Response<Body> {
        serve(&self.0, request, bucket).await
    }
}

/// The `--s3-listen` listener: every request is S3's, its bucket in its
/// path, or in its host when that is `BUCKET.s3.DOMAIN`.
pub(crate) fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new().fallback(move |request: Request<Body>| {
        let state = state.clone();
        async move {
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
                .unwrap_or("")
                .to_ascii_lowercase();
            let bucket = addressed(&host, &state.config.http.domain).flatten();
            serve(&state, request, bucket).await
        }
    })
}

/// Answers one S3 request; `host_bucket` is the bucket its host named.
pub(crate) async fn serve(
    state: &AppState,
    request: Request<Body>,
    host_bucket: Option<String>,
) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let head = request.method() == Method::HEAD;
    let origin = request.headers().get(header::ORIGIN).cloned();
    let bucket = host_bucket.clone().or_else(|| {
        let path = request.uri().path().trim_start_matches('/');
        let name = path.split('/').next().unwrap_or("");
        (!name.is_empty())
            .then(|| String::from_utf8_lossy(&sigv4::percent_decode(name)).into_owned())
    });
    let mut response = match (&origin, bucket.as_deref()) {
        (Some(origin), Some(bucket)) if is_preflight(&request) => {
            let asked = (
                request
                    .headers()
                    .get(header::ACCESS_CONTROL_REQUEST_METHOD)
                    .and_then(|v| Method::from_bytes(v.as_bytes()).ok()),
                request
                    .headers()
                    .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                    .cloned(),
            );
            drop(request);
            preflight(state, bucket, origin, asked).await
        }
        _ => handle(state, request, host_bucket).await,
    }
    .unwrap_or_else(|err| err.into_response(&request_id, head));
    // A browser's request from another origin: the bucket's CORS says
    // whether its page may read the answer.
    if let (Some(origin), Some(bucket)) = (&origin, bucket.as_deref())
        && !response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        && let Some(cors) = bucket_cors(state, bucket).await
    {
        crate::public::cors::decorate(&cors, Some(origin), response.headers_mut());
    }
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amz-request-id", id);
    }
    response
}

/// The methods S3's CORS rules allow when a bucket's `cors:` names none.
const CORS_METHODS: [Method; 5] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::HEAD,
];

fn is_preflight(request: &Request<Body>) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// A bucket's CORS rules, if it has any (none for a bucket that is not
/// there, or unreadable).
async fn bucket_cors(state: &AppState, bucket: &str) -> Option<stratus_manifest::CorsSpec> {
    let record = state.store.get_bucket(bucket).await.ok()??;
    serde_json::from_str::<BucketSpec>(&record.spec).ok()?.cors
}

/// A browser's preflight, answered from the bucket's CORS rules, with no
/// credential (browsers send none).
async fn preflight(
    state: &AppState,
    bucket: &str,
    origin: &HeaderValue,
    (requested, headers): (Option<Method>, Option<HeaderValue>),
) -> Result<Response<Body>, S3Error> {
    let refused = || {
        S3Error::new(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: this CORS request is not allowed; the bucket's `cors:` in the manifest names the origins, methods and headers it allows",
        )
    };
    let cors = bucket_cors(state, bucket).await.ok_or_else(refused)?;
    let requested = requested.ok_or_else(refused)?;
    let headers = crate::public::cors::preflight(
        &cors,
        origin,
        &requested,
        headers.as_ref(),
        Some(&CORS_METHODS),
    )
    .map_err(|_| refused())?;
    let mut response = empty(StatusCode::OK);
    *response.headers_mut() = headers;
    Ok(response)
}

/// The parts of a request an operation works on.
pub(crate) struct Call<'a> {
    state: &'a AppState,
    caller: Caller,
    bucket: String,
    key: String,
    params: BTreeMap<String, String>,
}

impl Call<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The bucket, if the caller may use it: its own app's, or, for
    /// reading objects, a public one.
    async fn bucket(&self, read_object: bool) -> Result<Bucket, S3Error> {
        let record = self
            .state
            .store
            .get_bucket(&self.bucket)
            .await
            .map_err(S3Error::store)?
            .ok_or_else(|| S3Error::no_such_bucket(&self.bucket))?;
        let spec: BucketSpec = serde_json::from_str(&record.spec)
            .map_err(|err| S3Error::internal("a bucket's settings are unreadable", err))?;
        // A public bucket's objects are anyone's to read, signed or not.
        let allowed = (read_object && spec.public_read)
            || matches!(&self.caller, Caller::App(app) if *app == record.app);
        if !allowed {
            return Err(S3Error::access_denied(match &self.caller {
                Caller::App(_) => format!(
                    "the bucket {} belongs to another app; use a credential of its app",
                    self.bucket
                ),
                Caller::Anonymous => {
                    "the request is not signed; sign it with an AWS credential from `stratus keys create APP --aws`".to_owned()
                }
            })
            .on(&self.bucket));
        }
        Ok(Bucket { record, spec })
    }

    /// The app of a signed caller; an anonymous one may not.
    fn app(&self) -> Result<&str, S3Error> {
        match &self.caller {
            Caller::App(app) => Ok(app),
            Caller::Anonymous => Err(S3Error::access_denied(
                "the request is not signed; sign it with an AWS credential from `stratus keys create APP --aws`",
            )),
        }
    }
}

/// A bucket the caller may use, with its settings.
struct Bucket {
    record: BucketRecord,
    spec: BucketSpec,
}

/// Sub-resources that select operations this server does not have.
const UNSUPPORTED: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "tagging",
    "torrent",
    "versionId",
    "versioning",
    "versions",
    "website",
];

async fn handle(
    state: &AppState,
    request: Request<Body>,
    host_bucket: Option<String>,
) -> Result<Response<Body>, S3Error> {
    let (parts, body) = request.into_parts();
    let raw_path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let verified = auth::authenticate(
        &state.aws_credentials,
        &state.platform_secret,
        parts.method.as_str(),
        raw_path,
        query,
        &parts.headers,
        SystemTime::now(),
    )?;
    let path = String::from_utf8(sigv4::percent_decode(raw_path)).map_err(|_| {
        S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "the path is not UTF-8 once decoded",
        )
    })?;
    let path = path.strip_prefix('/').unwrap_or(&path);
    let (bucket, key) = match host_bucket {
        Some(bucket) => (bucket, path.to_owned()),
        None => match path.split_once('/') {
            Some((bucket, key)) => (bucket.to_owned(), key.to_owned()),
            None => (path.to_owned(), String::new()),
        },
    };
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            let text = |s: &str| String::from_utf8_lossy(&sigv4::percent_decode(s)).into_owned();
            (text(n), text(v))
        })
        .collect();
    if let Some(unsupported) = UNSUPPORTED.iter().find(|p| params.contains_key(**p)) {
        return Err(S3Error::not_implemented(&format!(
            "the `{unsupported}` sub-resource"
        )));
    }
    let call = Call {
        state,
        caller: verified.caller,
        bucket,
        key,
        params,
    };
    let method = parts.method.clone();
    if call.bucket.is_empty() {
        return match method {
            Method::GET => list_buckets(&call).await,
            _ => Err(S3Error::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the service takes GET (ListBuckets) only",
            )),
        };
    }
    if call.params.contains_key("uploadId") && !call.key.is_empty() {
        return match method {
            Method::PUT => {
                multipart::upload_part(&call, &parts.headers, body, verified.payload).await
            }
            Method::POST => multipart::complete(&call, body).await,
            Method::DELETE => multipart::abort(&call).await,
            Method::GET => multipart::list_parts(&call).await,
            _ => Err(S3Error::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not allowed on a multipart upload"),
            )),
        };
    }
    if call.params.contains_key("partNumber") {
        return Err(S3Error::not_implemented(
            "reading one part of an object (`partNumber`)",
        ));
    }
    if call.params.contains_key("uploads") {
        return match (&method, call.key.is_empty()) {
            (&Method::POST, false) => multipart::create(&call, &parts.headers).await,
            (&Method::GET, true) => multipart::list_uploads(&call).await,
            _ => Err(S3Error::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "`uploads` takes POST on an object (CreateMultipartUpload) or GET on a bucket (ListMultipartUploads)",
            )),
        };
    }
    if call.key.is_empty() {
        return match method {
            Method::PUT => create_bucket(&call).await,
            Method::HEAD => head_bucket(&call).await,
            Method::DELETE => delete_bucket(&call).await,
            Method::GET if call.params.contains_key("location") => location(&call).await,
            Method::GET => objects::list(&call).await,
            Method::POST if call.params.contains_key("delete") => {
                objects::delete_many(&call, body).await
            }
            Method::POST
                if parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| ct.starts_with("multipart/form-data")) =>
            {
                post::upload(&call, &parts.headers, body).await
            }
            _ => Err(S3Error::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not allowed on a bucket"),
            )),
        };
    }
    match method {
        Method::PUT if parts.headers.contains_key("x-amz-copy-source") => {
            objects::copy(&call, &parts.headers).await
        }
        Method::PUT => objects::put(&call, &parts.headers, body, verified.payload).await,
        Method::GET | Method::HEAD => {
            objects::get(&call, &parts.headers, method == Method::HEAD).await
        }
        Method::DELETE => objects::delete(&call).await,
        _ => Err(S3Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not allowed on an object"),
        )),
    }
}

fn xml_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

async fn list_buckets(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    let app = call.app()?;
    let buckets = call
        .state
        .store
        .list_buckets(Some(app))
        .await
        .map_err(S3Error::store)?;
    let mut doc = Xml::new("ListAllMyBucketsResult");
    doc.open("Owner")
        .leaf("ID", app)
        .leaf("DisplayName", app)
        .close("Owner")
        .open("Buckets");
    for bucket in &buckets {
        doc.open("Bucket")
            .leaf("Name", &bucket.name)
            .leaf("CreationDate", iso_time(bucket.created_ms))
            .close("Bucket");
    }
    doc.close("Buckets");
    Ok(xml_response(
        StatusCode::OK,
        doc.end("ListAllMyBucketsResult"),
    ))
}

async fn create_bucket(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    let app = call.app()?.to_owned();
    if let Some(problem) = bucket_name_problem(&call.bucket) {
        return Err(
            S3Error::new(StatusCode::BAD_REQUEST, "InvalidBucketName", problem).on(&call.bucket),
        );
    }
    let quota = call.state.config.objects.bucket_quota;
    let owned = call
        .state
        .store
        .list_buckets(Some(&app))
        .await
        .map_err(S3Error::store)?;
    if owned.len() >= quota && !owned.iter().any(|b| b.name == call.bucket) {
        return Err(S3Error::new(
            StatusCode::BAD_REQUEST,
            "TooManyBuckets",
            format!(
                "the app {app} has {} buckets, its quota (--bucket-quota); remove one first",
                owned.len()
            ),
        ));
    }
    let spec = BucketSpec {
        name: call.bucket.clone(),
        s3_name: call.bucket.clone(),
        public_read: false,
        cors: None,
        lifecycle: None,
        max_object_size: DEFAULT_MAX_OBJECT_SIZE,
        rules: Default::default(),
    };
    let record = BucketRecord {
        name: call.bucket.clone(),
        app: app.clone(),
        declared_as: None,
        spec: serde_json::to_string(&spec)
            .map_err(|err| S3Error::internal("cannot write a bucket's settings", err))?,
        created_ms: crate::now_ms(),
    };
    match call
        .state
        .store
        .create_bucket(record)
        .await
        .map_err(S3Error::store)?
    {
        BucketCreated::Created => {
            let mut response = empty(StatusCode::OK);
            if let Ok(location) = HeaderValue::from_str(&format!("/{}", call.bucket)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
        BucketCreated::Taken(existing) if existing.app == app => Err(S3Error::new(
            StatusCode::CONFLICT,
            "BucketAlreadyOwnedByYou",
            "your app already owns this bucket",
        )
        .on(&call.bucket)),
        BucketCreated::Taken(_) => Err(S3Error::new(
            StatusCode::CONFLICT,
            "BucketAlreadyExists",
            "the bucket name is taken by another app; choose another name",
        )
        .on(&call.bucket)),
    }
}

async fn head_bucket(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    call.bucket(false).await?;
    let mut response = empty(StatusCode::OK);
    response
        .headers_mut()
        .insert("x-amz-bucket-region", HeaderValue::from_static(REGION));
    Ok(response)
}

async fn location(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    call.bucket(false).await?;
    // Empty: us-east-1, as S3 says it.
    Ok(xml_response(
        StatusCode::OK,
        Xml::new("LocationConstraint").end("LocationConstraint"),
    ))
}

async fn delete_bucket(call: &Call<'_>) -> Result<Response<Body>, S3Error> {
    let bucket = call.bucket(false).await?;
    if let Some(declared) = &bucket.record.declared_as {
        return Err(S3Error::new(
            StatusCode::CONFLICT,
            "OperationAborted",
            format!(
                "the bucket is declared as `buckets.{declared}` in the app's manifest; remove it there and deploy, or `stratus bucket rm {} {declared}`",
                bucket.record.app
            ),
        )
        .on(&call.bucket));
    }
    match call
        .state
        .store
        .delete_bucket(&call.bucket, false)
        .await
        .map_err(S3Error::store)?
    {
        BucketDeleted::Deleted(blobs) => {
            call.state.objects.remove(blobs).await;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        BucketDeleted::NotEmpty(_) => Err(S3Error::new(
            StatusCode::CONFLICT,
            "BucketNotEmpty",
            "the bucket you tried to delete is not empty; delete its objects first",
        )
        .on(&call.bucket)),
        BucketDeleted::Missing => Err(S3Error::no_such_bucket(&call.bucket)),
    }
}

/// `2026-12-07T03:32:07.000Z`, as S3's listings give times.
fn iso_time(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

/// `Mon, 07 Dec 2026 03:32:07 GMT`, as HTTP's headers give times.
fn http_date(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let iso = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs as u64))
        .to_string();
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = DAYS[((secs / 86400) % 7) as usize];
    let month: usize = iso[5..7].parse().unwrap_or(1);
    format!(
        "{day}, {} {} {} {} GMT",
        &iso[8..10],
        MONTHS[month - 1],
        &iso[0..4],
        &iso[11..19]
    )
}

/// The time of an HTTP date (`Mon, 07 Dec 2026 03:32:07 GMT`), in ms.
fn parse_http_date(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    let at = humantime::parse_rfc3339(&format!("{year}-{month:02}-{day:0>2}T{time}Z")).ok()?;
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_the_endpoint_or_a_bucket() {
        assert_eq!(addressed("s3.localhost", "localhost"), Some(None));
        assert_eq!(
            addressed("photos.s3.localhost", "localhost"),
            Some(Some("photos".into()))
        );
        assert_eq!(
            addressed("a.b.s3.example.com", "example.com"),
            Some(Some("a.b".into()))
        );
        assert_eq!(addressed("shop.localhost", "localhost"), None);
        assert_eq!(addressed("xs3.localhost", "localhost"), None);
    }

    #[test]
    fn http_dates_are_written_and_read() {
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(iso_time(784_111_777_123), "1994-11-06T08:49:37.123Z");
    }
}
