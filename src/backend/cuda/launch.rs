//! The one typed door to the kernels in cuda/: device views that carry their length and borrow
//! the memory they view, and one `unsafe fn` per launcher. Each launcher checks every length
//! and shape against the others before anything is queued (a mismatch is an error, never a
//! kernel reading past a buffer); what the types cannot say is its contract:
//!
//! **The launch contract.** Every view is what [`Dev::from_raw`] requires (memory the current
//! device reads and writes: its own, or mapped page-locked host memory); the views a launcher
//! writes do not overlap the ones it reads unless it says so; and nothing else reads what it
//! writes or writes what it reads until `stream` is synchronised. A view borrows its
//! allocation, so no launch can be queued on memory already given back; an allocation freed on
//! the launch's own stream is freed after the launch.
//!
//! `ibp/` (interval and linear bounds) and the sealing code (Merkle roots, the scrubber's
//! digests, the fault drill) reach the GPU only through here and [`super::runtime`].

use std::ffi::c_int;
use std::marker::PhantomData;

use super::ffi::{self, LvkCrownLayer, LvkCrownStore, LvkJob, check};
use super::runtime::{DeviceAlloc, DeviceMem, Stream};
use crate::error::{ErrorKind, Result, VramError};
use crate::scrub::digest::POWER_TABLE_LEN;

/// `len` values of `T` in memory the current device reads and writes, borrowed for `'a`.
pub struct Dev<'a, T> {
    ptr: *mut T,
    len: usize,
    _mem: PhantomData<&'a [T]>,
}

impl<T> Clone for Dev<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Dev<'_, T> {}

impl<'a, T> Dev<'a, T> {
    /// A view of `len` values at `ptr`.
    ///
    /// # Safety
    /// `ptr` must point to `len` values of `T` that kernels of the current device can read
    /// (and write, where a launcher writes through the view): device memory of that device or
    /// mapped page-locked host memory, allocated for all of `'a`.
    pub unsafe fn from_raw(ptr: *mut T, len: usize) -> Self {
        Self {
            ptr,
            len,
            _mem: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `len` values starting at value `at`.
    pub fn part(&self, at: usize, len: usize) -> Result<Self> {
        if at.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(mismatch("a part past the end of its view"));
        }
        Ok(Self {
            ptr: self.ptr.wrapping_add(at),
            len,
            _mem: PhantomData,
        })
    }

    /// The device address (for copies, and tables that kernels read).
    pub fn as_ptr(&self) -> *mut T {
        self.ptr
    }
}

/// Lower and upper f64 bounds of the same length.
#[derive(Clone, Copy)]
pub struct DevBounds<'a> {
    lo: Dev<'a, f64>,
    hi: Dev<'a, f64>,
}

impl<'a> DevBounds<'a> {
    pub fn new(lo: Dev<'a, f64>, hi: Dev<'a, f64>) -> Result<Self> {
        if lo.len() != hi.len() {
            return Err(mismatch("lower and upper bounds of different lengths"));
        }
        Ok(Self { lo, hi })
    }

    pub fn len(&self) -> usize {
        self.lo.len()
    }

    pub fn lo(&self) -> Dev<'a, f64> {
        self.lo
    }

    pub fn hi(&self) -> Dev<'a, f64> {
        self.hi
    }
}

/// A launch whose buffers do not fit it: a bug in the caller, reported rather than queued.
fn mismatch(what: &str) -> VramError {
    VramError::new(
        ErrorKind::Device,
        format!("GPU launch refused: {what} (an internal error; nothing was queued)"),
    )
}

/// `have >= n` values, `n` computed without overflow.
fn holds(have: usize, n: Option<usize>, what: &str) -> Result<()> {
    match n {
        Some(n) if have >= n => Ok(()),
        _ => Err(mismatch(what)),
    }
}

fn mul(a: u64, b: u64) -> Option<usize> {
    a.checked_mul(b).and_then(|n| usize::try_from(n).ok())
}

fn prod(dims: &[u32]) -> Option<usize> {
    dims.iter()
        .try_fold(1u64, |a, &d| a.checked_mul(u64::from(d)))
        .and_then(|n| usize::try_from(n).ok())
}

fn null_or<T>(v: Option<Dev<'_, T>>) -> *const T {
    v.map_or(std::ptr::null(), |d| d.as_ptr().cast_const())
}

/// Checks that `x` holds `batch × n_in` and `out` holds `batch × n_out` bounds.
fn layer_sizes(
    x: &DevBounds<'_>,
    out: &DevBounds<'_>,
    batch: u32,
    n_in: usize,
    n_out: usize,
) -> Result<()> {
    let b = u64::from(batch);
    if Some(x.len()) != mul(b, n_in as u64) || Some(out.len()) != mul(b, n_out as u64) {
        return Err(mismatch(
            "bounds that do not match the layer's sizes and the batch",
        ));
    }
    Ok(())
}

// ---- interval bounds (cuda/ibp.cu) ----

/// f32 boxes into f64 bounds, checking every element (NaN, or lower above upper): `first_bad`
/// receives the first bad index, all ones if none.
///
/// # Safety
/// The launch contract (module docs).
pub unsafe fn ibp_to_f64(
    lo: Dev<'_, f32>,
    hi: Dev<'_, f32>,
    out: DevBounds<'_>,
    first_bad: Dev<'_, u64>,
    stream: &Stream,
) -> Result<()> {
    if lo.len() != hi.len() || lo.len() != out.len() || first_bad.is_empty() {
        return Err(mismatch("input conversion sizes"));
    }
    // SAFETY: lengths checked above; the launch contract covers the rest.
    check(
        unsafe {
            ffi::lvk_ibp_to_f64(
                lo.as_ptr(),
                hi.as_ptr(),
                out.lo.as_ptr(),
                out.hi.as_ptr(),
                lo.len() as u64,
                first_bad.as_ptr(),
                stream.raw(),
            )
        },
        "IBP input conversion",
    )
}

/// f64 bounds rounded outward into f32 `lo`/`hi`, written only if `guard` (the flag of
/// [`ibp_to_f64`]) says every input was good; the flag is copied to `flag_out` either way.
///
/// # Safety
/// The launch contract (module docs).
pub unsafe fn ibp_to_f32(
    from: DevBounds<'_>,
    lo: Dev<'_, f32>,
    hi: Dev<'_, f32>,
    guard: Dev<'_, u64>,
    flag_out: Option<Dev<'_, u64>>,
    stream: &Stream,
) -> Result<()> {
    if lo.len() != from.len() || hi.len() != from.len() || guard.is_empty() {
        return Err(mismatch("output conversion sizes"));
    }
    if flag_out.is_some_and(|f| f.is_empty()) {
        return Err(mismatch("an empty flag"));
    }
    // SAFETY: lengths checked above; the launch contract covers the rest.
    check(
        unsafe {
            ffi::lvk_ibp_to_f32(
                from.lo.as_ptr(),
                from.hi.as_ptr(),
                lo.as_ptr(),
                hi.as_ptr(),
                from.len() as u64,
                guard.as_ptr(),
                flag_out.map_or(std::ptr::null_mut(), |f| f.as_ptr()),
                stream.raw(),
            )
        },
        "IBP output conversion",
    )
}

/// `(x − mean) / range` after clipping to `[min, max]`, per feature: `params` holds min, max,
/// mean and range, `features` values each.
///
/// # Safety
/// The launch contract (module docs).
pub unsafe fn ibp_normalize(
    params: Dev<'_, f64>,
    features: u32,
    x: DevBounds<'_>,
    out: DevBounds<'_>,
    stream: &Stream,
) -> Result<()> {
    holds(
        params.len(),
        mul(4, u64::from(features)),
        "normalisation constants",
    )?;
    if features == 0 || x.len() != out.len() || x.len() % features as usize != 0 {
        return Err(mismatch("normalisation sizes"));
    }
    // SAFETY: lengths checked above; the launch contract covers the rest.
    check(
        unsafe {
            ffi::lvk_ibp_normalize(
                params.as_ptr(),
                features,
                x.len() as u64,
                x.lo.as_ptr(),
                x.hi.as_ptr(),
                out.lo.as_ptr(),
                out.hi.as_ptr(),
                stream.raw(),
            )
        },
        "IBP normalisation kernel",
    )
}

/// An element-wise monotone map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu(f64),
    Sigmoid,
    Tanh,
    /// The same values (a flatten: the item-major layout does not change).
    Copy,
}

/// Applies `act` to every bound.
///
/// # Safety
/// The launch contract (module docs).
pub unsafe fn ibp_activation(
    act: Activation,
    x: DevBounds<'_>,
    out: DevBounds<'_>,
    stream: &Stream,
) -> Result<()> {
    if x.len() != out.len() {
        return Err(mismatch("activation sizes"));
    }
    let (kind, alpha): (c_int, f64) = match act {
        Activation::Relu => (0, 0.0),
        Activation::LeakyRelu(a) => (1, a),
        Activation::Sigmoid => (2, 0.0),
        Activation::Tanh => (3, 0.0),
        Activation::Copy => (4, 0.0),
    };
    // SAFETY: lengths checked above; the launch contract covers the rest.
    check(
        unsafe {
            ffi::lvk_ibp_activation(
                kind,
                alpha,
                x.len() as u64,
                x.lo.as_ptr(),
                x.hi.as_ptr(),
                out.lo.as_ptr(),
                out.hi.as_ptr(),
                stream.raw(),
            )
        },
        "IBP activation kernel",
    )
}

/// `a + b`, element-wise.
///
/// # Safety
/// The launch contract (module docs).
pub unsafe fn ibp_add(
    a: DevBounds<'_>,
    b: DevBounds<'_>,
    out: DevBounds<'_>,
    stream: &Stream,
) -> Result<()> {
    if a.len() != b.len() || a.len() != out.len() {
        return Err(mismatch("add sizes"));
    }
    // SAFETY: lengths checked above; the launch contract covers the rest.
    check(
        unsafe {
            ffi::lvk_ibp_add(
                a.len() as u64,
                a.lo.as_ptr(),
                a.hi.as_ptr(),
                b.lo.as_ptr(),
                b.hi.as_ptr(),
                out.lo.as_ptr(),
                out.hi.as_ptr(),
                stream.raw(),
            )
        },
        "IBP add kernel",
    )
}

/// The parameters of a dense or convolution layer, read where they live (sealed shards).
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    pub w: Dev<'a, f32>,
    pub bias: Option<Dev<'a, f32>>,
}

/// `W·x + b` for `batch` items (`W`: `out_f × in_f`, row-major), optionally followed by a
/// ReLU; `tensor_cores` lets large batches run on FP64 tensor cores where the device has them.
///
/// # Safety
/// The launch contract (module docs).
#[allow(clippy::too_many_arguments)]
pub unsafe fn ibp_linear(
    p: Weights<'_>,
    in_f: u32,
    out_f: u32,
    batch: u32,
    x: DevBounds<'_>,
    out: DevBounds<'_>,
    relu: bool,
    tensor_cores: bool,
    stream: &Stream,
) -> Result<()> {
    holds(
        p.w.len(),
        mul(u64::from(in_f), u64::from(out_f)),
        "a weight smaller than the layer",
    )?;
    if let Some(b) = p.bias {
        holds(
            b.len(),
            Some(out_f as usize),
            "a bias smaller than the layer",
        )?;
    }
    layer_sizes(&x, &out, batch, in_f as usize, out_f as usize)?;
    // SAFETY: lengths checked above; the launch contract covers the rest.
    check(
        unsafe {
            ffi::lvk_ibp_linear(
                p.w.as_ptr(),
                null_or(p.bias),
                in_f,
                out_f,
                batch,
                x.lo.as_ptr(),
                x.hi.as_ptr(),
                out.lo.as_ptr(),
                out.hi.as_ptr(),
                c_int::from(relu),
                c_int::from(tensor_cores),
                stream.raw(),
            )
        },
        "IBP linear kernel",
    )
}

/// A 2-D convolution's shape: cin, h, w, cout, oh, ow, kh, kw, stride h/w, padding h/w,
/// dilation h/w, groups (the order cuda/lvk.h reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape(pub [u32; 15]);

/// A convolution of `batch` items (CHW, item-major), optionally followed by a ReLU.
///
/// # Safety
/// The launch contract (module docs).
#[allow(clippy::too_many_arguments)]
pub unsafe fn ibp_conv2d(
    p: Weights<'_>,
    shape: &ConvShape,
    batch: u32,
    x: DevBounds<'_>,
    out: DevBounds<'_>,
    relu: bool,
    tensor_cores: bool,
    stream: &Stream,
) -> Result<()> {
    let s = &shape.0;
    let groups = s[14];
    if groups == 0 || s[0] % groups != 0 || s[3] % groups != 0 {
        return Err(mismatch("convolution groups"));
    }
    holds(
        p.w.len(),
        prod(&[s[3], s[0] / groups, s[6], s[7]]),
        "a kernel smaller than the convolution",
    )?;
    if let Some(b) = p.bias {
        holds(
            b.len(),
            Some(s[3] as usize),
            "a bias smaller than the convolution",
        )?;
    }
    let (n_in, n_out) = (prod(&s[0..3]), prod(&s[3..6]));
    let (Some(n_in), Some(n_out)) = (n_in, n_out) else {
        return Err(mismatch("convolution sizes"));
    };
    layer_sizes(&x, &out, batch, n_in, n_out)?;
    // SAFETY: lengths checked above; the launch contract covers the rest.
    check(
        unsafe {
            ffi::lvk_ibp_conv2d(
                p.w.as_ptr(),
                null_or(p.bias),
                s.as_ptr(),
                batch,
                x.lo.as_ptr(),
                x.hi.as_ptr(),
                out.lo.as_ptr(),
                out.hi.as_ptr(),
                c_int::from(relu),
                c_int::from(tensor_cores),
                stream.raw(),
            )
        },
        "IBP conv2d kernel",
    )
}

/// A pooling window's shape: c, h, w, oh, ow, kh, kw, stride h/w, padding h/w.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape(pub [u32; 11]);

/// Average or max pooling of `batch` items.
///
/// # Safety
/// The launch contract (module docs).
pub unsafe fn ibp_pool(
    is_max: bool,
    shape: &PoolShape,
    batch: u32,
    x: DevBounds<'_>,
    out: DevBounds<'_>,
    stream: &Stream,
) -> Result<()> {
    let s = &shape.0;
    let (Some(n_in), Some(n_out)) = (prod(&s[0..3]), prod(&[s[0], s[3], s[4]])) else {
        return Err(mismatch("pooling sizes"));
    };
    layer_sizes(&x, &out, batch, n_in, n_out)?;
    // SAFETY: lengths checked above; the launch contract covers the rest.
    check(
        unsafe {
            ffi::lvk_ibp_pool(
                c_int::from(is_max),
                s.as_ptr(),
                batch,
                x.lo.as_ptr(),
                x.hi.as_ptr(),
                out.lo.as_ptr(),
                out.hi.as_ptr(),
                stream.raw(),
            )
        },
        "IBP pooling kernel",
    )
}

/// Batch normalisation (inference form): `params` holds gamma, beta, mean and var, `channels`
/// values each; every channel has `per_channel` values per item.
///
/// # Safety
/// The launch contract (module docs).
#[allow(clippy::too_many_arguments)]
pub unsafe fn ibp_batchnorm(
    params: Dev<'_, f32>,
    eps: f64,
    channels: u32,
    per_channel: u32,
    batch: u32,
    x: DevBounds<'_>,
    out: DevBounds<'_>,
    stream: &Stream,
) -> Result<()> {
    holds(
        params.len(),
        mul(4, u64::from(channels)),
        "batch-norm parameters",
    )?;
    let Some(per_item) = prod(&[channels, per_channel]) else {
        return Err(mismatch("batch-norm sizes"));
    };
    layer_sizes(&x, &out, batch, per_item, per_item)?;
    // SAFETY: lengths checked above; the launch contract covers the rest.
    check(
        unsafe {
            ffi::lvk_ibp_batchnorm(
                params.as_ptr(),
                eps,
                channels,
                per_channel,
                batch,
                x.lo.as_ptr(),
                x.hi.as_ptr(),
                out.lo.as_ptr(),
                out.hi.as_ptr(),
                stream.raw(),
            )
        },
        "IBP batch-norm kernel",
    )
}

// ---- linear bounds (cuda/crown.cu) ----

/// One layer of a dense chain for the linear-bounds kernel.
#[derive(Clone, Copy)]
pub struct CrownLayer<'a> {
    pub p: Weights<'a>,
    pub in_f: u32,
    pub out_f: u32,
    /// A ReLU follows (never on the last layer).
    pub relu: bool,
    /// At least the relative rounding bound of a dot product of `out_f + 2` terms.
    pub gamma: f64,
}

/// A chain's layer table in device memory and the kernel's shared-memory plan, worked out
/// once per model: what every linear-bounds call reads. It holds the weights' device
/// addresses, so it must not outlive them (a model owns both).
pub struct CrownTable {
    mem: DeviceMem,
    n_layers: u32,
    n_in: u32,
    width: u32,
    total_out: u32,
    n_out: u32,
    colmax_len: usize,
    /// Rows per backward pass and the block's shared memory: for the intersected relaxation,
    /// then for textbook CROWN (whose passes are full: it bounds every neuron).
    passes: [(u32, usize); 2],
}

impl CrownTable {
    /// The table of `layers` (a chain from `n_in` inputs), on the current device, which must
    /// be `device`.
    ///
    /// # Safety
    /// The layers' weights must stay allocated, at the same addresses, for the table's life.
    pub unsafe fn new(device: i32, layers: &[CrownLayer<'_>], n_in: u32) -> Result<Self> {
        let n_layers = u32::try_from(layers.len())
            .ok()
            .filter(|&n| n > 0 && n <= 65535)
            .ok_or_else(|| mismatch("a chain of 1 to 65535 layers"))?;
        let (mut width, mut total_out, mut colmax_at, mut prev) = (n_in, 0u32, 0u32, n_in);
        let mut table = Vec::with_capacity(layers.len());
        for (k, l) in layers.iter().enumerate() {
            holds(
                l.p.w.len(),
                mul(u64::from(l.in_f), u64::from(l.out_f)),
                "a chain weight",
            )?;
            if let Some(b) = l.p.bias {
                holds(b.len(), Some(l.out_f as usize), "a chain bias")?;
            }
            if l.in_f != prev || l.out_f == 0 || (l.relu && k + 1 == layers.len()) {
                return Err(mismatch("layers that do not form a chain"));
            }
            table.push(LvkCrownLayer {
                w: l.p.w.as_ptr(),
                bias: null_or(l.p.bias),
                gamma: l.gamma,
                in_f: l.in_f,
                out_f: l.out_f,
                relu: u32::from(l.relu),
                offset: total_out,
                colmax_at,
                reserved: 0,
            });
            width = width.max(l.in_f).max(l.out_f);
            total_out = total_out
                .checked_add(l.out_f)
                .ok_or_else(|| mismatch("a chain too large"))?;
            colmax_at = colmax_at
                .checked_add(l.in_f)
                .ok_or_else(|| mismatch("a chain too large"))?;
            prev = l.out_f;
        }
        let mut passes = [(0u32, 0usize); 2];
        for (textbook, (rows_per_pass, smem)) in (0u32..).zip(passes.iter_mut()) {
            // SAFETY: writes two values through valid pointers.
            check(
                unsafe {
                    ffi::lvk_crown_rows_per_pass(
                        n_layers,
                        n_in,
                        width,
                        total_out,
                        textbook,
                        rows_per_pass,
                        smem,
                    )
                },
                "linear bounds: the layers are too wide for one block's shared memory",
            )?;
        }
        // SAFETY: LvkCrownLayer is repr(C) and Copy, made of pointers, an f64 and u32s with no
        // padding (48 bytes): its bytes are initialised.
        let bytes = unsafe {
            std::slice::from_raw_parts(table.as_ptr().cast::<u8>(), size_of_val(table.as_slice()))
        };
        Ok(Self {
            mem: DeviceMem::new(device, bytes.len(), bytes, "linear bounds: layer table")?,
            n_layers,
            n_in,
            width,
            total_out,
            n_out: prev,
            colmax_len: colmax_at as usize,
            passes,
        })
    }

    /// Values of the column-maxima array that [`crown_colmax`] writes.
    pub fn colmax_len(&self) -> usize {
        self.colmax_len
    }

    /// Sum of the layers' output sizes: one box's bounds of every layer.
    pub fn total_out(&self) -> u32 {
        self.total_out
    }

    fn layers(&self) -> Result<Dev<'_, LvkCrownLayer>> {
        self.mem.view(0, self.n_layers as usize)
    }
}

/// Every layer's column maxima `max_o |W[o][i]|` from the weights as they are now.
///
/// # Safety
/// The launch contract (module docs); the table's weights are alive.
pub unsafe fn crown_colmax(
    table: &CrownTable,
    colmax: Dev<'_, f64>,
    stream: &Stream,
) -> Result<()> {
    if colmax.len() != table.colmax_len {
        return Err(mismatch("column maxima of the wrong length"));
    }
    // SAFETY: the table and the output fit (checked above); the launch contract.
    check(
        unsafe {
            ffi::lvk_crown_colmax(
                table.layers()?.as_ptr(),
                table.n_layers,
                table.width,
                colmax.as_ptr(),
                stream.raw(),
            )
        },
        "linear bounds: column maxima",
    )
}

/// Every layer's bounds of many boxes kept between calls: `slots` slots of
/// `2 × total_out` values, and per box of a launch the slot it starts from and the slot it
/// writes (`u32::MAX`: none).
#[derive(Clone, Copy)]
pub struct CrownStore<'a> {
    pub nodes: Dev<'a, f64>,
    pub outer: Dev<'a, u32>,
    pub own: Dev<'a, u32>,
}

/// Where the linear-bounds kernel writes each row's linear bound: its coefficients on the box
/// and its constant.
#[derive(Clone, Copy)]
pub struct CrownLinear<'a> {
    pub coeffs: Dev<'a, f64>,
    pub offsets: Dev<'a, f64>,
}

/// Which bounds of the ReLU inputs choose their relaxations in [`crown_bounds`] (the kernel's
/// `relaxation` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CrownRelaxation {
    /// The neurons IBP leaves unstable, bounded by backward passes intersected with IBP.
    Intersected = 0,
    /// CROWN as published: every ReLU input past the first layer bounded by a backward pass,
    /// those bounds alone.
    Textbook = 1,
    /// Intersected; where the intersection first changed a bound (layer k), a second pass from
    /// k with the backward passes' bounds alone (at k of every neuron, past k of those IBP
    /// leaves unstable); each row and output bound the better of the two. The linear bound
    /// (`linear`) and a store's bounds are the first pass's. Same rows per pass as
    /// `Intersected`. Two launches: the first writes a record per box (where the second
    /// starts, and the bounds below it), the second reads it.
    Guarded = 2,
}

/// Most bytes of guarded records [`crown_bounds`] allocates at once (it takes the boxes that
/// many at a time).
const GUARD_BYTES: usize = 256 << 20;

/// Sound lower bounds of `rows` (`n_rows × output size`) times the chain's output over each
/// box of `boxes` (`batch × n_in`, finite, lo ≤ hi), into `lower` (`batch × n_rows`), the
/// output bounds into `out` (`batch × output size`), and, when given, the linear bound itself
/// into `linear`: coefficients on the box (`batch × n_rows × n_in`) and constants
/// (`batch × n_rows`), with `row·y ≥ coeffs·x + constant` at every point of the box.
/// `relax`: which bounds of the ReLU inputs choose their relaxations ([`CrownRelaxation`]).
///
/// # Safety
/// The launch contract (module docs); the table's weights are alive; `colmax` was written by
/// [`crown_colmax`] for this table earlier on `stream`; a store's slots are not used by
/// other work, and every box's outer slot holds bounds valid on that box.
#[allow(clippy::too_many_arguments)]
pub unsafe fn crown_bounds(
    table: &CrownTable,
    colmax: Dev<'_, f64>,
    boxes: DevBounds<'_>,
    rows: Dev<'_, f64>,
    n_rows: u32,
    lower: Dev<'_, f64>,
    out: DevBounds<'_>,
    linear: Option<CrownLinear<'_>>,
    store: Option<CrownStore<'_>>,
    relax: CrownRelaxation,
    stream: &Stream,
) -> Result<()> {
    let n_in = u64::from(table.n_in);
    if colmax.len() != table.colmax_len
        || n_in == 0
        || n_rows == 0
        || boxes.len() as u64 % n_in != 0
    {
        return Err(mismatch("linear bounds inputs"));
    }
    let batch = u32::try_from(boxes.len() as u64 / n_in)
        .ok()
        .filter(|&b| b > 0 && b <= 0x7fff_ffff)
        .ok_or_else(|| mismatch("a linear-bounds batch of 1 to 2^31 - 1 boxes"))?;
    let b = u64::from(batch);
    let rows_ok = Some(rows.len()) == mul(u64::from(n_rows), u64::from(table.n_out));
    let lower_ok = Some(lower.len()) == mul(b, u64::from(n_rows));
    let out_ok = Some(out.len()) == mul(b, u64::from(table.n_out));
    let coeffs_ok = linear.is_none_or(|c| {
        Some(c.coeffs.len()) == mul(b * u64::from(n_rows), n_in)
            && Some(c.offsets.len()) == mul(b, u64::from(n_rows))
    });
    if !(rows_ok && lower_ok && out_ok && coeffs_ok) {
        return Err(mismatch("linear bounds outputs"));
    }
    let kept = match store {
        Some(s) => {
            let slot = 2 * table.total_out as usize;
            if slot == 0 || s.outer.len() != batch as usize || s.own.len() != batch as usize {
                return Err(mismatch("a node store"));
            }
            Some(LvkCrownStore {
                nodes: s.nodes.as_ptr(),
                slots: u32::try_from(s.nodes.len() / slot).unwrap_or(u32::MAX),
                total_out: table.total_out,
                outer_slot: s.outer.as_ptr(),
                self_slot: s.own.as_ptr(),
            })
        }
        None => None,
    };
    let (rows_per_pass, smem) = table.passes[usize::from(relax == CrownRelaxation::Textbook)];
    // The guarded relaxation's records: as many boxes' as fit GUARD_BYTES (at least one).
    let guard = if relax == CrownRelaxation::Guarded {
        // SAFETY: a pure function of two integers.
        let per_box = unsafe { ffi::lvk_crown_guard_bytes(table.total_out, table.width) };
        let boxes = (GUARD_BYTES / per_box.max(1)).clamp(1, batch as usize);
        let bytes = per_box
            .checked_mul(boxes)
            .ok_or_else(|| mismatch("linear bounds: guard records"))?;
        Some((
            DeviceAlloc::scratch(bytes, stream, "linear bounds: guard records")?,
            u32::try_from(boxes).unwrap_or(batch),
        ))
    } else {
        None
    };
    // SAFETY: every size checked above (the kernel ignores slot ids at or past `slots`); the
    // guard records hold `guard_boxes` boxes' and are freed after the kernels, in the
    // stream's order; the launch contract and this function's contract cover the rest.
    check(
        unsafe {
            ffi::lvk_crown_bounds(
                table.layers()?.as_ptr(),
                table.n_layers,
                table.n_in,
                table.width,
                table.total_out,
                rows_per_pass,
                smem,
                colmax.as_ptr(),
                batch,
                boxes.lo.as_ptr(),
                boxes.hi.as_ptr(),
                rows.as_ptr(),
                n_rows,
                lower.as_ptr(),
                out.lo.as_ptr(),
                out.hi.as_ptr(),
                linear.map_or(std::ptr::null_mut(), |c| c.coeffs.as_ptr()),
                linear.map_or(std::ptr::null_mut(), |c| c.offsets.as_ptr()),
                kept.as_ref()
                    .map_or(std::ptr::null(), |k| k as *const LvkCrownStore),
                relax as u32,
                guard
                    .as_ref()
                    .map_or(std::ptr::null_mut(), |(g, _)| g.ptr().cast::<f64>()),
                guard.as_ref().map_or(0, |&(_, n)| n),
                stream.raw(),
            )
        },
        "linear bounds kernel",
    )
}

/// Linear bounds of f32 boxes in device memory: each item's interval bounds `ibp`
/// (`batch × rows`) narrowed by the lower bounds of its signed rows (`lower`,
/// `batch × 2·rows`: the rows, then their negations, from [`crown_bounds`]) plus `d`, rounded
/// outward, into `out`; with `lower2` (the same shape, from the other relaxation), the larger
/// of the two. An item whose box (`boxes`, `batch × n_in`, as the linear-bounds kernel read
/// it) has an infinite bound keeps its interval bounds.
///
/// # Safety
/// The launch contract (module docs); `out` does not overlap the other buffers.
pub unsafe fn crown_narrow(
    boxes: DevBounds<'_>,
    lower: Dev<'_, f64>,
    lower2: Option<Dev<'_, f64>>,
    d: Dev<'_, f64>,
    ibp: [Dev<'_, f32>; 2],
    out: [Dev<'_, f32>; 2],
    stream: &Stream,
) -> Result<()> {
    let rows = d.len() as u64;
    let n = out[0].len() as u64;
    if rows == 0 || n == 0 || n % rows != 0 {
        return Err(mismatch("linear bounds: rows"));
    }
    let batch = n / rows;
    let n_in = boxes.len() as u64 / batch;
    let sizes_ok = [ibp[0].len(), ibp[1].len(), out[1].len()]
        .iter()
        .all(|&l| l as u64 == n)
        && Some(boxes.len()) == mul(batch, n_in)
        && Some(lower.len()) == mul(batch, 2 * rows)
        && lower2.is_none_or(|l| l.len() == lower.len());
    let (Ok(rows32), Ok(n_in32), true) = (u32::try_from(rows), u32::try_from(n_in), sizes_ok)
    else {
        return Err(mismatch("linear bounds: narrowing sizes"));
    };
    // SAFETY: every size checked above; the launch contract and this function's contract cover
    // the rest.
    check(
        unsafe {
            ffi::lvk_crown_narrow(
                boxes.lo.as_ptr(),
                boxes.hi.as_ptr(),
                n_in32,
                lower.as_ptr(),
                lower2.map_or(std::ptr::null(), |l| l.as_ptr().cast_const()),
                d.as_ptr(),
                rows32,
                batch,
                ibp[0].as_ptr(),
                ibp[1].as_ptr(),
                out[0].as_ptr(),
                out[1].as_ptr(),
                stream.raw(),
            )
        },
        "linear bounds narrowing",
    )
}

// ---- sealing (cuda/merkle.cu, cuda/scrub.cu, cuda/vram_ops.cu) ----

/// The RFC 9162 root of every region of every job into `roots` (32 bytes per region, batch
/// order); `jobs` sorted by first region, each `region_leaves <= max_leaves <= 1024`.
///
/// # Safety
/// The launch contract (module docs); every job's `data` points to `len` device bytes alive
/// until the stream is synchronised.
pub unsafe fn region_roots(
    jobs: Dev<'_, LvkJob>,
    total_regions: u64,
    max_leaves: u32,
    roots: Dev<'_, u8>,
    stream: &Stream,
) -> Result<()> {
    let n = u32::try_from(jobs.len()).map_err(|_| mismatch("too many Merkle jobs"))?;
    holds(
        roots.len(),
        mul(32, total_regions),
        "room for the region roots",
    )?;
    // SAFETY: sizes checked above; the launch contract and this function's contract.
    check(
        unsafe {
            ffi::lvk_region_roots(
                jobs.as_ptr(),
                n,
                total_regions,
                max_leaves,
                roots.as_ptr(),
                stream.raw(),
            )
        },
        "Merkle kernel launch",
    )
}

/// The scrubber's keyed digest of every 1 MiB region of every job into `digests` (one per
/// region, batch order), from at most `blocks` blocks; `powers` is the key's power table.
///
/// # Safety
/// As for [`region_roots`].
pub unsafe fn fast_digests(
    jobs: Dev<'_, LvkJob>,
    total_regions: u64,
    powers: Dev<'_, u64>,
    digests: Dev<'_, u64>,
    blocks: u32,
    stream: &Stream,
) -> Result<()> {
    let n = u32::try_from(jobs.len()).map_err(|_| mismatch("too many scrub jobs"))?;
    holds(
        digests.len(),
        usize::try_from(total_regions).ok(),
        "room for the digests",
    )?;
    holds(powers.len(), Some(POWER_TABLE_LEN), "the key's power table")?;
    // SAFETY: sizes checked above; the launch contract and this function's contract.
    check(
        unsafe {
            ffi::lvk_fast_digests(
                jobs.as_ptr(),
                n,
                total_regions,
                powers.as_ptr(),
                digests.as_ptr(),
                blocks.max(1),
                stream.raw(),
            )
        },
        "scrub kernel launch",
    )
}

/// Fault drill: XORs `mask` into byte `offset` of `bytes`.
///
/// # Safety
/// The launch contract (module docs).
pub unsafe fn flip_byte(bytes: Dev<'_, u8>, offset: u64, mask: u8, stream: &Stream) -> Result<()> {
    if offset >= bytes.len() as u64 {
        return Err(mismatch("a fault drill past the end of the buffer"));
    }
    // SAFETY: the byte lies inside the view (checked above); the launch contract.
    check(
        unsafe { ffi::lvk_flip_byte(bytes.as_ptr().cast(), offset, mask, stream.raw()) },
        "fault drill kernel",
    )
}

#[cfg(test)]
mod tests {
    //! Every launcher refuses buffers that do not fit it before it reaches CUDA: these run on
    //! any machine (the views point nowhere and are never read; the stream is the legacy
    //! default, which needs no device to name).
    use super::*;

    fn view<T>(len: usize) -> Dev<'static, T> {
        // SAFETY: never dereferenced: every call below is refused by its length checks.
        unsafe { Dev::from_raw(std::ptr::NonNull::<T>::dangling().as_ptr(), len) }
    }

    fn bounds(len: usize) -> DevBounds<'static> {
        DevBounds::new(view(len), view(len)).expect("equal lengths")
    }

    fn refused(r: Result<()>) {
        let e = r.expect_err("a launch that does not fit must be refused");
        assert!(e.to_string().contains("GPU launch refused"), "{e}");
    }

    #[test]
    fn mismatched_buffers_are_refused_before_any_launch() {
        // SAFETY: the legacy default stream; nothing is queued on it.
        let s = unsafe { Stream::borrowed(std::ptr::null_mut()) };
        let w = |len| Weights {
            w: view(len),
            bias: None,
        };
        // SAFETY (every call): refused before any pointer is used.
        unsafe {
            refused(ibp_to_f64(view(4), view(3), bounds(4), view(1), &s));
            refused(ibp_to_f32(bounds(4), view(4), view(4), view(0), None, &s));
            refused(ibp_normalize(view(7), 2, bounds(4), bounds(4), &s));
            refused(ibp_normalize(view(8), 3, bounds(4), bounds(4), &s));
            refused(ibp_activation(Activation::Relu, bounds(4), bounds(5), &s));
            refused(ibp_add(bounds(4), bounds(3), bounds(4), &s));
            // A weight one short, a bias one short, inputs and outputs of the wrong batch.
            refused(ibp_linear(
                w(5),
                2,
                3,
                1,
                bounds(2),
                bounds(3),
                false,
                false,
                &s,
            ));
            let short_bias = Weights {
                w: view(6),
                bias: Some(view(2)),
            };
            refused(ibp_linear(
                short_bias,
                2,
                3,
                1,
                bounds(2),
                bounds(3),
                false,
                false,
                &s,
            ));
            refused(ibp_linear(
                w(6),
                2,
                3,
                2,
                bounds(2),
                bounds(6),
                false,
                false,
                &s,
            ));
            refused(ibp_linear(
                w(6),
                2,
                3,
                u32::MAX,
                bounds(2),
                bounds(3),
                false,
                false,
                &s,
            ));
            // cin 2, 3×3, cout 4, out 2×2, kernel 2×2, stride 1, no padding: refused with 31
            // weights (32 needed), and with groups 3 (which divides neither 2 nor 4).
            for (weights, groups) in [(31, 1), (32, 3)] {
                let conv = ConvShape([2, 3, 3, 4, 2, 2, 2, 2, 1, 1, 0, 0, 1, 1, groups]);
                refused(ibp_conv2d(
                    w(weights),
                    &conv,
                    1,
                    bounds(18),
                    bounds(16),
                    false,
                    false,
                    &s,
                ));
            }
            let pool = PoolShape([2, 4, 4, 2, 2, 2, 2, 2, 2, 0, 0]);
            refused(ibp_pool(true, &pool, 1, bounds(32), bounds(7), &s));
            refused(ibp_batchnorm(
                view(7),
                1e-5,
                2,
                4,
                1,
                bounds(8),
                bounds(8),
                &s,
            ));
            refused(region_roots(view(1), 2, 1, view(63), &s));
            refused(fast_digests(
                view(1),
                2,
                view(POWER_TABLE_LEN),
                view(1),
                1,
                &s,
            ));
            refused(fast_digests(
                view(1),
                1,
                view(POWER_TABLE_LEN - 1),
                view(1),
                1,
                &s,
            ));
            refused(flip_byte(view(8), 8, 1, &s));
        }
    }

    #[test]
    fn views_stay_inside_their_memory() {
        let v = view::<f64>(10);
        assert_eq!(v.part(4, 6).map(|p| p.len()).ok(), Some(6));
        assert!(v.part(5, 6).is_err());
        assert!(v.part(usize::MAX, 2).is_err());
        assert!(DevBounds::new(view(3), view(4)).is_err());
    }
}
