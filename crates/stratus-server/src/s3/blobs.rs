//! Object bytes on disk: each object a file of its own (a blob) under the
//! objects directory, named by a random id that its metadata records.
//!
//! A blob is written to `tmp/` first, streamed and hashed as it comes,
//! then fsynced, renamed into place (`ID[..2]/ID`) and its directory
//! fsynced: once [`BlobWriter::commit`] returns, the bytes survive a
//! crash, and a blob half written never appears where metadata points.
//! The metadata is committed after, so a crash between the two leaves a
//! blob nothing names, never a name without its bytes.
//!
//! With `--objects-s3`, the bytes go on to an external S3-compatible
//! service instead (`remote.rs`): a blob is written here to `tmp/` as
//! before, then put there whole before its metadata is committed, read
//! back from there with ranges, and deleted there.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWriteExt, ReadBuf};

use super::remote::Remote;

/// The directory of blobs being written.
const TMP: &str = "tmp";
/// Bytes read from a blob at a time when it is served.
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct Blobs {
    dir: PathBuf,
    /// Where the bytes go when not here.
    remote: Option<Arc<Remote>>,
}

/// A blob written and kept: its id, size and digests.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub blob: String,
    pub size: u64,
    pub md5: [u8; 16],
    /// Hex SHA-256, when asked for.
    pub sha256: Option<String>,
}

impl Blobs {
    /// The blobs under `dir`, made if missing; blobs a crash left half
    /// written are removed.
    pub(crate) fn open(dir: PathBuf, remote: Option<Remote>) -> io::Result<Blobs> {
        let tmp = dir.join(TMP);
        if tmp.exists() {
            for entry in std::fs::read_dir(&tmp)?.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Blobs {
            dir,
            remote: remote.map(Arc::new),
        })
    }

    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, blob: &str) -> PathBuf {
        let shard = blob.get(..2).unwrap_or("00");
        self.dir.join(shard).join(blob)
    }

    /// A new blob to write, hashing SHA-256 too when `sha256`.
    pub(crate) async fn create(&self, sha256: bool) -> io::Result<BlobWriter> {
        let blob = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.dir.join(TMP).join(&blob);
        let file = tokio::fs::File::create(&tmp).await?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            dest: self.path(&blob),
            remote: self.remote.clone(),
            blob,
            size: 0,
            md5: Md5::new(),
            sha256: sha256.then(Sha256::new),
        })
    }

    /// The bytes of `blob` from `offset`, `len` of them.
    pub(crate) async fn read(&self, blob: &str, offset: u64, len: u64) -> io::Result<BlobBody> {
        if let Some(remote) = &self.remote {
            let response = remote.get(blob, offset, len).await?;
            return Ok(BlobBody::Remote {
                body: reqwest::Body::from(response),
                remaining: len,
            });
        }
        let mut file = tokio::fs::File::open(self.path(blob)).await?;
        if offset > 0 {
            file.seek(io::SeekFrom::Start(offset)).await?;
        }
        Ok(BlobBody::Local {
            file,
            remaining: len,
            buf: vec![0; READ_CHUNK.min(len as usize).max(1)],
        })
    }

    /// A new blob of `parts`' bytes one after another, durable and in
    /// place, as [`BlobWriter::commit`] leaves one. The kernel copies the
    /// bytes (`copy_file_range`) where it can.
    pub(crate) async fn join(&self, parts: Vec<String>) -> io::Result<String> {
        if let Some(remote) = &self.remote {
            // Brought here one after another, then put whole.
            let mut writer = self.create(false).await?;
            for part in parts {
                let mut response = remote.get(&part, 0, u64::MAX / 2).await?;
                while let Some(chunk) = response.chunk().await.map_err(io::Error::other)? {
                    writer.write(&chunk).await?;
                }
            }
            return Ok(writer.commit().await?.blob);
        }
        let blob = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.dir.join(TMP).join(&blob);
        let dest = self.path(&blob);
        let sources: Vec<PathBuf> = parts.iter().map(|p| self.path(p)).collect();
        let work = tmp.clone();
        let joined = tokio::task::spawn_blocking(move || -> io::Result<()> {
            let mut out = std::fs::File::create(&work)?;
            for source in sources {
                std::io::copy(&mut std::fs::File::open(source)?, &mut out)?;
            }
            out.sync_all()?;
            let parent = dest.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)?;
            std::fs::rename(&work, &dest)?;
            std::fs::File::open(parent)?.sync_all()
        })
        .await
        .map_err(io::Error::other)?;
        if let Err(err) = joined {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(err);
        }
        Ok(blob)
    }

    /// Removes `blobs`; one already gone is no error.
    pub(crate) async fn remove(&self, blobs: Vec<String>) {
        if let Some(remote) = &self.remote {
            for blob in blobs {
                if let Err(err) = remote.delete(&blob).await {
                    tracing::warn!(%blob, error = %err, "cannot remove an object's bytes from the object service");
                }
            }
            return;
        }
        for blob in blobs {
            if let Err(err) = tokio::fs::remove_file(self.path(&blob)).await
                && err.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(%blob, error = %err, "cannot remove an object's file");
            }
        }
    }
}

/// A blob being written. Dropped without [`BlobWriter::commit`], its
/// bytes are removed.
pub(crate) struct BlobWriter {
    file: Option<tokio::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
    remote: Option<Arc<Remote>>,
    blob: String,
    size: u64,
    md5: Md5,
    sha256: Option<Sha256>,
}

impl BlobWriter {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.md5.update(bytes);
        if let Some(sha) = &mut self.sha256 {
            sha.update(bytes);
        }
        self.size += bytes.len() as u64;
        match &mut self.file {
            Some(file) => file.write_all(bytes).await,
            None => Err(io::Error::other("the blob is closed")),
        }
    }

    /// Makes the blob durable and puts it in place.
    pub(crate) async fn commit(mut self) -> io::Result<Written> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("the blob is closed"))?;
        file.flush().await?;
        if let Some(remote) = self.remote.clone() {
            drop(file);
            remote.put(&self.blob, &self.tmp, self.size).await?;
            let _ = tokio::fs::remove_file(&self.tmp).await;
            return Ok(self.written());
        }
        file.sync_all().await?;
        drop(file);
        let parent = self.dest.parent().map(Path::to_path_buf);
        if let Some(parent) = &parent {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(&self.tmp, &self.dest).await?;
        if let Some(parent) = parent {
            tokio::task::spawn_blocking(move || std::fs::File::open(parent)?.sync_all())
                .await
                .map_err(io::Error::other)??;
        }
        Ok(self.written())
    }

    /// What was written, the blob kept (no longer removed when dropped).
    fn written(&mut self) -> Written {
        let md5: [u8; 16] = std::mem::take(&mut self.md5).finalize().into();
        let sha256 = self
            .sha256
            .take()
            .map(|sha| crate::hex::encode(&sha.finalize()));
        Written {
            blob: std::mem::take(&mut self.blob),
            size: self.size,
            md5,
            sha256,
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.blob.is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A range of a blob as a response body, read as it is sent: from its
/// file here, or from the object service.
pub(crate) enum BlobBody {
    Local {
        file: tokio::fs::File,
        remaining: u64,
        buf: Vec<u8>,
    },
    Remote {
        body: reqwest::Body,
        remaining: u64,
    },
}

impl http_body::Body for BlobBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            BlobBody::Local {
                file,
                remaining,
                buf,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = buf.len().min(*remaining as usize);
                let mut read = ReadBuf::new(&mut buf[..want]);
                match Pin::new(file).poll_read(cx, &mut read) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(err)) => Poll::Ready(Some(Err(err))),
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        if n == 0 {
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the object's file is shorter than its size",
                            ))));
                        }
                        *remaining -= n as u64;
                        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::copy_from_slice(
                            &buf[..n],
                        )))))
                    }
                }
            }
            BlobBody::Remote { body, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the object service sent less than the object's size",
                    )))),
                    Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(io::Error::other(err)))),
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(mut data) => {
                            if data.len() as u64 > *remaining {
                                data.truncate(*remaining as usize);
                            }
                            *remaining -= data.len() as u64;
                            Poll::Ready(Some(Ok(http_body::Frame::data(data))))
                        }
                        Err(_) => {
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                    },
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            BlobBody::Local { remaining, .. } | BlobBody::Remote { remaining, .. } => {
                *remaining == 0
            }
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            BlobBody::Local { remaining, .. } | BlobBody::Remote { remaining, .. } => {
                http_body::SizeHint::with_exact(*remaining)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_blob_appears_only_once_committed_and_reads_back_in_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().join("objects"), None).unwrap();
        let mut writer = blobs.create(true).await.unwrap();
        writer.write(b"hello ").await.unwrap();
        writer.write(b"world").await.unwrap();
        let written = writer.commit().await.unwrap();
        assert_eq!(written.size, 11);
        assert_eq!(
            crate::hex::encode(&written.md5),
            "5eb63bbbe01eeed093cb22bb8f5acdc3"
        );
        assert_eq!(
            written.sha256.as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        let body = blobs.read(&written.blob, 6, 5).await.unwrap();
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"world");

        // Dropped before its commit: nothing left, in place or in tmp.
        let mut dropped = blobs.create(false).await.unwrap();
        dropped.write(b"partial").await.unwrap();
        drop(dropped);
        assert_eq!(std::fs::read_dir(blobs.dir().join(TMP)).unwrap().count(), 0);

        blobs.remove(vec![written.blob.clone()]).await;
        assert!(blobs.read(&written.blob, 0, 1).await.is_err());
    }

    #[test]
    fn opening_clears_what_a_crash_left_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        std::fs::create_dir_all(root.join(TMP)).unwrap();
        std::fs::write(root.join(TMP).join("half"), b"x").unwrap();
        Blobs::open(root.clone(), None).unwrap();
        assert_eq!(std::fs::read_dir(root.join(TMP)).unwrap().count(), 0);
    }
}
