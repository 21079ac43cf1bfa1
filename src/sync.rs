//! The crate's locks: std's futex-based ones, without poisoning.
//!
//! As with parking_lot's locks, which the crate used before, a panic while
//! holding one (a handler's panic is caught and answered as an error) does
//! not poison it: the next thread takes the lock and the data as they were
//! left.
//!
//! Why std's mutex rather than parking_lot's:
//! with a producer thread queueing calls while another thread held the
//! parent's lock, parking_lot's waiters spun through `sched_yield` and
//! parked, and a run of 82 000 pipelined calls made 1–2 k yields, 26–60 k
//! futex calls and 45–70 k context switches; with std's (which spins briefly,
//! then sleeps on the lock word) none, 22–33 k and 30–42 k, on about a fifth
//! less CPU (measured when the crate moved to these locks; the figures
//! are in that commit's message).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LockResult, PoisonError};
use std::time::Instant;

pub use std::sync::{MutexGuard, RwLockReadGuard, RwLockWriteGuard};

fn unpoisoned<G>(r: LockResult<G>) -> G {
    r.unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
pub struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Mutex(std::sync::Mutex::new(value))
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        unpoisoned(self.0.lock())
    }

    pub fn get_mut(&mut self) -> &mut T {
        unpoisoned(self.0.get_mut())
    }
}

/// std's condition variable, which makes a system call on every notify;
/// this one skips it when nobody waits, as most notifies on the call path
/// find (a completion queue's taker that is busy, a handler pool with
/// work). Sound because every waiter's condition changes only under the
/// mutex it waits with: a waiter counts itself before `wait` releases that
/// mutex, so a notifier that changed the condition under it sees the count.
#[derive(Default)]
pub struct Condvar {
    cv: std::sync::Condvar,
    waiters: AtomicUsize,
}

impl Condvar {
    pub const fn new() -> Self {
        Condvar {
            cv: std::sync::Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let guard = unpoisoned(self.cv.wait(guard));
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    /// Waits until notified or `deadline`; true when the deadline passed.
    /// A deadline already passed still lets go of the mutex for a moment (a
    /// loop that waits again lets other threads in), at the cost of a system
    /// call: a caller that only polls checks the deadline first.
    pub fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> (MutexGuard<'a, T>, bool) {
        let wait = deadline.saturating_duration_since(Instant::now());
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let (guard, result) = unpoisoned(self.cv.wait_timeout(guard, wait));
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        (guard, result.timed_out())
    }

    pub fn notify_one(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.cv.notify_one();
        }
    }

    pub fn notify_all(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.cv.notify_all();
        }
    }
}

#[derive(Default)]
pub struct RwLock<T>(std::sync::RwLock<T>);

impl<T> RwLock<T> {
    pub const fn new(value: T) -> Self {
        RwLock(std::sync::RwLock::new(value))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        unpoisoned(self.0.read())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        unpoisoned(self.0.write())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_waiter_is_woken_and_a_notify_without_one_is_not_kept() {
        let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
        // Nobody waits: nothing is kept for a later waiter, which times out.
        pair.1.notify_one();
        let (g, timed_out) = pair
            .1
            .wait_until(pair.0.lock(), Instant::now() + Duration::from_millis(20));
        assert!(timed_out);
        assert_eq!(*g, 0);
        drop(g);
        let p = Arc::clone(&pair);
        let waiter = std::thread::spawn(move || {
            let mut g = p.0.lock();
            while *g == 0 {
                g = p.1.wait(g);
            }
            *g
        });
        std::thread::sleep(Duration::from_millis(20));
        *pair.0.lock() = 7;
        pair.1.notify_all();
        assert_eq!(waiter.join().unwrap(), 7);
        // A deadline already passed returns at once, timed out.
        let (g, timed_out) = pair.1.wait_until(pair.0.lock(), Instant::now());
        assert_eq!(*g, 7);
        assert!(timed_out);
    }

    #[test]
    fn a_panic_while_holding_a_lock_does_not_poison_it() {
        let m = Arc::new(Mutex::new(vec![1]));
        let m2 = Arc::clone(&m);
        let r = std::thread::spawn(move || {
            let mut g = m2.lock();
            g.push(2);
            panic!("handler failed");
        })
        .join();
        assert!(r.is_err());
        assert_eq!(*m.lock(), vec![1, 2]);
    }
}
