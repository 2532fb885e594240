//! Where a propagation runs: on the CPU cores for a host-backed model, on its GPU for a
//! CUDA-backed one (boxes in host memory are staged through the device).

use std::ffi::c_void;
use std::sync::Arc;

use super::chain::LinearBatch;
use super::crown::{Linear, Relaxation, keep_larger};
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

/// Bounds for boxes already in device memory (CUDA-backed models only): interval bounds, or
/// with `linear` linear (CROWN-style) bounds intersected with them (a dense chain).
///
/// # Safety
/// `inp` (lower, upper) must each point to `batch × input size` f32 values, and `out` to
/// `batch × output size` (or `spec.rows`) writable f32 values, in device memory of the model's
/// GPU, alive and not used by other work until the call returns (`out` may be `inp`'s buffers).
pub unsafe fn propagate_device(
    model: &Model,
    batch: usize,
    inp: [*const f32; 2],
    out: [*mut f32; 2],
    spec: Option<&Spec>,
    linear: Option<Linear>,
    stream: Option<*mut c_void>,
) -> Result<()> {
    if inp.iter().any(|p| p.is_null()) || out.iter().any(|p| p.is_null()) {
        return Err(VramError::null("in_lower/in_upper/out_lower/out_upper"));
    }
    match model.context().residency() {
        Residency::Host => Err(VramError::new(
            ErrorKind::Unsupported,
            "memory: device memory needs a CUDA-backed model; this one uses the host backend",
        )),
        // SAFETY: this function's contract, passed on.
        Residency::Cuda { .. } => unsafe {
            gpu::propagate_device(model, batch, inp, out, spec, linear, stream)
        },
    }
}

/// Linear (CROWN-style) bounds for boxes in host memory, intersected with IBP's: on the CPU
/// for a host-backed model, on its GPU for a CUDA-backed one (a dense chain).
pub fn linear_host_boxes(
    model: &Model,
    req: &Request<'_>,
    out_lo: &mut [f32],
    out_hi: &mut [f32],
    method: Linear,
    stream: Option<*mut c_void>,
) -> Result<()> {
    if model.context().residency() == Residency::Host {
        return model.linear_host(req, out_lo, out_hi, method);
    }
    model.chain()?;
    propagate_host_boxes(model, req, out_lo, out_hi, stream)?;
    let (rows, lam, d) = model.signed_rows(req.spec)?;
    let n_x = model.input_size();
    // The linear-bounds kernel takes finite boxes: an item with an infinite bound keeps its
    // interval bounds.
    let finite: Vec<usize> = (0..req.batch)
        .filter(|&k| {
            let xs = k * n_x..(k + 1) * n_x;
            let all = |v: &[f32]| {
                v.get(xs.clone())
                    .is_some_and(|x| x.iter().all(|f| f.is_finite()))
            };
            all(req.in_lo) && all(req.in_hi)
        })
        .collect();
    if finite.is_empty() {
        return Ok(());
    }
    let widen = |v: &[f32]| -> Vec<f64> {
        finite
            .iter()
            .flat_map(|&k| v.get(k * n_x..(k + 1) * n_x).into_iter().flatten())
            .map(|&f| f64::from(f))
            .collect()
    };
    let (lo, hi) = (widen(req.in_lo), widen(req.in_hi));
    // Each row's best lower bound over the method's relaxations.
    let mut best: Vec<f64> = Vec::new();
    for &relax in method.passes() {
        let b = linear_bounds(model, &lo, &hi, &lam, 2 * rows, false, None, relax, stream)?;
        keep_larger(&mut best, b.lower);
    }
    let mut lowers = finite.iter().zip(best.chunks(2 * rows)).peekable();
    let items = out_lo.chunks_mut(rows).zip(out_hi.chunks_mut(rows));
    for (k, (ol, oh)) in items.enumerate() {
        if let Some((_, lower)) = lowers.next_if(|(f, _)| **f == k) {
            Model::narrow(lower, &d, ol, oh);
        }
    }
    Ok(())
}

/// Sound linear bounds of `rows` (`n_rows × output size`) times the output, on the model's
/// GPU, for boxes in host memory (f64, `batch × input size`): CUDA-backed models whose graph is
/// a dense chain ([`super::chain::Chain`]). With `store`, each box starts from the node bounds
/// in its `outer` slot (which must hold on it) and leaves its own in its `own` slot.
#[allow(clippy::too_many_arguments)]
pub fn linear_bounds(
    model: &Model,
    lo: &[f64],
    hi: &[f64],
    rows: &[f64],
    n_rows: usize,
    want_coeffs: bool,
    store: Option<StoreUse<'_>>,
    relax: Relaxation,
    stream: Option<*mut c_void>,
) -> Result<LinearBatch> {
    match model.context().residency() {
        Residency::Host => Err(VramError::new(
            ErrorKind::Unsupported,
            "linear bounds on the GPU need a CUDA-backed model; this one uses the host backend",
        )),
        Residency::Cuda { .. } => gpu::linear(
            model,
            lo,
            hi,
            rows,
            n_rows,
            want_coeffs,
            store,
            relax,
            stream,
        ),
    }
}

/// Node-bound slots of one [`NodeStore`] for a batch: per box, the slot to start from and the
/// slot to write ([`NO_SLOT`]: none).
pub struct StoreUse<'a> {
    pub store: &'a NodeStore,
    pub outer: &'a [u32],
    pub own: &'a [u32],
}

/// No slot.
pub const NO_SLOT: u32 = u32::MAX;

/// A slot of a [`NodeStore`], given back when dropped.
pub struct Slot {
    pub id: u32,
    store: Arc<NodeStore>,
}

impl Slot {
    /// A free slot of `store`, if any is left.
    pub fn take(store: &Arc<NodeStore>) -> Option<Self> {
        store.take().map(|id| Self {
            id,
            store: Arc::clone(store),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.store.give(self.id);
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({})", self.id)
    }
}

#[cfg(vram_cuda)]
pub use super::gpu_linear::NodeStore;

/// Without CUDA there is nothing to keep on a device.
#[cfg(not(vram_cuda))]
pub struct NodeStore(());

#[cfg(not(vram_cuda))]
impl NodeStore {
    pub fn new(_: &Model) -> Result<Self> {
        Err(VramError::new(
            ErrorKind::NoDevice,
            "model: built without CUDA support",
        ))
    }

    pub fn take(&self) -> Option<u32> {
        None
    }

    pub fn give(&self, _: u32) {}
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
        _: Option<Linear>,
        _: Option<*mut c_void>,
    ) -> Result<()> {
        Err(none())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn linear(
        _: &Model,
        _: &[f64],
        _: &[f64],
        _: &[f64],
        _: usize,
        _: bool,
        _: Option<StoreUse<'_>>,
        _: Relaxation,
        _: Option<*mut c_void>,
    ) -> Result<LinearBatch> {
        Err(none())
    }
}

#[cfg(vram_cuda)]
mod gpu {
    pub use super::super::gpu::propagate;
    pub use super::super::gpu_linear::bound as linear;
    use super::*;

    /// # Safety
    /// As [`super::propagate_device`].
    pub unsafe fn propagate_device(
        model: &Model,
        batch: usize,
        inp: [*const f32; 2],
        out: [*mut f32; 2],
        spec: Option<&Spec>,
        linear: Option<Linear>,
        stream: Option<*mut c_void>,
    ) -> Result<()> {
        // SAFETY: this function's contract, passed on.
        unsafe {
            match linear {
                Some(method) => super::super::gpu_linear_device::bound(
                    model, batch, inp, out, spec, method, stream,
                ),
                None => super::super::gpu::propagate_device(model, batch, inp, out, spec, stream),
            }
        }
    }
}
