//! A parent's memory while it lives: a busy parent must not keep anything
//! per finished call. Alone in its own test binary, so malloc's counters
//! see only this test.

mod common;
use common::{heap_in_use, int, int_args, temp_home, test_worker};

use multifrost::parent::Done;
use multifrost::{Options, Parent};
use std::sync::mpsc;
use std::time::Duration;

/// Keeps 64 async calls of `add(i, 1)` in flight until `n` have ended.
/// Each outcome reaches this thread through a channel and is checked here:
/// a panic inside the completion callback would be caught and dropped, and
/// the call counted as never ending, so a wrong answer would become a wait.
fn run_calls(parent: &Parent, n: i64) {
    let (tx, rx) = mpsc::channel::<(i64, Result<i64, String>)>();
    let mut in_flight = 0;
    let mut next = 0;
    let mut done = 0;
    while done < n {
        while in_flight < 64 && next < n {
            let tx = tx.clone();
            let i = next;
            parent
                .call_async(
                    "add",
                    &int_args(&[i, 1]),
                    10_000,
                    Done::Callback(Box::new(move |outcome| {
                        let _ = tx.send((
                            i,
                            outcome.map(|r| int(r.bytes())).map_err(|e| e.to_string()),
                        ));
                    })),
                )
                .unwrap();
            in_flight += 1;
            next += 1;
        }
        let (i, v) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{in_flight} calls in flight, none ended in 30 s: {e}"));
        assert_eq!(v, Ok(i + 1), "add({i}, 1)");
        in_flight -= 1;
        done += 1;
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
