//! Status codes and the thread-local error text.

use crate::error::ErrorKind;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};

/// The result of every fallible call. Values never change meaning; new ones
/// are only added at the end.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum mf_status {
    /// Success.
    MF_OK = 0,
    /// A NULL pointer, bad UTF-8, malformed JSON or msgpack, or a value out of range.
    MF_ERR_INVALID_ARGUMENT = 1,
    /// The call (or the start-up / connect wait) ran out of time.
    MF_ERR_TIMEOUT = 2,
    /// The worker's handler failed; the text (e.g. "ValueError: ...") is the error message.
    MF_ERR_REMOTE = 3,
    /// The circuit breaker is open: the call was refused without being sent.
    MF_ERR_CIRCUIT_OPEN = 4,
    /// The spawned worker exited; the message has its exit code or signal and last stderr lines.
    MF_ERR_WORKER_EXITED = 5,
    /// A service id was not found in the registry.
    MF_ERR_NOT_FOUND = 6,
    /// A worker with this service id is already running.
    MF_ERR_ALREADY_RUNNING = 7,
    /// The peer sent something that is not valid protocol, or a value with no JSON form.
    MF_ERR_PROTOCOL = 8,
    /// An operating-system or socket failure (e.g. a program that cannot be started).
    MF_ERR_IO = 9,
    /// The handle was closed (also: calls in flight when it was closed).
    MF_ERR_CLOSED = 10,
    /// An internal error was caught at the C boundary; the library stays usable.
    MF_ERR_PANIC = 11,
    /// The caller cancelled the call (`mf_cancel`).
    MF_ERR_CANCELLED = 12,
    /// The worker has no function of that name; the message names it.
    MF_ERR_NO_SUCH_FUNCTION = 13,
}

impl From<ErrorKind> for mf_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => mf_status::MF_ERR_INVALID_ARGUMENT,
            ErrorKind::Timeout => mf_status::MF_ERR_TIMEOUT,
            ErrorKind::Remote => mf_status::MF_ERR_REMOTE,
            ErrorKind::CircuitOpen => mf_status::MF_ERR_CIRCUIT_OPEN,
            ErrorKind::WorkerExited => mf_status::MF_ERR_WORKER_EXITED,
            ErrorKind::NotFound => mf_status::MF_ERR_NOT_FOUND,
            ErrorKind::AlreadyRunning => mf_status::MF_ERR_ALREADY_RUNNING,
            ErrorKind::Protocol => mf_status::MF_ERR_PROTOCOL,
            ErrorKind::Io => mf_status::MF_ERR_IO,
            ErrorKind::Closed => mf_status::MF_ERR_CLOSED,
            ErrorKind::Panic => mf_status::MF_ERR_PANIC,
            ErrorKind::Cancelled => mf_status::MF_ERR_CANCELLED,
            ErrorKind::NoSuchFunction => mf_status::MF_ERR_NO_SUCH_FUNCTION,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A C string of `text`, with any NUL byte replaced so nothing is cut off.
pub(crate) fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\u{FFFD}")).unwrap_or_default()
}

pub(crate) fn set_last_error(text: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = c_string(text));
}

/// The text of the last failure on the calling thread ("" if none).
/// Never NULL. Valid until the next failing call on this thread.
/// Callers whose next call may run on another OS thread (goroutines, async
/// runtimes) should use the error text handed back by the call itself.
#[no_mangle]
pub extern "C" fn mf_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A static, human-readable name for a status ("MF_ERR_TIMEOUT"); never
/// NULL. Takes the status as an integer, so any value is safe to pass: a
/// value this library does not know (from a newer header) is named
/// "MF_ERR_UNKNOWN".
#[no_mangle]
pub extern "C" fn mf_status_name(status: c_int) -> *const c_char {
    status_name(status).as_ptr().cast()
}

/// The NUL-terminated name of a status value.
fn status_name(status: c_int) -> &'static str {
    use mf_status::*;
    const KNOWN: [(mf_status, &str); 14] = [
        (MF_OK, "MF_OK\0"),
        (MF_ERR_INVALID_ARGUMENT, "MF_ERR_INVALID_ARGUMENT\0"),
        (MF_ERR_TIMEOUT, "MF_ERR_TIMEOUT\0"),
        (MF_ERR_REMOTE, "MF_ERR_REMOTE\0"),
        (MF_ERR_CIRCUIT_OPEN, "MF_ERR_CIRCUIT_OPEN\0"),
        (MF_ERR_WORKER_EXITED, "MF_ERR_WORKER_EXITED\0"),
        (MF_ERR_NOT_FOUND, "MF_ERR_NOT_FOUND\0"),
        (MF_ERR_ALREADY_RUNNING, "MF_ERR_ALREADY_RUNNING\0"),
        (MF_ERR_PROTOCOL, "MF_ERR_PROTOCOL\0"),
        (MF_ERR_IO, "MF_ERR_IO\0"),
        (MF_ERR_CLOSED, "MF_ERR_CLOSED\0"),
        (MF_ERR_PANIC, "MF_ERR_PANIC\0"),
        (MF_ERR_CANCELLED, "MF_ERR_CANCELLED\0"),
        (MF_ERR_NO_SUCH_FUNCTION, "MF_ERR_NO_SUCH_FUNCTION\0"),
    ];
    KNOWN
        .iter()
        .find(|(s, _)| *s as c_int == status)
        .map_or("MF_ERR_UNKNOWN\0", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn every_status_has_its_name_and_unknown_values_are_safe() {
        let name = |v: c_int| {
            unsafe { CStr::from_ptr(mf_status_name(v)) }
                .to_str()
                .unwrap()
        };
        assert_eq!(name(mf_status::MF_OK as c_int), "MF_OK");
        assert_eq!(name(mf_status::MF_ERR_TIMEOUT as c_int), "MF_ERR_TIMEOUT");
        assert_eq!(name(mf_status::MF_ERR_PANIC as c_int), "MF_ERR_PANIC");
        assert_eq!(
            name(mf_status::MF_ERR_NO_SUCH_FUNCTION as c_int),
            "MF_ERR_NO_SUCH_FUNCTION"
        );
        for v in [14, 99, -1, c_int::MAX, c_int::MIN] {
            assert_eq!(name(v), "MF_ERR_UNKNOWN", "{v}");
        }
    }
}
