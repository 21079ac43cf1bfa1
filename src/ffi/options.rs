//! `mf_options`: settings for `mf_spawn` and `mf_connect`.

use super::error::mf_status;
use super::{guard, text};
use crate::error::{Error, Result};
use crate::options::Options;
use std::ffi::c_char;

/// Options for a parent. Created with `mf_options_new`, freed with
/// `mf_options_free`. `mf_spawn`/`mf_connect` copy what they need, so the
/// options may be freed or reused right after. Not thread-safe: one thread
/// at a time may change an options object.
pub struct mf_options(pub(crate) Options);

/// New options with the defaults: timeout 30000 ms, namespace "default",
/// heartbeat 5000/3000/3, breaker 5 failures / 5000 ms, no auto-restart,
/// start-up wait 10000 ms, connect wait 5000 ms, shutdown grace 2000 ms,
/// bind host 127.0.0.1. Never NULL (aborts only if memory is exhausted).
#[no_mangle]
pub extern "C" fn mf_options_new() -> *mut mf_options {
    Box::into_raw(Box::new(mf_options(Options::default())))
}

/// Frees options. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn mf_options_free(o: *mut mf_options) {
    super::guard_void(|| {
        if !o.is_null() {
            drop(Box::from_raw(o));
        }
    });
}

unsafe fn with(o: *mut mf_options, f: impl FnOnce(&mut Options) -> Result<()>) -> mf_status {
    guard(|| {
        f(&mut o
            .as_mut()
            .ok_or_else(|| Error::invalid("options is NULL"))?
            .0)
    })
}

/// Timeout for calls that pass timeout_ms 0. `ms` > 0, else MF_ERR_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_default_timeout(o: *mut mf_options, ms: i64) -> mf_status {
    with(o, |o| o.set_default_timeout(ms))
}

/// Namespace sent with every call (a worker drops calls for another namespace).
/// Non-empty UTF-8, else MF_ERR_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_namespace(
    o: *mut mf_options,
    ns: *const c_char,
) -> mf_status {
    with(o, |o| o.set_namespace(text(ns, "namespace")?))
}

/// Heartbeat every `interval_ms` (0 = off), each answered within
/// `timeout_ms`; `max_misses` misses in a row count as one failure and mark
/// the worker unhealthy, and a spawned worker is then stopped as hung
/// (SIGTERM, SIGKILL after the shutdown grace) and restarted if
/// auto-restart is on. With heartbeats on, timeout and misses must be > 0.
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_heartbeat(
    o: *mut mf_options,
    interval_ms: u32,
    timeout_ms: u32,
    max_misses: u32,
) -> mf_status {
    with(o, |o| o.set_heartbeat(interval_ms, timeout_ms, max_misses))
}

/// Circuit breaker: opens after `threshold` (> 0) consecutive failures
/// (worker exits, heartbeat loss; remote errors when asked); after
/// `cooldown_ms` one probe call is let through. Timeouts and cancels are
/// not failures: a slow worker is not a broken one (one that hangs misses
/// heartbeats; one whose handler runs past the cancel grace is stopped).
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_breaker(
    o: *mut mf_options,
    threshold: u32,
    cooldown_ms: u32,
) -> mf_status {
    with(o, |o| o.set_breaker(threshold, cooldown_ms))
}

/// Whether a remote (handler) error, MF_ERR_REMOTE, counts as a breaker
/// failure (default 0 = no). A missing function (MF_ERR_NO_SUCH_FUNCTION)
/// never does: the worker that says so is healthy.
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_breaker_counts_remote_errors(
    o: *mut mf_options,
    on: bool,
) -> mf_status {
    with(o, |o| {
        o.breaker_counts_remote_errors = on;
        Ok(())
    })
}

/// Restart a spawned worker that exited, up to `max_restarts` times, with
/// back-off (100 ms doubling, at most 6.4 s; 100 ms again after a worker
/// that ran 10 s). 0 = off (the default).
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_auto_restart(
    o: *mut mf_options,
    max_restarts: u32,
) -> mf_status {
    with(o, |o| {
        o.auto_restart = max_restarts;
        Ok(())
    })
}

/// How long `mf_spawn` waits for the worker's first answer (> 0; default 10000).
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_start_timeout(o: *mut mf_options, ms: i64) -> mf_status {
    with(o, |o| o.set_start_timeout(ms))
}

/// How long `mf_connect` waits for a service or endpoint (> 0; default 5000).
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_connect_timeout(o: *mut mf_options, ms: i64) -> mf_status {
    with(o, |o| o.set_connect_timeout(ms))
}

/// How long closing waits for a spawned worker to exit after SIGTERM before
/// SIGKILL (>= 0; default 2000).
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_shutdown_grace(o: *mut mf_options, ms: i64) -> mf_status {
    with(o, |o| o.set_shutdown_grace(ms))
}

/// The worker's name in log lines (default: the program's file name).
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_name(o: *mut mf_options, name: *const c_char) -> mf_status {
    with(o, |o| o.set_name(text(name, "name")?))
}

/// The interface a spawning parent binds (default "127.0.0.1"). Any other
/// value exposes an unauthenticated port and logs a warning.
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_bind_host(
    o: *mut mf_options,
    host: *const c_char,
) -> mf_status {
    with(o, |o| o.set_bind_host(text(host, "host")?))
}

/// How long the handler of a cancelled or timed-out call may run on in a
/// spawned worker before the worker is stopped (SIGTERM, then SIGKILL after
/// the shutdown grace): its other calls in flight then end with
/// MF_ERR_WORKER_EXITED, and it is restarted if auto-restart is on.
/// `ms` >= 0; default 2000; 0 = never stop it. Connect-mode workers are
/// never stopped (they are only sent `cancel`).
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_cancel_grace(o: *mut mf_options, ms: i64) -> mf_status {
    with(o, |o| o.set_cancel_grace(ms))
}

/// How many items of a stream (`mf_stream_open`) the worker may send ahead
/// of what the caller took (> 0): the parent then holds at most this many
/// items of a stream, and the worker's yield waits for more credit. Unset,
/// a stream's window starts at 16 items and widens for small items (up to
/// 256 items or 1 MiB of them, whichever is fewer), and never holds more
/// than 16 items or 1 MiB, whichever is more.
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_stream_credit(o: *mut mf_options, n: u32) -> mf_status {
    with(o, |o| o.set_stream_credit(n))
}

/// How many copies of the program `mf_spawn` runs (default 1; 1..=256): a
/// pool. `mf_spawn` returns once every copy has answered, or fails and
/// stops them all. Each call (every form, streams too) goes to the worker
/// with the fewest calls in flight among those that are up; each worker
/// is supervised on its own (heartbeats, hang and exit detection, restart
/// with back-off), so a crash ends only the calls that were in it. The
/// circuit breaker counts the failures of the pool as a whole: any
/// worker's success resets it, and while it is open every call is refused.
/// `mf_connect` refuses more than 1 (one service per id).
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_workers(o: *mut mf_options, n: u32) -> mf_status {
    with(o, |o| o.set_workers(n))
}

/// After `n` calls a spawned worker is recycled (default 0 = never): it
/// takes no new call (those wait for its successor, or go to another
/// worker of the pool), its calls in flight finish, then it is stopped
/// and started again. No call fails for it; a call that never ends (a
/// stream that is never closed) holds the recycle back. Stats count
/// `recycles`.
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_max_calls_per_worker(
    o: *mut mf_options,
    n: u64,
) -> mf_status {
    with(o, |o| {
        o.max_calls_per_worker = n;
        Ok(())
    })
}

/// Whether a spawned worker is offered the private link (default 1 = yes):
/// a worker built on this library then talks to its parent over a Unix
/// socket pair made at spawn instead of the protocol's TCP connection,
/// which costs much less per call. Workers of other implementations
/// ignore the offer and connect as the protocol says either way.
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_private_link(o: *mut mf_options, on: bool) -> mf_status {
    with(o, |o| {
        o.private_link = on;
        Ok(())
    })
}

/// Largest message accepted from the worker (>= 1024; default 64 MiB).
/// A larger reply is never decoded: its call fails with MF_ERR_PROTOCOL
/// and a message giving both sizes, and the connection goes on. The
/// private link skips it unread; over ZeroMQ it is read up to four times
/// this size, and above that libzmq drops the connection.
#[no_mangle]
pub unsafe extern "C" fn mf_options_set_max_message_size(
    o: *mut mf_options,
    bytes: i64,
) -> mf_status {
    with(o, |o| o.set_max_message_size(bytes))
}
