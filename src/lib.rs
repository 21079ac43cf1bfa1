//! libmultifrost: start worker processes (or reach running ones) and call
//! their functions as if they were local, over the `comlink_ipc_v4` protocol
//! (ZeroMQ DEALER/ROUTER + MessagePack).
//!
//! The core is plain Rust; `ffi` is the only module that knows about C.

pub mod breaker;
pub mod codec;
pub mod error;
pub mod ffi;
pub mod frame;
pub mod ids;
pub mod json;
pub mod link;
pub mod log;
pub mod options;
pub mod parent;
pub mod process;
pub mod registry;
pub mod stats;
pub(crate) mod sync;
pub mod text;
pub mod wake;
pub mod worker;

pub use error::{Error, ErrorKind, Result};
pub use options::Options;
pub use parent::Parent;
pub use worker::{Mode, ReplyHandle, Worker};

/// The process-wide ZeroMQ context (one libzmq I/O thread).
pub(crate) fn zmq_context() -> &'static zmq::Context {
    static CONTEXT: std::sync::OnceLock<zmq::Context> = std::sync::OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

/// The TCP port a socket bound to `*` got.
pub(crate) fn bound_port(socket: &zmq::Socket) -> Result<u16> {
    let ep = socket
        .get_last_endpoint()?
        .map_err(|_| Error::io("bound endpoint is not text"))?;
    ep.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::io(format!("cannot read the port of '{ep}'")))
}

/// Whether a target names an endpoint rather than a service id.
pub fn is_endpoint(target: &str) -> bool {
    target.starts_with("tcp://") || target.starts_with("ipc://")
}
