//! Sound linear bounds on the GPU (cuda/crown.cu) for models whose graph is a dense chain
//! ([`Chain`]): one block per box, weights read from their sealed shards where they live.
//!
//! What depends only on the model (the chain, the layer table, the kernel's shared-memory plan)
//! is worked out once per model; what depends on the weights' values (each layer's column
//! maxima, which size the rounding-error charges) is recomputed from the sealed bytes on every
//! call, so a weight changed after the plan was made cannot make a charge too small.

use std::ffi::c_void;

use super::chain::LinearBatch as Bounds;
use super::gpu::{device, param_ptr, stream_for, u32_of};
use super::gpu_entry::{NO_SLOT, StoreUse};
use super::model::Model;
use super::round::gamma;
use super::{plain_bytes, plain_bytes_mut};
use crate::backend::cuda::ffi::{self, LvkCrownLayer, LvkCrownStore, check};
use crate::backend::cuda::runtime::{
    DeviceAlloc, DeviceScope, Stream, copy_to_device, copy_to_host, free_now,
};
use crate::error::{Result, VramError};
use crate::fallible::try_vec;

/// Boxes per launch: bounds the workspace (a few MiB for ACAS Xu) and the time of one launch.
const MAX_BATCH: usize = 1 << 15;

/// Every layer's bounds of many boxes, kept in device memory between calls (a branch and
/// bound's open boxes: a sub-box starts from its parent's, which hold inside it). One
/// allocation of `slots` slots; ids handed out from a free list.
pub struct NodeStore {
    ptr: *mut u8,
    slots: u32,
    device: i32,
    free: std::sync::Mutex<Vec<u32>>,
}

// SAFETY: a device address is a number on the host; the slots' bytes are only touched by
// kernels that the free list gives disjoint slots to.
unsafe impl Send for NodeStore {}
// SAFETY: as for Send; the free list is behind a mutex.
unsafe impl Sync for NodeStore {}

impl NodeStore {
    /// A store for `model` (CUDA-backed, a dense chain): as many slots as fit in 2 GiB or a
    /// quarter of the GPU's free memory, whichever is less, at most 2^20.
    pub fn new(model: &Model) -> Result<Self> {
        let chain = model.chain()?;
        let total_out: usize = chain.layers.iter().map(|l| l.out_f as usize).sum();
        let slot_bytes = (2 * total_out * 8).max(8);
        let dev = device(model)?;
        let _scope = DeviceScope::enter(dev)?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two values through valid pointers.
        check(
            unsafe { ffi::lvk_mem_info(&mut free, &mut total) },
            "cudaMemGetInfo",
        )?;
        let budget = (free / 4).min(2 << 30);
        let slots = (budget / slot_bytes).clamp(1, 1 << 20);
        let stream = Stream::new()?;
        let mem = DeviceAlloc::new(slots * slot_bytes, &stream, "linear bounds: node store")?;
        let ptr = mem.release();
        stream.sync()?;
        Ok(Self {
            ptr,
            slots: slots as u32,
            device: dev,
            free: std::sync::Mutex::new((0..slots as u32).rev().collect()),
        })
    }

    pub fn take(&self) -> Option<u32> {
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
    }

    pub fn give(&self, id: u32) {
        if id < self.slots {
            self.free
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(id);
        }
    }
}

impl Drop for NodeStore {
    fn drop(&mut self) {
        // SAFETY: memory from lvk_malloc_async in `new`, freed once; every kernel that used it
        // was waited for by the call that launched it.
        unsafe { free_now(self.device, self.ptr.cast()) };
    }
}

/// Offsets of the parts of one workspace, each 256-byte aligned.
struct Layout {
    total: usize,
}

impl Layout {
    fn take(&mut self, bytes: usize) -> Result<usize> {
        let at = self.total;
        self.total = bytes
            .checked_next_multiple_of(256)
            .and_then(|b| at.checked_add(b))
            .ok_or_else(|| VramError::out_of_memory("linear bounds: workspace too large"))?;
        Ok(at)
    }
}

/// Lower bounds of `rows` (`n_rows × output size`, f64) times the output of a CUDA-backed
/// model over each box (`lo`/`hi`: `batch × input size`, f64, finite, `lo ≤ hi`), on the
/// model's GPU, queued on `stream` (or this thread's own stream) and waited for.
#[allow(clippy::too_many_arguments)]
pub fn bound(
    model: &Model,
    lo: &[f64],
    hi: &[f64],
    rows: &[f64],
    n_rows: usize,
    want_coeffs: bool,
    store: Option<StoreUse<'_>>,
    stream: Option<*mut c_void>,
) -> Result<Bounds> {
    let chain = model.chain()?;
    let n_x = model.input_size();
    let n_out = chain.n_out();
    if n_x != chain.n_in || n_x == 0 || lo.len() != hi.len() || lo.len() % n_x != 0 {
        return Err(VramError::invalid("box", "sizes do not match the network"));
    }
    if n_rows == 0 || rows.len() != n_rows * n_out {
        return Err(VramError::invalid(
            "rows",
            "sizes do not match the network's output",
        ));
    }
    if lo
        .iter()
        .zip(hi)
        .any(|(l, h)| !(l <= h && l.is_finite() && h.is_finite()))
    {
        return Err(VramError::invalid(
            "box",
            "every bound must be finite with lo <= hi",
        ));
    }
    let batch = lo.len() / n_x;
    if let Some(st) = &store {
        if st.outer.len() != batch || st.own.len() != batch {
            return Err(VramError::invalid(
                "store",
                "one outer and one own slot per box",
            ));
        }
        if st
            .outer
            .iter()
            .chain(st.own)
            .any(|&k| k != NO_SLOT && k >= st.store.slots)
        {
            return Err(VramError::invalid("store", "a slot past the store's end"));
        }
    }
    let mut out = Bounds {
        lower: try_vec(batch * n_rows, 0.0, "linear bounds")?,
        out_lo: try_vec(batch * n_out, 0.0, "linear bounds")?,
        out_hi: try_vec(batch * n_out, 0.0, "linear bounds")?,
        coeffs: if want_coeffs {
            try_vec(batch * n_rows * n_x, 0.0, "linear bounds")?
        } else {
            Vec::new()
        },
    };
    if batch == 0 {
        return Ok(out);
    }
    let (mut zlo, mut zhi) = (lo.to_vec(), hi.to_vec());
    chain.prefix_boxes(model.nodes(), &mut zlo, &mut zhi);

    let dev = device(model)?;
    let _scope = DeviceScope::enter(dev)?;
    let stream = stream_for(stream, dev)?;
    let n_layers = u32_of(chain.layers.len() as u64, "layers")?;
    let width = chain
        .layers
        .iter()
        .map(|l| l.in_f.max(l.out_f))
        .max()
        .unwrap_or(0)
        .max(u32_of(n_x as u64, "input size")?);
    let total_out: u32 = chain
        .layers
        .iter()
        .try_fold(0u32, |a, l| a.checked_add(l.out_f))
        .ok_or_else(|| VramError::invalid("model", "too large for the GPU linear bounds"))?;
    let (mut rp, mut smem) = (0u32, 0usize);
    // SAFETY: writes two values through valid pointers.
    check(
        unsafe {
            ffi::lvk_crown_rows_per_pass(
                n_layers,
                n_x as u32,
                width,
                total_out,
                u32_of(n_rows as u64, "rows")?,
                &mut rp,
                &mut smem,
            )
        },
        "linear bounds: the layers are too wide for one block's shared memory",
    )?;

    // The per-call part: the layer table, its column maxima, the rows.
    let mut plan = Layout { total: 0 };
    let at_layers = plan.take(chain.layers.len() * size_of::<LvkCrownLayer>())?;
    let colmax_len: usize = chain.layers.iter().map(|l| l.in_f as usize).sum();
    let at_colmax = plan.take(colmax_len * 8)?;
    let at_rows = plan.take(rows.len() * 8)?;
    let fixed = DeviceAlloc::scratch(plan.total, &stream, "linear bounds: layer table")?;
    let base = fixed.ptr();
    let mut table = Vec::with_capacity(chain.layers.len());
    let (mut colmax_at, mut offset) = (at_colmax, 0u32);
    for l in &chain.layers {
        table.push(LvkCrownLayer {
            w: param_ptr(model, l.weight)?,
            bias: match l.bias {
                Some(b) => param_ptr(model, b)?,
                None => std::ptr::null(),
            },
            colmax: base.wrapping_add(colmax_at).cast(),
            gamma: gamma(u64::from(l.out_f) + 2) * (1.0 + 1e-9),
            in_f: l.in_f,
            out_f: l.out_f,
            relu: u32::from(l.relu),
            offset,
        });
        colmax_at += l.in_f as usize * 8;
        offset += l.out_f;
    }
    // SAFETY: LvkCrownLayer is repr(C) and Copy, made of pointers, an f64 and u32s with no
    // padding (48 bytes): its bytes are initialised.
    let table_bytes = unsafe {
        std::slice::from_raw_parts(table.as_ptr().cast::<u8>(), size_of_val(table.as_slice()))
    };
    let layers_dev: *const LvkCrownLayer = base.wrapping_add(at_layers).cast();
    // SAFETY (both copies and the launch): the destinations lie inside `fixed`, sized above;
    // the sources outlive the synchronisation at the end of every chunk below; the table's
    // weight pointers are the sealed shards' device memory, of the sizes the builder checked.
    unsafe {
        copy_to_device(base.wrapping_add(at_layers), table_bytes, &stream)?;
        copy_to_device(base.wrapping_add(at_rows), plain_bytes(rows), &stream)?;
        check(
            ffi::lvk_crown_colmax(layers_dev, n_layers, width, stream.raw()),
            "linear bounds: column maxima",
        )?;
    }

    let mut first = 0;
    while first < batch {
        let b = (batch - first).min(MAX_BATCH);
        let mut ws = Layout { total: 0 };
        let at_lo = ws.take(b * n_x * 8)?;
        let at_hi = ws.take(b * n_x * 8)?;
        let at_lower = ws.take(b * n_rows * 8)?;
        let at_olo = ws.take(b * n_out * 8)?;
        let at_ohi = ws.take(b * n_out * 8)?;
        let at_coeffs = ws.take(if want_coeffs { b * n_rows * n_x * 8 } else { 0 })?;
        let at_slots = ws.take(if store.is_some() { 2 * b * 4 } else { 0 })?;
        let mem = DeviceAlloc::scratch(ws.total, &stream, "linear bounds workspace")?;
        let ids: Vec<u32> = store.as_ref().map_or_else(Vec::new, |st| {
            st.outer[first..first + b]
                .iter()
                .chain(&st.own[first..first + b])
                .copied()
                .collect()
        });
        let p = mem.ptr();
        let kept = store.as_ref().map(|st| LvkCrownStore {
            nodes: st.store.ptr.cast(),
            slots: st.store.slots,
            total_out,
            outer_slot: p.wrapping_add(at_slots).cast(),
            self_slot: p.wrapping_add(at_slots + 4 * b).cast(),
        });
        let boxes = first * n_x..(first + b) * n_x;
        let rows_of = first * n_rows..(first + b) * n_rows;
        let outs = first * n_out..(first + b) * n_out;
        // SAFETY: every destination lies inside `mem` (sized above for b boxes) or is a host
        // slice of exactly the copied length; all of them, and the sources, stay alive until
        // the stream is synchronised at the end of this iteration.
        unsafe {
            copy_to_device(
                p.wrapping_add(at_lo),
                plain_bytes(&zlo[boxes.clone()]),
                &stream,
            )?;
            copy_to_device(
                p.wrapping_add(at_hi),
                plain_bytes(&zhi[boxes.clone()]),
                &stream,
            )?;
            if store.is_some() {
                copy_to_device(p.wrapping_add(at_slots), plain_bytes(&ids), &stream)?;
            }
            check(
                ffi::lvk_crown_bounds(
                    layers_dev,
                    n_layers,
                    n_x as u32,
                    width,
                    total_out,
                    rp,
                    smem,
                    b as u32,
                    p.wrapping_add(at_lo).cast(),
                    p.wrapping_add(at_hi).cast(),
                    base.wrapping_add(at_rows).cast(),
                    n_rows as u32,
                    p.wrapping_add(at_lower).cast(),
                    p.wrapping_add(at_olo).cast(),
                    p.wrapping_add(at_ohi).cast(),
                    if want_coeffs {
                        p.wrapping_add(at_coeffs).cast()
                    } else {
                        std::ptr::null_mut()
                    },
                    kept.as_ref()
                        .map_or(std::ptr::null(), |k| k as *const LvkCrownStore),
                    stream.raw(),
                ),
                "linear bounds kernel",
            )?;
            copy_to_host(
                plain_bytes_mut(&mut out.lower[rows_of]),
                p.wrapping_add(at_lower),
                &stream,
            )?;
            copy_to_host(
                plain_bytes_mut(&mut out.out_lo[outs.clone()]),
                p.wrapping_add(at_olo),
                &stream,
            )?;
            copy_to_host(
                plain_bytes_mut(&mut out.out_hi[outs]),
                p.wrapping_add(at_ohi),
                &stream,
            )?;
            if want_coeffs {
                let c = first * n_rows * n_x..(first + b) * n_rows * n_x;
                copy_to_host(
                    plain_bytes_mut(&mut out.coeffs[c]),
                    p.wrapping_add(at_coeffs),
                    &stream,
                )?;
            }
        }
        stream.sync()?;
        drop(mem);
        first += b;
    }
    stream.sync()?;
    drop(fixed);
    // NaN never proves anything: the widest bound.
    for v in &mut out.lower {
        if v.is_nan() {
            *v = f64::NEG_INFINITY;
        }
    }
    for (l, h) in out.out_lo.iter_mut().zip(&mut out.out_hi) {
        if l.is_nan() {
            *l = f64::NEG_INFINITY;
        }
        if h.is_nan() {
            *h = f64::INFINITY;
        }
    }
    // Coefficients on the normalised input, turned into coefficients on the network's input
    // in the one way the split heuristic reads them: coefficient times the box's width.
    if want_coeffs {
        for (k, c) in out.coeffs.iter_mut().enumerate() {
            let item = k / (n_rows * n_x);
            let j = item * n_x + k % n_x;
            let (w_x, w_z) = (hi[j] - lo[j], zhi[j] - zlo[j]);
            if w_x > 0.0 {
                *c *= w_z / w_x;
            }
        }
    }
    Ok(out)
}
