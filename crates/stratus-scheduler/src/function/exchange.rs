//! What an instance and its Runtime API handlers share: the event in
//! flight and its result, the instance's life, and the tagging of its
//! output with the request it belongs to.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bytes::Bytes;
use stratus_logs::{LogRecord, LogStream, Logs};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::FunctionConfig;
use crate::invocation::{FunctionError, Invocation, ResponseStream, StreamChunk};
use crate::launch::Process;
use crate::output::{LineSink, Output};

/// Most bytes of an invocation's own log lines returned to the caller.
const MAX_CAPTURE: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub(crate) enum State {
    Running,
    Dead(DeathCause),
}

#[derive(Debug, Clone)]
pub(crate) enum DeathCause {
    /// The runtime reported that it could not initialise.
    InitError(FunctionError),
    Exited {
        status: String,
        during_init: bool,
    },
    /// Killed by the kernel at its memory limit.
    OutOfMemory,
    /// Stopped by the platform (timeout, retirement, shutdown).
    Killed,
}

/// What the runtime answered.
#[derive(Debug)]
pub(crate) enum RuntimeResult {
    Response(Bytes),
    Error(FunctionError),
    /// The runtime is streaming its response; `done` says when the post
    /// ended, with the error the runtime reported in its trailers, if any.
    Stream {
        stream: ResponseStream,
        done: oneshot::Receiver<Option<FunctionError>>,
        /// For the pool to end the stream with a timeout's error.
        abort: mpsc::Sender<StreamChunk>,
    },
}

/// An event on its way to the runtime.
pub(crate) struct Dispatch {
    pub invocation: Invocation,
    pub timeout: Duration,
    pub function_arn: String,
    pub dispatched_tx: oneshot::Sender<Instant>,
    pub result_tx: oneshot::Sender<RuntimeResult>,
}

impl Dispatch {
    pub fn new(invocation: Invocation, timeout: Duration, function_arn: String) -> Dispatch {
        // The channels are replaced by `Instance::run`.
        Dispatch {
            invocation,
            timeout,
            function_arn,
            dispatched_tx: oneshot::channel().0,
            result_tx: oneshot::channel().0,
        }
    }
}

struct InFlight {
    request_id: String,
    result_tx: oneshot::Sender<RuntimeResult>,
}

#[derive(Default)]
struct Inner {
    /// Events handed to the runtime and not answered yet.
    in_flight: Vec<InFlight>,
    /// The last answered request ids, to tell a second answer (403) from
    /// an unknown id (400).
    done: VecDeque<String>,
    /// Requests that output lines belong to: those in flight, and those
    /// whose streamed response is still being posted.
    owners: Vec<String>,
    /// Lines kept for the requests that asked for their log, by request id.
    captures: Vec<(String, Vec<String>, usize)>,
}

/// State shared by the instance, its Runtime API handlers and its output reader.
pub(crate) struct Shared {
    pub next_rx: tokio::sync::Mutex<mpsc::Receiver<Dispatch>>,
    pub max_response_bytes: usize,
    /// Most events in flight at once.
    pub concurrency: usize,
    inner: Mutex<Inner>,
    state_tx: watch::Sender<State>,
    /// When the instance was asked for.
    pub started: Instant,
    /// When its process was handed its function.
    pub activated_at: OnceLock<Instant>,
    pub ready_at: OnceLock<Instant>,
    /// Notified when the instance answers a request.
    pub settled: tokio::sync::Notify,
    /// The user's own init as the runtime measured it, when it says.
    pub handler_init_ms: OnceLock<f64>,
    /// The process was made ahead of demand.
    pub prestarted: bool,
    /// The process was made from a loaded template; set once it runs.
    pub from_template: OnceLock<bool>,
    pub process: OnceLock<Arc<Process>>,
    /// The process's stdout and stderr, read by the output task and, to
    /// catch up before a result is reported, by the Runtime API handlers.
    pub output: OnceLock<Arc<Output>>,
    pub instance_id: String,
    config: Arc<FunctionConfig>,
    logs: Arc<dyn Logs>,
}

impl Shared {
    pub fn new(
        instance_id: String,
        config: Arc<FunctionConfig>,
        logs: Arc<dyn Logs>,
        max_response_bytes: usize,
        prestarted: bool,
    ) -> (Arc<Shared>, mpsc::Sender<Dispatch>, watch::Receiver<State>) {
        let concurrency = config.spec.concurrency.max(1) as usize;
        let (dispatch_tx, dispatch_rx) = mpsc::channel(concurrency);
        let (state_tx, state_rx) = watch::channel(State::Running);
        let shared = Arc::new(Shared {
            next_rx: tokio::sync::Mutex::new(dispatch_rx),
            max_response_bytes,
            concurrency,
            inner: Mutex::new(Inner::default()),
            state_tx,
            started: Instant::now(),
            activated_at: OnceLock::new(),
            ready_at: OnceLock::new(),
            settled: tokio::sync::Notify::new(),
            handler_init_ms: OnceLock::new(),
            prestarted,
            from_template: OnceLock::new(),
            process: OnceLock::new(),
            output: OnceLock::new(),
            instance_id,
            config,
            logs,
        });
        (shared, dispatch_tx, state_rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runtime asked for work: initialisation is over.
    pub fn mark_ready(&self, handler_init_ms: Option<f64>) {
        let _ = self.ready_at.set(Instant::now());
        if let Some(ms) = handler_init_ms {
            let _ = self.handler_init_ms.set(ms);
        }
    }

    /// Records `invocation` as in flight; false if the instance already
    /// runs as many events as it may.
    pub fn begin(
        &self,
        invocation: &Invocation,
        result_tx: oneshot::Sender<RuntimeResult>,
    ) -> bool {
        let mut inner = self.lock();
        if inner.in_flight.len() >= self.concurrency {
            return false;
        }
        let id = &invocation.request_id;
        inner.in_flight.push(InFlight {
            request_id: id.clone(),
            result_tx,
        });
        inner.owners.push(id.clone());
        if invocation.want_logs {
            inner.captures.push((id.clone(), Vec::new(), 0));
        }
        true
    }

    pub fn abandon(&self, request_id: &str) {
        let mut inner = self.lock();
        inner.in_flight.retain(|f| f.request_id != request_id);
        inner.owners.retain(|id| id != request_id);
        inner.captures.retain(|(id, ..)| id != request_id);
    }

    /// Completes the in-flight invocation `request_id` with `result`, after
    /// the output written before it has been read and tagged.
    pub fn finish(&self, request_id: &str, result: RuntimeResult) -> Result<(), StatusCode> {
        self.catch_up_output();
        let mut inner = self.lock();
        let Some(at) = inner
            .in_flight
            .iter()
            .position(|f| f.request_id == request_id)
        else {
            return Err(if inner.done.iter().any(|id| id == request_id) {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            });
        };
        let f = inner.in_flight.swap_remove(at);
        // A streamed response's output is still the invocation's until
        // the stream ends (`end_stream`).
        if !matches!(result, RuntimeResult::Stream { .. }) {
            inner.owners.retain(|id| id != request_id);
        }
        let _ = f.result_tx.send(result);
        if inner.done.len() >= 2 * self.concurrency {
            inner.done.pop_front();
        }
        inner.done.push_back(f.request_id);
        drop(inner);
        self.settled.notify_one();
        Ok(())
    }

    /// Reads and tags the output written so far.
    fn catch_up_output(&self) {
        if let Some(output) = self.output.get() {
            output.catch_up(self);
        }
    }

    /// A streamed response has ended: output no longer belongs to it.
    pub fn end_stream(&self, request_id: &str) {
        self.catch_up_output();
        let mut inner = self.lock();
        if !inner.in_flight.iter().any(|f| f.request_id == request_id) {
            inner.owners.retain(|id| id != request_id);
        }
    }

    /// Marks the instance dead (the first cause wins) and kills its processes.
    pub fn die(&self, cause: DeathCause) {
        let changed = self.state_tx.send_if_modified(|state| match state {
            State::Running => {
                *state = State::Dead(cause);
                true
            }
            State::Dead(_) => false,
        });
        if changed && let Some(process) = self.process.get() {
            process.kill();
        }
    }

    /// The lines captured for `request_id`, which asked for them.
    pub fn take_captured(&self, request_id: &str) -> Vec<String> {
        let mut inner = self.lock();
        match inner.captures.iter().position(|(id, ..)| id == request_id) {
            Some(at) => inner.captures.swap_remove(at).1,
            None => Vec::new(),
        }
    }

    pub fn emit(
        &self,
        stream: LogStream,
        request_id: Option<String>,
        message: String,
        fields: Option<serde_json::Value>,
    ) {
        self.logs.append(LogRecord {
            ts_ms: crate::clock::now_ms(),
            app: self.config.app.clone(),
            function: self.config.spec.name.clone(),
            version: self.config.version,
            instance: self.instance_id.clone(),
            request_id,
            stream,
            message,
            fields,
        });
    }
}

/// Starts a line that names the request it belongs to: the byte 0x1E, the
/// request id, then 0x1F. Runtimes that run several events at once mark
/// their lines so; the mark is removed.
const LINE_OWNER_START: char = '\u{1e}';
const LINE_OWNER_END: char = '\u{1f}';

/// The request a marked line names, and the line without its mark.
fn marked(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(LINE_OWNER_START)?;
    let (id, text) = rest.split_once(LINE_OWNER_END)?;
    Some((id, text))
}

impl LineSink for Shared {
    fn line(&self, stream: LogStream, line: String) {
        let (request_id, line) = {
            let mut inner = self.lock();
            // A line marked with a request in flight is that request's; an
            // unmarked one is the only request's, when one alone runs.
            let (owner, line) = match marked(&line) {
                Some((id, text)) if inner.owners.iter().any(|o| o == id) => {
                    (Some(id.to_owned()), text.to_owned())
                }
                _ => match inner.owners.as_slice() {
                    [only] => (Some(only.clone()), line),
                    _ => (None, line),
                },
            };
            if let Some(owner) = &owner
                && let Some((_, lines, bytes)) =
                    inner.captures.iter_mut().find(|(id, ..)| id == owner)
            {
                *bytes += line.len() + 1;
                lines.push(line.clone());
                while *bytes > MAX_CAPTURE && lines.len() > 1 {
                    *bytes -= lines.remove(0).len() + 1;
                }
            }
            (owner, line)
        };
        self.emit(stream, request_id, line, None);
    }
}

#[cfg(test)]
mod tests {
    use super::marked;

    #[test]
    fn a_marked_line_names_its_request() {
        assert_eq!(marked("\u{1e}abc\u{1f}hello"), Some(("abc", "hello")));
        assert_eq!(marked("\u{1e}abc\u{1f}"), Some(("abc", "")));
        assert_eq!(marked("hello"), None);
        assert_eq!(marked("\u{1e}no end"), None);
    }
}
