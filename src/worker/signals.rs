//! SIGINT/SIGTERM: the handler bumps a generation counter and wakes every
//! serving worker's driver through its wake descriptor (write(2) is
//! async-signal-safe); the driver sees the new generation and stops.

use crate::sync::Mutex;
use crate::wake::{self, SavedActions};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

const SLOTS: usize = 64;
static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
static GENERATION: AtomicU64 = AtomicU64::new(0);
static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);

struct Installed {
    users: usize,
    saved: SavedActions,
}

pub(super) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

extern "C" fn on_signal(_sig: libc::c_int) {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    for slot in &FDS {
        let fd = slot.load(Ordering::Acquire);
        if fd >= 0 {
            wake::notify_fd(fd);
        }
    }
}

/// Registers a driver's wake descriptor for as long as it serves; the
/// first guard installs the handler, the last one restores what was there.
pub(super) struct Guard {
    slot: Option<usize>,
}

impl Guard {
    pub fn install(fd: RawFd) -> Guard {
        let slot = FDS.iter().position(|s| {
            s.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        let mut installed = INSTALLED.lock();
        match installed.as_mut() {
            Some(i) => i.users += 1,
            None => {
                *installed = Some(Installed {
                    users: 1,
                    saved: wake::on_stop_signals(on_signal),
                })
            }
        }
        Guard { slot }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            FDS[i].store(-1, Ordering::Release);
        }
        let mut installed = INSTALLED.lock();
        if let Some(i) = installed.as_mut() {
            i.users -= 1;
            if i.users == 0 {
                if let Some(i) = installed.take() {
                    i.saved.restore();
                }
            }
        }
    }
}
