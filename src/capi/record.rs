//! `vram_record_*`, `vram_seal_expect`, `vram_seal_device_expect`: seal records as statements
//! about bytes that outlive the process that sealed them.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::boundary::{arg_bytes, arg_cstr, arg_mut, arg_ref, check_struct_size, guard};
use super::types::{vram_backend, vram_ctx, vram_shard, vram_status};
use crate::error::{Result, VramError};
use crate::seal::record::{Residency, SealRecord};
use crate::seal::shard_id::MAX_SHARD_ID_LEN;

/// The fields of an authentic seal record (vram_record_open()). Zero-initialise, then set
/// `struct_size = sizeof(vram_record_info)`; written only when the record authenticates.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vram_record_info {
    /// Must be `sizeof(vram_record_info)`.
    pub struct_size: u32,
    /// Merkle leaf size in bytes.
    pub leaf_size: u32,
    /// The tensor's length in bytes.
    pub byte_len: u64,
    /// The Merkle root (RFC 9162) of the bytes.
    pub root: [u8; 32],
    /// Where the bytes lived when sealed: ::VRAM_BACKEND_HOST or ::VRAM_BACKEND_CUDA.
    pub backend: u32,
    /// The CUDA device ordinal when sealed, or -1 for host memory.
    pub device: i32,
    /// When it was sealed, in nanoseconds since the Unix epoch.
    pub seal_time_unix_ns: u64,
    /// The public identifier of the key that sealed it (docs/seal-format.md).
    pub key_id: [u8; 16],
    /// The shard id, NUL-terminated (at most 256 bytes before the NUL).
    pub shard_id: [c_char; 257],
}

impl vram_record_info {
    fn fill(&mut self, r: &SealRecord) {
        self.leaf_size = r.leaf_size;
        self.byte_len = r.byte_len;
        self.root = r.root;
        (self.backend, self.device) = match r.residency {
            Residency::Host => (vram_backend::VRAM_BACKEND_HOST as u32, -1),
            Residency::Cuda { device } => (vram_backend::VRAM_BACKEND_CUDA as u32, device),
        };
        self.seal_time_unix_ns = r.seal_time_unix_ns;
        self.key_id = r.key_id;
        self.shard_id = [0; 257];
        // A decoded id is at most MAX_SHARD_ID_LEN (256) bytes: the NUL always fits.
        for (dst, &b) in self.shard_id.iter_mut().zip(r.shard_id.as_bytes()) {
            *dst = b as c_char;
        }
    }
}

/// Authenticates a seal record under `ctx`'s key, with no live shard (in another process, after
/// a restart, on another machine with the same secret), and returns its fields.
///
/// - `record`, `len`: the record's bytes (vram_shard_record() exported them), read during the
///   call.
/// - `info`: `struct_size` set by the caller; written only on success.
///
/// Returns ::VRAM_OK when the record is authentic; ::VRAM_ERR_BAD_SEAL when it is not
/// (malformed, truncated, altered, forged, another key's: nothing in it can be trusted, and
/// `info` is untouched); ::VRAM_ERR_NULL_ARGUMENT for NULL `ctx`, `record` or `info`;
/// ::VRAM_ERR_INVALID_ARGUMENT when `len == 0` or `info->struct_size` is wrong. An authentic
/// record only says which bytes were sealed: check live bytes against it with
/// vram_record_verify(), or seal new bytes against its root with vram_seal_expect().
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_record_open(
    ctx: *const vram_ctx,
    record: *const u8,
    len: usize,
    info: *mut vram_record_info,
) -> vram_status {
    guard("vram_record_open", || {
        let ctx = arg_ref(ctx, "ctx")?;
        let record = arg_bytes(record, len, "record", false)?;
        let info = arg_mut(info, "info")?;
        check_struct_size(info.struct_size, size_of::<vram_record_info>(), "info")?;
        let r = ctx.inner.record_open(record)?;
        info.fill(&r);
        Ok(())
    })
}

/// Authenticates an exported seal record under `ctx`'s key and checks that it describes
/// `shard`'s bytes: the same id, length, leaf size and Merkle root. Seal time and residency may
/// differ, so a record exported yesterday, by another process, or from another backend checks
/// against today's shard of the same bytes. Does not re-hash the bytes: vram_verify() does.
///
/// Returns ::VRAM_OK; ::VRAM_ERR_BAD_SEAL when the record is not authentic (truncated, altered,
/// forged, another key's); ::VRAM_ERR_INTEGRITY when it is authentic but describes other
/// bytes (another tensor name, length, leaf size or root: the message says which);
/// ::VRAM_ERR_NULL_ARGUMENT for NULL `ctx`, `record` or `shard`; ::VRAM_ERR_INVALID_ARGUMENT
/// when `len == 0`. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_record_verify(
    ctx: *mut vram_ctx,
    record: *const u8,
    len: usize,
    shard: *const vram_shard,
) -> vram_status {
    guard("vram_record_verify", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let record = arg_bytes(record, len, "record", false)?;
        let shard = arg_ref(shard, "shard")?;
        ctx.inner.record_verify(record, &shard.inner)
    })
}

fn root_arg<'a>(p: *const u8) -> Result<&'a [u8; 32]> {
    arg_ref(p.cast::<[u8; 32]>(), "expected_root")
}

fn shard_out(out: &mut *mut vram_shard, shard: crate::shard::Shard) {
    *out = Box::into_raw(Box::new(vram_shard {
        inner: Arc::new(shard),
    }));
}

/// vram_seal(), keeping the shard only if the bytes' Merkle root equals `expected_root` (32
/// bytes, e.g. from vram_record_open() or a manifest): a reloaded or repaired tensor is checked
/// before it is trusted.
///
/// Returns ::VRAM_ERR_INTEGRITY when the root differs (compared in constant time): nothing is
/// kept (no shard, no capacity, the id stays free) and `out` is untouched. NULL
/// `expected_root` → ::VRAM_ERR_NULL_ARGUMENT. Everything else as vram_seal(). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_seal_expect(
    ctx: *mut vram_ctx,
    shard_id: *const c_char,
    data: *const c_void,
    len: usize,
    expected_root: *const u8,
    out: *mut *mut vram_shard,
) -> vram_status {
    guard("vram_seal_expect", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let id = arg_cstr(shard_id, MAX_SHARD_ID_LEN, "shard_id")?;
        let data = arg_bytes(data.cast::<u8>(), len, "data", false)?;
        let expected = root_arg(expected_root)?;
        let out = arg_mut(out, "out")?;
        let shard = ctx.inner.seal_expect(id, data, expected, None)?;
        shard_out(out, shard);
        Ok(())
    })
}

/// vram_seal_device(), keeping the shard only if the bytes' Merkle root equals
/// `expected_root`, as vram_seal_expect(). The caller's memory is never written; on
/// ::VRAM_ERR_INTEGRITY no shard is kept. Everything else as vram_seal_device(). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_seal_device_expect(
    ctx: *mut vram_ctx,
    shard_id: *const c_char,
    device_ptr: *const c_void,
    len: usize,
    expected_root: *const u8,
    out: *mut *mut vram_shard,
) -> vram_status {
    guard("vram_seal_device_expect", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let id = arg_cstr(shard_id, MAX_SHARD_ID_LEN, "shard_id")?;
        if device_ptr.is_null() {
            return Err(VramError::null("device_ptr"));
        }
        let expected = root_arg(expected_root)?;
        let out = arg_mut(out, "out")?;
        // SAFETY: the export's documented contract (as vram_seal_device()): the memory stays
        // allocated until the shard is freed.
        let shard = unsafe {
            ctx.inner
                .seal_device_expect(id, device_ptr as usize, len as u64, expected)
        }?;
        shard_out(out, shard);
        Ok(())
    })
}
