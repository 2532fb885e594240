//! Sound linear bounds on the GPU (cuda/crown.cu) for models whose graph is a dense chain
//! ([`Chain`]): one block per box, weights read from their sealed shards where they live.
//!
//! What depends only on the model (the chain, the layer table, the kernel's shared-memory plan)
//! is worked out once per model; what depends on the weights' values (each layer's column
//! maxima, which size the rounding-error charges) is recomputed from the sealed bytes on every
//! call, so a weight changed after the plan was made cannot make a charge too small.

use std::ffi::c_void;

use super::chain::LinearBatch as Bounds;
use super::chain_input::InputMap;
use super::crown::Relaxation;
use super::gpu::{device, plan, stream_for, u32_of};
use super::gpu_entry::{NO_SLOT, StoreUse};
use super::gpu_plan::GpuPlan;
use super::model::Model;
use super::{plain_bytes, plain_bytes_mut};
use crate::backend::cuda::launch::{
    self, CrownLinear, CrownRelaxation, CrownStore, Dev, DevBounds,
};
use crate::backend::cuda::runtime::{
    DeviceAlloc, DeviceMem, DeviceScope, Stream, copy_to_device, copy_to_host, mem_info,
};
use crate::error::{Result, VramError};
use crate::fallible::try_vec;

/// Boxes per launch: bounds the workspace (a few MiB for ACAS Xu) and the time of one launch.
pub(super) const MAX_BATCH: usize = 1 << 15;

/// Every layer's bounds of many boxes, kept in device memory between calls (a branch and
/// bound's open boxes: a sub-box starts from its parent's, which hold inside it). One
/// allocation of `slots` slots; ids handed out from a free list.
pub struct NodeStore {
    mem: DeviceMem,
    slots: u32,
    slot_len: usize,
    /// Free slots, in shards (slot `id` in shard `id % FREE_SHARDS`): the certify search
    /// gives slots back from several threads at once, and one lock for all of them made those
    /// threads wait on each other.
    free: Vec<std::sync::Mutex<Vec<u32>>>,
    /// Where the next `take` starts looking.
    cursor: std::sync::atomic::AtomicUsize,
}

const FREE_SHARDS: usize = 16;

impl NodeStore {
    /// A store for `model` (CUDA-backed, a dense chain): as many slots as fit in 2 GiB or a
    /// quarter of the GPU's free memory, whichever is less, at most 2^20.
    pub fn new(model: &Model) -> Result<Self> {
        let table = plan(model)?.crown()?;
        let slot_len = 2 * table.total_out() as usize;
        let slot_bytes = (slot_len * 8).max(8);
        let dev = device(model)?;
        let _scope = DeviceScope::enter(dev)?;
        let (free, _) = mem_info()?;
        let budget = (free / 4).min(2 << 30);
        let slots = (budget / slot_bytes).clamp(1, 1 << 20);
        Ok(Self {
            mem: DeviceMem::new(dev, slots * slot_bytes, &[], "linear bounds: node store")?,
            slots: slots as u32,
            slot_len,
            // Shard k holds k, k + FREE_SHARDS, …, highest first (taken from the end).
            free: (0..FREE_SHARDS as u32)
                .map(|k| {
                    std::sync::Mutex::new((k..slots as u32).step_by(FREE_SHARDS).rev().collect())
                })
                .collect(),
            cursor: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn shard(&self, k: usize) -> Option<std::sync::MutexGuard<'_, Vec<u32>>> {
        self.free
            .get(k % FREE_SHARDS)
            .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// A free slot, if any: from the shards in turn, starting one further each call.
    pub fn take(&self) -> Option<u32> {
        let start = self
            .cursor
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (0..FREE_SHARDS).find_map(|i| self.shard(start.wrapping_add(i))?.pop())
    }

    pub fn give(&self, id: u32) {
        if id < self.slots {
            if let Some(mut s) = self.shard(id as usize) {
                s.push(id);
            }
        }
    }

    /// Every slot, as the kernel reads and writes them.
    fn nodes(&self) -> Result<Dev<'_, f64>> {
        self.mem.view(0, self.slots as usize * self.slot_len)
    }
}

/// Offsets of the parts of one workspace, each 256-byte aligned.
pub(super) struct Layout {
    pub(super) total: usize,
}

impl Layout {
    pub(super) fn take(&mut self, bytes: usize) -> Result<usize> {
        let at = self.total;
        self.total = bytes
            .checked_next_multiple_of(256)
            .and_then(|b| at.checked_add(b))
            .ok_or_else(|| VramError::out_of_memory("linear bounds: workspace too large"))?;
        Ok(at)
    }
}

/// Runs the plan's input normalisations on the boxes in `raw`, back and forth between `raw` and
/// `spare` (the same view when there are none), outward-rounded as every IBP kernel
/// (docs/soundness.md, "The GPU path"); returns the view written last, which the kernel reads.
///
/// # Safety
/// The launch contract (launch.rs); `raw` and `spare` stay alive until the stream is
/// synchronised.
pub(super) unsafe fn normalise<'a>(
    plan: &GpuPlan,
    raw: DevBounds<'a>,
    spare: DevBounds<'a>,
    stream: &Stream,
) -> Result<DevBounds<'a>> {
    let (mut from, mut to) = (raw, spare);
    for &(at, features) in plan.crown_prefix() {
        let consts = plan.consts(at, 4 * features as usize)?;
        // SAFETY: this function's contract; the constants are the plan's, alive with it.
        unsafe { launch::ibp_normalize(consts, features, from, to, stream) }?;
        std::mem::swap(&mut from, &mut to);
    }
    Ok(from)
}

impl From<Relaxation> for CrownRelaxation {
    fn from(r: Relaxation) -> Self {
        match r {
            Relaxation::Intersected => Self::Intersected,
            Relaxation::Textbook => Self::Textbook,
            Relaxation::Guarded => Self::Guarded,
        }
    }
}

/// Lower bounds of `rows` (`n_rows × output size`, f64) times the output of a CUDA-backed
/// model over each box (`lo`/`hi`: `batch × input size`, f64, finite, `lo ≤ hi`), on the
/// model's GPU with the relaxation `relax`, queued on `stream` (or this thread's own stream)
/// and waited for.
#[allow(clippy::too_many_arguments)]
pub fn bound(
    model: &Model,
    lo: &[f64],
    hi: &[f64],
    rows: &[f64],
    n_rows: usize,
    want_coeffs: bool,
    store: Option<StoreUse<'_>>,
    relax: Relaxation,
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
        offsets: if want_coeffs {
            try_vec(batch * n_rows, 0.0, "linear bounds")?
        } else {
            Vec::new()
        },
    };
    if batch == 0 {
        return Ok(out);
    }
    // The input normalisation runs on the device, from the plan's constants.
    let plan = plan(model)?;
    let prefix = plan.crown_prefix();

    let table = plan.crown()?;
    let dev = device(model)?;
    let _scope = DeviceScope::enter(dev)?;
    let stream = stream_for(stream, dev)?;
    let n_rows32 = u32_of(n_rows as u64, "rows")?;

    // The per-call part: the rows, and the column maxima from the weights as they are now.
    let mut fixed_parts = Layout { total: 0 };
    let at_colmax = fixed_parts.take(table.colmax_len() * 8)?;
    let at_rows = fixed_parts.take(rows.len() * 8)?;
    let fixed = DeviceAlloc::scratch(fixed_parts.total, &stream, "linear bounds: rows")?;
    let colmax = fixed.view::<f64>(at_colmax, table.colmax_len())?;
    let rows_dev = fixed.view::<f64>(at_rows, rows.len())?;
    // SAFETY: the rows' view holds exactly the copied values; the source outlives the
    // synchronisation at the end of every chunk below; the column maxima are a view of the
    // same scratch, and the table's weights are the model's sealed shards.
    unsafe {
        copy_to_device(rows_dev.as_ptr().cast(), plain_bytes(rows), &stream)?;
        launch::crown_colmax(table, colmax, &stream)?;
    }

    let mut first = 0;
    while first < batch {
        let b = (batch - first).min(MAX_BATCH);
        let mut ws = Layout { total: 0 };
        let at_lo = ws.take(b * n_x * 8)?;
        let at_hi = ws.take(b * n_x * 8)?;
        let at_zlo = ws.take(if prefix.is_empty() { 0 } else { b * n_x * 8 })?;
        let at_zhi = ws.take(if prefix.is_empty() { 0 } else { b * n_x * 8 })?;
        let at_lower = ws.take(b * n_rows * 8)?;
        let at_olo = ws.take(b * n_out * 8)?;
        let at_ohi = ws.take(b * n_out * 8)?;
        let at_coeffs = ws.take(if want_coeffs { b * n_rows * n_x * 8 } else { 0 })?;
        let at_offsets = ws.take(if want_coeffs { b * n_rows * 8 } else { 0 })?;
        let at_slots = ws.take(if store.is_some() { 2 * b * 4 } else { 0 })?;
        let mem = DeviceAlloc::scratch(ws.total, &stream, "linear bounds workspace")?;
        let raw = DevBounds::new(mem.view(at_lo, b * n_x)?, mem.view(at_hi, b * n_x)?)?;
        // The prefix's normalisations go back and forth between the two buffers; the kernel
        // reads the last one written.
        let spare = if prefix.is_empty() {
            raw
        } else {
            DevBounds::new(mem.view(at_zlo, b * n_x)?, mem.view(at_zhi, b * n_x)?)?
        };
        let lower = mem.view::<f64>(at_lower, b * n_rows)?;
        let outs_dev = DevBounds::new(mem.view(at_olo, b * n_out)?, mem.view(at_ohi, b * n_out)?)?;
        let linear = if want_coeffs {
            Some(CrownLinear {
                coeffs: mem.view::<f64>(at_coeffs, b * n_rows * n_x)?,
                offsets: mem.view::<f64>(at_offsets, b * n_rows)?,
            })
        } else {
            None
        };
        let kept = match &store {
            Some(st) => Some(CrownStore {
                nodes: st.store.nodes()?,
                outer: mem.view(at_slots, b)?,
                own: mem.view(at_slots + 4 * b, b)?,
            }),
            None => None,
        };
        let box_range = first * n_x..(first + b) * n_x;
        let rows_of = first * n_rows..(first + b) * n_rows;
        let outs = first * n_out..(first + b) * n_out;
        // SAFETY: every destination is a view of `mem` of exactly the copied length, or a host
        // slice of exactly the view's length; the normalisations read one view of `mem` and
        // write the other; all of them, and the sources, stay alive until
        // the stream is synchronised at the end of this iteration. The store's slots belong
        // to this call's boxes (StoreUse's contract, checked against the store's size).
        unsafe {
            copy_to_device(
                raw.lo().as_ptr().cast(),
                plain_bytes(&lo[box_range.clone()]),
                &stream,
            )?;
            copy_to_device(
                raw.hi().as_ptr().cast(),
                plain_bytes(&hi[box_range]),
                &stream,
            )?;
            let boxes = normalise(plan, raw, spare, &stream)?;
            if let (Some(k), Some(st)) = (&kept, &store) {
                copy_to_device(
                    k.outer.as_ptr().cast(),
                    plain_bytes(&st.outer[first..first + b]),
                    &stream,
                )?;
                copy_to_device(
                    k.own.as_ptr().cast(),
                    plain_bytes(&st.own[first..first + b]),
                    &stream,
                )?;
            }
            launch::crown_bounds(
                table,
                colmax,
                boxes,
                rows_dev,
                n_rows32,
                lower,
                outs_dev,
                linear,
                kept,
                relax.into(),
                &stream,
            )?;
            copy_to_host(
                plain_bytes_mut(&mut out.lower[rows_of.clone()]),
                lower.as_ptr().cast(),
                &stream,
            )?;
            copy_to_host(
                plain_bytes_mut(&mut out.out_lo[outs.clone()]),
                outs_dev.lo().as_ptr().cast(),
                &stream,
            )?;
            copy_to_host(
                plain_bytes_mut(&mut out.out_hi[outs]),
                outs_dev.hi().as_ptr().cast(),
                &stream,
            )?;
            if let Some(c) = linear {
                let range = first * n_rows * n_x..(first + b) * n_rows * n_x;
                copy_to_host(
                    plain_bytes_mut(&mut out.coeffs[range]),
                    c.coeffs.as_ptr().cast(),
                    &stream,
                )?;
                copy_to_host(
                    plain_bytes_mut(&mut out.offsets[rows_of]),
                    c.offsets.as_ptr().cast(),
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
    // The linear bounds are over the normalised box: moved to the network's input, where the
    // caller's boxes are (exactly: what the move rounds is charged to the constants).
    if want_coeffs {
        let map = InputMap::of(model.nodes(), chain.prefix());
        let per_box = out
            .coeffs
            .chunks_exact_mut(n_rows * n_x)
            .zip(out.offsets.chunks_exact_mut(n_rows))
            .zip(lo.chunks_exact(n_x).zip(hi.chunks_exact(n_x)));
        for ((coeffs, offsets), (blo, bhi)) in per_box {
            for (c, k) in coeffs.chunks_exact_mut(n_x).zip(offsets.iter_mut()) {
                *k = map.to_input(c, *k, blo, bhi);
            }
        }
    }
    Ok(out)
}
