//! The CLI's exit codes, one per kind of outcome a script may act on.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | the function ran and failed (`invoke`) |
//! | 2 | the command line is wrong (usage) |
//! | 3 | not found: no such app, function, queue, key or dead letter |
//! | 4 | throttled or at capacity: retry later |
//! | 5 | the server cannot be reached (or none is running) |
//! | 6 | any other error: refused input, a server error, a local failure |

use std::process::ExitCode;

/// Why a command failed, as its exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NotFound,
    Throttled,
    Unreachable,
}

impl Failure {
    pub fn code(self) -> u8 {
        match self {
            Failure::NotFound => 3,
            Failure::Throttled => 4,
            Failure::Unreachable => 5,
        }
    }
}

/// An error with the kind of failure it is.
#[derive(Debug)]
pub struct Classified {
    pub failure: Failure,
    pub message: String,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Classified {}

/// A failure of `failure`'s kind, saying `message`.
pub fn classified(failure: Failure, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        failure,
        message: message.into(),
    })
}

/// The function ran and failed.
pub const FUNCTION_FAILED: u8 = 1;
/// Anything not classified.
pub const OTHER: u8 = 6;

/// The exit code of a command that ended with `err`.
pub fn code_of(err: &anyhow::Error) -> ExitCode {
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<Classified>())
        .map_or(OTHER, |c| c.failure.code());
    ExitCode::from(code)
}
