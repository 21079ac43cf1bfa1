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
