//! The C-visible types: status and backend enums, options and report structs, opaque handles.
#![allow(non_camel_case_types)]

use crate::backend::BackendChoice;
use crate::context::{Context, Outcome, VerifyReport};
use crate::error::{Result, VramError};
use crate::shard::SharedShard;

/// The result of every fallible libvram function.
///
/// Codes are never renumbered or reused; a retired code stays reserved.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vram_status {
    /// Success.
    VRAM_OK = 0,
    /// A required pointer argument was NULL.
    VRAM_ERR_NULL_ARGUMENT = 1,
    /// An argument was out of range or malformed; vram_last_error_message() names it.
    VRAM_ERR_INVALID_ARGUMENT = 2,
    /// The allocation does not fit the context's capacity or the memory available.
    VRAM_ERR_OUT_OF_MEMORY = 3,
    /// The CUDA backend was requested but no usable GPU (or no CUDA support) is present.
    VRAM_ERR_NO_DEVICE = 4,
    /// The GPU or its driver reported an error.
    VRAM_ERR_DEVICE = 5,
    /// The bytes are not the sealed ones: a shard's bytes no longer match its seal (damage
    /// located in the report), a freshly sealed tensor's root is not the expected one, or an
    /// authentic record describes other bytes (another tensor, length or root).
    VRAM_ERR_INTEGRITY = 6,
    /// A seal record is not authentic: malformed, truncated, altered, forged, or from another
    /// key. Nothing it says can be trusted.
    VRAM_ERR_BAD_SEAL = 7,
    /// The request breaks a residency rule (e.g. a shard of another backend or device).
    VRAM_ERR_POLICY = 8,
    /// The operation is not supported by this build or backend.
    VRAM_ERR_UNSUPPORTED = 9,
    /// The output buffer is too small; the size needed was written.
    VRAM_ERR_BUFFER_TOO_SMALL = 10,
    /// An internal error (a Rust panic) was caught; no output was written.
    VRAM_ERR_PANIC = 11,
    /// The caller's progress callback asked to stop; nothing was kept.
    VRAM_ERR_CANCELLED = 12,
}

/// Where a context keeps its shards (the `backend` field of ::vram_ctx_options).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vram_backend {
    /// The GPU when one is usable, otherwise host memory (every record says which).
    VRAM_BACKEND_AUTO = 0,
    /// GPU memory; fails with ::VRAM_ERR_NO_DEVICE when no GPU is usable. Never falls back.
    VRAM_BACKEND_CUDA = 1,
    /// Page-aligned host memory, hashed on the CPU cores.
    VRAM_BACKEND_HOST = 2,
}

impl TryFrom<u32> for vram_backend {
    type Error = VramError;
    fn try_from(v: u32) -> Result<Self> {
        match v {
            0 => Ok(vram_backend::VRAM_BACKEND_AUTO),
            1 => Ok(vram_backend::VRAM_BACKEND_CUDA),
            2 => Ok(vram_backend::VRAM_BACKEND_HOST),
            other => Err(VramError::invalid(
                "opts->backend",
                format!("{other} is not a vram_backend value (0 = AUTO, 1 = CUDA, 2 = HOST)"),
            )),
        }
    }
}

impl From<vram_backend> for BackendChoice {
    fn from(b: vram_backend) -> Self {
        match b {
            vram_backend::VRAM_BACKEND_AUTO => BackendChoice::Auto,
            vram_backend::VRAM_BACKEND_CUDA => BackendChoice::Cuda,
            vram_backend::VRAM_BACKEND_HOST => BackendChoice::Host,
        }
    }
}

/// Options for vram_ctx_new(). Zero-initialise, then set `struct_size = sizeof(vram_ctx_options)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vram_ctx_options {
    /// Must be `sizeof(vram_ctx_options)`.
    pub struct_size: u32,
    /// A ::vram_backend value.
    pub backend: u32,
    /// CUDA device ordinal; ignored by the host backend.
    pub device: i32,
    /// The seal secret, at least 32 bytes. Copied (derived) during the call; the caller keeps
    /// ownership. The derived key is zeroized when the context is freed.
    pub key: *const u8,
    /// Length of `key` in bytes.
    pub key_len: usize,
    /// A hard cap on the bytes the context's live shards hold (0 = no cap on the host backend,
    /// the whole device on CUDA). Each shard counts its bytes (rounded up to whole 4 KiB pages
    /// on the host backend; nothing for memory sealed in place with vram_seal_device()) plus
    /// its bookkeeping: 512 bytes and 32 bytes per MiB.
    pub capacity_bytes: u64,
    /// ::VRAM_CTX_ALLOW_FAULT_DRILLS or 0. Unknown bits → ::VRAM_ERR_INVALID_ARGUMENT.
    /// (A struct_size from before this field existed is accepted: the field then reads as 0.)
    pub flags: u32,
    /// The most threads one call uses: on the host backend to copy (or read) and hash, on the
    /// CUDA backend to fill the page-locked staging of a seal from pageable memory or a load
    /// from files (0 = one per core; on CUDA one per core but one, at most 16), and on CUDA
    /// the host side of ibp_certify()'s search (0 = one per core). A server that
    /// keeps cores for its own work bounds libvram's here. (As `flags`: an older struct_size
    /// reads it as 0.)
    pub max_threads: u32,
}

/// A ::vram_ctx_options flag: vram_debug_flip_bit() and ibp_model_debug_flip_bit() may change
/// this context's shards. Without it they return ::VRAM_ERR_POLICY: in production no code in
/// the process can change sealed weights through libvram.
pub const VRAM_CTX_ALLOW_FAULT_DRILLS: u32 = 1;

// SAFETY: repr(C), struct_size first, all-zero valid (integers and a NULL key pointer).
unsafe impl super::boundary::OptionsStruct for vram_ctx_options {
    const EARLIER_SIZES: &'static [usize] = &[std::mem::offset_of!(vram_ctx_options, flags)];
}

/// Options for vram_seal_ex(). Zero-initialise, then set `struct_size = sizeof(vram_seal_options)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vram_seal_options {
    /// Must be `sizeof(vram_seal_options)`.
    pub struct_size: u32,
    /// Merkle leaf size in bytes: a power of two from 1024 to 1048576; 0 = the default, 4096.
    pub leaf_size: u32,
}

/// What a verification found in one shard. Written by vram_verify() and vram_verify_many()
/// when their status is ::VRAM_OK, ::VRAM_ERR_INTEGRITY or ::VRAM_ERR_BAD_SEAL.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct vram_verify_report {
    /// This shard's own ::vram_status: ::VRAM_OK, ::VRAM_ERR_INTEGRITY (bytes damaged) or
    /// ::VRAM_ERR_BAD_SEAL (its seal does not authenticate under the context's key).
    pub status: u32,
    /// Merkle leaf size in bytes.
    pub leaf_size: u32,
    /// Number of Merkle leaves in the shard.
    pub total_leaves: u64,
    /// Granularity at which damage is located, in bytes (1 MiB).
    pub region_size: u64,
    /// Number of regions (ceil(len / region_size)).
    pub total_regions: u64,
    /// Number of regions whose bytes no longer match the seal (0 when intact).
    pub damaged_regions: u64,
    /// Byte offset of the first damaged region, or UINT64_MAX when none is damaged.
    pub first_damaged_offset: u64,
}

impl From<&VerifyReport> for vram_verify_report {
    fn from(r: &VerifyReport) -> Self {
        let status = match r.outcome {
            Outcome::Intact => vram_status::VRAM_OK,
            Outcome::Damaged => vram_status::VRAM_ERR_INTEGRITY,
            Outcome::BadSeal => vram_status::VRAM_ERR_BAD_SEAL,
        };
        Self {
            status: status as u32,
            leaf_size: r.leaf_size,
            total_leaves: r.total_leaves,
            region_size: r.region_size,
            total_regions: r.total_regions,
            damaged_regions: r.damaged_regions,
            first_damaged_offset: r.first_damaged_offset,
        }
    }
}

/// A libvram context: one backend, one seal key, one capacity budget.
///
/// Created by vram_ctx_new(), freed by vram_ctx_free(). Safe to use from many threads at once.
pub struct vram_ctx {
    pub(crate) inner: std::sync::Arc<Context>,
}

/// A network under construction (ibp_builder_new()); each add_* call seals that layer's
/// weights into the context. Not thread-safe: use one builder from one thread at a time.
pub struct ibp_builder {
    pub(crate) inner: crate::ibp::Builder,
}

/// A built network whose weights are sealed shards: immutable, safe to use from many threads
/// at once. Freed with ibp_model_free(); keeps its context's backend alive.
pub struct ibp_model {
    pub(crate) inner: crate::ibp::Model,
}

/// A verify in flight, from vram_verify_many_async(): holds its shards alive until freed with
/// vram_verify_ticket_free(). Safe to query from many threads at once.
pub struct vram_verify_ticket {
    pub(crate) inner: crate::context::PendingVerify,
}

/// A sealed shard: immutable bytes in GPU (or, on the host backend, host) memory with their
/// seal. Created by vram_seal(), freed by vram_shard_free(). Safe to read and verify from many
/// threads at once. A shard may outlive the context that sealed it.
pub struct vram_shard {
    pub(crate) inner: SharedShard,
}
