//! The private link between a parent and a worker it spawned (src/link.rs),
//! end to end with real processes: our own worker is reached over it, a
//! worker that cannot take it up is reached over the DEALER as the protocol
//! says, and a worker handed a bad `MULTIFROST_LINK` ignores it and connects
//! to its port. (A restarted worker's fresh link: `tests/supervision.rs`.)

mod common;
use common::{int, int_args, temp_home, test_worker};

use multifrost::codec::{self, Encoder};
use multifrost::{ErrorKind, Options, Parent};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn stats(p: &Parent) -> Value {
    serde_json::from_str(&p.stats_json()).unwrap()
}

fn transport(p: &Parent) -> String {
    stats(p)["transport"].as_str().unwrap().to_owned()
}

fn spawn(program: &str, args: &[String], options: Options) -> Parent {
    temp_home();
    Parent::spawn(program, args, options).expect("spawn test worker")
}

/// `[bin]`: one binary argument.
fn bin_args(bytes: &[u8]) -> Vec<u8> {
    let mut b = vec![0x91];
    rmp::encode::write_bin(&mut b, bytes).unwrap();
    b
}

/// Calls that every transport must carry the same way: results, remote
/// errors, a 3 MiB echo (larger than both ends' buffers), 512 calls in
/// flight at once, and a heartbeat.
fn check_calls(p: &Parent) {
    assert_eq!(
        int(p.call("add", &int_args(&[40, 2]), 5000).unwrap().bytes()),
        42
    );
    let e = p.call("fail", &int_args(&[]), 5000).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Remote);
    assert_eq!(e.message, "RuntimeError: requested failure");
    let big: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let echoed = p.call("echo", &bin_args(&big), 10_000).unwrap();
    let mut expect = Vec::new();
    rmp::encode::write_bin(&mut expect, &big).unwrap();
    assert!(
        echoed.bytes() == expect.as_slice(),
        "the 3 MiB echo differs"
    );

    let (tx, rx) = mpsc::channel();
    for i in 0..512i64 {
        let tx = tx.clone();
        p.call_async(
            "add",
            &int_args(&[i, 1000]),
            10_000,
            multifrost::parent::Done::Callback(Box::new(move |r| {
                let _ = tx.send((i, r.map(|r| int(r.bytes())).map_err(|e| e.to_string())));
            })),
        )
        .unwrap();
    }
    let mut seen = vec![false; 512];
    for _ in 0..512 {
        let (i, r) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("an async call never ended");
        assert_eq!(r, Ok(i + 1000), "call {i}");
        seen[i as usize] = true;
    }
    assert!(seen.iter().all(|&s| s));
    assert!(p.ping(Duration::from_secs(5)).is_ok());
}

#[test]
fn our_spawned_worker_is_reached_over_the_link() {
    let p = spawn(&test_worker(), &[], Options::default());
    assert_eq!(transport(&p), "link");
    check_calls(&p);
    let s = stats(&p);
    assert_eq!(s["dropped_malformed"], 0, "{s}");
    assert_eq!(s["dropped_unknown"], 0, "{s}");
    assert_eq!(transport(&p), "link");
}

#[test]
fn with_the_link_turned_off_the_same_worker_uses_the_dealer() {
    let p = spawn(
        &test_worker(),
        &[],
        Options {
            private_link: false,
            ..Options::default()
        },
    );
    assert_eq!(transport(&p), "zmq");
    check_calls(&p);
    assert_eq!(transport(&p), "zmq");
}

/// A shell that runs the worker as its own child (it cannot `exec` it:
/// a command follows) leaves the link with the shell, which ignores it.
/// The worker sees a parent pid that is not the one named in the variable
/// and connects to the port instead.
#[test]
fn a_worker_behind_a_shell_that_keeps_running_uses_the_dealer() {
    let script = format!("'{}'; exit $?", test_worker());
    let p = spawn("/bin/sh", &["-c".to_owned(), script], Options::default());
    assert_eq!(transport(&p), "zmq");
    assert_eq!(
        int(p.call("add", &int_args(&[1, 2]), 5000).unwrap().bytes()),
        3
    );
}

/// A worker that stops serving and serves again in the same process
/// keeps its link, with what it had half read: calls sent in between wait
/// in the socket for the second serve, which says hello again.
#[test]
fn a_worker_that_serves_again_continues_on_the_same_link() {
    let p = spawn(
        &test_worker(),
        &["--serve-twice".to_owned()],
        Options::default(),
    );
    let pid = int(p.call("pid", &int_args(&[]), 5000).unwrap().bytes());
    assert!(
        p.call("pause", &int_args(&[]), 5000).is_ok(),
        "the first serve ends"
    );
    assert_eq!(
        int(p.call("add", &int_args(&[2, 3]), 5000).unwrap().bytes()),
        5
    );
    check_calls(&p);
    assert_eq!(
        int(p.call("pid", &int_args(&[]), 5000).unwrap().bytes()),
        pid
    );
    assert_eq!(transport(&p), "link");
    assert_eq!(stats(&p)["dropped_malformed"], 0);
}

/// Starts the test worker in spawn mode against a DEALER of our own, with
/// `MULTIFROST_LINK` set to `link`, and returns whether it answered a
/// heartbeat over the port.
fn answers_on_the_port_with(link: &str) -> bool {
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.set_rcvtimeo(5000).unwrap();
    dealer.set_sndtimeo(5000).unwrap();
    dealer.bind("tcp://127.0.0.1:*").unwrap();
    let ep = dealer.get_last_endpoint().unwrap().unwrap();
    let port = ep.rsplit(':').next().unwrap().to_owned();
    let mut child = Command::new(test_worker())
        .env("COMLINK_ZMQ_PORT", &port)
        .env("COMLINK_WORKER_MODE", "1")
        .env("MULTIFROST_LINK", link)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut hb = Vec::new();
    Encoder::new(&mut hb).heartbeat("hb-1", codec::now_seconds(), false);
    // (Without a peer the DEALER cannot send: the timeout is the answer.)
    let reply = dealer
        .send_multipart([&[][..], &hb[..]], 0)
        .and_then(|()| dealer.recv_multipart(0));
    let _ = child.kill();
    let _ = child.wait();
    let Ok(frames) = reply else { return false };
    let msg = codec::decode(&frames[1], codec::Limits::default()).unwrap();
    msg.kind == codec::Kind::Heartbeat && msg.hb_response && msg.id == Some("hb-1")
}

#[test]
fn a_worker_handed_a_bad_link_variable_connects_to_its_port() {
    temp_home();
    let me = std::process::id();
    // A regular file where the socket should be: open in the test process,
    // so the worker inherits a real descriptor of the wrong kind.
    let file = std::fs::File::open("/proc/self/status").unwrap();
    let file_fd = inheritable(std::os::fd::AsRawFd::as_raw_fd(&file));
    // A real socket pair end, to be named for another parent.
    let mut pair = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    assert_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) },
        0
    );
    let pair_fd = inheritable(pair[0]);
    for bad in [
        String::new(),
        "garbage".to_owned(),
        "7".to_owned(),
        format!("x:{me}"),
        format!("-1:{me}"),
        format!("2:{me}"),
        format!("999:{me}"),
        format!("{file_fd}:{me}"),
        format!("{pair_fd}:1"),
        format!("{pair_fd}:{me}x"),
    ] {
        assert!(answers_on_the_port_with(&bad), "MULTIFROST_LINK='{bad}'");
    }
    drop(file);
    // SAFETY: closes the two descriptors socketpair made here.
    unsafe {
        libc::close(pair[0]);
        libc::close(pair[1]);
    }
}

/// Clears close-on-exec, so a child started next inherits `fd`.
fn inheritable(fd: i32) -> i32 {
    // SAFETY: fcntl on a descriptor this test owns; no memory arguments.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    fd
}

#[test]
fn a_call_started_from_a_completion_is_sent_without_waiting_for_a_timer() {
    // A completion runs on the driver; a call it starts (here from another
    // thread, waited for) lands in the mailbox while the driver is busy.
    // The driver looks at its mailbox before it parks, so the call goes out
    // at once; no timer may be what finally sends it, and `stalls` stays 0.
    use multifrost::parent::{Done, Outcome};
    use std::sync::Arc;
    use std::time::Duration;
    for private_link in [true, false] {
        let mut options = Options::default();
        options.set_heartbeat(0, 0, 0).unwrap(); // nothing else wakes the driver
        options.private_link = private_link;
        let p = Arc::new(spawn(&test_worker(), &[], options));
        assert_eq!(transport(&p), if private_link { "link" } else { "zmq" });
        for x in (1..).step_by(2).take(200) {
            let (tx, results) = mpsc::channel();
            let first = {
                let (p, tx) = (Arc::clone(&p), tx.clone());
                Box::new(move |outcome: Outcome| {
                    tx.send((x, int(outcome.unwrap().bytes()))).unwrap();
                    std::thread::scope(|s| {
                        s.spawn(|| {
                            let done = Box::new(move |o: Outcome| {
                                tx.send((x + 1, int(o.unwrap().bytes()))).unwrap();
                            });
                            let args = int_args(&[x + 1, x + 1]);
                            p.call_async("add", &args, 5000, Done::Callback(done))
                                .unwrap();
                        });
                    });
                })
            };
            p.call_async("add", &int_args(&[x, x]), 5000, Done::Callback(first))
                .unwrap();
            let mut got: Vec<(i64, i64)> = (0..2)
                .map(|_| {
                    results
                        .recv_timeout(Duration::from_secs(20))
                        .expect("a call never completed")
                })
                .collect();
            got.sort_unstable();
            assert_eq!(got, [(x, 2 * x), (x + 1, 2 * (x + 1))]);
        }
        assert_eq!(stats(&p)["stalls"], 0);
    }
}

#[test]
fn a_blocking_call_from_a_completion_is_refused_instead_of_hanging() {
    use multifrost::parent::{Done, Outcome};
    use std::sync::Arc;
    let p = Arc::new(spawn(&test_worker(), &[], Options::default()));
    let (tx, rx) = mpsc::channel();
    let inner = Arc::clone(&p);
    let done = Box::new(move |o: Outcome| {
        let nested = inner.call("add", &int_args(&[1, 2]), 5000);
        tx.send((o.is_ok(), nested.err().map(|e| (e.kind, e.message))))
            .unwrap();
    });
    p.call_async("add", &int_args(&[1, 1]), 5000, Done::Callback(done))
        .unwrap();
    let (first_ok, nested) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the completion hung");
    assert!(first_ok);
    let (kind, message) = nested.expect("the nested blocking call must be refused");
    assert_eq!(kind, ErrorKind::InvalidArgument);
    assert!(message.contains("would wait forever"), "{message}");
    // The parent is still usable.
    assert_eq!(
        int(p.call("add", &int_args(&[2, 3]), 5000).unwrap().bytes()),
        5
    );
}
