//! The one error type of the core. Every failure carries a kind (which the C
//! surface maps to `mf_status`) and a human-readable message.

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidArgument,
    Timeout,
    Remote,
    CircuitOpen,
    WorkerExited,
    NotFound,
    AlreadyRunning,
    Protocol,
    Io,
    Closed,
    Panic,
    /// The caller cancelled the call.
    Cancelled,
    /// The worker has no function of that name.
    NoSuchFunction,
}

/// A failure with its kind and detail text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }

    pub fn closed() -> Self {
        Self::new(ErrorKind::Closed, "the parent is closed")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<zmq::Error> for Error {
    fn from(e: zmq::Error) -> Self {
        Error::io(format!("zeromq: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The explanation added when a spawned program never answered its first
/// heartbeat within the start-up timeout: most often the program is not a
/// worker at all (`/bin/sleep 100`), so say what a worker must do.
///
/// `wait_ms` is the start-up timeout that ran out. Used by
/// `Parent::wait_ready` (spawn mode) to build the whole message, e.g.
/// `worker 'sleep' did not answer within 10000 ms: <this text>`.
pub fn not_a_worker_hint(wait_ms: u128) -> String {
    format!(
        "it is still running but sent nothing back, so it may not be a multifrost worker. \
         A worker reads COMLINK_ZMQ_PORT from its environment, connects a ZeroMQ ROUTER \
         socket to tcp://127.0.0.1:<that port> and echoes heartbeats (any comlink_ipc_v4 \
         worker does: ChildWorker.run() in Python and Node, mf_serve in C, Serve in Go). \
         If it is one but slow to start, raise the start timeout (now {wait_ms} ms)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_says_what_a_worker_must_do() {
        let hint = not_a_worker_hint(10_000);
        assert!(hint.contains("COMLINK_ZMQ_PORT"), "{hint}");
        assert!(hint.contains("may not be a multifrost worker"), "{hint}");
        assert!(hint.contains("10000 ms"), "{hint}");
    }
}
