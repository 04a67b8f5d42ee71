//! An instance's output: its stdout and stderr read into log lines, the
//! same way for functions and services.
//!
//! A reading task ([`Output::read`]) emits complete lines as they come.
//! Anyone else may catch up at once ([`Output::catch_up`]): a function's
//! Runtime API handlers do before they report a result, so a result is
//! never reported before the lines written before it.

use std::io;
use std::sync::{Arc, Mutex};

use stratus_logs::LogStream;
use tokio::net::unix::pipe;

/// Longest log line kept as one record; longer output is split.
pub(crate) const MAX_LINE: usize = 256 * 1024;
/// Most bytes read from one stream in one round.
const MAX_DRAIN: usize = 1024 * 1024;

/// Where the lines go.
pub(crate) trait LineSink: Send + Sync {
    fn line(&self, stream: LogStream, line: String);
}

/// Both output streams of an instance, shared by the reading task and
/// whoever catches up.
pub(crate) struct Output {
    streams: Mutex<[Stream; 2]>,
    pipes: [Arc<pipe::Receiver>; 2],
}

impl Output {
    pub fn new(stdout: pipe::Receiver, stderr: pipe::Receiver) -> Arc<Output> {
        let pipes = [Arc::new(stdout), Arc::new(stderr)];
        Arc::new(Output {
            streams: Mutex::new([
                Stream::new(LogStream::Stdout, pipes[0].clone()),
                Stream::new(LogStream::Stderr, pipes[1].clone()),
            ]),
            pipes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Stream; 2]> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads what both streams hold now, without waiting, and emits every
    /// line, a partial last one too.
    pub fn catch_up(&self, sink: &dyn LineSink) {
        for stream in self.lock().iter_mut() {
            stream.drain(sink, true);
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
            let which = tokio::select! {
                ready = self.pipes[0].readable(), if !ended[0] => (0, ready.is_err()),
                ready = self.pipes[1].readable(), if !ended[1] => (1, ready.is_err()),
            };
            let (index, broken) = which;
            let mut streams = self.lock();
            streams[index].drain(&*sink, broken);
            streams[index].eof |= broken;
        }
        self.catch_up(&*sink);
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

    /// Reads what is available without waiting; emits complete lines, and
    /// the partial last line too when `flush` is set and all was read.
    fn drain(&mut self, sink: &dyn LineSink, flush: bool) {
        let mut chunk = [0u8; 16 * 1024];
        let mut read = 0;
        // A process that writes without pause is read in bounded rounds, so
        // no caller is held here for long; the rest is read next round.
        let mut caught_up = false;
        while !self.eof && read < MAX_DRAIN {
            match self.pipe.try_read(&mut chunk) {
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
        let name = self.name;
        let mut emit = |line: String| sink.line(name, line);
        self.splitter
            .lines((flush && caught_up) || self.eof, &mut emit);
    }
}

/// Cuts bytes into lines: at each newline (a `\r` before it is dropped),
/// and every [`MAX_LINE`] bytes of a line longer than that.
#[derive(Debug, Default)]
pub(crate) struct Splitter {
    buf: Vec<u8>,
}

impl Splitter {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Emits the complete lines held, and with `flush` the rest too.
    pub fn lines(&mut self, flush: bool, emit: &mut dyn FnMut(String)) {
        let mut start = 0;
        let line = |from: usize, to: usize| {
            let bytes = &self.buf[from..to];
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            String::from_utf8_lossy(bytes).into_owned()
        };
        while let Some(pos) = self.buf[start..].iter().position(|b| *b == b'\n') {
            emit(line(start, start + pos));
            start += pos + 1;
        }
        while self.buf.len() - start > MAX_LINE {
            emit(line(start, start + MAX_LINE));
            start += MAX_LINE;
        }
        if flush && start < self.buf.len() {
            emit(line(start, self.buf.len()));
            start = self.buf.len();
        }
        self.buf.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_LINE, Splitter};

    fn split(pieces: &[&[u8]], flush: bool) -> Vec<String> {
        let mut splitter = Splitter::default();
        let mut lines = Vec::new();
        for piece in pieces {
            splitter.push(piece);
            splitter.lines(false, &mut |l| lines.push(l));
        }
        splitter.lines(flush, &mut |l| lines.push(l));
        lines
    }

    #[test]
    fn lines_end_at_newlines_in_any_pieces() {
        assert_eq!(split(&[b"a\r\nb", b"c\n", b"d"], false), ["a", "bc"]);
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
