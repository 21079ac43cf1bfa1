//! The floor: a raw libzmq DEALER(bind) ⇄ ROUTER(connect) echo between two
//! processes, with the same vendored libzmq (the `zmq` crate) and the same
//! socket options and framing the library uses. No call can be faster than
//! this, so every benchmark figure is reported as a ratio to it.
//!
//! One binary plays both roles: the parent binds a DEALER on 127.0.0.1, then
//! starts itself as the echo child (environment variable
//! `MF_BENCH_FLOOR_CHILD=<endpoint>`), whose ROUTER connects and sends every
//! message straight back (`[identity, empty, payload]` in and out, no copy).
//!
//! Cases (all on one connection, one after the other):
//! - `rtt`:  sequential round trips of a ~130-byte payload shaped like a
//!   protocol `call` of `add [1, 2]`; mean and median µs per round trip.
//! - `pipe`: the same payload pipelined with 64 in flight; messages/s.
//! - `pipe4`: the same with 4 in flight (compare: 4 threads calling at once).
//! - `pipe2t`: `pipe` with a producer thread that hands each message to the
//!   thread owning the socket, as any library with an I/O thread must (see
//!   `pipe_2t`); messages/s.
//! - `big`:  sequential 1 MiB echoes; echoes/s.
//!
//! Every reply is checked (content, order or length); a wrong one exits 1.
//! Prints one JSON object on stdout (see benches/README.md); progress on stderr.
//!
//! Build and run: `cargo run --release --example bench_floor -- --help`.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MF_BENCH_FLOOR_CHILD";
/// Every case, in the order they run by default.
const CASES: [&str; 5] = ["rtt", "pipe", "pipe4", "pipe2t", "big"];
const PARENT_ENV: &str = "MF_BENCH_FLOOR_PARENT";

struct Config {
    cases: Vec<String>,
    rtt_iters: usize,
    pipe_msgs: usize,
    window: usize,
    big_iters: usize,
    big_size: usize,
    warmup: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cases: CASES.map(String::from).to_vec(),
            rtt_iters: 5000,
            pipe_msgs: 150_000,
            window: 64,
            big_iters: 300,
            big_size: 1 << 20,
            warmup: 300,
        }
    }
}

const USAGE: &str =
    "usage: bench_floor [--cases rtt,pipe,pipe4,pipe2t,big] [--scale F] [--rtt-iters N] \
[--pipe-msgs N] [--window N] [--big-iters N] [--big-size BYTES] [--warmup N]";

fn parse_args() -> Config {
    let mut c = Config::default();
    let mut scale = 1.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value\n{USAGE}");
                std::process::exit(2)
            })
        };
        let num = |s: String| -> usize {
            s.parse().unwrap_or_else(|_| {
                eprintln!("not a number: {s}\n{USAGE}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--cases" => c.cases = val().split(',').map(str::to_owned).collect(),
            "--scale" => {
                scale = val().parse().unwrap_or_else(|_| {
                    eprintln!("--scale needs a number\n{USAGE}");
                    std::process::exit(2)
                })
            }
            "--rtt-iters" => c.rtt_iters = num(val()),
            "--pipe-msgs" => c.pipe_msgs = num(val()),
            "--window" => c.window = num(val()).max(1),
            "--big-iters" => c.big_iters = num(val()),
            "--big-size" => c.big_size = num(val()).max(16),
            "--warmup" => c.warmup = num(val()),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            _ => {
                eprintln!("unknown argument {a}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    for case in &c.cases {
        if !CASES.contains(&case.as_str()) {
            eprintln!("unknown case {case}\n{USAGE}");
            std::process::exit(2)
        }
    }
    let s = |n: usize| ((n as f64 * scale).round() as usize).max(1);
    c.rtt_iters = s(c.rtt_iters);
    c.pipe_msgs = s(c.pipe_msgs).max(c.window);
    c.big_iters = s(c.big_iters);
    c
}

fn fail(msg: &str) -> ! {
    eprintln!("bench_floor: FAILED: {msg}");
    std::process::exit(1)
}

trait OrFail<T> {
    fn or_fail(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: &str) -> T {
        self.unwrap_or_else(|e| fail(&format!("{what}: {e}")))
    }
}

/// The echo child: a ROUTER that connects and sends every message back.
/// An empty payload means "stop".
fn child(endpoint: &str) {
    // Die with the parent, as the library's workers do.
    // SAFETY: prctl with two integer arguments has no memory effects.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let parent = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    if parent.is_some_and(|p| p != std::os::unix::process::parent_id()) {
        fail("child: the parent is already gone");
    }
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::ROUTER).or_fail("socket");
    sock.set_linger(0).or_fail("linger");
    sock.set_sndhwm(0).or_fail("sndhwm");
    sock.set_rcvhwm(0).or_fail("rcvhwm");
    sock.connect(endpoint).or_fail("connect");
    loop {
        let identity = sock.recv_msg(0).or_fail("recv identity");
        let empty = sock.recv_msg(0).or_fail("recv delimiter");
        if !sock.get_rcvmore().or_fail("rcvmore") {
            fail("child: message with two frames only");
        }
        let payload = sock.recv_msg(0).or_fail("recv payload");
        if payload.is_empty() {
            break;
        }
        sock.send(identity, zmq::SNDMORE).or_fail("send identity");
        sock.send(empty, zmq::SNDMORE).or_fail("send delimiter");
        sock.send(payload, 0).or_fail("send payload");
    }
}

/// A msgpack map shaped like the protocol's `call` of `add [1, 2]`
/// (app, id, type, timestamp, function, args, namespace): about 130 bytes.
/// The last 8 hex digits of the id carry a sequence number.
fn call_payload() -> Vec<u8> {
    let mut b = Vec::with_capacity(160);
    let w = &mut b;
    rmp::encode::write_map_len(w, 7).unwrap();
    rmp::encode::write_str(w, "app").unwrap();
    rmp::encode::write_str(w, "comlink_ipc_v4").unwrap();
    rmp::encode::write_str(w, "id").unwrap();
    rmp::encode::write_str(w, "6f1c2a9e-4b7d-4e21-9a3f-0c5d00000000").unwrap();
    rmp::encode::write_str(w, "type").unwrap();
    rmp::encode::write_str(w, "call").unwrap();
    rmp::encode::write_str(w, "timestamp").unwrap();
    rmp::encode::write_f64(w, 1_764_000_000.123_456).unwrap();
    rmp::encode::write_str(w, "function").unwrap();
    rmp::encode::write_str(w, "add").unwrap();
    rmp::encode::write_str(w, "args").unwrap();
    rmp::encode::write_array_len(w, 2).unwrap();
    rmp::encode::write_uint(w, 1).unwrap();
    rmp::encode::write_uint(w, 2).unwrap();
    rmp::encode::write_str(w, "namespace").unwrap();
    rmp::encode::write_str(w, "default").unwrap();
    b
}

/// Where the 8 sequence digits sit inside `call_payload()`.
fn seq_range(p: &[u8]) -> std::ops::Range<usize> {
    let needle = b"00000000";
    let at = p
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("sequence digits in payload");
    at..at + needle.len()
}

fn seq_hex(seq: u32) -> [u8; 8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 8];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = HEX[((seq >> (28 - 4 * i)) & 0xf) as usize];
    }
    out
}

fn put_seq(p: &mut [u8], r: &std::ops::Range<usize>, seq: u32) {
    p[r.clone()].copy_from_slice(&seq_hex(seq));
}

struct Parent {
    sock: zmq::Socket,
    child: Child,
    msg: zmq::Message,
}

impl Parent {
    fn start() -> Parent {
        let ctx = zmq::Context::new();
        let sock = ctx.socket(zmq::DEALER).or_fail("socket");
        sock.set_linger(0).or_fail("linger");
        sock.set_sndhwm(0).or_fail("sndhwm");
        sock.set_rcvhwm(0).or_fail("rcvhwm");
        sock.bind("tcp://127.0.0.1:*").or_fail("bind");
        let endpoint = sock
            .get_last_endpoint()
            .or_fail("endpoint")
            .unwrap_or_else(|_| fail("endpoint is not text"));
        let exe = std::env::current_exe().or_fail("current_exe");
        let child = Command::new(exe)
            .env(CHILD_ENV, &endpoint)
            .env(PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .spawn()
            .or_fail("spawn echo child");
        let mut p = Parent {
            sock,
            child,
            msg: zmq::Message::new(),
        };
        // The first echo proves the path works (as the library's heartbeat does).
        // A reply later than 10 s means the child is gone: fail, never hang.
        p.sock.set_rcvtimeo(10_000).or_fail("rcvtimeo");
        p.send(&b"ready"[..]);
        if p.recv() != b"ready" {
            fail("readiness echo differs");
        }
        p
    }

    fn send<T: zmq::Sendable>(&self, payload: T) {
        self.sock
            .send(&[][..], zmq::SNDMORE)
            .or_fail("send delimiter");
        self.sock.send(payload, 0).or_fail("send payload");
    }

    /// Receives one reply if one is there; the payload stays in `self.msg`.
    fn try_recv(&mut self) -> Option<&[u8]> {
        self.recv_with(zmq::DONTWAIT)
    }

    /// Receives one reply; the payload stays in `self.msg`.
    fn recv(&mut self) -> &[u8] {
        match self.recv_with(0) {
            Some(reply) => reply,
            None => fail("recv delimiter: no reply"),
        }
    }

    /// One reply's `[empty, payload]`, waiting for it unless `flags` has
    /// DONTWAIT (then `None` when there is none yet).
    fn recv_with(&mut self, flags: i32) -> Option<&[u8]> {
        match self.sock.recv(&mut self.msg, flags) {
            Err(zmq::Error::EAGAIN) if flags & zmq::DONTWAIT != 0 => return None,
            r => r.or_fail("recv delimiter"),
        }
        if !self.msg.is_empty() || !self.sock.get_rcvmore().or_fail("rcvmore") {
            fail("reply does not start with an empty delimiter frame");
        }
        self.sock.recv(&mut self.msg, 0).or_fail("recv payload");
        Some(&self.msg)
    }

    fn stop(mut self) {
        self.send(&[][..]);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) if st.success() => return,
                Ok(Some(st)) => fail(&format!("echo child ended with {st}")),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    fail("echo child did not stop");
                }
            }
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Sequential round trips: (mean µs, median µs).
fn rtt(p: &mut Parent, iters: usize, warmup: usize) -> (f64, f64) {
    let mut payload = call_payload();
    let r = seq_range(&payload);
    let mut lat = Vec::with_capacity(iters);
    let mut started = Instant::now();
    for i in 0..warmup + iters {
        if i == warmup {
            started = Instant::now();
        }
        put_seq(&mut payload, &r, i as u32);
        let t = Instant::now();
        p.send(&payload[..]);
        if p.recv() != &payload[..] {
            fail(&format!("rtt: reply {i} differs from its request"));
        }
        if i >= warmup {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let mean = started.elapsed().as_secs_f64() * 1e6 / iters as f64;
    (mean, median(&mut lat))
}

/// `window` messages in flight; each reply lets one more go. Messages/s.
fn pipe(p: &mut Parent, msgs: usize, window: usize, warmup: usize) -> f64 {
    let mut payload = call_payload();
    let r = seq_range(&payload);
    let len = payload.len();
    let mut run = |p: &mut Parent, n: usize| -> Duration {
        let started = Instant::now();
        let mut sent = 0usize;
        let mut got = 0usize;
        while sent < window.min(n) {
            put_seq(&mut payload, &r, sent as u32);
            p.send(&payload[..]);
            sent += 1;
        }
        while got < n {
            let reply = p.recv();
            // One connection keeps order: reply k carries sequence k.
            if reply.len() != len || reply[r.clone()] != seq_hex(got as u32) {
                fail(&format!("pipe: reply {got} out of order or damaged"));
            }
            got += 1;
            if sent < n {
                put_seq(&mut payload, &r, sent as u32);
                p.send(&payload[..]);
                sent += 1;
            }
        }
        started.elapsed()
    };
    run(p, warmup.max(window) * 4);
    let d = run(p, msgs);
    msgs as f64 / d.as_secs_f64()
}

/// What a producer thread and the thread owning the socket share in `pipe_2t`.
struct Handoff {
    queue: Mutex<Vec<Vec<u8>>>,
    /// The socket thread sleeps (in poll) and must be woken through `wake_fd`.
    socket_sleeping: AtomicBool,
    wake_fd: i32,
    done: AtomicUsize,
    /// The producer waits for a free slot and must be unparked.
    producer_waiting: AtomicBool,
}

/// `pipe` from a producer thread: it builds each message and hands it to the
/// thread that owns the socket (this one) through a locked queue, writing an
/// eventfd only when that thread sleeps; the socket thread sends, reads, and
/// frees a slot of the producer's window per reply, unparking the producer
/// only when it waits for one. The least hand-off a library whose socket
/// lives on its own thread can make for a caller's thread. Messages/s.
fn pipe_2t(p: &mut Parent, msgs: usize, window: usize, warmup: usize) -> f64 {
    // SAFETY: eventfd has no memory arguments; the result is checked.
    let wake_fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if wake_fd < 0 {
        fail("eventfd");
    }
    let zmq_fd = p.sock.get_fd().or_fail("ZMQ_FD");
    let run = |p: &mut Parent, n: usize| -> Duration {
        let h = Arc::new(Handoff {
            queue: Mutex::new(Vec::new()),
            socket_sleeping: AtomicBool::new(false),
            wake_fd,
            done: AtomicUsize::new(0),
            producer_waiting: AtomicBool::new(false),
        });
        let started = Instant::now();
        let producer = {
            let h = Arc::clone(&h);
            std::thread::spawn(move || {
                let mut payload = call_payload();
                let r = seq_range(&payload);
                for i in 0..n {
                    while i - h.done.load(SeqCst) >= window {
                        h.producer_waiting.store(true, SeqCst);
                        if i - h.done.load(SeqCst) < window {
                            h.producer_waiting.store(false, SeqCst);
                            break;
                        }
                        std::thread::park();
                    }
                    put_seq(&mut payload, &r, i as u32);
                    h.queue.lock().unwrap().push(payload.clone());
                    if h.socket_sleeping.load(SeqCst) && h.socket_sleeping.swap(false, SeqCst) {
                        let one = 1u64;
                        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
                        unsafe { libc::write(h.wake_fd, (&one as *const u64).cast(), 8) };
                    }
                }
            })
        };
        let r = seq_range(&call_payload());
        let mut out = Vec::new();
        let mut got = 0usize;
        while got < n {
            std::mem::swap(&mut out, &mut *h.queue.lock().unwrap());
            for m in out.drain(..) {
                p.send(m);
            }
            let mut any = false;
            while let Some(reply) = p.try_recv() {
                if reply[r.clone()] != seq_hex(got as u32) {
                    fail(&format!("pipe2t: reply {got} out of order or damaged"));
                }
                got += 1;
                any = true;
                h.done.fetch_add(1, SeqCst);
                if h.producer_waiting.load(SeqCst) && h.producer_waiting.swap(false, SeqCst) {
                    producer.thread().unpark();
                }
            }
            if any || got == n {
                continue;
            }
            // The last socket call was a recv that found nothing: ZMQ_FD is armed.
            h.socket_sleeping.store(true, SeqCst);
            if !h.queue.lock().unwrap().is_empty() {
                h.socket_sleeping.store(false, SeqCst);
                continue;
            }
            let mut fds = [zmq_fd, wake_fd].map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: two valid pollfd entries.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, 10_000) } == 0 {
                fail("pipe2t: no reply for 10 s");
            }
            h.socket_sleeping.store(false, SeqCst);
            if fds[1].revents != 0 {
                let mut v = 0u64;
                // SAFETY: reads 8 bytes into a live u64 from our eventfd.
                unsafe { libc::read(wake_fd, (&mut v as *mut u64).cast(), 8) };
            }
        }
        producer
            .join()
            .unwrap_or_else(|_| fail("pipe2t: producer panicked"));
        started.elapsed()
    };
    run(p, warmup.max(window) * 4);
    let d = run(p, msgs);
    // SAFETY: our eventfd, closed once.
    unsafe { libc::close(wake_fd) };
    msgs as f64 / d.as_secs_f64()
}

/// Sequential echoes of `size` bytes: echoes/s. The parent copies its
/// buffer into a message for each send (a caller's data is not given away).
fn big(p: &mut Parent, iters: usize, size: usize) -> f64 {
    let mut data: Vec<u8> = (0..size).map(|i| (i * 131 % 251) as u8).collect();
    let mut started = Instant::now();
    let warmup = 10;
    for i in 0..warmup + iters {
        if i == warmup {
            started = Instant::now();
        }
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        p.send(&data[..]);
        let reply = p.recv();
        let mid = size / 2;
        if reply.len() != size
            || reply[..8] != data[..8]
            || reply[mid] != data[mid]
            || reply[size - 1] != data[size - 1]
        {
            fail(&format!("big: echo {i} has the wrong length or content"));
        }
    }
    iters as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    if let Ok(endpoint) = std::env::var(CHILD_ENV) {
        child(&endpoint);
        return;
    }
    let c = parse_args();
    let mut p = Parent::start();
    let mut metrics: Vec<String> = Vec::new();
    let mut metric = |name: &str, value: f64, unit: &str, better: &str, label: &str| {
        metrics.push(format!(
            "\"{name}\": {{\"value\": {value:.3}, \"unit\": \"{unit}\", \"better\": \"{better}\", \"label\": \"{label}\"}}"
        ));
    };
    for case in &c.cases {
        eprintln!("bench_floor: {case} ...");
        match case.as_str() {
            "rtt" => {
                let (mean, p50) = rtt(&mut p, c.rtt_iters, c.warmup);
                metric(
                    "rtt_p50_us",
                    p50,
                    "us",
                    "lower",
                    "floor round trip (median)",
                );
                metric(
                    "rtt_mean_us",
                    mean,
                    "us",
                    "lower",
                    "floor round trip (mean)",
                );
            }
            "pipe" => {
                let v = pipe(&mut p, c.pipe_msgs, c.window, c.warmup);
                metric(
                    "pipe_msgs_per_s",
                    v,
                    "msg/s",
                    "higher",
                    &format!("floor pipelined, {} in flight", c.window),
                );
            }
            "pipe4" => {
                let v = pipe(&mut p, c.pipe_msgs / 4, 4, c.warmup);
                metric(
                    "pipe4_msgs_per_s",
                    v,
                    "msg/s",
                    "higher",
                    "floor pipelined, 4 in flight",
                );
            }
            "pipe2t" => {
                let v = pipe_2t(&mut p, c.pipe_msgs, c.window, c.warmup);
                metric(
                    "pipe_2t_msgs_per_s",
                    v,
                    "msg/s",
                    "higher",
                    &format!(
                        "floor pipelined from a producer thread, {} in flight",
                        c.window
                    ),
                );
            }
            "big" => {
                let v = big(&mut p, c.big_iters, c.big_size);
                metric(
                    "echo_1mib_per_s",
                    v,
                    "echo/s",
                    "higher",
                    &format!("floor {} B echo", c.big_size),
                );
            }
            _ => unreachable!(),
        }
    }
    p.stop();
    println!(
        "{{\"suite\": \"floor\", \"metrics\": {{{}}}, \"info\": {{\"payload_bytes\": {}, \"rtt_iters\": {}, \"pipe_msgs\": {}, \"window\": {}, \"big_iters\": {}, \"big_size\": {}}}}}",
        metrics.join(", "),
        call_payload().len(),
        c.rtt_iters,
        c.pipe_msgs,
        c.window,
        c.big_iters,
        c.big_size
    );
}
