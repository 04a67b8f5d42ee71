//! Object bytes in an external S3-compatible service (`--objects-s3
//! http[s]://KEY:SECRET@HOST[:PORT]/BUCKET[/PREFIX]`): each blob an
//! object of that bucket under the prefix, put whole once written here,
//! read with ranges, deleted when its object goes. The platform still
//! fronts it with its own API, metadata and triggers; requests to the
//! service are signed with Signature Version 4.

use std::path::Path;
use std::time::SystemTime;

use reqwest::header::{HeaderMap, HeaderValue};

use crate::api::sigv4;

/// Where and as whom blobs are kept.
#[derive(Clone)]
pub(crate) struct Remote {
    client: reqwest::Client,
    /// `http://host:port`.
    base: String,
    host: String,
    bucket: String,
    /// Prepended to each blob's id, ending in `/` when not empty.
    prefix: String,
    region: String,
    key_id: String,
    secret: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("base", &self.base)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// The service `url` names; its credential from the URL or from
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, its region from
    /// `?region=` or `AWS_REGION` (us-east-1 by default).
    pub(crate) fn parse(url: &str) -> Result<Remote, String> {
        let parsed = reqwest::Url::parse(url).map_err(|err| {
            format!("--objects-s3 is not a URL ({err}); give http(s)://KEY:SECRET@HOST:PORT/BUCKET, with `/` and `+` in the secret percent-encoded (%2F, %2B), or the secret in AWS_SECRET_ACCESS_KEY")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("--objects-s3 takes an http or https URL".to_owned());
        }
        let host = parsed
            .host_str()
            .ok_or("--objects-s3 names no host")?
            .to_owned();
        let host = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let mut path = parsed.path().trim_matches('/').splitn(2, '/');
        let bucket = path
            .next()
            .filter(|b| !b.is_empty())
            .ok_or("--objects-s3 names no bucket: http(s)://HOST/BUCKET[/PREFIX]")?
            .to_owned();
        let prefix = path
            .next()
            .map(|p| format!("{}/", p.trim_end_matches('/')))
            .unwrap_or_default();
        let decode = |s: &str| String::from_utf8_lossy(&sigv4::percent_decode(s)).into_owned();
        let key_id = Some(decode(parsed.username()))
            .filter(|k| !k.is_empty())
            .or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok())
            .ok_or("--objects-s3 has no credential: give KEY:SECRET@ in the URL, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")?;
        let secret = parsed
            .password()
            .map(decode)
            .or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok())
            .ok_or(
                "--objects-s3 has no secret: give KEY:SECRET@ in the URL, or AWS_SECRET_ACCESS_KEY",
            )?;
        let region = parsed
            .query_pairs()
            .find(|(k, _)| k == "region")
            .map(|(_, v)| v.into_owned())
            .or_else(|| std::env::var("AWS_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());
        Ok(Remote {
            client: reqwest::Client::new(),
            base: format!("{}://{host}", parsed.scheme()),
            host,
            bucket,
            prefix,
            region,
            key_id,
            secret,
        })
    }

    fn path(&self, blob: &str) -> String {
        format!("/{}/{}{blob}", self.bucket, self.prefix)
    }

    /// A request for `blob`, signed, its payload unsigned.
    fn request(
        &self,
        method: reqwest::Method,
        blob: &str,
        extra: &[(&str, String)],
    ) -> reqwest::RequestBuilder {
        let path = self.path(blob);
        let mut headers: Vec<(String, String)> = vec![
            ("host".to_owned(), self.host.clone()),
            (
                "x-amz-content-sha256".to_owned(),
                "UNSIGNED-PAYLOAD".to_owned(),
            ),
        ];
        headers.extend(extra.iter().map(|(n, v)| ((*n).to_owned(), v.clone())));
        let (amz_date, authorization) = super::auth::sign(
            (&self.key_id, &self.secret),
            &self.region,
            method.as_str(),
            &path,
            &mut headers,
            SystemTime::now(),
        );
        let mut map = HeaderMap::new();
        for (name, value) in headers.iter().filter(|(n, _)| n != "host") {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                map.insert(name, value);
            }
        }
        if let Ok(value) = HeaderValue::from_str(&amz_date) {
            map.insert("x-amz-date", value);
        }
        if let Ok(value) = HeaderValue::from_str(&authorization) {
            map.insert(reqwest::header::AUTHORIZATION, value);
        }
        self.client
            .request(method, format!("{}{path}", self.base))
            .headers(map)
    }

    /// Puts the file at `file` (`size` bytes) as `blob`.
    pub(crate) async fn put(&self, blob: &str, file: &Path, size: u64) -> std::io::Result<()> {
        let body = tokio::fs::File::open(file).await?;
        let response = self
            .request(
                reqwest::Method::PUT,
                blob,
                &[("content-length", size.to_string())],
            )
            .body(reqwest::Body::from(body))
            .send()
            .await
            .map_err(std::io::Error::other)?;
        answered(response, "put").await.map(drop)
    }

    /// `len` bytes of `blob` from `offset`.
    pub(crate) async fn get(
        &self,
        blob: &str,
        offset: u64,
        len: u64,
    ) -> std::io::Result<reqwest::Response> {
        let range = format!("bytes={offset}-{}", offset + len.max(1) - 1);
        let response = self
            .request(reqwest::Method::GET, blob, &[("range", range)])
            .send()
            .await
            .map_err(std::io::Error::other)?;
        answered(response, "get").await
    }

    pub(crate) async fn delete(&self, blob: &str) -> std::io::Result<()> {
        let response = self
            .request(reqwest::Method::DELETE, blob, &[])
            .send()
            .await
            .map_err(std::io::Error::other)?;
        answered(response, "delete").await.map(drop)
    }
}

/// The response, or an error with the service's own words.
async fn answered(response: reqwest::Response, what: &str) -> std::io::Result<reqwest::Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(std::io::Error::other(format!(
        "the object service refused a {what} ({status}): {}",
        body.chars().take(300).collect::<String>()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_service_its_bucket_prefix_and_credential() {
        let r =
            Remote::parse("http://AKID:s%2Fecret@127.0.0.1:9000/blobs/node-a/?region=eu-west-1")
                .unwrap();
        assert_eq!(r.base, "http://127.0.0.1:9000");
        assert_eq!(r.host, "127.0.0.1:9000");
        assert_eq!(r.path("abc"), "/blobs/node-a/abc");
        assert_eq!((r.key_id.as_str(), r.secret.as_str()), ("AKID", "s/ecret"));
        assert_eq!(r.region, "eu-west-1");
        let bare = Remote::parse("https://K:S@s3.example.com/b").unwrap();
        assert_eq!(bare.path("x"), "/b/x");
        assert!(Remote::parse("ftp://K:S@h/b").is_err());
        assert!(
            Remote::parse("http://K:S@h/")
                .unwrap_err()
                .contains("no bucket")
        );
    }
}
