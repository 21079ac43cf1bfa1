//! A parent's memory while it lives: a busy parent must not keep anything
//! per finished call. Alone in its own test binary, so malloc's counters
//! see only this test.

mod common;
use common::{heap_in_use, int, int_args, temp_home, test_worker};

use multifrost::parent::Done;
use multifrost::{Options, Parent};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Keeps 64 async calls of `add(i, 1)` in flight until `n` have ended;
/// panics on a wrong result.
fn run_calls(parent: &Parent, n: i64) {
    let state = Arc::new((Mutex::new((0i64, 0i64)), Condvar::new())); // (in flight, done)
    for i in 0..n {
        {
            let (m, cv) = &*state;
            let mut s = m.lock().unwrap();
            while s.0 >= 64 {
                s = cv.wait(s).unwrap();
            }
            s.0 += 1;
        }
        let st = Arc::clone(&state);
        parent
            .call_async(
                "add",
                &int_args(&[i, 1]),
                10_000,
                Done::Callback(Box::new(move |outcome| {
                    let v = outcome.map(|r| int(r.bytes()));
                    assert_eq!(v.ok(), Some(i + 1), "add({i}, 1)");
                    let (m, cv) = &*st;
                    let mut s = m.lock().unwrap();
                    s.0 -= 1;
                    s.1 += 1;
                    cv.notify_all();
                })),
            )
            .unwrap();
    }
    let (m, cv) = &*state;
    let mut s = m.lock().unwrap();
    while s.1 < n {
        s = cv.wait_timeout(s, Duration::from_secs(10)).unwrap().0;
    }
}

#[test]
fn finished_calls_leave_nothing_behind_while_the_parent_lives() {
    temp_home();
    let parent = Parent::spawn(&test_worker(), &[], Options::default()).unwrap();
    // Warm up (buffers, tables and pools reach their working size), then
    // measure over many more calls than any of those hold. Every call has
    // the default 30 s timeout, so a parent that kept something per call
    // until its deadline would grow by megabytes here.
    run_calls(&parent, 20_000);
    let before = heap_in_use();
    run_calls(&parent, 200_000);
    let after = heap_in_use();
    let grown = after.saturating_sub(before);
    assert!(
        grown < 2 << 20,
        "the heap grew by {} KiB over 200 000 finished calls",
        grown / 1024
    );
    parent.close();
}
