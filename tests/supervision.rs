//! Supervision and discovery, end to end with real processes: crash
//! handling, restart, heartbeats, breaker, chatty workers, death with the
//! parent, connect mode and the registry under contention.

mod common;
use common::{int, int_args, temp_home, test_worker, wait_until};

use multifrost::registry::Registry;
use multifrost::{ErrorKind, Options, Parent};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn spawn(options: Options) -> Parent {
    temp_home();
    Parent::spawn(&test_worker(), &[], options).expect("spawn test worker")
}

/// Spawns the test worker over the private link or, with `link` false,
/// over ZeroMQ alone.
fn spawn_on(mut options: Options, link: bool) -> Parent {
    options.private_link = link;
    let p = spawn(options);
    assert_eq!(stats(&p)["transport"], if link { "link" } else { "zmq" });
    p
}

fn stats(p: &Parent) -> Value {
    serde_json::from_str(&p.stats_json()).unwrap()
}

fn kill(pid: i64, sig: i32) {
    unsafe { libc::kill(pid as i32, sig) };
}

fn pid_of(p: &Parent) -> i64 {
    int(p.call("pid", &int_args(&[]), 5000).unwrap().bytes())
}

#[test]
fn sigkill_ends_every_pending_call_at_once_on_the_link() {
    sigkill_ends_every_pending_call_at_once(true);
}

#[test]
fn sigkill_ends_every_pending_call_at_once_over_zmq() {
    sigkill_ends_every_pending_call_at_once(false);
}

fn sigkill_ends_every_pending_call_at_once(link: bool) {
    let p = Arc::new(spawn_on(Options::default(), link));
    let pid = pid_of(&p);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.call("sleep_ms", &int_args(&[30_000]), 60_000).err())
        })
        .collect();
    assert!(wait_until(Duration::from_secs(30), || stats(&p)
        ["in_flight"]
        == 16));
    kill(pid, libc::SIGKILL);
    // The exit's status and signal show that the kill ended the calls, not
    // a timeout (60 s) or the handlers (30 s).
    for c in calls {
        let err = c.join().unwrap().expect("the call must fail");
        assert_eq!(err.kind, ErrorKind::WorkerExited, "{err}");
        assert!(err.message.contains("signal 9 (SIGKILL)"), "{err}");
    }
    // Without auto-restart, later calls fail at once with the same cause.
    let err = p.call("pid", &int_args(&[]), 5000).err().unwrap();
    assert_eq!(err.kind, ErrorKind::WorkerExited);
    assert_eq!(stats(&p)["worker_pid"], 0);
}

#[test]
fn auto_restart_brings_a_new_process_on_the_link() {
    auto_restart_brings_a_new_process(true);
}

#[test]
fn auto_restart_brings_a_new_process_over_zmq() {
    auto_restart_brings_a_new_process(false);
}

fn auto_restart_brings_a_new_process(link: bool) {
    let p = spawn_on(
        Options {
            auto_restart: 2,
            ..Options::default()
        },
        link,
    );
    let first = pid_of(&p);
    kill(first, libc::SIGKILL);
    let mut second = None;
    assert!(wait_until(Duration::from_secs(10), || {
        second = p
            .call("pid", &int_args(&[]), 2000)
            .ok()
            .map(|r| int(r.bytes()));
        second.is_some()
    }));
    let second = second.unwrap();
    assert_ne!(first, second);
    let s = stats(&p);
    assert_eq!(s["restarts"], 1);
    assert_eq!(s["worker_pid"], second);
    // The new process got a private link of its own (or the new port).
    assert_eq!(s["transport"], if link { "link" } else { "zmq" });
    assert_eq!(
        int(p.call("add", &int_args(&[2, 3]), 5000).unwrap().bytes()),
        5
    );
}

#[test]
fn restart_limit_opens_the_breaker_on_the_link() {
    restart_limit_opens_the_breaker(true);
}

#[test]
fn restart_limit_opens_the_breaker_over_zmq() {
    restart_limit_opens_the_breaker(false);
}

fn restart_limit_opens_the_breaker(link: bool) {
    let p = spawn_on(
        Options {
            auto_restart: 1,
            ..Options::default()
        },
        link,
    );
    kill(pid_of(&p), libc::SIGKILL);
    let mut second = 0;
    assert!(wait_until(Duration::from_secs(10), || {
        p.call("pid", &int_args(&[]), 2000)
            .map(|r| second = int(r.bytes()))
            .is_ok()
    }));
    kill(second, libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || stats(&p)
        ["circuit_state"]
        == "open"));
    let err = p.call("pid", &int_args(&[]), 2000).err().unwrap();
    assert!(
        matches!(err.kind, ErrorKind::CircuitOpen | ErrorKind::WorkerExited),
        "{err}"
    );
}

#[test]
fn a_busy_worker_does_not_miss_heartbeats() {
    let mut o = Options::default();
    // Heartbeats every 100 ms, each given 2 s (a busy 2-core machine meets
    // that): a worker that answered none while its handler ran would miss
    // two in the 5 s of the call.
    o.set_heartbeat(100, 2000, 2).unwrap();
    let p = spawn(o);
    let r = p.call("sleep_ms", &int_args(&[5000]), 10_000).unwrap();
    assert_eq!(int(r.bytes()), 5000);
    let s = stats(&p);
    assert_eq!(s["heartbeat_misses"], 0, "{s}");
    assert_eq!(s["healthy"], true);
    assert!(s["heartbeat_rtt_avg_ms"].as_f64().unwrap() > 0.0);
}

/// Times any thread of process `pid` has gone to sleep so far (voluntary
/// context switches: being preempted on a busy machine does not count).
fn switches(pid: i64) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

#[test]
fn a_worker_sleeps_between_calls() {
    // Its standby driver once watched the socket every millisecond for
    // 200 ms after each call: a call every 100 ms kept it waking about
    // 1000 times a second.
    let p = spawn(Options::default());
    let pid = pid_of(&p);
    let before = switches(pid);
    let started = Instant::now();
    for i in 0..10 {
        let r = p.call("add", &int_args(&[i, 1]), 5000).unwrap();
        assert_eq!(int(r.bytes()), i + 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (n, secs) = (switches(pid) - before, started.elapsed().as_secs_f64());
    // Each call wakes a few threads (under 100 sleeps a second in all); a
    // watch every millisecond is ~1000 a second.
    assert!(
        (n as f64) < 300.0 * secs,
        "the worker's threads slept {n} times in {secs:.1} s of one call per 100 ms"
    );
}

#[test]
fn breaker_opens_refuses_fast_half_opens_and_closes() {
    let mut o = Options::default();
    o.set_breaker(2, 300).unwrap();
    o.breaker_counts_remote_errors = true;
    let p = Arc::new(spawn(o));
    // Timeouts are not failures: a slow worker is not a broken one.
    for _ in 0..3 {
        let e = p.call("sleep_ms", &int_args(&[200]), 50).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_eq!(e.message, "call to 'sleep_ms' timed out after 50 ms");
    }
    let s = stats(&p);
    assert_eq!(
        (
            s["circuit_state"].as_str(),
            s["consecutive_failures"].as_u64()
        ),
        (Some("closed"), Some(0))
    );
    // Remote errors are, when asked: two in a row open it.
    for _ in 0..2 {
        let e = p.call("fail", &int_args(&[]), 0).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Remote);
    }
    let s = stats(&p);
    assert_eq!(
        (s["circuit_state"].as_str(), s["circuit_trips"].as_u64()),
        (Some("open"), Some(1))
    );
    // Refusals are not sent: a sent add would answer 3.
    for _ in 0..1000 {
        let e = p.call("add", &int_args(&[1, 2]), 0).err().unwrap();
        assert_eq!(e.kind, ErrorKind::CircuitOpen);
    }
    std::thread::sleep(Duration::from_millis(350));
    // The probe: one call goes through while the state is half-open.
    let probe = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || {
            p.call("sleep_ms", &int_args(&[3000]), 20_000)
                .map(|r| int(r.bytes()))
        })
    };
    assert!(wait_until(Duration::from_secs(10), || stats(&p)
        ["circuit_state"]
        == "half_open"));
    assert_eq!(
        p.call("add", &int_args(&[1, 2]), 0).err().unwrap().kind,
        ErrorKind::CircuitOpen
    );
    assert_eq!(probe.join().unwrap().unwrap(), 3000);
    let s = stats(&p);
    assert_eq!(s["circuit_state"], "closed");
    assert_eq!(
        int(p.call("add", &int_args(&[1, 2]), 0).unwrap().bytes()),
        3
    );
}

#[test]
fn a_remote_error_is_not_a_breaker_failure() {
    let mut o = Options::default();
    o.set_breaker(1, 60_000).unwrap();
    let p = spawn(o);
    let e = p.call("fail", &int_args(&[]), 0).err().unwrap();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Remote, "RuntimeError: requested failure")
    );
    assert_eq!(stats(&p)["circuit_state"], "closed");
}

#[test]
fn a_chatty_worker_never_blocks_and_its_lines_reach_the_log() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    multifrost::log::set_sink(Some(Arc::new(move |json: &str| {
        let v: Value = serde_json::from_str(json).unwrap();
        if v["event"] == "worker_output" && v["message"].as_str().unwrap().contains("spam line") {
            sink.lock()
                .unwrap()
                .push(v["message"].as_str().unwrap().to_owned());
        }
    })));
    let p = spawn(Options::default());
    let r = p.call("spam", &int_args(&[20_000]), 30_000).unwrap();
    assert_eq!(int(r.bytes()), 20_000);
    assert!(wait_until(Duration::from_secs(10), || lines
        .lock()
        .unwrap()
        .len()
        >= 20_000));
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 20_000);
    assert!(
        lines[0].starts_with("[test_worker STDOUT]: spam line 0 "),
        "{}",
        lines[0]
    );
    assert!(lines[19_999].starts_with("[test_worker STDOUT]: spam line 19999 "));
}

#[test]
fn the_worker_dies_with_its_parent() {
    use std::io::{BufRead, BufReader};
    temp_home();
    // The test worker in its parent role: spawns a second one, prints its pid, waits.
    let mut parent: Child = Command::new(test_worker())
        .arg("--parent-of-worker")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(parent.stdout.take().unwrap());
    let mut line = String::new();
    let pid: i64 = loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "helper parent printed no pid"
        );
        if let Some(p) = line.trim().strip_prefix("WORKER_PID=") {
            break p.parse().unwrap();
        }
    };
    assert!(multifrost::registry::pid_alive(pid as i32));
    parent.kill().unwrap();
    parent.wait().unwrap();
    let gone = wait_until(Duration::from_secs(5), || {
        // A zombie still answers kill(0); its state letter says it is dead.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z")
    });
    assert!(gone, "worker {pid} outlived its parent");
}

fn service_worker(id: &str) -> Child {
    temp_home();
    Command::new(test_worker())
        .args(["--service", id])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_registered(id: &str) -> multifrost::registry::Entry {
    Registry::for_user()
        .unwrap()
        .discover(id, Duration::from_secs(10))
        .unwrap()
}

#[test]
fn connect_mode_finds_a_service_by_id() {
    let mut w = service_worker("svc-connect");
    wait_registered("svc-connect");
    let p = Parent::connect("svc-connect", Options::default()).unwrap();
    assert_eq!(
        int(p.call("add", &int_args(&[40, 2]), 5000).unwrap().bytes()),
        42
    );
    assert_eq!(pid_of(&p), i64::from(w.id()));
    drop(p);
    kill(i64::from(w.id()), libc::SIGTERM);
    assert!(w.wait().unwrap().success());
    assert!(Registry::for_user()
        .unwrap()
        .lookup("svc-connect")
        .is_none());

    let mut o = Options::default();
    o.set_connect_timeout(300).unwrap();
    let e = Parent::connect("svc-nobody", o).err().unwrap();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.message, "service 'svc-nobody' not found within 0.3 s");
}

#[test]
fn a_parent_follows_a_service_that_restarted_on_a_new_port() {
    let mut w = service_worker("svc-moving");
    let first = wait_registered("svc-moving");
    let mut o = Options::default();
    o.set_heartbeat(100, 1000, 1).unwrap();
    let p = Parent::connect("svc-moving", o).unwrap();
    assert_eq!(pid_of(&p), i64::from(w.id()));
    kill(i64::from(w.id()), libc::SIGTERM);
    w.wait().unwrap();
    let mut w2 = service_worker("svc-moving");
    let second = wait_registered("svc-moving");
    assert_ne!(first.port, second.port);
    let mut pid = 0;
    assert!(wait_until(Duration::from_secs(20), || {
        p.call("pid", &int_args(&[]), 2000)
            .map(|r| pid = int(r.bytes()))
            .is_ok()
    }));
    assert_eq!(pid, i64::from(w2.id()));
    w2.kill().unwrap();
    w2.wait().unwrap();
}

#[test]
fn twenty_workers_register_at_once_and_vanish_on_sigterm() {
    temp_home();
    let reg = Registry::for_user().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A reader checks the file is valid JSON at every moment.
    let reader = {
        let stop = Arc::clone(&stop);
        let file = reg.file();
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string(&file) {
                    let v: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {text}"));
                    assert!(v.is_object());
                    reads += 1;
                }
            }
            reads
        })
    };
    let ids: Vec<String> = (0..20).map(|i| format!("svc-many-{i}")).collect();
    let mut workers: Vec<Child> = ids.iter().map(|id| service_worker(id)).collect();
    let ports: std::collections::HashSet<u16> =
        ids.iter().map(|id| wait_registered(id).port).collect();
    assert_eq!(ports.len(), 20, "ports must be distinct");
    for w in &workers {
        kill(i64::from(w.id()), libc::SIGTERM);
    }
    for w in &mut workers {
        assert!(w.wait().unwrap().success());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    let left: Vec<_> = reg
        .list()
        .into_iter()
        .filter(|(id, ..)| id.starts_with("svc-many-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn eight_workers_racing_for_one_id_leave_exactly_one() {
    let mut workers: Vec<Child> = (0..8).map(|_| service_worker("svc-race")).collect();
    let winner = wait_registered("svc-race");
    assert!(
        workers.iter().any(|w| w.id() == winner.pid as u32),
        "the registered pid {} is none of the eight",
        winner.pid
    );
    // The losers exit with status 3 and say why (however long a busy
    // machine takes them); the winner is still serving after they all did.
    for w in workers.iter_mut().filter(|w| w.id() != winner.pid as u32) {
        assert_eq!(w.wait_timeout_ms(30_000), Some(3), "a loser's exit status");
        let mut text = String::new();
        std::io::Read::read_to_string(w.stderr.as_mut().unwrap(), &mut text).unwrap();
        assert!(text.contains("already running"), "{text}");
    }
    let winner_child = workers
        .iter_mut()
        .find(|w| w.id() == winner.pid as u32)
        .unwrap();
    assert_eq!(winner_child.try_wait().unwrap(), None, "the winner exited");
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
}

trait WaitTimeout {
    fn wait_timeout_ms(&mut self, ms: u64) -> Option<i32>;
}

impl WaitTimeout for Child {
    fn wait_timeout_ms(&mut self, ms: u64) -> Option<i32> {
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            if let Some(s) = self.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

#[test]
fn a_call_right_after_a_crash_fails_at_once() {
    for _ in 0..5 {
        let p = spawn(Options::default());
        let e = p.call("crash", &int_args(&[]), 20_000).err().unwrap();
        assert_eq!(e.kind, ErrorKind::WorkerExited, "{e}");
        // Not sent to nobody: a call that waited for its 20 s timeout would
        // end with ErrorKind::Timeout.
        let e = p.call("add", &int_args(&[1, 2]), 20_000).err().unwrap();
        assert_eq!(e.kind, ErrorKind::WorkerExited, "{e}");
    }
}

#[test]
fn a_program_that_is_not_a_worker_is_named_as_such_when_start_up_times_out() {
    let mut options = Options::default();
    options.set_start_timeout(300).unwrap();
    let e = Parent::spawn("/bin/sleep", &["100".to_owned()], options)
        .err()
        .expect("sleep is not a worker");
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(
        e.message.contains("did not answer within 300 ms"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("may not be a multifrost worker"),
        "{}",
        e.message
    );
    assert!(e.message.contains("COMLINK_ZMQ_PORT"), "{}", e.message);
}

#[test]
fn a_call_made_in_a_crashs_completion_fails_at_once_on_the_link() {
    a_call_made_in_a_crashs_completion_fails_at_once(true);
}

#[test]
fn a_call_made_in_a_crashs_completion_fails_at_once_over_zmq() {
    a_call_made_in_a_crashs_completion_fails_at_once(false);
}

/// The parent is marked dead before the crash's calls complete, so a call
/// started from that completion (on the driver thread, as a binding reacting
/// to the failure does) fails at once with the exit, instead of being sent
/// to nobody and ending at its timeout. The bindings rely on it.
fn a_call_made_in_a_crashs_completion_fails_at_once(link: bool) {
    use multifrost::parent::Done;
    use std::sync::mpsc;
    for round in 0..5 {
        let p = Arc::new(spawn_on(Options::default(), link));
        assert_eq!(
            int(p.call("add", &int_args(&[1, 2]), 5000).unwrap().bytes()),
            3
        );
        let (tx, rx) = mpsc::channel();
        let inner = Arc::clone(&p);
        p.call_async(
            "crash",
            &int_args(&[]),
            60_000,
            Done::Callback(Box::new(move |crash| {
                let tx2 = tx.clone();
                let started = Instant::now();
                let sent = inner.call_async(
                    "add",
                    &int_args(&[1, 2]),
                    60_000,
                    Done::Callback(Box::new(move |r| {
                        let _ = tx2.send(("in completion", r.err(), started.elapsed()));
                    })),
                );
                let _ = tx.send(("crash", crash.err(), Duration::ZERO));
                if let Err(e) = sent {
                    // Refused before it was started: as good as failing at once.
                    let _ = tx.send(("in completion", Some(e), Duration::ZERO));
                }
            })),
        )
        .unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            // A call that waited for its timeout would arrive after 60 s.
            got.push(
                rx.recv_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|_| panic!("round {round} ({link}): no outcome, have {got:?}")),
            );
        }
        for (what, e, _) in &got {
            let e = e.as_ref().unwrap_or_else(|| panic!("{what}: succeeded"));
            assert_eq!(
                e.kind,
                ErrorKind::WorkerExited,
                "round {round}, {what}: {e}"
            );
        }
        drop(p);
    }
}
