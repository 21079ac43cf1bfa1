//! Options of a parent (spawn and connect mode), validated when set.

use crate::error::{Error, Result};
use std::time::Duration;

/// How a parent behaves. Every field has a default that a caller may change
/// through the setters, which refuse values that cannot work.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Used when a call passes timeout 0.
    pub default_timeout: Duration,
    /// Namespace sent with every call.
    pub namespace: String,
    /// 0 = no heartbeats (a readiness heartbeat is still sent once).
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub heartbeat_max_misses: u32,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_threshold: u32,
    /// Time the breaker stays open before one probe call is let through.
    pub breaker_cooldown: Duration,
    /// Whether a remote (handler) error counts as a breaker failure.
    pub breaker_counts_remote_errors: bool,
    /// Restarts of a spawned worker that exited; 0 = never restart.
    pub auto_restart: u32,
    /// How long `spawn` waits for the worker's first answer.
    pub start_timeout: Duration,
    /// How long `connect` looks for a service id in the registry.
    pub connect_timeout: Duration,
    /// How long a closing parent waits for its worker to exit before SIGKILL.
    pub shutdown_grace: Duration,
    /// How long a cancelled or timed-out call's handler may run on in a
    /// spawned worker before the worker is stopped; zero: never.
    pub cancel_grace: Duration,
    /// How many items of a stream the worker may send ahead of its
    /// consumer: set, exactly that many; `None`, a window that starts at
    /// [`DEFAULT_STREAM_CREDIT`] and widens for small items (see
    /// [`crate::parent::Stream`]).
    pub stream_credit: Option<u32>,
    /// How many copies of the program a spawning parent runs (a pool).
    pub workers: u32,
    /// After this many calls a worker is drained and replaced; zero: never.
    pub max_calls_per_worker: u64,
    /// The worker's name in log lines; empty = the program's file name.
    pub name: String,
    /// Interface the parent binds in spawn mode.
    pub bind_host: String,
    /// Largest message accepted from the peer, in bytes (checked before decoding).
    pub max_message_size: i64,
    /// Offer a spawned worker the private link (see [`crate::link`]); a
    /// worker of this library then uses it instead of the DEALER.
    pub private_link: bool,
}

pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// A stream's window at its start, unless the option sets one.
pub const DEFAULT_STREAM_CREDIT: u32 = 16;
/// The most workers one parent runs.
pub const MAX_WORKERS: u32 = 256;

impl Default for Options {
    fn default() -> Self {
        Options {
            default_timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            namespace: crate::codec::DEFAULT_NAMESPACE.to_owned(),
            heartbeat_interval: Duration::from_millis(5000),
            heartbeat_timeout: Duration::from_millis(3000),
            heartbeat_max_misses: 3,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_millis(5000),
            breaker_counts_remote_errors: false,
            auto_restart: 0,
            start_timeout: Duration::from_millis(10_000),
            connect_timeout: Duration::from_millis(5000),
            shutdown_grace: Duration::from_millis(2000),
            cancel_grace: Duration::from_millis(2000),
            stream_credit: None,
            workers: 1,
            max_calls_per_worker: 0,
            name: String::new(),
            bind_host: "127.0.0.1".to_owned(),
            max_message_size: 64 * 1024 * 1024,
            private_link: true,
        }
    }
}

fn positive_ms(what: &str, ms: i64) -> Result<Duration> {
    if ms <= 0 {
        return Err(Error::invalid(format!("{what} must be > 0 ms, got {ms}")));
    }
    Ok(Duration::from_millis(ms as u64))
}

impl Options {
    pub fn set_default_timeout(&mut self, ms: i64) -> Result<()> {
        self.default_timeout = positive_ms("default timeout", ms)?;
        Ok(())
    }

    pub fn set_namespace(&mut self, ns: &str) -> Result<()> {
        if ns.is_empty() {
            return Err(Error::invalid("namespace must not be empty"));
        }
        self.namespace = ns.to_owned();
        Ok(())
    }

    pub fn set_heartbeat(
        &mut self,
        interval_ms: u32,
        timeout_ms: u32,
        max_misses: u32,
    ) -> Result<()> {
        if interval_ms > 0 {
            if timeout_ms == 0 {
                return Err(Error::invalid("heartbeat timeout must be > 0 ms"));
            }
            if max_misses == 0 {
                return Err(Error::invalid("heartbeat max misses must be > 0"));
            }
        }
        self.heartbeat_interval = Duration::from_millis(u64::from(interval_ms));
        self.heartbeat_timeout = Duration::from_millis(u64::from(timeout_ms));
        self.heartbeat_max_misses = max_misses;
        Ok(())
    }

    pub fn set_breaker(&mut self, threshold: u32, cooldown_ms: u32) -> Result<()> {
        if threshold == 0 {
            return Err(Error::invalid("breaker threshold must be > 0"));
        }
        self.breaker_threshold = threshold;
        self.breaker_cooldown = Duration::from_millis(u64::from(cooldown_ms));
        Ok(())
    }

    pub fn set_start_timeout(&mut self, ms: i64) -> Result<()> {
        self.start_timeout = positive_ms("start timeout", ms)?;
        Ok(())
    }

    pub fn set_connect_timeout(&mut self, ms: i64) -> Result<()> {
        self.connect_timeout = positive_ms("connect timeout", ms)?;
        Ok(())
    }

    pub fn set_shutdown_grace(&mut self, ms: i64) -> Result<()> {
        if ms < 0 {
            return Err(Error::invalid(format!(
                "shutdown grace must be >= 0 ms, got {ms}"
            )));
        }
        self.shutdown_grace = Duration::from_millis(ms as u64);
        Ok(())
    }

    pub fn set_stream_credit(&mut self, n: u32) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid("stream credit must be > 0"));
        }
        self.stream_credit = Some(n);
        Ok(())
    }

    pub fn set_workers(&mut self, n: u32) -> Result<()> {
        if n == 0 || n > MAX_WORKERS {
            return Err(Error::invalid(format!(
                "workers must be 1..={MAX_WORKERS}, got {n}"
            )));
        }
        self.workers = n;
        Ok(())
    }

    pub fn set_cancel_grace(&mut self, ms: i64) -> Result<()> {
        if ms < 0 {
            return Err(Error::invalid(format!(
                "cancel grace must be >= 0 ms, got {ms}"
            )));
        }
        self.cancel_grace = Duration::from_millis(ms as u64);
        Ok(())
    }

    pub fn set_name(&mut self, name: &str) -> Result<()> {
        self.name = name.to_owned();
        Ok(())
    }

    pub fn set_bind_host(&mut self, host: &str) -> Result<()> {
        if host.is_empty() || host.contains(['/', ' ', ':']) {
            return Err(Error::invalid(format!(
                "'{host}' is not a host or interface address"
            )));
        }
        self.bind_host = host.to_owned();
        Ok(())
    }

    pub fn set_max_message_size(&mut self, bytes: i64) -> Result<()> {
        if bytes < 1024 {
            return Err(Error::invalid(format!(
                "max message size must be >= 1024 bytes, got {bytes}"
            )));
        }
        self.max_message_size = bytes;
        Ok(())
    }

    /// The limit a call's timeout argument asks for: > 0 that many ms, 0 the
    /// default, < 0 none.
    pub fn call_timeout(&self, timeout_ms: i64) -> Option<Duration> {
        match timeout_ms {
            t if t > 0 => Some(Duration::from_millis(t as u64)),
            0 => Some(self.default_timeout),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn defaults_match_the_protocol() {
        let o = Options::default();
        assert_eq!(o.default_timeout, Duration::from_secs(30));
        assert_eq!(o.namespace, "default");
        assert_eq!(o.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(o.heartbeat_timeout, Duration::from_secs(3));
        assert_eq!(o.heartbeat_max_misses, 3);
        assert_eq!(
            (o.breaker_threshold, o.breaker_cooldown),
            (5, Duration::from_secs(5))
        );
        assert_eq!(o.bind_host, "127.0.0.1");
    }

    #[test]
    fn bad_values_are_refused_and_leave_options_unchanged() {
        let mut o = Options::default();
        let before = o.clone();
        for e in [
            o.set_default_timeout(0),
            o.set_default_timeout(-5),
            o.set_namespace(""),
            o.set_heartbeat(1000, 0, 3),
            o.set_heartbeat(1000, 100, 0),
            o.set_breaker(0, 10),
            o.set_start_timeout(0),
            o.set_connect_timeout(-1),
            o.set_shutdown_grace(-1),
            o.set_bind_host("tcp://x"),
            o.set_max_message_size(10),
        ] {
            assert_eq!(e.unwrap_err().kind, ErrorKind::InvalidArgument);
        }
        assert_eq!(o, before);
    }

    #[test]
    fn good_values_are_kept() {
        let mut o = Options::default();
        o.set_default_timeout(250).unwrap();
        o.set_namespace("math").unwrap();
        o.set_heartbeat(0, 0, 0).unwrap();
        assert_eq!(o.heartbeat_interval, Duration::ZERO);
        o.set_heartbeat(100, 50, 2).unwrap();
        assert_eq!(o.heartbeat_max_misses, 2);
        assert_eq!(o.call_timeout(0), Some(Duration::from_millis(250)));
        assert_eq!(o.call_timeout(7), Some(Duration::from_millis(7)));
        assert_eq!(o.call_timeout(-1), None);
    }
}
