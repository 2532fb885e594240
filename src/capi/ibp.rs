//! `ibp_*`: building networks over sealed weights, and certified interval bound propagation.

use std::ffi::{c_char, c_void};

use super::boundary::{
    arg_cstr, arg_mut, arg_path, arg_ref, check_struct_size, guard, guard_value, read_optional,
    read_options,
};
use super::types::{ibp_builder, ibp_model, vram_ctx, vram_status, vram_verify_report};
use crate::error::{ErrorKind, Result, VramError};
use crate::ibp::crown::Linear;
use crate::ibp::graph::{Conv2d, Op, Pool2d};
use crate::ibp::{Builder, Memory, Model, Request, Spec};

/// The previous node, as the `input` argument of every ibp_builder_add_* function.
pub const IBP_PREV: u32 = u32::MAX;

/// Where the boxes passed to ibp_propagate_ex() live (the `memory` option).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ibp_memory {
    /// Host memory (the default).
    IBP_MEMORY_HOST = 0,
    /// Device memory of the model's GPU (CUDA backend only).
    IBP_MEMORY_DEVICE = 1,
}

/// Options for ibp_propagate_ex(). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibp_propagate_options {
    /// Must be `sizeof(ibp_propagate_options)`.
    pub struct_size: u32,
    /// An ::ibp_memory value: where `in_*` and `out_*` live.
    pub memory: u32,
    /// A `cudaStream_t` to run on (CUDA backend; NULL = a non-blocking stream of libvram's own,
    /// one per calling thread and GPU, kept between calls). The call returns when the bounds
    /// are ready.
    pub stream: *mut c_void,
    /// Rows of the specification matrix C; 0 = no specification (bounds on the outputs).
    pub spec_rows: usize,
    /// C, `spec_rows × output_size` floats, row-major, in host memory (required when
    /// `spec_rows > 0`). The call then bounds C·y + d and writes `spec_rows` values per item.
    pub spec_c: *const f32,
    /// d, `spec_rows` floats in host memory; NULL = zeros.
    pub spec_d: *const f32,
    /// ::IBP_PROPAGATE_VERIFY_WEIGHTS or 0. Unknown bits → ::VRAM_ERR_INVALID_ARGUMENT.
    /// (A struct_size from before this field existed is accepted: the field then reads as 0.)
    pub flags: u32,
    /// An ::ibp_method value: how the bounds are computed (0, interval bound propagation, by
    /// default; a struct_size from before this field existed reads as 0).
    pub method: u32,
}

/// How ibp_propagate_ex() computes bounds (the `method` option).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ibp_method {
    /// Interval bound propagation (the default): the fastest, and the loosest.
    IBP_METHOD_INTERVAL = 0,
    /// Linear bounds: a backward linear relaxation (CROWN / DeepPoly family) with the same
    /// soundness standard (docs/soundness.md), intersected with the interval bounds, so never
    /// wider on any box. The ReLU inputs' own bounds (which choose their relaxations) are
    /// linear bounds of the neurons that interval bounds leave unstable, intersected with the
    /// interval bounds: on 16 384 ACAS Xu boxes half as wide on average as textbook CROWN's,
    /// but on 0.14 % of the outputs more than 10⁻⁴ wider (the intersection can change
    /// CROWN's choice of relaxation; ::IBP_METHOD_LINEAR_GUARDED undoes that where it
    /// happens, ::IBP_METHOD_LINEAR_BOTH is never wider than textbook CROWN). Dense layers,
    /// ReLU, LeakyReLU, normalisation, batch norm, flatten and residual adds are relaxed
    /// linearly; other layers by their interval bounds. Runs on the CPU threads (the
    /// context's `max_threads`) for a host-backed model, and on the model's GPU (one block
    /// per box, weights read where they live) for a CUDA-backed model whose graph is a chain
    /// of linear layers with ReLU after input normalisation (any other graph there →
    /// ::VRAM_ERR_UNSUPPORTED naming the node; weights are never copied to the host). Boxes
    /// in host or, on a CUDA-backed model, device memory: device boxes never leave the GPU,
    /// the outputs may be the inputs' own buffers, and the call waits for its work; its
    /// device scratch is what interval bounds of the batch take, plus (4 × input size + 3 ×
    /// rows) × 8 bytes per box, plus 2 × output size × 8 bytes per box for at most 2^15 boxes
    /// at a time. On the GPU an item whose box has an infinite bound gets its interval
    /// bounds.
    IBP_METHOD_LINEAR = 1,
    /// ::IBP_METHOD_LINEAR and textbook CROWN (auto_LiRPA's `method="CROWN"`: every ReLU input
    /// bounded by a backward pass, those bounds alone choosing the relaxations), the larger
    /// lower bound of each row kept: never wider than either (nor than the interval bounds),
    /// at the cost of both (textbook CROWN bounds every neuron, so it costs more than
    /// ::IBP_METHOD_LINEAR). The same models, memory and errors as ::IBP_METHOD_LINEAR; with
    /// boxes in device memory its scratch takes 2 × rows × 8 bytes more per box.
    IBP_METHOD_LINEAR_BOTH = 2,
    /// ::IBP_METHOD_LINEAR, and where its intersection with the interval bounds first changed
    /// a ReLU input's bound, a second pass from that layer with the linear bounds alone (there
    /// of every neuron, past it of those interval bounds leave unstable); each output gets the
    /// better of the two passes, so it is never wider than ::IBP_METHOD_LINEAR. On 16 384
    /// ACAS Xu boxes the second pass ran for a quarter of the boxes and left no output more
    /// than 10⁻⁴ wider than textbook CROWN (0.14 % were, after the first). That is measured,
    /// not guaranteed (::IBP_METHOD_LINEAR_BOTH is never wider than textbook CROWN). About a
    /// fifth more time than ::IBP_METHOD_LINEAR there. The same models, memory and errors as
    /// ::IBP_METHOD_LINEAR; on the GPU its scratch also holds the second pass's records,
    /// (1 + 2 × the layers' summed output sizes + 2 × the widest layer) × 8 bytes per box, for
    /// at most 256 MiB of them at a time.
    IBP_METHOD_LINEAR_GUARDED = 3,
}

/// An ::ibp_propagate_options flag: before propagating, re-hash every sealed weight of the
/// model where it lives (as ibp_model_verify() does, one batched pass) and refuse to compute
/// bounds over weights that are not the sealed ones: ::VRAM_ERR_INTEGRITY (or
/// ::VRAM_ERR_BAD_SEAL), nothing written. Costs one pass over the weights per call.
pub const IBP_PROPAGATE_VERIFY_WEIGHTS: u32 = 1;

// SAFETY: repr(C), struct_size first, all-zero valid (integers and NULL pointers).
unsafe impl super::boundary::OptionsStruct for ibp_propagate_options {
    const EARLIER_SIZES: &'static [usize] = &[
        std::mem::offset_of!(ibp_propagate_options, flags),
        std::mem::offset_of!(ibp_propagate_options, method),
    ];
}

/// Hyper-parameters of ibp_builder_add_conv2d(). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibp_conv2d_params {
    /// Must be `sizeof(ibp_conv2d_params)`.
    pub struct_size: u32,
    pub out_channels: u64,
    pub kernel_h: u64,
    pub kernel_w: u64,
    /// 0 is taken as 1.
    pub stride_h: u64,
    pub stride_w: u64,
    pub pad_h: u64,
    pub pad_w: u64,
    /// 0 is taken as 1.
    pub dilation_h: u64,
    pub dilation_w: u64,
    /// 0 is taken as 1.
    pub groups: u64,
}

/// Hyper-parameters of ibp_builder_add_avgpool2d() / _maxpool2d(). Average pooling divides by
/// the full window (PyTorch's count_include_pad = true); max pooling ignores padding.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibp_pool2d_params {
    /// Must be `sizeof(ibp_pool2d_params)`.
    pub struct_size: u32,
    pub kernel_h: u64,
    pub kernel_w: u64,
    /// 0 = the kernel size.
    pub stride_h: u64,
    pub stride_w: u64,
    /// At most half the kernel.
    pub pad_h: u64,
    pub pad_w: u64,
}

fn floats<'a>(p: *const f32, n: u64, name: &str) -> Result<&'a [f32]> {
    let n = usize::try_from(n).map_err(|_| VramError::invalid(name, "is too large"))?;
    if n == 0 {
        return Err(VramError::invalid(name, "length must be > 0"));
    }
    if p.is_null() {
        return Err(VramError::null(name));
    }
    if n > isize::MAX as usize / 4 {
        return Err(VramError::invalid(name, "is larger than the address space"));
    }
    // SAFETY: caller's contract: `p` points to `n` readable floats for the call.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A copy of `v` made without risking an abort.
fn copied(v: &[f32], what: &str) -> Result<Vec<f32>> {
    let mut out = crate::fallible::try_with_capacity(v.len(), what)?;
    out.extend_from_slice(v);
    Ok(out)
}

fn floats_mut<'a>(p: *mut f32, n: usize, name: &str) -> Result<&'a mut [f32]> {
    if p.is_null() {
        return Err(VramError::null(name));
    }
    if n > isize::MAX as usize / 4 {
        return Err(VramError::invalid(name, "is larger than the address space"));
    }
    // SAFETY: caller's contract: `p` points to `n` writable floats, not aliased, for the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

fn builder<'a>(b: *mut ibp_builder) -> Result<&'a mut Builder> {
    Ok(&mut arg_mut(b, "b")?.inner)
}

fn write_node(node_out: *mut u32, r: Result<u32>) -> Result<()> {
    let idx = r?;
    if let Ok(out) = arg_mut(node_out, "node_out") {
        *out = idx;
    }
    Ok(())
}

/// Starts a network named `name` (a shard-id-safe string; it prefixes the names of the sealed
/// weights, `<name>/<node>/weight`) whose input has `rank` dimensions `input_shape` (batch
/// excluded: `{5}` for ACAS Xu, `{3, 32, 32}` for CIFAR).
///
/// `out` receives a builder owned by the caller: pass it to ibp_builder_build() or free it with
/// ibp_builder_free(). The builder keeps `ctx`'s backend alive. NULL arguments →
/// ::VRAM_ERR_NULL_ARGUMENT; a bad name, rank (1–4) or shape → ::VRAM_ERR_INVALID_ARGUMENT.
/// Thread-safe; the builder itself is for one thread at a time.
///
/// Limits, checked by every ibp_builder_add_* call before anything is sealed (a call that
/// breaks one returns ::VRAM_ERR_INVALID_ARGUMENT naming the parameter, and leaves the builder
/// and vram_ctx_usage() unchanged):
/// - every node (the input included) has 1 to 2^28 elements per batch item;
/// - a network has at most 65536 nodes;
/// - kernel, stride, padding and dilation are each at most 4096 (kernel, stride, dilation ≥ 1);
/// - one node costs at most 2^32 multiply-adds (linear: in × out; conv2d: out elements ×
///   in channels per group × kernel area) or window taps (pooling: out elements × kernel area)
///   per batch item.
///
/// A failed add of any kind leaves the builder and the context's usage as they were: a layer's
/// tensors are sealed only after all its checks pass, and all together or none.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_new(
    ctx: *mut vram_ctx,
    name: *const c_char,
    input_shape: *const u64,
    rank: usize,
    out: *mut *mut ibp_builder,
) -> vram_status {
    guard("ibp_builder_new", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let name = arg_cstr(name, 256, "name")?;
        if input_shape.is_null() {
            return Err(VramError::null("input_shape"));
        }
        if rank == 0 || rank > 4 {
            return Err(VramError::invalid("rank", "must be 1 to 4"));
        }
        // SAFETY: caller's contract: `input_shape` holds `rank` (1..=4) values.
        let shape = unsafe { std::slice::from_raw_parts(input_shape, rank) };
        let out = arg_mut(out, "out")?;
        let inner = Builder::new(std::sync::Arc::clone(&ctx.inner), name, shape)?;
        *out = Box::into_raw(Box::new(ibp_builder { inner }));
        Ok(())
    })
}

/// Appends a fully connected layer `y = W·x + b` fed by node `input` (::IBP_PREV = the previous
/// node; any shape, read flattened) and writes its index to `node_out` (nullable).
///
/// - `weight`: `out_features × in_features` floats, row-major; `bias`: `out_features` floats
///   or NULL. Both are read during the call and sealed into the context; all must be finite.
///
/// Errors: ::VRAM_ERR_NULL_ARGUMENT (`b`, `weight`), ::VRAM_ERR_INVALID_ARGUMENT (unknown
/// input node, non-finite weights, size out of range), ::VRAM_ERR_OUT_OF_MEMORY. On error the
/// builder is unchanged.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_linear(
    b: *mut ibp_builder,
    input: u32,
    out_features: u64,
    weight: *const f32,
    bias: *const f32,
    node_out: *mut u32,
) -> vram_status {
    guard("ibp_builder_add_linear", || {
        let bl = builder(b)?;
        let n = bl.linear_weight_len(input, out_features)?;
        let w = floats(weight, n, "weight")?;
        let bias = if bias.is_null() {
            None
        } else {
            Some(floats(bias, out_features, "bias")?)
        };
        write_node(node_out, bl.add_linear(input, out_features, w, bias))
    })
}

/// Appends a 2-D convolution (NCHW; weight `[out_channels, in_channels / groups, kh, kw]`
/// floats; `bias` `out_channels` floats or NULL) fed by a `[C, H, W]` node. As
/// ibp_builder_add_linear() otherwise.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_conv2d(
    b: *mut ibp_builder,
    input: u32,
    params: *const ibp_conv2d_params,
    weight: *const f32,
    bias: *const f32,
    node_out: *mut u32,
) -> vram_status {
    guard("ibp_builder_add_conv2d", || {
        let bl = builder(b)?;
        let p = arg_ref(params, "params")?;
        check_struct_size(p.struct_size, size_of::<ibp_conv2d_params>(), "params")?;
        let one = |v: u64| v.max(1);
        let conv = Conv2d {
            cin: 0, // taken from the input node
            cout: p.out_channels,
            kh: p.kernel_h,
            kw: p.kernel_w,
            stride: [one(p.stride_h), one(p.stride_w)],
            padding: [p.pad_h, p.pad_w],
            dilation: [one(p.dilation_h), one(p.dilation_w)],
            groups: one(p.groups),
        };
        let n = bl.conv2d_weight_len(input, conv)?;
        let w = floats(weight, n, "weight")?;
        let bias = if bias.is_null() {
            None
        } else {
            Some(floats(bias, p.out_channels, "bias")?)
        };
        write_node(node_out, bl.add_conv2d(input, conv, w, bias))
    })
}

fn elementwise(name: &str, b: *mut ibp_builder, input: u32, op: Op, out: *mut u32) -> vram_status {
    guard(name, || {
        write_node(out, builder(b)?.add_elementwise(input, op))
    })
}

/// Appends ReLU fed by node `input` (::IBP_PREV = the previous node); `node_out` nullable.
/// Errors: ::VRAM_ERR_NULL_ARGUMENT, ::VRAM_ERR_INVALID_ARGUMENT (unknown node).
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_relu(
    b: *mut ibp_builder,
    input: u32,
    node_out: *mut u32,
) -> vram_status {
    elementwise("ibp_builder_add_relu", b, input, Op::Relu, node_out)
}

/// Appends LeakyReLU with slope `alpha` (finite, ≥ 0) for negative inputs. As ibp_builder_add_relu().
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_leaky_relu(
    b: *mut ibp_builder,
    input: u32,
    alpha: f32,
    node_out: *mut u32,
) -> vram_status {
    elementwise(
        "ibp_builder_add_leaky_relu",
        b,
        input,
        Op::LeakyRelu { alpha },
        node_out,
    )
}

/// Appends the logistic sigmoid. As ibp_builder_add_relu().
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_sigmoid(
    b: *mut ibp_builder,
    input: u32,
    node_out: *mut u32,
) -> vram_status {
    elementwise("ibp_builder_add_sigmoid", b, input, Op::Sigmoid, node_out)
}

/// Appends tanh. As ibp_builder_add_relu().
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_tanh(
    b: *mut ibp_builder,
    input: u32,
    node_out: *mut u32,
) -> vram_status {
    elementwise("ibp_builder_add_tanh", b, input, Op::Tanh, node_out)
}

/// Appends a flatten (to one dimension, in C order). As ibp_builder_add_relu().
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_flatten(
    b: *mut ibp_builder,
    input: u32,
    node_out: *mut u32,
) -> vram_status {
    guard("ibp_builder_add_flatten", || {
        write_node(node_out, builder(b)?.add_flatten(input))
    })
}

/// Appends the element-wise sum of nodes `input` and `other` (same shape): a residual
/// connection. As ibp_builder_add_relu().
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_add(
    b: *mut ibp_builder,
    input: u32,
    other: u32,
    node_out: *mut u32,
) -> vram_status {
    guard("ibp_builder_add_add", || {
        write_node(node_out, builder(b)?.add_add(input, other))
    })
}

/// Appends inference-form batch normalisation over the channels (dimension 0 of the input):
/// `(x − mean) / sqrt(var + eps) · gamma + beta`, each array one float per channel (sealed).
/// `eps` must be finite and > 0, `var` ≥ 0. As ibp_builder_add_linear() otherwise.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn ibp_builder_add_batchnorm(
    b: *mut ibp_builder,
    input: u32,
    gamma: *const f32,
    beta: *const f32,
    mean: *const f32,
    var: *const f32,
    eps: f64,
    node_out: *mut u32,
) -> vram_status {
    guard("ibp_builder_add_batchnorm", || {
        let bl = builder(b)?;
        let c = bl.input_shape(input)?.first().copied().unwrap_or(0);
        let (g, bt, m, v) = (
            floats(gamma, c, "gamma")?,
            floats(beta, c, "beta")?,
            floats(mean, c, "mean")?,
            floats(var, c, "var")?,
        );
        write_node(node_out, bl.add_batchnorm(input, g, bt, m, v, eps))
    })
}

fn pool(
    name: &str,
    b: *mut ibp_builder,
    input: u32,
    params: *const ibp_pool2d_params,
    max: bool,
    out: *mut u32,
) -> vram_status {
    guard(name, || {
        let bl = builder(b)?;
        let p = arg_ref(params, "params")?;
        check_struct_size(p.struct_size, size_of::<ibp_pool2d_params>(), "params")?;
        let stride = |s: u64, k: u64| if s == 0 { k } else { s };
        let pool = Pool2d {
            kernel: [p.kernel_h, p.kernel_w],
            stride: [
                stride(p.stride_h, p.kernel_h),
                stride(p.stride_w, p.kernel_w),
            ],
            padding: [p.pad_h, p.pad_w],
        };
        write_node(out, bl.add_pool2d(input, pool, max))
    })
}

/// Appends 2-D average pooling over a `[C, H, W]` node. As ibp_builder_add_relu().
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_avgpool2d(
    b: *mut ibp_builder,
    input: u32,
    params: *const ibp_pool2d_params,
    node_out: *mut u32,
) -> vram_status {
    pool(
        "ibp_builder_add_avgpool2d",
        b,
        input,
        params,
        false,
        node_out,
    )
}

/// Appends 2-D max pooling over a `[C, H, W]` node. As ibp_builder_add_relu().
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_add_maxpool2d(
    b: *mut ibp_builder,
    input: u32,
    params: *const ibp_pool2d_params,
    node_out: *mut u32,
) -> vram_status {
    pool(
        "ibp_builder_add_maxpool2d",
        b,
        input,
        params,
        true,
        node_out,
    )
}

/// Finishes the network. **Consumes `b` in every case** (success or not): do not use or free
/// it afterwards. `out` receives a model owned by the caller (ibp_model_free()).
///
/// Errors: ::VRAM_ERR_NULL_ARGUMENT, ::VRAM_ERR_INVALID_ARGUMENT (no layers),
/// ::VRAM_ERR_UNSUPPORTED (a layer with no GPU kernel yet on a CUDA-backed context).
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_build(b: *mut ibp_builder, out: *mut *mut ibp_model) -> vram_status {
    guard("ibp_builder_build", || {
        if b.is_null() {
            return Err(VramError::null("b"));
        }
        // SAFETY: a non-NULL `b` came from ibp_builder_new() and is consumed here, once.
        let builder = unsafe { Box::from_raw(b) };
        let out = arg_mut(out, "out")?;
        let model = builder.inner.build()?;
        *out = Box::into_raw(Box::new(ibp_model { inner: model }));
        Ok(())
    })
}

/// Frees a builder that was not built, and the weights it sealed. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_builder_free(b: *mut ibp_builder) {
    guard_value("ibp_builder_free", (), || {
        if !b.is_null() {
            // SAFETY: a non-NULL `b` came from ibp_builder_new() and is freed once.
            drop(unsafe { Box::from_raw(b) });
        }
    })
}

/// Loads an NNet file (e.g. the ACAS Xu networks) into a model whose weights are sealed in
/// `ctx`. The model applies the file's input clipping and normalisation, so callers pass
/// physical inputs; its outputs are the network's own, not de-normalised (the VNN-COMP
/// convention).
///
/// The reader is strict: only a regular file (a FIFO or device is refused without blocking) of
/// at most 256 MiB; exactly the values the format puts on each line (one trailing comma
/// allowed; NaN and infinities refused); the header's input, output and max-layer-size counts
/// must agree with the layer sizes; only blank lines after the last bias. Declared sizes are
/// checked against the file's length before anything is allocated, and the builder's limits
/// apply (at most 32767 layers). Shard ids are `<file stem>/<node>/weight|bias`, so one file
/// can be loaded once per context at a time.
///
/// Errors: ::VRAM_ERR_NULL_ARGUMENT; ::VRAM_ERR_INVALID_ARGUMENT for an unreadable or malformed
/// file (the message names the line and quotes at most 32 characters of it);
/// ::VRAM_ERR_OUT_OF_MEMORY. Nothing stays sealed on failure. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_model_from_nnet(
    ctx: *mut vram_ctx,
    path: *const c_char,
    out: *mut *mut ibp_model,
) -> vram_status {
    guard("ibp_model_from_nnet", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let path = arg_path(path, "path")?;
        let out = arg_mut(out, "out")?;
        let model = crate::ibp::nnet::load(
            std::sync::Arc::clone(&ctx.inner),
            std::path::Path::new(path),
        )?;
        *out = Box::into_raw(Box::new(ibp_model { inner: model }));
        Ok(())
    })
}

/// Options for ibp_model_from_onnx(). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibp_onnx_options {
    /// Must be `sizeof(ibp_onnx_options)`.
    pub struct_size: u32,
    /// Reserved: must be 0.
    pub flags: u32,
    /// NULL (the file's stem), or the model's name: the prefix of its shard ids
    /// (`<name>/<node>/weight|bias|params`). Borrowed for the call.
    pub model_name: *const c_char,
}

// SAFETY: repr(C), struct_size first, all-zero valid (integers and a NULL pointer).
unsafe impl super::boundary::OptionsStruct for ibp_onnx_options {}

/// Imports an ONNX network into a model whose weights are sealed in `ctx`, one shard per
/// weight, bias or batch-norm tensor. The model computes the network the file describes, on
/// its own input convention (VNN-COMP's ONNX networks take normalised inputs).
///
/// Read: one graph input (float, batch dimension 1 or symbolic), one graph output, and the
/// operators Gemm, MatMul (a bias Add after it is fused), Conv (2-D), Relu, LeakyRelu, Sigmoid,
/// Tanh, Flatten and Reshape (flattening ones), Add (of two values, or of a constant), Sub and
/// Div by constants (input normalisation), BatchNormalization (inference), AveragePool and
/// MaxPool (2-D), Identity, Dropout and Constant. Weights must be float32 (float64 only where
/// every value is a float32) inside the file. The file is decoded by prost (lengths checked,
/// nesting bounded); only a regular file of at most 2 GiB is read.
///
/// `opts` may be NULL (all defaults). `*out` is written only on success; free it with
/// ibp_model_free().
///
/// Errors: ::VRAM_ERR_NULL_ARGUMENT; ::VRAM_ERR_INVALID_ARGUMENT for an unreadable file, bytes
/// that are not an ONNX model, or a malformed graph (the message says what);
/// ::VRAM_ERR_UNSUPPORTED for an operator, attribute or layout outside the list above (the
/// message names the node, by index and name, and its operator); ::VRAM_ERR_OUT_OF_MEMORY.
/// Nothing stays sealed on failure. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_model_from_onnx(
    ctx: *mut vram_ctx,
    path: *const c_char,
    opts: *const ibp_onnx_options,
    out: *mut *mut ibp_model,
) -> vram_status {
    guard("ibp_model_from_onnx", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let path = arg_path(path, "path")?;
        let opts = read_optional(opts, "opts")?;
        if let Some(f) = opts.map(|o| o.flags).filter(|&f| f != 0) {
            return Err(VramError::invalid(
                "opts->flags",
                format!("{f:#x}: must be 0"),
            ));
        }
        let name = match opts.map(|o| o.model_name).filter(|p| !p.is_null()) {
            None => None,
            Some(p) => Some(
                std::str::from_utf8(arg_cstr(p, 4096, "opts->model_name")?)
                    .map_err(|_| VramError::invalid("opts->model_name", "is not UTF-8"))?
                    .to_string(),
            ),
        };
        let out = arg_mut(out, "out")?;
        let model = crate::ibp::onnx::load(
            std::sync::Arc::clone(&ctx.inner),
            std::path::Path::new(path),
            name.as_deref(),
        )?;
        *out = Box::into_raw(Box::new(ibp_model { inner: model }));
        Ok(())
    })
}

fn propagate(
    model: *const ibp_model,
    batch: usize,
    in_lower: *const f32,
    in_upper: *const f32,
    out_lower: *mut f32,
    out_upper: *mut f32,
    opts: Option<&ibp_propagate_options>,
) -> Result<()> {
    let model: &Model = &arg_ref(model, "model")?.inner;
    if batch == 0 {
        return Err(VramError::invalid("batch", "must be > 0"));
    }
    let flags = opts.map_or(0, |o| o.flags);
    if flags & !IBP_PROPAGATE_VERIFY_WEIGHTS != 0 {
        return Err(VramError::invalid(
            "opts->flags",
            format!("{flags:#x} holds unknown bits"),
        ));
    }
    if flags & IBP_PROPAGATE_VERIFY_WEIGHTS != 0 {
        weights_intact(&model.verify(model.context())?)?;
    }
    let memory = match opts.map_or(0, |o| o.memory) {
        0 => Memory::Host,
        1 => Memory::Device,
        m => {
            return Err(VramError::invalid(
                "opts->memory",
                format!("{m} is not an ibp_memory value"),
            ));
        }
    };
    let spec = match opts {
        Some(o) if o.spec_rows > 0 => {
            let c = floats(
                o.spec_c,
                (o.spec_rows as u64).saturating_mul(model.output_size() as u64),
                "opts->spec_c",
            )?;
            let d = if o.spec_d.is_null() {
                crate::fallible::try_vec(o.spec_rows, 0.0, "opts->spec_d")?
            } else {
                copied(
                    floats(o.spec_d, o.spec_rows as u64, "opts->spec_d")?,
                    "opts->spec_d",
                )?
            };
            let spec = Spec {
                rows: o.spec_rows,
                c: copied(c, "opts->spec_c")?,
                d,
            };
            model.check_spec(&spec)?;
            Some(spec)
        }
        _ => None,
    };
    let linear = match opts.map_or(0, |o| o.method) {
        0 => None,
        1 => Some(Linear::Intersected),
        2 => Some(Linear::Both),
        3 => Some(Linear::Guarded),
        m => {
            return Err(VramError::invalid(
                "opts->method",
                format!("{m} is not an ibp_method value"),
            ));
        }
    };
    let out_per_item = spec.as_ref().map_or(model.output_size(), |s| s.rows);
    model.check_batch(batch, memory == Memory::Host, out_per_item)?;
    let n_in = batch
        .checked_mul(model.input_size())
        .ok_or_else(|| VramError::invalid("batch", "batch × input size overflows"))?;
    let n_out = batch
        .checked_mul(spec.as_ref().map_or(model.output_size(), |s| s.rows))
        .ok_or_else(|| VramError::invalid("batch", "batch × output size overflows"))?;
    if memory == Memory::Device {
        // SAFETY: the export's documented contract: with IBP_MEMORY_DEVICE the four pointers
        // are device buffers of the model's GPU holding n_in and n_out floats.
        return unsafe {
            crate::ibp::gpu_entry::propagate_device(
                model,
                batch,
                [in_lower, in_upper],
                [out_lower, out_upper],
                spec.as_ref(),
                linear,
                opts.map(|o| o.stream),
            )
        };
    }
    let lo = floats(in_lower, n_in as u64, "in_lower")?;
    let hi = floats(in_upper, n_in as u64, "in_upper")?;
    let out_lo = floats_mut(out_lower, n_out, "out_lower")?;
    let out_hi = floats_mut(out_upper, n_out, "out_upper")?;
    Model::check_boxes(lo, hi)?;
    let req = Request {
        batch,
        in_lo: lo,
        in_hi: hi,
        spec: spec.as_ref(),
    };
    // Computed into scratch first: outputs are written only on success.
    let mut tmp_lo = crate::fallible::try_vec(n_out, 0.0f32, "ibp_propagate outputs")?;
    let mut tmp_hi = crate::fallible::try_vec(n_out, 0.0f32, "ibp_propagate outputs")?;
    let stream = opts.map(|o| o.stream);
    match linear {
        Some(method) => crate::ibp::gpu_entry::linear_host_boxes(
            model,
            &req,
            &mut tmp_lo,
            &mut tmp_hi,
            method,
            stream,
        ),
        None => crate::ibp::gpu_entry::propagate_host_boxes(
            model,
            &req,
            &mut tmp_lo,
            &mut tmp_hi,
            stream,
        ),
    }?;
    out_lo.copy_from_slice(&tmp_lo);
    out_hi.copy_from_slice(&tmp_hi);
    Ok(())
}

/// Certified bounds: for each of `batch` input boxes `[in_lower, in_upper]` (`batch × input
/// size` floats each, host memory, item-major) writes intervals `[out_lower, out_upper]`
/// (`batch × output size` floats) that enclose the exact real-number IBP bounds of the network
/// — hence every output for every input in the box — despite float32 rounding.
///
/// Infinite inputs are allowed (bounds stay sound, never NaN). NaN inputs or lower > upper →
/// ::VRAM_ERR_INVALID_ARGUMENT naming the element; `batch == 0` → ::VRAM_ERR_INVALID_ARGUMENT;
/// NULL → ::VRAM_ERR_NULL_ARGUMENT. Outputs are written only on success. Runs on the GPU for a
/// CUDA-backed model, on the CPU cores otherwise. Thread-safe: a model may be used by many
/// threads at once. On a CUDA-backed model each calling thread keeps, until it exits, a
/// stream per GPU and at most 320 KiB of page-locked host memory, through which the kernels
/// read and write boxes of up to 256 KiB in place (larger ones are copied).
///
/// Weights: the bounds are for the weights as they are in memory at the time of the call.
/// This call does not re-hash them; a weight damaged since it was sealed gives bounds for the
/// damaged network. To have them checked in the same call, use ibp_propagate_ex() with
/// ::IBP_PROPAGATE_VERIFY_WEIGHTS, or call ibp_model_verify() as often as your policy needs.
///
/// Work: bounded by `batch` × the model's declared work (each node at most 2^32 multiply-adds
/// or window taps per item, see ibp_builder_new()). Host memory on the CPU path: every node's
/// bounds for the batch (16 bytes per element); a batch that cannot fit this machine's memory
/// → ::VRAM_ERR_OUT_OF_MEMORY, never an abort.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_propagate(
    model: *const ibp_model,
    batch: usize,
    in_lower: *const f32,
    in_upper: *const f32,
    out_lower: *mut f32,
    out_upper: *mut f32,
) -> vram_status {
    guard("ibp_propagate", || {
        propagate(model, batch, in_lower, in_upper, out_lower, out_upper, None)
    })
}

/// ibp_propagate() with options (::ibp_propagate_options): boxes in device memory, a CUDA
/// stream, and a specification `C·y + d` whose bounds are returned instead of the outputs'
/// (`spec_rows` values per item; C is folded into the last layer when it is linear, which is
/// tighter than applying C to the output box). `opts` NULL → ::VRAM_ERR_NULL_ARGUMENT; wrong
/// `struct_size`, unknown `memory` or `method` → ::VRAM_ERR_INVALID_ARGUMENT; device memory
/// with a host-backed model → ::VRAM_ERR_UNSUPPORTED. Otherwise as ibp_propagate().
#[unsafe(no_mangle)]
pub extern "C" fn ibp_propagate_ex(
    model: *const ibp_model,
    batch: usize,
    in_lower: *const f32,
    in_upper: *const f32,
    out_lower: *mut f32,
    out_upper: *mut f32,
    opts: *const ibp_propagate_options,
) -> vram_status {
    guard("ibp_propagate_ex", || {
        let o = read_options(opts, "opts")?;
        propagate(
            model,
            batch,
            in_lower,
            in_upper,
            out_lower,
            out_upper,
            Some(&o),
        )
    })
}

/// The status of a model-wide verification.
fn weights_intact(r: &crate::context::VerifyReport) -> Result<()> {
    match r.outcome {
        crate::context::Outcome::Intact => Ok(()),
        crate::context::Outcome::Damaged => Err(VramError::new(
            ErrorKind::Integrity,
            format!(
                "{} damaged region(s) in the model's weights",
                r.damaged_regions
            ),
        )),
        crate::context::Outcome::BadSeal => Err(VramError::bad_seal(
            "a weight shard's seal does not authenticate",
        )),
    }
}

/// Verifies every sealed weight of `model` in one batched call (see vram_verify_many()); the
/// report (nullable) sums all of them up (first_damaged_offset is within the first damaged
/// shard). Returns ::VRAM_OK, ::VRAM_ERR_INTEGRITY or ::VRAM_ERR_BAD_SEAL like vram_verify().
#[unsafe(no_mangle)]
pub extern "C" fn ibp_model_verify(
    ctx: *mut vram_ctx,
    model: *const ibp_model,
    report: *mut vram_verify_report,
) -> vram_status {
    guard("ibp_model_verify", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let model = &arg_ref(model, "model")?.inner;
        let r = model.verify(&ctx.inner)?;
        if let Ok(out) = arg_mut(report, "report") {
            *out = vram_verify_report::from(&r);
        }
        weights_intact(&r)
    })
}

/// Fault drill: flips bit `bit_index` of the weight tensor of node `node` (a linear or conv2d
/// layer; node 0 is the input), so a server can prove that ibp_model_verify() catches a
/// damaged weight. Flipping it again restores it. Opt-in as vram_debug_flip_bit(): without
/// ::VRAM_CTX_ALLOW_FAULT_DRILLS on the model's context → ::VRAM_ERR_POLICY, nothing changes.
/// NULL → ::VRAM_ERR_NULL_ARGUMENT; a node with no weight or a bit past its end →
/// ::VRAM_ERR_INVALID_ARGUMENT. Not to be called while another thread uses the model.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_model_debug_flip_bit(
    model: *mut ibp_model,
    node: u32,
    bit_index: u64,
) -> vram_status {
    guard("ibp_model_debug_flip_bit", || {
        let model = &arg_ref(model.cast_const(), "model")?.inner;
        model.weight_shard(node as usize)?.debug_flip_bit(bit_index)
    })
}

/// Floats per input box (the product of the input shape); 0 when `model` is NULL. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_model_input_size(model: *const ibp_model) -> usize {
    // SAFETY: `model` is NULL or a live model (caller's contract).
    guard_value("ibp_model_input_size", 0, || {
        unsafe { model.as_ref() }.map_or(0, |m| m.inner.input_size())
    })
}

/// Floats per output box; 0 when `model` is NULL. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_model_output_size(model: *const ibp_model) -> usize {
    // SAFETY: `model` is NULL or a live model (caller's contract).
    guard_value("ibp_model_output_size", 0, || {
        unsafe { model.as_ref() }.map_or(0, |m| m.inner.output_size())
    })
}

/// Frees a model (and, once no other handle holds them, its sealed weights). NULL is a no-op.
/// No other thread may be using the model.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_model_free(model: *mut ibp_model) {
    guard_value("ibp_model_free", (), || {
        if !model.is_null() {
            // SAFETY: a non-NULL `model` came from ibp_builder_build()/ibp_model_from_nnet().
            drop(unsafe { Box::from_raw(model) });
        }
    })
}
