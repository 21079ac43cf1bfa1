//! Small calls into the C library and libzmq that the rest of the crate
//! needs: clocks, randomness, process liveness, local time, and the
//! process-wide ZeroMQ context.

use crate::error::{Error, Result};

/// The process-wide ZeroMQ context (one libzmq I/O thread).
pub fn zmq_context() -> &'static zmq::Context {
    static CONTEXT: std::sync::OnceLock<zmq::Context> = std::sync::OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

/// The TCP port a socket bound to `*` got.
pub fn bound_port(socket: &zmq::Socket) -> Result<u16> {
    let ep = socket
        .get_last_endpoint()?
        .map_err(|_| Error::io("bound endpoint is not text"))?;
    ep.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::io(format!("cannot read the port of '{ep}'")))
}

/// The current time as float seconds since the Unix epoch.
pub fn realtime_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t` (through the vDSO:
    // no system call); CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// `bytes` as text when it is ASCII (no further check needed), else `None`.
pub fn ascii_str(bytes: &[u8]) -> Option<&str> {
    // SAFETY: ASCII is valid UTF-8.
    bytes
        .is_ascii()
        .then(|| unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// Fills `bytes` from the kernel's CSPRNG; whether it could.
pub fn random_bytes(bytes: &mut [u8]) -> bool {
    // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    n == bytes.len() as isize
}

/// Clock ticks per second (`/proc` times are in these).
pub fn clock_ticks() -> Option<f64> {
    // SAFETY: sysconf has no memory arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(ticks as f64)
}

/// Whether a process with this PID exists (EPERM: it exists but is not ours).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A broken-down local time, as `localtime_r` gives it.
pub struct LocalTime {
    pub year: i32,
    pub month: i32,
    pub day: i32,
    pub hour: i32,
    pub min: i32,
    pub sec: i32,
}

/// `secs` since the epoch as local time.
pub fn local_time(secs: i64) -> LocalTime {
    let secs = secs as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we pass.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    LocalTime {
        year: tm.tm_year + 1900,
        month: tm.tm_mon + 1,
        day: tm.tm_mday,
        hour: tm.tm_hour,
        min: tm.tm_min,
        sec: tm.tm_sec,
    }
}

/// A local time as seconds since the epoch (`mktime`, daylight saving
/// time looked up); `None` when it cannot be represented.
pub fn local_to_epoch(t: &LocalTime) -> Option<i64> {
    // SAFETY: mktime reads and normalises the zeroed struct we fill.
    let secs = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = t.year - 1900;
        tm.tm_mon = t.month - 1;
        tm.tm_mday = t.day;
        tm.tm_hour = t.hour;
        tm.tm_min = t.min;
        tm.tm_sec = t.sec;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    };
    (secs != -1).then_some(secs as i64)
}
