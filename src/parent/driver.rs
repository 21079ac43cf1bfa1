//! The driver: the one thread that owns a parent's transport, and the
//! mailbox through which callers reach it (libzmq's mailbox shape).
//!
//! Who holds the transport, at every moment exactly one of:
//! - the driver, while it runs (`Driver::held`);
//! - the core, at rest (`Core::rest`), while the driver is parked: its
//!   descriptors are then in the driver's poll set;
//! - one borrower (`Core::borrowed`): a blocking call that found it at
//!   rest with nothing else in flight; its descriptors are out of the
//!   driver's set and the borrower polls them with `Shared::reclaim`.
//!
//! Liveness — outstanding work means its holder is awake or will be woken
//! by an event already registered:
//! - the driver parks only after it found the mailbox empty, and raises
//!   `parked` under the lock before it sleeps; whoever adds work under the
//!   lock then sees `parked` and writes the wake descriptor
//!   ([`Core::poke`]); a reply wakes it through the transport's
//!   descriptors, which are in its set whenever it does not hold the
//!   transport itself and nobody borrows it;
//! - while a borrower holds it, whoever needs the transport (a
//!   submission, the driver's heartbeat or the child's exit, a close)
//!   writes `reclaim`, which the borrower polls beside the transport; a
//!   borrower always gives the transport back to the core, never to
//!   another caller, and wakes the parked driver when anything is left
//!   for it.
//!
//! No timer stands in for any of this: the driver's timeout is the nearest
//! real deadline (a call's timeout, a heartbeat, a restart).

use super::calls::{Calls, Completion, Finished, Reply, Slot};
use super::supervisor::Supervisor;
use super::transport::{Arrival, Transport};
use super::{poll_timeout_ms, Error, Shared, Target};
use crate::codec::{self, Encoder, ErrorKindName, Kind};
use crate::error::ErrorKind;
use crate::frame::{self, Frame};
use crate::ids::{self, IdText};
use crate::log::{self, Level};
use crate::text::ShortStr;
use crate::wake;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages read per wake-up before bookkeeping gets a turn.
const RECV_BATCH: usize = 256;
/// A reply found waiting this long after the driver parked with the
/// transport at rest, although the transport never woke it, is a stall.
const STALL: Duration = Duration::from_millis(10);

/// Heartbeat bookkeeping.
pub(super) struct Heartbeat {
    pub(super) outstanding: Option<(IdText, Instant)>,
    pub(super) next_at: Instant,
    pub(super) consecutive_misses: u32,
}

/// What the driver and the callers share, behind one lock held only for
/// bookkeeping (never while anyone sleeps).
pub(super) struct Core {
    /// The transport at rest (see the module's doc), and since when.
    pub(super) rest: Option<Transport>,
    pub(super) rest_since: Instant,
    /// A blocking call holds the transport.
    pub(super) borrowed: bool,
    /// The driver is asleep, or about to be: work added must wake it.
    pub(super) parked: bool,
    /// `reclaim` was written and not yet read by the borrower.
    pub(super) reclaim_asked: bool,
    /// Payloads of submitted calls, oldest first, for the driver to send.
    pub(super) mailbox: VecDeque<Frame>,
    pub(super) calls: Calls,
    pub(super) hb: Heartbeat,
    /// The worker (or its latest restart) has answered: calls may be sent.
    /// Until then the mailbox keeps them, for the worker that answers next.
    pub(super) up: bool,
    /// The worker has answered once (start-up is over).
    pub(super) ready: bool,
    pub(super) closing: bool,
    /// Set when the worker is gone for good: calls fail at once with it.
    pub(super) dead: Option<Error>,
    /// The parent is stopping its worker (hung, or a handler past the
    /// cancel grace): nothing it still says makes it up again.
    pub(super) stopping: bool,
    pub(super) target: Target,
    /// A failure asked the driver to look the service up again.
    pub(super) rediscover: bool,
    /// Calls that ended here before a spawned worker answered them
    /// (cancelled or timed out), by id: until when its handler may run on,
    /// and the function's name. The worker's answer removes its entry.
    pub(super) ending: HashMap<IdText, (Instant, ShortStr), ids::KeyBuildHasher>,
    /// Calls admitted since the worker (or its recycle) began, counted
    /// towards the option `max_calls_per_worker`.
    pub(super) served: u64,
    /// The worker is being recycled: calls admitted now are held (their
    /// payloads in `held`) for the next worker; when no other call is left
    /// in flight, the worker is stopped (`Supervisor::recycle`).
    pub(super) draining: bool,
    pub(super) held: VecDeque<(IdText, Frame)>,
}

/// Who must be woken after work was added.
#[must_use]
pub(super) enum Poke {
    Nobody,
    Driver,
    Borrower,
}

impl Core {
    pub(super) fn new(target: Target) -> Core {
        Core {
            rest: None,
            rest_since: Instant::now(),
            borrowed: false,
            parked: false,
            reclaim_asked: false,
            mailbox: VecDeque::new(),
            calls: Calls::default(),
            hb: Heartbeat {
                outstanding: None,
                next_at: Instant::now(),
                consecutive_misses: 0,
            },
            up: false,
            ready: false,
            closing: false,
            dead: None,
            stopping: false,
            target,
            rediscover: false,
            ending: HashMap::default(),
            served: 0,
            draining: false,
            held: VecDeque::new(),
        }
    }

    /// Counts a call for its worker; whether it is held for the next one.
    /// The call after the worker's `max` (0: no limit) begins its recycle.
    pub(super) fn count_call(&mut self, max: u64) -> bool {
        if self.recycle_due(max) {
            self.draining = true;
            self.served = 0;
        }
        self.served += 1;
        self.draining
    }

    /// The next call must begin a recycle (spawned workers only).
    fn recycle_due(&self, max: u64) -> bool {
        max > 0
            && !self.draining
            && self.served >= max
            && matches!(self.target, Target::Spawn { .. })
    }

    /// The recycled worker answered all it owed: the held calls go to the
    /// mailbox for the next worker, at most `max` of them (those ended
    /// meanwhile are left out); if more are held, that worker is recycled
    /// in turn once it has answered its share.
    pub(super) fn end_drain(&mut self, max: u64) {
        let Core {
            held,
            calls,
            mailbox,
            ..
        } = self;
        let mut moved = 0;
        while moved < max || max == 0 {
            let Some((id, payload)) = held.pop_front() else {
                break;
            };
            if calls.release(&id) {
                mailbox.push_back(payload);
                moved += 1;
            }
        }
        held.retain(|(id, _)| calls.contains(id));
        self.served = moved;
        self.draining = !self.held.is_empty();
    }

    /// The held calls failed with the rest (an exit, a stop): forget them.
    pub(super) fn drop_drain(&mut self) {
        self.held.clear();
        self.draining = false;
    }

    /// A call ended here before its worker answered it (cancelled, or timed
    /// out): the worker is told, so that a handler that watches for it can
    /// stop, and a spawned worker whose handler runs on past `grace` is
    /// stopped (see `Supervisor::tick`). The caller pokes the transport's holder.
    pub(super) fn give_up(&mut self, id: &IdText, function: &str, grace: Duration, now: Instant) {
        let id_text = ids::as_str(id);
        let cancel = frame::encode(96, |b| Encoder::new(b).cancel(id_text));
        self.mailbox.push_back(cancel);
        // A call given up while no worker is up (starting, restarting, being
        // stopped) waits in the mailbox and never reached the worker that
        // will read it with its cancel: that worker owes no handler's end.
        if self.up && matches!(self.target, Target::Spawn { .. }) && !grace.is_zero() {
            self.ending
                .insert(*id, (now + grace, ShortStr::new(function)));
        }
    }

    /// The call whose handler's grace ends first, and when.
    pub(super) fn first_overdue(&self) -> Option<(Instant, &str)> {
        self.ending
            .values()
            .map(|(t, f)| (*t, f.as_str()))
            .min_by_key(|(t, _)| *t)
    }

    /// After work was added for the transport's holder: the borrower is
    /// asked to give it back, or a parked driver is woken (each once).
    pub(super) fn poke(&mut self) -> Poke {
        if self.borrowed {
            return self.ask_reclaim();
        }
        if std::mem::take(&mut self.parked) {
            Poke::Driver
        } else {
            Poke::Nobody
        }
    }

    /// Asks a borrower, if there is one, for the transport back.
    pub(super) fn ask_reclaim(&mut self) -> Poke {
        if self.borrowed && !std::mem::replace(&mut self.reclaim_asked, true) {
            Poke::Borrower
        } else {
            Poke::Nobody
        }
    }

    /// The transport for a blocking call, when it is at rest and nothing
    /// else is in flight or waiting to be sent.
    pub(super) fn borrow(&mut self, max_calls: u64) -> Option<Transport> {
        if self.closing
            || self.dead.is_some()
            || !self.up
            || !self.calls.is_empty()
            || !self.mailbox.is_empty()
            || self.draining
            || self.recycle_due(max_calls)
        {
            return None;
        }
        let mut t = self.rest.take()?;
        t.unregister();
        self.borrowed = true;
        Some(t)
    }
}

impl Shared {
    /// A borrower's turn: sends its call, reads until its own outcome is
    /// in, the driver asks for the transport, or its deadline passes, and
    /// gives the transport back. Replies it reads are routed like the
    /// driver's (only its own call and heartbeats can be in flight, so it
    /// never runs another caller's completion).
    pub(super) fn lend(
        &self,
        mut t: Transport,
        payload: Frame,
        slot: &Slot,
        deadline: Option<Instant>,
    ) {
        let mut out = VecDeque::from([payload]);
        t.send_queued(&mut out, &self.stats);
        if !out.is_empty() {
            // No peer to take it yet: the driver waits for one.
            self.give_back(t, out);
            return;
        }
        let mut batch = Vec::new();
        loop {
            self.receive(&mut t, &mut batch);
            if slot.is_done() {
                break;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break; // the driver ends it
            }
            let [a, b] = t.poll_items();
            let [replies, second, reclaim] = wake::wait_ready(
                [a, b, (self.reclaim.fd(), libc::POLLIN)],
                poll_timeout_ms(deadline, now),
            );
            if t.is_direct() {
                if second {
                    t.drop_strays(&self.stats);
                }
                if replies {
                    t.flush(&self.stats);
                }
            }
            if reclaim {
                break;
            }
        }
        self.give_back(t, VecDeque::new());
    }

    /// Puts a borrowed transport back at rest (with payloads it could not
    /// send first in the mailbox) and wakes the driver if anything is left
    /// for it.
    pub(super) fn give_back(&self, mut t: Transport, unsent: VecDeque<Frame>) {
        let wake = {
            let mut core = self.core.lock();
            for p in unsent.into_iter().rev() {
                core.mailbox.push_front(p);
            }
            t.register();
            core.rest = Some(t);
            core.rest_since = Instant::now();
            core.borrowed = false;
            if std::mem::take(&mut core.reclaim_asked) {
                self.reclaim.drain();
            }
            // The driver's timeout may not cover calls that began meanwhile.
            let left = !core.calls.is_empty() || !core.mailbox.is_empty() || core.closing;
            left && std::mem::take(&mut core.parked)
        };
        if wake {
            self.wake.notify();
        }
    }

    /// Reads what is waiting and routes each message; returns how many it read.
    pub(super) fn receive(&self, t: &mut Transport, batch: &mut Vec<Arrival>) -> usize {
        let mut total = 0;
        loop {
            batch.clear();
            while batch.len() < RECV_BATCH {
                let Some(payload) = t.next_payload(&self.stats) else {
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
                for arrival in batch.drain(..) {
                    match arrival {
                        Arrival::Payload(p) => self.route(&mut core, p, &mut finished),
                        Arrival::Oversized { len, head } => {
                            self.oversized(&mut core, len, &head, &mut finished)
                        }
                    }
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
                let Some(pending) = key.and_then(|k| core.calls.remove(&k)) else {
                    // The late answer of a call that ended here: its handler
                    // is done. A worker of ours also answers a cancel that
                    // came after the call's answer: nothing to count.
                    let ended = key.and_then(|k| core.ending.remove(&k)).is_some();
                    let late_cancel = msg.error_kind == Some(ErrorKindName::Cancelled.as_str());
                    if !ended && !late_cancel {
                        self.stats.dropped_unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                };
                let outcome = if msg.kind == Kind::Response {
                    Ok(match msg.result {
                        Some(r) => {
                            let start = r.as_ptr() as usize - bytes.as_ptr() as usize;
                            let range = start..start + r.len();
                            Reply::within(payload, range)
                        }
                        None => Reply::nil(),
                    })
                } else {
                    let text = msg.error.unwrap_or("remote error without text");
                    Err(Error::new(
                        error_kind(msg.error_kind, text),
                        text.to_owned(),
                    ))
                };
                finished.push((pending, outcome));
            }
            Kind::Stream => {
                let pending = key.and_then(|k| core.calls.get_mut(&k));
                let sink = pending.and_then(|p| match &p.completion {
                    Completion::Stream(sink) => {
                        p.last_item = Some(Instant::now());
                        p.owed = p.owed.map(|o| o.saturating_sub(1));
                        Some(Arc::clone(sink))
                    }
                    _ => None,
                });
                match (sink, msg.item) {
                    (Some(sink), Some(item)) => {
                        let start = item.as_ptr() as usize - bytes.as_ptr() as usize;
                        let range = start..start + item.len();
                        self.stats.stream_items.fetch_add(1, Ordering::Relaxed);
                        sink.push(Reply::within(payload, range));
                    }
                    // The items of a stream that ended here (closed, or
                    // timed out) until the worker saw its cancel.
                    (None, _) if key.is_some_and(|k| core.ending.contains_key(&k)) => {}
                    (None, _) => {
                        self.stats.dropped_unknown.fetch_add(1, Ordering::Relaxed);
                    }
                    (Some(_), None) => {
                        self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Kind::Heartbeat => {
                if let Some(p) = key.and_then(|k| core.calls.remove(&k)) {
                    // A ping's echo.
                    finished.push((p, Ok(Reply::nil())));
                    return;
                }
                let ours =
                    matches!((key, core.hb.outstanding), (Some(k), Some((id, _))) if k == id);
                if (ours || (!core.up && msg.hb_response)) && !core.stopping {
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

    /// A message over the maximum message size, known by its first bytes:
    /// the reply to a call in flight fails that call (the worker has
    /// answered; waiting for the timeout would only hide why it failed).
    /// Anything else is counted and dropped, as a malformed message is.
    fn oversized(&self, core: &mut Core, len: u64, head: &[u8], finished: &mut Finished) {
        let peek = codec::peek(head).filter(|m| matches!(m.kind, Kind::Response | Kind::Error));
        let pending = peek
            .and_then(|m| m.id)
            .and_then(ids::key)
            .and_then(|k| core.calls.remove(&k));
        let Some(pending) = pending else {
            self.stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
            log::emit(
                Level::Debug,
                "message_dropped",
                &format!(
                    "dropped a message of {len} bytes from the worker, over the maximum \
                     message size of {} bytes",
                    self.options.max_message_size
                ),
                &[],
            );
            return;
        };
        let what = match peek.map(|m| m.kind) {
            Some(Kind::Error) => "error reply to",
            _ => "result of",
        };
        let text = format!(
            "the {what} '{}' is {len} bytes, over the maximum message size of {} bytes",
            pending.function.as_str(),
            self.options.max_message_size
        );
        finished.push((pending, Err(Error::new(ErrorKind::Protocol, text))));
    }

    fn heartbeat_answered(&self, core: &mut Core, hb_timestamp: Option<f64>) {
        let s = &self.stats;
        if !core.up {
            // The heartbeat that waited for the worker to start: keep it only
            // until the real round trip, measured next, replaces it, and keep
            // it out of the average.
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
        core.hb.next_at = if core.up {
            Instant::now() + self.options.heartbeat_interval
        } else {
            // The first real round trip follows at once.
            Instant::now()
        };
        self.healthy.store(true, Ordering::Relaxed);
        core.up = true;
        if !core.ready {
            core.ready = true;
            self.set_readiness(super::Readiness::Ready);
        }
    }
}

/// What an `error` reply says failed: this library's workers name it in
/// `metadata.error_kind`; other workers' text names a missing function as
/// `Function '<name>' not found`.
fn error_kind(named: Option<&str>, text: &str) -> ErrorKind {
    match named.and_then(ErrorKindName::parse) {
        Some(ErrorKindName::NoSuchFunction) => ErrorKind::NoSuchFunction,
        Some(ErrorKindName::Cancelled) => ErrorKind::Cancelled,
        Some(ErrorKindName::Timeout) => ErrorKind::Timeout,
        None if text.starts_with("Function '") && text.ends_with("' not found") => {
            ErrorKind::NoSuchFunction
        }
        None => ErrorKind::Remote,
    }
}

/// The driver thread's own state.
pub(super) struct Driver {
    shared: Arc<Shared>,
    /// The transport while this thread runs with it.
    held: Option<Transport>,
    /// Payloads taken from the mailbox, and heartbeats, not sent yet.
    out: VecDeque<Frame>,
    batch: Vec<Arrival>,
    sup: Supervisor,
    /// The DEALER's `ZMQ_FD` (it changes only while this thread holds the transport).
    dealer_fd: std::os::fd::RawFd,
}

/// How the driver's last sleep ended.
#[derive(Default)]
struct Woken {
    /// Since when the transport had been at rest when the driver took it
    /// back (for stall accounting).
    rested_since: Option<Instant>,
    /// The transport's descriptors woke it.
    by_transport: bool,
    /// Among them the DEALER's (strays, while the private link is in use).
    by_dealer: bool,
    exited: bool,
}

impl Driver {
    pub(super) fn new(shared: Arc<Shared>, t: Transport, target: Target, port: u16) -> Driver {
        Driver {
            sup: Supervisor::new(Arc::clone(&shared), target, port),
            shared,
            dealer_fd: t.zmq_fd(),
            held: Some(t),
            out: VecDeque::new(),
            batch: Vec::with_capacity(16),
        }
    }

    pub(super) fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_loop()));
        if ok.is_err() {
            let mut finished = Vec::new();
            {
                let mut core = shared.core.lock();
                core.closing = true;
                core.mailbox.clear();
                core.calls.fail_all(
                    &Error::new(
                        ErrorKind::Panic,
                        "internal error: the parent's driver panicked",
                    ),
                    &mut finished,
                );
                shared.set_readiness(super::Readiness::Failed(Error::new(
                    ErrorKind::Panic,
                    "internal error: the parent's driver panicked",
                )));
            }
            shared.deliver(finished);
        }
        let t = self.take_back();
        self.sup.shutdown(t);
    }

    /// The transport, back from the core (a borrower gives it back before
    /// the driver ends: it polls `reclaim`, asked for by `close`).
    fn take_back(&mut self) -> Option<Transport> {
        loop {
            if let Some(t) = self.held.take() {
                return Some(t);
            }
            let poke = {
                let mut core = self.shared.core.lock();
                if let Some(t) = core.rest.take() {
                    return Some(t);
                }
                if !core.borrowed {
                    return None;
                }
                core.parked = true;
                core.ask_reclaim()
            };
            self.shared.poke(poke);
            let [_] = wake::wait_ready([(self.shared.wake.fd(), libc::POLLIN)], -1);
            self.shared.wake.drain();
        }
    }

    fn run_loop(&mut self) {
        if let Err(e) = self.sup.start(self.held.as_mut().expect("held at start")) {
            self.shared.set_readiness(super::Readiness::Failed(e));
            self.shared.core.lock().closing = true;
            return;
        }
        self.sup.queue_heartbeat(&mut self.out, Instant::now());
        let mut woken = Woken::default();
        loop {
            let now = Instant::now();
            let mut finished = Vec::new();
            {
                let mut core = self.shared.core.lock();
                core.parked = false;
                if self.held.is_none() {
                    self.held = core.rest.take();
                    if self.held.is_some() {
                        woken.rested_since = Some(core.rest_since);
                    }
                }
                if core.closing {
                    return;
                }
                let mut expired = Vec::new();
                if core.calls.expire(now, &mut finished, &mut expired) {
                    let grace = self.shared.options.cancel_grace;
                    for ((p, _), id) in finished.iter().zip(&expired) {
                        core.give_up(id, p.function.as_str(), grace, now);
                    }
                    if matches!(core.target, Target::Service { .. }) {
                        core.rediscover = true;
                    }
                }
                if let Some(t) = &mut self.held {
                    if core.up {
                        self.out.extend(core.mailbox.drain(..));
                    }
                    if std::mem::take(&mut core.rediscover) {
                        super::supervisor::rediscover(&mut core.target, &t.socket);
                    }
                }
            }
            self.stall_probe(&woken, now);
            self.shared.deliver(finished);
            if woken.exited {
                self.sup.child_exited(&mut self.out);
            }
            self.sup.tick(now, &mut self.held, &mut self.out);
            if let Some(t) = &self.held {
                self.dealer_fd = t.zmq_fd();
            }
            if let Some(t) = &mut self.held {
                if woken.by_dealer {
                    t.drop_strays(&self.shared.stats);
                }
                t.send_queued(&mut self.out, &self.shared.stats);
                self.shared.receive(t, &mut self.batch);
                if !self.out.is_empty() && t.is_direct() {
                    // The worker said hello: what the DEALER refused goes on the link.
                    t.send_queued(&mut self.out, &self.shared.stats);
                    self.shared.receive(t, &mut self.batch);
                }
            }
            woken = Woken::default();
            let timeout = {
                let mut core = self.shared.core.lock();
                // Loop again for work that came in meanwhile, and for a
                // transport a borrower gave back while this thread ran
                // without it (its give-back found the driver awake).
                let more = (self.held.is_some() && core.up && !core.mailbox.is_empty())
                    || self.sup.recycle_ready(&core);
                if core.closing || more || (self.held.is_none() && core.rest.is_some()) {
                    continue;
                }
                let wants_transport = !self.out.is_empty()
                    || (core.up && !core.mailbox.is_empty())
                    || core.rediscover
                    || self.sup.restart_due(now);
                let poke = if self.held.is_none() && wants_transport {
                    core.ask_reclaim()
                } else {
                    Poke::Nobody
                };
                self.shared.poke(poke);
                if let Some(mut t) = self.held.take() {
                    if self.out.is_empty() {
                        t.settle();
                        core.rest = Some(t);
                        core.rest_since = Instant::now();
                    } else {
                        // The DEALER refused (no peer yet): wait for one below.
                        self.held = Some(t);
                    }
                }
                core.parked = true;
                poll_timeout_ms(self.sup.next_timer(&core), Instant::now())
            };
            self.sleep(timeout, &mut woken);
        }
    }

    /// Counts a stall when the transport, back after a rest of `STALL` or
    /// more, holds messages although its descriptors did not wake the
    /// driver: they waited with nobody driving. Read before anything is
    /// sent, so no answer to this turn's own sends is taken for one.
    fn stall_probe(&mut self, woken: &Woken, now: Instant) {
        let (Some(t), Some(since)) = (&mut self.held, woken.rested_since) else {
            return;
        };
        if woken.by_transport || now.saturating_duration_since(since) < STALL {
            return;
        }
        if self.shared.receive(t, &mut self.batch) > 0 {
            self.shared.stats.stalls.fetch_add(1, Ordering::Relaxed);
            log::emit(
                Level::Warn,
                "stall",
                "a reply waited in the transport with nobody driving it",
                &[],
            );
        }
    }

    /// Sleeps until woken, a descriptor is ready or `timeout_ms` passes.
    fn sleep(&mut self, timeout_ms: i64, woken: &mut Woken) {
        let s = &self.shared;
        let exit_fd = self.sup.exit_fd();
        if let Some(t) = &mut self.held {
            // Waiting for a peer to send to: let libzmq watch for it, and
            // the private link beside it, where a worker of ours says hello.
            let (fd, events) = match t.poll_items() {
                [first, _] if t.is_direct() => first,
                [_, second] => second,
            };
            let mut items = vec![
                t.socket.as_poll_item(zmq::POLLIN | zmq::POLLOUT),
                zmq::PollItem::from_fd(s.wake.fd(), zmq::POLLIN),
            ];
            // Where the stream's and the exit descriptor's items are, if any.
            let mut at = |fd: std::os::fd::RawFd, events: zmq::PollEvents| {
                (fd >= 0).then(|| {
                    items.push(zmq::PollItem::from_fd(fd, events));
                    items.len() - 1
                })
            };
            let mut stream_events = zmq::POLLIN;
            if events & libc::POLLOUT != 0 {
                stream_events |= zmq::POLLOUT;
            }
            let stream_at = at(fd, stream_events);
            let exit_at = at(exit_fd.unwrap_or(-1), zmq::POLLIN);
            if zmq::poll(&mut items, timeout_ms).is_ok() {
                let ready =
                    |i: Option<usize>| i.is_some_and(|i| items[i].get_revents().bits() != 0);
                woken.by_transport = items[0].is_readable() || ready(stream_at);
                woken.exited = ready(exit_at);
                if items[1].is_readable() {
                    s.wake.drain();
                }
            }
            return;
        }
        let mut ready = [0; 8];
        let n = s.set.wait(&mut ready, timeout_ms);
        for &fd in &ready[..n] {
            if fd == s.wake.fd() {
                s.wake.drain();
            } else if Some(fd) == exit_fd {
                woken.exited = true;
            } else {
                woken.by_transport = true;
                woken.by_dealer |= fd == self.dealer_fd;
            }
        }
    }
}
