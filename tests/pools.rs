//! Pools (the option `workers`): copies of one program behind one parent.
//! Calls spread over the workers; a worker killed mid-call fails only its
//! own calls while the others answer, and is restarted; recycling after n
//! calls loses no call and replaces the process; closing reaps them all.

mod common;
use common::{int, int_args, temp_home, test_worker, wait_until};

use multifrost::parent::{Done, Outcome};
use multifrost::{ErrorKind, Options, Parent};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// A hang guard for what a test waits for; never a bound on speed.
const WAIT: Duration = Duration::from_secs(30);

fn pool(workers: u32, configure: impl FnOnce(&mut Options)) -> Parent {
    temp_home();
    let mut options = Options::default();
    options.set_workers(workers).unwrap();
    configure(&mut options);
    let args = ["--concurrency".to_owned(), "4".to_owned()];
    Parent::spawn(&test_worker(), &args, options).expect("spawn a pool of test workers")
}

fn stats(p: &Parent) -> Value {
    serde_json::from_str(&p.stats_json()).unwrap()
}

fn pids(p: &Parent) -> Vec<i64> {
    stats(p)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap())
        .collect()
}

fn call_int(p: &Parent, function: &str, args: &[i64]) -> multifrost::Result<i64> {
    p.call(function, &int_args(args), 20_000)
        .map(|r| int(r.bytes()))
}

/// Starts a call whose outcome (an integer, or the error) arrives on the receiver.
fn start(p: &Parent, function: &str, args: &[i64]) -> Receiver<multifrost::Result<i64>> {
    let (tx, rx) = channel();
    let done = Done::Callback(Box::new(move |o: Outcome| {
        let _ = tx.send(o.map(|r| int(r.bytes())));
    }));
    p.call_async(function, &int_args(args), 60_000, done)
        .expect("start a call");
    rx
}

/// SIGKILL to a worker (never to a process group: a pid of 0 is refused).
fn kill(pid: i64) {
    assert!(pid > 0, "no worker pid to kill");
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
}

fn alive(pid: i64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn every_worker_takes_a_share_of_the_calls() {
    let p = pool(3, |_| {});
    let started = pids(&p);
    assert_eq!(started.len(), 3);
    assert_eq!(
        started.iter().collect::<HashSet<_>>().len(),
        3,
        "{started:?}"
    );
    assert!(started.iter().all(|&pid| pid > 0 && alive(pid)));

    let mut by_pid: HashMap<i64, usize> = HashMap::new();
    for _ in 0..300 {
        *by_pid.entry(call_int(&p, "pid", &[]).unwrap()).or_default() += 1;
    }
    // Concurrent calls too: the least loaded worker takes each.
    let pending: Vec<_> = (0..300).map(|_| start(&p, "pid", &[])).collect();
    for rx in pending {
        *by_pid
            .entry(rx.recv_timeout(WAIT).unwrap().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        by_pid.keys().collect::<HashSet<_>>(),
        started.iter().collect()
    );
    for (pid, n) in &by_pid {
        assert!(*n >= 100, "worker {pid} took {n} of 600 calls: {by_pid:?}");
    }
    let s = stats(&p);
    assert_eq!(s["requests_total"], 600);
    assert_eq!(s["requests_success"], 600);
    let per_worker: Vec<u64> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests_total"].as_u64().unwrap())
        .collect();
    assert_eq!(per_worker.iter().sum::<u64>(), 600, "{s}");
    assert!(s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["healthy"] == true && w["in_flight"] == 0));
    assert_eq!(s["healthy"], true);
}

#[test]
fn a_killed_worker_fails_only_its_own_calls_and_is_restarted() {
    let p = pool(2, |o| o.auto_restart = 3);
    let before = pids(&p);
    // Four slow calls: the least loaded worker takes each, two apiece.
    let slow: Vec<_> = (0..4).map(|_| start(&p, "sleep_ms", &[3000])).collect();
    assert!(wait_until(WAIT, || stats(&p)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["in_flight"] == 2)));
    kill(before[0]);
    // Once the parent saw the exit, the other worker takes every call.
    assert!(wait_until(WAIT, || stats(&p)["workers"][0]["healthy"] == false));
    for i in 0..20 {
        assert_eq!(call_int(&p, "add", &[i, 1]).unwrap(), i + 1);
    }
    let outcomes: Vec<_> = slow
        .iter()
        .map(|rx| rx.recv_timeout(WAIT).unwrap())
        .collect();
    let exited = outcomes
        .iter()
        .filter(|o| matches!(o, Err(e) if e.kind == ErrorKind::WorkerExited))
        .count();
    let answered = outcomes.iter().filter(|o| matches!(o, Ok(3000))).count();
    assert_eq!((exited, answered), (2, 2), "{outcomes:?}");

    assert!(
        wait_until(WAIT, || {
            let s = stats(&p);
            let w = &s["workers"][0];
            w["restarts"] == 1 && w["healthy"] == true && w["pid"].as_i64() != Some(before[0])
        }),
        "the killed worker was restarted: {}",
        p.stats_json()
    );
    let after = pids(&p);
    assert_eq!(after[1], before[1], "the other worker was left alone");
    assert!(!alive(before[0]));
    let s = stats(&p);
    assert_eq!(s["restarts"], 1);
    assert_eq!(s["circuit_state"], "closed");
    // Both take calls again.
    let seen: HashSet<i64> = (0..40).map(|_| call_int(&p, "pid", &[]).unwrap()).collect();
    assert_eq!(seen, after.iter().copied().collect());
}

#[test]
fn a_recycled_worker_is_replaced_after_its_calls_and_no_call_fails() {
    // One worker, recycled every 5 calls: the pids come in runs of 5.
    let p = pool(1, |o| o.max_calls_per_worker = 5);
    let seen: Vec<i64> = (0..23).map(|_| call_int(&p, "pid", &[]).unwrap()).collect();
    let runs: Vec<&[i64]> = seen.chunk_by(|a, b| a == b).collect();
    let lengths: Vec<usize> = runs.iter().map(|r| r.len()).collect();
    assert_eq!(lengths, [5, 5, 5, 5, 3], "{seen:?}");
    assert_eq!(runs.iter().map(|r| r[0]).collect::<HashSet<_>>().len(), 5);
    assert!(
        runs[..4].iter().all(|r| !alive(r[0])),
        "recycled workers were reaped"
    );
    let s = stats(&p);
    assert_eq!(s["recycles"], 4);
    assert_eq!(s["restarts"], 0);
    assert_eq!(s["requests_failed"], 0);
    assert_eq!(s["circuit_state"], "closed");
}

#[test]
fn a_burst_of_calls_is_shared_out_max_calls_at_a_time() {
    let p = pool(1, |o| o.max_calls_per_worker = 5);
    let pending: Vec<_> = (0..100).map(|_| start(&p, "pid", &[])).collect();
    let mut by_pid: HashMap<i64, usize> = HashMap::new();
    for rx in pending {
        *by_pid
            .entry(rx.recv_timeout(WAIT).unwrap().unwrap())
            .or_default() += 1;
    }
    assert!(by_pid.values().all(|&n| n == 5), "{by_pid:?}");
    assert_eq!(by_pid.len(), 20);
    let s = stats(&p);
    assert_eq!(s["recycles"], 19, "{s}");
    assert_eq!(s["requests_failed"], 0);
}

#[test]
fn recycling_under_concurrent_calls_loses_none() {
    let p = pool(2, |o| o.max_calls_per_worker = 25);
    let before = pids(&p);
    // Async and blocking calls at once, each with its own token.
    let pending: Vec<_> = (0..400).map(|t| (t, start(&p, "echo", &[t]))).collect();
    std::thread::scope(|scope| {
        for thread in 0..4i64 {
            let p = &p;
            scope.spawn(move || {
                for i in 0..100 {
                    let token = 10_000 + thread * 1000 + i;
                    assert_eq!(call_int(p, "echo", &[token]).unwrap(), token);
                }
            });
        }
    });
    for (t, rx) in pending {
        assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), t);
    }
    let s = stats(&p);
    assert_eq!(s["requests_failed"], 0, "{s}");
    // 25 calls per process: each member's calls, 25 at a time, took as
    // many processes, all but the first a successor.
    for w in s["workers"].as_array().unwrap() {
        let calls = w["requests_total"].as_u64().unwrap();
        assert_eq!(
            w["recycles"].as_u64().unwrap(),
            calls.div_ceil(25) - 1,
            "{s}"
        );
    }
    let after = pids(&p);
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "{before:?} {after:?}"
    );
}

#[test]
fn streams_and_cancels_reach_the_member_that_has_the_call() {
    let p = pool(2, |_| {});
    let (tx, rx) = channel();
    let done = Done::Callback(Box::new(move |o: Outcome| {
        let _ = tx.send(o.map(|r| int(r.bytes())));
    }));
    let slow = p
        .call_start("sleep_ms", &int_args(&[2000]), 60_000, done)
        .unwrap();
    // The second call goes to the other worker.
    let other = start(&p, "sleep_ms", &[1]);
    assert_eq!(other.recv_timeout(WAIT).unwrap().unwrap(), 1);
    assert!(p.cancel(slow));
    let e = rx.recv_timeout(WAIT).unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Cancelled);
    assert!(!p.cancel(slow), "a cancelled call is cancelled once");

    for _ in 0..4 {
        let mut s = p.stream("count", &int_args(&[50]), 20_000).unwrap();
        let mut items = Vec::new();
        while let Some(item) = s.next(Some(WAIT)).unwrap() {
            items.push(int(item.bytes()));
        }
        assert_eq!(items, (0..50).collect::<Vec<_>>());
    }
    assert_eq!(stats(&p)["stream_items"], 200);
}

#[test]
fn closing_a_pool_reaps_every_worker() {
    let p = pool(3, |_| {});
    let started = pids(&p);
    assert!(started.iter().all(|&pid| alive(pid)));
    p.close();
    // `close` returns after each worker was reaped: none is left, not even a zombie.
    for pid in &started {
        assert!(!alive(*pid), "worker {pid} is still there after close");
    }
    let e = call_int(&p, "add", &[1, 2]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Closed);
}

#[test]
fn bad_pool_options_are_refused_with_their_reason() {
    let mut o = Options::default();
    assert!(o
        .set_workers(0)
        .unwrap_err()
        .message
        .contains("workers must be 1..=256"));
    assert!(o.set_workers(257).is_err());
    assert_eq!(o.workers, 1);

    temp_home();
    o.set_workers(2).unwrap();
    let e = Parent::connect("tcp://127.0.0.1:1", o.clone())
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(
        e.message
            .contains("a service id or an endpoint is one worker"),
        "{}",
        e.message
    );

    // A program that cannot start: every copy is stopped, the reason returned.
    let e = Parent::spawn("/nonexistent/worker", &[], o).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Io, "{}", e.message);
    assert!(e.message.contains("/nonexistent/worker"), "{}", e.message);
}

#[test]
fn a_blocking_call_from_a_completion_is_refused_whichever_worker_it_would_reach() {
    let p = std::sync::Arc::new(pool(2, |_| {}));
    let (tx, rx) = channel();
    for _ in 0..10 {
        let (p2, tx) = (std::sync::Arc::clone(&p), tx.clone());
        let done = Done::Callback(Box::new(move |o: Outcome| {
            assert!(o.is_ok());
            let e = p2.call("add", &int_args(&[1, 2]), 5000).err().unwrap();
            let _ = tx.send((e.kind, e.message));
        }));
        p.call_async("add", &int_args(&[1, 2]), 20_000, done)
            .unwrap();
    }
    for _ in 0..10 {
        let (kind, message) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(kind, ErrorKind::InvalidArgument);
        assert!(message.contains("would wait forever"), "{message}");
    }
    assert_eq!(call_int(&p, "add", &[2, 3]).unwrap(), 5);
}

#[test]
fn a_worker_out_of_restarts_is_left_out_and_the_pool_answers() {
    let p = pool(2, |o| o.auto_restart = 1);
    let first = pids(&p)[0];
    kill(first);
    assert!(wait_until(WAIT, || {
        let w = &stats(&p)["workers"][0];
        w["restarts"] == 1 && w["healthy"] == true
    }));
    let second = pids(&p)[0];
    assert!(second > 0 && second != first);
    kill(second);
    // Its restart used up: it stays down, and is left out.
    assert!(wait_until(WAIT, || !alive(second)
        && stats(&p)["workers"][0]["pid"] == 0));
    let other = pids(&p)[1];
    for _ in 0..20 {
        assert_eq!(call_int(&p, "pid", &[]).unwrap(), other);
    }
    let s = stats(&p);
    assert_eq!(s["circuit_state"], "closed", "{s}");
    assert_eq!(s["workers"][0]["healthy"], false);
    assert_eq!(s["healthy"], true);

    // The last one going too opens the breaker: every call is refused.
    // While it restarts, calls wait for it (not for the one that is gone).
    kill(other);
    assert!(wait_until(WAIT, || stats(&p)["workers"][1]["healthy"] == false));
    let restarted = call_int(&p, "pid", &[]).unwrap();
    assert!(restarted != other && restarted > 0);
    assert!(wait_until(WAIT, || {
        let w = &stats(&p)["workers"][1];
        w["restarts"] == 1 && w["healthy"] == true
    }));
    let third = pids(&p)[1];
    assert!(third > 0 && third != other);
    kill(third);
    assert!(wait_until(WAIT, || stats(&p)["circuit_state"] == "open"));
    let e = call_int(&p, "pid", &[]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CircuitOpen, "{}", e.message);
}
