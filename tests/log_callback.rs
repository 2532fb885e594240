//! Events reach the host's log callback with stable names, and never carry key material.

mod common;

use std::ffi::{CStr, c_char, c_void};
use std::ptr;
use std::sync::Mutex;

use common::*;
use vram::*;

static SEEN: Mutex<Vec<(u32, String, String)>> = Mutex::new(Vec::new());

extern "C" fn record(
    userdata: *mut c_void,
    level: u32,
    target: *const c_char,
    message: *const c_char,
) {
    assert_eq!(userdata as usize, 0xfeed);
    // SAFETY: libvram passes valid NUL-terminated strings for the duration of the call.
    let (t, m) = unsafe { (CStr::from_ptr(target), CStr::from_ptr(message)) };
    SEEN.lock().unwrap().push((
        level,
        t.to_string_lossy().into(),
        m.to_string_lossy().into(),
    ));
}

#[test]
fn events_reach_the_callback() {
    vram_set_log_callback(Some(record), 0xfeed as *mut c_void, 5);
    let ctx = Ctx::new();
    let shard = ctx.seal("layers.1.weight", &bytes(3 << 20, 1));
    assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
    shard.flip(8 * (2 << 20));
    assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_ERR_INTEGRITY);
    let bad = [0u8; 200];
    assert_eq!(
        vram_record_verify(ctx.0, bad.as_ptr(), bad.len(), shard.0),
        vram_status::VRAM_ERR_BAD_SEAL
    );
    drop(shard);
    vram_set_log_callback(None, ptr::null_mut(), 0);
    let _quiet = ctx.seal("after", b"x");

    let seen = SEEN.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|(_, t, _)| t.as_str()).collect();
    for want in [
        "vram.seal",
        "vram.verify.ok",
        "vram.fault_drill",
        "vram.verify.failed",
        "vram.record.rejected",
        "vram.free",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let failed = seen
        .iter()
        .find(|(_, t, _)| t == "vram.verify.failed")
        .unwrap();
    assert_eq!(failed.0, 1, "verify failure is an error-level event");
    assert!(
        failed.2.contains("first at byte offset 2097152"),
        "{}",
        failed.2
    );
    assert!(
        !seen.iter().any(|(_, _, m)| m.contains("after")),
        "removed callback got events"
    );
    let key_hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    let key_text = String::from_utf8_lossy(&KEY).to_string();
    assert!(
        seen.iter()
            .all(|(_, _, m)| !m.contains(&key_hex) && !m.contains(&key_text))
    );

    // max_level filters: errors only.
    SEEN.lock().unwrap().clear();
    vram_set_log_callback(Some(record), 0xfeed as *mut c_void, 1);
    let s = ctx.seal("quiet", b"abc");
    drop(s);
    vram_set_log_callback(None, ptr::null_mut(), 0);
    assert!(SEEN.lock().unwrap().iter().all(|(l, _, _)| *l == 1));
}
