//! Helpers shared by the integration tests (each test file includes this
//! module with `mod common;`; not every file uses every helper).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

/// A temporary HOME for the whole test binary, so the registry of the user
/// running the tests is never touched (children inherit it). Removed when
/// the test binary exits (libtest has no hook after the last test; the C
/// library's exit handlers run after `main` returns or `process::exit`).
pub fn temp_home() -> PathBuf {
    static ONCE: Once = Once::new();
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_home() {
        if let Some(home) = HOME.get() {
            let _ = std::fs::remove_dir_all(home);
        }
    }
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let home = std::env::temp_dir().join(format!("mf-{binary}-{}", std::process::id()));
    ONCE.call_once(|| {
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        std::env::set_var("HOME", &home);
        HOME.set(home.clone()).unwrap();
        // SAFETY: registers a function without arguments to run at exit.
        assert_eq!(unsafe { libc::atexit(remove_home) }, 0);
    });
    home
}

/// The `test_worker` example (built by a plain `cargo test`).
pub fn test_worker() -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("examples/test_worker")
        .to_string_lossy()
        .into_owned()
}

/// A msgpack array of integers (call arguments).
pub fn int_args(values: &[i64]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, values.len() as u32).unwrap();
    for v in values {
        rmp::encode::write_sint(&mut out, *v).unwrap();
    }
    out
}

/// An integer result.
pub fn int(bytes: &[u8]) -> i64 {
    rmp::decode::read_int(&mut &bytes[..]).unwrap()
}

/// Polls `cond` until it holds or `limit` passes; its last answer.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Bytes malloc has handed out and not got back, mmapped blocks included
/// (RSS also counts freed memory glibc keeps, such as the stacks of exited
/// threads it caches).
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}
