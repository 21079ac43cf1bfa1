//! Streams end to end with real worker processes, on both transports: items
//! in order, credit that keeps a slow consumer's memory bounded, a stream
//! closed halfway stops its handler, an exit or an error after some items
//! ends it after them, and a plain call of a yielding handler gets the list.

mod common;
use common::{int, int_args, temp_home, test_worker, wait_until};

use multifrost::parent::Stream;
use multifrost::{ErrorKind, Options, Parent};
use serde_json::Value;
use std::time::Duration;

/// A hang guard for what a test waits for; never a bound on speed.
const WAIT: Duration = Duration::from_secs(30);

fn spawn(mut options: Options, link: bool) -> Parent {
    temp_home();
    options.private_link = link;
    let args = ["--concurrency".to_owned(), "4".to_owned()];
    let p = Parent::spawn(&test_worker(), &args, options).expect("spawn test worker");
    assert_eq!(stats(&p)["transport"], if link { "link" } else { "zmq" });
    p
}

fn stats(p: &Parent) -> Value {
    serde_json::from_str(&p.stats_json()).unwrap()
}

fn call_int(p: &Parent, function: &str) -> i64 {
    int(p.call(function, &int_args(&[]), 20_000).unwrap().bytes())
}

/// Every item until the end, as integers.
fn drain(s: &mut Stream) -> multifrost::Result<Vec<i64>> {
    let mut items = Vec::new();
    while let Some(item) = s.next(Some(WAIT))? {
        items.push(int(item.bytes()));
    }
    Ok(items)
}

#[test]
fn items_arrive_in_order_and_the_stream_ends_on_the_link() {
    items_arrive_in_order(true);
}

#[test]
fn items_arrive_in_order_and_the_stream_ends_over_zmq() {
    items_arrive_in_order(false);
}

fn items_arrive_in_order(link: bool) {
    let p = spawn(Options::default(), link);
    let mut s = p.stream("count", &int_args(&[1000]), 20_000).unwrap();
    assert_eq!(stats(&p)["streams_open"], 1);
    assert_eq!(drain(&mut s).unwrap(), (0..1000).collect::<Vec<_>>());
    assert!(s.next(Some(WAIT)).unwrap().is_none(), "ended stays ended");
    let st = stats(&p);
    assert_eq!(
        (st["streams_open"].as_u64(), st["stream_items"].as_u64()),
        (Some(0), Some(1000))
    );
    assert_eq!(st["requests_success"], 1);
    // A handler that does not stream: one answer, no items.
    let mut s = p.stream("add", &int_args(&[1, 2]), 20_000).unwrap();
    assert!(s.next(Some(WAIT)).unwrap().is_none());
}

#[test]
fn a_slow_consumer_holds_the_worker_at_its_credit() {
    let mut o = Options::default();
    o.set_stream_credit(8).unwrap();
    let p = spawn(o, true);
    let mut s = p
        .stream("count", &int_args(&[100_000, 0, 1000]), 20_000)
        .unwrap();
    // Nothing taken: the worker sends its 8 items and waits.
    assert!(wait_until(WAIT, || s.buffered() == 8));
    assert_eq!(call_int(&p, "yielded"), 8);
    assert_eq!(s.buffered(), 8, "no item beyond the credit");
    // Taking half the window grants that much again.
    for _ in 0..4 {
        assert!(s.next(Some(WAIT)).unwrap().is_some());
    }
    assert!(wait_until(WAIT, || call_int(&p, "yielded") == 12));
    assert!(wait_until(WAIT, || s.buffered() == 8));
    assert_eq!(call_int(&p, "yielded"), 12);
    // Read 3000 items of 1000 bytes: the parent never holds more than 8.
    let mut most = 0;
    for i in 4..3004u64 {
        let item = s.next(Some(WAIT)).unwrap().expect("an item");
        assert_eq!(item.bytes().len(), 1003);
        assert_eq!(item.bytes()[3], i as u8, "item {i} in order");
        most = most.max(s.buffered());
    }
    assert!(most <= 8, "{most} items held");
    s.close();
}

#[test]
fn the_default_window_widens_for_small_items_and_stays_for_large_ones() {
    let p = spawn(Options::default(), true);
    let window = |size: i64| {
        let before = call_int(&p, "yielded");
        let mut s = p
            .stream("count", &int_args(&[1_000_000, 0, size]), 20_000)
            .unwrap();
        // Take a few hundred items (credit goes back 8 at a time at 16),
        // then none: the worker fills the window.
        const TAKEN: i64 = 320;
        for _ in 0..TAKEN {
            assert!(s.next(Some(WAIT)).unwrap().is_some());
        }
        let mut last = -1;
        assert!(wait_until(WAIT, || {
            // Settled: the worker yielded nothing more since the last look.
            let now = call_int(&p, "yielded");
            std::mem::replace(&mut last, now) == now && s.buffered() as i64 == now - before - TAKEN
        }));
        let held = s.buffered();
        s.close();
        held
    };
    // 1-byte items: far more than 16 ahead, at most 256.
    let small = window(0);
    assert!(small > 16 && small <= 256, "{small} small items held");
    // 512 KiB items: 16, as it started (1 MiB of them would be 2).
    assert_eq!(window(512 * 1024), 16);
}

#[test]
fn a_stream_closed_halfway_stops_its_handler_on_the_link() {
    closed_halfway(true);
}

#[test]
fn a_stream_closed_halfway_stops_its_handler_over_zmq() {
    closed_halfway(false);
}

fn closed_halfway(link: bool) {
    // An exact window, so how far the handler ran is known.
    let mut o = Options::default();
    o.set_stream_credit(16).unwrap();
    let p = spawn(o, link);
    let mut s = p.stream("count", &int_args(&[1_000_000]), 20_000).unwrap();
    for i in 0..10 {
        assert_eq!(int(s.next(Some(WAIT)).unwrap().unwrap().bytes()), i);
    }
    drop(s);
    assert!(wait_until(WAIT, || call_int(&p, "streams_cancelled") == 1));
    // It stopped within its window of what was taken.
    let yielded = call_int(&p, "yielded");
    assert!((10..=10 + 16).contains(&yielded), "{yielded}");
    let st = stats(&p);
    assert_eq!(
        (st["cancels"].as_u64(), st["streams_open"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(st["escalations"], 0);
    assert_eq!(
        st["dropped_unknown"], 0,
        "late items of a closed stream are expected"
    );
}

#[test]
fn an_error_after_some_items_comes_after_them() {
    let p = spawn(Options::default(), true);
    let mut s = p.stream("count", &int_args(&[3, 1]), 20_000).unwrap();
    let mut items = Vec::new();
    let e = loop {
        match s.next(Some(WAIT)) {
            Ok(Some(item)) => items.push(int(item.bytes())),
            Ok(None) => panic!("ended without the error"),
            Err(e) => break e,
        }
    };
    assert_eq!(items, [0, 1, 2]);
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::Remote, "ValueError: failed after the items")
    );
}

#[test]
fn a_worker_that_dies_mid_stream_ends_it_with_its_exit() {
    let p = spawn(Options::default(), false);
    let mut s = p.stream("count", &int_args(&[5, 2]), 20_000).unwrap();
    let e = drain(&mut s).expect_err("the exit");
    assert_eq!(e.kind, ErrorKind::WorkerExited, "{e}");
    assert_eq!(stats(&p)["streams_open"], 0);
}

#[test]
fn a_plain_call_of_a_yielding_handler_gets_the_list() {
    let p = spawn(Options::default(), true);
    let r = p.call("count", &int_args(&[4]), 20_000).unwrap();
    assert_eq!(r.bytes(), [0x94, 0, 1, 2, 3]);
    let r = p.call("count", &int_args(&[0]), 20_000).unwrap();
    assert_eq!(r.bytes(), [0xc0], "no item: the handler's own answer");
}

#[test]
fn a_plain_call_whose_items_outgrow_one_answer_gets_an_error_saying_so() {
    temp_home();
    let args = ["--max-message-size".to_owned(), "4096".to_owned()];
    let p = Parent::spawn(&test_worker(), &args, Options::default()).unwrap();
    // 100 small integers fit in one answer of 4096 bytes; 5000 do not.
    let list = p.call("count", &int_args(&[100]), 20_000).unwrap();
    assert_eq!(&list.bytes()[..1], &[0xdc], "an array of 100");
    let e = p.call("count", &int_args(&[5000]), 20_000).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Remote);
    assert!(
        e.message
            .contains("yielded for a caller that asked for no stream do not fit in one answer")
            && e.message.contains("maximum message size of 4096 bytes"),
        "{}",
        e.message
    );
    // As a stream the same items arrive: the limit is per message.
    let mut s = p.stream("count", &int_args(&[5000]), 20_000).unwrap();
    assert_eq!(drain(&mut s).unwrap().len(), 5000);
    let sum = p.call("add", &int_args(&[1, 2]), 20_000).unwrap();
    assert_eq!(int(sum.bytes()), 3);
}

#[test]
fn the_calls_timeout_is_the_time_between_items_and_never_the_consumers() {
    let mut o = Options::default();
    o.set_stream_credit(4).unwrap();
    let p = spawn(o, true);
    // The worker waits for this consumer, longer than the timeout: that
    // is the consumer's time, not the worker's, and the stream goes on.
    let mut s = p.stream("count", &int_args(&[100]), 300).unwrap();
    assert!(wait_until(WAIT, || s.buffered() == 4));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(drain(&mut s).unwrap(), (0..100).collect::<Vec<_>>());
    // No item within the timeout while the worker owes some: a timeout.
    let mut s = p.stream("sleep_ms", &int_args(&[2000]), 100).unwrap();
    assert_eq!(
        s.next(Some(WAIT)).err().map(|e| e.kind),
        Some(ErrorKind::Timeout)
    );
    // A wait of the caller's own that runs out leaves the stream open.
    // (The item may be there already: a zero wait then takes it.)
    let mut s = p.stream("count", &int_args(&[1]), 20_000).unwrap();
    let taken = match s.next(Some(Duration::ZERO)) {
        Ok(Some(_)) => 1,
        Err(e) if e.kind == ErrorKind::Timeout => 0,
        other => panic!("a zero wait: {:?}", other.map(|o| o.is_some())),
    };
    assert_eq!(taken + drain(&mut s).unwrap().len(), 1);
}

#[test]
fn a_stream_is_cancelled_from_another_thread_while_its_next_waits() {
    let p = spawn(Options::default(), true);
    // Nothing comes: the handler sleeps before it would answer.
    let mut s = p.stream("sleep_ms", &int_args(&[60_000]), 120_000).unwrap();
    let canceller = s.canceller();
    let waiter = std::thread::spawn(move || s.next(None).map(|o| o.is_some()));
    // Cancelling before the waiter reached next() ends it all the same.
    assert!(canceller.cancel());
    let e = waiter.join().unwrap().expect_err("cancelled");
    assert_eq!(e.kind, ErrorKind::Cancelled);
    assert!(!canceller.cancel(), "ended already");
    assert_eq!(stats(&p)["streams_open"], 0);
}
