//! `vram_ctx_*`: creating, inspecting and freeing contexts.

use super::boundary::{arg_bytes, arg_mut, arg_ref, guard, guard_value, read_options};
use super::types::{
    VRAM_CTX_ALLOW_FAULT_DRILLS, vram_backend, vram_ctx, vram_ctx_options, vram_status,
};
use crate::context::{Context, ContextOptions};
use crate::error::VramError;
use crate::seal::record::Residency;

/// Creates a context.
///
/// - `opts`: read during the call only; NULL → ::VRAM_ERR_NULL_ARGUMENT. `opts->key` is
///   derived into the context's seal key and not retained.
/// - `out`: on success receives a new context, owned by the caller and freed with
///   vram_ctx_free(); untouched on failure. NULL → ::VRAM_ERR_NULL_ARGUMENT.
///
/// Errors: ::VRAM_ERR_INVALID_ARGUMENT (wrong `struct_size`, unknown backend or flag, key
/// shorter than 32 bytes), ::VRAM_ERR_NO_DEVICE (CUDA requested with no usable GPU; never a silent fallback),
/// ::VRAM_ERR_DEVICE.
///
/// Thread-safety: may be called from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn vram_ctx_new(
    opts: *const vram_ctx_options,
    out: *mut *mut vram_ctx,
) -> vram_status {
    guard("vram_ctx_new", || {
        let opts = read_options(opts, "opts")?;
        let out = arg_mut(out, "out")?;
        if opts.flags & !VRAM_CTX_ALLOW_FAULT_DRILLS != 0 {
            return Err(VramError::invalid(
                "opts->flags",
                format!("{:#x} holds unknown bits", opts.flags),
            ));
        }
        let backend = vram_backend::try_from(opts.backend)?;
        let key = arg_bytes(opts.key, opts.key_len, "opts->key", false)?;
        let inner = Context::new(&ContextOptions {
            backend: backend.into(),
            device: opts.device,
            secret: key,
            capacity_bytes: opts.capacity_bytes,
            allow_fault_drills: opts.flags & VRAM_CTX_ALLOW_FAULT_DRILLS != 0,
            max_threads: opts.max_threads as usize,
        })?;
        *out = Box::into_raw(Box::new(vram_ctx {
            inner: std::sync::Arc::new(inner),
        }));
        Ok(())
    })
}

/// Frees a context handle; the key is zeroized once nothing uses the context any more. NULL is
/// a no-op.
///
/// Shards sealed by the context stay valid and must still be freed with vram_shard_free();
/// builders and models keep the context's backend alive until they are freed.
/// The caller must ensure no other thread is using `ctx` during or after this call.
#[unsafe(no_mangle)]
pub extern "C" fn vram_ctx_free(ctx: *mut vram_ctx) {
    guard_value("vram_ctx_free", (), || {
        if !ctx.is_null() {
            // SAFETY: a non-NULL `ctx` came from vram_ctx_new() and is freed only once, by
            // the caller's contract.
            drop(unsafe { Box::from_raw(ctx) });
        }
    })
}

/// The backend actually in use: ::VRAM_BACKEND_CUDA or ::VRAM_BACKEND_HOST (what AUTO chose).
///
/// Returns ::VRAM_BACKEND_AUTO (0) when `ctx` is NULL. Thread-safe; does not fail otherwise.
#[unsafe(no_mangle)]
pub extern "C" fn vram_ctx_backend(ctx: *const vram_ctx) -> u32 {
    guard_value("vram_ctx_backend", 0, || {
        // SAFETY: `ctx` is NULL or a live context (caller's contract).
        match unsafe { ctx.as_ref() }.map(|c| c.inner.residency()) {
            None => vram_backend::VRAM_BACKEND_AUTO as u32,
            Some(Residency::Host) => vram_backend::VRAM_BACKEND_HOST as u32,
            Some(Residency::Cuda { .. }) => vram_backend::VRAM_BACKEND_CUDA as u32,
        }
    })
}

/// Bytes held by the context's live shards as counted against its capacity (their bytes plus
/// bookkeeping: see ::vram_ctx_options `capacity_bytes`), and the capacity (0 = no cap).
///
/// `used` and `capacity` may each be NULL (not written). Errors: ::VRAM_ERR_NULL_ARGUMENT when
/// `ctx` is NULL. Thread-safe; the value may be stale by the time it is read.
#[unsafe(no_mangle)]
pub extern "C" fn vram_ctx_usage(
    ctx: *const vram_ctx,
    used: *mut u64,
    capacity: *mut u64,
) -> vram_status {
    guard("vram_ctx_usage", || {
        let ctx = arg_ref(ctx, "ctx")?;
        if let Ok(u) = arg_mut(used, "used") {
            *u = ctx.inner.used_bytes();
        }
        if let Ok(c) = arg_mut(capacity, "capacity") {
            *c = ctx.inner.capacity_bytes();
        }
        Ok(())
    })
}
