//! Waking and sleeping: a Linux eventfd used to wake a thread that sleeps
//! in poll(2), the poll itself, a socket that event loops watch, an epoll
//! set (the parent's driver sleeps on one), and installing a SIGINT/SIGTERM
//! handler (a worker's, which wakes its driver).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A counter that other threads bump to wake the poller.
#[derive(Debug)]
pub struct Wake {
    fd: OwnedFd,
}

impl Wake {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Wake {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the descriptor readable (async-signal-safe).
    pub fn notify(&self) {
        notify_fd(self.fd.as_raw_fd());
    }

    /// Resets the counter after a wake-up.
    pub fn drain(&self) {
        let mut buf = 0u64;
        // SAFETY: reads 8 bytes into a local u64; EAGAIN when already drained is fine.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut buf as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A descriptor that a notification makes readable, for event loops to
/// watch: one end of a Unix socket pair, since every event loop can watch
/// a socket (libuv, which Node exposes, cannot watch an eventfd). The
/// reader reads what is there (any amount; EAGAIN is fine) to reset it.
#[derive(Debug)]
pub struct Signal {
    read: OwnedFd,
    write: OwnedFd,
}

impl Signal {
    pub fn new() -> io::Result<Self> {
        let (read, write) = unix_stream_pair()?;
        // The reader side never writes.
        // SAFETY: a plain shutdown(2) of a descriptor we own.
        unsafe { libc::shutdown(read.as_raw_fd(), libc::SHUT_WR) };
        Ok(Signal { read, write })
    }

    /// Makes the read end readable (a byte; a full buffer already is).
    pub fn notify(&self) {
        let byte = 1u8;
        // SAFETY: sends one byte from a local; EAGAIN (full) still leaves it readable.
        unsafe {
            libc::send(
                self.write.as_raw_fd(),
                (&byte as *const u8).cast(),
                1,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    }

    /// The end to watch and read.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// A connected pair of Unix stream sockets, non-blocking and close-on-exec.
pub fn unix_stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    let flags = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: fds has room for the two descriptors; the result is checked.
    if unsafe { libc::socketpair(libc::AF_UNIX, flags, 0, fds.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes 1 to an eventfd. Only calls write(2), so a signal handler may use it.
pub fn notify_fd(fd: RawFd) {
    let one = 1u64;
    // SAFETY: writes 8 bytes from a local u64; a full counter (EAGAIN) already wakes.
    unsafe { libc::write(fd, (&one as *const u64).cast(), std::mem::size_of::<u64>()) };
}

/// Sleeps in poll(2) until one of the descriptors is ready for its events
/// (`POLLIN`, `POLLOUT`) or `timeout_ms` passes (< 0: no limit); says
/// which are ready (an error or hang-up counts as ready). Negative fds are
/// ignored.
///
/// For a ZeroMQ socket pass its `ZMQ_FD` with `POLLIN`, and only right
/// after a `recv(DONTWAIT)` on it failed with EAGAIN with no other socket
/// call since: that failure processed the socket's pending commands, so
/// the descriptor becomes readable again exactly when something new
/// arrives. This skips what `zmq_poll` adds per call (a `ZMQ_EVENTS` query
/// and a zero-timeout poll before the real one, each a system call).
pub fn wait_ready<const N: usize>(fds: [(RawFd, libc::c_short); N], timeout_ms: i64) -> [bool; N] {
    let mut items = fds.map(|(fd, events)| libc::pollfd {
        fd,
        events,
        revents: 0,
    });
    let timeout = timeout_ms.clamp(-1, i64::from(libc::c_int::MAX)) as libc::c_int;
    // SAFETY: N pollfds on the stack; the kernel writes only their revents.
    let n = unsafe { libc::poll(items.as_mut_ptr(), N as libc::nfds_t, timeout) };
    if n <= 0 {
        return [false; N];
    }
    items.map(|p| p.revents & (p.events | libc::POLLERR | libc::POLLHUP) != 0)
}

/// An epoll set: descriptors that come and go (a borrower takes a
/// transport's out while it polls them itself), slept on as one.
#[derive(Debug)]
pub struct WatchSet {
    fd: OwnedFd,
}

impl WatchSet {
    pub fn new() -> io::Result<Self> {
        // SAFETY: no memory arguments; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(WatchSet {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Watches `fd` for `events` (`libc::EPOLLIN`, `EPOLLOUT`).
    pub fn add(&self, fd: RawFd, events: i32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events)
    }

    /// Changes what a watched `fd` is watched for.
    pub fn modify(&self, fd: RawFd, events: i32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events)
    }

    /// Stops watching `fd` (before it is closed).
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    }

    /// Sleeps until a watched descriptor is ready or `timeout_ms` passes
    /// (< 0: no limit); writes the ready descriptors into `ready` and
    /// returns how many (0 on a timeout or an interrupted wait).
    pub fn wait(&self, ready: &mut [RawFd], timeout_ms: i64) -> usize {
        const MAX: usize = 8;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let timeout = timeout_ms.clamp(-1, i64::from(libc::c_int::MAX)) as libc::c_int;
        let max = ready.len().min(MAX) as libc::c_int;
        // SAFETY: the kernel writes at most `max` <= MAX entries of `events`.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout) };
        let n = n.max(0) as usize;
        for (slot, ev) in ready.iter_mut().zip(&events[..n]) {
            *slot = ev.u64 as RawFd;
        }
        n
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: i32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: fd as u64,
        };
        // SAFETY: one epoll_event on the stack, read by the kernel only.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What SIGINT and SIGTERM did before [`on_stop_signals`], to put back.
pub struct SavedActions {
    int: libc::sigaction,
    term: libc::sigaction,
}

/// Makes `handler` run on SIGINT and SIGTERM; what they did before comes
/// back, for [`SavedActions::restore`]. The handler must be
/// async-signal-safe ([`notify_fd`] is).
pub fn on_stop_signals(handler: extern "C" fn(libc::c_int)) -> SavedActions {
    // SAFETY: sigaction with a zeroed struct plus the handler; the previous
    // actions are written into zeroed structs of ours.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        // SA_ONSTACK: runtimes with small goroutine stacks (Go) require it.
        action.sa_flags = libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let mut saved = SavedActions {
            int: std::mem::zeroed(),
            term: std::mem::zeroed(),
        };
        libc::sigaction(libc::SIGINT, &action, &mut saved.int);
        libc::sigaction(libc::SIGTERM, &action, &mut saved.term);
        saved
    }
}

impl SavedActions {
    /// Puts back the actions that [`on_stop_signals`] replaced.
    pub fn restore(self) {
        // SAFETY: actions the kernel handed out, given back as they were.
        unsafe {
            libc::sigaction(libc::SIGINT, &self.int, std::ptr::null_mut());
            libc::sigaction(libc::SIGTERM, &self.term, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{wait_ready, Signal};

    #[test]
    fn a_signal_is_readable_from_notify_until_read() {
        let s = Signal::new().unwrap();
        let readable = || wait_ready([(s.fd(), libc::POLLIN)], 0)[0];
        assert!(!readable());
        s.notify();
        s.notify();
        assert!(readable());
        let mut buf = [0u8; 8];
        // SAFETY: reads into a local buffer of its size.
        let n = unsafe { libc::read(s.fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(n, 2, "one byte per notify");
        assert!(!readable());
    }
}
