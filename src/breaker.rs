//! The circuit breaker: closed → open after `threshold` consecutive failures;
//! after the cool-down one probe call is let through (half-open); its success
//! closes the breaker, its failure opens it again.
//!
//! The closed state is read with one atomic load on the call path; the mutex
//! is taken only on failures and state changes.

use crate::log::{self, Level};
use crate::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }
}

/// Whether a call may go out, and if so whether it is the half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    Probe,
    No,
}

pub struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    trips: AtomicU32,
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    opened_at: Option<Instant>,
    probe_out: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            state: AtomicU8::new(State::Closed as u8),
            failures: AtomicU32::new(0),
            trips: AtomicU32::new(0),
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(Inner {
                opened_at: None,
                probe_out: false,
            }),
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn trips(&self) -> u32 {
        self.trips.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn admit(&self) -> Admit {
        if self.state() == State::Closed {
            return Admit::Yes;
        }
        let mut inner = self.inner.lock();
        match self.state() {
            State::Closed => Admit::Yes,
            State::Open => {
                let cooled = inner
                    .opened_at
                    .is_some_and(|t| t.elapsed() >= self.cooldown);
                if cooled && !inner.probe_out {
                    inner.probe_out = true;
                    self.set(State::HalfOpen);
                    log::emit(
                        Level::Info,
                        "circuit_half_open",
                        "circuit breaker half-open: letting one probe call through",
                        &[],
                    );
                    Admit::Probe
                } else {
                    Admit::No
                }
            }
            State::HalfOpen => Admit::No,
        }
    }

    fn set(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }

    pub fn success(&self, probe: bool) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if probe || self.state() != State::Closed {
            let mut inner = self.inner.lock();
            if probe {
                inner.probe_out = false;
            }
            if self.state() != State::Closed && (probe || self.state() == State::HalfOpen) {
                inner.opened_at = None;
                self.set(State::Closed);
                log::emit(Level::Info, "circuit_closed", "circuit breaker closed", &[]);
            }
        }
    }

    /// A call that ended saying nothing of the worker's health (cancelled,
    /// or timed out: the worker may just be slow). A probe that ended so
    /// lets the next call be the probe.
    pub fn neither(&self, probe: bool) {
        if probe {
            let mut inner = self.inner.lock();
            inner.probe_out = false;
            if self.state() == State::HalfOpen {
                self.set(State::Open);
            }
        }
    }

    /// Records one failure; `probe` says whether it was the half-open probe.
    pub fn failure(&self, probe: bool, why: &str) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut inner = self.inner.lock();
        if probe {
            inner.probe_out = false;
        }
        let reopen = probe && self.state() == State::HalfOpen;
        if reopen || (self.state() == State::Closed && n >= self.threshold) {
            self.trip(&mut inner, why);
        }
    }

    /// Opens the breaker now (e.g. when a worker can no longer be restarted).
    pub fn force_open(&self, why: &str) {
        let mut inner = self.inner.lock();
        if self.state() != State::Open {
            self.trip(&mut inner, why);
        }
    }

    fn trip(&self, inner: &mut Inner, why: &str) {
        inner.opened_at = Some(Instant::now());
        self.set(State::Open);
        self.trips.fetch_add(1, Ordering::Relaxed);
        log::emit(
            Level::Warn,
            "circuit_open",
            &format!("circuit breaker open: {why}"),
            &[("failures", self.failures().into())],
        );
    }

    /// Time left before an open breaker lets a probe through.
    pub fn retry_in(&self) -> Duration {
        let inner = self.inner.lock();
        inner.opened_at.map_or(Duration::ZERO, |t| {
            self.cooldown.saturating_sub(t.elapsed())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let b = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert_eq!(b.admit(), Admit::Yes);
            b.failure(false, "t");
        }
        assert_eq!(b.state(), State::Closed);
        b.failure(false, "t");
        assert_eq!((b.state(), b.trips()), (State::Open, 1));
        assert_eq!(b.admit(), Admit::No);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.admit(), Admit::No, "only one probe at a time");
        b.failure(true, "probe failed");
        assert_eq!((b.state(), b.trips()), (State::Open, 2));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Probe);
        b.success(true);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn a_probe_that_says_nothing_lets_the_next_call_probe() {
        let b = Breaker::new(1, Duration::from_millis(30));
        b.failure(false, "t");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(), Admit::Probe);
        b.neither(true);
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.admit(), Admit::Probe, "the cool-down is over already");
        assert_eq!(b.trips(), 1, "not opened again");
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(1));
        b.failure(false, "t");
        b.success(false);
        b.failure(false, "t");
        assert_eq!(b.state(), State::Closed);
    }
}
