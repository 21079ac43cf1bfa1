//! `mf_worker`: the serving side.

use super::error::{c_string, mf_status};
use super::reply::mf_reply;
use super::{arc_borrow, arc_into_handle, arc_release, guard, out_ptr, text};
use crate::error::Error;
use crate::worker::{Handler, Mode, RawHandler, Worker};
use std::ffi::{c_char, c_void};
use std::sync::Arc;

/// A worker. Created by `mf_worker_new`, released by `mf_worker_free`.
/// Register handlers, then `mf_serve` on one thread; `mf_worker_stop` may be
/// called from any thread (also a signal-free way to end `mf_serve`).
pub struct mf_worker(Worker);

/// A function handler. `args`/`args_len`: the call's msgpack argument array,
/// valid until the handler returns or answers, whichever comes first (a
/// result that is part of the arguments may be answered from where it lies,
/// see `mf_reply_ok`). Answer through `reply` (see `mf_reply`),
/// during the call or later from any thread. Runs on a handler thread of the
/// worker (one at a time unless `mf_worker_set_concurrency` says more).
pub type mf_handler = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        args: *const u8,
        args_len: usize,
        reply: *mut mf_reply,
    ),
>;

/// A JSON handler: `args_json` is the argument array as JSON text (mapping
/// as at `mf_call_json`), valid only during the call.
pub type mf_json_handler = Option<
    unsafe extern "C" fn(user_data: *mut c_void, args_json: *const c_char, reply: *mut mf_reply),
>;

struct UserData(*mut c_void);
// SAFETY: the caller hands the user data over for use on handler threads.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// A new worker. `service_id` NULL: spawn mode (`mf_serve` connects to the
/// parent named by COMLINK_ZMQ_PORT). A service id: connect mode — binds a
/// free port on 127.0.0.1 now and registers it under the id in
/// `$HOME/.multifrost/services.json` (MF_ERR_ALREADY_RUNNING, "service 'id'
/// already running (pid P, port N)", if a live process has it); the entry
/// is removed when `mf_serve` returns or the worker is freed. "tcp://host:port":
/// bind that endpoint without the registry. `out` is written only on MF_OK.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_new(
    service_id: *const c_char,
    out: *mut *mut mf_worker,
) -> mf_status {
    guard(|| {
        let out = out_ptr(out)?;
        let mode = if service_id.is_null() {
            Mode::Spawn
        } else {
            let target = text(service_id, "service_id")?;
            if crate::is_endpoint(target) {
                Mode::Bind(target.to_owned())
            } else {
                Mode::Service(target.to_owned())
            }
        };
        *out = arc_into_handle(mf_worker(Worker::new(mode)?));
        Ok(())
    })
}

unsafe fn register(
    w: *mut mf_worker,
    name: *const c_char,
    add: impl FnOnce(&Worker, &str) -> crate::Result<()>,
) -> mf_status {
    guard(|| {
        let worker = arc_borrow(w.cast_const(), "worker")?;
        add(&worker.0, text(name, "name")?)
    })
}

/// Registers `fn` under `name` (replacing an earlier one). Names starting
/// with '_' are private: callers get "Cannot call private method".
/// `user_data` is passed to every call of `fn` and must stay valid until
/// serving has ended and every call of `fn` has returned: `mf_serve`
/// returns at most 1 s after a stop even if a handler is still running,
/// and that handler keeps using `user_data` until it returns.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_register(
    w: *mut mf_worker,
    name: *const c_char,
    handler: mf_handler,
    user_data: *mut c_void,
) -> mf_status {
    let Some(f) = handler else {
        return super::fail(&Error::invalid("handler is NULL"));
    };
    let user = UserData(user_data);
    let handler: RawHandler = Arc::new(move |args, args_len, reply| {
        let user = &user;
        f(user.0, args, args_len, mf_reply::new(reply));
    });
    register(w, name, |worker, name| worker.register_raw(name, handler))
}

/// Registers a JSON handler under `name`. Arguments that have no JSON form
/// (ext values) are answered with an error without calling it.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_register_json(
    w: *mut mf_worker,
    name: *const c_char,
    handler: mf_json_handler,
    user_data: *mut c_void,
) -> mf_status {
    let Some(f) = handler else {
        return super::fail(&Error::invalid("handler is NULL"));
    };
    let user = UserData(user_data);
    let handler: Handler = Arc::new(move |args: &[u8], reply| {
        let user = &user;
        match crate::json::from_msgpack(args) {
            Ok(json) => {
                let json = c_string(&json);
                let r = mf_reply::new(reply);
                f(user.0, json.as_ptr(), r);
            }
            Err(e) => {
                let _ = reply.error(&format!(
                    "TypeError: arguments have no JSON form: {}",
                    e.message
                ));
            }
        }
    });
    register(w, name, |worker, name| worker.register(name, handler))
}

/// Handler threads (1..=1024, default 1: handlers need not be thread-safe).
/// Takes effect at the next `mf_serve`.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_set_concurrency(w: *mut mf_worker, threads: u32) -> mf_status {
    guard(|| {
        arc_borrow(w.cast_const(), "worker")?
            .0
            .set_concurrency(threads as usize)
    })
}

/// The namespace this worker serves (default "default"); calls that name
/// another namespace are dropped without a reply.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_set_namespace(
    w: *mut mf_worker,
    ns: *const c_char,
) -> mf_status {
    guard(|| {
        arc_borrow(w.cast_const(), "worker")?
            .0
            .set_namespace(text(ns, "namespace")?)
    })
}

/// Whether `mf_serve` installs SIGINT/SIGTERM handlers that make it return
/// (default true; the previous handlers are restored when it returns).
#[no_mangle]
pub unsafe extern "C" fn mf_worker_set_handle_signals(w: *mut mf_worker, on: bool) -> mf_status {
    guard(|| {
        arc_borrow(w.cast_const(), "worker")?
            .0
            .set_handle_signals(on);
        Ok(())
    })
}

/// Largest message accepted from a parent (>= 1024; default 64 MiB). A
/// larger call is never decoded: it is answered with an error giving both
/// sizes (the caller sees MF_ERR_REMOTE), and serving goes on. The private
/// link skips it unread; over ZeroMQ it is read up to four times this size,
/// and above that libzmq drops the connection.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_set_max_message_size(
    w: *mut mf_worker,
    bytes: i64,
) -> mf_status {
    guard(|| {
        arc_borrow(w.cast_const(), "worker")?
            .0
            .set_max_message_size(bytes)
    })
}

/// Serves calls; blocks until `mf_worker_stop`, a `shutdown` message from a
/// parent, or SIGINT/SIGTERM, then returns MF_OK. Spawn mode without a valid
/// COMLINK_ZMQ_PORT → MF_ERR_INVALID_ARGUMENT at once (the message says why).
#[no_mangle]
pub unsafe extern "C" fn mf_serve(w: *mut mf_worker) -> mf_status {
    guard(|| arc_borrow(w.cast_const(), "worker")?.0.serve())
}

/// Makes `mf_serve` return. Any thread, any time (before `mf_serve` too).
#[no_mangle]
pub unsafe extern "C" fn mf_worker_stop(w: *mut mf_worker) -> mf_status {
    guard(|| {
        arc_borrow(w.cast_const(), "worker")?.0.stop();
        Ok(())
    })
}

/// Releases the handle. A worker still serving is stopped first. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_free(w: *mut mf_worker) {
    super::guard_void(|| {
        if let Some(worker) = arc_release(w) {
            worker.0.stop();
        }
    });
}

/// A call taken with `mf_worker_next`. `function` (NUL-terminated) and
/// `args`/`args_len` (the msgpack argument array) belong to `reply` and stay
/// valid until it is answered; answer it exactly once (see `mf_reply`).
#[repr(C)]
pub struct mf_incoming {
    pub function: *const c_char,
    pub args: *const u8,
    pub args_len: usize,
    pub reply: *mut mf_reply,
}

/// Registers `name` for the pull form: its calls are not run on the
/// worker's threads but handed out by `mf_worker_next`, so a binding that
/// owns an event loop (Node, Python asyncio, Go) runs them where it wants.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_register_pull(
    w: *mut mf_worker,
    name: *const c_char,
) -> mf_status {
    guard(|| {
        arc_borrow(w.cast_const(), "worker")?
            .0
            .register_pull(text(name, "name")?)
    })
}

/// Serves on a library thread and returns at once; the socket is opened
/// (and, in connect mode, registered) before it returns, so spawn mode
/// without a valid COMLINK_ZMQ_PORT fails here with MF_ERR_INVALID_ARGUMENT.
/// End it with `mf_worker_stop` (or a shutdown message / SIGINT / SIGTERM);
/// `mf_worker_next` then returns MF_ERR_CLOSED.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_start(w: *mut mf_worker) -> mf_status {
    guard(|| arc_borrow(w.cast_const(), "worker")?.0.start())
}

/// Takes the next call of a pull-registered function, waiting up to
/// `timeout_ms` (< 0: no limit, 0: do not wait). `out` is written only on
/// MF_OK. MF_ERR_TIMEOUT: nothing arrived in time; MF_ERR_CLOSED: the worker
/// stopped serving. Any thread; several threads may wait at once.
#[no_mangle]
pub unsafe extern "C" fn mf_worker_next(
    w: *mut mf_worker,
    timeout_ms: i64,
    out: *mut mf_incoming,
) -> mf_status {
    guard(|| {
        let out = out_ptr(out)?;
        let worker = arc_borrow(w.cast_const(), "worker")?;
        let timeout =
            (timeout_ms >= 0).then(|| std::time::Duration::from_millis(timeout_ms as u64));
        let job = worker
            .0
            .next(timeout)?
            .ok_or_else(|| Error::new(crate::ErrorKind::Timeout, "no call arrived in time"))?;
        let (incoming, handle) = job.into_parts();
        let name = c_string(&incoming.function);
        let reply = Box::into_raw(Box::new(mf_reply {
            handle,
            call: Some((name, incoming)),
        }));
        let (name, incoming) = (*reply)
            .call
            .as_ref()
            .map(|(n, i)| (n.as_ptr(), i.args()))
            .unwrap_or_default();
        *out = mf_incoming {
            function: name,
            args: incoming.as_ptr(),
            args_len: incoming.len(),
            reply,
        };
        Ok(())
    })
}
