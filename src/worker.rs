//! The worker (child) side: a ROUTER socket (or, spawned by a parent of
//! this library, the private link of [`crate::link`]) driven by one I/O
//! thread that answers heartbeats at once and hands calls to handler threads.
//!
//! Handlers never run on the I/O thread, so a long call never delays a
//! heartbeat echo. A handler answers through a [`ReplyHandle`], during the
//! call or later from any thread; answers are queued and the I/O thread is
//! woken through an eventfd to send them.

use crate::codec::{self, Encoder, Kind, Limits};
use crate::error::{Error, Result};
use crate::frame::{self, Frame};
use crate::link::{self, Recv, Stream};
use crate::log::{self, Level};
use crate::registry::Registry;
use crate::sync::{Condvar, Mutex, RwLock};
use crate::text::ShortStr;
use crate::wake::{self, Wake};
use crate::{bound_port, ids, zmq_context};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A registered function: receives the raw msgpack `args` array and answers
/// through the reply handle.
pub type Handler = Arc<dyn Fn(&[u8], ReplyHandle) + Send + Sync>;

/// A handler that gets its arguments as a pointer and a length (the C
/// API's): no reference to them is alive while it runs, so its answer may
/// be written around a result that lies in them (see
/// [`ReplyHandle::ok_in_place`]).
pub(crate) type RawHandler = Arc<dyn Fn(*const u8, usize, ReplyHandle) + Send + Sync>;

const EMPTY_ARGS: &[u8] = &[0x90];
/// Calls from this size on are shared with their reply, so that a result
/// lying in the call (an echo, a slice of the arguments) is sent from there.
const IN_PLACE_MIN: usize = 64 * 1024;
/// The default largest message a worker accepts (the parents' default too).
const DEFAULT_MAX_MESSAGE: i64 = 64 * 1024 * 1024;
const RECV_BATCH: usize = 512;
/// Bytes of replies the link queues before writing them mid-burst.
const FLUSH_AT: usize = 64 * 1024;
/// How long `serve` waits, once stopped, for running handlers to answer.
const STOP_GRACE: Duration = Duration::from_millis(1000);

/// How the worker reaches its parents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Connect to the parent whose port is in `COMLINK_ZMQ_PORT`.
    Spawn,
    /// Bind this endpoint (e.g. `tcp://127.0.0.1:5555`) and serve whoever connects.
    Bind(String),
    /// Bind a free port on 127.0.0.1 and register it in the service
    /// registry under this id (connect mode); unregister when serving ends.
    Service(String),
}

/// Counters of a worker.
#[derive(Default)]
pub struct WorkerStats {
    pub calls: AtomicU64,
    pub errors_sent: AtomicU64,
    pub heartbeats: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_namespace: AtomicU64,
    /// Results sent from where they lay in their call (no copy).
    pub replies_in_place: AtomicU64,
}

struct Outgoing {
    /// The caller's routing frame, as it arrived.
    identity: Frame,
    payload: Frame,
}

/// A received call: the function name and its raw msgpack arguments,
/// borrowed from the received frame.
pub struct Incoming {
    pub function: ShortStr,
    args: Frame,
    range: Range<usize>,
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

/// Where calls of a registered name go.
#[derive(Clone)]
enum Route {
    /// Run on the worker's handler threads.
    Call(Handler),
    /// The same, for a handler that takes a pointer and a length.
    Raw(RawHandler),
    /// Queued for [`Worker::next`] (bindings that own their event loop).
    Pull,
}

/// One call waiting for a handler thread or a `next` caller.
pub struct Job {
    incoming: Incoming,
    /// `Route::Pull` for a call taken with [`Worker::next`].
    route: Route,
    reply: ReplyHandle,
}

impl Job {
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

    /// Runs the registered handler. A panicking handler drops its reply
    /// handle while unwinding, and the handle answers with an error then;
    /// the handler thread lives on.
    fn run(self) {
        let Job {
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

struct Jobs {
    queue: VecDeque<Job>,
    closed: bool,
    busy: usize,
}

/// How the worker reaches its parents: a ROUTER socket, or the private
/// link from the parent that spawned it (see [`crate::link`]).
enum Conn {
    Zmq(zmq::Socket),
    Link(Stream),
}

impl Conn {
    /// The descriptor to poll: `ZMQ_FD` (see [`wake::wait_ready`]) or the stream.
    fn fd(&self) -> Result<std::os::fd::RawFd> {
        match self {
            Conn::Zmq(socket) => Ok(socket.get_fd()?),
            Conn::Link(stream) => Ok(stream.fd()),
        }
    }

    /// Writes what the link has queued; false when the parent is gone.
    fn flush(&mut self) -> bool {
        match self {
            Conn::Zmq(_) => true,
            Conn::Link(stream) => stream.flush().is_ok(),
        }
    }

    /// The events to sleep on: the stream's writability too while it has
    /// unsent bytes.
    fn events(&self) -> libc::c_short {
        match self {
            Conn::Link(stream) if stream.wants_write() => libc::POLLIN | libc::POLLOUT,
            _ => libc::POLLIN,
        }
    }
}

/// This process's end of the private link from its parent: looked up once,
/// taken by the spawn-mode worker that serves, and put back when it stops
/// (with what it had half read), for a later `serve`.
struct LinkSlot {
    looked: bool,
    stream: Option<Stream>,
}

static LINK: Mutex<LinkSlot> = Mutex::new(LinkSlot {
    looked: false,
    stream: None,
});

fn take_link(max: u64) -> Option<Stream> {
    let mut slot = LINK.lock();
    if !std::mem::replace(&mut slot.looked, true) {
        slot.stream = Stream::from_env(max);
    }
    let mut stream = slot.stream.take()?;
    stream.set_max(max);
    Some(stream)
}

fn put_back_link(stream: Stream) {
    LINK.lock().stream = Some(stream);
}

/// Who holds the socket. A driver thread polls it; when a call can run at
/// once it parks the socket here and runs the handler itself (no hop to
/// another thread). If that handler is still running after
/// `INLINE_GRACE`, the other driver takes the socket so heartbeats are
/// answered and new calls dispatched; the roles swap.
#[derive(Default)]
struct Baton {
    socket: Option<Conn>,
    /// The descriptor to poll (see [`Conn::fd`]), read once when serving starts.
    fd: std::os::fd::RawFd,
    /// A handler runs inline since then (the socket is parked meanwhile).
    inline_since: Option<Instant>,
    last_inline: Option<Instant>,
    /// The standby sleeps without a timer and must be notified.
    standby_asleep: bool,
    done: bool,
}

/// How long an inline handler runs before the standby driver takes the socket.
const INLINE_GRACE: Duration = Duration::from_millis(1);
/// How long after the last inline call the standby keeps its 1 ms watch.
/// Calls closer together than this are cheaper to watch by polling (at
/// most 1000 wake-ups a second) than to announce one by one (a wake-up
/// each); after sparser calls the standby sleeps until the next one wakes it.
const STANDBY_WATCH: Duration = Duration::from_millis(2);

thread_local! {
    /// Set while this thread runs a handler inline: its reply is sent by
    /// this same thread right after, so nobody needs waking for it.
    static INLINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[derive(Default)]
struct Pull {
    queue: VecDeque<Job>,
    /// Set when serving ends, so waiting `next` callers return.
    closed: bool,
}

struct Shared {
    out: Mutex<Vec<Outgoing>>,
    wake: Wake,
    stop: AtomicBool,
    jobs: Mutex<Jobs>,
    jobs_cv: Condvar,
    handlers: RwLock<HashMap<String, Route, ids::KeyBuildHasher>>,
    /// Calls for pull-registered names, taken by `Worker::next`.
    pull: Mutex<Pull>,
    pull_cv: Condvar,
    serving: AtomicBool,
    /// The socket and who drives it (see `drive`).
    baton: Mutex<Baton>,
    baton_cv: Condvar,
    /// Handlers that may run at once (inline plus handler threads).
    concurrency: AtomicUsize,
    /// Calls handed to a handler or to `next` and not answered yet.
    unanswered: AtomicUsize,
    /// Serving ended on a parent's `shutdown`: that parent is leaving, so
    /// there is nobody to wait for answers for.
    shut_down: AtomicBool,
    namespace: RwLock<String>,
    limits: Limits,
    stats: WorkerStats,
}

impl Shared {
    fn push(&self, o: Outgoing) {
        let mut out = self.out.lock();
        let was_empty = out.is_empty();
        out.push(o);
        drop(out);
        if was_empty && !INLINE.with(std::cell::Cell::get) {
            self.wake.notify();
        }
    }

    fn push_error(&self, identity: Frame, id: Option<&str>, text: &str) {
        let capacity = 96 + text.len() + id.map_or(0, str::len);
        let payload = frame::encode(capacity, |b| Encoder::new(b).error(id, text));
        self.stats.errors_sent.fetch_add(1, Ordering::Relaxed);
        self.push(Outgoing { identity, payload });
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
    source: Option<frame::Received>,
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

    /// Marks the call answered and queues `payload` for its caller.
    fn send(mut self, payload: Frame) {
        if let Some(identity) = self.answer() {
            self.shared.push(Outgoing { identity, payload });
        }
    }

    /// Answers with an error; the caller sees `text` as the remote error.
    pub fn error(mut self, text: &str) -> Result<()> {
        if let Some(identity) = self.answer() {
            self.shared.push_error(identity, self.id.as_deref(), text);
        }
        Ok(())
    }
}

impl ReplyHandle {
    fn new(shared: &Arc<Shared>, identity: Frame, id: &str) -> ReplyHandle {
        shared.unanswered.fetch_add(1, Ordering::AcqRel);
        ReplyHandle {
            shared: Arc::clone(shared),
            identity: Some(identity),
            id: Some(ShortStr::new(id)),
            source: None,
        }
    }

    /// Marks the call answered; the caller's routing frame, the first time.
    fn answer(&mut self) -> Option<Frame> {
        let identity = self.identity.take();
        if identity.is_some() {
            self.shared.unanswered.fetch_sub(1, Ordering::AcqRel);
        }
        identity
    }
}

impl Drop for ReplyHandle {
    fn drop(&mut self) {
        if let Some(identity) = self.answer() {
            self.shared.push_error(
                identity,
                self.id.as_deref(),
                "RuntimeError: the worker dropped the call without answering",
            );
        }
    }
}

/// The serving side. Register handlers, then `serve` (blocking) until
/// `stop`, a `shutdown` message, or SIGINT/SIGTERM.
pub struct Worker {
    shared: Arc<Shared>,
    mode: Mode,
    /// Opened by `new` in bind and service modes (so registration errors
    /// show at once), by `serve` in spawn mode.
    socket: Mutex<Option<zmq::Socket>>,
    handle_signals: AtomicBool,
    max_message_size: std::sync::atomic::AtomicI64,
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Worker {
    pub fn new(mode: Mode) -> Result<Worker> {
        let worker = Worker {
            shared: Arc::new(Shared {
                out: Mutex::new(Vec::new()),
                wake: Wake::new().map_err(|e| Error::io(format!("eventfd: {e}")))?,
                stop: AtomicBool::new(false),
                jobs: Mutex::new(Jobs {
                    queue: VecDeque::new(),
                    closed: false,
                    busy: 0,
                }),
                jobs_cv: Condvar::new(),
                handlers: RwLock::new(HashMap::default()),
                pull: Mutex::new(Pull::default()),
                pull_cv: Condvar::new(),
                serving: AtomicBool::new(false),
                baton: Mutex::new(Baton::default()),
                baton_cv: Condvar::new(),
                concurrency: AtomicUsize::new(1),
                unanswered: AtomicUsize::new(0),
                shut_down: AtomicBool::new(false),
                namespace: RwLock::new(codec::DEFAULT_NAMESPACE.to_owned()),
                limits: Limits::default(),
                stats: WorkerStats::default(),
            }),
            mode,
            socket: Mutex::new(None),
            handle_signals: AtomicBool::new(true),
            max_message_size: std::sync::atomic::AtomicI64::new(DEFAULT_MAX_MESSAGE),
            background: Mutex::new(None),
        };
        if worker.mode != Mode::Spawn {
            *worker.socket.lock() = Some(worker.open_socket()?);
        }
        Ok(worker)
    }

    /// Registers (or replaces) `name`. Names starting with `_` are private
    /// and can never be called.
    pub fn register(&self, name: &str, handler: Handler) -> Result<()> {
        self.route(name, Route::Call(handler))
    }

    /// Registers a handler that takes its arguments as a pointer and a
    /// length (the C API's `mf_worker_register`).
    pub(crate) fn register_raw(&self, name: &str, handler: RawHandler) -> Result<()> {
        self.route(name, Route::Raw(handler))
    }

    fn route(&self, name: &str, route: Route) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("function name must not be empty"));
        }
        self.shared.handlers.write().insert(name.to_owned(), route);
        Ok(())
    }

    /// Registers `name` for the pull form: its calls are taken with
    /// [`Worker::next`] instead of running on the worker's threads.
    pub fn register_pull(&self, name: &str) -> Result<()> {
        self.route(name, Route::Pull)
    }

    /// The next call for a pull-registered name. `None` timeout waits for
    /// ever; `Ok(None)` means the timeout passed; `Closed` means serving ended.
    pub fn next(&self, timeout: Option<Duration>) -> Result<Option<Job>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut pull = self.shared.pull.lock();
        loop {
            if let Some(job) = pull.queue.pop_front() {
                return Ok(Some(job));
            }
            if pull.closed {
                return Err(Error::new(
                    crate::ErrorKind::Closed,
                    "the worker stopped serving",
                ));
            }
            match deadline {
                Some(d) => {
                    let (guard, timed_out) = self.shared.pull_cv.wait_until(pull, d);
                    pull = guard;
                    if timed_out {
                        return Ok(None);
                    }
                }
                None => pull = self.shared.pull_cv.wait(pull),
            }
        }
    }

    pub fn set_namespace(&self, ns: &str) -> Result<()> {
        if ns.is_empty() {
            return Err(Error::invalid("namespace must not be empty"));
        }
        *self.shared.namespace.write() = ns.to_owned();
        Ok(())
    }

    /// Handler threads (default 1, so handlers need not be thread-safe).
    pub fn set_concurrency(&self, n: usize) -> Result<()> {
        if n == 0 || n > 1024 {
            return Err(Error::invalid(format!(
                "concurrency must be 1..=1024, got {n}"
            )));
        }
        self.shared.concurrency.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// Whether `serve` stops on SIGINT/SIGTERM (default true).
    pub fn set_handle_signals(&self, on: bool) {
        self.handle_signals.store(on, Ordering::Relaxed);
    }

    /// Largest message accepted from a parent (>= 1024 bytes; default 64 MiB):
    /// libzmq refuses a larger one before it is read, the private link skips
    /// it unread. Applies to connections made (and serves started) from now on.
    pub fn set_max_message_size(&self, bytes: i64) -> Result<()> {
        if bytes < 1024 {
            return Err(Error::invalid(format!(
                "max message size must be >= 1024 bytes, got {bytes}"
            )));
        }
        self.max_message_size.store(bytes, Ordering::Relaxed);
        if let Some(socket) = self.socket.lock().as_ref() {
            socket.set_maxmsgsize(bytes)?;
        }
        Ok(())
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.shared.stats
    }

    /// Asks `serve` to return. Any thread; also before `serve` starts.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify();
    }

    /// Serves until stopped. Handler threads are started here and run the
    /// registered functions.
    pub fn serve(&self) -> Result<()> {
        self.prepare()?.run()
    }

    /// Serves on a background thread and returns once the socket is open
    /// (so a missing COMLINK_ZMQ_PORT or a taken service id fails here).
    /// Pair with [`Worker::next`] for the pull form; [`Worker::stop`] ends it.
    pub fn start(&self) -> Result<()> {
        let serving = self.prepare()?;
        let handle = std::thread::Builder::new()
            .name("mf-worker-io".into())
            .spawn(move || {
                let _ = serving.run();
            })
            .map_err(|e| Error::io(format!("cannot start the worker thread: {e}")))?;
        if let Some(old) = self.background.lock().replace(handle) {
            let _ = old.join();
        }
        Ok(())
    }

    /// Waits for a background `start` to end (after `stop` or `shutdown`).
    pub fn join(&self) {
        if let Some(h) = self.background.lock().take() {
            let _ = h.join();
        }
    }

    fn prepare(&self) -> Result<Serving> {
        if self.shared.serving.swap(true, Ordering::AcqRel) {
            return Err(Error::invalid("this worker is already serving"));
        }
        let opened = self.socket.lock().take();
        let conn = match opened {
            Some(socket) => Ok(Conn::Zmq(socket)),
            None => match take_link(self.max_message_size.load(Ordering::Relaxed) as u64) {
                Some(mut stream) => {
                    stream.send(Frame::copy(link::HELLO));
                    Ok(Conn::Link(stream))
                }
                None => self.open_socket().map(Conn::Zmq),
            },
        };
        let socket = match conn {
            Ok(c) => c,
            Err(e) => {
                self.shared.serving.store(false, Ordering::Release);
                return Err(e);
            }
        };
        self.shared.jobs.lock().closed = false;
        self.shared.pull.lock().closed = false;
        Ok(Serving {
            shared: Arc::clone(&self.shared),
            socket: Mutex::new(Some(socket)),
            threads: self.shared.concurrency.load(Ordering::Relaxed),
            // Installed before `start` returns, so no signal falls between.
            signals: self
                .handle_signals
                .load(Ordering::Relaxed)
                .then(|| signals::Guard::install(self.shared.wake.fd())),
            generation: signals::generation(),
            service: match &self.mode {
                Mode::Service(id) => Some(id.clone()),
                _ => None,
            },
        })
    }

    fn unregister(&self) -> Result<()> {
        if let Mode::Service(id) = &self.mode {
            Registry::for_user()?.unregister(id)?;
        }
        Ok(())
    }

    fn open_socket(&self) -> Result<zmq::Socket> {
        let socket = zmq_context().socket(zmq::ROUTER)?;
        socket.set_linger(1000)?;
        socket.set_sndhwm(0)?;
        socket.set_rcvhwm(0)?;
        socket.set_maxmsgsize(self.max_message_size.load(Ordering::Relaxed))?;
        match &self.mode {
            Mode::Spawn => {
                let port = spawn_port()?;
                socket
                    .connect(&format!("tcp://localhost:{port}"))
                    .map_err(|e| {
                        Error::io(format!("cannot connect to the parent on port {port}: {e}"))
                    })?;
            }
            Mode::Bind(ep) => {
                socket
                    .bind(ep)
                    .map_err(|e| Error::io(format!("cannot bind '{ep}': {e}")))?;
                let loopback = ["tcp://127.", "tcp://localhost:", "tcp://[::1]:", "ipc://"]
                    .iter()
                    .any(|p| ep.starts_with(p));
                if !loopback {
                    log::emit(
                        Level::Warn,
                        "insecure_bind",
                        &format!("worker listens on {ep} (not loopback); the protocol has no authentication"),
                        &[],
                    );
                }
            }
            Mode::Service(id) => {
                let port = Registry::for_user()?.register(id, || {
                    socket
                        .bind("tcp://127.0.0.1:*")
                        .map_err(|e| Error::io(format!("cannot bind 127.0.0.1: {e}")))?;
                    bound_port(&socket)
                })?;
                log::emit(
                    Level::Info,
                    "service_registered",
                    &format!("service '{id}' registered on port {port}"),
                    &[("port", port.into())],
                );
            }
        }
        Ok(socket)
    }
}

/// One serving session: the socket and what the loop needs, owned so it
/// can run on the caller's thread or a background one.
struct Serving {
    shared: Arc<Shared>,
    socket: Mutex<Option<Conn>>,
    threads: usize,
    signals: Option<signals::Guard>,
    generation: u64,
    service: Option<String>,
}

impl Serving {
    fn run(self) -> Result<()> {
        let result = self.serve_loop();
        drop(self.signals);
        // Not taken when serving failed to start.
        if let Some(Conn::Link(stream)) = self.socket.lock().take() {
            put_back_link(stream);
        }
        let unregistered = match &self.service {
            Some(id) => Registry::for_user().and_then(|r| r.unregister(id)),
            None => Ok(()),
        };
        self.shared.stop.store(false, Ordering::Release);
        self.shared.serving.store(false, Ordering::Release);
        // Last: a binding that exits as soon as `next` says closed must find
        // the registry entry already gone.
        let mut pull = self.shared.pull.lock();
        pull.closed = true;
        // Calls nobody will take are answered (ReplyHandle's drop) rather than left to time out.
        pull.queue.clear();
        drop(pull);
        self.shared.pull_cv.notify_all();
        result.and(unregistered)
    }

    fn serve_loop(&self) -> Result<()> {
        let shared = &self.shared;
        let socket = self.socket.lock().take();
        let fd = match socket.as_ref().map(Conn::fd).transpose() {
            Ok(fd) => fd.unwrap_or(-1),
            Err(e) => {
                *self.socket.lock() = socket;
                return Err(e);
            }
        };
        for i in 0..self.threads {
            let shared = Arc::clone(shared);
            std::thread::Builder::new()
                .name(format!("mf-handler-{i}"))
                .spawn(move || handler_loop(&shared))
                .map_err(|e| Error::io(format!("cannot start handler thread: {e}")))?;
        }
        let generation = self.generation;
        {
            let mut b = shared.baton.lock();
            *b = Baton::default();
            b.socket = socket;
            b.fd = fd;
        }
        // Two drivers: one polls, the other stands by for a long inline handler.
        let drivers: Vec<_> = (0..2)
            .map(|i| {
                let shared = Arc::clone(shared);
                std::thread::Builder::new()
                    .name(format!("mf-worker-io-{i}"))
                    .spawn(move || drive(&shared, generation))
            })
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(format!("cannot start worker I/O thread: {e}")))?;
        {
            let mut b = shared.baton.lock();
            while !b.done {
                b = shared.baton_cv.wait(b);
            }
        }
        // Stop taking calls; give calls in progress (handlers, pulled
        // calls, deferred replies) a moment to answer.
        let grace = if shared.shut_down.swap(false, Ordering::AcqRel) {
            Duration::ZERO
        } else {
            STOP_GRACE
        };
        let deadline = Instant::now() + grace;
        {
            let mut jobs = shared.jobs.lock();
            jobs.closed = true;
            jobs.queue.clear();
            shared.jobs_cv.notify_all();
        }
        while shared.unanswered.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // The poller parked the socket when it stopped; a driver still in a
        // hung handler is left behind (it exits when the handler returns).
        let mut socket = shared.baton.lock().socket.take();
        if let Some(socket) = &mut socket {
            WorkerIo {
                shared,
                socket,
                local: &mut Local::default(),
            }
            .flush();
            // Like the ROUTER's linger: up to a second for the link to take the last replies.
            let deadline = Instant::now() + Duration::from_secs(1);
            while socket.flush()
                && socket.events() & libc::POLLOUT != 0
                && Instant::now() < deadline
            {
                let fd = socket.fd().unwrap_or(-1);
                wake::wait_ready([(fd, libc::POLLOUT)], 10);
            }
        }
        if let Some(Conn::Link(stream)) = socket {
            put_back_link(stream);
        }
        for d in drivers {
            if d.is_finished() {
                let _ = d.join();
            }
        }
        Ok(())
    }
}

/// What a driver's polling turn ended with.
enum Turn {
    Stop,
    /// A call to run right here (in `Local::inline`); the socket was
    /// parked for the standby.
    Inline,
}

/// What a driver thread keeps from one turn to the next.
#[derive(Default)]
struct Local {
    /// The second reply vector (see `WorkerIo::flush`).
    spare: Vec<Outgoing>,
    /// A call that can run on this thread, left here by `handle` (a call
    /// is large: it is not passed back up through the return values).
    inline: Option<Job>,
}

/// A driver thread: takes the socket when it is free (or when an inline
/// handler has run past `INLINE_GRACE`), polls, and runs calls inline.
fn drive(shared: &Arc<Shared>, generation: u64) {
    let mut local = Local::default();
    loop {
        let (socket, fd) = {
            let mut b = shared.baton.lock();
            loop {
                if b.done {
                    return;
                }
                let overdue = b.inline_since.is_none_or(|t| t.elapsed() >= INLINE_GRACE);
                if b.socket.is_some() && overdue {
                    break (b.socket.take(), b.fd);
                }
                let watch = match b.inline_since {
                    Some(t) => Some(t + INLINE_GRACE),
                    None if b.last_inline.is_some_and(|t| t.elapsed() < STANDBY_WATCH) => {
                        Some(Instant::now() + INLINE_GRACE)
                    }
                    None => None,
                };
                match watch {
                    Some(t) => b = shared.baton_cv.wait_until(b, t).0,
                    None => {
                        b.standby_asleep = true;
                        b = shared.baton_cv.wait(b);
                        b.standby_asleep = false;
                    }
                }
            }
        };
        let Some(socket) = socket else { continue };
        match poll_turn(shared, socket, fd, generation, &mut local) {
            (Turn::Stop, socket) => {
                let mut b = shared.baton.lock();
                b.socket = Some(socket);
                b.done = true;
                shared.baton_cv.notify_all();
                return;
            }
            (Turn::Inline, socket) => {
                {
                    let mut b = shared.baton.lock();
                    b.socket = Some(socket);
                    let now = Instant::now();
                    b.inline_since = Some(now);
                    b.last_inline = Some(now);
                    if b.standby_asleep {
                        shared.baton_cv.notify_all();
                    }
                }
                INLINE.with(|f| f.set(true));
                if let Some(job) = local.inline.take() {
                    job.run();
                }
                INLINE.with(|f| f.set(false));
                finish_job(shared);
                let taken_over = {
                    let mut b = shared.baton.lock();
                    b.inline_since = None;
                    b.socket.is_none()
                };
                if taken_over {
                    // The other driver polls now: have it send our reply.
                    shared.wake.notify();
                }
            }
        }
    }
}

/// One polling turn: until a call can run inline, or serving must stop.
fn poll_turn(
    shared: &Arc<Shared>,
    mut socket: Conn,
    fd: std::os::fd::RawFd,
    generation: u64,
    local: &mut Local,
) -> (Turn, Conn) {
    let turn = poll_until_turn(
        &mut WorkerIo {
            shared,
            socket: &mut socket,
            local,
        },
        fd,
        generation,
    );
    (turn, socket)
}

fn poll_until_turn(io: &mut WorkerIo<'_>, fd: std::os::fd::RawFd, generation: u64) -> Turn {
    let shared = io.shared;
    // Replies that arrived while nobody polled (an inline reply among them).
    io.flush();
    loop {
        if shared.stop.load(Ordering::Acquire) {
            break Turn::Stop;
        }
        if signals::generation() != generation {
            log::emit(
                Level::Info,
                "worker_signal",
                "worker stopping on a signal",
                &[],
            );
            break Turn::Stop;
        }
        // Calls may already be waiting (pipelined callers): read before
        // sleeping, and sleep only once a recv has found nothing.
        match io.receive() {
            Received::More => {}
            Received::Busy => continue,
            Received::Shutdown => {
                shared.shut_down.store(true, Ordering::Release);
                break Turn::Stop;
            }
            Received::Inline => break Turn::Inline,
            Received::Closed => {
                log::emit(
                    Level::Info,
                    "worker_link_closed",
                    "the parent closed the private link; worker stopping",
                    &[],
                );
                break Turn::Stop;
            }
        }
        // Replies queued while reading go out in one write, before sleeping.
        if !io.socket.flush() {
            continue; // the next read sees the parent gone
        }
        // The last socket call was receive()'s failed recv.
        let [_, woken] = wake::wait_ready(
            [(fd, io.socket.events()), (shared.wake.fd(), libc::POLLIN)],
            -1,
        );
        if woken {
            shared.wake.drain();
            io.flush();
        }
    }
}

/// A handler finished: free its place and let a queued call start.
fn finish_job(shared: &Shared) {
    let mut jobs = shared.jobs.lock();
    jobs.busy -= 1;
    if !jobs.queue.is_empty() {
        shared.jobs_cv.notify_one();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Registered by `new` but never served: give the id back.
        if self.socket.get_mut().take().is_some() {
            let _ = self.unregister();
        }
    }
}

/// The parent's port from `COMLINK_ZMQ_PORT` (PROTOCOL.md §2).
pub fn spawn_port() -> Result<u16> {
    let raw = std::env::var("COMLINK_ZMQ_PORT").map_err(|_| {
        Error::invalid(
            "COMLINK_ZMQ_PORT is not set: a spawn-mode worker must be started by a parent",
        )
    })?;
    match raw.trim().parse::<u32>() {
        Ok(p) if (1024..=65535).contains(&p) => Ok(p as u16),
        _ => Err(Error::invalid(format!(
            "COMLINK_ZMQ_PORT='{raw}' is not a port number in 1024..65535"
        ))),
    }
}

fn handler_loop(shared: &Shared) {
    loop {
        let job = {
            let mut jobs = shared.jobs.lock();
            loop {
                if jobs.closed {
                    return;
                }
                if jobs.busy < shared.concurrency.load(Ordering::Relaxed) {
                    if let Some(job) = jobs.queue.pop_front() {
                        jobs.busy += 1;
                        break job;
                    }
                }
                jobs = shared.jobs_cv.wait(jobs);
            }
        };
        job.run();
        finish_job(shared);
    }
}

/// What reading the socket led to.
enum Received {
    /// Handled; from `receive`: drained, its last socket call a failed recv.
    More,
    /// `receive` stopped after a full batch: more may be waiting.
    Busy,
    Shutdown,
    /// A call to run on this thread, in `Local::inline`.
    Inline,
    /// The parent closed the private link.
    Closed,
}

/// The I/O thread's view: the socket and the shared queues.
struct WorkerIo<'a> {
    shared: &'a Arc<Shared>,
    socket: &'a mut Conn,
    local: &'a mut Local,
}

impl WorkerIo<'_> {
    fn flush(&mut self) {
        // Swapped with a drained vector, so neither is reallocated per batch.
        std::mem::swap(&mut *self.shared.out.lock(), &mut self.local.spare);
        let mut out = std::mem::take(&mut self.local.spare);
        for o in out.drain(..) {
            // A parent that went away is simply not answered.
            self.send(o.identity, o.payload);
        }
        self.local.spare = out;
    }

    /// Sends `[identity, empty, payload]`; the routing frame goes back as
    /// it came. On the link the payload is queued for the next flush.
    fn send(&mut self, identity: Frame, payload: Frame) {
        let socket = match self.socket {
            Conn::Zmq(socket) => socket,
            Conn::Link(stream) => {
                stream.send(payload);
                // A long burst of replies goes out before the burst ends.
                if stream.queued() >= FLUSH_AT {
                    let _ = stream.flush();
                }
                return;
            }
        };
        if frame::send(socket, identity, zmq::SNDMORE).is_err()
            || frame::send(socket, Frame::empty(), zmq::SNDMORE).is_err()
        {
            return;
        }
        // Once the first frames are accepted the last is too.
        let _ = frame::send(socket, payload, 0);
    }

    /// Handles what is readable.
    fn receive(&mut self) -> Received {
        if let Conn::Link(_) = self.socket {
            return self.receive_link();
        }
        for _ in 0..RECV_BATCH {
            let Some(identity) = self.recv_zmq() else {
                return Received::More;
            };
            if !identity.more() {
                self.shared
                    .stats
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // Expect [empty, payload]; anything else is counted and dropped.
            let Some([empty, payload]) = self.rest() else {
                self.shared
                    .stats
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if !empty.is_empty() {
                self.shared
                    .stats
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match self.handle(identity, payload) {
                Received::More => {}
                other => return other,
            }
        }
        Received::Busy
    }

    /// The link's messages: payloads alone, one parent, no routing frame.
    fn receive_link(&mut self) -> Received {
        for _ in 0..RECV_BATCH {
            let Conn::Link(stream) = &mut *self.socket else {
                return Received::More;
            };
            match stream.recv() {
                Recv::Message(payload) => match self.handle(Frame::empty(), payload) {
                    Received::More => {}
                    other => return other,
                },
                Recv::Oversized(_) => {
                    self.shared
                        .stats
                        .dropped_malformed
                        .fetch_add(1, Ordering::Relaxed);
                }
                Recv::Empty => return Received::More,
                Recv::Closed => return Received::Closed,
            }
        }
        Received::Busy
    }

    fn recv_zmq(&mut self) -> Option<Frame> {
        match self.socket {
            Conn::Zmq(socket) => Frame::recv(socket, zmq::DONTWAIT),
            Conn::Link(_) => None,
        }
    }

    /// The remaining two frames of a message; `None` when it has another
    /// number of them (what is left of it is drained).
    fn rest(&mut self) -> Option<[Frame; 2]> {
        let first = self.recv_zmq()?;
        if !first.more() {
            return None;
        }
        let second = self.recv_zmq()?;
        let mut more = second.more();
        if !more {
            return Some([first, second]);
        }
        while more {
            more = self.recv_zmq().is_some_and(|f| f.more());
        }
        None
    }

    fn handle(&mut self, identity: Frame, mut payload: Frame) -> Received {
        let shared = self.shared;
        let bytes = payload.bytes();
        let msg = match codec::decode(bytes, shared.limits) {
            Ok(m) => m,
            Err(e) => {
                shared
                    .stats
                    .dropped_malformed
                    .fetch_add(1, Ordering::Relaxed);
                log::emit(
                    Level::Debug,
                    "message_dropped",
                    &format!("dropped a payload from a parent: {e}"),
                    &[],
                );
                return Received::More;
            }
        };
        match msg.kind {
            Kind::Heartbeat if !msg.hb_response => {
                shared.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                let ts = msg.hb_timestamp.unwrap_or_else(codec::now_seconds);
                let id = msg.id.unwrap_or("");
                let out =
                    frame::encode(128 + id.len(), |b| Encoder::new(b).heartbeat(id, ts, true));
                self.send(identity, out);
            }
            Kind::Shutdown => return Received::Shutdown,
            Kind::Call => {
                if msg
                    .namespace
                    .is_some_and(|ns| ns != shared.namespace.read().as_str())
                {
                    shared
                        .stats
                        .dropped_namespace
                        .fetch_add(1, Ordering::Relaxed);
                    return Received::More;
                }
                shared.stats.calls.fetch_add(1, Ordering::Relaxed);
                let refuse = |identity: Frame, text: String| {
                    shared.push_error(identity, msg.id, &text);
                };
                let Some(function) = msg.function else {
                    refuse(identity, "message missing 'function' field".to_owned());
                    return Received::More;
                };
                let Some(id) = msg.id else {
                    refuse(identity, "message missing 'id' field".to_owned());
                    return Received::More;
                };
                if function.starts_with('_') {
                    refuse(identity, format!("Cannot call private method '{function}'"));
                    return Received::More;
                }
                let Some(route) = shared.handlers.read().get(function).cloned() else {
                    refuse(identity, format!("Function '{function}' not found"));
                    return Received::More;
                };
                let range = msg.args.map_or(0..0, |a| {
                    let start = a.as_ptr() as usize - bytes.as_ptr() as usize;
                    start..start + a.len()
                });
                let mut reply = ReplyHandle::new(shared, identity, id);
                let function = ShortStr::new(function);
                // Only handlers that get their arguments as a pointer (the C
                // API's, and calls taken with `next`) can answer in place.
                if bytes.len() >= IN_PLACE_MIN && !matches!(route, Route::Call(_)) {
                    reply.source = Some(frame::Received::share(&mut payload));
                }
                let incoming = Incoming {
                    function,
                    args: payload,
                    range,
                };
                let job = Job {
                    incoming,
                    route,
                    reply,
                };
                if let Route::Pull = job.route {
                    shared.pull.lock().queue.push_back(job);
                    shared.pull_cv.notify_one();
                    return Received::More;
                }
                let mut jobs = shared.jobs.lock();
                if jobs.queue.is_empty() && jobs.busy < shared.concurrency.load(Ordering::Relaxed) {
                    // Run it on this thread: no hop, and the reply goes out right after.
                    jobs.busy += 1;
                    self.local.inline = Some(job);
                    return Received::Inline;
                }
                jobs.queue.push_back(job);
                drop(jobs);
                shared.jobs_cv.notify_one();
            }
            _ => {}
        }
        Received::More
    }
}

/// SIGINT/SIGTERM: the handler bumps a generation counter and wakes every
/// serving worker through its eventfd (write(2) is async-signal-safe).
mod signals {
    use super::*;

    const SLOTS: usize = 64;
    static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    static INSTALLED: Mutex<Option<Saved>> = Mutex::new(None);

    struct Saved {
        users: usize,
        int: libc::sigaction,
        term: libc::sigaction,
    }

    pub fn generation() -> u64 {
        GENERATION.load(Ordering::Acquire)
    }

    extern "C" fn on_signal(_sig: libc::c_int) {
        GENERATION.fetch_add(1, Ordering::AcqRel);
        for slot in &FDS {
            let fd = slot.load(Ordering::Acquire);
            if fd >= 0 {
                wake::notify_fd(fd);
            }
        }
    }

    /// Registers a worker's wake fd for as long as it serves.
    pub struct Guard {
        slot: Option<usize>,
    }

    impl Guard {
        pub fn install(fd: i32) -> Guard {
            let slot = FDS.iter().position(|s| {
                s.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            });
            let mut installed = INSTALLED.lock();
            match installed.as_mut() {
                Some(saved) => saved.users += 1,
                None => {
                    // SAFETY: sigaction with a zeroed struct plus our handler;
                    // the previous actions are saved to be restored later.
                    unsafe {
                        let mut action: libc::sigaction = std::mem::zeroed();
                        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                        // SA_ONSTACK: runtimes with small goroutine stacks (Go) require it.
                        action.sa_flags = libc::SA_RESTART | libc::SA_ONSTACK;
                        libc::sigemptyset(&mut action.sa_mask);
                        let mut int: libc::sigaction = std::mem::zeroed();
                        let mut term: libc::sigaction = std::mem::zeroed();
                        libc::sigaction(libc::SIGINT, &action, &mut int);
                        libc::sigaction(libc::SIGTERM, &action, &mut term);
                        *installed = Some(Saved {
                            users: 1,
                            int,
                            term,
                        });
                    }
                }
            }
            Guard { slot }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(i) = self.slot {
                FDS[i].store(-1, Ordering::Release);
            }
            let mut installed = INSTALLED.lock();
            if let Some(saved) = installed.as_mut() {
                saved.users -= 1;
                if saved.users == 0 {
                    // SAFETY: restores the actions saved at install time.
                    unsafe {
                        libc::sigaction(libc::SIGINT, &saved.int, std::ptr::null_mut());
                        libc::sigaction(libc::SIGTERM, &saved.term, std::ptr::null_mut());
                    }
                    *installed = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, Parent};

    /// A raw handler answering with the bytes of its arguments from `skip`
    /// on, the way `mf_reply_ok` does.
    fn tail(skip: usize) -> RawHandler {
        Arc::new(move |args, len, reply| {
            assert!(len > skip);
            // SAFETY: the worker hands over `len` readable bytes of arguments.
            let result = unsafe { std::slice::from_raw_parts(args.add(skip), len - skip) };
            reply.check_result(result).unwrap();
            // SAFETY: the arguments are not used after answering.
            unsafe { reply.ok_in_place(result) };
        })
    }

    /// `[bin]` (and `[7, bin]` when `second`) of `n` bytes filled from `seed`.
    fn args(n: usize, seed: u8, second: bool) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8 ^ seed).collect();
        let mut bin = Vec::new();
        rmp::encode::write_bin(&mut bin, &data).unwrap();
        let mut a = if second { vec![0x92, 7] } else { vec![0x91] };
        a.extend_from_slice(&bin);
        (a, bin)
    }

    #[test]
    fn results_lying_in_the_arguments_are_sent_from_there_and_arrive_whole() {
        let path = std::env::temp_dir().join(format!("mf-inplace-{}.sock", std::process::id()));
        let ep = format!("ipc://{}", path.display());
        let worker = Arc::new(Worker::new(Mode::Bind(ep.clone())).unwrap());
        worker.register_raw("echo", tail(1)).unwrap();
        worker.register_raw("second", tail(2)).unwrap();
        worker.set_concurrency(4).unwrap();
        worker.start().unwrap();
        let parent = Arc::new(Parent::connect(&ep, Options::default()).unwrap());
        let mut expect_in_place = 0;
        for (n, seed) in [(10, 1), (5000, 2), (70_000, 3), (1 << 20, 4), (3 << 20, 5)] {
            for (function, second) in [("echo", false), ("second", true)] {
                let (a, bin) = args(n, seed, second);
                let reply = parent.call(function, &a, 10_000).unwrap();
                assert!(
                    reply.bytes() == bin,
                    "{function} of {n} bytes came back changed"
                );
                // Calls from 64 KiB on share their message with the reply.
                expect_in_place += u64::from(a.len() >= IN_PLACE_MIN);
            }
        }
        let in_place = || worker.stats().replies_in_place.load(Ordering::Relaxed);
        assert_eq!(in_place(), expect_in_place);
        // Four threads at once, each with its own bytes: every result is its own call's.
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let parent = Arc::clone(&parent);
                std::thread::spawn(move || {
                    for i in 0..20u8 {
                        let (a, bin) = args(200_000 + usize::from(i), t * 20 + i, t % 2 == 1);
                        let f = if t % 2 == 1 { "second" } else { "echo" };
                        let reply = parent.call(f, &a, 10_000).unwrap();
                        assert!(reply.bytes() == bin, "thread {t} call {i}: other bytes");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(in_place(), expect_in_place + 80);
        parent.close();
        worker.stop();
        let _ = std::fs::remove_file(path);
    }
}
