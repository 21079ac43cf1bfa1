//! Soak with faults: parents calling continuously while their spawned
//! workers are killed at random and restarted (half of the parents over the
//! private link, half over ZeroMQ alone), plus several parents sharing one
//! connect-mode worker that is killed too and started again on a new port,
//! plus a pool of two workers, recycled every few hundred calls, whose
//! workers are killed too.
//! Every call must end with its own result or a definite error within its
//! timeout; every parent must answer again after its worker's last kill;
//! afterwards the process's threads, descriptors and memory must be back
//! near where they started.
//!
//!   cargo run --release --example soak -- --seconds 30
//!
//! Prints a summary and "N passed, N failed" (checks); exits non-zero on a violation.

#[path = "../common/mod.rs"]
mod common;
use common::{heap_in_use, wait_until};
use multifrost::registry::Registry;
use multifrost::{ErrorKind, Options, Parent};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
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

/// Spawned parents, over the private link (even) and over ZeroMQ (odd).
const SPAWNED: usize = 4;
/// How often the connect-mode service is killed and started again.
const SERVICE_KILL_EVERY: Duration = Duration::from_secs(6);
/// How long a parent may take to answer again once the faults stop: the
/// longest restart back-off (6.4 s), a start-up, and a rediscovery after a
/// timed-out call.
const RECOVERY: Duration = Duration::from_secs(30);

/// Starts the connect-mode test worker under `id` and waits until the
/// registry names it (not a predecessor killed before it could unregister).
fn start_service(worker: &str, id: &str) -> Child {
    let mut child = Command::new(worker)
        .args(["--service", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reg = Registry::for_user().unwrap();
    let pid = child.id();
    let registered = wait_until(Duration::from_secs(20), || {
        reg.lookup(id).is_some_and(|e| e.pid as u32 == pid)
    });
    if !registered {
        let _ = child.kill();
        let _ = child.wait();
        panic!("service '{id}' (pid {pid}) never registered");
    }
    child
}

/// Whether `p` answers an echo within `limit` (the breaker may hold it
/// open for a while, and a restart may be backing off).
fn answers_again(p: &Parent, limit: Duration) -> bool {
    wait_until(limit, || {
        p.call("echo", &token_args(7), CALL_TIMEOUT_MS)
            .is_ok_and(|r| rmp::decode::read_int::<u64, _>(&mut r.bytes()).ok() == Some(7))
    })
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
    let spawned: Vec<Arc<Parent>> = (0..SPAWNED)
        .map(|i| {
            let mut opts = Options {
                auto_restart: 1_000_000,
                private_link: i % 2 == 0,
                ..Options::default()
            };
            opts.set_heartbeat(200, 300, 2).unwrap();
            opts.set_breaker(5, 200).unwrap();
            let p = Parent::spawn(&worker, &[], opts).expect("spawn");
            let s: serde_json::Value = serde_json::from_str(&p.stats_json()).unwrap();
            let want = if i % 2 == 0 { "link" } else { "zmq" };
            assert_eq!(s["transport"], want, "spawned parent {i}");
            Arc::new(p)
        })
        .collect();

    let pool = {
        let mut opts = Options {
            auto_restart: 1_000_000,
            max_calls_per_worker: 500,
            ..Options::default()
        };
        opts.set_workers(2).unwrap();
        opts.set_heartbeat(200, 300, 2).unwrap();
        opts.set_breaker(5, 200).unwrap();
        Arc::new(Parent::spawn(&worker, &[], opts).expect("spawn a pool"))
    };

    const SERVICE: &str = "soak-svc";
    let mut service = start_service(&worker, SERVICE);
    let shared: Vec<Arc<Parent>> = (0..3)
        .map(|_| {
            let mut o = Options::default();
            o.set_connect_timeout(10_000).unwrap();
            Arc::new(Parent::connect(SERVICE, o).expect("connect"))
        })
        .collect();

    let mut threads = Vec::new();
    for (i, p) in spawned.iter().enumerate() {
        for j in 0..2 {
            let (p, s, t) = (Arc::clone(p), Arc::clone(&stop), Arc::clone(&tally));
            threads.push(std::thread::spawn(move || {
                caller(p, s, t, (i * 2 + j) as u64)
            }));
        }
    }
    for j in 0..3 {
        let (p, s, t) = (Arc::clone(&pool), Arc::clone(&stop), Arc::clone(&tally));
        threads.push(std::thread::spawn(move || caller(p, s, t, 200 + j)));
    }
    for (i, p) in shared.iter().enumerate() {
        for j in 0..2 {
            let (p, s, t) = (Arc::clone(p), Arc::clone(&stop), Arc::clone(&tally));
            threads.push(std::thread::spawn(move || {
                caller(p, s, t, 100 + (i * 2 + j) as u64)
            }));
        }
    }
    // The killer: every 0.3-1.3 s, SIGKILL the worker of one spawned parent
    // picked at random; every few seconds, the connect-mode service too,
    // which is then started again (on a new port: its parents must follow).
    let mut kills = [0u64; SPAWNED];
    let mut pool_kills = 0;
    let mut service_kills = 0;
    let mut service_killed_at = Instant::now();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut rng = multifrost::ids::random_u128() as u64 | 1;
    while Instant::now() < end {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 1000));
        // One in SPAWNED + 1 kills hits a worker of the pool.
        let victim = (rng >> 32) as usize % (SPAWNED + 1);
        let parent = spawned.get(victim).unwrap_or(&pool);
        let s: serde_json::Value = serde_json::from_str(&parent.stats_json()).unwrap();
        let member = &s["workers"][(rng >> 40) as usize % s["workers"].as_array().unwrap().len()];
        if let Some(pid) = member["pid"].as_i64().filter(|&p| p > 0) {
            // SAFETY: signalling a child process by pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            match kills.get_mut(victim) {
                Some(k) => *k += 1,
                None => pool_kills += 1,
            }
        }
        if service_killed_at.elapsed() >= SERVICE_KILL_EVERY {
            let _ = service.kill();
            let _ = service.wait();
            service_kills += 1;
            service = start_service(&worker, SERVICE);
            service_killed_at = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // No more faults: every parent must answer again, whatever its last
    // kill left behind (a restart backing off, a breaker open, a service
    // that moved).
    let spawned_recovered: Vec<bool> = spawned.iter().map(|p| answers_again(p, RECOVERY)).collect();
    let shared_recovered: Vec<bool> = shared.iter().map(|p| answers_again(p, RECOVERY)).collect();
    let pool_recovered = answers_again(&pool, RECOVERY);
    if !pool_recovered {
        println!("pool not recovered: {}", pool.stats_json());
    }
    for (p, ok) in spawned
        .iter()
        .chain(&shared)
        .zip(spawned_recovered.iter().chain(&shared_recovered))
    {
        if !ok {
            println!("not recovered: {}", p.stats_json());
        }
    }
    let stat = |p: &Parent, key: &str| {
        let s: serde_json::Value = serde_json::from_str(&p.stats_json()).unwrap();
        s[key].as_u64().unwrap_or(0)
    };
    let restarts: Vec<u64> = spawned.iter().map(|p| stat(p, "restarts")).collect();
    // Echo never outlives a cancel: no worker was stopped for a handler.
    let escalations: u64 = spawned.iter().map(|p| stat(p, "escalations")).sum();
    let (pool_restarts, pool_recycles) = (stat(&pool, "restarts"), stat(&pool, "recycles"));
    drop(shared);
    drop(spawned);
    drop(pool);
    unsafe { libc::kill(service.id() as i32, libc::SIGTERM) };
    let service_status = service.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (threads1, fds1, rss1) = resources();
    let heap1 = heap_in_use();

    let errors = tally.errors.lock().unwrap().clone();
    println!(
        "soak {seconds} s: {} calls answered correctly, worker kills {kills:?} (link, zmq, link, zmq), restarts {restarts:?}, escalations {escalations}, {service_kills} service kills, errors {errors:?}, max call {} ms",
        tally.ok.load(Ordering::Relaxed),
        tally.max_ms.load(Ordering::Relaxed)
    );
    println!(
        "pool of 2: {pool_kills} worker kills, {pool_restarts} restarts, {pool_recycles} recycles"
    );
    println!(
        "recovered after the last kill: spawned {spawned_recovered:?}, connect-mode {shared_recovered:?}, pool {pool_recovered}"
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
            "every spawned parent's worker was killed",
            kills.iter().all(|&k| k > 0),
        ),
        (
            // One kill may land on a process already dying from the one
            // before (its pid not yet cleared): that is the slack of one.
            "every spawned parent restarted its worker after each kill (restarts >= kills - 1)",
            kills.iter().zip(&restarts).all(|(&k, &r)| r + 1 >= k),
        ),
        (
            "every spawned parent answers after its worker's last kill",
            spawned_recovered.iter().all(|&ok| ok),
        ),
        (
            "the pool restarted its killed workers and recycled them",
            pool_restarts + 1 >= pool_kills && pool_recycles > 0,
        ),
        ("the pool answers after its last kill", pool_recovered),
        (
            "no worker was stopped for a handler past its cancel grace",
            escalations == 0,
        ),
        (
            "the connect-mode service was killed and started again",
            seconds < 2 * SERVICE_KILL_EVERY.as_secs() || service_kills > 0,
        ),
        (
            "every connect-mode parent follows the service to its new port",
            shared_recovered.iter().all(|&ok| ok),
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
