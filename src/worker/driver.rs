//! The driver: the one thread that owns the worker's transport while it
//! serves. It reads the transport, echoes heartbeats, hands calls to the
//! handler pool (or the pull queue) as submissions, and sends the answers
//! that reach its mailbox. While it serves it runs no handler and waits for
//! none, so nothing a handler does keeps it from the socket; it sleeps only
//! in poll(2), on the transport and the mailbox's wake descriptor at once.
//! Once serving ends it waits a bounded grace for the answers still owed.

use super::mailbox::Outgoing;
use super::pool::Pool;
use super::reply::{error_payload, CallState, Incoming, ReplyHandle, Submission};
use super::{signals, Route, Shared};
use crate::codec::{self, Encoder, ErrorKindName, Kind};
use crate::error::Result;
use crate::frame::{self, Frame};
use crate::link::{self, Recv, Stream};
use crate::log::{self, Level};
use crate::text::ShortStr;
use crate::wake;
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Calls from this size on are shared with their reply, so that a result
/// lying in the call (an echo, a slice of the arguments) is sent from there.
pub(super) const IN_PLACE_MIN: usize = 64 * 1024;
/// Messages read in one go before the mailbox is looked at again.
const RECV_BATCH: usize = 512;
/// Bytes of replies the link queues before writing them mid-burst.
const FLUSH_AT: usize = 64 * 1024;
/// How long serving waits, once stopped, for running handlers to answer.
const STOP_GRACE: Duration = Duration::from_millis(1000);
/// How long the last answers may take to leave on the link (the ROUTER's
/// linger is the same).
const LINGER: Duration = Duration::from_millis(1000);

/// How the worker reaches its parents: a ROUTER socket, or the private
/// link from the parent that spawned it (see [`crate::link`]).
pub(super) enum Conn {
    Zmq(zmq::Socket),
    Link(Stream),
}

impl Conn {
    /// The descriptor to poll: `ZMQ_FD` (see [`wake::wait_ready`]) or the stream.
    fn fd(&self) -> Result<RawFd> {
        match self {
            Conn::Zmq(socket) => Ok(socket.get_fd()?),
            Conn::Link(stream) => Ok(stream.fd()),
        }
    }

    /// Writes what the link has queued; false when the parent is gone.
    fn flush(&mut self) -> bool {
        match self {
            Conn::Zmq(_) => true,
            Conn::Link(stream) => stream.flush().is_ok(),
        }
    }

    /// Whether the link has bytes it could not write yet.
    fn wants_write(&self) -> bool {
        matches!(self, Conn::Link(stream) if stream.wants_write())
    }
}

/// Why serving ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// `Worker::stop` or a signal.
    Stopped,
    /// A parent's `shutdown`: that parent is leaving.
    Shutdown,
    /// The parent closed the private link.
    LinkClosed,
}

/// What reading the transport led to.
enum Received {
    /// Everything waiting was handled; the last socket call was a recv that
    /// found nothing.
    Drained,
    /// A full batch was handled: more may be waiting.
    Busy,
    End(End),
}

struct Driver<'a> {
    shared: &'a Arc<Shared>,
    conn: &'a mut Conn,
    pool: &'a Pool,
    /// `conn`'s descriptor, read once.
    fd: RawFd,
    /// The signal generation when serving started.
    generation: u64,
    /// The second answer vector (see [`Driver::deliver`]).
    spare: Vec<Outgoing>,
    /// The largest call accepted (the worker's `max_message_size`).
    max: u64,
    /// Calls handed out and not answered yet, by id: what a `cancel` finds.
    /// Keyed by ids that parents choose, so hashed with random keys.
    open: HashMap<ShortStr, Arc<CallState>>,
}

/// Serves on `conn` with a pool of `concurrency` handler threads until
/// stopped; this thread is the driver.
pub(super) fn serve(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    concurrency: usize,
    generation: u64,
    max: u64,
) -> Result<()> {
    let fd = conn.fd()?;
    let pool = Pool::start(concurrency)?;
    let mut driver = Driver {
        shared,
        conn,
        pool: &pool,
        fd,
        generation,
        spare: Vec::new(),
        max,
        open: HashMap::new(),
    };
    let end = driver.run();
    driver.finish(end);
    Ok(())
}

impl Driver<'_> {
    fn run(&mut self) -> End {
        let mailbox = &self.shared.mailbox;
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return End::Stopped;
            }
            if signals::generation() != self.generation {
                log::emit(
                    Level::Info,
                    "worker_signal",
                    "worker stopping on a signal",
                    &[],
                );
                return End::Stopped;
            }
            // Calls may already be waiting (pipelined callers): read before
            // sleeping, and sleep only once a recv has found nothing.
            let drained = match self.receive() {
                Received::Drained => true,
                Received::Busy => false,
                Received::End(end) => return end,
            };
            // Sending is a socket call too: read again before sleeping.
            if self.deliver() || !drained {
                continue;
            }
            // Answers queued on the link go out in one write, before sleeping.
            if !self.conn.flush() {
                continue; // the next read sees the parent gone
            }
            if mailbox.park().is_none() {
                continue; // answers arrived since `deliver`
            }
            let events = if self.conn.wants_write() {
                libc::POLLIN | libc::POLLOUT
            } else {
                libc::POLLIN
            };
            // The last socket call was receive()'s failed recv.
            let [_, woken] =
                wake::wait_ready([(self.fd, events), (mailbox.wake_fd(), libc::POLLIN)], -1);
            mailbox.unpark(woken);
        }
    }

    /// Stops taking calls and gives those in progress (handlers, pulled
    /// calls, deferred answers) up to `STOP_GRACE` to answer, sending what
    /// they answer; then lets the link write its last bytes.
    fn finish(&mut self, end: End) {
        // Calls nobody started are answered with an error (ReplyHandle's
        // drop) rather than left to time out.
        self.pool.close();
        drop(std::mem::take(&mut self.shared.pull.lock().queue));
        // After a shutdown or on a closed link nobody waits for answers.
        let grace = match end {
            End::Stopped => STOP_GRACE,
            End::Shutdown | End::LinkClosed => Duration::ZERO,
        };
        let deadline = Instant::now() + grace;
        let mailbox = &self.shared.mailbox;
        loop {
            self.deliver();
            let _ = self.conn.flush();
            let Some(owed) = mailbox.park() else { continue };
            let left = deadline.saturating_duration_since(Instant::now());
            if owed == 0 || left.is_zero() {
                mailbox.unpark(false);
                break;
            }
            let link = if self.conn.wants_write() { self.fd } else { -1 };
            let [_, woken] = wake::wait_ready(
                [(link, libc::POLLOUT), (mailbox.wake_fd(), libc::POLLIN)],
                ceil_ms(left),
            );
            mailbox.unpark(woken);
        }
        let deadline = Instant::now() + LINGER;
        while self.conn.flush() && self.conn.wants_write() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            wake::wait_ready([(self.fd, libc::POLLOUT)], ceil_ms(left));
        }
    }

    /// Sends every answer posted so far; whether there was any.
    fn deliver(&mut self) -> bool {
        let mut out = std::mem::take(&mut self.spare);
        if !self.shared.mailbox.take(&mut out) {
            self.spare = out;
            return false;
        }
        for o in out.drain(..) {
            if let Some(call) = o.settles {
                let id = call.id.as_str();
                if self.open.get(id).is_some_and(|c| Arc::ptr_eq(c, &call)) {
                    self.open.remove(id);
                }
            }
            // A parent that went away is simply not answered.
            self.send(o.identity, o.payload);
        }
        self.spare = out;
        true
    }

    /// Sends `[identity, empty, payload]`; the routing frame goes back as
    /// it came. On the link the payload is queued for the next flush.
    fn send(&mut self, identity: Frame, payload: Frame) {
        let socket = match self.conn {
            Conn::Zmq(socket) => socket,
            Conn::Link(stream) => {
                stream.send(payload);
                // A long burst of replies goes out before the burst ends.
                if stream.queued() >= FLUSH_AT {
                    let _ = stream.flush();
                }
                return;
            }
        };
        if frame::send(socket, identity, zmq::SNDMORE).is_err()
            || frame::send(socket, Frame::empty(), zmq::SNDMORE).is_err()
        {
            return;
        }
        // Once the first frames are accepted the last is too.
        let _ = frame::send(socket, payload, 0);
    }

    /// Answers a call that cannot run with an error.
    fn refuse(&mut self, identity: Frame, id: Option<&str>, text: &str) {
        self.refuse_as(identity, id, text, None);
    }

    fn refuse_as(
        &mut self,
        identity: Frame,
        id: Option<&str>,
        text: &str,
        kind: Option<ErrorKindName>,
    ) {
        let stats = &self.shared.stats;
        stats.errors_sent.fetch_add(1, Ordering::Relaxed);
        self.send(identity, error_payload(id, text, kind));
    }

    fn dropped_malformed(&self) {
        let stats = &self.shared.stats;
        stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Handles what is readable.
    fn receive(&mut self) -> Received {
        if let Conn::Link(_) = self.conn {
            return self.receive_link();
        }
        for _ in 0..RECV_BATCH {
            let Some(identity) = self.recv_zmq() else {
                return Received::Drained;
            };
            if !identity.more() {
                self.dropped_malformed();
                continue;
            }
            // Expect [empty, payload]; anything else is counted and dropped.
            match self.rest() {
                // libzmq reads messages up to a ceiling above the limit
                // (see `zmq_max_message_size`): the limit is held here.
                Some([empty, payload]) if empty.is_empty() && payload.len() as u64 > self.max => {
                    let head = &payload.bytes()[..payload.len().min(link::HEAD)];
                    self.oversized(identity, payload.len() as u64, head);
                }
                Some([empty, payload]) if empty.is_empty() => {
                    if let Some(end) = self.handle(identity, payload) {
                        return Received::End(end);
                    }
                }
                _ => self.dropped_malformed(),
            }
        }
        Received::Busy
    }

    /// The link's messages: payloads alone, one parent, no routing frame.
    fn receive_link(&mut self) -> Received {
        for _ in 0..RECV_BATCH {
            let Conn::Link(stream) = &mut *self.conn else {
                return Received::Drained;
            };
            match stream.recv() {
                Recv::Message(payload) => {
                    if let Some(end) = self.handle(Frame::empty(), payload) {
                        return Received::End(end);
                    }
                }
                Recv::Oversized { len, head } => self.oversized(Frame::empty(), len, &head),
                Recv::Empty => return Received::Drained,
                Recv::Closed => {
                    log::emit(
                        Level::Info,
                        "worker_link_closed",
                        "the parent closed the private link; worker stopping",
                        &[],
                    );
                    return Received::End(End::LinkClosed);
                }
            }
        }
        Received::Busy
    }

    fn recv_zmq(&mut self) -> Option<Frame> {
        match self.conn {
            Conn::Zmq(socket) => Frame::recv(socket, zmq::DONTWAIT),
            Conn::Link(_) => None,
        }
    }

    /// The remaining two frames of a message; `None` when it has another
    /// number of them (what is left of it is drained).
    fn rest(&mut self) -> Option<[Frame; 2]> {
        let first = self.recv_zmq()?;
        if !first.more() {
            return None;
        }
        let second = self.recv_zmq()?;
        let mut more = second.more();
        if !more {
            return Some([first, second]);
        }
        while more {
            more = self.recv_zmq().is_some_and(|f| f.more());
        }
        None
    }

    /// A message over the maximum message size, known by its first bytes:
    /// a call is answered with an error that says so (its parent would
    /// otherwise wait for its timeout); anything else is counted and
    /// dropped, as a malformed message is. A call to another namespace
    /// gets no answer, as in `handle`, when the namespace is among the
    /// first bytes.
    fn oversized(&mut self, identity: Frame, len: u64, head: &[u8]) {
        let call = codec::peek(head).filter(|m| m.kind == Kind::Call);
        let Some((id, call)) = call.and_then(|m| Some((m.id?, m))) else {
            self.dropped_malformed();
            log::emit(
                Level::Debug,
                "message_dropped",
                &format!(
                    "dropped a message of {len} bytes from a parent, over the maximum \
                     message size of {} bytes",
                    self.max
                ),
                &[],
            );
            return;
        };
        let shared = self.shared;
        if call
            .namespace
            .is_some_and(|ns| ns != shared.namespace.read().as_str())
        {
            shared
                .stats
                .dropped_namespace
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        shared.stats.calls.fetch_add(1, Ordering::Relaxed);
        let to = call
            .function
            .map_or_else(String::new, |f| format!(" to '{f}'"));
        let text = format!(
            "a call of {len} bytes{to} exceeds the worker's maximum message size of {} bytes",
            self.max
        );
        self.refuse(identity, Some(id), &text);
    }

    /// One message from a parent; `Some` when it ends serving.
    fn handle(&mut self, identity: Frame, mut payload: Frame) -> Option<End> {
        let shared = self.shared;
        let bytes = payload.bytes();
        let msg = match codec::decode(bytes, shared.limits) {
            Ok(m) => m,
            Err(e) => {
                self.dropped_malformed();
                log::emit(
                    Level::Debug,
                    "message_dropped",
                    &format!("dropped a payload from a parent: {e}"),
                    &[],
                );
                return None;
            }
        };
        match msg.kind {
            Kind::Heartbeat if !msg.hb_response => {
                shared.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                let ts = msg.hb_timestamp.unwrap_or_else(codec::now_seconds);
                let id = msg.id.unwrap_or("");
                let out =
                    frame::encode(128 + id.len(), |b| Encoder::new(b).heartbeat(id, ts, true));
                self.send(identity, out);
            }
            Kind::Shutdown => return Some(End::Shutdown),
            Kind::Credit => {
                let call = msg.id.and_then(|id| self.open.get(id));
                if let Some(call) = call.filter(|c| c.peer == identity.bytes()) {
                    call.grant(msg.credit.unwrap_or(0));
                }
            }
            Kind::Cancel => {
                let call = msg.id.and_then(|id| self.open.get(id));
                match call.filter(|c| c.peer == identity.bytes()) {
                    Some(call) => {
                        shared.stats.cancels.fetch_add(1, Ordering::Relaxed);
                        call.cancel();
                        // Not started yet: answered now, so its parent does
                        // not wait for a thread to be free (and take the wait
                        // for a handler that ignores the cancel).
                        let call = Arc::clone(call);
                        let queued = self.pool.take_queued(&call).or_else(|| {
                            let mut pull = shared.pull.lock();
                            let at = pull.queue.iter().position(|s| s.reply.is_call(&call))?;
                            pull.queue.remove(at)
                        });
                        if let Some(submission) = queued {
                            drop(submission.unless_void());
                        }
                    }
                    // Answered already, or never run here (a call for another
                    // namespace is dropped unanswered): say so, so that its
                    // parent does not wait for a handler that does not run.
                    None => {
                        if let Some(id) = msg.id {
                            let text = "CancelledError: no such call is running here";
                            let kind = Some(ErrorKindName::Cancelled);
                            self.refuse_as(identity, Some(id), text, kind);
                        }
                    }
                }
            }
            Kind::Call => {
                if msg
                    .namespace
                    .is_some_and(|ns| ns != shared.namespace.read().as_str())
                {
                    let stats = &shared.stats;
                    stats.dropped_namespace.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                shared.stats.calls.fetch_add(1, Ordering::Relaxed);
                let (function, id) = match (msg.function, msg.id) {
                    (Some(function), Some(id)) => (function, id),
                    (None, id) => {
                        self.refuse(identity, id, "message missing 'function' field");
                        return None;
                    }
                    (Some(_), None) => {
                        self.refuse(identity, None, "message missing 'id' field");
                        return None;
                    }
                };
                if function.starts_with('_') {
                    let text = format!("Cannot call private method '{function}'");
                    self.refuse(identity, Some(id), &text);
                    return None;
                }
                let Some(route) = shared.handlers.read().get(function).cloned() else {
                    let text = format!("Function '{function}' not found");
                    let kind = Some(ErrorKindName::NoSuchFunction);
                    self.refuse_as(identity, Some(id), &text, kind);
                    return None;
                };
                let range = msg.args.map_or(0..0, |a| {
                    let start = a.as_ptr() as usize - bytes.as_ptr() as usize;
                    start..start + a.len()
                });
                let call = CallState::new(id, identity.bytes(), msg.stream_credit);
                self.open.insert(ShortStr::new(id), Arc::clone(&call));
                let mut reply = ReplyHandle::new(shared, identity, call, msg.remaining_ms);
                let function = ShortStr::new(function);
                // Only handlers that get their arguments as a pointer (the C
                // API's, and calls taken with `next`) can answer in place.
                if bytes.len() >= IN_PLACE_MIN && !matches!(route, Route::Call(_)) {
                    reply.source = Some(frame::Received::share(&mut payload));
                }
                let submission = Submission {
                    incoming: Incoming {
                        function,
                        args: payload,
                        range,
                    },
                    route,
                    reply,
                };
                if let Route::Pull = submission.route {
                    shared.pull.lock().queue.push_back(submission);
                    shared.pull_cv.notify_one();
                } else {
                    self.pool.submit(submission);
                }
            }
            _ => {}
        }
        None
    }
}

/// A poll timeout that does not round a wait below 1 ms down to none.
fn ceil_ms(d: Duration) -> i64 {
    let ms = d.as_millis() as i64;
    if Duration::from_millis(ms as u64) < d {
        ms + 1
    } else {
        ms
    }
}
