//! The C boundary and nothing else: opaque handles, NULL checks, the panic boundary, status
//! codes, the thread-local last error and the log callback. Every function here converts C
//! arguments, calls safe Rust below, and converts the result back.
//!
//! Exports are plain (not `unsafe`) `extern "C"` functions, as in rustls-ffi: C callers cannot
//! see Rust's `unsafe`, so each function's pointer contract is stated in its doc comment (and
//! so in vram.h) and every dereference sits in a small `unsafe` block in `boundary`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]
// C names (vram_ctx, vram_log_callback, ...) are the API.
#![allow(non_camel_case_types)]

mod boundary;
pub mod certify;
pub mod ctx;
pub mod ibp;
pub mod log;
pub mod manifest;
pub mod misc;
pub mod model;
pub mod record;
pub mod scrubber;
pub mod shard;
pub mod types;

pub use certify::*;
pub use ctx::*;
pub use ibp::*;
pub use log::*;
pub use manifest::*;
pub use misc::*;
pub use model::*;
pub use record::*;
pub use scrubber::*;
pub use shard::*;
pub use types::*;
