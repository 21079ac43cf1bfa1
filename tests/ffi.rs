//! The extern "C" functions called directly from Rust: the pull form of the
//! worker (`mf_worker_start` / `mf_worker_next`), the completion queue
//! (`mf_call_queued` / `mf_queue_next`), and NULL handling at the boundary.

mod common;
use common::{int, int_args, temp_home};

use multifrost::ffi::buffer::{mf_buffer, mf_buffer_free};
use multifrost::ffi::error::{mf_last_error, mf_status};
use multifrost::ffi::parent::*;
use multifrost::ffi::queue::*;
use multifrost::ffi::reply::*;
use multifrost::ffi::worker::*;
use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

fn last_error() -> String {
    unsafe { CStr::from_ptr(mf_last_error()) }
        .to_string_lossy()
        .into_owned()
}

struct Ptr<T>(*mut T);
unsafe impl<T> Send for Ptr<T> {}

#[test]
fn pull_worker_and_completion_queue_round_trip() {
    temp_home();
    let id = CString::new("ffi-pull").unwrap();
    let mut w = null_mut();
    unsafe {
        assert_eq!(
            mf_worker_new(id.as_ptr(), &mut w),
            mf_status::MF_OK,
            "{}",
            last_error()
        );
        for name in ["double", "echo"] {
            let name = CString::new(name).unwrap();
            assert_eq!(mf_worker_register_pull(w, name.as_ptr()), mf_status::MF_OK);
        }
        assert_eq!(mf_worker_start(w), mf_status::MF_OK, "{}", last_error());
        // Nothing queued yet: a zero wait says so at once.
        let mut incoming = std::mem::zeroed::<mf_incoming>();
        assert_eq!(
            mf_worker_next(w, 0, &mut incoming),
            mf_status::MF_ERR_TIMEOUT
        );
    }
    // The binding's own thread: take calls, answer them.
    let served = {
        let w = Ptr(w);
        std::thread::spawn(move || {
            let w = w;
            let mut n = 0;
            loop {
                let mut c = unsafe { std::mem::zeroed::<mf_incoming>() };
                match unsafe { mf_worker_next(w.0, 5000, &mut c) } {
                    mf_status::MF_OK => {}
                    mf_status::MF_ERR_CLOSED => return n,
                    s => panic!("next: {s:?} {}", last_error()),
                }
                let name = unsafe { CStr::from_ptr(c.function) }.to_str().unwrap();
                let args = unsafe { std::slice::from_raw_parts(c.args, c.args_len) };
                assert_eq!(args[0], 0x91);
                if name == "echo" {
                    // A large result lying in the arguments: answered from there.
                    let s = unsafe { mf_reply_ok(c.reply, c.args.add(1), c.args_len - 1) };
                    assert_eq!(s, mf_status::MF_OK);
                    continue;
                }
                assert_eq!(name, "double");
                let v = rmp::decode::read_int::<i64, _>(&mut &args[1..]).unwrap();
                let mut out = Vec::new();
                rmp::encode::write_sint(&mut out, v * 2).unwrap();
                assert_eq!(
                    unsafe { mf_reply_ok(c.reply, out.as_ptr(), out.len()) },
                    mf_status::MF_OK
                );
                n += 1;
            }
        })
    };
    let mut p = null_mut();
    unsafe {
        assert_eq!(
            mf_connect(id.as_ptr(), null(), &mut p),
            mf_status::MF_OK,
            "{}",
            last_error()
        );
    }
    let q = mf_queue_new();
    let f = CString::new("double").unwrap();
    for token in 0..100u64 {
        let mut args = vec![0x91];
        rmp::encode::write_uint(&mut args, token).unwrap();
        let s = unsafe { mf_call_queued(p, f.as_ptr(), args.as_ptr(), args.len(), 5000, q, token) };
        assert_eq!(s, mf_status::MF_OK);
    }
    let echo = CString::new("echo").unwrap();
    for n in [100, 300_000] {
        let data: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
        let mut bin = Vec::new();
        rmp::encode::write_bin(&mut bin, &data).unwrap();
        let args = [&[0x91][..], &bin].concat();
        let mut out = mf_buffer {
            data: null_mut(),
            len: 0,
        };
        let s = unsafe { mf_call(p, echo.as_ptr(), args.as_ptr(), args.len(), 5000, &mut out) };
        assert_eq!(s, mf_status::MF_OK, "{}", last_error());
        assert!(unsafe { std::slice::from_raw_parts(out.data, out.len) } == bin);
        unsafe { mf_buffer_free(out) };
    }
    let mut seen = [false; 100];
    let mut events: Vec<mf_event> = (0..16).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut got = 0;
    while got < 100 {
        let mut n = 0;
        let s = unsafe { mf_queue_next(q, 5000, events.as_mut_ptr(), events.len(), &mut n) };
        assert_eq!(s, mf_status::MF_OK, "{}", last_error());
        assert!((1..=16).contains(&n));
        for e in &events[..n] {
            assert_eq!(e.status, mf_status::MF_OK);
            assert!(e.error_message.is_null());
            let r = unsafe { std::slice::from_raw_parts(e.result, e.result_len) };
            let v: u64 = rmp::decode::read_int(&mut &r[..]).unwrap();
            assert_eq!(v, e.token * 2);
            seen[e.token as usize] = true;
        }
        got += n;
    }
    assert!(seen.iter().all(|&s| s));
    // A failure is queued with its text.
    let unknown = CString::new("nosuch").unwrap();
    unsafe {
        assert_eq!(
            mf_call_queued(p, unknown.as_ptr(), null(), 0, 5000, q, 7),
            mf_status::MF_OK
        );
        let mut n = 0;
        assert_eq!(
            mf_queue_next(q, 5000, events.as_mut_ptr(), 1, &mut n),
            mf_status::MF_OK
        );
        assert_eq!(
            (events[0].token, events[0].status),
            (7, mf_status::MF_ERR_NO_SUCH_FUNCTION)
        );
        assert!(events[0].result.is_null());
        let text = CStr::from_ptr(events[0].error_message).to_str().unwrap();
        assert_eq!(text, "Function 'nosuch' not found");
        // A closed, empty queue answers MF_ERR_CLOSED, not the
        // MF_ERR_TIMEOUT of waiting out its 5 s.
        mf_queue_close(q);
        assert_eq!(
            mf_queue_next(q, 5000, events.as_mut_ptr(), 1, &mut n),
            mf_status::MF_ERR_CLOSED
        );
        mf_queue_free(q);
        mf_parent_close(p);
        assert_eq!(mf_worker_stop(w), mf_status::MF_OK);
    }
    assert_eq!(served.join().unwrap(), 100);
    unsafe { mf_worker_free(w) };
}

#[test]
fn null_handles_and_strings_are_invalid_arguments() {
    let f = CString::new("f").unwrap();
    unsafe {
        let mut buf = std::mem::zeroed::<multifrost::ffi::buffer::mf_buffer>();
        assert_eq!(
            mf_call(null_mut(), f.as_ptr(), null(), 0, 0, &mut buf),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last_error(), "parent is NULL");
        let mut w = null_mut();
        assert_eq!(mf_worker_new(null(), &mut w), mf_status::MF_OK);
        assert_eq!(
            mf_worker_register_pull(w, null()),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last_error(), "name is NULL");
        assert_eq!(
            mf_worker_next(w, 0, null_mut()),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            mf_reply_error(null_mut(), f.as_ptr()),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            mf_reply_ok(null_mut(), null(), 0),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        let mut n = 0;
        assert_eq!(
            mf_queue_next(null_mut(), 0, null_mut(), 0, &mut n),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        mf_queue_free(null_mut());
        mf_queue_close(null_mut());
        // The worker's message size limit is checked like the parent's.
        assert_eq!(
            mf_worker_set_max_message_size(w, 10),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            last_error(),
            "max message size must be >= 1024 bytes, got 10"
        );
        assert_eq!(mf_worker_set_max_message_size(w, 1 << 20), mf_status::MF_OK);
        assert_eq!(
            mf_worker_set_max_message_size(null_mut(), 1 << 20),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        // Spawn mode without COMLINK_ZMQ_PORT fails at start, with the reason.
        std::env::remove_var("COMLINK_ZMQ_PORT");
        assert_eq!(mf_worker_start(w), mf_status::MF_ERR_INVALID_ARGUMENT);
        assert!(
            last_error().contains("COMLINK_ZMQ_PORT"),
            "{}",
            last_error()
        );
        mf_worker_free(w);
    }
}

#[test]
fn ex_variants_hand_the_error_text_back() {
    let program = CString::new("/nonexistent/worker-program").unwrap();
    let mut p = null_mut();
    let mut error: *mut std::ffi::c_char = null_mut();
    let s = unsafe { mf_spawn_ex(program.as_ptr(), null(), null(), &mut error, &mut p) };
    assert_eq!(s, mf_status::MF_ERR_IO);
    assert!(p.is_null());
    let text = unsafe { CStr::from_ptr(error) }
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains("cannot start worker '/nonexistent/worker-program'"),
        "{text}"
    );
    unsafe { multifrost::ffi::buffer::mf_string_free(error) };
    let target = CString::new("no-such-service-ex").unwrap();
    let opts = multifrost::ffi::options::mf_options_new();
    unsafe {
        multifrost::ffi::options::mf_options_set_connect_timeout(opts, 100);
        temp_home();
        let s = mf_connect_ex(target.as_ptr(), opts, &mut error, &mut p);
        assert_eq!(s, mf_status::MF_ERR_NOT_FOUND);
        assert_eq!(
            CStr::from_ptr(error).to_str().unwrap(),
            "service 'no-such-service-ex' not found within 0.1 s"
        );
        multifrost::ffi::buffer::mf_string_free(error);
        multifrost::ffi::options::mf_options_free(opts);
    }
}

/// Whether `fd` becomes readable within `ms` milliseconds.
fn readable(fd: i32, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

#[test]
fn queue_descriptor_signals_completions_to_an_event_loop() {
    temp_home();
    let id = CString::new("ffi-queue-fd").unwrap();
    let (w, served) = triple_worker(&id);
    let mut p = null_mut();
    let q = mf_queue_new();
    let f = CString::new("triple").unwrap();
    unsafe {
        assert_eq!(
            mf_queue_fd(q, null_mut()),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            mf_queue_fd(null_mut(), &mut 0),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
    }
    unsafe {
        assert_eq!(mf_connect(id.as_ptr(), null(), &mut p), mf_status::MF_OK);
    }
    let mut fd = -1;
    assert_eq!(unsafe { mf_queue_fd(q, &mut fd) }, mf_status::MF_OK);
    assert!(fd >= 0);
    let mut again = -1;
    assert_eq!(unsafe { mf_queue_fd(q, &mut again) }, mf_status::MF_OK);
    assert_eq!(again, fd, "one descriptor per queue");
    assert!(!readable(fd, 0), "nothing has completed yet");
    let mut events: Vec<mf_event> = (0..4).map(|_| unsafe { std::mem::zeroed() }).collect();
    // Three rounds, the way an event loop uses it: wait for the descriptor,
    // reset it, take everything with zero waits, and go back to waiting.
    for round in 0..3u64 {
        for k in 0..10u64 {
            let token = round * 10 + k;
            let args = int_args(&[token as i64]);
            let s =
                unsafe { mf_call_queued(p, f.as_ptr(), args.as_ptr(), args.len(), 5000, q, token) };
            assert_eq!(s, mf_status::MF_OK, "{}", last_error());
        }
        let mut got = Vec::new();
        while got.len() < 10 {
            assert!(
                readable(fd, 5000),
                "round {round}: the descriptor never became readable"
            );
            let mut counter = 0u64;
            unsafe { libc::read(fd, (&mut counter as *mut u64).cast(), 8) };
            loop {
                let mut n = 0;
                match unsafe { mf_queue_next(q, 0, events.as_mut_ptr(), events.len(), &mut n) } {
                    mf_status::MF_OK => {}
                    mf_status::MF_ERR_TIMEOUT => break,
                    s => panic!("mf_queue_next: {s:?} {}", last_error()),
                }
                for e in &events[..n] {
                    assert_eq!(e.status, mf_status::MF_OK);
                    let r = unsafe { std::slice::from_raw_parts(e.result, e.result_len) };
                    assert_eq!(int(r), e.token as i64 * 3);
                    got.push(e.token);
                }
            }
        }
        got.sort_unstable();
        assert_eq!(got, (round * 10..round * 10 + 10).collect::<Vec<_>>());
        // A completion that landed between the reset and the draining may
        // have left a spare wake-up; it must find the queue empty.
        let mut n = 0;
        assert_eq!(
            unsafe { mf_queue_next(q, 0, events.as_mut_ptr(), events.len(), &mut n) },
            mf_status::MF_ERR_TIMEOUT
        );
    }
    unsafe {
        mf_parent_close(p);
        mf_queue_free(q);
        assert_eq!(mf_worker_stop(w.0), mf_status::MF_OK);
    }
    served.join().unwrap();
    unsafe { mf_worker_free(w.0) };
}

/// A pull worker answering `triple(n)` on its own thread; returns its handle and the thread.
fn triple_worker(id: &CString) -> (Ptr<mf_worker>, std::thread::JoinHandle<()>) {
    let mut w = null_mut();
    unsafe {
        assert_eq!(mf_worker_new(id.as_ptr(), &mut w), mf_status::MF_OK);
        let name = CString::new("triple").unwrap();
        assert_eq!(mf_worker_register_pull(w, name.as_ptr()), mf_status::MF_OK);
        assert_eq!(mf_worker_start(w), mf_status::MF_OK, "{}", last_error());
    }
    let served = {
        let w = Ptr(w);
        std::thread::spawn(move || {
            let w = w;
            loop {
                let mut c = unsafe { std::mem::zeroed::<mf_incoming>() };
                match unsafe { mf_worker_next(w.0, 5000, &mut c) } {
                    mf_status::MF_OK => {}
                    mf_status::MF_ERR_CLOSED => return,
                    s => panic!("next: {s:?} {}", last_error()),
                }
                let args = unsafe { std::slice::from_raw_parts(c.args, c.args_len) };
                let v = rmp::decode::read_int::<i64, _>(&mut &args[1..]).unwrap();
                let mut out = Vec::new();
                rmp::encode::write_sint(&mut out, v * 3).unwrap();
                unsafe { mf_reply_ok(c.reply, out.as_ptr(), out.len()) };
            }
        })
    };
    (Ptr(w), served)
}

/// Takes every completion waiting on `q` (no wait): (token, value) pairs.
fn take_all(q: *mut mf_queue) -> Vec<(u64, i64)> {
    let mut events: Vec<mf_event> = (0..8).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut got = Vec::new();
    loop {
        let mut n = 0;
        match unsafe { mf_queue_next(q, 0, events.as_mut_ptr(), events.len(), &mut n) } {
            mf_status::MF_OK => {}
            mf_status::MF_ERR_TIMEOUT => return got,
            s => panic!("mf_queue_next: {s:?} {}", last_error()),
        }
        for e in &events[..n] {
            assert_eq!(e.status, mf_status::MF_OK);
            let r = unsafe { std::slice::from_raw_parts(e.result, e.result_len) };
            got.push((e.token, int(r)));
        }
    }
}

#[test]
fn an_event_loop_watching_the_queue_descriptor_gets_every_completion() {
    temp_home();
    let id = CString::new("ffi-queue-loop").unwrap();
    let (w, served) = triple_worker(&id);
    let mut p = null_mut();
    unsafe { assert_eq!(mf_connect(id.as_ptr(), null(), &mut p), mf_status::MF_OK) };
    let q = mf_queue_new();
    let mut qfd = -1;
    assert_eq!(unsafe { mf_queue_fd(q, &mut qfd) }, mf_status::MF_OK);
    assert!(qfd >= 0);
    let f = CString::new("triple").unwrap();
    // The loop: start calls, sleep until the queue's descriptor is
    // readable, read it, drain the queue.
    let mut got = Vec::new();
    let mut token = 0u64;
    for _round in 0..20 {
        for _ in 0..5 {
            token += 1;
            let args = int_args(&[token as i64]);
            let s =
                unsafe { mf_call_queued(p, f.as_ptr(), args.as_ptr(), args.len(), 5000, q, token) };
            assert_eq!(s, mf_status::MF_OK, "{}", last_error());
        }
        while got.len() < token as usize {
            assert!(readable(qfd, 20_000), "no completion came");
            let mut counter = 0u64;
            unsafe { libc::read(qfd, (&mut counter as *mut u64).cast(), 8) };
            got.extend(take_all(q));
        }
    }
    got.sort_unstable();
    let want: Vec<(u64, i64)> = (1..=token).map(|t| (t, t as i64 * 3)).collect();
    assert_eq!(got, want);
    unsafe {
        mf_parent_close(p);
        mf_queue_free(q);
        assert_eq!(mf_worker_stop(w.0), mf_status::MF_OK);
    }
    served.join().unwrap();
    unsafe { mf_worker_free(w.0) };
}

/// A pull worker learns of a cancel the two ways the C API offers: an event
/// on a queue its event loop watches (`mf_reply_on_cancel_queue`) and a
/// callback (`mf_reply_on_cancel`); `mf_reply_cancelled` says so too.
#[test]
fn a_pull_worker_hears_of_a_cancel_on_its_queue_and_by_callback() {
    temp_home();
    let id = CString::new("ffi-pull-cancel").unwrap();
    let slow = CString::new("slow").unwrap();
    let mut w = null_mut();
    unsafe {
        assert_eq!(mf_worker_new(id.as_ptr(), &mut w), mf_status::MF_OK);
        assert_eq!(mf_worker_register_pull(w, slow.as_ptr()), mf_status::MF_OK);
        assert_eq!(mf_worker_start(w), mf_status::MF_OK, "{}", last_error());
    }
    let mut p = null_mut();
    unsafe {
        assert_eq!(mf_connect(id.as_ptr(), null(), &mut p), mf_status::MF_OK);
    }
    static CALLED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    unsafe extern "C" fn on_cancel(user: *mut std::ffi::c_void) {
        assert_eq!(user as usize, 42);
        CALLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let parent_q = mf_queue_new();
    let worker_q = mf_queue_new();
    // (how it hears, whether the cancel comes before it asks)
    for (round, by_queue, before) in [(0u64, true, false), (1, false, false), (2, true, true)] {
        let mut call_id = 0;
        let s = unsafe {
            mf_call_queued_start(
                p,
                slow.as_ptr(),
                null(),
                0,
                20_000,
                parent_q,
                round,
                &mut call_id,
            )
        };
        assert_eq!(s, mf_status::MF_OK);
        let mut c = unsafe { std::mem::zeroed::<mf_incoming>() };
        assert_eq!(
            unsafe { mf_worker_next(w, 20_000, &mut c) },
            mf_status::MF_OK
        );
        assert!(!unsafe { mf_reply_cancelled(c.reply) });
        if before {
            assert_eq!(unsafe { mf_cancel(p, call_id) }, mf_status::MF_OK);
            while !unsafe { mf_reply_cancelled(c.reply) } {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let s = if by_queue {
            unsafe { mf_reply_on_cancel_queue(c.reply, worker_q, 100 + round) }
        } else {
            unsafe { mf_reply_on_cancel(c.reply, Some(on_cancel), 42 as *mut _) }
        };
        assert_eq!(s, mf_status::MF_OK);
        if !before {
            assert_eq!(unsafe { mf_cancel(p, call_id) }, mf_status::MF_OK);
        }
        let mut ev: [mf_event; 2] = unsafe { std::mem::zeroed() };
        let mut n = 0;
        if by_queue {
            let s = unsafe { mf_queue_next(worker_q, 20_000, ev.as_mut_ptr(), 2, &mut n) };
            assert_eq!(s, mf_status::MF_OK);
            assert_eq!(
                (n, ev[0].token, ev[0].status),
                (1, 100 + round, mf_status::MF_ERR_CANCELLED)
            );
            let text = unsafe { CStr::from_ptr(ev[0].error_message) }
                .to_str()
                .unwrap();
            assert_eq!(text, "the call was cancelled");
        } else {
            while CALLED.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        assert!(unsafe { mf_reply_cancelled(c.reply) });
        // The parent's side ended with MF_ERR_CANCELLED when it cancelled.
        let s = unsafe { mf_queue_next(parent_q, 0, ev.as_mut_ptr(), 2, &mut n) };
        assert_eq!(s, mf_status::MF_OK);
        assert_eq!(
            (n, ev[0].token, ev[0].status),
            (1, round, mf_status::MF_ERR_CANCELLED)
        );
        let msg = CString::new("CancelledError: stopped").unwrap();
        assert_eq!(
            unsafe { mf_reply_error(c.reply, msg.as_ptr()) },
            mf_status::MF_OK
        );
    }
    // Nothing more on the worker's queue: each hook ran once.
    let mut ev: [mf_event; 1] = unsafe { std::mem::zeroed() };
    let mut n = 0;
    let s = unsafe { mf_queue_next(worker_q, 0, ev.as_mut_ptr(), 1, &mut n) };
    assert_eq!(s, mf_status::MF_ERR_TIMEOUT);
    assert_eq!(CALLED.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Bad input gets a status.
    unsafe {
        assert_eq!(
            mf_reply_on_cancel_queue(null_mut(), worker_q, 1),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            mf_reply_on_cancel(null_mut(), Some(on_cancel), null_mut()),
            mf_status::MF_ERR_INVALID_ARGUMENT
        );
        mf_parent_close(p);
        mf_queue_free(parent_q);
        mf_queue_free(worker_q);
        assert_eq!(mf_worker_stop(w), mf_status::MF_OK);
        mf_worker_free(w);
    }
}
