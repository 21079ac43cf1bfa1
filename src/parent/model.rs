//! An exhaustive check of the driver/borrow protocol of `driver.rs` on a
//! small model: the driver, one thread making async submissions, three
//! threads making blocking calls (each may borrow), and the worker, which
//! answers what was sent in any order and at any moment — except the call
//! of the first blocking thread, which it never answers (a handler that
//! hangs: other calls must not wait for it). Every
//! interleaving of their steps is explored; each step is one critical
//! section or one action on the transport, as in the code.
//!
//! Checked in every reachable state: exactly one of {driver, core at rest,
//! one borrower} holds the transport, and its descriptors are in the
//! driver's poll set exactly when nobody borrows it. Checked in every
//! state where nobody can move (the driver and the borrowers asleep, the
//! worker with nothing left to answer): no work is left — nothing in the
//! mailbox, nothing sent and unread, every blocking call answered. A lost
//! wake-up shows up as such a state. Timers are left out on purpose:
//! liveness must not depend on them.

use std::collections::{HashSet, VecDeque};

/// A blocking call's own call, as it travels.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Own {
    None,
    /// Submitted: in the mailbox.
    Queued,
    /// Taken by the driver, not yet sent.
    Out,
    Flight,
    /// Arrived, unread.
    Ready,
    Done,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Borrower {
    pc: u8,
    runs_left: u8,
    holds: bool,
    own: Own,
    /// Its call is never answered.
    hangs: bool,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct State {
    // The core, behind the lock.
    rest: bool,
    borrowed: bool,
    parked: bool,
    reclaim_asked: bool,
    mailbox: u8,
    // Descriptors.
    wake: bool,
    reclaim: bool,
    registered: bool,
    // The transport: async calls sent and not answered, answered and unread.
    flight: u8,
    ready: u8,
    // The driver.
    d_pc: u8,
    d_held: bool,
    d_out: u8,
    // The async submitter.
    subs_left: u8,
    b: [Borrower; 3],
}

/// Which rule of the protocol to leave out (to show the check finds it).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Variant {
    Correct,
    /// A submission during a borrow does not ask for the transport back.
    NoReclaim,
    /// The driver parks without looking again at the mailbox and at a
    /// transport given back while it ran.
    NoRecheck,
    /// A borrower gives the transport back without waking the driver.
    SilentGiveBack,
}

impl State {
    fn start() -> State {
        let b = |runs_left, hangs| Borrower {
            pc: 0,
            runs_left,
            holds: false,
            own: Own::None,
            hangs,
        };
        State {
            rest: false,
            borrowed: false,
            parked: false,
            reclaim_asked: false,
            mailbox: 0,
            wake: false,
            reclaim: false,
            registered: true,
            flight: 0,
            ready: 0,
            d_pc: 0,
            d_held: true,
            d_out: 0,
            subs_left: 2,
            b: [b(1, true), b(2, false), b(1, false)],
        }
    }

    fn readable(&self) -> bool {
        self.ready > 0 || self.b.iter().any(|b| b.own == Own::Ready)
    }

    fn calls_left(&self) -> bool {
        self.mailbox + self.d_out + self.flight + self.ready > 0
            || self
                .b
                .iter()
                .any(|b| !matches!(b.own, Own::None | Own::Done))
    }

    /// Work left but the hanging call, once it is on its way.
    fn work_left(&self) -> bool {
        let waiting = |b: &Borrower| {
            if b.hangs && b.own == Own::Flight {
                return false;
            }
            b.runs_left > 0
        };
        self.mailbox + self.d_out + self.flight + self.ready > 0
            || self.subs_left > 0
            || self.b.iter().any(waiting)
    }

    /// `Core::poke` after work was added.
    fn poke(&mut self, v: Variant) {
        if self.borrowed {
            if v != Variant::NoReclaim && !self.reclaim_asked {
                self.reclaim_asked = true;
                self.reclaim = true;
            }
        } else if self.parked {
            self.parked = false;
            self.wake = true;
        }
    }

    /// What the holder's `receive` does: every arrived message is routed.
    fn receive(&mut self) {
        self.ready = 0;
        for b in &mut self.b {
            if b.own == Own::Ready {
                b.own = Own::Done;
            }
        }
    }

    /// Every state one step of one actor leads to.
    fn next(&self, v: Variant) -> Vec<State> {
        let mut out = Vec::new();
        self.driver_step(v, &mut out);
        if self.subs_left > 0 {
            let mut s = self.clone();
            s.subs_left -= 1;
            s.mailbox += 1;
            s.poke(v);
            out.push(s);
        }
        for i in 0..self.b.len() {
            self.borrower_step(i, v, &mut out);
        }
        // The worker answers one call.
        if self.flight > 0 {
            let mut s = self.clone();
            s.flight -= 1;
            s.ready += 1;
            out.push(s);
        }
        for i in 0..self.b.len() {
            if self.b[i].own == Own::Flight && !self.b[i].hangs {
                let mut s = self.clone();
                s.b[i].own = Own::Ready;
                out.push(s);
            }
        }
        out
    }

    fn driver_step(&self, v: Variant, out: &mut Vec<State>) {
        let mut s = self.clone();
        match self.d_pc {
            // The top of the loop (one critical section): take the
            // transport back from rest, and the mailbox.
            0 => {
                s.parked = false;
                if !s.d_held && s.rest {
                    s.rest = false;
                    s.d_held = true;
                }
                if s.d_held {
                    s.d_out += s.mailbox;
                    s.mailbox = 0;
                    for b in &mut s.b {
                        if b.own == Own::Queued {
                            b.own = Own::Out;
                        }
                    }
                }
                s.d_pc = 1;
            }
            // Send what was taken.
            1 => {
                if s.d_held {
                    s.flight += s.d_out;
                    s.d_out = 0;
                    for b in &mut s.b {
                        if b.own == Own::Out {
                            b.own = Own::Flight;
                        }
                    }
                }
                s.d_pc = 2;
            }
            // Read what arrived.
            2 => {
                if s.d_held {
                    s.receive();
                }
                s.d_pc = 3;
            }
            // Park (one critical section).
            3 => {
                let recheck = v != Variant::NoRecheck;
                if recheck && ((s.d_held && s.mailbox > 0) || (!s.d_held && s.rest)) {
                    // Work came in, or a borrower gave the transport back
                    // while the driver ran without it.
                    s.d_pc = 0;
                } else {
                    if !s.d_held && s.mailbox > 0 && s.borrowed && !s.reclaim_asked {
                        s.reclaim_asked = true;
                        s.reclaim = true;
                    }
                    if s.d_held {
                        s.d_held = false;
                        s.rest = true;
                    }
                    s.parked = true;
                    s.d_pc = 4;
                }
            }
            // Asleep in epoll: the wake descriptor, or the transport's while registered.
            _ => {
                if !(s.wake || (s.registered && s.readable())) {
                    return;
                }
                s.wake = false;
                s.d_pc = 0;
            }
        }
        out.push(s);
    }

    fn borrower_step(&self, i: usize, v: Variant, out: &mut Vec<State>) {
        let mut s = self.clone();
        let b = &self.b[i];
        match b.pc {
            // `run_sync`: borrow when at rest with nothing in flight, else submit.
            0 => {
                if b.runs_left == 0 {
                    return;
                }
                if s.rest && !s.borrowed && !s.calls_left() {
                    s.rest = false;
                    s.borrowed = true;
                    s.registered = false;
                    s.b[i].holds = true;
                    s.b[i].pc = 1;
                } else {
                    s.mailbox += 1;
                    s.b[i].own = Own::Queued;
                    s.poke(v);
                    s.b[i].pc = 5;
                }
            }
            // `lend`: send its own call.
            1 => {
                s.b[i].own = Own::Flight;
                s.b[i].pc = 2;
            }
            // Read, then done or poll.
            2 => {
                s.receive();
                s.b[i].pc = if s.b[i].own == Own::Done { 4 } else { 3 };
            }
            // Polling the transport and `reclaim`.
            3 => {
                if s.reclaim {
                    s.b[i].pc = 4;
                } else if s.readable() {
                    s.b[i].pc = 2;
                } else {
                    return;
                }
            }
            // `give_back` (one critical section).
            4 => {
                s.registered = true;
                s.rest = true;
                s.borrowed = false;
                s.b[i].holds = false;
                if s.reclaim_asked {
                    s.reclaim_asked = false;
                    s.reclaim = false;
                }
                if v != Variant::SilentGiveBack && s.calls_left() && s.parked {
                    s.parked = false;
                    s.wake = true;
                }
                s.b[i].pc = 5;
            }
            // Waiting on its slot.
            _ => {
                if s.b[i].own != Own::Done {
                    return;
                }
                s.b[i].own = Own::None;
                s.b[i].runs_left -= 1;
                s.b[i].pc = 0;
            }
        }
        out.push(s);
    }

    /// The invariants of every state.
    fn check(&self) -> Result<(), String> {
        let holders = usize::from(self.d_held)
            + usize::from(self.rest)
            + self.b.iter().filter(|b| b.holds).count();
        if holders != 1 {
            return Err(format!("{holders} holders of the transport"));
        }
        let lent = self.b.iter().any(|b| b.holds);
        if lent != self.borrowed || self.registered == lent {
            return Err("poll registration does not match who holds it".into());
        }
        Ok(())
    }

    /// Nobody can move: then nothing may be left to do.
    fn check_quiescent(&self) -> Result<(), String> {
        if self.work_left() {
            return Err("work left with every thread asleep".into());
        }
        Ok(())
    }
}

/// Explores every interleaving; the first violation found, and how many
/// states were reached.
fn explore(v: Variant) -> (Option<String>, usize) {
    let mut seen = HashSet::new();
    let mut todo = VecDeque::from([State::start()]);
    seen.insert(State::start());
    while let Some(s) = todo.pop_front() {
        if let Err(e) = s.check() {
            return (Some(format!("{e} in {s:?}")), seen.len());
        }
        let next = s.next(v);
        if next.is_empty() {
            if let Err(e) = s.check_quiescent() {
                return (Some(format!("{e} in {s:?}")), seen.len());
            }
        }
        for n in next {
            if seen.insert(n.clone()) {
                todo.push_back(n);
            }
        }
    }
    (None, seen.len())
}

#[test]
fn the_driver_and_borrow_protocol_loses_no_work_in_any_interleaving() {
    let (violation, states) = explore(Variant::Correct);
    assert_eq!(violation, None);
    assert!(
        states > 10_000,
        "only {states} states: the model is too small"
    );
}

#[test]
fn leaving_out_any_rule_of_the_protocol_loses_work() {
    for v in [
        Variant::NoReclaim,
        Variant::NoRecheck,
        Variant::SilentGiveBack,
    ] {
        let (violation, _) = explore(v);
        let violation = violation.unwrap_or_else(|| panic!("{v:?}: no violation found"));
        assert!(violation.contains("work left"), "{v:?}: {violation}");
    }
}
