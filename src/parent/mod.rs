//! The parent (caller) side: one handle to one worker, or to a pool of
//! workers of one program, spawned or reached.
//!
//! A [`Parent`] holds one [`Member`] per worker (`pool.rs` picks one per
//! call). One owner per member: a driver thread (see `driver.rs`) owns its
//! transport (the DEALER, or the private link of [`crate::link`] to a
//! worker it spawned), every timer, the child process and its heartbeats.
//! Callers reach it through a mailbox. One fast path: a blocking call that
//! finds the driver parked and nothing else in flight borrows the
//! transport, reads its own reply and gives the transport back to the
//! driver. Modules by role:
//! - `pool`: the handle, and which member takes each call;
//! - `calls`: the call table and how each call completes (exactly once);
//! - `driver`: the driver's loop, the mailbox, the borrow, routing replies;
//! - `supervisor`: the child, heartbeats, restarts, recycling, rediscovery;
//! - `transport`: the DEALER and the private link.

#![deny(unsafe_code)]

mod calls;
mod driver;
#[cfg(test)]
mod model;
mod pool;
mod stream;
mod supervisor;
mod transport;

pub use calls::{after_batch, Done, Outcome, Reply};
pub use pool::Parent;
pub use stream::{Stream, StreamCanceller};

use crate::breaker::{Admit, Breaker};
use crate::codec::{self, Encoder, Limits};
use crate::error::{Error, ErrorKind, Result};
use crate::frame::{self, Frame};
use crate::ids::{self, IdGen, IdText};
use crate::log::{self, Level};
use crate::options::Options;
use crate::stats::Stats;
use crate::sync::{Condvar, Mutex};
use crate::text::ShortStr;
use crate::wake::{Wake, WatchSet};
use calls::{Completion, Finished, Pending, Slot};
use driver::{Core, Driver, Poke};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};
use transport::Transport;

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

/// What the driver and the callers share.
struct Shared {
    core: Mutex<Core>,
    /// Wakes the driver when it is parked (see [`Core::poke`]).
    wake: Wake,
    /// Asks a borrower to give the transport back.
    reclaim: Wake,
    /// What the driver sleeps on: `wake`, the child's exit, the transport.
    set: Arc<WatchSet>,
    options: Options,
    limits: Limits,
    /// What the members of one parent share.
    common: Arc<Common>,
    stats: Stats,
    readiness: Mutex<Readiness>,
    ready_cv: Condvar,
    healthy: AtomicBool,
    /// A recycle is under way: new calls wait for the next worker.
    draining: AtomicBool,
    /// The worker is gone for good (see [`Shared::died`]).
    gone: AtomicBool,
    name: String,
}

/// What the members of a pool share: call ids (so `cancel` finds a call
/// whichever member has it), the breaker (it judges the pool as a whole),
/// and how many members are not dead.
struct Common {
    ids: IdGen,
    breaker: Breaker,
    alive: AtomicUsize,
}

impl Common {
    fn new(options: &Options, members: usize) -> Arc<Common> {
        Arc::new(Common {
            ids: IdGen::new(),
            breaker: Breaker::new(options.breaker_threshold, options.breaker_cooldown),
            alive: AtomicUsize::new(members),
        })
    }
}

/// One worker of a parent and the driver thread that owns its
/// connection. Thread-safe: any number of threads may call.
pub(crate) struct Member {
    shared: Arc<Shared>,
    driver: Mutex<Option<JoinHandle<()>>>,
    driver_thread: ThreadId,
    /// How long start-up may take, and whether the program was started
    /// here (a timeout then suggests it is not a worker).
    wait: Duration,
    spawned: bool,
}

impl Member {
    /// Starts a member's driver (which binds a DEALER and starts the
    /// program, or connects); [`Member::wait_ready`] waits for its worker.
    fn launch(
        target: Target,
        options: Options,
        name: String,
        common: Arc<Common>,
    ) -> Result<Member> {
        let socket = transport::dealer(&options)?;
        let (port, wait) = match &target {
            Target::Spawn { .. } => {
                let port = transport::bind(&socket, &options)?;
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
                (port, options.start_timeout)
            }
            Target::Endpoint(ep) | Target::Service { endpoint: ep, .. } => {
                socket
                    .connect(ep)
                    .map_err(|e| Error::invalid(format!("cannot connect to '{ep}': {e}")))?;
                (0, options.connect_timeout)
            }
        };
        let set = Arc::new(WatchSet::new().map_err(|e| Error::io(format!("epoll: {e}")))?);
        let wake = Wake::new().map_err(|e| Error::io(format!("eventfd: {e}")))?;
        set.add(wake.fd(), libc::EPOLLIN)
            .map_err(|e| Error::io(format!("epoll: {e}")))?;
        let max = options.max_message_size as u64;
        let transport = Transport::new(socket, Arc::clone(&set), max)?;
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(target.clone())),
            wake,
            reclaim: Wake::new().map_err(|e| Error::io(format!("eventfd: {e}")))?,
            set,
            limits: Limits::default(),
            common,
            stats: Stats::default(),
            readiness: Mutex::new(Readiness::Starting),
            ready_cv: Condvar::new(),
            healthy: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            name,
            options,
        });
        let driver = Driver::new(Arc::clone(&shared), transport, target, port);
        let handle = std::thread::Builder::new()
            .name("mf-parent".into())
            .spawn(move || driver.run())
            .map_err(|e| Error::io(format!("cannot start the driver thread: {e}")))?;
        Ok(Member {
            shared,
            driver_thread: handle.thread().id(),
            driver: Mutex::new(Some(handle)),
            wait,
            spawned: port != 0,
        })
    }

    /// Waits for the first heartbeat's echo; on failure the member is closed.
    fn wait_ready(&self) -> Result<()> {
        let (wait, spawned) = (self.wait, self.spawned);
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
                        let mut text = format!(
                            "worker '{}' did not answer within {} ms",
                            self.shared.name,
                            wait.as_millis()
                        );
                        if spawned {
                            text.push_str(": ");
                            text.push_str(&crate::error::not_a_worker_hint(wait.as_millis()));
                        }
                        return Err(Error::new(ErrorKind::Timeout, text));
                    }
                }
            }
        }
    }

    /// Calls `function` with `args` (one MessagePack array) and blocks for
    /// its result (never on a driver thread: see `Parent::call`).
    pub fn call(&self, function: &str, args: &[u8], timeout_ms: i64) -> Outcome {
        let slot = Arc::new(Slot::default());
        let (payload, pending, (_, id)) = self.prepare(
            function,
            args,
            timeout_ms,
            Completion::Wait(Arc::clone(&slot)),
        )?;
        self.shared.run_sync(&slot, id, payload, pending)
    }

    /// Starts a call, handing its number to `numbered` before the call is
    /// submitted, so before it can end (the C API writes it for the caller there).
    pub(crate) fn call_numbered(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        done: Done,
        numbered: impl FnOnce(u64),
    ) -> Result<()> {
        let (payload, pending, (n, id)) =
            self.prepare(function, args, timeout_ms, Completion::Async(done))?;
        numbered(n);
        self.shared.submit(id, payload, pending)
    }

    /// Cancels call `n` (from [`Parent::call_start`]): if it is still in
    /// flight it completes at once with `Cancelled`, and the worker is told
    /// (a `cancel` message), so a handler that watches for it can stop; a
    /// spawned worker whose handler runs on past the cancel grace is
    /// stopped. Whether the call was still in flight: a call that already
    /// ended, or a number never handed out, is left alone.
    pub fn cancel(&self, n: u64) -> bool {
        self.shared.cancel(n)
    }

    /// Calls `function` as a stream: the handler's items arrive, in order,
    /// through [`Stream::next`], with at most the stream's window (the
    /// option `stream_credit`, or a window that follows the items' size)
    /// sent ahead of what the consumer took; the worker waits for more. `timeout_ms` (as for [`Parent::call`]) limits the wait
    /// for the first item and then between items. A handler that does not
    /// stream answers as one last value, and the stream has no items.
    pub fn stream(&self, function: &str, args: &[u8], timeout_ms: i64) -> Result<Stream> {
        let sink = Arc::new(calls::StreamSink::default());
        let completion = Completion::Stream(Arc::clone(&sink));
        let fixed = self.shared.options.stream_credit;
        let credit = u64::from(fixed.unwrap_or(crate::options::DEFAULT_STREAM_CREDIT));
        let (payload, pending, (n, id)) =
            self.prepare_as(function, args, timeout_ms, completion, Some(credit))?;
        self.shared.submit(id, payload, pending)?;
        self.shared
            .stats
            .streams_open
            .fetch_add(1, Ordering::Relaxed);
        let widens = fixed.is_none();
        Ok(Stream::new(
            Arc::clone(&self.shared),
            n,
            id,
            sink,
            credit,
            widens,
        ))
    }

    /// Validates, asks the breaker, encodes.
    fn prepare(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        completion: Completion,
    ) -> Result<(Frame, Pending, (u64, IdText))> {
        self.prepare_as(function, args, timeout_ms, completion, None)
    }

    /// `prepare`, for a stream when `stream` is its credit.
    fn prepare_as(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        completion: Completion,
        stream: Option<u64>,
    ) -> Result<(Frame, Pending, (u64, IdText))> {
        let s = &*self.shared;
        if function.is_empty() {
            return Err(Error::invalid("function name must not be empty"));
        }
        codec::validate_args(args, s.limits)
            .map_err(|e| Error::invalid(format!("arguments are not one msgpack array: {e}")))?;
        let probe = match s.common.breaker.admit() {
            Admit::Yes => false,
            Admit::Probe => true,
            Admit::No => {
                return Err(Error::new(
                    ErrorKind::CircuitOpen,
                    format!(
                        "circuit breaker is open for worker '{}' (next probe in {} ms)",
                        s.name,
                        s.common.breaker.retry_in().as_millis()
                    ),
                ))
            }
        };
        let (n, id) = s.common.ids.next_numbered();
        let (id_text, ns) = (ids::as_str(&id), s.options.namespace.as_str());
        let timeout = s.options.call_timeout(timeout_ms);
        let remaining_ms = timeout.map(|t| t.as_millis() as u64);
        let payload = frame::encode(Encoder::call_capacity(id_text, function, args, ns), |b| {
            let mut e = Encoder::new(b);
            match stream {
                Some(credit) => e.stream_call(id_text, function, args, ns, remaining_ms, credit),
                None => e.call(id_text, function, args, ns, remaining_ms),
            }
        });
        if payload.len() as i64 > s.options.max_message_size {
            if probe {
                s.common
                    .breaker
                    .failure(true, "probe refused before it was sent");
            }
            // A peer refuses such a frame by dropping the connection.
            return Err(Error::invalid(format!(
                "a call of {} bytes exceeds the maximum message size of {} bytes",
                payload.len(),
                s.options.max_message_size
            )));
        }
        let pending = Pending {
            function: ShortStr::new(function),
            timeout,
            started: Instant::now(),
            probe,
            completion,
            last_item: None,
            owed: stream,
            held: false,
        };
        Ok((payload, pending, (n, id)))
    }

    /// Sends one heartbeat and waits for its echo; returns the round-trip
    /// time. Not subject to the circuit breaker (never on a driver thread).
    pub fn ping(&self, timeout: Duration) -> Result<Duration> {
        let id = self.shared.common.ids.next();
        let payload = heartbeat(&id);
        let slot = Arc::new(Slot::default());
        let started = Instant::now();
        let pending = Pending {
            function: ShortStr::new("heartbeat"),
            timeout: Some(timeout),
            started,
            probe: false,
            completion: Completion::Wait(Arc::clone(&slot)),
            last_item: None,
            owed: None,
            held: false,
        };
        self.shared.run_sync(&slot, id, payload, pending)?;
        Ok(started.elapsed())
    }

    /// Ends the connection: pending calls fail with `Closed`, a spawned
    /// worker is terminated and reaped. Idempotent.
    pub fn close(&self) {
        self.begin_close();
        self.join();
    }

    /// Fails the pending calls and tells the driver to end (it then stops
    /// the worker); returns at once.
    fn begin_close(&self) {
        let s = &self.shared;
        let mut finished = Vec::new();
        let reclaim = {
            let mut core = s.core.lock();
            core.closing = true;
            core.calls.fail_all(&Error::closed(), &mut finished);
            core.mailbox.clear();
            core.ask_reclaim()
        };
        s.deliver(finished);
        s.wake.notify();
        s.poke(reclaim);
    }

    /// Waits for the driver to end (after `begin_close`).
    fn join(&self) {
        if std::thread::current().id() == self.driver_thread {
            // Called from a completion on the driver: it ends by itself.
            return;
        }
        if let Some(handle) = self.driver.lock().take() {
            let _ = handle.join();
        }
    }

    fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Whether calls should go here: the worker is up and not being recycled.
    fn takes_calls(&self) -> bool {
        self.is_healthy() && !self.shared.draining.load(Ordering::Relaxed)
    }

    /// Whether the worker is gone for good (out of restarts, or it could not start again).
    fn is_gone(&self) -> bool {
        self.shared.gone.load(Ordering::Relaxed)
    }

    fn in_flight(&self) -> i64 {
        self.shared.stats.in_flight.load(Ordering::Relaxed)
    }

    /// This member's entry of the stats' `workers` array.
    fn stats_entry(&self) -> Value {
        let s = &self.shared.stats;
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "pid": s.worker_pid.load(Ordering::Relaxed),
            "in_flight": self.in_flight().max(0),
            "requests_total": r(&s.requests_total),
            "restarts": r(&s.restarts),
            "recycles": r(&s.recycles),
            "healthy": self.is_healthy(),
            "heartbeat_rtt_last_ms": r(&s.heartbeat_rtt_last_us) as f64 / 1000.0,
        })
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    /// See [`Member::cancel`].
    fn cancel(&self, n: u64) -> bool {
        let id = self.common.ids.text_of(n);
        let (pending, poke) = {
            let mut core = self.core.lock();
            let Some(pending) = core.calls.remove(&id) else {
                return false;
            };
            let grace = self.options.cancel_grace;
            core.give_up(&id, pending.function.as_str(), grace, Instant::now());
            (pending, core.poke())
        };
        self.poke(poke);
        self.stats.cancels.fetch_add(1, Ordering::Relaxed);
        let e = Error::new(
            ErrorKind::Cancelled,
            format!("call to '{}' was cancelled", pending.function.as_str()),
        );
        self.deliver(vec![(pending, Err(e))]);
        true
    }

    /// Grants stream `id` `n` more items: the worker is sent `credit`
    /// the way calls go (through the mailbox), and the stream's timeout
    /// runs again.
    fn grant(&self, id: &IdText, n: u64) {
        let payload = frame::encode(96, |b| Encoder::new(b).credit(ids::as_str(id), n));
        let poke = {
            let mut core = self.core.lock();
            if core.closing {
                return;
            }
            core.calls.grant(id, n, Instant::now());
            core.mailbox.push_back(payload);
            core.poke()
        };
        self.poke(poke);
    }

    /// Wakes whoever `poke` names.
    fn poke(&self, poke: Poke) {
        match poke {
            Poke::Nobody => {}
            Poke::Driver => self.wake.notify(),
            Poke::Borrower => self.reclaim.notify(),
        }
    }

    /// Checks that the parent takes calls, counts one, and enters it in
    /// the table; whether it is held for the worker that follows a recycle.
    fn admit(&self, core: &mut Core, id: IdText, mut pending: Pending) -> Result<bool> {
        if core.closing || core.dead.is_some() {
            if pending.probe {
                self.common.breaker.failure(true, "parent closed");
            }
            return Err(core.dead.clone().unwrap_or_else(Error::closed));
        }
        pending.held = core.count_call(self.options.max_calls_per_worker);
        if pending.held {
            self.draining.store(true, Ordering::Relaxed);
        }
        self.stats.requests_total.fetch_add(1, Ordering::Relaxed);
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let held = pending.held;
        core.calls.insert(id, pending);
        Ok(held)
    }

    /// A submission: the call goes in the table, its payload in the
    /// mailbox (or, during a recycle, among the held calls), and the driver
    /// is woken if it is parked (or the borrower asked for the transport back).
    fn submit(&self, id: IdText, payload: Frame, pending: Pending) -> Result<()> {
        let poke = {
            let mut core = self.core.lock();
            if self.admit(&mut core, id, pending)? {
                core.held.push_back((id, payload));
            } else {
                core.mailbox.push_back(payload);
            }
            core.poke()
        };
        self.poke(poke);
        Ok(())
    }

    /// A blocking call: borrows the transport when it is free, otherwise a
    /// submission; then waits for the outcome.
    fn run_sync(&self, slot: &Slot, id: IdText, payload: Frame, pending: Pending) -> Outcome {
        let deadline = pending.timeout.map(|t| pending.started + t);
        let borrowed = {
            let mut core = self.core.lock();
            match core.borrow(self.options.max_calls_per_worker) {
                Some(t) => {
                    // Never held: `borrow` refuses when a recycle is due.
                    if let Err(e) = self.admit(&mut core, id, pending) {
                        drop(core);
                        self.give_back(t, std::collections::VecDeque::new());
                        return Err(e);
                    }
                    Some(t)
                }
                None => {
                    drop(core);
                    self.submit(id, payload, pending)?;
                    return slot.wait();
                }
            }
        };
        if let Some(t) = borrowed {
            self.lend(t, payload, slot, deadline);
        }
        slot.wait()
    }

    /// Ends a batch of calls, then runs the wake-ups their completions
    /// put off (`after_batch`).
    fn deliver(&self, finished: Finished) {
        if finished.is_empty() {
            return;
        }
        // One reading of the clock ends the whole batch's latencies.
        let now = Instant::now();
        calls::in_batch(|| {
            for (p, outcome) in finished {
                self.finish(p, outcome, now);
            }
        });
    }

    /// Ends one call (at `now`): stats, breaker, then its sink.
    fn finish(&self, p: Pending, outcome: Outcome, now: Instant) {
        let s = self;
        s.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Completion::Stream(_) = p.completion {
            s.stats.streams_open.fetch_sub(1, Ordering::Relaxed);
        }
        s.stats
            .latency
            .record(now.saturating_duration_since(p.started));
        match &outcome {
            Ok(_) => {
                s.stats.requests_success.fetch_add(1, Ordering::Relaxed);
                s.common.breaker.success(p.probe);
            }
            Err(e) => {
                s.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                match e.kind {
                    // A missing function is the caller's mistake: the
                    // worker that says so is healthy.
                    ErrorKind::NoSuchFunction => {
                        s.stats.remote_errors.fetch_add(1, Ordering::Relaxed);
                        s.common.breaker.success(p.probe);
                    }
                    ErrorKind::Remote => {
                        s.stats.remote_errors.fetch_add(1, Ordering::Relaxed);
                        if s.options.breaker_counts_remote_errors {
                            s.common.breaker.failure(p.probe, &e.message);
                        } else {
                            s.common.breaker.success(p.probe);
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
                        // A slow worker is not a failed one: one that hangs
                        // misses heartbeats, and one whose handler runs on
                        // past the cancel grace is stopped (an exit).
                        s.common.breaker.neither(p.probe);
                    }
                    ErrorKind::Cancelled => s.common.breaker.neither(p.probe),
                    // A reply over the maximum message size: the worker
                    // answered, and is as healthy as one that answers.
                    ErrorKind::Protocol => s.common.breaker.success(p.probe),
                    // Worker exits are counted once per exit, not per call.
                    _ => {}
                }
            }
        }
        p.complete(outcome);
    }

    /// This member is gone for good; whether it was the last one alive
    /// (then the breaker opens for the pool as a whole).
    fn died(&self) -> bool {
        self.gone.store(true, Ordering::Relaxed);
        self.common.alive.fetch_sub(1, Ordering::Relaxed) == 1
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
}

/// A heartbeat of the parent's, stamped now.
fn heartbeat(id: &IdText) -> Frame {
    frame::encode(128, |b| {
        Encoder::new(b).heartbeat(ids::as_str(id), codec::now_seconds(), false)
    })
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

#[cfg(test)]
mod tests {
    use super::poll_timeout_ms;
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
}
