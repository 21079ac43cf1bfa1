//! A received call and the right to answer it: a [`Submission`] for the
//! handler pool or a `next` caller, and its [`ReplyHandle`], which answers
//! through the driver's mailbox from any thread, exactly once.

use super::mailbox::Outgoing;
use super::{Route, Shared};
use crate::codec::{self, Encoder};
use crate::error::{Error, Result};
use crate::frame::{self, Frame};
use crate::text::ShortStr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const EMPTY_ARGS: &[u8] = &[0x90];

/// A received call: the function name and its raw msgpack arguments,
/// borrowed from the received frame.
pub struct Incoming {
    pub function: ShortStr,
    pub(super) args: Frame,
    pub(super) range: Range<usize>,
}

impl Incoming {
    /// The raw msgpack `args` array.
    pub fn args(&self) -> &[u8] {
        if self.range.is_empty() {
            EMPTY_ARGS
        } else {
            &self.args.bytes()[self.range.clone()]
        }
    }
}

/// One call handed out by the driver: to the handler pool, or to a
/// [`super::Worker::next`] caller for a pull-registered name.
pub struct Submission {
    pub(super) incoming: Incoming,
    /// `Route::Pull` for a call taken with `next`.
    pub(super) route: Route,
    pub(super) reply: ReplyHandle,
}

impl Submission {
    pub fn function(&self) -> &str {
        &self.incoming.function
    }

    pub fn args(&self) -> &[u8] {
        self.incoming.args()
    }

    /// The call and the right to answer it.
    pub fn into_parts(self) -> (Incoming, ReplyHandle) {
        (self.incoming, self.reply)
    }

    /// Runs the registered handler (on a thread of the pool). A panicking
    /// handler drops its reply handle while unwinding, and the handle
    /// answers with an error then; the thread lives on.
    pub(super) fn run(self) {
        let Submission {
            incoming,
            route,
            reply,
        } = self;
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match route {
            Route::Call(handler) => handler(incoming.args(), reply),
            Route::Raw(handler) => {
                let args = incoming.args();
                handler(args.as_ptr(), args.len(), reply)
            }
            Route::Pull => {
                let _ = reply.error(&format!("Function '{}' not found", &*incoming.function));
            }
        }));
    }
}

/// The right to answer one call, exactly once, from any thread.
/// Dropping it unanswered answers with an error, so no caller waits for nothing.
pub struct ReplyHandle {
    shared: Arc<Shared>,
    /// `None` once answered.
    identity: Option<Frame>,
    id: Option<ShortStr>,
    /// A large call's message, where a result lying in it is answered from.
    pub(super) source: Option<frame::Received>,
}

impl ReplyHandle {
    /// Checks that `result` is one MessagePack value within the limits.
    pub fn check_result(&self, result: &[u8]) -> Result<()> {
        codec::validate_value(result, self.shared.limits)
            .map_err(|e| Error::invalid(format!("result is not one msgpack value: {e}")))
    }

    /// Answers with a result (one MessagePack value).
    pub fn ok(self, result: &[u8]) -> Result<()> {
        self.check_result(result)?;
        let payload = self.response(result);
        self.send(payload);
        Ok(())
    }

    /// Answers with a result that [`ReplyHandle::check_result`] accepted,
    /// without copying it when it lies in this call's own message with
    /// room before it for the response's head: a result that is part of
    /// the arguments (an echo, a slice) then goes out from where it arrived.
    ///
    /// # Safety
    /// Nothing reads or writes this call's arguments any more: the bytes
    /// before `result` may be overwritten.
    #[allow(unsafe_code)] // the one contract of this module, kept by its callers
    pub(crate) unsafe fn ok_in_place(mut self, result: &[u8]) {
        let in_place = match self.source.take() {
            Some(source) if result.len() >= frame::ZERO_COPY_MIN => {
                let id = self.id.as_deref();
                let mut head = Vec::with_capacity(Encoder::response_capacity(id, &[]));
                Encoder::new(&mut head).response_head(id);
                // SAFETY: `result` is a live slice; the caller gave up the
                // arguments, and nothing else of the message is used.
                unsafe { frame::around(source, &head, result.as_ptr(), result.len()) }.ok()
            }
            _ => None,
        };
        let payload = match in_place {
            Some(payload) => {
                let stats = &self.shared.stats;
                stats.replies_in_place.fetch_add(1, Ordering::Relaxed);
                payload
            }
            None => self.response(result),
        };
        self.send(payload);
    }

    /// The response carrying `result`, copied behind its head.
    fn response(&self, result: &[u8]) -> Frame {
        let id = self.id.as_deref();
        frame::encode(Encoder::response_capacity(id, result), |b| {
            Encoder::new(b).response(id, result)
        })
    }

    /// Posts `payload` as the answer, unless the call was answered already.
    fn send(mut self, payload: Frame) {
        if let Some(identity) = self.identity.take() {
            let out = Outgoing { identity, payload };
            self.shared.mailbox.post(out, true);
        }
    }

    /// Answers with an error; the caller sees `text` as the remote error.
    pub fn error(mut self, text: &str) -> Result<()> {
        self.send_error(text);
        Ok(())
    }

    fn send_error(&mut self, text: &str) {
        if let Some(identity) = self.identity.take() {
            let payload = error_payload(self.id.as_deref(), text);
            self.shared
                .stats
                .errors_sent
                .fetch_add(1, Ordering::Relaxed);
            let out = Outgoing { identity, payload };
            self.shared.mailbox.post(out, true);
        }
    }

    /// The handle for a call just received: its answer is owed from now on.
    pub(super) fn new(shared: &Arc<Shared>, identity: Frame, id: &str) -> ReplyHandle {
        shared.mailbox.owe();
        ReplyHandle {
            shared: Arc::clone(shared),
            identity: Some(identity),
            id: Some(ShortStr::new(id)),
            source: None,
        }
    }
}

impl Drop for ReplyHandle {
    fn drop(&mut self) {
        self.send_error("RuntimeError: the worker dropped the call without answering");
    }
}

/// An `error` message answering call `id`.
pub(super) fn error_payload(id: Option<&str>, text: &str) -> Frame {
    let capacity = 96 + text.len() + id.map_or(0, str::len);
    frame::encode(capacity, |b| Encoder::new(b).error(id, text))
}
