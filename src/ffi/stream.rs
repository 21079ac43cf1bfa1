//! `mf_stream`: the consumer end of a call whose handler yields items.

use super::buffer::mf_buffer;
use super::error::mf_status;
use super::parent::{args_or_empty, mf_parent};
use super::{arc_borrow, bytes, guard, out_ptr, text};
use crate::error::Error;
use crate::parent::{Stream, StreamCanceller};
use crate::sync::Mutex;
use std::ffi::c_char;
use std::time::Duration;

/// A stream being read. Created by `mf_stream_open`, released by
/// `mf_stream_close`. `mf_stream_next` is called by one thread at a time;
/// `mf_stream_cancel` by any thread, also while another waits in
/// `mf_stream_next`.
pub struct mf_stream {
    stream: Mutex<Stream>,
    canceller: StreamCanceller,
}

/// Calls `function` as a stream: the worker's handler yields items
/// (`mf_reply_yield`), which `mf_stream_next` hands over in order; at most
/// the stream's window (`mf_options_set_stream_credit`, by default 16
/// items widening for small ones) are sent ahead of what was taken, and the handler waits for more.
/// `timeout_ms` (as for `mf_call`) limits the wait for the first item and
/// then between items. A handler that does not yield answers once and the
/// stream ends with no item. Errors as for `mf_call_async`.
#[no_mangle]
pub unsafe extern "C" fn mf_stream_open(
    p: *mut mf_parent,
    function: *const c_char,
    args: *const u8,
    args_len: usize,
    timeout_ms: i64,
    out: *mut *mut mf_stream,
) -> mf_status {
    guard(|| {
        let out = out_ptr(out)?;
        let parent = arc_borrow(p.cast_const(), "parent")?;
        let function = text(function, "function")?;
        let args = args_or_empty(bytes(args, args_len, "args")?);
        let stream = parent.inner().stream(function, args, timeout_ms)?;
        let canceller = stream.canceller();
        *out = Box::into_raw(Box::new(mf_stream {
            stream: Mutex::new(stream),
            canceller,
        }));
        Ok(())
    })
}

/// The next item. MF_OK with `*end` false: `*item` holds one msgpack value
/// (free it with `mf_buffer_free`). MF_OK with `*end` true: the stream is
/// over (the handler answered; its final value is not handed over) and
/// `*item` is not written. Otherwise the call's error, after the items sent
/// before it (MF_ERR_TIMEOUT when no item came within the call's timeout,
/// MF_ERR_REMOTE, MF_ERR_WORKER_EXITED, …). `timeout_ms` < 0 waits as the
/// call's timeout allows; >= 0 waits at most that long, then returns
/// MF_ERR_TIMEOUT with the stream still open. `*end` tells, whatever the
/// status, whether the stream is over: true at its end and with the call's
/// error; false with an item and with MF_ERR_TIMEOUT from a wait limit of
/// `timeout_ms` (so the two timeouts are told apart). It is not written
/// when `s`, `item` or `end` is NULL.
#[no_mangle]
pub unsafe extern "C" fn mf_stream_next(
    s: *mut mf_stream,
    timeout_ms: i64,
    item: *mut mf_buffer,
    end: *mut bool,
) -> mf_status {
    guard(|| {
        let stream = s.as_ref().ok_or_else(|| Error::invalid("stream is NULL"))?;
        let item = out_ptr(item)?;
        let end = out_ptr(end)?;
        let wait = (timeout_ms >= 0).then(|| Duration::from_millis(timeout_ms as u64));
        let mut stream = stream.stream.lock();
        match stream.next(wait) {
            Ok(Some(reply)) => {
                *item = mf_buffer::from_reply(reply);
                *end = false;
            }
            Ok(None) => *end = true,
            Err(e) => {
                *end = stream.is_over();
                return Err(e);
            }
        }
        Ok(())
    })
}

/// `mf_stream_next` that also hands the error text back (`*error`, free
/// with `mf_string_free`; NULL on MF_OK), for a caller whose next call may
/// run on another thread than this one (`mf_last_error` is per thread).
#[no_mangle]
pub unsafe extern "C" fn mf_stream_next_ex(
    s: *mut mf_stream,
    timeout_ms: i64,
    item: *mut mf_buffer,
    end: *mut bool,
    error: *mut *mut c_char,
) -> mf_status {
    super::parent::hand_back_error(mf_stream_next(s, timeout_ms, item, end), error)
}

/// Cancels a stream's call from any thread, also while another thread
/// waits in `mf_stream_next` (which then returns MF_ERR_CANCELLED): its
/// handler sees the cancel and its next yield fails. A stream that ended
/// already is left alone. The stream must still be closed. NULL is
/// MF_ERR_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn mf_stream_cancel(s: *const mf_stream) -> mf_status {
    guard(|| {
        let stream = s.as_ref().ok_or_else(|| Error::invalid("stream is NULL"))?;
        stream.canceller.cancel();
        Ok(())
    })
}

/// Ends a stream and frees it: an unfinished stream's call is cancelled
/// (its handler sees the cancel and its next yield fails with
/// MF_ERR_CANCELLED). NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn mf_stream_close(s: *mut mf_stream) {
    if !s.is_null() {
        let _ = guard(|| {
            drop(Box::from_raw(s));
            Ok(())
        });
    }
}
