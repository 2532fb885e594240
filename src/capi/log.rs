//! `vram_set_log_callback`: delivers libvram's events to the host's logger.

use std::cell::Cell;
use std::ffi::{CString, c_char, c_void};

use super::boundary::{guard_value, set_last_error};
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

thread_local! {
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Installs `cb` to receive libvram's events at `max_level` and more severe (1 = errors only …
/// 5 = everything); `cb == NULL` or `max_level == 0` removes it.
///
/// Events never contain key material or raw device addresses. `userdata` is passed back
/// unchanged and must stay valid, and usable from any thread, until the callback is replaced.
/// When this function returns, the previous callback is no longer running and will not be
/// called again. Calling it from inside the callback is ignored (it would deadlock).
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_set_log_callback(
    cb: vram_log_callback,
    userdata: *mut c_void,
    max_level: u32,
) {
    guard_value("vram_set_log_callback", (), || {
        if IN_CALLBACK.with(Cell::get) {
            set_last_error(
                "vram_set_log_callback: ignored when called from inside the callback".into(),
            );
            return;
        }
        let Some(cb) = cb.filter(|_| max_level > 0) else {
            events::set_sink(None, 0);
            return;
        };
        let userdata = Userdata(userdata);
        let sink = move |level: Level, target: &str, message: &str| {
            let target = c_text(target);
            let message = c_text(message);
            IN_CALLBACK.with(|f| f.set(true));
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
            IN_CALLBACK.with(|f| f.set(false));
        };
        events::set_sink(Some(Box::new(sink)), max_level);
    })
}
