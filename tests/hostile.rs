//! Hostile frames against a live worker and a live parent, both directions,
//! over real sockets (PROTOCOL.md §4, §5, §7; issue 7 item 1).
//!
//! Worker side: an in-process `multifrost::Worker` in service mode (its port
//! comes from the registry in a temporary HOME, so no port is guessed) is
//! attacked by a raw ZeroMQ DEALER. Parent side: a fake worker made of a raw
//! ROUTER answers the parent's heartbeats and then sends it hostile frames.
//! After every hostile frame the peer must answer the next valid call, and
//! every drop must show in its counters.
//!
//! The tests run one at a time (they share the process RSS that the memory
//! checks measure); the whole file takes a few seconds. The spawn-mode test
//! uses the example `test_worker` (built by a plain `cargo test`).
//!
//! Three tests guard against bugs they found, each described above it:
//! `parent_reconnects_after_libzmq_drops_an_oversized_frame`,
//! `spawned_worker_survives_a_call_over_its_message_size_limit` and
//! `an_idle_parent_does_not_let_unread_frames_pile_up`.

mod common;
use common::{int, int_args, temp_home, test_worker, wait_until};

use multifrost::codec::{self, Encoder, Kind, Limits, APP_ID};
use multifrost::registry::Registry;
use multifrost::{ErrorKind, Mode, Options, Parent, ReplyHandle, Worker};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// The tests of this file run one at a time: the memory checks read the
/// RSS of the whole process, which a parallel test would disturb.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The attacker's own ZeroMQ context (the library's is private to it).
fn ctx() -> &'static zmq::Context {
    static CTX: std::sync::OnceLock<zmq::Context> = std::sync::OnceLock::new();
    CTX.get_or_init(zmq::Context::new)
}

const MIB: usize = 1024 * 1024;
/// How long "no reply at all" is watched for.
const SILENCE: Duration = Duration::from_millis(300);

fn s(v: &str) -> Vec<u8> {
    let mut b = Vec::new();
    rmp::encode::write_str(&mut b, v).unwrap();
    b
}

fn f64v(v: f64) -> Vec<u8> {
    let mut b = Vec::new();
    rmp::encode::write_f64(&mut b, v).unwrap();
    b
}

/// A map written by hand, entry by entry, the way a foreign peer would.
fn map(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    rmp::encode::write_map_len(&mut b, entries.len() as u32).unwrap();
    for (k, v) in entries {
        b.extend(s(k));
        b.extend_from_slice(v);
    }
    b
}

/// A str of `n` bytes (str32 header for anything past 64 KiB).
fn big_str(n: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(n + 5);
    rmp::encode::write_str_len(&mut b, n as u32).unwrap();
    b.extend_from_slice(&vec![b'x'; n]);
    b
}

/// `depth` nested one-item arrays around a nil.
fn deep(depth: usize) -> Vec<u8> {
    let mut b = vec![0x91; depth];
    b.push(0xc0);
    b
}

/// Resident set size of this process in KiB (/proc/self/status VmRSS).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// What the test expects a hostile frame to do to its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Dropped and counted as malformed; no reply.
    Malformed,
    /// Dropped silently (an unknown type, a message for the other side); no reply.
    Ignored,
}

/// One hostile message: the frames after the routing identity.
struct Hostile {
    name: &'static str,
    frames: Vec<Vec<u8>>,
    expect: Expect,
}

fn h(name: &'static str, frames: Vec<Vec<u8>>, expect: Expect) -> Hostile {
    Hostile {
        name,
        frames,
        expect,
    }
}

/// `[empty, payload]`, the normal framing in both directions.
fn framed(payload: Vec<u8>) -> Vec<Vec<u8>> {
    vec![Vec::new(), payload]
}

/// Hostile payloads common to both directions. `good` is a valid message
/// of the kind the receiver expects (a call for a worker, a response for a
/// parent) and `kind` its type; `value_field` is where a user value goes
/// (`args` for a call, `result` for a response).
fn hostile_payloads(good: &[u8], kind: &str, value_field: &'static str) -> Vec<Hostile> {
    use Expect::*;
    let app = s(APP_ID);
    let typ = s(kind);
    let id = s("00000000-0000-4000-8000-000000000000");
    let ok_value = int_args(&[1, 2]);
    let with = |field: &'static str, value: &[u8]| {
        map(&[
            ("app", &app),
            ("id", &id),
            ("type", &typ),
            ("function", &s("add")),
            (field, value),
        ])
    };
    let mut trailing = good.to_vec();
    trailing.push(0x00);
    let mut list = vec![
        // Not msgpack at all.
        h("reserved byte 0xc1", framed(vec![0xc1]), Malformed),
        h("empty payload", framed(Vec::new()), Malformed),
        h(
            "text garbage",
            framed(b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            Malformed,
        ),
        h(
            "truncated map",
            framed(good[..good.len() / 2].to_vec()),
            Malformed,
        ),
        // Valid msgpack, not a map.
        h("array payload", framed(vec![0x93, 1, 2, 3]), Malformed),
        h("int payload", framed(vec![0x2a]), Malformed),
        h("str payload", framed(s(APP_ID)), Malformed),
        h("nil payload", framed(vec![0xc0]), Malformed),
        // A map, but not ours.
        h(
            "wrong app",
            framed(map(&[
                ("app", &s("comlink_ipc_v3")),
                ("id", &id),
                ("type", &typ),
                ("function", &s("add")),
                (value_field, &ok_value),
            ])),
            Malformed,
        ),
        h(
            "app missing",
            framed(map(&[
                ("id", &id),
                ("type", &typ),
                (value_field, &ok_value),
            ])),
            Malformed,
        ),
        h(
            "app as int",
            framed(map(&[("app", &[0x04]), ("type", &typ)])),
            Malformed,
        ),
        h("int map key", framed(vec![0x81, 0x01, 0x02]), Malformed),
        // Known fields with the wrong type.
        h("id as int", framed(with("id", &[0x07])), Malformed),
        h("type as int", framed(with("type", &[0x07])), Malformed),
        h(
            "function as int",
            framed(with("function", &[0x07])),
            Malformed,
        ),
        h(
            "args as a map",
            framed(with("args", &[0x81, 0xa1, b'a', 0x01])),
            Malformed,
        ),
        h(
            "args as a str",
            framed(with("args", &s("[1,2]"))),
            Malformed,
        ),
        h(
            "metadata as a str",
            framed(with("metadata", &s("meta"))),
            Malformed,
        ),
        h(
            "namespace as an array",
            framed(with("namespace", &[0x90])),
            Malformed,
        ),
        h(
            "timestamp as a str",
            framed(with("timestamp", &s("now"))),
            Malformed,
        ),
        h(
            "id not UTF-8",
            framed(with("id", &[0xa2, 0xff, 0xfe])),
            Malformed,
        ),
        h("trailing bytes", framed(trailing), Malformed),
        // Nesting far past the depth limit, in the user value, in an
        // unknown field and as the payload itself.
        h(
            "200 000-deep value",
            framed(with(value_field, &deep(200_000))),
            Malformed,
        ),
        h(
            "200 000-deep unknown field",
            framed(with("junk", &deep(200_000))),
            Malformed,
        ),
        h("200 000-deep payload", framed(deep(200_000)), Malformed),
        h("200 000-deep maps", framed(vec![0x81; 200_000]), Malformed),
        // Headers that claim 4 GiB and bring a few bytes.
        h(
            "map32 claiming 2^32-1 entries",
            framed(vec![0xdf, 0xff, 0xff, 0xff, 0xff]),
            Malformed,
        ),
        h(
            "array32 claiming 2^32-1 items as the value",
            framed(with(value_field, &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01])),
            Malformed,
        ),
        h(
            "str32 claiming 4 GiB as the function",
            framed(with("function", &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'])),
            Malformed,
        ),
        h(
            "bin32 claiming 4 GiB in an unknown field",
            framed(with("junk", &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00])),
            Malformed,
        ),
        h(
            "ext32 claiming 4 GiB as the value",
            framed(with(
                value_field,
                &[0x91, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
            )),
            Malformed,
        ),
        h(
            "map32 claiming 2^32-1 entries as metadata",
            framed(with("metadata", &[0xdf, 0xff, 0xff, 0xff, 0xff])),
            Malformed,
        ),
        // A real 20 MiB string: under libzmq's 64 MiB default, over the
        // codec's 10 MiB limit.
        h(
            "20 MiB string",
            framed(with("junk", &big_str(20 * MIB))),
            Malformed,
        ),
        // Wrong frame counts.
        h(
            "one frame (no empty delimiter)",
            vec![good.to_vec()],
            Malformed,
        ),
        h(
            "three frames",
            vec![Vec::new(), good.to_vec(), b"extra".to_vec()],
            Malformed,
        ),
        h(
            "non-empty delimiter",
            vec![b"x".to_vec(), good.to_vec()],
            Malformed,
        ),
        h("delimiter only", vec![Vec::new()], Malformed),
        // A well-formed message of an unknown type is ignored, not counted.
        h(
            "unknown type",
            framed(map(&[("app", &app), ("id", &id), ("type", &s("gossip"))])),
            Ignored,
        ),
    ];
    list.retain(|x| !x.frames.is_empty());
    list
}

fn stat(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no '{key}' in {v}"))
}

// ---------------------------------------------------------------------------
// Worker side: a live in-process worker, attacked by a raw DEALER
// ---------------------------------------------------------------------------

/// Reads a number argument as f64 (ints and floats), or as an exact i64.
enum Num {
    Int(i128),
    Float(f64),
}

fn read_nums(args: &[u8]) -> Result<Vec<Num>, String> {
    use rmp::Marker;
    let mut rd = args;
    let n = rmp::decode::read_array_len(&mut rd).map_err(|e| format!("TypeError: {e}"))?;
    let mut out = Vec::new();
    for _ in 0..n {
        let marker = Marker::from_u8(*rd.first().ok_or("TypeError: truncated")?);
        out.push(match marker {
            Marker::F32 => Num::Float(f64::from(
                rmp::decode::read_f32(&mut rd).map_err(|e| format!("TypeError: {e}"))?,
            )),
            Marker::F64 => {
                Num::Float(rmp::decode::read_f64(&mut rd).map_err(|e| format!("TypeError: {e}"))?)
            }
            Marker::U64 => Num::Int(i128::from(
                rmp::decode::read_int::<u64, _>(&mut rd).map_err(|e| format!("TypeError: {e}"))?,
            )),
            _ => Num::Int(i128::from(
                rmp::decode::read_int::<i64, _>(&mut rd)
                    .map_err(|e| format!("TypeError: not a number ({e})"))?,
            )),
        });
    }
    Ok(out)
}

/// `add`: the sum of two numbers; ints stay exact and must fit int64
/// (PROTOCOL.md §7: never clamp silently), floats follow IEEE (NaN stays NaN).
fn add(args: &[u8]) -> Result<Vec<u8>, String> {
    let nums = read_nums(args)?;
    let [a, b] = <[Num; 2]>::try_from(nums).map_err(|_| "TypeError: add takes 2 arguments")?;
    let mut out = Vec::new();
    match (a, b) {
        (Num::Int(a), Num::Int(b)) => {
            let sum = i64::try_from(a + b)
                .map_err(|_| format!("OverflowError: {a} + {b} does not fit int64"))?;
            rmp::encode::write_sint(&mut out, sum).unwrap();
        }
        (a, b) => {
            let f = |n: Num| match n {
                Num::Int(i) => i as f64,
                Num::Float(f) => f,
            };
            rmp::encode::write_f64(&mut out, f(a) + f(b)).unwrap();
        }
    }
    Ok(out)
}

struct LiveWorker {
    worker: Arc<Worker>,
    endpoint: String,
}

impl LiveWorker {
    fn start(service: &str) -> LiveWorker {
        temp_home();
        let worker = Arc::new(Worker::new(Mode::Service(service.to_owned())).unwrap());
        worker.set_handle_signals(false);
        worker
            .register(
                "add",
                Arc::new(|a: &[u8], reply: ReplyHandle| {
                    let _ = match add(a) {
                        Ok(r) => reply.ok(&r),
                        Err(e) => reply.error(&e),
                    };
                }),
            )
            .unwrap();
        worker
            .register(
                "echo",
                Arc::new(|a: &[u8], reply: ReplyHandle| {
                    let _ = reply.ok(a);
                }),
            )
            .unwrap();
        worker.start().unwrap();
        let port = Registry::for_user().unwrap().lookup(service).unwrap().port;
        LiveWorker {
            worker,
            endpoint: format!("tcp://127.0.0.1:{port}"),
        }
    }

    fn malformed(&self) -> u64 {
        self.worker
            .stats()
            .dropped_malformed
            .load(Ordering::Relaxed)
    }

    fn namespace_drops(&self) -> u64 {
        self.worker
            .stats()
            .dropped_namespace
            .load(Ordering::Relaxed)
    }
}

impl Drop for LiveWorker {
    fn drop(&mut self) {
        self.worker.stop();
        self.worker.join();
    }
}

/// A raw DEALER playing a (possibly hostile) parent.
struct Attacker {
    sock: zmq::Socket,
    next_id: u64,
}

/// A decoded reply, owned.
#[derive(Debug)]
struct Reply {
    kind: Kind,
    id: Option<String>,
    result: Option<Vec<u8>>,
    error: Option<String>,
}

impl Attacker {
    fn connect(endpoint: &str) -> Attacker {
        let sock = ctx().socket(zmq::DEALER).unwrap();
        sock.set_linger(0).unwrap();
        sock.set_sndhwm(0).unwrap();
        sock.connect(endpoint).unwrap();
        Attacker { sock, next_id: 0 }
    }

    fn send(&self, frames: &[Vec<u8>]) {
        self.sock
            .send_multipart(frames.iter().map(|f| &f[..]), 0)
            .unwrap();
    }

    /// The next message within `wait`, decoded (a reply that does not
    /// decode fails the test: the worker must only send valid messages).
    fn recv(&self, wait: Duration) -> Option<Reply> {
        let mut items = [self.sock.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, wait.as_millis() as i64).unwrap();
        if !items[0].is_readable() {
            return None;
        }
        let frames = self.sock.recv_multipart(0).unwrap();
        assert_eq!(frames.len(), 2, "reply framing: {frames:?}");
        assert!(frames[0].is_empty(), "reply delimiter: {frames:?}");
        let m = codec::decode(&frames[1], Limits::default())
            .unwrap_or_else(|e| panic!("the worker sent an invalid payload ({e})"));
        Some(Reply {
            kind: m.kind,
            id: m.id.map(str::to_owned),
            result: m.result.map(<[u8]>::to_vec),
            error: m.error.map(str::to_owned),
        })
    }

    fn call_payload(&mut self, function: &str, args: &[u8], namespace: &str) -> (String, Vec<u8>) {
        self.next_id += 1;
        let id = format!("attacker-{}", self.next_id);
        let mut payload = Vec::new();
        Encoder::new(&mut payload).call(&id, function, args, namespace, None);
        (id, payload)
    }

    /// A valid call; its reply must come within 5 s and carry its id.
    fn call(&mut self, function: &str, args: &[u8]) -> Reply {
        let (id, payload) = self.call_payload(function, args, "default");
        self.send(&framed(payload));
        let r = self
            .recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no reply to a valid call of '{function}'"));
        assert_eq!(r.id.as_deref(), Some(id.as_str()), "{r:?}");
        r
    }

    fn add(&mut self, a: i64, b: i64) -> i64 {
        let r = self.call("add", &int_args(&[a, b]));
        assert_eq!(r.kind, Kind::Response, "{r:?}");
        int(r.result.as_ref().unwrap())
    }

    /// Nothing arrives for `SILENCE`.
    fn assert_silent(&self, what: &str) {
        if let Some(r) = self.recv(SILENCE) {
            panic!("expected no reply after {what}, got {r:?}");
        }
    }
}

#[test]
fn worker_survives_every_hostile_frame_and_counts_each_drop() {
    let _serial = serial();
    let w = LiveWorker::start("hostile-worker-frames");
    let mut a = Attacker::connect(&w.endpoint);
    assert_eq!(a.add(1, 2), 3);
    let (_, good) = a.call_payload("add", &int_args(&[1, 2]), "default");
    let list = hostile_payloads(&good, "call", "args");
    assert!(list.len() >= 35, "{}", list.len());
    for (i, x) in list.iter().enumerate() {
        let before = w.malformed();
        a.send(&x.frames);
        // The next valid call is answered correctly, and nothing else comes:
        // a dropped message gets no reply of any kind.
        assert_eq!(a.add(i as i64, 1000), i as i64 + 1000, "after '{}'", x.name);
        let want = before + u64::from(x.expect == Expect::Malformed);
        assert_eq!(w.malformed(), want, "dropped_malformed after '{}'", x.name);
    }
    a.assert_silent("the hostile frames");
    let malformed = list
        .iter()
        .filter(|x| x.expect == Expect::Malformed)
        .count() as u64;
    assert_eq!(w.malformed(), malformed);
    assert_eq!(w.namespace_drops(), 0);
}

#[test]
fn worker_drops_a_call_for_another_namespace_without_a_reply() {
    let _serial = serial();
    let w = LiveWorker::start("hostile-worker-namespace");
    let mut a = Attacker::connect(&w.endpoint);
    // Connected first, so the silence below is the worker's, not the network's.
    assert_eq!(a.add(0, 0), 0);
    for round in 1..=3u64 {
        let (_, payload) = a.call_payload("add", &int_args(&[1, 2]), "other");
        a.send(&framed(payload));
        a.assert_silent("a call for namespace 'other'");
        // The next reply is the valid call's (its id is checked), so the
        // dropped call was read before it and counted.
        assert_eq!(a.add(40, 2), 42);
        assert_eq!(w.namespace_drops(), round);
    }
    assert_eq!(w.malformed(), 0);
}

#[test]
fn worker_answers_the_conformance_errors_and_keeps_serving() {
    let _serial = serial();
    let w = LiveWorker::start("hostile-worker-errors");
    let mut a = Attacker::connect(&w.endpoint);
    let app = s(APP_ID);
    // A call without `function`: an error that names the field, with the id.
    a.send(&framed(map(&[
        ("app", &app),
        ("id", &s("no-function")),
        ("type", &s("call")),
        ("args", &[0x90]),
    ])));
    let r = a.recv(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (r.kind, r.id.as_deref()),
        (Kind::Error, Some("no-function"))
    );
    assert!(r.error.unwrap().contains("function"));
    // A call without `id`: an error without an id (nothing to echo).
    a.send(&framed(map(&[
        ("app", &app),
        ("type", &s("call")),
        ("function", &s("add")),
        ("args", &int_args(&[1, 2])),
    ])));
    let r = a.recv(Duration::from_secs(5)).unwrap();
    assert_eq!((r.kind, r.id.as_deref()), (Kind::Error, None));
    assert!(r.error.unwrap().contains("id"));
    let r = a.call("_secret", &[0x90]);
    assert!(r.error.unwrap().contains("Cannot call private method"));
    let r = a.call("nosuch", &[0x90]);
    assert!(r.error.unwrap().contains("not found"));
    // A handler's own failure (an int beyond int64) is an error; it goes on.
    let mut args = vec![0x92];
    rmp::encode::write_u64(&mut args, u64::MAX).unwrap();
    args.push(0x01);
    let r = a.call("add", &args);
    assert_eq!(r.kind, Kind::Error);
    assert!(r.error.unwrap().contains("OverflowError"));
    assert_eq!(a.add(2, 3), 5);
    assert_eq!(w.malformed(), 0);
    a.assert_silent("the error replies");
}

#[test]
fn worker_passes_nan_infinity_and_uint64_max_through_untouched() {
    let _serial = serial();
    let w = LiveWorker::start("hostile-worker-values");
    let mut a = Attacker::connect(&w.endpoint);
    // echo gives the args back byte for byte: the worker never rewrites values.
    let mut args = vec![0x96];
    args.extend(f64v(f64::NAN));
    args.extend(f64v(f64::INFINITY));
    args.extend(f64v(f64::NEG_INFINITY));
    args.extend([0xca, 0x7f, 0xc0, 0x00, 0x00]); // float32 NaN
    rmp::encode::write_u64(&mut args, u64::MAX).unwrap();
    rmp::encode::write_i64(&mut args, i64::MIN).unwrap();
    let r = a.call("echo", &args);
    assert_eq!(r.kind, Kind::Response, "{r:?}");
    assert_eq!(r.result.as_deref(), Some(&args[..]));
    // The JSON view of the same bytes (PROTOCOL.md §7: NaN/Inf become null).
    assert_eq!(
        multifrost::json::from_msgpack(&args).unwrap(),
        "[null,null,null,null,18446744073709551615,-9223372036854775808]"
    );
    // Arithmetic on them does not crash the worker: NaN + 1 is NaN.
    let mut args = vec![0x92];
    args.extend(f64v(f64::NAN));
    args.push(0x01);
    let r = a.call("add", &args);
    let f = rmp::decode::read_f64(&mut &r.result.unwrap()[..]).unwrap();
    assert!(f.is_nan());
    let mut args = vec![0x92];
    args.extend(f64v(f64::INFINITY));
    args.extend(f64v(1.5));
    let r = a.call("add", &args);
    let f = rmp::decode::read_f64(&mut &r.result.unwrap()[..]).unwrap();
    assert_eq!(f, f64::INFINITY);
    assert_eq!(a.add(i64::MAX - 1, 1), i64::MAX);
    assert_eq!(w.malformed(), 0);
}

#[test]
fn worker_memory_stays_bounded_under_50_frames_of_20_mib() {
    let _serial = serial();
    let w = LiveWorker::start("hostile-worker-memory");
    let mut a = Attacker::connect(&w.endpoint);
    // A call whose single argument is a 20 MiB string: past the codec's
    // 10 MiB limit, under libzmq's 64 MiB one, so it reaches the decoder.
    let mut payload = map(&[
        ("app", &s(APP_ID)),
        ("id", &s("big")),
        ("type", &s("call")),
        ("function", &s("echo")),
        ("args", &[0x91]),
    ]);
    payload.extend(big_str(20 * MIB));
    let frames = framed(payload);
    let frame = |_n: u32| &frames;
    // Warm-up: the allocator settles on its high-water mark for frames of
    // this size (glibc raises its mmap threshold after the first free of a
    // large block, so later ones come from the heap and may stay mapped).
    for n in 0..5 {
        let before = w.malformed();
        a.send(frame(n));
        assert!(wait_until(Duration::from_secs(10), || w.malformed() > before));
    }
    assert_eq!(a.add(1, 1), 2);
    let start = rss_kib();
    let mut peak = start;
    let t = Instant::now();
    for n in 0..50 {
        let before = w.malformed();
        // One frame in flight at a time: what is measured is what the
        // worker keeps, not what is queued in the sockets.
        a.send(frame(n));
        assert!(
            wait_until(Duration::from_secs(10), || w.malformed() > before),
            "frame {n} was not dropped"
        );
        peak = peak.max(rss_kib());
    }
    assert_eq!(a.add(20, 22), 42);
    let end = rss_kib();
    let grown_mib = end.saturating_sub(start) / 1024;
    let peak_mib = peak.saturating_sub(start) / 1024;
    eprintln!(
        "worker memory: 50 x 20 MiB dropped in {:?}; RSS {} -> {} MiB (peak +{peak_mib} MiB)",
        t.elapsed(),
        start / 1024,
        end / 1024
    );
    assert_eq!(w.malformed(), 55);
    // 1000 MiB went through; keeping even a fifth of it would show.
    assert!(grown_mib < 200, "RSS grew by {grown_mib} MiB");
    assert!(peak_mib < 200, "RSS peaked {peak_mib} MiB above the start");
}

// ---------------------------------------------------------------------------
// Parent side: a real Parent against a fake worker made of a raw ROUTER
// ---------------------------------------------------------------------------

/// A call the fake worker did not answer by itself.
#[derive(Debug)]
struct SeenCall {
    id: String,
    function: String,
}

enum Cmd {
    /// Frames (after the identity) to send to the parent.
    Raw(Vec<Vec<u8>>),
}

/// A fake worker: a raw ROUTER bound on 127.0.0.1 that echoes heartbeats,
/// answers `add` and `echo` itself, hands every other call to the test, and
/// sends the parent whatever frames the test asks for.
struct FakeWorker {
    endpoint: String,
    cmd: mpsc::Sender<Cmd>,
    calls: mpsc::Receiver<SeenCall>,
    /// Commands the fake has carried out (Raw frames sent).
    sent: Arc<AtomicU64>,
    /// Connections the ROUTER saw closed (ZMQ_EVENT_DISCONNECTED).
    disconnects: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeWorker {
    fn start() -> FakeWorker {
        let sock = ctx().socket(zmq::ROUTER).unwrap();
        sock.set_linger(0).unwrap();
        sock.set_sndhwm(0).unwrap();
        sock.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = sock.get_last_endpoint().unwrap().unwrap();
        static MONITORS: AtomicU64 = AtomicU64::new(0);
        let monitor_ep = format!(
            "inproc://fake-worker-monitor-{}",
            MONITORS.fetch_add(1, Ordering::Relaxed)
        );
        sock.monitor(&monitor_ep, zmq::SocketEvent::DISCONNECTED as i32)
            .unwrap();
        let monitor = ctx().socket(zmq::PAIR).unwrap();
        monitor.set_linger(0).unwrap();
        monitor.connect(&monitor_ep).unwrap();
        let (cmd, cmd_rx) = mpsc::channel::<Cmd>();
        let (calls_tx, calls) = mpsc::channel();
        let sent = Arc::new(AtomicU64::new(0));
        let disconnects = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let sent = Arc::clone(&sent);
            let disconnects = Arc::clone(&disconnects);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut peer: Option<Vec<u8>> = None;
                let mut queued: Vec<Vec<Vec<u8>>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut items = [
                        sock.as_poll_item(zmq::POLLIN),
                        monitor.as_poll_item(zmq::POLLIN),
                    ];
                    let _ = zmq::poll(&mut items, 2);
                    while let Ok(event) = monitor.recv_multipart(zmq::DONTWAIT) {
                        let code = u16::from_le_bytes([event[0][0], event[0][1]]);
                        if code == zmq::SocketEvent::DISCONNECTED as u16 {
                            disconnects.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    while let Ok(frames) = sock.recv_multipart(zmq::DONTWAIT) {
                        let identity = frames[0].clone();
                        peer = Some(identity.clone());
                        if frames.len() != 3 {
                            continue;
                        }
                        let Ok(m) = codec::decode(&frames[2], Limits::default()) else {
                            continue;
                        };
                        let mut out = Vec::new();
                        match (m.kind, m.function) {
                            (Kind::Heartbeat, _) => Encoder::new(&mut out).heartbeat(
                                m.id.unwrap_or(""),
                                m.hb_timestamp.unwrap_or(0.0),
                                true,
                            ),
                            (Kind::Call, Some("add")) => match add(m.args.unwrap_or(&[0x90])) {
                                Ok(r) => Encoder::new(&mut out).response(m.id, &r),
                                Err(e) => Encoder::new(&mut out).error(m.id, &e, None),
                            },
                            (Kind::Call, Some("echo")) => {
                                Encoder::new(&mut out).response(m.id, m.args.unwrap_or(&[0x90]))
                            }
                            (Kind::Call, Some(f)) => {
                                let _ = calls_tx.send(SeenCall {
                                    id: m.id.unwrap_or("").to_owned(),
                                    function: f.to_owned(),
                                });
                                continue;
                            }
                            _ => continue,
                        }
                        let _ = sock.send_multipart([&identity[..], &[][..], &out[..]], 0);
                    }
                    while let Ok(Cmd::Raw(frames)) = cmd_rx.try_recv() {
                        queued.push(frames);
                    }
                    if let Some(peer) = &peer {
                        for frames in queued.drain(..) {
                            let mut all = vec![peer.clone()];
                            all.extend(frames);
                            sock.send_multipart(all, 0).unwrap();
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // libzmq sends monitor events with a blocking send, from its
                // I/O thread: once the PAIR reading them is gone, one more
                // event (a late disconnect) would block that thread and with
                // it every socket of the context. Switch the monitor to an
                // endpoint with no events before closing anything.
                let _ = sock.monitor(&format!("{monitor_ep}-off"), 0);
                drop(sock);
                drop(monitor);
            })
        };
        FakeWorker {
            endpoint,
            cmd,
            calls,
            sent,
            disconnects,
            stop,
            thread: Some(thread),
        }
    }

    /// Sends frames to the parent (to the identity that spoke last).
    fn send(&self, frames: Vec<Vec<u8>>) {
        self.cmd.send(Cmd::Raw(frames)).unwrap();
    }

    /// Sends frames and waits until they have left the fake's socket.
    fn send_now(&self, frames: Vec<Vec<u8>>) {
        let before = self.sent.load(Ordering::Relaxed);
        self.send(frames);
        assert!(wait_until(Duration::from_secs(5), || self
            .sent
            .load(Ordering::Relaxed)
            > before));
    }

    fn disconnects(&self) -> u64 {
        self.disconnects.load(Ordering::Relaxed)
    }

    fn parent(&self, options: Options) -> Parent {
        Parent::connect(&self.endpoint, options).expect("the parent connects to the fake worker")
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pstats(p: &Parent) -> Value {
    serde_json::from_str(&p.stats_json()).unwrap()
}

fn padd(p: &Parent, a: i64, b: i64) -> i64 {
    int(p
        .call("add", &int_args(&[a, b]), 5000)
        .unwrap_or_else(|e| panic!("add({a}, {b}): {e}"))
        .bytes())
}

fn response(id: &str, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Encoder::new(&mut out).response(Some(id), result);
    out
}

#[test]
fn parent_survives_every_hostile_frame_and_counts_each_drop() {
    let _serial = serial();
    let fake = FakeWorker::start();
    let p = fake.parent(Options::default());
    assert_eq!(padd(&p, 1, 2), 3);
    let good = response("00000000-0000-4000-8000-000000000001", &[0x03]);
    let mut list = hostile_payloads(&good, "response", "result");
    // Frames a worker must never send: a call and a shutdown, to the parent.
    list.push(h(
        "a call sent to the parent",
        framed(map(&[
            ("app", &s(APP_ID)),
            ("id", &s("x")),
            ("type", &s("call")),
            ("function", &s("add")),
            ("args", &int_args(&[1, 2])),
        ])),
        Expect::Ignored,
    ));
    list.push(h(
        "a shutdown sent to the parent",
        framed(map(&[
            ("app", &s(APP_ID)),
            ("id", &s("x")),
            ("type", &s("shutdown")),
        ])),
        Expect::Ignored,
    ));
    for (i, x) in list.iter().enumerate() {
        let before = stat(&pstats(&p), "dropped_malformed");
        fake.send_now(x.frames.clone());
        // Frames from one peer arrive in order: the reply to this call comes
        // after the hostile frame, so the drop is counted when it returns.
        assert_eq!(
            padd(&p, i as i64, 1000),
            i as i64 + 1000,
            "after '{}'",
            x.name
        );
        let s = pstats(&p);
        let want = before + u64::from(x.expect == Expect::Malformed);
        assert_eq!(
            stat(&s, "dropped_malformed"),
            want,
            "after '{}': {s}",
            x.name
        );
        assert_eq!(stat(&s, "dropped_unknown"), 0, "after '{}': {s}", x.name);
    }
    let s = pstats(&p);
    assert_eq!(stat(&s, "requests_failed"), 0, "{s}");
    assert_eq!(s["healthy"], true, "{s}");
    assert_eq!(s["circuit_state"], "closed", "{s}");
}

#[test]
fn parent_drops_unknown_and_late_replies() {
    let _serial = serial();
    let fake = FakeWorker::start();
    let p = fake.parent(Options::default());
    assert_eq!(padd(&p, 1, 2), 3);
    // Replies for ids the parent never used, in every shape.
    let stray = [
        response("00000000-0000-4000-8000-00000000beef", &[0x01]),
        response("not-a-uuid", &[0x01]),
        {
            let mut out = Vec::new();
            Encoder::new(&mut out).response(None, &[0x01]);
            out
        },
        {
            let mut out = Vec::new();
            Encoder::new(&mut out).error(
                Some("00000000-0000-4000-8000-00000000dead"),
                "boom",
                None,
            );
            out
        },
    ];
    for payload in &stray {
        fake.send_now(framed(payload.clone()));
    }
    assert_eq!(padd(&p, 2, 3), 5);
    let s = pstats(&p);
    assert_eq!(stat(&s, "dropped_unknown"), stray.len() as u64, "{s}");
    assert_eq!(stat(&s, "dropped_malformed"), 0, "{s}");

    // A late reply: the call times out, then its answer arrives and is
    // dropped. The fake answers only after the call has returned, so the
    // timeout is the timer's.
    let e = p
        .call("slow", &[0x90], 200)
        .err()
        .expect("the call times out");
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    let seen = fake.calls.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen.function, "slow");
    fake.send_now(framed(response(&seen.id, &int_args(&[7]))));
    // An answer that comes twice: the second is unknown too.
    let p2 = Arc::new(p);
    let caller = {
        let p = Arc::clone(&p2);
        std::thread::spawn(move || p.call("twice", &[0x90], 5000).map(|r| int(r.bytes())))
    };
    let seen2 = fake.calls.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(seen2.function, "twice");
    fake.send_now(framed(response(&seen2.id, &[0x2a])));
    fake.send_now(framed(response(&seen2.id, &[0x2b])));
    assert_eq!(caller.join().unwrap().unwrap(), 42);
    assert_eq!(padd(&p2, 40, 2), 42);
    let s = pstats(&p2);
    assert_eq!(stat(&s, "dropped_unknown"), stray.len() as u64 + 2, "{s}");
    assert_eq!(stat(&s, "timeouts"), 1, "{s}");
    assert_eq!(stat(&s, "dropped_malformed"), 0, "{s}");
    assert_eq!(stat(&s, "in_flight"), 0, "{s}");
}

#[test]
fn parent_passes_nan_infinity_and_uint64_max_through_untouched() {
    let _serial = serial();
    let fake = FakeWorker::start();
    let p = fake.parent(Options::default());
    let mut args = vec![0x95];
    args.extend(f64v(f64::NAN));
    args.extend(f64v(f64::INFINITY));
    args.extend(f64v(f64::NEG_INFINITY));
    rmp::encode::write_u64(&mut args, u64::MAX).unwrap();
    rmp::encode::write_i64(&mut args, i64::MIN).unwrap();
    let r = p.call("echo", &args, 5000).unwrap();
    assert_eq!(r.bytes(), &args[..]);
    // A response whose result is a bare NaN, for a pending call.
    let p = Arc::new(p);
    let caller = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.call("nan", &[0x90], 5000).map(|r| r.bytes().to_vec()))
    };
    let seen = fake.calls.recv_timeout(Duration::from_secs(5)).unwrap();
    fake.send_now(framed(response(&seen.id, &f64v(f64::NAN))));
    let bytes = caller.join().unwrap().unwrap();
    assert!(rmp::decode::read_f64(&mut &bytes[..]).unwrap().is_nan());
    assert_eq!(padd(&p, 1, 1), 2);
    assert_eq!(stat(&pstats(&p), "dropped_malformed"), 0);
}

#[test]
fn parent_memory_stays_bounded_under_50_frames_of_20_mib() {
    let _serial = serial();
    let fake = FakeWorker::start();
    let p = fake.parent(Options::default());
    let frames = framed(response(
        "00000000-0000-4000-8000-000000000002",
        &big_str(20 * MIB),
    ));
    let frame = || frames.clone();
    // Warm-up, as on the worker side.
    for i in 0..5 {
        fake.send_now(frame());
        assert_eq!(padd(&p, i, 1), i + 1);
    }
    let start = rss_kib();
    let mut peak = start;
    for i in 0..50 {
        // The call after each frame makes the parent read the socket (an
        // idle parent reads only while a call or heartbeat is outstanding).
        fake.send_now(frame());
        assert_eq!(padd(&p, i, 1), i + 1);
        peak = peak.max(rss_kib());
    }
    let end = rss_kib();
    let grown_mib = end.saturating_sub(start) / 1024;
    let peak_mib = peak.saturating_sub(start) / 1024;
    eprintln!(
        "parent memory: 50 x 20 MiB dropped; RSS {} -> {} MiB (peak +{peak_mib} MiB)",
        start / 1024,
        end / 1024
    );
    assert_eq!(stat(&pstats(&p), "dropped_malformed"), 55);
    assert!(grown_mib < 200, "RSS grew by {grown_mib} MiB");
    assert!(peak_mib < 200, "RSS peaked {peak_mib} MiB above the start");
}

/// Found here, fixed: the parent's DEALER has no receive limit (ZMQ_RCVHWM
/// 0), and an idle parent used to read its socket only while a call or a
/// heartbeat was outstanding, so whatever a worker sent in between piled
/// up in libzmq's queue. The supervisor now drains an idle socket every
/// 100 ms: each frame is read (and dropped) with no call and no heartbeat
/// outstanding.
#[test]
fn an_idle_parent_does_not_let_unread_frames_pile_up() {
    let _serial = serial();
    let fake = FakeWorker::start();
    let mut o = Options::default();
    // No heartbeat during the test: only the idle drain reads the socket.
    o.set_heartbeat(10 * 60 * 1000, 60_000, 3).unwrap();
    let p = fake.parent(o);
    assert_eq!(padd(&p, 1, 2), 3);
    let frames = framed(response(
        "00000000-0000-4000-8000-000000000005",
        &big_str(20 * MIB),
    ));
    for i in 0..3 {
        fake.send_now(frames.clone());
        assert_eq!(padd(&p, i, 1), i + 1);
    }
    let start = rss_kib();
    let mut peak = start;
    // 20 frames of 20 MiB, each sent once the one before was read: no call,
    // no heartbeat meanwhile (the 30 s limit is a hang guard).
    let dropped = || stat(&pstats(&p), "dropped_malformed");
    for i in 1..=20 {
        fake.send_now(frames.clone());
        assert!(
            wait_until(Duration::from_secs(30), || {
                peak = peak.max(rss_kib());
                dropped() == 3 + i
            }),
            "frame {i} of 20 sent to an idle parent was never read: {}",
            p.stats_json()
        );
    }
    assert_eq!(padd(&p, 1, 1), 2);
    assert_eq!(dropped(), 23);
    let peak_mib = (peak - start) / 1024;
    assert!(
        peak_mib < 200,
        "400 MiB sent to an idle parent: RSS peaked {peak_mib} MiB above the start"
    );
}

/// Found here, fixed: once a spawned worker of ours talks over the private
/// link, nothing of ours sends on the parent's port, and the DEALER was read
/// only by the idle drain, which never runs while a call leads. Anything
/// another process sent to the port meanwhile piled up in libzmq: here a
/// call that would take 10 minutes leads while 20 frames of 20 MiB arrive,
/// each read (and dropped) before the next is sent.
#[test]
fn a_linked_parent_drops_what_reaches_its_port_while_a_call_leads() {
    let _serial = serial();
    temp_home();
    let p = Arc::new(Parent::spawn(&test_worker(), &[], Options::default()).expect("spawn"));
    let port = int(p.call("port", &int_args(&[]), 5000).unwrap().bytes());
    assert!(port > 0);
    assert!(pstats(&p)["transport"] == "link", "{}", pstats(&p));
    let leading = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || {
            p.call("sleep_ms", &int_args(&[600_000]), 900_000)
                .map(|r| int(r.bytes()))
        })
    };
    assert!(wait_until(Duration::from_secs(30), || stat(
        &pstats(&p),
        "in_flight"
    ) == 1));
    let stray = ctx().socket(zmq::DEALER).unwrap();
    stray.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
    let big = big_str(20 * MIB);
    let start = rss_kib();
    let mut peak = start;
    let dropped = || stat(&pstats(&p), "dropped_unknown");
    for i in 1..=20 {
        stray.send(&big[..], 0).unwrap();
        assert!(
            wait_until(Duration::from_secs(30), || {
                peak = peak.max(rss_kib());
                dropped() == i
            }),
            "frame {i} of 20 was not read while the call led: {}",
            p.stats_json()
        );
    }
    assert_eq!(stat(&pstats(&p), "in_flight"), 1, "the call still leads");
    let peak_mib = (peak - start) / 1024;
    assert!(
        peak_mib < 200,
        "400 MiB sent to the port: RSS peaked {peak_mib} MiB above the start"
    );
    p.close();
    assert_eq!(leading.join().unwrap().unwrap_err().kind, ErrorKind::Closed);
}

#[test]
fn parent_refuses_an_oversized_frame_before_decoding() {
    let _serial = serial();
    let fake = FakeWorker::start();
    let mut o = Options::default();
    o.set_max_message_size(MIB as i64).unwrap();
    let p = Arc::new(fake.parent(o));
    assert_eq!(padd(&p, 1, 2), 3);
    // Just under the limit: it reaches the decoder (a stray reply, counted).
    fake.send_now(framed(response(
        "00000000-0000-4000-8000-000000000003",
        &big_str(MIB - 1024),
    )));
    assert_eq!(padd(&p, 2, 3), 5);
    assert_eq!(stat(&pstats(&p), "dropped_unknown"), 1);
    assert_eq!(fake.disconnects(), 0);
    // Over it, with no call of that id: never decoded, counted as malformed.
    fake.send_now(framed(response(
        "00000000-0000-4000-8000-000000000005",
        &big_str(2 * MIB),
    )));
    assert_eq!(padd(&p, 3, 4), 7);
    assert_eq!(stat(&pstats(&p), "dropped_malformed"), 1);
    // Over it, as the answer to a pending call: the codec never sees it, and
    // the call fails at once with the reason instead of a 2 MiB result (or
    // a timeout); the connection stays.
    let caller = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.call("big", &[0x90], 20_000).map(|r| r.bytes().len()))
    };
    let seen = fake.calls.recv_timeout(Duration::from_secs(5)).unwrap();
    let answer = response(&seen.id, &big_str(2 * MIB));
    let len = answer.len();
    fake.send_now(framed(answer));
    let e = caller
        .join()
        .unwrap()
        .expect_err("the 2 MiB reply is never delivered");
    assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
    assert_eq!(
        e.message,
        format!("the result of 'big' is {len} bytes, over the maximum message size of {MIB} bytes")
    );
    assert_eq!(padd(&p, 4, 5), 9);
    assert_eq!(fake.disconnects(), 0);
    let s = pstats(&p);
    assert_eq!(stat(&s, "dropped_malformed"), 1, "{s}");
    assert_eq!(stat(&s, "dropped_unknown"), 1, "{s}");
    assert_eq!(stat(&s, "timeouts"), 0, "{s}");
    assert_eq!(stat(&s, "requests_failed"), 1, "{s}");
}

/// Found here, fixed: libzmq 4.3.4 treats an over-ZMQ_MAXMSGSIZE frame as a
/// protocol error, and after a protocol error a *connecting* socket's
/// session is terminated instead of reconnecting
/// (session_base_t::engine_error). A connect-mode parent was then cut off
/// from its worker for good; it now connects afresh when heartbeats are lost.
/// (libzmq's limit is four times the parent's since messages between the
/// two are refused by the parent itself; a frame above it is sent here.)
#[test]
fn parent_reconnects_after_libzmq_drops_an_oversized_frame() {
    let _serial = serial();
    let fake = FakeWorker::start();
    let mut o = Options::default();
    o.set_max_message_size(MIB as i64).unwrap();
    // Heartbeats a busy machine answers in time (2 s each): the reconnection
    // comes from the dropped connection, not from a slow answer.
    o.set_heartbeat(100, 2000, 2).unwrap();
    let p = fake.parent(o);
    assert_eq!(padd(&p, 1, 2), 3);
    fake.send_now(framed(response(
        "00000000-0000-4000-8000-000000000004",
        &big_str(4 * MIB),
    )));
    assert!(wait_until(Duration::from_secs(30), || fake.disconnects() == 1));
    // The fake ROUTER is still bound: a parent that connects again reaches it.
    let recovered = wait_until(Duration::from_secs(30), || {
        p.call("add", &int_args(&[20, 22]), 300)
            .is_ok_and(|r| int(r.bytes()) == 42)
    });
    assert!(
        recovered,
        "the parent never reconnected after libzmq dropped its connection: {}",
        p.stats_json()
    );
    assert_eq!(stat(&pstats(&p), "dropped_malformed"), 0);
}

/// Found here, fixed: the worker's ROUTER refuses frames over its maximum
/// message size (64 MiB by default), and the parent used to send any call
/// whose items were each within the codec limits (7 strings of 10 MiB pass
/// `validate_args`). In spawn mode the worker is the connecting side, so
/// libzmq's protocol error on the 70 MiB frame cut it off for good (same
/// libzmq rule as above). The parent now refuses a call over its own
/// maximum message size before sending it. The private link is off: that
/// libzmq rule only bites over ZeroMQ, and over the link the test would
/// pass whatever the parent sent.
#[test]
fn spawned_worker_survives_a_call_over_its_message_size_limit() {
    let _serial = serial();
    temp_home();
    let o = Options {
        private_link: false,
        ..Options::default()
    };
    let p = Parent::spawn(&test_worker(), &[], o).unwrap_or_else(|e| {
        panic!("{e} (the example is built by a plain `cargo test`, or `cargo build --examples`)")
    });
    assert_eq!(pstats(&p)["transport"], "zmq", "{}", p.stats_json());
    assert_eq!(padd(&p, 1, 2), 3);
    let mut args = vec![0x97];
    for _ in 0..7 {
        args.extend(big_str(10 * MIB - 16));
    }
    let e = p
        .call("add", &args, 2000)
        .err()
        .expect("a 70 MiB call cannot succeed");
    drop(args);
    // Refused before it was sent, with a status that says so: a timeout
    // here would mean the frame went out and the worker may be lost.
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert!(e.message.contains("maximum message size"), "{e}");
    // The very next call is answered: no reconnection, no restart needed.
    assert_eq!(
        padd(&p, 20, 22),
        42,
        "after a 70 MiB call: {}",
        p.stats_json()
    );
}

/// Over ZeroMQ, a call over the worker's limit (below the parent's) reaches
/// the worker's socket. The worker answers it with an error that names the
/// limit (it reads only the call's first bytes), and it stays reachable:
/// libzmq's own limit, four times the worker's, is not what refuses it.
#[test]
fn spawned_worker_with_a_smaller_limit_survives_a_call_over_it() {
    let _serial = serial();
    temp_home();
    let mut o = Options {
        private_link: false,
        ..Options::default()
    };
    o.set_heartbeat(200, 2000, 2).unwrap();
    let args = ["--max-message-size".to_owned(), MIB.to_string()];
    let p = Parent::spawn(&test_worker(), &args, o).unwrap();
    assert_eq!(pstats(&p)["transport"], "zmq", "{}", p.stats_json());
    assert_eq!(padd(&p, 1, 2), 3);
    let mut big = vec![0x92];
    big.extend(big_str(2 * MIB));
    big.extend(big_str(1));
    let e = p
        .call("add", &big, 2000)
        .err()
        .expect("a 2 MiB call to a worker taking 1 MiB cannot succeed");
    assert_eq!(e.kind, ErrorKind::Remote, "{e}");
    assert!(
        e.message
            .contains("exceeds the worker's maximum message size of 1048576 bytes"),
        "{e}"
    );
    let recovered = wait_until(Duration::from_secs(30), || {
        p.call("add", &int_args(&[20, 22]), 500)
            .is_ok_and(|r| int(r.bytes()) == 42)
    });
    assert!(
        recovered,
        "after a call over the worker's limit ({e}) it never answered again: {}",
        p.stats_json()
    );
}
