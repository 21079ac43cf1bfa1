//! The parent (caller) side: a DEALER socket driven by one I/O thread.
//!
//! Callers encode their request on their own thread, push it onto a short
//! queue and wake the I/O thread through an eventfd (only when the queue was
//! empty, so a burst costs one wake). The I/O thread alone owns the socket,
//! the pending-call table, the deadline heap, the heartbeat timer and the
//! child process, so none of those needs a lock. A reply completes its call
//! in place: a blocked caller is woken through its own slot, an async
//! completion runs right on the I/O thread.

use crate::breaker::{Admit, Breaker, State as BreakerState};
use crate::codec::{self, Encoder, Kind, Limits};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{self, IdGen, IdText};
use crate::log::{self, Level};
use crate::options::Options;
use crate::process::Process;
use crate::registry::Registry;
use crate::stats::Stats;
use crate::wake::Wake;
use crate::{bound_port, is_endpoint, zmq_context};
use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

const NIL: &[u8] = &[0xc0];
/// Messages handled per socket wake-up before timers and the queue get a turn.
const RECV_BATCH: usize = 512;
/// Payloads up to this size are copied into libzmq's own buffer; larger ones
/// are handed over without a copy.
const ZERO_COPY_MIN: usize = 4096;

/// A reply's result value: raw MessagePack borrowed from the received frame.
pub struct Reply {
    msg: Option<zmq::Message>,
    range: Range<usize>,
}

impl Reply {
    pub fn bytes(&self) -> &[u8] {
        match &self.msg {
            Some(m) => &m[self.range.clone()],
            None => NIL,
        }
    }
}

pub type Outcome = Result<Reply>;

/// A blocked caller's mailbox.
#[derive(Default)]
struct Slot {
    value: Mutex<Option<Outcome>>,
    cv: Condvar,
}

impl Slot {
    fn put(&self, outcome: Outcome) {
        *self.value.lock() = Some(outcome);
        self.cv.notify_one();
    }

    fn take(&self) -> Outcome {
        let mut v = self.value.lock();
        loop {
            if let Some(outcome) = v.take() {
                return outcome;
            }
            self.cv.wait(&mut v);
        }
    }
}

/// How a finished call is delivered.
enum Completion {
    Wait(Arc<Slot>),
    /// Runs on the I/O thread; it must not block.
    Callback(Box<dyn FnOnce(Outcome) + Send>),
}

impl Completion {
    fn deliver(self, outcome: Outcome) {
        match self {
            Completion::Wait(slot) => slot.put(outcome),
            Completion::Callback(f) => {
                // A panicking completion must not take the I/O thread down.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(outcome)));
            }
        }
    }
}

struct Request {
    id: IdText,
    function: Box<str>,
    payload: Vec<u8>,
    timeout: Option<Duration>,
    probe: bool,
    completion: Completion,
}

struct Pending {
    function: Box<str>,
    timeout: Option<Duration>,
    started: Instant,
    probe: bool,
    completion: Completion,
}

/// What the parent reaches: a program it spawns, or an endpoint it connects to.
#[derive(Debug, Clone)]
pub enum Target {
    Spawn {
        program: String,
        args: Vec<String>,
    },
    Endpoint(String),
    /// A service found in the registry; `endpoint` is where it was last seen.
    Service {
        id: String,
        endpoint: String,
    },
}

#[derive(Default)]
struct Queue {
    requests: Vec<Request>,
    closing: bool,
}

enum Readiness {
    Starting,
    Ready,
    Failed(Error),
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Wake,
    options: Options,
    limits: Limits,
    ids: IdGen,
    stats: Stats,
    breaker: Breaker,
    readiness: Mutex<Readiness>,
    ready_cv: Condvar,
    /// Set when the worker is gone for good: calls fail at once with it.
    dead: Mutex<Option<Error>>,
    healthy: AtomicBool,
    name: String,
}

/// A connection to one worker. Thread-safe: any number of threads may call.
pub struct Parent {
    shared: Arc<Shared>,
    io: Mutex<Option<JoinHandle<()>>>,
    io_thread: ThreadId,
}

fn program_name(program: &str) -> String {
    std::path::Path::new(program)
        .file_name()
        .map_or_else(|| program.to_owned(), |n| n.to_string_lossy().into_owned())
}

impl Parent {
    /// Binds a DEALER, starts `program` and returns once it has answered a heartbeat.
    pub fn spawn(program: &str, args: &[String], options: Options) -> Result<Parent> {
        if program.is_empty() {
            return Err(Error::invalid("program must not be empty"));
        }
        Self::start(
            Target::Spawn {
                program: program.to_owned(),
                args: args.to_vec(),
            },
            options,
        )
    }

    /// Connects to a running worker: `target` is an endpoint
    /// (`tcp://host:port`) or a service id looked up in the registry (polled
    /// up to the connect timeout). Returns once the worker has answered a heartbeat.
    pub fn connect(target: &str, options: Options) -> Result<Parent> {
        let started = Instant::now();
        let target = if is_endpoint(target) {
            Target::Endpoint(target.to_owned())
        } else {
            let entry = Registry::for_user()?.discover(target, options.connect_timeout)?;
            Target::Service {
                id: target.to_owned(),
                endpoint: format!("tcp://127.0.0.1:{}", entry.port),
            }
        };
        let mut options = options;
        // Discovery and the first heartbeat share one connect timeout.
        options.connect_timeout = options
            .connect_timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        Self::start(target, options)
    }

    fn start(target: Target, options: Options) -> Result<Parent> {
        let socket = zmq_context().socket(zmq::DEALER)?;
        socket.set_linger(0)?;
        socket.set_maxmsgsize(options.max_message_size)?;
        socket.set_sndhwm(0)?;
        socket.set_rcvhwm(0)?;
        let (port, name, wait) = match &target {
            Target::Spawn { program, .. } => {
                socket
                    .bind(&format!("tcp://{}:*", options.bind_host))
                    .map_err(|e| Error::io(format!("cannot bind {}: {e}", options.bind_host)))?;
                if options.bind_host != "127.0.0.1" && options.bind_host != "localhost" {
                    log::emit(
                        Level::Warn,
                        "insecure_bind",
                        &format!(
                            "parent listens on {} (not loopback); the protocol has no authentication",
                            options.bind_host
                        ),
                        &[],
                    );
                }
                let port = bound_port(&socket)?;
                let name = if options.name.is_empty() {
                    program_name(program)
                } else {
                    options.name.clone()
                };
                (port, name, options.start_timeout)
            }
            Target::Endpoint(ep) | Target::Service { endpoint: ep, .. } => {
                socket
                    .connect(ep)
                    .map_err(|e| Error::invalid(format!("cannot connect to '{ep}': {e}")))?;
                let name = match (&target, options.name.is_empty()) {
                    (_, false) => options.name.clone(),
                    (Target::Service { id, .. }, true) => id.clone(),
                    _ => ep.clone(),
                };
                (0, name, options.connect_timeout)
            }
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Wake::new().map_err(|e| Error::io(format!("eventfd: {e}")))?,
            limits: Limits::default(),
            ids: IdGen::new(),
            stats: Stats::default(),
            breaker: Breaker::new(options.breaker_threshold, options.breaker_cooldown),
            readiness: Mutex::new(Readiness::Starting),
            ready_cv: Condvar::new(),
            dead: Mutex::new(None),
            healthy: AtomicBool::new(false),
            name,
            options,
        });
        let io = Io::new(Arc::clone(&shared), socket, target, port);
        let handle = std::thread::Builder::new()
            .name("mf-parent-io".into())
            .spawn(move || io.run())
            .map_err(|e| Error::io(format!("cannot start I/O thread: {e}")))?;
        let parent = Parent {
            shared,
            io_thread: handle.thread().id(),
            io: Mutex::new(Some(handle)),
        };
        parent.wait_ready(wait)?;
        Ok(parent)
    }

    fn wait_ready(&self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        let mut r = self.shared.readiness.lock();
        loop {
            match &*r {
                Readiness::Ready => return Ok(()),
                Readiness::Failed(e) => {
                    let e = e.clone();
                    drop(r);
                    self.close();
                    return Err(e);
                }
                Readiness::Starting => {
                    if self
                        .shared
                        .ready_cv
                        .wait_until(&mut r, deadline)
                        .timed_out()
                    {
                        drop(r);
                        self.close();
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "worker '{}' did not answer within {} ms",
                                self.shared.name,
                                wait.as_millis()
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Calls `function` with `args` (one MessagePack array) and blocks for its result.
    pub fn call(&self, function: &str, args: &[u8], timeout_ms: i64) -> Outcome {
        let slot = Arc::new(Slot::default());
        self.submit(
            function,
            args,
            timeout_ms,
            Completion::Wait(Arc::clone(&slot)),
        )?;
        slot.take()
    }

    /// Starts a call; `done` runs exactly once, on the I/O thread, when it
    /// ends. When this returns an error, `done` is never run.
    pub fn call_async(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        done: Box<dyn FnOnce(Outcome) + Send>,
    ) -> Result<()> {
        self.submit(function, args, timeout_ms, Completion::Callback(done))
    }

    fn submit(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        completion: Completion,
    ) -> Result<()> {
        let s = &*self.shared;
        if function.is_empty() {
            return Err(Error::invalid("function name must not be empty"));
        }
        codec::validate_args(args, s.limits)
            .map_err(|e| Error::invalid(format!("arguments are not one msgpack array: {e}")))?;
        if let Some(e) = &*s.dead.lock() {
            return Err(e.clone());
        }
        let probe = match s.breaker.admit() {
            Admit::Yes => false,
            Admit::Probe => true,
            Admit::No => {
                return Err(Error::new(
                    ErrorKind::CircuitOpen,
                    format!(
                        "circuit breaker is open for worker '{}' (next probe in {} ms)",
                        s.name,
                        s.breaker.retry_in().as_millis()
                    ),
                ))
            }
        };
        let id = s.ids.next();
        let mut payload = Vec::with_capacity(args.len() + 160 + function.len());
        Encoder::new(&mut payload).call(ids::as_str(&id), function, args, &s.options.namespace);
        self.enqueue(Request {
            id,
            function: function.into(),
            payload,
            timeout: s.options.call_timeout(timeout_ms),
            probe,
            completion,
        })
    }

    fn enqueue(&self, request: Request) -> Result<()> {
        let s = &*self.shared;
        let mut q = s.queue.lock();
        if q.closing {
            drop(q);
            if request.probe {
                s.breaker.failure(true, "parent closed");
            }
            return Err(Error::closed());
        }
        let was_empty = q.requests.is_empty();
        q.requests.push(request);
        drop(q);
        if was_empty {
            s.wake.notify();
        }
        Ok(())
    }

    /// Sends one heartbeat and waits for its echo; returns the round-trip
    /// time. Not subject to the circuit breaker.
    pub fn ping(&self, timeout: Duration) -> Result<Duration> {
        let id = self.shared.ids.next();
        let mut payload = Vec::with_capacity(128);
        Encoder::new(&mut payload).heartbeat(ids::as_str(&id), codec::now_seconds(), false);
        let slot = Arc::new(Slot::default());
        let started = Instant::now();
        self.enqueue(Request {
            id,
            function: "heartbeat".into(),
            payload,
            timeout: Some(timeout),
            probe: false,
            completion: Completion::Wait(Arc::clone(&slot)),
        })?;
        slot.take()?;
        Ok(started.elapsed())
    }

    /// Ends the I/O thread: pending calls fail with `Closed`, a spawned
    /// worker is asked to stop, then terminated and reaped. Idempotent.
    pub fn close(&self) {
        self.shared.queue.lock().closing = true;
        self.shared.wake.notify();
        if std::thread::current().id() == self.io_thread {
            // Called from a completion: the I/O loop ends by itself after it returns.
            return;
        }
        if let Some(handle) = self.io.lock().take() {
            let _ = handle.join();
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.shared.breaker.state()
    }

    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// The metrics as one JSON object.
    pub fn stats_json(&self) -> String {
        let s = &self.shared.stats;
        let b = &self.shared.breaker;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "worker": self.shared.name,
            "requests_total": r(&s.requests_total),
            "requests_success": r(&s.requests_success),
            "requests_failed": r(&s.requests_failed),
            "remote_errors": r(&s.remote_errors),
            "timeouts": r(&s.timeouts),
            "in_flight": s.in_flight.load(Ordering::Relaxed).max(0),
            "latency_avg_ms": s.latency.mean_ms(),
            "latency_p50_ms": s.latency.quantile_ms(0.50),
            "latency_p95_ms": s.latency.quantile_ms(0.95),
            "latency_p99_ms": s.latency.quantile_ms(0.99),
            "heartbeat_rtt_last_ms": r(&s.heartbeat_rtt_last_us) as f64 / 1000.0,
            "heartbeat_rtt_avg_ms": s.heartbeat_rtt.mean_ms(),
            "heartbeat_misses": r(&s.heartbeat_misses),
            "healthy": self.is_healthy(),
            "circuit_state": b.state().as_str(),
            "circuit_trips": b.trips(),
            "consecutive_failures": b.failures(),
            "restarts": r(&s.restarts),
            "dropped_malformed": r(&s.dropped_malformed),
            "dropped_unknown": r(&s.dropped_unknown),
            "worker_pid": s.worker_pid.load(Ordering::Relaxed),
        })
        .to_string()
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        self.close();
    }
}

/// Heartbeat bookkeeping of the I/O thread.
struct Heartbeat {
    outstanding: Option<(IdText, Instant)>,
    next_at: Instant,
    consecutive_misses: u32,
}

/// State owned by the I/O thread alone.
struct Io {
    shared: Arc<Shared>,
    socket: zmq::Socket,
    target: Target,
    port: u16,
    pending: HashMap<IdText, Pending>,
    deadlines: BinaryHeap<Reverse<(Instant, IdText)>>,
    /// Payloads libzmq could not take yet (no peer connected).
    backlog: VecDeque<Vec<u8>>,
    child: Option<Process>,
    restarts: u32,
    restart_at: Option<Instant>,
    hb: Heartbeat,
    ready: bool,
    closing: bool,
    scratch: Vec<Request>,
}

impl Io {
    fn new(shared: Arc<Shared>, socket: zmq::Socket, target: Target, port: u16) -> Io {
        Io {
            shared,
            socket,
            target,
            port,
            pending: HashMap::new(),
            deadlines: BinaryHeap::new(),
            backlog: VecDeque::new(),
            child: None,
            restarts: 0,
            restart_at: None,
            hb: Heartbeat {
                outstanding: None,
                next_at: Instant::now(),
                consecutive_misses: 0,
            },
            ready: false,
            closing: false,
            scratch: Vec::new(),
        }
    }

    fn run(mut self) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_loop()));
        if result.is_err() {
            self.fail_all(&Error::new(
                ErrorKind::Panic,
                "internal error: the parent's I/O thread panicked",
            ));
        }
        self.shutdown();
    }

    fn run_loop(&mut self) {
        if let Target::Spawn { .. } = self.target {
            if let Err(e) = self.start_child() {
                self.set_readiness(Readiness::Failed(e));
                return;
            }
        }
        self.send_heartbeat(Instant::now());
        while !self.closing {
            let now = Instant::now();
            let timeout = self.poll_timeout(now);
            let (readable, writable, woken, exited) = {
                let mut events = zmq::POLLIN;
                if !self.backlog.is_empty() {
                    events |= zmq::POLLOUT;
                }
                let exit_fd = self.child.as_ref().and_then(Process::exit_fd);
                let mut items = [
                    self.socket.as_poll_item(events),
                    zmq::PollItem::from_fd(self.shared.wake.fd(), zmq::POLLIN),
                    zmq::PollItem::from_fd(exit_fd.unwrap_or(-1), zmq::POLLIN),
                ];
                let n = if exit_fd.is_some() { 3 } else { 2 };
                if zmq::poll(&mut items[..n], timeout).is_err() {
                    continue;
                }
                (
                    items[0].is_readable(),
                    items[0].is_writable(),
                    items[1].is_readable(),
                    n == 3 && items[2].is_readable(),
                )
            };
            if woken {
                self.shared.wake.drain();
                self.take_requests();
            }
            if readable {
                self.receive();
            }
            if writable {
                self.flush_backlog();
            }
            if exited
                || (self.child.is_some()
                    && self.child.as_ref().and_then(Process::exit_fd).is_none())
            {
                self.check_child();
            }
            self.timers(Instant::now());
        }
    }

    /// Milliseconds until the next timer (-1: none).
    fn poll_timeout(&self, now: Instant) -> i64 {
        let mut next: Option<Instant> = self.deadlines.peek().map(|Reverse((t, _))| *t);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some((_, sent)) = self.hb.outstanding {
            consider(sent + self.hb_timeout());
        } else if self.heartbeats_on() && self.ready {
            consider(self.hb.next_at);
        }
        if let Some(t) = self.restart_at {
            consider(t);
        }
        if self.child.as_ref().is_some_and(|c| c.exit_fd().is_none()) {
            consider(now + Duration::from_millis(50));
        }
        match next {
            None => -1,
            Some(t) => {
                let d = t.saturating_duration_since(now);
                // Round up so a timer is never polled for before it is due.
                (d.as_micros().div_ceil(1000)) as i64
            }
        }
    }

    fn heartbeats_on(&self) -> bool {
        !self.shared.options.heartbeat_interval.is_zero()
    }

    fn hb_timeout(&self) -> Duration {
        if self.heartbeats_on() {
            self.shared.options.heartbeat_timeout
        } else {
            // Heartbeats off: the start-up heartbeat is resent at this pace.
            Duration::from_millis(1000)
        }
    }

    fn take_requests(&mut self) {
        let mut batch = std::mem::take(&mut self.scratch);
        {
            let mut q = self.shared.queue.lock();
            std::mem::swap(&mut batch, &mut q.requests);
            if q.closing {
                self.closing = true;
            }
        }
        let now = Instant::now();
        for r in batch.drain(..) {
            self.shared
                .stats
                .requests_total
                .fetch_add(1, Ordering::Relaxed);
            self.shared.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            if let Some(t) = r.timeout {
                self.deadlines.push(Reverse((now + t, r.id)));
            }
            self.pending.insert(
                r.id,
                Pending {
                    function: r.function,
                    timeout: r.timeout,
                    started: now,
                    probe: r.probe,
                    completion: r.completion,
                },
            );
            self.send(r.payload);
        }
        self.scratch = batch;
    }

    /// Sends `[empty, payload]`, or keeps the payload for later when libzmq
    /// has no peer to take it yet.
    fn send(&mut self, payload: Vec<u8>) {
        if !self.backlog.is_empty() || !self.try_send(&payload) {
            self.backlog.push_back(payload);
        }
    }

    fn try_send(&self, payload: &[u8]) -> bool {
        match self.socket.send(&[][..], zmq::DONTWAIT | zmq::SNDMORE) {
            Ok(()) => {}
            Err(_) => return false,
        }
        // Once the first frame is accepted the rest of the message is too.
        let msg = if payload.len() < ZERO_COPY_MIN {
            zmq::Message::from(payload)
        } else {
            zmq::Message::from(payload.to_vec())
        };
        let _ = self.socket.send(msg, zmq::DONTWAIT);
        true
    }

    fn flush_backlog(&mut self) {
        while let Some(p) = self.backlog.front() {
            if !self.try_send(p) {
                break;
            }
            self.backlog.pop_front();
        }
    }

    fn receive(&mut self) {
        for _ in 0..RECV_BATCH {
            let first = match self.socket.recv_msg(zmq::DONTWAIT) {
                Ok(m) => m,
                Err(_) => return,
            };
            if !first.is_empty() || !first.get_more() {
                self.drop_rest(first.get_more());
                continue;
            }
            let payload = match self.socket.recv_msg(zmq::DONTWAIT) {
                Ok(m) => m,
                Err(_) => return,
            };
            if payload.get_more() {
                self.drop_rest(true);
                continue;
            }
            self.handle(payload);
        }
    }

    /// Counts a message with the wrong frames and discards what is left of it.
    fn drop_rest(&mut self, mut more: bool) {
        self.shared
            .stats
            .dropped_malformed
            .fetch_add(1, Ordering::Relaxed);
        while more {
            more = self
                .socket
                .recv_msg(zmq::DONTWAIT)
                .map(|m| m.get_more())
                .unwrap_or(false);
        }
    }

    fn handle(&mut self, payload: zmq::Message) {
        let shared = Arc::clone(&self.shared);
        let msg = match codec::decode(&payload, shared.limits) {
            Ok(m) => m,
            Err(e) => {
                shared
                    .stats
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                log::emit(
                    Level::Debug,
                    "message_dropped",
                    &format!("dropped a payload from the worker: {e}"),
                    &[],
                );
                return;
            }
        };
        match msg.kind {
            Kind::Response | Kind::Error => {
                let Some(pending) = msg
                    .id
                    .and_then(ids::key)
                    .and_then(|k| self.pending.remove(&k))
                else {
                    shared.stats.dropped_unknown.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let outcome = if msg.kind == Kind::Response {
                    let range = msg.result.map(|r| {
                        let start = r.as_ptr() as usize - payload.as_ptr() as usize;
                        start..start + r.len()
                    });
                    Ok(match range {
                        Some(range) => Reply {
                            msg: Some(payload),
                            range,
                        },
                        None => Reply {
                            msg: None,
                            range: 0..0,
                        },
                    })
                } else {
                    Err(Error::new(
                        ErrorKind::Remote,
                        msg.error.unwrap_or("remote error without text").to_owned(),
                    ))
                };
                self.finish(pending, outcome);
            }
            Kind::Heartbeat
                if msg
                    .id
                    .and_then(ids::key)
                    .is_some_and(|k| self.pending.contains_key(&k)) =>
            {
                if let Some(p) = msg
                    .id
                    .and_then(ids::key)
                    .and_then(|k| self.pending.remove(&k))
                {
                    self.finish(
                        p,
                        Ok(Reply {
                            msg: None,
                            range: 0..0,
                        }),
                    );
                }
            }
            Kind::Heartbeat => {
                let is_ours = matches!(
                    (msg.id.and_then(ids::key), self.hb.outstanding),
                    (Some(k), Some((id, _))) if k == id
                );
                if is_ours || (!self.ready && msg.hb_response) {
                    self.heartbeat_answered(msg.hb_timestamp);
                }
            }
            Kind::Stdout | Kind::Stderr => {
                let stream = if msg.kind == Kind::Stdout {
                    "stdout"
                } else {
                    "stderr"
                };
                let pid = self.child.as_ref().map(Process::pid);
                for line in msg.output.unwrap_or("").lines() {
                    log::worker_output(&shared.name, stream, pid, line);
                }
            }
            _ => {}
        }
    }

    fn heartbeat_answered(&mut self, hb_timestamp: Option<f64>) {
        let s = &self.shared.stats;
        if let Some((_, sent)) = self.hb.outstanding.take() {
            let rtt = sent.elapsed();
            s.heartbeat_rtt.record(rtt);
            s.heartbeat_rtt_last_us
                .store(rtt.as_micros() as u64, Ordering::Relaxed);
        } else if let Some(ts) = hb_timestamp {
            let rtt = ((codec::now_seconds() - ts).max(0.0) * 1e6) as u64;
            s.heartbeat_rtt_last_us.store(rtt, Ordering::Relaxed);
        }
        self.hb.consecutive_misses = 0;
        self.hb.next_at = Instant::now() + self.shared.options.heartbeat_interval;
        self.shared.healthy.store(true, Ordering::Relaxed);
        if !self.ready {
            self.ready = true;
            self.set_readiness(Readiness::Ready);
        }
    }

    fn send_heartbeat(&mut self, now: Instant) {
        let id = self.shared.ids.next();
        let mut payload = Vec::with_capacity(128);
        Encoder::new(&mut payload).heartbeat(ids::as_str(&id), codec::now_seconds(), false);
        self.hb.outstanding = Some((id, now));
        self.send(payload);
    }

    fn timers(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            if let Some(p) = self.pending.remove(&id) {
                let ms = p.timeout.map_or(0, |t| t.as_millis());
                let e = Error::new(
                    ErrorKind::Timeout,
                    format!("call to '{}' timed out after {ms} ms", p.function),
                );
                log::emit(
                    Level::Warn,
                    "request_timeout",
                    &e.message,
                    &[("function", Value::from(&*p.function))],
                );
                self.finish(p, Err(e));
            }
        }
        if let Some((_, sent)) = self.hb.outstanding {
            if now >= sent + self.hb_timeout() {
                self.heartbeat_missed(now);
            }
        } else if self.heartbeats_on() && self.ready && now >= self.hb.next_at {
            self.send_heartbeat(now);
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart_at = None;
            self.restart();
        }
    }

    fn heartbeat_missed(&mut self, now: Instant) {
        self.hb.outstanding = None;
        if !self.ready {
            // Still starting: ask again until the start-up deadline decides.
            self.send_heartbeat(now);
            return;
        }
        let s = &self.shared;
        s.stats.heartbeat_misses.fetch_add(1, Ordering::Relaxed);
        self.hb.consecutive_misses += 1;
        log::emit(
            Level::Warn,
            "heartbeat_missed",
            &format!(
                "worker '{}' missed a heartbeat ({} in a row)",
                s.name, self.hb.consecutive_misses
            ),
            &[("consecutive", self.hb.consecutive_misses.into())],
        );
        if self.hb.consecutive_misses >= s.options.heartbeat_max_misses {
            self.hb.consecutive_misses = 0;
            s.healthy.store(false, Ordering::Relaxed);
            s.breaker.failure(false, "heartbeats lost");
        }
        self.hb.next_at = now;
        self.rediscover();
        self.send_heartbeat(now);
    }

    /// After a failure, a service may have restarted on another port: look
    /// it up again and follow it.
    fn rediscover(&mut self) {
        let Target::Service { id, endpoint } = &mut self.target else {
            return;
        };
        let Some(entry) = Registry::for_user().ok().and_then(|r| r.lookup(id)) else {
            return;
        };
        let fresh = format!("tcp://127.0.0.1:{}", entry.port);
        if fresh == *endpoint {
            return;
        }
        let _ = self.socket.disconnect(endpoint);
        if self.socket.connect(&fresh).is_ok() {
            log::emit(
                Level::Info,
                "service_moved",
                &format!("service '{id}' moved from {endpoint} to {fresh}"),
                &[("pid", entry.pid.into())],
            );
            *endpoint = fresh;
        }
    }

    /// Ends one call: stats, breaker, then delivery.
    fn finish(&mut self, p: Pending, outcome: Outcome) {
        let s = &self.shared;
        s.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        s.stats.latency.record(p.started.elapsed());
        match &outcome {
            Ok(_) => {
                s.stats.requests_success.fetch_add(1, Ordering::Relaxed);
                s.breaker.success(p.probe);
            }
            Err(e) => {
                s.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                match e.kind {
                    ErrorKind::Remote => {
                        s.stats.remote_errors.fetch_add(1, Ordering::Relaxed);
                        if s.options.breaker_counts_remote_errors {
                            s.breaker.failure(p.probe, &e.message);
                        } else {
                            s.breaker.success(p.probe);
                        }
                    }
                    ErrorKind::Timeout => {
                        s.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                        s.breaker.failure(p.probe, &e.message);
                        p.completion.deliver(outcome);
                        self.rediscover();
                        return;
                    }
                    // Worker exits are counted once per exit, not per call.
                    _ => {}
                }
            }
        }
        p.completion.deliver(outcome);
    }

    fn start_child(&mut self) -> Result<()> {
        let Target::Spawn { program, args } = &self.target else {
            return Ok(());
        };
        let child = Process::spawn(program, args, self.port, &self.shared.name)?;
        self.shared
            .stats
            .worker_pid
            .store(i64::from(child.pid()), Ordering::Relaxed);
        log::emit(
            Level::Info,
            "worker_start",
            &format!(
                "started worker '{}' (pid {})",
                self.shared.name,
                child.pid()
            ),
            &[("pid", child.pid().into()), ("port", self.port.into())],
        );
        self.child = Some(child);
        Ok(())
    }

    fn check_child(&mut self) {
        let Some(status) = self.child.as_mut().and_then(Process::try_exit) else {
            return;
        };
        let Some(child) = self.child.take() else {
            return;
        };
        let message = child.exit_message(status);
        let pid = child.pid();
        drop(child);
        let s = Arc::clone(&self.shared);
        s.stats.worker_pid.store(0, Ordering::Relaxed);
        s.healthy.store(false, Ordering::Relaxed);
        log::emit(
            Level::Warn,
            "worker_exit",
            &format!("worker '{}' (pid {pid}) {message}", s.name),
            &[
                ("pid", pid.into()),
                ("status", crate::process::describe(status).into()),
            ],
        );
        let e = Error::new(ErrorKind::WorkerExited, message);
        self.fail_pending(&e);
        // Whatever was meant for the old process is void.
        self.backlog.clear();
        self.hb.outstanding = None;
        if !self.ready {
            self.set_readiness(Readiness::Failed(e));
            self.closing = true;
            return;
        }
        s.breaker.failure(false, &e.message);
        if self.restarts < s.options.auto_restart {
            let backoff = Duration::from_millis(100u64 << self.restarts.min(6));
            self.restart_at = Some(Instant::now() + backoff);
        } else {
            if s.options.auto_restart > 0 {
                s.breaker.force_open("worker restart limit reached");
            }
            *s.dead.lock() = Some(e);
        }
    }

    fn restart(&mut self) {
        self.restarts += 1;
        self.shared.stats.restarts.fetch_add(1, Ordering::Relaxed);
        log::emit(
            Level::Warn,
            "worker_restart",
            &format!(
                "restarting worker '{}' (restart {})",
                self.shared.name, self.restarts
            ),
            &[("restart", self.restarts.into())],
        );
        match self.start_child() {
            Ok(()) => {
                self.hb.next_at = Instant::now();
                self.send_heartbeat(Instant::now());
            }
            Err(e) => {
                *self.shared.dead.lock() = Some(e.clone());
                self.shared.breaker.force_open(&e.message);
            }
        }
    }

    fn set_readiness(&self, r: Readiness) {
        let mut cur = self.shared.readiness.lock();
        if matches!(*cur, Readiness::Starting) {
            *cur = r;
            self.shared.ready_cv.notify_all();
        }
    }

    fn fail_pending(&mut self, e: &Error) {
        self.deadlines.clear();
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        for p in pending {
            self.finish(p, Err(e.clone()));
        }
    }

    /// Fails every pending and queued call (used on close and after a panic).
    fn fail_all(&mut self, e: &Error) {
        self.fail_pending(e);
        let queued = {
            let mut q = self.shared.queue.lock();
            q.closing = true;
            std::mem::take(&mut q.requests)
        };
        for r in queued {
            r.completion.deliver(Err(e.clone()));
        }
    }

    fn shutdown(&mut self) {
        self.fail_all(&Error::closed());
        self.set_readiness(Readiness::Failed(Error::closed()));
        if let Some(mut child) = self.child.take() {
            let mut payload = Vec::with_capacity(96);
            let id = self.shared.ids.next();
            Encoder::new(&mut payload).shutdown(ids::as_str(&id));
            let _ = self.try_send(&payload);
            let status = child.terminate(self.shared.options.shutdown_grace);
            log::emit(
                Level::Info,
                "worker_stop",
                &format!(
                    "stopped worker '{}' (pid {}, {})",
                    self.shared.name,
                    child.pid(),
                    status.map_or_else(|| "not reaped".to_owned(), crate::process::describe)
                ),
                &[("pid", child.pid().into())],
            );
        }
        self.shared.stats.worker_pid.store(0, Ordering::Relaxed);
    }
}
