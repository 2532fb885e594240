//! `vram_load_safetensors` and `vram_model_*`: a model loaded from safetensors files, every
//! tensor sealed under its name, with its manifest.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use super::boundary::{
    arg_cstr, arg_mut, arg_path, arg_ref, check_struct_size, guard, guard_value, read_optional,
};
use super::manifest::{
    TensorLabels, tensor_at, vram_manifest, vram_manifest_summary, vram_tensor_report,
};
use super::types::{vram_ctx, vram_shard, vram_status};
use crate::error::{Result, VramError};
use crate::load::{self, LoadOptions, LoadedModel};
use crate::seal::shard_id::MAX_SHARD_ID_LEN;

/// A progress callback: `done` of `total` bytes read and sealed. Return 0 to go on, anything
/// else to cancel (the load then returns ::VRAM_ERR_CANCELLED with nothing kept). Called on the
/// loading thread.
pub type vram_progress_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, done: u64, total: u64) -> c_int>;

/// Options for vram_load_safetensors(). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vram_load_options {
    /// Must be `sizeof(vram_load_options)`.
    pub struct_size: u32,
    /// ::VRAM_MANIFEST_REGION_ROOTS: record region roots in the model's manifest.
    pub flags: u32,
    /// NULL, or the manifest the files must match exactly: every tensor's dtype, shape, bytes,
    /// and no tensor more or less. Names, dtypes, shapes and lengths are checked before any
    /// data is read; each tensor's root as soon as it is hashed (on the CUDA backend a few
    /// chunks later, as the GPU finishes it). The load stops at the first difference, naming
    /// the tensor (and, when the manifest has region roots, its first differing 1 MiB region),
    /// with ::VRAM_ERR_INTEGRITY and nothing kept. Borrowed for the call.
    pub expected: *const vram_manifest,
    /// NULL, or called after each tensor (see ::vram_progress_callback).
    pub progress: vram_progress_callback,
    /// Passed back to `progress`.
    pub userdata: *mut c_void,
    /// NULL (the file's stem, or the directory's name), or the model's name in its manifest.
    pub model_name: *const c_char,
    /// NULL, or an OpenSSF model-signing payload of `model_signing_len` bytes: the in-toto
    /// statement (or the sigstore bundle / DSSE envelope holding it) whose signature the
    /// model-signing tool has already verified. Every safetensors file loaded must be listed
    /// in its resources with algorithm `sha256`, and its bytes must hash to that digest,
    /// checked in the same read that loads the file (docs/model-signing.md says exactly what
    /// is and is not checked). A file not listed or not matching → ::VRAM_ERR_INTEGRITY naming
    /// it, nothing kept; a sharded (`sha256-sharded-*`) statement → ::VRAM_ERR_UNSUPPORTED.
    pub model_signing: *const u8,
    /// Length of `model_signing` in bytes.
    pub model_signing_len: usize,
}

// SAFETY: repr(C), struct_size first, all-zero valid (integers, NULL pointers, no callback).
unsafe impl super::boundary::OptionsStruct for vram_load_options {}

/// A model loaded from safetensors files: immutable, safe to read from many threads at once.
/// Owns its tensors' shards (borrowed by vram_model_tensor()) until vram_model_free().
pub struct vram_model {
    inner: LoadedModel,
    /// One handle per non-empty tensor, lent to callers by vram_model_tensor().
    shards: Vec<Option<Box<vram_shard>>>,
    labels: TensorLabels,
}

/// One tensor of a loaded model (vram_model_tensor()). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vram_model_tensor_info {
    /// Must be `sizeof(vram_model_tensor_info)`.
    pub struct_size: u32,
    /// The tensor's name (its shard id), NUL-terminated; valid until vram_model_free().
    pub name: *const c_char,
    /// Its safetensors dtype, NUL-terminated; valid until vram_model_free().
    pub dtype: *const c_char,
    /// Its shape, `rank` dimensions; valid until vram_model_free() (NULL when rank is 0).
    pub shape: *const u64,
    pub rank: usize,
    /// Its length in bytes (0 for an empty tensor).
    pub byte_len: u64,
    /// Its sealed shard, borrowed: valid until vram_model_free(), never to be freed by the
    /// caller. NULL for an empty tensor (nothing to seal).
    pub shard: *const vram_shard,
    /// The address of its bytes (device memory on the CUDA backend), as
    /// vram_shard_device_ptr(); NULL for an empty tensor.
    pub data: *const c_void,
}

struct Progress {
    cb: unsafe extern "C" fn(*mut c_void, u64, u64) -> c_int,
    userdata: *mut c_void,
}

impl Progress {
    fn call(&self, done: u64, total: u64) -> bool {
        // SAFETY: the caller's callback with the documented signature and its own userdata.
        unsafe { (self.cb)(self.userdata, done, total) == 0 }
    }
}

fn model_of(inner: LoadedModel) -> Result<vram_model> {
    Ok(vram_model {
        shards: inner
            .tensors
            .iter()
            .map(|t| {
                t.shard.as_ref().map(|s| {
                    Box::new(vram_shard {
                        inner: Arc::clone(s),
                    })
                })
            })
            .collect(),
        labels: TensorLabels::new(
            inner
                .tensors
                .iter()
                .map(|t| (t.name.as_str(), t.dtype.as_str())),
        )?,
        inner,
    })
}

/// Reads a safetensors checkpoint into `ctx`'s backend and seals every tensor under its name
/// (GPU memory on the CUDA backend).
///
/// - `path`: a `.safetensors` file; a sharded checkpoint's `model.safetensors.index.json`
///   (every file it names must be a plain file name beside it, and the index and the files
///   must agree tensor for tensor); or a directory holding either.
/// - `opts`: nullable; see ::vram_load_options (an expected manifest, a progress callback,
///   the model's name, region roots).
/// - `out`: on success a new model owned by the caller (vram_model_free()).
///
/// Empty (zero-element) tensors are legal: recorded in the manifest, with no shard. Malformed
/// files — a header length past the file, JSON errors, overlapping, gapped or out-of-file
/// offsets, a dtype or shape that disagrees with the length, a duplicate name, data that does
/// not end where the file does, a FIFO or device — → ::VRAM_ERR_INVALID_ARGUMENT naming the
/// file and the problem; sub-byte dtypes → ::VRAM_ERR_UNSUPPORTED; a difference from
/// `opts->expected` → ::VRAM_ERR_INTEGRITY; a cancel → ::VRAM_ERR_CANCELLED;
/// ::VRAM_ERR_OUT_OF_MEMORY. On every error nothing stays sealed.
///
/// Each byte is read once, by several threads (`max_threads` in ::vram_ctx_options): on the
/// host backend straight into the shard's pages and hashed there while in cache; on the CUDA
/// backend into the context's page-locked staging ring (see vram_seal()), from which the DMA
/// engine copies it to the GPU while the GPU hashes what has arrived. Tensors of one load
/// stream through the ring back to back; a second load on the same context waits for it.
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_load_safetensors(
    ctx: *mut vram_ctx,
    path: *const c_char,
    opts: *const vram_load_options,
    out: *mut *mut vram_model,
) -> vram_status {
    guard("vram_load_safetensors", || {
        let ctx = arg_ref(ctx.cast_const(), "ctx")?;
        let path = arg_path(path, "path")?;
        let opts = read_optional(opts, "opts")?;
        let flags = opts.map_or(0, |o| o.flags);
        if flags & !super::manifest::VRAM_MANIFEST_REGION_ROOTS != 0 {
            return Err(VramError::invalid(
                "opts->flags",
                format!("{flags:#x} holds unknown bits"),
            ));
        }
        let expected = match opts.map(|o| o.expected) {
            Some(p) if !p.is_null() => Some(&arg_ref(p, "opts->expected")?.manifest()),
            _ => None,
        };
        let model_name = match opts.map(|o| o.model_name) {
            Some(p) if !p.is_null() => Some(
                std::str::from_utf8(arg_cstr(p, MAX_SHARD_ID_LEN, "opts->model_name")?)
                    .map_err(|_| VramError::invalid("opts->model_name", "is not UTF-8"))?,
            ),
            _ => None,
        };
        let signing = match opts.filter(|o| !o.model_signing.is_null()) {
            Some(o) => Some(crate::model_signing::FileDigests::parse(
                super::boundary::arg_bytes(
                    o.model_signing,
                    o.model_signing_len,
                    "opts->model_signing",
                    false,
                )?,
            )?),
            None => None,
        };
        let out = arg_mut(out, "out")?;
        let progress = opts.and_then(|o| {
            o.progress.map(|cb| Progress {
                cb,
                userdata: o.userdata,
            })
        });
        let mut report =
            |done: u64, total: u64| progress.as_ref().is_none_or(|p| p.call(done, total));
        let loaded = load::load(
            &ctx.inner,
            std::path::Path::new(path),
            LoadOptions {
                model_name,
                expected: expected.copied(),
                region_roots: flags & super::manifest::VRAM_MANIFEST_REGION_ROOTS != 0,
                progress: Some(&mut report),
                model_signing: signing.as_ref(),
            },
        )?;
        *out = Box::into_raw(Box::new(model_of(loaded)?));
        Ok(())
    })
}

/// Number of tensors in the model; 0 when `model` is NULL. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_model_tensor_count(model: *const vram_model) -> usize {
    guard_value("vram_model_tensor_count", 0, || {
        // SAFETY: `model` is NULL or a live model (caller's contract).
        unsafe { model.as_ref() }.map_or(0, |m| m.inner.tensors.len())
    })
}

/// Tensor `index` of the model (file order) into `info` (`struct_size` set). Its pointers,
/// the shard included, are borrowed from the model until vram_model_free(). An index past the
/// end → ::VRAM_ERR_INVALID_ARGUMENT; NULL → ::VRAM_ERR_NULL_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_model_tensor(
    model: *const vram_model,
    index: usize,
    info: *mut vram_model_tensor_info,
) -> vram_status {
    guard("vram_model_tensor", || {
        let m = arg_ref(model, "model")?;
        let info = arg_mut(info, "info")?;
        check_struct_size(
            info.struct_size,
            size_of::<vram_model_tensor_info>(),
            "info",
        )?;
        let t = tensor_at(&m.inner.tensors, index, "model")?;
        let (name, dtype) = m.labels.at(index);
        let shard = m.shards.get(index).and_then(|s| s.as_deref());
        *info = vram_model_tensor_info {
            struct_size: info.struct_size,
            name,
            dtype,
            shape: if t.shape.is_empty() {
                std::ptr::null()
            } else {
                t.shape.as_ptr()
            },
            rank: t.shape.len(),
            byte_len: t.byte_len,
            shard: shard.map_or(std::ptr::null(), |s| s as *const vram_shard),
            data: shard.map_or(std::ptr::null(), |s| s.inner.data_ptr().cast()),
        };
        Ok(())
    })
}

/// The index of the tensor named `name` into `index`. A name the model does not hold →
/// ::VRAM_ERR_INVALID_ARGUMENT; NULL → ::VRAM_ERR_NULL_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_model_find(
    model: *const vram_model,
    name: *const c_char,
    index: *mut usize,
) -> vram_status {
    guard("vram_model_find", || {
        let m = arg_ref(model, "model")?;
        let name = arg_cstr(name, MAX_SHARD_ID_LEN, "name")?;
        let out = arg_mut(index, "index")?;
        let i = m
            .inner
            .tensors
            .iter()
            .position(|t| t.name.as_bytes() == name)
            .ok_or_else(|| VramError::invalid("name", "is not a tensor of this model"))?;
        *out = i;
        Ok(())
    })
}

/// The model's manifest (every tensor, its dtype, shape and root, under one HMAC of the
/// loading context's key) as a new manifest owned by the caller (vram_manifest_free()); export
/// it with vram_manifest_export() to check the model in another process. NULL →
/// ::VRAM_ERR_NULL_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_model_manifest(
    ctx: *const vram_ctx,
    model: *const vram_model,
    out: *mut *mut vram_manifest,
) -> vram_status {
    guard("vram_model_manifest", || {
        let ctx = arg_ref(ctx, "ctx")?;
        let m = arg_ref(model, "model")?;
        let out = arg_mut(out, "out")?;
        let encoded = m.inner.manifest.encode(ctx.inner.key())?;
        *out = Box::into_raw(Box::new(vram_manifest::from_parts(
            m.inner.manifest.clone(),
            encoded,
        )?));
        Ok(())
    })
}

/// Verifies the whole model in one batched pass: every tensor's shard re-hashed where it lives
/// and compared with the model's manifest, as vram_manifest_check() (same `reports` and
/// `summary`, both nullable, and the same statuses). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn vram_model_verify(
    ctx: *const vram_ctx,
    model: *const vram_model,
    reports: *mut vram_tensor_report,
    summary: *mut vram_manifest_summary,
) -> vram_status {
    guard("vram_model_verify", || {
        let ctx = arg_ref(ctx, "ctx")?;
        let m = arg_ref(model, "model")?;
        let shards: Vec<&crate::shard::Shard> = m
            .inner
            .tensors
            .iter()
            .filter_map(|t| t.shard.as_deref())
            .collect();
        super::manifest::check_into(&ctx.inner, &m.inner.manifest, &shards, reports, summary)
    })
}

/// Frees a model and, once no other handle holds them, its shards. NULL is a no-op. No other
/// thread may be using the model or the shards it lent.
#[unsafe(no_mangle)]
pub extern "C" fn vram_model_free(model: *mut vram_model) {
    guard_value("vram_model_free", (), || {
        if !model.is_null() {
            // SAFETY: a non-NULL `model` came from vram_load_safetensors() and is freed once.
            drop(unsafe { Box::from_raw(model) });
        }
    })
}
