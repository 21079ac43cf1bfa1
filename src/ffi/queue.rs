//! `mf_queue`: completions delivered by pulling instead of callbacks, for
//! bindings that must not be called on library threads (Node, Python asyncio).

use super::error::{c_string, mf_status};
use super::parent::{args_or_empty, mf_parent, write_id};
use super::reply::mf_reply;
use super::{arc_borrow, arc_into_handle, arc_release, bytes, guard, out_ptr, text};
use crate::error::Error;
use crate::parent::{Done, Reply};
use crate::sync::{Condvar, Mutex};
use crate::wake::Signal;
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, CString};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A completion queue. Calls started with `mf_call_queued` land here; a
/// thread the binding owns takes them with `mf_queue_next`. Thread-safe;
/// created by `mf_queue_new`, released by `mf_queue_free`.
pub struct mf_queue {
    state: Mutex<State>,
    cv: Condvar,
    /// Readable while completions wait, once `mf_queue_fd` asked for it.
    wake: OnceLock<Signal>,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Event>,
    /// The batch handed out by the last `mf_queue_next`, kept alive until the next one.
    delivered: Vec<Event>,
    closed: bool,
}

struct Event {
    token: u64,
    status: mf_status,
    result: Option<Reply>,
    error: Option<CString>,
}

/// One finished call. On MF_OK `result`/`result_len` hold the msgpack
/// result and `error_message` is NULL; otherwise `result` is NULL and
/// `error_message` says why. The pointers stay valid until the next
/// `mf_queue_next` on the same queue (or `mf_queue_free`).
#[repr(C)]
pub struct mf_event {
    pub token: u64,
    pub status: mf_status,
    pub result: *const u8,
    pub result_len: usize,
    pub error_message: *const c_char,
}

impl mf_queue {
    /// Wakes a taker of the queue, which was empty: one waiting in
    /// `mf_queue_next`, and the event loop watching the descriptor.
    fn notify(&self) {
        self.cv.notify_one();
        if let Some(w) = self.wake.get() {
            w.notify();
        }
    }

    /// Queues `event`; the taker wakes once the batch being delivered on
    /// this thread is all in (see `after_batch`).
    fn push(self: Arc<Self>, event: Event) {
        let mut state = self.state.lock();
        let was_empty = state.ready.is_empty();
        state.ready.push_back(event);
        drop(state);
        if was_empty {
            crate::parent::after_batch(Box::new(move || self.notify()));
        }
    }
}

/// Asks for an event to be queued on `q` when this call is cancelled:
/// `token`, MF_ERR_CANCELLED, no result, and the text "the call was
/// cancelled" — the form of `mf_reply_on_cancel` for bindings that run an
/// event loop over `mf_queue_fd` (no callback into the binding from a
/// library thread). Queued at once if the call is cancelled already, and
/// never once the reply is answered. Errors: MF_ERR_INVALID_ARGUMENT (NULL
/// reply or queue).
#[no_mangle]
pub unsafe extern "C" fn mf_reply_on_cancel_queue(
    r: *mut mf_reply,
    q: *mut mf_queue,
    token: u64,
) -> mf_status {
    guard(|| {
        let reply = r.as_ref().ok_or_else(|| Error::invalid("reply is NULL"))?;
        let queue = arc_borrow(q.cast_const(), "queue")?;
        reply.handle.on_cancel(Box::new(move || {
            queue.push(Event {
                token,
                status: mf_status::MF_ERR_CANCELLED,
                result: None,
                error: Some(c_string("the call was cancelled")),
            });
        }));
        Ok(())
    })
}

/// A new, empty completion queue. Never NULL.
#[no_mangle]
pub extern "C" fn mf_queue_new() -> *mut mf_queue {
    arc_into_handle(mf_queue {
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
        wake: OnceLock::new(),
    })
}

/// Wakes every `mf_queue_next` waiter with MF_ERR_CLOSED once the queue is
/// empty; completions still arriving are kept. Any thread. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn mf_queue_close(q: *mut mf_queue) {
    super::guard_void(|| {
        if let Ok(q) = arc_borrow(q.cast_const(), "queue") {
            q.state.lock().closed = true;
            q.cv.notify_all();
        }
    });
}

/// Releases the queue (calls still in flight keep it alive until they end).
/// NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn mf_queue_free(q: *mut mf_queue) {
    super::guard_void(|| {
        if let Some(q) = arc_release(q) {
            q.state.lock().closed = true;
            q.cv.notify_all();
        }
    });
}

/// A descriptor that becomes readable when a completion arrives on an
/// empty queue, for an event loop to watch (epoll, `loop.add_reader`, a
/// libuv stream, …) instead of parking a thread in `mf_queue_next`. It is
/// one end of a Unix stream socket, which every event loop can watch. When
/// it is readable: read what it holds (it is non-blocking; a read of 8
/// bytes is enough, EAGAIN is fine), then call `mf_queue_next` with
/// timeout 0 until it returns MF_ERR_TIMEOUT — only a completion that
/// finds the queue empty makes it readable again. The
/// queue owns the descriptor (close it never; it lives until
/// `mf_queue_free`). Any thread.
#[no_mangle]
pub unsafe extern "C" fn mf_queue_fd(q: *mut mf_queue, out: *mut c_int) -> mf_status {
    guard(|| {
        let out = out_ptr(out)?;
        let queue = arc_borrow(q.cast_const(), "queue")?;
        if queue.wake.get().is_none() {
            let wake = Signal::new().map_err(|e| Error::io(format!("socketpair: {e}")))?;
            let _ = queue.wake.set(wake);
            // Completions that arrived before the descriptor existed.
            if let (Some(w), false) = (queue.wake.get(), queue.state.lock().ready.is_empty()) {
                w.notify();
            }
        }
        *out = queue.wake.get().map_or(-1, Signal::fd);
        Ok(())
    })
}

/// Starts a call like `mf_call_async`; its completion is put on `q` with
/// `token` (any value the caller chooses). When this returns anything but
/// MF_OK the call was not started and nothing will be queued.
#[no_mangle]
pub unsafe extern "C" fn mf_call_queued(
    p: *mut mf_parent,
    function: *const c_char,
    args: *const u8,
    args_len: usize,
    timeout_ms: i64,
    q: *mut mf_queue,
    token: u64,
) -> mf_status {
    mf_call_queued_start(
        p,
        function,
        args,
        args_len,
        timeout_ms,
        q,
        token,
        std::ptr::null_mut(),
    )
}

/// `mf_call_queued` that also writes the call's id to `*call_id` (when not
/// NULL) before the call is sent, for `mf_cancel`; a cancelled call's
/// event (MF_ERR_CANCELLED, with its `token`) is queued before `mf_cancel`
/// returns.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // mf_call_queued's, and the id's place
pub unsafe extern "C" fn mf_call_queued_start(
    p: *mut mf_parent,
    function: *const c_char,
    args: *const u8,
    args_len: usize,
    timeout_ms: i64,
    q: *mut mf_queue,
    token: u64,
    call_id: *mut u64,
) -> mf_status {
    guard(|| {
        let parent = arc_borrow(p.cast_const(), "parent")?;
        let queue = arc_borrow(q.cast_const(), "queue")?;
        let function = text(function, "function")?;
        let args = args_or_empty(bytes(args, args_len, "args")?);
        parent.inner().call_numbered(
            function,
            args,
            timeout_ms,
            Done::Callback(Box::new(move |outcome| {
                queue.push(match outcome {
                    Ok(reply) => Event {
                        token,
                        status: mf_status::MF_OK,
                        result: Some(reply),
                        error: None,
                    },
                    Err(e) => Event {
                        token,
                        status: e.kind.into(),
                        result: None,
                        error: Some(c_string(&e.message)),
                    },
                });
            })),
            |id| write_id(call_id, id),
        )
    })
}

/// Takes up to `capacity` finished calls into `events`, waiting up to
/// `timeout_ms` for the first (< 0: no limit, 0: do not wait); `*out` is the
/// number taken (>= 1 on MF_OK). MF_ERR_TIMEOUT: none in time;
/// MF_ERR_CLOSED: the queue was closed and is empty.
#[no_mangle]
pub unsafe extern "C" fn mf_queue_next(
    q: *mut mf_queue,
    timeout_ms: i64,
    events: *mut mf_event,
    capacity: usize,
    out: *mut usize,
) -> mf_status {
    guard(|| {
        let out = out_ptr(out)?;
        let queue = arc_borrow(q.cast_const(), "queue")?;
        if events.is_null() || capacity == 0 {
            return Err(Error::invalid("events is NULL or capacity is 0"));
        }
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let mut state = queue.state.lock();
        state.delivered.clear();
        while state.ready.is_empty() {
            if state.closed {
                return Err(Error::new(crate::ErrorKind::Closed, "the queue is closed"));
            }
            match deadline {
                Some(d) => {
                    let timed_out = if Instant::now() >= d {
                        true // a timeout of 0 polls: no wait, no system call
                    } else {
                        let (s, timed_out) = queue.cv.wait_until(state, d);
                        state = s;
                        timed_out
                    };
                    if timed_out && state.ready.is_empty() {
                        return Err(Error::new(
                            crate::ErrorKind::Timeout,
                            "no completion in time",
                        ));
                    }
                }
                None => state = queue.cv.wait(state),
            }
        }
        let n = capacity.min(state.ready.len());
        let batch: Vec<Event> = state.ready.drain(..n).collect();
        let slots = std::slice::from_raw_parts_mut(events, n);
        for (slot, e) in slots.iter_mut().zip(&batch) {
            let result = e.result.as_ref().map(Reply::bytes);
            *slot = mf_event {
                token: e.token,
                status: e.status,
                result: result.map_or(std::ptr::null(), <[u8]>::as_ptr),
                result_len: result.map_or(0, <[u8]>::len),
                error_message: e.error.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            };
        }
        state.delivered = batch;
        *out = n;
        Ok(())
    })
}
