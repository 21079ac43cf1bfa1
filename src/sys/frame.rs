//! How an encoded payload becomes the last frame of a libzmq message.
//!
//! Small payloads are copied into libzmq's own buffer. Larger ones are
//! handed to libzmq without a copy, and large ones (≥ [`REUSE_MIN`]) come
//! from, and go back to, a small pool once libzmq has sent them (and large
//! messages the private link reads, once they are dropped): a fresh
//! megabyte costs a page fault per 4 KiB page the first time it is written
//! (glibc hands freed blocks of that size back to the kernel), which costs
//! more than copying it. The pool keeps at most [`POOL_BYTES`] in all.

use crate::sync::Mutex;
use std::ffi::c_void;

/// Payloads from this size on are handed to libzmq without a copy.
pub(crate) const ZERO_COPY_MIN: usize = 4096;
/// Buffers from this capacity on are reused.
pub(crate) const REUSE_MIN: usize = 64 * 1024;
/// The most the pool keeps, in bytes of capacity.
pub(crate) const POOL_BYTES: usize = 16 * 1024 * 1024;
/// The most buffers the pool keeps.
const POOL_BUFFERS: usize = 8;

struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

/// An empty buffer with room for at least `capacity` bytes; a reused one
/// when the size is worth it and one is free.
fn buffer(capacity: usize) -> Vec<u8> {
    if capacity >= REUSE_MIN {
        let mut pool = POOL.lock();
        // The smallest free buffer that fits.
        let best = pool
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= capacity)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let b = pool.free.swap_remove(i);
            pool.bytes -= b.capacity();
            return b;
        }
    }
    Vec::with_capacity(capacity)
}

/// Gives a buffer back for reuse (or frees it when it is small or the pool is full).
fn recycle(mut b: Vec<u8>) {
    let cap = b.capacity();
    if !(REUSE_MIN..=POOL_BYTES).contains(&cap) {
        return;
    }
    let mut pool = POOL.lock();
    if pool.free.len() < POOL_BUFFERS && pool.bytes + cap <= POOL_BYTES {
        b.clear();
        pool.bytes += cap;
        pool.free.push(b);
    }
}

/// What the pool holds now: (buffers, bytes of capacity).
#[cfg(test)]
fn pooled() -> (usize, usize) {
    let pool = POOL.lock();
    (pool.free.len(), pool.bytes)
}

/// libzmq's free function for a payload handed over by [`send`]: runs on
/// whichever thread drops the message (usually libzmq's I/O thread).
unsafe extern "C" fn release(data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `send` passed the pointer and capacity of a Vec<u8> it gave up;
    // a length of 0 is always valid for u8.
    let b = unsafe { Vec::from_raw_parts(data.cast::<u8>(), 0, hint as usize) };
    recycle(b);
}

thread_local! {
    /// Where small payloads are encoded before they are copied into a frame.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Encodes a payload of at most `capacity` bytes with `write` and makes it
/// a frame: small ones through a reused per-thread buffer (no allocation
/// besides libzmq's own), large ones in a pooled buffer handed over whole.
pub fn encode(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Frame {
    if capacity < ZERO_COPY_MIN {
        return SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                s.clear();
                write(&mut s);
                Frame::copy(&s)
            }
            // Only when `write` itself encodes a frame (nothing does): no reuse.
            Err(_) => {
                let mut b = Vec::with_capacity(capacity);
                write(&mut b);
                Frame::copy(&b)
            }
        });
    }
    let mut b = buffer(capacity);
    write(&mut b);
    Frame::owned(b)
}

/// A payload made into a libzmq message, ready to send from any thread.
/// Made on the thread that encoded it, so the sending thread only hands it
/// to libzmq: small payloads are copied into libzmq's buffer here, large
/// ones are handed over without a copy and their buffer reused afterwards.
pub struct Frame(zmq_sys::zmq_msg_t);

// SAFETY: a zmq_msg_t not yet sent belongs to no socket or thread; libzmq
// allows building a message on one thread and sending it on another.
unsafe impl Send for Frame {}

impl Frame {
    /// An empty frame (the delimiter before a payload): no allocation, no copy.
    pub fn empty() -> Frame {
        let mut msg = zmq_sys::zmq_msg_t::default();
        // SAFETY: zmq_msg_init makes an empty message; it cannot fail.
        unsafe { zmq_sys::zmq_msg_init(&mut msg) };
        Frame(msg)
    }

    /// A frame with a copy of `bytes`.
    pub fn copy(bytes: &[u8]) -> Frame {
        let mut frame = Frame::alloc(bytes.len());
        // SAFETY: a fresh frame of exactly `bytes.len()` writable bytes.
        // (Not through `bytes_mut`: its length query costs on this hot path.)
        unsafe {
            let data = zmq_sys::zmq_msg_data(&mut frame.0).cast::<u8>();
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
        }
        frame
    }

    /// A frame of `len` bytes for the caller to fill (see [`Frame::bytes_mut`]).
    pub fn alloc(len: usize) -> Frame {
        let mut msg = zmq_sys::zmq_msg_t::default();
        // SAFETY: init_size gives `len` writable bytes (or fails on memory
        // exhaustion, which libzmq itself treats as fatal).
        unsafe {
            if zmq_sys::zmq_msg_init_size(&mut msg, len) != 0 {
                std::process::abort();
            }
        }
        Frame(msg)
    }

    /// A frame of `len` bytes to read a message into (see
    /// [`Frame::bytes_mut`]): from [`REUSE_MIN`] bytes on its buffer comes
    /// from the pool and goes back to it when the frame (or what it was
    /// handed to) is dropped, so a stream of large messages read on one
    /// thread and dropped on another reuses a few buffers instead of
    /// faulting in fresh pages for each. Its bytes are not cleared, as
    /// those of [`Frame::alloc`] are not: the reader fills them first.
    pub fn for_reading(len: usize) -> Frame {
        if len < REUSE_MIN {
            return Frame::alloc(len);
        }
        let mut b = buffer(len);
        // SAFETY: `buffer` gave at least `len` bytes of capacity; they are
        // written (through `bytes_mut`) before anything reads them, as the
        // bytes of a message libzmq allocated are.
        unsafe { b.set_len(len) };
        Frame::owned(b)
    }

    /// A frame that takes `payload`: copied (and the buffer recycled) when
    /// it is small, handed over as it is from [`ZERO_COPY_MIN`] bytes on.
    pub fn owned(payload: Vec<u8>) -> Frame {
        if payload.len() < ZERO_COPY_MIN {
            let f = Frame::copy(&payload);
            recycle(payload);
            return f;
        }
        let mut payload = std::mem::ManuallyDrop::new(payload);
        let (ptr, len, cap) = (payload.as_mut_ptr(), payload.len(), payload.capacity());
        let mut msg = zmq_sys::zmq_msg_t::default();
        // SAFETY: libzmq takes the buffer (ptr, len) and calls `release` with
        // the capacity as hint exactly once, when the message is closed. Until
        // then nothing else owns the buffer (it was moved out of `payload`).
        unsafe {
            if zmq_sys::zmq_msg_init_data(
                &mut msg,
                ptr.cast(),
                len,
                Some(release),
                cap as *mut c_void,
            ) != 0
            {
                std::process::abort();
            }
        }
        Frame(msg)
    }

    pub fn len(&self) -> usize {
        // SAFETY: zmq_msg_size only reads the initialised message.
        unsafe { zmq_sys::zmq_msg_size(&self.0) }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> &[u8] {
        let len = self.len();
        if len == 0 {
            return &[];
        }
        // SAFETY: an initialised message has `len` readable bytes at its data
        // pointer, which lives as long as the message; the cast drops a const
        // libzmq's signature lacks.
        unsafe {
            let data = zmq_sys::zmq_msg_data(std::ptr::addr_of!(self.0).cast_mut());
            std::slice::from_raw_parts(data.cast::<u8>(), len)
        }
    }

    /// The frame's bytes, to write into.
    ///
    /// # Safety
    /// Nothing else refers to these bytes: the frame was made by
    /// [`Frame::alloc`] or [`Frame::for_reading`] and not shared (see
    /// [`Received::share`]).
    pub unsafe fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        if len == 0 {
            return &mut [];
        }
        // SAFETY: `len` bytes at the data pointer, alive with the message and
        // (by the caller's promise) referred to by nobody else.
        unsafe {
            let data = zmq_sys::zmq_msg_data(&mut self.0);
            std::slice::from_raw_parts_mut(data.cast::<u8>(), len)
        }
    }

    /// Whether more frames of the same message follow (a received frame).
    pub fn more(&self) -> bool {
        // SAFETY: reads the initialised message only.
        unsafe { zmq_sys::zmq_msg_more(std::ptr::addr_of!(self.0)) == 1 }
    }

    /// Receives the next frame from `socket`; `None` when there is none
    /// (with `zmq::DONTWAIT`) or the socket failed.
    pub fn recv(socket: &mut zmq::Socket, flags: i32) -> Option<Frame> {
        let mut frame = Frame(zmq_sys::zmq_msg_t::default());
        // SAFETY: an initialised empty message and the socket's own handle;
        // on failure the message stays empty and is closed on drop.
        unsafe {
            zmq_sys::zmq_msg_init(&mut frame.0);
            if zmq_sys::zmq_msg_recv(&mut frame.0, socket.as_mut_ptr(), flags) < 0 {
                return None;
            }
        }
        Some(frame)
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        // SAFETY: the message was initialised; after a send it is empty and
        // closing it is a no-op.
        unsafe { zmq_sys::zmq_msg_close(&mut self.0) };
    }
}

/// A second reference to a large received message (libzmq counts the
/// references to a message's bytes, so this costs no copy). A reply keeps
/// one so that a result lying in its call's message can be sent from
/// there, see [`around`].
pub struct Received(Box<zmq_sys::zmq_msg_t>);

// SAFETY: like `Frame`, a message no socket is using may move between threads.
unsafe impl Send for Received {}

impl Received {
    /// Shares the bytes of `frame`.
    pub fn share(frame: &mut Frame) -> Received {
        let mut copy = Box::<zmq_sys::zmq_msg_t>::default();
        // SAFETY: both messages are initialised; libzmq makes `copy` refer to
        // the same bytes (counted) for messages of more than 33 bytes.
        unsafe {
            zmq_sys::zmq_msg_init(&mut *copy);
            if zmq_sys::zmq_msg_copy(&mut *copy, &mut frame.0) != 0 {
                std::process::abort();
            }
        }
        Received(copy)
    }
}

impl Received {
    /// Gives up the reference without closing it (see `release_received`).
    fn into_raw(self) -> *mut zmq_sys::zmq_msg_t {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the box is moved out exactly once.
        Box::into_raw(unsafe { std::ptr::read(&this.0) })
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        // SAFETY: initialised in `share` and not handed to libzmq.
        unsafe { zmq_sys::zmq_msg_close(&mut *self.0) };
    }
}

/// libzmq's free function for a frame made by [`around`]: drops the
/// reference to the received message.
unsafe extern "C" fn release_received(_data: *mut c_void, hint: *mut c_void) {
    // SAFETY: `around` passed a `Box<zmq_msg_t>` it gave up.
    drop(Received(unsafe { Box::from_raw(hint.cast()) }));
}

/// A frame of `head` followed by the `len` bytes at `at`, made without
/// copying those bytes: `head` is written into the `head.len()` bytes just
/// before `at`, which must lie in `source`'s message with room for it.
/// Otherwise `source` comes back unchanged.
///
/// # Safety
/// `at..at + len` is readable, and nothing reads or writes the bytes of
/// `source`'s message before `at` any more (they are overwritten).
pub unsafe fn around(
    mut source: Received,
    head: &[u8],
    at: *const u8,
    len: usize,
) -> Result<Frame, Received> {
    // SAFETY: an initialised message; its data pointer is writable (libzmq
    // hands out `void *`) and stays put while `source` holds a reference.
    let (data, size) = unsafe {
        (
            zmq_sys::zmq_msg_data(&mut *source.0).cast::<u8>(),
            zmq_sys::zmq_msg_size(&*source.0),
        )
    };
    let (start, at) = (data as usize, at as usize);
    let fits = at >= start + head.len() && at.checked_add(len).is_some_and(|e| e <= start + size);
    if !fits {
        return Err(source);
    }
    // SAFETY: `at - head.len() .. at + len` lies inside the message (checked);
    // the caller gave up the bytes before `at`.
    unsafe {
        let first = data.add(at - head.len() - start);
        std::ptr::copy_nonoverlapping(head.as_ptr(), first, head.len());
        let mut msg = zmq_sys::zmq_msg_t::default();
        let hint = source.into_raw();
        if zmq_sys::zmq_msg_init_data(
            &mut msg,
            first.cast(),
            head.len() + len,
            Some(release_received),
            hint.cast(),
        ) != 0
        {
            std::process::abort();
        }
        Ok(Frame(msg))
    }
}

/// Sends `frame` as the next frame of a message with `flags`; on failure
/// the frame comes back (for a retry once a peer is there).
pub fn send(socket: &mut zmq::Socket, mut frame: Frame, flags: i32) -> Result<(), Frame> {
    // SAFETY: a valid message and the socket's own handle; on success libzmq
    // owns the content and leaves the message empty.
    if unsafe { zmq_sys::zmq_msg_send(&mut frame.0, socket.as_mut_ptr(), flags) } < 0 {
        return Err(frame);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payloads_are_sent_without_a_copy_and_their_buffers_reused() {
        let ctx = zmq::Context::new();
        let mut tx = ctx.socket(zmq::PAIR).unwrap();
        let mut rx = ctx.socket(zmq::PAIR).unwrap();
        rx.bind("inproc://frame-test").unwrap();
        tx.connect("inproc://frame-test").unwrap();
        for size in [10, ZERO_COPY_MIN, REUSE_MIN, 1 << 20] {
            let mut b = buffer(size);
            b.extend((0..size).map(|i| (i % 251) as u8));
            let addr = b.as_ptr() as usize;
            let frame = Frame::owned(b);
            assert_eq!(frame.len(), size);
            assert!(send(&mut tx, frame, 0).is_ok());
            let got = rx.recv_msg(0).unwrap();
            assert_eq!(got.len(), size);
            assert!(got.iter().enumerate().all(|(i, &v)| v == (i % 251) as u8));
            if size >= ZERO_COPY_MIN {
                // inproc passes the message itself: the very same buffer arrives.
                assert_eq!(got.as_ptr() as usize, addr, "{size} bytes were copied");
            }
            drop(got);
            if size >= REUSE_MIN {
                // Dropped by the receiver: back in the pool, and handed out again.
                let again = buffer(size);
                assert_eq!(
                    again.as_ptr() as usize,
                    addr,
                    "{size}-byte buffer not reused"
                );
                recycle(again);
            }
        }
        // encode: small payloads through the per-thread scratch buffer, large
        // ones in a buffer of their own; the frame holds exactly what was written.
        for size in [0, 100, ZERO_COPY_MIN - 1, ZERO_COPY_MIN, 200_000] {
            let f = encode(size, |b| b.extend((0..size).map(|i| (i % 7) as u8)));
            assert_eq!(f.len(), size);
            assert!(send(&mut tx, f, 0).is_ok());
            let got = rx.recv_msg(0).unwrap();
            assert!(got.iter().enumerate().all(|(i, &v)| v == (i % 7) as u8));
        }
        // A received message's bytes go back out around a new head, in place;
        // a result without room before it, or outside the message, is refused.
        let sent: Vec<u8> = (0..100_000).map(|i| (i % 13) as u8).collect();
        tx.send(&sent[..], 0).unwrap();
        let mut got = Frame::recv(&mut rx, 0).unwrap();
        assert!(!got.more());
        assert_eq!(got.bytes(), &sent[..]);
        let at = got.bytes().as_ptr();
        let head = b"head:";
        let mut source = Received::share(&mut got);
        for (offset, len) in [(head.len() - 1, 10), (50, 100_000 - 49), (100_001, 0)] {
            // SAFETY: nothing is written when the range is refused.
            source = match unsafe { around(source, head, at.wrapping_add(offset), len) } {
                Ok(_) => panic!("at {offset}, {len} bytes: accepted"),
                Err(s) => s,
            };
        }
        let outside = [0u8; 10];
        source = match unsafe { around(source, head, outside.as_ptr(), 10) } {
            Ok(_) => panic!("bytes outside the message accepted"),
            Err(s) => s,
        };
        // SAFETY: `got` is not read again; the range lies in the message.
        let f = unsafe { around(source, head, at.wrapping_add(50), 1000) }
            .unwrap_or_else(|_| panic!("refused a range inside the message"));
        drop(got);
        assert!(send(&mut tx, f, 0).is_ok());
        let back = rx.recv_msg(0).unwrap();
        assert_eq!(&back[..head.len()], head);
        assert_eq!(&back[head.len()..], &sent[50..1050]);
        assert_eq!(
            back.as_ptr() as usize,
            at as usize + 50 - head.len(),
            "copied"
        );

        // A frame to read into: a pooled buffer when it is large, back in
        // the pool once dropped.
        let f = Frame::for_reading(1 << 20);
        assert_eq!(f.len(), 1 << 20);
        let addr = f.bytes().as_ptr() as usize;
        drop(f);
        let again = buffer(1 << 20);
        assert_eq!(
            again.as_ptr() as usize,
            addr,
            "a read frame's buffer not reused"
        );
        recycle(again);
        assert_eq!(Frame::for_reading(100).len(), 100);

        // The pool is process-wide: its limits are checked in the same test.
        let big = Vec::with_capacity(POOL_BYTES + 1);
        recycle(big);
        assert!(pooled().1 <= POOL_BYTES);
        for _ in 0..3 * POOL_BUFFERS {
            recycle(Vec::with_capacity(4 * 1024 * 1024));
        }
        let (n, bytes) = pooled();
        assert!(
            n <= POOL_BUFFERS && bytes <= POOL_BYTES,
            "{n} buffers, {bytes} bytes"
        );
    }
}
