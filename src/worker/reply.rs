//! A received call and the right to answer it: a [`Submission`] for the
//! handler pool or a `next` caller, and its [`ReplyHandle`], which answers
//! through the driver's mailbox from any thread, exactly once.

use super::mailbox::Outgoing;
use super::{Route, Shared};
use crate::codec::{self, Encoder, ErrorKindName};
use crate::error::{Error, ErrorKind, Result};
use crate::frame::{self, Frame};
use crate::sync::{Condvar, Mutex};
use crate::text::ShortStr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Answers a call that must not run (see `ReplyHandle::answer_if_void`);
    /// the call back otherwise.
    pub(super) fn unless_void(self) -> Option<Submission> {
        let Submission {
            incoming,
            route,
            reply,
        } = self;
        let reply = reply.answer_if_void()?;
        Some(Submission {
            incoming,
            route,
            reply,
        })
    }

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
        let Some(reply) = reply.answer_if_void() else {
            return;
        };
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

/// Whether a call's caller gave up on it (a `cancel` for its id from the
/// parent that sent it), and what runs when it does.
pub(crate) struct CallState {
    /// The call's id and its parent's routing frame, which a cancel (or a
    /// credit) must match.
    pub(super) id: ShortStr,
    pub(super) peer: Vec<u8>,
    cancelled: AtomicBool,
    /// Runs once when the call is cancelled, unless it was answered first;
    /// run under this lock, so an answer made meanwhile waits for it to end.
    hook: Mutex<Option<CancelHook>>,
    /// A call that asked for a stream: the items it may still send.
    credit: Option<Credit>,
}

/// A stream's credit, which a yield waits on.
struct Credit {
    left: Mutex<u64>,
    granted: Condvar,
}

/// What a handler asks to run when its call is cancelled.
pub type CancelHook = Box<dyn FnOnce() + Send>;

impl CallState {
    /// `stream`: the credit the call asked for a stream with.
    pub(super) fn new(id: &str, peer: &[u8], stream: Option<u64>) -> Arc<CallState> {
        Arc::new(CallState {
            id: ShortStr::new(id),
            peer: peer.to_vec(),
            cancelled: AtomicBool::new(false),
            hook: Mutex::new(None),
            credit: stream.map(|n| Credit {
                left: Mutex::new(n),
                granted: Condvar::new(),
            }),
        })
    }

    /// Driver: the caller cancelled the call.
    pub(super) fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            if let Some(credit) = &self.credit {
                // A yield waiting for credit wakes to see the cancel.
                let _left = credit.left.lock();
                credit.granted.notify_all();
            }
            let mut hook = self.hook.lock();
            if let Some(run) = hook.take() {
                run();
            }
        }
    }

    /// Driver: the caller takes `n` more items.
    pub(super) fn grant(&self, n: u64) {
        if let Some(credit) = &self.credit {
            let mut left = credit.left.lock();
            *left = left.saturating_add(n);
            credit.granted.notify_all();
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The call is answered: its hook, if it did not run, never will.
    fn settle(&self) {
        drop(self.hook.lock().take());
    }
}

/// The right to answer one call, exactly once, from any thread.
/// Dropping it unanswered answers with an error, so no caller waits for nothing.
pub struct ReplyHandle {
    shared: Arc<Shared>,
    /// `None` once answered.
    identity: Option<Frame>,
    /// A large call's message, where a result lying in it is answered from.
    pub(super) source: Option<frame::Received>,
    call: Arc<CallState>,
    /// When the caller stops waiting (from the call's `remaining_ms`).
    deadline: Option<Instant>,
    /// Items yielded so far.
    seq: u64,
    /// The items yielded for a caller that asked for no stream, as one
    /// MessagePack array's items: its answer is that array.
    collected: Option<Vec<u8>>,
    /// Those items outgrew the maximum message size: the answer is this
    /// error instead.
    too_large: Option<String>,
}

impl ReplyHandle {
    /// Checks that `result` is one MessagePack value within the limits.
    pub fn check_result(&self, result: &[u8]) -> Result<()> {
        codec::validate_value(result, self.shared.limits)
            .map_err(|e| Error::invalid(format!("result is not one msgpack value: {e}")))
    }

    /// Answers with a result (one MessagePack value).
    pub fn ok(mut self, result: &[u8]) -> Result<()> {
        self.check_result(result)?;
        let payload = match self.collected_answer() {
            Some(payload) => payload,
            None => self.response(result),
        };
        self.send(payload);
        Ok(())
    }

    /// Sends one item of a stream (one MessagePack value), waiting while
    /// the caller has taken all the items it granted credit for; the
    /// handler ends the stream by answering (its result is the stream's
    /// final value). `Cancelled` once the caller cancelled the call or
    /// closed the stream. When the caller asked for no stream (a v4
    /// parent, a plain call), the items are kept and the answer is the
    /// array of them instead of the result.
    pub fn yield_item(&mut self, item: &[u8]) -> Result<()> {
        self.check_result(item)?;
        let Some(identity) = &self.identity else {
            return Err(Error::invalid("the call was answered already"));
        };
        let Some(credit) = &self.call.credit else {
            return self.collect(item);
        };
        {
            let mut left = credit.left.lock();
            loop {
                if self.call.is_cancelled() {
                    return Err(Error::new(
                        ErrorKind::Cancelled,
                        "the caller cancelled the call or closed its stream",
                    ));
                }
                if *left > 0 {
                    *left -= 1;
                    break;
                }
                left = credit.granted.wait(left);
            }
        }
        let id = self.call.id.as_str();
        let payload = frame::encode(Encoder::stream_item_capacity(id, item), |b| {
            Encoder::new(b).stream_item(id, self.seq, item)
        });
        self.seq += 1;
        let out = Outgoing {
            identity: Frame::copy(identity.bytes()),
            payload,
            settles: None,
        };
        self.shared.mailbox.post(out, false);
        let stats = &self.shared.stats;
        stats.stream_items.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Keeps an item for a caller that asked for no stream, as long as the
    /// list fits in one message of the worker's maximum size; past that,
    /// `Protocol`, and the call's answer is that error.
    fn collect(&mut self, item: &[u8]) -> Result<()> {
        if let Some(text) = &self.too_large {
            return Err(Error::new(ErrorKind::Protocol, text.clone()));
        }
        let max = self.shared.max_message_size.load(Ordering::Relaxed).max(0) as usize;
        let collected = self.collected.get_or_insert_with(Vec::new);
        // The answer's head (id, type, ...) and the array's stay well under 256 bytes.
        if collected.len() + item.len() + 256 > max {
            let text = format!(
                "the {} items yielded for a caller that asked for no stream do not fit in one \
                 answer: the list would exceed the maximum message size of {max} bytes",
                self.seq + 1
            );
            self.collected = None;
            self.too_large = Some(text.clone());
            return Err(Error::new(ErrorKind::Protocol, text));
        }
        collected.extend_from_slice(item);
        self.seq += 1;
        Ok(())
    }

    /// The collected items as one array, when the handler yielded for a
    /// caller that asked for no stream (or the error saying they did not fit).
    fn collected_answer(&mut self) -> Option<Frame> {
        if let Some(text) = self.too_large.take() {
            return Some(error_payload(Some(self.call.id.as_str()), &text, None));
        }
        let items = self.collected.take()?;
        let mut array = Vec::with_capacity(items.len() + 5);
        rmp::encode::write_array_len(&mut array, self.seq as u32).ok()?;
        array.extend_from_slice(&items);
        Some(self.response(&array))
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
        if let Some(payload) = self.collected_answer() {
            return self.send(payload);
        }
        let in_place = match self.source.take() {
            Some(source) if result.len() >= frame::ZERO_COPY_MIN => {
                let id = Some(self.call.id.as_str());
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
        let id = Some(self.call.id.as_str());
        frame::encode(Encoder::response_capacity(id, result), |b| {
            Encoder::new(b).response(id, result)
        })
    }

    /// Posts `payload` as the answer, unless the call was answered already.
    fn send(mut self, payload: Frame) {
        self.post(payload);
    }

    fn post(&mut self, payload: Frame) {
        if let Some(identity) = self.identity.take() {
            self.call.settle();
            let out = Outgoing {
                identity,
                payload,
                settles: Some(Arc::clone(&self.call)),
            };
            self.shared.mailbox.post(out, true);
        }
    }

    /// Answers with an error; the caller sees `text` as the remote error.
    pub fn error(mut self, text: &str) -> Result<()> {
        self.send_error(text, None);
        Ok(())
    }

    fn send_error(&mut self, text: &str, kind: Option<ErrorKindName>) {
        if self.identity.is_some() {
            // Items that outgrew the answer are why it failed, whatever the
            // handler made of its failed yield.
            let too_large = self.too_large.take();
            let text = too_large.as_deref().unwrap_or(text);
            let payload = error_payload(Some(self.call.id.as_str()), text, kind);
            self.shared
                .stats
                .errors_sent
                .fetch_add(1, Ordering::Relaxed);
            self.post(payload);
        }
    }

    /// Whether the caller cancelled this call (or gave up on it at its
    /// timeout, which cancels it too). A handler that checks it can stop
    /// early; its answer is then dropped by the parent.
    pub fn is_cancelled(&self) -> bool {
        self.call.is_cancelled()
    }

    /// Runs `hook` once when the call is cancelled: at once, on this thread,
    /// if it already is; otherwise on the worker's driver thread when the
    /// cancel arrives, unless the call was answered first. The hook must
    /// be quick and must not answer this call (an answer waits for a
    /// running hook to end); it is the place to wake what runs the handler.
    pub fn on_cancel(&self, hook: CancelHook) {
        let mut slot = self.call.hook.lock();
        if self.call.is_cancelled() {
            drop(slot);
            hook();
        } else if self.identity.is_some() {
            *slot = Some(hook);
        }
    }

    /// Whether this answers `call`.
    pub(super) fn is_call(&self, call: &Arc<CallState>) -> bool {
        Arc::ptr_eq(&self.call, call)
    }

    /// When the caller stops waiting, if it said.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Answers a call that must not run (cancelled, or its time ran out
    /// while it waited for a handler) with the error that says why, and
    /// gives it back otherwise.
    pub(super) fn answer_if_void(mut self) -> Option<ReplyHandle> {
        let (text, kind) = if self.is_cancelled() {
            (
                "CancelledError: the call was cancelled before its handler started",
                ErrorKindName::Cancelled,
            )
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            (
                "TimeoutError: the call's time ran out before its handler started",
                ErrorKindName::Timeout,
            )
        } else {
            return Some(self);
        };
        let stats = &self.shared.stats;
        stats.not_run.fetch_add(1, Ordering::Relaxed);
        self.send_error(text, Some(kind));
        None
    }

    /// The handle for a call just received: its answer is owed from now on.
    pub(super) fn new(
        shared: &Arc<Shared>,
        identity: Frame,
        call: Arc<CallState>,
        remaining_ms: Option<u64>,
    ) -> ReplyHandle {
        shared.mailbox.owe();
        ReplyHandle {
            shared: Arc::clone(shared),
            identity: Some(identity),
            source: None,
            call,
            seq: 0,
            collected: None,
            too_large: None,
            deadline: remaining_ms
                .and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms))),
        }
    }
}

impl Drop for ReplyHandle {
    fn drop(&mut self) {
        self.send_error(
            "RuntimeError: the worker dropped the call without answering",
            None,
        );
    }
}

/// An `error` message answering call `id`, with what failed if this
/// library names it (`metadata.error_kind`).
pub(super) fn error_payload(id: Option<&str>, text: &str, kind: Option<ErrorKindName>) -> Frame {
    let capacity = 128 + text.len() + id.map_or(0, str::len);
    frame::encode(capacity, |b| Encoder::new(b).error(id, text, kind))
}
