//! A stream's consumer end: items in order, credit granted back as they
//! are taken, the end or the error after them (docs/protocol.md §9).

use super::calls::StreamSink;
use super::Shared;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::IdText;
use crate::parent::Reply;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Small items get a wider window, up to this many bytes of them...
const WINDOW_BYTES: u64 = 1 << 20;
/// ...and this many items.
const MAX_WINDOW: u64 = 256;

/// A stream's consumer end (from [`Parent::stream`]). One thread at a time.
/// Dropping it closes it.
///
/// The window (the items the worker may send ahead of the consumer) is
/// the option `stream_credit` when it is set. Otherwise it starts at
/// [`DEFAULT_STREAM_CREDIT`] and follows the items' average size: small
/// items widen it, up to [`WINDOW_BYTES`] of them and [`MAX_WINDOW`]
/// items, so a stream of small items is not held back by a round trip
/// every few items; it never goes below where it started, so the parent
/// holds at most `max(16 × item size, WINDOW_BYTES)`.
///
/// [`DEFAULT_STREAM_CREDIT`]: crate::options::DEFAULT_STREAM_CREDIT
pub struct Stream {
    shared: Arc<Shared>,
    /// The call's number and id.
    n: u64,
    id: IdText,
    sink: Arc<StreamSink>,
    /// The window now, its floor (the credit granted at the start), and
    /// items taken since credit was last granted.
    window: u64,
    floor: u64,
    taken: u64,
    /// The window follows the items' size (no `stream_credit` was set).
    widens: bool,
    /// Items taken in all, and their bytes (for their average size).
    items: u64,
    bytes: u64,
    ended: bool,
}

impl Stream {
    pub(super) fn new(
        shared: Arc<Shared>,
        n: u64,
        id: IdText,
        sink: Arc<StreamSink>,
        window: u64,
        widens: bool,
    ) -> Stream {
        Stream {
            shared,
            n,
            id,
            sink,
            window,
            floor: window,
            taken: 0,
            widens,
            items: 0,
            bytes: 0,
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
            self.items += 1;
            self.bytes += item.bytes().len() as u64;
            // Credit back in halves of the window: the worker is kept busy
            // without a message per item.
            if self.taken >= (self.window / 2).max(1) {
                let n = self.resize();
                if n > 0 {
                    self.shared.grant(&self.id, n);
                }
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

    /// Moves the window towards what the items' average size calls for,
    /// and returns the credit to grant: the items taken since the last
    /// grant, plus what the window grew by (or minus what it shrank by).
    fn resize(&mut self) -> u64 {
        let taken = std::mem::take(&mut self.taken);
        if !self.widens {
            return taken;
        }
        let average = self.bytes / self.items.max(1);
        let (window, grant) = resized(self.window, self.floor, taken, average);
        self.window = window;
        grant
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

/// A widening window of `window` items (never below `floor`) after
/// `taken` items of `average` bytes were taken since the last grant: the
/// new window, and the credit to grant for it. It shrinks at most by what
/// was taken, as credit granted already cannot be taken back.
fn resized(window: u64, floor: u64, taken: u64, average: u64) -> (u64, u64) {
    let target = (WINDOW_BYTES / average.max(1)).clamp(floor, MAX_WINDOW.max(floor));
    if target >= window {
        (target, taken + (target - window))
    } else {
        let shrink = (window - target).min(taken);
        (window - shrink, taken - shrink)
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

#[cfg(test)]
mod tests {
    use super::resized;

    #[test]
    fn the_window_follows_the_items_size_between_its_floor_and_its_cap() {
        // Tiny items: straight to the cap, granting what was taken and the growth.
        assert_eq!(resized(16, 16, 8, 2), (256, 8 + 240));
        // 4 KiB items: 1 MiB of them.
        assert_eq!(resized(16, 16, 8, 4096), (256, 248));
        assert_eq!(resized(16, 16, 8, 16384), (64, 56));
        // Items grew: it narrows, by no more than what was taken.
        assert_eq!(resized(256, 16, 128, 1 << 20), (128, 0));
        assert_eq!(resized(128, 16, 64, 1 << 20), (64, 0));
        assert_eq!(resized(24, 16, 12, 1 << 20), (16, 4));
        // Large items at the floor: what was taken goes back, no more.
        assert_eq!(resized(16, 16, 8, 1 << 20), (16, 8));
        // A floor above the cap (stream_credit is not widened, but a
        // large default would be) is kept.
        assert_eq!(resized(512, 512, 256, 2), (512, 256));
    }
}
