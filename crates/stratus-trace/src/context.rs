//! The W3C trace context (`traceparent`), and the X-Ray trace header
//! (`Root=1-…;Parent=…;Sampled=1`) that Lambda runtimes and AWS SDKs read
//! and send, which carries the same ids.

use std::fmt;

/// A trace's id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

// Ids come from a generator per thread (wyrand, seeded from the system's
// randomness): every invocation makes a few, and a system call each cost
// more than the rest of a span. They need to be unique, not secret.

impl TraceId {
    pub fn random() -> TraceId {
        loop {
            let bytes = fastrand::u128(..).to_be_bytes();
            if bytes != [0; 16] {
                return TraceId(bytes);
            }
        }
    }

    pub fn parse(hex: &str) -> Option<TraceId> {
        let mut bytes = [0; 16];
        decode(hex, &mut bytes)?;
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }
}

impl SpanId {
    pub fn random() -> SpanId {
        loop {
            let bytes = fastrand::u64(..).to_be_bytes();
            if bytes != [0; 8] {
                return SpanId(bytes);
            }
        }
    }

    pub fn parse(hex: &str) -> Option<SpanId> {
        let mut bytes = [0; 8];
        decode(hex, &mut bytes)?;
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        encode(&self.0, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        encode(&self.0, f)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A place in a trace: the trace, a span in it, and whether the trace is
/// recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl Context {
    /// The first span of a new trace, recorded.
    pub fn root() -> Context {
        Context {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled: true,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Context {
        Context {
            span_id: SpanId::random(),
            ..*self
        }
    }

    /// Reads a `traceparent` header: version 00 (or a later version's
    /// first four fields, as the specification asks).
    pub fn from_traceparent(text: &str) -> Option<Context> {
        let text = text.trim();
        let mut fields = text.split('-');
        let version = fields.next()?;
        let trace = fields.next()?;
        let span = fields.next()?;
        let flags = fields.next()?;
        if version.len() != 2 || version.eq_ignore_ascii_case("ff") || flags.len() != 2 {
            return None;
        }
        let mut version_byte = [0];
        decode(version, &mut version_byte)?;
        if version_byte[0] == 0 && fields.next().is_some() {
            return None;
        }
        let mut flag_byte = [0];
        decode(flags, &mut flag_byte)?;
        Some(Context {
            trace_id: TraceId::parse(trace)?,
            span_id: SpanId::parse(span)?,
            sampled: flag_byte[0] & 1 == 1,
        })
    }

    /// As a `traceparent` header.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id, self.span_id, self.sampled as u8
        )
    }

    /// Reads an X-Ray trace header (`Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`).
    /// Without a parent it names only the trace: the span id is new.
    pub fn from_xray(text: &str) -> Option<Context> {
        let mut trace_id = None;
        let mut span_id = None;
        let mut sampled = true;
        for field in text.split(';') {
            match field.trim().split_once('=')? {
                ("Root", root) => {
                    let mut parts = root.split('-');
                    if parts.next()? != "1" {
                        return None;
                    }
                    let time = parts.next()?;
                    let unique = parts.next()?;
                    if time.len() != 8 || unique.len() != 24 || parts.next().is_some() {
                        return None;
                    }
                    trace_id = Some(TraceId::parse(&format!("{time}{unique}"))?);
                }
                ("Parent", parent) => span_id = Some(SpanId::parse(parent)?),
                ("Sampled", flag) => sampled = flag != "0",
                _ => {}
            }
        }
        Some(Context {
            trace_id: trace_id?,
            span_id: span_id.unwrap_or_else(SpanId::random),
            sampled,
        })
    }

    /// As an X-Ray trace header.
    pub fn xray(&self) -> String {
        let trace = self.trace_id.to_string();
        format!(
            "Root=1-{}-{};Parent={};Sampled={}",
            &trace[..8],
            &trace[8..],
            self.span_id,
            self.sampled as u8
        )
    }
}

fn decode(hex: &str, into: &mut [u8]) -> Option<()> {
    let digits = hex.as_bytes();
    if digits.len() != into.len() * 2 {
        return None;
    }
    for (byte, pair) in into.iter_mut().zip(digits.chunks_exact(2)) {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        // Lower case only, as the specification writes it.
        if pair.iter().any(|c| c.is_ascii_uppercase()) {
            return None;
        }
        *byte = (high * 16 + low) as u8;
    }
    Some(())
}

fn encode(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, byte) in bytes.iter().take(16).enumerate() {
        text[2 * i] = DIGITS[usize::from(byte >> 4)];
        text[2 * i + 1] = DIGITS[usize::from(byte & 15)];
    }
    let hex = std::str::from_utf8(&text[..2 * bytes.len().min(16)]).map_err(|_| fmt::Error)?;
    f.write_str(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparent_round_trips() {
        let context = Context::from_traceparent(TRACEPARENT).unwrap();
        assert_eq!(
            context.trace_id.to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(context.span_id.to_string(), "b7ad6b7169203331");
        assert!(context.sampled);
        assert_eq!(context.traceparent(), TRACEPARENT);
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-zz-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(Context::from_traceparent(bad), None, "{bad}");
        }
        // A later version may add fields.
        assert!(
            Context::from_traceparent(
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-later"
            )
            .is_some_and(|c| !c.sampled)
        );
    }

    #[test]
    fn xray_carries_the_same_ids() {
        let context = Context::from_traceparent(TRACEPARENT).unwrap();
        let xray = context.xray();
        assert_eq!(
            xray,
            "Root=1-0af76519-16cd43dd8448eb211c80319c;Parent=b7ad6b7169203331;Sampled=1"
        );
        assert_eq!(Context::from_xray(&xray), Some(context));
        let root_only = Context::from_xray("Root=1-5759e988-bd862e3fe1be46a994272793").unwrap();
        assert_eq!(
            root_only.trace_id.to_string(),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert_eq!(Context::from_xray("Root=2-5759e988-bd86"), None);
        assert_eq!(Context::from_xray("Self=1-5759e988"), None);
    }

    #[test]
    fn children_keep_the_trace() {
        let root = Context::root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }
}
