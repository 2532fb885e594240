//! libvram: sealed residency for model weights, and certified interval bounds, behind a C ABI.
//!
//! - [`seal`]: RFC 9162 Merkle roots, the HKDF-derived seal key, the HMAC-authenticated record.
//! - [`backend`]: where a shard's bytes live (host memory, or a CUDA device) and how they are
//!   hashed there.
//! - [`context`] and [`shard`]: sealing and verification on top of a backend.
//! - [`scrub`]: the background scrubber that keeps checking resident shards within a budget.
//! - [`capi`]: the C ABI (`include/vram.h`), the only module that touches C types.

/// cbindgen:ignore
pub mod backend;
pub mod capi;
/// cbindgen:ignore
pub mod certify;
/// cbindgen:ignore
pub mod context;
/// cbindgen:ignore
pub mod error;
/// cbindgen:ignore
pub mod events;
/// cbindgen:ignore
pub mod fallible;
/// cbindgen:ignore
pub mod ibp;
/// cbindgen:ignore
pub mod load;
/// cbindgen:ignore
pub mod manifest;
/// cbindgen:ignore
pub mod model_signing;
/// cbindgen:ignore
pub mod parallel;
/// cbindgen:ignore
pub mod scrub;
/// cbindgen:ignore
pub mod seal;
/// cbindgen:ignore
pub mod shard;

pub use capi::*;
