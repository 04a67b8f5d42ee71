//! The byte relay between a client's WebSocket and the app's, once both
//! are past the HTTP 101 handshake.
//!
//! Bytes go through as they are read, unchanged. The relay still follows
//! the RFC 6455 framing in each direction (headers only, never copying a
//! payload) for one reason: when the platform drains the instance, it can
//! end the session the way a WebSocket expects — a close frame (1001,
//! "going away") to each side, sent only between frames — instead of
//! cutting the connection under a half-sent message.
//!
//! Knowing where frames end also keeps each receiver's closing handshake
//! clean: once a close frame has reached a side, nothing more is sent to
//! it. A well-behaved sender sends nothing after its own close, so in a
//! session the relay did not close this drops nothing; after an injected
//! close it keeps the other peer's reply (a second close) from reaching a
//! side that already has one, which browsers report as an error
//! ("Close received after close") instead of a clean 1001.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// One read buffer per direction: reads are forwarded as soon as they
/// arrive, so this bounds a write, not how long bytes wait.
const BUFFER_BYTES: usize = 16 * 1024;

/// Reads handled in one turn of a direction before it yields, so a side
/// that always has bytes ready cannot starve the timers or the other
/// direction.
const READS_PER_TURN: usize = 32;

/// The close status sent when the platform drains the instance.
const GOING_AWAY: u16 = 1001;
const GOING_AWAY_REASON: &[u8] = b"going away";

const OPCODE_CLOSE: u8 = 0x8;

/// One end of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

/// How the session ended, for its log record.
#[derive(Debug)]
pub(crate) enum EndReason {
    /// A side ended it: it sent the first close frame, or closed its
    /// connection.
    Closed { by: Side },
    /// The instance drained and the relay closed the session. `timed_out`
    /// when `close_wait` passed before both closing handshakes were done
    /// (or a side closed its connection).
    Drained { timed_out: bool },
    /// Reading from or writing to `side` failed.
    Failed { side: Side, error: io::Error },
}

/// The end of a session: why, and the bytes relayed each way (without the
/// close frames the relay sent itself).
#[derive(Debug)]
pub(crate) struct RelayEnd {
    pub reason: EndReason,
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Upstream => "app",
        })
    }
}

/// One line for the session's log record, e.g. "closed by the client,
/// 120 bytes up, 4096 down".
impl fmt::Display for RelayEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            EndReason::Closed { by } => write!(f, "closed by the {by}")?,
            EndReason::Drained { timed_out: false } => f.write_str("closed for the drain")?,
            EndReason::Drained { timed_out: true } => {
                f.write_str("closed for the drain, closing handshake timed out")?
            }
            EndReason::Failed { side, error } => write!(f, "failed on the {side} side: {error}")?,
        }
        write!(
            f,
            ", {} bytes up, {} down",
            self.client_to_upstream, self.upstream_to_client
        )
    }
}

/// Relays bytes between `client` and `upstream` until either side ends
/// the session; once `drain` resolves and `grace` has passed, ends it
/// itself with a close frame to each side.
///
/// After the close frames, the relay waits up to `close_wait` for the
/// closing handshakes, and up to `close_wait` again to flush and shut
/// down both connections (and for each side to close its own, so the
/// connections are not dropped with unread bytes, which would reset them).
pub(crate) async fn relay<C, U>(
    mut client: C,
    mut upstream: U,
    drain: impl Future<Output = ()>,
    grace: Duration,
    close_wait: Duration,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Direction::new(Side::Client);
    let mut down = Direction::new(Side::Upstream);
    let mut first_close = None;
    let mut phase = Phase::Open;
    tokio::pin!(drain);
    // One timer serves both waits: the grace period, then `close_wait`.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);

    let event = loop {
        tokio::select! {
            biased;
            event = poll_fn(|cx| {
                drive(cx, &mut client, &mut upstream, &mut up, &mut down, &mut first_close)
            }) => break event,
            () = &mut drain, if phase == Phase::Open => {
                phase = Phase::Grace;
                timer.as_mut().reset(Instant::now() + grace);
            }
            () = &mut timer, if phase != Phase::Open => {
                if phase == Phase::Closing {
                    break Event::TimedOut;
                }
                phase = Phase::Closing;
                up.want_close = true;
                down.want_close = true;
                timer.as_mut().reset(Instant::now() + close_wait);
            }
        }
    };

    let _ = tokio::time::timeout(
        close_wait,
        poll_fn(|cx| {
            let up_done = up.poll_finish(cx, Pin::new(&mut client), Pin::new(&mut upstream));
            let down_done = down.poll_finish(cx, Pin::new(&mut upstream), Pin::new(&mut client));
            if up_done.is_ready() && down_done.is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }),
    )
    .await;

    let reason = match event {
        Event::Failed(side, error) => EndReason::Failed { side, error },
        Event::TimedOut => EndReason::Drained { timed_out: true },
        _ if phase == Phase::Closing => EndReason::Drained { timed_out: false },
        Event::Eof(side) => EndReason::Closed {
            by: first_close.unwrap_or(side),
        },
        // Both closes went through, so one of them was first.
        Event::Handshaken => EndReason::Closed {
            by: first_close.unwrap_or(Side::Client),
        },
    };
    RelayEnd {
        reason,
        client_to_upstream: up.relayed,
        upstream_to_client: down.relayed,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Relaying; the instance is not draining.
    Open,
    /// Drain began: relaying as usual until the grace period ends.
    Grace,
    /// Closing: close frames go out at the next frame boundaries.
    Closing,
}

/// Why relaying stopped.
enum Event {
    /// This side's connection ended.
    Eof(Side),
    Failed(Side, io::Error),
    /// Each side has received a close frame and sent its own.
    Handshaken,
    /// `close_wait` passed after the close frames were due.
    TimedOut,
}

/// Polls both directions; ready when relaying has to stop.
fn drive<C, U>(
    cx: &mut Context<'_>,
    client: &mut C,
    upstream: &mut U,
    up: &mut Direction,
    down: &mut Direction,
    first_close: &mut Option<Side>,
) -> Poll<Event>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    // A side that has sent a close is owed the other's reply: injecting
    // one instead would replace that reply, so the relay waits for it.
    let may_inject = up.want_close && !down.sender_closed;
    let polled = up.poll_relay(cx, Pin::new(client), Pin::new(upstream), may_inject);
    note_close(up, first_close);
    if let Poll::Ready(end) = polled {
        return Poll::Ready(end);
    }
    let may_inject = down.want_close && !up.sender_closed;
    let polled = down.poll_relay(cx, Pin::new(upstream), Pin::new(client), may_inject);
    note_close(down, first_close);
    if let Poll::Ready(end) = polled {
        return Poll::Ready(end);
    }
    if up.handshaken() && down.handshaken() {
        return Poll::Ready(Event::Handshaken);
    }
    Poll::Pending
}

fn note_close(direction: &Direction, first_close: &mut Option<Side>) {
    if direction.sender_closed && first_close.is_none() {
        *first_close = Some(direction.from);
    }
}

/// One direction of the session: what was read from `from` and is being
/// written to the other side.
struct Direction {
    from: Side,
    buf: Box<[u8]>,
    /// `buf[pos..len]` is read and not yet written.
    pos: usize,
    len: usize,
    /// Framing of the bytes already written (or dropped after a close).
    frames: FrameTracker,
    /// A close frame of the relay's own, partly written.
    injecting: Option<CloseFrame>,
    /// Drain: send a close at the next frame boundary.
    want_close: bool,
    /// A close frame reached the receiver (the sender's or the relay's):
    /// what the sender sends after it is dropped.
    delivered_close: bool,
    /// The sender's own close frame went by.
    sender_closed: bool,
    /// Bytes were written since the last flush.
    need_flush: bool,
    eof: bool,
    read_failed: bool,
    write_failed: bool,
    /// Finishing: pending bytes are out and the writer is shut down.
    shut: bool,
    relayed: u64,
}

impl Direction {
    fn new(from: Side) -> Self {
        Direction {
            from,
            buf: vec![0; BUFFER_BYTES].into_boxed_slice(),
            pos: 0,
            len: 0,
            frames: FrameTracker::default(),
            injecting: None,
            want_close: false,
            delivered_close: false,
            sender_closed: false,
            need_flush: false,
            eof: false,
            read_failed: false,
            write_failed: false,
            shut: false,
            relayed: 0,
        }
    }

    fn to(&self) -> Side {
        match self.from {
            Side::Client => Side::Upstream,
            Side::Upstream => Side::Client,
        }
    }

    fn handshaken(&self) -> bool {
        self.delivered_close && self.sender_closed
    }

    fn read_error(&mut self, error: io::Error) -> Event {
        self.read_failed = true;
        Event::Failed(self.from, error)
    }

    fn write_error(&mut self, error: io::Error) -> Event {
        self.write_failed = true;
        Event::Failed(self.to(), error)
    }

    /// Relays until the reader and writer are both waiting; ready on EOF
    /// or an error.
    fn poll_relay<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        may_inject: bool,
    ) -> Poll<Event>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        let mut reads = 0;
        loop {
            if let Some(frame) = &mut self.injecting {
                while !frame.rest().is_empty() {
                    match ready!(writer.as_mut().poll_write(cx, frame.rest())) {
                        Ok(0) => {
                            return Poll::Ready(self.write_error(io::ErrorKind::WriteZero.into()));
                        }
                        Ok(n) => frame.written += n,
                        Err(error) => return Poll::Ready(self.write_error(error)),
                    }
                }
                self.injecting = None;
                self.delivered_close = true;
                self.need_flush = true;
                continue;
            }
            if may_inject && !self.delivered_close && self.frames.at_boundary() {
                self.injecting = Some(CloseFrame::going_away(self.from == Side::Client));
                continue;
            }
            if self.pos < self.len {
                let pending = &self.buf[self.pos..self.len];
                if self.delivered_close {
                    // Still followed, to see the sender's own close.
                    if self.frames.feed(pending) {
                        self.sender_closed = true;
                    }
                    self.pos = self.len;
                    continue;
                }
                // Stop at the end of a close frame (nothing after it goes
                // out) and, with a close to inject, at the end of the
                // current frame.
                let span = self.frames.span(pending, may_inject);
                let n = match ready!(writer.as_mut().poll_write(cx, &pending[..span])) {
                    Ok(0) => return Poll::Ready(self.write_error(io::ErrorKind::WriteZero.into())),
                    Ok(n) => n,
                    Err(error) => return Poll::Ready(self.write_error(error)),
                };
                if self.frames.feed(&pending[..n]) {
                    self.sender_closed = true;
                    self.delivered_close = true;
                }
                self.pos += n;
                self.relayed += n as u64;
                self.need_flush = true;
                continue;
            }
            if self.eof {
                return Poll::Ready(Event::Eof(self.from));
            }
            if reads == READS_PER_TURN {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut read = ReadBuf::new(&mut self.buf);
            match reader.as_mut().poll_read(cx, &mut read) {
                Poll::Pending => {
                    // Nothing more to write for now: push out what a
                    // buffering writer (TLS) may be holding.
                    if self.need_flush {
                        if let Err(error) = ready!(writer.as_mut().poll_flush(cx)) {
                            return Poll::Ready(self.write_error(error));
                        }
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(self.read_error(error)),
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        self.eof = true;
                        return Poll::Ready(Event::Eof(self.from));
                    }
                    self.pos = 0;
                    self.len = n;
                    reads += 1;
                }
            }
        }
    }

    /// Writes out what is pending (a close being injected, bytes already
    /// read) without reading more, shuts the writer down, then reads and
    /// drops what the sender still sends until it closes its connection.
    fn poll_finish<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<()>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if !self.shut {
            if !self.write_failed {
                while let Some(frame) = &mut self.injecting {
                    match ready!(writer.as_mut().poll_write(cx, frame.rest())) {
                        Ok(n) if n > 0 => frame.written += n,
                        _ => {
                            self.write_failed = true;
                            break;
                        }
                    }
                    if frame.rest().is_empty() {
                        self.injecting = None;
                    }
                }
                while !self.write_failed && !self.delivered_close && self.pos < self.len {
                    let pending = &self.buf[self.pos..self.len];
                    let span = self.frames.span(pending, false);
                    match ready!(writer.as_mut().poll_write(cx, &pending[..span])) {
                        Ok(n) if n > 0 => {
                            self.delivered_close = self.frames.feed(&pending[..n]);
                            self.pos += n;
                            self.relayed += n as u64;
                        }
                        _ => self.write_failed = true,
                    }
                }
            }
            // Errors here change nothing: the session is over either way.
            let _ = ready!(writer.as_mut().poll_shutdown(cx));
            self.shut = true;
            self.pos = 0;
            self.len = 0;
        }
        while !self.eof && !self.read_failed {
            let mut read = ReadBuf::new(&mut self.buf);
            match ready!(reader.as_mut().poll_read(cx, &mut read)) {
                Ok(()) if read.filled().is_empty() => self.eof = true,
                Ok(()) => {}
                Err(_) => self.read_failed = true,
            }
        }
        Poll::Ready(())
    }
}

/// A close frame of the relay's own: status 1001, "going away". Masked
/// towards the app, as every client-to-server frame must be.
struct CloseFrame {
    bytes: [u8; 2 + 4 + 2 + GOING_AWAY_REASON.len()],
    len: usize,
    written: usize,
}

impl CloseFrame {
    fn going_away(masked: bool) -> Self {
        let mut payload = [0u8; 2 + GOING_AWAY_REASON.len()];
        payload[..2].copy_from_slice(&GOING_AWAY.to_be_bytes());
        payload[2..].copy_from_slice(GOING_AWAY_REASON);
        let mut bytes = [0u8; 2 + 4 + 2 + GOING_AWAY_REASON.len()];
        bytes[0] = 0x80 | OPCODE_CLOSE;
        bytes[1] = payload.len() as u8;
        let len = if masked {
            let key = mask_key();
            bytes[1] |= 0x80;
            bytes[2..6].copy_from_slice(&key);
            for (i, byte) in payload.iter().enumerate() {
                bytes[6 + i] = byte ^ key[i % 4];
            }
            6 + payload.len()
        } else {
            bytes[2..2 + payload.len()].copy_from_slice(&payload);
            2 + payload.len()
        };
        CloseFrame {
            bytes,
            len,
            written: 0,
        }
    }

    fn rest(&self) -> &[u8] {
        &self.bytes[self.written..self.len]
    }
}

/// A fresh masking key. Masking exists so that a script cannot choose the
/// bytes an intermediary sees; this frame's bytes are the relay's own, so
/// if the system has no randomness a clock-derived key does no harm.
fn mask_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    if getrandom::fill(&mut key).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
        key = nanos.to_le_bytes();
    }
    key
}

/// Follows RFC 6455 framing through a byte stream fed in pieces of any
/// size. Only header bytes (at most 14 a frame) are kept; a payload is
/// counted down, never looked at.
#[derive(Debug, Clone, Copy, Default)]
struct FrameTracker {
    /// The current frame's header bytes so far; none between frames.
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to come, once its header
    /// is complete.
    payload_left: u64,
    in_payload: bool,
    /// The current frame is a close frame (known once byte 0 is in).
    close: bool,
}

impl FrameTracker {
    /// Between two frames: nothing of the next one has gone by.
    fn at_boundary(&self) -> bool {
        self.have == 0 && !self.in_payload
    }

    /// The header's full length, once its first two bytes are in:
    /// 2, plus 2 or 8 for an extended length, plus 4 for a mask key.
    fn header_len(&self) -> usize {
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + extended + mask
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(bytes)
            }
            short => u64::from(short),
        }
    }

    /// Consumes `data` up to the end of the current frame at most.
    /// Returns the bytes consumed and, when a frame ended there, whether
    /// it was a close frame. Consumes at least one byte of non-empty data.
    fn step(&mut self, data: &[u8]) -> (usize, Option<bool>) {
        let mut used = 0;
        while !self.in_payload {
            let Some(&byte) = data.get(used) else {
                return (used, None);
            };
            self.header[self.have] = byte;
            self.have += 1;
            used += 1;
            if self.have == 1 {
                self.close = byte & 0x0f == OPCODE_CLOSE;
            }
            if self.have >= 2 && self.have == self.header_len() {
                self.payload_left = self.payload_len();
                self.have = 0;
                if self.payload_left == 0 {
                    return (used, Some(self.close));
                }
                self.in_payload = true;
            }
        }
        let rest = (data.len() - used) as u64;
        let take = rest.min(self.payload_left);
        self.payload_left -= take;
        used += take as usize;
        if self.payload_left == 0 {
            self.in_payload = false;
            return (used, Some(self.close));
        }
        (used, None)
    }

    /// Follows all of `data`; true when a close frame ended in it.
    fn feed(&mut self, data: &[u8]) -> bool {
        let mut closed = false;
        let mut at = 0;
        while at < data.len() {
            let (used, ended) = self.step(&data[at..]);
            at += used;
            closed |= ended == Some(true);
        }
        closed
    }

    /// How much of `data` can be written before the relay has to act: up
    /// to the end of the first close frame, or, with `to_boundary`, of the
    /// current frame. All of it when neither ends in `data`.
    fn span(&self, data: &[u8], to_boundary: bool) -> usize {
        let mut frames = *self;
        let mut at = 0;
        while at < data.len() {
            let (used, ended) = frames.step(&data[at..]);
            at += used;
            match ended {
                Some(true) => break,
                Some(false) if to_boundary => break,
                _ => {}
            }
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    /// The test's ends of the two connections, the drain trigger and the
    /// relay running between them.
    struct Session {
        client: DuplexStream,
        upstream: DuplexStream,
        drain: Option<oneshot::Sender<()>>,
        relay: JoinHandle<RelayEnd>,
    }

    /// `capacity` is each connection's buffer: small ones make the relay
    /// read in small pieces.
    fn start(capacity: usize, grace: Duration, close_wait: Duration) -> Session {
        let (client, client_relay) = duplex(capacity);
        let (upstream, upstream_relay) = duplex(capacity);
        let (drain, drained) = oneshot::channel::<()>();
        let drain_signal = async move {
            if drained.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let relay = tokio::spawn(relay(
            client_relay,
            upstream_relay,
            drain_signal,
            grace,
            close_wait,
        ));
        Session {
            client,
            upstream,
            drain: Some(drain),
            relay,
        }
    }

    impl Session {
        fn drain(&mut self) {
            let _ = self.drain.take().unwrap().send(());
        }
    }

    /// A frame as a peer sends it: masked when `mask` is given.
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        payload
    }

    /// Bytes that look like frame headers, close frames among them.
    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                match state % 7 {
                    0 => 0x88,
                    1 => 0xfe,
                    2 => 0xff,
                    _ => state as u8,
                }
            })
            .collect()
    }

    /// A conversation in one direction: every kind of length, control
    /// frames between the fragments of a message, payloads that look like
    /// headers.
    fn conversation(masked: bool) -> Vec<u8> {
        let mask = |seed: u8| masked.then_some([seed, 0x88, 0x7f, 0xfe]);
        let mut out = Vec::new();
        out.extend(frame(true, 0x1, b"hello", mask(1)));
        out.extend(frame(true, 0x2, &[], mask(2)));
        out.extend(frame(true, 0x2, &noise(125, 3), mask(3)));
        out.extend(frame(true, 0x2, &noise(126, 4), mask(4)));
        out.extend(frame(true, 0x2, &noise(300, 5), mask(5)));
        out.extend(frame(true, 0x2, &noise(65_535, 6), mask(6)));
        out.extend(frame(false, 0x1, &noise(40, 7), mask(7)));
        out.extend(frame(true, 0x9, b"ping", mask(8)));
        out.extend(frame(false, 0x0, &noise(70_000, 9), mask(9)));
        out.extend(frame(true, 0xa, b"pong", mask(10)));
        out.extend(frame(true, 0x0, &noise(3, 11), mask(11)));
        out
    }

    /// Writes `bytes` in pieces of 1 to 7 bytes, letting the relay run
    /// between them.
    async fn dribble<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) {
        let mut at = 0;
        let mut size = 1;
        while at < bytes.len() {
            let end = (at + size).min(bytes.len());
            to.write_all(&bytes[at..end]).await.unwrap();
            at = end;
            size = size % 7 + 1;
            tokio::task::yield_now().await;
        }
    }

    async fn read_exactly(from: &mut DuplexStream, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        tokio::time::timeout(Duration::from_secs(10), from.read_exact(&mut bytes))
            .await
            .expect("bytes in time")
            .unwrap();
        bytes
    }

    /// Nothing arrives for a while (the relay is holding back correctly).
    async fn assert_quiet(from: &mut DuplexStream) {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(100), from.read(&mut byte)).await;
        assert!(read.is_err(), "unexpected {read:?} {byte:?}");
    }

    async fn assert_eof(from: &mut DuplexStream) {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), from.read_to_end(&mut rest))
            .await
            .expect("EOF in time")
            .unwrap();
        assert!(rest.is_empty(), "bytes before EOF: {rest:?}");
    }

    async fn ended(relay: JoinHandle<RelayEnd>) -> RelayEnd {
        tokio::time::timeout(Duration::from_secs(10), relay)
            .await
            .expect("relay ends in time")
            .unwrap()
    }

    const CLIENT_CLOSE_1001: [u8; 14] = [
        0x88, 0x0c, 0x03, 0xe9, b'g', b'o', b'i', b'n', b'g', b' ', b'a', b'w', b'a', b'y',
    ];

    /// Checks a masked close 1001 "going away" and unmasks it.
    fn assert_masked_close_1001(bytes: &[u8]) {
        assert_eq!(bytes.len(), 18);
        assert_eq!(&bytes[..2], &[0x88, 0x8c]);
        let key = &bytes[2..6];
        let payload: Vec<u8> = bytes[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(payload, close_payload(1001, b"going away"));
    }

    #[test]
    fn tracker_follows_frames_fed_in_any_pieces() {
        let stream = conversation(true);
        let ends: Vec<usize> = {
            let mut frames = FrameTracker::default();
            let mut ends = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let (used, ended) = frames.step(&stream[at..]);
                at += used;
                if let Some(close) = ended {
                    assert!(!close);
                    ends.push(at);
                }
            }
            ends
        };
        assert_eq!(ends.len(), 11);
        assert_eq!(*ends.last().unwrap(), stream.len());
        for piece in [1, 2, 3, 13, 4096] {
            let mut frames = FrameTracker::default();
            let mut boundaries = Vec::new();
            for (i, chunk) in stream.chunks(piece).enumerate() {
                assert!(!frames.feed(chunk));
                if frames.at_boundary() {
                    boundaries.push(i * piece + chunk.len());
                }
            }
            let expected: Vec<usize> = ends
                .iter()
                .copied()
                .filter(|end| end % piece == 0 || *end == stream.len())
                .collect();
            assert_eq!(boundaries, expected, "pieces of {piece}");
        }
    }

    #[test]
    fn tracker_reads_every_length_form() {
        for (len, header) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
        ] {
            for masked in [false, true] {
                let bytes = frame(true, 0x2, &vec![0x88; len], masked.then_some([1, 2, 3, 4]));
                assert_eq!(bytes.len(), header + if masked { 4 } else { 0 } + len);
                let mut frames = FrameTracker::default();
                assert_eq!(frames.step(&bytes), (bytes.len(), Some(false)));
                assert!(frames.at_boundary());
            }
        }
    }

    #[test]
    fn span_stops_after_a_close_and_at_boundaries_when_asked() {
        let ping = frame(true, 0x9, b"x", None);
        let close = frame(true, 0x8, &close_payload(1000, b""), None);
        let mut stream = ping.clone();
        stream.extend(&close);
        stream.extend(&ping);
        let frames = FrameTracker::default();
        assert_eq!(frames.span(&stream, false), ping.len() + close.len());
        assert_eq!(frames.span(&stream, true), ping.len());
        let mut midway = FrameTracker::default();
        midway.feed(&ping[..2]);
        assert_eq!(midway.span(&stream[2..], true), ping.len() - 2);
        assert_eq!(CloseFrame::going_away(false).rest(), CLIENT_CLOSE_1001);
        assert_masked_close_1001(CloseFrame::going_away(true).rest());
    }

    #[test]
    fn the_end_reads_as_one_line() {
        let end = RelayEnd {
            reason: EndReason::Closed { by: Side::Upstream },
            client_to_upstream: 120,
            upstream_to_client: 4096,
        };
        assert_eq!(
            end.to_string(),
            "closed by the app, 120 bytes up, 4096 down"
        );
        let end = RelayEnd {
            reason: EndReason::Failed {
                side: Side::Client,
                error: io::ErrorKind::BrokenPipe.into(),
            },
            client_to_upstream: 0,
            upstream_to_client: 7,
        };
        assert_eq!(
            end.to_string(),
            "failed on the client side: broken pipe, 0 bytes up, 7 down"
        );
    }

    #[tokio::test]
    async fn relays_every_byte_unchanged_through_tiny_reads() {
        // Connections that hold 5 bytes: the relay reads at most that.
        let session = start(5, Duration::from_secs(60), Duration::from_secs(5));
        let from_client = conversation(true);
        let from_upstream = conversation(false);
        let (mut client_read, mut client_write) = tokio::io::split(session.client);
        let (mut upstream_read, mut upstream_write) = tokio::io::split(session.upstream);
        let mut got_up = vec![0; from_client.len()];
        let mut got_down = vec![0; from_upstream.len()];
        let ((), (), up, down) = tokio::join!(
            dribble(&mut client_write, &from_client),
            dribble(&mut upstream_write, &from_upstream),
            upstream_read.read_exact(&mut got_up),
            client_read.read_exact(&mut got_down),
        );
        up.unwrap();
        down.unwrap();
        assert!(got_up == from_client, "client to upstream altered");
        assert!(got_down == from_upstream, "upstream to client altered");

        drop(client_read.unsplit(client_write));
        drop(upstream_read.unsplit(upstream_write));
        let end = ended(session.relay).await;
        assert!(matches!(end.reason, EndReason::Closed { .. }), "{end:?}");
        assert_eq!(end.client_to_upstream, from_client.len() as u64);
        assert_eq!(end.upstream_to_client, from_upstream.len() as u64);
    }

    #[tokio::test]
    async fn drain_closes_both_sides_at_frame_boundaries() {
        let grace = Duration::from_millis(20);
        let mut session = start(64 * 1024, grace, Duration::from_secs(5));
        // Half of a frame each way when the drain begins.
        let up_frame = frame(true, 0x2, &noise(1000, 1), Some([9, 8, 7, 6]));
        let down_frame = frame(true, 0x2, &noise(70_000, 2), None);
        let (up_half, up_rest) = up_frame.split_at(500);
        let (down_half, down_rest) = down_frame.split_at(3);
        session.client.write_all(up_half).await.unwrap();
        session.upstream.write_all(down_half).await.unwrap();
        assert_eq!(
            read_exactly(&mut session.upstream, up_half.len()).await,
            up_half
        );
        assert_eq!(
            read_exactly(&mut session.client, down_half.len()).await,
            down_half
        );

        session.drain();
        tokio::time::sleep(grace * 5).await;
        // Mid-frame: no close yet.
        assert_quiet(&mut session.client).await;
        assert_quiet(&mut session.upstream).await;

        dribble(&mut session.upstream, down_rest).await;
        assert_eq!(
            read_exactly(&mut session.client, down_rest.len()).await,
            down_rest
        );
        assert_eq!(
            read_exactly(&mut session.client, 14).await,
            CLIENT_CLOSE_1001
        );
        assert_quiet(&mut session.upstream).await;

        // The frame's end and the next frame in one read: the close goes
        // between them, and the next frame, after it, is not passed on.
        let mut rest_and_more = up_rest.to_vec();
        rest_and_more.extend(frame(true, 0x1, b"too late", Some([3, 3, 3, 3])));
        session.client.write_all(&rest_and_more).await.unwrap();
        assert_eq!(
            read_exactly(&mut session.upstream, up_rest.len()).await,
            up_rest
        );
        assert_masked_close_1001(&read_exactly(&mut session.upstream, 18).await);

        // Each side answers the close it got; neither answer is passed on,
        // as each side already has a close.
        let reply = close_payload(1001, b"");
        session
            .client
            .write_all(&frame(true, 0x8, &reply, Some([1, 2, 3, 4])))
            .await
            .unwrap();
        session
            .upstream
            .write_all(&frame(true, 0x8, &reply, None))
            .await
            .unwrap();
        assert_eof(&mut session.client).await;
        assert_eof(&mut session.upstream).await;
        drop(session.client);
        drop(session.upstream);
        let end = ended(session.relay).await;
        assert!(
            matches!(end.reason, EndReason::Drained { timed_out: false }),
            "{end:?}"
        );
        assert_eq!(end.client_to_upstream, up_frame.len() as u64);
        assert_eq!(end.upstream_to_client, down_frame.len() as u64);
    }

    #[tokio::test]
    async fn the_session_goes_on_during_the_grace_period() {
        let grace = Duration::from_millis(300);
        let mut session = start(64 * 1024, grace, Duration::from_secs(5));
        session.drain();
        let hello = frame(true, 0x1, b"still here", Some([1, 1, 1, 1]));
        let reply = frame(true, 0x1, b"so am I", None);
        session.client.write_all(&hello).await.unwrap();
        assert_eq!(
            read_exactly(&mut session.upstream, hello.len()).await,
            hello
        );
        session.upstream.write_all(&reply).await.unwrap();
        assert_eq!(read_exactly(&mut session.client, reply.len()).await, reply);
        // Idle at a boundary when the grace period ends: the closes go out
        // at once.
        assert_eq!(
            read_exactly(&mut session.client, 14).await,
            CLIENT_CLOSE_1001
        );
        assert_masked_close_1001(&read_exactly(&mut session.upstream, 18).await);
        // Closing the connections also ends the closing handshake.
        drop(session.client);
        drop(session.upstream);
        let end = ended(session.relay).await;
        assert!(
            matches!(end.reason, EndReason::Drained { timed_out: false }),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_close_goes_through_once() {
        let mut session = start(64 * 1024, Duration::from_secs(60), Duration::from_secs(5));
        let close = frame(true, 0x8, &close_payload(1000, b"bye"), Some([5, 6, 7, 8]));
        let reply = frame(true, 0x8, &close_payload(1000, b""), None);
        session.client.write_all(&close).await.unwrap();
        assert_eq!(
            read_exactly(&mut session.upstream, close.len()).await,
            close
        );
        session.upstream.write_all(&reply).await.unwrap();
        assert_eq!(read_exactly(&mut session.client, reply.len()).await, reply);
        // Both closes went through: the relay shuts both connections down.
        assert_eof(&mut session.client).await;
        assert_eof(&mut session.upstream).await;
        drop(session.client);
        drop(session.upstream);
        let end = ended(session.relay).await;
        assert!(
            matches!(end.reason, EndReason::Closed { by: Side::Client }),
            "{end:?}"
        );
        assert_eq!(end.client_to_upstream, close.len() as u64);
        assert_eq!(end.upstream_to_client, reply.len() as u64);
    }

    #[tokio::test]
    async fn a_drain_does_not_add_to_a_closing_handshake_under_way() {
        let grace = Duration::from_millis(20);
        let mut session = start(64 * 1024, grace, Duration::from_secs(5));
        session.drain();
        // The app closes first; its close reaches the client, whose reply
        // is owed: the relay sends no close of its own either way.
        let close = frame(true, 0x8, &close_payload(1012, b"restart"), None);
        session.upstream.write_all(&close).await.unwrap();
        assert_eq!(read_exactly(&mut session.client, close.len()).await, close);
        tokio::time::sleep(grace * 5).await;
        assert_quiet(&mut session.client).await;
        assert_quiet(&mut session.upstream).await;
        let reply = frame(true, 0x8, &close_payload(1012, b""), Some([4, 3, 2, 1]));
        session.client.write_all(&reply).await.unwrap();
        assert_eq!(
            read_exactly(&mut session.upstream, reply.len()).await,
            reply
        );
        assert_eof(&mut session.client).await;
        assert_eof(&mut session.upstream).await;
        drop(session.client);
        drop(session.upstream);
        let end = ended(session.relay).await;
        assert!(
            matches!(end.reason, EndReason::Drained { timed_out: false }),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn nothing_follows_a_close_to_its_receiver() {
        let mut session = start(64 * 1024, Duration::from_secs(60), Duration::from_secs(5));
        // A close and, against the protocol, more after it in one write.
        let close = frame(true, 0x8, &close_payload(1000, b""), None);
        let mut bytes = close.clone();
        bytes.extend(frame(true, 0x1, b"late", None));
        session.upstream.write_all(&bytes).await.unwrap();
        assert_eq!(read_exactly(&mut session.client, close.len()).await, close);
        assert_quiet(&mut session.client).await;
        drop(session.upstream);
        assert_eof(&mut session.client).await;
        drop(session.client);
        let end = ended(session.relay).await;
        assert!(
            matches!(end.reason, EndReason::Closed { by: Side::Upstream }),
            "{end:?}"
        );
        assert_eq!(end.upstream_to_client, close.len() as u64);
    }

    #[tokio::test]
    async fn eof_on_one_side_shuts_the_other_down() {
        for from_client in [true, false] {
            let mut session = start(64 * 1024, Duration::from_secs(60), Duration::from_secs(5));
            let (sender, receiver) = if from_client {
                (&mut session.client, &mut session.upstream)
            } else {
                (&mut session.upstream, &mut session.client)
            };
            let last = frame(
                true,
                0x2,
                b"last words",
                from_client.then_some([1, 2, 3, 4]),
            );
            sender.write_all(&last).await.unwrap();
            sender.shutdown().await.unwrap();
            assert_eq!(read_exactly(receiver, last.len()).await, last);
            assert_eof(receiver).await;
            // The relay closes its side of the ended connection too.
            assert_eof(sender).await;
            drop(session.client);
            drop(session.upstream);
            let end = ended(session.relay).await;
            let by = if from_client {
                Side::Client
            } else {
                Side::Upstream
            };
            assert!(
                matches!(end.reason, EndReason::Closed { by: ended_by } if ended_by == by),
                "{end:?}"
            );
        }
    }

    #[tokio::test]
    async fn close_wait_bounds_a_side_that_never_finishes() {
        let close_wait = Duration::from_millis(100);
        let mut session = start(64 * 1024, Duration::ZERO, close_wait);
        // The client stops mid-frame and never answers: the app never
        // gets a close, the client gets one, and the relay gives up after
        // `close_wait`.
        let up_frame = frame(true, 0x2, &noise(100, 1), Some([1, 2, 3, 4]));
        session.client.write_all(&up_frame[..50]).await.unwrap();
        assert_eq!(
            read_exactly(&mut session.upstream, 50).await,
            &up_frame[..50]
        );
        session.drain();
        assert_eq!(
            read_exactly(&mut session.client, 14).await,
            CLIENT_CLOSE_1001
        );
        assert_eof(&mut session.upstream).await;
        assert_eof(&mut session.client).await;
        let end = ended(session.relay).await;
        assert!(
            matches!(end.reason, EndReason::Drained { timed_out: true }),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_side_ends_the_session() {
        let mut session = start(64 * 1024, Duration::from_secs(60), Duration::from_secs(5));
        drop(session.upstream);
        // Writing to the app fails (its end is gone) or its EOF is seen
        // first; either way the client's connection is shut down.
        session
            .client
            .write_all(&frame(true, 0x1, b"anyone?", Some([0; 4])))
            .await
            .unwrap();
        assert_eof(&mut session.client).await;
        drop(session.client);
        let end = ended(session.relay).await;
        assert!(
            matches!(
                end.reason,
                EndReason::Closed { by: Side::Upstream }
                    | EndReason::Failed {
                        side: Side::Upstream,
                        ..
                    }
            ),
            "{end:?}"
        );
    }
}
