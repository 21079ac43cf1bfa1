//! libmultifrost: start worker processes (or reach running ones) and call
//! their functions as if they were local, over the `comlink_ipc_v4` protocol
//! (ZeroMQ DEALER/ROUTER + MessagePack).
//!
//! The core is plain Rust: `ffi` is the only module that knows about C,
//! and `sys` the only one below the safe interfaces of the operating
//! system and libzmq. The compiler holds everything else to that: unsafe
//! code is denied outside those two (and `text`'s inline strings).

#![deny(unsafe_code)]

pub mod breaker;
pub mod codec;
pub mod error;
#[allow(unsafe_code)]
pub mod ffi;
pub mod ids;
pub mod json;
pub mod log;
pub mod options;
pub mod parent;
pub mod registry;
pub mod stats;
pub(crate) mod sync;
#[allow(unsafe_code)]
pub mod sys;
#[allow(unsafe_code)]
pub mod text;
pub mod worker;

pub use sys::{frame, link, process, wake};

pub use error::{Error, ErrorKind, Result};
pub use options::Options;
pub use parent::Parent;
pub use worker::{Mode, ReplyHandle, Worker};

pub(crate) use sys::os::{bound_port, zmq_context};

/// Whether a target names an endpoint rather than a service id.
pub fn is_endpoint(target: &str) -> bool {
    target.starts_with("tcp://") || target.starts_with("ipc://")
}

/// The `ZMQ_MAXMSGSIZE` for a maximum message size of `limit` bytes.
///
/// libzmq refuses a message over its own limit by dropping the connection,
/// and a connecting socket (a spawned worker's, a connect-mode parent's)
/// does not reconnect after that protocol error: whoever sent it is cut
/// off, and every call in flight on it ends only by its timeout. So the
/// limit is held by our own code, on the message libzmq has read: a call
/// over it is answered with an error, a reply over it fails its call, and
/// the connection goes on (as on the private link, which skips such a
/// message unread). libzmq keeps a ceiling of four times the limit, so that
/// one message cannot make a process allocate more than that; a message
/// above it still costs the connection.
pub(crate) fn zmq_max_message_size(limit: i64) -> i64 {
    limit.saturating_mul(4)
}
