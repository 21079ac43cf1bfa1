//! The service registry shared with every implementation of the protocol
//! (PROTOCOL.md §3): `$HOME/.multifrost/services.json`, written whole through
//! `services.tmp` + rename, guarded by the exclusive-create lock file
//! `services.lock` (holding the owner's PID) plus an advisory `flock` on it.

use crate::error::{Error, ErrorKind, Result};
use crate::log::{self, Level};
use serde_json::{Map, Value};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Service ids this process has registered and not yet given back: a second
/// worker in the same process must be refused like one in another process.
static HELD_HERE: crate::sync::Mutex<Vec<String>> = crate::sync::Mutex::new(Vec::new());

const LOCK_RETRY: Duration = Duration::from_millis(100);
const LOCK_GIVE_UP: Duration = Duration::from_secs(10);
const LOCK_STALE: Duration = Duration::from_secs(10);
const DISCOVER_POLL: Duration = Duration::from_millis(100);

/// One live-or-not entry of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub port: u16,
    pub pid: i32,
    pub started: String,
}

impl Entry {
    /// Reads an entry, ignoring one whose port or pid is unusable.
    fn from_value(v: &Value) -> Option<Entry> {
        let port = v.get("port")?.as_u64()?;
        let pid = v.get("pid")?.as_i64()?;
        if !(1024..=65535).contains(&port) || pid <= 0 || pid > i64::from(i32::MAX) {
            return None;
        }
        Some(Entry {
            port: port as u16,
            pid: pid as i32,
            started: v
                .get("started")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
    }

    /// Alive, and the same process that wrote the entry: a PID the kernel
    /// gave to a newer process (started after the entry's `started`) is
    /// treated as dead.
    pub fn is_alive(&self) -> bool {
        if !pid_alive(self.pid) {
            return false;
        }
        match (
            process_start_epoch(self.pid),
            parse_local_iso8601(&self.started),
        ) {
            // Two seconds of slack for clock granularity and slow start-up.
            (Some(process), Some(entry)) => process <= entry + 2.0,
            _ => true,
        }
    }
}

/// When a process started, in seconds since the epoch (Linux /proc).
fn process_start_epoch(pid: i32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let start_ticks: f64 = rest.split(' ').nth(19)?.parse().ok()?;
    let btime: f64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    crate::sys::os::clock_ticks().map(|ticks| btime + start_ticks / ticks)
}

/// Reads "YYYY-MM-DDTHH:MM:SS[.ffffff]" as local time (what every
/// implementation writes), in seconds since the epoch.
fn parse_local_iso8601(text: &str) -> Option<f64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i32>());
    let (year, month, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|p| p.parse::<i32>());
    let (hour, min, sec) = (h.next()?.ok()?, h.next()?.ok()?, h.next()?.ok()?);
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    let local = crate::sys::os::LocalTime {
        year,
        month,
        day,
        hour,
        min,
        sec,
    };
    crate::sys::os::local_to_epoch(&local).map(|secs| secs as f64 + frac)
}

pub use crate::sys::os::pid_alive;

/// The registry folder and its files.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// The registry of the current user: `$HOME/.multifrost`.
    pub fn for_user() -> Result<Registry> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::io("HOME is not set: cannot find the service registry"))?;
        Ok(Registry::at(Path::new(&home).join(".multifrost")))
    }

    pub fn at(dir: PathBuf) -> Registry {
        Registry { dir }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("services.json")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("services.lock")
    }

    fn ensure_dir(&self) -> Result<()> {
        if !self.dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| Error::io(format!("cannot create {}: {e}", self.dir.display())))?;
        }
        let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700));
        Ok(())
    }

    /// Runs `f` holding the registry lock.
    pub fn with_lock<T>(&self, f: impl FnOnce(&Registry) -> Result<T>) -> Result<T> {
        self.ensure_dir()?;
        let file = self.acquire()?;
        let mut flock = fd_lock::RwLock::new(file);
        let guard = flock.write();
        let result = f(self);
        drop(guard);
        let _ = fs::remove_file(self.lock_path());
        result
    }

    /// Creates the lock file exclusively, clearing a stale one.
    fn acquire(&self) -> Result<File> {
        let path = self.lock_path();
        let give_up = Instant::now() + LOCK_GIVE_UP;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut file) => {
                    let _ = write!(file, "{}", std::process::id());
                    let _ = file.flush();
                    return Ok(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if self.clear_stale_lock() {
                        continue;
                    }
                }
                Err(e) => return Err(Error::io(format!("cannot create {}: {e}", path.display()))),
            }
            if Instant::now() >= give_up {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("registry lock {} still held after 10 s", path.display()),
                ));
            }
            std::thread::sleep(LOCK_RETRY);
        }
    }

    /// Removes the lock file if it is older than 10 s or its PID is dead.
    fn clear_stale_lock(&self) -> bool {
        let path = self.lock_path();
        let Ok(meta) = fs::metadata(&path) else {
            return true; // gone already: try again at once
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        let mut text = String::new();
        let _ = File::open(&path).and_then(|mut f| f.read_to_string(&mut text));
        let pid: Option<i32> = text.trim().parse().ok();
        // An empty file may be a lock being written this instant: only age makes it stale.
        let dead = pid.is_some_and(|p| !pid_alive(p));
        if age > LOCK_STALE || dead {
            log::emit(
                Level::Warn,
                "registry_stale_lock",
                &format!(
                    "removing stale registry lock (pid {}, {} s old)",
                    pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                    age.as_secs()
                ),
                &[],
            );
            let _ = fs::remove_file(&path);
            return true;
        }
        false
    }

    /// The registry content; a missing file is empty, a corrupt one is set
    /// aside (with a warning) and treated as empty.
    pub fn read(&self) -> Map<String, Value> {
        let path = self.file();
        let Ok(text) = fs::read_to_string(&path) else {
            return Map::new();
        };
        if text.trim().is_empty() {
            return Map::new();
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        }
    }

    /// Like [`Registry::read`] but, under the lock, moves a corrupt file aside.
    fn read_for_update(&self) -> Map<String, Value> {
        let path = self.file();
        let Ok(text) = fs::read_to_string(&path) else {
            return Map::new();
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            _ if text.trim().is_empty() => Map::new(),
            _ => {
                let stamp = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = self.dir.join(format!("services.json.corrupt-{stamp}"));
                let _ = fs::rename(&path, &aside);
                log::emit(
                    Level::Warn,
                    "registry_corrupt",
                    &format!(
                        "{} was not a JSON object; moved it to {} and started a new registry",
                        path.display(),
                        aside.display()
                    ),
                    &[],
                );
                Map::new()
            }
        }
    }

    fn write(&self, map: &Map<String, Value>) -> Result<()> {
        let tmp = self.dir.join("services.tmp");
        let text = serde_json::to_string_pretty(map).map_err(|e| Error::io(e.to_string()))?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(format!("cannot write {}: {e}", tmp.display())))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("cannot write {}: {e}", tmp.display())))?;
        let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600));
        fs::rename(&tmp, self.file())
            .map_err(|e| Error::io(format!("cannot replace services.json: {e}")))
    }

    /// Registers `id` for this process. `bind` is called under the lock and
    /// returns the port it bound, so the port in the file is always one that
    /// is really listening.
    pub fn register(&self, id: &str, bind: impl FnOnce() -> Result<u16>) -> Result<u16> {
        validate_id(id)?;
        self.with_lock(|reg| {
            let mut map = reg.read_for_update();
            if let Some(e) = map.get(id).and_then(Entry::from_value) {
                let ours = e.pid as u32 == std::process::id();
                if e.is_alive() && (!ours || HELD_HERE.lock().iter().any(|h| h == id)) {
                    return Err(Error::new(
                        ErrorKind::AlreadyRunning,
                        format!(
                            "service '{id}' already running (pid {}, port {})",
                            e.pid, e.port
                        ),
                    ));
                }
            }
            let port = bind()?;
            map.insert(
                id.to_owned(),
                serde_json::json!({
                    "port": port,
                    "pid": std::process::id(),
                    "started": local_iso8601(),
                }),
            );
            reg.write(&map)?;
            HELD_HERE.lock().push(id.to_owned());
            Ok(port)
        })
    }

    /// Removes `id` if its entry is this process's.
    pub fn unregister(&self, id: &str) -> Result<()> {
        HELD_HERE.lock().retain(|h| h != id);
        self.with_lock(|reg| {
            let mut map = reg.read_for_update();
            let ours = map
                .get(id)
                .and_then(|v| v.get("pid"))
                .and_then(Value::as_u64)
                == Some(u64::from(std::process::id()));
            if ours {
                map.remove(id);
                reg.write(&map)?;
            }
            Ok(())
        })
    }

    /// The live entry of `id`, if any (read without the lock: writes are atomic).
    pub fn lookup(&self, id: &str) -> Option<Entry> {
        self.read()
            .get(id)
            .and_then(Entry::from_value)
            .filter(Entry::is_alive)
    }

    /// Polls until `id` has a live entry, up to `timeout`.
    pub fn discover(&self, id: &str, timeout: Duration) -> Result<Entry> {
        validate_id(id)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.lookup(id) {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "service '{id}' not found within {:.1} s",
                        timeout.as_secs_f64()
                    ),
                ));
            }
            std::thread::sleep(
                DISCOVER_POLL.min(deadline.saturating_duration_since(Instant::now())),
            );
        }
    }

    /// Removes, under the lock, every entry whose process is dead (or whose
    /// PID was reused) and every entry that is not usable (bad port or pid).
    /// Returns the ids removed.
    pub fn prune(&self) -> Result<Vec<String>> {
        self.with_lock(|reg| {
            let mut map = reg.read_for_update();
            let dead: Vec<String> = map
                .iter()
                .filter(|(_, v)| !Entry::from_value(v).is_some_and(|e| e.is_alive()))
                .map(|(k, _)| k.clone())
                .collect();
            if !dead.is_empty() {
                for id in &dead {
                    map.remove(id);
                }
                reg.write(&map)?;
            }
            Ok(dead)
        })
    }

    /// Every entry with whether its process is alive; unusable entries are skipped.
    pub fn list(&self) -> Vec<(String, Entry, bool)> {
        let mut out: Vec<_> = self
            .read()
            .iter()
            .filter_map(|(k, v)| Entry::from_value(v).map(|e| (k.clone(), e)))
            .map(|(k, e)| {
                let alive = e.is_alive();
                (k, e, alive)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(Error::invalid(format!("'{id}' is not a usable service id")));
    }
    Ok(())
}

/// The local time as ISO-8601 with microseconds, like `datetime.now().isoformat()`.
pub fn local_iso8601() -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let t = crate::sys::os::local_time(now.as_secs() as i64);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.min,
        t.sec,
        now.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry in a folder of its own, removed when the test ends.
    struct TempRegistry(Registry, std::path::PathBuf);

    impl std::ops::Deref for TempRegistry {
        type Target = Registry;
        fn deref(&self) -> &Registry {
            &self.0
        }
    }

    impl Drop for TempRegistry {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.1);
        }
    }

    fn temp_registry(name: &str) -> TempRegistry {
        let dir = std::env::temp_dir().join(format!("mf-reg-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        TempRegistry(Registry::at(dir.clone()), dir)
    }

    #[test]
    fn register_lookup_unregister() {
        let reg = temp_registry("basic");
        assert_eq!(reg.register("svc", || Ok(40123)).unwrap(), 40123);
        let e = reg.lookup("svc").unwrap();
        assert_eq!((e.port, e.pid as u32), (40123, std::process::id()));
        assert!(e.started.contains('T'));
        let mode = fs::metadata(reg.file()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&reg.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        reg.unregister("svc").unwrap();
        assert!(reg.lookup("svc").is_none());
        assert!(!reg.lock_path().exists());
    }

    #[test]
    fn a_live_entry_of_another_process_is_already_running() {
        let reg = temp_registry("live");
        reg.ensure_dir().unwrap();
        // PID 1 is always alive.
        reg.write(&serde_json::from_str(r#"{"svc":{"port":5000,"pid":1,"started":"x"}}"#).unwrap())
            .unwrap();
        let e = reg.register("svc", || Ok(6000)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyRunning);
        assert_eq!(
            e.message,
            "service 'svc' already running (pid 1, port 5000)"
        );
        // Another process's entry is never removed by us.
        reg.unregister("svc").unwrap();
        assert_eq!(reg.lookup("svc").unwrap().port, 5000);
    }

    #[test]
    fn a_second_registration_in_the_same_process_is_refused() {
        let reg = temp_registry("twice");
        reg.register("svc-twice", || Ok(40200)).unwrap();
        let e = reg.register("svc-twice", || Ok(40201)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyRunning);
        assert!(e.message.contains("port 40200"), "{e}");
        reg.unregister("svc-twice").unwrap();
        assert_eq!(reg.register("svc-twice", || Ok(40202)).unwrap(), 40202);
        reg.unregister("svc-twice").unwrap();
    }

    #[test]
    fn dead_and_unusable_entries_are_ignored() {
        let reg = temp_registry("dead");
        reg.ensure_dir().unwrap();
        let text = r#"{"dead":{"port":5000,"pid":2147483000,"started":"x"},
            "lowport":{"port":80,"pid":1},"badpid":{"port":5000,"pid":"1"},
            "extra":{"port":5001,"pid":1,"started":"x","note":"unknown keys are fine"}}"#;
        fs::write(reg.file(), text).unwrap();
        assert!(reg.lookup("dead").is_none());
        assert!(reg.lookup("lowport").is_none());
        assert!(reg.lookup("badpid").is_none());
        assert_eq!(reg.lookup("extra").unwrap().port, 5001);
        // A dead entry may be taken over.
        assert_eq!(reg.register("dead", || Ok(7000)).unwrap(), 7000);
    }

    #[test]
    fn a_reused_pid_is_treated_as_dead() {
        // Our PID in an entry written long before this process started: the
        // kernel gave the PID to a newer process, so the writer is dead.
        let reused = Entry {
            port: 5000,
            pid: std::process::id() as i32,
            started: "2000-01-01T00:00:00.000000".into(),
        };
        assert!(!reused.is_alive());
        // Our own entry, written after we started, is alive.
        let ours = Entry {
            port: 5000,
            pid: std::process::id() as i32,
            started: local_iso8601(),
        };
        assert!(ours.is_alive());
        // An entry whose time cannot be read is judged by the PID alone.
        let unknown = Entry {
            port: 5000,
            pid: 1,
            started: "yesterday".into(),
        };
        assert!(unknown.is_alive());
        let t = parse_local_iso8601("2026-11-26T17:08:10.5").unwrap();
        let again = parse_local_iso8601("2026-11-26T17:08:11").unwrap();
        assert!((again - t - 0.5).abs() < 1e-6);
    }

    #[test]
    fn stale_lock_of_a_dead_process_is_cleared() {
        let reg = temp_registry("stale");
        reg.ensure_dir().unwrap();
        fs::write(reg.lock_path(), "2147483000").unwrap();
        let t = Instant::now();
        reg.register("svc", || Ok(7001)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn corrupt_file_is_set_aside_and_rebuilt() {
        let reg = temp_registry("corrupt");
        reg.ensure_dir().unwrap();
        fs::write(reg.file(), "{not json").unwrap();
        reg.register("svc", || Ok(7002)).unwrap();
        assert_eq!(reg.lookup("svc").unwrap().port, 7002);
        let aside = fs::read_dir(&reg.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("services.json.corrupt-")
            });
        assert!(aside);
    }

    #[test]
    fn prune_removes_dead_and_unusable_entries_only() {
        let reg = temp_registry("prune");
        reg.ensure_dir().unwrap();
        let mut map = Map::new();
        map.insert("live".into(), serde_json::json!({"port": 40000, "pid": std::process::id(), "started": local_iso8601()}));
        map.insert(
            "dead".into(),
            serde_json::json!({"port": 40001, "pid": i32::MAX, "started": local_iso8601()}),
        );
        map.insert("junk".into(), serde_json::json!({"port": 1, "pid": "x"}));
        reg.write(&map).unwrap();
        let mut removed = reg.prune().unwrap();
        removed.sort();
        assert_eq!(removed, ["dead", "junk"]);
        assert_eq!(reg.read().keys().collect::<Vec<_>>(), ["live"]);
        assert!(reg.prune().unwrap().is_empty());
    }

    #[test]
    fn discover_times_out_with_the_id_in_the_message() {
        let reg = temp_registry("missing");
        let e = reg
            .discover("nope", Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, "service 'nope' not found within 0.3 s");
    }
}
