//! Interval bound propagation on the GPU (cuda/ibp.cu): bounds between layers are f64 pairs in
//! device memory, every kernel rounds outward, weights are read from their sealed shards where
//! they live.

use std::ffi::c_void;

use super::f32_bytes;
use super::gpu_plan::{GpuPlan, Step, param, weights};
use super::gpu_stage::{FLAG_BYTES, Stage, stages, with_stage};
use super::graph::Op;
use super::model::{Model, Request};
use super::spec::Spec;
use crate::backend::cuda::launch::{self, Dev, DevBounds};
use crate::backend::cuda::runtime::{
    DeviceAlloc, DeviceScope, Stream, copy_to_device, copy_to_host,
};
use crate::error::{ErrorKind, Result, VramError};
use crate::fallible::{try_vec, try_with_capacity};
use crate::seal::record::Residency;

pub(super) fn device(model: &Model) -> Result<i32> {
    match model.context().residency() {
        Residency::Cuda { device } => Ok(device),
        Residency::Host => Err(VramError::new(
            ErrorKind::Unsupported,
            "model: not on a GPU",
        )),
    }
}

/// The model's device plan (made when the model was built).
pub(super) fn plan(model: &Model) -> Result<&GpuPlan> {
    model.gpu_plan().ok_or_else(|| {
        VramError::new(
            ErrorKind::Unsupported,
            "model: not on a GPU (no device plan)",
        )
    })
}

pub(super) fn u32_of(n: u64, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| VramError::invalid(what, "is too large for the GPU kernels"))
}

/// Whether linear layers of large batches and convolutions may run on FP64 tensor cores (the
/// kernels use them on compute capability 9.0 and newer). `VRAM_IBP_TENSOR_CORES=0` keeps
/// every layer on the directed-rounding SIMT kernels: how the tests cover those on Hopper.
fn tensor_cores_allowed() -> bool {
    std::env::var_os("VRAM_IBP_TENSOR_CORES").is_none_or(|v| v != "0")
}

pub(super) fn stream_for(stream: Option<*mut c_void>, device: i32) -> Result<Stream> {
    match stream {
        // SAFETY: the caller's stream of the model's GPU (ibp_propagate_options' contract).
        Some(s) if !s.is_null() => Ok(unsafe { Stream::borrowed(s) }),
        _ => Stream::of_this_thread(device),
    }
}

/// The queued propagation: one workspace holding the box-check flag (the first bad input
/// element, all ones when every box is valid) and every node's bounds, laid out by the plan.
struct Run<'s> {
    workspace: DeviceAlloc<'s>,
    /// Per node run: byte offset of its lower bounds and their count (the upper ones follow).
    at: Vec<(usize, usize)>,
}

impl Run<'_> {
    /// Node `k`'s bounds for the whole batch.
    fn bounds(&self, k: usize) -> Result<DevBounds<'_>> {
        let &(at, n) = self
            .at
            .get(k)
            .ok_or_else(|| VramError::invalid("model", "a node's input is not run before it"))?;
        DevBounds::new(
            self.workspace.view(at, n)?,
            self.workspace.view(at + 8 * n, n)?,
        )
    }

    fn flag(&self) -> Result<Dev<'_, u64>> {
        self.workspace.view(0, 1)
    }

    fn last(&self) -> Result<DevBounds<'_>> {
        self.bounds(self.at.len().wrapping_sub(1))
    }

    /// Whether every node of the model ran (none was left for the host to fold a spec into).
    fn ran_all(&self, model: &Model) -> bool {
        self.at.len() == model.nodes().len()
    }
}

fn too_large() -> VramError {
    VramError::out_of_memory("bounds too large")
}

/// Queues nodes `0..upto` on f32 boxes in device-readable memory (nothing is synchronised):
/// their f64 bounds live in the returned workspace, and every input box is checked on the
/// device.
///
/// # Safety
/// `in_lo` and `in_hi` (`batch × input size` values each) must stay allocated, and unchanged,
/// until `stream` is synchronised.
unsafe fn run<'s>(
    model: &Model,
    batch: usize,
    in_lo: Dev<'_, f32>,
    in_hi: Dev<'_, f32>,
    upto: usize,
    stream: &'s Stream,
) -> Result<Run<'s>> {
    let plan = plan(model)?;
    let b = u32_of(batch as u64, "batch")?;
    let tensor_cores = tensor_cores_allowed();
    let parts = upto
        .checked_sub(1)
        .and_then(|k| plan.part_of(k))
        .ok_or_else(|| VramError::invalid("model", "no nodes"))?
        + 1;
    // Workspace layout: the flag, then each part's lower and upper bounds, 256-byte aligned.
    let mut part_at = Vec::with_capacity(parts);
    let mut total: usize = 256;
    for &size in plan.part_sizes().iter().take(parts) {
        let n = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_mul(batch))
            .ok_or_else(too_large)?;
        part_at.push((total, n));
        total = n
            .checked_mul(16)
            .and_then(|b| b.checked_next_multiple_of(256))
            .and_then(|b| total.checked_add(b))
            .ok_or_else(too_large)?;
    }
    let at = (0..upto)
        .map(|k| plan.part_of(k).and_then(|p| part_at.get(p).copied()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| VramError::invalid("model", "a node without a workspace part"))?;
    let run = Run {
        workspace: DeviceAlloc::scratch(total, stream, "IBP workspace")?,
        at,
    };
    // SAFETY: the caller's boxes (this function's contract); the bounds and the flag are views
    // of the workspace, which is freed on this stream after everything queued here.
    unsafe { launch::ibp_to_f64(in_lo, in_hi, run.bounds(0)?, run.flag()?, stream) }?;
    for (k, (step, node)) in plan
        .steps()
        .iter()
        .zip(model.nodes())
        .enumerate()
        .take(upto)
        .skip(1)
    {
        let (x, out) = (run.bounds(node.input)?, run.bounds(k)?);
        // SAFETY (every launch below): the bounds are views of the workspace (a node's output
        // part is never one of its inputs'), the weights views of the model's sealed shards
        // and the constants of its plan, all alive until the stream is synchronised.
        match step {
            Step::Input | Step::FusedRelu => {}
            Step::Normalize { at, features } => {
                let consts = plan.consts(*at, 4 * *features as usize)?;
                // SAFETY: as above.
                unsafe { launch::ibp_normalize(consts, *features, x, out, stream) }?;
            }
            Step::Linear {
                weight,
                bias,
                in_f,
                out_f,
                relu,
            } => {
                let p = weights(model, *weight, *bias)?;
                // SAFETY: as above.
                unsafe {
                    launch::ibp_linear(p, *in_f, *out_f, b, x, out, *relu, tensor_cores, stream)
                }?;
            }
            // SAFETY: as above.
            Step::Activation(act) => unsafe { launch::ibp_activation(*act, x, out, stream) }?,
            Step::Add { other } => {
                let y = run.bounds(*other)?;
                // SAFETY: as above.
                unsafe { launch::ibp_add(x, y, out, stream) }?;
            }
            Step::Conv {
                weight,
                bias,
                shape,
                relu,
            } => {
                let p = weights(model, *weight, *bias)?;
                // SAFETY: as above.
                unsafe { launch::ibp_conv2d(p, shape, b, x, out, *relu, tensor_cores, stream) }?;
            }
            Step::Pool { is_max, shape } => {
                // SAFETY: as above.
                unsafe { launch::ibp_pool(*is_max, shape, b, x, out, stream) }?;
            }
            Step::BatchNorm {
                params,
                eps,
                channels,
                per_channel,
            } => {
                let p = param(model, *params)?;
                // SAFETY: as above.
                unsafe {
                    launch::ibp_batchnorm(p, *eps, *channels, *per_channel, b, x, out, stream)
                }?;
            }
        }
    }
    Ok(run)
}

/// Where the caller wants the f32 bounds.
enum Out<'a> {
    Host(&'a mut [f32], &'a mut [f32]),
    Device(Dev<'a, f32>, Dev<'a, f32>),
}

/// Waits for the queued work and fails if an input box was NaN or had lower > upper.
fn inputs_ok(run: &Run<'_>, stream: &Stream) -> Result<()> {
    let mut first_bad = [0u8; 8];
    let flag = run.flag()?;
    // SAFETY: the flag's 8 bytes lie in the run's workspace, alive until after the
    // synchronisation below.
    unsafe { copy_to_host(&mut first_bad, flag.as_ptr().cast(), stream) }?;
    stream.sync()?;
    first_bad_ok(u64::from_ne_bytes(first_bad))
}

/// The input check's verdict: the flag holds the first bad element, all ones if none.
fn first_bad_ok(first_bad: u64) -> Result<()> {
    if first_bad != u64::MAX {
        return Err(VramError::invalid(
            "in_lower/in_upper",
            format!("element {first_bad} is NaN or has lower > upper"),
        ));
    }
    Ok(())
}

/// The nodes to run on the device: all of them, or all but a final linear layer that a spec
/// is folded into on the host.
fn nodes_to_run(model: &Model, spec: Option<&Spec>) -> usize {
    let n = model.nodes().len();
    match (spec, model.nodes().last().map(|l| &l.op)) {
        (Some(_), Some(Op::Linear { .. })) => n - 1,
        _ => n,
    }
}

/// The product of `dims` as a host buffer length; `OutOfMemory` when it overflows.
fn host_len(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| VramError::out_of_memory("IBP host buffer: size overflows"))
}

/// Queues a copy of `view` to the host; the bytes are there once `stream` is synchronised.
fn fetch<T: super::Plain>(view: Dev<'_, T>, stream: &Stream) -> Result<Vec<u8>> {
    let mut bytes = try_vec(host_len(&[view.len(), size_of::<T>()])?, 0u8, "IBP bounds")?;
    // SAFETY: the view holds exactly the destination's length and borrows memory alive until
    // the caller's synchronisation; a copy to pageable memory has landed when this returns.
    unsafe { copy_to_host(&mut bytes, view.as_ptr().cast_const().cast(), stream) }?;
    Ok(bytes)
}

fn f64s(bytes: &[u8]) -> Result<Vec<f64>> {
    let mut v = try_with_capacity(bytes.len() / 8, "IBP bounds")?;
    v.extend(
        bytes
            .chunks_exact(8)
            .map(|c| f64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
    );
    Ok(v)
}

fn f32s(bytes: &[u8]) -> Result<Vec<f32>> {
    let mut v = try_with_capacity(bytes.len() / 4, "IBP weights")?;
    v.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(v)
}

/// Bounds on C·y + d with C folded into the final linear layer, whose input box, weight and
/// bias are fetched from the device and combined on the host (cpu::fold_spec_linear).
fn fold_on_host(
    model: &Model,
    batch: usize,
    run: &Run<'_>,
    spec: &Spec,
    out: Out<'_>,
    stream: &Stream,
) -> Result<()> {
    let last = model
        .nodes()
        .last()
        .ok_or_else(|| VramError::invalid("model", "no nodes"))?;
    let Op::Linear {
        in_features,
        out_features,
        weight,
        bias,
    } = &last.op
    else {
        return Err(VramError::invalid(
            "model",
            "fold needs a final linear layer",
        ));
    };
    let (fi, fo) = (*in_features as usize, *out_features as usize);
    let x = run.bounds(last.input)?;
    let (xl, xh) = (fetch(x.lo(), stream)?, fetch(x.hi(), stream)?);
    let w = fetch(
        param(model, *weight)?.part(0, host_len(&[fi, fo])?)?,
        stream,
    )?;
    let b = match bias {
        Some(i) => Some(fetch(param(model, *i)?.part(0, fo)?, stream)?),
        None => None,
    };
    stream.sync()?;
    let b = b.as_deref().map(f32s).transpose()?;
    let (w, xl, xh) = (f32s(&w)?, f64s(&xl)?, f64s(&xh)?);
    if xl.len() != batch * fi {
        return Err(VramError::invalid(
            "model",
            "the last layer's input does not match",
        ));
    }
    let n_r = host_len(&[batch, spec.rows])?;
    let (mut rl, mut rh) = (
        try_vec(n_r, 0f32, "IBP bounds")?,
        try_vec(n_r, 0f32, "IBP bounds")?,
    );
    super::cpu::fold_spec_linear(
        spec,
        &w,
        b.as_deref(),
        fi,
        fo,
        &xl,
        &xh,
        batch,
        &mut rl,
        &mut rh,
    )?;
    write_out(&rl, &rh, out, stream)
}

/// C·y + d applied to the output box on the host (no final linear layer to fold into: sound).
fn spec_on_output(
    model: &Model,
    batch: usize,
    run: &Run<'_>,
    s: &Spec,
    out: Out<'_>,
    stream: &Stream,
) -> Result<()> {
    let last = run.last()?;
    let (lo, hi) = (fetch(last.lo(), stream)?, fetch(last.hi(), stream)?);
    stream.sync()?;
    let (lo, hi) = (f64s(&lo)?, f64s(&hi)?);
    let (m, out_n) = (s.rows, model.output_size());
    if lo.len() != batch * out_n {
        return Err(VramError::invalid("model", "the output does not match"));
    }
    let mut rl = try_vec(host_len(&[batch, m])?, 0f32, "IBP bounds")?;
    let mut rh = try_vec(host_len(&[batch, m])?, 0f32, "IBP bounds")?;
    for ((l, h), ((rl, rh), _)) in lo
        .chunks(out_n.max(1))
        .zip(hi.chunks(out_n.max(1)))
        .zip(rl.chunks_mut(m).zip(rh.chunks_mut(m)).zip(0..batch))
    {
        for (k, (rl, rh)) in rl.iter_mut().zip(rh.iter_mut()).enumerate() {
            let mut acc = super::round::SoundAcc::default();
            for (i, (&xl, &xh)) in l.iter().zip(h).enumerate() {
                acc.term(f64::from(s.c[k * out_n + i]), xl, xh);
            }
            acc.constant(f64::from(s.d.get(k).copied().unwrap_or(0.0)));
            (*rl, *rh) = acc.finish();
        }
    }
    write_out(&rl, &rh, out, stream)
}

/// Rounds the final f64 bounds to f32 into `out`, or applies a spec on the host; one
/// synchronisation, and nothing is written when an input box was bad. Small host outputs
/// pass through `stage`, which receives the input check's flag in every case.
fn finish(
    model: &Model,
    batch: usize,
    run: &Run<'_>,
    spec: Option<&Spec>,
    out: Out<'_>,
    stream: &Stream,
    stage: &Stage<'_>,
) -> Result<()> {
    if let Some(s) = spec {
        inputs_ok(run, stream)?;
        return if run.ran_all(model) {
            spec_on_output(model, batch, run, s, out, stream)
        } else {
            fold_on_host(model, batch, run, s, out, stream)
        };
    }
    let last = run.last()?;
    let n = last.len();
    if let Out::Host(lo, hi) = &out {
        if lo.len() != n || hi.len() != n {
            return Err(VramError::invalid("out_lower/out_upper", "wrong length"));
        }
    }
    // Host outputs: written by the kernel into the staging memory when small, else into
    // device scratch and copied.
    let scratch;
    let (dst_lo, dst_hi) = match &out {
        Out::Device(lo, hi) => (*lo, *hi),
        Out::Host(..) if stages(8 * n) => (stage.floats(0, n)?, stage.floats(n, n)?),
        Out::Host(..) => {
            scratch = DeviceAlloc::scratch(n * 8, stream, "IBP outputs")?;
            (scratch.view(0, n)?, scratch.view(4 * n, n)?)
        }
    };
    // SAFETY: the final bounds are views of the run's workspace, the destinations the
    // caller's device buffers (checked to hold n values) or views of the staging memory or
    // the scratch above; all alive until the synchronisation below. The kernel writes nothing
    // unless the input flag is clear, and copies the flag into the staging memory.
    unsafe {
        launch::ibp_to_f32(
            last,
            dst_lo,
            dst_hi,
            run.flag()?,
            Some(stage.flag()?),
            stream,
        )
    }?;
    if let Out::Host(lo, hi) = out {
        let staged = stages(8 * n);
        if !staged {
            // SAFETY: the sources hold n floats each (views of the scratch above), alive until
            // the synchronisation below; the destinations are the caller's slices.
            unsafe {
                copy_to_host(
                    f32_bytes_mut(lo),
                    dst_lo.as_ptr().cast_const().cast(),
                    stream,
                )?;
                copy_to_host(
                    f32_bytes_mut(hi),
                    dst_hi.as_ptr().cast_const().cast(),
                    stream,
                )?;
            }
        }
        stream.sync()?;
        first_bad_ok(stage.read_flag())?;
        if staged {
            // SAFETY: n floats each in the staging memory, written by the kernel that the
            // synchronisation above waited for; the destinations are the caller's slices.
            unsafe {
                std::ptr::copy_nonoverlapping(dst_lo.as_ptr().cast_const(), lo.as_mut_ptr(), n);
                std::ptr::copy_nonoverlapping(dst_hi.as_ptr().cast_const(), hi.as_mut_ptr(), n);
            }
        }
        return Ok(());
    }
    stream.sync()?;
    first_bad_ok(stage.read_flag())
}

fn f32_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    super::plain_bytes_mut(v)
}

/// Writes host-computed bounds to `out`.
fn write_out(lo: &[f32], hi: &[f32], out: Out<'_>, stream: &Stream) -> Result<()> {
    match out {
        Out::Host(ol, oh) => {
            if ol.len() != lo.len() || oh.len() != hi.len() {
                return Err(VramError::invalid("out_lower/out_upper", "wrong length"));
            }
            ol.copy_from_slice(lo);
            oh.copy_from_slice(hi);
            Ok(())
        }
        Out::Device(ol, oh) => {
            if ol.len() != lo.len() || oh.len() != hi.len() {
                return Err(VramError::invalid("out_lower/out_upper", "wrong length"));
            }
            // SAFETY: the destinations are the caller's device buffers of exactly the sources'
            // lengths; the sources outlive the synchronisation below.
            unsafe {
                copy_to_device(ol.as_ptr().cast(), f32_bytes(lo), stream)?;
                copy_to_device(oh.as_ptr().cast(), f32_bytes(hi), stream)?;
            }
            stream.sync()
        }
    }
}

/// Boxes in host memory: small ones are read and written by the kernels in this thread's
/// page-locked staging memory, larger ones copied through device scratch.
pub fn propagate(
    model: &Model,
    req: &Request<'_>,
    out_lo: &mut [f32],
    out_hi: &mut [f32],
    stream: Option<*mut c_void>,
) -> Result<()> {
    let dev = device(model)?;
    let _scope = DeviceScope::enter(dev)?;
    let stream = stream_for(stream, dev)?;
    let n_in = req.in_lo.len();
    if req.in_hi.len() != n_in {
        return Err(VramError::invalid("in_lower/in_upper", "different lengths"));
    }
    let (in_bytes, out_bytes) = (n_in.saturating_mul(8), out_lo.len().saturating_mul(8));
    let small_in = stages(in_bytes);
    // Inputs and outputs share the staging memory: the kernels that read the inputs come
    // first on the stream.
    let staged = [in_bytes, out_bytes]
        .into_iter()
        .filter(|&b| stages(b))
        .max();
    with_stage(FLAG_BYTES + staged.unwrap_or(0), &stream, |stage| {
        let scratch;
        let (il, ih) = if small_in {
            let (l, h) = (stage.floats(0, n_in)?, stage.floats(n_in, n_in)?);
            // SAFETY: n_in floats each, inside the staging memory (checked by `floats`),
            // which no queued work uses: every call on this thread ends synchronised.
            unsafe {
                std::ptr::copy_nonoverlapping(req.in_lo.as_ptr(), l.as_ptr(), n_in);
                std::ptr::copy_nonoverlapping(req.in_hi.as_ptr(), h.as_ptr(), n_in);
            }
            (l, h)
        } else {
            scratch = DeviceAlloc::scratch(n_in * 8, &stream, "IBP inputs")?;
            let (l, h) = (
                scratch.view::<f32>(0, n_in)?,
                scratch.view::<f32>(4 * n_in, n_in)?,
            );
            // SAFETY: the destinations hold n_in floats each (views of the scratch above); the
            // sources are the caller's slices, which outlive the call's synchronisation.
            unsafe {
                copy_to_device(l.as_ptr().cast(), f32_bytes(req.in_lo), &stream)?;
                copy_to_device(h.as_ptr().cast(), f32_bytes(req.in_hi), &stream)?;
            }
            (l, h)
        };
        let upto = nodes_to_run(model, req.spec);
        // SAFETY: the boxes are views of the staging memory or the scratch above, alive and
        // unchanged until the call's synchronisation.
        let run = unsafe { run(model, req.batch, il, ih, upto, &stream) }?;
        let out = Out::Host(out_lo, out_hi);
        finish(model, req.batch, &run, req.spec, out, &stream, stage)
    })
}

/// Boxes already in device memory.
///
/// # Safety
/// `inp` must point to `batch × input size` f32 values each and `out` to `batch × output (or
/// spec) size` writable f32 values each, in device memory of the model's GPU, alive and not
/// used by other work until the call returns.
pub unsafe fn propagate_device(
    model: &Model,
    batch: usize,
    inp: [*const f32; 2],
    out: [*mut f32; 2],
    spec: Option<&Spec>,
    stream: Option<*mut c_void>,
) -> Result<()> {
    let dev = device(model)?;
    let _scope = DeviceScope::enter(dev)?;
    let stream = stream_for(stream, dev)?;
    let n_in = host_len(&[batch, model.input_size()])?;
    let n_out = host_len(&[batch, spec.map_or(model.output_size(), |s| s.rows)])?;
    // SAFETY: the caller's device buffers of these lengths (this function's contract).
    let (il, ih, ol, oh) = unsafe {
        (
            Dev::from_raw(inp[0].cast_mut(), n_in),
            Dev::from_raw(inp[1].cast_mut(), n_in),
            Dev::from_raw(out[0], n_out),
            Dev::from_raw(out[1], n_out),
        )
    };
    with_stage(FLAG_BYTES, &stream, |stage| {
        // SAFETY: the caller's device boxes (this function's contract).
        let run = unsafe { run(model, batch, il, ih, nodes_to_run(model, spec), &stream) }?;
        finish(
            model,
            batch,
            &run,
            spec,
            Out::Device(ol, oh),
            &stream,
            stage,
        )
    })
}
