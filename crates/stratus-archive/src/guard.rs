//! The decompressed tar stream, watched as the unpacker reads it: every
//! byte counts toward a limit, and an extension header (a GNU long name or
//! link, a pax header) may not be larger than [`MAX_EXTENSION`] — the
//! `tar` crate would read its data whole into memory.

use std::io::{self, Read};

/// Largest extension header's data.
pub const MAX_EXTENSION: u64 = 64 * 1024;
const BLOCK: u64 = 512;

/// Why the stream was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("an extension header (type {kind:?}) holds {size} bytes, more than {MAX_EXTENSION}")]
    Extension { kind: char, size: u64 },
    #[error("the package decompresses to more than {limit} bytes")]
    Decompressed { limit: u64 },
}

pub(crate) struct Guard<R> {
    inner: R,
    /// Bytes read so far.
    pos: u64,
    /// Where the next header starts.
    next_header: u64,
    header: Vec<u8>,
    limit: u64,
}

impl<R: Read> Guard<R> {
    pub fn new(inner: R, limit: u64) -> Guard<R> {
        Guard {
            inner,
            pos: 0,
            next_header: 0,
            header: Vec::with_capacity(BLOCK as usize),
            limit,
        }
    }

    /// Looks at `bytes`, which start at `self.pos`.
    fn watch(&mut self, mut bytes: &[u8]) -> Result<(), Refused> {
        while !bytes.is_empty() {
            if self.pos < self.next_header {
                let skip = (self.next_header - self.pos).min(bytes.len() as u64) as usize;
                self.pos += skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (BLOCK as usize - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            self.pos += take as u64;
            bytes = &bytes[take..];
            if self.header.len() == BLOCK as usize {
                let size = self.end_of_header()?;
                self.next_header = self.pos + size.div_ceil(BLOCK) * BLOCK;
                self.header.clear();
            }
        }
        Ok(())
    }

    /// The data size of the header just read, checked.
    fn end_of_header(&self) -> Result<u64, Refused> {
        let header = &self.header;
        if header.iter().all(|b| *b == 0) {
            return Ok(0);
        }
        let size = parse_size(&header[124..136]);
        let kind = header[156] as char;
        if matches!(kind, 'L' | 'K' | 'x' | 'g') && size > MAX_EXTENSION {
            return Err(Refused::Extension { kind, size });
        }
        Ok(size)
    }
}

/// A header's size field: octal digits, or base-256 when its first byte
/// has the high bit set. Anything unreadable is 0 (the `tar` crate refuses
/// such a header itself).
fn parse_size(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(0u64, |n, b| {
            n.saturating_mul(256).saturating_add(u64::from(*b))
        });
    }
    let text = String::from_utf8_lossy(field);
    u64::from_str_radix(text.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.pos + n as u64 > self.limit {
            return Err(io::Error::other(Refused::Decompressed {
                limit: self.limit,
            }));
        }
        self.watch(&buf[..n]).map_err(io::Error::other)?;
        Ok(n)
    }
}

/// The refusal in `err`'s chain, if the guard refused.
pub(crate) fn refusal(err: &io::Error) -> Option<&Refused> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
    while let Some(err) = cause {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused);
        }
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
        {
            cause = Some(inner);
            continue;
        }
        cause = err.source();
    }
    None
}
