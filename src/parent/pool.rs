//! The handle: one worker, or a pool of copies of one program, and which
//! member takes each call.
//!
//! Every member is a whole connection of its own (driver thread,
//! transport, child, heartbeats, restarts), so a member's trouble stays
//! in it. What they share is in [`Common`]: call ids, the breaker, the
//! count of members still alive. Picking a member reads two atomics per
//! member and takes no lock.

use super::{Common, Done, Member, Outcome, Stream, Target};
use crate::breaker::State as BreakerState;
use crate::error::{Error, Result};
use crate::is_endpoint;
use crate::options::Options;
use crate::registry::Registry;
use crate::stats::{Histogram, Stats};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A connection to one worker, or to a pool of workers (the option
/// `workers`). Thread-safe: any number of threads may call.
pub struct Parent {
    members: Box<[Member]>,
    /// Where the next look for the least loaded member starts, so members
    /// with equal loads take turns.
    turn: AtomicUsize,
    name: String,
}

fn program_name(program: &str) -> String {
    std::path::Path::new(program)
        .file_name()
        .map_or_else(|| program.to_owned(), |n| n.to_string_lossy().into_owned())
}

impl Parent {
    /// Binds a DEALER per worker, starts `options.workers` copies of
    /// `program` and returns once every one has answered a heartbeat; if
    /// one cannot start, all are stopped and its error is returned.
    pub fn spawn(program: &str, args: &[String], options: Options) -> Result<Parent> {
        if program.is_empty() {
            return Err(Error::invalid("program must not be empty"));
        }
        let target = Target::Spawn {
            program: program.to_owned(),
            args: args.to_vec(),
        };
        let name = if options.name.is_empty() {
            program_name(program)
        } else {
            options.name.clone()
        };
        Self::start(target, options, name)
    }

    /// Connects to a running worker: `target` is an endpoint
    /// (`tcp://host:port`) or a service id looked up in the registry (polled
    /// up to the connect timeout). Returns once the worker has answered a
    /// heartbeat. One worker only: the registry has one entry per id.
    pub fn connect(target: &str, options: Options) -> Result<Parent> {
        if options.workers != 1 {
            return Err(Error::invalid(format!(
                "workers = {}: a pool is spawned; a service id or an endpoint is one worker",
                options.workers
            )));
        }
        let started = Instant::now();
        let target = if is_endpoint(target) {
            Target::Endpoint(target.to_owned())
        } else {
            let entry = Registry::for_user()?.discover(target, options.connect_timeout)?;
            Target::Service {
                id: target.to_owned(),
                endpoint: format!("tcp://127.0.0.1:{}", entry.port),
            }
        };
        let mut options = options;
        // Discovery and the first heartbeat share one connect timeout.
        options.connect_timeout = options
            .connect_timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let name = match (&target, options.name.is_empty()) {
            (_, false) => options.name.clone(),
            (Target::Service { id, .. }, true) => id.clone(),
            (Target::Endpoint(ep), true) | (Target::Spawn { program: ep, .. }, true) => ep.clone(),
        };
        Self::start(target, options, name)
    }

    /// Starts every member at once, then waits for each.
    fn start(target: Target, options: Options, name: String) -> Result<Parent> {
        let n = options.workers as usize;
        let common = Common::new(&options, n);
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let label = if n == 1 {
                name.clone()
            } else {
                format!("{name}[{i}]")
            };
            let launched = Member::launch(
                target.clone(),
                options.clone(),
                label,
                std::sync::Arc::clone(&common),
            );
            match launched {
                Ok(m) => members.push(m),
                Err(e) => {
                    close_all(&members);
                    return Err(e);
                }
            }
        }
        // A member that fails closes itself; the others are stopped here.
        if let Some(e) = members.iter().find_map(|m| m.wait_ready().err()) {
            close_all(&members);
            return Err(e);
        }
        Ok(Parent {
            members: members.into_boxed_slice(),
            turn: AtomicUsize::new(0),
            name,
        })
    }

    /// The member for the next call: among those that take calls (up, not
    /// being recycled), the one with the fewest calls in flight; if none
    /// does, the least loaded of those still coming back (its calls wait
    /// for its restart); if all are gone, any (its calls fail with the
    /// reason it is gone).
    fn pick(&self) -> &Member {
        let members = &*self.members;
        if members.len() == 1 {
            return &members[0];
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut best = ((true, true, i64::MAX), 0);
        for k in 0..members.len() {
            let i = (start + k) % members.len();
            let m = &members[i];
            let key = (m.is_gone(), !m.takes_calls(), m.in_flight());
            if key < best.0 {
                best = (key, i);
            }
        }
        &members[best.1]
    }

    /// Calls `function` with `args` (one MessagePack array) and blocks for
    /// its result. Refused on a driver thread (from an async call's
    /// completion): the driver would wait for itself.
    pub fn call(&self, function: &str, args: &[u8], timeout_ms: i64) -> Outcome {
        self.refuse_on_driver()?;
        self.pick().call(function, args, timeout_ms)
    }

    /// A blocking call from a completion, which runs on a driver thread,
    /// would wait for a thread that could answer it (its own driver), or
    /// hold up every call of that driver's worker (another's).
    fn refuse_on_driver(&self) -> Result<()> {
        let me = std::thread::current().id();
        if self.members.iter().any(|m| m.driver_thread == me) {
            return Err(Error::invalid(
                "a blocking call from a completion callback would wait forever \
                 (completions run on the parent's driver thread): start it with an async call",
            ));
        }
        Ok(())
    }

    /// Starts a call; `done` runs exactly once, on a driver thread of the
    /// parent (or, if the parent closes first, on the thread that closes
    /// it), when it ends. It must not block. When this returns an error,
    /// `done` is never run.
    pub fn call_async(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        done: Done,
    ) -> Result<()> {
        self.call_numbered(function, args, timeout_ms, done, |_| {})
    }

    /// [`Parent::call_async`] that also gives the call's number, for
    /// [`Parent::cancel`].
    pub fn call_start(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        done: Done,
    ) -> Result<u64> {
        let mut number = 0;
        self.call_numbered(function, args, timeout_ms, done, |n| number = n)?;
        Ok(number)
    }

    /// Starts a call, handing its number to `numbered` before the call is
    /// submitted, so before it can end.
    pub(crate) fn call_numbered(
        &self,
        function: &str,
        args: &[u8],
        timeout_ms: i64,
        done: Done,
        numbered: impl FnOnce(u64),
    ) -> Result<()> {
        self.pick()
            .call_numbered(function, args, timeout_ms, done, numbered)
    }

    /// Cancels call `n` (from [`Parent::call_start`]): if it is still in
    /// flight it completes at once with `Cancelled`, and its worker is told
    /// (a `cancel` message), so a handler that watches for it can stop; a
    /// spawned worker whose handler runs on past the cancel grace is
    /// stopped. Whether the call was still in flight.
    pub fn cancel(&self, n: u64) -> bool {
        self.members.iter().any(|m| m.cancel(n))
    }

    /// Calls `function` as a stream (see [`Stream`]): its items arrive in
    /// order, at most `stream_credit` ahead of what the consumer took.
    /// `timeout_ms` (as for [`Parent::call`]) limits the wait for the first
    /// item and then between items.
    pub fn stream(&self, function: &str, args: &[u8], timeout_ms: i64) -> Result<Stream> {
        self.pick().stream(function, args, timeout_ms)
    }

    /// Sends one heartbeat to every worker and waits for the echoes; the
    /// slowest round trip, or the first failure. Not subject to the circuit
    /// breaker; refused on a driver thread, like [`Parent::call`].
    pub fn ping(&self, timeout: Duration) -> Result<Duration> {
        self.refuse_on_driver()?;
        let mut slowest = Duration::ZERO;
        for m in self.members.iter() {
            slowest = slowest.max(m.ping(timeout)?);
        }
        Ok(slowest)
    }

    /// Ends the connections: pending calls fail with `Closed`, every
    /// spawned worker is terminated and reaped. Idempotent.
    pub fn close(&self) {
        close_all(&self.members);
    }

    /// The first worker's counters (of a pool, `stats_json` has the totals).
    pub fn stats(&self) -> &Stats {
        self.members[0].stats()
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.members[0].shared.common.breaker.state()
    }

    /// Whether a worker is up and answering heartbeats.
    pub fn is_healthy(&self) -> bool {
        self.members.iter().any(Member::is_healthy)
    }

    /// The metrics as one JSON object: totals over the workers, and each
    /// worker's own in `workers`.
    pub fn stats_json(&self) -> String {
        let members = &*self.members;
        let first = &members[0].shared;
        let b = &first.common.breaker;
        let sum = |field: fn(&Stats) -> &AtomicU64| -> u64 {
            members
                .iter()
                .map(|m| field(m.stats()).load(Ordering::Relaxed))
                .sum()
        };
        let sum_i = |field: fn(&Stats) -> i64| -> i64 {
            members.iter().map(|m| field(m.stats()).max(0)).sum()
        };
        let latency = Histogram::merged(members.iter().map(|m| &m.stats().latency));
        let rtt = Histogram::merged(members.iter().map(|m| &m.stats().heartbeat_rtt));
        let s0 = &first.stats;
        json!({
            "worker": self.name,
            "requests_total": sum(|s| &s.requests_total),
            "requests_success": sum(|s| &s.requests_success),
            "requests_failed": sum(|s| &s.requests_failed),
            "remote_errors": sum(|s| &s.remote_errors),
            "timeouts": sum(|s| &s.timeouts),
            "cancels": sum(|s| &s.cancels),
            "escalations": sum(|s| &s.escalations),
            "hangs": sum(|s| &s.hangs),
            "streams_open": sum_i(|s| s.streams_open.load(Ordering::Relaxed)),
            "stream_items": sum(|s| &s.stream_items),
            "in_flight": sum_i(|s| s.in_flight.load(Ordering::Relaxed)),
            "latency_avg_ms": latency.mean_ms(),
            "latency_p50_ms": latency.quantile_ms(0.50),
            "latency_p95_ms": latency.quantile_ms(0.95),
            "latency_p99_ms": latency.quantile_ms(0.99),
            "heartbeat_rtt_last_ms": s0.heartbeat_rtt_last_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "heartbeat_rtt_avg_ms": rtt.mean_ms(),
            "heartbeat_misses": sum(|s| &s.heartbeat_misses),
            "healthy": self.is_healthy(),
            "circuit_state": b.state().as_str(),
            "circuit_trips": b.trips(),
            "consecutive_failures": b.failures(),
            "restarts": sum(|s| &s.restarts),
            "recycles": sum(|s| &s.recycles),
            "dropped_malformed": sum(|s| &s.dropped_malformed),
            "dropped_unknown": sum(|s| &s.dropped_unknown),
            "stalls": sum(|s| &s.stalls),
            "worker_pid": s0.worker_pid.load(Ordering::Relaxed),
            "transport": if s0.private_link.load(Ordering::Relaxed) { "link" } else { "zmq" },
            "workers": Value::Array(members.iter().map(Member::stats_entry).collect()),
        })
        .to_string()
    }
}

/// Closes members at once: each is told first, then each is waited for,
/// so their workers stop side by side.
fn close_all(members: &[Member]) {
    for m in members {
        m.begin_close();
    }
    for m in members {
        m.join();
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        self.close();
    }
}
