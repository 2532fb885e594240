//! `ibp_spec_*` and `ibp_certify`: VNN-LIB properties, and sound verdicts about sealed models.

use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;

use super::boundary::{arg_mut, arg_path, arg_ref, guard, guard_value, read_optional};
use super::types::{ibp_model, vram_status};
use crate::certify::bab::{Options, Progress, Verdict};
use crate::certify::vnnlib::{self, Property};
use crate::error::{Result, VramError};

/// A parsed VNN-LIB property (ibp_spec_from_vnnlib()): immutable, safe to use from many
/// threads at once. Freed with ibp_spec_free().
pub struct ibp_spec {
    pub(crate) inner: Property,
}

/// A verdict of ibp_certify().
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ibp_verdict {
    /// Every input the property allows is proven safe (VNN-COMP: `unsat`).
    IBP_VERDICT_HOLDS = 1,
    /// A counterexample was found and confirmed by sound bounds (VNN-COMP: `sat`).
    IBP_VERDICT_VIOLATED = 2,
    /// Neither before the time limit (VNN-COMP: `timeout`).
    IBP_VERDICT_UNKNOWN = 3,
}

/// A progress callback of ibp_certify(): `boxes` sub-boxes bounded so far, `proven` the
/// fraction (0 to 1) of the property's input region proven safe. Return 0 to go on, anything
/// else to cancel (ibp_certify() then returns ::VRAM_ERR_CANCELLED, nothing written). Called
/// on the calling thread between rounds of the search.
pub type ibp_certify_progress =
    Option<unsafe extern "C" fn(userdata: *mut c_void, boxes: u64, proven: f64) -> c_int>;

/// Options for ibp_certify(). Zero-initialise, then set `struct_size`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibp_certify_options {
    /// Must be `sizeof(ibp_certify_options)`.
    pub struct_size: u32,
    /// Reserved: must be 0.
    pub flags: u32,
    /// Time limit in seconds (> 0; 0 = 300).
    pub timeout_seconds: f64,
    /// Seed of the counterexample search (the run is reproducible for one seed and thread
    /// count, up to the time limit).
    pub seed: u64,
    /// NULL, or called between rounds (see ::ibp_certify_progress).
    pub progress: ibp_certify_progress,
    /// Passed back to `progress`.
    pub userdata: *mut c_void,
}

// SAFETY: repr(C), struct_size first, all-zero valid (integers, a double, NULL pointers, no
// callback).
unsafe impl super::boundary::OptionsStruct for ibp_certify_options {}

/// What ibp_certify() found. Set `struct_size`, and (optionally) the three counterexample
/// buffers; the call fills in the rest on success.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ibp_certify_result {
    /// Must be `sizeof(ibp_certify_result)`.
    pub struct_size: u32,
    /// An ::ibp_verdict value.
    pub verdict: u32,
    /// Sub-boxes bounded.
    pub boxes: u64,
    /// Fraction of the property's input region proven safe (1 when the verdict is holds).
    pub proven_fraction: f64,
    /// Wall time of the search, in seconds.
    pub seconds: f64,
    /// The model's weights root: SHA-256 over "libvram model weights v1\n" and, per sealed
    /// tensor in order, its id's length (u32 little-endian), its id and its Merkle root. The
    /// weights were verified where they live against their seals before and after the search.
    pub weights_root: [u8; 32],
    /// Violated: the property's case (0-based, in its disjunctive normal form) the
    /// counterexample falls in.
    pub case_index: u32,
    /// Caller's buffer of input-size doubles, or NULL: the counterexample input when the
    /// verdict is violated (inside the property's box; float32 values where the box has one).
    pub counterexample: *mut f64,
    /// Caller's buffers of output-size doubles, or NULL: sound bounds of the network's
    /// outputs at the counterexample.
    pub counterexample_out_lower: *mut f64,
    pub counterexample_out_upper: *mut f64,
}

fn spec_of(text: &[u8]) -> Result<Property> {
    let text = std::str::from_utf8(text).map_err(|e| {
        VramError::invalid(
            "vnnlib",
            format!("not UTF-8 text (byte {})", e.valid_up_to()),
        )
    })?;
    vnnlib::parse(text)
}

/// Reads a VNN-LIB property file (the subset VNN-COMP uses: declare-const of X_i and Y_j,
/// asserts of linear comparisons combined with and / or). Constants are kept exactly or
/// rounded outward in float64; input boxes are taken outward.
///
/// `*out` is written only on success; free it with ibp_spec_free(). Errors:
/// ::VRAM_ERR_NULL_ARGUMENT; ::VRAM_ERR_INVALID_ARGUMENT for an unreadable file (only a
/// regular file of at most 64 MiB is read) or text outside the subset (the message gives line
/// and column); ::VRAM_ERR_UNSUPPORTED for a property too large (more than 65 536 cases, or
/// 2^22 comparisons). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_spec_from_vnnlib(
    path: *const c_char,
    out: *mut *mut ibp_spec,
) -> vram_status {
    guard("ibp_spec_from_vnnlib", || {
        let path = arg_path(path, "path")?;
        let out = arg_mut(out, "out")?;
        let text = crate::load::read_whole(
            std::path::Path::new(path),
            path,
            vnnlib::MAX_BYTES as u64,
            "VNN-LIB",
        )?;
        let prop =
            spec_of(&text).map_err(|e| VramError::new(e.kind, format!("{path}: {}", e.message)))?;
        *out = Box::into_raw(Box::new(ibp_spec { inner: prop }));
        Ok(())
    })
}

/// Frees a property. NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_spec_free(spec: *mut ibp_spec) {
    guard_value("ibp_spec_free", (), || {
        if !spec.is_null() {
            // SAFETY: a non-NULL `spec` came from ibp_spec_from_vnnlib() and is freed once.
            drop(unsafe { Box::from_raw(spec) });
        }
    })
}

/// The number of inputs (X_i) a property declares; 0 for NULL.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_spec_input_count(spec: *const ibp_spec) -> usize {
    guard_value("ibp_spec_input_count", 0, || {
        arg_ref(spec, "spec").map_or(0, |s| s.inner.inputs)
    })
}

/// The number of outputs (Y_j) a property declares; 0 for NULL.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_spec_output_count(spec: *const ibp_spec) -> usize {
    guard_value("ibp_spec_output_count", 0, || {
        arg_ref(spec, "spec").map_or(0, |s| s.inner.outputs)
    })
}

/// The number of cases (input box + conjunction of output constraints) of the property's
/// disjunctive normal form; 0 for NULL.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_spec_case_count(spec: *const ibp_spec) -> usize {
    guard_value("ibp_spec_case_count", 0, || {
        arg_ref(spec, "spec").map_or(0, |s| s.inner.cases.len())
    })
}

fn doubles_mut<'a>(p: *mut f64, n: usize) -> Option<&'a mut [f64]> {
    if p.is_null() || n > isize::MAX as usize / 8 {
        return None;
    }
    // SAFETY: the result struct's documented contract: a non-NULL buffer holds `n` writable
    // doubles (input or output size), not aliased, for the call.
    Some(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

struct Callback {
    cb: unsafe extern "C" fn(*mut c_void, u64, f64) -> c_int,
    userdata: *mut c_void,
}

// SAFETY: the callback is called only on the calling thread (between rounds), as documented;
// Sync is needed only because the search's options are shared with its worker threads, which
// never call it.
unsafe impl Sync for Callback {}

/// Decides a property over a model: `HOLDS` when every input in the property's region is
/// proven safe by sound bounds (linear bounds, the same soundness standard as ibp_propagate()),
/// `VIOLATED` with a counterexample that a sound evaluation of the network at that input
/// confirms, `UNKNOWN` at the time limit. The search splits the input region into sub-boxes
/// (branch and bound) and looks for counterexamples with gradient steps on the concrete
/// network alongside. It runs where the weights live: on the CPU, on the context's threads
/// (`max_threads`), for a host-backed model; on the model's GPU (thousands of sub-boxes per
/// launch, gradients from zero-width boxes, the host's share of the work between launches on
/// the context's threads) for a CUDA-backed model whose graph is a chain of linear layers with
/// ReLU after input normalisation. Same algorithm, same soundness.
///
/// The verdict is about the sealed network: its weights are verified where they live before
/// and after the search, and a weight that differs (or a seal that is not authentic) makes the
/// call fail with ::VRAM_ERR_INTEGRITY (::VRAM_ERR_BAD_SEAL), never report a verdict. The
/// result names the weights by their combined root.
///
/// `opts` may be NULL (defaults: 300 s, seed 0). `result` must have `struct_size` set; its
/// counterexample buffers may be NULL. Everything in `*result` is written only on success.
///
/// Errors: ::VRAM_ERR_NULL_ARGUMENT; ::VRAM_ERR_INVALID_ARGUMENT (a property whose input or
/// output count differs from the model's, a bad option); ::VRAM_ERR_UNSUPPORTED for a
/// CUDA-backed model of another graph (the message names the node; weights are never copied
/// to the host); ::VRAM_ERR_NO_DEVICE / ::VRAM_ERR_DEVICE from the GPU;
/// ::VRAM_ERR_INTEGRITY / ::VRAM_ERR_BAD_SEAL as above;
/// ::VRAM_ERR_CANCELLED when the progress callback asked; ::VRAM_ERR_OUT_OF_MEMORY.
/// Thread-safe: many calls may run at once on one model.
#[unsafe(no_mangle)]
pub extern "C" fn ibp_certify(
    model: *const ibp_model,
    spec: *const ibp_spec,
    opts: *const ibp_certify_options,
    result: *mut ibp_certify_result,
) -> vram_status {
    guard("ibp_certify", || {
        let model = &arg_ref(model, "model")?.inner;
        let prop = &arg_ref(spec, "spec")?.inner;
        let opts = read_optional(opts, "opts")?;
        let result = arg_mut(result, "result")?;
        super::boundary::check_struct_size(
            result.struct_size,
            size_of::<ibp_certify_result>(),
            "result",
        )?;
        if let Some(f) = opts.map(|o| o.flags).filter(|&f| f != 0) {
            return Err(VramError::invalid(
                "opts->flags",
                format!("{f:#x}: must be 0"),
            ));
        }
        let timeout = match opts.map_or(0.0, |o| o.timeout_seconds) {
            0.0 => 300.0,
            t if t.is_finite() && t > 0.0 && t < 1e9 => t,
            t => {
                return Err(VramError::invalid(
                    "opts->timeout_seconds",
                    format!("{t}: must be a number of seconds > 0"),
                ));
            }
        };
        let callback = opts.and_then(|o| {
            o.progress.map(|cb| Callback {
                cb,
                userdata: o.userdata,
            })
        });
        let report_progress = |p: &Progress| match &callback {
            // SAFETY: the caller's callback with the documented signature and its userdata,
            // on the calling thread.
            Some(c) => unsafe { (c.cb)(c.userdata, p.boxes, p.proven) == 0 },
            None => true,
        };
        let options = Options {
            timeout: Duration::from_secs_f64(timeout),
            batch: 0,
            progress: Some(&report_progress),
            seed: opts.map_or(0, |o| o.seed),
        };
        let report = crate::certify::run::certify(model, prop, &options)?;
        let o = &report.outcome;
        let (n_in, n_out) = (model.input_size(), model.output_size());
        let (verdict, case) = match &o.verdict {
            Verdict::Holds => (ibp_verdict::IBP_VERDICT_HOLDS, 0),
            Verdict::Violated(w) => {
                if let Some(buf) = doubles_mut(result.counterexample, n_in) {
                    buf.iter_mut().zip(&w.input).for_each(|(d, s)| *d = *s);
                }
                if let Some(buf) = doubles_mut(result.counterexample_out_lower, n_out) {
                    buf.iter_mut().zip(&w.out_lo).for_each(|(d, s)| *d = *s);
                }
                if let Some(buf) = doubles_mut(result.counterexample_out_upper, n_out) {
                    buf.iter_mut().zip(&w.out_hi).for_each(|(d, s)| *d = *s);
                }
                (ibp_verdict::IBP_VERDICT_VIOLATED, w.case as u32)
            }
            Verdict::Unknown(_) => (ibp_verdict::IBP_VERDICT_UNKNOWN, 0),
        };
        result.verdict = verdict as u32;
        result.boxes = o.boxes;
        result.proven_fraction = o.proven;
        result.seconds = o.elapsed.as_secs_f64();
        result.weights_root = report.weights_root;
        result.case_index = case;
        Ok(())
    })
}
