//! A stream's memory is bounded by its credit, on both sides: 10 000 items
//! of 1 MiB (10 GiB in all) pass through a parent and a worker whose peak
//! resident memory stays under 64 MiB each. Alone in its own test binary,
//! so this process's peak (VmHWM) is this test's.

mod common;
use common::{int, int_args, temp_home, test_worker, wait_until};

use multifrost::{Options, Parent};
use std::time::Duration;

/// A hang guard for what the test waits for; never a bound on speed.
const WAIT: Duration = Duration::from_secs(30);
const ITEMS: i64 = 10_000;
const ITEM_BYTES: usize = 1 << 20;
const CREDIT: i64 = 16; // the default stream credit
const LIMIT_KIB: u64 = 64 << 10;

/// A process's peak resident set size in KiB (VmHWM in /proc/PID/status).
fn peak_rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn call_int(p: &Parent, function: &str) -> i64 {
    int(p.call(function, &int_args(&[]), 20_000).unwrap().bytes())
}

#[test]
fn ten_thousand_items_of_one_mib_keep_both_sides_under_64_mib() {
    temp_home();
    let p = Parent::spawn(&test_worker(), &[], Options::default()).expect("spawn test worker");
    let stats: serde_json::Value = serde_json::from_str(&p.stats_json()).unwrap();
    assert_eq!(stats["transport"], "link", "the private link (the default)");
    let worker_pid = call_int(&p, "pid").to_string();
    // count(n, then 0, size): n items, each a bin of `size` bytes.
    let args = int_args(&[ITEMS, 0, ITEM_BYTES as i64]);
    let mut s = p.stream("count", &args, 20_000).unwrap();
    // The consumer sleeps first: the worker sends its credit and waits.
    assert!(
        wait_until(WAIT, || s.buffered() == CREDIT as usize),
        "{} items buffered",
        s.buffered()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        call_int(&p, "yielded"),
        CREDIT,
        "the worker ran past its credit"
    );
    assert_eq!(s.buffered(), CREDIT as usize);
    // Then it reads them all, in order.
    for i in 0..ITEMS {
        let item = s
            .next(Some(WAIT))
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended after {i} items"));
        let bytes = item.bytes();
        // A bin 32 header (5 bytes), then the item's bytes, each i as u8.
        assert_eq!(bytes.len(), ITEM_BYTES + 5, "item {i}");
        assert_eq!(
            (bytes[5], bytes[bytes.len() - 1]),
            (i as u8, i as u8),
            "item {i}"
        );
    }
    assert!(s.next(Some(WAIT)).unwrap().is_none(), "the stream ends");
    let parent_kib = peak_rss_kib("self");
    let worker_kib = peak_rss_kib(&worker_pid);
    eprintln!("peak RSS: parent {parent_kib} KiB, worker {worker_kib} KiB");
    assert!(
        parent_kib < LIMIT_KIB,
        "the parent's peak RSS is {parent_kib} KiB"
    );
    assert!(
        worker_kib < LIMIT_KIB,
        "the worker's peak RSS is {worker_kib} KiB"
    );
    p.close();
}
