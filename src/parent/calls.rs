//! The call table: calls in flight by id, their deadlines, and how each
//! one completes.
//!
//! Every call is one submission with one sink (nng's aio shape): a blocked
//! caller's [`Slot`], a callback, or a queue (a callback of the C API's
//! queue). A blocking call is a submission plus a wait on its slot. A call
//! leaves the table exactly once — by its reply, its deadline, the
//! worker's exit or the parent's close — and whoever removes it delivers
//! it, outside the parent's lock; so each completion runs exactly once.

use crate::error::{Error, ErrorKind, Result};
use crate::frame::Frame;
use crate::ids::{self, IdText};
use crate::sync::{Condvar, Mutex};
use crate::text::ShortStr;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NIL: &[u8] = &[0xc0];

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

    pub(super) fn nil() -> Reply {
        Reply {
            msg: None,
            range: 0..0,
        }
    }

    /// The value at `range` of `msg`.
    pub(super) fn within(msg: Frame, range: Range<usize>) -> Reply {
        Reply {
            msg: Some(msg),
            range,
        }
    }
}

pub type Outcome = Result<Reply>;

/// What runs when an async call ends: on the thread that completes it (the
/// parent's driver thread, or a thread whose own call finds the parent
/// closed), so it must not block.
pub enum Done {
    Callback(Box<dyn FnOnce(Outcome) + Send>),
    /// A plain function and two words of context that it does not own:
    /// no allocation per call (the C API's callback and user data).
    Plain(fn(usize, usize, Outcome), usize, usize),
}

/// A blocked caller's mailbox for its outcome.
#[derive(Default)]
pub(super) struct Slot {
    outcome: Mutex<Option<Outcome>>,
    cv: Condvar,
}

impl Slot {
    fn put(&self, outcome: Outcome) {
        *self.outcome.lock() = Some(outcome);
        self.cv.notify_one();
    }

    pub(super) fn is_done(&self) -> bool {
        self.outcome.lock().is_some()
    }

    /// Blocks until the outcome is in, and takes it.
    pub(super) fn wait(&self) -> Outcome {
        let mut o = self.outcome.lock();
        loop {
            if let Some(outcome) = o.take() {
                return outcome;
            }
            o = self.cv.wait(o);
        }
    }
}

/// A stream's items as they arrive and how it ended, for its consumer
/// (see `Stream`). It holds at most the credit the consumer granted.
#[derive(Default)]
pub(super) struct StreamSink {
    state: Mutex<SinkState>,
    cv: Condvar,
}

#[derive(Default)]
pub(super) struct SinkState {
    pub(super) items: VecDeque<Reply>,
    /// The handler's answer: the stream's end (its final value) or its error.
    pub(super) end: Option<Outcome>,
}

impl StreamSink {
    pub(super) fn push(&self, item: Reply) {
        self.state.lock().items.push_back(item);
        self.cv.notify_one();
    }

    fn end(&self, outcome: Outcome) {
        self.state.lock().end = Some(outcome);
        self.cv.notify_one();
    }

    /// Waits until an item or the end is there, or `deadline` passes;
    /// the state then, locked.
    pub(super) fn wait(&self, deadline: Option<Instant>) -> crate::sync::MutexGuard<'_, SinkState> {
        let mut state = self.state.lock();
        while state.items.is_empty() && state.end.is_none() {
            match deadline {
                Some(d) => {
                    let (s, timed_out) = self.cv.wait_until(state, d);
                    state = s;
                    if timed_out {
                        break;
                    }
                }
                None => state = self.cv.wait(state),
            }
        }
        state
    }
}

/// Where a finished call goes.
pub(super) enum Completion {
    Wait(Arc<Slot>),
    Async(Done),
    /// A stream's consumer: items arrive before the end.
    Stream(Arc<StreamSink>),
}

impl Completion {
    fn deliver(self, outcome: Outcome) {
        let run = match self {
            Completion::Wait(slot) => return slot.put(outcome),
            Completion::Stream(sink) => return sink.end(outcome),
            Completion::Async(done) => done,
        };
        // A panicking completion must not take the driver down.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || match run {
            Done::Callback(f) => f(outcome),
            Done::Plain(f, a, b) => f(a, b, outcome),
        }));
    }
}

/// One call in flight.
pub(super) struct Pending {
    /// Named in what is said about the call (a timeout).
    pub(super) function: ShortStr,
    pub(super) timeout: Option<Duration>,
    pub(super) started: Instant,
    /// Admitted by a half-open breaker as its probe.
    pub(super) probe: bool,
    pub(super) completion: Completion,
    /// A stream's latest item or credit: its timeout runs from there.
    pub(super) last_item: Option<Instant>,
    /// A stream's items the worker may still send before it waits for
    /// more credit.
    pub(super) owed: Option<u64>,
    /// Made while its worker is being recycled: it waits for the next one
    /// (see `Core::held`), and the one being recycled does not wait for it.
    pub(super) held: bool,
}

impl Pending {
    /// When the call times out: its timeout after it started, or for a
    /// stream after its latest item or credit, and never while the worker
    /// waits for the consumer to take items (it owes none).
    fn deadline(&self) -> Option<Instant> {
        if self.owed == Some(0) {
            return None;
        }
        let from = self.last_item.unwrap_or(self.started);
        self.timeout.map(|t| from + t)
    }
}

impl Pending {
    /// Hands the outcome to the call's sink.
    pub(super) fn complete(self, outcome: Outcome) {
        self.completion.deliver(outcome);
    }
}

/// Calls that ended, to be delivered once the parent's lock is released.
pub(super) type Finished = Vec<(Pending, Outcome)>;

/// The calls in flight, by id, with their deadlines.
#[derive(Default)]
pub(super) struct Calls {
    pending: HashMap<IdText, Pending, ids::KeyBuildHasher>,
    deadlines: BinaryHeap<Reverse<(Instant, IdText)>>,
    /// How many of `pending` are not held (see [`Pending::held`]).
    unheld: usize,
}

impl Calls {
    pub(super) fn insert(&mut self, id: IdText, pending: Pending) {
        if let Some(t) = pending.timeout {
            self.deadlines.push(Reverse((pending.started + t, id)));
        }
        self.unheld += usize::from(!pending.held);
        if let Some(old) = self.pending.insert(id, pending) {
            self.unheld -= usize::from(!old.held);
        }
        // Deadlines of calls that ended stay in the heap until they pass (a
        // heap cannot remove from the middle): drop them once they are most
        // of it, so a busy parent does not keep every call of the last
        // timeout period (30 s by default) in memory.
        if self.deadlines.len() > 2 * self.pending.len() + 1024 {
            let Calls {
                deadlines, pending, ..
            } = self;
            deadlines.retain(|Reverse((_, id))| pending.contains_key(id));
        }
    }

    pub(super) fn remove(&mut self, id: &IdText) -> Option<Pending> {
        let p = self.pending.remove(id)?;
        self.unheld -= usize::from(!p.held);
        Some(p)
    }

    pub(super) fn contains(&self, id: &IdText) -> bool {
        self.pending.contains_key(id)
    }

    /// How many calls are not held: of a worker being recycled, the calls
    /// it still owes answers to.
    pub(super) fn unheld(&self) -> usize {
        self.unheld
    }

    /// Held call `id` is held no more (it goes to the next worker);
    /// whether it is still in flight.
    pub(super) fn release(&mut self, id: &IdText) -> bool {
        match self.pending.get_mut(id) {
            Some(p) => {
                if std::mem::replace(&mut p.held, false) {
                    self.unheld += 1;
                }
                true
            }
            None => false,
        }
    }

    pub(super) fn get_mut(&mut self, id: &IdText) -> Option<&mut Pending> {
        self.pending.get_mut(id)
    }

    /// A stream's consumer granted `n` more items at `now`: its timeout runs again.
    pub(super) fn grant(&mut self, id: &IdText, n: u64, now: Instant) {
        if let Some(p) = self.pending.get_mut(id) {
            p.owed = p.owed.map(|o| o.saturating_add(n));
            p.last_item = Some(now);
            if let Some(due) = p.deadline() {
                self.deadlines.push(Reverse((due, *id)));
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Ends the calls whose deadline passed, adding their ids to
    /// `expired`; whether any did.
    pub(super) fn expire(
        &mut self,
        now: Instant,
        finished: &mut Finished,
        expired: &mut Vec<IdText>,
    ) -> bool {
        let before = finished.len();
        while let Some(Reverse((t, id))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            match self.pending.get(&id).map(Pending::deadline) {
                // A stream waiting for its consumer: `renew` puts it back.
                Some(None) => continue,
                // A stream whose items moved its deadline: look again then.
                Some(Some(due)) if due > now => {
                    self.deadlines.push(Reverse((due, id)));
                    continue;
                }
                _ => {}
            }
            if let Some(p) = self.remove(&id) {
                let ms = p.timeout.map_or(0, |t| t.as_millis());
                let e = Error::new(
                    ErrorKind::Timeout,
                    format!("call to '{}' timed out after {ms} ms", p.function.as_str()),
                );
                finished.push((p, Err(e)));
                expired.push(id);
            }
        }
        finished.len() > before
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((t, _))| *t)
    }

    /// Ends every call with `e`.
    pub(super) fn fail_all(&mut self, e: &Error, finished: &mut Finished) {
        self.deadlines.clear();
        self.unheld = 0;
        finished.extend(self.pending.drain().map(|(_, p)| (p, Err(e.clone()))));
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
pub(super) fn in_batch(deliver: impl FnOnce()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn pending(timeout_ms: Option<u64>, started: Instant) -> (Pending, Arc<Slot>) {
        let slot = Arc::new(Slot::default());
        let p = Pending {
            function: ShortStr::new("f"),
            timeout: timeout_ms.map(Duration::from_millis),
            started,
            probe: false,
            completion: Completion::Wait(Arc::clone(&slot)),
            last_item: None,
            owed: None,
            held: false,
        };
        (p, slot)
    }

    #[test]
    fn a_call_leaves_the_table_once_whatever_ends_it_first() {
        let ids = crate::ids::IdGen::new();
        let mut calls = Calls::default();
        let t0 = Instant::now();
        let (a, b, c) = (ids.next(), ids.next(), ids.next());
        let (pa, sa) = pending(Some(10), t0);
        let (pb, _sb) = pending(Some(20), t0);
        let (pc, sc) = pending(None, t0);
        calls.insert(a, pa);
        calls.insert(b, pb);
        calls.insert(c, pc);
        assert_eq!(calls.next_deadline(), Some(t0 + Duration::from_millis(10)));
        // b answered before its deadline: its deadline later finds nothing.
        assert!(calls.remove(&b).is_some());
        let mut finished = Vec::new();
        let mut expired = Vec::new();
        assert!(calls.expire(t0 + Duration::from_millis(25), &mut finished, &mut expired));
        assert_eq!(finished.len(), 1, "only a timed out");
        assert_eq!(expired, [a]);
        for (p, o) in finished.drain(..) {
            p.complete(o);
        }
        let e = sa.wait().err().expect("a timed out");
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(e.message.contains("'f' timed out after 10 ms"), "{e}");
        assert!(
            calls.remove(&a).is_none(),
            "a reply after the deadline finds nothing"
        );
        calls.fail_all(&Error::closed(), &mut finished);
        assert_eq!(finished.len(), 1);
        for (p, o) in finished.drain(..) {
            p.complete(o);
        }
        assert_eq!(sc.wait().err().map(|e| e.kind), Some(ErrorKind::Closed));
        assert!(calls.is_empty());
        assert_eq!(calls.next_deadline(), None);
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
