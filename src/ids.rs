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
    /// The text of the high 64 bits (version included), which never change.
    prefix: IdText,
    /// The low 64 bits before the counter is XORed in.
    low: u64,
    counter: AtomicU64,
}

impl IdGen {
    pub fn new() -> Self {
        let mut v = random_u128();
        // Version 4 in bits 76..80, variant 0b10 in bits 62..64.
        v = (v & !(0xf << 76)) | (0x4 << 76);
        v = (v & !(0x3 << 62)) | (0x2 << 62);
        IdGen {
            prefix: format_uuid(v),
            low: v as u64,
            counter: AtomicU64::new(1),
        }
    }

    pub fn next(&self) -> IdText {
        self.next_numbered().1
    }

    /// The next id and its number, from which [`IdGen::text_of`] gives the
    /// id back (a call's id for the C API's `mf_cancel`).
    pub fn next_numbered(&self) -> (u64, IdText) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        (n, self.text_of(n))
    }

    /// The id numbered `n` (any `n`: one never handed out names no call).
    pub fn text_of(&self, n: u64) -> IdText {
        // The counter stays below 2^62, so the variant bits are untouched;
        // a larger `n` is masked to keep them.
        let low = self.low ^ (n & ((1 << 62) - 1));
        let mut id = self.prefix;
        // The low 64 bits are the last 16 hex digits: "vxxx-xxxxxxxxxxxx".
        let (group4, group5) = id[19..].split_at_mut(4);
        hex(&(low >> 48).to_be_bytes()[6..], group4);
        hex(&low.to_be_bytes()[2..], &mut group5[1..]);
        id
    }
}

/// Writes `bytes` as lower-case hex into `out` (twice as long).
fn hex(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

fn format_uuid(v: u128) -> IdText {
    let b = v.to_be_bytes();
    let mut out = [b'-'; 36];
    hex(&b[0..4], &mut out[0..8]);
    hex(&b[4..6], &mut out[9..13]);
    hex(&b[6..8], &mut out[14..18]);
    hex(&b[8..10], &mut out[19..23]);
    hex(&b[10..16], &mut out[24..36]);
    out
}

/// 128 bits from the kernel's CSPRNG, with a time-and-pid fallback.
pub fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    if crate::sys::os::random_bytes(&mut bytes) {
        return u128::from_ne_bytes(bytes);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    t ^ (u128::from(std::process::id()) << 64)
}

/// The text of an id as a `&str`.
pub fn as_str(id: &IdText) -> &str {
    // Ids are made only by `format_uuid` and `IdGen::next`: hex digits and
    // dashes, so never the empty fallback.
    crate::sys::os::ascii_str(id).unwrap_or_default()
}

/// Hashes the keys of tables no peer can fill, only look up: the pending
/// calls' ids (ours: random base, counter in the low digits) and a worker's
/// handler names (registered by its program). A cheap mix of the last 16
/// bytes is enough there; nothing a peer sends can crowd a bucket.
#[derive(Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // An id's last 16 bytes are the counter's digits; other writes
        // (e.g. the slice length) mix in too.
        let tail = &bytes[bytes.len().saturating_sub(16)..];
        for chunk in tail.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_be_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        // The product's high bits are its best mixed: fold them down too.
        self.0 ^ (self.0 >> 29)
    }
}

pub type KeyBuildHasher = std::hash::BuildHasherDefault<KeyHasher>;

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
            // The fast path writes what the full formatter would.
            let v = u128::from_str_radix(&s.replace('-', ""), 16).unwrap();
            assert_eq!(format_uuid(v), id);
        }
        assert_ne!(as_str(&IdGen::new().next()), as_str(&IdGen::new().next()));
    }

    #[test]
    fn an_id_is_found_again_by_its_number() {
        let g = IdGen::new();
        for _ in 0..100 {
            let (n, id) = g.next_numbered();
            assert_eq!(g.text_of(n), id);
        }
        // A number never handed out names a valid id nobody has.
        let s = as_str(&g.text_of(u64::MAX)).to_owned();
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    }
}
