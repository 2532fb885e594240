//! A panic inside an export becomes VRAM_ERR_PANIC with a message, and nothing is left behind.
//!
//! The panic is raised inside a real export (vram_seal) by an event sink installed through the
//! Rust API: the seal emits its "vram.seal" event, the sink panics, and the boundary catches it.
//! This file is its own test binary, so the global sink affects no other test.

mod common;

use std::ptr;

use common::*;
use vram::*;

#[test]
fn panic_inside_vram_seal_becomes_status() {
    let ctx = Ctx::new();
    vram::events::set_sink(
        Some(Box::new(|_, name, _| {
            if name == "vram.seal" {
                panic!("sink exploded");
            }
        })),
        5,
    );
    let data = bytes(3 << 20, 1);
    let mut out = ptr::null_mut();
    let s = vram_seal(
        ctx.0,
        c"w".as_ptr(),
        data.as_ptr().cast(),
        data.len(),
        &mut out,
    );
    vram::events::set_sink(None, 0);
    assert_eq!(s, vram_status::VRAM_ERR_PANIC);
    assert!(out.is_null(), "no output after a panic");
    let msg = last_error();
    assert!(
        msg.starts_with("vram_seal: internal error") && msg.contains("sink exploded"),
        "{msg}"
    );
    assert_eq!(
        ctx.used(),
        0,
        "the reservation was released while unwinding"
    );
    // The library still works afterwards.
    let shard = ctx.seal("w", &data);
    assert_eq!(ctx.verify(&shard).0, vram_status::VRAM_OK);
}
