//! Interval bound propagation on the GPU (cuda/ibp.cu): bounds between layers are f64 pairs in
//! device memory, every kernel rounds outward, weights are read from their sealed shards where
//! they live.

use std::ffi::c_void;

use super::f32_bytes;
use super::gpu_stage::{FLAG_BYTES, Stage, stages, with_stage};
use super::graph::{Node, Op};
use super::model::{Model, Request};
use super::spec::Spec;
use crate::backend::Storage;
use crate::backend::cuda::ffi::{self, check};
use crate::backend::cuda::runtime::{
    DeviceAlloc, DeviceScope, Stream, copy_to_device, copy_to_host,
};
use crate::error::{ErrorKind, Result, VramError};
use crate::fallible::{try_vec, try_with_capacity};
use crate::seal::record::Residency;

/// f64 lower and upper bounds of one node for the whole batch: views into the workspace of one
/// propagation (one stream-ordered allocation for all nodes).
#[derive(Clone, Copy)]
struct Bounds {
    lo: *mut f64,
    hi: *mut f64,
}

impl Bounds {
    fn lo(&self) -> *mut f64 {
        self.lo
    }
    fn hi(&self) -> *mut f64 {
        self.hi
    }
}

/// Whether node `k` (linear or conv2d) can apply the ReLU of node `k + 1` in its own epilogue:
/// the ReLU is its only consumer, so nothing else reads the pre-activation bounds.
fn relu_fuses_into(nodes: &[Node], k: usize, upto: usize) -> bool {
    k + 1 < upto
        && matches!(nodes[k].op, Op::Linear { .. } | Op::Conv2d { .. })
        && matches!(nodes[k + 1].op, Op::Relu)
        && nodes[k + 1].input == k
        && !nodes.iter().enumerate().any(|(j, n)| {
            j != k + 1
                && ((j > k && n.input == k) || matches!(n.op, Op::Add { other } if other == k))
        })
}

pub(super) fn device(model: &Model) -> Result<i32> {
    match model.context().residency() {
        Residency::Cuda { device } => Ok(device),
        Residency::Host => Err(VramError::new(
            ErrorKind::Unsupported,
            "model: not on a GPU",
        )),
    }
}

pub(super) fn param_ptr(model: &Model, i: usize) -> Result<*const f32> {
    match model.params().get(i).map(|s| s.storage()) {
        Some(Storage::Cuda(buf)) => Ok(buf.as_ptr().cast()),
        _ => Err(VramError::new(
            ErrorKind::Unsupported,
            "model: a weight is not in GPU memory",
        )),
    }
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

/// The queued propagation: the workspace, each node's bounds in it, and the device flag that
/// holds the first bad input element (all ones when every box is valid).
struct Run<'s> {
    _workspace: DeviceAlloc<'s>,
    values: Vec<Bounds>,
    bad: *const u64,
}

/// Queues nodes `0..upto` on device f32 boxes (nothing is synchronised): their f64 bounds are
/// views into the returned workspace, and every input box is checked on the device.
///
/// # Safety
/// `in_lo` and `in_hi` must each point to `batch × input size` f32 values readable by the
/// device (device or mapped page-locked memory), alive until `stream` is synchronised.
unsafe fn run<'s>(
    model: &Model,
    batch: usize,
    in_lo: *const f32,
    in_hi: *const f32,
    upto: usize,
    stream: &'s Stream,
) -> Result<Run<'s>> {
    let b = u32_of(batch as u64, "batch")?;
    let nodes = model.nodes();
    let fused: Vec<bool> = (0..upto).map(|k| relu_fuses_into(nodes, k, upto)).collect();
    let mma = i32::from(tensor_cores_allowed());
    // Workspace layout: the box-check flag, then each node's lower and upper bounds (a fused
    // ReLU shares the buffer of the linear or conv2d layer before it), each part 256-byte aligned.
    let mut offsets = Vec::with_capacity(upto);
    let mut total: usize = 256;
    for (k, node) in nodes.iter().take(upto).enumerate() {
        if k > 0 && fused[k - 1] {
            offsets.push(offsets[k - 1]);
            continue;
        }
        let n = batch
            .checked_mul(node.size() as usize)
            .ok_or_else(|| VramError::out_of_memory("bounds too large"))?;
        offsets.push((total, n));
        total = total
            .checked_add((2 * n * 8).next_multiple_of(256))
            .ok_or_else(|| VramError::out_of_memory("bounds too large"))?;
    }
    let mem = DeviceAlloc::scratch(total, stream, "IBP workspace")?;
    let base = mem.ptr();
    let values: Vec<Bounds> = offsets
        .iter()
        .map(|&(off, n)| Bounds {
            lo: base.wrapping_add(off).cast(),
            hi: base.wrapping_add(off + 8 * n).cast(),
        })
        .collect();
    let bad: *mut u64 = base.cast();
    let input = values[0];
    let n_in = batch * model.input_size();
    // SAFETY: the caller's boxes hold n_in floats each in device memory (caller's contract);
    // the destination views hold n_in values each inside the workspace; the flag's 8 bytes
    // (which the launcher sets to all ones first) lie at the start of the workspace.
    check(
        unsafe {
            ffi::lvk_ibp_to_f64(
                in_lo,
                in_hi,
                input.lo(),
                input.hi(),
                n_in as u64,
                bad,
                stream.raw(),
            )
        },
        "IBP input conversion",
    )?;
    for (k, node) in nodes.iter().enumerate().take(upto).skip(1) {
        let n = batch * node.size() as usize;
        let out = values[k];
        let x = values
            .get(node.input)
            .ok_or_else(|| VramError::invalid("model", "dangling node input"))?;
        let (xl, xh) = (x.lo().cast_const(), x.hi().cast_const());
        // SAFETY (every launch below): all bound buffers hold batch × node size f64 values as
        // allocated above; weight pointers are the sealed shards' device memory of the sizes
        // the builder checked; everything stays allocated until the stream is synchronised.
        let code = match &node.op {
            Op::Input => 0,
            Op::Normalize {
                min,
                max,
                mean,
                range,
            } => {
                let p: Vec<u8> = [min, max, mean, range]
                    .iter()
                    .flat_map(|v| v.iter().flat_map(|x| x.to_ne_bytes()))
                    .collect();
                let dev = DeviceAlloc::scratch(p.len(), stream, "normalisation")?;
                // SAFETY: the destination holds the source's length (allocated above, or the caller's buffer of that many floats per the function's contract) and outlives the stream's synchronisation.
                unsafe { copy_to_device(dev.ptr(), &p, stream) }?;
                // SAFETY: buffers and weights as in the launch contract at the top of this match.
                let c = unsafe {
                    ffi::lvk_ibp_normalize(
                        dev.ptr().cast(),
                        min.len() as u32,
                        n as u64,
                        xl,
                        xh,
                        out.lo(),
                        out.hi(),
                        stream.raw(),
                    )
                };
                drop(dev); // stream-ordered free, after the kernel
                c
            }
            Op::Linear {
                in_features,
                out_features,
                weight,
                bias,
            } => {
                let w = param_ptr(model, *weight)?;
                let bp = match bias {
                    Some(i) => param_ptr(model, *i)?,
                    None => std::ptr::null(),
                };
                let (fi, fo) = (
                    u32_of(*in_features, "in_features")?,
                    u32_of(*out_features, "out_features")?,
                );
                // SAFETY: buffers and weights as in the launch contract at the top of this match.
                unsafe {
                    ffi::lvk_ibp_linear(
                        w,
                        bp,
                        fi,
                        fo,
                        b,
                        xl,
                        xh,
                        out.lo(),
                        out.hi(),
                        i32::from(fused[k]),
                        mma,
                        stream.raw(),
                    )
                }
            }
            Op::Relu if fused[k - 1] => 0, // applied by the linear layer before it
            Op::Relu | Op::LeakyRelu { .. } | Op::Sigmoid | Op::Tanh | Op::Flatten => {
                let (kind, alpha) = match node.op {
                    Op::Relu => (0, 0.0),
                    Op::LeakyRelu { alpha } => (1, f64::from(alpha)),
                    Op::Sigmoid => (2, 0.0),
                    Op::Tanh => (3, 0.0),
                    _ => (4, 0.0), // flatten: the same values (item-major layout is unchanged)
                };
                // SAFETY: buffers and weights as in the launch contract at the top of this match.
                unsafe {
                    ffi::lvk_ibp_activation(
                        kind,
                        alpha,
                        n as u64,
                        xl,
                        xh,
                        out.lo(),
                        out.hi(),
                        stream.raw(),
                    )
                }
            }
            Op::Add { other } => {
                let y = values
                    .get(*other)
                    .ok_or_else(|| VramError::invalid("model", "dangling add input"))?;
                // SAFETY: buffers and weights as in the launch contract at the top of this match.
                unsafe {
                    ffi::lvk_ibp_add(
                        n as u64,
                        xl,
                        xh,
                        y.lo(),
                        y.hi(),
                        out.lo(),
                        out.hi(),
                        stream.raw(),
                    )
                }
            }
            Op::Conv2d { conv, weight, bias } => {
                let w = param_ptr(model, *weight)?;
                let bp = match bias {
                    Some(i) => param_ptr(model, *i)?,
                    None => std::ptr::null(),
                };
                let ins = &model.nodes()[node.input].shape;
                let dims = [
                    ins[0],
                    ins[1],
                    ins[2],
                    conv.cout,
                    node.shape[1],
                    node.shape[2],
                    conv.kh,
                    conv.kw,
                    conv.stride[0],
                    conv.stride[1],
                    conv.padding[0],
                    conv.padding[1],
                    conv.dilation[0],
                    conv.dilation[1],
                    conv.groups,
                ];
                let shape: Vec<u32> = dims
                    .iter()
                    .map(|&d| u32_of(d, "conv2d shape"))
                    .collect::<Result<_>>()?;
                // SAFETY: buffers and weights as in the launch contract at the top of this match.
                unsafe {
                    ffi::lvk_ibp_conv2d(
                        w,
                        bp,
                        shape.as_ptr(),
                        b,
                        xl,
                        xh,
                        out.lo(),
                        out.hi(),
                        i32::from(fused[k]),
                        mma,
                        stream.raw(),
                    )
                }
            }
            Op::AvgPool2d(p) | Op::MaxPool2d(p) => {
                let ins = &model.nodes()[node.input].shape;
                let dims = [
                    ins[0],
                    ins[1],
                    ins[2],
                    node.shape[1],
                    node.shape[2],
                    p.kernel[0],
                    p.kernel[1],
                    p.stride[0],
                    p.stride[1],
                    p.padding[0],
                    p.padding[1],
                ];
                let shape: Vec<u32> = dims
                    .iter()
                    .map(|&d| u32_of(d, "pool shape"))
                    .collect::<Result<_>>()?;
                let is_max = i32::from(matches!(node.op, Op::MaxPool2d(_)));
                // SAFETY: buffers and weights as in the launch contract at the top of this match.
                unsafe {
                    ffi::lvk_ibp_pool(
                        is_max,
                        shape.as_ptr(),
                        b,
                        xl,
                        xh,
                        out.lo(),
                        out.hi(),
                        stream.raw(),
                    )
                }
            }
            Op::BatchNorm { params, eps } => {
                let p = param_ptr(model, *params)?;
                let channels = u32_of(node.shape[0], "channels")?;
                let per_channel = u32_of(node.size() / node.shape[0].max(1), "batchnorm size")?;
                // SAFETY: buffers and weights as in the launch contract at the top of this match.
                unsafe {
                    ffi::lvk_ibp_batchnorm(
                        p,
                        *eps,
                        channels,
                        per_channel,
                        b,
                        xl,
                        xh,
                        out.lo(),
                        out.hi(),
                        stream.raw(),
                    )
                }
            }
        };
        check(code, &format!("IBP {} kernel", node.kind()))?;
    }
    Ok(Run {
        _workspace: mem,
        values,
        bad: bad.cast_const(),
    })
}

/// Where the caller wants the f32 bounds: in host or in device memory.
#[derive(Clone, Copy)]
struct Out {
    lo: *mut f32,
    hi: *mut f32,
    host: bool,
}

/// Waits for the queued work and fails if an input box was NaN or had lower > upper.
///
/// # Safety
/// `bad` must be the 8-byte device flag of a queued run on `stream`.
unsafe fn inputs_ok(bad: *const u64, stream: &Stream) -> Result<()> {
    let mut first_bad = [0u8; 8];
    // SAFETY: the source holds the destination's length (a node's bounds or a sealed weight of the shapes the builder checked) and outlives the stream's synchronisation.
    unsafe { copy_to_host(&mut first_bad, bad.cast(), stream) }?;
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
///
/// # Safety
/// `values` must be the bounds of a run of `batch` items queued on `stream`, and `out` must
/// hold `batch × spec.rows` writable floats each where it says (host or device memory).
unsafe fn fold_on_host(
    model: &Model,
    batch: usize,
    values: &[Bounds],
    spec: &Spec,
    out: Out,
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
    let x = values
        .get(last.input)
        .ok_or_else(|| VramError::invalid("model", "dangling node input"))?;
    let n_x = host_len(&[batch, fi, 8])?;
    let (mut xl, mut xh) = (
        try_vec(n_x, 0u8, "IBP bounds")?,
        try_vec(n_x, 0u8, "IBP bounds")?,
    );
    // SAFETY: the source holds the destination's length (a node's bounds or a sealed weight of the shapes the builder checked) and outlives the stream's synchronisation.
    unsafe { copy_to_host(&mut xl, x.lo.cast_const().cast(), stream) }?;
    // SAFETY: the source holds the destination's length (a node's bounds or a sealed weight of the shapes the builder checked) and outlives the stream's synchronisation.
    unsafe { copy_to_host(&mut xh, x.hi.cast_const().cast(), stream) }?;
    let mut w = try_vec(host_len(&[fi, fo, 4])?, 0u8, "IBP weights")?;
    // SAFETY: the source holds the destination's length (a node's bounds or a sealed weight of the shapes the builder checked) and outlives the stream's synchronisation.
    unsafe { copy_to_host(&mut w, param_ptr(model, *weight)?.cast(), stream) }?;
    let b = match bias {
        Some(i) => {
            let mut b = try_vec(host_len(&[fo, 4])?, 0u8, "IBP weights")?;
            // SAFETY: the source holds the destination's length (a node's bounds or a sealed weight of the shapes the builder checked) and outlives the stream's synchronisation.
            unsafe { copy_to_host(&mut b, param_ptr(model, *i)?.cast(), stream) }?;
            Some(f32s(&b)?)
        }
        None => None,
    };
    stream.sync()?;
    let (w, xl, xh) = (f32s(&w)?, f64s(&xl)?, f64s(&xh)?);
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
    // SAFETY: `out` holds batch × rows floats (this function's contract).
    unsafe { write_out(&rl, &rh, out, stream) }
}

/// Rounds the final f64 bounds to f32 into `out`, or applies a spec on the host; one
/// synchronisation, and nothing is written when an input box was bad. Small host outputs
/// pass through `stage`, which receives the input check's flag in every case.
///
/// # Safety
/// `run` must have been queued on `stream` for `batch` items, and `out` must hold the output
/// (or spec) bounds' count of writable floats each where it says (host or device memory).
unsafe fn finish(
    model: &Model,
    batch: usize,
    run: &Run<'_>,
    spec: Option<&Spec>,
    out: Out,
    stream: &Stream,
    stage: &Stage<'_>,
) -> Result<()> {
    let (values, bad) = (&run.values[..], run.bad);
    let n = batch * model.output_size();
    if spec.is_some() {
        // SAFETY: `bad` is the flag of `run`, queued on `stream` (this function's contract).
        unsafe { inputs_ok(bad, stream) }?;
    }
    if let (Some(s), true) = (spec, values.len() < model.nodes().len()) {
        // SAFETY: this function's contract covers `run` and `out`.
        return unsafe { fold_on_host(model, batch, values, s, out, stream) };
    }
    let last = values
        .last()
        .ok_or_else(|| VramError::invalid("model", "no nodes"))?;
    if let Some(s) = spec {
        // No final linear layer to fold into: C is applied to the output box (sound).
        let mut lo = try_vec(host_len(&[n, 8])?, 0u8, "IBP bounds")?;
        let mut hi = try_vec(host_len(&[n, 8])?, 0u8, "IBP bounds")?;
        // SAFETY: the source holds the destination's length (a node's bounds or a sealed weight of the shapes the builder checked) and outlives the stream's synchronisation.
        unsafe { copy_to_host(&mut lo, last.lo.cast_const().cast(), stream) }?;
        // SAFETY: the source holds the destination's length (a node's bounds or a sealed weight of the shapes the builder checked) and outlives the stream's synchronisation.
        unsafe { copy_to_host(&mut hi, last.hi.cast_const().cast(), stream) }?;
        stream.sync()?;
        let (lo, hi) = (f64s(&lo)?, f64s(&hi)?);
        let m = s.rows;
        let out_n = model.output_size();
        let mut rl = try_vec(host_len(&[batch, m])?, 0f32, "IBP bounds")?;
        let mut rh = try_vec(host_len(&[batch, m])?, 0f32, "IBP bounds")?;
        for b in 0..batch {
            for k in 0..m {
                let mut acc = super::round::SoundAcc::default();
                for i in 0..out_n {
                    acc.term(
                        f64::from(s.c[k * out_n + i]),
                        lo[b * out_n + i],
                        hi[b * out_n + i],
                    );
                }
                acc.constant(f64::from(s.d.get(k).copied().unwrap_or(0.0)));
                let (l, h) = acc.finish();
                rl[b * m + k] = l;
                rh[b * m + k] = h;
            }
        }
        // SAFETY: `out` holds batch × rows floats (this function's contract).
        return unsafe { write_out(&rl, &rh, out, stream) };
    }
    // Host outputs: written by the kernel into the staging memory when small, else into
    // device scratch and copied.
    let staged = if out.host && stages(8 * n) {
        Some((stage.floats(0, n)?, stage.floats(n, n)?))
    } else {
        None
    };
    let scratch = if out.host && staged.is_none() {
        Some(DeviceAlloc::scratch(n * 8, stream, "IBP outputs")?)
    } else {
        None
    };
    let (dst_lo, dst_hi) = match (&staged, &scratch) {
        (Some((lo, hi)), _) => (*lo, *hi),
        (None, Some(scratch)) => {
            let lo: *mut f32 = scratch.ptr().cast();
            (lo, lo.wrapping_add(n))
        }
        (None, None) => (out.lo, out.hi),
    };
    // SAFETY: n values in each source and destination (the caller's device buffers, the
    // staging memory or the scratch above); the kernel writes nothing unless the input flag
    // is clear, and copies the flag into the staging memory.
    check(
        unsafe {
            ffi::lvk_ibp_to_f32(
                last.lo(),
                last.hi(),
                dst_lo,
                dst_hi,
                n as u64,
                bad,
                stage.flag(),
                stream.raw(),
            )
        },
        "IBP output conversion",
    )?;
    if let Some(scratch) = &scratch {
        // SAFETY: `out` are the caller's host buffers of n floats (checked by the caller).
        let (ol, oh) = unsafe {
            (
                std::slice::from_raw_parts_mut(out.lo.cast::<u8>(), n * 4),
                std::slice::from_raw_parts_mut(out.hi.cast::<u8>(), n * 4),
            )
        };
        // SAFETY: the source holds the destination's length (a node's bounds or a sealed weight of the shapes the builder checked) and outlives the stream's synchronisation.
        unsafe { copy_to_host(ol, scratch.ptr(), stream) }?;
        // SAFETY: the source holds the destination's length (a node's bounds or a sealed weight of the shapes the builder checked) and outlives the stream's synchronisation.
        unsafe { copy_to_host(oh, scratch.ptr().wrapping_add(n * 4), stream) }?;
    }
    stream.sync()?;
    first_bad_ok(stage.read_flag())?;
    if let Some((lo, hi)) = staged {
        // SAFETY: n floats each, written by the kernel that the synchronisation above waited
        // for, copied into the caller's host buffers of n floats (checked by the caller).
        unsafe {
            std::ptr::copy_nonoverlapping(lo.cast_const(), out.lo, n);
            std::ptr::copy_nonoverlapping(hi.cast_const(), out.hi, n);
        }
    }
    Ok(())
}

/// Writes host-computed bounds to `out`.
///
/// # Safety
/// `out` must hold `lo.len()` writable floats each where it says (host or device memory).
unsafe fn write_out(lo: &[f32], hi: &[f32], out: Out, stream: &Stream) -> Result<()> {
    if out.host {
        // SAFETY: `out` are the caller's host buffers of lo.len() floats.
        unsafe {
            std::ptr::copy_nonoverlapping(lo.as_ptr(), out.lo, lo.len());
            std::ptr::copy_nonoverlapping(hi.as_ptr(), out.hi, hi.len());
        }
        Ok(())
    } else {
        // SAFETY: the destination holds the source's length (allocated above, or the caller's buffer of that many floats per the function's contract) and outlives the stream's synchronisation.
        unsafe { copy_to_device(out.lo.cast(), f32_bytes(lo), stream) }?;
        // SAFETY: the destination holds the source's length (allocated above, or the caller's buffer of that many floats per the function's contract) and outlives the stream's synchronisation.
        unsafe { copy_to_device(out.hi.cast(), f32_bytes(hi), stream) }?;
        stream.sync()
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
    let (in_bytes, out_bytes) = (n_in.saturating_mul(8), out_lo.len().saturating_mul(8));
    let small_in = stages(in_bytes);
    // Inputs and outputs share the staging memory: the kernels that read the inputs come
    // first on the stream.
    let staged = [in_bytes, out_bytes]
        .into_iter()
        .filter(|&b| stages(b))
        .max();
    with_stage(FLAG_BYTES + staged.unwrap_or(0), &stream, |stage| {
        let (dl, dh);
        let (il, ih): (*const f32, *const f32) = if small_in {
            let (l, h) = (stage.floats(0, n_in)?, stage.floats(n_in, n_in)?);
            // SAFETY: n_in floats each, inside the staging memory (checked by `floats`),
            // which no queued work uses: every call on this thread ends synchronised.
            unsafe {
                std::ptr::copy_nonoverlapping(req.in_lo.as_ptr(), l, n_in);
                std::ptr::copy_nonoverlapping(req.in_hi.as_ptr(), h, n_in);
            }
            (l, h)
        } else {
            dl = DeviceAlloc::scratch(n_in * 4, &stream, "IBP inputs")?;
            dh = DeviceAlloc::scratch(n_in * 4, &stream, "IBP inputs")?;
            // SAFETY: the destination holds the source's length (allocated above, or the caller's buffer of that many floats per the function's contract) and outlives the stream's synchronisation.
            unsafe { copy_to_device(dl.ptr(), f32_bytes(req.in_lo), &stream) }?;
            // SAFETY: the destination holds the source's length (allocated above, or the caller's buffer of that many floats per the function's contract) and outlives the stream's synchronisation.
            unsafe { copy_to_device(dh.ptr(), f32_bytes(req.in_hi), &stream) }?;
            (dl.ptr().cast(), dh.ptr().cast())
        };
        let upto = nodes_to_run(model, req.spec);
        // SAFETY: `il`/`ih` hold n_in floats each in the staging memory or device scratch
        // above, alive until the call's synchronisation.
        let run = unsafe { run(model, req.batch, il, ih, upto, &stream) }?;
        let out = Out {
            lo: out_lo.as_mut_ptr(),
            hi: out_hi.as_mut_ptr(),
            host: true,
        };
        // SAFETY: `out` are the caller's host slices of the output count.
        unsafe { finish(model, req.batch, &run, req.spec, out, &stream, stage) }
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
    with_stage(FLAG_BYTES, &stream, |stage| {
        // SAFETY: the caller's device boxes (this function's contract).
        let run = unsafe {
            run(
                model,
                batch,
                inp[0],
                inp[1],
                nodes_to_run(model, spec),
                &stream,
            )
        }?;
        let out = Out {
            lo: out[0],
            hi: out[1],
            host: false,
        };
        // SAFETY: the caller's device outputs (this function's contract).
        unsafe { finish(model, batch, &run, spec, out, &stream, stage) }
    })
}
