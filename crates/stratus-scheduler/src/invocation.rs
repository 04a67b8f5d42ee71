//! What goes into an invocation and what comes out.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

/// A request to run a function once.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    /// The event, JSON.
    pub payload: Bytes,
    /// Its place in its trace.
    pub trace: Trace,
    /// The client context (JSON) for `Lambda-Runtime-Client-Context`.
    pub client_context: Option<String>,
    /// Return the invocation's log lines with the outcome.
    pub want_logs: bool,
}

impl Invocation {
    pub fn new(payload: Bytes) -> Invocation {
        Invocation {
            request_id: uuid::Uuid::new_v4().to_string(),
            payload,
            trace: Trace::under(None),
            client_context: None,
            want_logs: false,
        }
    }
}

/// An invocation's place in its trace: the span it runs under (the
/// caller's), and the context its handler is given (`traceparent`,
/// `Lambda-Runtime-Trace-Id`), which is the invocation's `handler` span, so
/// that spans the function makes nest inside it.
#[derive(Debug, Clone)]
pub struct Trace {
    pub parent: Option<stratus_trace::Context>,
    pub handler: stratus_trace::Context,
    /// Spans it follows from without being their child (the producers of
    /// a batch's messages).
    pub links: Vec<stratus_trace::Context>,
}

impl Trace {
    /// Under `parent`, or at the root of a new trace.
    pub fn under(parent: Option<stratus_trace::Context>) -> Trace {
        Trace {
            parent,
            handler: stratus_trace::Tracer::child_or_root(parent.as_ref()),
            links: Vec::new(),
        }
    }
}

/// An error raised by the function or its runtime: the caller's problem to
/// read, reported in the Lambda error shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionError {
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage")]
    pub message: String,
    #[serde(rename = "stackTrace", skip_serializing_if = "Vec::is_empty")]
    pub stack_trace: Vec<String>,
    /// `Handled` when the function reported it, `Unhandled` otherwise.
    #[serde(skip)]
    pub kind: &'static str,
    /// What failed, for those who answer for it (a gateway's status code).
    #[serde(skip)]
    pub class: ErrorClass,
}

/// What an invocation's error is due to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorClass {
    /// The function or its runtime failed, or answered with an error.
    #[default]
    Function,
    /// The function or its runtime did not answer in time.
    Timeout,
    /// The platform could not run it.
    Platform,
}

impl FunctionError {
    pub fn unhandled(error_type: &str, message: impl Into<String>) -> FunctionError {
        FunctionError {
            error_type: error_type.to_owned(),
            message: message.into(),
            stack_trace: Vec::new(),
            kind: "Unhandled",
            class: ErrorClass::Function,
        }
    }

    /// The function did not answer within its timeout (or its runtime
    /// within the init timeout).
    pub fn timeout(error_type: &str, message: impl Into<String>) -> FunctionError {
        FunctionError {
            class: ErrorClass::Timeout,
            ..FunctionError::unhandled(error_type, message)
        }
    }

    /// The platform failed to run the function.
    pub fn platform(error_type: &str, message: impl Into<String>) -> FunctionError {
        FunctionError {
            class: ErrorClass::Platform,
            ..FunctionError::unhandled(error_type, message)
        }
    }

    /// Reads the error body a runtime posted; anything unparsable is kept as text.
    pub fn from_runtime(body: &[u8], header_type: Option<&str>) -> FunctionError {
        #[derive(serde::Deserialize)]
        struct Wire {
            #[serde(rename = "errorType")]
            error_type: Option<String>,
            #[serde(rename = "errorMessage")]
            message: Option<serde_json::Value>,
            #[serde(rename = "stackTrace")]
            stack_trace: Option<serde_json::Value>,
        }
        let kind = if header_type == Some("Handled") {
            "Handled"
        } else {
            "Unhandled"
        };
        match serde_json::from_slice::<Wire>(body) {
            Ok(wire) => FunctionError {
                error_type: wire
                    .error_type
                    .or_else(|| header_type.map(str::to_owned))
                    .unwrap_or_else(|| "Unhandled".to_owned()),
                message: match wire.message {
                    Some(serde_json::Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                },
                stack_trace: match wire.stack_trace {
                    Some(serde_json::Value::Array(items)) => items
                        .into_iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        })
                        .collect(),
                    Some(serde_json::Value::String(s)) => s.lines().map(str::to_owned).collect(),
                    _ => Vec::new(),
                },
                kind,
                class: ErrorClass::Function,
            },
            Err(_) => FunctionError {
                error_type: header_type.unwrap_or("Unhandled").to_owned(),
                message: String::from_utf8_lossy(body).into_owned(),
                stack_trace: Vec::new(),
                kind,
                class: ErrorClass::Function,
            },
        }
    }

    pub fn to_json(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Where an invocation's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Phases {
    /// Waiting for an instance (queue or start).
    pub queue_ms: f64,
    /// Creating the sandbox and starting the process; cold only.
    pub sandbox_ms: Option<f64>,
    /// From the process's start to the runtime's first request for work:
    /// the runtime's own start plus the handler's init. Lambda's "Init
    /// Duration"; cold only.
    pub init_ms: Option<f64>,
    /// The runtime's own start, the init less the handler's; cold only.
    pub runtime_start_ms: Option<f64>,
    /// The user's own import and init code, when the runtime reports it
    /// (the built-in ones do); cold only.
    pub handler_init_ms: Option<f64>,
    /// Whether the instance's process was made ahead of demand; cold only.
    pub prestarted: Option<bool>,
    /// Whether the instance's process was made from a loaded template
    /// rather than started afresh; cold only.
    pub from_template: Option<bool>,
    /// From handing the event to the runtime to its answer.
    pub duration_ms: f64,
    /// CPU time in user and in kernel mode meanwhile, of the whole
    /// instance (all its processes), from its cgroup; where the instance
    /// runs several events at once, theirs together ([`Phases::cpu_scope`]).
    /// `None` without a cgroup of its own (no isolation).
    pub cpu_user_ms: Option<f64>,
    pub cpu_system_ms: Option<f64>,
    /// `invocation`, or `instance` when the function runs several events
    /// at once, so that the CPU time is its instance's.
    pub cpu_scope: Option<&'static str>,
}

/// One piece of a streamed response.
#[derive(Debug)]
pub enum StreamChunk {
    Data(Bytes),
    /// The function finished its response.
    End,
    /// The function failed part-way (its error, a timeout, a crash).
    Failed(FunctionError),
}

/// A response the function streams (the Runtime API's streaming response
/// mode): chunks as the runtime posts them, then `End` or `Failed`. A
/// stream whose channel closes without either was cut off.
#[derive(Debug)]
pub struct ResponseStream {
    /// The `Content-Type` the runtime posted with:
    /// `application/vnd.awslambda.http-integration-response` when the body
    /// starts with an HTTP prelude.
    pub content_type: Option<String>,
    pub body: tokio::sync::mpsc::Receiver<StreamChunk>,
}

/// The `Content-Type` of a streamed body that begins with a JSON prelude
/// (status, headers, cookies) and eight NUL bytes.
pub const HTTP_INTEGRATION_CONTENT_TYPE: &str =
    "application/vnd.awslambda.http-integration-response";

/// The outcome of an invocation that reached a function.
#[derive(Debug)]
pub struct InvokeOutcome {
    pub request_id: String,
    pub version: u32,
    pub instance: String,
    pub cold: bool,
    pub phases: Phases,
    pub max_memory_mb: Option<u64>,
    /// The function's JSON result, or the error it ended with. Empty when
    /// the response is streamed.
    pub result: Result<Bytes, FunctionError>,
    /// The response body, when the function streams it; the invocation
    /// ends when the stream does.
    pub stream: Option<ResponseStream>,
    /// The invocation's own log lines, when asked for.
    pub logs: Vec<String>,
    /// The function's memory size.
    pub memory_mb: u32,
}

impl InvokeOutcome {
    /// Lambda's `REPORT` line for this invocation.
    pub fn report_line(&self) -> String {
        report_line(
            &self.request_id,
            &self.phases,
            self.memory_mb,
            self.max_memory_mb,
        )
    }
}

/// Lambda's `REPORT` line: durations and memory (and the init duration of
/// a cold start).
pub fn report_line(
    request_id: &str,
    phases: &Phases,
    memory_mb: u32,
    max_memory_mb: Option<u64>,
) -> String {
    let billed = phases.duration_ms.ceil().max(1.0) as u64;
    let mut line = format!(
        "REPORT RequestId: {request_id}\tDuration: {:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory_mb} MB",
        phases.duration_ms
    );
    if let Some(used) = max_memory_mb {
        line.push_str(&format!("\tMax Memory Used: {used} MB"));
    }
    if let Some(init) = phases.init_ms {
        line.push_str(&format!("\tInit Duration: {init:.2} ms"));
    }
    line
}

/// Why an invocation did not reach a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvokeError {
    NoSuchFunction {
        app: String,
        function: String,
    },
    /// Every instance is busy and the wait queue is full or waited too long.
    Throttled {
        retry_after: Duration,
        reason: String,
    },
    ShuttingDown,
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvokeError::NoSuchFunction { app, function } => write!(
                f,
                "function {app}/{function} does not exist; `stratus ls` lists the deployed functions"
            ),
            InvokeError::Throttled {
                retry_after,
                reason,
            } => {
                write!(
                    f,
                    "throttled: {reason}; retry after {} s",
                    retry_after.as_secs().max(1)
                )
            }
            InvokeError::ShuttingDown => {
                f.write_str("the server is shutting down; retry against a running server")
            }
        }
    }
}

impl std::error::Error for InvokeError {}

/// Formats a duration as Lambda does in timeout messages: `3.00 s`.
pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
