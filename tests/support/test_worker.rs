//! A worker for the Rust integration tests, built on the Rust API.
//! Spawn mode by default; `--service ID` serves in connect mode;
//! `--serve-twice` serves again after `pause` ended the first serve;
//! `--concurrency N` sets how many handlers may run at once (default 8;
//! `default`: the library's own default);
//! `--max-message-size BYTES` sets the largest call it accepts.

use multifrost::{Mode, Worker};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The worker, for the `pause` handler to stop.
static WORKER: OnceLock<&'static Worker> = OnceLock::new();
/// `hold_ms` calls running now, and the most that ever ran at once.
static HOLDING: AtomicI64 = AtomicI64::new(0);
static MOST_HOLDING: AtomicI64 = AtomicI64::new(0);
/// `until_cancelled` and `spin_ms` handlers that started, and the
/// `until_cancelled` ones that saw their cancel.
static STARTED: AtomicI64 = AtomicI64::new(0);
static SAW_CANCEL: AtomicI64 = AtomicI64::new(0);
/// `mark` handlers that ran.
static MARKS: AtomicI64 = AtomicI64::new(0);
/// Items `count` yielded, and the `count` streams that saw their cancel.
static YIELDED: AtomicI64 = AtomicI64::new(0);
static STREAMS_CANCELLED: AtomicI64 = AtomicI64::new(0);

/// Reads the first integer argument of a raw msgpack array.
fn int_arg(args: &[u8], index: usize) -> Option<i64> {
    let mut rd = args;
    let n = rmp::decode::read_array_len(&mut rd).ok()? as usize;
    if index >= n {
        return None;
    }
    for _ in 0..index {
        rmp::decode::read_int::<i64, _>(&mut rd).ok()?;
    }
    rmp::decode::read_int(&mut rd).ok()
}

fn int_result(v: i64) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_sint(&mut out, v).unwrap();
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--parent-of-worker") {
        // A parent for the death-signal test: spawn a worker, say its pid, wait to be killed.
        let exe = std::env::current_exe().unwrap();
        let p =
            multifrost::Parent::spawn(&exe.to_string_lossy(), &[], multifrost::Options::default())
                .unwrap();
        let pid = p.call("pid", &[0x90], 5000).unwrap();
        println!(
            "WORKER_PID={}",
            rmp::decode::read_int::<i64, _>(&mut pid.bytes()).unwrap()
        );
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let mode = match args.iter().position(|a| a == "--service") {
        Some(i) => Mode::Service(args[i + 1].clone()),
        None => Mode::Spawn,
    };
    let worker: &'static Worker = match Worker::new(mode) {
        Ok(w) => Box::leak(Box::new(w)),
        Err(e) => {
            eprintln!("test_worker: {e}");
            std::process::exit(3);
        }
    };
    let _ = WORKER.set(worker);
    match args.iter().position(|a| a == "--concurrency") {
        Some(i) if args[i + 1] == "default" => {}
        Some(i) => {
            let n = args[i + 1].parse().expect("--concurrency N");
            worker.set_concurrency(n).unwrap();
        }
        None => worker.set_concurrency(8).unwrap(),
    }
    if let Some(i) = args.iter().position(|a| a == "--max-message-size") {
        worker
            .set_max_message_size(args[i + 1].parse().expect("--max-message-size BYTES"))
            .unwrap();
    }
    let reg = |name: &str, f: fn(&[u8]) -> Result<Vec<u8>, String>| {
        worker
            .register(
                name,
                Arc::new(move |a: &[u8], reply: multifrost::ReplyHandle| {
                    let _ = match f(a) {
                        Ok(v) => reply.ok(&v),
                        Err(e) => reply.error(&e),
                    };
                }),
            )
            .unwrap();
    };
    reg("add", |a| {
        let (x, y) = (
            int_arg(a, 0).ok_or("TypeError: a")?,
            int_arg(a, 1).ok_or("TypeError: b")?,
        );
        Ok(int_result(x + y))
    });
    reg("sleep_ms", |a| {
        let ms = int_arg(a, 0).ok_or("TypeError: ms")?;
        std::thread::sleep(Duration::from_millis(ms as u64));
        Ok(int_result(ms))
    });
    // Like sleep_ms, counting how many of its calls run at once.
    reg("hold_ms", |a| {
        let ms = int_arg(a, 0).ok_or("TypeError: ms")?;
        let now = HOLDING.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_HOLDING.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(ms as u64));
        HOLDING.fetch_sub(1, Ordering::SeqCst);
        Ok(int_result(ms))
    });
    reg("most_holding", |_| {
        Ok(int_result(MOST_HOLDING.load(Ordering::SeqCst)))
    });
    reg("pid", |_| Ok(int_result(i64::from(std::process::id()))));
    // The parent's port, as spawn mode handed it over (0 in connect mode).
    reg("port", |_| {
        let port = std::env::var("COMLINK_ZMQ_PORT").ok();
        Ok(int_result(port.and_then(|p| p.parse().ok()).unwrap_or(0)))
    });
    reg("echo", |a| match a.first() {
        Some(0x91) => Ok(a[1..].to_vec()),
        _ => Err("TypeError: echo takes exactly one argument".to_owned()),
    });
    // A bin of n bytes.
    reg("bytes", |a| {
        let n = int_arg(a, 0).ok_or("TypeError: n")? as usize;
        let mut out = Vec::with_capacity(n + 5);
        rmp::encode::write_bin_len(&mut out, n as u32).unwrap();
        out.resize(out.len() + n, b'x');
        Ok(out)
    });
    reg("spam", |a| {
        use std::io::Write;
        let n = int_arg(a, 0).ok_or("TypeError: n")?;
        let mut out = std::io::stdout().lock();
        for i in 0..n {
            writeln!(
                out,
                "spam line {i} with some padding to make the output larger"
            )
            .unwrap();
        }
        out.flush().unwrap();
        Ok(int_result(n))
    });
    reg(
        "fail",
        |_| Err("RuntimeError: requested failure".to_owned()),
    );
    reg("crash", |_| std::process::abort());
    // Waits up to ms (default a minute) for its call to be cancelled, the
    // way a cooperative handler does; answers whether it saw the cancel.
    worker
        .register(
            "until_cancelled",
            Arc::new(|a: &[u8], reply: multifrost::ReplyHandle| {
                let ms = int_arg(a, 0).unwrap_or(60_000);
                STARTED.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                reply.on_cancel(Box::new(move || {
                    let _ = tx.send(());
                }));
                let saw = rx.recv_timeout(Duration::from_millis(ms as u64)).is_ok();
                if saw {
                    SAW_CANCEL.fetch_add(1, Ordering::SeqCst);
                }
                let _ = reply.ok(&int_result(i64::from(saw)));
            }),
        )
        .unwrap();
    // count(n, then, size): yields 0..n, then answers nil (then 0), fails
    // (1) or aborts (2); `size` > 0 makes each item a bin of that many bytes.
    worker
        .register(
            "count",
            Arc::new(|a: &[u8], mut reply: multifrost::ReplyHandle| {
                let n = int_arg(a, 0).unwrap_or(0);
                let then = int_arg(a, 1).unwrap_or(0);
                let size = int_arg(a, 2).unwrap_or(0) as usize;
                for i in 0..n {
                    let item = if size > 0 {
                        let mut out = Vec::with_capacity(size + 5);
                        rmp::encode::write_bin_len(&mut out, size as u32).unwrap();
                        out.resize(out.len() + size, i as u8);
                        out
                    } else {
                        int_result(i)
                    };
                    if reply.yield_item(&item).is_err() {
                        STREAMS_CANCELLED.fetch_add(1, Ordering::SeqCst);
                        let _ = reply.error("CancelledError: the stream was closed");
                        return;
                    }
                    YIELDED.fetch_add(1, Ordering::SeqCst);
                }
                let _ = match then {
                    1 => reply.error("ValueError: failed after the items"),
                    2 => std::process::abort(),
                    _ => reply.ok(&[0xc0]),
                };
            }),
        )
        .unwrap();
    reg("yielded", |_| {
        Ok(int_result(YIELDED.load(Ordering::SeqCst)))
    });
    reg("streams_cancelled", |_| {
        Ok(int_result(STREAMS_CANCELLED.load(Ordering::SeqCst)))
    });
    reg("started", |_| {
        Ok(int_result(STARTED.load(Ordering::SeqCst)))
    });
    reg("cancels_seen", |_| {
        Ok(int_result(SAW_CANCEL.load(Ordering::SeqCst)))
    });
    // Spins for ms, never looking at its cancel (a handler that ignores it).
    reg("spin_ms", |a| {
        let ms = int_arg(a, 0).ok_or("TypeError: ms")?;
        STARTED.fetch_add(1, Ordering::SeqCst);
        let end = std::time::Instant::now() + Duration::from_millis(ms as u64);
        while std::time::Instant::now() < end {
            std::hint::spin_loop();
        }
        Ok(int_result(ms))
    });
    // A side effect: counts the runs of `mark`.
    reg("mark", |_| {
        Ok(int_result(MARKS.fetch_add(1, Ordering::SeqCst) + 1))
    });
    reg("marks", |_| Ok(int_result(MARKS.load(Ordering::SeqCst))));
    // [cancels that found their call, calls answered without running]
    reg("worker_stats", |_| {
        let st = WORKER.get().expect("set before serving").stats();
        let mut out = vec![0x92];
        rmp::encode::write_uint(&mut out, st.cancels.load(Ordering::SeqCst)).unwrap();
        rmp::encode::write_uint(&mut out, st.not_run.load(Ordering::SeqCst)).unwrap();
        Ok(out)
    });
    // Ends the current serve (its own answer still goes out).
    reg("pause", |_| {
        WORKER.get().expect("set before serving").stop();
        Ok(vec![0xc0])
    });
    let serves = if args.iter().any(|a| a == "--serve-twice") {
        2
    } else {
        1
    };
    for _ in 0..serves {
        if let Err(e) = worker.serve() {
            eprintln!("test_worker: {e}");
            std::process::exit(2);
        }
    }
}
