//! Short text kept without an allocation.

/// Text of up to [`ShortStr::INLINE`] bytes held in place (a function name,
/// a request id — a UUID fits), longer text on the heap.
pub enum ShortStr {
    Inline(u8, [u8; ShortStr::INLINE]),
    Heap(Box<str>),
}

impl ShortStr {
    /// The most bytes held in place.
    const INLINE: usize = 38;

    pub fn new(s: &str) -> ShortStr {
        let mut buf = [0u8; ShortStr::INLINE];
        match buf.get_mut(..s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s.as_bytes());
                ShortStr::Inline(s.len() as u8, buf)
            }
            None => ShortStr::Heap(s.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // SAFETY: the first `len` bytes were copied from a &str.
            ShortStr::Inline(len, b) => unsafe {
                std::str::from_utf8_unchecked(&b[..usize::from(*len)])
            },
            ShortStr::Heap(s) => s,
        }
    }
}

impl std::ops::Deref for ShortStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// Keyed by its text, so a table of them is looked up with a `&str`.
impl std::borrow::Borrow<str> for ShortStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, other: &ShortStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortStr {}

impl std::hash::Hash for ShortStr {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_stays_inline_and_long_text_goes_to_the_heap() {
        let inline = "x".repeat(ShortStr::INLINE);
        let long = "y".repeat(ShortStr::INLINE + 1);
        for text in ["", "add", &inline, &long, "héllo_✓"] {
            assert_eq!(ShortStr::new(text).as_str(), text);
        }
        assert!(matches!(ShortStr::new(&inline), ShortStr::Inline(38, _)));
        assert!(matches!(ShortStr::new(&long), ShortStr::Heap(_)));
    }
}
