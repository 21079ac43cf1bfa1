//! The supervisor: the child process (start, exit, restart with back-off),
//! heartbeats, and following a service that moved. It runs on the driver's
//! thread, between the driver's turns on the transport.

use super::calls::Finished;
use super::driver::Heartbeat;
use super::transport::{self, Transport};
use super::{heartbeat, min_opt, Core, Shared, Target};
use crate::codec::Encoder;
use crate::error::{Error, ErrorKind, Result};
use crate::frame::{self, Frame};
use crate::ids;
use crate::link::Stream;
use crate::log::{self, Level};
use crate::process::Process;
use crate::registry::Registry;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker that ran this long before it exited is restarted after the
/// shortest back-off again.
const STABLE: Duration = Duration::from_secs(10);
/// Where the kernel lacks pidfd_open, how often the child is looked at.
const EXIT_POLL: Duration = Duration::from_millis(50);

pub(super) struct Supervisor {
    shared: Arc<Shared>,
    target: Target,
    /// The port a spawned child is told to connect to.
    port: u16,
    child: Option<Process>,
    /// When the child was started, and how many restarts in a row came
    /// after short runs (the back-off's exponent).
    started_at: Instant,
    backoff: u32,
    restarts: u32,
    restart_at: Option<Instant>,
    /// The child is being stopped by the parent: why, and when SIGKILL
    /// follows the SIGTERM it was sent.
    stopping: Option<Stopping>,
    /// The next start replaces a recycled child (not counted as a restart).
    recycling: bool,
}

/// Why the parent stops its child while it serves.
struct Stopping {
    why: String,
    kill_at: Option<Instant>,
    /// The breaker counted the cause already (lost heartbeats), so the
    /// exit that follows is not counted again.
    counted: bool,
    /// A recycle: no call was left in it, and it is started again at once.
    recycle: bool,
}

impl Supervisor {
    pub(super) fn new(shared: Arc<Shared>, target: Target, port: u16) -> Supervisor {
        Supervisor {
            shared,
            target,
            port,
            child: None,
            started_at: Instant::now(),
            backoff: 0,
            restarts: 0,
            restart_at: None,
            stopping: None,
            recycling: false,
        }
    }

    /// Starts the child of a spawning parent.
    pub(super) fn start(&mut self, t: &mut Transport) -> Result<()> {
        match self.target {
            Target::Spawn { .. } => self.start_child(t),
            _ => Ok(()),
        }
    }

    pub(super) fn exit_fd(&self) -> Option<std::os::fd::RawFd> {
        self.child.as_ref().and_then(Process::exit_fd)
    }

    pub(super) fn restart_due(&self, now: Instant) -> bool {
        self.restart_at.is_some_and(|t| now >= t)
    }

    /// Queues a heartbeat and marks it outstanding.
    pub(super) fn queue_heartbeat(&self, out: &mut VecDeque<Frame>, now: Instant) {
        let mut core = self.shared.core.lock();
        self.queue_heartbeat_locked(&mut core.hb, out, now);
    }

    fn queue_heartbeat_locked(&self, hb: &mut Heartbeat, out: &mut VecDeque<Frame>, now: Instant) {
        let id = self.shared.common.ids.next();
        out.push_back(heartbeat(&id));
        hb.outstanding = Some((id, now));
    }

    /// The supervisor's next timer: a heartbeat due or missed, a restart,
    /// a call's deadline, the child's exit where it cannot be waited for.
    pub(super) fn next_timer(&self, core: &Core) -> Option<Instant> {
        let s = &self.shared;
        let mut next = core.calls.next_deadline();
        if let Some((_, sent)) = core.hb.outstanding {
            next = min_opt(next, Some(sent + s.hb_timeout()));
        } else if s.heartbeats_on() && core.up {
            next = min_opt(next, Some(core.hb.next_at));
        }
        next = min_opt(next, self.restart_at);
        if self.child.is_some() {
            match &self.stopping {
                Some(stop) => next = min_opt(next, stop.kill_at),
                None => next = min_opt(next, core.first_overdue().map(|(t, _)| t)),
            }
        }
        if self.child.as_ref().is_some_and(|c| c.exit_fd().is_none()) {
            next = min_opt(next, Some(Instant::now() + EXIT_POLL));
        }
        next
    }

    /// Timers, and the child where its exit cannot be waited for.
    pub(super) fn tick(
        &mut self,
        now: Instant,
        held: &mut Option<Transport>,
        out: &mut VecDeque<Frame>,
    ) {
        if self.child.as_ref().is_some_and(|c| c.exit_fd().is_none()) {
            self.child_exited(out);
        }
        let s = Arc::clone(&self.shared);
        let mut finished = Vec::new();
        {
            let mut core = s.core.lock();
            if let Some((_, sent)) = core.hb.outstanding {
                if now >= sent + s.hb_timeout() {
                    self.heartbeat_missed(&mut core, now, out, &mut finished);
                }
            } else if s.heartbeats_on() && core.up && now >= core.hb.next_at {
                self.queue_heartbeat_locked(&mut core.hb, out, now);
            }
            if self.stopping.is_none() {
                if let Some((t, function)) = core.first_overdue().filter(|(t, _)| now >= *t) {
                    let why = format!(
                        "worker stopped: a handler of '{function}' ran on {} ms after its \
                         call was cancelled or timed out",
                        (now - t + s.options.cancel_grace).as_millis()
                    );
                    s.stats.escalations.fetch_add(1, Ordering::Relaxed);
                    self.stop_child(&mut core, why, false, now, &mut finished);
                }
            }
            if self.recycle_ready(&core) {
                self.recycle(&mut core, now);
            }
            if self.stopping.is_some() {
                // Nothing meant for the stopping worker goes out.
                out.clear();
            }
        }
        s.deliver(finished);
        if let Some(stop) = self.stopping.as_mut() {
            if stop.kill_at.is_some_and(|t| now >= t) {
                stop.kill_at = None;
                if let Some(child) = &self.child {
                    child.signal(libc::SIGKILL);
                }
            }
        }
        if self.restart_due(now) {
            if let Some(t) = held {
                self.restart_at = None;
                self.restart(t, out);
            }
        }
    }

    /// A recycle can go on: the worker answered every call it was sent
    /// before its drain began.
    pub(super) fn recycle_ready(&self, core: &Core) -> bool {
        core.draining && core.calls.unheld() == 0 && self.stopping.is_none()
    }

    /// Stops a drained worker (SIGTERM, SIGKILL after the shutdown grace);
    /// the calls held meanwhile (up to `max_calls_per_worker` of them) wait
    /// in the mailbox for the next one, which its exit starts at once.
    fn recycle(&mut self, core: &mut Core, now: Instant) {
        let s = &self.shared;
        // What is left in the mailbox was meant for this worker (credit,
        // cancels, calls that ended): void.
        core.mailbox.clear();
        core.end_drain(s.options.max_calls_per_worker);
        s.draining.store(core.draining, Ordering::Relaxed);
        if self.child.is_none() {
            // It exited already: its restart takes the held calls.
            return;
        }
        let why = format!(
            "worker recycled after {} calls",
            s.options.max_calls_per_worker
        );
        self.begin_stop(core, why, true, true, now);
    }

    fn heartbeat_missed(
        &mut self,
        core: &mut Core,
        now: Instant,
        out: &mut VecDeque<Frame>,
        finished: &mut Finished,
    ) {
        let s = Arc::clone(&self.shared);
        core.hb.outstanding = None;
        if !core.up {
            // Still starting: ask again until the start-up deadline decides.
            self.queue_heartbeat_locked(&mut core.hb, out, now);
            return;
        }
        s.stats.heartbeat_misses.fetch_add(1, Ordering::Relaxed);
        core.hb.consecutive_misses += 1;
        let misses = core.hb.consecutive_misses;
        let lost = misses >= s.options.heartbeat_max_misses;
        if lost {
            core.hb.consecutive_misses = 0;
        }
        // Lost: look the service up again, and in any case connect afresh
        // (libzmq gives up a connection it dropped over a protocol error).
        core.rediscover = lost || matches!(core.target, Target::Service { .. });
        self.queue_heartbeat_locked(&mut core.hb, out, now);
        log::emit(
            Level::Warn,
            "heartbeat_missed",
            &format!("worker '{}' missed a heartbeat ({misses} in a row)", s.name),
            &[("consecutive", misses.into())],
        );
        if lost {
            s.healthy.store(false, Ordering::Relaxed);
            s.common.breaker.failure(false, "heartbeats lost");
            // A spawned worker that stopped answering is hung: stop it,
            // so it is restarted (or its calls fail) rather than left so.
            if self.child.is_some() && self.stopping.is_none() {
                s.stats.hangs.fetch_add(1, Ordering::Relaxed);
                let why = format!("worker stopped: it missed {misses} heartbeats in a row (hung)");
                self.stop_child(core, why, true, now, finished);
            }
        }
    }

    /// Stops the child while it serves: SIGTERM now, SIGKILL after the
    /// shutdown grace. Its exit then ends the calls in flight in it and
    /// restarts it as any exit does; the handlers of calls that ended
    /// already are not waited for any more.
    /// The calls in flight in it end now with `WorkerExited` (added to
    /// `finished`, for the caller to deliver once the lock is released):
    /// whatever the stopping worker still answers is not taken, and calls
    /// made from now on wait for its restart, as after an exit.
    fn stop_child(
        &mut self,
        core: &mut Core,
        why: String,
        counted: bool,
        now: Instant,
        finished: &mut Finished,
    ) {
        if self.child.is_none() {
            return;
        }
        let s = &self.shared;
        core.calls
            .fail_all(&Error::new(ErrorKind::WorkerExited, why.clone()), finished);
        core.mailbox.clear();
        core.drop_drain();
        s.draining.store(false, Ordering::Relaxed);
        self.begin_stop(core, why, counted, false, now);
    }

    /// Sends the child SIGTERM (SIGKILL follows after the shutdown grace)
    /// and marks it stopping: nothing it still says makes it up again, and
    /// the handlers of calls that ended already are not waited for.
    fn begin_stop(
        &mut self,
        core: &mut Core,
        why: String,
        counted: bool,
        recycle: bool,
        now: Instant,
    ) {
        let Some(child) = &self.child else {
            return;
        };
        let s = &self.shared;
        let (level, event) = match recycle {
            true => (Level::Info, "worker_recycle"),
            false => (Level::Warn, "worker_stopping"),
        };
        log::emit(
            level,
            event,
            &format!("{why} (pid {})", child.pid()),
            &[("pid", child.pid().into())],
        );
        child.signal(libc::SIGTERM);
        core.ending.clear();
        core.hb.outstanding = None;
        core.up = false;
        core.stopping = true;
        s.healthy.store(false, Ordering::Relaxed);
        self.stopping = Some(Stopping {
            why,
            kill_at: Some(now + s.options.shutdown_grace),
            counted,
            recycle,
        });
    }

    fn start_child(&mut self, t: &mut Transport) -> Result<()> {
        let Target::Spawn { program, args } = &self.target else {
            return Ok(());
        };
        let s = &self.shared;
        // The private link, unless turned off (a failure to make one only
        // means the DEALER is used).
        let (stream, theirs) = match s.options.private_link {
            true => Stream::pair(s.options.max_message_size as u64).ok().unzip(),
            false => (None, None),
        };
        let child = Process::spawn(program, args, self.port, theirs.as_ref(), &s.name)?;
        drop(theirs);
        if let Some(stream) = stream {
            t.offer(stream, &s.stats);
        }
        if let Some(fd) = child.exit_fd() {
            let _ = s.set.add(fd, libc::EPOLLIN);
        }
        s.stats
            .worker_pid
            .store(i64::from(child.pid()), Ordering::Relaxed);
        log::emit(
            Level::Info,
            "worker_start",
            &format!("started worker '{}' (pid {})", s.name, child.pid()),
            &[("pid", child.pid().into()), ("port", self.port.into())],
        );
        self.child = Some(child);
        self.started_at = Instant::now();
        Ok(())
    }

    /// The child is gone, if it is: every call in flight or waiting fails
    /// with its exit status; a restart is scheduled, or the worker is dead.
    pub(super) fn child_exited(&mut self, out: &mut VecDeque<Frame>) {
        let Some(status) = self.child.as_mut().and_then(Process::try_exit) else {
            return;
        };
        let Some(child) = self.child.take() else {
            return;
        };
        let s = Arc::clone(&self.shared);
        if let Some(fd) = child.exit_fd() {
            let _ = s.set.remove(fd);
        }
        let stopping = self.stopping.take();
        let recycled = stopping.as_ref().is_some_and(|stop| stop.recycle);
        let message = match &stopping {
            Some(stop) => format!("{}; {}", stop.why, child.exit_message(status)),
            None => child.exit_message(status),
        };
        let pid = child.pid();
        drop(child);
        s.stats.worker_pid.store(0, Ordering::Relaxed);
        s.healthy.store(false, Ordering::Relaxed);
        log::emit(
            if recycled { Level::Info } else { Level::Warn },
            "worker_exit",
            &format!("worker '{}' (pid {pid}) {message}", s.name),
            &[
                ("pid", pid.into()),
                ("status", crate::process::describe(status).into()),
            ],
        );
        let e = Error::new(ErrorKind::WorkerExited, message);
        let restart = recycled || self.restarts < s.options.auto_restart;
        // Whatever was meant for the old process is void.
        out.clear();
        let mut finished = Vec::new();
        let (ready, poke, last) = {
            let mut core = s.core.lock();
            // Calls made since the parent began to stop it were never sent
            // to it: they wait for the restart, as calls made during one do.
            if stopping.is_none() || !restart {
                core.calls.fail_all(&e, &mut finished);
                core.mailbox.clear();
                core.drop_drain();
                s.draining.store(false, Ordering::Relaxed);
            }
            if !recycled {
                core.served = 0;
            }
            core.ending.clear();
            core.hb.outstanding = None;
            core.up = false;
            core.stopping = false;
            if !core.ready {
                core.closing = true;
            } else if !restart {
                core.dead = Some(e.clone());
            }
            let last = core.dead.is_some() && s.died();
            (core.ready, core.ask_reclaim(), last)
        };
        s.poke(poke);
        s.deliver(finished);
        if !ready {
            s.set_readiness(super::Readiness::Failed(e));
            return;
        }
        if !stopping.is_some_and(|stop| stop.counted) {
            s.common.breaker.failure(false, &e.message);
        }
        if recycled {
            self.recycling = true;
            self.restart_at = Some(Instant::now());
        } else if restart {
            // 100 ms, doubling per restart up to 6.4 s; a worker that ran for
            // STABLE before it exited starts the doubling again.
            if self.started_at.elapsed() >= STABLE {
                self.backoff = 0;
            }
            let backoff = Duration::from_millis(100u64 << self.backoff.min(6));
            self.backoff += 1;
            self.restart_at = Some(Instant::now() + backoff);
        } else if s.options.auto_restart > 0 && last {
            s.common.breaker.force_open("worker restart limit reached");
        }
    }

    /// Starts the child again, on a fresh DEALER: nothing sent towards the
    /// old process (libzmq may not have noticed its end yet) can be taken
    /// for the new one's. Calls made meanwhile wait in the mailbox until
    /// the new child answers its first heartbeat.
    fn restart(&mut self, t: &mut Transport, out: &mut VecDeque<Frame>) {
        let s = Arc::clone(&self.shared);
        if std::mem::take(&mut self.recycling) {
            s.stats.recycles.fetch_add(1, Ordering::Relaxed);
        } else {
            self.restarts += 1;
            s.stats.restarts.fetch_add(1, Ordering::Relaxed);
            log::emit(
                Level::Warn,
                "worker_restart",
                &format!("restarting worker '{}' (restart {})", s.name, self.restarts),
                &[("restart", self.restarts.into())],
            );
        }
        let fresh = transport::dealer(&s.options).and_then(|socket| {
            let port = transport::bind(&socket, &s.options)?;
            t.replace_socket(socket, &s.stats)?;
            Ok(port)
        });
        let started = fresh.and_then(|port| {
            self.port = port;
            self.start_child(t)
        });
        match started {
            Ok(()) => self.queue_heartbeat(out, Instant::now()),
            Err(e) => {
                let mut finished = Vec::new();
                let last = {
                    let mut core = s.core.lock();
                    core.calls.fail_all(&e, &mut finished);
                    core.mailbox.clear();
                    core.dead = Some(e.clone());
                    s.died()
                };
                s.deliver(finished);
                if last {
                    s.common.breaker.force_open(&e.message);
                }
            }
        }
    }

    /// Stops the child: the protocol's own `shutdown` first, so a worker can
    /// stop cleanly; SIGTERM only if it is still there a moment later.
    pub(super) fn shutdown(&mut self, t: Option<Transport>) {
        let s = &self.shared;
        s.set_readiness(super::Readiness::Failed(Error::closed()));
        if let Some(mut child) = self.child.take() {
            if let Some(mut t) = t {
                let id = s.common.ids.next();
                let payload = frame::encode(96, |b| Encoder::new(b).shutdown(ids::as_str(&id)));
                if t.send_now(payload, &s.stats) {
                    let polite = s.options.shutdown_grace.min(Duration::from_millis(500));
                    child.wait_exit(polite);
                }
            }
            let status = child.terminate(s.options.shutdown_grace);
            log::emit(
                Level::Info,
                "worker_stop",
                &format!(
                    "stopped worker '{}' (pid {}, {})",
                    s.name,
                    child.pid(),
                    status.map_or_else(|| "not reaped".to_owned(), crate::process::describe)
                ),
                &[("pid", child.pid().into())],
            );
        }
        s.stats.worker_pid.store(0, Ordering::Relaxed);
    }
}

/// After a failure: a service may have restarted on another port (look it
/// up again and follow it), and an endpoint's connection may be gone for
/// good (libzmq does not reconnect after a protocol error such as an
/// oversized frame), so connect afresh.
pub(super) fn rediscover(target: &mut Target, socket: &zmq::Socket) {
    let (label, endpoint) = match target {
        Target::Spawn { .. } => return,
        Target::Endpoint(ep) => (ep.clone(), ep),
        Target::Service { id, endpoint } => (id.clone(), endpoint),
    };
    let fresh = match Registry::for_user().ok().and_then(|r| r.lookup(&label)) {
        Some(entry) => format!("tcp://127.0.0.1:{}", entry.port),
        None => endpoint.clone(),
    };
    let _ = socket.disconnect(endpoint);
    if socket.connect(&fresh).is_ok() {
        if fresh != *endpoint {
            log::emit(
                Level::Info,
                "service_moved",
                &format!("service '{label}' moved from {endpoint} to {fresh}"),
                &[],
            );
        }
        *endpoint = fresh;
    }
}
