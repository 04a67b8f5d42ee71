//! An instance's output: its stdout and stderr read into log lines, the
//! same way for functions and services.
//!
//! A reading task ([`Output::read`]) emits complete lines as they come.
//! Anyone else may catch up at once ([`Output::catch_up`]): a function's
//! Runtime API handlers do before they report a result, so a result is
//! never reported before the lines written before it.
//!
//! An instance's lines pass a byte budget ([`Bucket`]: the instance's log
//! rate per second, a second's worth in reserve); lines past it are
//! dropped, and a platform line says how many once lines pass again (or
//! the output ends). Reading itself is paced too, at [`READ_FACTOR`] times
//! that rate: past it the reader waits, the pipe fills and the writer
//! blocks, so that an instance that writes without pause costs the server
//! a bounded share of its CPU however fast it writes.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use stratus_logs::LogStream;
use tokio::net::unix::pipe;

/// Longest log line kept as one record; longer output is split.
pub(crate) const MAX_LINE: usize = 256 * 1024;
/// Bytes read from a pipe at a time.
const CHUNK: usize = 16 * 1024;
/// Most bytes read from one stream in one round.
const MAX_DRAIN: usize = 1024 * 1024;
/// How much faster than its log rate an instance's output is read (and
/// what is over the log rate dropped); past it the writer waits.
pub(crate) const READ_FACTOR: u64 = 8;

/// Where the lines go.
pub(crate) trait LineSink: Send + Sync {
    fn line(&self, stream: LogStream, line: String);
}

/// Both output streams of an instance, shared by the reading task and
/// whoever catches up.
pub(crate) struct Output {
    streams: Mutex<[Stream; 2]>,
    pipes: [Arc<pipe::Receiver>; 2],
    /// The budget of lines kept.
    bucket: Mutex<Bucket>,
    /// The budget of bytes read.
    reading: Mutex<Bucket>,
}

impl Output {
    /// Output read from `stdout` and `stderr`, at most `rate` bytes of
    /// lines per second.
    pub fn new(stdout: pipe::Receiver, stderr: pipe::Receiver, rate: u64) -> Arc<Output> {
        let pipes = [Arc::new(stdout), Arc::new(stderr)];
        Arc::new(Output {
            streams: Mutex::new([
                Stream::new(LogStream::Stdout, pipes[0].clone()),
                Stream::new(LogStream::Stderr, pipes[1].clone()),
            ]),
            pipes,
            bucket: Mutex::new(Bucket::new(rate, Instant::now())),
            reading: Mutex::new(Bucket::new(
                rate.saturating_mul(READ_FACTOR),
                Instant::now(),
            )),
        })
    }

    /// Passes `line` on to `sink` within the budget; a line dropped is
    /// never made into a string.
    fn emit(&self, sink: &dyn LineSink, stream: LogStream, line: &[u8]) {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        match bucket.admit(Instant::now(), line.len()) {
            Admitted::No => {}
            Admitted::Yes(dropped) => {
                drop(bucket);
                if let Some(dropped) = dropped {
                    sink.line(LogStream::Platform, dropped.message());
                }
                sink.line(stream, String::from_utf8_lossy(line).into_owned());
            }
        }
    }

    /// How many bytes may be read now; 0: wait [`Bucket::until_available`].
    fn readable_bytes(&self) -> usize {
        let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        reading.available(Instant::now()).min(MAX_DRAIN)
    }

    fn charge_read(&self, bytes: usize) {
        let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        reading.take(Instant::now(), bytes);
    }

    /// Says what the budget dropped that nothing has said yet.
    fn report_dropped(&self, sink: &dyn LineSink) {
        let dropped = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_dropped();
        if let Some(dropped) = dropped {
            sink.line(LogStream::Platform, dropped.message());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Stream; 2]> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads what both streams hold now, without waiting, and emits every
    /// line, a partial last one too.
    pub fn catch_up(&self, sink: &dyn LineSink) {
        for stream in self.lock().iter_mut() {
            stream.drain(self, sink, true, MAX_DRAIN);
        }
    }

    /// Reads both streams line by line until both close.
    pub async fn read(self: Arc<Self>, sink: Arc<dyn LineSink>) {
        loop {
            let ended = {
                let streams = self.lock();
                [streams[0].eof, streams[1].eof]
            };
            if ended == [true, true] {
                break;
            }
            // Over its reading budget: the writer waits, until a chunk's
            // worth may be read (reads of a few bytes cost as much).
            let pause = {
                let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
                reading.until_available(Instant::now(), CHUNK)
            };
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
                continue;
            }
            let which = tokio::select! {
                ready = self.pipes[0].readable(), if !ended[0] => (0, ready.is_err()),
                ready = self.pipes[1].readable(), if !ended[1] => (1, ready.is_err()),
            };
            let (index, broken) = which;
            let limit = self.readable_bytes().max(1);
            let mut streams = self.lock();
            streams[index].drain(&self, &*sink, broken, limit);
            streams[index].eof |= broken;
        }
        self.catch_up(&*sink);
        self.report_dropped(&*sink);
    }
}

struct Stream {
    name: LogStream,
    pipe: Arc<pipe::Receiver>,
    splitter: Splitter,
    eof: bool,
}

impl Stream {
    fn new(name: LogStream, pipe: Arc<pipe::Receiver>) -> Stream {
        Stream {
            name,
            pipe,
            splitter: Splitter::default(),
            eof: false,
        }
    }

    /// Reads what is available without waiting, at most about `limit`
    /// bytes; emits complete lines, and the partial last line too when
    /// `flush` is set and all was read.
    fn drain(&mut self, output: &Output, sink: &dyn LineSink, flush: bool, limit: usize) {
        let mut chunk = [0u8; CHUNK];
        let mut read = 0;
        // A process that writes without pause is read in bounded rounds, so
        // no caller is held here for long; the rest is read next round.
        let mut caught_up = false;
        while !self.eof && read < limit {
            let want = (limit - read).min(chunk.len());
            match self.pipe.try_read(&mut chunk[..want]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.splitter.push(&chunk[..n]);
                    read += n;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    caught_up = true;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.eof = true,
            }
        }
        output.charge_read(read);
        let name = self.name;
        let mut emit = |line: &[u8]| output.emit(sink, name, line);
        self.splitter
            .lines((flush && caught_up) || self.eof, &mut emit);
    }
}

/// Cuts bytes into lines: at each newline (a `\r` before it is dropped),
/// and every [`MAX_LINE`] bytes of a line longer than that.
#[derive(Debug, Default)]
pub(crate) struct Splitter {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline: each byte is looked
    /// at once, however small the pieces it comes in.
    scanned: usize,
}

impl Splitter {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Emits the complete lines held, and with `flush` the rest too.
    pub fn lines(&mut self, flush: bool, emit: &mut dyn FnMut(&[u8])) {
        let mut start = 0;
        let mut from = self.scanned;
        let buf = &self.buf;
        let line = |from: usize, to: usize| {
            let bytes = &buf[from..to];
            bytes.strip_suffix(b"\r").unwrap_or(bytes)
        };
        while let Some(pos) = buf[from..].iter().position(|b| *b == b'\n') {
            emit(line(start, from + pos));
            start = from + pos + 1;
            from = start;
        }
        while buf.len() - start > MAX_LINE {
            emit(line(start, start + MAX_LINE));
            start += MAX_LINE;
        }
        if flush && start < buf.len() {
            emit(line(start, buf.len()));
            start = buf.len();
        }
        self.buf.drain(..start);
        // What is left holds no newline.
        self.scanned = self.buf.len();
    }
}

/// An instance's byte budget for log lines: `rate` bytes a second, up to a
/// second's worth saved up. A line longer than that passes when the budget
/// is full, and leaves a debt.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: u64,
    tokens: i64,
    at: Instant,
    dropped: Dropped,
}

/// Lines dropped since the last report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped {
    lines: u64,
    bytes: u64,
    rate: u64,
}

impl Dropped {
    fn message(&self) -> String {
        format!(
            "stratus: {} lines ({} bytes) of output dropped: over this instance's log rate of {} bytes per second (--instance-log-rate)",
            self.lines, self.bytes, self.rate
        )
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// Pass the line, after reporting what was dropped before it.
    Yes(Option<Dropped>),
    No,
}

impl Bucket {
    pub fn new(rate: u64, now: Instant) -> Bucket {
        Bucket {
            rate,
            tokens: rate as i64,
            at: now,
            dropped: Dropped {
                rate,
                ..Dropped::default()
            },
        }
    }

    /// Earns what the time since the last look is worth.
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate as f64;
        // Only whole bytes earned move the clock: many looks in quick
        // succession must not each round their share away.
        if earned >= 1.0 {
            self.tokens = (self.tokens + earned as i64).min(self.rate as i64);
            self.at = now;
        }
    }

    /// The bytes that may pass now.
    pub fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        self.tokens.max(0) as usize
    }

    /// Spends `bytes`, into debt if need be.
    pub fn take(&mut self, now: Instant, bytes: usize) {
        self.refill(now);
        self.tokens -= bytes as i64;
    }

    /// How long until `bytes` (at most a second's worth) may pass, if
    /// they may not now.
    pub fn until_available(&mut self, now: Instant, bytes: usize) -> Option<std::time::Duration> {
        self.refill(now);
        let want = (bytes as i64).min(self.rate as i64).max(1);
        (self.tokens < want && self.rate > 0).then(|| {
            std::time::Duration::from_secs_f64((want - self.tokens) as f64 / self.rate as f64)
        })
    }

    pub fn admit(&mut self, now: Instant, bytes: usize) -> Admitted {
        let full = self.rate as i64;
        self.refill(now);
        if self.tokens >= (bytes as i64).min(full) {
            self.tokens -= bytes as i64;
            Admitted::Yes(self.take_dropped())
        } else {
            self.dropped.lines += 1;
            self.dropped.bytes += bytes as u64;
            Admitted::No
        }
    }

    fn take_dropped(&mut self) -> Option<Dropped> {
        (self.dropped.lines > 0).then(|| {
            std::mem::replace(
                &mut self.dropped,
                Dropped {
                    rate: self.rate,
                    ..Dropped::default()
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Admitted, Bucket, MAX_LINE, Splitter};
    use std::time::{Duration, Instant};

    #[test]
    fn the_budget_passes_its_rate_and_says_what_it_dropped() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(1000, t0);
        assert_eq!(bucket.admit(t0, 600), Admitted::Yes(None));
        assert_eq!(bucket.admit(t0, 300), Admitted::Yes(None));
        assert_eq!(bucket.admit(t0, 300), Admitted::No);
        // What is left passes, after saying what was dropped.
        let Admitted::Yes(Some(dropped)) = bucket.admit(t0, 50) else {
            panic!("what is left passes");
        };
        assert_eq!((dropped.lines, dropped.bytes), (1, 300));
        assert!(dropped.message().contains("1 lines (300 bytes)"));
        assert_eq!(bucket.admit(t0, 100), Admitted::No);
        assert_eq!(bucket.admit(t0, 100), Admitted::No);
        // Half a second earns half the rate back.
        let t1 = t0 + Duration::from_millis(500);
        let Admitted::Yes(Some(dropped)) = bucket.admit(t1, 400) else {
            panic!("the budget refilled");
        };
        assert_eq!((dropped.lines, dropped.bytes), (2, 200));
        // Never more than a second's worth saved up; a longer line passes
        // when the budget is full, and leaves a debt.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(bucket.admit(t2, 5000), Admitted::Yes(None));
        assert_eq!(bucket.admit(t2 + Duration::from_secs(1), 10), Admitted::No);
    }

    #[test]
    fn reading_past_its_budget_waits_for_it() {
        let t0 = Instant::now();
        let mut reading = Bucket::new(1000, t0);
        assert_eq!(reading.available(t0), 1000);
        assert_eq!(reading.until_available(t0, 100), None);
        // A catch-up may read past it, into debt.
        reading.take(t0, 1500);
        assert_eq!(reading.available(t0), 0);
        let pause = reading.until_available(t0, 100).expect("in debt");
        assert_eq!(pause, Duration::from_millis(600));
        assert_eq!(reading.until_available(t0 + pause, 100), None);
        assert_eq!(reading.available(t0 + pause), 100);
        // Never more than a second's worth is waited for.
        reading.take(t0 + pause, 100);
        assert_eq!(
            reading.until_available(t0 + pause, 5000),
            Some(Duration::from_secs(1))
        );
    }

    fn split(pieces: &[&[u8]], flush: bool) -> Vec<String> {
        let mut splitter = Splitter::default();
        let mut lines = Vec::new();
        for piece in pieces {
            splitter.push(piece);
            splitter.lines(false, &mut |l| {
                lines.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        splitter.lines(flush, &mut |l| {
            lines.push(String::from_utf8_lossy(l).into_owned())
        });
        lines
    }

    #[test]
    fn lines_end_at_newlines_in_any_pieces() {
        assert_eq!(split(&[b"a\r\nb", b"c\n", b"d"], false), ["a", "bc"]);
        assert_eq!(
            split(&[b"ab", b"c", b"d\ne", b"f\ng"], true),
            ["abcd", "ef", "g"]
        );
        assert_eq!(split(&[b"a\r\nb", b"c\n", b"d"], true), ["a", "bc", "d"]);
        assert_eq!(split(&[b"\n\n"], false), ["", ""]);
    }

    #[test]
    fn long_lines_are_cut_at_the_limit() {
        let long = vec![b'x'; MAX_LINE * 2 + 3];
        let lines = split(&[&long], true);
        let lens: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 3]);
    }
}
