//! `vram_set_log_callback`: delivers libvram's events to the host's logger.

use std::ffi::{CString, c_char, c_void};

use super::boundary::guard_value;
use crate::events::{self, Level};

/// A host's log function: `level` (1 = error, 2 = warn, 3 = info, 4 = debug, 5 = trace),
/// `target` (a stable event name such as "vram.verify.failed") and `message` are valid only
/// during the call. Called from whichever thread raised the event.
pub type vram_log_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        level: u32,
        target: *const c_char,
        message: *const c_char,
    ),
>;

struct Userdata(*mut c_void);
// SAFETY: the caller of vram_set_log_callback promises that `userdata` may be used from any
// thread (documented); libvram only passes it back to the callback.
unsafe impl Send for Userdata {}
// SAFETY: as for Send.
unsafe impl Sync for Userdata {}

impl Userdata {
    fn get(&self) -> *mut c_void {
        self.0
    }
}

fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Installs `cb` to receive libvram's events at `max_level` and more severe (1 = errors only …
/// 5 = everything); `cb == NULL` or `max_level == 0` removes it.
///
/// Events never contain key material or raw device addresses. `userdata` is passed back
/// unchanged and must stay valid, and usable from any thread, until the callback is replaced.
///
/// Re-entrancy and replacement (no call deadlocks):
/// - libvram holds no lock while the callback runs: the callback may call any libvram
///   function, this one included. Events raised by those nested calls on the callback's own
///   thread are not delivered to the callback (no recursion).
/// - When this function returns on a thread that is not inside the callback, the previous
///   callback is no longer running on any thread and will not be called again: the function
///   waits for the calls running on other threads to return, so do not hold a lock that your
///   callback takes while you call it.
/// - Called from inside the callback, the replacement takes effect at once for new events, but
///   the function cannot wait for the callback it is running in: calls of the previous callback
///   already running on other threads may still finish after it returns.
///
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_set_log_callback(
    cb: vram_log_callback,
    userdata: *mut c_void,
    max_level: u32,
) {
    guard_value("vram_set_log_callback", (), || {
        let Some(cb) = cb.filter(|_| max_level > 0) else {
            events::set_sink(None, 0);
            return;
        };
        let userdata = Userdata(userdata);
        let sink = move |level: Level, target: &str, message: &str| {
            let target = c_text(target);
            let message = c_text(message);
            // SAFETY: `cb` is the host's function with the documented signature; the strings
            // live until after it returns; `userdata` is the host's own pointer.
            unsafe {
                cb(
                    userdata.get(),
                    level as u32,
                    target.as_ptr(),
                    message.as_ptr(),
                )
            };
        };
        events::set_sink(Some(Box::new(sink)), max_level);
    })
}
