//! The process-wide log callback.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

/// Receives one log event as a JSON object (UTF-8, NUL-terminated), e.g.
/// `{"event":"worker_output","level":"info","message":"[math_worker STDOUT]: hi",...}`.
/// Every event has `event`, `level`, `message` and `timestamp`.
/// Runs on library threads (I/O and output readers), possibly several at
/// once: it must be thread-safe, return quickly, and not call `mf_parent_close`.
/// `json` is valid only during the call.
pub type mf_log_fn = Option<unsafe extern "C" fn(user_data: *mut c_void, json: *const c_char)>;

struct UserData(*mut c_void);
// SAFETY: the caller promises the callback and its user data may be used from any thread.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Installs the log callback for the whole process; `fn` NULL restores the
/// default (worker output and warnings to stderr). Any thread.
#[no_mangle]
pub extern "C" fn mf_set_log_callback(callback: mf_log_fn, user_data: *mut c_void) {
    super::guard_void(|| {
        let sink = callback.map(|f| {
            let user = UserData(user_data);
            Arc::new(move |line: &str| {
                let user = &user;
                let text = CString::new(line).unwrap_or_default();
                // SAFETY: the callback was given for exactly this use.
                unsafe { f(user.0, text.as_ptr()) };
            }) as crate::log::Sink
        });
        crate::log::set_sink(sink);
    });
}
