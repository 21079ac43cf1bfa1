//! What the driver owns: the DEALER, and for a spawned worker of this
//! library the private link, which carries everything once the worker has
//! said hello on it (see [`crate::link`]).
//!
//! A transport is registered in the driver's poll set while it rests there
//! or the driver holds it, and unregistered while a blocking call borrows
//! it (see `driver.rs`): whoever holds it is the only one woken by its
//! descriptors.

use crate::error::{Error, Result};
use crate::frame::{self, Frame};
use crate::link::{self, Recv, Stream};
use crate::log::{self, Level};
use crate::options::Options;
use crate::stats::Stats;
use crate::wake::WatchSet;
use crate::{bound_port, zmq_context};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub(super) struct Transport {
    pub(super) socket: zmq::Socket,
    zmq_fd: RawFd,
    stream: Option<Stream>,
    /// The worker said hello on the stream: it carries the traffic, and
    /// only strays arrive on the DEALER.
    direct: bool,
    /// The driver's poll set, and whether this transport's descriptors are
    /// in it (and the stream's writability with them).
    set: Arc<WatchSet>,
    registered: bool,
    registered_out: bool,
    /// The largest payload accepted (`max_message_size`).
    max: u64,
}

/// What arrived from the worker.
pub(super) enum Arrival {
    Payload(Frame),
    /// A payload over the maximum message size, unread but for its
    /// length and first bytes (at most [`link::HEAD`]).
    Oversized {
        len: u64,
        head: Vec<u8>,
    },
}

/// What reading the stream led to, for [`Transport::next_payload`].
enum FromStream {
    Arrival(Arrival),
    Drained,
    /// Not a link of ours (no hello first), or its peer is gone.
    Lost(&'static str),
}

/// A DEALER set up as the protocol's parent socket.
pub(super) fn dealer(options: &Options) -> Result<zmq::Socket> {
    let socket = zmq_context().socket(zmq::DEALER)?;
    socket.set_linger(0)?;
    socket.set_maxmsgsize(crate::zmq_max_message_size(options.max_message_size))?;
    socket.set_sndhwm(0)?;
    socket.set_rcvhwm(0)?;
    Ok(socket)
}

/// Binds `socket` on a free port of the configured host; returns the port.
pub(super) fn bind(socket: &zmq::Socket, options: &Options) -> Result<u16> {
    socket
        .bind(&format!("tcp://{}:*", options.bind_host))
        .map_err(|e| Error::io(format!("cannot bind {}: {e}", options.bind_host)))?;
    bound_port(socket)
}

impl Transport {
    pub(super) fn new(socket: zmq::Socket, set: Arc<WatchSet>, max: u64) -> Result<Transport> {
        let zmq_fd = socket.get_fd()?;
        let mut t = Transport {
            socket,
            zmq_fd,
            stream: None,
            direct: false,
            set,
            registered: false,
            registered_out: false,
            max,
        };
        t.register();
        Ok(t)
    }

    /// Replaces the DEALER (a fresh one for a restarted worker: nothing
    /// sent to the old process can reach the new one).
    pub(super) fn replace_socket(&mut self, socket: zmq::Socket, stats: &Stats) -> Result<()> {
        let zmq_fd = socket.get_fd()?;
        let registered = self.registered;
        self.unregister();
        self.forget_stream(stats, None);
        self.socket = socket;
        self.zmq_fd = zmq_fd;
        if registered {
            self.register();
        }
        Ok(())
    }

    pub(super) fn zmq_fd(&self) -> RawFd {
        self.zmq_fd
    }

    /// Puts this transport's descriptors in the driver's poll set (after a
    /// borrow): the DEALER's `ZMQ_FD` and the stream, with its
    /// writability while bytes wait to be written.
    pub(super) fn register(&mut self) {
        if !self.registered {
            let _ = self.set.add(self.zmq_fd, libc::EPOLLIN);
            if let Some(s) = &self.stream {
                let _ = self.set.add(s.fd(), libc::EPOLLIN);
            }
            self.registered = true;
            self.registered_out = false;
        }
        self.settle();
    }

    /// Takes this transport's descriptors out of the driver's poll set (a
    /// borrower polls them itself).
    pub(super) fn unregister(&mut self) {
        if self.registered {
            let _ = self.set.remove(self.zmq_fd);
            if let Some(s) = &self.stream {
                let _ = self.set.remove(s.fd());
            }
            self.registered = false;
        }
    }

    /// While registered: ask for the stream's writability exactly while
    /// bytes wait to be written.
    pub(super) fn settle(&mut self) {
        let Some(s) = &self.stream else { return };
        let want_out = self.direct && s.wants_write();
        if self.registered && want_out != self.registered_out {
            let events = libc::EPOLLIN | if want_out { libc::EPOLLOUT } else { 0 };
            if self.set.modify(s.fd(), events).is_ok() {
                self.registered_out = want_out;
            }
        }
    }

    /// A fresh stream to a worker just started: used once it says hello.
    pub(super) fn offer(&mut self, stream: Stream, stats: &Stats) {
        self.forget_stream(stats, None);
        if self.registered {
            if let Err(e) = self.set.add(stream.fd(), libc::EPOLLIN) {
                log::emit(
                    Level::Warn,
                    "link_unwatched",
                    &format!("cannot add the private link to the poll set: {e}"),
                    &[],
                );
            }
        }
        self.stream = Some(stream);
    }

    fn forget_stream(&mut self, stats: &Stats, why: Option<&str>) {
        if let Some(stream) = self.stream.take() {
            if self.registered {
                let _ = self.set.remove(stream.fd());
            }
            if let Some(why) = why {
                log::emit(Level::Debug, "link_closed", why, &[]);
            }
        }
        self.direct = false;
        self.registered_out = false;
        stats.private_link.store(false, Ordering::Relaxed);
    }

    fn go_direct(&mut self, stats: &Stats) {
        if !self.direct {
            self.direct = true;
            stats.private_link.store(true, Ordering::Relaxed);
        }
    }

    /// While the stream is in use, drops what reached the DEALER (nobody
    /// of ours sends there), so it cannot pile up in libzmq. Ends on a
    /// failed recv, so the DEALER's `ZMQ_FD` signals the next arrival.
    pub(super) fn drop_strays(&mut self, stats: &Stats) {
        if !self.direct {
            return;
        }
        while let Some(f) = Frame::recv(&mut self.socket, zmq::DONTWAIT) {
            if !f.more() {
                stats.dropped_unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends what is queued, oldest first. On the DEALER it stops at the
    /// first refusal (no peer yet), leaving that payload and the rest in `out`.
    pub(super) fn send_queued(&mut self, out: &mut VecDeque<Frame>, stats: &Stats) {
        if out.is_empty() {
            return;
        }
        if let (true, Some(stream)) = (self.direct, &mut self.stream) {
            for p in out.drain(..) {
                stream.send(p);
            }
            if stream.flush().is_err() {
                self.forget_stream(stats, Some("the worker closed the private link"));
            }
            return;
        }
        while let Some(p) = out.pop_front() {
            if let Err(p) = try_send(&mut self.socket, p) {
                out.push_front(p);
                break;
            }
        }
    }

    /// Writes what the stream still holds (it was writable).
    pub(super) fn flush(&mut self, stats: &Stats) {
        if let Some(stream) = &mut self.stream {
            if stream.flush().is_err() {
                self.forget_stream(stats, Some("the worker closed the private link"));
            }
        }
    }

    /// The next payload from the worker, or `None` when nothing more is
    /// waiting. Frames that are not `[empty, payload]` are counted and dropped.
    pub(super) fn next_payload(&mut self, stats: &Stats) -> Option<Arrival> {
        if self.stream.is_some() {
            match self.read_stream(stats) {
                FromStream::Arrival(a) => return Some(a),
                FromStream::Drained if self.direct => return None,
                FromStream::Drained => {}
                FromStream::Lost(why) => self.forget_stream(stats, Some(why)),
            }
        }
        loop {
            let first = Frame::recv(&mut self.socket, zmq::DONTWAIT)?;
            if !first.is_empty() || !first.more() {
                self.drop_rest(first.more(), stats);
                continue;
            }
            let payload = Frame::recv(&mut self.socket, zmq::DONTWAIT)?;
            if payload.more() {
                self.drop_rest(true, stats);
                continue;
            }
            if self.stream.is_some() {
                // A worker of another implementation answers on the port.
                self.forget_stream(stats, None);
            }
            // libzmq reads messages up to a ceiling above the limit (see
            // `zmq_max_message_size`): the limit is held here, as on the link.
            if payload.len() as u64 > self.max {
                let head = payload.bytes()[..payload.len().min(link::HEAD)].to_vec();
                let len = payload.len() as u64;
                return Some(Arrival::Oversized { len, head });
            }
            return Some(Arrival::Payload(payload));
        }
    }

    fn read_stream(&mut self, stats: &Stats) -> FromStream {
        loop {
            let Some(stream) = &mut self.stream else {
                return FromStream::Drained;
            };
            match stream.recv() {
                Recv::Message(p) if p.bytes() == link::HELLO => self.go_direct(stats),
                Recv::Message(p) if self.direct => return FromStream::Arrival(Arrival::Payload(p)),
                Recv::Message(_) => return FromStream::Lost("no hello on the private link"),
                Recv::Oversized { len, head } if self.direct => {
                    return FromStream::Arrival(Arrival::Oversized { len, head })
                }
                Recv::Oversized { .. } => return FromStream::Lost("no hello on the private link"),
                Recv::Empty => return FromStream::Drained,
                Recv::Closed => return FromStream::Lost("the worker closed the private link"),
            }
        }
    }

    /// Counts a message with the wrong frames and discards what is left of it.
    fn drop_rest(&mut self, mut more: bool, stats: &Stats) {
        stats.dropped_malformed.fetch_add(1, Ordering::Relaxed);
        while more {
            more = Frame::recv(&mut self.socket, zmq::DONTWAIT).is_some_and(|f| f.more());
        }
    }

    /// What a borrower sleeps on for the worker's messages: the stream once
    /// in use (and its writability while it has unsent bytes) with the
    /// DEALER's `ZMQ_FD` for strays, otherwise the DEALER's `ZMQ_FD` and a
    /// stream not yet said hello on. The first item carries replies.
    pub(super) fn poll_items(&self) -> [(RawFd, libc::c_short); 2] {
        match (&self.stream, self.direct) {
            (Some(s), true) => {
                let out = if s.wants_write() { libc::POLLOUT } else { 0 };
                [(s.fd(), libc::POLLIN | out), (self.zmq_fd, libc::POLLIN)]
            }
            (Some(s), false) => [(self.zmq_fd, libc::POLLIN), (s.fd(), libc::POLLIN)],
            (None, _) => [(self.zmq_fd, libc::POLLIN), (-1, 0)],
        }
    }

    /// Whether the second of [`Transport::poll_items`] is the DEALER, where
    /// only strays arrive.
    pub(super) fn is_direct(&self) -> bool {
        self.direct
    }

    /// Sends one payload at once (the parting `shutdown`); whether it went.
    pub(super) fn send_now(&mut self, payload: Frame, stats: &Stats) -> bool {
        let mut out = VecDeque::from([payload]);
        self.send_queued(&mut out, stats);
        out.is_empty() && !self.stream.as_ref().is_some_and(Stream::wants_write)
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// Sends `[empty, payload]` without blocking; gives the payload back when
/// libzmq has no peer to take it yet.
fn try_send(socket: &mut zmq::Socket, payload: Frame) -> std::result::Result<(), Frame> {
    if frame::send(socket, Frame::empty(), zmq::DONTWAIT | zmq::SNDMORE).is_err() {
        return Err(payload);
    }
    // Once the first frame is accepted the rest of the message is too.
    let _ = frame::send(socket, payload, zmq::DONTWAIT);
    Ok(())
}
