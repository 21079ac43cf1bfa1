//! The driver's mailbox, in libzmq's shape: a queue of answers, a `parked`
//! flag and a wake descriptor (an eventfd, see [`crate::wake`]).
//!
//! Invariant: the driver raises `parked` under the queue's lock, and only
//! when the queue is empty, right before it sleeps in poll(2) on the wake
//! descriptor (among others); a poster lowers it under the same lock and
//! writes the descriptor exactly when it found it raised. So an answer
//! posted while the driver sleeps wakes it once, and one posted while it
//! runs costs no system call: the driver takes the queue before it parks.
//!
//! The mailbox also counts the calls handed out and not answered yet, in
//! the same lock as the queue, so that "nothing is queued and nothing is
//! owed" is one fact the driver can wait for when serving ends.

use super::reply::CallState;
use crate::frame::Frame;
use crate::sync::Mutex;
use crate::wake::Wake;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

/// An answer on its way out.
pub(super) struct Outgoing {
    /// The caller's routing frame, as it arrived.
    pub identity: Frame,
    pub payload: Frame,
    /// The call this answers, which its cancel no longer reaches once sent.
    pub settles: Option<Arc<CallState>>,
}

struct Inbox {
    queue: Vec<Outgoing>,
    parked: bool,
    /// Calls handed out (to the pool or to `next`) and not answered yet.
    unanswered: usize,
}

pub(super) struct Mailbox {
    inbox: Mutex<Inbox>,
    wake: Wake,
}

impl Mailbox {
    pub fn new() -> io::Result<Mailbox> {
        Ok(Mailbox {
            inbox: Mutex::new(Inbox {
                queue: Vec::new(),
                parked: false,
                unanswered: 0,
            }),
            wake: Wake::new()?,
        })
    }

    /// Driver: a call was handed out; its answer is owed.
    pub fn owe(&self) {
        self.inbox.lock().unanswered += 1;
    }

    /// Any thread: queues the answer to an owed call (`settles`), or a
    /// message that settles nothing; wakes the driver if it is parked.
    pub fn post(&self, out: Outgoing, settles: bool) {
        let mut inbox = self.inbox.lock();
        inbox.queue.push(out);
        if settles {
            inbox.unanswered -= 1;
        }
        let parked = std::mem::replace(&mut inbox.parked, false);
        drop(inbox);
        if parked {
            self.wake.notify();
        }
    }

    /// Driver: swaps what was posted into `into` (an empty vector, so
    /// neither is reallocated per batch); whether there was anything.
    pub fn take(&self, into: &mut Vec<Outgoing>) -> bool {
        let mut inbox = self.inbox.lock();
        std::mem::swap(&mut inbox.queue, into);
        !into.is_empty()
    }

    /// Driver, right before it sleeps: raises `parked` and says how many
    /// answers are still owed, or `None` (nothing raised) when answers are
    /// waiting to be taken.
    pub fn park(&self) -> Option<usize> {
        let mut inbox = self.inbox.lock();
        if !inbox.queue.is_empty() {
            return None;
        }
        inbox.parked = true;
        Some(inbox.unanswered)
    }

    /// Driver, right after it woke: lowers `parked` (a poster that lowered
    /// it already wrote the descriptor) and resets the descriptor when the
    /// poll found it readable.
    pub fn unpark(&self, woken: bool) {
        self.inbox.lock().parked = false;
        if woken {
            self.wake.drain();
        }
    }

    /// Wakes the driver whether it is parked or not: for `stop`, which
    /// posts nothing.
    pub fn wake_driver(&self) {
        self.wake.notify();
    }

    /// The descriptor the driver polls (a signal handler writes it too).
    pub fn wake_fd(&self) -> RawFd {
        self.wake.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wake::wait_ready;
    use std::sync::Arc;

    fn readable(m: &Mailbox) -> bool {
        wait_ready([(m.wake_fd(), libc::POLLIN)], 0)[0]
    }

    fn answer() -> Outgoing {
        Outgoing {
            identity: Frame::empty(),
            payload: Frame::empty(),
            settles: None,
        }
    }

    #[test]
    fn a_post_writes_the_descriptor_only_for_a_parked_driver() {
        let m = Mailbox::new().unwrap();
        m.owe();
        m.owe();
        // Running: queued, nothing written.
        m.post(answer(), true);
        assert!(!readable(&m));
        // Mail is waiting: the driver may not park.
        assert_eq!(m.park(), None);
        let mut got = Vec::new();
        assert!(m.take(&mut got));
        assert_eq!(got.len(), 1);
        // Parked: the first post wakes it, the next ones find it woken.
        assert_eq!(m.park(), Some(1));
        m.post(answer(), true);
        assert!(readable(&m));
        m.post(answer(), false);
        m.unpark(true);
        assert!(!readable(&m));
        got.clear();
        assert!(m.take(&mut got));
        assert_eq!(got.len(), 2);
        assert_eq!(m.park(), Some(0));
        m.unpark(false);
    }

    #[test]
    fn no_answer_is_left_waiting_while_the_driver_sleeps() {
        // Posters race a driver that parks and sleeps without a timeout
        // limit of its own (60 s stands for none): a lost wake-up hangs it.
        const POSTERS: usize = 4;
        const EACH: usize = 20_000;
        let m = Arc::new(Mailbox::new().unwrap());
        for _ in 0..POSTERS * EACH {
            m.owe();
        }
        let posters: Vec<_> = (0..POSTERS)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        m.post(answer(), true);
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let (mut got, mut batch) = (0, Vec::new());
        loop {
            if m.take(&mut batch) {
                got += batch.len();
                batch.clear();
                continue;
            }
            match m.park() {
                None => continue,
                Some(0) => {
                    m.unpark(false);
                    break;
                }
                Some(_) => {}
            }
            let [woken] = wait_ready([(m.wake_fd(), libc::POLLIN)], 60_000);
            assert!(woken, "slept 60 s with {got} of {} answers", POSTERS * EACH);
            m.unpark(woken);
        }
        for p in posters {
            p.join().unwrap();
        }
        assert!(!m.take(&mut batch));
        assert_eq!(got, POSTERS * EACH);
    }
}
