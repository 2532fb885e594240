//! Where a propagation runs: on the CPU cores for a host-backed model, on its GPU for a
//! CUDA-backed one (boxes in host memory are staged through the device).

use std::ffi::c_void;

use super::model::{Model, Request};
use super::spec::Spec;
use crate::error::{ErrorKind, Result, VramError};
use crate::seal::record::Residency;

/// Bounds for boxes in host memory.
pub fn propagate_host_boxes(
    model: &Model,
    req: &Request<'_>,
    out_lo: &mut [f32],
    out_hi: &mut [f32],
    stream: Option<*mut c_void>,
) -> Result<()> {
    match model.context().residency() {
        Residency::Host => model.propagate_host(req, out_lo, out_hi),
        Residency::Cuda { .. } => gpu::propagate(model, req, out_lo, out_hi, stream),
    }
}

/// Bounds for boxes already in device memory (CUDA-backed models only).
///
/// # Safety
/// `in_lo`/`in_hi` must each point to `batch × input size` f32 values, and `out_lo`/`out_hi` to
/// `batch × output size` (or `spec.rows`) writable f32 values, in device memory of the model's
/// GPU, alive and not used by other work until the call returns.
#[allow(clippy::too_many_arguments)]
pub unsafe fn propagate_device(
    model: &Model,
    batch: usize,
    in_lo: *const f32,
    in_hi: *const f32,
    out_lo: *mut f32,
    out_hi: *mut f32,
    spec: Option<&Spec>,
    stream: Option<*mut c_void>,
) -> Result<()> {
    if in_lo.is_null() || in_hi.is_null() || out_lo.is_null() || out_hi.is_null() {
        return Err(VramError::null("in_lower/in_upper/out_lower/out_upper"));
    }
    match model.context().residency() {
        Residency::Host => Err(VramError::new(
            ErrorKind::Unsupported,
            "opts->memory: device memory needs a CUDA-backed model; this one uses the host backend",
        )),
        // SAFETY: this function's contract, passed on.
        Residency::Cuda { .. } => unsafe {
            gpu::propagate_device(model, batch, [in_lo, in_hi], [out_lo, out_hi], spec, stream)
        },
    }
}

#[cfg(not(vram_cuda))]
mod gpu {
    use super::*;

    fn none() -> VramError {
        VramError::new(ErrorKind::NoDevice, "model: built without CUDA support")
    }

    pub fn propagate(
        _: &Model,
        _: &Request<'_>,
        _: &mut [f32],
        _: &mut [f32],
        _: Option<*mut c_void>,
    ) -> Result<()> {
        Err(none())
    }

    /// # Safety
    /// Never reads its pointers (no CUDA in this build).
    pub unsafe fn propagate_device(
        _: &Model,
        _: usize,
        _: [*const f32; 2],
        _: [*mut f32; 2],
        _: Option<&Spec>,
        _: Option<*mut c_void>,
    ) -> Result<()> {
        Err(none())
    }
}

#[cfg(vram_cuda)]
use super::gpu;
