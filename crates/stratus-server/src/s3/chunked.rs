//! Bodies in `aws-chunked` encoding, decoded as they arrive: each chunk
//! is `SIZE[;chunk-signature=SIG]\r\nDATA\r\n`, the last one of size 0,
//! then trailing headers (`x-amz-checksum-crc32:...`, with
//! `x-amz-trailer-signature` when signed) and an empty line. A signed
//! chunk's signature is checked when its data has all come, before the
//! next is taken; the caller keeps nothing until the whole body decoded.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::auth::ChunkSigner;
use super::error::S3Error;

/// The longest line of a chunk's header or of a trailer.
const MAX_LINE: usize = 4096;

#[derive(Debug)]
enum State {
    /// Reading a chunk's header line.
    Header,
    /// In a chunk's data, this much left.
    Data(u64),
    /// After a chunk's data, its `\r\n`.
    DataEnd,
    /// After the last chunk: trailing headers until an empty line.
    Trailer,
    Done,
}

pub(crate) struct Dechunker {
    state: State,
    /// A line not yet whole.
    line: Vec<u8>,
    signer: Option<ChunkSigner>,
    /// The hash of the current chunk's data, and its signature.
    hash: Sha256,
    signature: String,
    /// Trailing headers as signed (`name:value\n` each), and their
    /// signature.
    trailer: String,
    trailer_signature: Option<String>,
}

fn malformed(message: impl Into<String>) -> S3Error {
    S3Error::new(
        axum::http::StatusCode::BAD_REQUEST,
        "IncompleteBody",
        message,
    )
}

impl Dechunker {
    pub(crate) fn new(signer: Option<ChunkSigner>) -> Dechunker {
        Dechunker {
            state: State::Header,
            line: Vec::new(),
            signer,
            hash: Sha256::new(),
            signature: String::new(),
            trailer: String::new(),
            trailer_signature: None,
        }
    }

    /// The data in `input`, in order.
    pub(crate) fn feed(&mut self, input: Bytes) -> Result<Vec<Bytes>, S3Error> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Data(left) => {
                    let n = (left as usize).min(input.len() - at);
                    let data = input.slice(at..at + n);
                    if self.signer.is_some() {
                        self.hash.update(&data);
                    }
                    out.push(data);
                    at += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::Done => {
                    return Err(malformed("the body goes on after its last chunk"));
                }
                _ => {
                    // Lines: up to and with `\n`.
                    let rest = &input[at..];
                    let end = rest.iter().position(|b| *b == b'\n');
                    let take = end.map_or(rest.len(), |i| i + 1);
                    if self.line.len() + take > MAX_LINE {
                        return Err(malformed("a chunk header or trailer line is too long"));
                    }
                    self.line.extend_from_slice(&rest[..take]);
                    at += take;
                    if end.is_some() {
                        let line = std::mem::take(&mut self.line);
                        self.line_done(&line)?;
                    }
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<(), S3Error> {
        let line = line
            .strip_suffix(b"\r\n")
            .ok_or_else(|| malformed("a chunk line does not end in CRLF"))?;
        let line = std::str::from_utf8(line).map_err(|_| malformed("a chunk line is not UTF-8"))?;
        match self.state {
            State::DataEnd => {
                if !line.is_empty() {
                    return Err(malformed("a chunk is longer than its size"));
                }
                self.end_chunk()?;
                self.state = State::Header;
            }
            State::Header => {
                let (size, extensions) = line.split_once(';').unwrap_or((line, ""));
                let size = u64::from_str_radix(size.trim(), 16)
                    .map_err(|_| malformed(format!("{size:?} is not a chunk size")))?;
                self.signature = extensions
                    .split(';')
                    .find_map(|e| e.trim().strip_prefix("chunk-signature="))
                    .unwrap_or("")
                    .to_owned();
                if self.signer.is_some() && self.signature.is_empty() {
                    return Err(S3Error::access_denied(
                        "a chunk of a signed aws-chunked body has no chunk-signature",
                    ));
                }
                if size == 0 {
                    self.end_chunk()?;
                    self.state = State::Trailer;
                } else {
                    self.state = State::Data(size);
                }
            }
            State::Trailer => {
                if line.is_empty() {
                    self.end_trailer()?;
                    self.state = State::Done;
                } else if let Some(signature) = line.strip_prefix("x-amz-trailer-signature:") {
                    self.trailer_signature = Some(signature.trim().to_owned());
                } else {
                    self.trailer.push_str(line);
                    self.trailer.push('\n');
                }
            }
            State::Data(_) | State::Done => unreachable!("lines are read between data"),
        }
        Ok(())
    }

    /// Checks the signature of the chunk just read.
    fn end_chunk(&mut self) -> Result<(), S3Error> {
        let hash = std::mem::take(&mut self.hash);
        if let Some(signer) = &mut self.signer {
            let hash = crate::hex::encode(&hash.finalize());
            if !signer.chunk(&hash, &self.signature) {
                return Err(S3Error::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "SignatureDoesNotMatch",
                    "a chunk's signature does not match its data",
                ));
            }
        }
        Ok(())
    }

    fn end_trailer(&mut self) -> Result<(), S3Error> {
        if let (Some(signer), Some(signature)) = (&mut self.signer, &self.trailer_signature)
            && !signer.trailer(&self.trailer, signature)
        {
            return Err(S3Error::new(
                axum::http::StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                "the trailer's signature does not match its headers",
            ));
        }
        Ok(())
    }

    /// Refuses a body that ended before its last chunk.
    pub(crate) fn finish(&self) -> Result<(), S3Error> {
        match self.state {
            State::Done => Ok(()),
            // Some clients end with the last chunk and no empty line.
            State::Trailer if self.line.is_empty() && self.trailer.is_empty() => Ok(()),
            _ => Err(malformed(
                "the body ended before its last chunk; send the whole object",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8], split: usize) -> Result<Vec<u8>, S3Error> {
        let mut d = Dechunker::new(None);
        let mut out = Vec::new();
        for piece in body.chunks(split) {
            for data in d.feed(Bytes::copy_from_slice(piece))? {
                out.extend_from_slice(&data);
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn chunks_decode_however_the_body_is_split() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
        for split in [1, 2, 3, 7, 100] {
            assert_eq!(
                decode(body, split).unwrap(),
                b"hello world",
                "split {split}"
            );
        }
        let bare = b"3;chunk-signature=abc\r\nabc\r\n0;chunk-signature=def\r\n\r\n";
        assert_eq!(decode(bare, 4).unwrap(), b"abc");
    }

    #[test]
    fn a_short_or_overlong_body_is_refused() {
        assert!(decode(b"5\r\nhel", 100).is_err());
        assert!(decode(b"2\r\nhello\r\n0\r\n\r\n", 100).is_err());
        assert!(decode(b"zz\r\nhello\r\n", 100).is_err());
        assert!(decode(b"0\r\n\r\nmore", 100).is_err());
    }
}
