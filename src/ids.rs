//! Request ids: UUID version 4 text, unique per process without a syscall per id.
//!
//! Each generator starts from 128 random bits and XORs a counter into the low
//! 64 bits, then sets the version and variant bits. Distinct counters give
//! distinct ids (the counter never reaches the variant bits), so ids from one
//! generator never collide, and ids of different processes are as unlikely to
//! collide as random UUIDs.

use std::sync::atomic::{AtomicU64, Ordering};

/// The text form of one id (36 ASCII bytes).
pub type IdText = [u8; 36];

pub struct IdGen {
    base: u128,
    counter: AtomicU64,
}

impl IdGen {
    pub fn new() -> Self {
        IdGen {
            base: random_u128(),
            counter: AtomicU64::new(1),
        }
    }

    pub fn next(&self) -> IdText {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut v = self.base ^ u128::from(n);
        // Version 4 in bits 76..80, variant 0b10 in bits 62..64.
        v = (v & !(0xf << 76)) | (0x4 << 76);
        v = (v & !(0x3 << 62)) | (0x2 << 62);
        format_uuid(v)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

fn format_uuid(v: u128) -> IdText {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut nibble = 0;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        *slot = HEX[((v >> (124 - 4 * nibble)) & 0xf) as usize];
        nibble += 1;
    }
    out
}

/// 128 bits from the kernel's CSPRNG, with a time-and-pid fallback.
pub fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most 16 bytes into the local array.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n == 16 {
        return u128::from_ne_bytes(bytes);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    t ^ (u128::from(std::process::id()) << 64)
}

/// The text of an id as a `&str` (always ASCII).
pub fn as_str(id: &IdText) -> &str {
    std::str::from_utf8(id).unwrap_or("")
}

/// The fixed-size key of an id received on the wire, if it has our length.
pub fn key(id: &str) -> Option<IdText> {
    id.as_bytes().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_uuid_v4_text_and_unique() {
        let g = IdGen::new();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = g.next();
            let s = as_str(&id);
            assert_eq!(s.len(), 36);
            assert_eq!(&s[14..15], "4");
            assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
            assert!(seen.insert(id));
        }
        assert_ne!(as_str(&IdGen::new().next()), as_str(&IdGen::new().next()));
    }
}
