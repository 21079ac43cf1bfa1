//! Messages exactly at the maximum message size and one byte over, in both
//! directions (a call's arguments, a worker's result) and on both
//! transports (the private link and the DEALER): the first is answered;
//! the second fails, and the connection still answers afterwards.
//!
//! A message's size is its payload: the encoded call or response. The
//! tests build arguments and results whose payload is exactly the limit by
//! encoding the same message with the codec and measuring it.

mod common;
use common::{int, int_args, temp_home, test_worker, wait_until};

use multifrost::codec::Encoder;
use multifrost::{ErrorKind, Options, Parent};
use serde_json::Value;
use std::time::Duration;

/// The limit under test (1 MiB): small enough to be quick, large enough
/// for every length below to take the same bin32 header.
const MAX: usize = 1 << 20;
/// An id as the parent makes them (36 bytes of text).
const ID: &str = "00000000-0000-4000-8000-000000000000";

/// A msgpack bin32 of `n` bytes.
fn bin(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 5);
    out.push(0xc6);
    out.extend_from_slice(&(n as u32).to_be_bytes());
    out.extend(std::iter::repeat_n(b'x', n));
    out
}

/// Arguments `[bin(n)]`.
fn bin_args(n: usize) -> Vec<u8> {
    let mut out = vec![0x91];
    out.extend(bin(n));
    out
}

/// The payload size of a call of `function` with `args` and a timeout
/// (its time left takes the same 9 bytes whatever its value).
fn call_size(function: &str, args: &[u8]) -> usize {
    let mut buf = Vec::new();
    Encoder::new(&mut buf).call(ID, function, args, "default", Some(0));
    buf.len()
}

/// The payload size of a response carrying `result`.
fn response_size(result: &[u8]) -> usize {
    let mut buf = Vec::new();
    Encoder::new(&mut buf).response(Some(ID), result);
    buf.len()
}

/// Arguments `[bin(n)]` for `echo` whose call is exactly `size` bytes.
fn echo_args_of_size(size: usize) -> Vec<u8> {
    let overhead = call_size("echo", &bin_args(70_000)) - 70_000;
    let args = bin_args(size - overhead);
    assert_eq!(call_size("echo", &args), size);
    args
}

/// The `n` for `bytes(n)` whose response is exactly `size` bytes.
fn result_len_of_size(size: usize) -> usize {
    let overhead = response_size(&bin(70_000)) - 70_000;
    let n = size - overhead;
    assert_eq!(response_size(&bin(n)), size);
    n
}

fn spawn(private_link: bool, max: Option<usize>, worker_max: Option<usize>) -> Parent {
    temp_home();
    let mut o = Options {
        private_link,
        ..Options::default()
    };
    if let Some(max) = max {
        o.set_max_message_size(max as i64).unwrap();
    }
    let args: Vec<String> = worker_max
        .map(|m| vec!["--max-message-size".to_owned(), m.to_string()])
        .unwrap_or_default();
    let p = Parent::spawn(&test_worker(), &args, o).expect("spawn test worker");
    let transport = stats(&p)["transport"].as_str().unwrap().to_owned();
    assert_eq!(transport, if private_link { "link" } else { "zmq" });
    p
}

fn stats(p: &Parent) -> Value {
    serde_json::from_str(&p.stats_json()).unwrap()
}

/// The connection answers (a lost connection may take a reconnect first).
fn still_answers(p: &Parent) {
    let answered = wait_until(Duration::from_secs(20), || {
        p.call("add", &int_args(&[20, 22]), 2000)
            .is_ok_and(|r| int(r.bytes()) == 42)
    });
    assert!(
        answered,
        "no answer after the oversized message: {}",
        p.stats_json()
    );
}

fn call_at_the_parents_limit(private_link: bool) {
    let p = spawn(private_link, Some(MAX), None);
    let at = echo_args_of_size(MAX);
    let r = p
        .call("echo", &at, 20_000)
        .expect("a call of exactly the limit");
    assert_eq!(r.bytes(), &at[1..], "the echo of {} bytes", at.len() - 6);

    let sent = stats(&p)["requests_total"].as_u64().unwrap();
    let over = echo_args_of_size(MAX + 1);
    let e = p
        .call("echo", &over, 20_000)
        .err()
        .expect("a call one byte over");
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert_eq!(
        e.message,
        format!(
            "a call of {} bytes exceeds the maximum message size of {MAX} bytes",
            MAX + 1
        )
    );
    assert_eq!(
        stats(&p)["requests_total"],
        sent,
        "the refused call was sent"
    );
    still_answers(&p);
}

#[test]
fn a_call_at_the_parents_limit_is_answered_and_one_byte_over_refused_on_the_link() {
    call_at_the_parents_limit(true);
}

#[test]
fn a_call_at_the_parents_limit_is_answered_and_one_byte_over_refused_over_zmq() {
    call_at_the_parents_limit(false);
}

/// What an over-limit test checks of the failed call beyond its failing.
#[derive(Clone, Copy, PartialEq)]
enum Over {
    /// Any failure, then the connection answers again.
    Fails,
    /// A status that names the limit, not a timeout: this status and text.
    FailsClearly,
}

fn check_over(p: &Parent, e: &multifrost::Error, over: Over, kind: ErrorKind, text: &str) {
    if over == Over::FailsClearly {
        assert_ne!(e.kind, ErrorKind::Timeout, "{e}");
        assert!(e.message.contains("maximum message size"), "{e}");
        assert_eq!(e.kind, kind, "{e}");
        assert_eq!(e.message, text);
    }
    still_answers(p);
}

fn result_at_the_parents_limit(private_link: bool, over: Over) {
    let p = spawn(private_link, Some(MAX), None);
    let n = result_len_of_size(MAX);
    let r = p
        .call("bytes", &int_args(&[n as i64]), 20_000)
        .expect("a result of exactly the limit");
    assert_eq!(r.bytes(), &bin(n)[..]);
    // One byte over: the parent does not read it. The call fails (it is
    // not answered with a truncated or foreign value).
    let e = p
        .call("bytes", &int_args(&[n as i64 + 1]), 5000)
        .err()
        .expect("a result one byte over the limit");
    let text = format!(
        "the result of 'bytes' is {} bytes, over the maximum message size of {MAX} bytes",
        MAX + 1
    );
    check_over(&p, &e, over, ErrorKind::Protocol, &text);
}

#[test]
fn a_result_at_the_parents_limit_arrives_and_one_byte_over_fails_on_the_link() {
    result_at_the_parents_limit(true, Over::Fails);
}

#[test]
fn a_result_at_the_parents_limit_arrives_and_one_byte_over_fails_over_zmq() {
    result_at_the_parents_limit(false, Over::Fails);
}

#[test]
fn a_result_one_byte_over_the_parents_limit_fails_clearly_on_the_link() {
    result_at_the_parents_limit(true, Over::FailsClearly);
}

#[test]
fn a_result_one_byte_over_the_parents_limit_fails_clearly_over_zmq() {
    result_at_the_parents_limit(false, Over::FailsClearly);
}

fn call_at_the_workers_limit(private_link: bool, over: Over) {
    // The parent's own limit (64 MiB) lets the call go; the worker's is MAX.
    let p = spawn(private_link, None, Some(MAX));
    let at = echo_args_of_size(MAX);
    let r = p
        .call("echo", &at, 20_000)
        .expect("a call of exactly the worker's limit");
    assert_eq!(r.bytes(), &at[1..]);
    let e = p
        .call("echo", &echo_args_of_size(MAX + 1), 5000)
        .err()
        .expect("a call one byte over the worker's limit");
    let text = format!(
        "a call of {} bytes to 'echo' exceeds the worker's maximum message size of {MAX} bytes",
        MAX + 1
    );
    check_over(&p, &e, over, ErrorKind::Remote, &text);
}

#[test]
fn a_call_at_the_workers_limit_is_answered_and_one_byte_over_fails_on_the_link() {
    call_at_the_workers_limit(true, Over::Fails);
}

/// libzmq treats an over-ZMQ_MAXMSGSIZE frame as a protocol error, and a
/// connecting socket (a spawned worker's) does not reconnect after one: the
/// worker never heard from its parent again. The worker now holds its limit
/// itself (libzmq's is four times higher).
#[test]
fn a_call_at_the_workers_limit_is_answered_and_one_byte_over_fails_over_zmq() {
    call_at_the_workers_limit(false, Over::Fails);
}

#[test]
fn a_call_one_byte_over_the_workers_limit_fails_clearly_on_the_link() {
    call_at_the_workers_limit(true, Over::FailsClearly);
}

#[test]
fn a_call_one_byte_over_the_workers_limit_fails_clearly_over_zmq() {
    call_at_the_workers_limit(false, Over::FailsClearly);
}
