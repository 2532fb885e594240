//! Certified interval bound propagation (IBP) over networks whose weights are sealed shards.
//!
//! For every input box the returned intervals enclose the exact real-number IBP bounds of the
//! network defined by its float32 weights, hence every output the network can produce for an
//! input in the box, despite floating-point rounding (docs/soundness.md).

pub mod builder;
pub mod chain;
pub mod chain_input;
pub mod concrete;
pub mod cpu;
pub mod crown;
pub mod dense;
#[cfg(vram_cuda)]
pub mod gpu;
pub mod gpu_entry;
#[cfg(vram_cuda)]
mod gpu_linear;
#[cfg(vram_cuda)]
mod gpu_linear_device;
#[cfg(vram_cuda)]
mod gpu_plan;
#[cfg(vram_cuda)]
mod gpu_stage;
pub mod graph;
pub mod limits;
pub mod model;
pub mod nnet;
pub mod onnx;
pub mod round;
pub mod spec;

pub use builder::Builder;
pub use model::{Memory, Model, Request};
pub use spec::Spec;

/// Number types whose values are plain bytes: every byte initialised, no padding, and every
/// byte pattern a valid value. Only these may be viewed as bytes ([`plain_bytes`]).
pub(crate) trait Plain: Copy {}
impl Plain for f32 {}
impl Plain for f64 {}
impl Plain for u32 {}

/// Values viewed as their native-endian bytes, without a copy: how weights are sealed (the
/// host view and the GPU kernels read them in place as f32) and how boxes and bounds are copied
/// to and from the device.
pub(crate) fn plain_bytes<T: Plain>(v: &[T]) -> &[u8] {
    // SAFETY: `Plain` types have initialised bytes and no padding; u8 has alignment 1, and the
    // byte length `size_of_val(v)` is that of the same allocation.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), size_of_val(v)) }
}

/// [`plain_bytes`], writable (copies from the device land in place).
#[cfg(vram_cuda)]
pub(crate) fn plain_bytes_mut<T: Plain>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as in plain_bytes; every byte pattern is a valid `Plain` value, so writes through
    // the view cannot make an invalid one.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), size_of_val(v)) }
}

/// f32 values viewed as their bytes ([`plain_bytes`]).
pub(crate) fn f32_bytes(v: &[f32]) -> &[u8] {
    plain_bytes(v)
}

/// A model name from a file's stem: ASCII letters, digits and `._-` kept, anything else `_`,
/// at most 200 characters (shard ids are `<name>/<node>/<tensor>`); `fallback` when empty.
pub(crate) fn name_from_path(path: &std::path::Path, fallback: &str) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let name: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if name.is_empty() {
        fallback.to_string()
    } else {
        name
    }
}
