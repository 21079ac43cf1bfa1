//! A parent waiting for a long call sleeps rather than spinning. Alone in
//! its own test binary: the CPU time it measures is this process's, all
//! threads, which in a shared binary would count the parallel tests too.

mod common;
use common::{int, int_args, temp_home, test_worker};

use multifrost::{Options, Parent};
use std::time::Duration;

fn spawn(options: Options) -> Parent {
    temp_home();
    Parent::spawn(&test_worker(), &[], options).expect("spawn test worker")
}

/// CPU time this process has used (all its threads), from getrusage.
fn cpu_time() -> Duration {
    let mut u = unsafe { std::mem::zeroed::<libc::rusage>() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[test]
fn a_parent_waiting_for_a_long_async_call_sleeps() {
    // The supervisor leads the socket for an async call nobody else waits
    // for; it once turned every wait into a poll that returned at once
    // after 100 ms of leading (a passed idle-drain time), burning a CPU.
    let p = spawn(Options::default());
    assert_eq!(
        int(p.call("add", &int_args(&[1, 2]), 5000).unwrap().bytes()),
        3
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let before = cpu_time();
    p.call_async(
        "sleep_ms",
        &int_args(&[1500]),
        10_000,
        multifrost::parent::Done::Callback(Box::new(move |r| {
            let _ = tx.send(r.map(|r| int(r.bytes())));
        })),
    )
    .unwrap();
    let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(r.unwrap(), 1500);
    let used = cpu_time() - before;
    // Waiting 1.5 s costs heartbeats and wake-ups, far from a busy CPU (1.4 s).
    assert!(
        used < Duration::from_millis(300),
        "used {used:?} of CPU while waiting 1.5 s"
    );
}
