//! The private link between a parent and a worker it spawned, when both
//! are this library: one AF_UNIX stream socket pair made at spawn. It
//! carries the protocol's own payloads (the same MessagePack maps), each
//! behind an 8-byte little-endian length, and stands in for the
//! DEALER/ROUTER connection of that one pair of processes.
//!
//! Why: on the libzmq path every message passes through an I/O thread on
//! each side, which costs a thread wake-up per burst and most of the CPU of
//! a small call. Here the threads that encode a call and the ones that
//! decode it read and write the socket themselves, many messages per
//! system call.
//!
//! How a pair agrees on it, without touching the protocol: the parent binds
//! its DEALER and sets `COMLINK_ZMQ_PORT` as always, and passes its end of
//! the pair as `MULTIFROST_LINK=<fd>:<parent pid>`. A worker of this library
//! sends [`HELLO`] on the link and uses nothing else; a worker of another
//! implementation ignores it and connects to the port. The parent uses the
//! link once the hello arrived, and forgets it as soon as anything arrives
//! on its DEALER instead.

use crate::frame::Frame;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The variable that hands a spawned worker its end: `<fd>:<parent pid>`.
pub const ENV: &str = "MULTIFROST_LINK";
/// The first message a worker sends on the link: not a MessagePack map, so
/// it can never be taken for a protocol message.
pub const HELLO: &[u8] = b"multifrost-link/1";
/// Bytes before each payload: its length, little-endian.
const HEADER: usize = 8;
/// The receive buffer; a message that does not fit is read straight into
/// its own frame.
const RX_BUF: usize = 64 * 1024;
/// Bytes of an oversized message kept to tell whose it is: a message names
/// its call in its first fields (see [`crate::codec::peek`]).
pub const HEAD: usize = 4096;
/// Payloads handed to one `sendmsg` at most (two iovecs each).
const TX_BATCH: usize = 256;
/// The send buffer asked for on both ends (the kernel caps it at
/// `net.core.wmem_max`). A Unix socket holds only this much unread, and
/// with the default 208 KiB a 1 MiB message costs five rounds of wake-ups
/// each way; `bench_capi --cases echo1mib` went from 1278-1329 to
/// 2424-2610 echoes/s with 4 MiB (wmem_max is 4 MiB on that machine).
const SEND_BUFFER: libc::c_int = 4 << 20;

/// What [`Stream::recv`] found.
pub enum Recv {
    Message(Frame),
    /// Nothing complete is waiting: poll for readability before asking again.
    Empty,
    /// A message longer than the limit: its length and first bytes (at
    /// most [`HEAD`]); the rest is skipped unread, and the stream goes on.
    Oversized {
        len: u64,
        head: Vec<u8>,
    },
    /// The peer closed its end (or the socket failed): the link is gone.
    Closed,
}

/// One end of the link, driven by one thread at a time.
pub struct Stream {
    fd: OwnedFd,
    /// Largest payload accepted; longer ones are skipped.
    max: u64,
    rx: Box<[u8]>,
    /// The unread bytes are `rx[rx_start..rx_end]`.
    rx_start: usize,
    rx_end: usize,
    /// The last read filled less than it could: what was waiting has been
    /// read, so the next `Empty` needs no read that would find nothing.
    drained: bool,
    /// A message larger than the buffer, read in place: the frame and how
    /// many of its bytes have arrived.
    big: Option<(Frame, usize)>,
    /// Bytes of a skipped (oversized) message still to discard.
    skip: u64,
    /// The oversized message being skipped, while its first bytes are
    /// gathered: its length and those bytes.
    head: Option<(u64, Vec<u8>)>,
    /// Payloads to write, each with its header, oldest first.
    tx: VecDeque<([u8; HEADER], Frame)>,
    /// Bytes of `tx`'s front entry already written.
    tx_sent: usize,
    tx_bytes: usize,
}

impl Stream {
    /// A connected pair: this process's end, and the end for the child
    /// (close-on-exec like every descriptor here; the spawn clears that in
    /// the child alone, see [`crate::process::Process::spawn`]).
    pub fn pair(max: u64) -> io::Result<(Stream, OwnedFd)> {
        let (ours, theirs) = crate::wake::unix_stream_pair()?;
        for fd in [&ours, &theirs] {
            set_send_buffer(fd.as_raw_fd(), SEND_BUFFER);
        }
        Ok((Stream::new(ours, max), theirs))
    }

    /// This worker's end of a link from its parent, when `MULTIFROST_LINK`
    /// names one: the descriptor must be a Unix stream socket, and the
    /// parent pid must be this process's parent (a grandchild that inherited
    /// the variable is not the worker it was meant for). `None` otherwise:
    /// the worker then connects to `COMLINK_ZMQ_PORT` as the protocol says.
    pub fn from_env(max: u64) -> Option<Stream> {
        let raw = std::env::var(ENV).ok()?;
        let (fd, pid) = raw.split_once(':')?;
        let fd: RawFd = fd.parse().ok().filter(|&fd| fd > 2)?;
        let pid: libc::pid_t = pid.parse().ok()?;
        // SAFETY: getppid has no arguments.
        if unsafe { libc::getppid() } != pid || !is_unix_stream(fd) {
            return None;
        }
        // SAFETY: fcntl on a descriptor checked above; no memory arguments.
        unsafe {
            // Not passed on to this worker's own children.
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
                return None;
            }
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) != 0 {
                return None;
            }
        }
        // SAFETY: the descriptor was inherited for this worker alone, and the
        // caller takes it once per process (see `worker::take_link`).
        Some(Stream::new(unsafe { OwnedFd::from_raw_fd(fd) }, max))
    }

    fn new(fd: OwnedFd, max: u64) -> Stream {
        Stream {
            fd,
            max,
            rx: vec![0; RX_BUF].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            drained: false,
            big: None,
            skip: 0,
            head: None,
            tx: VecDeque::new(),
            tx_sent: 0,
            tx_bytes: 0,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn set_max(&mut self, max: u64) {
        self.max = max;
    }

    /// The next whole message. Reads the socket only when nothing complete
    /// is buffered, many messages per read.
    pub fn recv(&mut self) -> Recv {
        loop {
            let fd = self.fd.as_raw_fd();
            if let Some((frame, filled)) = &mut self.big {
                let want = frame.len() - *filled;
                // SAFETY: the frame's bytes from `filled` on are ours to fill.
                let dst = unsafe { frame.bytes_mut() };
                match read(fd, &mut dst[*filled..]) {
                    Ok(0) => return Recv::Closed,
                    Ok(n) => {
                        *filled += n;
                        if n == want {
                            let (frame, _) = self.big.take().expect("checked above");
                            return Recv::Message(frame);
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Recv::Empty,
                    Err(_) => return Recv::Closed,
                }
            }
            let avail = self.rx_end - self.rx_start;
            if self.skip > 0 && avail > 0 {
                let n = avail.min(self.skip as usize);
                if let Some((len, head)) = &mut self.head {
                    let want = (*len).min(HEAD as u64) as usize - head.len();
                    let take = &self.rx[self.rx_start..self.rx_start + n.min(want)];
                    head.extend_from_slice(take);
                }
                self.skip -= n as u64;
                self.rx_start += n;
                if let Some((len, head)) = self
                    .head
                    .take_if(|(len, head)| head.len() as u64 == (*len).min(HEAD as u64))
                {
                    return Recv::Oversized { len, head };
                }
                continue;
            }
            if self.skip == 0 && avail >= HEADER {
                let head = &self.rx[self.rx_start..self.rx_start + HEADER];
                let len = u64::from_le_bytes(head.try_into().expect("8 bytes"));
                if len > self.max {
                    self.rx_start += HEADER;
                    self.skip = len;
                    let keep = len.min(HEAD as u64) as usize;
                    self.head = Some((len, Vec::with_capacity(keep)));
                    continue;
                }
                let len = len as usize;
                let body = self.rx_start + HEADER;
                if avail - HEADER >= len {
                    let frame = Frame::copy(&self.rx[body..body + len]);
                    self.rx_start = body + len;
                    return Recv::Message(frame);
                }
                if HEADER + len > self.rx.len() {
                    // Too large for the buffer: read the rest into its frame.
                    let mut frame = Frame::for_reading(len);
                    let have = self.rx_end - body;
                    // SAFETY: a fresh frame of `len` bytes, `have` < `len`.
                    let dst = unsafe { frame.bytes_mut() };
                    dst[..have].copy_from_slice(&self.rx[body..self.rx_end]);
                    self.rx_start = 0;
                    self.rx_end = 0;
                    self.big = Some((frame, have));
                    continue;
                }
            }
            if std::mem::take(&mut self.drained) {
                return Recv::Empty;
            }
            // Room to read: move what is left to the front first.
            if self.rx_start > 0 {
                self.rx.copy_within(self.rx_start..self.rx_end, 0);
                self.rx_end -= self.rx_start;
                self.rx_start = 0;
            }
            let end = self.rx_end;
            match read(fd, &mut self.rx[end..]) {
                Ok(0) => return Recv::Closed,
                Ok(n) => {
                    self.rx_end += n;
                    self.drained = self.rx_end < self.rx.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Recv::Empty,
                Err(_) => return Recv::Closed,
            }
        }
    }

    /// Queues a payload; [`Stream::flush`] writes it.
    pub fn send(&mut self, payload: Frame) {
        self.tx_bytes += HEADER + payload.len();
        self.tx
            .push_back(((payload.len() as u64).to_le_bytes(), payload));
    }

    /// Bytes queued and not written yet.
    pub fn queued(&self) -> usize {
        self.tx_bytes - self.tx_sent
    }

    /// Whether anything waits to be written (poll for writability then).
    pub fn wants_write(&self) -> bool {
        !self.tx.is_empty()
    }

    /// Writes what is queued until done or the socket is full; an error
    /// means the peer is gone.
    pub fn flush(&mut self) -> io::Result<()> {
        while !self.tx.is_empty() {
            let mut iov: Vec<libc::iovec> = Vec::with_capacity(2 * TX_BATCH.min(self.tx.len()));
            let mut skip = self.tx_sent;
            for (head, payload) in self.tx.iter().take(TX_BATCH) {
                for part in [&head[..], payload.bytes()] {
                    if skip >= part.len() {
                        skip -= part.len();
                        continue;
                    }
                    iov.push(libc::iovec {
                        iov_base: part[skip..].as_ptr().cast_mut().cast(),
                        iov_len: part.len() - skip,
                    });
                    skip = 0;
                }
            }
            let asked: usize = iov.iter().map(|v| v.iov_len).sum();
            // SAFETY: a zeroed msghdr pointing at `iov`, whose entries point
            // into frames that `self.tx` keeps alive across the call.
            let n = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = iov.len();
                libc::sendmsg(self.fd(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return Ok(()),
                    _ => return Err(e),
                }
            }
            self.consume(n as usize);
            if (n as usize) < asked {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Drops the entries the last write finished.
    fn consume(&mut self, mut n: usize) {
        while let Some((_, payload)) = self.tx.front() {
            let left = HEADER + payload.len() - self.tx_sent;
            if n < left {
                self.tx_sent += n;
                return;
            }
            n -= left;
            self.tx_bytes -= HEADER + payload.len();
            self.tx_sent = 0;
            self.tx.pop_front();
        }
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Best effort: a smaller buffer only means more wake-ups for large messages.
fn set_send_buffer(fd: RawFd, bytes: libc::c_int) {
    // SAFETY: setsockopt reads one int from `bytes`.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

fn is_unix_stream(fd: RawFd) -> bool {
    let opt = |name| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes one int into `v`; fails on a non-socket.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(v)
    };
    opt(libc::SO_DOMAIN) == Some(libc::AF_UNIX) && opt(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(max: u64) -> (Stream, Stream) {
        let (a, b) = Stream::pair(max).unwrap();
        (a, Stream::new(b, max))
    }

    /// Reads until a message arrives (polling when the stream says Empty).
    fn next(s: &mut Stream) -> Recv {
        loop {
            match s.recv() {
                Recv::Empty => {
                    let [_] = crate::wake::wait_ready([(s.fd(), libc::POLLIN)], 1000);
                }
                other => return other,
            }
        }
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn messages_of_every_size_arrive_whole_and_in_order() {
        let (mut a, mut b) = pair(u64::MAX);
        // Around the buffer's size, so some arrive split across reads and
        // some are read straight into their own frame.
        let sizes = [
            0,
            1,
            7,
            8,
            9,
            130,
            RX_BUF - HEADER - 1,
            RX_BUF - HEADER,
            RX_BUF,
            3 * RX_BUF + 5,
            1 << 20,
        ];
        let writer = std::thread::spawn(move || {
            for (i, &n) in sizes.iter().enumerate().cycle().take(3 * sizes.len()) {
                a.send(Frame::copy(&payload(n, i as u8)));
                while a.wants_write() {
                    a.flush().unwrap();
                    if a.wants_write() {
                        crate::wake::wait_ready([(a.fd(), libc::POLLOUT)], 1000);
                    }
                }
            }
            a
        });
        for (i, &n) in sizes.iter().enumerate().cycle().take(3 * sizes.len()) {
            match next(&mut b) {
                Recv::Message(f) => assert!(
                    f.bytes() == payload(n, i as u8).as_slice(),
                    "message {i} of {n} bytes differs"
                ),
                _ => panic!("message {i} of {n} bytes did not arrive"),
            }
        }
        drop(writer.join().unwrap());
        assert!(matches!(next(&mut b), Recv::Closed));
    }

    #[test]
    fn a_queued_batch_is_written_by_one_flush_and_read_back_in_order() {
        let (mut a, mut b) = pair(u64::MAX);
        for i in 0..100u8 {
            a.send(Frame::copy(&[i; 130]));
        }
        assert_eq!(a.queued(), 100 * (130 + HEADER));
        a.flush().unwrap();
        assert!(!a.wants_write());
        assert_eq!(a.queued(), 0);
        for i in 0..100u8 {
            match next(&mut b) {
                Recv::Message(f) => assert_eq!(f.bytes(), &[i; 130]),
                _ => panic!("message {i} missing"),
            }
        }
        assert!(matches!(b.recv(), Recv::Empty));
    }

    #[test]
    fn a_full_socket_keeps_the_rest_queued_until_the_peer_reads() {
        let (mut a, mut b) = pair(u64::MAX);
        // More than the send buffer can hold (the kernel doubles what was asked for).
        let big = payload(3 * SEND_BUFFER as usize, 3);
        a.send(Frame::copy(&big));
        a.send(Frame::copy(b"after"));
        a.flush().unwrap();
        assert!(a.wants_write(), "12 MiB fit into the socket at once");
        let mut got = None;
        while got.is_none() {
            a.flush().unwrap();
            if let Recv::Message(f) = b.recv() {
                got = Some(f);
            }
        }
        assert!(got.unwrap().bytes() == big.as_slice());
        a.flush().unwrap();
        assert!(matches!(next(&mut b), Recv::Message(f) if f.bytes() == b"after"));
    }

    #[test]
    fn an_oversized_message_is_skipped_and_the_next_one_arrives() {
        let (mut a, mut b) = pair(u64::MAX);
        b.set_max(1000);
        a.send(Frame::copy(&payload(200_000, 1)));
        a.send(Frame::copy(&payload(2000, 2)));
        a.send(Frame::copy(b"next"));
        let writer = std::thread::spawn(move || {
            while a.wants_write() {
                a.flush().unwrap();
                crate::wake::wait_ready([(a.fd(), libc::POLLOUT)], 1000);
            }
            a
        });
        match next(&mut b) {
            Recv::Oversized { len, head } => {
                assert_eq!(len, 200_000);
                assert!(head == payload(HEAD, 1), "the first {HEAD} bytes");
            }
            _ => panic!("no oversized message"),
        }
        // Shorter than the head kept: all of it.
        match next(&mut b) {
            Recv::Oversized { len, head } => {
                assert_eq!(len, 2000);
                assert!(head == payload(2000, 2), "the whole message");
            }
            _ => panic!("no second oversized message"),
        }
        assert!(matches!(next(&mut b), Recv::Message(f) if f.bytes() == b"next"));
        drop(writer.join().unwrap());
    }

    #[test]
    fn writing_to_a_closed_peer_is_an_error_not_a_signal() {
        let (mut a, b) = pair(u64::MAX);
        drop(b);
        a.send(Frame::copy(b"lost"));
        assert!(a.flush().is_err());
    }
}
