//! The worker (child) side.
//!
//! One owner for the transport: the **driver**, one thread (the one that
//! called [`Worker::serve`], or the one [`Worker::start`] made), owns the
//! ROUTER socket or, when a parent of this library spawned the worker, the
//! private link of [`crate::link`]. It is the only thread that touches it,
//! and it never runs a handler nor waits for one while it serves, so it is
//! always back at the socket: heartbeats are echoed at once, `shutdown`,
//! [`Worker::stop`] and SIGINT/SIGTERM are seen whatever the handlers do.
//!
//! - Each call the driver receives becomes one **submission**: the call and
//!   the right to answer it ([`ReplyHandle`]). It goes to the handler
//!   **pool** ([`pool`]): exactly the configured concurrency of threads
//!   (default 1, so handlers need not be thread-safe), each running one
//!   handler at a time. Calls of names registered for the pull form go to
//!   a queue that [`Worker::next`] takes from instead.
//! - Answers reach the driver through its **mailbox** ([`mailbox`]):
//!   a queue, a `parked` flag the driver raises under the queue's lock
//!   before it sleeps, and a wake descriptor that a replier writes only
//!   when it finds that flag raised. A handler thread answers through it, as
//!   does any thread answering later (a deferred reply).
//!
//! The driver's loop is in [`driver`], the answers in [`reply`].

#![deny(unsafe_code)]

mod driver;
mod mailbox;
mod pool;
mod reply;
mod signals;

pub use reply::{Incoming, ReplyHandle, Submission};

use crate::codec::{self, Limits};
use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::link::{self, Stream};
use crate::log::{self, Level};
use crate::registry::Registry;
use crate::sync::{Condvar, Mutex, RwLock};
use crate::{bound_port, ids, zmq_context};
use driver::Conn;
use mailbox::Mailbox;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
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

/// The default largest message a worker accepts (the parents' default too).
const DEFAULT_MAX_MESSAGE: i64 = 64 * 1024 * 1024;
/// The most handlers a worker may run at once.
const MAX_CONCURRENCY: usize = 1024;

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
    /// Cancels that found their call unanswered.
    pub cancels: AtomicU64,
    /// Calls answered without running their handler: cancelled, or their
    /// time ran out, before a handler was free.
    pub not_run: AtomicU64,
    /// Stream items sent.
    pub stream_items: AtomicU64,
}

/// Where calls of a registered name go.
#[derive(Clone)]
enum Route {
    /// Run on the handler pool.
    Call(Handler),
    /// The same, for a handler that takes a pointer and a length.
    Raw(RawHandler),
    /// Queued for [`Worker::next`] (bindings that own their event loop).
    Pull,
}

#[derive(Default)]
struct Pull {
    queue: VecDeque<Submission>,
    /// Set when serving ends, so waiting `next` callers return.
    closed: bool,
}

/// What the worker's threads share: the driver, the pool's threads,
/// `next` callers and every reply handle.
struct Shared {
    mailbox: Mailbox,
    stop: AtomicBool,
    handlers: RwLock<HashMap<String, Route, ids::KeyBuildHasher>>,
    /// Calls for pull-registered names, taken by `Worker::next`.
    pull: Mutex<Pull>,
    pull_cv: Condvar,
    serving: AtomicBool,
    /// The size of the handler pool the next `serve` starts.
    concurrency: AtomicUsize,
    namespace: RwLock<String>,
    limits: Limits,
    stats: WorkerStats,
    /// The largest message taken or sent (see `set_max_message_size`).
    max_message_size: AtomicI64,
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

/// The serving side. Register handlers, then `serve` (blocking) until
/// `stop`, a `shutdown` message, or SIGINT/SIGTERM.
pub struct Worker {
    shared: Arc<Shared>,
    mode: Mode,
    /// Opened by `new` in bind and service modes (so registration errors
    /// show at once), by `serve` in spawn mode.
    socket: Mutex<Option<zmq::Socket>>,
    handle_signals: AtomicBool,
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Worker {
    pub fn new(mode: Mode) -> Result<Worker> {
        let worker = Worker {
            shared: Arc::new(Shared {
                mailbox: Mailbox::new().map_err(|e| Error::io(format!("eventfd: {e}")))?,
                stop: AtomicBool::new(false),
                handlers: RwLock::new(HashMap::default()),
                pull: Mutex::new(Pull::default()),
                pull_cv: Condvar::new(),
                serving: AtomicBool::new(false),
                concurrency: AtomicUsize::new(1),
                namespace: RwLock::new(codec::DEFAULT_NAMESPACE.to_owned()),
                limits: Limits::default(),
                stats: WorkerStats::default(),
                max_message_size: AtomicI64::new(DEFAULT_MAX_MESSAGE),
            }),
            mode,
            socket: Mutex::new(None),
            handle_signals: AtomicBool::new(true),
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
    /// [`Worker::next`] instead of running on the handler pool.
    pub fn register_pull(&self, name: &str) -> Result<()> {
        self.route(name, Route::Pull)
    }

    /// The next call for a pull-registered name. `None` timeout waits for
    /// ever; `Ok(None)` means the timeout passed; `Closed` means serving ended.
    pub fn next(&self, timeout: Option<Duration>) -> Result<Option<Submission>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut pull = self.shared.pull.lock();
        loop {
            if let Some(call) = pull.queue.pop_front() {
                match call.unless_void() {
                    Some(call) => return Ok(Some(call)),
                    None => continue,
                }
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

    /// How many handlers may run at once: the threads of the handler pool
    /// that `serve` starts (default 1, so handlers need not be
    /// thread-safe). Takes effect at the next `serve`.
    pub fn set_concurrency(&self, n: usize) -> Result<()> {
        if n == 0 || n > MAX_CONCURRENCY {
            return Err(Error::invalid(format!(
                "concurrency must be 1..={MAX_CONCURRENCY}, got {n}"
            )));
        }
        self.shared.concurrency.store(n, Ordering::Relaxed);
        Ok(())
    }

    /// Whether `serve` stops on SIGINT/SIGTERM (default true).
    pub fn set_handle_signals(&self, on: bool) {
        self.handle_signals.store(on, Ordering::Relaxed);
    }

    /// Largest message accepted from a parent (>= 1024 bytes; default 64 MiB).
    /// A larger call is answered with an error that says so, and serving
    /// goes on: the private link skips it unread; over ZeroMQ it is read up
    /// to four times the limit, and above that libzmq refuses it by dropping
    /// the connection (see `zmq_max_message_size`). Applies to serves
    /// started from now on.
    pub fn set_max_message_size(&self, bytes: i64) -> Result<()> {
        if bytes < 1024 {
            return Err(Error::invalid(format!(
                "max message size must be >= 1024 bytes, got {bytes}"
            )));
        }
        self.shared.max_message_size.store(bytes, Ordering::Relaxed);
        if let Some(socket) = self.socket.lock().as_ref() {
            socket.set_maxmsgsize(crate::zmq_max_message_size(bytes))?;
        }
        Ok(())
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.shared.stats
    }

    /// Asks `serve` to return. Any thread; also before `serve` starts.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.mailbox.wake_driver();
    }

    /// Serves until stopped, this thread being the driver. The handler
    /// pool is started here and runs the registered functions.
    pub fn serve(&self) -> Result<()> {
        self.prepare()?.run()
    }

    /// Serves on a background thread (the driver) and returns once the
    /// socket is open (so a missing COMLINK_ZMQ_PORT or a taken service id
    /// fails here). Pair with [`Worker::next`] for the pull form;
    /// [`Worker::stop`] ends it.
    pub fn start(&self) -> Result<()> {
        let serving = self.prepare()?;
        let handle = std::thread::Builder::new()
            .name("mf-worker-driver".into())
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
        let max = self.shared.max_message_size.load(Ordering::Relaxed) as u64;
        let opened = self.socket.lock().take();
        let conn = match opened {
            Some(socket) => Ok(Conn::Zmq(socket)),
            None => match take_link(max) {
                Some(mut stream) => {
                    stream.send(Frame::copy(link::HELLO));
                    Ok(Conn::Link(stream))
                }
                None => self.open_socket().map(Conn::Zmq),
            },
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                self.shared.serving.store(false, Ordering::Release);
                return Err(e);
            }
        };
        self.shared.pull.lock().closed = false;
        Ok(Serving {
            shared: Arc::clone(&self.shared),
            conn,
            concurrency: self.shared.concurrency.load(Ordering::Relaxed),
            // Installed before `start` returns, so no signal falls between.
            signals: self
                .handle_signals
                .load(Ordering::Relaxed)
                .then(|| signals::Guard::install(self.shared.mailbox.wake_fd())),
            generation: signals::generation(),
            service: match &self.mode {
                Mode::Service(id) => Some(id.clone()),
                _ => None,
            },
            max,
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
        let max = self.shared.max_message_size.load(Ordering::Relaxed);
        socket.set_maxmsgsize(crate::zmq_max_message_size(max))?;
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

impl Drop for Worker {
    fn drop(&mut self) {
        // Registered by `new` but never served: give the id back.
        if self.socket.get_mut().take().is_some() {
            let _ = self.unregister();
        }
    }
}

/// One serving session: the transport and what the driver needs, owned so
/// it can run on the caller's thread or a background one.
struct Serving {
    shared: Arc<Shared>,
    conn: Conn,
    concurrency: usize,
    signals: Option<signals::Guard>,
    generation: u64,
    service: Option<String>,
    /// The largest call accepted.
    max: u64,
}

impl Serving {
    fn run(self) -> Result<()> {
        let Serving {
            shared,
            mut conn,
            concurrency,
            signals,
            generation,
            service,
            max,
        } = self;
        let result = driver::serve(&shared, &mut conn, concurrency, generation, max);
        drop(signals);
        if let Conn::Link(stream) = conn {
            put_back_link(stream);
        }
        let unregistered = match &service {
            Some(id) => Registry::for_user().and_then(|r| r.unregister(id)),
            None => Ok(()),
        };
        shared.stop.store(false, Ordering::Release);
        shared.serving.store(false, Ordering::Release);
        // Last: a binding that exits as soon as `next` says closed must find
        // the registry entry already gone.
        shared.pull.lock().closed = true;
        shared.pull_cv.notify_all();
        result.and(unregistered)
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

#[cfg(test)]
#[allow(unsafe_code)] // a raw handler, as the C API's `mf_reply_ok` runs one
mod tests {
    use super::driver::IN_PLACE_MIN;
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
