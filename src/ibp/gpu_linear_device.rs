//! Linear bounds of f32 boxes that are already in device memory (`ibp_propagate_ex` with
//! `IBP_METHOD_LINEAR` and `IBP_MEMORY_DEVICE`): a PyTorch or CUDA caller's boxes go through
//! IBP, the linear-bounds kernel and the outward narrowing to f32 without leaving the GPU.
//!
//! Every input is checked (by the IBP pass) before anything is written, and the caller's
//! outputs are written by one kernel at the end, so a failure leaves them untouched.

use std::ffi::c_void;

use super::crown::Linear;
use super::gpu::{device, plan, stream_for, u32_of};
use super::gpu_linear::{Layout, MAX_BATCH, normalise};
use super::model::Model;
use super::plain_bytes;
use super::spec::Spec;
use crate::backend::cuda::launch::{self, Dev, DevBounds};
use crate::backend::cuda::runtime::{DeviceAlloc, DeviceScope, Stream, copy_to_device};
use crate::error::{Result, VramError};

/// Bounds of `batch` boxes (`inp`: lower and upper, `batch × input size` f32 each) of a
/// CUDA-backed dense chain, or of `spec`'s rows, into `out` (`batch × output size` or
/// `spec.rows` f32 each): IBP's, narrowed by the linear bounds of each row and its negation
/// (with [`Linear::Both`], the better of the two relaxations'). Queued on `stream` (or this
/// thread's own) and waited for.
///
/// # Safety
/// The four pointers must be device memory of the model's GPU holding those many values,
/// alive and not used by other work until the call returns (`out` may be `inp`'s buffers).
pub unsafe fn bound(
    model: &Model,
    batch: usize,
    inp: [*const f32; 2],
    out: [*mut f32; 2],
    spec: Option<&Spec>,
    method: Linear,
    stream: Option<*mut c_void>,
) -> Result<()> {
    let dev = device(model)?;
    let _scope = DeviceScope::enter(dev)?;
    let stream = stream_for(stream, dev)?;
    // SAFETY: this function's contract, passed on.
    let done = unsafe { queue(model, batch, inp, out, spec, method, &stream) };
    if done.is_err() {
        // Nothing queued may still read the caller's buffers once this call returns.
        let _ = stream.sync(); // the error says what went wrong
    }
    done
}

/// [`bound`]'s work on `stream`, waited for when it succeeds.
///
/// # Safety
/// As [`bound`].
unsafe fn queue(
    model: &Model,
    batch: usize,
    inp: [*const f32; 2],
    out: [*mut f32; 2],
    spec: Option<&Spec>,
    method: Linear,
    stream: &Stream,
) -> Result<()> {
    let chain = model.chain()?;
    let n_x = model.input_size();
    let n_out = chain.n_out();
    let (rows, lam, d) = model.signed_rows(spec)?;
    let too_large = || VramError::invalid("batch", "batch × sizes overflow");
    let n_in_all = batch.checked_mul(n_x).ok_or_else(too_large)?;
    let n_res = batch.checked_mul(rows).ok_or_else(too_large)?;
    let by = |n: usize, size: usize| n.checked_mul(size).ok_or_else(too_large);
    if batch == 0 {
        return Err(VramError::invalid("batch", "must be at least 1"));
    }
    let plan = plan(model)?;
    let prefix = plan.crown_prefix();
    let table = plan.crown()?;
    let n_rows32 = u32_of(2 * rows as u64, "rows")?;

    // Everything is allocated before anything runs: the whole batch's interval bounds, boxes
    // in f64 (and their normalised copies) and linear bounds, the call's constants, and one
    // chunk's output bounds (reused: the stream orders the chunks). Every input is read into
    // the scratch before the one kernel that writes the outputs, so the outputs may be the
    // inputs' own buffers.
    let chunk = batch.min(MAX_BATCH);
    let spare_len = if prefix.is_empty() { 0 } else { n_in_all };
    let mut ws = Layout { total: 0 };
    let at_ibp_lo = ws.take(by(n_res, 4)?)?;
    let at_ibp_hi = ws.take(by(n_res, 4)?)?;
    let at_colmax = ws.take(table.colmax_len() * 8)?;
    let at_rows = ws.take(lam.len() * 8)?;
    let at_d = ws.take(d.len() * 8)?;
    let at_flag = ws.take(8)?;
    let at_lo = ws.take(by(n_in_all, 8)?)?;
    let at_hi = ws.take(by(n_in_all, 8)?)?;
    let at_zlo = ws.take(by(spare_len, 8)?)?;
    let at_zhi = ws.take(by(spare_len, 8)?)?;
    let at_lower = ws.take(by(n_res, 16)?)?;
    let both = method.passes().len() > 1;
    let at_lower2 = ws.take(if both { by(n_res, 16)? } else { 0 })?;
    let at_olo = ws.take(chunk * n_out * 8)?;
    let at_ohi = ws.take(chunk * n_out * 8)?;
    let mem = DeviceAlloc::scratch(ws.total, stream, "linear bounds (device boxes)")?;
    let ibp_lo = mem.view::<f32>(at_ibp_lo, n_res)?;
    let ibp_hi = mem.view::<f32>(at_ibp_hi, n_res)?;
    let colmax = mem.view::<f64>(at_colmax, table.colmax_len())?;
    let rows_dev = mem.view::<f64>(at_rows, lam.len())?;
    let d_dev = mem.view::<f64>(at_d, d.len())?;
    let flag = mem.view::<u64>(at_flag, 1)?;
    let raw = DevBounds::new(mem.view(at_lo, n_in_all)?, mem.view(at_hi, n_in_all)?)?;
    let spare = if prefix.is_empty() {
        raw
    } else {
        DevBounds::new(mem.view(at_zlo, n_in_all)?, mem.view(at_zhi, n_in_all)?)?
    };
    let lower = mem.view::<f64>(at_lower, n_res * 2)?;
    let lower2 = if both {
        Some(mem.view::<f64>(at_lower2, n_res * 2)?)
    } else {
        None
    };

    // SAFETY: the caller's buffers hold these many values in device memory of this GPU
    // (this function's contract).
    let (il, ih, ol, oh) = unsafe {
        (
            Dev::from_raw(inp[0].cast_mut(), n_in_all),
            Dev::from_raw(inp[1].cast_mut(), n_in_all),
            Dev::from_raw(out[0], n_res),
            Dev::from_raw(out[1], n_res),
        )
    };
    // The interval bounds, into the scratch; this checks every input (NaN, or lower above
    // upper, fails here) and waits for it.
    // SAFETY: the caller's boxes and views of `mem`, which outlives the call's work.
    unsafe {
        super::gpu::propagate_device(
            model,
            batch,
            inp,
            [ibp_lo.as_ptr(), ibp_hi.as_ptr()],
            spec,
            Some(stream.raw()),
        )
    }?;
    // SAFETY: each destination is a view of `mem` of exactly the copied length; the sources
    // outlive the synchronisation at the end; the table's weights are the model's sealed
    // shards; the conversion reads the caller's boxes into `raw`, and the normalisations go
    // back and forth between `raw` and `spare`, ending in the view the kernel reads.
    let boxes = unsafe {
        copy_to_device(rows_dev.as_ptr().cast(), plain_bytes(&lam), stream)?;
        copy_to_device(d_dev.as_ptr().cast(), plain_bytes(&d), stream)?;
        launch::crown_colmax(table, colmax, stream)?;
        launch::ibp_to_f64(il, ih, raw, flag, stream)?;
        normalise(plan, raw, spare, stream)?
    };
    let mut first = 0;
    while first < batch {
        let b = (batch - first).min(MAX_BATCH);
        let xs = first * n_x..(first + b) * n_x;
        let these = DevBounds::new(
            boxes.lo().part(xs.start, xs.len())?,
            boxes.hi().part(xs.start, xs.len())?,
        )?;
        let outs = DevBounds::new(mem.view(at_olo, b * n_out)?, mem.view(at_ohi, b * n_out)?)?;
        // One launch per relaxation of the method, each into its own lower bounds.
        let targets = [Some(lower), lower2].into_iter().flatten();
        for (&relax, to) in method.passes().iter().zip(targets) {
            // SAFETY: views of `mem` (checked lengths), alive until the synchronisation below.
            unsafe {
                launch::crown_bounds(
                    table,
                    colmax,
                    these,
                    rows_dev,
                    n_rows32,
                    to.part(first * 2 * rows, b * 2 * rows)?,
                    outs,
                    None,
                    None,
                    relax.into(),
                    stream,
                )?;
            }
        }
        first += b;
    }
    // SAFETY: views of `mem` and the caller's outputs (checked lengths), alive until the
    // synchronisation below; every read of the caller's inputs is queued before this.
    unsafe {
        launch::crown_narrow(
            boxes,
            lower,
            lower2,
            d_dev,
            [ibp_lo, ibp_hi],
            [ol, oh],
            stream,
        )
    }?;
    stream.sync()?;
    drop(mem);
    Ok(())
}
