//! The C surface. This module is the only place with `extern "C"`, raw
//! pointers and `unsafe`; one file per C object, plus this module's boundary
//! machinery: panic catching, status mapping, the thread-local error text,
//! NULL/UTF-8 checks and handle conversion.
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

pub mod buffer;
pub mod error;
pub mod log;
pub mod options;
pub mod parent;
pub mod queue;
pub mod reply;
pub mod stream;
pub mod worker;

use crate::error::{Error, Result};
use error::{mf_status, set_last_error};
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Major version of the library; equals Cargo.toml's.
pub const MF_VERSION_MAJOR: u32 = 0;
/// Minor version of the library; equals Cargo.toml's.
pub const MF_VERSION_MINOR: u32 = 1;
/// Patch version of the library; equals Cargo.toml's.
pub const MF_VERSION_PATCH: u32 = 0;

/// The library version as "MAJOR.MINOR.PATCH". Static storage; never NULL.
#[no_mangle]
pub extern "C" fn mf_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Runs an exported body: a panic becomes `MF_ERR_PANIC`, an error becomes
/// its status with the text stored for `mf_last_error`.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> mf_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => mf_status::MF_OK,
        Ok(Err(e)) => fail(&e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let e = Error::new(
                crate::ErrorKind::Panic,
                format!("internal error (panic): {what}"),
            );
            fail(&e)
        }
    }
}

/// Like [`guard`] for functions that return nothing: a panic is swallowed.
pub(crate) fn guard_void(body: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(body));
}

/// Records `e` for this thread and returns its status.
pub(crate) fn fail(e: &Error) -> mf_status {
    set_last_error(&e.message);
    mf_status::from(e.kind)
}

/// A borrowed C string as `&str`.
pub(crate) unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// A borrowed byte range; NULL is allowed only with length 0.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::invalid(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// Checks an out-parameter.
pub(crate) fn out_ptr<T>(p: *mut T) -> Result<&'static mut T> {
    // SAFETY: non-NULL out pointers are the caller's writable storage.
    unsafe { p.as_mut() }.ok_or_else(|| Error::invalid("out is NULL"))
}

/// Handles of reference-counted objects: the C pointer is `Arc::into_raw`.
/// A call borrows a new reference for its whole duration, so closing a
/// handle while other threads are inside calls on it is safe: the object
/// lives until the last of them returns.
pub(crate) fn arc_into_handle<T>(value: T) -> *mut T {
    Arc::into_raw(Arc::new(value)).cast_mut()
}

/// A new reference to the object behind a handle (NULL → error).
pub(crate) unsafe fn arc_borrow<T>(p: *const T, what: &str) -> Result<Arc<T>> {
    if p.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    Arc::increment_strong_count(p);
    Ok(Arc::from_raw(p))
}

/// Takes back the reference the handle stood for (NULL → None).
pub(crate) unsafe fn arc_release<T>(p: *mut T) -> Option<Arc<T>> {
    (!p.is_null()).then(|| Arc::from_raw(p.cast_const()))
}
