//! The parent (caller) side: one DEALER socket, driven by whichever thread
//! is waiting for it (leader/follower). A spawned worker of this library
//! is reached over the private link instead (see [`crate::link`]): the
//! leader then drives that stream the same way, and the DEALER idles.
//!
//! A blocking call finds the socket free most of the time: it takes it,
//! sends its request, polls for the reply itself and puts the socket back —
//! no hop to another thread on either way, so a sequential call costs what a
//! raw libzmq round trip costs plus encoding. While a thread leads, other
//! callers queue their payloads (waking it through an eventfd only when it
//! sleeps in `zmq_poll`); it sends
//! them, routes every reply to its caller (a waiting thread's slot, or an
//! async completion run in place), and when its own reply has arrived hands
//! the socket to a waiting caller, or to the supervisor thread if only async
//! calls or a heartbeat are outstanding.
//!
//! The supervisor thread owns the child process (exit through a pidfd,
//! restart), heartbeats and readiness; it leads only when no caller does.
//! Shared state lives in one `Core` behind a mutex that is held for
//! bookkeeping only — never while a thread sleeps in `zmq_poll`.

use crate::breaker::{Admit, Breaker, State as BreakerState};
use crate::codec::{self, Encoder, Kind, Limits};
use crate::error::{Error, ErrorKind, Result};
use crate::frame::{self, Frame};
use crate::ids::{self, IdGen, IdText};
use crate::link::{self, Recv, Stream};
use crate::log::{self, Level};
use crate::options::Options;
use crate::process::Process;
use crate::registry::Registry;
use crate::stats::Stats;
use crate::sync::{Condvar, Mutex, MutexGuard};
use crate::text::ShortStr;
use crate::wake::{self, Wake, WatchSet};
use crate::{bound_port, is_endpoint, zmq_context};
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::ops::Range;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

const NIL: &[u8] = &[0xc0];
/// How long a watching event loop may leave replies unread before the
/// supervisor reads them instead (the loop may be busy or blocked).
const WATCH_STALE: Duration = Duration::from_millis(20);
/// While replies keep arriving, how often a leading supervisor still looks
/// at its child and timers.
const SUP_CHECK: Duration = Duration::from_millis(2);
/// Messages read per wake-up before bookkeeping gets a turn.
const RECV_BATCH: usize = 256;
/// How many times a short turn sends and reads for others before it hands
/// what is left to the supervisor (`mf_call_async` must stay quick).
const TURN_ROUNDS: usize = 8;

/// A reply's result value: raw MessagePack borrowed from the received frame.
pub struct Reply {
    msg: Option<Frame>,
    range: Range<usize>,
}

impl Reply {
    pub fn bytes(&self) -> &[u8] {
        match &self.msg {
            Some(m) => &m.bytes()[self.range.clone()],
            None => NIL,
        }
    }

    fn nil() -> Reply {
        Reply {
            msg: None,
            range: 0..0,
        }
    }
}

pub type Outcome = Result<Reply>;

/// A blocked caller's mailbox: its outcome, or an offer to lead.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

#[derive(Default)]
struct SlotState {
    outcome: Option<Outcome>,
    offer: bool,
}

impl Slot {
    fn put(&self, outcome: Outcome) {
        self.state.lock().outcome = Some(outcome);
        self.cv.notify_one();
    }

    fn is_done(&self) -> bool {
        self.state.lock().outcome.is_some()
    }

    fn offer(&self) {
        self.state.lock().offer = true;
        self.cv.notify_one();
    }
}

/// Wake-ups put off until a batch of completions has been delivered.
type Wakes = Vec<Box<dyn FnOnce()>>;

thread_local! {
    /// The wake-ups put off by the batch this thread is delivering; `None`
    /// outside a batch.
    static AFTER_BATCH: std::cell::RefCell<Option<Wakes>> = const { std::cell::RefCell::new(None) };
}

/// Runs `wake` once the completions this thread is delivering have all
/// been delivered, or at once outside a completion. A completion that wakes
/// a consumer waits with it, so the consumer finds the whole batch rather
/// than its first completion, and the delivering thread is not preempted
/// by the woken one after every completion.
pub fn after_batch(wake: Box<dyn FnOnce()>) {
    let wake = AFTER_BATCH.with(|a| match a.borrow_mut().as_mut() {
        Some(wakes) => {
            wakes.push(wake);
            None
        }
        None => Some(wake),
    });
    if let Some(wake) = wake {
        wake();
    }
}

/// Runs `deliver`, then the wake-ups `after_batch` put off meanwhile. A
/// completion may start a call that delivers a batch of its own: the
/// outermost batch runs the wake-ups of all.
fn in_batch(deliver: impl FnOnce()) {
    /// Ends the outermost batch even when `deliver` unwinds, so a panic
    /// cannot leave this thread putting off every later wake-up.
    struct Outermost;
    impl Drop for Outermost {
        fn drop(&mut self) {
            let wakes = AFTER_BATCH.with(|a| a.borrow_mut().take());
            for wake in wakes.into_iter().flatten() {
                wake();
            }
        }
    }
    let outermost = AFTER_BATCH.with(|a| {
        let mut a = a.borrow_mut();
        a.is_none().then(|| *a = Some(Vec::new())).is_some()
    });
    // (`then`, not `then_some`: an `Outermost` made and dropped here would end the batch.)
    let _end = outermost.then(|| Outermost);
    deliver();
}

/// What runs when an async call ends: on whichever thread is driving the
/// socket at that moment, so it must not block.
pub enum Done {
    Callback(Box<dyn FnOnce(Outcome) + Send>),
    /// A plain function and two words of context that it does not own:
    /// no allocation per call (the C API's callback and user data).
    Plain(fn(usize, usize, Outcome), usize, usize),
}

/// How a finished call is delivered.
enum Completion {
    Wait(Arc<Slot>),
    Async(Done),
}

impl Completion {
    fn deliver(self, outcome: Outcome) {
        let run = match self {
            Completion::Wait(slot) => return slot.put(outcome),
            Completion::Async(done) => done,
        };
        // A panicking completion must not take the leading thread down.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || match run {
            Done::Callback(f) => f(outcome),
            Done::Plain(f, a, b) => f(a, b, outcome),
        }));
    }
}

struct Pending {
    /// Named in what is said about the call (a timeout).
    function: ShortStr,
    timeout: Option<Duration>,
    started: Instant,
    probe: bool,
    completion: Completion,
}

/// A call that ended, to be delivered once the core lock is released.
type Finished = Vec<(Pending, Outcome)>;

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

enum Readiness {
    Starting,
    Ready,
    Failed(Error),
}

/// Heartbeat bookkeeping.
struct Heartbeat {
    outstanding: Option<(IdText, Instant)>,
    next_at: Instant,
    consecutive_misses: u32,
}

/// Everything the threads share, behind one mutex held only for bookkeeping.
struct Core {
    /// `None` while a thread leads (holds it outside the lock).
    link: Option<Link>,
    /// A stream to a worker just started, for the leader to take up.
    offered: Option<Stream>,
    leader: bool,
    /// The leader is (about to be) asleep in `zmq_poll` and has seen an
    /// empty send queue: whoever queues a payload must wake it. While it is
    /// busy it takes the queue at the top of its loop without a wake-up.
    leader_sleeping: bool,
    /// The leader is on a short turn ([`Shared::pass`]), which reads once
    /// more before it steps down if a watching loop found the lead taken.
    turn: bool,
    /// The supervisor was woken to lead and has not looked yet: a call
    /// started meanwhile leaves its payload for it instead of taking a
    /// turn of its own, so a burst of calls goes out in one write.
    sup_woken: bool,
    /// Payloads waiting for the leader to send them, oldest first.
    outgoing: VecDeque<Frame>,
    pending: HashMap<IdText, Pending, ids::KeyBuildHasher>,
    deadlines: BinaryHeap<Reverse<(Instant, IdText)>>,
    /// Blocked callers that may be offered the lead.
    followers: Vec<Arc<Slot>>,
    hb: Heartbeat,
    ready: bool,
    closing: bool,
    /// Set when the worker is gone for good: calls fail at once with it.
    dead: Option<Error>,
    target: Target,
    /// A failure asked the next leader to look the service up again.
    rediscover: bool,
    watch: Watch,
}

/// An event loop that watches the socket's descriptor and calls
/// [`Parent::drive`] when it is readable, so replies to its calls reach it
/// with no thread in between (see [`Parent::watch`]).
#[derive(Default)]
struct Watch {
    /// The loop watches: when nobody leads, polling is left to it.
    armed: bool,
    /// Since when the loop has had calls to poll for without driving; the
    /// supervisor takes over once this is older than `WATCH_STALE`.
    due: Option<Instant>,
    /// The loop drove during a short turn: that turn reads for it.
    missed: bool,
}

impl Watch {
    /// Whether the watching loop, not the supervisor, should poll now.
    fn responsible(&self, now: Instant) -> bool {
        self.armed && self.due.is_none_or(|t| now < t + WATCH_STALE)
    }
}

impl Core {
    /// Whether someone must be polling the socket.
    fn needs_leader(&self) -> bool {
        !self.closing
            && (!self.pending.is_empty()
                || self.hb.outstanding.is_some()
                || !self.outgoing.is_empty())
    }

    /// The start of every turn on the socket: take what is queued to send,
    /// end overdue calls, and follow a rediscovery a failure asked for.
    fn start_turn(
        &mut self,
        link: &mut Link,
        now: Instant,
        out: &mut VecDeque<Frame>,
        finished: &mut Finished,
        stats: &Stats,
    ) {
        self.leader_sleeping = false;
        if let Some(stream) = self.offered.take() {
            link.offer(stream, stats);
        }
        out.extend(self.outgoing.drain(..));
        self.expire(now, finished);
        if self.rediscover {
            self.rediscover = false;
            rediscover(&mut self.target, &link.socket);
        }
    }

    /// Whether a payload just queued must wake the leader (once per sleep).
    fn wake_sleeping_leader(&mut self) -> bool {
        self.leader && std::mem::take(&mut self.leader_sleeping)
    }

    /// Removes calls whose deadline passed.
    fn expire(&mut self, now: Instant, finished: &mut Finished) {
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            if let Some(p) = self.pending.remove(&id) {
                let ms = p.timeout.map_or(0, |t| t.as_millis());
                let e = Error::new(
                    ErrorKind::Timeout,
                    format!("call to '{}' timed out after {ms} ms", p.function.as_str()),
                );
                self.rediscover = matches!(self.target, Target::Service { .. });
                finished.push((p, Err(e)));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((t, _))| *t)
    }

    fn fail_pending(&mut self, e: &Error, finished: &mut Finished) {
        self.deadlines.clear();
        finished.extend(self.pending.drain().map(|(_, p)| (p, Err(e.clone()))));
    }
}

struct Shared {
    core: Mutex<Core>,
    /// Wakes the thread that leads (it polls this beside the socket).
    wake: Wake,
    /// Wakes the supervisor thread.
    sup_wake: Wake,
    /// What a watching event loop polls: the DEALER's `ZMQ_FD` and the
    /// private link's stream (see [`Parent::watch`]).
    watch: Arc<WatchSet>,
    options: Options,
    limits: Limits,
    ids: IdGen,
    stats: Stats,
    breaker: Breaker,
    readiness: Mutex<Readiness>,
    ready_cv: Condvar,
    healthy: AtomicBool,
    name: String,
}

/// A connection to one worker. Thread-safe: any number of threads may call.
pub struct Parent {
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    supervisor_thread: ThreadId,
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
        let zmq_fd = socket.get_fd()?;
        let watch = Arc::new(WatchSet::new().map_err(|e| Error::io(format!("epoll: {e}")))?);
        watch
            .add(zmq_fd, libc::EPOLLIN)
            .map_err(|e| Error::io(format!("epoll: {e}")))?;
        let link = Link {
            socket,
            zmq_fd,
            stream: None,
            direct: false,
            watch: Arc::clone(&watch),
            watch_out: false,
        };
        let shared = Arc::new(Shared {
            watch,
            core: Mutex::new(Core {
                link: Some(link),
                offered: None,
                leader: false,
                leader_sleeping: false,
                turn: false,
                sup_woken: false,
                outgoing: VecDeque::new(),
                pending: HashMap::default(),
                deadlines: BinaryHeap::new(),
                followers: Vec::new(),
                hb: Heartbeat {
                    outstanding: None,
                    next_at: Instant::now(),
                    consecutive_misses: 0,
                },
                ready: false,
                closing: false,
                dead: None,
                target: target.clone(),
                rediscover: false,
                watch: Watch::default(),
            }),
            wake: Wake::new().map_err(|e| Error::io(format!("eventfd: {e}")))?,
            sup_wake: Wake::new().map_err(|e| Error::io(format!("eventfd: {e}")))?,
            limits: Limits::default(),
            ids: IdGen::new(),
            stats: Stats::default(),
            breaker: Breaker::new(options.breaker_threshold, options.breaker_cooldown),
            readiness: Mutex::new(Readiness::Starting),
            ready_cv: Condvar::new(),
            healthy: AtomicBool::new(false),
            name,
            options,
        });
        let supervisor = Supervisor {
            shared: Arc::clone(&shared),
            target,
            port,
            child: None,
            restarts: 0,
            restart_at: None,
            next_drain: Instant::now() + IDLE_DRAIN,
        };
        let handle = std::thread::Builder::new()
            .name("mf-parent-sup".into())
            .spawn(move || supervisor.run())
            .map_err(|e| Error::io(format!("cannot start supervisor thread: {e}")))?;
        let parent = Parent {
            shared,
            supervisor_thread: handle.thread().id(),
            supervisor: Mutex::new(Some(handle)),
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
                    let (guard, timed_out) = self.shared.ready_cv.wait_until(r, deadline);
                    r = guard;
                    if timed_out {
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
        let (payload, pending, id) = self.prepare(
            function,
            args,
            timeout_ms,
            Completion::Wait(Arc::clone(&slot)),
        )?;
        self.shared.run_sync(&slot, id, payload, pending)
    }

    /// Starts a call; `done` runs exactly once, on the thread that is
    /// driving the socket at that moment, when it ends. It must not block.
    /// When this returns an error, `done` is never run.
    pub fn call_async(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        done: Done,
    ) -> Result<()> {
        let (payload, pending, id) =
            self.prepare(function, args, timeout_ms, Completion::Async(done))?;
        self.shared.submit_async(id, payload, pending)
    }

    /// Validates, asks the breaker, encodes.
    fn prepare(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        completion: Completion,
    ) -> Result<(Frame, Pending, IdText)> {
        let s = &*self.shared;
        if function.is_empty() {
            return Err(Error::invalid("function name must not be empty"));
        }
        codec::validate_args(args, s.limits)
            .map_err(|e| Error::invalid(format!("arguments are not one msgpack array: {e}")))?;
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
        let (id_text, ns) = (ids::as_str(&id), s.options.namespace.as_str());
        let payload = frame::encode(Encoder::call_capacity(id_text, function, args, ns), |b| {
            Encoder::new(b).call(id_text, function, args, ns)
        });
        if payload.len() as i64 > s.options.max_message_size {
            // A peer refuses such a frame by dropping the connection.
            return Err(Error::invalid(format!(
                "a call of {} bytes exceeds the maximum message size of {} bytes",
                payload.len(),
                s.options.max_message_size
            )));
        }
        let pending = Pending {
            function: ShortStr::new(function),
            timeout: s.options.call_timeout(timeout_ms),
            started: Instant::now(),
            probe,
            completion,
        };
        Ok((payload, pending, id))
    }

    /// Lets an event loop poll for replies itself: returns a descriptor for
    /// the loop to watch for readability, and from now on, while nobody
    /// else drives the socket, the loop is trusted to call [`Parent::drive`]
    /// whenever it is readable — replies then complete on the loop's own
    /// thread, with no hop through the supervisor. A loop that leaves
    /// replies unread for more than 20 ms is relieved by the supervisor
    /// (which notices within about a tenth of a second). The descriptor
    /// belongs to the parent and lives as long as it: watch a `dup` of it
    /// and close that yourself.
    /// Call again to re-arm after `drive` returned false.
    pub fn watch(&self) -> Result<std::os::fd::RawFd> {
        let s = &self.shared;
        let mut core = s.core.lock();
        if core.closing {
            return Err(Error::closed());
        }
        core.watch.armed = true;
        Ok(s.watch.fd())
    }

    /// Stops trusting a watching loop (it stopped watching); the
    /// supervisor polls again whenever calls are outstanding.
    pub fn unwatch(&self) {
        let s = &self.shared;
        let mut core = s.core.lock();
        core.watch = Watch::default();
        s.hand_off(&mut core);
    }

    /// For a watching loop whose descriptor is readable: reads what has
    /// arrived and runs its completions on this thread, sends what is
    /// queued, and returns without blocking. Returns false when another
    /// thread leads for long (a blocking call, the supervisor): the watch is
    /// then disarmed (stop watching until [`Parent::watch`] re-arms it;
    /// replies reach their completions anyway). A short turn (a thread
    /// sending its call) reads for the loop instead, and it stays armed.
    pub fn drive(&self) -> Result<bool> {
        let s = &self.shared;
        let (link, armed) = {
            let mut core = s.core.lock();
            if core.closing {
                return Err(Error::closed());
            }
            core.watch.due = None;
            match s.take_lead(&mut core) {
                Some(link) => (link, core.watch.armed),
                None if core.turn && core.watch.armed => {
                    // What woke the loop is read by that turn.
                    core.watch.missed = true;
                    return Ok(true);
                }
                None => {
                    core.watch.armed = false;
                    return Ok(false);
                }
            }
        };
        s.pass(link);
        // Disarmed by the supervisor when the loop fell behind.
        Ok(armed)
    }

    /// Sends one heartbeat and waits for its echo; returns the round-trip
    /// time. Not subject to the circuit breaker.
    pub fn ping(&self, timeout: Duration) -> Result<Duration> {
        let id = self.shared.ids.next();
        let payload = heartbeat(&id);
        let slot = Arc::new(Slot::default());
        let started = Instant::now();
        let pending = Pending {
            function: ShortStr::new("heartbeat"),
            timeout: Some(timeout),
            started,
            probe: false,
            completion: Completion::Wait(Arc::clone(&slot)),
        };
        self.shared.run_sync(&slot, id, payload, pending)?;
        Ok(started.elapsed())
    }

    /// Ends the connection: pending calls fail with `Closed`, a spawned
    /// worker is terminated and reaped. Idempotent.
    pub fn close(&self) {
        let s = &self.shared;
        let mut finished = Vec::new();
        {
            let mut core = s.core.lock();
            core.closing = true;
            core.fail_pending(&Error::closed(), &mut finished);
            core.outgoing.clear();
        }
        s.deliver(finished);
        s.wake.notify();
        s.sup_wake.notify();
        if std::thread::current().id() == self.supervisor_thread {
            // Called from a completion on the supervisor: it ends by itself.
            return;
        }
        if let Some(handle) = self.supervisor.lock().take() {
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
            "transport": if s.private_link.load(Ordering::Relaxed) { "link" } else { "zmq" },
        })
        .to_string()
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        self.close();
    }
}

/// Who is driving the socket in `lead`.
enum Role<'a> {
    /// A blocked caller: leads until its own call has ended.
    Caller(&'a Slot),
    /// The supervisor: leads while anything is outstanding, and watches the child too.
    Supervisor(&'a mut Supervisor),
}

impl Shared {
    /// Registers a call and either leads until it ends or waits for a leader to end it.
    fn run_sync(&self, slot: &Arc<Slot>, id: IdText, payload: Frame, pending: Pending) -> Outcome {
        if let Some(link) = self.enqueue(id, payload, pending)? {
            self.lead(link, Role::Caller(slot));
        }
        self.wait(slot)
    }

    fn submit_async(&self, id: IdText, payload: Frame, pending: Pending) -> Result<()> {
        if let Some(link) = self.enqueue(id, payload, pending)? {
            // Nobody drives the link: send from this thread, so the request
            // is on its way before the supervisor or a watching event loop
            // (which wait for the reply) has even woken up.
            self.pass(link);
        }
        Ok(())
    }

    /// Registers a call; returns the link when nobody leads (the caller
    /// leads now), otherwise wakes the leader if it sleeps.
    fn enqueue(&self, id: IdText, payload: Frame, pending: Pending) -> Result<Option<Link>> {
        let (link, wake) = {
            let mut core = self.core.lock();
            self.register(&mut core, id, payload, pending)?;
            let link = if core.sup_woken {
                None // the supervisor is on its way and sends it
            } else {
                self.take_lead(&mut core)
            };
            (link, core.wake_sleeping_leader())
        };
        if wake {
            self.wake.notify();
        }
        Ok(link)
    }

    /// One turn that never blocks, with a briefly held lead: expires
    /// overdue calls, sends what is queued, reads and routes what has
    /// arrived, then hands the lead on (to a blocked caller, a watching
    /// event loop or the supervisor). Its last socket call is a recv that
    /// found nothing, so a watcher's `ZMQ_FD` stays meaningful.
    fn pass(&self, mut link: Link) {
        let mut finished = Vec::new();
        let mut out = VecDeque::new();
        {
            let mut core = self.core.lock();
            core.turn = true;
            core.start_turn(
                &mut link,
                Instant::now(),
                &mut out,
                &mut finished,
                &self.stats,
            );
        }
        self.deliver(finished);
        self.put_down(link, out, true);
    }

    /// Sends `out`, reads what has arrived (if it sent, or `read`), and
    /// steps down — but first sends what was queued meanwhile, and reads
    /// again: whoever queued it saw a leader and did not wake anyone, and a
    /// watching event loop wakes only for what arrives. It also reads again
    /// for a watching loop that found the lead taken by this turn. After
    /// `TURN_ROUNDS` rounds it wakes the supervisor for what is still left.
    /// After a send it ends on a recv that found nothing.
    fn put_down(&self, mut link: Link, mut out: VecDeque<Frame>, mut read: bool) {
        let mut batch = Vec::new();
        for round in 1.. {
            if !out.is_empty() {
                link.send_queued(&mut out, &self.stats);
                read = true;
            }
            if read {
                self.receive(&mut link, &mut batch);
            }
            let mut core = self.core.lock();
            let missed = std::mem::take(&mut core.watch.missed);
            // A refused payload (no peer yet) waits for a leader that polls.
            let more = !core.outgoing.is_empty() && out.is_empty();
            if core.closing || !(more || missed) {
                self.step_down(&mut core, link, out);
                return;
            }
            if round == TURN_ROUNDS {
                // Others keep queueing: the supervisor sends (and reads) the rest.
                self.step_down(&mut core, link, out);
                self.wake_supervisor_to_lead(&mut core);
                return;
            }
            if more {
                out.extend(core.outgoing.drain(..));
            }
            read = true;
        }
    }

    /// Gives the link back (unsent payloads first in the queue again) and
    /// hands the lead on.
    fn step_down(&self, core: &mut MutexGuard<'_, Core>, mut link: Link, mut out: VecDeque<Frame>) {
        while let Some(p) = out.pop_back() {
            core.outgoing.push_front(p);
        }
        link.settle_watch();
        core.link = Some(link);
        core.leader = false;
        core.turn = false;
        self.hand_off(core);
    }

    /// Puts a call in the pending table and its payload in the send queue.
    fn register(
        &self,
        core: &mut Core,
        id: IdText,
        payload: Frame,
        pending: Pending,
    ) -> Result<()> {
        if core.closing {
            if pending.probe {
                self.breaker.failure(true, "parent closed");
            }
            return Err(Error::closed());
        }
        if let Some(e) = &core.dead {
            return Err(e.clone());
        }
        self.stats.requests_total.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = pending.timeout {
            core.deadlines.push(Reverse((pending.started + t, id)));
        }
        core.pending.insert(id, pending);
        // Deadlines of calls that ended stay in the heap until they pass (a
        // heap cannot remove from the middle): drop them once they are most
        // of it, so a busy parent does not keep every call of the last
        // timeout period (30 s by default) in memory.
        if core.deadlines.len() > 2 * core.pending.len() + 1024 {
            let Core {
                deadlines, pending, ..
            } = core;
            deadlines.retain(|Reverse((_, id))| pending.contains_key(id));
        }
        core.outgoing.push_back(payload);
        Ok(())
    }

    /// Takes the link if nobody leads.
    fn take_lead(&self, core: &mut Core) -> Option<Link> {
        if core.leader || core.closing {
            return None;
        }
        let link = core.link.take()?;
        core.leader = true;
        Some(link)
    }

    /// Blocks until the call has ended, leading whenever the lead is free
    /// or offered. Lock order is core → slot: a slot's lock is never held
    /// while taking the core's.
    fn wait(&self, slot: &Arc<Slot>) -> Outcome {
        loop {
            let offered = {
                let mut st = slot.state.lock();
                if let Some(outcome) = st.outcome.take() {
                    let offered = std::mem::take(&mut st.offer);
                    drop(st);
                    if offered {
                        // Finished before it could lead: pass the offer on.
                        self.hand_off(&mut self.core.lock());
                    }
                    return outcome;
                }
                std::mem::take(&mut st.offer)
            };
            let link = {
                let mut core = self.core.lock();
                if !core.leader && (offered || core.needs_leader()) {
                    self.take_lead(&mut core)
                } else {
                    core.followers
                        .retain(|f| !Arc::ptr_eq(f, slot) && !f.is_done_fast());
                    core.followers.push(Arc::clone(slot));
                    None
                }
            };
            if let Some(link) = link {
                self.lead(link, Role::Caller(slot));
                continue;
            }
            let mut st = slot.state.lock();
            while st.outcome.is_none() && !st.offer {
                st = slot.cv.wait(st);
            }
        }
    }

    /// After a leader stepped down with work outstanding: offer the lead to
    /// a blocked caller, or wake the supervisor.
    fn hand_off(&self, core: &mut MutexGuard<'_, Core>) {
        if !core.needs_leader() {
            core.watch.due = None;
            return;
        }
        if core.leader {
            return;
        }
        while let Some(f) = core.followers.pop() {
            if !f.is_done_fast() {
                f.offer();
                return;
            }
        }
        if core.watch.armed {
            // A watching event loop polls; the supervisor checks it keeps up.
            core.watch.due.get_or_insert_with(Instant::now);
            return;
        }
        self.wake_supervisor_to_lead(core);
    }

    /// Wakes the supervisor to take the lead; until it looks, calls leave
    /// their payloads to it (see `Core::sup_woken`).
    fn wake_supervisor_to_lead(&self, core: &mut Core) {
        core.sup_woken = true;
        self.sup_wake.notify();
    }

    /// Ends a batch of calls, then runs the wake-ups their completions
    /// put off (`after_batch`).
    fn deliver(&self, finished: Finished) {
        if finished.is_empty() {
            return;
        }
        // One reading of the clock ends the whole batch's latencies.
        let now = Instant::now();
        in_batch(|| {
            for (p, outcome) in finished {
                self.finish(p, outcome, now);
            }
        });
    }

    /// Ends one call (at `now`): stats, breaker, then delivery.
    fn finish(&self, p: Pending, outcome: Outcome, now: Instant) {
        let s = self;
        s.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        s.stats
            .latency
            .record(now.saturating_duration_since(p.started));
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
                        log::emit(
                            Level::Warn,
                            "request_timeout",
                            &e.message,
                            &[("function", Value::from(p.function.as_str()))],
                        );
                        s.breaker.failure(p.probe, &e.message);
                    }
                    // Worker exits are counted once per exit, not per call.
                    _ => {}
                }
            }
        }
        p.completion.deliver(outcome);
    }

    /// Drives the link until the role's work is done, then steps down.
    fn lead(&self, mut link: Link, mut role: Role<'_>) {
        let mut out: VecDeque<Frame> = VecDeque::new();
        let mut batch: Vec<Frame> = Vec::with_capacity(16);
        let mut last_check = Instant::now();
        loop {
            let mut finished = Vec::new();
            let now = Instant::now();
            let timeout = {
                let mut core = self.core.lock();
                core.start_turn(&mut link, now, &mut out, &mut finished, &self.stats);
                let done = core.closing
                    || match &role {
                        Role::Caller(slot) => {
                            slot.is_done()
                                || finished.iter().any(|(p, _)| {
                                    matches!(&p.completion, Completion::Wait(s) if std::ptr::eq(&**s, *slot))
                                })
                        }
                        Role::Supervisor(_) => !core.needs_leader() && out.is_empty(),
                    };
                if done {
                    drop(core);
                    self.put_down(link, out, false);
                    self.deliver(finished);
                    return;
                }
                let mut next = core.next_deadline();
                if let Role::Supervisor(sup) = &role {
                    next = min_opt(next, sup.next_timer(&core, true));
                }
                poll_timeout_ms(next, now)
            };
            self.deliver(finished);
            link.send_queued(&mut out, &self.stats);
            // Replies may already be waiting: read them without a poll.
            // While they keep coming the supervisor still polls (with no wait,
            // to see its child and timers) every SUP_CHECK, not every batch.
            let received = self.receive(&mut link, &mut batch);
            if link.direct && !out.is_empty() {
                continue; // the worker said hello: what the DEALER refused goes on the link
            }
            if received > 0 && (matches!(role, Role::Caller(_)) || now < last_check + SUP_CHECK) {
                continue;
            }
            last_check = now;
            let timeout = if received > 0 {
                0
            } else {
                let mut core = self.core.lock();
                if !core.outgoing.is_empty() {
                    continue; // queued meanwhile: send before sleeping
                }
                core.leader_sleeping = true;
                timeout
            };
            let exit_fd = match &role {
                Role::Supervisor(sup) => sup.child.as_ref().and_then(Process::exit_fd),
                Role::Caller(_) => None,
            };
            let [a, b] = link.poll_items();
            let exit_fd = exit_fd.unwrap_or(-1);
            let (readable, woken, exited) = if out.is_empty() {
                // The last DEALER call was receive()'s failed recv.
                let [ra, rb, woken, exited] = wake::wait_ready(
                    [
                        a,
                        b,
                        (self.wake.fd(), libc::POLLIN),
                        (exit_fd, libc::POLLIN),
                    ],
                    timeout,
                );
                if link.direct {
                    // The second item is the DEALER, where only strays arrive now.
                    if rb {
                        link.drop_strays(&self.stats);
                    }
                    (ra, woken, exited)
                } else {
                    (ra || rb, woken, exited)
                }
            } else {
                // Waiting for a peer to send to: let libzmq watch for it.
                // (A stream not said hello on yet is watched beside it.)
                let events = zmq::POLLIN | zmq::POLLOUT;
                let mut items = vec![
                    link.socket.as_poll_item(events),
                    zmq::PollItem::from_fd(self.wake.fd(), zmq::POLLIN),
                ];
                // Where the stream's and the exit descriptor's items are, if any.
                let mut at = |fd: RawFd| {
                    (fd >= 0).then(|| {
                        items.push(zmq::PollItem::from_fd(fd, zmq::POLLIN));
                        items.len() - 1
                    })
                };
                let (stream_at, exit_at) = (at(b.0), at(exit_fd));
                if zmq::poll(&mut items, timeout).is_err() {
                    (false, false, false)
                } else {
                    let ready = |i: Option<usize>| i.is_some_and(|i| items[i].is_readable());
                    (
                        items[0].is_readable() || ready(stream_at),
                        items[1].is_readable(),
                        ready(exit_at),
                    )
                }
            };
            if woken {
                self.wake.drain();
            }
            if readable {
                self.receive(&mut link, &mut batch);
            }
            if let Role::Supervisor(sup) = &mut role {
                sup.tick(exited);
            }
        }
    }

    /// Reads what is waiting and routes each reply to its call; returns
    /// how many messages it read.
    fn receive(&self, link: &mut Link, batch: &mut Vec<Frame>) -> usize {
        let mut total = 0;
        loop {
            batch.clear();
            while batch.len() < RECV_BATCH {
                let Some(payload) = link.next_payload(&self.stats) else {
                    break;
                };
                batch.push(payload);
            }
            if batch.is_empty() {
                return total;
            }
            total += batch.len();
            let full = batch.len() == RECV_BATCH;
            let mut finished = Vec::with_capacity(batch.len());
            {
                let mut core = self.core.lock();
                for payload in batch.drain(..) {
                    self.route(&mut core, payload, &mut finished);
                }
            }
            self.deliver(finished);
            if !full {
                return total;
            }
        }
    }

    fn route(&self, core: &mut Core, payload: Frame, finished: &mut Finished) {
        let bytes = payload.bytes();
        let msg = match codec::decode(bytes, self.limits) {
            Ok(m) => m,
            Err(e) => {
                self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                log::emit(
                    Level::Debug,
                    "message_dropped",
                    &format!("dropped a payload from the worker: {e}"),
                    &[],
                );
                return;
            }
        };
        let key = msg.id.and_then(ids::key);
        match msg.kind {
            Kind::Response | Kind::Error => {
                let Some(pending) = key.and_then(|k| core.pending.remove(&k)) else {
                    self.stats.dropped_unknown.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let outcome = if msg.kind == Kind::Response {
                    Ok(match msg.result {
                        Some(r) => {
                            let start = r.as_ptr() as usize - bytes.as_ptr() as usize;
                            let range = start..start + r.len();
                            Reply {
                                msg: Some(payload),
                                range,
                            }
                        }
                        None => Reply::nil(),
                    })
                } else {
                    Err(Error::new(
                        ErrorKind::Remote,
                        msg.error.unwrap_or("remote error without text").to_owned(),
                    ))
                };
                finished.push((pending, outcome));
            }
            Kind::Heartbeat => {
                if let Some(p) = key.and_then(|k| core.pending.remove(&k)) {
                    // A ping's echo.
                    finished.push((p, Ok(Reply::nil())));
                    return;
                }
                let ours =
                    matches!((key, core.hb.outstanding), (Some(k), Some((id, _))) if k == id);
                if ours || (!core.ready && msg.hb_response) {
                    self.heartbeat_answered(core, msg.hb_timestamp);
                }
            }
            Kind::Stdout | Kind::Stderr => {
                let stream = if msg.kind == Kind::Stdout {
                    "stdout"
                } else {
                    "stderr"
                };
                for line in msg.output.unwrap_or("").lines() {
                    log::worker_output(&self.name, stream, None, line);
                }
            }
            _ => {}
        }
    }

    fn heartbeat_answered(&self, core: &mut Core, hb_timestamp: Option<f64>) {
        let s = &self.stats;
        if !core.ready {
            // The start-up heartbeat waited for the worker to start: keep it
            // only until the real round trip, measured right after, replaces
            // it, and keep it out of the average.
            if let Some((_, sent)) = core.hb.outstanding.take() {
                s.heartbeat_rtt_last_us
                    .store(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
        } else if let Some((_, sent)) = core.hb.outstanding.take() {
            let rtt = sent.elapsed();
            s.heartbeat_rtt.record(rtt);
            s.heartbeat_rtt_last_us
                .store(rtt.as_micros() as u64, Ordering::Relaxed);
        } else if let Some(ts) = hb_timestamp {
            let rtt = ((codec::now_seconds() - ts).max(0.0) * 1e6) as u64;
            s.heartbeat_rtt_last_us.store(rtt, Ordering::Relaxed);
        }
        core.hb.consecutive_misses = 0;
        core.hb.next_at = if core.ready {
            Instant::now() + self.options.heartbeat_interval
        } else {
            Instant::now()
        };
        self.healthy.store(true, Ordering::Relaxed);
        if !core.ready {
            core.ready = true;
            self.set_readiness(Readiness::Ready);
        }
        // The supervisor schedules the next heartbeat.
        self.sup_wake.notify();
    }

    fn set_readiness(&self, r: Readiness) {
        let mut cur = self.readiness.lock();
        if matches!(*cur, Readiness::Starting) {
            *cur = r;
            self.ready_cv.notify_all();
        }
    }

    fn heartbeats_on(&self) -> bool {
        !self.options.heartbeat_interval.is_zero()
    }

    fn hb_timeout(&self) -> Duration {
        if self.heartbeats_on() {
            self.options.heartbeat_timeout
        } else {
            // Heartbeats off: the start-up heartbeat is resent at this pace.
            Duration::from_millis(1000)
        }
    }

    /// Queues a heartbeat for whoever leads.
    fn queue_heartbeat(&self, core: &mut Core, now: Instant) {
        let id = self.ids.next();
        let payload = heartbeat(&id);
        core.hb.outstanding = Some((id, now));
        core.outgoing.push_back(payload);
    }
}

impl Slot {
    /// Whether the outcome is in (a try-lock: the owner may hold the lock
    /// while deciding to sleep, and that only means "not yet").
    fn is_done_fast(&self) -> bool {
        self.state.try_lock().is_some_and(|s| s.outcome.is_some())
    }
}

/// A poll(2) timeout that wakes no earlier than `next` (rounded up to a
/// whole millisecond), or -1 (no limit) when there is no `next`.
fn poll_timeout_ms(next: Option<Instant>, now: Instant) -> i64 {
    next.map_or(-1, |t| {
        t.saturating_duration_since(now).as_micros().div_ceil(1000) as i64
    })
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A heartbeat of the parent's, stamped now.
fn heartbeat(id: &IdText) -> Frame {
    frame::encode(128, |b| {
        Encoder::new(b).heartbeat(ids::as_str(id), codec::now_seconds(), false)
    })
}

/// Sends `[empty, payload]` without blocking; gives the payload back when
/// libzmq has no peer to take it yet.
fn try_send(socket: &mut zmq::Socket, payload: Frame) -> std::result::Result<(), Frame> {
    if frame::send(socket, Frame::empty(), zmq::DONTWAIT | zmq::SNDMORE).is_err() {
        return Err(payload);
    }
    // Once the first frame is accepted the rest of the message is too.
    let _ = frame::send(socket, payload, zmq::DONTWAIT);
    Ok(())
}

/// What a leader drives: the DEALER, and for a spawned worker of this
/// library the private link, which carries everything once the worker has
/// said hello on it (see [`crate::link`]).
struct Link {
    socket: zmq::Socket,
    zmq_fd: RawFd,
    stream: Option<Stream>,
    /// The worker said hello: the stream carries the traffic, and the
    /// DEALER is left alone.
    direct: bool,
    /// What a watching event loop polls (see [`Parent::watch`]).
    watch: Arc<WatchSet>,
    /// The watch set asks for the stream's writability too.
    watch_out: bool,
}

/// What reading the stream led to, for [`Link::next_payload`].
enum FromStream {
    Payload(Frame),
    Drained,
    /// Not a link of ours (no hello first), or its peer is gone.
    Lost(&'static str),
}

impl Link {
    /// A fresh stream to a worker just started: used once it says hello.
    /// Kept even if the watch set cannot take it (the worker uses it
    /// either way); a watching event loop then misses its replies and is
    /// relieved by the supervisor.
    fn offer(&mut self, stream: Stream, stats: &Stats) {
        self.forget_stream(stats, None);
        if let Err(e) = self.watch.add(stream.fd(), libc::EPOLLIN) {
            log::emit(
                Level::Warn,
                "link_unwatched",
                &format!("cannot add the private link to the watch set: {e}"),
                &[],
            );
        }
        self.stream = Some(stream);
    }

    fn forget_stream(&mut self, stats: &Stats, why: Option<&str>) {
        if let Some(stream) = self.stream.take() {
            let _ = self.watch.remove(stream.fd());
            if let Some(why) = why {
                log::emit(Level::Debug, "link_closed", why, &[]);
            }
        }
        if self.direct {
            let _ = self.watch.add(self.zmq_fd, libc::EPOLLIN);
        }
        self.direct = false;
        self.watch_out = false;
        stats.private_link.store(false, Ordering::Relaxed);
    }

    /// The worker said hello on the stream: use it for everything. The
    /// DEALER's descriptor leaves the watch set: nothing of ours arrives
    /// there now. A leader still sleeps on it, to drop strays as they come
    /// (`drop_strays`); between drives of a watching loop nobody leads, and
    /// the supervisor's idle drain takes them.
    fn go_direct(&mut self, stats: &Stats) {
        if !self.direct {
            self.direct = true;
            let _ = self.watch.remove(self.zmq_fd);
            stats.private_link.store(true, Ordering::Relaxed);
        }
    }

    /// While the stream is in use, drops what reached the DEALER (nobody
    /// of ours sends there), so it cannot pile up in libzmq. Ends on a
    /// failed recv, so the DEALER's `ZMQ_FD` signals the next arrival.
    fn drop_strays(&mut self, stats: &Stats) {
        if !self.direct {
            return;
        }
        while let Some(f) = Frame::recv(&mut self.socket, zmq::DONTWAIT) {
            if !f.more() {
                stats.dropped_unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends what is queued, oldest first. On the DEALER it stops at the
    /// first refusal (no peer yet), leaving that payload and the rest in `out`.
    fn send_queued(&mut self, out: &mut VecDeque<Frame>, stats: &Stats) {
        if let (true, Some(stream)) = (self.direct, &mut self.stream) {
            for p in out.drain(..) {
                stream.send(p);
            }
            if stream.flush().is_err() {
                self.forget_stream(stats, Some("the worker closed the private link"));
            }
            return;
        }
        while let Some(p) = out.pop_front() {
            if let Err(p) = try_send(&mut self.socket, p) {
                out.push_front(p);
                break;
            }
        }
    }

    /// The next payload from the worker, or `None` when nothing more is
    /// waiting. Frames that are not `[empty, payload]` are counted and dropped.
    fn next_payload(&mut self, stats: &Stats) -> Option<Frame> {
        if self.stream.is_some() {
            match self.read_stream(stats) {
                FromStream::Payload(p) => return Some(p),
                FromStream::Drained if self.direct => return None,
                FromStream::Drained => {}
                FromStream::Lost(why) => self.forget_stream(stats, Some(why)),
            }
        }
        loop {
            let first = Frame::recv(&mut self.socket, zmq::DONTWAIT)?;
            if !first.is_empty() || !first.more() {
                self.drop_rest(first.more(), stats);
                continue;
            }
            let payload = Frame::recv(&mut self.socket, zmq::DONTWAIT)?;
            if payload.more() {
                self.drop_rest(true, stats);
                continue;
            }
            if self.stream.is_some() {
                // A worker of another implementation answers on the port.
                self.forget_stream(stats, None);
            }
            return Some(payload);
        }
    }

    fn read_stream(&mut self, stats: &Stats) -> FromStream {
        loop {
            let Some(stream) = &mut self.stream else {
                return FromStream::Drained;
            };
            match stream.recv() {
                Recv::Message(p) if p.bytes() == link::HELLO => self.go_direct(stats),
                Recv::Message(p) if self.direct => return FromStream::Payload(p),
                Recv::Message(_) => return FromStream::Lost("no hello on the private link"),
                Recv::Oversized(_) => {
                    stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                }
                Recv::Empty => return FromStream::Drained,
                Recv::Closed => return FromStream::Lost("the worker closed the private link"),
            }
        }
    }

    /// Counts a message with the wrong frames and discards what is left of it.
    fn drop_rest(&mut self, mut more: bool, stats: &Stats) {
        stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
        while more {
            more = Frame::recv(&mut self.socket, zmq::DONTWAIT).is_some_and(|f| f.more());
        }
    }

    /// What to sleep on for the worker's messages: the stream once in use
    /// (and its writability while it has unsent bytes) with the DEALER's
    /// `ZMQ_FD` for strays, otherwise the DEALER's `ZMQ_FD` and a stream
    /// not yet said hello on.
    fn poll_items(&self) -> [(RawFd, libc::c_short); 2] {
        match (&self.stream, self.direct) {
            (Some(s), true) => {
                let out = if s.wants_write() { libc::POLLOUT } else { 0 };
                [(s.fd(), libc::POLLIN | out), (self.zmq_fd, libc::POLLIN)]
            }
            (Some(s), false) => [(self.zmq_fd, libc::POLLIN), (s.fd(), libc::POLLIN)],
            (None, _) => [(self.zmq_fd, libc::POLLIN), (-1, 0)],
        }
    }

    /// Before the link is put down: a watching event loop must also wake
    /// when the stream can take the bytes still queued.
    fn settle_watch(&mut self) {
        let Some(s) = &self.stream else { return };
        let want_out = self.direct && s.wants_write();
        if want_out != self.watch_out {
            let events = libc::EPOLLIN | if want_out { libc::EPOLLOUT } else { 0 };
            if self.watch.modify(s.fd(), events).is_ok() {
                self.watch_out = want_out;
            }
        }
    }

    /// Sends one payload at once (the parting `shutdown`); whether it went.
    fn send_now(&mut self, payload: Frame, stats: &Stats) -> bool {
        let mut out = VecDeque::from([payload]);
        self.send_queued(&mut out, stats);
        out.is_empty() && !self.stream.as_ref().is_some_and(Stream::wants_write)
    }
}

/// After a failure: a service may have restarted on another port (look it
/// up again and follow it), and an endpoint's connection may be gone for
/// good (libzmq does not reconnect after a protocol error such as an
/// oversized frame), so connect afresh.
fn rediscover(target: &mut Target, socket: &zmq::Socket) {
    let (label, endpoint) = match target {
        Target::Spawn { .. } => return,
        Target::Endpoint(ep) => (ep.clone(), ep),
        Target::Service { id, endpoint } => (id.clone(), endpoint),
    };
    let fresh = match Registry::for_user().ok().and_then(|r| r.lookup(&label)) {
        Some(entry) => format!("tcp://127.0.0.1:{}", entry.port),
        None => endpoint.clone(),
    };
    let _ = socket.disconnect(endpoint);
    if socket.connect(&fresh).is_ok() {
        if fresh != *endpoint {
            log::emit(
                Level::Info,
                "service_moved",
                &format!("service '{label}' moved from {endpoint} to {fresh}"),
                &[],
            );
        }
        *endpoint = fresh;
    }
}

/// The supervisor thread: child process, heartbeats, readiness, restarts;
/// it leads the socket only when no caller does.
struct Supervisor {
    shared: Arc<Shared>,
    target: Target,
    port: u16,
    child: Option<Process>,
    restarts: u32,
    restart_at: Option<Instant>,
    next_drain: Instant,
}

/// How often an idle parent reads what its worker sent unasked.
const IDLE_DRAIN: Duration = Duration::from_millis(100);

impl Supervisor {
    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_loop()));
        if ok.is_err() {
            let mut finished = Vec::new();
            {
                let mut core = shared.core.lock();
                core.closing = true;
                core.fail_pending(
                    &Error::new(
                        ErrorKind::Panic,
                        "internal error: the parent's supervisor panicked",
                    ),
                    &mut finished,
                );
            }
            shared.deliver(finished);
            shared.wake.notify();
        }
        self.shutdown();
    }

    fn run_loop(&mut self) {
        if let Target::Spawn { .. } = self.target {
            if let Err(e) = self.start_child() {
                self.shared.set_readiness(Readiness::Failed(e));
                self.shared.core.lock().closing = true;
                return;
            }
        }
        {
            let mut core = self.shared.core.lock();
            self.shared.queue_heartbeat(&mut core, Instant::now());
        }
        loop {
            {
                let mut core = self.shared.core.lock();
                if core.watch.armed && !core.watch.responsible(Instant::now()) {
                    // The watching loop fell behind (busy or blocked): stop
                    // relying on it until it drives and re-arms.
                    core.watch = Watch::default();
                    log::emit(
                        Level::Debug,
                        "watch_relieved",
                        "the event loop watching the socket fell behind; the supervisor polls",
                        &[],
                    );
                }
            }
            if self.next_drain <= Instant::now() {
                self.drain_idle();
            }
            let (link, timeout) = {
                let mut core = self.shared.core.lock();
                core.sup_woken = false;
                if core.closing {
                    return;
                }
                let now = Instant::now();
                let link = if core.needs_leader() {
                    self.shared.take_lead(&mut core)
                } else {
                    None
                };
                // A watching event loop that keeps up polls for its calls:
                // then only send what is queued (a heartbeat) and expire.
                let link = match link {
                    Some(l) if core.watch.responsible(now) => {
                        drop(core);
                        self.shared.pass(l);
                        core = self.shared.core.lock();
                        None
                    }
                    other => other,
                };
                let timeout = poll_timeout_ms(self.next_timer(&core, false), now);
                (link, timeout)
            };
            if let Some(link) = link {
                let shared = Arc::clone(&self.shared);
                shared.lead(link, Role::Supervisor(self));
                // Leading read everything that arrived meanwhile.
                self.next_drain = Instant::now() + IDLE_DRAIN;
                continue;
            }
            let exit_fd = self.child.as_ref().and_then(Process::exit_fd);
            let exited = {
                let mut items = [
                    zmq::PollItem::from_fd(self.shared.sup_wake.fd(), zmq::POLLIN),
                    zmq::PollItem::from_fd(exit_fd.unwrap_or(-1), zmq::POLLIN),
                ];
                let n = if exit_fd.is_some() { 2 } else { 1 };
                let _ = zmq::poll(&mut items[..n], timeout);
                n == 2 && items[1].is_readable()
            };
            self.shared.sup_wake.drain();
            self.tick(exited);
        }
    }

    /// Reads what reached an idle parent (nobody drives the socket when no
    /// call is outstanding), so unsolicited frames never pile up in libzmq.
    fn drain_idle(&mut self) {
        self.next_drain = Instant::now() + IDLE_DRAIN;
        let link = self.shared.take_lead(&mut self.shared.core.lock());
        if let Some(mut link) = link {
            link.drop_strays(&self.shared.stats);
            self.shared.pass(link);
        }
    }

    /// The supervisor's next timer: heartbeat due or missed, restart, exit poll.
    /// The idle drain counts only when not `leading`: a leader reads
    /// everything anyway, and a drain time passed while it leads would
    /// otherwise turn its every wait into a poll that returns at once.
    fn next_timer(&self, core: &Core, leading: bool) -> Option<Instant> {
        let s = &self.shared;
        let mut next = (!leading).then_some(self.next_drain);
        if core.watch.armed {
            // Nobody may be leading: overdue calls are ended from here, and
            // a loop that falls behind is relieved.
            next = min_opt(next, core.next_deadline());
            next = min_opt(next, core.watch.due.map(|t| t + WATCH_STALE));
        }
        if let Some((_, sent)) = core.hb.outstanding {
            next = min_opt(next, Some(sent + s.hb_timeout()));
        } else if s.heartbeats_on() && core.ready {
            next = min_opt(next, Some(core.hb.next_at));
        }
        next = min_opt(next, self.restart_at);
        if self.child.as_ref().is_some_and(|c| c.exit_fd().is_none()) {
            next = min_opt(next, Some(Instant::now() + Duration::from_millis(50)));
        }
        next
    }

    /// Timers and the child, after every wake-up (whether leading or not).
    fn tick(&mut self, exited: bool) {
        if exited || self.child.as_ref().is_some_and(|c| c.exit_fd().is_none()) {
            self.check_child();
        }
        let now = Instant::now();
        let s = Arc::clone(&self.shared);
        let mut core = s.core.lock();
        let mut wake_leader = false;
        if let Some((_, sent)) = core.hb.outstanding {
            if now >= sent + s.hb_timeout() {
                drop(core);
                self.heartbeat_missed(now);
                core = s.core.lock();
                wake_leader = true;
            }
        } else if s.heartbeats_on() && core.ready && now >= core.hb.next_at {
            s.queue_heartbeat(&mut core, now);
            wake_leader = true;
        }
        let leader = core.leader;
        drop(core);
        if wake_leader && leader {
            s.wake.notify();
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart_at = None;
            self.restart();
        }
    }

    fn heartbeat_missed(&mut self, now: Instant) {
        let s = Arc::clone(&self.shared);
        let mut core = s.core.lock();
        core.hb.outstanding = None;
        if !core.ready {
            // Still starting: ask again until the start-up deadline decides.
            s.queue_heartbeat(&mut core, now);
            return;
        }
        s.stats.heartbeat_misses.fetch_add(1, Ordering::Relaxed);
        core.hb.consecutive_misses += 1;
        let misses = core.hb.consecutive_misses;
        let lost = misses >= s.options.heartbeat_max_misses;
        if lost {
            core.hb.consecutive_misses = 0;
        }
        // Lost: look the service up again, and in any case connect afresh
        // (libzmq gives up a connection it dropped over a protocol error).
        core.rediscover = lost || matches!(core.target, Target::Service { .. });
        s.queue_heartbeat(&mut core, now);
        drop(core);
        log::emit(
            Level::Warn,
            "heartbeat_missed",
            &format!("worker '{}' missed a heartbeat ({misses} in a row)", s.name),
            &[("consecutive", misses.into())],
        );
        if lost {
            s.healthy.store(false, Ordering::Relaxed);
            s.breaker.failure(false, "heartbeats lost");
        }
    }

    fn start_child(&mut self) -> Result<()> {
        let Target::Spawn { program, args } = &self.target else {
            return Ok(());
        };
        let s = &self.shared;
        // The private link, unless turned off (a failure to make one only
        // means the DEALER is used).
        let (stream, theirs) = match s.options.private_link {
            true => Stream::pair(s.options.max_message_size as u64).ok().unzip(),
            false => (None, None),
        };
        let child = Process::spawn(program, args, self.port, theirs.as_ref(), &s.name)?;
        drop(theirs);
        if let Some(stream) = stream {
            let mut core = s.core.lock();
            match core.link.as_mut() {
                Some(link) => link.offer(stream, &s.stats),
                None => {
                    // Someone leads: it takes the stream up at its next turn.
                    core.offered = Some(stream);
                    if core.wake_sleeping_leader() {
                        s.wake.notify();
                    }
                }
            }
        }
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
        let mut finished = Vec::new();
        let ready = {
            let mut core = s.core.lock();
            core.fail_pending(&e, &mut finished);
            // Whatever was meant for the old process is void.
            core.outgoing.clear();
            core.hb.outstanding = None;
            if !core.ready {
                core.closing = true;
            } else if self.restarts >= s.options.auto_restart {
                core.dead = Some(e.clone());
            }
            core.ready
        };
        s.deliver(finished);
        s.wake.notify();
        if !ready {
            s.set_readiness(Readiness::Failed(e));
            return;
        }
        s.breaker.failure(false, &e.message);
        if self.restarts < s.options.auto_restart {
            let backoff = Duration::from_millis(100u64 << self.restarts.min(6));
            self.restart_at = Some(Instant::now() + backoff);
        } else if s.options.auto_restart > 0 {
            s.breaker.force_open("worker restart limit reached");
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
                let mut core = self.shared.core.lock();
                core.hb.next_at = Instant::now();
                self.shared.queue_heartbeat(&mut core, Instant::now());
            }
            Err(e) => {
                self.shared.core.lock().dead = Some(e.clone());
                self.shared.breaker.force_open(&e.message);
            }
        }
    }

    fn shutdown(&mut self) {
        self.shared
            .set_readiness(Readiness::Failed(Error::closed()));
        if let Some(mut child) = self.child.take() {
            // First the protocol's own `shutdown`, so a worker can stop
            // cleanly; SIGTERM only if it is still there a moment later.
            let link = self.shared.core.lock().link.take();
            if let Some(mut link) = link {
                let id = self.shared.ids.next();
                let payload = frame::encode(96, |b| Encoder::new(b).shutdown(ids::as_str(&id)));
                if link.send_now(payload, &self.shared.stats) {
                    let polite = self
                        .shared
                        .options
                        .shutdown_grace
                        .min(Duration::from_millis(500));
                    child.wait_exit(polite);
                }
                self.shared.core.lock().link = Some(link);
            }
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

#[cfg(test)]
mod tests {
    use super::{after_batch, in_batch, poll_timeout_ms};
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    #[test]
    fn a_poll_timeout_never_wakes_before_its_time() {
        let now = Instant::now();
        assert_eq!(poll_timeout_ms(None, now), -1);
        assert_eq!(poll_timeout_ms(Some(now), now), 0);
        assert_eq!(
            poll_timeout_ms(Some(now + Duration::from_micros(1)), now),
            1
        );
        assert_eq!(
            poll_timeout_ms(Some(now + Duration::from_micros(1500)), now),
            2
        );
        assert_eq!(
            poll_timeout_ms(Some(now + Duration::from_millis(7)), now),
            7
        );
        // Already past: poll without waiting.
        assert_eq!(poll_timeout_ms(Some(now), now + Duration::from_secs(1)), 0);
    }

    #[test]
    fn wake_ups_wait_for_the_outermost_batch_to_be_delivered() {
        let log = Rc::new(RefCell::new(Vec::new()));
        // Stands in for a queue's notify: records when it runs.
        let wake = |name: &'static str| -> Box<dyn FnOnce()> {
            let log = Rc::clone(&log);
            Box::new(move || log.borrow_mut().push(name))
        };
        after_batch(wake("alone"));
        assert_eq!(*log.borrow(), ["alone"], "outside a batch: at once");
        in_batch(|| {
            after_batch(wake("first"));
            in_batch(|| after_batch(wake("nested")));
            log.borrow_mut().push("delivered");
            after_batch(wake("last"));
        });
        assert_eq!(
            *log.borrow(),
            ["alone", "delivered", "first", "nested", "last"]
        );
        // A batch that unwinds still runs its wake-ups and ends.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            in_batch(|| {
                after_batch(wake("before the panic"));
                panic!("a completion's bookkeeping failed");
            })
        }));
        assert!(unwound.is_err());
        after_batch(wake("after"));
        assert_eq!(log.borrow()[5..], ["before the panic", "after"]);
    }
}
