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
