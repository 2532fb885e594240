//! Status names, the last error message, and the version.

use std::ffi::c_char;

use super::boundary::{arg_mut, check_struct_size, guard, guard_value, with_last_error};
use super::types::vram_status;

/// A static, NUL-terminated description of a status code ("unknown status" for codes this
/// library does not know). Never NULL; never freed by the caller. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_status_str(status: u32) -> *const c_char {
    let s: &'static [u8] = match status {
        0 => b"VRAM_OK: success\0",
        1 => b"VRAM_ERR_NULL_ARGUMENT: a required pointer was NULL\0",
        2 => b"VRAM_ERR_INVALID_ARGUMENT: an argument was out of range or malformed\0",
        3 => b"VRAM_ERR_OUT_OF_MEMORY: not enough memory or capacity\0",
        4 => b"VRAM_ERR_NO_DEVICE: no usable GPU\0",
        5 => b"VRAM_ERR_DEVICE: the GPU or its driver reported an error\0",
        6 => b"VRAM_ERR_INTEGRITY: the bytes are not the sealed ones (damaged, or an authentic record describes other bytes)\0",
        7 => b"VRAM_ERR_BAD_SEAL: the seal record is not authentic (malformed, altered, forged, truncated or from another key)\0",
        8 => b"VRAM_ERR_POLICY: the request breaks a residency rule\0",
        9 => b"VRAM_ERR_UNSUPPORTED: not supported by this build or backend\0",
        10 => b"VRAM_ERR_BUFFER_TOO_SMALL: the output buffer is too small\0",
        11 => b"VRAM_ERR_PANIC: internal error caught at the library boundary\0",
        12 => b"VRAM_ERR_CANCELLED: cancelled by the caller's progress callback; nothing was kept\0",
        _ => b"unknown status\0",
    };
    s.as_ptr().cast()
}

/// The longest message vram_last_error_message() returns, in bytes (without the NUL): messages
/// may quote a caller's or a file's text, which is cut (and the cut marked with " [...]")
/// rather than grow a message without bound.
pub const VRAM_MAX_ERROR_MESSAGE: usize = 1024;

/// Copies the calling thread's last error message (empty if none) into `buf` as a
/// NUL-terminated string, truncated to fit `len` bytes, and returns the message's full length
/// in bytes (without the NUL): a return value `>= len` means it was truncated.
///
/// `buf` may be NULL (or `len` 0) to query the length. The message is thread-local: each thread
/// sees the last failure of its own calls. Messages are at most 1024 bytes (text quoted from a
/// caller or a file is cut, and the cut marked with " [...]"). Never fails.
#[unsafe(no_mangle)]
pub extern "C" fn vram_last_error_message(buf: *mut c_char, len: usize) -> usize {
    guard_value("vram_last_error_message", 0, || {
        with_last_error(|m| {
            if !buf.is_null() && len > 0 {
                let n = m.len().min(len - 1);
                // SAFETY: caller's contract: `buf` is writable for `len` bytes; we write
                // `n + 1 <= len` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(m.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            m.len()
        })
    })
}

/// The library's version, e.g. "0.1.0": static, NUL-terminated, equal to
/// VRAM_VERSION_MAJOR.MINOR.PATCH of the header it was built with. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// What this libvram was built with and what it finds on this machine now (vram_build_info()).
/// Zero-initialise, then set `struct_size = sizeof(vram_build_details)`.
#[repr(C)]
pub struct vram_build_details {
    /// Must be `sizeof(vram_build_details)`.
    pub struct_size: u32,
    /// 1 when the CUDA backend is compiled in, 0 for a host-only build (`VRAM_CUDA=off`).
    pub cuda_compiled: u32,
    /// The CUDA runtime version compiled in, as CUDA numbers it (13000 = 13.0); 0 without CUDA.
    pub cuda_runtime_version: i32,
    /// The installed driver's CUDA version (0 when no driver is installed, or without CUDA).
    /// CUDA 13 needs driver 580 or newer (13000 here).
    pub cuda_driver_version: i32,
    /// GPUs this process can use now (0 when none, or without CUDA).
    pub gpu_count: i32,
    /// The GPU architectures compiled, e.g. "sm_80,sm_86,sm_89,sm_90,compute_90" (the last is
    /// PTX, JIT-compiled for newer GPUs); "" without CUDA. Static; never freed.
    pub cuda_architectures: *const c_char,
    /// The library's version (as vram_version()). Static; never freed.
    pub version: *const c_char,
    /// When `gpu_count` is 0: why, in words (what ::VRAM_BACKEND_AUTO's fallback warning
    /// says); "" otherwise. NUL-terminated.
    pub no_gpu_reason: [c_char; 256],
}

/// Fills `info` with what this libvram was built with (CUDA or not, architectures, runtime
/// version, library version) and what it finds now (driver version, usable GPUs, and why none).
///
/// `info`: caller-owned, `struct_size` set; written only on success. NULL →
/// ::VRAM_ERR_NULL_ARGUMENT; a wrong `struct_size` → ::VRAM_ERR_INVALID_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_build_info(info: *mut vram_build_details) -> vram_status {
    guard("vram_build_info", || {
        let info = arg_mut(info, "info")?;
        check_struct_size(info.struct_size, size_of::<vram_build_details>(), "info")?;
        let (compiled, runtime, driver) = crate::backend::cuda_build();
        let gpus = crate::backend::gpu_count();
        info.cuda_compiled = u32::from(compiled);
        info.cuda_runtime_version = runtime;
        info.cuda_driver_version = driver;
        info.gpu_count = gpus;
        info.cuda_architectures = concat!(env!("VRAM_CUDA_ARCHITECTURES"), "\0")
            .as_ptr()
            .cast();
        info.version = vram_version();
        info.no_gpu_reason = [0; 256];
        if gpus == 0 {
            let reason = crate::backend::no_gpu_reason();
            for (d, s) in info.no_gpu_reason.iter_mut().zip(reason.bytes().take(255)) {
                *d = s as c_char;
            }
        }
        Ok(())
    })
}
