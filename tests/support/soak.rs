//! Soak with faults: parents calling continuously while their spawned worker
//! is killed at random and restarted, plus several parents sharing one
//! connect-mode worker. Every call must end with its own result or a
//! definite error within its timeout; afterwards the process's threads,
//! descriptors and memory must be back near where they started.
//!
//!   cargo run --release --example soak -- --seconds 30
//!
//! Prints a summary and "N passed, N failed" (checks); exits non-zero on a violation.

#[path = "../common/mod.rs"]
mod common;
use common::heap_in_use;
use multifrost::{ErrorKind, Options, Parent};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CALL_TIMEOUT_MS: i64 = 2000;
/// A call may end this much after its timeout (scheduling on a busy machine).
const SLACK: Duration = Duration::from_millis(1500);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    wrong: AtomicU64,
    late: AtomicU64,
    errors: Mutex<HashMap<String, u64>>,
    max_ms: AtomicU64,
}

impl Tally {
    fn record(&self, took: Duration, outcome: Result<bool, multifrost::Error>) {
        self.max_ms
            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
        if took > Duration::from_millis(CALL_TIMEOUT_MS as u64) + SLACK {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(true) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {
                self.wrong.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let kind = match e.kind {
                    ErrorKind::WorkerExited
                    | ErrorKind::Timeout
                    | ErrorKind::CircuitOpen
                    | ErrorKind::Closed => {
                        format!("{:?}", e.kind)
                    }
                    other => format!("unexpected {other:?}: {}", e.message),
                };
                *self.errors.lock().unwrap().entry(kind).or_default() += 1;
            }
        }
    }
}

fn token_args(token: u64) -> Vec<u8> {
    let mut a = vec![0x91];
    rmp::encode::write_uint(&mut a, token).unwrap();
    a
}

/// Calls echo with unique tokens until `stop`; a reply must carry its own token.
fn caller(p: Arc<Parent>, stop: Arc<AtomicBool>, tally: Arc<Tally>, seed: u64) {
    let mut n = seed << 40;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let t = Instant::now();
        let outcome = p
            .call("echo", &token_args(n), CALL_TIMEOUT_MS)
            .map(|r| rmp::decode::read_int::<u64, _>(&mut r.bytes()).ok() == Some(n));
        if matches!(&outcome, Err(e) if e.kind == ErrorKind::CircuitOpen) {
            std::thread::sleep(Duration::from_millis(20));
        }
        tally.record(t.elapsed(), outcome);
    }
}

fn resources() -> (usize, usize, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| {
                v.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    (field("Threads:") as usize, fds, field("VmRSS:"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let home = std::env::temp_dir().join(format!("mf-soak-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    std::env::set_var("HOME", &home);
    multifrost::log::set_sink(Some(Arc::new(|_: &str| {})));
    let worker = std::env::current_exe()
        .unwrap()
        .with_file_name("test_worker")
        .to_string_lossy()
        .into_owned();

    // Warm up once so the baseline includes the library's lasting threads.
    drop(Parent::spawn(&worker, &[], Options::default()).expect("spawn"));
    let (threads0, fds0, rss0) = resources();
    let heap0 = heap_in_use();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut opts = Options {
        auto_restart: 1_000_000,
        ..Options::default()
    };
    opts.set_heartbeat(200, 300, 2).unwrap();
    opts.set_breaker(5, 200).unwrap();
    let spawned = Arc::new(Parent::spawn(&worker, &[], opts).expect("spawn"));

    let mut service = Command::new(&worker)
        .args(["--service", "soak-svc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let shared: Vec<Arc<Parent>> = (0..3)
        .map(|_| {
            let mut o = Options::default();
            o.set_connect_timeout(10_000).unwrap();
            Arc::new(Parent::connect("soak-svc", o).expect("connect"))
        })
        .collect();

    let mut threads = Vec::new();
    for i in 0..4 {
        let (p, s, t) = (Arc::clone(&spawned), Arc::clone(&stop), Arc::clone(&tally));
        threads.push(std::thread::spawn(move || caller(p, s, t, i)));
    }
    for (i, p) in shared.iter().enumerate() {
        for j in 0..2 {
            let (p, s, t) = (Arc::clone(p), Arc::clone(&stop), Arc::clone(&tally));
            threads.push(std::thread::spawn(move || {
                caller(p, s, t, 100 + (i * 2 + j) as u64)
            }));
        }
    }
    // The killer: SIGKILL the spawned worker every 0.3-1.3 s.
    let mut kills = 0;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut rng = multifrost::ids::random_u128() as u64 | 1;
    while Instant::now() < end {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 1000));
        let s: serde_json::Value = serde_json::from_str(&spawned.stats_json()).unwrap();
        if let Some(pid) = s["worker_pid"].as_i64().filter(|&p| p > 0) {
            // SAFETY: signalling a child process by pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            kills += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let stats: serde_json::Value = serde_json::from_str(&spawned.stats_json()).unwrap();
    drop(shared);
    drop(spawned);
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    let service_status = service.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (threads1, fds1, rss1) = resources();
    let heap1 = heap_in_use();

    let errors = tally.errors.lock().unwrap().clone();
    println!(
        "soak {seconds} s: {} calls answered correctly, {kills} worker kills, {} restarts, errors {errors:?}, max call {} ms",
        tally.ok.load(Ordering::Relaxed),
        stats["restarts"],
        tally.max_ms.load(Ordering::Relaxed)
    );
    println!(
        "threads {threads0} -> {threads1}, fds {fds0} -> {fds1}, rss {rss0} KiB -> {rss1} KiB, heap in use {} KiB -> {} KiB",
        heap0 / 1024,
        heap1 / 1024
    );
    let checks = [
        ("calls were answered", tally.ok.load(Ordering::Relaxed) > 0),
        (
            "no call got another call's reply",
            tally.wrong.load(Ordering::Relaxed) == 0,
        ),
        (
            "no call outlived its timeout",
            tally.late.load(Ordering::Relaxed) == 0,
        ),
        (
            "every error was a definite one",
            errors.keys().all(|k| !k.starts_with("unexpected")),
        ),
        (
            "the worker was killed and restarted",
            kills == 0 || stats["restarts"].as_u64().unwrap_or(0) > 0,
        ),
        (
            "the service worker stopped cleanly",
            service_status.success(),
        ),
        ("threads back to the start", threads1 <= threads0 + 1),
        ("descriptors back to the start", fds1 <= fds0 + 2),
        ("heap back near the start", heap1 <= heap0 + 4 * 1024 * 1024),
        // Freed memory glibc keeps (its cache of thread stacks is up to 40 MiB) stays in RSS.
        ("RSS bounded", rss1 <= rss0 + 96 * 1024),
    ];
    let failed: Vec<_> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    for name in &failed {
        println!("FAILED: {name}");
    }
    println!(
        "{} passed, {} failed",
        checks.len() - failed.len(),
        failed.len()
    );
    let _ = std::fs::remove_dir_all(&home);
    std::process::exit(if failed.is_empty() { 0 } else { 1 });
}
