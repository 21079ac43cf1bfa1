//! A worker's handler pool: with concurrency N, N handlers run at once and
//! every answer reaches the parent, whatever the handlers do meanwhile.
//! Shown by a counter, not by elapsed time: each call of `gather(n)` waits
//! (up to 5 s) until n calls have run at once and answers the most that did.

mod common;
use common::{int, int_args, temp_home};

use multifrost::{Mode, Options, Parent, ReplyHandle, Worker};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Gather {
    /// (running now, most at once)
    state: Mutex<(i64, i64)>,
    cv: Condvar,
}

/// A worker of concurrency 4 serving `gather` under `id`, started.
fn gathering_worker(id: &str) -> Arc<Worker> {
    temp_home();
    let w = Arc::new(Worker::new(Mode::Service(id.to_owned())).unwrap());
    w.set_handle_signals(false);
    w.set_concurrency(4).unwrap();
    let g = Arc::new(Gather::default());
    w.register(
        "gather",
        Arc::new(move |a: &[u8], reply: ReplyHandle| {
            let mut rd = a;
            let n = rmp::decode::read_array_len(&mut rd)
                .ok()
                .and_then(|_| rmp::decode::read_int::<i64, _>(&mut rd).ok())
                .unwrap_or(1);
            let mut s = g.state.lock().unwrap();
            s.0 += 1;
            s.1 = s.1.max(s.0);
            g.cv.notify_all();
            let (mut s, _) =
                g.cv.wait_timeout_while(s, Duration::from_secs(5), |s| s.1 < n)
                    .unwrap();
            s.0 -= 1;
            let most = s.1;
            drop(s);
            let mut out = Vec::new();
            rmp::encode::write_sint(&mut out, most).unwrap();
            let _ = reply.ok(&out);
        }),
    )
    .unwrap();
    w.start().unwrap();
    w
}

/// `n` calls of gather(n) at once: what each answered (or its error).
fn gather(p: &Arc<Parent>, n: i64) -> Vec<Result<i64, String>> {
    let (tx, rx) = mpsc::channel();
    for _ in 0..n {
        let (p, tx) = (Arc::clone(p), tx.clone());
        std::thread::spawn(move || {
            let r = p.call("gather", &int_args(&[n]), 20_000);
            let _ = tx.send(r.map(|r| int(r.bytes())).map_err(|e| e.to_string()));
        });
    }
    (0..n)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("a call never ended")
        })
        .collect()
}

fn run(id: &str, n: i64) {
    let w = gathering_worker(id);
    let p = Arc::new(Parent::connect(id, Options::default()).unwrap());
    assert_eq!(gather(&p, n), vec![Ok(n); n as usize], "{}", p.stats_json());
    w.stop();
}

#[test]
fn two_handlers_run_at_once() {
    run(&format!("pool-two-{}", std::process::id()), 2);
}

/// Four handlers at once, and every answer arrives. (When the worker's two
/// I/O drivers each ran a call inline, nobody read the socket while both
/// did: at most 2 handlers ran at once, and two of the four answers never
/// reached the parent.)
#[test]
fn four_handlers_run_at_once_and_every_answer_arrives() {
    run(&format!("pool-four-{}", std::process::id()), 4);
}
