//! Shared by the host-backend benchmarks: a host context through the C ABI.

use std::ptr;

use vram::*;

/// A host-backend context (every core; a fixed test key), asserted to open.
pub fn host_ctx() -> *mut vram_ctx {
    let key = [7u8; 32];
    let opts = vram_ctx_options {
        struct_size: size_of::<vram_ctx_options>() as u32,
        backend: vram_backend::VRAM_BACKEND_HOST as u32,
        device: 0,
        key: key.as_ptr(),
        key_len: key.len(),
        capacity_bytes: 0,
        flags: 0,
        max_threads: 0,
    };
    let mut ctx = ptr::null_mut();
    assert_eq!(vram_ctx_new(&opts, &mut ctx), vram_status::VRAM_OK);
    ctx
}
