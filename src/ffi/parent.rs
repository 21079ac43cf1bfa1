//! `mf_parent`: a connection to one worker, spawned or reached.

use super::buffer::{mf_buffer, string_into_raw};
use super::error::{c_string, mf_status};
use super::options::mf_options;
use super::{arc_borrow, arc_into_handle, arc_release, bytes, guard, out_ptr, text};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::parent::{Done, Outcome, Parent};
use std::ffi::{c_char, c_void};
use std::sync::Arc;

/// A connection to one worker, or to a pool of copies of one program
/// (`mf_options_set_workers`). Created by `mf_spawn` or `mf_connect`,
/// released by `mf_parent_close`. Thread-safe: any number of threads may
/// call on it at once, and `mf_parent_close` may run while other threads
/// are inside calls on it (those calls end with MF_ERR_CLOSED); it must not
/// run concurrently with the *start* of another call on the same handle,
/// unless that thread calls through a reference of its own
/// (`mf_parent_retain`).
pub struct mf_parent(Parent);

impl mf_parent {
    pub(crate) fn inner(&self) -> &Parent {
        &self.0
    }
}

/// Called once when an `mf_call_async` call ends, on the parent's driver
/// thread (the one library thread that owns the connection), on the
/// thread inside `mf_parent_close` for calls that the close ends, or on
/// the thread inside `mf_cancel` for the call it cancels. It must
/// return quickly (every other call of this parent waits while it runs),
/// must not close this parent, and may start calls on it only with the
/// async forms (`mf_call` and `mf_call_json` there return
/// MF_ERR_INVALID_ARGUMENT instead of waiting forever).
/// On MF_OK `result`/`result_len` hold the msgpack result and
/// `error_message` is NULL; otherwise `result` is NULL and `error_message`
/// says why. Both pointers are valid only during the callback.
pub type mf_completion = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        status: mf_status,
        result: *const u8,
        result_len: usize,
        error_message: *const c_char,
    ),
>;

unsafe fn options_of(opts: *const mf_options) -> Options {
    opts.as_ref().map(|o| o.0.clone()).unwrap_or_default()
}

/// Collects a NULL-terminated argument array.
unsafe fn arg_list(args: *const *const c_char) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if args.is_null() {
        return Ok(out);
    }
    for i in 0.. {
        let p = *args.add(i);
        if p.is_null() {
            break;
        }
        if i >= 4096 {
            return Err(Error::invalid(
                "more than 4096 arguments (is the array NULL-terminated?)",
            ));
        }
        out.push(text(p, &format!("args[{i}]"))?.to_owned());
    }
    Ok(out)
}

/// Starts `program` as a worker and returns when it has answered a heartbeat
/// (with `mf_options_set_workers`, that many copies, when every one has
/// answered; if one cannot start, all are stopped and its error returned).
///
/// `program`: a path, or a name looked up in PATH. A script is started
/// through its interpreter: program "python3", args {"worker.py", "--worker", NULL}.
/// `args`: NULL-terminated arguments after the program (NULL = none).
/// `opts`: NULL = defaults; copied, so it may be freed right after.
/// `out`: receives the handle, written only on MF_OK.
///
/// Errors: MF_ERR_INVALID_ARGUMENT (NULL/UTF-8), MF_ERR_IO (the program
/// cannot be started; the message names it), MF_ERR_WORKER_EXITED (it
/// exited before answering; exit status and last stderr lines in the
/// message), MF_ERR_TIMEOUT (no answer within the start-up timeout).
#[no_mangle]
pub unsafe extern "C" fn mf_spawn(
    program: *const c_char,
    args: *const *const c_char,
    opts: *const mf_options,
    out: *mut *mut mf_parent,
) -> mf_status {
    guard(|| {
        let out = out_ptr(out)?;
        let program = text(program, "program")?;
        let args = arg_list(args)?;
        let parent = Parent::spawn(program, &args, options_of(opts))?;
        *out = arc_into_handle(mf_parent(parent));
        Ok(())
    })
}

/// Connects to a running worker and returns when it has answered a heartbeat.
///
/// `target`: a service id, looked up in `$HOME/.multifrost/services.json`
/// (polled until the connect timeout, default 5000 ms; if the service later
/// restarts on a new port it is found again after the next failure), or an
/// endpoint "tcp://host:port" for a worker bound there, possibly on another
/// machine. `opts`: NULL = defaults. `out`: written only on MF_OK.
/// Errors: MF_ERR_INVALID_ARGUMENT (also for workers > 1: one service per
/// id), MF_ERR_NOT_FOUND (no live entry for the id; the message names it),
/// MF_ERR_TIMEOUT (nobody answered in time).
#[no_mangle]
pub unsafe extern "C" fn mf_connect(
    target: *const c_char,
    opts: *const mf_options,
    out: *mut *mut mf_parent,
) -> mf_status {
    guard(|| {
        let out = out_ptr(out)?;
        let target = text(target, "target")?;
        let parent = Parent::connect(target, options_of(opts))?;
        *out = arc_into_handle(mf_parent(parent));
        Ok(())
    })
}

/// Calls `function` and blocks until its result. Any thread.
///
/// `args`/`args_len`: one msgpack array (NULL with length 0 = no arguments).
/// `timeout_ms` > 0: that limit; 0: the parent's default (30000 unless set);
/// < 0: no limit. `out`: receives the msgpack result, written only on MF_OK;
/// free it with `mf_buffer_free`.
///
/// Errors: MF_ERR_INVALID_ARGUMENT, MF_ERR_TIMEOUT (the late reply is
/// dropped), MF_ERR_REMOTE (the handler failed; `mf_last_error` has its
/// text, e.g. "ValueError: ..."), MF_ERR_CIRCUIT_OPEN, MF_ERR_WORKER_EXITED,
/// MF_ERR_CLOSED.
#[no_mangle]
pub unsafe extern "C" fn mf_call(
    p: *mut mf_parent,
    function: *const c_char,
    args: *const u8,
    args_len: usize,
    timeout_ms: i64,
    out: *mut mf_buffer,
) -> mf_status {
    guard(|| {
        let out = out_ptr(out)?;
        let parent = arc_borrow(p.cast_const(), "parent")?;
        let function = text(function, "function")?;
        let args = args_or_empty(bytes(args, args_len, "args")?);
        let reply = parent.0.call(function, args, timeout_ms)?;
        *out = mf_buffer::from_reply(reply);
        Ok(())
    })
}

pub(crate) fn args_or_empty(args: &[u8]) -> &[u8] {
    if args.is_empty() {
        &[0x90]
    } else {
        args
    }
}

/// Like `mf_call` with JSON text for arguments and result.
///
/// `args_json`: a JSON array. JSON maps to msgpack as: null, true/false,
/// integers exactly (any value in int64 ∪ uint64, e.g. -9007199254740993
/// survives; larger ones → MF_ERR_INVALID_ARGUMENT, never rounded), other
/// numbers as float64, strings as str, arrays and objects as array and map.
/// Results map back the same way, plus: bin → base64 string, NaN/±Infinity
/// → null, non-string scalar map keys → their JSON text as the key, array/map keys and
/// ext values → MF_ERR_PROTOCOL.
/// `out`: a NUL-terminated JSON string, written only on MF_OK; free it with
/// `mf_string_free`.
#[no_mangle]
pub unsafe extern "C" fn mf_call_json(
    p: *mut mf_parent,
    function: *const c_char,
    args_json: *const c_char,
    timeout_ms: i64,
    out: *mut *mut c_char,
) -> mf_status {
    guard(|| {
        let out = out_ptr(out)?;
        let parent = arc_borrow(p.cast_const(), "parent")?;
        let function = text(function, "function")?;
        let args = crate::json::args_to_msgpack(text(args_json, "args_json")?)?;
        let reply = parent.0.call(function, &args, timeout_ms)?;
        let json = crate::json::from_msgpack(reply.bytes())?;
        *out = string_into_raw(json);
        Ok(())
    })
}

/// The C callback's signature, without the Option.
type CompletionFn = unsafe extern "C" fn(*mut c_void, mf_status, *const u8, usize, *const c_char);

/// Runs an `mf_call_async` callback: `cb` and `user` are the two context
/// words of a `Done::Plain` (the callback pointer and the user data, handed
/// over by the caller for use on the driver thread).
fn run_completion(cb: usize, user: usize, outcome: Outcome) {
    // SAFETY: `cb` was made from a non-null `CompletionFn` in mf_call_async.
    let cb: CompletionFn = unsafe { std::mem::transmute::<usize, CompletionFn>(cb) };
    let user = user as *mut c_void;
    // SAFETY: the caller promised a callback that may run on any thread.
    unsafe {
        match outcome {
            Ok(reply) => {
                let r = reply.bytes();
                cb(
                    user,
                    mf_status::MF_OK,
                    r.as_ptr(),
                    r.len(),
                    std::ptr::null(),
                );
            }
            Err(e) => {
                let text = c_string(&e.message);
                cb(user, e.kind.into(), std::ptr::null(), 0, text.as_ptr());
            }
        }
    }
}

/// Starts a call without waiting; `cb` runs exactly once when it ends (see
/// `mf_completion`). Arguments and `timeout_ms` as for `mf_call`. Any thread.
/// When this returns anything but MF_OK the call was not started and `cb`
/// is never run.
#[no_mangle]
pub unsafe extern "C" fn mf_call_async(
    p: *mut mf_parent,
    function: *const c_char,
    args: *const u8,
    args_len: usize,
    timeout_ms: i64,
    cb: mf_completion,
    user_data: *mut c_void,
) -> mf_status {
    mf_call_start(
        p,
        function,
        args,
        args_len,
        timeout_ms,
        cb,
        user_data,
        std::ptr::null_mut(),
    )
}

/// `mf_call_async` that also writes the call's id to `*call_id` (when
/// `call_id` is not NULL) before the call is sent, so before its completion
/// can run, for `mf_cancel`. Ids are never 0 and never reused by a parent.
/// When this returns anything but MF_OK, `*call_id` is not written.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // mf_call_async's, and the id's place
pub unsafe extern "C" fn mf_call_start(
    p: *mut mf_parent,
    function: *const c_char,
    args: *const u8,
    args_len: usize,
    timeout_ms: i64,
    cb: mf_completion,
    user_data: *mut c_void,
    call_id: *mut u64,
) -> mf_status {
    guard(|| {
        let parent = arc_borrow(p.cast_const(), "parent")?;
        let function = text(function, "function")?;
        let args = args_or_empty(bytes(args, args_len, "args")?);
        let cb = cb.ok_or_else(|| Error::invalid("callback is NULL"))?;
        let done = Done::Plain(run_completion, cb as usize, user_data as usize);
        parent
            .0
            .call_numbered(function, args, timeout_ms, done, |id| write_id(call_id, id))
    })
}

/// Writes a call's id where the caller asked (NULL: nowhere).
///
/// # Safety
/// `call_id` is NULL or points to a writable `uint64_t`.
pub(crate) unsafe fn write_id(call_id: *mut u64, id: u64) {
    if let Some(out) = call_id.as_mut() {
        *out = id;
    }
}

/// Cancels call `call_id` of this parent (from `mf_call_start` or
/// `mf_call_queued_start`). If it is still in flight it ends at once with
/// MF_ERR_CANCELLED (its completion runs on this thread before this
/// returns, or its event is queued), and the worker is sent `cancel`: a
/// handler that watches for it (`mf_reply_cancelled`,
/// `mf_reply_on_cancel`) can stop. A spawned worker whose handler is still
/// running after the cancel grace (`mf_options_set_cancel_grace`) is
/// stopped and, with auto-restart, restarted. A call that already ended,
/// or an id this parent never gave, is left alone: MF_OK either way (the
/// completion says how the call ended). A cancelled call is not a breaker
/// failure. Any thread, also from a completion.
#[no_mangle]
pub unsafe extern "C" fn mf_cancel(p: *mut mf_parent, call_id: u64) -> mf_status {
    guard(|| {
        let parent = arc_borrow(p.cast_const(), "parent")?;
        parent.0.cancel(call_id);
        Ok(())
    })
}

/// The parent's metrics as a JSON object (free with `mf_string_free`); of a
/// pool (`mf_options_set_workers`), totals over its workers:
/// requests_total, requests_success, requests_failed, remote_errors,
/// timeouts, cancels, escalations (spawned workers stopped because a
/// cancelled or timed-out call's handler ran past the cancel grace), hangs
/// (spawned workers stopped after `max_misses` heartbeats missed in a
/// row), streams_open, stream_items, in_flight, latency_avg_ms,
/// latency_p50_ms, latency_p95_ms, latency_p99_ms, heartbeat_rtt_last_ms,
/// heartbeat_rtt_avg_ms,
/// heartbeat_misses, healthy, circuit_state ("closed", "open", "half_open"),
/// circuit_trips, consecutive_failures, restarts, recycles (workers
/// replaced after `mf_options_set_max_calls_per_worker` calls),
/// dropped_malformed, dropped_unknown, stalls, worker_pid (the first
/// worker's; 0 when none), transport ("link" or "zmq"), and workers: an
/// array with, for each worker, pid, in_flight, requests_total, restarts,
/// recycles, healthy, heartbeat_rtt_last_ms. NULL if `p` is NULL. Any thread.
#[no_mangle]
pub unsafe extern "C" fn mf_parent_stats_json(p: *const mf_parent) -> *mut c_char {
    let mut out = std::ptr::null_mut();
    guard(|| {
        let parent = arc_borrow(p, "parent")?;
        out = string_into_raw(parent.0.stats_json());
        Ok(())
    });
    out
}

/// Closes the connection and releases the handle: calls in flight end with
/// MF_ERR_CLOSED, a spawned worker is sent `shutdown` and SIGTERM, killed
/// after the grace period if still running, and reaped. NULL is ignored.
/// Must not be called from a completion or log callback of this parent.
#[no_mangle]
pub unsafe extern "C" fn mf_parent_close(p: *mut mf_parent) {
    super::guard_void(|| {
        if let Some(parent) = arc_release(p) {
            parent.0.close();
        }
    });
}

/// Another reference to the same parent, for a thread that goes on calling
/// while another thread may close it: between reading a handle and entering
/// a call, a concurrent `mf_parent_close` would otherwise free it. Closing
/// through any reference closes the connection for all (calls through the
/// others then end with MF_ERR_CLOSED); the memory goes with the last
/// reference, dropped by `mf_parent_close` or `mf_parent_release`. Returns
/// `p` (NULL for NULL). Any thread.
#[no_mangle]
pub unsafe extern "C" fn mf_parent_retain(p: *mut mf_parent) -> *mut mf_parent {
    if !p.is_null() {
        Arc::increment_strong_count(p.cast_const());
    }
    p
}

/// Drops a reference taken with `mf_parent_retain`, leaving the connection
/// open for the others; the last reference closes it as `mf_parent_close`
/// does (with the same restriction on callbacks). NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn mf_parent_release(p: *mut mf_parent) {
    super::guard_void(|| drop(arc_release(p)));
}

/// Stores the calling thread's error text in `*error` (when `error` is not
/// NULL and `status` is a failure), for callers whose next call may run on
/// another OS thread.
pub(crate) unsafe fn hand_back_error(status: mf_status, error: *mut *mut c_char) -> mf_status {
    if let Some(slot) = error.as_mut() {
        *slot = if status == mf_status::MF_OK {
            std::ptr::null_mut()
        } else {
            let text = std::ffi::CStr::from_ptr(super::error::mf_last_error());
            text.to_owned().into_raw()
        };
    }
    status
}

/// `mf_spawn` that also hands the error text back: on failure `*error`
/// (if `error` is not NULL) receives a copy of the message, freed with
/// `mf_string_free`; on MF_OK it is set to NULL. For callers that run the
/// blocking spawn on a worker thread (Node's thread pool, goroutines) and
/// read the result elsewhere.
#[no_mangle]
pub unsafe extern "C" fn mf_spawn_ex(
    program: *const c_char,
    args: *const *const c_char,
    opts: *const mf_options,
    error: *mut *mut c_char,
    out: *mut *mut mf_parent,
) -> mf_status {
    hand_back_error(mf_spawn(program, args, opts, out), error)
}

/// `mf_connect` that also hands the error text back, as `mf_spawn_ex` does.
#[no_mangle]
pub unsafe extern "C" fn mf_connect_ex(
    target: *const c_char,
    opts: *const mf_options,
    error: *mut *mut c_char,
    out: *mut *mut mf_parent,
) -> mf_status {
    hand_back_error(mf_connect(target, opts, out), error)
}

/// `mf_call` that also hands the error text back, as `mf_spawn_ex` does
/// (e.g. the remote error's text).
#[no_mangle]
pub unsafe extern "C" fn mf_call_ex(
    p: *mut mf_parent,
    function: *const c_char,
    args: *const u8,
    args_len: usize,
    timeout_ms: i64,
    error: *mut *mut c_char,
    out: *mut mf_buffer,
) -> mf_status {
    hand_back_error(mf_call(p, function, args, args_len, timeout_ms, out), error)
}
