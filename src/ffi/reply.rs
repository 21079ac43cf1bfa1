//! `mf_reply`: the right to answer one call.

use super::error::mf_status;
use super::{bytes, guard, text};
use crate::error::{Error, Result};
use crate::worker::ReplyHandle;
use std::ffi::{c_char, c_void};

/// One call being answered. Handed to a handler; answered exactly once with
/// `mf_reply_ok`, `mf_reply_json` or `mf_reply_error`, during the handler or
/// later from any thread. Answering frees it: the pointer is invalid after a
/// call that returned MF_OK. A reply that is never answered leaks and its
/// caller gets a timeout.
pub struct mf_reply {
    pub(crate) handle: ReplyHandle,
    /// The call itself when it was taken with `mf_worker_next`: its name and
    /// arguments stay valid until the reply is answered.
    pub(crate) call: Option<(std::ffi::CString, crate::worker::Incoming)>,
}

impl mf_reply {
    pub(crate) fn new(handle: ReplyHandle) -> *mut mf_reply {
        Box::into_raw(Box::new(mf_reply { handle, call: None }))
    }
}

/// Answers with the value `f` makes unless the value is refused, in which
/// case the reply stays unanswered (and valid) so the caller can answer again.
unsafe fn answer<T: AsRef<[u8]>>(r: *mut mf_reply, f: impl FnOnce() -> Result<T>) -> mf_status {
    guard(|| {
        let reply = r.as_ref().ok_or_else(|| Error::invalid("reply is NULL"))?;
        let value = f()?;
        reply.handle.check_result(value.as_ref())?;
        // SAFETY: the C API's handlers get their arguments as a pointer
        // (`RawHandler`), valid until they answer, and `mf_worker_next`'s
        // until the reply is answered; a JSON handler's reply keeps no
        // message to write into.
        Box::from_raw(r).handle.ok_in_place(value.as_ref());
        Ok(())
    })
}

/// Answers with a result: one msgpack value of `len` bytes. A result that is
/// not exactly one valid msgpack value → MF_ERR_INVALID_ARGUMENT and the
/// reply is not consumed.
/// A result of 4 KiB or more lying in the arguments of a call of 64 KiB or
/// more (an echo, one argument of a large call) is sent from there without a
/// copy, so the arguments must not be read after this call; any other
/// result is copied and may be freed when it returns.
#[no_mangle]
pub unsafe extern "C" fn mf_reply_ok(
    r: *mut mf_reply,
    result_msgpack: *const u8,
    len: usize,
) -> mf_status {
    answer(r, || bytes(result_msgpack, len, "result"))
}

/// Answers with a result given as JSON text (mapped as described at
/// `mf_call_json`). Invalid JSON → MF_ERR_INVALID_ARGUMENT and the reply is
/// not consumed.
#[no_mangle]
pub unsafe extern "C" fn mf_reply_json(r: *mut mf_reply, result_json: *const c_char) -> mf_status {
    answer(r, || {
        crate::json::to_msgpack(text(result_json, "result_json")?)
    })
}

/// Answers with an error; the caller gets MF_ERR_REMOTE with `message`
/// (convention: "<ErrorType>: <text>"). A NULL or non-UTF-8 message →
/// MF_ERR_INVALID_ARGUMENT and the reply is not consumed.
#[no_mangle]
pub unsafe extern "C" fn mf_reply_error(r: *mut mf_reply, message: *const c_char) -> mf_status {
    guard(|| {
        if r.is_null() {
            return Err(Error::invalid("reply is NULL"));
        }
        let message = text(message, "message")?;
        let reply = Box::from_raw(r);
        reply.handle.error(message)
    })
}

/// Whether the caller cancelled this call (`mf_cancel`, or its timeout,
/// which cancels it too). A long handler can check it and stop early; its
/// answer is then dropped by the parent, but it must still answer (any
/// answer). False for NULL. Any thread, until the reply is answered.
#[no_mangle]
pub unsafe extern "C" fn mf_reply_cancelled(r: *const mf_reply) -> bool {
    r.as_ref().is_some_and(|r| r.handle.is_cancelled())
}

/// Called once with its `user_data` when a call is cancelled (see
/// `mf_reply_on_cancel`).
pub type mf_cancel_fn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// Asks for `cb(user_data)` to run once when this call is cancelled: at
/// once, on this thread, if it already is; otherwise on the worker's driver
/// thread when the cancel arrives — unless the reply is answered first,
/// after which it never runs (an answer made while it runs waits for it to
/// return, so `user_data` may be freed once the reply is answered). `cb`
/// must return quickly and must not answer this reply; it is the place to
/// wake whatever runs the handler. A call has one such hook: a second
/// `mf_reply_on_cancel` or `mf_reply_on_cancel_queue` replaces it.
/// Errors: MF_ERR_INVALID_ARGUMENT (NULL reply or callback).
#[no_mangle]
pub unsafe extern "C" fn mf_reply_on_cancel(
    r: *mut mf_reply,
    cb: mf_cancel_fn,
    user_data: *mut c_void,
) -> mf_status {
    guard(|| {
        let reply = r.as_ref().ok_or_else(|| Error::invalid("reply is NULL"))?;
        let cb = cb.ok_or_else(|| Error::invalid("callback is NULL"))?;
        let user = user_data as usize;
        // SAFETY: the caller promised a callback that may run on any thread
        // with this user data, until the reply is answered.
        reply
            .handle
            .on_cancel(Box::new(move || unsafe { cb(user as *mut c_void) }));
        Ok(())
    })
}

/// Sends one item of a stream (one msgpack value of `len` bytes, copied),
/// waiting while the caller has all the items it asked for so far.
/// MF_ERR_CANCELLED once the caller cancelled the call or closed the stream:
/// stop and answer. The handler ends the stream by answering
/// (`mf_reply_ok`: its value is the stream's final value, nil is fine; or
/// `mf_reply_error`: the caller gets the error after the items). When the
/// caller did not ask for a stream (a plain call, another implementation's
/// parent), the items are kept and the answer is the array of them instead
/// of the final value; an item that would make that array larger than the
/// worker's maximum message size → MF_ERR_PROTOCOL, and the call's answer,
/// whatever the handler answers, is an error saying so. A value that is not one msgpack value →
/// MF_ERR_INVALID_ARGUMENT. From the thread that answers the call.
#[no_mangle]
pub unsafe extern "C" fn mf_reply_yield(
    r: *mut mf_reply,
    item: *const u8,
    len: usize,
) -> mf_status {
    guard(|| {
        let reply = r.as_mut().ok_or_else(|| Error::invalid("reply is NULL"))?;
        reply.handle.yield_item(bytes(item, len, "item")?)
    })
}

/// `mf_reply_yield` with the item as JSON text (mapped as at `mf_call_json`).
#[no_mangle]
pub unsafe extern "C" fn mf_reply_yield_json(
    r: *mut mf_reply,
    item_json: *const c_char,
) -> mf_status {
    guard(|| {
        let reply = r.as_mut().ok_or_else(|| Error::invalid("reply is NULL"))?;
        let item = crate::json::to_msgpack(text(item_json, "item_json")?)?;
        reply.handle.yield_item(&item)
    })
}
