//! The one place that starts worker processes: environment, death signal,
//! output pipes drained line by line, exit detection through a pidfd, and
//! terminate-then-kill with a reap that always happens.

use crate::error::{Error, Result};
use crate::log;
use crate::sync::{Condvar, Mutex};
use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines of stderr kept for the message of a worker that exited.
const TAIL_LINES: usize = 10;
/// Longest line passed on whole; longer output is split, never dropped.
const MAX_LINE: usize = 64 * 1024;

/// What the output readers share with the parent's supervisor.
#[derive(Default)]
struct Output {
    state: Mutex<OutputState>,
    done: Condvar,
}

#[derive(Default)]
struct OutputState {
    stderr_tail: VecDeque<String>,
    /// A line that names an error (see [`names_an_error`]) pushed out of
    /// the tail, while no later such line came: a stack trace's first line,
    /// which the frames after it push out.
    named_error: Option<String>,
    open_streams: usize,
}

/// Whether a line of a worker's stderr is where an error is named: the head
/// of a Python, Node, Go or Rust failure, or a line of the
/// `<ErrorType>: <message>` shape.
fn names_an_error(line: &str) -> bool {
    let line = line.trim_start();
    if line.starts_with("Traceback (most recent call last)")
        || line.starts_with("panic: ")
        || line.starts_with("fatal error: ")
        || line.contains("panicked at ")
    {
        return true;
    }
    // `ValueError: boom`, `Error: boom`, `TypeError [ERR_X]: boom`
    let Some((head, _)) = line.split_once(": ") else {
        return false;
    };
    let name = head.split(" [").next().unwrap_or("");
    (name.ends_with("Error") || name.ends_with("Exception"))
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
}

/// A running (or exited, not yet reaped) worker process.
pub struct Process {
    child: Child,
    pidfd: Option<OwnedFd>,
    output: Arc<Output>,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `program` with `args` and the spawn-mode environment; `link`
    /// is the child's end of a private link (see [`crate::link`]), left
    /// open across the exec and named in `MULTIFROST_LINK`.
    /// Must be called from a thread that outlives the child: on Linux the
    /// death signal follows the thread that forked, not the process.
    pub fn spawn(
        program: &str,
        args: &[String],
        port: u16,
        link: Option<&OwnedFd>,
        name: &str,
    ) -> Result<Process> {
        let parent_pid = std::process::id() as libc::pid_t;
        let link_fd = link.map_or(-1, AsRawFd::as_raw_fd);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("COMLINK_ZMQ_PORT", port.to_string())
            .env("COMLINK_WORKER_MODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if link_fd >= 0 {
            cmd.env(crate::link::ENV, format!("{link_fd}:{parent_pid}"));
        } else {
            // One this process inherited is not meant for its children.
            cmd.env_remove(crate::link::ENV);
        }
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (prctl, getppid, fcntl, _exit).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent_pid {
                    libc::_exit(1);
                }
                if link_fd >= 0 && libc::fcntl(link_fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("cannot start worker '{program}': {e}")))?;
        let pid = child.id();
        let output = Arc::new(Output::default());
        let streams: Vec<(&'static str, Box<dyn Read + Send>)> = [
            child
                .stdout
                .take()
                .map(|s| ("stdout", Box::new(s) as Box<dyn Read + Send>)),
            child
                .stderr
                .take()
                .map(|s| ("stderr", Box::new(s) as Box<dyn Read + Send>)),
        ]
        .into_iter()
        .flatten()
        .collect();
        output.state.lock().open_streams = streams.len();
        for (stream, reader) in streams {
            let output = Arc::clone(&output);
            let name = name.to_owned();
            std::thread::Builder::new()
                .name(format!("mf-{stream}"))
                .spawn(move || drain_lines(reader, &name, stream, pid, &output))
                .map_err(|e| Error::io(format!("cannot start output reader: {e}")))?;
        }
        Ok(Process {
            pidfd: pidfd_open(pid),
            child,
            output,
            status: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A descriptor that becomes readable when the child exits (None where
    /// the kernel lacks pidfd_open: then poll [`Process::try_exit`]).
    pub fn exit_fd(&self) -> Option<RawFd> {
        self.pidfd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reaps the child if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// The exit description for errors and logs, with the last stderr lines.
    /// Waits briefly for the output readers to reach the end of the pipes so
    /// the final lines a crashing worker printed are included.
    pub fn exit_message(&self, status: ExitStatus) -> String {
        let mut text = format!("worker exited ({})", describe(status));
        let deadline = Instant::now() + Duration::from_millis(250);
        let mut state = self.output.state.lock();
        while state.open_streams > 0 {
            let (guard, timed_out) = self.output.done.wait_until(state, deadline);
            state = guard;
            if timed_out {
                break;
            }
        }
        if let Some(line) = &state.named_error {
            text.push_str("; stderr named the error:\n");
            text.push_str(line);
        }
        if !state.stderr_tail.is_empty() {
            text.push_str("; last stderr lines:");
            for line in &state.stderr_tail {
                text.push('\n');
                text.push_str(line);
            }
        }
        text
    }

    /// Waits up to `d` for the child to exit by itself.
    pub fn wait_exit(&mut self, d: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.wait_exit_fd(left.min(Duration::from_millis(20)));
        }
    }

    /// SIGTERM, up to `grace` for the child to exit, then SIGKILL; always reaps.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.try_exit() {
            return Some(status);
        }
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_exit(grace) {
            return Some(status);
        }
        self.signal(libc::SIGKILL);
        self.status = self.child.wait().ok();
        self.status
    }

    pub fn signal(&self, sig: libc::c_int) {
        if self.status.is_none() {
            // SAFETY: the pid is our unreaped child, so it cannot have been reused.
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        }
    }

    fn wait_exit_fd(&self, timeout: Duration) {
        match self.exit_fd() {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd on the stack.
                unsafe { libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int) };
            }
            None => std::thread::sleep(timeout),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// "code N" or "signal N (NAME)".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(sig)) => format!("signal {sig} ({})", signal_name(sig)),
        _ => "unknown status".to_owned(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "other",
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads a pipe to its end, passing each line to the log sink; keeps the
/// stderr tail. Reading never stops early, so a chatty worker never blocks.
fn drain_lines(
    mut reader: Box<dyn Read + Send>,
    name: &str,
    stream: &str,
    pid: u32,
    output: &Output,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let emit = |line: &mut Vec<u8>| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = String::from_utf8_lossy(line).into_owned();
        log::worker_output(name, stream, Some(pid), &text);
        if stream == "stderr" {
            let mut state = output.state.lock();
            if names_an_error(&text) {
                state.named_error = None;
            }
            if state.stderr_tail.len() == TAIL_LINES {
                let gone = state.stderr_tail.pop_front();
                if gone.as_deref().is_some_and(names_an_error) {
                    state.named_error = gone;
                }
            }
            state.stderr_tail.push_back(text);
        }
        line.clear();
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for chunk in buf[..n].split_inclusive(|&b| b == b'\n') {
            if let Some(body) = chunk.strip_suffix(b"\n") {
                line.extend_from_slice(body);
                emit(&mut line);
            } else {
                line.extend_from_slice(chunk);
                if line.len() >= MAX_LINE {
                    emit(&mut line);
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
    let mut state = output.state.lock();
    state.open_streams -= 1;
    output.done.notify_all();
}

#[cfg(test)]
mod tests {
    use super::names_an_error;

    #[test]
    fn the_lines_that_name_an_error_are_known_in_each_language() {
        for line in [
            "Traceback (most recent call last):",
            "ValueError: boom",
            "Error: boom",
            "TypeError [ERR_INVALID_ARG_TYPE]: bad",
            "java.lang.IllegalStateException: no",
            "panic: runtime error: index out of range",
            "thread 'main' panicked at src/main.rs:3:5:",
            "fatal error: all goroutines are asleep",
        ] {
            assert!(names_an_error(line), "{line}");
        }
        for line in [
            "    at Object.<anonymous> (/w.js:3:9)",
            "  File \"w.py\", line 3, in <module>",
            "goroutine 1 [running]:",
            "starting worker on port 5555",
            "Error:",
            "an Error: in prose, said by someone",
        ] {
            assert!(!names_an_error(line), "{line}");
        }
    }
}
