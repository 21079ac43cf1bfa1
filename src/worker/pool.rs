//! The handler pool: exactly the configured concurrency of threads, each
//! running one submission at a time, so at most that many handlers run at
//! once (one by default: handlers need not be thread-safe), and as many as
//! there are calls waiting up to that number.
//!
//! The driver only queues and notifies here; it never waits for a thread
//! of the pool, so a handler that blocks holds its own thread alone.

use super::reply::{CallState, Submission};
use crate::error::{Error, Result};
use crate::sync::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;

struct Queue {
    submissions: VecDeque<Submission>,
    closed: bool,
}

pub(super) struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Pool {
    /// Starts `threads` handler threads, for one serving session.
    pub fn start(threads: usize) -> Result<Arc<Pool>> {
        let pool = Arc::new(Pool {
            queue: Mutex::new(Queue {
                submissions: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for i in 0..threads {
            let pool_of_thread = Arc::clone(&pool);
            let spawned = std::thread::Builder::new()
                .name(format!("mf-handler-{i}"))
                .spawn(move || pool_of_thread.serve());
            if let Err(e) = spawned {
                pool.close();
                return Err(Error::io(format!("cannot start handler thread: {e}")));
            }
        }
        Ok(pool)
    }

    /// Driver: queues a call for the next free thread.
    pub fn submit(&self, submission: Submission) {
        self.queue.lock().submissions.push_back(submission);
        self.ready.notify_one();
    }

    /// Driver: takes back a call no thread has started, if it is still
    /// queued (a cancel came for it: it is answered at once, not when a
    /// thread is free).
    pub fn take_queued(&self, call: &Arc<CallState>) -> Option<Submission> {
        let mut queue = self.queue.lock();
        let at = queue
            .submissions
            .iter()
            .position(|s| s.reply.is_call(call))?;
        queue.submissions.remove(at)
    }

    /// Ends the session: threads exit once their current handler returns,
    /// and calls not started are dropped, which answers them with an error
    /// (see [`super::ReplyHandle`]'s drop).
    pub fn close(&self) {
        let dropped = {
            let mut queue = self.queue.lock();
            queue.closed = true;
            std::mem::take(&mut queue.submissions)
        };
        self.ready.notify_all();
        drop(dropped);
    }

    /// A handler thread.
    fn serve(&self) {
        loop {
            let submission = {
                let mut queue = self.queue.lock();
                loop {
                    if queue.closed {
                        return;
                    }
                    if let Some(s) = queue.submissions.pop_front() {
                        break s;
                    }
                    queue = self.ready.wait(queue);
                }
            };
            submission.run();
        }
    }
}
