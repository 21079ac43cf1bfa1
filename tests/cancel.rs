//! Cancellation end to end, with real worker processes on both transports:
//! a cancel reaches a cooperative handler, a handler that ignores it is
//! stopped after the grace, a call cancelled (or out of time) before its
//! handler starts never runs, a hung worker is stopped and restarted, and
//! every call ends exactly once whatever mix of cancels it meets.

mod common;
use common::{int, int_args, temp_home, test_worker, wait_until};

use multifrost::codec::{self, Encoder, Limits};
use multifrost::parent::{Done, Outcome};
use multifrost::{ErrorKind, Options, Parent};
use serde_json::Value;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

/// A hang guard for what a test waits for; never a bound on speed.
const WAIT: Duration = Duration::from_secs(30);

fn spawn(mut options: Options, link: bool, concurrency: &str) -> Parent {
    temp_home();
    options.private_link = link;
    let args = ["--concurrency".to_owned(), concurrency.to_owned()];
    let p = Parent::spawn(&test_worker(), &args, options).expect("spawn test worker");
    assert_eq!(stats(&p)["transport"], if link { "link" } else { "zmq" });
    p
}

fn stats(p: &Parent) -> Value {
    serde_json::from_str(&p.stats_json()).unwrap()
}

/// What a test thread receives when a call ends: its outcome as a value
/// or the error's kind and text.
type Ended = Result<Vec<u8>, (ErrorKind, String)>;

/// Starts `function(args)`; its outcome arrives on the receiver.
fn start(p: &Parent, function: &str, args: &[i64], timeout_ms: i64) -> (u64, Receiver<Ended>) {
    let (tx, rx) = channel();
    let done = Done::Callback(Box::new(move |o: Outcome| {
        let _ = tx.send(
            o.map(|r| r.bytes().to_vec())
                .map_err(|e| (e.kind, e.message)),
        );
    }));
    let n = p
        .call_start(function, &int_args(args), timeout_ms, done)
        .expect("call started");
    (n, rx)
}

fn ended(rx: &Receiver<Ended>) -> Ended {
    rx.recv_timeout(WAIT).expect("the call ended")
}

fn call_int(p: &Parent, function: &str, args: &[i64]) -> i64 {
    int(p.call(function, &int_args(args), 20_000).unwrap().bytes())
}

/// [cancels that found their call, calls answered without running].
fn worker_stats(p: &Parent) -> (u64, u64) {
    let r = p.call("worker_stats", &int_args(&[]), 20_000).unwrap();
    let mut b = r.bytes();
    assert_eq!(rmp::decode::read_array_len(&mut b).unwrap(), 2);
    (
        rmp::decode::read_int(&mut b).unwrap(),
        rmp::decode::read_int(&mut b).unwrap(),
    )
}

#[test]
fn a_cooperative_handler_sees_the_cancel_and_the_next_call_is_answered_on_the_link() {
    a_cooperative_handler_sees_the_cancel(true);
}

#[test]
fn a_cooperative_handler_sees_the_cancel_and_the_next_call_is_answered_over_zmq() {
    a_cooperative_handler_sees_the_cancel(false);
}

fn a_cooperative_handler_sees_the_cancel(link: bool) {
    // Two handler threads: one runs the handler, the other answers the test.
    let p = spawn(Options::default(), link, "2");
    let (n, rx) = start(&p, "until_cancelled", &[], 60_000);
    assert!(wait_until(WAIT, || call_int(&p, "started", &[]) == 1));
    assert!(p.cancel(n), "in flight");
    let (kind, text) = ended(&rx).unwrap_err();
    assert_eq!(kind, ErrorKind::Cancelled);
    assert_eq!(text, "call to 'until_cancelled' was cancelled");
    assert!(wait_until(WAIT, || call_int(&p, "cancels_seen", &[]) == 1));
    assert!(!p.cancel(n), "a call that ended is left alone");
    assert!(!p.cancel(u64::MAX), "a number never handed out");
    // Both handler threads are free again: two calls that hold one each.
    let (_, a) = start(&p, "hold_ms", &[50], 20_000);
    let (_, b) = start(&p, "hold_ms", &[50], 20_000);
    assert!(ended(&a).is_ok() && ended(&b).is_ok());
    assert_eq!(call_int(&p, "most_holding", &[]), 2);
    let st = stats(&p);
    assert_eq!(
        (st["cancels"].as_u64(), st["escalations"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(st["circuit_state"], "closed");
    assert_eq!(st["consecutive_failures"], 0, "a cancel is no failure");
    // The handler's own answer came late and was expected: not "unknown".
    assert_eq!(st["dropped_unknown"], 0);
    assert_eq!(worker_stats(&p), (1, 0));
}

#[test]
fn a_call_cancelled_before_its_handler_starts_never_runs() {
    // One handler thread, held by a cooperative call: calls behind it wait.
    let p = spawn(Options::default(), true, "1");
    let (blocker, blocked) = start(&p, "until_cancelled", &[], 60_000);
    let (marked, mark) = start(&p, "mark", &[], 60_000);
    // In this order on the wire: the mark's cancel reaches the worker
    // before the blocker's, so the mark is void before a thread is free.
    assert!(p.cancel(marked));
    assert!(p.cancel(blocker));
    assert_eq!(ended(&mark).unwrap_err().0, ErrorKind::Cancelled);
    assert_eq!(ended(&blocked).unwrap_err().0, ErrorKind::Cancelled);
    assert_eq!(
        call_int(&p, "marks", &[]),
        0,
        "the cancelled mark never ran"
    );
    assert_eq!(
        call_int(&p, "mark", &[]),
        1,
        "a mark that is not cancelled runs"
    );
    // The worker may read all four messages in one go, before its one
    // thread took the blocker, which is then void too: the mark's cancel
    // is read before the blocker can end either way.
    let (cancels, not_run) = worker_stats(&p);
    assert!((1..=2).contains(&not_run), "{not_run}");
    assert_eq!(cancels, 2);
    assert_eq!(stats(&p)["dropped_unknown"], 0);
}

/// A raw DEALER to a worker in this process: sends calls with a chosen
/// `remaining_ms`, reads the replies.
#[test]
fn a_call_whose_time_ran_out_before_a_handler_was_free_never_runs() {
    let path = std::env::temp_dir().join(format!("mf-deadline-{}.sock", std::process::id()));
    let ep = format!("ipc://{}", path.display());
    let worker = Arc::new(multifrost::Worker::new(multifrost::Mode::Bind(ep.clone())).unwrap());
    let ran = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let runs = Arc::clone(&ran);
    worker
        .register(
            "mark",
            Arc::new(move |_: &[u8], reply: multifrost::ReplyHandle| {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = reply.ok(&[0xc3]);
            }),
        )
        .unwrap();
    worker.start().unwrap();
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_rcvtimeo(30_000).unwrap();
    dealer.connect(&ep).unwrap();
    let send = |id: &str, remaining: Option<u64>| {
        let mut buf = Vec::new();
        Encoder::new(&mut buf).call(id, "mark", &[0x90], "default", remaining);
        dealer.send_multipart([&b""[..], &buf], 0).unwrap();
    };
    // No time left when it arrives: answered with a timeout, never run.
    send("late", Some(0));
    // Time left: it runs.
    send("in-time", Some(60_000));
    // No limit: it runs.
    send("unlimited", None);
    let mut replies = Vec::new();
    for _ in 0..3 {
        let frames = dealer.recv_multipart(0).expect("a reply");
        let m = codec::decode(&frames[1], Limits::default()).unwrap();
        replies.push((
            m.id.unwrap().to_owned(),
            m.kind.as_str(),
            m.error.map(str::to_owned),
            m.error_kind.map(str::to_owned),
        ));
    }
    replies.sort();
    assert_eq!(replies[0].0, "in-time");
    assert_eq!(replies[0].1, "response");
    assert_eq!(
        replies[1],
        (
            "late".to_owned(),
            "error",
            Some("TimeoutError: the call's time ran out before its handler started".to_owned()),
            Some("timeout".to_owned())
        )
    );
    assert_eq!(
        (replies[2].0.as_str(), replies[2].1),
        ("unlimited", "response")
    );
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        worker
            .stats()
            .not_run
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    worker.stop();
    worker.join();
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_handler_that_ignores_the_cancel_is_stopped_after_the_grace_on_the_link() {
    a_handler_that_ignores_the_cancel_is_stopped(true, false);
}

#[test]
fn a_handler_that_ignores_its_timeout_is_stopped_after_the_grace_over_zmq() {
    a_handler_that_ignores_the_cancel_is_stopped(false, true);
}

/// `by_timeout`: the call times out instead of being cancelled.
fn a_handler_that_ignores_the_cancel_is_stopped(link: bool, by_timeout: bool) {
    let mut o = Options::default();
    o.set_cancel_grace(300).unwrap();
    o.set_shutdown_grace(500).unwrap();
    o.auto_restart = 1;
    // Three threads: the other call, the spinner, and one for the test.
    let p = spawn(o, link, "3");
    let pid = stats(&p)["worker_pid"].as_i64().unwrap();
    // Another call in flight in the same worker when it is stopped.
    let (_, other) = start(&p, "until_cancelled", &[], 120_000);
    let (n, spin) = start(
        &p,
        "spin_ms",
        &[120_000],
        if by_timeout { 200 } else { 60_000 },
    );
    if by_timeout {
        assert_eq!(ended(&spin).unwrap_err().0, ErrorKind::Timeout);
    } else {
        assert!(wait_until(WAIT, || call_int(&p, "started", &[]) == 2));
        // The spinner holds the second thread: cancel it once it runs
        // (a cancel before it starts would void it instead).
        assert!(p.cancel(n));
        assert_eq!(ended(&spin).unwrap_err().0, ErrorKind::Cancelled);
    }
    let (kind, text) = ended(&other).unwrap_err();
    assert_eq!(kind, ErrorKind::WorkerExited, "{text}");
    assert!(
        text.starts_with("worker stopped: a handler of 'spin_ms' ran on ")
            && text.contains("after its call was cancelled or timed out"),
        "{text}"
    );
    // Restarted: the next call is answered by a new process.
    assert_eq!(call_int(&p, "add", &[2, 3]), 5);
    let st = stats(&p);
    assert_ne!(st["worker_pid"].as_i64().unwrap(), pid);
    assert_eq!(st["escalations"], 1);
    assert_eq!(st["restarts"], 1);
    assert_eq!(st["timeouts"], u64::from(by_timeout));
    assert_eq!(st["cancels"], u64::from(!by_timeout));
    assert_eq!(st["circuit_state"], "closed");
}

#[test]
fn a_hung_worker_is_stopped_and_restarted_on_the_link() {
    a_hung_worker_is_stopped_and_restarted(true);
}

#[test]
fn a_hung_worker_is_stopped_and_restarted_over_zmq() {
    a_hung_worker_is_stopped_and_restarted(false);
}

fn a_hung_worker_is_stopped_and_restarted(link: bool) {
    let mut o = Options::default();
    // Two missed heartbeats of a second each: a busy machine still answers
    // in time while the worker runs.
    o.set_heartbeat(200, 1000, 2).unwrap();
    o.set_shutdown_grace(300).unwrap();
    o.auto_restart = 1;
    let p = spawn(o, link, "2");
    let pid = stats(&p)["worker_pid"].as_i64().unwrap();
    let (_, pending) = start(&p, "until_cancelled", &[], 120_000);
    assert!(wait_until(WAIT, || call_int(&p, "started", &[]) == 1));
    // SAFETY: stops our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let (kind, text) = ended(&pending).unwrap_err();
    assert_eq!(kind, ErrorKind::WorkerExited, "{text}");
    assert!(
        text.starts_with("worker stopped: it missed 2 heartbeats in a row (hung)"),
        "{text}"
    );
    assert_eq!(call_int(&p, "add", &[1, 1]), 2);
    let st = stats(&p);
    assert_ne!(st["worker_pid"].as_i64().unwrap(), pid);
    assert_eq!(
        (st["hangs"].as_u64(), st["restarts"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(st["escalations"], 0);
    // The lost heartbeats were one failure, the exit they caused no second.
    assert_eq!(st["consecutive_failures"], 0, "the call since succeeded");
    assert_eq!(st["circuit_trips"], 0);
}

#[test]
fn a_thousand_calls_with_half_cancelled_at_random_end_exactly_once_on_the_link() {
    half_cancelled(true);
}

#[test]
fn a_thousand_calls_with_half_cancelled_at_random_end_exactly_once_over_zmq() {
    half_cancelled(false);
}

fn half_cancelled(link: bool) {
    let p = Arc::new(spawn(Options::default(), link, "8"));
    let (tx, rx) = channel::<(usize, Ended)>();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut numbers = Vec::new();
    for i in 0..1000 {
        let tx = tx.clone();
        let done = Done::Callback(Box::new(move |o: Outcome| {
            let _ = tx.send((
                i,
                o.map(|r| r.bytes().to_vec())
                    .map_err(|e| (e.kind, e.message)),
            ));
        }));
        let (function, args) = match rand() % 3 {
            0 => ("until_cancelled", int_args(&[(rand() % 3) as i64])),
            1 => ("sleep_ms", int_args(&[(rand() % 2) as i64])),
            _ => ("add", int_args(&[i as i64, 1])),
        };
        numbers.push((
            p.call_start(function, &args, 30_000, done).unwrap(),
            function,
        ));
        // Cancel a random earlier call now and then, so cancels meet calls
        // queued, running and already answered.
        if rand() % 4 == 0 {
            let k = (rand() % numbers.len() as u64) as usize;
            p.cancel(numbers[k].0);
        }
    }
    let mut cancelled = 0;
    for (n, _) in &numbers {
        if rand() % 2 == 0 && p.cancel(*n) {
            cancelled += 1;
        }
    }
    drop(tx);
    let mut seen = vec![0u32; numbers.len()];
    let mut by_cancel = 0;
    while let Ok((i, outcome)) = rx.recv_timeout(WAIT) {
        seen[i] += 1;
        match outcome {
            Ok(v) if numbers[i].1 == "add" => assert_eq!(int(&v), i as i64 + 1),
            Ok(_) => {}
            Err((ErrorKind::Cancelled, _)) => by_cancel += 1,
            Err(e) => panic!("call {i} ({}) failed: {e:?}", numbers[i].1),
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "every call ends exactly once");
    let st = stats(&p);
    assert_eq!(st["cancels"].as_u64(), Some(by_cancel));
    assert!(by_cancel >= cancelled, "{by_cancel} < {cancelled}");
    assert_eq!(st["in_flight"], 0);
    assert_eq!(st["escalations"], 0, "no handler ran past the grace");
    assert_eq!(call_int(&p, "add", &[40, 2]), 42, "still serving");
    // Every late answer was the end of a cancelled call, none unknown.
    assert_eq!(st["dropped_unknown"], 0);
}

#[test]
fn a_missing_function_has_its_own_status() {
    let p = spawn(Options::default(), true, "1");
    let e = p
        .call("nope", &int_args(&[]), 20_000)
        .err()
        .expect("refused");
    assert_eq!(e.kind, ErrorKind::NoSuchFunction);
    assert_eq!(e.message, "Function 'nope' not found");
    let e = p
        .call("fail", &int_args(&[]), 20_000)
        .err()
        .expect("failed");
    assert_eq!(e.kind, ErrorKind::Remote);
    assert_eq!(e.message, "RuntimeError: requested failure");
    assert_eq!(stats(&p)["remote_errors"], 2);
}

#[test]
fn a_call_queued_in_a_worker_that_is_stopped_ends_with_its_stop() {
    let mut o = Options::default();
    o.set_cancel_grace(300).unwrap();
    o.set_shutdown_grace(500).unwrap();
    o.auto_restart = 1;
    // One handler thread: the spinner holds it, the add waits behind it.
    let p = spawn(o, true, "1");
    let (_, spin) = start(&p, "spin_ms", &[120_000], 200);
    let (_, queued) = start(&p, "add", &[1, 2], 60_000);
    assert_eq!(ended(&spin).unwrap_err().0, ErrorKind::Timeout);
    let (kind, text) = ended(&queued).unwrap_err();
    assert_eq!(kind, ErrorKind::WorkerExited, "{text}");
    assert!(
        text.starts_with("worker stopped: a handler of 'spin_ms'"),
        "{text}"
    );
    assert_eq!(
        call_int(&p, "add", &[2, 2]),
        4,
        "answered by the restarted worker"
    );
    assert_eq!(stats(&p)["restarts"], 1);
}

#[test]
fn a_call_that_times_out_while_queued_is_answered_at_once_and_stops_nothing() {
    let mut o = Options::default();
    o.set_cancel_grace(300).unwrap();
    // One handler thread, held by a call that ignores cancels and outlives
    // the grace: the queued call's cancel must not be taken for its own.
    let p = spawn(o, true, "1");
    let (_, held) = start(&p, "hold_ms", &[1500], 60_000);
    let (_, queued) = start(&p, "mark", &[], 200);
    assert_eq!(ended(&queued).unwrap_err().0, ErrorKind::Timeout);
    assert_eq!(int(&ended(&held).expect("the held call ended")), 1500);
    assert_eq!(call_int(&p, "marks", &[]), 0, "the queued call never ran");
    let st = stats(&p);
    assert_eq!(st["escalations"], 0);
    assert_eq!(st["dropped_unknown"], 0);
    assert_eq!(worker_stats(&p).1, 1, "answered without running");
}
