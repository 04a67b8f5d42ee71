//! S3's errors: a status, a code clients switch on, a message for people,
//! and the XML body S3 sends them in. Every failure of the S3 API is
//! one of these, made here and answered in one place.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};

use super::xml::Xml;

#[derive(Debug)]
pub(crate) struct S3Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The bucket or key it is about.
    pub resource: Option<String>,
}

impl S3Error {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> S3Error {
        S3Error {
            status,
            code,
            message: message.into(),
            resource: None,
        }
    }

    pub(crate) fn on(mut self, resource: impl Into<String>) -> S3Error {
        self.resource = Some(resource.into());
        self
    }

    pub(crate) fn no_such_bucket(bucket: &str) -> S3Error {
        S3Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            format!("the bucket {bucket} does not exist"),
        )
        .on(bucket)
    }

    pub(crate) fn no_such_key(key: &str) -> S3Error {
        S3Error::new(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "the specified key does not exist",
        )
        .on(key)
    }

    pub(crate) fn access_denied(message: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }

    pub(crate) fn malformed_xml(message: impl Into<String>) -> S3Error {
        S3Error::new(StatusCode::BAD_REQUEST, "MalformedXML", message)
    }

    pub(crate) fn not_implemented(what: &str) -> S3Error {
        S3Error::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!("{what} is not implemented by this server"),
        )
    }

    /// A failure of the server's own (the store, the disk): logged, and
    /// answered without its details.
    pub(crate) fn internal(what: &str, err: impl std::fmt::Display) -> S3Error {
        tracing::error!(error = %err, "S3 API: {what}");
        S3Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("{what}; try again"),
        )
    }

    /// A store that cannot be reached is worth a retry; S3's clients retry
    /// a 503 SlowDown/ServiceUnavailable by themselves.
    pub(crate) fn store(err: stratus_store::StoreError) -> S3Error {
        if matches!(err, stratus_store::StoreError::Unavailable(_)) {
            return S3Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the store cannot be reached now; try again",
            );
        }
        if err.is_disk_full() {
            return S3Error::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "ServiceUnavailable",
                "the store is out of space",
            );
        }
        S3Error::internal("the store failed", err)
    }

    /// The answer: S3's XML error body (none for HEAD, as S3 does).
    pub(crate) fn into_response(self, request_id: &str, head: bool) -> Response<Body> {
        let body = if head {
            Body::empty()
        } else {
            let mut doc = Xml::bare("Error");
            doc.leaf("Code", self.code).leaf("Message", &self.message);
            if let Some(resource) = &self.resource {
                doc.leaf("Resource", resource);
            }
            doc.leaf("RequestId", request_id);
            Body::from(doc.end("Error"))
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        if let Ok(code) = HeaderValue::from_str(self.code) {
            response.headers_mut().insert("x-amz-error-code", code);
        }
        response
    }
}
