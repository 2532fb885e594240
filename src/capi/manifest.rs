//! `vram_manifest_*`: a model's tensors under one HMAC (docs/manifest-format.md), made from
//! live shards, exported, imported in another process, and checked against live shards.

use std::ffi::{CString, c_char, c_void};
use std::sync::Arc;

use super::boundary::{
    arg_bytes, arg_cstr, arg_mut, arg_ref, check_struct_size, guard, guard_value, read_optional,
};
use super::types::{vram_ctx, vram_shard, vram_status};
use crate::error::{ErrorKind, Result, VramError};
use crate::manifest::{self as live, ModelCheck, TensorKind, Verdict};
use crate::seal::manifest::{MAX_RANK, MAX_TENSORS, Manifest};
use crate::seal::shard_id::MAX_SHARD_ID_LEN;
use crate::shard::Shard;

/// A model manifest: immutable, safe to read from many threads at once. Created by
/// vram_manifest_from_shards() or vram_manifest_import(), freed by vram_manifest_free().
pub struct vram_manifest {
    inner: Manifest,
    /// The canonical bytes with their MAC (what vram_manifest_export() writes).
    encoded: Vec<u8>,
    /// NUL-terminated copies of the model's name and the tensors' names and dtypes.
    model: CString,
    labels: TensorLabels,
}

/// NUL-terminated copies of tensors' names and dtypes, which the accessors lend to C.
pub(crate) struct TensorLabels {
    names: Vec<CString>,
    dtypes: Vec<CString>,
}

/// A checked name as a C string (checked names hold no NUL).
fn c_string(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| VramError::invalid("name", "holds a NUL byte"))
}

impl TensorLabels {
    pub(crate) fn new<'a>(tensors: impl Iterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let (mut names, mut dtypes) = (Vec::new(), Vec::new());
        for (name, dtype) in tensors {
            names.push(c_string(name)?);
            dtypes.push(c_string(dtype)?);
        }
        Ok(Self { names, dtypes })
    }

    /// Tensor `index`'s name and dtype; `index` must be in range (see [`tensor_at`]).
    pub(crate) fn at(&self, index: usize) -> (*const c_char, *const c_char) {
        match (self.names.get(index), self.dtypes.get(index)) {
            (Some(n), Some(d)) => (n.as_ptr(), d.as_ptr()),
            _ => (std::ptr::null(), std::ptr::null()),
        }
    }
}

/// Item `index` of `items`, or `InvalidArgument` saying how many `what` there are.
pub(crate) fn tensor_at<'a, T>(items: &'a [T], index: usize, what: &str) -> Result<&'a T> {
    items.get(index).ok_or_else(|| {
        VramError::invalid(
            "index",
            format!("{index} is past the {what}'s {} tensors", items.len()),
        )
    })
}

impl vram_manifest {
    pub(crate) fn manifest(&self) -> &Manifest {
        &self.inner
    }

    pub(crate) fn from_parts(inner: Manifest, encoded: Vec<u8>) -> Result<Self> {
        Ok(Self {
            model: c_string(&inner.model)?,
            labels: TensorLabels::new(
                inner
                    .tensors
                    .iter()
                    .map(|t| (t.name.as_str(), t.dtype.as_str())),
            )?,
            inner,
            encoded,
        })
    }
}

/// A ::vram_manifest_options flag: record each tensor's 1 MiB region roots (32 bytes per MiB),
/// so that a damaged file or a wrong reload can be located to its region.
pub const VRAM_MANIFEST_REGION_ROOTS: u32 = 1;

/// Options for vram_manifest_from_shards(). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vram_manifest_options {
    /// Must be `sizeof(vram_manifest_options)`.
    pub struct_size: u32,
    /// ::VRAM_MANIFEST_REGION_ROOTS or 0.
    pub flags: u32,
    /// NULL (every tensor recorded as raw bytes: dtype "U8", shape `[len]`), or `n`
    /// NUL-terminated safetensors dtype names ("F16", "BF16", "F32", …), one per shard.
    pub dtypes: *const *const c_char,
    /// With `dtypes`: `n` shapes, shape i holding `ranks[i]` dimensions (at most 8).
    pub shapes: *const *const u64,
    /// With `dtypes`: `n` ranks.
    pub ranks: *const usize,
}

// SAFETY: repr(C), struct_size first, all-zero valid (integers and NULL pointers).
unsafe impl super::boundary::OptionsStruct for vram_manifest_options {}

/// How one manifest tensor compared with the live shards (the `verdict` of a report).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vram_tensor_verdict {
    /// A live shard of that name holds exactly the manifest's bytes, and they verify.
    VRAM_TENSOR_INTACT = 0,
    /// No shard given has that name.
    VRAM_TENSOR_MISSING = 1,
    /// The shard of that name was sealed over other bytes (length, leaf size or root).
    VRAM_TENSOR_DIFFERENT = 2,
    /// The shard matches the manifest, but its bytes no longer match its seal.
    VRAM_TENSOR_DAMAGED = 3,
    /// The shard's own seal does not authenticate under the context's key.
    VRAM_TENSOR_BAD_SEAL = 4,
}

/// One manifest tensor's result in vram_manifest_check().
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct vram_tensor_report {
    /// A ::vram_tensor_verdict value.
    pub verdict: u32,
    /// This tensor's ::vram_status: ::VRAM_OK, ::VRAM_ERR_INTEGRITY (missing, different or
    /// damaged) or ::VRAM_ERR_BAD_SEAL.
    pub status: u32,
    /// Index in `shards` of the shard with this name, or SIZE_MAX when missing.
    pub shard_index: usize,
    /// Regions whose bytes no longer match the seal (damaged tensors).
    pub damaged_regions: u64,
    /// Byte offset of the first damaged region, or (different tensors, when the manifest has
    /// region roots) of the first region that differs from the manifest; UINT64_MAX when none.
    pub first_damaged_offset: u64,
}

impl Default for vram_tensor_report {
    fn default() -> Self {
        Self {
            verdict: 0,
            status: 0,
            shard_index: usize::MAX,
            damaged_regions: 0,
            first_damaged_offset: u64::MAX,
        }
    }
}

/// The totals of vram_manifest_check(). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct vram_manifest_summary {
    /// Must be `sizeof(vram_manifest_summary)`.
    pub struct_size: u32,
    /// Tensors the manifest lists.
    pub tensors: usize,
    pub intact: usize,
    pub missing: usize,
    pub different: usize,
    pub damaged: usize,
    pub bad_seal: usize,
    /// Shards given whose names the manifest does not list.
    pub extra: usize,
    /// Index in `shards` of the first extra shard, or SIZE_MAX when none.
    pub first_extra: usize,
}

/// One tensor of a manifest (vram_manifest_tensor()). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vram_manifest_tensor_info {
    /// Must be `sizeof(vram_manifest_tensor_info)`.
    pub struct_size: u32,
    /// Merkle leaf size in bytes.
    pub leaf_size: u32,
    /// The tensor's name, NUL-terminated; valid until the manifest is freed.
    pub name: *const c_char,
    /// Its safetensors dtype ("F16", "U8", …), NUL-terminated; valid until the manifest is freed.
    pub dtype: *const c_char,
    /// Its shape: `rank` dimensions; valid until the manifest is freed (NULL when rank is 0).
    pub shape: *const u64,
    pub rank: usize,
    /// Its length in bytes.
    pub byte_len: u64,
    /// Its Merkle root.
    pub root: [u8; 32],
    /// Number of region roots recorded (0 when the manifest has none).
    pub region_count: u64,
}

fn manifest_out(out: &mut *mut vram_manifest, m: vram_manifest) {
    *out = Box::into_raw(Box::new(m));
}

fn shard_list<'a>(shards: *const *const vram_shard, n: usize) -> Result<Vec<&'a Shard>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if shards.is_null() {
        return Err(VramError::null("shards"));
    }
    if n > MAX_TENSORS {
        return Err(VramError::invalid(
            "n",
            format!("{n} shards; at most {MAX_TENSORS}"),
        ));
    }
    // SAFETY: caller's contract: `shards` points to `n` readable pointers (n > 0, checked
    // non-NULL, n bounded above).
    let ptrs = unsafe { std::slice::from_raw_parts(shards, n) };
    ptrs.iter()
        .enumerate()
        .map(|(i, &p)| Ok(&*arg_ref(p, &format!("shards[{i}]"))?.inner))
        .collect()
}

/// The dtypes and shapes of the options, one per shard.
fn kinds<'a>(o: &vram_manifest_options, n: usize) -> Result<Option<Vec<TensorKind<'a>>>> {
    if o.dtypes.is_null() {
        return Ok(None);
    }
    if n == 0 {
        return Ok(Some(Vec::new()));
    }
    if o.shapes.is_null() || o.ranks.is_null() {
        return Err(VramError::null("opts->shapes / opts->ranks"));
    }
    // SAFETY: caller's contract: with dtypes set, the three arrays hold `n` entries each
    // (n > 0 and bounded by shard_list above).
    let (dtypes, shapes, ranks) = unsafe {
        (
            std::slice::from_raw_parts(o.dtypes, n),
            std::slice::from_raw_parts(o.shapes, n),
            std::slice::from_raw_parts(o.ranks, n),
        )
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let dtype = std::str::from_utf8(arg_cstr(dtypes[i], 16, &format!("opts->dtypes[{i}]"))?)
            .map_err(|_| VramError::invalid("opts->dtypes", "is not UTF-8"))?;
        let rank = ranks[i];
        if rank > MAX_RANK {
            return Err(VramError::invalid(
                "opts->ranks",
                format!("[{i}] is {rank}; at most {MAX_RANK}"),
            ));
        }
        let shape: &[u64] = if rank == 0 {
            &[]
        } else {
            if shapes[i].is_null() {
                return Err(VramError::null(&format!("opts->shapes[{i}]")));
            }
            // SAFETY: caller's contract: shape i holds `rank` (≤ 8) dimensions.
            unsafe { std::slice::from_raw_parts(shapes[i], rank) }
        };
        out.push(TensorKind { dtype, shape });
    }
    Ok(Some(out))
}

/// Makes a manifest of model `model_name` from `n` live shards sealed by `ctx`, in that
/// order: each tensor's name (the shard id), dtype, shape, length, leaf size and Merkle root
/// (and, with ::VRAM_MANIFEST_REGION_ROOTS, its 1 MiB region roots), under one HMAC of `ctx`'s
/// key.
///
/// - `model_name`: the rules of a shard id (1–256 bytes, no control or invisible characters).
/// - `shards`: `n` non-NULL shard pointers with distinct names, all sealed under `ctx`'s key.
/// - `opts`: nullable (raw bytes, no region roots); see ::vram_manifest_options.
/// - `out`: on success a new manifest owned by the caller (vram_manifest_free()).
///
/// Errors: ::VRAM_ERR_NULL_ARGUMENT; ::VRAM_ERR_INVALID_ARGUMENT (bad name, duplicate tensor
/// names, an unknown dtype, a shape that does not make the shard's length);
/// ::VRAM_ERR_BAD_SEAL (a shard not sealed under `ctx`'s key). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_manifest_from_shards(
    ctx: *const vram_ctx,
    model_name: *const c_char,
    shards: *const *const vram_shard,
    n: usize,
    opts: *const vram_manifest_options,
    out: *mut *mut vram_manifest,
) -> vram_status {
    guard("vram_manifest_from_shards", || {
        let ctx = arg_ref(ctx, "ctx")?;
        let name = arg_cstr(model_name, MAX_SHARD_ID_LEN, "model_name")?;
        let name = std::str::from_utf8(name)
            .map_err(|_| VramError::invalid("model_name", "is not UTF-8"))?;
        let list = shard_list(shards, n)?;
        let opts = read_optional(opts, "opts")?;
        let flags = opts.map_or(0, |o| o.flags);
        if flags & !VRAM_MANIFEST_REGION_ROOTS != 0 {
            return Err(VramError::invalid(
                "opts->flags",
                format!("{flags:#x} holds unknown bits"),
            ));
        }
        let kinds = match &opts {
            Some(o) => kinds(o, n)?,
            None => None,
        };
        let out = arg_mut(out, "out")?;
        let m = live::from_shards(
            &ctx.inner,
            name,
            &list,
            kinds.as_deref(),
            flags & VRAM_MANIFEST_REGION_ROOTS != 0,
        )?;
        let encoded = m.encode(ctx.inner.key())?;
        manifest_out(out, vram_manifest::from_parts(m, encoded)?);
        Ok(())
    })
}

/// Exports the manifest's canonical bytes (docs/manifest-format.md) into `buf`.
///
/// - `out_len`: required; receives the length on success and also — as for
///   vram_shard_record() — the size needed, with ::VRAM_ERR_BUFFER_TOO_SMALL, when `buf` is
///   NULL or `len` too small.
///
/// NULL `m` or `out_len` → ::VRAM_ERR_NULL_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_manifest_export(
    m: *const vram_manifest,
    buf: *mut u8,
    len: usize,
    out_len: *mut usize,
) -> vram_status {
    guard("vram_manifest_export", || {
        let m = arg_ref(m, "m")?;
        let out_len = arg_mut(out_len, "out_len")?;
        let bytes = &m.encoded;
        if buf.is_null() || len < bytes.len() {
            *out_len = bytes.len();
            return Err(VramError::new(
                ErrorKind::BufferTooSmall,
                format!("buf: {len} bytes given, {} needed", bytes.len()),
            ));
        }
        // SAFETY: caller's contract: `buf` is writable for `len >= bytes.len()` bytes and does
        // not overlap the manifest.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
        *out_len = bytes.len();
        Ok(())
    })
}

/// Authenticates an exported manifest under `ctx`'s key (in any process holding the secret)
/// and returns it.
///
/// Returns ::VRAM_ERR_BAD_SEAL when it is not authentic (not canonical JSON, altered, forged,
/// truncated, another key's); ::VRAM_ERR_UNSUPPORTED for a format version this libvram does
/// not read (the message says which); ::VRAM_ERR_INVALID_ARGUMENT when `len` is 0 or over
/// 256 MiB; ::VRAM_ERR_NULL_ARGUMENT. `out` (a new manifest owned by the caller) is written
/// only on success. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_manifest_import(
    ctx: *const vram_ctx,
    bytes: *const u8,
    len: usize,
    out: *mut *mut vram_manifest,
) -> vram_status {
    guard("vram_manifest_import", || {
        let ctx = arg_ref(ctx, "ctx")?;
        let bytes = arg_bytes(bytes, len, "bytes", false)?;
        let out = arg_mut(out, "out")?;
        let m = Manifest::decode(bytes, ctx.inner.key()).inspect_err(|e| {
            if e.kind == ErrorKind::BadSeal {
                crate::events::emit(
                    crate::events::Level::Warn,
                    crate::events::names::RECORD_REJECTED,
                    &e.message,
                );
            }
        })?;
        let mut encoded = crate::fallible::try_with_capacity(bytes.len(), "manifest")?;
        encoded.extend_from_slice(bytes);
        manifest_out(out, vram_manifest::from_parts(m, encoded)?);
        Ok(())
    })
}

fn report_of(c: &live::TensorCheck) -> vram_tensor_report {
    let (verdict, status) = match c.verdict {
        Verdict::Intact => (
            vram_tensor_verdict::VRAM_TENSOR_INTACT,
            vram_status::VRAM_OK,
        ),
        Verdict::Missing => (
            vram_tensor_verdict::VRAM_TENSOR_MISSING,
            vram_status::VRAM_ERR_INTEGRITY,
        ),
        Verdict::Different => (
            vram_tensor_verdict::VRAM_TENSOR_DIFFERENT,
            vram_status::VRAM_ERR_INTEGRITY,
        ),
        Verdict::Damaged => (
            vram_tensor_verdict::VRAM_TENSOR_DAMAGED,
            vram_status::VRAM_ERR_INTEGRITY,
        ),
        Verdict::BadSeal => (
            vram_tensor_verdict::VRAM_TENSOR_BAD_SEAL,
            vram_status::VRAM_ERR_BAD_SEAL,
        ),
    };
    vram_tensor_report {
        verdict: verdict as u32,
        status: status as u32,
        shard_index: c.shard.unwrap_or(usize::MAX),
        damaged_regions: c.damaged_regions,
        first_damaged_offset: c.first_damaged_offset,
    }
}

fn model_status(m: &Manifest, c: &ModelCheck, shards: &[&Shard]) -> Result<()> {
    let bad_seal = c.count(Verdict::BadSeal);
    if bad_seal > 0 {
        return Err(VramError::bad_seal(format!(
            "{bad_seal} shard(s) of model '{}' have a seal that does not authenticate",
            m.model
        )));
    }
    let problems: Vec<String> = m
        .tensors
        .iter()
        .zip(&c.tensors)
        .filter(|(_, t)| t.verdict != Verdict::Intact)
        .map(|(e, t)| match t.verdict {
            Verdict::Missing => format!("'{}' missing", e.name),
            Verdict::Different => format!("'{}' sealed over other bytes", e.name),
            _ => format!(
                "'{}' damaged at byte offset {}",
                e.name, t.first_damaged_offset
            ),
        })
        .chain(
            c.extra
                .iter()
                .map(|&i| format!("'{}' not in the manifest", shards[i].id())),
        )
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(VramError::new(
        ErrorKind::Integrity,
        format!(
            "model '{}': {} problem(s): {}",
            m.model,
            problems.len(),
            problems.join("; ")
        ),
    ))
}

/// Checks `n` live shards against the manifest in one batched verify: every manifest tensor
/// must have a shard of its name, sealed over exactly the manifest's bytes, whose bytes still
/// match their seal, and no other shard may be given.
///
/// - `reports`: nullable, else room for vram_manifest_tensor_count() reports, one per manifest
///   tensor in manifest order; `summary`: nullable, `struct_size` set. Both are written when
///   the call returns ::VRAM_OK, ::VRAM_ERR_INTEGRITY or ::VRAM_ERR_BAD_SEAL.
///
/// Returns ::VRAM_OK when the shards are exactly the model; ::VRAM_ERR_INTEGRITY when a tensor
/// is missing, different, damaged, or a shard is extra (the message names them);
/// ::VRAM_ERR_BAD_SEAL when a shard's own seal does not authenticate; ::VRAM_ERR_POLICY when a
/// shard lives on another backend or device (nothing checked); ::VRAM_ERR_INVALID_ARGUMENT for
/// two shards of one name. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_manifest_check(
    ctx: *const vram_ctx,
    m: *const vram_manifest,
    shards: *const *const vram_shard,
    n: usize,
    reports: *mut vram_tensor_report,
    summary: *mut vram_manifest_summary,
) -> vram_status {
    guard("vram_manifest_check", || {
        let ctx = arg_ref(ctx, "ctx")?;
        let m = arg_ref(m, "m")?;
        let list = shard_list(shards, n)?;
        check_into(&ctx.inner, &m.inner, &list, reports, summary)
    })
}

/// The body of vram_manifest_check() and vram_model_verify(): checks, writes the reports and
/// the summary, returns the model's status.
pub(crate) fn check_into(
    ctx: &crate::context::Context,
    m: &Manifest,
    list: &[&Shard],
    reports: *mut vram_tensor_report,
    summary: *mut vram_manifest_summary,
) -> Result<()> {
    if !summary.is_null() {
        let s = arg_ref(summary.cast_const(), "summary")?;
        check_struct_size(s.struct_size, size_of::<vram_manifest_summary>(), "summary")?;
    }
    let c = live::check(ctx, m, list)?;
    if !reports.is_null() {
        // SAFETY: caller's contract: a non-NULL `reports` has room for one report per
        // manifest tensor.
        let out = unsafe { std::slice::from_raw_parts_mut(reports, m.tensors.len()) };
        for (o, t) in out.iter_mut().zip(&c.tensors) {
            *o = report_of(t);
        }
    }
    if let Ok(s) = arg_mut(summary, "summary") {
        *s = vram_manifest_summary {
            struct_size: s.struct_size,
            tensors: c.tensors.len(),
            intact: c.count(Verdict::Intact),
            missing: c.count(Verdict::Missing),
            different: c.count(Verdict::Different),
            damaged: c.count(Verdict::Damaged),
            bad_seal: c.count(Verdict::BadSeal),
            extra: c.extra.len(),
            first_extra: c.extra.first().copied().unwrap_or(usize::MAX),
        };
    }
    model_status(m, &c, list)
}

/// Seals `len` bytes from `data` as the manifest's tensor `name` (with its leaf size) and keeps
/// the shard only if they are exactly the manifest's bytes: a reloaded or repaired tensor is
/// checked before it is trusted. Returns ::VRAM_ERR_INTEGRITY otherwise, with nothing kept; when
/// the manifest records region roots, the message names the first differing 1 MiB region.
/// A `name` the manifest does not list → ::VRAM_ERR_INVALID_ARGUMENT. Everything else as
/// vram_seal(). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_manifest_seal(
    ctx: *mut vram_ctx,
    m: *const vram_manifest,
    name: *const c_char,
    data: *const c_void,
    len: usize,
    out: *mut *mut vram_shard,
) -> vram_status {
    guard("vram_manifest_seal", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let m = arg_ref(m, "m")?;
        let name = arg_cstr(name, MAX_SHARD_ID_LEN, "name")?;
        let data = arg_bytes(data.cast::<u8>(), len, "data", false)?;
        let out = arg_mut(out, "out")?;
        let shard = live::seal_entry(&ctx.inner, &m.inner, name, data)?;
        *out = Box::into_raw(Box::new(vram_shard {
            inner: Arc::new(shard),
        }));
        Ok(())
    })
}

/// The manifest's model name, NUL-terminated, valid until vram_manifest_free(); NULL when `m`
/// is NULL. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_manifest_model(m: *const vram_manifest) -> *const c_char {
    guard_value("vram_manifest_model", std::ptr::null(), || {
        // SAFETY: `m` is NULL or a live manifest (caller's contract).
        unsafe { m.as_ref() }.map_or(std::ptr::null(), |m| m.model.as_ptr())
    })
}

/// Number of tensors the manifest lists; 0 when `m` is NULL. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_manifest_tensor_count(m: *const vram_manifest) -> usize {
    guard_value("vram_manifest_tensor_count", 0, || {
        // SAFETY: `m` is NULL or a live manifest (caller's contract).
        unsafe { m.as_ref() }.map_or(0, |m| m.inner.tensors.len())
    })
}

/// Tensor `index` of the manifest (manifest order) into `info` (`struct_size` set; its pointers
/// stay valid until the manifest is freed). An index past the end →
/// ::VRAM_ERR_INVALID_ARGUMENT; NULL → ::VRAM_ERR_NULL_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_manifest_tensor(
    m: *const vram_manifest,
    index: usize,
    info: *mut vram_manifest_tensor_info,
) -> vram_status {
    guard("vram_manifest_tensor", || {
        let m = arg_ref(m, "m")?;
        let info = arg_mut(info, "info")?;
        check_struct_size(
            info.struct_size,
            size_of::<vram_manifest_tensor_info>(),
            "info",
        )?;
        let t = tensor_at(&m.inner.tensors, index, "manifest")?;
        let (name, dtype) = m.labels.at(index);
        *info = vram_manifest_tensor_info {
            struct_size: info.struct_size,
            leaf_size: t.leaf_size,
            name,
            dtype,
            shape: if t.shape.is_empty() {
                std::ptr::null()
            } else {
                t.shape.as_ptr()
            },
            rank: t.shape.len(),
            byte_len: t.byte_len,
            root: t.root,
            region_count: t.regions.as_ref().map_or(0, |r| r.len() as u64),
        };
        Ok(())
    })
}

/// Frees a manifest. NULL is a no-op. No other thread may be using it.
#[unsafe(no_mangle)]
pub extern "C" fn vram_manifest_free(m: *mut vram_manifest) {
    guard_value("vram_manifest_free", (), || {
        if !m.is_null() {
            // SAFETY: a non-NULL `m` came from vram_manifest_from_shards()/_import() and is
            // freed once (caller's contract).
            drop(unsafe { Box::from_raw(m) });
        }
    })
}
