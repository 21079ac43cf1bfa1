//! A stream's consumer end: items in order, credit granted back as they
//! are taken, the end or the error after them (docs/protocol.md §9).

use super::calls::StreamSink;
use super::Shared;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::IdText;
use crate::parent::Reply;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A stream's consumer end (from [`Parent::stream`]). One thread at a time.
/// Dropping it closes it.
pub struct Stream {
    shared: Arc<Shared>,
    /// The call's number and id.
    n: u64,
    id: IdText,
    sink: Arc<StreamSink>,
    /// The credit granted at the start, and items taken since credit was
    /// last granted.
    window: u64,
    taken: u64,
    ended: bool,
}

impl Stream {
    pub(super) fn new(
        shared: Arc<Shared>,
        n: u64,
        id: IdText,
        sink: Arc<StreamSink>,
        window: u64,
    ) -> Stream {
        Stream {
            shared,
            n,
            id,
            sink,
            window,
            taken: 0,
            ended: false,
        }
    }

    /// The next item: `Ok(Some(item))`, `Ok(None)` once the stream ended
    /// (the handler answered), or the call's error (after the items sent
    /// before it). `wait`: how long to wait for it (`None`: as long as the
    /// call's own timeout allows); when it passes, `Timeout` and the stream
    /// stays open.
    pub fn next(&mut self, wait: Option<Duration>) -> Result<Option<Reply>> {
        if self.ended {
            return Ok(None);
        }
        let deadline = wait.map(|w| Instant::now() + w);
        let mut state = self.sink.wait(deadline);
        if let Some(item) = state.items.pop_front() {
            drop(state);
            self.taken += 1;
            // Credit back in halves of the window: the worker is kept busy
            // without a message per item.
            if self.taken >= (self.window / 2).max(1) {
                let n = std::mem::take(&mut self.taken);
                self.shared.grant(&self.id, n);
            }
            return Ok(Some(item));
        }
        match state.end.take() {
            Some(end) => {
                self.ended = true;
                end.map(|_| None)
            }
            None => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no item of the stream within {} ms",
                    wait.unwrap_or_default().as_millis()
                ),
            )),
        }
    }

    /// Whether the stream is over: it ended, failed or was closed (a
    /// `Timeout` of `next`'s own wait leaves it open).
    pub fn is_over(&self) -> bool {
        self.ended
    }

    /// Ends the stream: an unfinished one is cancelled (its handler sees
    /// the cancel, and a yield fails). Idempotent.
    pub fn close(&mut self) {
        if !std::mem::replace(&mut self.ended, true) {
            self.shared.cancel(self.n);
        }
    }

    /// A handle that cancels this stream from any thread, also while
    /// another thread waits in [`Stream::next`] (which then ends with
    /// `Cancelled`).
    pub fn canceller(&self) -> StreamCanceller {
        StreamCanceller {
            shared: Arc::clone(&self.shared),
            n: self.n,
        }
    }

    /// The number of items received and not taken yet.
    pub fn buffered(&self) -> usize {
        self.sink.wait(Some(Instant::now())).items.len()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.close();
    }
}

/// Cancels one stream's call from any thread (see [`Stream::canceller`]).
pub struct StreamCanceller {
    shared: Arc<Shared>,
    n: u64,
}

impl StreamCanceller {
    /// Cancels the stream's call if it is still in flight: a waiting
    /// `next` ends with `Cancelled`, the worker is told. Whether it was.
    pub fn cancel(&self) -> bool {
        self.shared.cancel(self.n)
    }
}
