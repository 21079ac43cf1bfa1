//! Buffers and strings the library hands out, each with its one free function.

use std::ffi::{c_char, CString};

/// Bytes owned by the library and handed to the caller (msgpack results).
/// Free exactly once with `mf_buffer_free`. An empty buffer has data NULL.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct mf_buffer {
    pub data: *mut u8,
    pub len: usize,
}

/// Results this large are handed out in place: the buffer points into the
/// received message, which is kept here until `mf_buffer_free`.
const IN_PLACE_MIN: usize = 64 * 1024;

type Kept = std::collections::HashMap<usize, crate::parent::Reply>;
static IN_PLACE: crate::sync::Mutex<Option<Kept>> = crate::sync::Mutex::new(None);

impl mf_buffer {
    /// A buffer for a call's result; large ones without a copy.
    pub(crate) fn from_reply(reply: crate::parent::Reply) -> mf_buffer {
        let bytes = reply.bytes();
        if bytes.len() < IN_PLACE_MIN {
            return mf_buffer::from_slice(bytes);
        }
        let buffer = mf_buffer {
            data: bytes.as_ptr().cast_mut(),
            len: bytes.len(),
        };
        IN_PLACE
            .lock()
            .get_or_insert_with(Default::default)
            .insert(buffer.data as usize, reply);
        buffer
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> mf_buffer {
        if bytes.is_empty() {
            return mf_buffer {
                data: std::ptr::null_mut(),
                len: 0,
            };
        }
        let boxed: Box<[u8]> = bytes.into();
        let len = boxed.len();
        mf_buffer {
            data: Box::into_raw(boxed).cast(),
            len,
        }
    }
}

/// Frees a buffer from `mf_call`. A buffer with data NULL is ignored.
/// Any thread.
#[no_mangle]
pub unsafe extern "C" fn mf_buffer_free(buffer: mf_buffer) {
    super::guard_void(|| {
        if buffer.data.is_null() {
            return;
        }
        if buffer.len >= IN_PLACE_MIN {
            let kept = IN_PLACE
                .lock()
                .as_mut()
                .and_then(|m| m.remove(&(buffer.data as usize)));
            if kept.is_some() {
                return; // the received message is released here
            }
        }
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            buffer.data,
            buffer.len,
        )));
    });
}

pub(crate) fn string_into_raw(s: String) -> *mut c_char {
    super::error::c_string(&s).into_raw()
}

/// Frees a string the library returned (`mf_call_json`, `mf_parent_stats_json`).
/// NULL is ignored. Any thread.
#[no_mangle]
pub unsafe extern "C" fn mf_string_free(s: *mut c_char) {
    super::guard_void(|| {
        if !s.is_null() {
            drop(CString::from_raw(s));
        }
    });
}
