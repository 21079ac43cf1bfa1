//! The worker's handler pool and its driver, end to end with real
//! processes: as many handlers run at once as the concurrency says (and no
//! more), and the socket is read whatever the handlers do — heartbeats are
//! echoed and SIGTERM is seen while every handler slot is blocked, over the
//! private link and over ZeroMQ alike.

mod common;
use common::{int, int_args, temp_home, test_worker, wait_until};

use multifrost::registry::Registry;
use multifrost::{Options, Parent};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn stats(p: &Parent) -> Value {
    serde_json::from_str(&p.stats_json()).unwrap()
}

/// The test worker serving with `concurrency` ("default": the library's).
fn spawn(concurrency: &str, private_link: bool, heartbeat: Option<(u32, u32)>) -> Parent {
    temp_home();
    let mut o = Options {
        private_link,
        ..Options::default()
    };
    if let Some((interval, timeout)) = heartbeat {
        o.set_heartbeat(interval, timeout, 3).unwrap();
    }
    let args = ["--concurrency".to_owned(), concurrency.to_owned()];
    let p = Parent::spawn(&test_worker(), &args, o).expect("spawn test worker");
    let want = if private_link { "link" } else { "zmq" };
    assert_eq!(stats(&p)["transport"], want);
    p
}

/// `callers` threads each make `rounds` calls of `hold_ms(ms)` at once;
/// the most `hold_ms` calls the worker ever ran at the same time.
fn most_at_once(p: &Arc<Parent>, callers: usize, rounds: usize, ms: i64) -> i64 {
    let start = Arc::new(Barrier::new(callers));
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let (p, start) = (Arc::clone(p), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..rounds {
                    let r = p.call("hold_ms", &int_args(&[ms]), 30_000).unwrap();
                    assert_eq!(int(r.bytes()), ms);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    int(p
        .call("most_holding", &int_args(&[]), 10_000)
        .unwrap()
        .bytes())
}

#[test]
fn eight_callers_keep_a_pool_of_eight_busy_at_once() {
    let p = Arc::new(spawn("8", true, None));
    assert_eq!(most_at_once(&p, 8, 10, 50), 8);
}

#[test]
fn a_pool_of_thirty_two_runs_eight_callers_at_once() {
    let p = Arc::new(spawn("32", false, None));
    assert_eq!(most_at_once(&p, 8, 10, 50), 8);
}

#[test]
fn the_default_pool_runs_one_handler_at_a_time() {
    // Handlers need not be thread-safe unless the user asks for more.
    let p = Arc::new(spawn("default", true, None));
    assert_eq!(most_at_once(&p, 4, 5, 20), 1);
}

/// Every handler slot blocked for 3 s, heartbeats every 100 ms with a 1 s
/// timeout: none is missed.
fn heartbeats_echoed_while_blocked(concurrency: usize, private_link: bool) {
    let p = Arc::new(spawn(
        &concurrency.to_string(),
        private_link,
        Some((100, 1000)),
    ));
    let most = most_at_once(&p, concurrency, 1, 3000);
    let s = stats(&p);
    assert_eq!(s["heartbeat_misses"], 0, "{s}");
    assert_eq!(s["healthy"], true, "{s}");
    assert_eq!(s["requests_failed"], 0, "{s}");
    assert_eq!(most, concurrency as i64, "not every handler slot was held");
}

#[test]
fn heartbeats_with_the_one_handler_blocked_over_the_link() {
    heartbeats_echoed_while_blocked(1, true);
}

#[test]
fn heartbeats_with_the_one_handler_blocked_over_zeromq() {
    heartbeats_echoed_while_blocked(1, false);
}

#[test]
fn heartbeats_with_four_handlers_blocked_over_the_link() {
    heartbeats_echoed_while_blocked(4, true);
}

#[test]
fn heartbeats_with_four_handlers_blocked_over_zeromq() {
    heartbeats_echoed_while_blocked(4, false);
}

#[test]
fn sigterm_ends_a_service_whose_handlers_are_all_blocked() {
    temp_home();
    let id = "svc-blocked-sigterm";
    let mut w = Command::new(test_worker())
        .args(["--service", id, "--concurrency", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = Registry::for_user().unwrap();
    reg.discover(id, Duration::from_secs(10)).unwrap();
    let p = Arc::new(Parent::connect(id, Options::default()).unwrap());
    // Both slots hold for a minute: only a driver that reads regardless
    // sees the signal before then.
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.call("hold_ms", &int_args(&[60_000]), 90_000))
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || stats(&p)["in_flight"] == 2),
        "{}",
        p.stats_json()
    );
    // Time for both calls to reach their handlers: the signal must come
    // while they hold every slot (a worker that reads regardless sees it
    // either way).
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: a plain kill(2) of the child we started.
    unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    let exited = wait_until(Duration::from_secs(20), || w.try_wait().unwrap().is_some());
    if !exited {
        let _ = w.kill();
    }
    let status = w.wait().unwrap();
    assert!(exited, "the worker was still running 20 s after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(reg.lookup(id).is_none(), "the service is still registered");
    // The blocked calls end with an error, not a result.
    p.close();
    for c in callers {
        assert!(c.join().unwrap().is_err());
    }
}

/// By the time `next` reports `Closed`, the service's registry entry is
/// gone, so a process that leaves at once leaves nothing behind (the Node
/// and Python bindings rely on it). Stopped from another thread while this
/// one waits in `next`, many times over, to give the race its chances.
#[test]
fn a_service_is_unregistered_before_next_reports_closed() {
    use multifrost::{ErrorKind, Mode, Worker};
    temp_home();
    let reg = Registry::for_user().unwrap();
    for round in 0..20 {
        let id = format!("unregistered-before-closed-{round}");
        let w = Arc::new(Worker::new(Mode::Service(id.clone())).unwrap());
        w.set_handle_signals(false);
        w.register_pull("never").unwrap();
        w.start().unwrap();
        assert!(reg.lookup(&id).is_some(), "round {round}: not registered");
        let stopper = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.stop())
        };
        let e = match w.next(Some(Duration::from_secs(30))) {
            Ok(Some(_)) => panic!("round {round}: a call nobody made"),
            Ok(None) => panic!("round {round}: still serving 30 s after stop"),
            Err(e) => e,
        };
        assert_eq!(e.kind, ErrorKind::Closed, "round {round}: {e}");
        assert!(
            reg.lookup(&id).is_none(),
            "round {round}: next said closed with the entry still registered: {:?}",
            reg.read().get(&id)
        );
        stopper.join().unwrap();
        w.join();
    }
}
