//! The one place that talks to the operating system and libzmq below their
//! safe Rust interfaces: every `unsafe` block of the core is here (the C
//! surface in `ffi` has its own). The rest of the crate is compiled with
//! `#![deny(unsafe_code)]` (see `lib.rs`).
//!
//! - `frame`: libzmq messages handed over without copies;
//! - `link`: the private link's Unix stream socket;
//! - `wake`: eventfds, poll, epoll, signal handlers;
//! - `process`: spawning and reaping a worker process;
//! - `os`: clocks, randomness, process liveness, the ZeroMQ context.

pub mod frame;
pub mod link;
pub mod os;
pub mod process;
pub mod wake;
